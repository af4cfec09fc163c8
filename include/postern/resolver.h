/* Host names of backends looked up when a session needs them, off the event
 * loop: getaddrinfo runs in a small pool of threads, which hand their answer
 * back through a pipe watched by the loop. The threads touch nothing but
 * their own query; the cache, the callbacks and libev belong to the loop.
 * Answers are cached per name in this process (getaddrinfo gives no TTL, so
 * for a time the caller chooses), in a bounded table; failures are not
 * cached. After fork the child starts afresh on first use. */
#ifndef POSTERN_RESOLVER_H
#define POSTERN_RESOLVER_H

#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>

#define RESOLVER_THREADS 2     /* lookups at once, per process */
#define RESOLVER_CACHE_MAX 128 /* names remembered, per process */

/* A name's addresses, in getaddrinfo's order (its RFC 6724 sorting of IPv6
 * and IPv4), ports zero. */
struct resolver_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};
struct resolver_addrs {
	size_t n;
	struct resolver_addr v[];
};

/* Called on the loop with a malloc'ed list the callee owns and ERROR NULL,
 * or with ADDRS NULL and the resolver's reason in ERROR. */
typedef void resolver_cb(void *arg, struct resolver_addrs *addrs, const char *error);

struct resolver_query;

/* A copy (malloc'ed) of HOST's addresses if they were looked up less than
 * MAX_AGE seconds ago (ev_now of LOOP), else NULL. */
struct resolver_addrs *resolver_cached(struct ev_loop *loop, const char *host, double max_age);

/* Looks HOST up in the pool; CB runs once, later, from LOOP, unless the
 * query is cancelled first. NULL when a query cannot be started (out of
 * memory, no thread, no pipe), with the reason in ERR. */
struct resolver_query *resolver_start(struct ev_loop *loop, const char *host, resolver_cb *cb,
                                      void *arg, char *err, size_t errlen);

/* CB will not run; the query's memory goes when its thread is done. */
void resolver_cancel(struct resolver_query *q);

/* Whether HOST resolves now, blocking (for the checks at load): 0, or -1
 * with the reason in ERR. */
int resolver_check(const char *host, char *err, size_t errlen);

#endif
