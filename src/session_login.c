/* backend_auth = oauth2: the session's part of postern's own login. The
 * adapter reads the client's credentials (PV_LOGIN) and later words the
 * outcome; oauth2_login.c decides and brings the access token; this file
 * carries one to the other and keeps the secrets short-lived: the
 * credentials are copied out of the input and the scratch, which are
 * wiped, and the SASL message is wiped once queued. */
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>

#include <postern/config_oauth2.h>
#include <postern/log.h>
#include <postern/oauth2_http.h>
#include <postern/oauth2_login.h>
#include <postern/oauth2_sasl.h>
#include <postern/oauth2_store.h>

#include "session_internal.h"

/* base64 of "n,a=USER,^Ahost=H^Aport=P^Aauth=Bearer TOKEN^A^A" */
#define BLOB_MAX (((OAUTH2_ACCESS_MAX + 1024) / 3 + 1) * 4 + 1)

static unsigned
backend_port(const struct service *svc)
{
	const struct sockaddr_storage *ss = &svc->backend.ss;

	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(svc->backend.name_port);
}

static void
reply(struct session *s, enum proto_login_fail why)
{
	struct proto_action act = {0};

	s->proto->login_fail(s->proto_state, why, &act, session_scratch);
	buf_append_grow(&s->s2c.buf, act.text, act.len);
	observe_reply(s->obs, act.text, act.len);
	if (act.auth)
		observe_auth(s->who, s->m, &act);
}

static void
send_token(struct session *s, const char *token)
{
	const struct oauth2_provider *p = s->svc->oauth2;
	const char *host = s->svc->backend_sni ? s->svc->backend_sni : s->svc->backend_host;
	struct proto_action act = {0};
	char *blob = malloc(BLOB_MAX);
	long n = -1;

	if (blob && p->oauthbearer)
		n = oauth2_sasl_oauthbearer(s->login_user, host, backend_port(s->svc), token, blob,
		                            BLOB_MAX);
	else if (blob)
		n = oauth2_sasl_xoauth2(s->login_user, token, blob, BLOB_MAX);
	if (n < 0) {
		log_session(LOG_ERR, s->who, "oauth2: cannot build the SASL message");
		oauth2_secret_free(blob, BLOB_MAX);
		reply(s, PROTO_LOGIN_TEMPORARY);
		return;
	}
	s->proto->login_send(s->proto_state, p->oauthbearer ? "OAUTHBEARER" : "XOAUTH2", blob,
	                     (size_t)n, &act, session_scratch);
	buf_append_grow(&s->c2s.buf, act.text, act.len);
	s->c2s.buf.secret = true; /* wiped as it leaves for the server */
	if (act.log)
		observe_action(s->obs, PROTO_FROM_CLIENT, &act);
	OPENSSL_cleanse(session_scratch, act.len);
	oauth2_secret_free(blob, BLOB_MAX);
}

static void
login_done(void *arg, enum oauth2_login_result r, const char *token)
{
	struct session *s = arg;
	static const enum proto_login_fail why[] = {
	        [OAUTH2_LOGIN_REFUSED] = PROTO_LOGIN_REFUSED,
	        [OAUTH2_LOGIN_REVOKED] = PROTO_LOGIN_REVOKED,
	        [OAUTH2_LOGIN_TEMPORARY] = PROTO_LOGIN_TEMPORARY,
	};

	s->login = NULL;
	if (r == OAUTH2_LOGIN_OK)
		send_token(s, token);
	else
		reply(s, why[r]);
	if (!s->login_sync) { /* from the loop: the session moves on now */
		s->rerun = true;
		session_wake(s);
	}
}

void
session_login_start(struct session *s, const struct proto_action *act)
{
	char pass[PROTO_LOGIN_PASS_MAX];
	size_t ulen = act->login_user_len, plen = act->login_pass_len;

	/* the adapter bounds both; a longer one cannot be an account */
	if (ulen >= sizeof(s->login_user) || plen > sizeof(pass)) {
		ulen = 0;
		plen = 0;
	}
	memcpy(s->login_user, act->login_user, ulen);
	s->login_user[ulen] = '\0';
	memcpy(pass, act->login_pass, plen);
	s->login_sync = true;
	s->login = oauth2_login_start(s->srv->loop, s->svc->oauth2, s->m, s->who, s->login_user,
	                              ulen, pass, plen, login_done, s);
	s->login_sync = false;
	OPENSSL_cleanse(pass, sizeof(pass));
}

void
session_login_forget(struct session *s)
{
	oauth2_login_cancel(s->login);
	s->login = NULL;
}
