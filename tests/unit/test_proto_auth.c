/* The auth line's facts: the user name of a login attempt, from a command
 * or a SASL response, and the verdict paired with the right attempt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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
	};
	return cmocka_run_group_tests_name("proto_auth", tests, NULL, NULL);
}
