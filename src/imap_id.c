/* IMAP ID (RFC 2971): the fields a backend believes from trusted proxies
 * are never passed as the client's; after TLS they are defaced in place. */
#include <string.h>
#include <strings.h>

#include <postern/imap_token.h>
#include <postern/proto_util.h>

#include "imap_internal.h"

/* ID fields a backend such as Dovecot believes from trusted proxies: a
 * client must not be able to claim them through postern (P6). Keys are
 * compared after unescaping; after TLS their names are defaced in place
 * ("x-" becomes "y-"), so the backend sees unknown fields it ignores. */
static const char *const id_forwarding[] = {"x-originating-", "x-connected-", "x-proxy-ttl",
                                            "x-session-",     "x-forward-",   NULL};

static bool
word_is_nil(struct imap_tok t)
{
	return t.kind == IT_ATOM && t.n == 3 && strncasecmp(t.p, "NIL", 3) == 0;
}

bool
imap_is_forwarding(const char *v, size_t n)
{
	for (const char *const *f = id_forwarding; *f; f++) {
		size_t l = strlen(*f);
		if (n >= l && strncasecmp(v, *f, l) == 0)
			return true;
	}
	return false;
}

/* The strings of an ID list from Q on, in a line that parsed: quoted
 * strings or NIL, then ")" and the end, or a literal last. COUNT counts
 * the strings of the whole command. Values are checked like keys: one
 * named like a field loses nothing by being defaced, and a list's parity
 * is not trusted. Returns the refusal, or NULL with the offsets of the
 * forwarding fields' first letters in AT. */
const char *
imap_id_strings(const struct imap_cmd *c, const char *q, unsigned *count, size_t at[ID_STRINGS_MAX],
                size_t *nat)
{
	char v[ID_STRING_MAX];

	*nat = 0;
	for (;;) {
		struct imap_tok t = imap_next_tok(&q, c->end);
		if (t.kind == IT_CLOSE && *count % 2 == 0 &&
		    imap_next_tok(&q, c->end).kind == IT_END)
			return NULL;
		if (t.kind == IT_END || t.kind == IT_CLOSE || t.kind == IT_OPEN)
			return "BAD Invalid ID arguments";
		if (++*count > ID_STRINGS_MAX)
			return "BAD Too many ID fields";
		if (t.kind == IT_LITERAL) /* scrubbed whole as it passes */
			return c->lsize <= ID_STRING_MAX ? NULL : "BAD ID string too long";
		if (word_is_nil(t))
			continue;
		if (t.kind != IT_QUOTED)
			return "BAD Invalid ID arguments";
		size_t n = imap_tok_value(t, v, sizeof(v));
		if (n == (size_t)-1)
			return "BAD ID string too long";
		if (imap_is_forwarding(v, n))
			at[(*nat)++] = (size_t)(t.p + 1 - c->p);
	}
}

/* ID NIL, or ID ( strings ). */
const char *
imap_id_check(const struct imap_cmd *c, unsigned *count, size_t at[ID_STRINGS_MAX], size_t *nat)
{
	const char *q = c->args;
	struct imap_tok t = imap_next_tok(&q, c->end);

	*nat = 0;
	if (word_is_nil(t))
		return imap_next_tok(&q, c->end).kind == IT_END ? NULL : "BAD Invalid ID arguments";
	if (t.kind != IT_OPEN)
		return "BAD Invalid ID arguments";
	return imap_id_strings(c, q, count, at, nat);
}

/* Forwards an ID command with its forwarding keys defaced. Escapes only
 * make '"' and '\', so a key that matched begins with its 'x' as sent. */
enum proto_verdict
imap_forward_id(const struct imap_cmd *c, const size_t *at, size_t nat, struct proto_action *act,
                char *scratch)
{
	act->consume = c->len;
	if (nat == 0)
		return PV_PASS;
	memcpy(scratch, c->p, c->len);
	for (size_t i = 0; i < nat; i++)
		scratch[at[i]] = 'y';
	act->text = scratch;
	act->len = c->len;
	return PV_REPLACE;
}
