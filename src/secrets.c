/* Per-session memory of secrets for the command log (see secrets.h). */
#include <string.h>

#include <openssl/crypto.h>

#include <postern/secrets.h>

/* Longest text secrets_mask looks at: a log line and then some. */
#define MASK_MAX (4 * PROTO_LOG_MAX)

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Secrets are kept and looked for in lower case: a server may echo one
 * changed to upper case (aiosmtpd: 500 Error: command "ZGVTBW..." not
 * recognized), from which the original is found by trying the cases. */
static void
lower(char *dst, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = p[i] >= 'A' && p[i] <= 'Z' ? (char)(p[i] - 'A' + 'a') : p[i];
}

static void
remember(struct secrets *sec, const char *p, size_t n)
{
	bool cut = n > SECRET_LEN_MAX;
	char low[SECRET_LEN_MAX];

	if (n < SECRET_LEN_MIN)
		return;
	if (cut)
		n = SECRET_LEN_MAX;
	lower(low, p, n);
	for (int i = 0; i < SECRETS_MAX; i++)
		if (sec->s[i].len == n && sec->s[i].cut == cut && memcmp(sec->s[i].b, low, n) == 0)
			goto out;
	struct secret *s = &sec->s[sec->next];
	sec->next = (sec->next + 1) % SECRETS_MAX;
	OPENSSL_cleanse(s->b, sizeof(s->b));
	memcpy(s->b, low, n);
	s->len = (unsigned short)n;
	s->cut = cut;
out:
	OPENSSL_cleanse(low, n);
}

/* The content of an IMAP quoted string, backslash escapes undone. */
static void
remember_unquoted(struct secrets *sec, const char *p, size_t n)
{
	char buf[SECRET_LEN_MAX];
	size_t m = 0;

	if (n < 2 || p[0] != '"' || p[n - 1] != '"')
		return;
	for (size_t i = 1; i + 1 < n && m < sizeof(buf); i++) {
		if (p[i] == '\\' && i + 2 < n)
			i++;
		buf[m++] = p[i];
	}
	remember(sec, buf, m);
	OPENSSL_cleanse(buf, sizeof(buf));
}

static int
b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes base64 (padding optional) into DST; -1 if it is not base64.
 * Decoding stops when DST is full. */
static long
b64_decode(const char *p, size_t n, unsigned char *dst, size_t cap)
{
	unsigned acc = 0, bits = 0;
	size_t m = 0;

	while (n > 0 && p[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(p[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (m == cap)
				break;
			dst[m++] = (unsigned char)(acc >> bits);
		}
	}
	return (long)m;
}

/* What a server may echo of a SASL response once decoded: the password of
 * PLAIN ("authzid NUL authcid NUL password"), the token of XOAUTH2 and
 * OAUTHBEARER ("...^Aauth=Bearer TOKEN^A^A"), else the whole (LOGIN sends
 * the user name and the password each alone). */
static void
remember_decoded(struct secrets *sec, const char *p, size_t n)
{
	unsigned char d[SECRET_LEN_MAX];
	long m = b64_decode(p, n, d, sizeof(d));

	if (m >= SECRET_LEN_MIN) {
		const unsigned char *v = d, *end = d + m, *nul = memrchr(d, '\0', (size_t)m);
		const unsigned char *auth = memmem(d, (size_t)m, "auth=", 5);
		if (nul && memchr(d, '\0', (size_t)(nul - d)) != NULL) {
			v = nul + 1;
		} else if (auth) {
			v = auth + 5;
			if (end - v > 7 && memcmp(v, "Bearer ", 7) == 0)
				v += 7;
			const unsigned char *ctl = memchr(v, '\x01', (size_t)(end - v));
			end = ctl ? ctl : end;
		}
		remember(sec, (const char *)v, (size_t)(end - v));
	}
	OPENSSL_cleanse(d, sizeof(d));
}

/* A command verb or SASL mechanism name: [A-Z0-9_-], 1 to 20 bytes. */
static bool
is_verb(const char *p, size_t n)
{
	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_' ||
		      p[i] == '-'))
			return false;
	return true;
}

void
secrets_add(struct secrets *sec, const char *p, size_t n)
{
	while (n > 0 && is_space(p[0])) {
		p++;
		n--;
	}
	while (n > 0 && is_space(p[n - 1]))
		n--;
	remember(sec, p, n);
	remember_unquoted(sec, p, n);
	remember_decoded(sec, p, n);
	/* Hidden text of several words ("PLAIN <b64>" after odd white space,
	 * a command taken for a SASL response): each word may be echoed alone
	 * or decoded, but a verb or mechanism name alone would deface the log. */
	for (const char *w = p, *end = p + n; w < end;) {
		const char *e = w;
		while (e < end && !is_space(*e))
			e++;
		if ((w != p || e != end) && !is_verb(w, (size_t)(e - w))) {
			remember(sec, w, (size_t)(e - w));
			remember_decoded(sec, w, (size_t)(e - w));
		}
		w = e + 1;
	}
}

/* Marks the tail of [in, in+end) that is the start of S (a reappearance
 * cut short by the end of the line). */
static void
mark_cut_tail(const struct secret *s, const char *in, size_t end, bool *hide)
{
	size_t k = end < s->len ? end : (size_t)s->len - 1;

	for (; k >= SECRET_LEN_MIN; k--)
		if (memcmp(in + end - k, s->b, k) == 0) {
			memset(hide + end - k, 1, k);
			return;
		}
}

static bool
is_alnum(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Unmasks what a client could choose to deface: a masked span inside a
 * longer word (a short secret within it), and the line's word FRAME. */
static void
keep_words(const char *in, size_t n, unsigned frame, bool *hide)
{
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && hide[b] == hide[a]; b++)
			;
		if (hide[a] && ((a > 0 && is_alnum(in[a - 1]) && is_alnum(in[a])) ||
		                (b < n && is_alnum(in[b]) && is_alnum(in[b - 1]))))
			memset(hide + a, 0, b - a);
	}
	for (size_t i = 0, w = 0; frame > 0 && i < n; i++) {
		if (in[i] != ' ' && (i == 0 || in[i - 1] == ' '))
			w++;
		if (w == frame && in[i] != ' ')
			hide[i] = false;
		else if (w > frame)
			break;
	}
}

size_t
secrets_mask(const struct secrets *sec, const char *in, size_t n, char *out, size_t cap)
{
	return secrets_mask_line(sec, in, n, 0, out, cap);
}

size_t
secrets_mask_line(const struct secrets *sec, const char *in, size_t n, unsigned frame, char *out,
                  size_t cap)
{
	bool hide[MASK_MAX];
	char low[MASK_MAX];
	size_t at = 0;

	if (n > MASK_MAX)
		n = MASK_MAX;
	memset(hide, 0, n);
	lower(low, in, n);
	for (int i = 0; i < SECRETS_MAX; i++) {
		const struct secret *s = &sec->s[i];
		if (s->len == 0)
			continue;
		for (const char *q = low; (q = memmem(q, (size_t)(low + n - q), s->b, s->len));
		     q++) {
			size_t from = (size_t)(q - low), to = from + s->len;
			if (s->cut) /* the rest of a long secret runs to the end of its word */
				while (to < n && !is_space(in[to]))
					to++;
			memset(hide + from, 1, to - from);
		}
		mark_cut_tail(s, low, n, hide);
		if (n >= 3 && memcmp(in + n - 3, "...", 3) == 0)
			mark_cut_tail(s, low, n - 3, hide);
	}
	keep_words(in, n, frame, hide);
	for (size_t i = 0; i < n; i++) {
		if (!hide[i]) {
			if (at < cap)
				out[at++] = in[i];
		} else if (i == 0 || !hide[i - 1]) {
			for (const char *m = "***"; *m && at < cap; m++)
				out[at++] = *m;
		}
	}
	OPENSSL_cleanse(low, n);
	return at;
}

void
secrets_wipe(struct secrets *sec)
{
	OPENSSL_cleanse(sec, sizeof(*sec));
}
