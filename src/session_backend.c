/* A session's way to its backend: the connect, the outgoing PROXY header,
 * TLS towards the backend, and postern's own STARTTLS dialogue with it
 * (backend_tls = starttls, the adapter in its client role). Every way out
 * fails closed: the client gets the protocol's error and nothing it sent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <postern/log.h>
#include <postern/log_text.h>
#include <postern/proxyproto.h>
#include <postern/session.h>
#include <postern/shared.h>
#include <postern/tls.h>

#include "session_internal.h"

void
backend_failed(struct session *s, const char *why)
{
	const char *text = s->proto->reply[PROTO_REPLY_BACKEND_DOWN];

	backend_forget(s);
	shared_add(&s->m->backend_errors[MB_UNREACHABLE], 1);
	log_session(LOG_WARNING, s->who, "backend %s unreachable: %s", s->svc->backend.text, why);
	session_drain(s, text, text ? strlen(text) : 0, "backend-unreachable");
}

static bool
in_dialogue(const struct session *s)
{
	return s->state == S_UP_DIALOGUE || s->state == S_UP_TLS || s->state == S_UP_CAPA;
}

/* Fails closed: the client gets the protocol's error, nothing it sent has
 * been forwarded, and the log says why. */
void
backend_tls_failed(struct session *s, const char *why)
{
	const char *text = s->proto->reply[PROTO_REPLY_BACKEND_DOWN];
	const char *cert = ep_verify_error(&s->backend);

	shared_add(&s->m->backend_errors[MB_TLS], 1);
	if (in_dialogue(s))
		s->c2s.bytes = 0; /* only postern's own commands went out */
	log_session(LOG_WARNING, s->who, "backend %s TLS failed: %s%s%s", s->svc->backend.text, why,
	            cert ? "; certificate: " : "", cert ? cert : "");
	session_drain(s, text, text ? strlen(text) : 0, "backend-tls-failed");
}

const char *
backend_unverified_note(const struct session *s)
{
	return s->svc->backend_tls != TLSMODE_OFF && !s->svc->backend_verify
	               ? " backend_verify=no WARNING=backend-certificate-not-verified"
	               : "";
}

/* TLS towards the backend, entering NEXT (BACKEND_TLS or UP_TLS). */
static void
start_backend_tls(struct session *s, enum session_state next)
{
	if (!ep_start_tls(&s->backend, tls_backend_new(s->svc), false)) {
		backend_tls_failed(s, "cannot create TLS session");
		return;
	}
	session_enter(s, next);
}

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
	s->s2c.filter_arg = s;
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
	session_enter_relay(s);
}

/* xclient = yes but the backend's EHLO reply has no XCLIENT: the client
 * is relayed as it would be without the key, and the log says so once per
 * process, as every session to that backend would repeat it. */
static void
xclient_missing(struct session *s)
{
	static bool warned;

	if (warned)
		return;
	warned = true;
	log_session(LOG_WARNING, s->who,
	            "backend %s does not offer XCLIENT (Postfix: smtpd_authorized_xclient_hosts): "
	            "clients are relayed without their address",
	            s->svc->backend.text);
}

/* XCLIENT's attributes (Postfix's XCLIENT_README) for the client: its
 * address (IPv6 as "IPV6:...", a mapped IPv4 as IPv4) and port. Neither
 * needs xtext encoding: no '+', '=' or byte outside 33-126 in them. The
 * server takes HELO and PROTO from the client's own EHLO, sent after. */
static void
xclient_args(const struct session *s, char *dst, size_t len)
{
	char ip[INET6_ADDRSTRLEN + 5]; /* and "IPV6:" */
	unsigned port = 0;

	if (s->peer.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)&s->peer;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		port = ntohs(in->sin_port);
	} else if (s->peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)&s->peer;
		port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof(ip));
		} else {
			char v6[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, &in6->sin6_addr, v6, sizeof(v6));
			snprintf(ip, sizeof(ip), "IPV6:%s", v6);
		}
	} else { /* a unix socket client: nothing to tell */
		snprintf(dst, len, "ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE]");
		return;
	}
	snprintf(dst, len, "ADDR=%s PORT=%u", ip, port);
}

/* Runs the adapter's client role over what the backend sent. */
static long
upstream_filter(void *arg, struct relay_dir *d)
{
	struct session *s = arg;
	struct filter_result r;

	char why[4 * 256];

	filter_upstream(&s->up, buf_head(&d->in), buf_len(&d->in), d->in.cap, d->eof, &r);
	switch (r.stop) {
	case FILTER_UP_FAIL: /* the text may quote the server */
		log_text_escape(why, sizeof(why), r.text, strlen(r.text), 0);
		if (s->svc->backend_tls == TLSMODE_STARTTLS)
			backend_tls_failed(s, why);
		else /* only XCLIENT was asked */
			backend_failed(s, why);
		return -1;
	case FILTER_UP_DONE:
		if (r.event) /* xclient-not-offered */
			xclient_missing(s);
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
		start_backend_tls(s, S_UP_TLS);
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
	s->proto->up_start(s->up_state, helo ? helo : "localhost", &act, session_scratch);
	if (s->svc->xclient && s->proto->up_xclient) {
		char args[128];
		xclient_args(s, args, sizeof(args));
		s->proto->up_xclient(s->up_state, args, s->svc->backend_tls == TLSMODE_STARTTLS);
	}
	buf_append_grow(&s->c2s.buf, act.text, act.len);
	s->s2c.filter = upstream_filter;
	s->s2c.filter_arg = s;
	session_enter(s, S_UP_DIALOGUE);
}

/* What a v2 header says of the client's TLS, or NULL while the client side
 * is plaintext (always so at connect time for a STARTTLS service). */
static struct proxyproto_tls *
client_tls_facts(struct session *s, struct proxyproto_tls *tls)
{
	struct ep_tls_info info;

	if (s->client.ssl == NULL || !SSL_is_init_finished(s->client.ssl))
		return NULL;
	ep_tls_summary(&s->client, &info);
	tls->version = info.version;
	tls->cipher = info.cipher;
	tls->authority = info.sni && log_hostname_valid(info.sni) ? info.sni : NULL;
	tls->cert_conn = info.peer_cert_now;
	tls->cert_sess = info.peer_cert;
	tls->cert_verified = info.peer_verified;
	return tls;
}

/* The backend's socket is connected: the PROXY header goes first, raw,
 * before TLS or any client byte; then TLS towards the backend if asked. */
static void
backend_connected(struct session *s)
{
	const struct service *svc = s->svc;

	if (svc->proxy_protocol) {
		char hdr[PROXYPROTO_MAX];
		if (s->local.ss_family == AF_UNSPEC) /* not from a PROXY header: ask */
			ep_local_addr(&s->client, &s->local);
		struct proxyproto_tls tls, *tlsp = client_tls_facts(s, &tls);
		size_t n = proxyproto_build(svc->proxy_protocol, (struct sockaddr *)&s->peer,
		                            (struct sockaddr *)&s->local, tlsp, hdr, sizeof(hdr));
		/* A fresh socket's send buffer always takes ~100 bytes at once. */
		if (n == 0 || ep_write(&s->backend, hdr, n) != (ssize_t)n) {
			backend_failed(s, "cannot send the PROXY header");
			return;
		}
	}
	if (svc->backend_tls == TLSMODE_STARTTLS)
		start_upstream(s);
	else if (svc->backend_tls == TLSMODE_IMPLICIT)
		start_backend_tls(s, S_BACKEND_TLS);
	else if (svc->xclient)
		start_upstream(s);
	else
		session_enter_relay(s);
}

/* The I-th address to try: the configured one, or the name's I-th. */
static bool
backend_addr(const struct session *s, size_t i, struct sockaddr_storage *ss, socklen_t *len)
{
	const struct sockaddr_ex *b = &s->svc->backend;

	if (s->addrs == NULL) {
		if (i > 0)
			return false;
		*ss = b->ss;
		*len = b->len;
		return true;
	}
	if (i >= s->addrs->n)
		return false;
	*ss = s->addrs->v[i].ss;
	*len = s->addrs->v[i].len;
	/* Both layouts keep the port at the same offset. */
	((struct sockaddr_in *)ss)->sin_port = b->name_port;
	return true;
}

/* Notes why the address just tried failed: a name's lines say which one,
 * and that the next is tried. */
static void
note_failure(struct session *s, int err)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char addr[INET6_ADDRSTRLEN + 8];

	if (s->addrs == NULL || !backend_addr(s, s->addr_next - 1, &ss, &len)) {
		snprintf(s->addr_err, sizeof(s->addr_err), "%s", strerror(err));
		return;
	}
	session_format_addr((struct sockaddr *)&ss, addr, sizeof(addr));
	snprintf(s->addr_err, sizeof(s->addr_err), "%s: %s", addr, strerror(err));
	if (s->addr_next < s->addrs->n)
		log_session(LOG_INFO, s->who, "backend %s: %s; trying the next address",
		            s->svc->backend.text, s->addr_err);
}

/* Connects to the next address, and on to the one after while they fail
 * at once; all of it within the one connect_timeout armed on entry. */
static void
try_next_addr(struct session *s)
{
	struct sockaddr_storage ss;
	socklen_t len;

	while (backend_addr(s, s->addr_next, &ss, &len)) {
		s->addr_next++;
		ep_close(s->srv->loop, &s->backend);
		int r = ep_connect(&s->backend, (const struct sockaddr *)&ss, len);
		if (r == 0) {
			backend_connected(s);
			return;
		}
		if (r == EP_WANT_WRITE) {
			ep_watch(s->srv->loop, &s->backend, false, true);
			return;
		}
		note_failure(s, s->backend.sys_errno);
	}
	backend_failed(s, s->addr_err);
}

void
backend_forget(struct session *s)
{
	if (s->lookup)
		resolver_cancel(s->lookup);
	s->lookup = NULL;
	free(s->addrs);
	s->addrs = NULL;
}

static void
on_resolved(void *arg, struct resolver_addrs *addrs, const char *error)
{
	struct session *s = arg;

	s->lookup = NULL;
	s->addrs = addrs;
	if (error)
		backend_failed(s, error);
	else
		try_next_addr(s);
	session_wake(s);
}

void
backend_connect(struct session *s)
{
	const struct service *svc = s->svc;
	char err[160];

	session_enter(s, S_BACKEND_CONNECT);
	s->addr_next = 0;
	if (svc->backend.ss.ss_family != AF_UNSPEC) { /* an address, as configured */
		try_next_addr(s);
		return;
	}
	s->addrs = resolver_cached(s->srv->loop, svc->backend_host, svc->dns_cache_time);
	if (s->addrs) {
		try_next_addr(s);
		return;
	}
	s->lookup =
	        resolver_start(s->srv->loop, svc->backend_host, on_resolved, s, err, sizeof(err));
	if (s->lookup == NULL)
		backend_failed(s, err);
}

void
backend_step_connect(struct session *s)
{
	int err;

	if (s->backend.fd < 0) /* still looking the name up */
		return;
	err = ep_connect_result(&s->backend);
	if (err == EINPROGRESS || err == EALREADY)
		return;
	ep_watch(s->srv->loop, &s->backend, false, false);
	if (err == 0) {
		backend_connected(s);
		return;
	}
	note_failure(s, err);
	try_next_addr(s);
}

void
backend_step_tls(struct session *s)
{
	int r = ep_handshake(&s->backend);
	char err[256];

	if (r == 1) {
		struct ep_tls_info tls;
		ep_watch(s->srv->loop, &s->backend, false, false);
		ep_tls_summary(&s->backend, &tls);
		log_session(LOG_DEBUG, s->who, "backend tls=%s cipher=%s", tls.version, tls.cipher);
		if (s->state == S_UP_TLS) {
			shared_add(&s->m->starttls_backend, 1);
			/* Capabilities are asked again inside TLS. */
			struct proto_action act = {0};
			s->proto->up_tls_done(s->up_state, &act, session_scratch);
			buf_append_grow(&s->c2s.buf, act.text, act.len);
			session_enter(s, S_UP_CAPA);
			return;
		}
		if (s->svc->xclient) /* XCLIENT inside the TLS */
			start_upstream(s);
		else
			session_enter_relay(s);
	} else if (r == EP_ERR) {
		backend_tls_failed(s, ep_strerror(&s->backend, err, sizeof(err)));
	} else {
		ep_watch(s->srv->loop, &s->backend, r == EP_WANT_READ, r == EP_WANT_WRITE);
	}
}
