/* Memory shared by the master and every worker process: counters that
 * must be totals across workers (metrics, dropped log lines) or unique
 * across them (session ids). Made before the first fork, inherited by it;
 * updated with relaxed atomics, never locked. */
#ifndef POSTERN_SHARED_H
#define POSTERN_SHARED_H

#include <stddef.h>
#include <stdint.h>

/* SIZE zeroed bytes shared with every process forked after this call;
 * private memory when no shared mapping can be made. Never NULL (aborts
 * when out of memory at start-up). */
void *shared_area(size_t size);

static inline void
shared_add(uint64_t *counter, uint64_t n)
{
	__atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

static inline uint64_t
shared_get(const uint64_t *counter)
{
	return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

#endif
