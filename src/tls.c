/* Server-side TLS: one SSL_CTX per service; the certificate is chosen per
 * handshake. The SNI callback finds the client's name in the service's
 * name index (the same cost for the first name as for the 100 000th, or an
 * unknown one) and the certificate callback, which runs once the client's
 * signature algorithms are known, installs every key of that name's group
 * (an RSA and an ECDSA pair with the same names): OpenSSL then signs with
 * the one the client accepts. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <stdbool.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <postern/cert_map.h>
#include <postern/cert_store.h>
#include <postern/sni_index.h>
#include <postern/tickets.h>
#include <postern/tls.h>
#include <postern/tls_binding.h>

/* Pairs served for one set of names: at most one per key type. */
#define GROUP_MAX 4
struct tls_group {
	struct cert_pair *pair[GROUP_MAX];
	size_t n;
};

struct tls_server {
	SSL_CTX *ctx;
	struct sni_index *names; /* name -> struct tls_group */
	struct tls_group **group;
	size_t ngroups, cap;
	struct tls_group *fallback; /* the first pair's: no SNI or an unknown name */
	struct cert_map *by_names;  /* the sorted names of a group -> the group */
	bool strict_sni;
	void (*refused)(void *arg, const char *name);
	void *refused_arg;
	const char *alpn; /* the service's ALPN protocol name, NULL for raw */
	/* A session resumes only on the service (and settings) that issued it. */
	struct tls_binding binding;
	struct tls_stats stats;
};

static int keylog_fd = -1;

static void on_keylog(const SSL *ssl, const char *line);

/* Every live context, so that the key log callback is installed only while
 * a key log is open: with a callback, OpenSSL formats each secret of every
 * handshake into a hex line (five lines for TLS 1.3, a sprintf per byte),
 * whether the line is then written or not. */
static SSL_CTX **live_ctx;
static size_t live_n, live_cap;

static void
keylog_track(SSL_CTX *ctx)
{
	if (live_n == live_cap) {
		size_t cap = live_cap ? live_cap * 2 : 16;
		SSL_CTX **n = realloc(live_ctx, cap * sizeof(*n));
		if (n == NULL) {
			/* Untracked: the callback stays, it writes only while open. */
			SSL_CTX_set_keylog_callback(ctx, on_keylog);
			return;
		}
		live_ctx = n;
		live_cap = cap;
	}
	live_ctx[live_n++] = ctx;
	SSL_CTX_set_keylog_callback(ctx, keylog_fd >= 0 ? on_keylog : NULL);
}

static void
keylog_untrack(SSL_CTX *ctx)
{
	for (size_t i = 0; i < live_n; i++) {
		if (live_ctx[i] == ctx) {
			live_ctx[i] = live_ctx[--live_n];
			return;
		}
	}
}

int
tls_keylog_open(const char *path)
{
	int fd = -1;

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0)
			return -1;
		fchmod(fd, 0600); /* an existing file too: these are secrets */
	}
	if (keylog_fd >= 0)
		close(keylog_fd);
	keylog_fd = fd;
	for (size_t i = 0; i < live_n; i++)
		SSL_CTX_set_keylog_callback(live_ctx[i], fd >= 0 ? on_keylog : NULL);
	return 0;
}

/* OpenSSL hands over one line per secret (TLS 1.2 CLIENT_RANDOM, TLS 1.3
 * handshake and traffic secrets, EXPORTER_SECRET). */
static void
on_keylog(const SSL *ssl, const char *line)
{
	char buf[1024];
	size_t n = strlen(line);

	(void)ssl;
	if (keylog_fd < 0 || n + 1 > sizeof(buf))
		return;
	memcpy(buf, line, n);
	buf[n++] = '\n';
	if (write(keylog_fd, buf, n) < 0) {
		/* Nothing to do: a key log is a debugging aid, not worth a session. */
	}
}

void
tls_init(void)
{
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

const char *
tls_error_string(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* ALPACA: a client that offers ALPN but not our protocol is talking to the
 * wrong service; refuse with no_application_protocol. No ALPN is fine. */
static int
on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
        unsigned int inlen, void *arg)
{
	const struct tls_server *ts = arg;
	size_t want = strlen(ts->alpn);

	(void)ssl;
	for (unsigned int i = 0; i < inlen;) {
		unsigned int l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == want && memcmp(in + i + 1, ts->alpn, l) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Which group a handshake is served from, from the SNI callback to the
 * certificate callback. */
static int ex_group = -1;

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *ts = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct tls_group *g = name ? sni_index_find(ts->names, name, strlen(name)) : NULL;

	if (g == NULL && ts->strict_sni) {
		char shown[SNI_NAME_MAX + 1];
		if (ts->refused)
			ts->refused(ts->refused_arg,
			            name == NULL ? ""
			            : sni_name_normalize(name, strlen(name), shown, 0) >= 0
			                    ? shown
			                    : "(not a host name)");
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_ex_data(ssl, ex_group, g ? g : ts->fallback);
	return SSL_TLSEXT_ERR_OK;
}

/* Runs once the client's signature algorithms are known: every key of the
 * group goes in, OpenSSL picks the one the client can verify. The default
 * group is already in, from the context (a client without SNI, or with the
 * one name of a single certificate, costs nothing more). */
static int
on_cert(SSL *ssl, void *arg)
{
	struct tls_server *ts = arg;
	struct tls_group *g = SSL_get_ex_data(ssl, ex_group);

	if (g == NULL || g == ts->fallback)
		return 1;
	SSL_certs_clear(ssl);
	for (size_t i = 0; i < g->n; i++) {
		struct cert_pair *p = g->pair[i];
		if (SSL_use_cert_and_key(ssl, p->leaf, p->key, p->chain, 1) != 1)
			return 0;
	}
	return 1;
}

static SSL_CTX *
new_server_ctx(const struct tls_server_conf *c, struct tls_server *ts, char *err, size_t errlen,
               int *bad_line)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char e[256];

	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create TLS context: %s",
		         tls_error_string(e, sizeof(e)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, c->min_version);
	/* No renegotiation (CPU DoS, T1), no compression (CRIME, T2); 0-RTT stays
	 * off as max_early_data defaults to 0 (T3). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* One recv() for whatever the client sent (a flight, several records)
	 * instead of one for each record's header and one for its body. The
	 * relay reads until OpenSSL wants the socket, so nothing waits unseen
	 * in OpenSSL's buffer, which is still released once empty. */
	SSL_CTX_set_read_ahead(ctx, 1);
	/* One TLS 1.3 ticket per handshake, not OpenSSL's two: mail clients
	 * resume one connection at a time, and each ticket costs an encryption
	 * and a record on every full handshake. */
	SSL_CTX_set_num_tickets(ctx, 1);
	tickets_attach(ctx);
	if (c->ciphers && !SSL_CTX_set_cipher_list(ctx, c->ciphers)) {
		snprintf(err, errlen, "invalid ciphers '%s'", c->ciphers);
		*bad_line = c->line;
		goto fail;
	}
	if (c->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, c->ciphersuites)) {
		snprintf(err, errlen, "invalid ciphersuites '%s'", c->ciphersuites);
		*bad_line = c->line;
		goto fail;
	}
	if (c->verify != TLS_VERIFY_OFF) {
		STACK_OF(X509_NAME) *names = NULL;
		if (c->client_ca == NULL ||
		    !SSL_CTX_load_verify_locations(ctx, c->client_ca, NULL) ||
		    (names = SSL_load_client_CA_file(c->client_ca)) == NULL) {
			snprintf(err, errlen, "cannot load client_ca %s: %s",
			         c->client_ca ? c->client_ca : "(unset)",
			         tls_error_string(e, sizeof(e)));
			*bad_line = c->line;
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx,
		                   SSL_VERIFY_PEER | (c->verify == TLS_VERIFY_REQUIRE
		                                              ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
		                                              : 0),
		                   NULL);
	}
	if (ts->alpn)
		SSL_CTX_set_alpn_select_cb(ctx, on_alpn, ts);
	keylog_track(ctx);
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, ts);
	SSL_CTX_set_cert_cb(ctx, on_cert, ts);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static const char *
first_name(const struct cert_pair *p)
{
	return p->nnames ? p->names[0] : "(no name)";
}

static void
count_expiry(const struct tls_server_conf *c, struct tls_server *ts, const struct cert_pair *p,
             time_t now)
{
	ts->stats.certificates++;
	if (ts->stats.soonest_expiry == 0 || p->not_after < ts->stats.soonest_expiry)
		ts->stats.soonest_expiry = p->not_after;
	if (p->not_after - now > (time_t)TLS_EXPIRY_WARN_DAYS * 86400)
		return;
	ts->stats.expiring++;
	if (c->report) {
		char when[32];
		struct tm tm;
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&p->not_after, &tm));
		fprintf(c->report, "%s: warning: the certificate for %s %s %s\n", p->file,
		        first_name(p), p->not_after < now ? "expired on" : "expires on", when);
	}
}

/* Adds P (a reference the server keeps) to the group of its names, or a
 * new group whose names go into the index (a name already there stays
 * with the earlier pair). -1 when out of memory. */
static int
add_pair(const struct tls_server_conf *c, struct tls_server *ts, struct cert_pair *p)
{
	const char *key = p->names_key;
	struct tls_group *g = cert_map_get(ts->by_names, key);
	int type = p->key_type, added = 0, rc = -1;
	bool placed = false; /* then the group frees it */

	for (size_t i = 0; g && i < g->n; i++)
		if (g->pair[i]->key_type == type)
			g = NULL; /* two of a kind: the later one gets a group of its own */
	if (g != NULL && g->n < GROUP_MAX) {
		g->pair[g->n++] = p;
		placed = true;
		rc = 0;
		goto out;
	}
	if (ts->ngroups == ts->cap) {
		size_t cap = ts->cap ? ts->cap * 2 : 16;
		struct tls_group **v = realloc(ts->group, cap * sizeof(*v));
		if (v == NULL)
			goto out;
		ts->group = v;
		ts->cap = cap;
	}
	if ((g = calloc(1, sizeof(*g))) == NULL)
		goto out;
	ts->group[ts->ngroups++] = g;
	g->pair[g->n++] = p;
	placed = true;
	if (cert_map_get(ts->by_names, key) == NULL && cert_map_put(ts->by_names, key, g) < 0)
		goto out;
	for (size_t i = 0; i < p->nnames; i++) {
		int r = sni_index_add(ts->names, p->names[i], strlen(p->names[i]), g);
		if (r == -2)
			goto out;
		added += r == 0;
	}
	if (ts->fallback == NULL)
		ts->fallback = g;
	else if (added == 0 && c->report)
		fprintf(c->report,
		        "%s: warning: never served: each of its names belongs to an earlier "
		        "certificate with a key of the same type\n",
		        p->file);
	rc = 0;
out:
	if (!placed)
		cert_pair_unref(p);
	return rc;
}

static int
load_listed(const struct tls_server_conf *c, struct tls_server *ts, size_t i, time_t now, char *err,
            size_t errlen, int *bad_line)
{
	char why[256];
	int key_fault = 0;
	struct cert_pair *p = cert_pair_load(c->cert[i], c->key[i], why, sizeof(why), &key_fault);

	if (p == NULL) {
		if (strcmp(why, "the private key does not match the certificate") == 0)
			snprintf(err, errlen, "key %s does not match certificate %s", c->key[i],
			         c->cert[i]);
		else
			snprintf(err, errlen, "cannot load %s %s: %s",
			         key_fault ? "key" : "certificate",
			         key_fault ? c->key[i] : c->cert[i], why);
		*bad_line = key_fault ? c->key_line[i] : c->cert_line[i];
		return -1;
	}
	count_expiry(c, ts, p, now);
	if (add_pair(c, ts, p) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* One directory's walk: its pairs, and the files that failed. */
struct dir_walk {
	const struct tls_server_conf *c;
	struct tls_server *ts;
	time_t now;
	size_t bad;
	char first_bad[600];
	bool oom;
};

static int
load_dir_pair(void *arg, const char *cert, const char *key)
{
	struct dir_walk *w = arg;
	char why[256], line[600];
	int key_fault = 0;
	struct cert_pair *p = cert_pair_load(cert, key, why, sizeof(why), &key_fault);

	if (p != NULL && p->not_after < w->now - 86400) {
		char when[32];
		struct tm tm;
		strftime(when, sizeof(when), "%Y-%m-%d", gmtime_r(&p->not_after, &tm));
		snprintf(why, sizeof(why), "the certificate expired on %s", when);
		cert_pair_unref(p);
		p = NULL;
	}
	if (p == NULL) {
		snprintf(line, sizeof(line), "%s: %s", key_fault && key ? key : cert, why);
		if (w->bad++ == 0)
			snprintf(w->first_bad, sizeof(w->first_bad), "%s", line);
		else if (w->c->report && w->c->dir_files_strict)
			fprintf(w->c->report, "%s\n", line);
		if (w->c->report && !w->c->dir_files_strict)
			fprintf(w->c->report, "%s; skipped\n", line);
		return 0;
	}
	count_expiry(w->c, w->ts, p, w->now);
	if (add_pair(w->c, w->ts, p) < 0) {
		w->oom = true;
		return -1;
	}
	return 0;
}

static int
load_dir(const struct tls_server_conf *c, struct tls_server *ts, size_t i, time_t now, char *err,
         size_t errlen, int *bad_line)
{
	struct dir_walk w = {.c = c, .ts = ts, .now = now};
	char why[256];

	*bad_line = c->dir_line[i];
	if (cert_dir_each(c->dir[i], load_dir_pair, &w, why, sizeof(why)) < 0 && !w.oom) {
		snprintf(err, errlen, "cert_dir %s: %s", c->dir[i], why);
		return -1;
	}
	if (w.oom) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (w.bad > 0 && c->dir_files_strict) {
		if (w.bad == 1)
			snprintf(err, errlen, "%s", w.first_bad);
		else
			snprintf(err, errlen, "%s (and %zu more files, listed below)", w.first_bad,
			         w.bad - 1);
		return -1;
	}
	return 0;
}

/* The binding of TS's sessions, from its settings and every pair it
 * serves, listed or from a directory alike, group by group. */
static int
bind_sessions(const struct tls_server_conf *c, struct tls_server *ts, char *err, size_t errlen,
              int *bad_line)
{
	size_t n = 0, total = 0;
	const unsigned char **served;
	int rc;

	for (size_t i = 0; i < ts->ngroups; i++)
		total += ts->group[i]->n;
	if ((served = malloc((total + 1) * sizeof(*served))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < ts->ngroups; i++)
		for (size_t j = 0; j < ts->group[i]->n; j++)
			served[n++] = ts->group[i]->pair[j]->digest;
	rc = tls_binding_compute(c, served, n, &ts->binding, err, errlen, bad_line);
	free(served);
	return rc;
}

struct tls_server *
tls_server_load(const struct tls_server_conf *c, char *err, size_t errlen, int *bad_line)
{
	struct tls_server *ts = calloc(1, sizeof(*ts));
	time_t now = time(NULL);

	*bad_line = c->line;
	if (ex_group < 0)
		ex_group = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (ts == NULL || (ts->names = sni_index_new()) == NULL ||
	    (ts->by_names = cert_map_new()) == NULL || ex_group < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ts->alpn = c->alpn;
	ts->strict_sni = c->strict_sni;
	ts->refused = c->refused;
	ts->refused_arg = c->refused_arg;
	if ((ts->ctx = new_server_ctx(c, ts, err, errlen, bad_line)) == NULL)
		goto fail;
	for (size_t i = 0; i < c->n; i++)
		if (load_listed(c, ts, i, now, err, errlen, bad_line) < 0)
			goto fail;
	for (size_t i = 0; i < c->ndir; i++)
		if (load_dir(c, ts, i, now, err, errlen, bad_line) < 0)
			goto fail;
	if (ts->fallback == NULL) {
		snprintf(err, errlen, "no certificate");
		*bad_line = c->ndir ? c->dir_line[0] : c->line;
		goto fail;
	}
	for (size_t i = 0; i < ts->fallback->n; i++) {
		struct cert_pair *p = ts->fallback->pair[i];
		if (SSL_CTX_use_cert_and_key(ts->ctx, p->leaf, p->key, p->chain, 1) != 1) {
			char e[256];
			snprintf(err, errlen, "cannot use certificate %s: %s", p->file,
			         tls_error_string(e, sizeof(e)));
			goto fail;
		}
	}
	if (ts->stats.expiring > 0 && c->report)
		fprintf(c->report, "%s: warning: %zu certificate%s expire%s within %d days\n",
		        c->name, ts->stats.expiring, ts->stats.expiring == 1 ? "" : "s",
		        ts->stats.expiring == 1 ? "s" : "", TLS_EXPIRY_WARN_DAYS);
	/* Once the files have loaded (their own errors said first), the
	 * service's context gets its binding. */
	if (bind_sessions(c, ts, err, errlen, bad_line) < 0)
		goto fail;
	if (tls_binding_attach(ts->ctx, &ts->binding) < 0) {
		char e[256];
		snprintf(err, errlen, "cannot bind sessions to the service: %s",
		         tls_error_string(e, sizeof(e)));
		*bad_line = c->line;
		goto fail;
	}
	return ts;
fail:
	tls_server_free(ts);
	return NULL;
}

void
tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	if (ts->ctx) {
		keylog_untrack(ts->ctx);
		SSL_CTX_free(ts->ctx);
	}
	for (size_t i = 0; i < ts->ngroups; i++) {
		for (size_t j = 0; j < ts->group[i]->n; j++)
			cert_pair_unref(ts->group[i]->pair[j]);
		free(ts->group[i]);
	}
	free(ts->group);
	sni_index_free(ts->names);
	cert_map_free(ts->by_names);
	free(ts);
	cert_store_sweep();
}

SSL *
tls_server_ssl(const struct tls_server *ts)
{
	return SSL_new(ts->ctx);
}

const struct tls_binding *
tls_server_binding(const struct tls_server *ts)
{
	return &ts->binding;
}

void
tls_server_stats(const struct tls_server *ts, struct tls_stats *st)
{
	*st = ts ? ts->stats : (struct tls_stats){0};
}

SSL_CTX *
tls_client_load(bool verify, const char *ca, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char e[256];

	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create TLS context: %s",
		         tls_error_string(e, sizeof(e)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1); /* as for clients: one recv() per flight */
	if (verify) {
		int ok = ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
		            : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			snprintf(err, errlen, "cannot load backend_ca %s: %s",
			         ca ? ca : "(system store)", tls_error_string(e, sizeof(e)));
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	keylog_track(ctx);
	return ctx;
}

void
tls_client_free(SSL_CTX *ctx)
{
	if (ctx == NULL)
		return;
	keylog_untrack(ctx);
	SSL_CTX_free(ctx);
}

/* Whether NAME is an IPv4 or IPv6 literal (certificates then carry it as
 * an iPAddress, and SNI must not be sent: RFC 6066 3). */
static bool
is_ip_literal(const char *name)
{
	unsigned char tmp[16];

	return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

SSL *
tls_client_ssl(SSL_CTX *ctx, const char *name, bool verify)
{
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL || name == NULL)
		return ssl;
	if (is_ip_literal(name)) {
		if (verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, name) != 1)
			goto fail;
		/* RFC 6125: one wildcard, leftmost label only, never partial;
		 * the name is a DNS subjectAltName, never the subject CN (6.4.4). */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
		                               X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (verify && SSL_set1_host(ssl, name) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}
