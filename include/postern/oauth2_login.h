/* backend_auth = oauth2: the login decision and the access token, shared
 * by every protocol. A client's user name is the account (its token file
 * in the provider's token_dir), its password the key of that file; the
 * outcome is an access token to log in to the server with, or why not.
 * Tokens come from a per-account cache in memory or from the provider's
 * token endpoint, without blocking the loop (oauth2_http.h). */
#ifndef POSTERN_OAUTH2_LOGIN_H
#define POSTERN_OAUTH2_LOGIN_H

#include <stddef.h>

#include <ev.h>

#include <postern/config_oauth2.h>
#include <postern/metrics.h>

enum oauth2_login_result {
	OAUTH2_LOGIN_OK,
	OAUTH2_LOGIN_REFUSED,   /* wrong password, unknown or unauthorized account */
	OAUTH2_LOGIN_REVOKED,   /* the provider refused the refresh token */
	OAUTH2_LOGIN_TEMPORARY, /* the provider or the token store failed */
};

/* TOKEN: the access token on OAUTH2_LOGIN_OK (valid during the call only,
 * a secret), else NULL. */
typedef void oauth2_login_cb(void *arg, enum oauth2_login_result result, const char *token);

struct oauth2_login;

/* Logs USER (ULEN bytes) in with PASS (PLEN bytes) against provider P of
 * the service whose counters are M; WHO prefixes the log lines. CB is
 * called exactly once unless the login is cancelled: before this returns
 * (and then it returns NULL) when the answer is known at once, later from
 * LOOP otherwise. USER and PASS are copied. */
struct oauth2_login *oauth2_login_start(struct ev_loop *loop, const struct oauth2_provider *p,
                                        struct metrics_svc *m, const char *who, const char *user,
                                        size_t ulen, const char *pass, size_t plen,
                                        oauth2_login_cb *cb, void *arg);

/* Forgets L (its callback is not called); a token request in flight goes
 * on for the other logins of the account, and to store a rotated token. */
void oauth2_login_cancel(struct oauth2_login *l);

/* How many accounts P's cache holds: at most one per token file that
 * existed when a login came, whatever names clients try. */
size_t oauth2_login_accounts(const struct oauth2_provider *p);

/* The longest oauth2_login_finish waits: less than the grace a master
 * gives its workers after shutdown_timeout before it kills them. */
#define OAUTH2_FINISH_MAX 5.0

/* Runs LOOP until every token request of this process has ended (each
 * has its timeout), so that a rotated refresh token the provider is
 * sending is stored before the process exits; for OAUTH2_FINISH_MAX at
 * most, and not at all after oauth2_login_stop_now. What did not end is
 * dropped, with a log line. Called once the process serves no session
 * any more; after it, token files opened off the loop are no longer
 * waited for (the loop may go). */
void oauth2_login_finish(struct ev_loop *loop);

/* The process is told to stop at once: oauth2_login_finish, running (the
 * call comes from LOOP's signal watcher) or to come, waits no longer. */
void oauth2_login_stop_now(void);

#endif
