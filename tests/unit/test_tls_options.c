/* The TLS settings no client in this environment can show end to end: this
 * Debian's OpenSSL has no zlib, so no client here can offer compression
 * (CRIME), and no client can ask a server for renegotiation or 0-RTT data
 * that the server does not advertise. The contexts must refuse them all the
 * same, for builds of OpenSSL that do have them. (OpenSSL 3 sets
 * NO_COMPRESSION on a new context itself: the test keeps it from being
 * cleared; renegotiation and early data are postern's own settings.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <postern/tls.h>

static char dir[] = "/tmp/postern-tls-options.XXXXXX";
static char cert_path[64], key_path[64];

/* A throwaway self-signed P-256 pair on disk, as a service would name it. */
static int
make_pair(void **state)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	assert_non_null(pkey);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, pkey);
	assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
	assert_non_null(f = fopen(cert_path, "w"));
	assert_true(PEM_write_X509(f, x));
	fclose(f);
	assert_non_null(f = fopen(key_path, "w"));
	assert_true(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pkey);
	tls_init();
	return 0;
}

static int
remove_pair(void **state)
{
	(void)state;
	unlink(cert_path);
	unlink(key_path);
	rmdir(dir);
	return 0;
}

static void
test_server_refuses_compression_renegotiation_and_early_data(void **state)
{
	char *certs[1] = {cert_path}, *keys[1] = {key_path};
	int lines[1] = {1};
	struct tls_server_conf c = {.name = "imaps",
	                            .alpn = "imap",
	                            .cert = certs,
	                            .key = keys,
	                            .cert_line = lines,
	                            .key_line = lines,
	                            .n = 1,
	                            .line = 1,
	                            .min_version = TLS1_2_VERSION};
	char err[256];
	int bad = 0;

	(void)state;
	struct tls_server *ts = tls_server_load(&c, err, sizeof(err), &bad);
	assert_non_null(ts);
	SSL *ssl = tls_server_ssl(ts);
	assert_non_null(ssl);
	uint64_t opts = SSL_get_options(ssl);
	assert_true(opts & SSL_OP_NO_COMPRESSION);
	assert_true(opts & SSL_OP_NO_RENEGOTIATION);
	assert_int_equal(SSL_get_max_early_data(ssl), 0);
	SSL_free(ssl);
	tls_server_free(ts);
}

static void
test_backend_side_refuses_compression_and_renegotiation(void **state)
{
	char err[256];

	(void)state;
	SSL_CTX *ctx = tls_client_load(false, NULL, err, sizeof(err));
	assert_non_null(ctx);
	uint64_t opts = SSL_CTX_get_options(ctx);
	assert_true(opts & SSL_OP_NO_COMPRESSION);
	assert_true(opts & SSL_OP_NO_RENEGOTIATION);
	tls_client_free(ctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_server_refuses_compression_renegotiation_and_early_data),
	        cmocka_unit_test(test_backend_side_refuses_compression_and_renegotiation),
	};
	return cmocka_run_group_tests(tests, make_pair, remove_pair);
}
