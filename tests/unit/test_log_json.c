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
	check("postern", "listening service=imaps addr=127.0.0.1:993 id=007",
	      "{\"ts\":\"2026-11-21T22:40:01.123Z\",\"level\":\"info\",\"event\":\"listening\","
	      "\"service\":\"imaps\",\"addr\":\"127.0.0.1:993\",\"id\":\"007\"}");
}

static void
test_truncation_is_safe(void **state)
{
	char out[40];

	(void)state;
	size_t n =
	        log_json_format(out, sizeof(out), "ts", "info", "postern", "a very long message");
	assert_true(n < sizeof(out));
	assert_int_equal(strlen(out), n);
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
	};
	return cmocka_run_group_tests_name("log_json", tests, NULL, NULL);
}
