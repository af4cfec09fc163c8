/* Socket addresses: "HOST:PORT", "[V6]:PORT", "*:PORT" and "unix:/path"
 * parsed into a sockaddr, clashes between listening addresses, and CIDR
 * blocks parsed once into binary so that matching a peer costs a few byte
 * compares. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <postern/netaddr.h>

/* 1..65535, decimal digits only. */
static int
parse_port(const char *s, in_port_t *out)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; isdigit((unsigned char)s[n]); n++) {
		v = v * 10 + (unsigned long)(s[n] - '0');
		if (v > 65535)
			return -1;
	}
	if (n == 0 || s[n] != '\0' || v == 0)
		return -1;
	*out = htons((in_port_t)v);
	return 0;
}

/* Letters, digits, '-' and '.', not all digits and dots (that would be a
 * bad IPv4 literal, not a name). */
static bool
is_hostname(const char *h)
{
	bool alpha = false;

	if (*h == '\0' || *h == '-' || *h == '.')
		return false;
	for (const char *p = h; *p; p++) {
		if (isalpha((unsigned char)*p) || *p == '-')
			alpha = true;
		else if (!isdigit((unsigned char)*p) && *p != '.')
			return false;
		if (*p == '.' && p[1] == '.')
			return false;
	}
	return alpha;
}

static int
resolve(const char *host, struct sockaddr_ex *out, char *err, size_t errlen)
{
#ifdef POSTERN_FUZZING
	/* No DNS while fuzzing: every well-formed name is the loopback. */
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

	(void)host;
	(void)err;
	(void)errlen;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	out->len = sizeof(*sin);
	return 0;
#else
	struct addrinfo hints, *res, *ai, *pick = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return -1;
	}
	/* Prefer IPv4: mail servers on dual-stack hosts often listen on v4 only. */
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && !pick)
			pick = ai;
	}
	for (ai = res; ai && !pick; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET6)
			pick = ai;
	}
	if (!pick || pick->ai_addrlen > sizeof(out->ss)) {
		freeaddrinfo(res);
		snprintf(err, errlen, "cannot resolve '%s': no IPv4 or IPv6 address", host);
		return -1;
	}
	memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
	out->len = pick->ai_addrlen;
	freeaddrinfo(res);
	return 0;
#endif
}

static int
parse_unix(const char *path, struct sockaddr_ex *out, char *err, size_t errlen)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
	size_t n = strlen(path);

	if (path[0] != '/') {
		snprintf(err, errlen, "unix socket path must be absolute");
		return -1;
	}
	if (n >= sizeof(sun->sun_path)) {
		snprintf(err, errlen, "unix socket path too long (max %zu bytes)",
		         sizeof(sun->sun_path) - 1);
		return -1;
	}
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, n + 1);
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

static int
parse_inet(char *host, bool bracketed, int flags, struct sockaddr_ex *out, char *err, size_t errlen)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
	struct addrinfo hints, *res;

	if (bracketed) {
		/* getaddrinfo rather than inet_pton: it knows "%scope" suffixes. */
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_INET6;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICHOST;
		if (getaddrinfo(host, NULL, &hints, &res) != 0) {
			snprintf(err, errlen, "invalid IPv6 address '%s'", host);
			return -1;
		}
		memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
		out->len = res->ai_addrlen;
		freeaddrinfo(res);
		return 0;
	}
	sin->sin_family = AF_INET;
	out->len = sizeof(*sin);
	if (strcmp(host, "*") == 0) {
		if (flags & NETADDR_NO_WILDCARD) {
			snprintf(err, errlen, "'*' is not allowed here");
			return -1;
		}
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		return 0;
	}
	if (strcasecmp(host, "localhost") == 0) {
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return 0;
	}
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1)
		return 0;
	if (!is_hostname(host)) {
		snprintf(err, errlen, "invalid host '%s'", host);
		return -1;
	}
	if (flags & NETADDR_NUMERIC) {
		snprintf(err, errlen, "host names are not allowed here, use an IP address");
		return -1;
	}
	memset(&out->ss, 0, sizeof(out->ss));
	if (flags & NETADDR_DEFER_NAMES) {
		out->ss.ss_family = AF_UNSPEC;
		return 0;
	}
	return resolve(host, out, err, errlen);
}

int
netaddr_parse(const char *s, int flags, struct sockaddr_ex *out, char **host_out, char *err,
              size_t errlen)
{
	char host[sizeof(out->text)];
	const char *port, *end;
	bool bracketed = false;
	size_t n = strlen(s), hlen;
	in_port_t nport;

	memset(out, 0, sizeof(*out));
	if (host_out)
		*host_out = NULL;
	if (n == 0 || n >= sizeof(out->text)) {
		snprintf(err, errlen, "address too long (max %zu bytes)", sizeof(out->text) - 1);
		return -1;
	}
	memcpy(out->text, s, n + 1);

	if (strncmp(s, "unix:", 5) == 0) {
		if (flags & NETADDR_NO_UNIX) {
			snprintf(err, errlen, "unix sockets are not allowed here");
			return -1;
		}
		return parse_unix(s + 5, out, err, errlen);
	}
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end || end[1] != ':') {
			snprintf(err, errlen, "invalid address (expected [IPV6]:PORT)");
			return -1;
		}
		bracketed = true;
		s++;
		port = end + 2;
	} else {
		end = strrchr(s, ':');
		if (!end || memchr(s, ':', (size_t)(end - s))) {
			snprintf(err, errlen, "invalid address (expected HOST:PORT, [IPV6]:PORT%s)",
			         (flags & NETADDR_NO_UNIX) ? "" : " or unix:/path");
			return -1;
		}
		port = end + 1;
	}
	hlen = (size_t)(end - s);
	if (hlen == 0) {
		snprintf(err, errlen, "missing host");
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (parse_port(port, &nport) < 0) {
		snprintf(err, errlen, "invalid port '%s' (expected 1 to 65535)", port);
		return -1;
	}
	if (parse_inet(host, bracketed, flags, out, err, errlen) < 0)
		return -1;
	/* Both layouts keep the port at the same offset. */
	if (out->ss.ss_family == AF_UNSPEC)
		out->name_port = nport;
	else if (out->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&out->ss)->sin_port = nport;
	else
		((struct sockaddr_in6 *)&out->ss)->sin6_port = nport;
	if (host_out && !(*host_out = strdup(host))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int
netaddr_parse_sockaddr(const char *s, struct sockaddr_ex *out, char **host_out)
{
	return netaddr_parse(s, 0, out, host_out, NULL, 0);
}

/* "ADDR" or "ADDR/LEN", IPv4 or IPv6, numeric only. */
int
netaddr_parse_cidr(const char *s, struct netaddr_cidr *out)
{
	char addr[INET6_ADDRSTRLEN];
	struct netaddr_cidr c = {0};
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	int maxlen;

	if (n == 0 || n >= sizeof(addr))
		return -1;
	memcpy(addr, s, n);
	addr[n] = '\0';
	c.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	maxlen = c.family == AF_INET6 ? 128 : 32;
	if (inet_pton(c.family, addr, c.net) != 1)
		return -1;
	c.len = maxlen;
	if (slash) {
		if (!slash[1] || strlen(slash + 1) > 3)
			return -1;
		c.len = 0;
		for (const char *p = slash + 1; *p; p++) {
			if (!isdigit((unsigned char)*p))
				return -1;
			c.len = c.len * 10 + (*p - '0');
		}
		if (c.len > maxlen)
			return -1;
	}
	if (out)
		*out = c;
	return 0;
}

int
netaddr_cidrs_add(struct netaddr_cidrs *l, const struct netaddr_cidr *c)
{
	struct netaddr_cidr *v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	l->v = v;
	l->v[l->n++] = *c;
	return 0;
}

void
netaddr_cidrs_free(struct netaddr_cidrs *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

bool
netaddr_cidr_match(const struct netaddr_cidrs *l, const struct sockaddr *sa)
{
	const unsigned char *a;
	int family = sa->sa_family;

	if (family == AF_INET)
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	else if (family == AF_INET6)
		a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	else
		return false;
	for (size_t i = 0; i < l->n; i++) {
		const struct netaddr_cidr *c = &l->v[i];
		int full = c->len / 8, rest = c->len % 8;

		if (c->family != family || memcmp(a, c->net, (size_t)full) != 0)
			continue;
		if (rest && ((a[full] ^ c->net[full]) & (0xff << (8 - rest)) & 0xff))
			continue;
		return true;
	}
	return false;
}

int
netaddr_clash(const struct sockaddr_ex *a, const struct sockaddr_ex *b)
{
	if (a->ss.ss_family != b->ss.ss_family)
		return 0;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		if (x->sin_port != y->sin_port)
			return 0;
		if (x->sin_addr.s_addr == y->sin_addr.s_addr)
			return 1;
		if (x->sin_addr.s_addr == htonl(INADDR_ANY) ||
		    y->sin_addr.s_addr == htonl(INADDR_ANY))
			return 2;
		return 0;
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		if (x->sin6_port != y->sin6_port)
			return 0;
		if (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) &&
		    x->sin6_scope_id == y->sin6_scope_id)
			return 1;
		if (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
		    IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr))
			return 2;
		return 0;
	}
	return 0;
}
