/* The PROXY protocol (HAProxy's spec, v1 text and v2 binary): pure
 * functions that build the header postern sends to a backend and parse the
 * one a trusted load balancer sends to postern. */
#ifndef POSTERN_PROXYPROTO_H
#define POSTERN_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Longest header either version can take here (v1: 107 bytes; v2 with
 * TCP6 addresses and a bounded TLV area). */
#define PROXYPROTO_MAX 536

/* What a v2 header tells of the client's TLS (HAProxy's send-proxy-v2-ssl):
 * a PP2_TYPE_SSL TLV with the version and cipher, and PP2_TYPE_AUTHORITY
 * with the SNI. Dovecot reads the first to treat the session as secured. */
struct proxyproto_tls {
	const char *version, *cipher; /* both set: the client side is TLS */
	const char *authority;        /* a valid host name (SNI), or NULL */
	bool cert_conn;               /* a client certificate on this connection */
	bool cert_sess;               /* one in the session (also when resumed) */
	bool cert_verified;           /* ... and it verified */
};

/* Writes a header describing a connection from SRC to DST (both AF_INET or
 * both AF_INET6) into OUT. VERSION is 1 or 2. TLS (v2 only; NULL when the
 * client side is not TLS) adds the TLVs above. Returns its length, or 0 if
 * it does not fit in CAP; addresses that cannot be described give v1's
 * UNKNOWN or v2's LOCAL. */
size_t proxyproto_build(int version, const struct sockaddr *src, const struct sockaddr *dst,
                        const struct proxyproto_tls *tls, char *out, size_t cap);

enum proxyproto_result {
	PROXYPROTO_MORE = 0, /* a valid prefix: read more */
	PROXYPROTO_BAD = -1  /* not a PROXY header, or a malformed one */
};

struct proxyproto_info {
	bool local; /* v2 LOCAL (health check) or v1 UNKNOWN: keep the real peer */
	struct sockaddr_storage src, dst;
};

/* Parses the LEN bytes at P. Returns the header's length (> 0) when complete
 * and valid, PROXYPROTO_MORE or PROXYPROTO_BAD. Bytes past the header are
 * not looked at. */
int proxyproto_parse(const char *p, size_t len, struct proxyproto_info *info);

#endif
