/* Value parsers for configuration keys: booleans, durations, and the key
 * parsers of config.c's table (addresses and CIDR blocks through
 * netaddr.c). Pure functions (except host name resolution and counting
 * CPUs), shared with the unit tests. */
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

#include "config_parse.h"

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
	struct netaddr_cidr c;
	char sh[128];

	(void)line;
	if (netaddr_parse_cidr(tok, &c) < 0) {
		seterr(err, errlen, "'%s': invalid address or CIDR block",
		       shown(tok, sh, sizeof(sh)));
		return -1;
	}
	if (netaddr_cidrs_add(field, &c) < 0) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int
add_listen(void *field, const char *tok, int line, char *err, size_t errlen)
{
	struct service *svc = field;
	struct sockaddr_ex sa, *v;
	char why[256], sh[128];

	if (netaddr_parse(tok, NETADDR_NO_UNIX | NETADDR_NUMERIC, &sa, NULL, why, sizeof(why)) <
	    0) {
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
	return each_token(value, FIELD(struct netaddr_cidrs), add_cidr, line, err, errlen);
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
	/* A name is resolved when a session needs it (resolver.c). */
	if (netaddr_parse(value, NETADDR_NO_WILDCARD | NETADDR_DEFER_NAMES, &svc->backend,
	                  &svc->backend_host, err, errlen) < 0)
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
	if (netaddr_parse(value, NETADDR_NO_UNIX | NETADDR_NUMERIC, FIELD(struct sockaddr_ex), NULL,
	                  err, errlen) < 0)
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
