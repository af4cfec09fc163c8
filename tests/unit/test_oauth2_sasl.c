/* XOAUTH2 and OAUTHBEARER messages and the server's error challenge,
 * checked against the examples of RFC 7628 and Google's XOAUTH2 page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <postern/oauth2_sasl.h>

/* RFC 7628 4.1: IMAP with OAUTHBEARER, the client's message. */
static void
test_oauthbearer_rfc7628_example(void **state)
{
	char out[512];

	(void)state;
	assert_int_equal(oauth2_sasl_oauthbearer("user@example.com", "server.example.com", 143,
	                                         "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", out,
	                                         sizeof(out)),
	                 148);
	assert_string_equal(out,
	                    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9"
	                    "MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHR"
	                    "XVZMjl0Q2c9PQEB");
}

static void
test_oauthbearer_escapes_user_and_refuses_bad_bytes(void **state)
{
	char out[512];
	unsigned char raw[256];
	long n;

	(void)state;
	n = oauth2_sasl_oauthbearer("a,b=c", NULL, 0, "T", out, sizeof(out));
	assert_true(n > 0);
	n = oauth2_unbase64(out, (size_t)n, raw, sizeof(raw));
	assert_int_equal(n, 30);
	assert_memory_equal(raw, "n,a=a=2Cb=3Dc,\001auth=Bearer T\001\001", 30);
	assert_int_equal(oauth2_sasl_oauthbearer("u\001x", NULL, 0, "T", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_oauthbearer("u", "h,x", 1, "T", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_oauthbearer("u", NULL, 0, "T\001", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_oauthbearer("u", NULL, 0, "T", out, 8), -1);
}

/* Google's XOAUTH2 page: user=someuser@example.com^Aauth=Bearer ya29...^A^A */
static void
test_xoauth2_google_example(void **state)
{
	char out[512];

	(void)state;
	assert_true(oauth2_sasl_xoauth2("someuser@example.com",
	                                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", out,
	                                sizeof(out)) > 0);
	assert_string_equal(out,
	                    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRx"
	                    "bVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
	assert_int_equal(oauth2_sasl_xoauth2("", "T", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_xoauth2("u", "", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_xoauth2("u\r\n", "T", out, sizeof(out)), -1);
	assert_int_equal(oauth2_sasl_xoauth2("u", "a b", out, sizeof(out)), -1);
}

/* RFC 7628 4.3: the server's failure challenge. */
static void
test_error_challenge_rfc7628_example(void **state)
{
	static const char ch[] =
	        "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwi"
	        "b3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtu"
	        "b3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=";
	struct oauth2_sasl_error e;

	(void)state;
	assert_int_equal(oauth2_sasl_parse_error(ch, strlen(ch), &e), 0);
	assert_string_equal(e.status, "invalid_token");
	assert_string_equal(e.scope, "example_scope");
	assert_string_equal(e.schemes, "");
}

/* Gmail's XOAUTH2 challenge: {"status":"400","schemes":"Bearer","scope":...} */
static void
test_error_challenge_google_and_garbage(void **state)
{
	static const char ch[] =
	        "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczov"
	        "L21haWwuZ29vZ2xlLmNvbS8ifQ==";
	struct oauth2_sasl_error e;

	(void)state;
	assert_int_equal(oauth2_sasl_parse_error(ch, strlen(ch), &e), 0);
	assert_string_equal(e.status, "400");
	assert_string_equal(e.schemes, "Bearer");
	assert_string_equal(e.scope, "https://mail.google.com/");
	assert_int_equal(oauth2_sasl_parse_error("e30", 3, &e), -1);           /* no padding */
	assert_int_equal(oauth2_sasl_parse_error("e30=\r\n", 6, &e), -1);      /* CRLF */
	assert_int_equal(oauth2_sasl_parse_error("bm90IGpzb24=", 12, &e), -1); /* "not json" */
	assert_int_equal(oauth2_sasl_parse_error("e30=", 4, &e), 0);           /* "{}" */
}

static void
test_base64_both_alphabets(void **state)
{
	unsigned char raw[] = {0xfb, 0xff, 0xbf, 0x00};
	unsigned char back[8];
	char out[16];

	(void)state;
	assert_int_equal(oauth2_base64(raw, 4, out, sizeof(out), 0), 8);
	assert_string_equal(out, "+/+/AA==");
	assert_int_equal(oauth2_base64(raw, 4, out, sizeof(out), 1), 6);
	assert_string_equal(out, "-_-_AA");
	assert_int_equal(oauth2_base64(raw, 4, out, 8, 0), -1);
	assert_int_equal(oauth2_unbase64("+/+/AA==", 8, back, sizeof(back)), 4);
	assert_memory_equal(back, raw, 4);
	assert_int_equal(oauth2_unbase64("+/+/AB==", 8, back, sizeof(back)), -1); /* stray bits */
	assert_int_equal(oauth2_unbase64("+/+/AA=", 7, back, sizeof(back)), -1);
	assert_int_equal(oauth2_unbase64("+/+/AA==", 8, back, 3), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_oauthbearer_rfc7628_example),
	        cmocka_unit_test(test_oauthbearer_escapes_user_and_refuses_bad_bytes),
	        cmocka_unit_test(test_xoauth2_google_example),
	        cmocka_unit_test(test_error_challenge_rfc7628_example),
	        cmocka_unit_test(test_error_challenge_google_and_garbage),
	        cmocka_unit_test(test_base64_both_alphabets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
