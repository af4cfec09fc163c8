/* One helper thread and two lists under one mutex: the openings to do
 * (the thread waits on a condition for them) and the ones done (an
 * ev_async wakes the loop to call their callbacks). The thread touches an
 * opening only between taking it from the first list and putting it on
 * the second; the loop owns it otherwise. Signals stay with the loop's
 * thread: the helper blocks them all. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <postern/oauth2_store_async.h>

struct oauth2_open {
	struct oauth2_open *next;
	char path[4096], account[256];
	char *password; /* secret */
	size_t plen;
	/* set by the thread */
	enum oauth2_store_result result;
	char *token; /* secret */
	size_t token_len;
	struct stat file;
	char err[256];
	/* the loop's */
	bool cancelled;
	oauth2_opened_cb *cb;
	void *arg;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t more = PTHREAD_COND_INITIALIZER;
static struct oauth2_open *todo, **todo_end = &todo, *done;
static int pending; /* openings queued or being read: not done */
static pid_t owner; /* the process whose thread runs */
static struct ev_loop *owner_loop;
static ev_async wake;

static void
open_free(struct oauth2_open *o)
{
	oauth2_secret_free(o->password, o->plen);
	oauth2_secret_free(o->token, o->token_len);
	free(o);
}

static void *
helper(void *unused)
{
	struct oauth2_open *o;

	(void)unused;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (todo == NULL)
			pthread_cond_wait(&more, &mu);
		o = todo;
		if (!(todo = o->next))
			todo_end = &todo;
		pthread_mutex_unlock(&mu);
		o->result =
		        oauth2_store_read_file(o->path, o->account, o->password, o->plen, &o->token,
		                               &o->token_len, &o->file, o->err, sizeof(o->err));
		pthread_mutex_lock(&mu);
		pending--;
		o->next = done;
		done = o;
		if (owner_loop) /* not after oauth2_open_stop: the loop may be gone */
			ev_async_send(owner_loop, &wake);
	}
	return NULL;
}

static void
woken(struct ev_loop *loop, ev_async *w, int revents)
{
	struct oauth2_open *list, *o;

	(void)loop;
	(void)w;
	(void)revents;
	pthread_mutex_lock(&mu);
	list = done;
	done = NULL;
	pthread_mutex_unlock(&mu);
	while ((o = list) != NULL) {
		list = o->next;
		if (!o->cancelled) {
			struct oauth2_opened r = {.result = o->result,
			                          .token = o->token,
			                          .token_len = o->token_len,
			                          .file = &o->file,
			                          .password = o->password,
			                          .password_len = o->plen,
			                          .err = o->err};
			o->cb(o->arg, &r);
		}
		open_free(o);
	}
}

/* The thread of this process on LOOP, started if need be. */
static bool
helper_ready(struct ev_loop *loop)
{
	pthread_t t;
	pthread_attr_t attr;
	sigset_t all, old;
	bool ok;

	if (owner == getpid() && owner_loop == loop)
		return true;
	if (owner == getpid() && owner_loop)
		return false;    /* one loop per process */
	if (owner == getpid()) { /* stopped: calling back again */
		ev_async_start(loop, &wake);
		pthread_mutex_lock(&mu);
		owner_loop = loop;
		if (done) /* finished while stopped */
			ev_async_send(loop, &wake);
		pthread_mutex_unlock(&mu);
		return true;
	}
	/* a fork's child has no thread: what the parent queued is not ours */
	pthread_mutex_init(&mu, NULL);
	pthread_cond_init(&more, NULL);
	todo = done = NULL;
	todo_end = &todo;
	pending = 0;
	owner_loop = loop;
	ev_async_init(&wake, woken);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ok = pthread_attr_init(&attr) == 0 &&
	     pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
	     pthread_create(&t, &attr, helper, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (!ok)
		return false;
	ev_async_start(loop, &wake);
	owner = getpid();
	return true;
}

struct oauth2_open *
oauth2_open_start(struct ev_loop *loop, const char *path, const char *account, const char *password,
                  size_t plen, oauth2_opened_cb *cb, void *arg)
{
	struct oauth2_open *o;

	if (!helper_ready(loop) || !(o = calloc(1, sizeof(*o))))
		return NULL;
	if (snprintf(o->path, sizeof(o->path), "%s", path) >= (int)sizeof(o->path) ||
	    snprintf(o->account, sizeof(o->account), "%s", account) >= (int)sizeof(o->account) ||
	    !(o->password = malloc(plen + 1))) {
		open_free(o);
		return NULL;
	}
	memcpy(o->password, password, plen);
	o->plen = plen;
	o->cb = cb;
	o->arg = arg;
	pthread_mutex_lock(&mu);
	*todo_end = o;
	todo_end = &o->next;
	pending++;
	pthread_cond_signal(&more);
	pthread_mutex_unlock(&mu);
	return o;
}

void
oauth2_open_stop(void)
{
	struct ev_loop *loop = owner_loop;

	if (owner != getpid() || !loop)
		return;
	pthread_mutex_lock(&mu);
	owner_loop = NULL;
	pthread_mutex_unlock(&mu);
	ev_async_stop(loop, &wake);
}

bool
oauth2_open_full(void)
{
	bool full;

	if (owner != getpid())
		return false; /* no thread yet: nothing queued */
	pthread_mutex_lock(&mu);
	full = pending >= OAUTH2_OPEN_MAX;
	pthread_mutex_unlock(&mu);
	return full;
}

void
oauth2_open_cancel(struct oauth2_open *o)
{
	struct oauth2_open **pp;

	if (!o)
		return;
	/* Not started yet: taken off the queue, its scrypt never runs. */
	pthread_mutex_lock(&mu);
	for (pp = &todo; *pp; pp = &(*pp)->next)
		if (*pp == o) {
			if (!(*pp = o->next))
				todo_end = pp;
			pending--;
			pthread_mutex_unlock(&mu);
			open_free(o);
			return;
		}
	pthread_mutex_unlock(&mu);
	/* the thread holds it, or it is done: it ends as the others do, unseen */
	o->cancelled = true;
}
