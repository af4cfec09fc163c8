/* The login decision of backend_auth = oauth2, without a provider: what
 * fails at once (unknown account, bad name, wrong password, guessing
 * paused), what is cached (a known password is checked without scrypt),
 * that a login whose provider cannot be reached ends in a temporary
 * failure from the loop, counted in the token request metric, that a
 * token request sent ends even when nobody waits for it any more, and
 * that opening token files (scrypt) does not hold the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/config_oauth2.h>
#include <postern/metrics.h>
#include <postern/oauth2_login.h>
#include <postern/oauth2_store.h>
#include <postern/oauth2_store_async.h>

#define ACCOUNT "alice@example.com"
#define PW "local password"
#define FAST 10 /* scrypt cost: tests need no slow KDF */

static char dir[64];
static struct oauth2_provider prov;
static struct oauth2_cache_slot slot;
static struct metrics_svc m;
static struct ev_loop *loop;

struct answer {
	int calls;
	enum oauth2_login_result result;
};

static void
done(void *arg, enum oauth2_login_result r, const char *token)
{
	struct answer *a = arg;

	a->calls++;
	a->result = r;
	assert_true((r == OAUTH2_LOGIN_OK) == (token != NULL));
	ev_break(loop, EVBREAK_ALL);
}

static int
setup(void **state)
{
	char path[128], err[256];

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/postern-login.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(oauth2_store_path(dir, ACCOUNT, path, sizeof(path)), 0);
	assert_int_equal(oauth2_store_write(path, ACCOUNT, PW, strlen(PW), "rt-1", 4, FAST, err,
	                                    sizeof(err)),
	                 OAUTH2_STORE_OK);
	memset(&slot, 0, sizeof(slot));
	memset(&m, 0, sizeof(m));
	/* port 1 on loopback: refused at once */
	prov = (struct oauth2_provider){.name = "fake",
	                                .token_url = "https://127.0.0.1:1/token",
	                                .client_id = "id",
	                                .token_dir = dir,
	                                .timeout = 2,
	                                .cache = &slot};
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (slot.free)
		slot.free(slot.cache);
	oauth2_login_finish(loop); /* nothing of this test ends in the next */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct answer
login(const char *user, const char *pw, bool waits)
{
	struct answer a = {0};
	struct oauth2_login *l = oauth2_login_start(loop, &prov, &m, "t", user, strlen(user), pw,
	                                            strlen(pw), done, &a);

	assert_true((l != NULL) == waits);
	if (waits) {
		assert_int_equal(a.calls, 0);
		ev_run(loop, 0);
	}
	assert_int_equal(a.calls, 1);
	return a;
}

static void
test_refused_at_once(void **state)
{
	(void)state;
	assert_int_equal(login("bob@example.com", PW, false).result, OAUTH2_LOGIN_REFUSED);
	assert_int_equal(login("../etc/passwd", PW, false).result, OAUTH2_LOGIN_REFUSED);
	/* the file is opened off the loop: the answer comes from it */
	assert_int_equal(login(ACCOUNT, "wrong", true).result, OAUTH2_LOGIN_REFUSED);
	/* guessing is paused for a second: every attempt, even with the right
	 * password, gets a temporary failure, unchecked (not a failed login) */
	assert_int_equal(login(ACCOUNT, PW, false).result, OAUTH2_LOGIN_TEMPORARY);
	assert_int_equal(login(ACCOUNT, "wrong", false).result, OAUTH2_LOGIN_TEMPORARY);
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], 0);
}

static void
test_provider_unreachable_is_temporary_and_password_cached(void **state)
{
	(void)state;
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], 1);
	/* the account is known now: a wrong password fails at once (no
	 * pause: it was not opened again), the right one asks again */
	assert_int_equal(login(ACCOUNT, "wrong", false).result, OAUTH2_LOGIN_REFUSED);
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], 2);
	/* a login cancelled while it waits is never answered */
	struct answer a = {0};
	struct oauth2_login *l = oauth2_login_start(loop, &prov, &m, "t", ACCOUNT, strlen(ACCOUNT),
	                                            PW, strlen(PW), done, &a);
	assert_non_null(l);
	oauth2_login_cancel(l);
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(a.calls, 0);
}

/* A token request is never dropped once sent (a rotating provider may
 * have invalidated the refresh token already): neither the login's
 * cancel nor its configuration's end stops it, and the process can wait
 * for its end. */
static void
test_request_outlives_its_login_and_configuration(void **state)
{
	struct answer a = {0};
	struct oauth2_login *l;

	(void)state;
	/* the account known: the next login starts its token request at once */
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
	l = oauth2_login_start(loop, &prov, &m, "t", ACCOUNT, strlen(ACCOUNT), PW, strlen(PW), done,
	                       &a);
	assert_non_null(l);
	oauth2_login_cancel(l);
	slot.free(slot.cache);
	slot.free = NULL;
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], 1);
	oauth2_login_finish(loop);
	assert_int_equal(a.calls, 0);
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], 2);
}

static double
seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* scrypt at its real cost (~0.1 s) runs off the loop: the first logins
 * of many accounts at once take less time together than one opening of
 * a token file, and each is answered from the loop once its file is
 * open (here: a temporary failure, the provider being unreachable; the
 * password was right). */
#define ACCOUNTS 4
static void
test_first_logins_do_not_hold_the_loop(void **state)
{
	char path[128], err[256], name[ACCOUNTS][16], *token;
	struct answer a[ACCOUNTS] = {0};
	size_t len;
	double t, one, all;
	int answered = 0;

	(void)state;
	for (int i = 0; i < ACCOUNTS; i++) {
		snprintf(name[i], sizeof(name[i]), "user%d", i);
		assert_int_equal(oauth2_store_path(dir, name[i], path, sizeof(path)), 0);
		assert_int_equal(oauth2_store_write(path, name[i], PW, strlen(PW), "rt", 2, 0, err,
		                                    sizeof(err)),
		                 OAUTH2_STORE_OK);
	}
	t = seconds();
	assert_int_equal(oauth2_store_read(path, name[ACCOUNTS - 1], PW, strlen(PW), &token, &len,
	                                   err, sizeof(err)),
	                 OAUTH2_STORE_OK);
	one = seconds() - t;
	oauth2_secret_free(token, len);
	t = seconds();
	for (int i = 0; i < ACCOUNTS; i++)
		assert_non_null(oauth2_login_start(loop, &prov, &m, "t", name[i], strlen(name[i]),
		                                   PW, strlen(PW), done, &a[i]));
	all = seconds() - t;
	assert_true(all < one);
	while (answered < ACCOUNTS) {
		ev_run(loop, EVRUN_ONCE);
		answered = 0;
		for (int i = 0; i < ACCOUNTS; i++)
			answered += a[i].calls;
	}
	for (int i = 0; i < ACCOUNTS; i++) {
		assert_int_equal(a[i].calls, 1);
		assert_int_equal(a[i].result, OAUTH2_LOGIN_TEMPORARY);
	}
	assert_int_equal(m.oauth2_token_requests[MO_TEMPORARY], ACCOUNTS);
}

/* A client trying names that have no token file makes no account entry
 * (each cost memory and lengthened every lookup); an account whose file
 * was removed loses its entry at its next login. */
static void
test_unknown_names_leave_nothing_behind(void **state)
{
	char name[32], path[128];

	(void)state;
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "nobody%d@example.com", i);
		assert_int_equal(login(name, PW, false).result, OAUTH2_LOGIN_REFUSED);
	}
	assert_int_equal(oauth2_login_accounts(&prov), 0);
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
	assert_int_equal(oauth2_login_accounts(&prov), 1);
	assert_int_equal(oauth2_store_path(dir, ACCOUNT, path, sizeof(path)), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(login(ACCOUNT, PW, false).result, OAUTH2_LOGIN_REFUSED);
	assert_int_equal(oauth2_login_accounts(&prov), 0);
}

/* The account remembers the token file its refresh token was read from,
 * not what a stat saw when the login started: here the file is replaced
 * while its opening waits behind another account's (real scrypt cost) on
 * the helper thread. Remembering the older file made the account take
 * the one it read for "changed" (the next login opened it again, and a
 * rotated token was not stored). Known, the file unchanged since it was
 * read, a wrong password is refused at once, from the cache. */
static void
test_account_remembers_the_file_it_read(void **state)
{
	char path[128], err[256];
	struct answer first = {0}, a = {0};

	(void)state;
	assert_int_equal(oauth2_store_path(dir, "slow", path, sizeof(path)), 0);
	assert_int_equal(
	        oauth2_store_write(path, "slow", PW, strlen(PW), "rt", 2, 0, err, sizeof(err)),
	        OAUTH2_STORE_OK);
	assert_non_null(
	        oauth2_login_start(loop, &prov, &m, "t", "slow", 4, PW, strlen(PW), done, &first));
	assert_non_null(oauth2_login_start(loop, &prov, &m, "t", ACCOUNT, strlen(ACCOUNT), PW,
	                                   strlen(PW), done, &a));
	assert_int_equal(oauth2_store_path(dir, ACCOUNT, path, sizeof(path)), 0);
	assert_int_equal(oauth2_store_write(path, ACCOUNT, PW, strlen(PW), "rt-2", 4, FAST, err,
	                                    sizeof(err)),
	                 OAUTH2_STORE_OK);
	while (!first.calls || !a.calls)
		ev_run(loop, EVRUN_ONCE);
	assert_int_equal(a.result, OAUTH2_LOGIN_TEMPORARY); /* the provider unreachable */
	assert_int_equal(login(ACCOUNT, "wrong", false).result, OAUTH2_LOGIN_REFUSED);
}

/* N logins of accounts slow0... whose token files (one file, linked under
 * each name) cost scrypt at its real cost: they wait for the helper
 * thread, in its queue. */
static void
queue_slow_logins(int n, struct answer *answers)
{
	char path[128], first[128], name[16], err[256];

	assert_int_equal(oauth2_store_path(dir, "slow0", first, sizeof(first)), 0);
	assert_int_equal(
	        oauth2_store_write(first, "slow0", PW, strlen(PW), "rt", 2, 0, err, sizeof(err)),
	        OAUTH2_STORE_OK);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "slow%d", i);
		assert_int_equal(oauth2_store_path(dir, name, path, sizeof(path)), 0);
		assert_true(i == 0 || link(first, path) == 0);
		assert_non_null(oauth2_login_start(loop, &prov, &m, "t", name, strlen(name), PW,
		                                   strlen(PW), done, &answers[i]));
	}
}

static void
drop_configuration(void)
{
	slot.free(slot.cache);
	slot.free = NULL;
	slot.cache = NULL;
}

/* The openings of a configuration that went (a reload) are taken off the
 * helper's queue: the next configuration's login does not wait for their
 * scrypt, nor does anyone pay for it. */
#define QUEUED 30
static void
test_cancelled_openings_cost_nothing(void **state)
{
	struct answer queued[QUEUED] = {0};
	char path[128], err[256], *token;
	size_t len;
	double t, one;

	(void)state;
	queue_slow_logins(QUEUED, queued);
	t = seconds();
	drop_configuration();
	/* at most the opening already under way delays this one */
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
	t = seconds() - t;
	one = seconds();
	assert_int_equal(oauth2_store_path(dir, "slow0", path, sizeof(path)), 0);
	assert_int_equal(
	        oauth2_store_read(path, "slow0", PW, strlen(PW), &token, &len, err, sizeof(err)),
	        OAUTH2_STORE_OK);
	oauth2_secret_free(token, len);
	one = seconds() - one;
	assert_true(t < 10 * one);
	for (int i = 0; i < QUEUED; i++)
		assert_int_equal(queued[i].calls, 0);
}

/* At most OAUTH2_OPEN_MAX token files wait to be opened: the first login
 * of one more account fails at once, temporarily (it was not checked). */
static void
test_openings_beyond_the_cap_fail_at_once(void **state)
{
	struct answer queued[OAUTH2_OPEN_MAX + 1] = {0};

	(void)state;
	queue_slow_logins(OAUTH2_OPEN_MAX, queued);
	assert_int_equal(login(ACCOUNT, PW, false).result, OAUTH2_LOGIN_TEMPORARY);
	drop_configuration();
	assert_int_equal(login(ACCOUNT, PW, true).result, OAUTH2_LOGIN_TEMPORARY);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_refused_at_once, setup, teardown),
	        cmocka_unit_test_setup_teardown(
	                test_provider_unreachable_is_temporary_and_password_cached, setup,
	                teardown),
	        cmocka_unit_test_setup_teardown(test_request_outlives_its_login_and_configuration,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_first_logins_do_not_hold_the_loop, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_account_remembers_the_file_it_read, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_unknown_names_leave_nothing_behind, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_cancelled_openings_cost_nothing, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_openings_beyond_the_cap_fail_at_once, setup,
	                                        teardown),
	};
	/* one loop for all: the HTTP client lives on it for the process */
	loop = ev_default_loop(0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
