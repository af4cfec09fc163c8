/* resolver.c: answers come back on the loop, are cached for the age asked,
 * and a cancelled query never calls back. localhost is answered by
 * /etc/hosts, so no network is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <netinet/in.h>

#include <postern/resolver.h>

struct answer {
	int calls;
	struct resolver_addrs *addrs;
	char error[200];
};

static void
on_answer(void *arg, struct resolver_addrs *addrs, const char *error)
{
	struct answer *a = arg;

	a->calls++;
	a->addrs = addrs;
	if (error)
		snprintf(a->error, sizeof(a->error), "%s", error);
}

static void
on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* Runs LOOP until A is answered or 10 s pass. */
static void
wait_answer(struct ev_loop *loop, struct answer *a)
{
	ev_timer t;

	ev_timer_init(&t, on_deadline, 0.01, 0.01);
	ev_timer_start(loop, &t);
	for (int i = 0; i < 1000 && a->calls == 0; i++)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &t);
}

static bool
has_loopback(const struct resolver_addrs *a)
{
	for (size_t i = 0; i < a->n; i++) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->v[i].ss;
		if (in->sin_family == AF_INET && in->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
			return true;
	}
	return false;
}

static void
test_lookup_answers_on_the_loop_and_is_cached(void **state)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct answer a = {0};
	char err[200];

	(void)state;
	assert_non_null(resolver_start(loop, "localhost", on_answer, &a, err, sizeof(err)));
	assert_int_equal(a.calls, 0); /* never from within resolver_start */
	wait_answer(loop, &a);
	assert_int_equal(a.calls, 1);
	assert_non_null(a.addrs);
	assert_true(has_loopback(a.addrs));
	free(a.addrs);

	struct resolver_addrs *c = resolver_cached(loop, "localhost", 60);
	assert_non_null(c);
	assert_true(has_loopback(c));
	free(c);
	assert_null(resolver_cached(loop, "localhost", 0)); /* too old for no cache */
	assert_null(resolver_cached(loop, "other.invalid", 60));
}

static void
test_cancelled_query_does_not_call_back(void **state)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct answer cancelled = {0}, later = {0};
	char err[200];
	struct resolver_query *q =
	        resolver_start(loop, "localhost", on_answer, &cancelled, err, sizeof(err));

	(void)state;
	assert_non_null(q);
	resolver_cancel(q);
	/* A later query comes back after the cancelled one was dropped. */
	assert_non_null(resolver_start(loop, "localhost", on_answer, &later, err, sizeof(err)));
	wait_answer(loop, &later);
	for (int i = 0; i < 20; i++)
		ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(later.calls, 1);
	free(later.addrs);
	assert_int_equal(cancelled.calls, 0);
}

static void
test_check_reports_the_resolver_error(void **state)
{
	char err[200] = "";

	(void)state;
	assert_int_equal(resolver_check("localhost", err, sizeof(err)), 0);
	assert_int_equal(resolver_check("nowhere.invalid", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot resolve 'nowhere.invalid': "));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_lookup_answers_on_the_loop_and_is_cached),
	        cmocka_unit_test(test_cancelled_query_does_not_call_back),
	        cmocka_unit_test(test_check_reports_the_resolver_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
