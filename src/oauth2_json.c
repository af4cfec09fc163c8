/* Strict JSON for OAuth 2.0 endpoint answers: a recursive descent over the
 * whole text (so a truncated or doubled answer is refused), bounded in
 * length and depth, copying only the top-level members asked for. */
#include <string.h>

#include <postern/oauth2_json.h>

struct rd {
	const char *p, *end;
};

static void
skip_ws(struct rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int
hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Appends byte C to DST (when DST is given); -1 when it is full (one byte
 * is kept for the NUL). */
static int
put(char *dst, size_t cap, size_t *len, unsigned char c)
{
	if (!dst)
		return 0;
	if (*len + 1 >= cap)
		return -1;
	dst[(*len)++] = (char)c;
	return 0;
}

static int
put_utf8(char *dst, size_t cap, size_t *len, unsigned cp)
{
	if (cp < 0x80)
		return put(dst, cap, len, (unsigned char)cp);
	if (cp < 0x800)
		return put(dst, cap, len, (unsigned char)(0xC0 | cp >> 6)) |
		       put(dst, cap, len, (unsigned char)(0x80 | (cp & 0x3F)));
	if (cp < 0x10000)
		return put(dst, cap, len, (unsigned char)(0xE0 | cp >> 12)) |
		       put(dst, cap, len, (unsigned char)(0x80 | ((cp >> 6) & 0x3F))) |
		       put(dst, cap, len, (unsigned char)(0x80 | (cp & 0x3F)));
	return put(dst, cap, len, (unsigned char)(0xF0 | cp >> 18)) |
	       put(dst, cap, len, (unsigned char)(0x80 | ((cp >> 12) & 0x3F))) |
	       put(dst, cap, len, (unsigned char)(0x80 | ((cp >> 6) & 0x3F))) |
	       put(dst, cap, len, (unsigned char)(0x80 | (cp & 0x3F)));
}

/* One escape after the backslash (r->p at the letter). */
static int
escape(struct rd *r, char *dst, size_t cap, size_t *len)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *e;
	unsigned cp, lo;

	if (r->p >= r->end)
		return -1;
	if (*r->p != 'u') {
		if (!(e = memchr(from, *r->p, sizeof(from) - 1)))
			return -1;
		r->p++;
		return put(dst, cap, len, (unsigned char)to[e - from]);
	}
	if (r->end - r->p < 5 || hex4(r->p + 1, &cp) < 0)
		return -1;
	r->p += 5;
	if (cp >= 0xDC00 && cp <= 0xDFFF)
		return -1; /* a lone low surrogate */
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' ||
		    hex4(r->p + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
			return -1;
		r->p += 6;
		cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
	}
	if (cp == 0)
		return -1; /* a NUL would cut the value short for C callers */
	return put_utf8(dst, cap, len, cp);
}

/* A string (r->p at the opening quote), decoded into DST if given. Raw
 * bytes >= 0x80 pass as they are; control characters are refused. */
static int
string(struct rd *r, char *dst, size_t cap, size_t *len)
{
	*len = 0;
	r->p++;
	while (r->p < r->end) {
		unsigned char c = (unsigned char)*r->p;
		if (c == '"') {
			r->p++;
			if (dst)
				dst[*len] = '\0';
			return 0;
		}
		if (c < 0x20)
			return -1;
		r->p++;
		if (c == '\\') {
			if (escape(r, dst, cap, len) < 0)
				return -1;
		} else if (put(dst, cap, len, c) < 0) {
			return -1;
		}
	}
	return -1;
}

static int
digits(struct rd *r)
{
	const char *start = r->p;

	while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
		r->p++;
	return r->p > start ? 0 : -1;
}

/* A number per RFC 8259; *INTVAL gets its value when it is an integer from
 * 0 to 2^31-1, else -1. */
static int
number(struct rd *r, long long *intval)
{
	const char *start = r->p;
	bool integer = true;
	long long v = 0;

	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (r->p < r->end && *r->p == '0')
		r->p++;
	else if (digits(r) < 0)
		return -1;
	if (r->p < r->end && *r->p == '.') {
		integer = false;
		r->p++;
		if (digits(r) < 0)
			return -1;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		integer = false;
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (digits(r) < 0)
			return -1;
	}
	if (!integer || *start == '-' || r->p - start > 10) {
		*intval = -1;
		return 0;
	}
	for (const char *q = start; q < r->p; q++)
		v = v * 10 + (*q - '0');
	*intval = v <= 0x7FFFFFFF ? v : -1;
	return 0;
}

static int
literal(struct rd *r, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return -1;
	r->p += n;
	return 0;
}

static int value(struct rd *r, int depth);

/* An object or array (r->p at the bracket), members skipped. */
static int
container(struct rd *r, int depth)
{
	char close = *r->p == '{' ? '}' : ']';
	size_t len;

	if (depth >= OAUTH2_JSON_DEPTH)
		return -1;
	r->p++;
	skip_ws(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		return 0;
	}
	for (;;) {
		skip_ws(r);
		if (close == '}') {
			if (r->p >= r->end || *r->p != '"' || string(r, NULL, 0, &len) < 0)
				return -1;
			skip_ws(r);
			if (r->p >= r->end || *r->p++ != ':')
				return -1;
			skip_ws(r);
		}
		if (value(r, depth + 1) < 0)
			return -1;
		skip_ws(r);
		if (r->p >= r->end)
			return -1;
		if (*r->p == close) {
			r->p++;
			return 0;
		}
		if (*r->p++ != ',')
			return -1;
	}
}

static int
value(struct rd *r, int depth)
{
	long long ignored;
	size_t len;

	if (r->p >= r->end)
		return -1;
	switch (*r->p) {
	case '{':
	case '[':
		return container(r, depth);
	case '"':
		return string(r, NULL, 0, &len);
	case 't':
		return literal(r, "true");
	case 'f':
		return literal(r, "false");
	case 'n':
		return literal(r, "null");
	default:
		return number(r, &ignored);
	}
}

/* A string holding 1 to 10 digits, as an INT member (Azure v1). */
static int
digit_string(const char *s, size_t n, long long *out)
{
	long long v = 0;

	if (n == 0 || n > 10)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 0x7FFFFFFF)
		return -1;
	*out = v;
	return 0;
}

/* The value of a member the caller asked for. */
static int
wanted(struct rd *r, struct oauth2_json_field *f)
{
	char digits_buf[16];
	size_t len;

	if (f->found)
		return -1; /* a repeated member: which one counts is ambiguous */
	f->found = true;
	if (f->type == OAUTH2_JSON_STRING) {
		if (r->p >= r->end || *r->p != '"' || !f->buf || f->cap == 0)
			return -1;
		return string(r, f->buf, f->cap, &f->len);
	}
	if (r->p < r->end && *r->p == '"') {
		if (string(r, digits_buf, sizeof(digits_buf), &len) < 0)
			return -1;
		return digit_string(digits_buf, len, &f->num);
	}
	if (number(r, &f->num) < 0 || f->num < 0)
		return -1;
	return 0;
}

int
oauth2_json_extract(const char *text, size_t n, struct oauth2_json_field *fields, size_t nfields)
{
	struct rd r = {text, text + n};
	char name[64];
	size_t len, i;

	for (i = 0; i < nfields; i++) {
		fields[i].found = false;
		fields[i].len = 0;
		fields[i].num = 0;
		if (fields[i].buf && fields[i].cap)
			fields[i].buf[0] = '\0';
	}
	if (n > OAUTH2_JSON_MAX)
		return -1;
	skip_ws(&r);
	if (r.p >= r.end || *r.p != '{')
		return -1;
	r.p++;
	skip_ws(&r);
	if (r.p < r.end && *r.p == '}') {
		r.p++;
		goto end;
	}
	for (;;) {
		struct oauth2_json_field *f = NULL;
		struct rd save;

		skip_ws(&r);
		if (r.p >= r.end || *r.p != '"')
			return -1;
		save = r;
		if (string(&r, name, sizeof(name), &len) == 0) {
			for (i = 0; i < nfields && !f; i++) {
				if (strlen(fields[i].name) == len &&
				    memcmp(fields[i].name, name, len) == 0)
					f = &fields[i];
			}
		} else {
			r = save; /* a name longer than any we want: just check it */
			if (string(&r, NULL, 0, &len) < 0)
				return -1;
		}
		skip_ws(&r);
		if (r.p >= r.end || *r.p++ != ':')
			return -1;
		skip_ws(&r);
		if ((f ? wanted(&r, f) : value(&r, 1)) < 0)
			return -1;
		skip_ws(&r);
		if (r.p >= r.end)
			return -1;
		if (*r.p == '}') {
			r.p++;
			break;
		}
		if (*r.p++ != ',')
			return -1;
	}
end:
	skip_ws(&r);
	return r.p == r.end ? 0 : -1;
}
