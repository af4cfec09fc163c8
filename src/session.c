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
#include <postern/log.h>
#include <postern/proto.h>
#include <postern/relay.h>
#include <postern/session.h>
#include <postern/tls.h>

/* How long a session may take to deliver its last reply before closing. */
#define DRAIN_LINGER 5.0

enum session_state { S_CLIENT_TLS, S_BACKEND_CONNECT, S_RELAY, S_DRAIN, S_CLOSED };

struct session {
	struct server *srv;
	struct config *cfg; /* referenced: svc stays valid across reloads */
	const struct service *svc;
	const struct proto_ops *proto;
	struct endpoint client, backend;
	struct relay_dir c2s, s2c;
	ev_timer timer; /* handshake, connect, idle or drain deadline */
	ev_tstamp started, last_activity;
	enum session_state state;
	const char *reason; /* the end reason, once known */
	int holds;
	struct session *prev, *next;
	char who[112]; /* "SERVICE#ID CLIENTADDR" */
};

static void session_step(struct session *s);

static void
session_hold(struct session *s)
{
	s->holds++;
}

static void
session_free(struct session *s)
{
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
	log_session(LOG_INFO, s->who, "end in=%llu out=%llu duration=%.3f reason=%s",
	            (unsigned long long)s->c2s.bytes, (unsigned long long)s->s2c.bytes,
	            ev_now(loop) - s->started, s->reason);
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

/* Sends the protocol's REPLY to the client, then closes with REASON. The
 * client's further input is read and dropped so that closing does not turn
 * into a reset that could destroy the reply in flight. */
static void
session_drain(struct session *s, enum proto_reply reply, const char *reason)
{
	const char *text = s->proto->reply[reply];

	s->reason = reason;
	s->state = S_DRAIN;
	ep_close(s->srv->loop, &s->backend);
	s->c2s.discard = true;
	s->s2c.eof = true;
	if (text)
		buf_append(&s->s2c.buf, text, strlen(text));
	arm_timer(s, DRAIN_LINGER);
	session_step(s);
}

static void
backend_failed(struct session *s, const char *why)
{
	log_session(LOG_WARNING, s->who, "backend %s unreachable: %s", s->svc->backend.text, why);
	session_drain(s, PROTO_REPLY_BACKEND_DOWN, "backend-unreachable");
}

static void
enter_relay(struct session *s)
{
	s->state = S_RELAY;
	s->last_activity = ev_now(s->srv->loop);
	arm_timer(s, s->svc->idle_timeout);
	session_step(s);
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
		enter_relay(s);
	} else if (errno == EINPROGRESS) {
		s->state = S_BACKEND_CONNECT;
		arm_timer(s, s->svc->connect_timeout);
		ep_watch(s->srv->loop, &s->backend, false, true);
	} else {
		backend_failed(s, strerror(errno));
	}
}

static void
log_tls_start(struct session *s)
{
	SSL *ssl = s->client.ssl;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	log_session(LOG_INFO, s->who, "start tls=%s cipher=%s%s%s", SSL_get_version(ssl),
	            SSL_get_cipher_name(ssl), sni ? " sni=" : "", sni ? sni : "");
}

static void
step_client_tls(struct session *s)
{
	int r = ep_handshake(&s->client);
	char err[256];

	if (r == 1) {
		ep_watch(s->srv->loop, &s->client, false, false);
		log_tls_start(s);
		connect_backend(s);
	} else if (r == EP_ERR) {
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
		enter_relay(s);
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

static void
step_relay(struct session *s)
{
	long a = relay_pump(&s->c2s);
	long b = a < 0 ? 0 : relay_pump(&s->s2c);
	bool crd = false, cwr = false, brd = false, bwr = false;

	if (a < 0 || b < 0) {
		struct relay_dir *d = a < 0 ? &s->c2s : &s->s2c;
		session_close(s, failure_reason(s, d->failed));
		return;
	}
	if (a > 0 || b > 0)
		s->last_activity = ev_now(s->srv->loop);
	if (s->reason == NULL && (s->c2s.eof || s->s2c.eof))
		s->reason = s->c2s.eof ? "client-closed" : "backend-closed";
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
	case S_CLIENT_TLS:
		step_client_tls(s);
		break;
	case S_BACKEND_CONNECT:
		step_backend_connect(s);
		break;
	case S_RELAY:
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
	(void)revents;
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
	case S_CLIENT_TLS:
		log_session(LOG_INFO, s->who, "handshake timed out after %.0fs",
		            s->svc->handshake_timeout);
		session_close(s, "handshake-failed");
		break;
	case S_BACKEND_CONNECT:
		backend_failed(s, "connect timed out");
		break;
	case S_RELAY: {
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

static uint32_t
next_session_id(void)
{
	static uint32_t next;
	static int seeded;

	if (!seeded) {
		if (RAND_bytes((unsigned char *)&next, sizeof(next)) != 1)
			next = (uint32_t)getpid() << 16;
		next &= 0xffff; /* short ids read better; they grow as needed */
		seeded = 1;
	}
	return next++;
}

void
session_start(struct server *srv, struct config *cfg, const struct service *svc, int fd,
              const struct sockaddr *peer, socklen_t peerlen)
{
	struct session *s = calloc(1, sizeof(*s));
	char addr[INET6_ADDRSTRLEN + 8];

	(void)peerlen;
	if (s == NULL) {
		close(fd);
		return;
	}
	s->srv = srv;
	s->cfg = config_ref(cfg);
	s->svc = svc;
	s->proto = proto_get(svc->protocol);
	session_format_addr(peer, addr, sizeof(addr));
	snprintf(s->who, sizeof(s->who), "%s#%04x %s", svc->name, next_session_id(), addr);
	ep_init(&s->client, on_io, s);
	ep_init(&s->backend, on_io, s);
	relay_init(&s->c2s, &s->client, &s->backend);
	relay_init(&s->s2c, &s->backend, &s->client);
	ev_init(&s->timer, on_timer);
	s->timer.data = s;
	s->started = ev_now(srv->loop);
	s->next = srv->sessions;
	if (s->next)
		s->next->prev = s;
	srv->sessions = s;
	srv->active++;
	set_nodelay(fd);

	session_hold(s);
	if (svc->tls == TLSMODE_IMPLICIT) {
		SSL *ssl = tls_server_new(svc);
		if (ssl == NULL || !SSL_set_fd(ssl, fd)) {
			SSL_free(ssl);
			ep_attach(&s->client, fd, NULL);
			log_session(LOG_ERR, s->who, "cannot create TLS session");
			session_close(s, "error");
		} else {
			SSL_set_accept_state(ssl);
			ep_attach(&s->client, fd, ssl);
			s->state = S_CLIENT_TLS;
			arm_timer(s, svc->handshake_timeout);
			session_step(s);
		}
	} else {
		ep_attach(&s->client, fd, NULL);
		log_session(LOG_INFO, s->who, "start tls=off");
		connect_backend(s);
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
