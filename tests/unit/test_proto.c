/* Adapters' canned replies must be well-formed for their protocol: a client
 * that gets a malformed line may hang instead of reporting the failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proto.h>

static void
assert_one_crlf_line(const char *s)
{
	size_t n = strlen(s);

	assert_true(n >= 3);
	assert_string_equal(s + n - 2, "\r\n");
	assert_null(memchr(s, '\n', n - 1)); /* exactly one line */
	assert_null(memchr(s, '\r', n - 2));
}

static void
check_replies(const struct proto_ops *p, const char *prefix)
{
	for (int i = 0; i < PROTO_REPLY_COUNT; i++) {
		assert_non_null(p->reply[i]);
		assert_one_crlf_line(p->reply[i]);
		assert_int_equal(strncmp(p->reply[i], prefix, strlen(prefix)), 0);
	}
}

static void
test_imap(void **state)
{
	(void)state;
	check_replies(proto_get(PROTO_IMAP), "* BYE ");
	assert_string_equal(proto_get(PROTO_IMAP)->alpn, "imap");
}

static void
test_pop3(void **state)
{
	(void)state;
	check_replies(proto_get(PROTO_POP3), "-ERR ");
	assert_string_equal(proto_get(PROTO_POP3)->alpn, "pop3");
}

static void
test_smtp(void **state)
{
	(void)state;
	/* 421 is the only code that tells an SMTP client the channel closes. */
	check_replies(proto_get(PROTO_SMTP), "421 ");
	assert_string_equal(proto_get(PROTO_SMTP)->alpn, "smtp");
}

static void
test_raw(void **state)
{
	(void)state;
	const struct proto_ops *p = proto_get(PROTO_RAW);
	assert_string_equal(p->name, "raw");
	assert_null(p->alpn);
	for (int i = 0; i < PROTO_REPLY_COUNT; i++)
		assert_null(p->reply[i]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_imap),
	        cmocka_unit_test(test_pop3),
	        cmocka_unit_test(test_smtp),
	        cmocka_unit_test(test_raw),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
