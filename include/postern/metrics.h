/* Counters per service, the count of dropped log lines, and a small
 * HTTP/1.0 listener serving them in the Prometheus text format at /metrics.
 * Counting is a few increments; the text is only built when scraped. */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include <stdint.h>

#include <ev.h>

#include <postern/config.h>

enum metrics_hs { MH_TIMEOUT, MH_ERROR, MH_COUNT };
enum metrics_be { MB_UNREACHABLE, MB_TLS, MB_COUNT };
enum metrics_ref { MR_MAX_CONNECTIONS, MR_PROXY_HEADER, MR_PROTOCOL, MR_COUNT };

struct metrics_svc {
	char name[64];
	uint64_t connections, active, bytes_in, bytes_out;
	uint64_t handshake_failures[MH_COUNT];
	uint64_t backend_errors[MB_COUNT];
	uint64_t starttls_client, starttls_backend;
	uint64_t plaintext_auth_refused;
	uint64_t refused[MR_COUNT];
};

/* The counters of service NAME; they outlive reloads. Never NULL. */
struct metrics_svc *metrics_service(const char *name);

/* Serves /metrics on CFG's metrics address (or stops serving when unset);
 * keeps the socket when the address is unchanged. -1 with ERR on failure. */
int metrics_apply(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen);
void metrics_stop(struct ev_loop *loop);

/* The exposition text (for tests); returns its length, written to DST. */
size_t metrics_render(char *dst, size_t cap);

#endif
