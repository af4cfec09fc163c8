/* A session: one client <-> backend pair, from accept to the single exit
 * door, written as a state machine. Each state has one handler (run by the
 * dispatcher, session_run, whenever the state's sockets are ready) and one
 * deadline (armed by session_enter, the only place that changes the state,
 * which also logs every transition at debug level). A handler never calls
 * another state's handler: it enters the next state and returns, and the
 * dispatcher runs the new state's handler if that state has work to do at
 * once. Every state can go to CLOSED (session_close: an error, a refusal,
 * a timeout); the other transitions are:
 *
 *   NEW            -> PROXY_HEADER   accept_proxy_from matches the peer
 *                  -> CLIENT_TLS     implicit TLS
 *                  -> BACKEND_CONNECT (plaintext to the client), or on as
 *                     from there when the connect ends at once
 *   PROXY_HEADER   -> as NEW, once the header is read (handshake_timeout)
 *   CLIENT_TLS     -> as NEW's plaintext case, once the handshake is done
 *                     (handshake_timeout)
 *   BACKEND_CONNECT-> BACKEND_TLS | UP_DIALOGUE | PLAINTEXT | RELAY, by
 *                     backend_tls and tls; DRAIN if unreachable
 *                     (connect_timeout)
 *   BACKEND_TLS    -> PLAINTEXT | RELAY; DRAIN on failure (handshake_timeout)
 *   UP_DIALOGUE    -> UP_TLS (the backend said yes to STARTTLS); DRAIN on
 *                     failure (handshake_timeout, for the whole dialogue)
 *   UP_TLS         -> UP_CAPA (capabilities asked again); DRAIN on failure
 *   UP_CAPA        -> PLAINTEXT | RELAY (the client's greeting); DRAIN
 *   PLAINTEXT      -> STARTTLS (the client asked); DRAIN (refused, or no
 *                     STARTTLS within handshake_timeout of the start)
 *   STARTTLS       -> CLIENT_STARTTLS once our answer has left
 *   CLIENT_STARTTLS-> RELAY (handshake done; same deadline as PLAINTEXT)
 *   RELAY          -> DRAIN (an adapter refused); CLOSED when both
 *                     directions are done (idle_timeout)
 *   DRAIN          -> CLOSED once the last reply has left (5 s at most)
 *
 * Every path out goes through session_close(); the memory is freed only
 * when no callback frame holds the session any more, so no code runs on a
 * freed session. session_client.c serves the client's side (PROXY header,
 * TLS), session_backend.c reaches the backend, and filter.c applies the
 * adapters' verdicts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <postern/log.h>
#include <postern/netaddr.h>
#include <postern/proto_util.h>
#include <postern/session.h>
#include <postern/shared.h>
#include <postern/tls.h>

#include "session_internal.h"

/* How long a session may take to deliver its last reply before closing. */
#define DRAIN_LINGER 5.0

char session_scratch[PROTO_SCRATCH_ALLOC];

static const char *const state_names[] = {
        [S_NEW] = "new",
        [S_PROXY_HEADER] = "proxy-header",
        [S_CLIENT_TLS] = "client-tls",
        [S_BACKEND_CONNECT] = "backend-connect",
        [S_BACKEND_TLS] = "backend-tls",
        [S_UP_DIALOGUE] = "backend-dialogue",
        [S_UP_TLS] = "backend-dialogue-tls",
        [S_UP_CAPA] = "backend-dialogue-capa",
        [S_PLAINTEXT] = "plaintext",
        [S_STARTTLS] = "starttls",
        [S_CLIENT_STARTTLS] = "client-starttls",
        [S_RELAY] = "relay",
        [S_DRAIN] = "drain",
        [S_CLOSED] = "closed",
};

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

/* The deadline of STATE, in seconds from now (a past one fires at once).
 * States that go on with a phase keep the phase's deadline. */
static double
state_deadline(const struct session *s, enum session_state state)
{
	const struct service *svc = s->svc;
	ev_tstamp now = ev_now(s->srv->loop);

	switch (state) {
	case S_PROXY_HEADER:
	case S_CLIENT_TLS:
	case S_BACKEND_TLS:
		return svc->handshake_timeout;
	case S_BACKEND_CONNECT:
		return svc->connect_timeout;
	case S_UP_DIALOGUE:
	case S_UP_TLS:
	case S_UP_CAPA:
		return s->up_deadline - now;
	case S_PLAINTEXT: /* the plaintext phase counts against handshake_timeout */
	case S_STARTTLS:
	case S_CLIENT_STARTTLS:
		return s->started + svc->handshake_timeout - now;
	case S_RELAY:
		return svc->idle_timeout;
	default: /* S_DRAIN */
		return DRAIN_LINGER;
	}
}

static void
arm_timer(struct session *s, double seconds)
{
	ev_timer_stop(s->srv->loop, &s->timer);
	ev_timer_set(&s->timer, seconds, 0.);
	ev_timer_start(s->srv->loop, &s->timer);
}

/* The one place the state changes: logs the transition, sets what the
 * relay may do in the new state, arms its deadline, and asks the
 * dispatcher to run its handler unless the state waits for an event. */
void
session_enter(struct session *s, enum session_state state)
{
	if (s->state == S_CLOSED)
		return;
	log_session(LOG_DEBUG, s->who, "state %s -> %s", state_names[s->state], state_names[state]);
	if (state == S_UP_DIALOGUE)
		s->up_deadline = ev_now(s->srv->loop) + s->svc->handshake_timeout;
	s->state = state;
	switch (state) {
	case S_UP_DIALOGUE: /* nothing of the client's is read meanwhile */
		s->c2s.paused = true;
		break;
	case S_PLAINTEXT:
	case S_RELAY:
		s->c2s.paused = false;
		s->s2c.held = false;
		s->last_activity = ev_now(s->srv->loop);
		break;
	case S_STARTTLS: /* the client's plaintext stops here */
		s->c2s.paused = true;
		s->s2c.held = true;
		break;
	default:
		break;
	}
	if (state == S_CLOSED)
		ev_timer_stop(s->srv->loop, &s->timer);
	else
		arm_timer(s, state_deadline(s, state));
	s->rerun = state != S_BACKEND_CONNECT && state != S_CLOSED;
}

void
session_enter_relay(struct session *s)
{
	bool starttls_to_come = s->proto_state && s->svc->tls == TLSMODE_STARTTLS && !s->client.ssl;

	session_enter(s, starttls_to_come ? S_PLAINTEXT : S_RELAY);
}

/* The one exit door: idempotent; logs the end line exactly once. */
void
session_close(struct session *s, const char *reason)
{
	struct ev_loop *loop = s->srv->loop;

	if (s->state == S_CLOSED)
		return;
	if (s->reason == NULL)
		s->reason = reason;
	session_enter(s, S_CLOSED);
	client_handshake_over(s);
	observe_end(s->obs, s->reason, s->c2s.bytes, s->s2c.bytes);
	s->obs = NULL;
	log_session(LOG_INFO, s->who, "end in=%llu out=%llu duration=%.3f reason=%s",
	            (unsigned long long)s->c2s.bytes, (unsigned long long)s->s2c.bytes,
	            ev_now(loop) - s->started, s->reason);
	metrics_active(s->m, -1);
	shared_add(&s->m->bytes_in, s->c2s.bytes);
	shared_add(&s->m->bytes_out, s->s2c.bytes);
	ev_timer_stop(loop, &s->timer);
	session_login_forget(s);
	backend_forget(s);
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

/* Sends TEXT (may be NULL) to the client after what is already queued for
 * it, then closes with REASON. The client's further input is read and
 * dropped so that closing does not turn into a reset that could destroy the
 * reply in flight. */
void
session_drain(struct session *s, const char *text, size_t len, const char *reason)
{
	s->reason = reason;
	session_enter(s, S_DRAIN);
	session_login_forget(s);
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
}

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
on_auth(void *arg, const struct proto_action *act)
{
	struct session *s = arg;

	observe_auth(s->who, s->m, act);
}

static void
on_reply(void *arg, const char *text, size_t len)
{
	observe_reply(((struct session *)arg)->obs, text, len);
}

/* Runs the verdict loop (filter.c) over what waits in D's input buffer.
 * Returns bytes consumed, or -1 when the session changed course
 * (STARTTLS, closing). */
long
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
		session_enter(s, S_STARTTLS);
		return -1;
	case FILTER_LOGIN: {
		/* The credentials are in the input line or the scratch: copied
		 * out, then wiped from both. */
		char *line = (char *)buf_head(&d->in);
		session_login_start(s, &r.login);
		OPENSSL_cleanse(line, r.consumed);
		OPENSSL_cleanse(session_scratch, PROTO_SCRATCH);
		buf_consume(&d->in, r.consumed);
		return (long)r.consumed;
	}
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

/* The states in which both directions are pumped. */
static bool
relaying(enum session_state state)
{
	return state == S_PLAINTEXT || state == S_RELAY || state == S_STARTTLS ||
	       state == S_DRAIN || state == S_UP_DIALOGUE || state == S_UP_CAPA;
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
		if (!relaying(s->state))
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
			/* A filter changed the session's course: go round again
			 * in the new state, or leave it to its own handler. */
			if (!relaying(s->state))
				return;
			a = 1;
			continue;
		}
		if ((s->state == S_UP_DIALOGUE || s->state == S_UP_CAPA) && s->s2c.eof) {
			/* C13: the backend went away mid-dialogue: fail closed. */
			backend_tls_failed(s, "backend closed the connection");
			a = 1;
			continue;
		}
		if (s->state == S_STARTTLS && buf_len(&s->s2c.buf) == 0) {
			client_start_tls(s, S_CLIENT_STARTTLS);
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

/* The dispatcher: runs the current state's handler, and the next state's
 * while a handler enters a state that has work to do at once. */
static void
session_run(struct session *s)
{
	while (s->rerun && s->state != S_CLOSED) {
		s->rerun = false;
		switch (s->state) {
		case S_PROXY_HEADER:
			client_step_proxy_header(s);
			break;
		case S_CLIENT_TLS:
		case S_CLIENT_STARTTLS:
			client_step_tls(s);
			break;
		case S_BACKEND_CONNECT:
			backend_step_connect(s);
			break;
		case S_BACKEND_TLS:
		case S_UP_TLS:
			backend_step_tls(s);
			break;
		default:
			if (relaying(s->state))
				step_relay(s);
			break;
		}
	}
}

void
session_wake(struct session *s)
{
	session_hold(s);
	session_run(s);
	session_release(s);
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
	s->rerun = true;
	session_run(s);
	session_release(s);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;

	(void)revents;
	session_hold(s);
	s->rerun = false;
	switch (s->state) {
	case S_PROXY_HEADER:
		shared_add(&s->m->refused[MR_PROXY_HEADER], 1);
		log_session(LOG_WARNING, s->who, "no PROXY header within %.0fs: closing",
		            s->svc->handshake_timeout);
		session_close(s, "refused");
		break;
	case S_CLIENT_TLS:
	case S_STARTTLS:
	case S_CLIENT_STARTTLS:
		shared_add(&s->m->handshake_failures[MH_TIMEOUT], 1);
		log_session(LOG_INFO, s->who, "handshake timed out after %.0fs",
		            s->svc->handshake_timeout);
		session_close(s, "handshake-failed");
		break;
	case S_BACKEND_CONNECT:
		backend_failed(s, "connect timed out");
		break;
	case S_BACKEND_TLS:
	case S_UP_DIALOGUE:
	case S_UP_TLS:
	case S_UP_CAPA:
		backend_tls_failed(s, "handshake timed out");
		break;
	case S_PLAINTEXT: {
		const char *t = s->proto->reply[PROTO_REPLY_TIMEOUT];
		shared_add(&s->m->handshake_failures[MH_TIMEOUT], 1);
		log_session(LOG_INFO, s->who, "no STARTTLS within %.0fs",
		            s->svc->handshake_timeout);
		session_drain(s, t, strlen(t), "handshake-failed");
		break;
	}
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
	session_run(s);
	session_release(s);
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
	struct proto_conf conf = {.starttls = offer,
	                          .require_tls = s->svc->require_tls,
	                          .backend_login = s->svc->oauth2 != NULL};

	s->proto_state = calloc(1, s->proto->state_size);
	if (s->proto_state == NULL)
		return false;
	s->obs = observe_start(s->svc, s->who, s->started_wall);
	conf.observe = s->obs != NULL;
	s->proto->init(s->proto_state, &conf);
	s->flt.state = s->proto_state;
	s->flt.check_first_byte = offer;
	s->c2s.filter = s->s2c.filter = session_filter;
	s->c2s.filter_arg = s->s2c.filter_arg = s;
	return true;
}

/* The client is who it is (PROXY header read, if any): TLS or plaintext. */
void
session_begin(struct session *s)
{
	const struct service *svc = s->svc;

	if (svc->tls == TLSMODE_IMPLICIT) {
		if (needs_adapter(svc) && !start_adapter(s)) {
			session_close(s, "error");
			return;
		}
		client_start_tls(s, S_CLIENT_TLS);
		return;
	}
	log_session(LOG_INFO, s->who, "start tls=off%s", backend_unverified_note(s));
	if (needs_adapter(svc) && !start_adapter(s)) {
		log_session(LOG_ERR, s->who, "out of memory");
		session_close(s, "error");
	} else {
		backend_connect(s);
	}
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
	        .arg = s, .log = on_log, .reply = on_reply, .event = on_event, .auth = on_auth};
	s->flt = (struct filter){.proto = s->proto,
	                         .out = {&s->c2s.buf, &s->s2c.buf},
	                         .reply = &s->s2c.buf,
	                         .hooks = &s->hooks,
	                         .scratch = session_scratch};
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
	if (svc->accept_proxy_from.n > 0 && netaddr_cidr_match(&svc->accept_proxy_from, peer)) {
		/* A trusted balancer: its PROXY header comes first, even before TLS. */
		session_enter(s, S_PROXY_HEADER);
	} else {
		session_begin(s);
	}
	session_run(s);
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
