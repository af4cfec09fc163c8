/* The SNI name index: which names find which entry, and that a lookup
 * among 100 000 names inspects as few slots as among ten. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <postern/sni_index.h>

static int A, B, C, D;

static void *
find(struct sni_index *ix, const char *name)
{
	return sni_index_find(ix, name, strlen(name));
}

static int
add(struct sni_index *ix, const char *name, void *v)
{
	return sni_index_add(ix, name, strlen(name), v);
}

static void
test_exact_and_wildcard(void **state)
{
	struct sni_index *ix = sni_index_new();

	(void)state;
	assert_int_equal(add(ix, "mail.example.test", &A), 0);
	assert_int_equal(add(ix, "*.example.test", &B), 0);
	assert_int_equal(add(ix, "*.other.test", &C), 0);
	assert_ptr_equal(find(ix, "mail.example.test"), &A); /* exact beats wildcard */
	assert_ptr_equal(find(ix, "x.example.test"), &B);
	assert_ptr_equal(find(ix, "x.other.test"), &C);
	/* one whole label: not two, not none */
	assert_null(find(ix, "a.b.example.test"));
	assert_null(find(ix, "example.test"));
	assert_null(find(ix, "unknown.test"));
	/* a client's "*" is a byte, not a wildcard */
	assert_null(find(ix, "*.example.test"));
	assert_int_equal(sni_index_count(ix), 3);
	sni_index_free(ix);
}

static void
test_case_dot_and_alabels(void **state)
{
	struct sni_index *ix = sni_index_new();

	(void)state;
	assert_int_equal(add(ix, "Mail.Example.TEST.", &A), 0);
	assert_int_equal(add(ix, "xn--bcher-kva.example.test", &B), 0);
	assert_ptr_equal(find(ix, "mail.example.test"), &A);
	assert_ptr_equal(find(ix, "MAIL.EXAMPLE.test."), &A);
	assert_ptr_equal(find(ix, "XN--BCHER-KVA.example.test"), &B);
	/* U-labels are not names here: clients send the A-label */
	assert_null(find(ix, "b\xc3\xbc"
	                     "cher.example.test"));
	/* the first entry for a name stays */
	assert_int_equal(add(ix, "mail.example.test", &C), 1);
	assert_ptr_equal(find(ix, "mail.example.test"), &A);
	sni_index_free(ix);
}

static void
test_not_names(void **state)
{
	struct sni_index *ix = sni_index_new();
	char longname[300], label64[80];

	(void)state;
	assert_int_equal(add(ix, "", &A), -1);
	assert_int_equal(add(ix, ".", &A), -1);
	assert_int_equal(add(ix, "a..b", &A), -1);
	assert_int_equal(add(ix, ".a.b", &A), -1);
	assert_int_equal(add(ix, "a b.test", &A), -1);
	assert_int_equal(add(ix, "f*.example.test", &A), -1); /* partial wildcard */
	assert_int_equal(add(ix, "a.*.example.test", &A), -1);
	assert_int_equal(add(ix, "*.com", &A), -1);
	assert_int_equal(add(ix, "*", &A), -1);
	assert_int_equal(sni_index_add(ix, "a\0b.test", 8, &A), -1);
	/* 254 bytes: one too many (253 is the longest name) */
	memset(longname, 'a', sizeof(longname));
	for (int i = 63; i < 254; i += 64)
		longname[i] = '.';
	assert_int_equal(sni_index_add(ix, longname, 254, &A), -1);
	assert_int_equal(sni_index_add(ix, longname, 253, &A), 0);
	assert_ptr_equal(sni_index_find(ix, longname, 253), &A);
	assert_null(sni_index_find(ix, longname, 254));
	memset(label64, 'b', 64);
	memcpy(label64 + 64, ".test", 6);
	assert_int_equal(add(ix, label64, &A), -1);
	assert_null(find(ix, ""));
	assert_null(find(ix, "."));
	sni_index_free(ix);
}

/* Average slots inspected per lookup, for N entries: hits of every
 * entry, then as many unknown names (exact miss and wildcard miss). */
static void
probes_per_lookup(size_t n, double *hit, double *miss)
{
	struct sni_index *ix = sni_index_new();
	char name[64];
	unsigned long long p0;

	assert_non_null(ix);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "mail.customer%zu.example", i);
		assert_int_equal(add(ix, name, &D), 0);
	}
	p0 = sni_index_probes(ix);
	assert_true(p0 == 0); /* loading is not counted */
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "mail.customer%zu.example", i);
		assert_ptr_equal(find(ix, name), &D);
	}
	*hit = (double)(sni_index_probes(ix) - p0) / (double)n;
	p0 = sni_index_probes(ix);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "mail.stranger%zu.example", i);
		assert_null(find(ix, name));
	}
	*miss = (double)(sni_index_probes(ix) - p0) / (double)n;
	sni_index_free(ix);
}

static void
test_lookup_cost_is_independent_of_size(void **state)
{
	double hit10, miss10, hit, miss;

	(void)state;
	probes_per_lookup(10, &hit10, &miss10);
	probes_per_lookup(100000, &hit, &miss);
	/* A table at most half full: ~1.5 slots per hit, ~2.5 per miss
	 * (linear probing), whatever the size. A walk would be ~50 000. */
	assert_true(hit <= 2.0);
	assert_true(miss <= 3.5);
	assert_true(hit <= hit10 + 1.0);
	assert_true(miss <= miss10 + 2.0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_exact_and_wildcard),
	        cmocka_unit_test(test_case_dot_and_alabels),
	        cmocka_unit_test(test_not_names),
	        cmocka_unit_test(test_lookup_cost_is_independent_of_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
