#include <string.h>

#include <openssl/crypto.h>

#include <postern/oauth2_sasl.h>
#include <postern/proto_auth.h>
#include <postern/proto_login.h>

int
pl_sasl_plain(const char *b64, size_t n, char *out, size_t cap, struct pu_word *user,
              struct pu_word *pass)
{
	long m = n == 1 && b64[0] == '=' ? 0 : oauth2_unbase64(b64, n, (unsigned char *)out, cap);
	const char *a, *b;

	if (m <= 0)
		return -1;
	a = memchr(out, '\0', (size_t)m);
	b = a ? memchr(a + 1, '\0', (size_t)(out + m - a - 1)) : NULL;
	if (b == NULL || memchr(b + 1, '\0', (size_t)(out + m - b - 1))) {
		OPENSSL_cleanse(out, (size_t)m);
		return -1;
	}
	*user = (struct pu_word){a + 1, (size_t)(b - a - 1)};
	*pass = (struct pu_word){b + 1, (size_t)(out + m - b - 1)};
	/* authzid: none, or the user's own name */
	if (user->n == 0 || user->n > PL_USER_MAX || pass->n > PL_PASS_MAX ||
	    (a != out && ((size_t)(a - out) != user->n || memcmp(out, user->p, user->n) != 0))) {
		OPENSSL_cleanse(out, (size_t)m);
		return -1;
	}
	return 0;
}

enum proto_verdict
pl_login(struct proto_action *act, size_t consume, struct pu_word user, struct pu_word pass)
{
	act->consume = consume;
	act->login_user = user.p;
	act->login_user_len = user.n;
	act->login_pass = pass.p;
	act->login_pass_len = pass.n;
	return PV_LOGIN;
}

/* ---- the untagged protocols ---- */

/* Where decoded credentials go in the scratch: after any reply text,
 * before the log (scratch + PROTO_SCRATCH). */
#define AT_DECODED 4096

_Static_assert(AT_DECODED + 2 * (PL_USER_MAX + PL_PASS_MAX) + 16 < PROTO_SCRATCH,
               "the credentials fit the scratch");

static enum proto_verdict
say(struct proto_action *act, size_t n, char *scratch, const char *text)
{
	return pu_answer(act, PV_REPLY, n, scratch, "%s\r\n", text);
}

static enum proto_verdict
begin(struct pl_login *l, size_t n, struct pu_word user, struct pu_word pass,
      struct proto_action *act)
{
	pa_user(l->auth, user.p, user.n);
	pa_begin(l->auth, NULL, 0);
	l->state = PLS_TOKEN;
	return pl_login(act, n, user, pass);
}

static enum proto_verdict
plain(struct pl_login *l, const struct pl_words *w, const char *b64, size_t len, size_t n,
      struct proto_action *act, char *scratch)
{
	struct pu_word user, pass;

	if (pl_sasl_plain(b64, len, scratch + AT_DECODED, PROTO_SCRATCH - AT_DECODED, &user,
	                  &pass) < 0) {
		l->state = PLS_IDLE;
		return say(act, n, scratch, w->bad);
	}
	return begin(l, n, user, pass, act);
}

enum proto_verdict
pl_auth(struct pl_login *l, const struct pl_words *w, struct pu_word mech, struct pu_word ir,
        size_t n, struct proto_action *act, char *scratch)
{
	bool login = w->user_go && pu_word_is(mech, "LOGIN");

	if (!pu_word_is(mech, "PLAIN") && !login)
		return say(act, n, scratch, w->no_mech);
	if (login && ir.n > 0) { /* RFC 4954: LOGIN's user name as initial response */
		l->state = PLS_USER;
		return pl_response(l, w, ir.p, ir.n, act, scratch) == PV_REPLY &&
		                       l->state == PLS_PASS
		               ? say(act, n, scratch, w->pass_go)
		               : say(act, n, scratch, w->bad);
	}
	if (login) {
		l->state = PLS_USER;
		return say(act, n, scratch, w->user_go);
	}
	if (ir.n > 0)
		return plain(l, w, ir.p, ir.n, n, act, scratch);
	l->state = PLS_PLAIN;
	return say(act, n, scratch, w->go);
}

enum proto_verdict
pl_response(struct pl_login *l, const struct pl_words *w, const char *p, size_t n,
            struct proto_action *act, char *scratch)
{
	size_t body = pu_trim_eol(p, n);
	char *d = scratch + AT_DECODED;
	long m;

	if (body == 1 && p[0] == '*') {
		l->state = PLS_IDLE;
		return say(act, n, scratch, w->cancelled);
	}
	if (l->state == PLS_PLAIN)
		return plain(l, w, p, body, n, act, scratch);
	m = oauth2_unbase64(p, body, (unsigned char *)d, PL_PASS_MAX);
	if (m <= 0 || memchr(d, '\0', (size_t)m) ||
	    (l->state == PLS_USER && (size_t)m > PL_USER_MAX)) {
		if (m > 0)
			OPENSSL_cleanse(d, (size_t)m);
		l->state = PLS_IDLE;
		return say(act, n, scratch, w->bad);
	}
	if (l->state == PLS_USER) {
		memcpy(l->user, d, (size_t)m);
		l->user_len = (unsigned char)m;
		l->state = PLS_PASS;
		return say(act, n, scratch, w->pass_go);
	}
	return pl_login_kept(l, n, (struct pu_word){d, (size_t)m}, act);
}

enum proto_verdict
pl_login_kept(struct pl_login *l, size_t n, struct pu_word pass, struct proto_action *act)
{
	return begin(l, n, (struct pu_word){l->user, l->user_len}, pass, act);
}

void
pl_send(struct pl_login *l, const char *mech, const char *blob, size_t len,
        struct proto_action *act, char *scratch)
{
	l->state = PLS_UPSTREAM;
	l->bearer = strcmp(mech, "OAUTHBEARER") == 0;
	/* The initial response: RFC 4954 (SMTP), RFC 5034 (POP3). */
	pu_answer(act, PV_PASS, 0, scratch, "AUTH %s %.*s\r\n", mech, (int)len, blob);
	pu_log_begin(act, scratch, 0);
	pu_log_str(act, scratch, "AUTH ");
	pu_log_str(act, scratch, mech);
	pu_log_str(act, scratch, " " PU_SECRET);
}

enum proto_verdict
pl_challenge(const struct pl_login *l, size_t n, struct proto_action *act)
{
	/* RFC 7628 3.2.3: an error challenge is answered with ^A
	 * (OAUTHBEARER) or an empty response (XOAUTH2); the final reply
	 * follows. */
	act->consume = n;
	act->text = l->bearer ? "AQ==\r\n" : "\r\n";
	act->len = strlen(act->text);
	return PV_TO_SERVER;
}

void
pl_ended(struct pl_login *l, bool ok, struct proto_action *act)
{
	l->state = PLS_IDLE;
	l->done = ok;
	pa_end(l->auth, NULL, 0, ok, act);
}

void
pl_fail(struct pl_login *l, const struct pl_words *w, enum proto_login_fail why,
        struct proto_action *act, char *scratch)
{
	struct proto_action uncounted = {0};

	l->state = PLS_IDLE;
	/* Only the client's own mistake counts as a failed login (fail2ban). */
	pa_end(l->auth, NULL, 0, false, why == PROTO_LOGIN_REFUSED ? act : &uncounted);
	say(act, 0, scratch, w->fail[why]);
}
