/* Configuration loader. inih splits "key = value" lines; our own reader in
 * front of it (src/config_reader.c) counts lines, rejects lines too long
 * for inih's 200-byte buffer, and tracks sections itself (inih gives the
 * handler no line number and truncates section names). The handler
 * records values through one table; a second pass checks rules that span
 * keys. Every error is kept and printed, sorted by line, as
 * "FILE:LINE: message". */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <ini.h>

#include <postern/config.h>
#include <postern/config_oauth2.h>
#include <postern/resolver.h>
#include <postern/tickets.h>
#include <postern/tls.h>

#include "config_parse.h"

enum seckind { K_GLOBAL, K_SERVICE };

#define F_LIST 0x1 /* repeatable and continuable; each line adds items */

struct keydef {
	const char *name;
	enum seckind kind;
	config_key_parser *parse;
	size_t off;
	const void *arg;
	unsigned flags;
};

void
perr(struct parse *ps, int line, const char *fmt, ...)
{
	char buf[ERRLEN];
	struct cfg_err *e;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (ps->nerrs == ps->errcap) {
		size_t cap = ps->errcap ? ps->errcap * 2 : 16;

		e = realloc(ps->errs, cap * sizeof(*e));
		if (!e) {
			ps->oom = true;
			return;
		}
		ps->errs = e;
		ps->errcap = cap;
	}
	e = &ps->errs[ps->nerrs];
	if (!(e->msg = strdup(buf))) {
		ps->oom = true;
		return;
	}
	e->line = line;
	e->seq = ps->nerrs++;
}

/* Values are echoed in messages: keep terminal control bytes out. */
const char *
shown(const char *s, char *buf, size_t n)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < n; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

/* ---- the key table ---- */

static const struct config_enum protocols[] = {
        {"imap", PROTO_IMAP}, {"pop3", PROTO_POP3}, {"smtp", PROTO_SMTP}, {"raw", PROTO_RAW}, {0}};
static const struct config_enum tls_modes[] = {
        {"off", TLSMODE_OFF}, {"implicit", TLSMODE_IMPLICIT}, {"starttls", TLSMODE_STARTTLS}, {0}};
static const struct config_enum log_levels[] = {
        {"error", LOG_ERR}, {"warn", LOG_WARNING}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}, {0}};
static const struct config_enum log_formats[] = {{"text", LOGFMT_TEXT}, {"json", LOGFMT_JSON}, {0}};
static const struct config_enum proxy_versions[] = {{"off", 0}, {"v1", 1}, {"v2", 2}, {0}};
static const struct config_enum tls_versions[] = {
        {"TLSv1.2", TLS1_2_VERSION}, {"TLSv1.3", TLS1_3_VERSION}, {0}};
static const struct config_enum verify_modes[] = {{"off", CLIENT_VERIFY_OFF},
                                                  {"optional", CLIENT_VERIFY_OPTIONAL},
                                                  {"require", CLIENT_VERIFY_REQUIRE},
                                                  {0}};
static const struct config_range workers_range = {1, WORKERS_MAX};
static const struct config_range maxconn_range = {1, 1000000};

/* clang-format off */
#define G(name, fn, field, arg, flags) \
	{#name, K_GLOBAL, fn, offsetof(struct config, field), arg, flags}
#define S(name, fn, field, arg, flags) \
	{#name, K_SERVICE, fn, offsetof(struct service, field), arg, flags}
/* clang-format on */

static const struct keydef keys[] = {
        G(user, config_key_str, user, NULL, 0),
        G(group, config_key_str, group, NULL, 0),
        G(workers, config_key_workers, workers, &workers_range, 0),
        G(log, config_key_log, log_target, NULL, 0),
        G(log_level, config_key_enum, log_level, log_levels, 0),
        G(log_format, config_key_enum, log_format, log_formats, 0),
        G(pidfile, config_key_str, pidfile, NULL, 0),
        G(max_connections, config_key_int, max_connections, &maxconn_range, 0),
        G(max_handshakes, config_key_int, max_handshakes, &maxconn_range, 0),
        G(shutdown_timeout, config_key_duration, shutdown_timeout, NULL, 0),
        G(metrics, config_key_addr, metrics, NULL, 0),
        G(ticket_keys, config_key_strlist, ticket_keys, NULL, F_LIST),
        G(keylog, config_key_str, keylog, NULL, 0),

        S(protocol, config_key_enum, protocol, protocols, 0),
        S(listen, config_key_listen, listen, NULL, F_LIST),
        S(tls, config_key_enum, tls, tls_modes, 0),
        S(require_tls, config_key_bool, require_tls, NULL, 0),
        S(cert, config_key_strlist, cert, NULL, F_LIST),
        S(key, config_key_strlist, key, NULL, F_LIST),
        S(cert_dir, config_key_strlist, cert_dir, NULL, F_LIST),
        S(strict_sni, config_key_bool, strict_sni, NULL, 0),
        S(backend, config_key_backend, backend, NULL, 0),
        S(backend_tls, config_key_enum, backend_tls, tls_modes, 0),
        S(backend_verify, config_key_bool, backend_verify, NULL, 0),
        S(backend_ca, config_key_str, backend_ca, NULL, 0),
        S(backend_sni, config_key_str, backend_sni, NULL, 0),
        S(helo_name, config_key_str, helo_name, NULL, 0),
        S(proxy_protocol, config_key_enum, proxy_protocol, proxy_versions, 0),
        S(xclient, config_key_bool, xclient, NULL, 0),
        S(backend_auth, config_key_str, backend_auth, NULL, 0),
        S(accept_proxy_from, config_key_cidrs, accept_proxy_from, NULL, F_LIST),
        S(log_commands, config_key_bool, log_commands, NULL, 0),
        S(capture_dir, config_key_str, capture_dir, NULL, 0),
        S(tls_min_version, config_key_enum, tls_min_version, tls_versions, 0),
        S(ciphers, config_key_str, ciphers, NULL, 0),
        S(ciphersuites, config_key_str, ciphersuites, NULL, 0),
        S(client_ca, config_key_str, client_ca, NULL, 0),
        S(client_verify, config_key_enum, client_verify, verify_modes, 0),
        S(connect_timeout, config_key_timeout, connect_timeout, NULL, 0),
        S(dns_cache_time, config_key_duration, dns_cache_time, NULL, 0),
        S(handshake_timeout, config_key_timeout, handshake_timeout, NULL, 0),
        S(idle_timeout, config_key_timeout, idle_timeout, NULL, 0),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct keydef *
key_find(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

/* Index of KEY's entry, for the per-section "seen" arrays. */
#define KI(key) ((size_t)(key - keys))

static int
seen_line(const int *seen, const char *name)
{
	return seen[KI(key_find(name))];
}

/* ---- services ---- */

static void
service_defaults(struct service *svc)
{
	memset(svc, 0, sizeof(*svc));
	svc->tls = TLSMODE_IMPLICIT;
	svc->require_tls = true;
	svc->backend_tls = TLSMODE_OFF;
	svc->backend_verify = true;
	svc->tls_min_version = TLS1_2_VERSION;
	svc->client_verify = CLIENT_VERIFY_OFF;
	svc->connect_timeout = 10;
	svc->dns_cache_time = 30;
	svc->handshake_timeout = 30;
	svc->idle_timeout = 30 * 60;
}

static void
service_free(struct service *svc)
{
	config_tls_free(svc);
	free(svc->name);
	free(svc->listen);
	config_strlist_free(&svc->cert);
	config_strlist_free(&svc->key);
	config_strlist_free(&svc->cert_dir);
	free(svc->backend_host);
	free(svc->backend_ca);
	free(svc->backend_sni);
	free(svc->helo_name);
	free(svc->backend_auth);
	free(svc->capture_dir);
	free(svc->ciphers);
	free(svc->ciphersuites);
	free(svc->client_ca);
	netaddr_cidrs_free(&svc->accept_proxy_from);
}

int
service_add(struct parse *ps, const char *name, bool ignored)
{
	struct config *cfg = ps->cfg;
	size_t i = cfg->nservices;

	if (i == ps->svccap) {
		size_t cap = ps->svccap ? ps->svccap * 2 : 4;
		struct service *v = realloc(cfg->services, cap * sizeof(*v));
		struct svcmeta *m;

		if (!v)
			goto oom;
		cfg->services = v;
		if (!(m = realloc(ps->meta, cap * sizeof(*m))))
			goto oom;
		ps->meta = m;
		ps->svccap = cap;
	}
	service_defaults(&cfg->services[i]);
	memset(&ps->meta[i], 0, sizeof(ps->meta[i]));
	cfg->services[i].line = ps->lineno;
	cfg->services[i].name = strdup(name);
	ps->meta[i].seen = calloc(NKEYS, sizeof(int));
	ps->meta[i].ignored = ignored;
	cfg->nservices++;
	if (!cfg->services[i].name || !ps->meta[i].seen)
		goto oom;
	return (int)i;
oom:
	ps->oom = true;
	return SEC_SINK;
}

/* ---- the handler: one call per key line or continuation line ---- */

/* "tls = off" indented under a list key: a mistake, not a list item. */
static bool
looks_like_key(const char *s)
{
	char word[32];
	size_t n = 0;

	while (n < sizeof(word) - 1 && (islower((unsigned char)s[n]) || s[n] == '_')) {
		word[n] = s[n];
		n++;
	}
	word[n] = '\0';
	s += n + strspn(s + n, " \t");
	return n > 0 && (*s == '=' || *s == ':') && key_find(word);
}

static int
cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse *ps = user;
	const struct keydef *k;
	char err[ERRLEN], sh[256], shv[256];
	void *base;
	int *seen, line = ps->lineno;

	(void)section; /* we track sections ourselves */
	if (ps->cur == SEC_SINK)
		return 1;
	if (ps->cur == SEC_OAUTH2) {
		if (config_oauth2_key(ps->cfg->oauth2, name, value, line, ps->cont, err,
		                      sizeof(err)) < 0)
			perr(ps, line, "%s", err);
		return 1;
	}
	if (ps->cont) {
		k = ps->prev_key;
		if (ps->prev_bad || !k)
			return 1;
		if (!(k->flags & F_LIST)) {
			perr(ps, line,
			     "continuation line not allowed for '%s' (only list keys, "
			     "or remove the leading whitespace)",
			     k->name);
			return 1;
		}
		if (looks_like_key(value)) {
			perr(ps, line,
			     "indented line continues '%s' but looks like a key (remove "
			     "the leading whitespace)",
			     k->name);
			return 1;
		}
	} else {
		k = key_find(name);
		ps->prev_key = k;
		ps->prev_bad = true;
		if (ps->cur == SEC_NONE) {
			perr(ps, line, "key '%s' outside a section", shown(name, sh, sizeof(sh)));
			return 1;
		}
		if (!k) {
			perr(ps, line, "unknown key '%s'", shown(name, sh, sizeof(sh)));
			return 1;
		}
		if (k->kind == K_SERVICE && ps->cur == SEC_GLOBAL) {
			perr(ps, line, "'%s' is a service key, not allowed in [global]", k->name);
			return 1;
		}
		if (k->kind == K_GLOBAL && ps->cur != SEC_GLOBAL) {
			perr(ps, line, "'%s' belongs in [global]", k->name);
			return 1;
		}
		ps->prev_bad = false;
	}
	if (ps->cur == SEC_GLOBAL) {
		base = ps->cfg;
		seen = ps->gseen;
	} else {
		base = &ps->cfg->services[ps->cur];
		seen = ps->meta[ps->cur].seen;
	}
	if (!ps->cont && seen[KI(k)] && !(k->flags & F_LIST)) {
		perr(ps, line, "duplicate key '%s' (first at line %d)", k->name, seen[KI(k)]);
		return 1;
	}
	if (!seen[KI(k)])
		seen[KI(k)] = line;
	if (*value == '\0') {
		perr(ps, line, "%s: missing value", k->name);
		return 1;
	}
	err[0] = '\0';
	if (k->parse(base, k->off, k->arg, value, line, err, sizeof(err)) < 0) {
		perr(ps, line, "%s = %s: %s", k->name, shown(value, shv, sizeof(shv)), err);
		return 1;
	}
	return 1;
}

/* ---- second pass: rules across keys ---- */

static void
check_listen_clashes(struct parse *ps)
{
	struct config *cfg = ps->cfg;

	for (size_t i = 0; i < cfg->nservices; i++) {
		if (ps->meta[i].ignored)
			continue;
		for (size_t j = 0; j < cfg->services[i].nlisten; j++) {
			const struct sockaddr_ex *a = &cfg->services[i].listen[j];

			/* Compare with every earlier address, report the first clash. */
			for (size_t k = 0; k <= i; k++) {
				const struct service *o = &cfg->services[k];
				size_t lim = k == i ? j : o->nlisten;
				int c = 0;
				size_t m;

				if (ps->meta[k].ignored)
					continue;
				for (m = 0; m < lim && !c; m++)
					c = netaddr_clash(a, &o->listen[m]);
				if (!c)
					continue;
				m--;
				if (c == 1 && strcmp(a->text, o->listen[m].text) == 0)
					perr(ps, a->line,
					     "duplicate listen address %s (first at line %d)",
					     a->text, o->listen[m].line);
				else if (c == 1)
					perr(ps, a->line,
					     "duplicate listen address %s (as %s at line %d)",
					     a->text, o->listen[m].text, o->listen[m].line);
				else
					perr(ps, a->line,
					     "listen address %s overlaps %s at line %d", a->text,
					     o->listen[m].text, o->listen[m].line);
				break;
			}
		}
	}
}

/* backend_auth = passthrough | oauth2:NAME. postern logs in with a token
 * only over TLS it verifies itself: the client role (backend_tls). The
 * IMAP adapter is the one that answers the client's login so far. */
static void
check_backend_auth(struct parse *ps, struct service *svc, const int *seen)
{
	int ln = seen_line(seen, "backend_auth");
	const char *v = svc->backend_auth;
	char sh[256];

	if (!ln || strcmp(v, "passthrough") == 0)
		return;
	if (strncmp(v, "oauth2:", 7) != 0) {
		perr(ps, ln, "backend_auth = %s: expected passthrough or oauth2:NAME",
		     shown(v, sh, sizeof(sh)));
		return;
	}
	svc->oauth2 = config_oauth2_find(ps->cfg->oauth2, v + 7);
	if (!svc->oauth2)
		perr(ps, ln, "backend_auth: no section [oauth2:%s]", shown(v + 7, sh, sizeof(sh)));
	if (svc->protocol == PROTO_RAW)
		perr(ps, ln, "backend_auth = oauth2 needs protocol imap, pop3 or smtp");
	if (svc->backend_tls == TLSMODE_OFF)
		perr(ps, ln,
		     "backend_auth = oauth2 needs backend_tls (implicit or starttls): the "
		     "token only travels over TLS postern verifies");
	else if (!svc->backend_verify)
		perr(ps, ln, "backend_auth = oauth2 needs backend_verify = yes");
}

static void
check_service(struct parse *ps, struct service *svc, struct svcmeta *meta, bool load_tls)
{
	static const char *const required[] = {"protocol", "listen", "backend"};
	const int *seen = meta->seen;
	int ln;

	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if (!seen_line(seen, required[i]))
			perr(ps, svc->line, "[%s]: missing required key '%s'", svc->name,
			     required[i]);
	}
	if (svc->tls != TLSMODE_OFF) {
		if (!seen_line(seen, "cert") && !seen_line(seen, "cert_dir"))
			perr(ps, svc->line, "[%s]: missing required key 'cert' (needed for tls)",
			     svc->name);
		if (!seen_line(seen, "key") &&
		    (seen_line(seen, "cert") || !seen_line(seen, "cert_dir")))
			perr(ps, svc->line, "[%s]: missing required key 'key' (needed for tls)",
			     svc->name);
		if (svc->cert.n && svc->key.n && svc->cert.n != svc->key.n) {
			ln = svc->key.n > svc->cert.n ? svc->key.line[svc->cert.n]
			                              : svc->key.line[svc->key.n - 1];
			perr(ps, ln, "%zu cert files but %zu key files (they must pair up)",
			     svc->cert.n, svc->key.n);
		}
	} else {
		if ((ln = seen_line(seen, "cert")) || (ln = seen_line(seen, "key")) ||
		    (ln = seen_line(seen, "cert_dir")))
			perr(ps, ln, "cert/key given but tls = off");
		if ((ln = seen_line(seen, "client_verify")) && svc->client_verify)
			perr(ps, ln, "client_verify needs tls (tls = off)");
	}
	if (svc->protocol == PROTO_RAW) {
		if (svc->tls == TLSMODE_STARTTLS)
			perr(ps, seen_line(seen, "tls"),
			     "tls = starttls needs protocol imap, pop3 or smtp");
		if (svc->backend_tls == TLSMODE_STARTTLS)
			perr(ps, seen_line(seen, "backend_tls"),
			     "backend_tls = starttls needs protocol imap, pop3 or smtp");
		/* Opaque bytes have no commands to log or redact. */
		if (svc->log_commands)
			perr(ps, seen_line(seen, "log_commands"),
			     "log_commands needs protocol imap, pop3 or smtp");
		if ((ln = seen_line(seen, "capture_dir")))
			perr(ps, ln, "capture_dir needs protocol imap, pop3 or smtp");
	}
	if (svc->xclient && svc->protocol != PROTO_SMTP)
		perr(ps, seen_line(seen, "xclient"), "xclient needs protocol smtp");
	check_backend_auth(ps, svc, seen);
	if (svc->client_verify != CLIENT_VERIFY_OFF && !svc->client_ca && svc->tls != TLSMODE_OFF)
		perr(ps, seen_line(seen, "client_verify"), "client_verify needs client_ca");

	/* Certificates are checked even when other keys have errors, so that
	 * one run reports everything; but only when the pairs line up. */
	if (load_tls && svc->tls != TLSMODE_OFF && (svc->cert.n || svc->cert_dir.n) &&
	    svc->cert.n == svc->key.n) {
		char err[ERRLEN];
		int bad_line = 0;

		err[0] = '\0';
		if (config_tls_load(svc, ps->warns, err, sizeof(err), &bad_line) < 0)
			perr(ps, bad_line > 0 ? bad_line : svc->line, "%s",
			     err[0] ? err : "cannot load certificates");
	}
	if (svc->backend_tls == TLSMODE_OFF) {
		static const char *const backend_tls_keys[] = {"backend_verify", "backend_ca",
		                                               "backend_sni"};
		for (size_t i = 0; i < sizeof(backend_tls_keys) / sizeof(backend_tls_keys[0]); i++)
			if ((ln = seen_line(seen, backend_tls_keys[i])))
				perr(ps, ln, "%s needs backend_tls", backend_tls_keys[i]);
	} else {
		/* A unix: backend has no host name: without one, any certificate
		 * of the CA bundle would pass. */
		if (svc->backend.ss.ss_family == AF_UNIX && svc->backend_verify &&
		    !svc->backend_sni)
			perr(ps, seen_line(seen, "backend_tls"),
			     "backend_tls to a unix: backend needs backend_sni, the name its "
			     "certificate must carry");
	}
	/* A name is looked up again for every session (resolver.c): one that
	 * does not resolve now, on a host still offline, is no reason to stop. */
	if (load_tls && svc->backend.ss.ss_family == AF_UNSPEC && ps->warns) {
		char err[ERRLEN];

		if (resolver_check(svc->backend_host, err, sizeof(err)) < 0)
			fprintf(ps->warns,
			        "%s:%d: warning: backend: %s; it is looked up again when a session "
			        "needs it\n",
			        ps->name, svc->backend.line, err);
	}
	if (svc->backend_tls != TLSMODE_OFF && load_tls) {
		char err[ERRLEN];

		if (config_tls_backend_load(svc, err, sizeof(err)) < 0)
			perr(ps,
			     seen_line(seen, "backend_ca") ? seen_line(seen, "backend_ca")
			                                   : svc->line,
			     "%s", err);
	}
}

/* user and group must exist, and a process that is not root can become
 * no one else: both would otherwise stop the start after -t said OK. Files
 * are read by this very process below, as they are at reload: the master
 * keeps root when started as root with a user, and a process started as
 * the user reads them as the user. */
static void
check_identity(struct parse *ps)
{
	struct config *cfg = ps->cfg;
	int uline = seen_line(ps->gseen, "user"), gline = seen_line(ps->gseen, "group");
	struct passwd *pw = NULL;
	struct group *gr = NULL;
	char sh[256];

	if (cfg->user && !(pw = getpwnam(cfg->user)))
		perr(ps, uline, "user: no user '%s' on this system",
		     shown(cfg->user, sh, sizeof(sh)));
	if (cfg->group && !(gr = getgrnam(cfg->group)))
		perr(ps, gline, "group: no group '%s' on this system",
		     shown(cfg->group, sh, sizeof(sh)));
	if (geteuid() == 0)
		return;
	if (pw && pw->pw_uid != geteuid())
		perr(ps, uline,
		     "user: postern runs as uid %d and cannot become '%s' (uid %d): start it as "
		     "root or as that user",
		     (int)geteuid(), shown(cfg->user, sh, sizeof(sh)), (int)pw->pw_uid);
	else if (gr && gr->gr_gid != getegid())
		perr(ps, gline,
		     "group: postern runs as gid %d and cannot become '%s' (gid %d): start it as "
		     "root or with that group",
		     (int)getegid(), shown(cfg->group, sh, sizeof(sh)), (int)gr->gr_gid);
}

static void
oauth2_error(void *ps, int line, const char *msg)
{
	perr(ps, line, "%s", msg);
}

static void
validate(struct parse *ps, bool load_tls)
{
	struct config *cfg = ps->cfg;
	size_t i;

	if (cfg->nservices == 0)
		perr(ps, 1, "no services defined");
	check_listen_clashes(ps);
	config_oauth2_check(cfg->oauth2, oauth2_error, ps);
	for (i = 0; i < cfg->nservices; i++) {
		if (!ps->meta[i].ignored)
			check_service(ps, &cfg->services[i], &ps->meta[i], load_tls);
	}
	if (load_tls)
		check_identity(ps);
	if (load_tls && cfg->ticket_keys.n > 0) {
		char err[ERRLEN];
		size_t bad = 0;
		cfg->tickets = tickets_load(cfg->ticket_keys.v, cfg->ticket_keys.n, err,
		                            sizeof(err), &bad);
		if (cfg->tickets == NULL)
			perr(ps, cfg->ticket_keys.line[bad], "ticket_keys: %s", err);
	}
}

/* ---- entry points ---- */

static void
config_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->nservices; i++)
		service_free(&cfg->services[i]);
	free(cfg->services);
	free(cfg->path);
	free(cfg->user);
	free(cfg->group);
	free(cfg->log_file);
	free(cfg->pidfile);
	free(cfg->keylog);
	config_strlist_free(&cfg->ticket_keys);
	tickets_free(cfg->tickets);
	config_oauth2_free(cfg->oauth2);
	free(cfg);
}

static int
err_cmp(const void *a, const void *b)
{
	const struct cfg_err *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static struct config *
load(struct parse *ps, bool load_tls, FILE *errs)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	bool failed;

	ps->cur = SEC_NONE;
	ps->gseen = calloc(NKEYS, sizeof(int));
	if (!cfg || !ps->gseen || !(cfg->path = strdup(ps->name))) {
		ps->oom = true;
		goto out;
	}
	ps->cfg = cfg;
	ps->warns = errs ? open_memstream(&ps->warn_text, &ps->warn_len) : NULL;
	cfg->refcount = 1;
	cfg->workers = 1;
	cfg->log_target = LOGTO_STDERR;
	cfg->log_level = LOG_INFO;
	cfg->log_format = LOGFMT_TEXT;
	cfg->max_connections = 10000;
	cfg->max_handshakes = 1000;
	cfg->shutdown_timeout = 30;

	/* inih's own return value only repeats what the reader and handler
	 * reported (with worse line numbers); errors come from ps. */
	ini_parse_stream(cfg_reader, ps, cfg_handler, ps);
	if (ps->read_errno)
		perr(ps, 0, "cannot read: %s", strerror(ps->read_errno));
	else if (!ps->oom)
		validate(ps, load_tls);
out:
	failed = ps->nerrs > 0 || ps->oom;
	if (ps->nerrs)
		qsort(ps->errs, ps->nerrs, sizeof(*ps->errs), err_cmp);
	for (size_t i = 0; i < ps->nerrs; i++) {
		if (errs && ps->errs[i].line > 0)
			fprintf(errs, "%s:%d: %s\n", ps->name, ps->errs[i].line, ps->errs[i].msg);
		else if (errs)
			fprintf(errs, "%s: %s\n", ps->name, ps->errs[i].msg);
		free(ps->errs[i].msg);
	}
	if (ps->oom && errs)
		fprintf(errs, "%s: out of memory\n", ps->name);
	if (ps->warns) {
		fclose(ps->warns);
		if (ps->warn_len > 0)
			fputs(ps->warn_text, errs);
		free(ps->warn_text);
	}
	free(ps->errs);
	for (size_t i = 0; cfg && i < cfg->nservices; i++)
		free(ps->meta[i].seen);
	free(ps->meta);
	free(ps->gseen);
	if (failed && cfg) {
		config_free(cfg);
		cfg = NULL;
	}
	return cfg;
}

struct config *
config_load(const char *path, FILE *errs)
{
	struct parse ps = {.name = path};
	struct config *cfg;

	if (!(ps.fp = fopen(path, "r"))) {
		if (errs)
			fprintf(errs, "%s: cannot open: %s\n", path, strerror(errno));
		return NULL;
	}
	cfg = load(&ps, true, errs);
	fclose(ps.fp);
	return cfg;
}

struct config *
config_load_string(const char *name, const char *text, bool load_tls, FILE *errs)
{
	struct parse ps = {.name = name, .mem = text};

	return load(&ps, load_tls, errs);
}

struct config *
config_ref(struct config *cfg)
{
	cfg->refcount++;
	return cfg;
}

void
config_unref(struct config *cfg)
{
	if (cfg && --cfg->refcount == 0)
		config_free(cfg);
}
