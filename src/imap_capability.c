/* IMAP capability lists, in a CAPABILITY response or a response code:
 * what the client must not see is removed (STARTTLS past TLS, AUTH= and
 * COMPRESS= where postern cannot relay them) and what postern offers is
 * added. */
#include <string.h>
#include <strings.h>

#include <postern/imap_token.h>
#include <postern/proto_util.h>

#include "imap_internal.h"

static const char *const imap_drop_always[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_auth_prefix[] = {"AUTH=", NULL};
static const char *const imap_auth_compress_prefix[] = {"AUTH=", "COMPRESS=", NULL};
static const char *const imap_compress_prefix[] = {"COMPRESS=", NULL};
static const char *const imap_add_login_disabled[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_add_starttls[] = {"STARTTLS", NULL};
/* backend_auth = oauth2: postern answers LOGIN and AUTHENTICATE PLAIN
 * itself, whatever the server offers (it offers XOAUTH2 to postern). */
static const char *const imap_add_login[] = {"AUTH=PLAIN", NULL};
static const char *const imap_add_starttls_login[] = {"STARTTLS", "AUTH=PLAIN", NULL};

/* The capabilities that name an extension whose commands may carry a
 * literal: NAME itself, or NAME=... (THREAD=REFERENCES, QUOTA=RES-...).
 * IMAP4rev2 has MOVE (RFC 9051). */
static const struct {
	const char *name;
	unsigned ext;
} imap_ext_caps[] = {
        {"SORT", F_EXT_SORT},
        {"THREAD", F_EXT_THREAD},
        {"MOVE", F_EXT_MOVE},
        {"IMAP4rev2", F_EXT_MOVE},
        {"ACL", F_EXT_ACL},
        {"METADATA", F_EXT_METADATA},
        {"METADATA-SERVER", F_EXT_METADATA},
        {"QUOTA", F_EXT_QUOTA},
        {"NOTIFY", F_EXT_NOTIFY},
        {"REPLACE", F_EXT_REPLACE},
        {"URLAUTH", F_EXT_URLAUTH},
};

/* The F_EXT_* a capability list at [caps, caps+capn) names. */
static unsigned
list_exts(const char *caps, size_t capn)
{
	const char *q = caps, *end = caps + capn;
	unsigned exts = 0;

	while (q < end) {
		struct pu_word w = pu_next_word(&q, end);
		for (size_t i = 0; i < sizeof(imap_ext_caps) / sizeof(imap_ext_caps[0]); i++) {
			size_t k = strlen(imap_ext_caps[i].name);
			if (w.n >= k && strncasecmp(w.p, imap_ext_caps[i].name, k) == 0 &&
			    (w.n == k || w.p[k] == '='))
				exts |= imap_ext_caps[i].ext;
		}
	}
	return exts;
}

/* Rewrites a capability list found at [caps, caps+capn) inside LINE. */
static enum proto_verdict
rewrite_caps(struct imap_state *s, const char *line, size_t n, const char *caps, size_t capn,
             struct proto_action *act, char *scratch)
{
	struct pu_caps pre = {imap_drop_always,
	                      s->a.observe ? imap_auth_compress_prefix : imap_auth_prefix,
	                      s->a.require_tls ? imap_add_login_disabled
	                      : s->login       ? imap_add_starttls_login
	                                       : imap_add_starttls};
	struct pu_caps post = {imap_drop_always, s->a.observe ? imap_compress_prefix : NULL, NULL};

	if (s->login) {
		post.remove_prefix = pre.remove_prefix;
		post.add = s->ol_done ? NULL : imap_add_login;
	}
	size_t head = (size_t)(caps - line), at;

	s->s_exts = list_exts(caps, capn);

	memcpy(scratch, line, head);
	/* Room for the list: the scratch less what stays of the line around it. */
	at = head + pu_caps_rewrite(caps, capn, s->a.tls ? &post : &pre, scratch + head,
	                            PROTO_SCRATCH - n + capn);
	memcpy(scratch + at, caps + capn, n - head - capn);
	act->consume = n;
	act->text = scratch;
	act->len = at + n - head - capn;
	return PV_REPLACE;
}

static bool
is_status(struct pu_word w)
{
	return pu_word_is(w, "OK") || pu_word_is(w, "NO") || pu_word_is(w, "BAD") ||
	       pu_word_is(w, "PREAUTH") || pu_word_is(w, "BYE");
}

enum proto_verdict
imap_caps_response(struct imap_state *s, const char *p, size_t n, struct pu_word tag, const char *q,
                   struct proto_action *act, char *scratch)
{
	const char *end = p + pu_trim_eol(p, n);
	struct pu_word w = pu_next_word(&q, end);

	if (tag.n == 1 && tag.p[0] == '*' && pu_word_is(w, "CAPABILITY"))
		return rewrite_caps(s, p, n, q, (size_t)(end - q), act, scratch);
	/* A response code stands right after a status word (RFC 9051
	 * resp-text); anywhere else "[CAPABILITY" is text a client may have
	 * chosen (a mailbox name the server quotes), never a list. */
	if (is_status(w) && (size_t)(end - q) > 12 && strncasecmp(q, "[CAPABILITY ", 12) == 0) {
		const char *close = memchr(q, ']', (size_t)(end - q));
		if (close)
			return rewrite_caps(s, p, n, q + 12, (size_t)(close - q - 12), act,
			                    scratch);
	}
	act->consume = n;
	return PV_PASS;
}
