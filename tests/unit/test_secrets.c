/* Redaction for the whole session: what an adapter hid (pu_log_command,
 * pu_log_sasl, pu_log_secret) is remembered and masked wherever it
 * reappears, also decoded from base64 or unquoted, also cut by the end of
 * a line; the memory is bounded and wiped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/proto_util.h>
#include <postern/secrets.h>

static struct secrets sec;

static int
reset(void **state)
{
	(void)state;
	memset(&sec, 0, sizeof(sec));
	return 0;
}

static void
expect_masked(const char *in, const char *want)
{
	char out[2048];
	size_t n = secrets_mask(&sec, in, strlen(in), out, sizeof(out));

	out[n] = '\0';
	assert_string_equal(out, want);
}

static void
add(const char *s)
{
	secrets_add(&sec, s, strlen(s));
}

/* Dovecot reads a LITERAL+ LOGIN's password as a command and echoes it. */
static void
test_echoed_password_masked(void **state)
{
	(void)state;
	add("hunter2pw");
	expect_masked("hunter2pw BAD Error in IMAP command", "*** BAD Error in IMAP command");
	expect_masked("x hunter2pwhunter2pw y", "x *** y");
	expect_masked("nothing here", "nothing here");
}

/* "\0alice\0s3cret-pw" in base64: its password alone is masked too. */
static void
test_sasl_plain_password_masked_decoded(void **state)
{
	(void)state;
	add("AGFsaWNlAHMzY3JldC1wdw==\r\n");
	expect_masked("535 5.7.8 AGFsaWNlAHMzY3JldC1wdw== rejected", "535 5.7.8 *** rejected");
	expect_masked("535 bad password s3cret-pw for alice", "535 bad password *** for alice");
}

/* A hidden text of several words: each word (but a verb) and its decoded
 * form are known. */
static void
test_words_of_hidden_text_decoded(void **state)
{
	(void)state;
	add("AUTH PLAIN AGFsaWNlAHMzY3JldC1wdw==");
	expect_masked("-ERR s3cret-pw refused", "-ERR *** refused");
	add("PASS hunter2pw");
	expect_masked("-ERR hunter2pw is wrong; PASS and PLAIN stay",
	              "-ERR *** is wrong; PASS and PLAIN stay");
}

/* XOAUTH2 "user=alice\1auth=Bearer Tok-123456\1\1": the token. */
static void
test_xoauth2_token_masked_decoded(void **state)
{
	(void)state;
	add("dXNlcj1hbGljZQFhdXRoPUJlYXJlciBUb2stMTIzNDU2AQE=");
	expect_masked("NO token Tok-123456 expired", "NO token *** expired");
}

static void
test_quoted_password_masked_unquoted(void **state)
{
	(void)state;
	add("\"pa\\\"ss word\"");
	expect_masked("* BAD pa\"ss word", "* BAD ***");
	expect_masked("a LOGIN alice \"pa\\\"ss word\"", "a LOGIN alice ***");
}

/* A line cut by the log's length limit ends inside the secret. */
static void
test_secret_cut_by_line_end_masked(void **state)
{
	(void)state;
	add("correct-horse-battery");
	expect_masked("S: correct-horse-bat", "S: ***");
	expect_masked("S: correct-horse-bat...", "S: ***...");
	expect_masked("S: cor", "S: cor"); /* too short to tell */
}

/* A secret longer than a slot is kept by its start and masked to the end
 * of the word it starts. */
static void
test_long_secret_masked_to_word_end(void **state)
{
	char big[SECRET_LEN_MAX + 200], line[SECRET_LEN_MAX + 300];

	(void)state;
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	big[0] = '!'; /* not base64 */
	add(big);
	snprintf(line, sizeof(line), "x %s y", big);
	expect_masked(line, "x *** y");
}

static void
test_short_secret_not_remembered(void **state)
{
	(void)state;
	add("abc");
	expect_masked("abc abcabc", "abc abcabc");
}

/* The memory is bounded: the oldest secret goes first. */
static void
test_bounded_oldest_forgotten(void **state)
{
	char s[32];

	(void)state;
	for (int i = 0; i < SECRETS_MAX + 1; i++) {
		snprintf(s, sizeof(s), "!secret-%02d", i);
		add(s);
	}
	expect_masked("!secret-00 !secret-01 !secret-16", "!secret-00 *** ***");
}

static void
test_wipe_forgets(void **state)
{
	(void)state;
	add("hunter2pw");
	secrets_wipe(&sec);
	for (size_t i = 0; i < sizeof(sec); i++)
		assert_int_equal(((unsigned char *)&sec)[i], 0);
	expect_masked("hunter2pw", "hunter2pw");
}

/* ------------------------------------------- the adapters' log helpers */

static char scratch[PROTO_SCRATCH_ALLOC];

static void
expect_command(const char *line, unsigned flags, const char *log, const char *secret)
{
	struct proto_action act = {0};

	pu_log_command(&act, scratch, line, strlen(line), flags);
	assert_non_null(act.log);
	assert_int_equal(act.log_len, strlen(log));
	assert_memory_equal(act.log, log, act.log_len);
	if (secret == NULL) {
		assert_null(act.secret);
		return;
	}
	assert_non_null(act.secret);
	assert_int_equal(act.secret_len, strlen(secret));
	assert_memory_equal(act.secret, secret, act.secret_len);
}

#define SASL_FLAGS (PU_SASL | PU_HIDE_AFTER_ARG)

static void
test_log_command_hides_and_records(void **state)
{
	(void)state;
	expect_command("AUTH PLAIN AGFsaWNlAHNlY3JldA==", SASL_FLAGS, "AUTH PLAIN ***",
	               "AGFsaWNlAHNlY3JldA==");
	expect_command("PASS hunter2pw", PU_HIDE_ARGS, "PASS ***", "hunter2pw");
	expect_command("APOP alice c4c9334bac560ecc979e58001b3e22fb", PU_HIDE_AFTER_ARG,
	               "APOP alice ***", "c4c9334bac560ecc979e58001b3e22fb");
	expect_command("MAIL FROM:<a@b>", 0, "MAIL FROM:<a@b>", NULL);
	expect_command("AUTH PLAIN", SASL_FLAGS, "AUTH PLAIN", NULL);
}

/* A TAB or extra space around the verb or the mechanism (Postfix and
 * aiosmtpd split on it) never shows the SASL response. */
static void
test_log_command_tab_never_shows_response(void **state)
{
	(void)state;
	expect_command("AUTH PLAIN\tAGFsaWNlAHNlY3JldA==", SASL_FLAGS, "AUTH PLAIN ***",
	               "AGFsaWNlAHNlY3JldA==");
	expect_command("AUTH  PLAIN  AGFsaWNlAHNlY3JldA==", SASL_FLAGS, "AUTH PLAIN ***",
	               "AGFsaWNlAHNlY3JldA==");
	/* Flags of the caller that split on SP only ("AUTH\tPLAIN" is no verb
	 * of its table): the verb a lax server reads is shown, the rest hidden. */
	expect_command("AUTH\tPLAIN AGFsaWNlAHNlY3JldA==", 0, "AUTH ***",
	               "PLAIN AGFsaWNlAHNlY3JldA==");
	expect_command(" PASS hunter2pw", 0, "PASS ***", "hunter2pw");
	/* A mechanism that is no mechanism name may be the response itself. */
	expect_command("AUTH AGFsaWNlAHNlY3JldA==", SASL_FLAGS, "AUTH ***", NULL);
}

static void
test_log_sasl_records_response(void **state)
{
	struct proto_action act = {0};

	(void)state;
	pu_log_sasl(&act, scratch, "dXNlcg==", 8);
	assert_int_equal(act.log_len, 3);
	assert_memory_equal(act.log, "***", 3);
	assert_int_equal(act.secret_len, 8);
	memset(&act, 0, sizeof(act));
	pu_log_sasl(&act, scratch, "*", 1);
	assert_memory_equal(act.log, "*", 1);
	assert_null(act.secret);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup(test_echoed_password_masked, reset),
	        cmocka_unit_test_setup(test_sasl_plain_password_masked_decoded, reset),
	        cmocka_unit_test_setup(test_words_of_hidden_text_decoded, reset),
	        cmocka_unit_test_setup(test_xoauth2_token_masked_decoded, reset),
	        cmocka_unit_test_setup(test_quoted_password_masked_unquoted, reset),
	        cmocka_unit_test_setup(test_secret_cut_by_line_end_masked, reset),
	        cmocka_unit_test_setup(test_long_secret_masked_to_word_end, reset),
	        cmocka_unit_test_setup(test_short_secret_not_remembered, reset),
	        cmocka_unit_test_setup(test_bounded_oldest_forgotten, reset),
	        cmocka_unit_test_setup(test_wipe_forgets, reset),
	        cmocka_unit_test(test_log_command_hides_and_records),
	        cmocka_unit_test(test_log_command_tab_never_shows_response),
	        cmocka_unit_test(test_log_sasl_records_response),
	};
	return cmocka_run_group_tests_name("secrets", tests, NULL, NULL);
}
