/* The verdict loop: the one place where an adapter's verdicts on the bytes
 * waiting in one direction are applied. Pure: bytes in, bytes out, no
 * sockets and no event loop, so the session, the unit tests and the
 * fuzzers all run this same loop.
 *
 * Both loops judge a prefix of [p, p+len) again and again until the adapter
 * needs more bytes (or the other side), the input is used up, or a verdict
 * ends plaintext relaying; the caller then drops r->consumed bytes. */
#ifndef POSTERN_FILTER_H
#define POSTERN_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/buf.h>
#include <postern/proto.h>

/* An output buffer this full is not given more: the loop stops until it
 * has drained (a client's refused commands fill the buffer towards it).
 * The same as RELAY_BUF_SIZE. */
#define FILTER_OUT_MAX 16384

/* Optional callbacks (any may be NULL), all with ARG. */
struct filter_hooks {
	void *arg;
	/* Every answer of input()/upstream(), MORE and WAIT included, before it
	 * is applied: for the tests' and fuzzers' invariants. */
	void (*judged)(void *arg, enum proto_dir dir, int verdict, const struct proto_action *act,
	               const char *p, size_t len, bool full);
	/* act->log is set: the command log's piece. */
	void (*log)(void *arg, enum proto_dir dir, const struct proto_action *act);
	/* postern answered the client with TEXT (REPLY, STARTTLS). */
	void (*reply)(void *arg, const char *text, size_t len);
	/* act->event is set: a refusal to count and log. */
	void (*event)(void *arg, const char *event);
	/* act->auth is set: the server's verdict on a login attempt. */
	void (*auth)(void *arg, const struct proto_action *act);
};

struct filter {
	const struct proto_ops *proto;
	void *state;        /* the adapter's (input) or its client role's (upstream) */
	struct buf *out[2]; /* by source direction: out[FROM_CLIENT] goes to the server */
	struct buf *reply;  /* postern's answers to the client (the session: out[FROM_SERVER]) */
	/* STARTTLS is offered and the client has not sent a byte yet: a first
	 * byte 0x16 (a TLS record) is refused at once. Cleared by the loop. */
	bool check_first_byte;
	const struct filter_hooks *hooks;
	char *scratch; /* PROTO_SCRATCH_ALLOC bytes */
};

enum filter_stop {
	FILTER_IDLE,      /* used up, MORE, WAIT or backpressure: call again later */
	FILTER_STARTTLS,  /* answer queued; TLS with the client next; r->discarded
	                   * bytes after the command are dropped with the input */
	FILTER_CLOSE,     /* answer r->text to the client, then close */
	FILTER_TLS_HELLO, /* a TLS record on a STARTTLS port before STARTTLS */
	FILTER_NOMEM,
	FILTER_LOGIN, /* PV_LOGIN: r->login holds the verdict's login_* fields */
	/* upstream only */
	FILTER_UP_TLS,  /* start TLS with the backend; r->discarded bytes dropped */
	FILTER_UP_DONE, /* r->text is the greeting the client gets */
	FILTER_UP_FAIL  /* r->text says why */
};

struct filter_result {
	enum filter_stop stop;
	size_t consumed;  /* of the input, to drop */
	size_t discarded; /* STARTTLS / UP_TLS: bytes after it, dropped unjudged */
	int last;         /* the last verdict (PV_* or PU_UP_*), -1: none */
	const char *text; /* CLOSE, UP_DONE, UP_FAIL */
	size_t len;
	const char *event;         /* UP_DONE: act->event of the client role, or NULL */
	struct proto_action login; /* LOGIN */
};

/* Judges the bytes from DIR. CAP: what the caller can hold (a full
 * buffer, or EOF, makes MORE no answer). */
void filter_input(struct filter *f, enum proto_dir dir, const char *p, size_t len, size_t cap,
                  bool eof, struct filter_result *r);

/* The adapter's client role over what the backend sent (backend_tls =
 * starttls): its commands go to out[FROM_CLIENT]. */
void filter_upstream(struct filter *f, const char *p, size_t len, size_t cap, bool eof,
                     struct filter_result *r);

#endif
