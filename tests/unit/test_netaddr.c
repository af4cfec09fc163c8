/* CIDR blocks are parsed once into binary; a peer matches when its first
 * LEN bits equal the block's, in the block's own address family. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/netaddr.h>

static struct sockaddr_storage
peer(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

static bool
in_blocks(const char *blocks[], size_t n, const char *ip)
{
	struct netaddr_cidrs l = {0};
	struct sockaddr_storage ss = peer(ip);
	bool r;

	for (size_t i = 0; i < n; i++) {
		struct netaddr_cidr c;
		assert_int_equal(netaddr_parse_cidr(blocks[i], &c), 0);
		assert_int_equal(netaddr_cidrs_add(&l, &c), 0);
	}
	r = netaddr_cidr_match(&l, (struct sockaddr *)&ss);
	netaddr_cidrs_free(&l);
	return r;
}

#define IN(ip, ...)                                                                                \
	in_blocks((const char *[]){__VA_ARGS__},                                                   \
	          sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *), ip)

static void
test_cidr_match_by_prefix_bits(void **state)
{
	(void)state;
	assert_true(IN("10.1.2.3", "10.0.0.0/8"));
	assert_false(IN("11.1.2.3", "10.0.0.0/8"));
	assert_true(IN("192.168.1.77", "192.168.1.64/27")); /* .64-.95 */
	assert_false(IN("192.168.1.96", "192.168.1.64/27"));
	assert_true(IN("203.0.113.9", "203.0.113.9")); /* no /LEN: the address */
	assert_false(IN("203.0.113.10", "203.0.113.9"));
	assert_true(IN("198.51.100.1", "0.0.0.0/0"));
	assert_true(IN("2001:db8::1", "2001:db8::/32"));
	assert_false(IN("2001:db9::1", "2001:db8::/32"));
	assert_true(IN("2001:db8:0:7fff::1", "2001:db8:0:4000::/50"));
	assert_false(IN("2001:db8:0:8000::1", "2001:db8:0:4000::/50"));
	assert_true(IN("::1", "10.0.0.0/8", "::1")); /* any block of the list */
}

static void
test_cidr_family_must_agree(void **state)
{
	(void)state;
	assert_false(IN("::ffff:10.0.0.1", "10.0.0.0/8"));
	assert_false(IN("10.0.0.1", "::/0"));
	assert_true(IN("::ffff:10.0.0.1", "::ffff:0:0/96"));
}

static void
test_cidr_syntax(void **state)
{
	static const char *const bad[] = {
	        "",         "/8",           "10.0.0.0/",    "10.0.0.0/33", "::/129", "10.0.0.0/8x",
	        "10.0.0/8", "host.example", "10.0.0.0/0008"};
	struct netaddr_cidr c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (netaddr_parse_cidr(bad[i], &c) == 0)
			fail_msg("accepted '%s'", bad[i]);
	assert_int_equal(netaddr_parse_cidr("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.len, 8);
	assert_int_equal(netaddr_parse_cidr("fe80::1", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.len, 128);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_cidr_match_by_prefix_bits),
	        cmocka_unit_test(test_cidr_family_must_agree),
	        cmocka_unit_test(test_cidr_syntax),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
