/* The relay buffer: lazy storage, compaction, lines, release when idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <postern/buf.h>

static void
test_lazy_allocation(void **state)
{
	struct buf b;
	size_t room;

	(void)state;
	buf_init(&b, 64);
	assert_null(b.data);
	assert_int_equal(buf_len(&b), 0);
	assert_non_null(buf_tail(&b, &room));
	assert_int_equal(room, 64);
	buf_release_if_empty(&b);
	assert_null(b.data);
	buf_free(&b);
}

static void
test_append_consume(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_true(buf_append(&b, "abcdef", 6));
	assert_false(buf_append(&b, "xyz", 3)); /* 9 > 8: refused, nothing written */
	assert_int_equal(buf_len(&b), 6);
	buf_consume(&b, 4);
	assert_memory_equal(buf_head(&b), "ef", 2);
	/* The tail is short (2 bytes) but compaction makes room for 6. */
	assert_true(buf_append(&b, "ghijkl", 6));
	assert_int_equal(buf_len(&b), 8);
	assert_memory_equal(buf_head(&b), "efghijkl", 8);
	buf_release_if_empty(&b);
	assert_non_null(b.data); /* not empty: kept */
	buf_consume(&b, 8);
	assert_int_equal(b.start, 0); /* empty resets to the front */
	buf_free(&b);
}

static void
test_full_buffer_has_no_tail(void **state)
{
	struct buf b;
	size_t room = 99;

	(void)state;
	buf_init(&b, 4);
	assert_true(buf_append(&b, "1234", 4));
	assert_null(buf_tail(&b, &room));
	assert_int_equal(room, 0);
	buf_free(&b);
}

static void
test_line_len(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(buf_line_len(&b), 0); /* no storage yet */
	assert_true(buf_append(&b, "a1 NOOP", 7));
	assert_int_equal(buf_line_len(&b), 0);
	assert_true(buf_append(&b, "\r\nb2", 4));
	assert_int_equal(buf_line_len(&b), 9);
	buf_consume(&b, 9);
	assert_int_equal(buf_line_len(&b), 0);
	buf_free(&b);
}

static void
test_secret_bytes_wiped_as_consumed(void **state)
{
	struct buf b;
	const char *at;

	(void)state;
	buf_init(&b, 64);
	assert_true(buf_append(&b, "a1 AUTHENTICATE XOAUTH2 c2VjcmV0\r\n", 34));
	b.secret = true;
	at = buf_head(&b);
	buf_consume(&b, 24);
	assert_memory_equal(at, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24);
	assert_memory_equal(buf_head(&b), "c2VjcmV0\r\n", 10);
	/* more comes, then all of it leaves */
	assert_true(buf_append_grow(&b, "x", 1));
	buf_consume(&b, 11);
	assert_false(b.secret); /* empty: what comes next is no secret */
	assert_int_equal(buf_len(&b), 0);
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_secret_bytes_wiped_as_consumed),
	        cmocka_unit_test(test_lazy_allocation),
	        cmocka_unit_test(test_append_consume),
	        cmocka_unit_test(test_full_buffer_has_no_tail),
	        cmocka_unit_test(test_line_len),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
