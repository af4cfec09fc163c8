/* XOAUTH2 and OAUTHBEARER messages, their error challenge, and the base64
 * they travel in. The plain message is built in a buffer that is wiped
 * before return: only the base64 form, which the caller wipes, remains. */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include <postern/oauth2_json.h>
#include <postern/oauth2_sasl.h>

#define MSG_MAX 12288 /* a user name, a host and an access token (~2-4 KiB) */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

long
oauth2_base64(const unsigned char *in, size_t n, char *out, size_t outcap, int url)
{
	const char *alpha = url ? b64url : b64;
	size_t need = url ? (n * 4 + 2) / 3 : (n + 2) / 3 * 4, o = 0, i;

	if (need + 1 > outcap)
		return -1;
	for (i = 0; i + 2 < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		out[o++] = alpha[(v >> 6) & 63];
		out[o++] = alpha[v & 63];
	}
	if (i < n) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = alpha[(v >> 6) & 63];
		else if (!url)
			out[o++] = '=';
		if (!url)
			out[o++] = '=';
	}
	out[o] = '\0';
	return (long)o;
}

long
oauth2_unbase64(const char *in, size_t n, unsigned char *out, size_t outcap)
{
	size_t o = 0, pad = 0;
	unsigned acc = 0;

	if (n % 4 != 0)
		return -1;
	if (n > 0 && in[n - 1] == '=')
		pad = n > 1 && in[n - 2] == '=' ? 2 : 1;
	if ((n / 4) * 3 - pad > outcap)
		return -1;
	for (size_t i = 0; i < n - pad; i++) {
		const char *c = in[i] ? memchr(b64, in[i], 64) : NULL;
		if (!c)
			return -1;
		acc = acc << 6 | (unsigned)(c - b64);
		if (i % 4 == 3) {
			out[o++] = (unsigned char)(acc >> 16);
			out[o++] = (unsigned char)(acc >> 8);
			out[o++] = (unsigned char)acc;
			acc = 0;
		}
	}
	if (pad == 2) {
		if (acc & 0xF)
			return -1; /* bits that padding says are zero */
		out[o++] = (unsigned char)(acc >> 4);
	} else if (pad == 1) {
		if (acc & 0x3)
			return -1;
		out[o++] = (unsigned char)(acc >> 10);
		out[o++] = (unsigned char)(acc >> 2);
	}
	return (long)o;
}

/* Printable ASCII and UTF-8 bytes; BAN lists extra bytes refused. */
static int
clean(const char *s, const char *ban)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7F || (ban && strchr(ban, c)))
			return -1;
	}
	return 0;
}

static int
add(char *m, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + n > MSG_MAX)
		return -1;
	memcpy(m + *len, s, n);
	*len += n;
	return 0;
}

static long
finish(char *m, size_t len, int ok, char *out, size_t outcap)
{
	long r = ok ? oauth2_base64((unsigned char *)m, len, out, outcap, 0) : -1;

	OPENSSL_cleanse(m, MSG_MAX);
	return r;
}

long
oauth2_sasl_xoauth2(const char *user, const char *token, char *out, size_t outcap)
{
	char m[MSG_MAX];
	size_t len = 0;
	int ok = clean(user, NULL) == 0 && clean(token, " ") == 0 && *user && *token &&
	         add(m, &len, "user=") == 0 && add(m, &len, user) == 0 &&
	         add(m, &len, "\001auth=Bearer ") == 0 && add(m, &len, token) == 0 &&
	         add(m, &len, "\001\001") == 0;

	return finish(m, len, ok, out, outcap);
}

/* RFC 5801 saslname: ',' and '=' become "=2C" and "=3D". */
static int
add_saslname(char *m, size_t *len, const char *user)
{
	for (; *user; user++) {
		const char *s = *user == ',' ? "=2C" : *user == '=' ? "=3D" : NULL;
		char one[2] = {*user, '\0'};
		if (add(m, len, s ? s : one) < 0)
			return -1;
	}
	return 0;
}

long
oauth2_sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token,
                        char *out, size_t outcap)
{
	char m[MSG_MAX], num[16];
	size_t len = 0;
	int ok = clean(user, NULL) == 0 && clean(token, " ") == 0 && *user && *token &&
	         (!host || clean(host, ", =") == 0) && port <= 65535 && add(m, &len, "n,a=") == 0 &&
	         add_saslname(m, &len, user) == 0 && add(m, &len, ",\001") == 0;

	if (ok && host && *host)
		ok = add(m, &len, "host=") == 0 && add(m, &len, host) == 0 &&
		     add(m, &len, "\001") == 0;
	if (ok && port) {
		snprintf(num, sizeof(num), "port=%u\001", port);
		ok = add(m, &len, num) == 0;
	}
	ok = ok && add(m, &len, "auth=Bearer ") == 0 && add(m, &len, token) == 0 &&
	     add(m, &len, "\001\001") == 0;
	return finish(m, len, ok, out, outcap);
}

int
oauth2_sasl_parse_error(const char *b64text, size_t n, struct oauth2_sasl_error *e)
{
	unsigned char json[4096];
	long len;
	struct oauth2_json_field f[] = {
	        {.name = "status",
	         .type = OAUTH2_JSON_STRING,
	         .buf = e->status,
	         .cap = sizeof(e->status)},
	        {.name = "scope",
	         .type = OAUTH2_JSON_STRING,
	         .buf = e->scope,
	         .cap = sizeof(e->scope)},
	        {.name = "schemes",
	         .type = OAUTH2_JSON_STRING,
	         .buf = e->schemes,
	         .cap = sizeof(e->schemes)},
	};

	if ((len = oauth2_unbase64(b64text, n, json, sizeof(json))) < 0 ||
	    oauth2_json_extract((const char *)json, (size_t)len, f, 3) < 0) {
		memset(e, 0, sizeof(*e));
		return -1;
	}
	return 0;
}
