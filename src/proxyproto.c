/* PROXY protocol v1/v2 (haproxy.org/download/2.6/doc/proxy-protocol.txt). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/proxyproto.h>

static const char v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";

static size_t
build_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t cap)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int n;

	if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
		inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s));
		inet_ntop(AF_INET, &b->sin_addr, d, sizeof(d));
		n = snprintf(out, cap, "PROXY TCP4 %s %s %u %u\r\n", s, d, ntohs(a->sin_port),
		             ntohs(b->sin_port));
	} else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
		inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s));
		inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof(d));
		n = snprintf(out, cap, "PROXY TCP6 %s %s %u %u\r\n", s, d, ntohs(a->sin6_port),
		             ntohs(b->sin6_port));
	} else {
		n = snprintf(out, cap, "PROXY UNKNOWN\r\n");
	}
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* PROXY v2 TLV types and the SSL TLV's client flags (spec, section 2.2). */
enum {
	PP2_TYPE_AUTHORITY = 0x02,
	PP2_TYPE_SSL = 0x20,
	PP2_SUBTYPE_SSL_VERSION = 0x21,
	PP2_SUBTYPE_SSL_CIPHER = 0x23,
	PP2_CLIENT_SSL = 0x01,
	PP2_CLIENT_CERT_CONN = 0x02,
	PP2_CLIENT_CERT_SESS = 0x04
};

/* Appends a TLV of TYPE whose value is LEN bytes at V (NULL: the caller
 * fills it in) at *AT, if it fits before END. Returns the value's start. */
static unsigned char *
put_tlv(unsigned char **at, const unsigned char *end, unsigned type, const void *v, size_t len)
{
	unsigned char *p = *at;

	if (len > 0xffff || (size_t)(end - p) < 3 + len)
		return NULL;
	p[0] = (unsigned char)type;
	p[1] = (unsigned char)(len >> 8);
	p[2] = (unsigned char)len;
	if (v != NULL)
		memcpy(p + 3, v, len);
	*at = p + 3 + len;
	return p + 3;
}

/* The SSL TLV: client flags, verify (0 only for a client certificate that
 * verified, as the spec says), then the version and cipher sub-TLVs. */
static bool
put_ssl_tlv(unsigned char **at, const unsigned char *end, const struct proxyproto_tls *tls)
{
	size_t vlen = strlen(tls->version), clen = strlen(tls->cipher);
	unsigned char *v = put_tlv(at, end, PP2_TYPE_SSL, NULL, 5 + 3 + vlen + 3 + clen);
	unsigned char *sub;
	uint32_t verify = tls->cert_sess && tls->cert_verified ? 0 : 1;

	if (v == NULL)
		return false;
	v[0] = PP2_CLIENT_SSL | (tls->cert_conn ? PP2_CLIENT_CERT_CONN : 0) |
	       (tls->cert_sess ? PP2_CLIENT_CERT_SESS : 0);
	v[1] = (unsigned char)(verify >> 24);
	v[2] = (unsigned char)(verify >> 16);
	v[3] = (unsigned char)(verify >> 8);
	v[4] = (unsigned char)verify;
	sub = v + 5; /* room was reserved above: these cannot fail */
	put_tlv(&sub, *at, PP2_SUBTYPE_SSL_VERSION, tls->version, vlen);
	put_tlv(&sub, *at, PP2_SUBTYPE_SSL_CIPHER, tls->cipher, clen);
	return true;
}

static size_t
build_v2(const struct sockaddr *src, const struct sockaddr *dst, const struct proxyproto_tls *tls,
         char *out, size_t cap)
{
	unsigned char *o = (unsigned char *)out, *at;
	const unsigned char *end = o + cap;
	size_t alen;

	if (cap < 16 + 36)
		return 0;
	memcpy(o, v2_sig, 12);
	o[12] = 0x21; /* version 2, PROXY */
	if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
		o[13] = 0x11; /* TCP over IPv4 */
		memcpy(o + 16, &a->sin_addr, 4);
		memcpy(o + 20, &b->sin_addr, 4);
		memcpy(o + 24, &a->sin_port, 2);
		memcpy(o + 26, &b->sin_port, 2);
		alen = 12;
	} else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
		o[13] = 0x21; /* TCP over IPv6 */
		memcpy(o + 16, &a->sin6_addr, 16);
		memcpy(o + 32, &b->sin6_addr, 16);
		memcpy(o + 48, &a->sin6_port, 2);
		memcpy(o + 50, &b->sin6_port, 2);
		alen = 36;
	} else {
		o[12] = 0x20; /* LOCAL */
		o[13] = 0x00;
		alen = 0;
		tls = NULL; /* TLVs describe a proxied client: a LOCAL one has none */
	}
	at = o + 16 + alen;
	if (tls != NULL && tls->version != NULL && tls->cipher != NULL) {
		if (!put_ssl_tlv(&at, end, tls))
			return 0;
		if (tls->authority != NULL &&
		    !put_tlv(&at, end, PP2_TYPE_AUTHORITY, tls->authority, strlen(tls->authority)))
			return 0;
	}
	alen = (size_t)(at - o) - 16;
	o[14] = (unsigned char)(alen >> 8);
	o[15] = (unsigned char)alen;
	return 16 + alen;
}

size_t
proxyproto_build(int version, const struct sockaddr *src, const struct sockaddr *dst,
                 const struct proxyproto_tls *tls, char *out, size_t cap)
{
	return version == 1 ? build_v1(src, dst, out, cap) : build_v2(src, dst, tls, out, cap);
}

/* Parses a decimal port with no leading zeros beyond "0". */
static bool
parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '\0'))
		return false;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v > 65535)
		return false;
	*port = htons((uint16_t)v);
	return true;
}

/* Cuts LINE at each space into at most MAX fields. The spec puts exactly one
 * space between fields: an empty field (a run of spaces, a leading or a
 * trailing one) or a field too many gives -1. */
static int
split_fields(char *line, char **f, int max)
{
	int nf = 0;

	for (char *p = line;; p++) {
		char *sp = strchr(p, ' ');
		if (nf == max || (sp ? sp : p + strlen(p)) == p)
			return -1;
		f[nf++] = p;
		if (sp == NULL)
			return nf;
		*sp = '\0';
		p = sp;
	}
}

static int
parse_v1(const char *p, size_t len, struct proxyproto_info *info)
{
	char line[108], *f[6];
	const char *nl = memchr(p, '\n', len < 107 ? len : 107);
	size_t n;
	int nf;

	if (nl == NULL)
		return len >= 107 ? PROXYPROTO_BAD : PROXYPROTO_MORE;
	n = (size_t)(nl - p) + 1;
	if (n < 2 || p[n - 2] != '\r')
		return PROXYPROTO_BAD;
	memcpy(line, p, n - 2);
	line[n - 2] = '\0';
	if (memchr(line, '\0', n - 2) != NULL)
		return PROXYPROTO_BAD;
	nf = split_fields(line, f, 6);
	if (nf < 2 || strcmp(f[0], "PROXY") != 0)
		return PROXYPROTO_BAD;
	memset(info, 0, sizeof(*info));
	if (strcmp(f[1], "UNKNOWN") == 0) {
		info->local = true;
		return (int)n;
	}
	if (nf != 6)
		return PROXYPROTO_BAD;
	if (strcmp(f[1], "TCP4") == 0) {
		struct sockaddr_in *s = (void *)&info->src, *d = (void *)&info->dst;
		s->sin_family = d->sin_family = AF_INET;
		if (inet_pton(AF_INET, f[2], &s->sin_addr) != 1 ||
		    inet_pton(AF_INET, f[3], &d->sin_addr) != 1 ||
		    !parse_port(f[4], &s->sin_port) || !parse_port(f[5], &d->sin_port))
			return PROXYPROTO_BAD;
	} else if (strcmp(f[1], "TCP6") == 0) {
		struct sockaddr_in6 *s = (void *)&info->src, *d = (void *)&info->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, f[2], &s->sin6_addr) != 1 ||
		    inet_pton(AF_INET6, f[3], &d->sin6_addr) != 1 ||
		    !parse_port(f[4], &s->sin6_port) || !parse_port(f[5], &d->sin6_port))
			return PROXYPROTO_BAD;
	} else {
		return PROXYPROTO_BAD;
	}
	return (int)n;
}

static int
parse_v2(const unsigned char *p, size_t len, struct proxyproto_info *info)
{
	size_t alen, total;

	if (len < 16)
		return PROXYPROTO_MORE;
	if ((p[12] & 0xf0) != 0x20)
		return PROXYPROTO_BAD;
	alen = (size_t)p[14] << 8 | p[15];
	total = 16 + alen;
	if (total > PROXYPROTO_MAX)
		return PROXYPROTO_BAD;
	if (len < total)
		return PROXYPROTO_MORE;
	memset(info, 0, sizeof(*info));
	switch (p[12] & 0x0f) {
	case 0x0: /* LOCAL: the balancer's own connection (health check) */
		info->local = true;
		return (int)total;
	case 0x1:
		break;
	default:
		return PROXYPROTO_BAD;
	}
	if (p[13] == 0x11 && alen >= 12) {
		struct sockaddr_in *s = (void *)&info->src, *d = (void *)&info->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, p + 16, 4);
		memcpy(&d->sin_addr, p + 20, 4);
		memcpy(&s->sin_port, p + 24, 2);
		memcpy(&d->sin_port, p + 26, 2);
	} else if (p[13] == 0x21 && alen >= 36) {
		struct sockaddr_in6 *s = (void *)&info->src, *d = (void *)&info->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p + 16, 16);
		memcpy(&d->sin6_addr, p + 32, 16);
		memcpy(&s->sin6_port, p + 48, 2);
		memcpy(&d->sin6_port, p + 50, 2);
	} else if ((p[13] & 0xf0) == 0x00) {
		info->local = true; /* AF_UNSPEC: addresses unknown */
	} else {
		return PROXYPROTO_BAD; /* UDP, unix: not for a mail gateway */
	}
	return (int)total;
}

int
proxyproto_parse(const char *p, size_t len, struct proxyproto_info *info)
{
	size_t cmp = len < 12 ? len : 12;

	if (len == 0)
		return PROXYPROTO_MORE;
	if (memcmp(p, v2_sig, cmp) == 0)
		return len < 12 ? PROXYPROTO_MORE : parse_v2((const unsigned char *)p, len, info);
	cmp = len < 6 ? len : 6;
	if (memcmp(p, "PROXY ", cmp) == 0)
		return len < 6 ? PROXYPROTO_MORE : parse_v1(p, len, info);
	return PROXYPROTO_BAD;
}
