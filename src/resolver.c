/* Backend names resolved off the loop (see resolver.h). A query travels
 * from the loop's pending list to a thread and back to the loop's done
 * list, both under one mutex; the pipe only wakes the loop. A cancelled
 * query stays on its way and is dropped when it comes back, so a thread
 * never holds a pointer the loop has freed. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <postern/resolver.h>

struct resolver_query {
	struct resolver_query *next;
	char *host;
	resolver_cb *cb; /* NULL once cancelled */
	void *arg;
	struct resolver_addrs *addrs; /* the thread's answer */
	int rc;                       /* getaddrinfo's result, or EAI_MEMORY */
};

struct cache_entry {
	char *host;
	struct resolver_addrs *addrs;
	ev_tstamp at;
};

/* One per process; pid says whose it is (a child after fork starts over). */
static struct {
	pid_t pid;
	struct ev_loop *loop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct resolver_query *pending, *pending_tail, *done;
	int threads, idle;
	int pipe[2];
	ev_io io;
	size_t outstanding; /* queries not yet back on the loop */
	struct cache_entry cache[RESOLVER_CACHE_MAX];
} R = {.pipe = {-1, -1}};

static struct resolver_addrs *
addrs_copy(const struct resolver_addrs *a)
{
	size_t size = sizeof(*a) + a->n * sizeof(a->v[0]);
	struct resolver_addrs *c = malloc(size);

	if (c)
		memcpy(c, a, size);
	return c;
}

/* getaddrinfo's list as ours, duplicates left out, in its order. */
static int
lookup(const char *host, struct resolver_addrs **out)
{
#ifdef POSTERN_FUZZING
	(void)host;
	*out = NULL;
	return EAI_NONAME; /* no DNS while fuzzing */
#else
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	struct resolver_addrs *a;
	size_t n = 0;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	*out = NULL;
	if (rc != 0)
		return rc;
	for (ai = res; ai; ai = ai->ai_next)
		n++;
	a = malloc(sizeof(*a) + n * sizeof(a->v[0]));
	if (a == NULL) {
		freeaddrinfo(res);
		return EAI_MEMORY;
	}
	a->n = 0;
	for (ai = res; ai; ai = ai->ai_next) {
		struct resolver_addr *v = &a->v[a->n];
		bool dup = false;

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(v->ss))
			continue;
		for (size_t i = 0; i < a->n && !dup; i++)
			dup = a->v[i].len == ai->ai_addrlen &&
			      memcmp(&a->v[i].ss, ai->ai_addr, ai->ai_addrlen) == 0;
		if (dup)
			continue;
		memset(v, 0, sizeof(*v));
		memcpy(&v->ss, ai->ai_addr, ai->ai_addrlen);
		v->len = ai->ai_addrlen;
		a->n++;
	}
	freeaddrinfo(res);
	if (a->n == 0) {
		free(a);
		return EAI_NODATA;
	}
	*out = a;
	return 0;
#endif
}

static void *
worker(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&R.lock);
	for (;;) {
		struct resolver_query *q;

		while (R.pending == NULL) {
			R.idle++;
			pthread_cond_wait(&R.wake, &R.lock);
			R.idle--;
		}
		q = R.pending;
		R.pending = q->next;
		if (R.pending == NULL)
			R.pending_tail = NULL;
		pthread_mutex_unlock(&R.lock);

		q->rc = lookup(q->host, &q->addrs);

		pthread_mutex_lock(&R.lock);
		q->next = R.done;
		R.done = q;
		if (write(R.pipe[1], "", 1) < 0) {
			/* full: the loop is woken already */
		}
	}
	return NULL;
}

static void
cache_put(const char *host, const struct resolver_addrs *addrs, ev_tstamp now)
{
	struct cache_entry *slot = NULL;

	for (size_t i = 0; i < RESOLVER_CACHE_MAX && !slot; i++) {
		if (R.cache[i].host && strcmp(R.cache[i].host, host) == 0)
			slot = &R.cache[i];
	}
	for (size_t i = 0; i < RESOLVER_CACHE_MAX && !slot; i++) {
		if (R.cache[i].host == NULL)
			slot = &R.cache[i];
	}
	if (slot == NULL) { /* full: the oldest goes */
		slot = &R.cache[0];
		for (size_t i = 1; i < RESOLVER_CACHE_MAX; i++) {
			if (R.cache[i].at < slot->at)
				slot = &R.cache[i];
		}
	}
	struct resolver_addrs *copy = addrs_copy(addrs);
	char *name = strdup(host);

	if (!copy || !name) { /* the name is simply not remembered */
		free(copy);
		free(name);
		return;
	}
	free(slot->host);
	free(slot->addrs);
	slot->host = name;
	slot->addrs = copy;
	slot->at = now;
}

static void
on_done(struct ev_loop *loop, ev_io *w, int revents)
{
	char drain[64];
	struct resolver_query *q, *next;

	(void)w;
	(void)revents;
	while (read(R.pipe[0], drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&R.lock);
	q = R.done;
	R.done = NULL;
	pthread_mutex_unlock(&R.lock);
	for (; q; q = next) {
		next = q->next;
		R.outstanding--;
		if (q->rc == 0)
			cache_put(q->host, q->addrs, ev_now(loop));
		if (q->cb) {
			char why[160];
			snprintf(why, sizeof(why), "cannot resolve '%s': %s", q->host,
			         gai_strerror(q->rc));
			q->cb(q->arg, q->addrs, q->rc == 0 ? NULL : why);
		} else {
			free(q->addrs);
		}
		free(q->host);
		free(q);
	}
	if (R.outstanding == 0)
		ev_io_stop(loop, &R.io);
}

/* The pipe and watcher of this process, on first use (again after fork:
 * the parent's threads did not come along, its pipe is the parent's). */
static bool
setup(struct ev_loop *loop, char *err, size_t errlen)
{
	if (R.pid == getpid())
		return true;
	if (R.pipe[0] >= 0) {
		close(R.pipe[0]);
		close(R.pipe[1]);
	}
	for (size_t i = 0; i < RESOLVER_CACHE_MAX; i++) {
		free(R.cache[i].host);
		free(R.cache[i].addrs);
	}
	/* Queries of the parent are its own; their memory is not ours to free. */
	memset(&R, 0, sizeof(R));
	R.pipe[0] = R.pipe[1] = -1;
	if (pipe2(R.pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
		R.pipe[0] = R.pipe[1] = -1;
		return false;
	}
	pthread_mutex_init(&R.lock, NULL);
	pthread_cond_init(&R.wake, NULL);
	ev_io_init(&R.io, on_done, R.pipe[0], EV_READ);
	R.loop = loop;
	R.pid = getpid();
	return true;
}

struct resolver_addrs *
resolver_cached(struct ev_loop *loop, const char *host, double max_age)
{
	if (R.pid != getpid())
		return NULL;
	for (size_t i = 0; i < RESOLVER_CACHE_MAX; i++) {
		struct cache_entry *e = &R.cache[i];
		if (e->host && strcmp(e->host, host) == 0)
			return ev_now(loop) - e->at < max_age ? addrs_copy(e->addrs) : NULL;
	}
	return NULL;
}

struct resolver_query *
resolver_start(struct ev_loop *loop, const char *host, resolver_cb *cb, void *arg, char *err,
               size_t errlen)
{
	struct resolver_query *q;
	int rc = 0;

	if (!setup(loop, err, errlen))
		return NULL;
	q = calloc(1, sizeof(*q));
	if (q == NULL || (q->host = strdup(host)) == NULL) {
		free(q);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	q->cb = cb;
	q->arg = arg;
	pthread_mutex_lock(&R.lock);
	if (R.idle == 0 && R.threads < RESOLVER_THREADS) {
		pthread_t t;
		pthread_attr_t attr;
		sigset_t all, old;

		/* Signals stay with the loop's thread. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		rc = pthread_create(&t, &attr, worker, NULL);
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc == 0)
			R.threads++;
	}
	if (R.threads == 0) {
		pthread_mutex_unlock(&R.lock);
		snprintf(err, errlen, "cannot start a resolver thread: %s", strerror(rc));
		free(q->host);
		free(q);
		return NULL;
	}
	if (R.pending_tail)
		R.pending_tail->next = q;
	else
		R.pending = q;
	R.pending_tail = q;
	pthread_cond_signal(&R.wake);
	pthread_mutex_unlock(&R.lock);
	if (R.outstanding++ == 0)
		ev_io_start(loop, &R.io);
	return q;
}

void
resolver_cancel(struct resolver_query *q)
{
	/* Only the loop reads cb, and this is the loop. */
	q->cb = NULL;
}

int
resolver_check(const char *host, char *err, size_t errlen)
{
	struct resolver_addrs *a;
	int rc = lookup(host, &a);

	free(a);
	if (rc != 0)
		snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
	return rc == 0 ? 0 : -1;
}
