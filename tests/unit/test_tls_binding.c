/* The session binding of a service changes with everything that gates
 * access to it, and only with that: the same settings and file contents
 * under other paths (another machine of a fleet) bind alike. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/config.h>
#include <postern/tls_binding.h>

static char dir[] = "/tmp/test_tls_binding.XXXXXX";
static char paths[4][64];

/* Files A, B (other contents), A2 (A's contents elsewhere) and CA. */
static int
setup(void **state)
{
	static const char *const names[4] = {"a.pem", "b.pem", "a2.pem", "ca.pem"};
	static const char *const text[4] = {"certificate A\n", "certificate B\n", "certificate A\n",
	                                    "client CA\n"};

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	for (int i = 0; i < 4; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, names[i]);
		FILE *f = fopen(paths[i], "w");
		if (f == NULL || fputs(text[i], f) < 0 || fclose(f) != 0)
			return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 4; i++)
		unlink(paths[i]);
	rmdir(dir);
	return 0;
}

struct fixture {
	struct service svc;
	char *cert[1];
	int line[1];
};

static void
base(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->svc.name = "imaps";
	f->svc.line = 1;
	f->svc.tls = TLSMODE_IMPLICIT;
	f->svc.tls_min_version = 0x0303;
	f->cert[0] = paths[0];
	f->line[0] = 5;
	f->svc.cert.v = f->cert;
	f->svc.cert.line = f->line;
	f->svc.cert.n = 1;
}

/* The binding of the service as the configuration describes it to tls.c. */
static int
compute(const struct service *svc, struct tls_binding *b, char *err, size_t errlen, int *line)
{
	struct tls_server_conf c;

	config_tls_conf(svc, &c);
	return tls_binding_compute(&c, b, err, errlen, line);
}

static struct tls_binding
binding_of(struct fixture *f)
{
	struct tls_binding b;
	char err[256];
	int line = 0;

	assert_int_equal(compute(&f->svc, &b, err, sizeof(err), &line), 0);
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
	f.cert[0] = paths[2]; /* the same contents elsewhere */
	b = binding_of(&f);
	assert_memory_equal(ref.id, b.id, TLS_BINDING_LEN);

	for (int change = 0; change < 7; change++) {
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
			f.cert[0] = paths[1];
			break;
		case 6:
			f.svc.client_verify = CLIENT_VERIFY_OPTIONAL;
			f.svc.client_ca = paths[3];
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
	f.svc.client_ca = paths[3];
	f.svc.client_verify = CLIENT_VERIFY_OPTIONAL;
	optional = binding_of(&f);
	assert_false(optional.need_peer);
	f.svc.client_verify = CLIENT_VERIFY_REQUIRE;
	required = binding_of(&f);
	assert_true(required.need_peer);
	assert_memory_not_equal(optional.id, required.id, TLS_BINDING_LEN);
	f.svc.client_ca = paths[1]; /* another CA file: other contents */
	other_ca = binding_of(&f);
	assert_memory_not_equal(required.id, other_ca.id, TLS_BINDING_LEN);
}

static void
test_unreadable_file_names_its_line(void **state)
{
	struct fixture f;
	struct tls_binding b;
	char err[256];
	int line = 0;

	(void)state;
	base(&f);
	f.cert[0] = "/nonexistent/cert.pem";
	assert_int_equal(compute(&f.svc, &b, err, sizeof(err), &line), -1);
	assert_int_equal(line, 5);
	assert_non_null(strstr(err, "/nonexistent/cert.pem"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_binding_follows_what_gates_access),
	        cmocka_unit_test(test_client_certificates_bind),
	        cmocka_unit_test(test_unreadable_file_names_its_line),
	};
	return cmocka_run_group_tests_name("tls_binding", tests, setup, teardown);
}
