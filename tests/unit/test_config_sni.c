/* The keys of hosting many certificates: cert_dir stands in for cert/key,
 * needs TLS, and a directory that cannot be read is an error at its line;
 * strict_sni is a boolean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/config.h>

#define HEAD                                                                                       \
	"[imaps]\n"                                                                                \
	"protocol = imap\n"                                                                        \
	"listen = 127.0.0.1:993\n"                                                                 \
	"backend = 127.0.0.1:143\n"

/* What loading TEXT as "t.ini" reports; *CFG gets the config (or NULL). */
static char *
load(const char *text, bool load_tls, struct config **cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	*cfg = config_load_string("t.ini", text, load_tls, f);
	fclose(f);
	return buf;
}

static void
test_cert_dir_alone_is_enough(void **state)
{
	struct config *cfg;
	char *errs = load(HEAD "cert_dir = /a /b\ncert_dir = /c\nstrict_sni = yes\n", false, &cfg);

	(void)state;
	assert_string_equal(errs, "");
	assert_non_null(cfg);
	assert_int_equal(cfg->services[0].cert_dir.n, 3);
	assert_string_equal(cfg->services[0].cert_dir.v[2], "/c");
	assert_int_equal(cfg->services[0].cert_dir.line[2], 6);
	assert_true(cfg->services[0].strict_sni);
	config_unref(cfg);
	free(errs);
}

static void
test_cert_dir_needs_tls_and_a_key_for_each_cert(void **state)
{
	struct config *cfg;
	char *errs;

	(void)state;
	errs = load(HEAD "tls = off\ncert_dir = /a\n", false, &cfg);
	assert_null(cfg);
	assert_string_equal(errs, "t.ini:6: cert/key given but tls = off\n");
	free(errs);
	errs = load(HEAD "cert_dir = /a\ncert = /c.pem\n", false, &cfg);
	assert_null(cfg);
	assert_string_equal(errs,
	                    "t.ini:1: [imaps]: missing required key 'key' (needed for tls)\n");
	free(errs);
	errs = load(HEAD "cert_dir = /a\nstrict_sni = maybe\n", false, &cfg);
	assert_null(cfg);
	assert_non_null(strstr(errs, "t.ini:6: "));
	free(errs);
}

static void
test_unreadable_cert_dir_is_an_error_at_its_line(void **state)
{
	struct config *cfg;
	char *errs = load(HEAD "\ncert_dir = /nonexistent-postern-dir\n", true, &cfg);

	(void)state;
	assert_null(cfg);
	assert_string_equal(errs,
	                    "t.ini:6: cert_dir /nonexistent-postern-dir: cannot read: No such "
	                    "file or directory\n");
	free(errs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_cert_dir_alone_is_enough),
	        cmocka_unit_test(test_cert_dir_needs_tls_and_a_key_for_each_cert),
	        cmocka_unit_test(test_unreadable_cert_dir_is_an_error_at_its_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
