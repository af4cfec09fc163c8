/* The SMTP client role with xclient = yes: XCLIENT goes out only when the
 * EHLO reply offers it, the server's new greeting is the client's, a
 * refusal fails closed, and without the offer the session goes on with a
 * note for the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proto.h>

static _Alignas(max_align_t) char up[1024];
static char scratch[PROTO_SCRATCH_ALLOC];
static struct proto_action act;

static void
start(bool starttls)
{
	assert_true(proto_smtp.up_state_size <= sizeof(up));
	memset(&act, 0, sizeof(act));
	proto_smtp.up_start(up, "gw.example", &act, scratch);
	proto_smtp.up_xclient(up, "ADDR=IPV6:2001:db8::7 PORT=4711", starttls);
}

/* The server's reply: what postern does next (and ACT says with what). */
static enum proto_up
server(const char *reply)
{
	memset(&act, 0, sizeof(act));
	enum proto_up r = PU_UP_MORE;
	size_t at = 0, n = strlen(reply);

	while (at < n) {
		r = proto_smtp.upstream(up, reply + at, n - at, false, &act, scratch);
		if (r != PU_UP_SEND || act.len > 0)
			return r;
		at += act.consume;
	}
	return r;
}

static void
expect_text(const char *want)
{
	assert_int_equal(act.len, strlen(want));
	assert_memory_equal(act.text, want, act.len);
}

static void
test_offered_xclient_is_sent_and_its_greeting_passed_on(void **state)
{
	(void)state;
	start(false);
	assert_int_equal(server("220 mx ESMTP\r\n"), PU_UP_SEND);
	expect_text("EHLO gw.example\r\n");
	assert_int_equal(server("250-mx\r\n250-XCLIENT ADDR PORT NAME HELO\r\n250 8BITMIME\r\n"),
	                 PU_UP_SEND);
	expect_text("XCLIENT ADDR=IPV6:2001:db8::7 PORT=4711\r\n");
	assert_int_equal(server("220 mx ESMTP again\r\n"), PU_UP_DONE);
	expect_text("220 mx ESMTP again\r\n");
	assert_null(act.event);
}

static void
test_refused_xclient_fails_closed(void **state)
{
	(void)state;
	start(false);
	server("220 mx ESMTP\r\n");
	server("250-mx\r\n250 XCLIENT ADDR\r\n");
	assert_int_equal(server("550 5.7.0 insufficient authorization\r\n"), PU_UP_FAIL);
}

static void
test_without_offer_the_session_goes_on_with_a_note(void **state)
{
	(void)state;
	start(false);
	server("220 mx ESMTP\r\n");
	assert_int_equal(server("250-mx\r\n250 XFORWARD NAME ADDR\r\n"), PU_UP_DONE);
	expect_text("220 gw.example ESMTP ready\r\n");
	assert_string_equal(act.event, "xclient-not-offered");
}

/* With STARTTLS the offer that counts is the one inside TLS. */
static void
test_after_starttls_only_the_offer_inside_tls_counts(void **state)
{
	(void)state;
	start(true);
	server("220 mx ESMTP\r\n");
	assert_int_equal(server("250-mx\r\n250-XCLIENT ADDR\r\n250 STARTTLS\r\n"), PU_UP_SEND);
	expect_text("STARTTLS\r\n");
	assert_int_equal(server("220 go ahead\r\n"), PU_UP_TLS);
	proto_smtp.up_tls_done(up, &act, scratch);
	expect_text("EHLO gw.example\r\n");
	assert_int_equal(server("250-mx\r\n250 8BITMIME\r\n"), PU_UP_DONE);
	assert_string_equal(act.event, "xclient-not-offered");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_offered_xclient_is_sent_and_its_greeting_passed_on),
	        cmocka_unit_test(test_refused_xclient_fails_closed),
	        cmocka_unit_test(test_without_offer_the_session_goes_on_with_a_note),
	        cmocka_unit_test(test_after_starttls_only_the_offer_inside_tls_counts),
	};
	return cmocka_run_group_tests_name("smtp_xclient", tests, NULL, NULL);
}
