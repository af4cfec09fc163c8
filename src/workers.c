/* The master of workers. It never touches a connection: it binds the
 * sockets (one set per worker, so that a worker's replacement takes over
 * what the kernel queued for it), forks, waits for signals with
 * sigtimedwait (no handlers, no event loop), replaces workers that die and
 * swaps the whole set on reload. What workers must share (metrics, session
 * ids, the random ticket key) is made before the first fork. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <postern/daemon.h>
#include <postern/listener.h>
#include <postern/log.h>
#include <postern/metrics.h>
#include <postern/oauth2_login.h>
#include <postern/sd_notify.h>
#include <postern/server.h>
#include <postern/session.h>
#include <postern/tickets.h>
#include <postern/tls.h>
#include <postern/workers.h>

/* A worker that dies this soon after its start is replaced only after as
 * long again: a worker that cannot run must not become a fork loop. */
#define RESPAWN_DELAY 1.0
/* After shutdown_timeout, the workers get this long before SIGKILL. */
#define KILL_GRACE 10.0
/* A worker's wait for token requests in flight ends before that. */
_Static_assert((int)OAUTH2_FINISH_MAX < (int)KILL_GRACE,
               "a stopping worker is killed while it waits");

struct proc {
	pid_t pid; /* 0: slot free */
	int index; /* its place in its set, from 0 */
	unsigned gen;
	double started;
	bool retired; /* of an older set, told to finish (SIGUSR2) */
};

/* Static, so that a worker's copy of it is reachable until it exits. */
static struct {
	struct config *cfg;
	const char *path;
	unsigned gen; /* bumped by each reload */
	int n;        /* workers of the current set */
	int nsets;    /* socket sets bound */
	struct server sets[WORKERS_MAX];
	struct proc procs[METRICS_SLOTS]; /* by metrics slot; 0 unused */
	double respawn_at[WORKERS_MAX];   /* 0: nothing pending */
	bool stopping;
	bool pidfile_written;
	bool privileged; /* root with a user: the workers drop, not the master */
	double kill_at;
	double status_at; /* next status line for the service manager; 0: none */
	pid_t self;
	sigset_t sigs;
} m;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
workers_count(const struct config *cfg)
{
	return cfg->workers;
}

bool
workers_privileged(const struct config *cfg)
{
	return geteuid() == 0 && (cfg->user || cfg->group);
}

static int
live(void)
{
	int n = 0;

	for (int i = 1; i < METRICS_SLOTS; i++)
		n += m.procs[i].pid != 0;
	return n;
}

static void
signal_all(int sig)
{
	for (int i = 1; i < METRICS_SLOTS; i++)
		if (m.procs[i].pid != 0)
			kill(m.procs[i].pid, sig);
}

static void __attribute__((noreturn)) child(int index, int slot)
{
	struct server *srv = &m.sets[index];

	/* Terminal signals go to the master alone, which passes them on. */
	setpgid(0, 0);
	sd_notify_forget(); /* the service manager hears the master alone */
	/* Nothing of the network is touched as root. Before PDEATHSIG: a
	 * change of user clears it. */
	if (m.privileged && daemon_drop_privileges(m.cfg) < 0)
		_exit(DAEMON_EXIT_RUNTIME);
	/* A master gone (even by SIGKILL) stops its workers. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != m.self)
		_exit(0);
	metrics_use_slot(slot);
	for (int j = 0; j < m.nsets; j++)
		if (j != index)
			listener_close_all(&m.sets[j]);
	srv->cfg = m.cfg; /* the worker's own reference now */
	m.cfg = NULL;
	exit(daemon_run_worker(srv));
}

/* Old workers at INDEX (all from INDEX on with ALL_FROM) finish their
 * sessions and exit. Only once their replacement runs: until then they
 * keep accepting, so no socket is left without a worker. */
static void
retire(int index, bool all_from)
{
	for (int i = 1; i < METRICS_SLOTS; i++) {
		struct proc *p = &m.procs[i];
		if (p->pid != 0 && p->gen != m.gen && !p->retired &&
		    (p->index == index || (all_from && p->index > index))) {
			kill(p->pid, SIGUSR2);
			p->retired = true;
		}
	}
}

static void
spawn(int index)
{
	int slot = 1;
	pid_t pid;

	while (slot < METRICS_SLOTS && m.procs[slot].pid != 0)
		slot++;
	if (slot == METRICS_SLOTS) {
		log_msg(LOG_ERR,
		        "cannot start worker %d: %d worker processes alive; retrying in 1s",
		        index + 1, METRICS_SLOTS - 1);
		m.respawn_at[index] = now() + RESPAWN_DELAY;
		return;
	}
	metrics_reserve_slot(slot);
	pid = fork();
	if (pid < 0) {
		log_msg(LOG_ERR, "cannot start worker %d: %s; retrying in 1s", index + 1,
		        strerror(errno));
		m.respawn_at[index] = now() + RESPAWN_DELAY;
		return;
	}
	if (pid == 0)
		child(index, slot);
	/* Also here: a terminal's signal must not reach it before it has
	 * left the master's group itself. */
	setpgid(pid, pid);
	m.procs[slot] = (struct proc){pid, index, m.gen, now(), false};
	m.respawn_at[index] = 0;
	log_msg(LOG_INFO, "worker %d started pid=%ld", index + 1, (long)pid);
	retire(index, false);
}

static void
reap(void)
{
	int st, slot;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		char how[64];
		struct proc p;

		for (slot = 1; slot < METRICS_SLOTS && m.procs[slot].pid != pid; slot++)
			;
		if (slot == METRICS_SLOTS)
			continue;
		p = m.procs[slot];
		m.procs[slot].pid = 0;
		/* Its open sessions are gone with it. */
		metrics_clear_slot(slot);
		if (p.gen != m.gen) {
			log_msg(LOG_INFO,
			        "worker %d pid=%ld of the previous configuration finished",
			        p.index + 1, (long)pid);
			continue;
		}
		if (m.stopping)
			continue;
		if (WIFSIGNALED(st))
			snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(st));
		else
			snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(st));
		if (now() - p.started < RESPAWN_DELAY) {
			log_msg(LOG_WARNING, "worker %d pid=%ld %s; starting a new one in 1s",
			        p.index + 1, (long)pid, how);
			m.respawn_at[p.index] = now() + RESPAWN_DELAY;
		} else {
			log_msg(LOG_WARNING, "worker %d pid=%ld %s; starting a new one",
			        p.index + 1, (long)pid, how);
			spawn(p.index);
		}
	}
}

static void
init_set(int i)
{
	memset(&m.sets[i], 0, sizeof(m.sets[i]));
	m.sets[i].worker = true;
	m.sets[i].quiet = i > 0;
}

/* The new configuration gets new workers on the same sockets; the old ones
 * stop accepting and finish their sessions. All or nothing, as for one
 * process: a configuration that cannot be applied changes nothing. */
static int
workers_listen(void *arg, struct config *cfg, char *err, size_t errlen)
{
	struct listener **plan = arg;
	int n = workers_count(cfg), i;

	for (i = 0; i < n; i++) {
		if (i >= m.nsets)
			init_set(i);
		if (listener_prepare(&m.sets[i], cfg, &plan[i], err, errlen) < 0)
			break;
	}
	if (i < n) {
		while (i-- > 0)
			listener_abort(&m.sets[i], plan[i]);
		return -1;
	}
	for (i = 0; i < n; i++)
		listener_commit(&m.sets[i], cfg, plan[i]);
	for (; i < m.nsets; i++)
		listener_close_all(&m.sets[i]);
	m.nsets = n;
	return 0;
}

static int
workers_take(void *arg, struct config *cfg)
{
	int i;

	(void)arg;
	config_unref(m.cfg);
	m.cfg = cfg;
	m.n = workers_count(cfg);
	m.gen++;
	for (i = 0; i < WORKERS_MAX; i++)
		m.respawn_at[i] = 0;
	for (i = 0; i < m.n; i++)
		spawn(i);
	/* Workers of places the new set does not have: no replacement. */
	retire(m.n - 1, true);
	return m.n;
}

/* The new configuration gets new workers on the same sockets; the old ones
 * stop accepting and finish their sessions. All or nothing, as for one
 * process: a configuration that cannot be applied changes nothing. */
static void
reload(void)
{
	struct listener *plan[WORKERS_MAX];
	const struct daemon_reload_ops ops = {workers_listen, workers_take, plan};

	daemon_reload(m.path, NULL, &ops);
}

/* SIGTERM/SIGINT: the workers stop accepting and wait for their sessions;
 * a second one, or SIGQUIT, has them close their sessions at once. That
 * comes as SIGQUIT: workers ignore a repeated SIGTERM, which a SIGTERM sent
 * to every process (a cgroup, a list of PIDs) would otherwise be. */
static void
stop(bool at_once)
{
	if (!m.stopping) {
		m.stopping = true;
		log_msg(LOG_INFO, "shutting down: stopping %d workers", live());
		sd_notify_status("STOPPING=1", "shutting down: stopping %d workers", live());
		for (int i = 0; i < m.nsets; i++)
			listener_close_all(&m.sets[i]);
		metrics_stop(NULL);
		m.kill_at = now() + m.cfg->shutdown_timeout + KILL_GRACE;
		signal_all(SIGTERM);
		if (!at_once)
			return;
	}
	signal_all(SIGQUIT);
}

static void
tick(void)
{
	double t = now();

	tickets_tick();
	if (m.status_at > 0 && t >= m.status_at && !m.stopping) {
		daemon_notify(NULL, m.cfg, m.n);
		m.status_at = t + DAEMON_STATUS_EVERY;
	}
	if (m.stopping) {
		if (m.kill_at > 0 && t >= m.kill_at && live() > 0) {
			log_msg(LOG_ERR,
			        "workers still running after shutdown_timeout: killing them");
			signal_all(SIGKILL);
			m.kill_at = 0;
		}
		return;
	}
	for (int i = 0; i < m.n; i++)
		if (m.respawn_at[i] > 0 && t >= m.respawn_at[i])
			spawn(i);
}

/* How long the master may sleep: until the next replacement or SIGKILL is
 * due, else until a signal comes (an hour, then it looks again). */
static struct timespec
until_due(void)
{
	double t = now(), due = t + 3600;

	for (int i = 0; i < m.n; i++)
		if (m.respawn_at[i] > 0 && m.respawn_at[i] < due)
			due = m.respawn_at[i];
	if (m.stopping && m.kill_at > 0 && m.kill_at < due)
		due = m.kill_at;
	if (!m.stopping && m.status_at > 0 && m.status_at < due)
		due = m.status_at;
	/* A little late rather than early: no busy loop around the deadline. */
	long long ns = (long long)((due > t ? due - t : 0) * 1e9) + 1000000;
	return (struct timespec){(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
}

static int
start(void)
{
	char err[512];

	daemon_prepare(m.cfg);
	if (tickets_init() < 0) {
		log_msg(LOG_ERR, "cannot make a ticket key: no randomness");
		return DAEMON_EXIT_RUNTIME;
	}
	session_ids_init();
	if (m.cfg->user) {
		uid_t uid;
		gid_t gid;
		const char *name;
		if (daemon_user(m.cfg, &uid, &gid, &name) < 0)
			return DAEMON_EXIT_RUNTIME;
		listener_set_owner(uid);
	}
	for (m.nsets = 0; m.nsets < m.n; m.nsets++) {
		init_set(m.nsets);
		if (listener_apply(&m.sets[m.nsets], m.cfg, err, sizeof(err)) < 0)
			return daemon_start_failed(err);
	}
	if (metrics_apply(NULL, m.cfg, err, sizeof(err)) < 0)
		return daemon_start_failed(err);
	if (m.cfg->pidfile) {
		if (daemon_write_pidfile(m.cfg->pidfile) < 0)
			return DAEMON_EXIT_RUNTIME;
		m.pidfile_written = true;
	}
	daemon_reload_outcome_at(m.cfg->pidfile);
	/* Keys that only root may read (certbot's privkey.pem) are read again
	 * at reload: the master keeps root for that and serves nothing. */
	if (m.privileged) {
		log_msg(LOG_INFO, "master keeps root to read keys at reload; workers run as %s",
		        m.cfg->user ? m.cfg->user : m.cfg->group);
		return 0;
	}
	if (daemon_drop_privileges(m.cfg) < 0)
		return DAEMON_EXIT_RUNTIME;
	return 0;
}

int
workers_run(struct config *cfg, const char *path)
{
	char *pidfile = cfg->pidfile ? strdup(cfg->pidfile) : NULL;
	int rc;

	m.cfg = cfg;
	m.path = path;
	m.self = getpid();
	m.n = workers_count(cfg);
	m.privileged = workers_privileged(cfg);
	/* Blocked from here on, taken by sigtimedwait; workers unblock them
	 * once their handlers are in place. */
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&m.sigs);
	sigaddset(&m.sigs, SIGCHLD);
	sigaddset(&m.sigs, SIGHUP);
	sigaddset(&m.sigs, SIGTERM);
	sigaddset(&m.sigs, SIGINT);
	sigaddset(&m.sigs, SIGUSR1);
	sigaddset(&m.sigs, SIGUSR2);
	sigaddset(&m.sigs, SIGQUIT);
	sigprocmask(SIG_BLOCK, &m.sigs, NULL);
	rc = start();
	if (rc == 0) {
		log_msg(LOG_INFO, "postern %s started workers=%d", POSTERN_VERSION, m.n);
		for (int i = 0; i < m.n; i++)
			spawn(i);
		/* Every socket is bound and privileges are dropped. */
		daemon_notify("READY=1", m.cfg, m.n);
		if (sd_notify_wanted())
			m.status_at = now() + DAEMON_STATUS_EVERY;
		while (!m.stopping || live() > 0) {
			struct timespec wait = until_due();
			siginfo_t info;

			switch (sigtimedwait(&m.sigs, &info, &wait)) {
			case SIGHUP:
				if (!m.stopping)
					reload();
				break;
			case SIGTERM:
			case SIGINT:
				stop(false);
				break;
			case SIGQUIT:
				stop(true);
				break;
			case SIGUSR1:
				log_reopen();
				log_msg(LOG_INFO, "log file reopened");
				signal_all(SIGUSR1);
				break;
			default: /* SIGCHLD, a timeout */
				break;
			}
			reap();
			tick();
		}
		log_msg(LOG_INFO, "stopped");
	}
	for (int i = 0; i < m.nsets; i++)
		listener_close_all(&m.sets[i]);
	daemon_teardown(NULL, m.cfg, m.pidfile_written ? pidfile : NULL);
	free(pidfile);
	return rc;
}
