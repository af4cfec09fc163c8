/* The verdict loop's own rules, the ones no adapter decides: a TLS record
 * before STARTTLS is refused, and a full output buffer stops judging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/filter.h>
#include <postern/proto.h>

struct rig {
	void *st;
	struct buf out[2], reply;
	struct filter f;
	char scratch[PROTO_SCRATCH_ALLOC];
};

static struct rig *
rig_new(const struct proto_ops *ops, bool starttls)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct proto_conf conf = {.starttls = starttls, .require_tls = true};
	struct filter_result res;

	assert_non_null(r);
	r->st = calloc(1, ops->state_size);
	assert_non_null(r->st);
	ops->init(r->st, &conf);
	for (int d = 0; d < 2; d++)
		buf_init(&r->out[d], FILTER_OUT_MAX);
	buf_init(&r->reply, FILTER_OUT_MAX);
	r->f = (struct filter){.proto = ops,
	                       .state = r->st,
	                       .out = {&r->out[0], &r->out[1]},
	                       .reply = &r->reply,
	                       .check_first_byte = starttls,
	                       .scratch = r->scratch};
	/* The server's greeting first: a client's command waits for it. */
	filter_input(&r->f, PROTO_FROM_SERVER, "* OK hi\r\n", 9, 65538, false, &res);
	assert_int_equal(res.consumed, 9);
	buf_free(&r->out[1]);
	return r;
}

static void
rig_free(struct rig *r)
{
	for (int d = 0; d < 2; d++)
		buf_free(&r->out[d]);
	buf_free(&r->reply);
	free(r->st);
	free(r);
}

static void
test_tls_record_before_starttls_is_refused(void **state)
{
	static const char hello[] = "\x16\x03\x01\x00\x05hello";
	struct rig *r = rig_new(&proto_imap, true);
	struct filter_result res;

	(void)state;
	filter_input(&r->f, PROTO_FROM_CLIENT, hello, sizeof(hello) - 1, 65538, false, &res);
	assert_int_equal(res.stop, FILTER_TLS_HELLO);
	assert_int_equal(res.consumed, 0);
	assert_int_equal(buf_len(&r->out[0]), 0);
	rig_free(r);
}

static void
test_only_the_first_client_byte_is_checked(void **state)
{
	static const char line[] = "a NOOP\r\n";
	struct rig *r = rig_new(&proto_imap, true);
	struct filter_result res;

	(void)state;
	filter_input(&r->f, PROTO_FROM_CLIENT, line, sizeof(line) - 1, 65538, false, &res);
	assert_int_equal(res.stop, FILTER_IDLE);
	assert_int_equal(res.consumed, sizeof(line) - 1);
	assert_false(r->f.check_first_byte);
	filter_input(&r->f, PROTO_FROM_CLIENT, "\x16\r\n", 3, 65538, false, &res);
	assert_int_not_equal(res.stop, FILTER_TLS_HELLO);
	rig_free(r);
}

/* Refused commands fill the buffer towards the client: judging stops
 * there, and resumes once it has drained. */
static void
test_full_reply_buffer_stops_judging(void **state)
{
	enum { LINES = 4000 };
	static const char line[] = "a LOGIN u p\r\n";
	size_t n = LINES * (sizeof(line) - 1), taken = 0;
	char *in = malloc(n);
	struct rig *r = rig_new(&proto_imap, true);
	struct filter_result res;

	(void)state;
	assert_non_null(in);
	for (size_t i = 0; i < LINES; i++)
		memcpy(in + i * (sizeof(line) - 1), line, sizeof(line) - 1);
	filter_input(&r->f, PROTO_FROM_CLIENT, in, n, n + 1, false, &res);
	assert_int_equal(res.stop, FILTER_IDLE);
	assert_true(res.consumed > 0 && res.consumed < n);
	assert_true(buf_len(&r->reply) >= FILTER_OUT_MAX);
	assert_int_equal(buf_len(&r->out[0]), 0); /* nothing reached the server */
	while (taken + res.consumed < n && res.consumed > 0) {
		taken += res.consumed;
		buf_free(&r->reply);
		filter_input(&r->f, PROTO_FROM_CLIENT, in + taken, n - taken, n + 1, false, &res);
	}
	assert_int_equal(taken + res.consumed, n);
	free(in);
	rig_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_tls_record_before_starttls_is_refused),
	        cmocka_unit_test(test_only_the_first_client_byte_is_checked),
	        cmocka_unit_test(test_full_reply_buffer_stops_judging),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
