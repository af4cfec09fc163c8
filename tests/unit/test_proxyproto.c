/* PROXY protocol header bytes against the spec, and the parser's verdicts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proxyproto.h>

static struct sockaddr_storage
v4(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &in->sin_addr);
	return ss;
}

static struct sockaddr_storage
v6(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	in->sin6_family = AF_INET6;
	in->sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, ip, &in->sin6_addr);
	return ss;
}

static void
test_v1_tcp4(void **state)
{
	struct sockaddr_storage a = v4("192.0.2.7", 51234), b = v4("198.51.100.1", 993);
	char out[PROXYPROTO_MAX];
	size_t n;

	(void)state;
	n = proxyproto_build(1, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, out,
	                     sizeof(out));
	assert_int_equal(n, strlen("PROXY TCP4 192.0.2.7 198.51.100.1 51234 993\r\n"));
	assert_memory_equal(out, "PROXY TCP4 192.0.2.7 198.51.100.1 51234 993\r\n", n);
}

static void
test_v1_tcp6(void **state)
{
	struct sockaddr_storage a = v6("2001:db8::1", 5), b = v6("::1", 143);
	char out[PROXYPROTO_MAX];
	size_t n;

	(void)state;
	n = proxyproto_build(1, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, out,
	                     sizeof(out));
	assert_memory_equal(out, "PROXY TCP6 2001:db8::1 ::1 5 143\r\n", n);
}

static void
test_v2_tcp4_bytes(void **state)
{
	struct sockaddr_storage a = v4("10.1.2.3", 0x1234), b = v4("10.9.8.7", 993);
	unsigned char out[PROXYPROTO_MAX];
	static const unsigned char want[28] = {
	        '\r', '\n', '\r', '\n', 0,  '\r', '\n', 'Q', 'U',  'I',  'T',  '\n', /* signature */
	        0x21, 0x11, 0x00, 0x0c, /* PROXY, TCP4, 12 */
	        10,   1,    2,    3,    10, 9,    8,    7,   0x12, 0x34, 0x03, 0xe1};
	size_t n;

	(void)state;
	n = proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, (char *)out,
	                     sizeof(out));
	assert_int_equal(n, 28);
	assert_memory_equal(out, want, 28);
}

/* A TLS client: the SSL TLV (client flags, verify, version and cipher
 * sub-TLVs) then the SNI as PP2_TYPE_AUTHORITY, byte for byte. */
static void
test_v2_tls_tlvs_bytes(void **state)
{
	struct sockaddr_storage a = v4("10.1.2.3", 0x1234), b = v4("10.9.8.7", 993);
	struct proxyproto_tls tls = {.version = "TLSv1.3",
	                             .cipher = "TLS_AES_256_GCM_SHA384",
	                             .authority = "mail.example.org"};
	unsigned char out[PROXYPROTO_MAX];
	static const unsigned char want[] = {'\r', '\n', '\r', '\n', 0,   '\r', '\n', 'Q', 'U',
	                                     'I',  'T',  '\n',     /* signature */
	                                     0x21, 0x11, 0x00, 74, /* PROXY, TCP4, 12 + 43 + 19 */
	                                     10,   1,    2,    3,    10,  9,    8,    7,   0x12,
	                                     0x34, 0x03, 0xe1,       /* addresses, ports */
	                                     0x20, 0x00, 40,         /* PP2_TYPE_SSL */
	                                     0x01,                   /* PP2_CLIENT_SSL */
	                                     0x00, 0x00, 0x00, 0x01, /* verify: no certificate */
	                                     0x21, 0x00, 7,    'T',  'L', 'S',  'v',  '1', '.',
	                                     '3', /* SSL_VERSION */
	                                     0x23, 0x00, 22,   'T',  'L', 'S',  '_',  'A', 'E',
	                                     'S',  '_',  '2',  '5',  '6', '_',  'G',  'C', 'M',
	                                     '_',  'S',  'H',  'A',  '3', '8',  '4', /* SSL_CIPHER
	                                                                              */
	                                     0x02, 0x00, 16,   'm',  'a', 'i',  'l',  '.', 'e',
	                                     'x',  'a',  'm',  'p',  'l', 'e',  '.',  'o', 'r',
	                                     'g'}; /* PP2_TYPE_AUTHORITY */
	struct proxyproto_info info;
	size_t n;

	(void)state;
	n = proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls, (char *)out,
	                     sizeof(out));
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	/* The TLVs count in the header's length: a reader skips them whole. */
	assert_int_equal(proxyproto_parse((char *)out, n, &info), (int)n);
	/* v1 has no TLVs: the same facts change nothing. */
	assert_int_equal(proxyproto_build(1, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls,
	                                  (char *)out, sizeof(out)),
	                 strlen("PROXY TCP4 10.1.2.3 10.9.8.7 4660 993\r\n"));
}

/* A client certificate: CERT_CONN on a full handshake, CERT_SESS whenever
 * the session has one; verify is 0 only when it verified. No SNI, no
 * AUTHORITY TLV. */
static void
test_v2_tls_client_certificate_flags(void **state)
{
	struct sockaddr_storage a = v4("10.1.2.3", 1), b = v4("10.9.8.7", 2);
	struct proxyproto_tls tls = {.version = "TLSv1.2", .cipher = "X", .cert_sess = true};
	unsigned char out[PROXYPROTO_MAX];
	static const unsigned char verified_now[] = {0x20, 0x00, 19, 0x07, 0, 0, 0, 0};
	static const unsigned char failed_resumed[] = {0x20, 0x00, 19, 0x05, 0, 0, 0, 1};
	size_t n;

	(void)state;
	tls.cert_conn = tls.cert_verified = true;
	n = proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls, (char *)out,
	                     sizeof(out));
	assert_int_equal(n, 16 + 12 + 3 + 19);
	assert_memory_equal(out + 28, verified_now, sizeof(verified_now));
	tls.cert_conn = tls.cert_verified = false;
	n = proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls, (char *)out,
	                     sizeof(out));
	assert_memory_equal(out + 28, failed_resumed, sizeof(failed_resumed));
}

/* A header that cannot hold its TLVs is not sent cut short. */
static void
test_v2_tls_does_not_fit(void **state)
{
	struct sockaddr_storage a = v6("::1", 1), b = v6("::1", 2);
	struct proxyproto_tls tls = {.version = "TLSv1.3", .cipher = "TLS_AES_128_GCM_SHA256"};
	char out[PROXYPROTO_MAX];

	(void)state;
	assert_int_equal(proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls,
	                                  out, 16 + 36 + 40),
	                 0);
	assert_int_equal(proxyproto_build(2, (struct sockaddr *)&a, (struct sockaddr *)&b, &tls,
	                                  out, 16 + 36 + 43),
	                 16 + 36 + 43);
}

static void
test_round_trip(void **state)
{
	struct sockaddr_storage pairs[][2] = {{v4("127.0.0.9", 4000), v4("127.0.0.1", 143)},
	                                      {v6("::1", 1), v6("2001:db8::5", 65535)}};
	char out[PROXYPROTO_MAX];
	struct proxyproto_info info;

	(void)state;
	for (int version = 1; version <= 2; version++) {
		for (size_t i = 0; i < 2; i++) {
			size_t n = proxyproto_build(version, (struct sockaddr *)&pairs[i][0],
			                            (struct sockaddr *)&pairs[i][1], NULL, out,
			                            sizeof(out));
			assert_true(n > 0);
			memcpy(out + n, "a1 NOOP\r\n", 9); /* client bytes follow: not read */
			assert_int_equal(proxyproto_parse(out, n + 9, &info), (int)n);
			assert_false(info.local);
			size_t alen = pairs[i][0].ss_family == AF_INET
			                      ? sizeof(struct sockaddr_in)
			                      : sizeof(struct sockaddr_in6);
			assert_memory_equal(&info.src, &pairs[i][0], alen);
			assert_memory_equal(&info.dst, &pairs[i][1], alen);
			/* Every proper prefix asks for more. */
			for (size_t k = 1; k < n; k++)
				assert_int_equal(proxyproto_parse(out, k, &info), PROXYPROTO_MORE);
		}
	}
}

static void
test_local_and_unknown(void **state)
{
	static const char v2local[16] = {'\r', '\n', '\r', '\n', 0,    '\r', '\n', 'Q',
	                                 'U',  'I',  'T',  '\n', 0x20, 0x00, 0x00, 0x00};
	struct proxyproto_info info;

	(void)state;
	assert_int_equal(proxyproto_parse(v2local, 16, &info), 16);
	assert_true(info.local);
	assert_int_equal(proxyproto_parse("PROXY UNKNOWN\r\n", 15, &info), 15);
	assert_true(info.local);
}

static void
test_malformed(void **state)
{
	static const char *const bad[] = {
	        "GET / HTTP/1.1\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",       /* LF without CR */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", /* port out of range */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* leading zero */
	        "PROXY TCP4 ::1 ::1 1 2\r\n",             /* wrong family */
	        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",     /* no such protocol */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* missing field */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* extra field */
	        "a1 LOGIN alice secret\r\n",
	};
	struct proxyproto_info info;
	char longline[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(proxyproto_parse(bad[i], strlen(bad[i]), &info), PROXYPROTO_BAD);
	/* v1 is at most 107 bytes: a longer line without LF is refused. */
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "PROXY ", 6);
	assert_int_equal(proxyproto_parse(longline, sizeof(longline), &info), PROXYPROTO_BAD);
	/* v2 with version 1 in the high nibble. */
	char v2[16] = {'\r', '\n', '\r', '\n', 0,    '\r', '\n', 'Q',
	               'U',  'I',  'T',  '\n', 0x11, 0x11, 0,    12};
	assert_int_equal(proxyproto_parse(v2, 16, &info), PROXYPROTO_BAD);
	/* v2 UDP is no mail. */
	v2[12] = 0x21;
	v2[13] = 0x12;
	char full[28];
	memcpy(full, v2, 16);
	memset(full + 16, 0, 12);
	assert_int_equal(proxyproto_parse(full, 28, &info), PROXYPROTO_BAD);
	/* v2 whose length exceeds what postern accepts. */
	v2[13] = 0x11;
	v2[14] = 0x7f;
	assert_int_equal(proxyproto_parse(v2, 16, &info), PROXYPROTO_BAD);
}

/* The spec separates v1 fields by exactly one space: a run of spaces, a
 * leading or a trailing space, or a tab is a malformed header, however lax
 * a balancer's own parser may be. */
static void
test_v1_fields_one_space_apart(void **state)
{
	static const char *const bad[] = {
	        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
	        "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
	        "PROXY  UNKNOWN\r\n",
	        "PROXY UNKNOWN \r\n",
	        " PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	};
	struct proxyproto_info info;
	const char *good = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(proxyproto_parse(bad[i], strlen(bad[i]), &info), PROXYPROTO_BAD);
	assert_int_equal(proxyproto_parse(good, strlen(good), &info), (int)strlen(good));
	/* UNKNOWN may carry addresses, which the receiver ignores. */
	good = "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n";
	assert_int_equal(proxyproto_parse(good, strlen(good), &info), (int)strlen(good));
	assert_true(info.local);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_v1_tcp4),
	        cmocka_unit_test(test_v1_tcp6),
	        cmocka_unit_test(test_v2_tcp4_bytes),
	        cmocka_unit_test(test_v2_tls_tlvs_bytes),
	        cmocka_unit_test(test_v2_tls_client_certificate_flags),
	        cmocka_unit_test(test_v2_tls_does_not_fit),
	        cmocka_unit_test(test_round_trip),
	        cmocka_unit_test(test_local_and_unknown),
	        cmocka_unit_test(test_malformed),
	        cmocka_unit_test(test_v1_fields_one_space_apart),
	};
	return cmocka_run_group_tests_name("proxyproto", tests, NULL, NULL);
}
