/* The JSON reader for token and device endpoint answers: real answers
 * read, anything not strictly one JSON object refused, nothing longer than
 * the caller's buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <postern/oauth2_json.h>

static char access[256], refresh[256], type[32], error[64];
static struct oauth2_json_field f[5];

static int
parse(const char *text)
{
	struct oauth2_json_field init[5] = {
	        {.name = "access_token",
	         .type = OAUTH2_JSON_STRING,
	         .buf = access,
	         .cap = sizeof(access)},
	        {.name = "refresh_token",
	         .type = OAUTH2_JSON_STRING,
	         .buf = refresh,
	         .cap = sizeof(refresh)},
	        {.name = "token_type",
	         .type = OAUTH2_JSON_STRING,
	         .buf = type,
	         .cap = sizeof(type)},
	        {.name = "error", .type = OAUTH2_JSON_STRING, .buf = error, .cap = sizeof(error)},
	        {.name = "expires_in", .type = OAUTH2_JSON_INT},
	};
	memcpy(f, init, sizeof(f));
	return oauth2_json_extract(text, strlen(text), f, 5);
}

/* Microsoft identity platform v2.0 token answer, shape as documented. */
static void
test_token_answer_read(void **state)
{
	(void)state;
	assert_int_equal(
	        parse("{\"token_type\":\"Bearer\",\"scope\":\"https://outlook.office.com/"
	              "IMAP.AccessAsUser.All\",\"expires_in\":3599,\"ext_expires_in\":3599,"
	              "\"access_token\":\"eyJ0eXAi.x-y_z\",\"refresh_token\":\"M.C1_BL2."
	              "0.U\"}"),
	        0);
	assert_string_equal(access, "eyJ0eXAi.x-y_z");
	assert_int_equal(f[0].len, 14);
	assert_string_equal(refresh, "M.C1_BL2.0.U");
	assert_string_equal(type, "Bearer");
	assert_true(f[4].found);
	assert_int_equal(f[4].num, 3599);
	assert_false(f[3].found);
}

/* Errors carry arrays and nested values that must be skipped. */
static void
test_error_answer_with_arrays_read(void **state)
{
	(void)state;
	assert_int_equal(
	        parse(" {\"error\": \"invalid_grant\", \"error_description\": \"AADSTS70000:"
	              " \\\"revoked\\\"\\r\\n\", \"error_codes\": [70000, 1.5e3, -2],"
	              " \"x\": {\"a\": [true, false, null, {}]}, \"timestamp\": "
	              "\"2026-12-03 04:00:00Z\"}\n"),
	        0);
	assert_string_equal(error, "invalid_grant");
	assert_false(f[0].found);
}

static void
test_escapes_decoded(void **state)
{
	(void)state;
	assert_int_equal(parse("{\"access_token\":\"a\\/b\\u00e9\\ud83d\\ude00\\\\\\\"\"}"), 0);
	assert_string_equal(access, "a/b\xc3\xa9\xf0\x9f\x98\x80\\\"");
	/* Azure v1 quotes expires_in */
	assert_int_equal(parse("{\"expires_in\":\"3600\"}"), 0);
	assert_int_equal(f[4].num, 3600);
}

static void
test_not_strict_json_refused(void **state)
{
	static const char *bad[] = {
	        "",
	        "[]",
	        "\"x\"",
	        "{",
	        "{\"access_token\":\"abc\"",
	        "{\"access_token\":\"abc}",
	        "{\"access_token\":\"abc\",}",
	        "{\"access_token\":'abc'}",
	        "{access_token:\"abc\"}",
	        "{\"a\":1}{\"b\":2}",
	        "{\"a\":1} x",
	        "{\"a\":01}",
	        "{\"a\":1.}",
	        "{\"a\":-}",
	        "{\"a\":tru}",
	        "{\"a\":\"\\x\"}",
	        "{\"a\":\"\\u12\"}",
	        "{\"a\":\"\\ud800\"}",
	        "{\"a\":\"\\udc00\"}",
	        "{\"a\":\"\\u0000\"}",
	        "{\"a\":\"tab\there\"}",
	        "{\"a\" 1}",
	        "{\"a\":[1,]}",
	        "{\"a\":[1 2]}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i]) != -1)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_int_equal(parse("{}"), 0);
	assert_int_equal(parse("{\"a\":\"tab\\there\", \"b\": -0.5E+3}"), 0);
}

static void
test_wrong_types_repeats_and_overflow_refused(void **state)
{
	char big[600];

	(void)state;
	assert_int_equal(parse("{\"access_token\":42}"), -1);
	assert_int_equal(parse("{\"expires_in\":\"soon\"}"), -1);
	assert_int_equal(parse("{\"expires_in\":-1}"), -1);
	assert_int_equal(parse("{\"expires_in\":1.5}"), -1);
	assert_int_equal(parse("{\"expires_in\":99999999999}"), -1);
	assert_int_equal(parse("{\"expires_in\":2147483647}"), 0);
	/* which of two tokens counts is ambiguous: neither */
	assert_int_equal(parse("{\"access_token\":\"a\",\"access_token\":\"b\"}"), -1);
	/* a value that does not fit its buffer is an error, not cut short */
	snprintf(big, sizeof(big), "{\"token_type\":\"%0*d\"}", 32, 0);
	assert_int_equal(parse(big), -1);
	snprintf(big, sizeof(big), "{\"token_type\":\"%0*d\"}", 31, 0);
	assert_int_equal(parse(big), 0);
	assert_int_equal(f[2].len, 31);
}

static void
test_depth_bounded(void **state)
{
	char deep[200];
	size_t n = 0;

	(void)state;
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"a\":");
	for (int i = 0; i < OAUTH2_JSON_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i < OAUTH2_JSON_DEPTH; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = '\0';
	assert_int_equal(parse(deep), -1);
	/* one level less is fine */
	memmove(deep + 5, deep + 6, n - 5);
	memmove(deep + 5 + OAUTH2_JSON_DEPTH - 1, deep + 5 + OAUTH2_JSON_DEPTH, n);
	assert_int_equal(parse(deep), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_token_answer_read),
	        cmocka_unit_test(test_error_answer_with_arrays_read),
	        cmocka_unit_test(test_escapes_decoded),
	        cmocka_unit_test(test_not_strict_json_refused),
	        cmocka_unit_test(test_wrong_types_repeats_and_overflow_refused),
	        cmocka_unit_test(test_depth_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
