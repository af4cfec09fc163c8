/* The protocol adapter interface. An adapter knows one mail protocol and
 * does no I/O: the session hands it the bytes waiting in one direction and
 * it answers with a verdict on a prefix of them. Everything protocol-specific
 * lives behind this table (STARTTLS command names, capability rewriting,
 * plaintext-credential refusals, literals, DATA bodies), so the session and
 * relay never test which protocol runs. */
#ifndef POSTERN_PROTO_H
#define POSTERN_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/proto_kind.h>

enum proto_reply {
	PROTO_REPLY_BUSY,         /* max_connections reached */
	PROTO_REPLY_BACKEND_DOWN, /* backend refused, unreachable or timed out */
	PROTO_REPLY_SHUTDOWN,     /* postern is stopping */
	PROTO_REPLY_TIMEOUT,      /* no TLS within handshake_timeout (STARTTLS offered) */
	PROTO_REPLY_COUNT
};

enum proto_dir { PROTO_FROM_CLIENT = 0, PROTO_FROM_SERVER = 1 };

/* The server's verdict on a login attempt (proto_auth.h). */
enum proto_auth { PROTO_AUTH_NONE, PROTO_AUTH_OK, PROTO_AUTH_FAILED };

enum proto_verdict {
	PV_PASS,     /* forward act->consume bytes unchanged */
	PV_REPLACE,  /* consume act->consume bytes, forward act->text instead */
	PV_DROP,     /* consume act->consume bytes, forward nothing */
	PV_REPLY,    /* consume; answer the client with act->text (client bytes only) */
	PV_STARTTLS, /* consume; answer act->text, then TLS with the client; the
	              * client's remaining plaintext is discarded */
	PV_CLOSE,    /* consume; answer act->text, then close the session */
	PV_MORE,     /* an incomplete unit: wait for more bytes from this side */
	PV_WAIT,     /* undecidable until the other side speaks (ordering) */
	/* backend_auth = oauth2 (proto_conf.backend_login) only: */
	PV_LOGIN,    /* consume; postern logs in for the client with act->login_*
	              * (client bytes only); the session ends it with the
	              * adapter's login_send or login_fail, and the adapter holds
	              * the client's further commands (WAIT) until the outcome */
	PV_TO_SERVER /* consume; send act->text to the server (server bytes
	              * only: the answer to a challenge of postern's own login) */
};

/* Why postern's own login (PV_LOGIN) failed before reaching the server. */
enum proto_login_fail {
	PROTO_LOGIN_REFUSED,   /* wrong password, unknown account: the client's fault */
	PROTO_LOGIN_REVOKED,   /* the provider refused the stored token: the admin's */
	PROTO_LOGIN_TEMPORARY, /* the provider or the token store failed: try later */
};

enum proto_up {
	PU_UP_MORE, /* need more bytes from the server */
	PU_UP_SEND, /* consume; send act->text to the server (len 0: nothing) */
	PU_UP_TLS,  /* consume; start TLS now, dropping whatever else came */
	PU_UP_DONE, /* consume; act->text is the greeting the client gets */
	PU_UP_FAIL  /* act->text says why, for the log */
};

struct proto_action {
	size_t consume;
	const char *text; /* for REPLACE/REPLY/STARTTLS/CLOSE; may point into scratch */
	size_t len;
	const char *event; /* set when a refusal should be counted/logged */
	/* Command log (only when proto_conf.observe): the redacted text of
	 * what was consumed, or NULL. Lines of one multi-line reply are
	 * separated by '\n'. Built in scratch + PROTO_SCRATCH or pointing
	 * into the input; never holds a secret. */
	const char *log;
	size_t log_len;
	unsigned log_flags; /* PL_* */
	/* The word of the log text (1: its first; 0: none) that says what the
	 * line is, a command's verb or a reply's status: never masked by a
	 * secret the session remembers, which the client chose. Read on the
	 * first piece of a line. */
	unsigned char log_frame;
	/* Bytes the log hid as "***" (a password, a SASL response), pointing
	 * into the input: the session remembers them and masks them wherever
	 * they reappear in its log, in either direction. NULL: none. */
	const char *secret;
	size_t secret_len;
	/* Set on the server's final reply to a login attempt, whatever
	 * proto_conf.observe says: the verdict and the user name tried (raw
	 * bytes, unescaped; length 0: unknown), never a secret. */
	enum proto_auth auth;
	const char *auth_user;
	size_t auth_user_len;
	bool auth_user_cut; /* the name was longer than what is shown */
	/* PV_LOGIN: the user name and password the client logs in with,
	 * pointing into the input or the scratch; the session copies them and
	 * wipes both. */
	const char *login_user;
	size_t login_user_len;
	const char *login_pass;
	size_t login_pass_len;
};

enum {
	PL_DEBUG = 1 << 0, /* a line of lesser interest (untagged, "250-") */
	PL_CONT = 1 << 1,  /* the line goes on after a literal: more follows */
	PL_NEW = 1 << 2    /* a new line: one left open (a refused literal) ends */
};

/* What an adapter is told about its session at start. */
struct proto_conf {
	bool starttls;      /* postern offers STARTTLS to the client; false: the
	                     * post-TLS rules from the start (capabilities the
	                     * backend offers but postern cannot relay are hidden) */
	bool require_tls;   /* refuse credentials before TLS */
	bool observe;       /* log_commands or capture_dir: fill act->log, and
	                     * hide what would blind the log (COMPRESS) */
	bool backend_login; /* backend_auth = oauth2: the client's password login
	                     * is answered by postern (PV_LOGIN), which offers
	                     * only the mechanisms it accepts */
};

/* Longest password a PV_LOGIN carries. */
#define PROTO_LOGIN_PASS_MAX 1024

/* Size of the scratch buffer an adapter may build replacement text in. */
#define PROTO_SCRATCH (PROTO_LINE_MAX + 512)
/* Longest line accepted before TLS (SPEC: 64 KiB). */
#define PROTO_LINE_MAX 65536
/* Longest command-log line; the log text lives after the reply text, so
 * callers allocate PROTO_SCRATCH_ALLOC bytes of scratch. */
#define PROTO_LOG_MAX 1024
#define PROTO_SCRATCH_ALLOC (PROTO_SCRATCH + PROTO_LOG_MAX)

struct proto_ops {
	const char *name; /* "imap", "pop3", "smtp", "raw" */
	const char *alpn; /* ALPN protocol id accepted from clients; NULL: any */
	/* Complete CRLF-terminated lines sent to the client before closing;
	 * NULL where the protocol has no way to say it (raw). */
	const char *reply[PROTO_REPLY_COUNT];

	size_t state_size; /* 0: the protocol is relayed opaquely */
	void (*init)(void *st, const struct proto_conf *conf);
	/* Judges a prefix of the LEN bytes at P that arrived from DIR. FULL:
	 * the caller cannot buffer more, so MORE is not an answer. */
	enum proto_verdict (*input)(void *st, enum proto_dir dir, const char *p, size_t len,
	                            bool full, struct proto_action *act, char *scratch);
	/* The client side is now TLS: forget what was learnt in plaintext. */
	void (*tls_started)(void *st);

	/* Client role (backend_tls = starttls): postern talks to the backend
	 * itself before the client sees a byte. up_start gives the first line
	 * to send (may be empty); upstream judges the server's bytes; after the
	 * handshake up_tls_done gives the line that re-reads capabilities. */
	size_t up_state_size;
	void (*up_start)(void *st, const char *helo, struct proto_action *act, char *scratch);
	enum proto_up (*upstream)(void *st, const char *p, size_t len, bool full,
	                          struct proto_action *act, char *scratch);
	void (*up_tls_done)(void *st, struct proto_action *act, char *scratch);
	/* SMTP xclient = yes, called after up_start: the client role sends
	 * "XCLIENT ARGS" once an EHLO reply offers XCLIENT, and gives the
	 * client the server's new greeting; without the offer it ends with
	 * act->event "xclient-not-offered" on its PU_UP_DONE. STARTTLS: the
	 * STARTTLS dialogue comes first (backend_tls = starttls); false: none.
	 * NULL where the protocol has no such command. */
	void (*up_xclient)(void *st, const char *args, bool starttls);

	/* backend_auth = oauth2: how postern's own login (PV_LOGIN) ends.
	 * login_send: BLOB (LEN bytes of base64, a secret) is the SASL message
	 * of mechanism MECH ("XOAUTH2", "OAUTHBEARER"); act->text is the
	 * command to send the server, under the client's tag, built in
	 * SCRATCH (the caller wipes it). login_fail: act->text answers the
	 * client; act->auth is set when WHY counts as a failed login. NULL
	 * where the adapter does not answer logins. */
	void (*login_send)(void *st, const char *mech, const char *blob, size_t len,
	                   struct proto_action *act, char *scratch);
	void (*login_fail)(void *st, enum proto_login_fail why, struct proto_action *act,
	                   char *scratch);
};

extern const struct proto_ops proto_imap, proto_pop3, proto_smtp, proto_raw;

const struct proto_ops *proto_get(enum proto_kind kind);

#endif
