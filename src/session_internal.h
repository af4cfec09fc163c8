/* What session.c, session_client.c and session_backend.c share: the
 * session itself, its states, and the calls one file makes into another.
 * Private to them. */
#ifndef POSTERN_SESSION_INTERNAL_H
#define POSTERN_SESSION_INTERNAL_H

#include <stdbool.h>
#include <sys/socket.h>

#include <postern/endpoint.h>
#include <postern/filter.h>
#include <postern/metrics.h>
#include <postern/observe.h>
#include <postern/proto.h>
#include <postern/relay.h>
#include <postern/resolver.h>
#include <postern/server.h>

/* The states; session.c's file comment gives their transitions. */
enum session_state {
	S_NEW,             /* accepted, nothing decided yet */
	S_PROXY_HEADER,    /* reading a trusted balancer's PROXY header */
	S_CLIENT_TLS,      /* the client's handshake (implicit TLS) */
	S_BACKEND_CONNECT, /* waiting for the backend's connect */
	S_BACKEND_TLS,     /* backend handshake and verification (backend_tls = implicit) */
	S_UP_DIALOGUE,     /* postern's own STARTTLS dialogue with the backend */
	S_UP_TLS,          /* the backend's handshake after its STARTTLS answer */
	S_UP_CAPA,         /* the dialogue again inside TLS, until the greeting */
	S_PLAINTEXT,       /* relaying in plaintext, STARTTLS offered, not yet done */
	S_STARTTLS,        /* flushing our STARTTLS answer before the handshake */
	S_CLIENT_STARTTLS, /* the client's handshake after STARTTLS */
	S_RELAY,           /* relaying */
	S_DRAIN,           /* flushing a last reply before closing */
	S_CLOSED
};

struct session {
	struct server *srv;
	struct config *cfg; /* referenced: svc stays valid across reloads */
	const struct service *svc;
	const struct proto_ops *proto;
	struct metrics_svc *m;
	struct endpoint client, backend;
	struct relay_dir c2s, s2c;
	void *proto_state;   /* adapter state, when the adapter filters */
	void *up_state;      /* adapter state of the STARTTLS dialogue with the backend */
	struct observe *obs; /* log_commands / capture_dir, else NULL */
	struct filter flt;   /* the verdict loop over proto_state */
	struct filter up;    /* the verdict loop over up_state */
	struct filter_hooks hooks;
	/* backend_auth = oauth2: postern's own login in progress (session_login.c) */
	struct oauth2_login *login;
	bool login_sync;      /* its answer may come before oauth2_login_start returns */
	char login_user[256]; /* the account, for the SASL message */
	bool handshaking;     /* counted in srv->handshakes (max_handshakes) */
	bool rerun;           /* run the current state's handler again */
	struct sockaddr_storage peer, local; /* the client's address and ours */
	char *hdr;                           /* PROXY header read so far (accept_proxy_from) */
	size_t hdr_len;
	/* A backend name: its lookup in flight, then its addresses, tried in
	 * turn from addr_next; what the last one that failed said. */
	struct resolver_query *lookup;
	struct resolver_addrs *addrs;
	size_t addr_next;
	char addr_err[192];
	ev_timer timer; /* the current state's deadline */
	ev_tstamp started, last_activity;
	ev_tstamp up_deadline; /* of the whole dialogue with the backend */
	double started_wall;   /* for the transcript's name */
	enum session_state state;
	const char *reason; /* the end reason, once known */
	int holds;
	struct session *prev, *next;
	char who[112]; /* "SERVICE#ID CLIENTADDR" */
};

/* session.c */
void session_enter(struct session *s, enum session_state state);
void session_close(struct session *s, const char *reason);
void session_drain(struct session *s, const char *text, size_t len, const char *reason);
/* PLAINTEXT while the client's STARTTLS is still to come, else RELAY. */
void session_enter_relay(struct session *s);
long session_filter(void *arg, struct relay_dir *d);
/* The client is who it is (PROXY header read, if any): TLS or plaintext. */
void session_begin(struct session *s);
/* After an event that is not the session's own (a finished lookup) moved
 * it on: runs what the new state has to do, and frees a closed session. */
void session_wake(struct session *s);
/* scratch space for adapters' text; one loop, one thread */
extern char session_scratch[PROTO_SCRATCH_ALLOC];

/* session_client.c */
void client_step_proxy_header(struct session *s);
/* The client's handshake, entering NEXT (CLIENT_TLS or CLIENT_STARTTLS). */
void client_start_tls(struct session *s, enum session_state next);
void client_step_tls(struct session *s);
/* The client's handshake no longer counts against max_handshakes. */
void client_handshake_over(struct session *s);

/* session_login.c */
/* PV_LOGIN: copies the credentials of ACT and starts the login; the
 * caller wipes where they were. */
void session_login_start(struct session *s, const struct proto_action *act);
/* The session ends: the login, if any, is cancelled. */
void session_login_forget(struct session *s);

/* session_backend.c */
void backend_connect(struct session *s);
void backend_step_connect(struct session *s);
void backend_step_tls(struct session *s);
void backend_failed(struct session *s, const char *why);
/* Drops a lookup in flight and the addresses (session_close). */
void backend_forget(struct session *s);
void backend_tls_failed(struct session *s, const char *why);
/* backend_verify = no is said on every start line, not only at start-up. */
const char *backend_unverified_note(const struct session *s);

#endif
