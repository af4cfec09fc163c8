/* backend_auth = oauth2: postern answers the client's LOGIN or
 * AUTHENTICATE PLAIN itself (PV_LOGIN) and, once the session has the
 * access token, runs AUTHENTICATE XOAUTH2 or OAUTHBEARER with the server
 * under the client's tag; the server's tagged completion is the client's.
 * Other mechanisms are refused: postern has no password to give them.
 * LOGIN's user name and password may be literals (RFC 9051 4.3),
 * synchronising or not (RFC 7888): postern reads them itself.
 *
 * The login waits for the server to be idle (no command in flight), so
 * that the first tagged completion after it is its own, and holds the
 * client's further commands until it has ended (OL_TOKEN, OL_UPSTREAM). */
#include <string.h>

#include <openssl/crypto.h>

#include <postern/imap_token.h>
#include <postern/proto_login.h>

#include "imap_internal.h"

/* Where the decoded credentials go in the scratch: after any reply text,
 * before the log (scratch + PROTO_SCRATCH). */
#define AT_USER 4096
#define AT_PASS (AT_USER + PL_USER_MAX + 1)
#define AT_PLAIN (AT_PASS + PL_PASS_MAX + 1)

_Static_assert(AT_PLAIN + 2 * (PL_USER_MAX + PL_PASS_MAX) + 16 < PROTO_SCRATCH,
               "the credentials fit the scratch");

/* PV_LOGIN under TAG (which the caller checked fits TAG_MAX). */
static enum proto_verdict
begin(struct imap_state *s, struct pu_word tag, size_t consume, struct pu_word user,
      struct pu_word pass, struct proto_action *act)
{
	memmove(s->ol_tag, tag.p, tag.n); /* TAG may be ol_tag itself */
	s->ol_tag_len = tag.n;
	pa_user(&s->auth, user.p, user.n);
	pa_begin(&s->auth, tag.p, tag.n);
	s->ol = OL_TOKEN;
	return pl_login(act, consume, user, pass);
}

static enum proto_verdict
plain(struct imap_state *s, struct pu_word tag, size_t consume, const char *b64, size_t n,
      struct proto_action *act, char *scratch)
{
	struct pu_word user, pass;

	if (pl_sasl_plain(b64, n, scratch + AT_PLAIN, PROTO_SCRATCH - AT_PLAIN, &user, &pass) < 0) {
		s->ol = OL_IDLE;
		return pu_answer(act, PV_REPLY, consume, scratch,
		                 "%.*s BAD Invalid AUTHENTICATE PLAIN response\r\n", (int)tag.n,
		                 tag.p);
	}
	return begin(s, tag, consume, user, pass, act);
}

/* ---- LOGIN with literals ----
 * Read as it comes, each verdict consuming what it judged: the first
 * line (answered "+" for a synchronising literal), the user name's
 * literal (kept in the state: not a secret), the line after it. The
 * password, in a literal or a quoted string, stays in the input until
 * the command is whole: PV_LOGIN consumes it, and the session wipes what
 * a login consumed. */

/* Ends the literal LOGIN with "TAG BAD WHY", consuming N bytes; a
 * non-synchronising literal on its way ends the session instead (see
 * imap_answer). */
static enum proto_verdict
literal_refused(struct imap_state *s, size_t n, bool literal_coming, struct proto_action *act,
                char *scratch, const char *why)
{
	s->ol = OL_IDLE;
	if (literal_coming)
		return pu_answer(act, PV_CLOSE, n, scratch, "* BYE %s" REFUSED_LITERAL "\r\n", why);
	return pu_answer(act, PV_REPLY, n, scratch, "%.*s BAD %s\r\n", (int)s->ol_tag_len,
	                 s->ol_tag, why);
}

/* A line of C's that ends in the literal of argument USER (else the
 * password): read on, answering "+" if the client waits for it. */
static enum proto_verdict
literal_next(struct imap_state *s, const struct imap_cmd *c, bool user, struct proto_action *act,
             char *scratch)
{
	if (c->binary)
		return literal_refused(s, c->len, !c->sync, act, scratch,
		                       "Invalid LOGIN arguments");
	if (c->lsize > (user ? PL_USER_MAX : PL_PASS_MAX))
		return literal_refused(s, c->len, !c->sync, act, scratch,
		                       "User name or password too long");
	s->ol = OL_LITERAL;
	s->ol_lit = !user ? OLL_PASS : c->lsize > 0 ? OLL_USER : OLL_AFTER_USER;
	s->ol_lit_left = (size_t)c->lsize;
	if (c->sync)
		return pu_answer(act, PV_REPLY, c->len, scratch, "+ Ready for literal data\r\n");
	act->consume = c->len;
	return PV_DROP;
}

/* The user name of a LOGIN, as atom or quoted string T, into the state. */
static bool
keep_user(struct imap_state *s, struct imap_tok t)
{
	size_t n = imap_tok_value(t, s->ol_user, sizeof(s->ol_user));

	s->ol_user_len = n == (size_t)-1 ? 0 : n;
	return s->ol_user_len > 0;
}

/* The login, the password's PN bytes at PW in the input (a literal's, or
 * a quoted string's or atom's value when T is not IT_END), the command
 * ending after N bytes. */
static enum proto_verdict
literal_login(struct imap_state *s, size_t n, const char *pw, size_t pn, struct imap_tok t,
              struct proto_action *act, char *scratch)
{
	size_t un = s->ol_user_len;

	if (t.kind != IT_END &&
	    (pn = imap_tok_value(t, scratch + AT_PASS, PL_PASS_MAX)) == (size_t)-1) {
		OPENSSL_cleanse(scratch + AT_PASS, PL_PASS_MAX);
		return literal_refused(s, n, false, act, scratch, "Invalid LOGIN arguments");
	}
	if (t.kind == IT_END)
		memcpy(scratch + AT_PASS, pw, pn);
	if (un == 0 || memchr(s->ol_user, '\0', un)) {
		OPENSSL_cleanse(scratch + AT_PASS, PL_PASS_MAX);
		return literal_refused(s, n, false, act, scratch, "Invalid LOGIN arguments");
	}
	memcpy(scratch + AT_USER, s->ol_user, un);
	if (s->a.observe) {
		/* the line before said "***" for a literal password */
		pu_log_begin(act, scratch, 0);
		if (t.kind == IT_END) {
			act->secret = pw;
			act->secret_len = pn;
		} else {
			pu_log_str(act, scratch, " ");
			if (t.kind == IT_QUOTED && t.n >= 2)
				pu_log_secret(act, scratch, t.p + 1, t.n - 2);
			else
				pu_log_secret(act, scratch, t.p, t.n);
		}
	}
	return begin(s, (struct pu_word){s->ol_tag, s->ol_tag_len}, n,
	             (struct pu_word){scratch + AT_USER, un},
	             (struct pu_word){scratch + AT_PASS, pn}, act);
}

/* The line that goes on after the user name's literal: the password, as
 * a literal (then read on) or a string (then the login). */
static enum proto_verdict
after_user(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act, char *scratch)
{
	const char *q = c->args;
	struct imap_tok t = imap_next_tok(&q, c->end), more = imap_next_tok(&q, c->end);
	bool lit = t.kind == IT_LITERAL && more.kind == IT_END;

	if (s->a.observe) {
		pu_log_begin(act, scratch, lit ? PL_CONT : 0);
		if (lit)
			pu_log_str(act, scratch, " " PU_SECRET);
	}
	if (c->err || (!lit && (more.kind != IT_END || (t.kind != IT_ATOM && t.kind != IT_QUOTED))))
		return literal_refused(s, c->len, c->lit && !c->sync, act, scratch,
		                       "Invalid LOGIN arguments");
	if (lit)
		return literal_next(s, c, false, act, scratch);
	return literal_login(s, c->len, NULL, 0, t, act, scratch);
}

enum proto_verdict
imap_login_literal(struct imap_state *s, const char *p, size_t len, bool full,
                   struct proto_action *act, char *scratch)
{
	struct imap_scan sc = {0};
	struct imap_cmd c;
	size_t n, k;

	switch (s->ol_lit) {
	case OLL_USER: /* the user name's bytes */
		k = len < s->ol_lit_left ? len : s->ol_lit_left;
		memcpy(s->ol_user + s->ol_user_len, p, k);
		s->ol_user_len += k;
		s->ol_lit_left -= k;
		if (s->ol_lit_left == 0)
			s->ol_lit = OLL_AFTER_USER;
		act->consume = k;
		return PV_DROP;
	case OLL_AFTER_USER:
		if ((n = pu_line_len(p, len)) == 0)
			break;
		imap_cmd_parse(&c, &sc, p, n, true);
		return after_user(s, &c, act, scratch);
	default: /* the password's bytes and the end of the command, at once */
		k = s->ol_lit_left;
		if (len < k || (n = pu_line_len(p + k, len - k)) == 0)
			break;
		imap_cmd_parse(&c, &sc, p + k, n, true);
		if (c.err || c.args < c.end)
			return literal_refused(s, k + n, c.lit && !c.sync, act, scratch,
			                       "Invalid LOGIN arguments");
		return literal_login(s, k + n, p, k, (struct imap_tok){IT_END, NULL, 0}, act,
		                     scratch);
	}
	if (!full)
		return PV_MORE;
	return literal_refused(s, len, true, act, scratch, "Line too long");
}

/* The first line of a LOGIN that ends in a literal (C->lit). */
static enum proto_verdict
literal_start(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
              char *scratch)
{
	const char *q = c->args;
	struct imap_tok a = imap_next_tok(&q, c->end);

	memcpy(s->ol_tag, c->tag.p, c->tag.n);
	s->ol_tag_len = c->tag.n;
	s->ol_user_len = 0;
	if (a.kind == IT_LITERAL)
		return literal_next(s, c, true, act, scratch);
	if (!keep_user(s, a))
		return literal_refused(s, c->len, !c->sync, act, scratch,
		                       "Invalid LOGIN arguments");
	return literal_next(s, c, false, act, scratch);
}

enum proto_verdict
imap_login_command(struct imap_state *s, const struct imap_cmd *c, bool sasl,
                   struct proto_action *act, char *scratch)
{
	const char *q = c->args, *end = c->end;
	struct imap_tok a = imap_next_tok(&q, end), b = imap_next_tok(&q, end);

	/* Logged in: another login would start a token request, and a server
	 * in the authenticated state refuses it anyway. */
	if (s->ol_done)
		return imap_answer(s, c, act, scratch, "BAD Already authenticated");
	/* The first completion after the login must be its own. */
	if (s->inflight > 0 || !imap_server_at_boundary(s))
		return PV_WAIT;
	if (c->lit && sasl)
		return imap_answer(s, c, act, scratch, "BAD Invalid AUTHENTICATE arguments");
	if (c->lit) /* old clients send a password with special characters so */
		return literal_start(s, c, act, scratch);
	if (!sasl) {
		size_t un = imap_tok_value(a, scratch + AT_USER, PL_USER_MAX);
		size_t pn = imap_tok_value(b, scratch + AT_PASS, PL_PASS_MAX);
		if (un == (size_t)-1 || pn == (size_t)-1 || un == 0) {
			/* what was decoded may be a password: not left behind */
			OPENSSL_cleanse(scratch + AT_USER, AT_PLAIN - AT_USER);
			return imap_answer(s, c, act, scratch, "BAD Invalid LOGIN arguments");
		}
		return begin(s, c->tag, c->len, (struct pu_word){scratch + AT_USER, un},
		             (struct pu_word){scratch + AT_PASS, pn}, act);
	}
	if (!pu_word_is((struct pu_word){a.p, a.n}, "PLAIN"))
		return imap_answer(s, c, act, scratch,
		                   "NO [CANNOT] Unsupported mechanism: use PLAIN or LOGIN");
	if (b.kind == IT_ATOM)
		return plain(s, c->tag, c->len, b.p, b.n, act, scratch);
	memcpy(s->ol_tag, c->tag.p, c->tag.n);
	s->ol_tag_len = c->tag.n;
	s->ol = OL_PLAIN;
	return pu_answer(act, PV_REPLY, c->len, scratch, "+ \r\n");
}

enum proto_verdict
imap_login_response(struct imap_state *s, const char *p, size_t len, size_t n, bool full,
                    struct proto_action *act, char *scratch)
{
	struct pu_word tag = {s->ol_tag, s->ol_tag_len};
	size_t body = pu_trim_eol(p, n);

	if (n == 0 && !full)
		return PV_MORE;
	if (n == 0) { /* longer than any response postern accepts */
		s->ol = OL_IDLE;
		return pu_answer(act, PV_CLOSE, len, scratch, "* BYE Line too long\r\n");
	}
	if (s->a.observe) {
		pu_log_begin(act, scratch, 0);
		if (body == 1 && p[0] == '*')
			pu_log_str(act, scratch, "*");
		else
			pu_log_secret(act, scratch, p, body);
	}
	if (body == 1 && p[0] == '*') {
		s->ol = OL_IDLE;
		return pu_answer(act, PV_REPLY, n, scratch, "%.*s BAD Authentication cancelled\r\n",
		                 (int)tag.n, tag.p);
	}
	return plain(s, tag, n, p, body, act, scratch);
}

enum proto_verdict
imap_login_challenge(struct imap_state *s, size_t n, struct proto_action *act, char *scratch)
{
	(void)scratch;
	/* RFC 7628 3.2.3: the client answers an error challenge with ^A
	 * (OAUTHBEARER) or an empty response (XOAUTH2), then reads the NO. */
	act->consume = n;
	act->text = s->ol_bearer ? "AQ==\r\n" : "\r\n";
	act->len = strlen(act->text);
	return PV_TO_SERVER;
}

void
imap_login_send(void *st, const char *mech, const char *blob, size_t len, struct proto_action *act,
                char *scratch)
{
	struct imap_state *s = st;

	s->ol = OL_UPSTREAM;
	s->ol_bearer = strcmp(mech, "OAUTHBEARER") == 0;
	imap_tag_sent(s, s->ol_tag, s->ol_tag_len);
	/* SASL-IR (RFC 4959): Microsoft 365, Gmail and Dovecot offer it. */
	pu_answer(act, PV_PASS, 0, scratch, "%.*s AUTHENTICATE %s %.*s\r\n", (int)s->ol_tag_len,
	          s->ol_tag, mech, (int)len, blob);
	if (s->a.observe) {
		pu_log_begin(act, scratch, 0);
		pu_log_put(act, scratch, s->ol_tag, s->ol_tag_len);
		pu_log_str(act, scratch, " AUTHENTICATE ");
		pu_log_str(act, scratch, mech);
		pu_log_str(act, scratch, " " PU_SECRET);
	}
}

void
imap_login_fail(void *st, enum proto_login_fail why, struct proto_action *act, char *scratch)
{
	struct imap_state *s = st;
	struct proto_action counted = {0};
	static const char *const text[] = {
	        [PROTO_LOGIN_REFUSED] = "NO [AUTHENTICATIONFAILED] Authentication failed",
	        [PROTO_LOGIN_REVOKED] = "NO [AUTHENTICATIONFAILED] Authentication failed: the "
	                                "account must be authorized again",
	        [PROTO_LOGIN_TEMPORARY] = "NO [UNAVAILABLE] Authentication service unavailable, "
	                                  "try again later",
	};

	s->ol = OL_IDLE;
	/* Only the client's own mistake counts as a failed login (fail2ban). */
	pa_end(&s->auth, s->ol_tag, s->ol_tag_len, false,
	       why == PROTO_LOGIN_REFUSED ? act : &counted);
	pu_answer(act, PV_REPLY, 0, scratch, "%.*s %s\r\n", (int)s->ol_tag_len, s->ol_tag,
	          text[why]);
}
