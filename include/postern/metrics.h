/* Counters per service, the count of dropped log lines, and a small
 * HTTP/1.0 listener serving them in the Prometheus text format at /metrics.
 * Counting is a few increments; the text is only built when scraped. The
 * counters live in memory shared by all worker processes, so any worker
 * answers a scrape with the totals; counters only ever grow (shared_add),
 * and the sessions open now are counted per process, so that those of a
 * worker that died can be forgotten. */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include <postern/config.h>
#include <postern/shared.h>

enum metrics_hs { MH_TIMEOUT, MH_ERROR, MH_COUNT };
enum metrics_be { MB_UNREACHABLE, MB_TLS, MB_COUNT };
enum metrics_auth { MA_OK, MA_FAILED, MA_COUNT };
/* Token endpoint requests of backend_auth = oauth2, by outcome: an access
 * token, a failure to retry later, the refresh token refused. */
enum metrics_oauth2 { MO_OK, MO_TEMPORARY, MO_REFUSED, MO_COUNT };
enum metrics_ref {
	MR_MAX_CONNECTIONS,
	MR_PROXY_HEADER,
	MR_PROTOCOL,
	MR_MAX_HANDSHAKES,
	MR_UNKNOWN_SNI, /* strict_sni */
	MR_COUNT
};

struct metrics_svc {
	char name[CONFIG_SERVICE_NAME_MAX + 1]; /* whole: series stay one per service */
	uint64_t connections, bytes_in, bytes_out;
	uint64_t handshake_failures[MH_COUNT];
	uint64_t backend_errors[MB_COUNT];
	uint64_t starttls_client, starttls_backend;
	uint64_t plaintext_auth_refused;
	uint64_t auth[MA_COUNT]; /* login attempts by the server's verdict */
	uint64_t oauth2_token_requests[MO_COUNT];
	uint64_t refused[MR_COUNT];
	/* Gauges of the certificates loaded (set at start and reload). */
	uint64_t certificates, certificate_soonest_expiry, certificates_expiring;
};

/* The counters of service NAME; they outlive reloads. Never NULL. A name
 * not seen before is added: only the process that forks the workers adds
 * (metrics_apply, before forking); workers find what it added. */
struct metrics_svc *metrics_service(const char *name);

/* The outcome of a reload, for postern_config_reload_success and (when OK)
 * postern_config_last_reload_timestamp_seconds; the start counts as a
 * successful load. Called by whichever process reloads (the master of
 * workers): the values are shared, so every worker's scrape shows them. */
void metrics_config_reloaded(bool ok);

/* Sessions of M open in this process: +1 at start, -1 at the end. */
void metrics_active(struct metrics_svc *m, int delta);

/* Sessions open now in all processes (for the service manager's status). */
uint64_t metrics_sessions_open(void);

/* Process slots for the open-session gauge: 0 is a single process's; the
 * master gives each worker its own (1 .. METRICS_SLOTS-1) and clears it
 * when the worker is gone, whatever it had open. */
#define METRICS_SLOTS 2048
/* The master, before forking the worker that will use SLOT: clears it. */
void metrics_reserve_slot(int slot);
/* The worker, from its start. */
void metrics_use_slot(int slot);
/* The master, once the worker that used SLOT is gone. */
void metrics_clear_slot(int slot);

/* Serves /metrics on CFG's metrics address (or stops serving when unset);
 * keeps the socket when the address is unchanged. -1 with ERR on failure.
 * With LOOP NULL (the master of workers) the socket is only bound: each
 * worker then serves it with metrics_start. */
int metrics_apply(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen);
void metrics_start(struct ev_loop *loop);
/* Stops serving and closes this process's copy of the socket. */
void metrics_stop(struct ev_loop *loop);

/* The exposition text (for tests); returns its length, written to DST.
 * Label values are escaped as the text format requires (\\, \", \n). */
size_t metrics_render(char *dst, size_t cap);

#endif
