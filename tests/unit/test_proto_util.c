/* The shared adapter helpers that decide what a verb is and what the log
 * may show: a server that splits on any white space must see the same verb
 * postern saw, and a log must never show what it was told to hide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proto_util.h>

static void
expect_tokens(const char *line, const char *const *want)
{
	const char *p = line, *end = line + strlen(line);

	for (; *want; want++) {
		struct pu_word w = pu_next_token(&p, end);
		assert_int_equal(w.n, strlen(*want));
		assert_memory_equal(w.p, *want, w.n);
	}
	assert_ptr_equal(p, end);
}

static void
test_token_splits_on_any_white_space(void **state)
{
	(void)state;
	expect_tokens("MAIL\tFROM:<x>", (const char *const[]){"MAIL", "FROM:<x>", NULL});
	expect_tokens(" RCPT TO:<y>", (const char *const[]){"RCPT", "TO:<y>", NULL});
	expect_tokens("DATA\t", (const char *const[]){"DATA", NULL});
	expect_tokens("AUTH \t PLAIN  abc", (const char *const[]){"AUTH", "PLAIN", "abc", NULL});
	expect_tokens("", (const char *const[]){"", NULL});
}

static char *
log_of(void (*f)(struct proto_action *, char *, struct pu_word), const char *word)
{
	static char scratch[PROTO_SCRATCH_ALLOC];
	struct proto_action act = {0};
	struct pu_word w = {word, strlen(word)};

	f(&act, scratch, w);
	return strndup(act.log, act.log_len);
}

static void
test_mechanism_names_logged_only_when_well_formed(void **state)
{
	(void)state;
	const char *good[] = {"PLAIN", "SCRAM-SHA-256", "X_OAUTH2", "12345678901234567890"};
	const char *bad[] = {"PLAIN\tAGFsaWNlAHNlY3JldA==", "AGFsaWNlAHNlY3JldA==", "",
	                     "123456789012345678901", "PL=IN"};

	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
		char *l = log_of(pu_log_mech, good[i]);
		assert_string_equal(l, good[i]);
		free(l);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		char *l = log_of(pu_log_mech, bad[i]);
		assert_string_equal(l, PU_SECRET);
		free(l);
	}
}

static void
test_secret_is_hidden_and_recorded(void **state)
{
	static char scratch[PROTO_SCRATCH_ALLOC];
	struct proto_action act = {0};
	const char line[] = "a LOGIN bob hunter2";

	(void)state;
	pu_log_begin(&act, scratch, 0);
	pu_log_put(&act, scratch, line, 12);
	pu_log_secret(&act, scratch, line + 12, 7);
	assert_int_equal(act.log_len, 15);
	assert_memory_equal(act.log, "a LOGIN bob ***", 15);
	assert_ptr_equal(act.secret, line + 12);
	assert_int_equal(act.secret_len, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_token_splits_on_any_white_space),
	        cmocka_unit_test(test_mechanism_names_logged_only_when_well_formed),
	        cmocka_unit_test(test_secret_is_hidden_and_recorded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
