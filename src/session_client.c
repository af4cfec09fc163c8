/* The client's side of a session: a trusted balancer's PROXY header, read
 * exactly, and the client's TLS handshake, whose SSL is made only once the
 * client has spoken and only while fewer than max_handshakes are in
 * progress. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include <postern/log.h>
#include <postern/log_text.h>
#include <postern/proxyproto.h>
#include <postern/session.h>
#include <postern/shared.h>
#include <postern/tls.h>

#include "session_internal.h"

/* The client's handshake no longer counts against max_handshakes. */
void
client_handshake_over(struct session *s)
{
	if (s->handshaking) {
		s->handshaking = false;
		s->srv->handshakes--;
	}
}

static void
log_tls_start(struct session *s, const char *what)
{
	struct ep_tls_info tls;

	ep_tls_summary(&s->client, &tls);
	/* OpenSSL takes any byte but NUL in a host_name: only a valid host
	 * name is shown, never text that could pass for more fields. */
	if (tls.sni && !log_hostname_valid(tls.sni))
		tls.sni = "(invalid)";
	log_session(LOG_INFO, s->who, "%s tls=%s cipher=%s%s%s%s", what, tls.version, tls.cipher,
	            tls.sni ? " sni=" : "", tls.sni ? tls.sni : "", backend_unverified_note(s));
}

/* Puts a server-side SSL on the client's socket once the client has spoken,
 * if fewer than max_handshakes are in progress; else, or if OpenSSL cannot
 * make one, the session is closed. */
static bool
attach_client_tls(struct session *s)
{
	int limit = s->srv->cfg->max_handshakes;

	if (s->srv->handshakes >= limit) {
		/* No TLS work at all: the cap bounds the memory and CPU that
		 * handshakes in progress hold. */
		shared_add(&s->m->refused[MR_MAX_HANDSHAKES], 1);
		log_session(LOG_WARNING, s->who, "refused reason=max_handshakes limit=%d", limit);
		session_close(s, "refused");
		return false;
	}
	if (!ep_start_tls(&s->client, tls_server_new(s->svc), true)) {
		log_session(LOG_ERR, s->who, "cannot create TLS session");
		session_close(s, "error");
		return false;
	}
	s->handshaking = true;
	s->srv->handshakes++;
	return true;
}

/* CLIENT_TLS and CLIENT_STARTTLS: the client's SSL is made when its first
 * byte (or its end) arrives, so that a connection that sends nothing costs
 * no TLS state. */
void
client_step_tls(struct session *s)
{
	int r;
	char err[256], c;

	if (s->client.ssl == NULL) {
		if (ep_peek(&s->client, &c, 1) == EP_WANT_READ) {
			ep_watch(s->srv->loop, &s->client, true, false);
			return;
		}
		if (!attach_client_tls(s))
			return;
	}
	r = ep_handshake(&s->client);
	if (r == 1 && s->state == S_CLIENT_STARTTLS) {
		/* STARTTLS done: the adapter forgets the plaintext phase. */
		client_handshake_over(s);
		shared_add(&s->m->starttls_client, 1);
		s->proto->tls_started(s->proto_state);
		log_tls_start(s, "starttls");
		session_enter(s, S_RELAY);
	} else if (r == 1) {
		client_handshake_over(s);
		ep_watch(s->srv->loop, &s->client, false, false);
		log_tls_start(s, "start");
		backend_connect(s);
	} else if (r == EP_ERR) {
		shared_add(&s->m->handshake_failures[MH_ERROR], 1);
		log_session(LOG_INFO, s->who, "handshake failed: %s",
		            ep_strerror(&s->client, err, sizeof(err)));
		session_close(s, "handshake-failed");
	} else {
		ep_watch(s->srv->loop, &s->client, r == EP_WANT_READ, r == EP_WANT_WRITE);
	}
}

/* The client's handshake, implicit or after the STARTTLS answer has left
 * in plaintext. */
void
client_start_tls(struct session *s, enum session_state next)
{
	ep_watch(s->srv->loop, &s->client, false, false);
	ep_watch(s->srv->loop, &s->backend, false, false);
	session_enter(s, next);
}

/* Reads the PROXY header of a trusted balancer, exactly: bytes after it
 * belong to the client (a ClientHello, a command) and stay in the socket. */
void
client_step_proxy_header(struct session *s)
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
	n = ep_peek(&s->client, view + have, sizeof(view) - have);
	if (n == EP_WANT_READ) {
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
	if (ep_read(&s->client, s->hdr + have, take) != (ssize_t)take) {
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
