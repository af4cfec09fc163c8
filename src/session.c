/* Session lifecycle: CLIENT_TLS -> BACKEND_CONNECT -> RELAY -> CLOSED, with
 * DRAIN for "say one line, then close". Every path out goes through
 * session_close(); the memory is freed only when no callback frame holds the
 * session any more, so no code runs on a freed session. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/rand.h>

#include <postern/endpoint.h>
#include <postern/filter.h>
#include <postern/log.h>
#include <postern/log_text.h>
#include <postern/metrics.h>
#include <postern/observe.h>
#include <postern/proto.h>
#include <postern/proto_util.h>
#include <postern/proxyproto.h>
#include <postern/relay.h>
#include <postern/session.h>
#include <postern/shared.h>
#include <postern/tls.h>

/* How long a session may take to deliver its last reply before closing. */
#define DRAIN_LINGER 5.0

enum session_state {
	S_PROXY_HEADER,     /* reading a trusted balancer's PROXY header */
	S_CLIENT_TLS,       /* client handshake (implicit TLS, or after STARTTLS) */
	S_BACKEND_CONNECT,  /* waiting for the backend's connect */
	S_BACKEND_STARTTLS, /* postern's own STARTTLS dialogue with the backend */
	S_BACKEND_TLS,      /* backend handshake and verification (backend_tls) */
	S_RELAY,            /* relaying; with STARTTLS offered, plaintext until pretls ends */
	S_STARTTLS,         /* flushing our STARTTLS answer before the handshake */
	S_DRAIN,            /* flushing a last reply before closing */
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
	bool pretls;         /* STARTTLS offered and not yet done */
	struct filter flt;   /* the verdict loop over proto_state */
	struct filter up;    /* the verdict loop over up_state */
	struct filter_hooks hooks;
	bool handshaking;                    /* counted in srv->handshakes (max_handshakes) */
	struct sockaddr_storage peer, local; /* the client's address and ours */
	char *hdr;                           /* PROXY header read so far (accept_proxy_from) */
	size_t hdr_len;
	ev_timer timer; /* handshake, connect, idle or drain deadline */
	ev_tstamp started, last_activity;
	double started_wall; /* for the transcript's name */
	enum session_state state;
	const char *reason; /* the end reason, once known */
	int holds;
	struct session *prev, *next;
	char who[112]; /* "SERVICE#ID CLIENTADDR" */
};

static void session_step(struct session *s);
static long session_filter(void *arg, struct relay_dir *d);
static void start_upstream(struct session *s);
static void step_proxy_header(struct session *s);
static bool start_adapter(struct session *s);
static bool needs_adapter(const struct service *svc);

static void
session_hold(struct session *s)
{
	s->holds++;
}

static void
session_free(struct session *s)
{
	free(s->hdr);
	free(s->up_state);
	free(s->proto_state);
	config_unref(s->cfg);
	free(s);
}

static void
session_release(struct session *s)
{
	if (--s->holds == 0 && s->state == S_CLOSED)
		session_free(s);
}

void
session_format_addr(const struct sockaddr *sa, char *dst, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(dst, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(dst, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(dst, len, "local");
	}
}

/* The client's handshake no longer counts against max_handshakes. */
static void
handshake_over(struct session *s)
{
	if (s->handshaking) {
		s->handshaking = false;
		s->srv->handshakes--;
	}
}

/* The one exit door: idempotent; logs the end line exactly once. */
static void
session_close(struct session *s, const char *reason)
{
	struct ev_loop *loop = s->srv->loop;

	if (s->state == S_CLOSED)
		return;
	if (s->reason == NULL)
		s->reason = reason;
	s->state = S_CLOSED;
	handshake_over(s);
	observe_end(s->obs, s->reason, s->c2s.bytes, s->s2c.bytes);
	s->obs = NULL;
	log_session(LOG_INFO, s->who, "end in=%llu out=%llu duration=%.3f reason=%s",
	            (unsigned long long)s->c2s.bytes, (unsigned long long)s->s2c.bytes,
	            ev_now(loop) - s->started, s->reason);
	metrics_active(s->m, -1);
	shared_add(&s->m->bytes_in, s->c2s.bytes);
	shared_add(&s->m->bytes_out, s->s2c.bytes);
	ev_timer_stop(loop, &s->timer);
	ep_close(loop, &s->client);
	ep_close(loop, &s->backend);
	relay_free(&s->c2s);
	relay_free(&s->s2c);
	if (s->prev)
		s->prev->next = s->next;
	else
		s->srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->srv->active--;
	if (s->srv->stopping && s->srv->active == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void
arm_timer(struct session *s, double seconds)
{
	ev_timer_stop(s->srv->loop, &s->timer);
	ev_timer_set(&s->timer, seconds, 0.);
	ev_timer_start(s->srv->loop, &s->timer);
}

/* Sends TEXT (may be NULL) to the client after what is already queued for
 * it, then closes with REASON. The client's further input is read and
 * dropped so that closing does not turn into a reset that could destroy the
 * reply in flight. */
static void
session_drain(struct session *s, const char *text, size_t len, const char *reason)
{
	s->reason = reason;
	s->state = S_DRAIN;
	ep_close(s->srv->loop, &s->backend);
	s->c2s.discard = true;
	s->c2s.paused = false;
	s->c2s.filter = s->s2c.filter = NULL;
	buf_free(&s->c2s.in);
	buf_free(&s->s2c.in);
	s->s2c.eof = true;
	if (text) {
		buf_append_grow(&s->s2c.buf, text, len);
		observe_reply(s->obs, text, len);
	}
	arm_timer(s, DRAIN_LINGER);
	/* No step here: a filter may be calling; its pump goes round again. */
}

static void
backend_failed(struct session *s, const char *why)
{
	const char *text = s->proto->reply[PROTO_REPLY_BACKEND_DOWN];

	shared_add(&s->m->backend_errors[MB_UNREACHABLE], 1);
	log_session(LOG_WARNING, s->who, "backend %s unreachable: %s", s->svc->backend.text, why);
	session_drain(s, text, text ? strlen(text) : 0, "backend-unreachable");
	session_step(s);
}

static void
enter_relay(struct session *s)
{
	s->state = S_RELAY;
	s->last_activity = ev_now(s->srv->loop);
	if (s->pretls) /* the plaintext phase counts against handshake_timeout */
		arm_timer(s, s->started + s->svc->handshake_timeout - ev_now(s->srv->loop));
	else
		arm_timer(s, s->svc->idle_timeout);
	session_step(s);
}

/* Scratch space for adapters' replacement text; one loop, one thread. */
static char filter_scratch[PROTO_SCRATCH_ALLOC];

/* Scratch space for adapters' replacement text; one loop, one thread. */
static char filter_scratch[PROTO_SCRATCH_ALLOC];

static void
on_event(void *arg, const char *event)
{
	struct session *s = arg;

	shared_add(&s->m->plaintext_auth_refused, 1);
	log_session(LOG_INFO, s->who, "%s", event);
}

static void
on_log(void *arg, enum proto_dir dir, const struct proto_action *act)
{
	observe_action(((struct session *)arg)->obs, dir, act);
}

static void
on_reply(void *arg, const char *text, size_t len)
{
	observe_reply(((struct session *)arg)->obs, text, len);
}

/* Runs the verdict loop (filter.c) over what waits in D's input buffer.
 * Returns bytes consumed, or -1 when the session changed course
 * (STARTTLS, closing). */
static long
session_filter(void *arg, struct relay_dir *d)
{
	struct session *s = arg;
	enum proto_dir dir = d == &s->c2s ? PROTO_FROM_CLIENT : PROTO_FROM_SERVER;
	struct filter_result r;

	filter_input(&s->flt, dir, buf_head(&d->in), buf_len(&d->in), d->in.cap, d->eof, &r);
	switch (r.stop) {
	case FILTER_IDLE:
		/* Input is kept while the buffer is needed; output drains on its own. */
		buf_consume(&d->in, r.consumed);
		return (long)r.consumed;
	case FILTER_TLS_HELLO:
		shared_add(&s->m->refused[MR_PROTOCOL], 1);
		log_session(LOG_INFO, s->who, "TLS ClientHello on a STARTTLS port: closing");
		session_close(s, "refused");
		return -1;
	case FILTER_STARTTLS:
		if (r.discarded > 0)
			log_session(LOG_WARNING, s->who, "discarded %zu bytes sent after STARTTLS",
			            r.discarded);
		buf_free(&d->in);
		s->c2s.paused = true;
		s->s2c.held = true;
		s->state = S_STARTTLS;
		return -1;
	case FILTER_CLOSE:
		shared_add(&s->m->refused[MR_PROTOCOL], 1);
		log_session(LOG_INFO, s->who, "closing: %.*s", (int)pu_trim_eol(r.text, r.len),
		            r.text);
		session_drain(s, r.text, r.len, "refused");
		return -1;
	default:
		log_session(LOG_ERR, s->who, "out of memory");
		session_close(s, "error");
		return -1;
	}
}

static void backend_tls_failed(struct session *s, const char *why);
static void start_backend_tls(struct session *s);

/* The client's greeting once the STARTTLS dialogue with the backend is
 * over; the session then relays as usual. */
static void
upstream_done(struct session *s, const char *greeting, size_t len)
{
	struct buf *in = &s->s2c.in;
	relay_filter_fn client_filter = s->proto_state ? session_filter : NULL;

	free(s->up_state);
	s->up_state = NULL;
	s->c2s.bytes = 0; /* our own commands are not the client's bytes */
	s->s2c.filter = client_filter;
	if (client_filter) {
		/* The greeting goes through the client-side adapter, first. */
		struct buf rest = *in;
		buf_init(in, RELAY_LINE_BUF_SIZE);
		buf_append_grow(in, greeting, len);
		if (buf_len(&rest) > 0)
			buf_append_grow(in, buf_head(&rest), buf_len(&rest));
		buf_free(&rest);
	} else {
		buf_append_grow(&s->s2c.buf, greeting, len);
		if (buf_len(in) > 0)
			buf_append_grow(&s->s2c.buf, buf_head(in), buf_len(in));
		buf_free(in);
	}
	s->c2s.paused = s->state == S_STARTTLS;
	s->state = S_RELAY;
	s->last_activity = ev_now(s->srv->loop);
	if (s->pretls)
		arm_timer(s, s->started + s->svc->handshake_timeout - ev_now(s->srv->loop));
	else
		arm_timer(s, s->svc->idle_timeout);
}

/* Runs the adapter's client role over what the backend sent. */
static long
upstream_filter(void *arg, struct relay_dir *d)
{
	struct session *s = arg;
	struct filter_result r;

	filter_upstream(&s->up, buf_head(&d->in), buf_len(&d->in), d->in.cap, d->eof, &r);
	switch (r.stop) {
	case FILTER_UP_FAIL:
		backend_tls_failed(s, r.text);
		return -1;
	case FILTER_UP_DONE:
		buf_consume(&d->in, r.consumed);
		upstream_done(s, r.text, r.len);
		return -1;
	case FILTER_UP_TLS:
		/* C4: what the server sent after its OK is not trusted. */
		if (r.discarded > 0)
			log_session(LOG_WARNING, s->who,
			            "discarded %zu bytes the backend sent after its STARTTLS reply",
			            r.discarded);
		buf_free(&d->in);
		start_backend_tls(s);
		return -1;
	default:
		buf_consume(&d->in, r.consumed);
		return (long)r.consumed;
	}
}

/* backend_tls = starttls: the adapter, in client role, talks to the backend
 * while the client waits; nothing of the client's is read meanwhile (C8). */
static void
start_upstream(struct session *s)
{
	struct proto_action act = {0};
	char host[256] = "localhost";
	const char *helo = s->svc->helo_name;

	if (helo == NULL && gethostname(host, sizeof(host) - 1) == 0)
		helo = host;
	s->up_state = calloc(1, s->proto->up_state_size);
	if (s->up_state == NULL) {
		session_close(s, "error");
		return;
	}
	s->up.state = s->up_state;
	s->proto->up_start(s->up_state, helo ? helo : "localhost", &act, filter_scratch);
	buf_append_grow(&s->c2s.buf, act.text, act.len);
	s->c2s.paused = true;
	s->s2c.filter = upstream_filter;
	s->s2c.filter_arg = s;
	s->state = S_BACKEND_STARTTLS;
	arm_timer(s, s->svc->handshake_timeout);
	session_step(s);
}

/* The backend's socket is connected: the PROXY header goes first, raw,
 * before TLS or any client byte; then TLS towards the backend if asked. */
static void
backend_connected(struct session *s)
{
	const struct service *svc = s->svc;

	if (svc->proxy_protocol) {
		char hdr[PROXYPROTO_MAX];
		if (s->local.ss_family == AF_UNSPEC) { /* not from a PROXY header: ask */
			socklen_t llen = sizeof(s->local);
			getsockname(s->client.fd, (struct sockaddr *)&s->local, &llen);
		}
		size_t n = proxyproto_build(svc->proxy_protocol, (struct sockaddr *)&s->peer,
		                            (struct sockaddr *)&s->local, hdr, sizeof(hdr));
		/* A fresh socket's send buffer always takes ~100 bytes at once. */
		if (n == 0 || send(s->backend.fd, hdr, n, MSG_NOSIGNAL) != (ssize_t)n) {
			backend_failed(s, "cannot send the PROXY header");
			return;
		}
	}
	if (svc->backend_tls == TLSMODE_STARTTLS) {
		start_upstream(s);
		return;
	}
	if (svc->backend_tls == TLSMODE_IMPLICIT) {
		start_backend_tls(s);
		if (s->state == S_BACKEND_TLS)
			arm_timer(s, svc->handshake_timeout);
		session_step(s);
		return;
	}
	enter_relay(s);
}

static void
start_backend_tls(struct session *s)
{
	SSL *ssl = tls_backend_new(s->svc);

	if (ssl == NULL || !SSL_set_fd(ssl, s->backend.fd)) {
		SSL_free(ssl);
		backend_tls_failed(s, "cannot create TLS session");
		return;
	}
	SSL_set_connect_state(ssl);
	s->backend.ssl = ssl;
	s->backend.drained = false;
	s->state = S_BACKEND_TLS;
}

/* Fails closed: the client gets the protocol's error, nothing it sent has
 * been forwarded, and the log says why. */
static void
backend_tls_failed(struct session *s, const char *why)
{
	const char *text = s->proto->reply[PROTO_REPLY_BACKEND_DOWN];
	long v = s->backend.ssl ? SSL_get_verify_result(s->backend.ssl) : X509_V_OK;

	shared_add(&s->m->backend_errors[MB_TLS], 1);
	if (s->up_state != NULL)
		s->c2s.bytes = 0; /* only postern's own commands went out */
	log_session(LOG_WARNING, s->who, "backend %s TLS failed: %s%s%s", s->svc->backend.text, why,
	            v != X509_V_OK ? "; certificate: " : "",
	            v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
	session_drain(s, text, text ? strlen(text) : 0, "backend-tls-failed");
}

static void
step_backend_tls(struct session *s)
{
	int r = ep_handshake(&s->backend);
	char err[256];

	if (r == 1) {
		ep_watch(s->srv->loop, &s->backend, false, false);
		log_session(LOG_DEBUG, s->who, "backend tls=%s cipher=%s",
		            SSL_get_version(s->backend.ssl), SSL_get_cipher_name(s->backend.ssl));
		if (s->up_state != NULL) {
			shared_add(&s->m->starttls_backend, 1);
			/* Capabilities are asked again inside TLS. */
			struct proto_action act = {0};
			s->proto->up_tls_done(s->up_state, &act, filter_scratch);
			buf_append_grow(&s->c2s.buf, act.text, act.len);
			s->state = S_BACKEND_STARTTLS;
			session_step(s);
			return;
		}
		enter_relay(s);
	} else if (r == EP_ERR) {
		backend_tls_failed(s, ep_strerror(&s->backend, err, sizeof(err)));
		session_step(s);
	} else {
		ep_watch(s->srv->loop, &s->backend, r == EP_WANT_READ, r == EP_WANT_WRITE);
	}
}

static void
set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void
connect_backend(struct session *s)
{
	const struct sockaddr_ex *b = &s->svc->backend;
	int fd = socket(b->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		backend_failed(s, strerror(errno));
		return;
	}
	if (b->ss.ss_family != AF_UNIX)
		set_nodelay(fd);
	ep_attach(&s->backend, fd, NULL);
	if (connect(fd, (const struct sockaddr *)&b->ss, b->len) == 0) {
		backend_connected(s);
	} else if (errno == EINPROGRESS) {
		s->state = S_BACKEND_CONNECT;
		arm_timer(s, s->svc->connect_timeout);
		ep_watch(s->srv->loop, &s->backend, false, true);
	} else {
		backend_failed(s, strerror(errno));
	}
}

/* backend_verify = no is said on every start line, not only at start-up. */
static const char *
unverified_note(const struct session *s)
{
	return s->svc->backend_tls != TLSMODE_OFF && !s->svc->backend_verify
	               ? " backend_verify=no WARNING=backend-certificate-not-verified"
	               : "";
}

static void
log_tls_start(struct session *s, const char *what)
{
	SSL *ssl = s->client.ssl;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	/* OpenSSL takes any byte but NUL in a host_name: only a valid host
	 * name is shown, never text that could pass for more fields. */
	if (sni && !log_hostname_valid(sni))
		sni = "(invalid)";
	log_session(LOG_INFO, s->who, "%s tls=%s cipher=%s%s%s%s", what, SSL_get_version(ssl),
	            SSL_get_cipher_name(ssl), sni ? " sni=" : "", sni ? sni : "",
	            unverified_note(s));
}

static bool attach_client_tls(struct session *s);

/* Whether the client's socket has something for the handshake: a byte, an
 * end or an error. Until then the session holds no TLS state at all. */
static bool
client_has_spoken(struct session *s)
{
	char c;
	ssize_t n = recv(s->client.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void
step_client_tls(struct session *s)
{
	int r;
	char err[256];

	if (s->client.ssl == NULL) {
		if (!client_has_spoken(s)) {
			ep_watch(s->srv->loop, &s->client, true, false);
			return;
		}
		if (!attach_client_tls(s))
			return;
	}
	r = ep_handshake(&s->client);
	if (r == 1 && s->pretls) {
		/* STARTTLS done: the adapter forgets the plaintext phase. */
		handshake_over(s);
		s->pretls = false;
		shared_add(&s->m->starttls_client, 1);
		s->proto->tls_started(s->proto_state);
		log_tls_start(s, "starttls");
		s->c2s.paused = false;
		s->s2c.held = false;
		enter_relay(s);
	} else if (r == 1) {
		handshake_over(s);
		ep_watch(s->srv->loop, &s->client, false, false);
		log_tls_start(s, "start");
		connect_backend(s);
	} else if (r == EP_ERR) {
		shared_add(&s->m->handshake_failures[MH_ERROR], 1);
		log_session(LOG_INFO, s->who, "handshake failed: %s",
		            ep_strerror(&s->client, err, sizeof(err)));
		session_close(s, "handshake-failed");
	} else {
		ep_watch(s->srv->loop, &s->client, r == EP_WANT_READ, r == EP_WANT_WRITE);
	}
}

static void
step_backend_connect(struct session *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	ep_watch(s->srv->loop, &s->backend, false, false);
	if (err != 0)
		backend_failed(s, strerror(err));
	else
		backend_connected(s);
}

/* Which end a failed I/O makes this: a peer that vanished closed the
 * session; anything else is an error worth its own log line. */
static const char *
failure_reason(struct session *s, struct endpoint *ep)
{
	char err[256];
	int e = ep->sys_errno;
	bool client = ep == &s->client;

	if (ep->ssl_err == 0 && (e == ECONNRESET || e == EPIPE || e == 0))
		return client ? "client-closed" : "backend-closed";
	log_session(LOG_INFO, s->who, "%s error: %s", client ? "client" : "backend",
	            ep_strerror(ep, err, sizeof(err)));
	return "error";
}

/* Puts a server-side SSL on the client's socket once the client has spoken,
 * if fewer than max_handshakes are in progress; else, or if OpenSSL cannot
 * make one, the session is closed. */
static bool
attach_client_tls(struct session *s)
{
	int limit = s->srv->cfg->max_handshakes;
	SSL *ssl;

	if (s->srv->handshakes >= limit) {
		/* No TLS work at all: the cap bounds the memory and CPU that
		 * handshakes in progress hold. */
		shared_add(&s->m->refused[MR_MAX_HANDSHAKES], 1);
		log_session(LOG_WARNING, s->who, "refused reason=max_handshakes limit=%d", limit);
		session_close(s, "refused");
		return false;
	}
	ssl = tls_server_new(s->svc);
	if (ssl == NULL || !SSL_set_fd(ssl, s->client.fd)) {
		SSL_free(ssl);
		log_session(LOG_ERR, s->who, "cannot create TLS session");
		session_close(s, "error");
		return false;
	}
	SSL_set_accept_state(ssl);
	s->client.ssl = ssl;
	s->client.drained = false;
	s->handshaking = true;
	s->srv->handshakes++;
	return true;
}

/* The client's handshake (implicit TLS, or after the STARTTLS answer has
 * left in plaintext): its SSL is made when its first byte arrives, so that
 * a connection that sends nothing costs no TLS state. */
static void
start_client_tls(struct session *s)
{
	ep_watch(s->srv->loop, &s->client, false, false);
	ep_watch(s->srv->loop, &s->backend, false, false);
	s->state = S_CLIENT_TLS;
	step_client_tls(s);
}

static void
step_relay(struct session *s)
{
	long a, b;
	bool crd = false, cwr = false, brd = false, bwr = false;

	/* Each direction may unblock the other (an adapter waiting for the
	 * server's reply, a buffer that drained): go round until neither moves. */
	do {
		a = s->state == S_STARTTLS ? 0 : relay_pump(&s->c2s);
		if (s->state == S_CLOSED || s->state == S_CLIENT_TLS)
			return;
		if (a == -1)
			break;
		b = relay_pump(&s->s2c);
		if (s->state == S_CLOSED)
			return;
		/* The end reason is whichever side closed first, as seen now. */
		if (s->reason == NULL && (s->c2s.eof || s->s2c.eof))
			s->reason = s->c2s.eof ? "client-closed" : "backend-closed";
		if (b == -1)
			break;
		if (a == -2 || b == -2) {
			/* A filter changed the session's course. */
			if (s->state != S_RELAY && s->state != S_STARTTLS && s->state != S_DRAIN &&
			    s->state != S_BACKEND_STARTTLS) {
				session_step(s);
				return;
			}
			a = 1; /* go round again in the new state */
			continue;
		}
		if (s->state == S_BACKEND_STARTTLS && s->s2c.eof) {
			/* C13: the backend went away mid-dialogue: fail closed. */
			backend_tls_failed(s, "backend closed the connection");
			a = 1;
			continue;
		}
		if (s->state == S_STARTTLS && buf_len(&s->s2c.buf) == 0) {
			start_client_tls(s);
			return;
		}
		if (a > 0 || b > 0)
			s->last_activity = ev_now(s->srv->loop);
	} while (a > 0 || b > 0);
	if (a == -1 || b == -1) {
		struct relay_dir *d = a == -1 ? &s->c2s : &s->s2c;
		session_close(s, failure_reason(s, d->failed));
		return;
	}
	if (s->c2s.done && s->s2c.done) {
		session_close(s, s->reason);
		return;
	}
	relay_wants(&s->c2s, &s->client, &crd, &cwr);
	relay_wants(&s->s2c, &s->client, &crd, &cwr);
	relay_wants(&s->c2s, &s->backend, &brd, &bwr);
	relay_wants(&s->s2c, &s->backend, &brd, &bwr);
	ep_watch(s->srv->loop, &s->client, crd, cwr);
	ep_watch(s->srv->loop, &s->backend, brd, bwr);
}

static void
session_step(struct session *s)
{
	switch (s->state) {
	case S_PROXY_HEADER:
		step_proxy_header(s);
		break;
	case S_CLIENT_TLS:
		step_client_tls(s);
		break;
	case S_BACKEND_CONNECT:
		step_backend_connect(s);
		break;
	case S_BACKEND_TLS:
		step_backend_tls(s);
		break;
	case S_RELAY:
	case S_STARTTLS:
	case S_BACKEND_STARTTLS:
	case S_DRAIN:
		step_relay(s);
		break;
	case S_CLOSED:
		break;
	}
}

static void
on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;

	(void)loop;
	/* Readable again: ep_read may try the socket once more. */
	if (revents & EV_READ) {
		if (w == &s->client.rio)
			s->client.drained = false;
		else if (w == &s->backend.rio)
			s->backend.drained = false;
	}
	session_hold(s);
	session_step(s);
	session_release(s);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;

	(void)revents;
	session_hold(s);
	switch (s->state) {
	case S_PROXY_HEADER:
		shared_add(&s->m->refused[MR_PROXY_HEADER], 1);
		log_session(LOG_WARNING, s->who, "no PROXY header within %.0fs: closing",
		            s->svc->handshake_timeout);
		session_close(s, "refused");
		break;
	case S_CLIENT_TLS:
	case S_STARTTLS:
		shared_add(&s->m->handshake_failures[MH_TIMEOUT], 1);
		log_session(LOG_INFO, s->who, "handshake timed out after %.0fs",
		            s->svc->handshake_timeout);
		session_close(s, "handshake-failed");
		break;
	case S_BACKEND_CONNECT:
		backend_failed(s, "connect timed out");
		break;
	case S_BACKEND_STARTTLS:
	case S_BACKEND_TLS:
		backend_tls_failed(s, "handshake timed out");
		session_step(s);
		break;
	case S_RELAY: {
		if (s->pretls) {
			const char *t = s->proto->reply[PROTO_REPLY_TIMEOUT];
			shared_add(&s->m->handshake_failures[MH_TIMEOUT], 1);
			log_session(LOG_INFO, s->who, "no STARTTLS within %.0fs",
			            s->svc->handshake_timeout);
			session_drain(s, t, strlen(t), "handshake-failed");
			session_step(s);
			break;
		}
		/* Activity does not touch the timer; re-arm for what is left. */
		double left = s->last_activity + s->svc->idle_timeout - ev_now(loop);
		if (left > 0.001)
			arm_timer(s, left);
		else
			session_close(s, "idle-timeout");
		break;
	}
	default:
		session_close(s, s->reason);
		break;
	}
	session_release(s);
}

/* The client is who it is (PROXY header read, if any): TLS or plaintext. */
static void
session_begin(struct session *s)
{
	const struct service *svc = s->svc;

	if (svc->tls == TLSMODE_IMPLICIT) {
		if (needs_adapter(svc) && !start_adapter(s)) {
			session_close(s, "error");
			return;
		}
		arm_timer(s, svc->handshake_timeout);
		start_client_tls(s);
		return;
	}
	log_session(LOG_INFO, s->who, "start tls=off%s", unverified_note(s));
	if (needs_adapter(svc) && !start_adapter(s)) {
		log_session(LOG_ERR, s->who, "out of memory");
		session_close(s, "error");
	} else {
		connect_backend(s);
	}
}

/* Reads the PROXY header of a trusted balancer, exactly: bytes after it
 * belong to the client (a ClientHello, a command) and stay in the socket. */
static void
step_proxy_header(struct session *s)
{
	char view[PROXYPROTO_MAX];
	struct proxyproto_info info;
	size_t have = s->hdr_len;
	ssize_t n;
	int r;

	if (s->hdr == NULL && (s->hdr = malloc(PROXYPROTO_MAX)) == NULL) {
		session_close(s, "error");
		return;
	}
	memcpy(view, s->hdr, have);
	n = recv(s->client.fd, view + have, sizeof(view) - have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		ep_watch(s->srv->loop, &s->client, true, false);
		return;
	}
	if (n <= 0) {
		shared_add(&s->m->refused[MR_PROXY_HEADER], 1);
		log_session(LOG_INFO, s->who, "closed before its PROXY header");
		session_close(s, "refused");
		return;
	}
	r = proxyproto_parse(view, have + (size_t)n, &info);
	if (r == PROXYPROTO_BAD || (r == PROXYPROTO_MORE && have + (size_t)n >= sizeof(view))) {
		shared_add(&s->m->refused[MR_PROXY_HEADER], 1);
		log_session(LOG_WARNING, s->who, "missing or malformed PROXY header: closing");
		session_close(s, "refused");
		return;
	}
	/* Take what is certainly header: all of it while incomplete. */
	size_t take = r > 0 ? (size_t)r - have : (size_t)n;
	if (recv(s->client.fd, s->hdr + have, take, 0) != (ssize_t)take) {
		session_close(s, "error");
		return;
	}
	s->hdr_len += take;
	if (r == PROXYPROTO_MORE) {
		ep_watch(s->srv->loop, &s->client, true, false);
		return;
	}
	free(s->hdr);
	s->hdr = NULL;
	ep_watch(s->srv->loop, &s->client, false, false);
	ev_timer_stop(s->srv->loop, &s->timer);
	if (!info.local) {
		char addr[INET6_ADDRSTRLEN + 8], via[INET6_ADDRSTRLEN + 8];
		session_format_addr((struct sockaddr *)&s->peer, via, sizeof(via));
		memcpy(&s->peer, &info.src, sizeof(s->peer));
		memcpy(&s->local, &info.dst, sizeof(s->local));
		session_format_addr((struct sockaddr *)&s->peer, addr, sizeof(addr));
		char *hash = strchr(s->who, ' ');
		if (hash)
			snprintf(hash + 1, sizeof(s->who) - (size_t)(hash + 1 - s->who), "%s",
			         addr);
		log_session(LOG_DEBUG, s->who, "client address from PROXY header of %s", via);
	}
	session_begin(s);
}

/* An adapter is needed where TLS is involved: to offer STARTTLS, or to
 * hide the backend's own STARTTLS, which postern cannot relay. Plaintext on
 * both sides is relayed untouched. */
static bool
needs_adapter(const struct service *svc)
{
	return svc->protocol != PROTO_RAW &&
	       (svc->tls != TLSMODE_OFF || svc->backend_tls != TLSMODE_OFF || svc->log_commands ||
	        svc->capture_dir);
}

/* The adapter judges both directions from the first byte on. */
static bool
start_adapter(struct session *s)
{
	bool offer = s->svc->tls == TLSMODE_STARTTLS;
	struct proto_conf conf = {.starttls = offer, .require_tls = s->svc->require_tls};

	s->proto_state = calloc(1, s->proto->state_size);
	if (s->proto_state == NULL)
		return false;
	s->obs = observe_start(s->svc, s->who, s->started_wall);
	conf.observe = s->obs != NULL;
	s->proto->init(s->proto_state, &conf);
	s->pretls = offer;
	s->flt.state = s->proto_state;
	s->flt.check_first_byte = offer;
	s->c2s.filter = s->s2c.filter = session_filter;
	s->c2s.filter_arg = s->s2c.filter_arg = s;
	return true;
}

/* One counter for all workers, so ids never repeat across them. */
static uint32_t *next_id;

void
session_ids_init(void)
{
	if (next_id != NULL)
		return;
	next_id = shared_area(sizeof(*next_id));
	if (RAND_bytes((unsigned char *)next_id, sizeof(*next_id)) != 1)
		*next_id = (uint32_t)getpid();
	*next_id &= 0xffff; /* short ids read better; they grow as needed */
}

static uint32_t
next_session_id(void)
{
	session_ids_init();
	return __atomic_fetch_add(next_id, 1, __ATOMIC_RELAXED);
}

void
session_start(struct server *srv, struct config *cfg, const struct service *svc, int fd,
              const struct sockaddr *peer, socklen_t peerlen)
{
	struct session *s = calloc(1, sizeof(*s));
	char addr[INET6_ADDRSTRLEN + 8];

	if (s == NULL) {
		close(fd);
		return;
	}
	s->srv = srv;
	s->cfg = config_ref(cfg);
	s->svc = svc;
	s->proto = proto_get(svc->protocol);
	s->m = metrics_service(svc->name);
	shared_add(&s->m->connections, 1);
	metrics_active(s->m, 1);
	memcpy(&s->peer, peer, peerlen < sizeof(s->peer) ? peerlen : sizeof(s->peer));
	session_format_addr(peer, addr, sizeof(addr));
	snprintf(s->who, sizeof(s->who), "%s#%04x %s", svc->name, next_session_id(), addr);
	ep_init(&s->client, on_io, s);
	ep_init(&s->backend, on_io, s);
	s->client.track_ready = s->backend.track_ready = true;
	relay_init(&s->c2s, &s->client, &s->backend);
	relay_init(&s->s2c, &s->backend, &s->client);
	s->hooks = (struct filter_hooks){
	        .arg = s, .log = on_log, .reply = on_reply, .event = on_event};
	s->flt = (struct filter){.proto = s->proto,
	                         .out = {&s->c2s.buf, &s->s2c.buf},
	                         .reply = &s->s2c.buf,
	                         .hooks = &s->hooks,
	                         .scratch = filter_scratch};
	s->up = s->flt;
	ev_init(&s->timer, on_timer);
	s->timer.data = s;
	s->started = ev_now(srv->loop);
	s->started_wall = ev_time();
	s->next = srv->sessions;
	if (s->next)
		s->next->prev = s;
	srv->sessions = s;
	srv->active++;
	/* TCP_NODELAY comes from the listening socket (listener.c). */

	ep_attach(&s->client, fd, NULL);
	session_hold(s);
	if (svc->accept_proxy_from.n > 0 && config_cidr_match(&svc->accept_proxy_from, peer)) {
		/* A trusted balancer: its PROXY header comes first, even before TLS. */
		s->state = S_PROXY_HEADER;
		arm_timer(s, svc->handshake_timeout);
		session_step(s);
	} else {
		session_begin(s);
	}
	session_release(s);
}

void
session_close_all(struct server *srv)
{
	struct session *s = srv->sessions, *next;

	for (; s != NULL; s = next) {
		next = s->next;
		session_hold(s);
		/* Nothing was relayed yet, so a last line cannot cut into a reply. */
		if (s->state == S_BACKEND_CONNECT && s->proto->reply[PROTO_REPLY_SHUTDOWN]) {
			const char *t = s->proto->reply[PROTO_REPLY_SHUTDOWN];
			(void)ep_write(&s->client, t, strlen(t));
		}
		session_close(s, "shutdown");
		session_release(s);
	}
}
