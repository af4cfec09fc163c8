#include <string.h>

#include <openssl/crypto.h>

#include <postern/oauth2_sasl.h>
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
