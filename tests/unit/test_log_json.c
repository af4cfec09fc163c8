/* log_format = json: fields, numbers, escaping, and prose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/log_json.h>

static void
check(const char *who, const char *msg, const char *want)
{
	char out[1024];
	size_t n = log_json_format(out, sizeof(out), "2026-11-21T22:40:01.123Z", "info", who, msg);

	assert_int_equal(n, strlen(out));
	assert_string_equal(out, want);
}

static void
test_session_end(void **state)
{
	(void)state;
	check("imaps#a3f9 198.51.100.7:51234",
	      "end in=2310 out=20973056 duration=71.850 reason=client-closed",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"imaps\","
	      "\"session\":\"a3f9\",\"client\":\"198.51.100.7:51234\",\"event\":\"end\","
	      "\"in\":2310,\"out\":20973056,\"duration\":71.850,\"reason\":\"client-closed\"}");
}

/* Command log lines stay whole: "x=1" in a command is no field. */
static void
test_command_lines(void **state)
{
	(void)state;
	check("imaps#a3f9 198.51.100.7:51234", "C: a1 LOGIN alice ***",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"imaps\","
	      "\"session\":\"a3f9\",\"client\":\"198.51.100.7:51234\",\"event\":\"command\","
	      "\"line\":\"a1 LOGIN alice ***\"}");
	check("smtp#1 127.0.0.1:1", "S: 250 size=10 \"ok\"",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"smtp\","
	      "\"session\":\"1\",\"client\":\"127.0.0.1:1\",\"event\":\"reply\","
	      "\"line\":\"250 size=10 \\\"ok\\\"\"}");
}

static void
test_prose_and_escaping(void **state)
{
	(void)state;
	check("postern", "cannot open \"x\\y\"",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\","
	      "\"msg\":\"cannot open \\\"x\\\\y\\\"\"}");
	/* Text after the fields is kept as the message. */
	check("smtp#1 [::1]:5", "start tls=off note here",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"smtp\","
	      "\"session\":\"1\",\"client\":\"[::1]:5\",\"event\":\"start\",\"tls\":\"off\","
	      "\"msg\":\"note here\"}");
}

static void
test_not_numbers(void **state)
{
	(void)state;
	/* Leading zeros and addresses stay strings: JSON numbers must parse. */
	check("postern", "listening service=imaps addr=127.0.0.1:993 limit=007",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"event\":\"listening\","
	      "\"service\":\"imaps\",\"addr\":\"127.0.0.1:993\",\"limit\":\"007\"}");
}

/* A whole JSON object: braces at both ends and every string closed (an
 * even number of quotes not escaped by a backslash). */
static void
assert_closed_object(const char *s)
{
	size_t n = strlen(s), quotes = 0;

	assert_true(n >= 2 && s[0] == '{' && s[n - 1] == '}');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			quotes++;
	}
	assert_int_equal(quotes % 2, 0);
}

static void
test_truncation_is_safe(void **state)
{
	char out[40];

	(void)state;
	for (size_t cap = 3; cap <= sizeof(out); cap++) {
		size_t n = log_json_format(out, cap, "ts", "info", "postern",
		                           "a very \"long\" message with \\ quotes");
		assert_true(n < cap);
		assert_int_equal(strlen(out), n);
		assert_closed_object(out);
	}
}

/* Keys come from postern only: a peer's "client=" or "level=" inside a
 * value or after the fields is text, never a second key. */
static void
test_keys_only_from_postern(void **state)
{
	(void)state;
	check("imaps#a3f9 198.51.100.7:51234",
	      "start tls=TLSv1.3 sni=mail.example.com client=203.0.113.66:4444 level=error",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"imaps\","
	      "\"session\":\"a3f9\",\"client\":\"198.51.100.7:51234\",\"event\":\"start\","
	      "\"tls\":\"TLSv1.3\",\"sni\":\"mail.example.com\","
	      "\"msg\":\"client=203.0.113.66:4444 level=error\"}");
	/* A key postern never writes ends the fields; so does a repeated one. */
	check("postern", "refused reason=a x-evil=1 reason=b",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"event\":\"refused\","
	      "\"reason\":\"a\",\"msg\":\"x-evil=1 reason=b\"}");
	check("postern", "start reason=a reason=b",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"event\":\"start\","
	      "\"reason\":\"a\",\"msg\":\"reason=b\"}");
	/* service= is postern's on a process line, a peer's on a session line. */
	check("smtp#1 127.0.0.1:1", "x service=evil session=2",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"smtp\","
	      "\"session\":\"1\",\"client\":\"127.0.0.1:1\","
	      "\"msg\":\"x service=evil session=2\"}");
}

/* Invalid UTF-8, C0/C1 controls, U+0085 and U+2028/U+2029 never reach a
 * JSON string raw: the escapes of log_text.h, JSON-quoted. */
static void
test_utf8_and_line_separators_escaped(void **state)
{
	(void)state;
	check("smtp#1 127.0.0.1:1",
	      "C: a\xff b\xc2\x85"
	      "c\xe2\x80\xa8"
	      "d\xe2\x80\xa9\x01\x7f \xc3\xa9",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"service\":\"smtp\","
	      "\"session\":\"1\",\"client\":\"127.0.0.1:1\",\"event\":\"command\","
	      "\"line\":\"a\\\\xff b\\\\u0085c\\\\u2028d\\\\u2029\\\\x01\\\\x7f \xc3\xa9\"}");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_session_end),
	        cmocka_unit_test(test_command_lines),
	        cmocka_unit_test(test_prose_and_escaping),
	        cmocka_unit_test(test_not_numbers),
	        cmocka_unit_test(test_truncation_is_safe),
	        cmocka_unit_test(test_keys_only_from_postern),
	        cmocka_unit_test(test_utf8_and_line_separators_escaped),
	};
	return cmocka_run_group_tests_name("log_json", tests, NULL, NULL);
}
