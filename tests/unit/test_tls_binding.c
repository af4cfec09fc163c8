/* The session binding of a service changes with everything that gates
 * access to it, and only with that: the same settings and certificates
 * from other files (another machine of a fleet, or a certificate moved
 * between cert and cert_dir) bind alike, and a reload that changes the
 * certificates a cert_dir serves changes the binding. */
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
#include <postern/config.h>
#include <postern/tls.h>
#include <postern/tls_binding.h>

#include "shell.h"

static char dir[] = "/tmp/test_tls_binding.XXXXXX";
static char ca[2][256];

/* Two client CA files (only their contents are digested), and two real
 * certificate pairs for the same name, one.pem/key and two.pem/key. */
static int
setup(void **state)
{
	static const char *const text[2] = {"client CA\n", "another client CA\n"};

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	for (int i = 0; i < 2; i++) {
		snprintf(ca[i], sizeof(ca[i]), "%s/ca%d.pem", dir, i);
		FILE *f = fopen(ca[i], "w");
		if (f == NULL || fputs(text[i], f) < 0 || fclose(f) != 0)
			return -1;
	}
	for (int i = 0; i < 2; i++)
		if (sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
		       "-nodes "
		       "-days 30 -subj /CN=site.test -keyout %s.key -out %s.pem >/dev/null 2>&1",
		       dir, i ? "two" : "one", i ? "two" : "one"))
			return -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	return sh("rm -rf %s", dir);
}

/* Digests of two served certificates, as struct cert_pair holds them. */
static const unsigned char cert_a[CERT_DIGEST_LEN] = {'A'}, cert_b[CERT_DIGEST_LEN] = {'B'};

struct fixture {
	struct service svc;
	const unsigned char *served[2];
	size_t nserved;
};

static void
base(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->svc.name = "imaps";
	f->svc.line = 1;
	f->svc.tls = TLSMODE_IMPLICIT;
	f->svc.tls_min_version = 0x0303;
	f->served[0] = cert_a;
	f->nserved = 1;
}

/* The binding of the service as the configuration describes it to tls.c. */
static int
compute(const struct fixture *f, struct tls_binding *b, char *err, size_t errlen, int *line)
{
	struct tls_server_conf c;

	config_tls_conf(&f->svc, &c);
	return tls_binding_compute(&c, f->served, f->nserved, b, err, errlen, line);
}

static struct tls_binding
binding_of(struct fixture *f)
{
	struct tls_binding b;
	char err[256];
	int line = 0;

	assert_int_equal(compute(f, &b, err, sizeof(err), &line), 0);
	return b;
}

static void
test_binding_follows_what_gates_access(void **state)
{
	struct fixture f;
	struct tls_binding ref, b;

	(void)state;
	base(&f);
	ref = binding_of(&f);
	assert_false(ref.need_peer);

	b = binding_of(&f); /* deterministic */
	assert_memory_equal(ref.id, b.id, TLS_BINDING_LEN);

	for (int change = 0; change < 9; change++) {
		base(&f);
		switch (change) {
		case 0:
			f.svc.name = "imaps2";
			break;
		case 1:
			f.svc.tls = TLSMODE_STARTTLS;
			break;
		case 2:
			f.svc.tls_min_version = 0x0304;
			break;
		case 3:
			f.svc.ciphers = "ECDHE+AESGCM";
			break;
		case 4:
			f.svc.ciphersuites = "TLS_AES_256_GCM_SHA384";
			break;
		case 5:
			f.served[0] = cert_b;
			break;
		case 6:
			f.svc.client_verify = CLIENT_VERIFY_OPTIONAL;
			f.svc.client_ca = ca[0];
			break;
		case 7: /* one more certificate */
			f.served[1] = cert_b;
			f.nserved = 2;
			break;
		case 8: /* none */
			f.nserved = 0;
			break;
		}
		b = binding_of(&f);
		if (memcmp(ref.id, b.id, TLS_BINDING_LEN) == 0)
			fail_msg("change %d leaves the binding as it was", change);
	}
}

static void
test_client_certificates_bind(void **state)
{
	struct fixture f;
	struct tls_binding optional, required, other_ca;

	(void)state;
	base(&f);
	f.svc.client_ca = ca[0];
	f.svc.client_verify = CLIENT_VERIFY_OPTIONAL;
	optional = binding_of(&f);
	assert_false(optional.need_peer);
	f.svc.client_verify = CLIENT_VERIFY_REQUIRE;
	required = binding_of(&f);
	assert_true(required.need_peer);
	assert_memory_not_equal(optional.id, required.id, TLS_BINDING_LEN);
	f.svc.client_ca = ca[1]; /* another CA file: other contents */
	other_ca = binding_of(&f);
	assert_memory_not_equal(required.id, other_ca.id, TLS_BINDING_LEN);
}

static void
test_unreadable_client_ca_names_its_line(void **state)
{
	struct fixture f;
	struct tls_binding b;
	char err[256];
	int line = 0;

	(void)state;
	base(&f);
	f.svc.client_verify = CLIENT_VERIFY_REQUIRE;
	f.svc.client_ca = "/nonexistent/ca.pem";
	assert_int_equal(compute(&f, &b, err, sizeof(err), &line), -1);
	assert_int_equal(line, 1);
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
}

/* The binding of a service built by tls.c from the certificate pair
 * CERT/KEY (NULL: none) and the directory DIR (NULL: none). */
static struct tls_binding
served_binding(const char *cert, const char *key, const char *cdir)
{
	char *certs[1] = {(char *)cert}, *keys[1] = {(char *)key}, *dirs[1] = {(char *)cdir};
	int lines[1] = {2}, bad = 0;
	struct tls_server_conf c = {
	        .name = "imaps",
	        .line = 1,
	        .min_version = 0x0303,
	        .cert = certs,
	        .key = keys,
	        .cert_line = lines,
	        .key_line = lines,
	        .n = cert != NULL,
	        .dir = dirs,
	        .dir_line = lines,
	        .ndir = cdir != NULL,
	};
	char err[256];
	struct tls_server *ts = tls_server_load(&c, err, sizeof(err), &bad);
	struct tls_binding b;

	if (ts == NULL)
		fail_msg("cannot load: %s", err);
	b = *tls_server_binding(ts);
	tls_server_free(ts);
	return b;
}

static void
test_cert_dir_certificates_bind(void **state)
{
	char one[300], one_key[300], d1[300], d2[300];
	struct tls_binding listed, first, copy, replaced, added, junk;

	(void)state;
	snprintf(one, sizeof(one), "%s/one.pem", dir);
	snprintf(one_key, sizeof(one_key), "%s/one.key", dir);
	snprintf(d1, sizeof(d1), "%s/d1", dir);
	snprintf(d2, sizeof(d2), "%s/d2", dir);
	assert_int_equal(sh("cd %s && mkdir d1 d2 && cp one.pem d1/site.pem && cp one.key "
	                    "d1/site.key && cat one.pem one.key > d2/other-name.pem",
	                    dir),
	                 0);
	listed = served_binding(one, one_key, NULL);
	first = served_binding(NULL, NULL, d1);
	/* the same certificate binds alike from cert or from cert_dir, from
	 * a combined file or with its key beside it */
	assert_memory_equal(listed.id, first.id, TLS_BINDING_LEN);
	copy = served_binding(NULL, NULL, d2);
	assert_memory_equal(first.id, copy.id, TLS_BINDING_LEN);

	/* replaced as certbot and cp+mv do: another certificate, another binding */
	assert_int_equal(sh("cd %s && cp two.pem d1/.new && mv d1/.new d1/site.pem && cp two.key "
	                    "d1/.new && mv d1/.new d1/site.key",
	                    dir),
	                 0);
	replaced = served_binding(NULL, NULL, d1);
	if (memcmp(first.id, replaced.id, TLS_BINDING_LEN) == 0)
		fail_msg("replacing a cert_dir certificate leaves the binding as it was");

	assert_int_equal(sh("cd %s && cat one.pem one.key > d1/more.pem", dir), 0);
	added = served_binding(NULL, NULL, d1);
	if (memcmp(replaced.id, added.id, TLS_BINDING_LEN) == 0)
		fail_msg("one more cert_dir certificate leaves the binding as it was");

	/* a file skipped (no certificate) serves nothing: no change */
	assert_int_equal(sh("cd %s && echo junk > d1/junk.pem", dir), 0);
	junk = served_binding(NULL, NULL, d1);
	assert_memory_equal(added.id, junk.id, TLS_BINDING_LEN);
	cert_store_sweep();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_binding_follows_what_gates_access),
	        cmocka_unit_test(test_client_certificates_bind),
	        cmocka_unit_test(test_unreadable_client_ca_names_its_line),
	        cmocka_unit_test(test_cert_dir_certificates_bind),
	};
	return cmocka_run_group_tests_name("tls_binding", tests, setup, teardown);
}
