/* [oauth2:NAME] provider sections. The presets carry the endpoints and
 * scopes of the two providers most legacy clients need; any other provider
 * is described by its URLs. Every URL must be https: the requests carry
 * client secrets and refresh tokens. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/config_oauth2.h>

#define MS_BASE "https://login.microsoftonline.com/"
/* offline_access: a refresh token; the other three: IMAP, POP and SMTP
 * AUTH with XOAUTH2 on Exchange Online. */
#define MS_SCOPE                                                                                   \
	"offline_access https://outlook.office.com/IMAP.AccessAsUser.All "                         \
	"https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send"
#define GOOGLE_AUTH "https://accounts.google.com/o/oauth2/v2/auth"
#define GOOGLE_TOKEN "https://oauth2.googleapis.com/token"
#define GOOGLE_SCOPE "https://mail.google.com/"
#define DEFAULT_TOKEN_DIR "/var/lib/postern/oauth2"
#define NAME_MAX_LEN 64 /* as a service name */

enum {
	K_PROVIDER,
	K_TENANT,
	K_AUTH_URL,
	K_DEVICE_URL,
	K_TOKEN_URL,
	K_SCOPE,
	K_CLIENT_ID,
	K_CLIENT_SECRET,
	K_TOKEN_DIR,
	K_CA,
	K_TIMEOUT,
	K_MECH,
	NKEYS
};

static const char *const keys[NKEYS] = {
        [K_PROVIDER] = "provider",
        [K_TENANT] = "tenant",
        [K_AUTH_URL] = "authorization_url",
        [K_DEVICE_URL] = "device_authorization_url",
        [K_TOKEN_URL] = "token_url",
        [K_SCOPE] = "scope",
        [K_CLIENT_ID] = "client_id",
        [K_CLIENT_SECRET] = "client_secret",
        [K_TOKEN_DIR] = "token_dir",
        [K_CA] = "ca",
        [K_TIMEOUT] = "timeout",
        [K_MECH] = "sasl_mechanism",
};

_Static_assert(NKEYS <= sizeof(((struct oauth2_provider *)0)->seen) / sizeof(int),
               "seen[] holds every key");

static char **
field(struct oauth2_provider *p, int k)
{
	switch (k) {
	case K_TENANT:
		return &p->tenant;
	case K_AUTH_URL:
		return &p->authorization_url;
	case K_DEVICE_URL:
		return &p->device_url;
	case K_TOKEN_URL:
		return &p->token_url;
	case K_SCOPE:
		return &p->scope;
	case K_CLIENT_ID:
		return &p->client_id;
	case K_CLIENT_SECRET:
		return &p->client_secret;
	case K_TOKEN_DIR:
		return &p->token_dir;
	case K_CA:
		return &p->ca;
	default:
		return NULL;
	}
}

static int
name_ok(const char *s)
{
	if (!*s || strlen(s) > NAME_MAX_LEN)
		return 0;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("-_.", *s)))
			return 0;
	}
	return 1;
}

int
config_oauth2_section(struct config_oauth2 **op, const char *name, int line, char *err,
                      size_t errlen)
{
	struct config_oauth2 *o = *op;
	struct oauth2_provider *v, *p;

	if (!name_ok(name)) {
		snprintf(err, errlen,
		         "invalid provider name in [oauth2:...] (letters, digits, '-', '_', '.'; "
		         "at most "
		         "%d)",
		         NAME_MAX_LEN);
		return -1;
	}
	if (!o && !(o = *op = calloc(1, sizeof(*o))))
		goto oom;
	for (size_t i = 0; i < o->n; i++) {
		if (strcmp(o->v[i].name, name) == 0) {
			snprintf(err, errlen, "duplicate section [oauth2:%s] (first at line %d)",
			         name, o->v[i].line);
			return -1;
		}
	}
	if (!(v = realloc(o->v, (o->n + 1) * sizeof(*v))))
		goto oom;
	o->v = v;
	p = &o->v[o->n];
	memset(p, 0, sizeof(*p));
	p->line = line;
	p->timeout = 10;
	if (!(p->name = strdup(name)) || !(p->cache = calloc(1, sizeof(*p->cache)))) {
		free(p->name);
		goto oom;
	}
	o->n++;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

int
config_oauth2_key(struct config_oauth2 *o, const char *key, const char *value, int line, int cont,
                  char *err, size_t errlen)
{
	struct oauth2_provider *p = &o->v[o->n - 1];
	char **f;
	int k;

	if (cont) {
		snprintf(err, errlen, "continuation line not allowed in [oauth2:%s]", p->name);
		return -1;
	}
	for (k = 0; k < NKEYS && strcmp(keys[k], key) != 0; k++)
		;
	if (k == NKEYS) {
		snprintf(err, errlen, "unknown key '%.64s' in [oauth2:%s]", key, p->name);
		return -1;
	}
	if (p->seen[k]) {
		snprintf(err, errlen, "duplicate key '%s' (first at line %d)", key, p->seen[k]);
		return -1;
	}
	p->seen[k] = line;
	if (!*value) {
		snprintf(err, errlen, "%s: missing value", key);
		return -1;
	}
	if (k == K_PROVIDER) {
		if (strcmp(value, "microsoft") == 0)
			p->preset = OAUTH2_MICROSOFT;
		else if (strcmp(value, "google") == 0)
			p->preset = OAUTH2_GOOGLE;
		else if (strcmp(value, "generic") == 0)
			p->preset = OAUTH2_GENERIC;
		else {
			snprintf(err, errlen,
			         "provider = %.64s: expected microsoft, google or generic", value);
			return -1;
		}
		return 0;
	}
	if (k == K_MECH) {
		if (strcmp(value, "xoauth2") == 0 || strcmp(value, "oauthbearer") == 0) {
			p->oauthbearer = value[0] == 'o';
			return 0;
		}
		snprintf(err, errlen, "sasl_mechanism = %.64s: expected xoauth2 or oauthbearer",
		         value);
		return -1;
	}
	if (k == K_TIMEOUT) {
		char *end;
		long secs = strtol(value, &end, 10);

		if (end == value || (*end && strcmp(end, "s") != 0) || secs < 1 || secs > 300) {
			snprintf(err, errlen, "timeout = %.64s: expected seconds from 1 to 300",
			         value);
			return -1;
		}
		p->timeout = (double)secs;
		return 0;
	}
	f = field(p, k);
	if (!(*f = strdup(value))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static void report(config_oauth2_report *fn, void *arg, int line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void
report(config_oauth2_report *fn, void *arg, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fn(arg, line, msg);
}

/* Sets *F to the preset's value when the section left it unset. */
static int
preset(char **f, const char *a, const char *b)
{
	size_t n;

	if (*f)
		return 0;
	n = strlen(a) + strlen(b) + 1;
	if (!(*f = malloc(n)))
		return -1;
	snprintf(*f, n, "%s%s", a, b);
	return 0;
}

static int
tenant_ok(const char *s)
{
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
			return 0;
	}
	return 1;
}

static void
check_one(struct oauth2_provider *p, config_oauth2_report *fn, void *arg)
{
	static const int urls[] = {K_AUTH_URL, K_DEVICE_URL, K_TOKEN_URL};
	const char *t = p->tenant ? p->tenant : "common";
	char base[256];
	int bad = 0;

	if (p->tenant && (p->preset != OAUTH2_MICROSOFT || !tenant_ok(p->tenant))) {
		report(fn, arg, p->seen[K_TENANT], "%s",
		       p->preset != OAUTH2_MICROSOFT ? "tenant: only for provider = microsoft"
		                                     : "tenant: letters, digits, '-' and '.' only");
		t = "common"; /* the other checks still run */
	}
	snprintf(base, sizeof(base), MS_BASE "%s/oauth2/v2.0/", t);
	if (p->preset == OAUTH2_MICROSOFT)
		bad = preset(&p->authorization_url, base, "authorize") ||
		      preset(&p->device_url, base, "devicecode") ||
		      preset(&p->token_url, base, "token") || preset(&p->scope, MS_SCOPE, "");
	/* Google allows the device grant for no mail scope: loopback only. */
	else if (p->preset == OAUTH2_GOOGLE)
		bad = preset(&p->authorization_url, GOOGLE_AUTH, "") ||
		      preset(&p->token_url, GOOGLE_TOKEN, "") ||
		      preset(&p->scope, GOOGLE_SCOPE, "");
	if (bad || preset(&p->token_dir, DEFAULT_TOKEN_DIR "/", p->name)) {
		report(fn, arg, p->line, "[oauth2:%s]: out of memory", p->name);
		return;
	}
	if (!p->client_id)
		report(fn, arg, p->line,
		       "[oauth2:%s]: client_id is required (the application's id "
		       "registered with the provider)",
		       p->name);
	if (p->preset == OAUTH2_GOOGLE && !p->client_secret)
		report(fn, arg, p->line, "[oauth2:%s]: provider = google needs client_secret",
		       p->name);
	if (!p->token_url)
		report(fn, arg, p->line, "[oauth2:%s]: token_url is required", p->name);
	if (!p->authorization_url && !p->device_url)
		report(fn, arg, p->line,
		       "[oauth2:%s]: set authorization_url or device_authorization_url (or both)",
		       p->name);
	if (!p->scope)
		report(fn, arg, p->line, "[oauth2:%s]: scope is required", p->name);
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		const char *u = *field(p, urls[i]);
		if (u && strncmp(u, "https://", 8) != 0)
			report(fn, arg, p->seen[urls[i]], "%s: must be an https:// URL (%s)",
			       keys[urls[i]], "tokens must not travel in clear text");
	}
	if (p->token_dir && p->token_dir[0] != '/')
		report(fn, arg, p->seen[K_TOKEN_DIR], "token_dir: must be an absolute path");
}

void
config_oauth2_check(struct config_oauth2 *o, config_oauth2_report *fn, void *arg)
{
	for (size_t i = 0; o && i < o->n; i++)
		check_one(&o->v[i], fn, arg);
}

void
config_oauth2_free(struct config_oauth2 *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->n; i++) {
		struct oauth2_provider *p = &o->v[i];
		free(p->name);
		if (p->cache && p->cache->free)
			p->cache->free(p->cache->cache);
		free(p->cache);
		for (int k = 0; k < NKEYS; k++) {
			char **f = field(p, k);
			if (f)
				free(*f);
		}
	}
	free(o->v);
	free(o);
}

void
config_oauth2_endpoint(const struct oauth2_provider *p, struct oauth2_endpoint *ep)
{
	*ep = (struct oauth2_endpoint){.token_url = p->token_url,
	                               .client_id = p->client_id,
	                               .client_secret = p->client_secret,
	                               .ca_file = p->ca,
	                               .timeout = p->timeout};
}

const struct oauth2_provider *
config_oauth2_find(const struct config_oauth2 *o, const char *name)
{
	for (size_t i = 0; o && i < o->n; i++) {
		if (strcmp(o->v[i].name, name) == 0)
			return &o->v[i];
	}
	return NULL;
}
