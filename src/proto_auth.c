#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <postern/proto_auth.h>

enum { SASL_NONE, SASL_PLAIN, SASL_LOGIN };

static void
name_set(struct pa_name *d, const char *p, size_t n)
{
	d->cut = n > PA_USER_MAX;
	d->len = (unsigned char)(d->cut ? PA_USER_MAX : n);
	if (d->len > 0)
		memcpy(d->b, p, d->len);
}

bool
pa_full(const struct pa_login *l)
{
	return l->n == PA_PENDING_MAX;
}

void
pa_user(struct pa_login *l, const char *p, size_t n)
{
	name_set(&l->user, p, n);
}

void
pa_user_more(struct pa_login *l, const char *p, size_t n)
{
	struct pa_name *u;
	size_t room;

	if (l->n == 0)
		return;
	u = &l->q[l->n - 1].user;
	room = PA_USER_MAX - u->len;
	if (n > room) {
		u->cut = true;
		n = room;
	}
	memcpy(u->b + u->len, p, n);
	u->len = (unsigned char)(u->len + n);
}

void
pa_begin(struct pa_login *l, const char *tag, size_t tagn)
{
	struct pa_attempt *a;

	if (pa_full(l))
		return;
	a = &l->q[l->n++];
	a->user = l->user;
	a->tag_len = (unsigned char)(tagn <= PA_TAG_MAX ? tagn : 0);
	if (a->tag_len > 0)
		memcpy(a->tag, tag, a->tag_len);
	l->sasl = SASL_NONE;
}

void
pa_begin_sasl(struct pa_login *l, const char *tag, size_t tagn, struct pu_word mech, const char *ir,
              size_t n)
{
	l->user.len = 0;
	l->user.cut = false;
	pa_begin(l, tag, tagn);
	l->sasl = pu_word_is(mech, "PLAIN")   ? SASL_PLAIN
	          : pu_word_is(mech, "LOGIN") ? SASL_LOGIN
	                                      : SASL_NONE;
	if (n > 0)
		pa_sasl_response(l, ir, n);
}

/* The user name in a decoded response: PLAIN's is the authentication
 * identity between the first and second NUL ("authzid NUL authcid NUL
 * password"), LOGIN's first response is the user name alone. */
static void
user_from(struct pa_name *u, int sasl, const unsigned char *d, size_t m)
{
	const unsigned char *a, *b;

	if (sasl == SASL_LOGIN)
		name_set(u, (const char *)d, m);
	else if ((a = memchr(d, '\0', m)) != NULL &&
	         (b = memchr(a + 1, '\0', (size_t)(d + m - a - 1))) != NULL)
		name_set(u, (const char *)a + 1, (size_t)(b - a - 1));
}

void
pa_sasl_response(struct pa_login *l, const char *p, size_t n)
{
	/* A PLAIN response with a long password still names its user; a
	 * longer one is left unread (the user shows as unknown). */
	unsigned char d[768];
	size_t pad = 0;
	int sasl = l->sasl;

	l->sasl = SASL_NONE; /* only the first response names the user */
	if (sasl == SASL_NONE || l->n == 0 || n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(d))
		return;
	while (pad < 2 && p[n - 1 - pad] == '=')
		pad++;
	int m = EVP_DecodeBlock(d, (const unsigned char *)p, (int)n);
	if (m >= (int)pad)
		user_from(&l->q[l->n - 1].user, sasl, d, (size_t)m - pad);
	OPENSSL_cleanse(d, sizeof(d));
}

void
pa_end(struct pa_login *l, const char *tag, size_t tagn, bool ok, struct proto_action *act)
{
	unsigned i = 0;

	while (tagn > 0 && i < l->n &&
	       !(l->q[i].tag_len == tagn && memcmp(l->q[i].tag, tag, tagn) == 0))
		i++;
	if (i == l->n)
		return;
	l->shown = l->q[i].user;
	memmove(&l->q[i], &l->q[i + 1], (l->n - i - 1) * sizeof(l->q[0]));
	l->n--;
	if (l->n == 0)
		l->sasl = SASL_NONE;
	act->auth = ok ? PROTO_AUTH_OK : PROTO_AUTH_FAILED;
	act->auth_user = l->shown.b;
	act->auth_user_len = l->shown.len;
	act->auth_user_cut = l->shown.cut;
}
