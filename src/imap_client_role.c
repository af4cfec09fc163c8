/* The IMAP adapter's client role (backend_tls = starttls): postern greets
 * the backend itself, checks that it offers STARTTLS, starts TLS and asks
 * for the capabilities again inside it (RFC 2595 3.1). */
#include <string.h>

#include <postern/imap_token.h>
#include <postern/proto_util.h>

#include "imap_internal.h"

enum { UP_GREETING, UP_CAPA, UP_STARTTLS, UP_CAPA_TLS };

void
imap_up_start(void *st, const char *helo, struct proto_action *act, char *scratch)
{
	(void)helo;
	(void)scratch;
	pu_up_begin(st, sizeof(struct imap_up), act);
}

void
imap_up_tls_done(void *st, struct proto_action *act, char *scratch)
{
	struct imap_up *u = st;

	(void)scratch;
	/* C5: nothing learnt in plaintext is kept; ask again inside TLS. */
	u->phase = UP_CAPA_TLS;
	u->offers_starttls = false;
	act->text = "P3 CAPABILITY\r\n";
	act->len = strlen(act->text);
}

static enum proto_up
up_fail(struct proto_action *act, char *scratch, const char *why, const char *line, size_t n)
{
	pu_answer(act, PV_CLOSE, 0, scratch, "%s: \"%.*s\"", why, (int)(n < 80 ? n : 80), line);
	return PU_UP_FAIL;
}

enum proto_up
imap_upstream(void *st, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	struct imap_up *u = st;
	size_t n = pu_line_len(p, len);

	if (n == 0)
		return full ? up_fail(act, scratch, "line too long", p, len) : PU_UP_MORE;
	size_t body = pu_trim_eol(p, n);
	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	struct pu_word w = pu_next_word(&q, end);
	bool untagged = tag.n == 1 && tag.p[0] == '*';

	switch (u->phase) {
	case UP_GREETING:
		if (untagged && pu_word_is(w, "OK")) {
			u->phase = UP_CAPA;
			return pu_up(act, n, "P1 CAPABILITY\r\n", PU_UP_SEND);
		}
		if (untagged && pu_word_is(w, "PREAUTH")) /* C3: STARTTLS impossible */
			return up_fail(act, scratch, "PREAUTH greeting, STARTTLS impossible", p,
			               body);
		return up_fail(act, scratch, "greeting refused", p, body);
	case UP_CAPA:
	case UP_CAPA_TLS:
		if (untagged && pu_word_is(w, "CAPABILITY")) {
			const char *c = q;
			while (c < end) {
				struct pu_word cap = pu_next_word(&c, end);
				if (pu_word_is(cap, "STARTTLS"))
					u->offers_starttls = true;
			}
			if (u->phase == UP_CAPA_TLS) {
				static const char *const drop[] = {"STARTTLS", "LOGINDISABLED",
				                                   NULL};
				struct pu_caps pc = {drop, NULL, NULL};
				u->caps_len = pu_caps_rewrite(q, (size_t)(end - q), &pc, u->caps,
				                              sizeof(u->caps));
			}
			return pu_up(act, n, "", PU_UP_SEND);
		}
		if (untagged) /* C5: other untagged data before TLS is ignored */
			return pu_up(act, n, "", PU_UP_SEND);
		if (!pu_word_is(w, "OK"))
			return up_fail(act, scratch, "CAPABILITY failed", p, body);
		if (u->phase == UP_CAPA_TLS) {
			act->consume = n;
			pu_answer(act, PV_PASS, n, scratch, "* OK [CAPABILITY %.*s] ready\r\n",
			          (int)u->caps_len, u->caps);
			return PU_UP_DONE;
		}
		if (!u->offers_starttls) /* C1: stripped or absent: never plaintext */
			return up_fail(act, scratch, "server does not offer STARTTLS", p, body);
		u->phase = UP_STARTTLS;
		return pu_up(act, n, "P2 STARTTLS\r\n", PU_UP_SEND);
	default: /* UP_STARTTLS */
		if (untagged)
			return pu_up(act, n, "", PU_UP_SEND);
		if (tag.n == 2 && memcmp(tag.p, "P2", 2) == 0 && pu_word_is(w, "OK")) {
			act->consume = n;
			return PU_UP_TLS;
		}
		return up_fail(act, scratch, "STARTTLS refused", p, body); /* C2 */
	}
}
