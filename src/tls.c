/* Server-side TLS contexts. Each service gets one SSL_CTX per certificate
 * identity; pairs with the same names (an RSA and an ECDSA pair for one host)
 * share a context so OpenSSL serves whichever the client supports. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <stdbool.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <postern/tickets.h>
#include <postern/tls.h>
#include <postern/tls_binding.h>

struct tls_server {
	SSL_CTX **ctx;
	X509 **leaf; /* the first leaf loaded into each context, for SNI matching */
	size_t n;
	const char *alpn; /* the service's ALPN protocol name, NULL for raw */
	/* Shared by all of the service's contexts, whichever SNI picks: a
	 * session resumes only on the service (and settings) that issued it. */
	struct tls_binding binding;
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

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
	const struct tls_server *ts = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	if (name == NULL || ts->n < 2)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < ts->n; i++) {
		if (X509_check_host(ts->leaf[i], name, 0, 0, NULL) == 1) {
			if (i > 0)
				SSL_set_SSL_CTX(ssl, ts->ctx[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK; /* unknown name: the first certificate */
}

/* Two leaves name the same identity when subject and SANs are equal. */
static int
same_identity(X509 *a, X509 *b)
{
	if (X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)) != 0)
		return 0;
	GENERAL_NAMES *sa = X509_get_ext_d2i(a, NID_subject_alt_name, NULL, NULL);
	GENERAL_NAMES *sb = X509_get_ext_d2i(b, NID_subject_alt_name, NULL, NULL);
	int same = (sa == NULL) == (sb == NULL);
	if (same && sa != NULL) {
		same = sk_GENERAL_NAME_num(sa) == sk_GENERAL_NAME_num(sb);
		for (int i = 0; same && i < sk_GENERAL_NAME_num(sa); i++)
			same = GENERAL_NAME_cmp(sk_GENERAL_NAME_value(sa, i),
			                        sk_GENERAL_NAME_value(sb, i)) == 0;
	}
	GENERAL_NAMES_free(sa);
	GENERAL_NAMES_free(sb);
	return same;
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
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static X509 *
read_leaf(const char *path, char *why, size_t whylen)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (f == NULL) {
		snprintf(why, whylen, "%s", strerror(errno));
		return NULL;
	}
	ERR_clear_error();
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL)
		tls_error_string(why, whylen);
	return x;
}

/* Loads pair I into TS, into the context of a same-named earlier pair if any. */
static int
load_pair(const struct tls_server_conf *c, struct tls_server *ts, size_t i, char *err,
          size_t errlen, int *bad_line)
{
	const char *cert = c->cert[i], *key = c->key[i];
	char e[256];
	X509 *leaf = read_leaf(cert, e, sizeof(e));
	SSL_CTX *ctx = NULL;

	if (leaf == NULL) {
		snprintf(err, errlen, "cannot load certificate %s: %s", cert, e);
		*bad_line = c->cert_line[i];
		return -1;
	}
	for (size_t j = 0; j < ts->n && ctx == NULL; j++)
		if (same_identity(ts->leaf[j], leaf))
			ctx = ts->ctx[j];
	if (ctx == NULL) {
		ctx = new_server_ctx(c, ts, err, errlen, bad_line);
		if (ctx == NULL) {
			X509_free(leaf);
			return -1;
		}
		ts->ctx[ts->n] = ctx;
		ts->leaf[ts->n] = leaf;
		ts->n++;
	} else {
		X509_free(leaf);
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errlen, "cannot load certificate %s: %s", cert,
		         tls_error_string(e, sizeof(e)));
		*bad_line = c->cert_line[i];
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "cannot load key %s: %s", key,
		         tls_error_string(e, sizeof(e)));
		*bad_line = c->key_line[i];
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "key %s does not match certificate %s", key, cert);
		ERR_clear_error();
		*bad_line = c->key_line[i];
		return -1;
	}
	return 0;
}

struct tls_server *
tls_server_load(const struct tls_server_conf *c, char *err, size_t errlen, int *bad_line)
{
	struct tls_server *ts = calloc(1, sizeof(*ts));
	size_t n = c->n;

	*bad_line = c->line;
	if (ts == NULL || n == 0) {
		snprintf(err, errlen, "%s", ts ? "no certificate" : "out of memory");
		free(ts);
		return NULL;
	}
	ts->ctx = calloc(n, sizeof(*ts->ctx));
	ts->leaf = calloc(n, sizeof(*ts->leaf));
	ts->alpn = c->alpn;
	if (ts->ctx == NULL || ts->leaf == NULL) {
		snprintf(err, errlen, "out of memory");
		tls_server_free(ts);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (load_pair(c, ts, i, err, errlen, bad_line) < 0) {
			tls_server_free(ts);
			return NULL;
		}
	}
	/* Once the files have loaded (their own errors said first), every
	 * context of the service gets the same binding. */
	if (tls_binding_compute(c, &ts->binding, err, errlen, bad_line) < 0) {
		tls_server_free(ts);
		return NULL;
	}
	for (size_t i = 0; i < ts->n; i++) {
		if (tls_binding_attach(ts->ctx[i], &ts->binding) < 0) {
			char e[256];
			snprintf(err, errlen, "cannot bind sessions to the service: %s",
			         tls_error_string(e, sizeof(e)));
			*bad_line = c->line;
			tls_server_free(ts);
			return NULL;
		}
	}
	return ts;
}

void
tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	for (size_t i = 0; i < ts->n; i++) {
		keylog_untrack(ts->ctx[i]);
		SSL_CTX_free(ts->ctx[i]);
		X509_free(ts->leaf[i]);
	}
	free(ts->ctx);
	free(ts->leaf);
	free(ts);
}

SSL *
tls_server_ssl(const struct tls_server *ts)
{
	return SSL_new(ts->ctx[0]);
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
