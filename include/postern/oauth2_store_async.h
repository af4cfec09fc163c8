/* Opening a token file (oauth2_store_read: its scrypt takes ~0.1 s of
 * CPU) on a helper thread, so that the event loop serving every session
 * of the process does not wait for it. One thread per process, started
 * at the first use by the process that uses it (a worker after its
 * fork); openings queue up and end, each with one call of its callback,
 * on the loop they were started from. */
#ifndef POSTERN_OAUTH2_STORE_ASYNC_H
#define POSTERN_OAUTH2_STORE_ASYNC_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include <postern/oauth2_store.h>

/* What an opening found, valid during the callback only (then wiped):
 * as oauth2_store_read's, and the password it was opened with. */
struct oauth2_opened {
	enum oauth2_store_result result;
	const char *token; /* OAUTH2_STORE_OK: the refresh token (a secret) */
	size_t token_len;
	const struct stat *file; /* OAUTH2_STORE_OK: the file read (fstat) */
	const char *password;
	size_t password_len;
	const char *err; /* otherwise: why */
};

typedef void oauth2_opened_cb(void *arg, const struct oauth2_opened *o);

struct oauth2_open;

/* At most this many openings wait or run at once in a process: each
 * costs scrypt, and a client can ask for one per account it names. */
#define OAUTH2_OPEN_MAX 64

/* Reads PATH for ACCOUNT with PASSWORD (PLEN bytes, copied) off LOOP; CB
 * is called from LOOP. NULL when the thread cannot start (nothing is
 * called: the caller may read on the loop instead). */
struct oauth2_open *oauth2_open_start(struct ev_loop *loop, const char *path, const char *account,
                                      const char *password, size_t plen, oauth2_opened_cb *cb,
                                      void *arg);
/* Whether OAUTH2_OPEN_MAX openings wait or run: the caller starts no
 * other one then. */
bool oauth2_open_full(void);

/* Its callback is not called; what it read is wiped. An opening that has
 * not started yet is taken off the queue: it costs nothing. */
void oauth2_open_cancel(struct oauth2_open *o);

/* No callback is called any more, nor is the loop touched by the thread
 * (the loop may be destroyed next): openings in flight are never
 * answered. A later oauth2_open_start calls back again. */
void oauth2_open_stop(void);

#endif
