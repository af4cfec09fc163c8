/* Certificate pairs from files: names taken as SNI sees them, a file not
 * changed is not read again (a reload among many re-reads only what
 * changed), identical intermediates held once, each fault on its file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/cert_store.h>

#include "shell.h"

static char dir[] = "/tmp/test_cert_store.XXXXXX";

static void
path(char *buf, const char *name)
{
	snprintf(buf, 256, "%s/%s", dir, name);
}

/* NAME.pem and NAME.key: ECDSA P-256, self-signed, SUBJ, with EXT (or none). */
static int
make_pair(const char *name, const char *subj_ext)
{
	return sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	          "-days 30 -keyout %s.key -out %s.pem %s >/dev/null 2>&1",
	          dir, name, name, subj_ext);
}

static int
setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	if (make_pair("a", "-subj /CN=cn-a.test -addext subjectAltName=DNS:A.test,DNS:*.b.test") ||
	    make_pair("b", "-subj /CN=cn-b.test -addext subjectAltName=DNS:b.test") ||
	    make_pair("nosan", "-subj /CN=Only-CN.test") ||
	    make_pair("x", "-subj /CN=intermediate"))
		return -1;
	/* Combined files: leaf, the same "intermediate", key. */
	if (sh("cd %s && cat a.pem x.pem a.key > ca.pem && cat b.pem x.pem b.key > cb.pem", dir))
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	return sh("rm -rf %s", dir);
}

static void
test_names_from_sans_else_the_cn(void **state)
{
	char c[256], k[256], why[256];
	int kf;
	struct cert_pair *p;

	(void)state;
	path(c, "a.pem");
	path(k, "a.key");
	assert_non_null(p = cert_pair_load(c, k, why, sizeof(why), &kf));
	assert_int_equal(p->nnames, 2);
	assert_string_equal(p->names[0], "a.test");
	assert_string_equal(p->names[1], "*.b.test");
	cert_pair_unref(p);
	path(c, "nosan.pem");
	path(k, "nosan.key");
	assert_non_null(p = cert_pair_load(c, k, why, sizeof(why), &kf));
	assert_int_equal(p->nnames, 1);
	assert_string_equal(p->names[0], "only-cn.test");
	cert_pair_unref(p);
	cert_store_sweep();
}

static void
test_unchanged_files_are_not_read_again(void **state)
{
	char c[256], why[256];
	int kf;
	struct cert_pair *p1, *p2, *p3;

	(void)state;
	path(c, "cb.pem");
	assert_non_null(p1 = cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_non_null(p2 = cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_ptr_equal(p1, p2); /* from the cache */
	/* replaced (a new inode, as certbot and cp+mv do): read again */
	assert_int_equal(sh("cd %s && cp ca.pem new.pem && mv new.pem cb.pem", dir), 0);
	assert_non_null(p3 = cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_ptr_not_equal(p3, p1);
	assert_string_equal(p3->names[0], "a.test");
	assert_string_equal(p1->names[0], "b.test"); /* a holder keeps its pair */
	cert_pair_unref(p1);
	cert_pair_unref(p2);
	cert_pair_unref(p3);
	cert_store_sweep();
	assert_int_equal(sh("cd %s && cat b.pem x.pem b.key > new.pem && mv new.pem cb.pem", dir),
	                 0);
}

static void
test_identical_intermediates_are_held_once(void **state)
{
	char c[256], why[256];
	int kf;
	struct cert_pair *a, *b;

	(void)state;
	path(c, "ca.pem");
	assert_non_null(a = cert_pair_load(c, NULL, why, sizeof(why), &kf));
	path(c, "cb.pem");
	assert_non_null(b = cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_int_equal(sk_X509_num(a->chain), 1);
	assert_int_equal(sk_X509_num(b->chain), 1);
	assert_ptr_equal(sk_X509_value(a->chain, 0), sk_X509_value(b->chain, 0));
	cert_pair_unref(a);
	cert_pair_unref(b);
	cert_store_sweep();
}

static void
test_each_fault_names_its_file(void **state)
{
	char c[256], k[256], why[256];
	int kf = -1;

	(void)state;
	path(c, "a.pem");
	path(k, "b.key");
	assert_null(cert_pair_load(c, k, why, sizeof(why), &kf));
	assert_int_equal(kf, 1);
	assert_string_equal(why, "the private key does not match the certificate");
	path(k, "missing.key");
	assert_null(cert_pair_load(c, k, why, sizeof(why), &kf));
	assert_int_equal(kf, 1);
	path(c, "a.key"); /* a key, no certificate */
	assert_null(cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_int_equal(kf, 0);
	assert_string_equal(why, "no certificate in the file");
	path(c, "a.pem"); /* a certificate, no key */
	assert_null(cert_pair_load(c, NULL, why, sizeof(why), &kf));
	assert_int_equal(kf, 1);
	assert_string_equal(why, "no private key in the file");
}

struct seen {
	char text[2048];
};

static int
note(void *arg, const char *cert, const char *key)
{
	struct seen *s = arg;
	size_t n = strlen(s->text);

	snprintf(s->text + n, sizeof(s->text) - n, "%s+%s ", strrchr(cert, '/') + 1,
	         key ? strrchr(key, '/') + 1 : "-");
	return 0;
}

static void
test_dir_pairs_in_name_order(void **state)
{
	struct seen s = {""};
	char why[256];

	(void)state;
	assert_int_equal(sh("touch %s/.hidden.pem %s/readme.txt", dir, dir), 0);
	assert_int_equal(cert_dir_each(dir, note, &s, why, sizeof(why)), 0);
	assert_string_equal(s.text, "a.pem+a.key b.pem+b.key ca.pem+- cb.pem+- nosan.pem+nosan.key "
	                            "x.pem+x.key ");
	assert_int_equal(cert_dir_each("/nonexistent-dir", note, &s, why, sizeof(why)), -1);
}

/* A walk remembers the last listing of its directory (to skip sorting it
 * again): files added, removed or renamed since are still seen. */
static void
test_dir_walk_sees_what_changed_since_the_last(void **state)
{
	struct seen s = {""};
	char why[256], sub[256];

	(void)state;
	assert_int_equal(
	        sh("mkdir %s/w && cd %s/w && cp ../ca.pem m.pem && cp ../a.pem k.pem", dir, dir),
	        0);
	snprintf(sub, sizeof(sub), "%s/w", dir);
	assert_int_equal(cert_dir_each(sub, note, &s, why, sizeof(why)), 0);
	assert_string_equal(s.text, "k.pem+- m.pem+- ");
	s.text[0] = '\0';
	assert_int_equal(cert_dir_each(sub, note, &s, why, sizeof(why)), 0); /* the same */
	assert_string_equal(s.text, "k.pem+- m.pem+- ");
	assert_int_equal(
	        sh("cd %s && cp ../a.key k.key && cp ../ca.pem a.pem && mv m.pem z.pem", sub), 0);
	s.text[0] = '\0';
	assert_int_equal(cert_dir_each(sub, note, &s, why, sizeof(why)), 0);
	assert_string_equal(s.text, "a.pem+- k.pem+k.key z.pem+- ");
	assert_int_equal(sh("cd %s && rm a.pem k.key", sub), 0);
	s.text[0] = '\0';
	assert_int_equal(cert_dir_each(sub, note, &s, why, sizeof(why)), 0);
	assert_string_equal(s.text, "k.pem+- z.pem+- ");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_names_from_sans_else_the_cn),
	        cmocka_unit_test(test_unchanged_files_are_not_read_again),
	        cmocka_unit_test(test_identical_intermediates_are_held_once),
	        cmocka_unit_test(test_each_fault_names_its_file),
	        cmocka_unit_test(test_dir_pairs_in_name_order),
	        cmocka_unit_test(test_dir_walk_sees_what_changed_since_the_last),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
