/* The auth line's facts: the user name of a login attempt, from a command
 * or a SASL response, and the verdict paired with the right attempt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proto.h>
#include <postern/proto_auth.h>

static struct pa_login l;

static int
reset(void **state)
{
	(void)state;
	memset(&l, 0, sizeof(l));
	return 0;
}

static struct pu_word
word(const char *s)
{
	return (struct pu_word){s, strlen(s)};
}

/* The verdict of the oldest attempt (tag T, or none): its user and result. */
static void
expect_end(const char *tag, bool ok, const char *user)
{
	struct proto_action act = {0};

	pa_end(&l, tag, tag ? strlen(tag) : 0, ok, &act);
	assert_int_equal(act.auth, ok ? PROTO_AUTH_OK : PROTO_AUTH_FAILED);
	assert_int_equal(act.auth_user_len, strlen(user));
	assert_memory_equal(act.auth_user, user, strlen(user));
}

static void
test_plain_names_the_authentication_identity(void **state)
{
	(void)state;
	/* "admin\0alice\0Zsecret": the authzid is not who logs in */
	pa_begin_sasl(&l, NULL, 0, word("plain"), "YWRtaW4AYWxpY2UAWnNlY3JldA==", 28);
	expect_end(NULL, false, "alice");
}

static void
test_plain_in_the_first_response_only(void **state)
{
	(void)state;
	pa_begin_sasl(&l, "a1", 2, word("PLAIN"), NULL, 0);
	pa_sasl_response(&l, "AGJvYgBac2VjcmV0", 16); /* "\0bob\0Zsecret" */
	pa_sasl_response(&l, "AGV2ZQBac2VjcmV0", 16); /* a second one names nobody */
	expect_end("a1", true, "bob");
}

static void
test_login_mechanism_first_response_is_the_user(void **state)
{
	(void)state;
	pa_begin_sasl(&l, NULL, 0, word("LOGIN"), NULL, 0);
	pa_sasl_response(&l, "Y2Fyb2w=", 8); /* "carol", padded */
	pa_sasl_response(&l, "WnNlY3JldA==", 12);
	expect_end(NULL, false, "carol");
}

static void
test_unknown_user_is_empty(void **state)
{
	(void)state;
	pa_begin_sasl(&l, NULL, 0, word("CRAM-MD5"), NULL, 0);
	pa_sasl_response(&l, "Ym9iIGRpZ2VzdA==", 16);
	expect_end(NULL, false, "");
	pa_begin_sasl(&l, NULL, 0, word("PLAIN"), "not base64!", 11);
	expect_end(NULL, false, "");
	pa_begin_sasl(&l, NULL, 0, word("PLAIN"), "*", 1); /* a cancel */
	expect_end(NULL, false, "");
}

static void
test_long_user_is_cut(void **state)
{
	(void)state;
	char name[100];
	struct proto_action act = {0};

	memset(name, 'u', sizeof(name));
	pa_user(&l, name, sizeof(name));
	pa_begin(&l, NULL, 0);
	pa_end(&l, NULL, 0, false, &act);
	assert_int_equal(act.auth_user_len, PA_USER_MAX);
	assert_true(act.auth_user_cut);
}

static void
test_verdicts_pair_with_their_tags(void **state)
{
	(void)state;
	struct proto_action act = {0};

	pa_user(&l, "ann", 3);
	pa_begin(&l, "a", 1);
	pa_user(&l, "ben", 3);
	pa_begin(&l, "b", 1);
	pa_end(&l, "zz", 2, true, &act); /* another command's completion */
	assert_int_equal(act.auth, PROTO_AUTH_NONE);
	expect_end("b", false, "ben");
	expect_end("a", true, "ann");
}

static void
test_queue_is_bounded(void **state)
{
	(void)state;
	for (int i = 0; i < PA_PENDING_MAX; i++) {
		assert_false(pa_full(&l));
		pa_begin(&l, NULL, 0);
	}
	assert_true(pa_full(&l));
	expect_end(NULL, true, "");
	assert_false(pa_full(&l));
}

/* ---- through the adapters: the verdicts as the session gets them ---- */

static _Alignas(max_align_t) char st[16384];
static char scratch[PROTO_SCRATCH_ALLOC];
static char seen[512]; /* "user=result;" for each verdict, in order */

/* Feeds TEXT from DIR to OPS whole, as the filter loop would, noting
 * every verdict it reports. */
static void
feed(const struct proto_ops *ops, enum proto_dir dir, const char *text)
{
	size_t at = 0, n = strlen(text);

	while (at < n) {
		struct proto_action act = {0};
		enum proto_verdict v = ops->input(st, dir, text + at, n - at, false, &act, scratch);
		assert_true(v == PV_PASS || v == PV_REPLACE); /* all relayed */
		if (act.auth) {
			size_t k = strlen(seen);
			snprintf(seen + k, sizeof(seen) - k, "%.*s=%s;", (int)act.auth_user_len,
			         act.auth_user, act.auth == PROTO_AUTH_OK ? "ok" : "failed");
		}
		at += act.consume;
	}
}

static void
start(const struct proto_ops *ops)
{
	struct proto_conf conf = {.starttls = false};

	assert_true(ops->state_size <= sizeof(st));
	ops->init(st, &conf);
	seen[0] = '\0';
}

static void
test_pop3_user_pass_apop_pipelined(void **state)
{
	(void)state;
	start(&proto_pop3);
	feed(&proto_pop3, PROTO_FROM_SERVER, "+OK ready\r\n");
	feed(&proto_pop3, PROTO_FROM_CLIENT,
	     "USER ann\r\nPASS Zs1\r\nAPOP bob 0123456789abcdef0123456789abcdef\r\n");
	feed(&proto_pop3, PROTO_FROM_SERVER, "+OK\r\n-ERR no\r\n+OK in\r\n");
	assert_string_equal(seen, "ann=failed;bob=ok;");
}

static void
test_imap_logins_pair_with_their_tags(void **state)
{
	(void)state;
	start(&proto_imap);
	feed(&proto_imap, PROTO_FROM_SERVER, "* OK ready\r\n");
	feed(&proto_imap, PROTO_FROM_CLIENT,
	     "a LOGIN ann Zs1\r\nb NOOP\r\nc LOGIN \"b b\" Zs2\r\n");
	feed(&proto_imap, PROTO_FROM_SERVER,
	     "a NO [AUTHENTICATIONFAILED] no\r\nb OK\r\nc OK in\r\n");
	assert_string_equal(seen, "ann=failed;b b=ok;");
}

/* A user name sent as a literal is read as it passes, in pieces; the
 * password literal after it is not. */
static void
test_imap_literal_user_name(void **state)
{
	(void)state;
	start(&proto_imap);
	feed(&proto_imap, PROTO_FROM_SERVER, "* OK ready\r\n");
	feed(&proto_imap, PROTO_FROM_CLIENT, "a LOGIN {5+}\r\n");
	feed(&proto_imap, PROTO_FROM_CLIENT, "al");
	feed(&proto_imap, PROTO_FROM_CLIENT, "ice {8+}\r\nZsecret3\r\n");
	feed(&proto_imap, PROTO_FROM_SERVER, "a NO no\r\n");
	assert_string_equal(seen, "alice=failed;");
}

static void
test_smtp_auth_login_user_from_its_first_response(void **state)
{
	(void)state;
	start(&proto_smtp);
	feed(&proto_smtp, PROTO_FROM_SERVER, "220 mx\r\n");
	feed(&proto_smtp, PROTO_FROM_CLIENT, "EHLO c\r\n");
	feed(&proto_smtp, PROTO_FROM_SERVER, "250-mx\r\n250 AUTH LOGIN\r\n");
	feed(&proto_smtp, PROTO_FROM_CLIENT, "AUTH LOGIN\r\n");
	feed(&proto_smtp, PROTO_FROM_SERVER, "334 VXNlcm5hbWU6\r\n");
	feed(&proto_smtp, PROTO_FROM_CLIENT, "Y2Fyb2w=\r\n");
	feed(&proto_smtp, PROTO_FROM_SERVER, "334 UGFzc3dvcmQ6\r\n");
	feed(&proto_smtp, PROTO_FROM_CLIENT, "WnNlY3JldA==\r\n");
	feed(&proto_smtp, PROTO_FROM_SERVER, "535 5.7.8 no\r\n");
	assert_string_equal(seen, "carol=failed;");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup(test_plain_names_the_authentication_identity, reset),
	        cmocka_unit_test_setup(test_plain_in_the_first_response_only, reset),
	        cmocka_unit_test_setup(test_login_mechanism_first_response_is_the_user, reset),
	        cmocka_unit_test_setup(test_unknown_user_is_empty, reset),
	        cmocka_unit_test_setup(test_long_user_is_cut, reset),
	        cmocka_unit_test_setup(test_verdicts_pair_with_their_tags, reset),
	        cmocka_unit_test_setup(test_queue_is_bounded, reset),
	        cmocka_unit_test(test_pop3_user_pass_apop_pipelined),
	        cmocka_unit_test(test_imap_logins_pair_with_their_tags),
	        cmocka_unit_test(test_imap_literal_user_name),
	        cmocka_unit_test(test_smtp_auth_login_user_from_its_first_response),
	};
	return cmocka_run_group_tests_name("proto_auth", tests, NULL, NULL);
}
