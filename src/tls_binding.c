/* Session binding: a session id context per service, and tickets that
 * carry it (see tls_binding.h). OpenSSL itself refuses a session whose id
 * context differs from the handshake's (TLS 1.2 session ids and tickets,
 * TLS 1.3 tickets), falling back to a full handshake; the ticket callback
 * checks the same binding again, and that a session without a verified
 * client certificate never resumes where one is required. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <postern/cert_store.h>
#include <postern/tls_binding.h>
#include <postern/tls_conf.h>

#define APPDATA_LEN (TLS_BINDING_LEN + 1) /* id, then a flag byte */
#define PEER_VERIFIED 0x01

/* Each field is framed (length, then bytes) so that no two configurations
 * feed the same byte stream. */
static int
feed(EVP_MD_CTX *md, const void *p, size_t n)
{
	unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
	                        (unsigned char)(n >> 8), (unsigned char)n};

	return EVP_DigestUpdate(md, len, 4) == 1 && EVP_DigestUpdate(md, p, n) == 1 ? 0 : -1;
}

static int
feed_str(EVP_MD_CTX *md, const char *s)
{
	return s ? feed(md, s, strlen(s)) : feed(md, "\xff(unset)", 8);
}

static int
feed_int(EVP_MD_CTX *md, long v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%ld", v);
	return feed_str(md, buf);
}

/* Feeds the SHA-256 of the file at PATH (a fixed length: no framing needed
 * for the contents themselves). */
static int
feed_file(EVP_MD_CTX *md, const char *path, char *err, size_t errlen)
{
	unsigned char buf[4096], sum[EVP_MAX_MD_SIZE];
	unsigned int sumlen = 0;
	EVP_MD_CTX *fmd = EVP_MD_CTX_new();
	FILE *f = fopen(path, "rb");
	int rc = -1;
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (fmd == NULL || EVP_DigestInit_ex(fmd, EVP_sha256(), NULL) != 1)
		goto oom;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (EVP_DigestUpdate(fmd, buf, n) != 1)
			goto oom;
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read %s", path);
		goto out;
	}
	if (EVP_DigestFinal_ex(fmd, sum, &sumlen) != 1 || feed(md, sum, sumlen) < 0)
		goto oom;
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "cannot digest %s", path);
out:
	if (f)
		fclose(f);
	EVP_MD_CTX_free(fmd);
	return rc;
}

int
tls_binding_compute(const struct tls_server_conf *c, const unsigned char *const *served,
                    size_t nserved, struct tls_binding *b, char *err, size_t errlen, int *bad_line)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int rc = -1;

	*bad_line = c->line;
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    feed_str(md, "postern session binding 2") < 0 || feed_str(md, c->name) < 0 ||
	    feed_int(md, c->mode) < 0 || feed_int(md, c->verify) < 0 ||
	    feed_int(md, c->min_version) < 0 || feed_str(md, c->ciphers) < 0 ||
	    feed_str(md, c->ciphersuites) < 0) {
		snprintf(err, errlen, "cannot digest the TLS settings");
		goto out;
	}
	if (c->verify != TLS_VERIFY_OFF && c->client_ca &&
	    feed_file(md, c->client_ca, err, errlen) < 0)
		goto out;
	/* From cert and cert_dir alike: a reload that changes which
	 * certificates a directory serves changes the binding. */
	if (feed_int(md, (long)nserved) < 0) {
		snprintf(err, errlen, "cannot digest the TLS settings");
		goto out;
	}
	/* Of a fixed length and counted: no framing, and one update for many
	 * (100 000 certificates cost a few milliseconds). */
	for (size_t i = 0; i < nserved;) {
		unsigned char batch[64 * CERT_DIGEST_LEN];
		size_t k = 0;
		for (; k < 64 && i < nserved; k++, i++)
			memcpy(batch + k * CERT_DIGEST_LEN, served[i], CERT_DIGEST_LEN);
		if (EVP_DigestUpdate(md, batch, k * CERT_DIGEST_LEN) != 1) {
			snprintf(err, errlen, "cannot digest the TLS settings");
			goto out;
		}
	}
	if (EVP_DigestFinal_ex(md, b->id, &len) != 1 || len != TLS_BINDING_LEN) {
		snprintf(err, errlen, "cannot digest the TLS settings");
		goto out;
	}
	b->need_peer = c->verify == TLS_VERIFY_REQUIRE;
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Every ticket carries the binding of the service that issued it and
 * whether the client's certificate was verified. */
static int
on_ticket_issue(SSL *ssl, void *arg)
{
	const struct tls_binding *b = arg;
	unsigned char data[APPDATA_LEN];
	SSL_SESSION *sess = SSL_get0_session(ssl);

	memcpy(data, b->id, TLS_BINDING_LEN);
	data[TLS_BINDING_LEN] =
	        SSL_get0_peer_certificate(ssl) != NULL && SSL_get_verify_result(ssl) == X509_V_OK
	                ? PEER_VERIFIED
	                : 0;
	return sess != NULL && SSL_SESSION_set1_ticket_appdata(sess, data, sizeof(data)) == 1;
}

static bool
ticket_fits(const struct tls_binding *b, SSL_SESSION *sess)
{
	void *data = NULL;
	size_t len = 0;

	if (SSL_SESSION_get0_ticket_appdata(sess, &data, &len) != 1 || len != APPDATA_LEN ||
	    memcmp(data, b->id, TLS_BINDING_LEN) != 0)
		return false;
	if (b->need_peer && (!(((unsigned char *)data)[TLS_BINDING_LEN] & PEER_VERIFIED) ||
	                     SSL_SESSION_get0_peer(sess) == NULL))
		return false;
	return true;
}

/* Refusing a ticket means a full handshake (and a new ticket), not a
 * failed connection. */
static SSL_TICKET_RETURN
on_ticket_open(SSL *ssl, SSL_SESSION *sess, const unsigned char *keyname, size_t keyname_len,
               SSL_TICKET_STATUS status, void *arg)
{
	(void)ssl;
	(void)keyname;
	(void)keyname_len;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		if (sess == NULL || !ticket_fits(arg, sess))
			return SSL_TICKET_RETURN_IGNORE_RENEW;
		return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE
		                                    : SSL_TICKET_RETURN_USE_RENEW;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	default: /* an internal error: OpenSSL's own verdict */
		return SSL_TICKET_RETURN_ABORT;
	}
}

int
tls_binding_attach(SSL_CTX *ctx, const struct tls_binding *b)
{
	if (SSL_CTX_set_session_id_context(ctx, b->id, TLS_BINDING_LEN) != 1 ||
	    SSL_CTX_set_session_ticket_cb(ctx, on_ticket_issue, on_ticket_open, (void *)b) != 1)
		return -1;
	return 0;
}
