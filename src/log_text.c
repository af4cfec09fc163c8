/* Escaping of peer text for the logs (see log_text.h for the form). */
#include <stdio.h>
#include <string.h>

#include <postern/log_text.h>

/* Length of the valid UTF-8 sequence at P (at most N bytes) and its code
 * point, or 0 if the bytes there are not one (RFC 3629: no overlong form,
 * no surrogate, nothing above U+10FFFF). */
static size_t
utf8_seq(const unsigned char *p, size_t n, unsigned *cp)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		*cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		*cp = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		*cp = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if (i > 1 && (p[i] < 0x80 || p[i] > 0xbf))
			return 0;
		*cp = (*cp << 6) | (p[i] & 0x3f);
	}
	return len;
}

/* Characters that end a line for some reader, or reorder what is shown. */
static bool
cp_needs_escape(unsigned cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || cp == 0x200e ||
	       cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* How the unit at P is written: its length in the input, and either the
 * bytes themselves (*esc empty) or an escape in ESC. */
static size_t
next_unit(const unsigned char *p, size_t n, unsigned flags, char esc[8])
{
	unsigned c = p[0], cp;
	size_t len;

	esc[0] = '\0';
	if (c >= 0x20 && c < 0x7f) {
		if (c == ' ' && (flags & LOG_ESC_SPACE))
			snprintf(esc, 8, "\\x%02x", c);
		return 1;
	}
	if (c < 0x80 || (len = utf8_seq(p, n, &cp)) == 0) {
		snprintf(esc, 8, "\\x%02x", c);
		return 1;
	}
	if (cp_needs_escape(cp))
		snprintf(esc, 8, "\\u%04x", cp);
	return len;
}

size_t
log_text_escape(char *dst, size_t cap, const char *p, size_t n, unsigned flags)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t at = 0, i = 0;
	char esc[8];

	if (cap == 0)
		return 0;
	while (i < n) {
		size_t len = next_unit(u + i, n - i, flags, esc);
		const char *out = esc[0] ? esc : p + i;
		size_t olen = esc[0] ? strlen(esc) : len;
		if (at + olen >= cap)
			break;
		memcpy(dst + at, out, olen);
		at += olen;
		i += len;
	}
	dst[at] = '\0';
	return at;
}

bool
log_text_is_safe(const char *p, size_t n, unsigned flags)
{
	const unsigned char *u = (const unsigned char *)p;
	char esc[8];

	for (size_t i = 0; i < n;) {
		i += next_unit(u + i, n - i, flags, esc);
		if (esc[0])
			return false;
	}
	return true;
}

bool
log_hostname_valid(const char *name)
{
	size_t total = strlen(name), label = 0;

	if (total == 0 || total > 253)
		return false;
	for (size_t i = 0; i <= total; i++) {
		char c = name[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool ldh = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-';
		if (!ldh || (label == 0 && c == '-') || ++label > 63)
			return false;
	}
	return true;
}
