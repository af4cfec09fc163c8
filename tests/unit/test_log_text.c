/* The one escape form of every log output, and the host names SNI may
 * show in the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <postern/log_text.h>

static void
expect_escaped(const char *in, size_t n, unsigned flags, const char *want)
{
	char out[256];
	size_t m = log_text_escape(out, sizeof(out), in, n, flags);

	assert_int_equal(m, strlen(out));
	assert_string_equal(out, want);
	/* Escaping escaped text changes nothing. */
	assert_true(log_text_is_safe(out, m, flags));
}

static void
test_controls_and_invalid_bytes_become_hex(void **state)
{
	(void)state;
	expect_escaped("a\0b\r\n\t\x1b[2J\x7f", 11, 0, "a\\x00b\\x0d\\x0a\\x09\\x1b[2J\\x7f");
	/* Not UTF-8: a lone continuation byte, an overlong '/', a surrogate,
	 * a code point above U+10FFFF, a sequence cut by the end. */
	expect_escaped("\x80 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82", 16, 0,
	               "\\x80 \\xc0\\xaf \\xed\\xa0\\x80 \\xf4\\x90\\x80\\x80 \\xe2\\x82");
}

static void
test_line_separators_and_c1_become_code_points(void **state)
{
	(void)state;
	/* NEL, LS, PS and a bidi override end or reorder lines for some readers. */
	expect_escaped("a\xc2\x85"
	               "b\xe2\x80\xa8"
	               "c\xe2\x80\xa9"
	               "d\xe2\x80\xae"
	               "e\xc2\x9b",
	               18, 0, "a\\u0085b\\u2028c\\u2029d\\u202ee\\u009b");
}

static void
test_valid_utf8_and_backslash_kept(void **state)
{
	(void)state;
	const char *t = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 a\\b \"q\"";
	expect_escaped(t, strlen(t), 0, t);
}

static void
test_space_escaped_for_values(void **state)
{
	(void)state;
	expect_escaped("a b=c", 5, LOG_ESC_SPACE, "a\\x20b=c");
	assert_false(log_text_is_safe("a b", 3, LOG_ESC_SPACE));
	assert_true(log_text_is_safe("a b", 3, 0));
}

/* A cut never splits an escape or a character, and the result stays
 * NUL-terminated within the buffer. */
static void
test_cut_between_units(void **state)
{
	char out[8];

	(void)state;
	assert_int_equal(log_text_escape(out, 7, "ab\x01xyz", 6, 0), 6);
	assert_string_equal(out, "ab\\x01");
	assert_int_equal(log_text_escape(out, 4, "a\xc3\xa9z", 4, 0), 3);
	assert_string_equal(out, "a\xc3\xa9");
	assert_int_equal(log_text_escape(out, 3, "a\xc3\xa9z", 4, 0), 1);
	assert_string_equal(out, "a");
	assert_int_equal(log_text_escape(out, 1, "abc", 3, 0), 0);
	assert_string_equal(out, "");
}

static void
test_hostnames(void **state)
{
	char long_label[80], long_name[300];

	(void)state;
	assert_true(log_hostname_valid("mail.example.com"));
	assert_true(log_hostname_valid("localhost"));
	assert_true(log_hostname_valid("xn--bcher-kva.example"));
	assert_true(log_hostname_valid("a-1.B2"));
	assert_false(log_hostname_valid(""));
	assert_false(log_hostname_valid("mail.example.com client=203.0.113.66:4444 level=error"));
	assert_false(log_hostname_valid("mail.example.com\tx"));
	assert_false(log_hostname_valid("a..b"));
	assert_false(log_hostname_valid(".a"));
	assert_false(log_hostname_valid("a."));
	assert_false(log_hostname_valid("-a.b"));
	assert_false(log_hostname_valid("a-.b"));
	assert_false(log_hostname_valid("a_b.c"));
	assert_false(log_hostname_valid("caf\xc3\xa9.example"));
	assert_false(log_hostname_valid("a\xe2\x80\xa8"
	                                "b"));
	memset(long_label, 'a', 64);
	long_label[64] = '\0';
	assert_false(log_hostname_valid(long_label));
	long_label[63] = '\0';
	assert_true(log_hostname_valid(long_label));
	for (int i = 0; i < 4; i++) /* 4 x 63 + 3 dots = 255 */
		snprintf(long_name + i * 64, sizeof(long_name) - (size_t)i * 64, "%s%s", long_label,
		         i < 3 ? "." : "");
	assert_false(log_hostname_valid(long_name));
	long_name[253] = '\0'; /* 3 x 63 + 3 dots + 61 */
	assert_true(log_hostname_valid(long_name));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_controls_and_invalid_bytes_become_hex),
	        cmocka_unit_test(test_line_separators_and_c1_become_code_points),
	        cmocka_unit_test(test_valid_utf8_and_backslash_kept),
	        cmocka_unit_test(test_space_escaped_for_values),
	        cmocka_unit_test(test_cut_between_units),
	        cmocka_unit_test(test_hostnames),
	};
	return cmocka_run_group_tests_name("log_text", tests, NULL, NULL);
}
