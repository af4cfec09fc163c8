/* The IMAP tokenizer: where a literal starts, what a strict server refuses,
 * and that a line fed in pieces is judged as the whole line is. A literal
 * postern sees where the server sees none (or the reverse) would let bytes
 * one of them takes for data run as commands in the other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/imap_token.h>

/* Parses LINE (without EOL) as a new client command. */
static struct imap_cmd
parse(const char *line)
{
	static char buf[512];
	struct imap_scan sc;
	struct imap_cmd c;
	size_t n = strlen(line);

	assert_true(n + 2 < sizeof(buf));
	memcpy(buf, line, n);
	memcpy(buf + n, "\r\n", 2);
	imap_cmd_parse(&c, &sc, buf, n + 2, false);
	return c;
}

static void
test_literal_only_where_an_argument_starts(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		uint64_t size;
		bool sync;
	} lits[] = {
	        {"a APPEND INBOX {29}", 29, true},
	        {"a APPEND INBOX {29+}", 29, false},
	        {"a APPEND INBOX (\\Seen) \"1-Jan-2020 00:00:00 +0000\" {0}", 0, true},
	        {"a LOGIN {4+}", 4, false},
	        {"a ID ({3}", 3, true},
	        {"a APPEND INBOX ~{12}", 12, true},
	        {"a X (a ({5+}", 5, false},
	        {"a FETCH 1 BODY[HEADER.FIELDS ({4}", 4, true},
	        {"a X {4294967295}", 4294967295u, true},
	};
	/* Finding 1: each of these ends in "{N}" but is no literal. */
	static const char *const none[] = {
	        "a NOOP x{29+}",    "a NOOP \"x{29+}",  "a NOOP (x{29+}",    "a ID (\"a\" x{5+}",
	        "a CAPABILITY{5+}", "a FOO \"x\"{5}",   "a X BODY[{5}",      "a NOOP x{29+} ",
	        "a X {5}x",         "a X {}",           "a X {+}",           "a X {5++}",
	        "a X ~{5+",         "a X {4294967296}", "a X {00000000001}", "a NOOP  {5+}",
	        "a NOOP\t{5+}",     "a X \"a\\\" {5}",
	};

	for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		struct imap_cmd c = parse(lits[i].line);
		if (c.err || !c.lit || c.lsize != lits[i].size || c.sync != lits[i].sync)
			fail_msg("\"%s\": err=%s lit=%d size=%llu sync=%d", lits[i].line,
			         c.err ? c.err : "-", c.lit, (unsigned long long)c.lsize, c.sync);
		const char *m = strrchr(lits[i].line, '{');
		if (m > lits[i].line && m[-1] == '~')
			m--;
		assert_int_equal(c.lit_at, (size_t)(m - lits[i].line));
	}
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		struct imap_cmd c = parse(none[i]);
		if (c.lit || c.err == NULL)
			fail_msg("\"%s\": lit=%d err=%s", none[i], c.lit, c.err ? c.err : "-");
	}
}

/* Finding 3: IMAP's grammar is SP only, exactly one. */
static void
test_white_space_is_one_sp(void **state)
{
	(void)state;
	static const char *const bad[] = {
	        "a LOGIN\tuser pass", "a  LOGIN user pass",  " a LOGIN user pass",
	        "a LOGIN user  pass", "a ID ( \"a\" \"b\")", "a ID (\"a\" \"b\" )",
	        "a LOGIN user\tpass",
	};
	static const char *const good[] = {
	        "a LOGIN user pass",
	        "a NOOP",
	        "a ID NIL",
	        "a ID (\"name\" \"x\" \"version\" NIL)",
	        "a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)",
	        "a STORE 1 +FLAGS.SILENT (\\Seen \\Deleted)",
	        "a LIST \"\" %",
	        "a SEARCH CHARSET UTF-8 SUBJECT \"caf\xc3\xa9\"",
	        "a.1 UID FETCH 1,3:5 (UID)",
	        "a NOOP ",
	        "a LOGIN user pass   ", /* trailing spaces: Dovecot skips them */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i]).err == NULL)
			fail_msg("\"%s\" parsed", bad[i]);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct imap_cmd c = parse(good[i]);
		if (c.err)
			fail_msg("\"%s\": %s", good[i], c.err);
	}
	struct imap_cmd c = parse("a LOGIN\tuser pass");
	assert_int_equal(c.verb.n, 5); /* the verb is read, the line is not */
	c = parse("\ta NOOP");
	assert_true(c.bad_tag);
}

static void
test_tags_and_verbs(void **state)
{
	(void)state;
	static const char *const bad_tags[] = {"* NOOP",    "+ NOOP", "a+ NOOP", "a\"b NOOP",
	                                       "a{1} NOOP", "",       "(a NOOP"};
	for (size_t i = 0; i < sizeof(bad_tags) / sizeof(bad_tags[0]); i++)
		if (!parse(bad_tags[i]).bad_tag)
			fail_msg("\"%s\": tag accepted", bad_tags[i]);

	struct imap_cmd c = parse("a1] login x y");
	assert_false(c.bad_tag);
	assert_int_equal(c.tag.n, 3);
	assert_int_equal(c.verb.n, 5);
	assert_memory_equal(c.args, "x y", 3);

	c = parse("a L{OGIN x y");
	assert_false(c.bad_tag);
	assert_non_null(c.err);
	c = parse("a");
	assert_non_null(c.err);
}

/* Quoted strings: only \" and \\ are escapes (Dovecot would unescape
 * "x-originat\ing-ip" into a forwarding key: finding 4). */
static void
test_quoted_strings(void **state)
{
	(void)state;
	char v[32];
	const char *q;
	struct imap_cmd c = parse("a ID (\"x-originat\\ing-ip\" \"1.2.3.4\")");

	assert_non_null(c.err);
	c = parse("a ID (\"a\\\\b\\\"c\" NIL)");
	assert_null(c.err);
	q = c.args;
	assert_int_equal(imap_next_tok(&q, c.p + c.n).kind, IT_OPEN);
	struct imap_tok t = imap_next_tok(&q, c.p + c.n);
	assert_int_equal(t.kind, IT_QUOTED);
	assert_int_equal(imap_tok_value(t, v, sizeof(v)), 5);
	assert_memory_equal(v, "a\\b\"c", 5);
	assert_int_equal(imap_tok_value(t, v, 2), (size_t)-1);
	t = imap_next_tok(&q, c.p + c.n);
	assert_int_equal(t.kind, IT_ATOM);
	assert_int_equal(imap_next_tok(&q, c.p + c.n).kind, IT_CLOSE);
	assert_int_equal(imap_next_tok(&q, c.p + c.n).kind, IT_END);

	assert_non_null(parse("a LOGIN \"user pass").err);
}

/* A command goes on after its literal: the list stays open, and the line
 * that follows starts right after the literal's bytes. */
static void
test_continuation_lines(void **state)
{
	(void)state;
	struct imap_scan sc;
	struct imap_cmd c;
	static char l1[] = "a X ({3}\r\n", l2[] = " \"b\" {2+}\r\n", l3[] = ")\r\n";
	static char l4[] = "x)\r\n";

	imap_cmd_parse(&c, &sc, l1, strlen(l1), false);
	assert_true(c.lit);
	imap_cmd_parse(&c, &sc, l2, strlen(l2), true);
	assert_null(c.err);
	assert_true(c.lit);
	assert_false(c.sync);
	assert_int_equal(c.lit_at, 5);
	imap_cmd_parse(&c, &sc, l3, strlen(l3), true);
	assert_null(c.err);
	assert_false(c.lit);

	/* After a literal an argument ended: no byte may stick to it. */
	imap_cmd_parse(&c, &sc, l1, strlen(l1), false);
	imap_cmd_parse(&c, &sc, l4, strlen(l4), true);
	assert_non_null(c.err);
	/* The list opened before the literal must be closed. */
	imap_cmd_parse(&c, &sc, l1, strlen(l1), false);
	imap_cmd_parse(&c, &sc, "\r\n", 2, true);
	assert_non_null(c.err);
}

/* Server responses are read leniently but find the same literals. */
static void
test_server_lines(void **state)
{
	(void)state;
	static const char *const lits[] = {
	        "* 1 FETCH (BODY[] {123}",
	        "* 1 FETCH (UID 5 BODY[HEADER.FIELDS (FROM)] {45}",
	        "* 1 FETCH (BINARY[1] ~{7}",
	        "* OK [ALERT] junk \"x\" \\weird ((( {5}",
	};
	static const char *const none[] = {"* OK [CAPABILITY IMAP4rev1] x{5}",
	                                   "* 1 FETCH (ENVELOPE (\"a {5}", "* BYE {5} later",
	                                   "a OK done"};

	for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		struct imap_scan sc;
		imap_scan_init(&sc, false);
		imap_scan_feed(&sc, lits[i], strlen(lits[i]));
		if (!imap_scan_end(&sc))
			fail_msg("\"%s\": no literal", lits[i]);
	}
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		struct imap_scan sc;
		imap_scan_init(&sc, false);
		imap_scan_feed(&sc, none[i], strlen(none[i]));
		if (imap_scan_end(&sc))
			fail_msg("\"%s\": literal", none[i]);
	}
}

/* Finding 7: a line fed in pieces of any size is judged as a whole. */
static void
test_pieces_agree_with_the_whole(void **state)
{
	(void)state;
	static const char *const lines[] = {
	        "* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 5 1)) BODY[] "
	        "{4096}",
	        "* 1 FETCH (BODY[] \"x {5}",
	        "a APPEND INBOX (\\Seen) ~{12+}",
	        "a X \"a\\\"b\" {99}",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		for (int strict = 0; strict < 2; strict++) {
			size_t n = strlen(lines[i]);
			struct imap_scan whole, part;
			imap_scan_init(&whole, strict);
			imap_scan_feed(&whole, lines[i], n);
			bool want = imap_scan_end(&whole);
			for (size_t step = 1; step <= 7; step++) {
				imap_scan_init(&part, strict);
				for (size_t at = 0; at < n; at += step)
					imap_scan_feed(&part, lines[i] + at,
					               at + step <= n ? step : n - at);
				assert_int_equal(imap_scan_end(&part), want);
				assert_int_equal(part.lsize, whole.lsize);
				assert_int_equal(part.mark, whole.mark);
			}
		}
	}
}

/* The head of a line too long to hold: only a whole "tag SP verb SP". */
static void
test_long_line_head(void **state)
{
	(void)state;
	struct pu_word tag, verb;

	assert_int_equal(imap_cmd_head("a APPEND x", 10, &tag, &verb), 9);
	assert_int_equal(tag.n, 1);
	assert_int_equal(verb.n, 6);
	assert_int_equal(imap_cmd_head("\r", 1, &tag, &verb), 0);
	assert_int_equal(imap_cmd_head("aaaa", 4, &tag, &verb), 0);
	assert_int_equal(imap_cmd_head("a APPEND", 8, &tag, &verb), 0);
	assert_int_equal(imap_cmd_head(" a X y", 6, &tag, &verb), 0);
	assert_int_equal(imap_cmd_head("a X\ty", 5, &tag, &verb), 0);
}

/* "(\S[ein) {12+}": the ")" ends the list and the "[" inside it, as for
 * Dovecot, so the literal is one; without a literal the "]" is missing. */
static void
test_paren_closes_bracket_left_open(void **state)
{
	(void)state;
	struct imap_cmd c = parse("b APPEND INBOX (\\S[ein) {12+}");

	assert_null(c.err);
	assert_true(c.lit);
	assert_false(c.sync);
	assert_int_equal(c.lsize, 12);
	c = parse("b APPEND INBOX (\\S[ein) x");
	assert_non_null(c.err);
	c = parse("b X (a[b) c]");
	assert_null(c.err);
	assert_false(c.lit);
	c = parse("b X a[b)");
	assert_non_null(c.err);
}

/* A command name is an atom: "[" and "]" may be in it, and an unknown
 * command's literal is one for a server that reads its arguments. */
static void
test_bracket_in_command_name(void **state)
{
	(void)state;
	struct imap_cmd c = parse("paa [OGIN {3+}");

	assert_null(c.err);
	assert_true(c.lit);
	assert_int_equal(c.verb.n, 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_literal_only_where_an_argument_starts),
	        cmocka_unit_test(test_white_space_is_one_sp),
	        cmocka_unit_test(test_tags_and_verbs),
	        cmocka_unit_test(test_quoted_strings),
	        cmocka_unit_test(test_continuation_lines),
	        cmocka_unit_test(test_server_lines),
	        cmocka_unit_test(test_pieces_agree_with_the_whole),
	        cmocka_unit_test(test_long_line_head),
	        cmocka_unit_test(test_paren_closes_bracket_left_open),
	        cmocka_unit_test(test_bracket_in_command_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
