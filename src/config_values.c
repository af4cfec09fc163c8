/* Value parsers for configuration keys: booleans, durations, socket
 * addresses, CIDR blocks. Pure functions (except host name resolution),
 * shared with other modules and the unit tests. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <postern/config.h>

/* Longest duration accepted: a year. Anything larger is a typo, and keeps
 * the arithmetic far from overflow. */
#define DURATION_MAX (365.0 * 24 * 3600)

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int
config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* "30s", "5m", "2h", "1.5m" or plain seconds "45". No sign, no spaces, no
 * exponent. 0 is accepted here; callers that need a positive value check. */
int
config_parse_duration(const char *s, double *out)
{
	const char *p = s;
	double v = 0, scale = 1, frac = 0.1;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		v = v * 10 + (*p - '0');
		if (v > DURATION_MAX)
			return -1;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		for (; isdigit((unsigned char)*p); p++, frac /= 10)
			v += frac * (*p - '0');
	}
	switch (*p) {
	case 's':
		p++;
		break;
	case 'm':
		scale = 60;
		p++;
		break;
	case 'h':
		scale = 3600;
		p++;
		break;
	}
	if (*p != '\0')
		return -1;
	v *= scale;
	if (v > DURATION_MAX)
		return -1;
	*out = v;
	return 0;
}

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
		seterr(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
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
		seterr(err, errlen, "cannot resolve '%s': no IPv4 or IPv6 address", host);
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
		seterr(err, errlen, "unix socket path must be absolute");
		return -1;
	}
	if (n >= sizeof(sun->sun_path)) {
		seterr(err, errlen, "unix socket path too long (max %zu bytes)",
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
			seterr(err, errlen, "invalid IPv6 address '%s'", host);
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
		if (flags & CONFIG_ADDR_NO_WILDCARD) {
			seterr(err, errlen, "'*' is not allowed here");
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
		seterr(err, errlen, "invalid host '%s'", host);
		return -1;
	}
	if (flags & CONFIG_ADDR_NUMERIC) {
		seterr(err, errlen, "host names are not allowed here, use an IP address");
		return -1;
	}
	memset(&out->ss, 0, sizeof(out->ss));
	return resolve(host, out, err, errlen);
}

int
config_parse_address(const char *s, int flags, struct sockaddr_ex *out, char **host_out, char *err,
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
		seterr(err, errlen, "address too long (max %zu bytes)", sizeof(out->text) - 1);
		return -1;
	}
	memcpy(out->text, s, n + 1);

	if (strncmp(s, "unix:", 5) == 0) {
		if (flags & CONFIG_ADDR_NO_UNIX) {
			seterr(err, errlen, "unix sockets are not allowed here");
			return -1;
		}
		return parse_unix(s + 5, out, err, errlen);
	}
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end || end[1] != ':') {
			seterr(err, errlen, "invalid address (expected [IPV6]:PORT)");
			return -1;
		}
		bracketed = true;
		s++;
		port = end + 2;
	} else {
		end = strrchr(s, ':');
		if (!end || memchr(s, ':', (size_t)(end - s))) {
			seterr(err, errlen, "invalid address (expected HOST:PORT, [IPV6]:PORT%s)",
			       (flags & CONFIG_ADDR_NO_UNIX) ? "" : " or unix:/path");
			return -1;
		}
		port = end + 1;
	}
	hlen = (size_t)(end - s);
	if (hlen == 0) {
		seterr(err, errlen, "missing host");
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (parse_port(port, &nport) < 0) {
		seterr(err, errlen, "invalid port '%s' (expected 1 to 65535)", port);
		return -1;
	}
	if (parse_inet(host, bracketed, flags, out, err, errlen) < 0)
		return -1;
	/* Both layouts keep the port at the same offset. */
	if (out->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&out->ss)->sin_port = nport;
	else
		((struct sockaddr_in6 *)&out->ss)->sin6_port = nport;
	if (host_out && !(*host_out = strdup(host))) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int
config_parse_sockaddr(const char *s, struct sockaddr_ex *out, char **host_out)
{
	return config_parse_address(s, 0, out, host_out, NULL, 0);
}

/* "ADDR" or "ADDR/LEN", IPv4 or IPv6, numeric only. */
int
config_parse_cidr(const char *s)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned char buf[sizeof(struct in6_addr)];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	int family, maxlen, len = 0;

	if (n == 0 || n >= sizeof(addr))
		return -1;
	memcpy(addr, s, n);
	addr[n] = '\0';
	family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	maxlen = family == AF_INET6 ? 128 : 32;
	if (inet_pton(family, addr, buf) != 1)
		return -1;
	if (!slash)
		return 0;
	if (!slash[1] || strlen(slash + 1) > 3)
		return -1;
	for (const char *p = slash + 1; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		len = len * 10 + (*p - '0');
	}
	return len <= maxlen ? 0 : -1;
}

bool
config_cidr_match(const struct strlist *list, const struct sockaddr *sa)
{
	const unsigned char *a;
	int family = sa->sa_family, maxlen;

	if (family == AF_INET)
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	else if (family == AF_INET6)
		a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	else
		return false;
	maxlen = family == AF_INET6 ? 128 : 32;
	for (size_t i = 0; i < list->n; i++) {
		char addr[INET6_ADDRSTRLEN];
		unsigned char net[sizeof(struct in6_addr)];
		const char *s = list->v[i], *slash = strchr(s, '/');
		size_t n = slash ? (size_t)(slash - s) : strlen(s);
		int len = slash ? atoi(slash + 1) : maxlen;

		if (n >= sizeof(addr) || (strchr(s, ':') != NULL) != (family == AF_INET6))
			continue;
		memcpy(addr, s, n);
		addr[n] = '\0';
		if (inet_pton(family, addr, net) != 1)
			continue;
		int full = len / 8, rest = len % 8;
		if (memcmp(a, net, (size_t)full) != 0)
			continue;
		if (rest && ((a[full] ^ net[full]) & (0xff << (8 - rest)) & 0xff))
			continue;
		return true;
	}
	return false;
}

int
config_sockaddr_clash(const struct sockaddr_ex *a, const struct sockaddr_ex *b)
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

/* ---- key parsers for config.c's table ---- */

static int
strlist_add(struct strlist *l, const char *s, int line)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
	int *ln;

	if (!v)
		return -1;
	l->v = v;
	ln = realloc(l->line, (l->n + 1) * sizeof(*ln));
	if (!ln)
		return -1;
	l->line = ln;
	if (!(l->v[l->n] = strdup(s)))
		return -1;
	l->line[l->n++] = line;
	return 0;
}

void
config_strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	free(l->line);
	memset(l, 0, sizeof(*l));
}

/* Values are echoed in messages: keep terminal control bytes out. */
static const char *
shown(const char *s, char *buf, size_t n)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < n; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

typedef int token_fn(void *field, const char *tok, int line, char *err, size_t errlen);

/* Calls FN for each space-separated token of VALUE; stops at the first error. */
static int
each_token(const char *value, void *field, token_fn *fn, int line, char *err, size_t errlen)
{
	char tok[256];

	while (*value) {
		size_t n = strcspn(value, " \t");

		if (n >= sizeof(tok)) {
			seterr(err, errlen, "item too long");
			return -1;
		}
		memcpy(tok, value, n);
		tok[n] = '\0';
		if (fn(field, tok, line, err, errlen) < 0)
			return -1;
		value += n;
		value += strspn(value, " \t");
	}
	return 0;
}

static int
add_item(void *field, const char *tok, int line, char *err, size_t errlen)
{
	if (strlist_add(field, tok, line) < 0) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int
add_cidr(void *field, const char *tok, int line, char *err, size_t errlen)
{
	char sh[128];

	if (config_parse_cidr(tok) < 0) {
		seterr(err, errlen, "'%s': invalid address or CIDR block",
		       shown(tok, sh, sizeof(sh)));
		return -1;
	}
	return add_item(field, tok, line, err, errlen);
}

static int
add_listen(void *field, const char *tok, int line, char *err, size_t errlen)
{
	struct service *svc = field;
	struct sockaddr_ex sa, *v;
	char why[256], sh[128];

	if (config_parse_address(tok, CONFIG_ADDR_NO_UNIX | CONFIG_ADDR_NUMERIC, &sa, NULL, why,
	                         sizeof(why)) < 0) {
		seterr(err, errlen, "'%s': %s", shown(tok, sh, sizeof(sh)), why);
		return -1;
	}
	sa.line = line;
	if (!(v = realloc(svc->listen, (svc->nlisten + 1) * sizeof(*v)))) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	svc->listen = v;
	v[svc->nlisten++] = sa;
	return 0;
}

#define FIELD(type) ((type *)((char *)base + off))

int
config_key_str(void *base, size_t off, const void *arg, const char *value, int line, char *err,
               size_t errlen)
{
	(void)arg;
	(void)line;
	free(*FIELD(char *));
	if (!(*FIELD(char *) = strdup(value))) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int
config_key_strlist(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                   size_t errlen)
{
	(void)arg;
	return each_token(value, FIELD(struct strlist), add_item, line, err, errlen);
}

int
config_key_cidrs(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                 size_t errlen)
{
	(void)arg;
	return each_token(value, FIELD(struct strlist), add_cidr, line, err, errlen);
}

/* BASE is the struct service: the list and its count go together. */
int
config_key_listen(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                  size_t errlen)
{
	(void)off;
	(void)arg;
	return each_token(value, base, add_listen, line, err, errlen);
}

/* BASE is the struct service: fills backend and backend_host. */
int
config_key_backend(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                   size_t errlen)
{
	struct service *svc = base;

	(void)off;
	(void)arg;
	if (config_parse_address(value, CONFIG_ADDR_NO_WILDCARD, &svc->backend, &svc->backend_host,
	                         err, errlen) < 0)
		return -1;
	svc->backend.line = line;
	return 0;
}

/* A numeric ADDR:PORT to listen on (metrics). */
int
config_key_addr(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                size_t errlen)
{
	(void)arg;
	if (config_parse_address(value, CONFIG_ADDR_NO_UNIX | CONFIG_ADDR_NUMERIC,
	                         FIELD(struct sockaddr_ex), NULL, err, errlen) < 0)
		return -1;
	FIELD(struct sockaddr_ex)->line = line;
	return 0;
}

int
config_key_bool(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                size_t errlen)
{
	(void)arg;
	(void)line;
	if (config_parse_bool(value, FIELD(bool)) < 0) {
		seterr(err, errlen, "invalid value (expected yes or no)");
		return -1;
	}
	return 0;
}

/* The field is an enum or int; ARG lists the names, ending with {NULL}. */
int
config_key_enum(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                size_t errlen)
{
	const struct config_enum *nv = arg;
	size_t len;

	(void)line;
	for (size_t i = 0; nv[i].name; i++) {
		if (strcasecmp(value, nv[i].name) == 0) {
			*FIELD(int) = nv[i].val;
			return 0;
		}
	}
	/* "invalid value (expected a, b or c)" */
	len = (size_t)snprintf(err, errlen, "invalid value (expected ");
	for (size_t i = 0; nv[i].name && len < errlen; i++) {
		const char *sep = i == 0 ? "" : nv[i + 1].name ? ", " : " or ";

		len += (size_t)snprintf(err + len, errlen - len, "%s%s", sep, nv[i].name);
	}
	if (len < errlen)
		snprintf(err + len, errlen - len, ")");
	return -1;
}

static int
parse_long(const char *s, const struct config_range *r, long *out)
{
	long v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s) || v > 100000000)
			return -1;
		v = v * 10 + (*s - '0');
	}
	if (v < r->min || v > r->max)
		return -1;
	*out = v;
	return 0;
}

int
config_key_int(void *base, size_t off, const void *arg, const char *value, int line, char *err,
               size_t errlen)
{
	const struct config_range *r = arg;
	long v;

	(void)line;
	if (parse_long(value, r, &v) < 0) {
		seterr(err, errlen, "invalid value (expected an integer from %ld to %ld)", r->min,
		       r->max);
		return -1;
	}
	*FIELD(int) = (int)v;
	return 0;
}

/* A count, or "auto": one per CPU this process may run on, counted now so
 * that every reader of the configuration sees the same number. */
int
config_key_workers(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                   size_t errlen)
{
	const struct config_range *r = arg;
	long v;

	(void)line;
	if (strcasecmp(value, "auto") == 0) {
		cpu_set_t cpus;
		long n = sched_getaffinity(0, sizeof(cpus), &cpus) == 0
		                 ? CPU_COUNT(&cpus)
		                 : sysconf(_SC_NPROCESSORS_ONLN);
		*FIELD(int) = n < r->min ? (int)r->min : n > r->max ? (int)r->max : (int)n;
		return 0;
	}
	if (parse_long(value, r, &v) < 0) {
		seterr(err, errlen, "invalid value (expected auto or %ld to %ld)", r->min, r->max);
		return -1;
	}
	*FIELD(int) = (int)v;
	return 0;
}

/* Durations where 0 makes sense (shutdown_timeout: close at once). */
int
config_key_duration(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                    size_t errlen)
{
	(void)arg;
	(void)line;
	if (config_parse_duration(value, FIELD(double)) < 0) {
		seterr(err, errlen,
		       "invalid duration (expected e.g. 30s, 5m, 2h or seconds, at most a year)");
		return -1;
	}
	return 0;
}

/* Timeouts: 0 would fire at once, so it is refused. */
int
config_key_timeout(void *base, size_t off, const void *arg, const char *value, int line, char *err,
                   size_t errlen)
{
	double v;

	if (config_key_duration(&v, 0, arg, value, line, err, errlen) < 0)
		return -1;
	if (v == 0) {
		seterr(err, errlen, "must be greater than 0");
		return -1;
	}
	*FIELD(double) = v;
	return 0;
}

/* BASE is the struct config: "stderr", "syslog[:FACILITY]" or a file path.
 * Facilities are those a mail daemon may sensibly log to; mail by default. */
int
config_key_log(void *base, size_t off, const void *arg, const char *value, int line, char *err,
               size_t errlen)
{
	static const struct config_enum facilities[] = {
	        {"mail", LOG_MAIL},     {"daemon", LOG_DAEMON}, {"user", LOG_USER},
	        {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
	        {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
	        {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
	};
	struct config *cfg = base;

	(void)off;
	(void)arg;
	(void)line;
	if (strcmp(value, "stderr") == 0) {
		cfg->log_target = LOGTO_STDERR;
	} else if (strcmp(value, "syslog") == 0) {
		cfg->log_target = LOGTO_SYSLOG;
		cfg->log_facility = LOG_MAIL;
	} else if (strncmp(value, "syslog:", 7) == 0) {
		size_t i, n = sizeof(facilities) / sizeof(facilities[0]);
		char sh[64];
		for (i = 0; i < n && strcasecmp(value + 7, facilities[i].name) != 0; i++)
			;
		if (i == n) {
			seterr(err, errlen,
			       "unknown syslog facility '%s' (expected mail, daemon, user or "
			       "local0 to local7)",
			       shown(value + 7, sh, sizeof(sh)));
			return -1;
		}
		cfg->log_target = LOGTO_SYSLOG;
		cfg->log_facility = facilities[i].val;
	} else {
		cfg->log_target = LOGTO_FILE;
		free(cfg->log_file);
		if (!(cfg->log_file = strdup(value))) {
			seterr(err, errlen, "out of memory");
			return -1;
		}
	}
	return 0;
}
