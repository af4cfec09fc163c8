/* What every serving process does: the start-up steps (configuration
 * reload, key log, descriptor limit, pidfile, privileges) and the event
 * loop of a process that serves connections, alone or as one worker. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include <postern/config.h>
#include <postern/config_advice.h>
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

static const char *config_path;
/* The pidfile of a single process (a worker has none of its own). */
static char *single_pidfile;

void
daemon_notify(const char *state, const struct config *cfg, int workers)
{
	unsigned long long sessions = metrics_sessions_open();

	sd_notify_status(state, "%zu service%s, %llu session%s, %d worker%s", cfg->nservices,
	                 cfg->nservices == 1 ? "" : "s", sessions, sessions == 1 ? "" : "s",
	                 workers, workers == 1 ? "" : "s");
}

/* The first error of the last daemon_load, the reason a reload gives. */
static char load_error[512];
/* Where a reload's outcome goes besides $RUNTIME_DIRECTORY (postern -s). */
static char *outcome_path;

const char *
daemon_load_error(void)
{
	return load_error;
}

/* Loads the configuration, sending any errors to the log line by line. */
struct config *
daemon_load(const char *path)
{
	char *text = NULL;
	size_t len = 0;
	FILE *errs = open_memstream(&text, &len);
	struct config *cfg;

	if (errs == NULL)
		return NULL;
	cfg = config_load(path, errs);
	fclose(errs);
	snprintf(load_error, sizeof(load_error), "configuration has errors: %.*s",
	         text ? (int)strcspn(text, "\n") : 0, text ? text : "");
	for (char *line = text, *nl; line && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		log_msg(strstr(line, ": warning: ") ? LOG_WARNING : LOG_ERR, "%s", line);
		if (!nl)
			break;
	}
	free(text);
	return cfg;
}

static void
warn_in_log(void *arg, const char *text)
{
	(void)arg;
	log_msg(LOG_WARNING, "WARNING: %s", text);
}

/* Secrets on disk: say so loudly, every time. */
void
daemon_open_keylog(const struct config *cfg)
{
	if (tls_keylog_open(cfg->keylog) < 0) {
		log_msg(LOG_ERR, "cannot open keylog %s: %s", cfg->keylog, strerror(errno));
		return;
	}
	for (size_t i = 0; i < cfg->nservices; i++)
		if (cfg->services[i].backend_tls != TLSMODE_OFF && !cfg->services[i].backend_verify)
			log_msg(LOG_WARNING,
			        "WARNING: service %s does not verify its backend's certificate "
			        "(backend_verify = no): anyone on the path can impersonate it",
			        cfg->services[i].name);
	if (cfg->keylog)
		log_msg(LOG_WARNING,
		        "WARNING: TLS secrets of every session are written to %s (keylog): "
		        "anyone who reads it can decrypt the traffic. Debugging only.",
		        cfg->keylog);
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct service *svc = &cfg->services[i];
		if (svc->log_commands)
			log_msg(LOG_WARNING,
			        "WARNING: service %s logs every command and reply (log_commands; "
			        "credentials redacted): mail metadata ends up in the log",
			        svc->name);
		if (svc->capture_dir)
			log_msg(LOG_WARNING,
			        "WARNING: service %s writes a transcript of every session to %s "
			        "(capture_dir; credentials redacted, files mode 0600)",
			        svc->name, svc->capture_dir);
	}
	config_advice(cfg, warn_in_log, NULL);
}

void
daemon_reload_outcome_at(const char *pidfile)
{
	free(outcome_path);
	outcome_path = NULL;
	if (pidfile && asprintf(&outcome_path, "%s" DAEMON_OUTCOME_SUFFIX, pidfile) < 0)
		outcome_path = NULL;
}

/* The outcome of a reload to PATH: "ok" or "refused: REASON". Written
 * whole (rename), so never read half-done. */
static void
write_outcome_file(const char *path, const char *refusal)
{
	char tmp[1100];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return;
	f = fopen(tmp, "w");
	if (f == NULL) {
		log_msg(LOG_WARNING, "cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	if (refusal) {
		fputs("refused: ", f);
		for (const char *p = refusal; *p; p++) /* one line */
			fputc((unsigned char)*p < 0x20 ? '?' : *p, f);
		fputc('\n', f);
	} else {
		fputs("ok\n", f);
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		log_msg(LOG_WARNING, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
}

/* For systemd's ExecReload, which waits for it: $RUNTIME_DIRECTORY/reload
 * (RuntimeDirectory=); for postern -s reload: next to the pidfile. */
static void
write_reload_outcome(const char *refusal)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");
	char path[1024];
	size_t dlen;

	if (outcome_path)
		write_outcome_file(outcome_path, refusal);
	if (dir == NULL || *dir != '/')
		return;
	dlen = strcspn(dir, ":"); /* several directories: the first */
	if (dlen + sizeof("/reload") > sizeof(path))
		return;
	snprintf(path, sizeof(path), "%.*s/reload", (int)dlen, dir);
	write_outcome_file(path, refusal);
}

void
daemon_reload_refused(const char *why)
{
	sd_notify_status("READY=1", "reload refused: %s", why);
	write_reload_outcome(why);
	metrics_config_reloaded(false);
}

void
daemon_reload_done(const struct config *cfg, int workers)
{
	daemon_notify("READY=1", cfg, workers);
	write_reload_outcome(NULL);
	metrics_config_reloaded(true);
}

/* With backend_auth = oauth2 the process holds refresh and access tokens
 * and the password checks of the accounts: no core dump may carry them,
 * and no other process of the same user may read its memory. (A process
 * that dropped privileges is so already; the one run by a user's own
 * systemd unit, the usual home of a legacy client's gateway, is not.) */
static void
guard_secrets(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nservices; i++) {
		if (cfg->services[i].oauth2) {
			if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
				log_msg(LOG_WARNING, "cannot forbid core dumps: %s",
				        strerror(errno));
			return;
		}
	}
}

void
daemon_prepare(const struct config *cfg)
{
	guard_secrets(cfg);
	daemon_raise_fd_limit(cfg);
	daemon_open_keylog(cfg);
	tickets_use(cfg->tickets);
}

int
daemon_start_failed(const char *why)
{
	log_msg(LOG_ERR, "%s", why);
	sd_notify_status(NULL, "%s", why); /* systemctl status shows why */
	return DAEMON_EXIT_RUNTIME;
}

void
daemon_apply_config(struct ev_loop *loop, const struct config *cfg)
{
	char err[512];

	if (log_configure(cfg, err, sizeof(err)) < 0)
		log_msg(LOG_ERR, "reload: %s; logging unchanged", err);
	if (metrics_apply(loop, cfg, err, sizeof(err)) < 0)
		log_msg(LOG_ERR, "reload: %s; metrics unchanged", err);
	guard_secrets(cfg);
	daemon_open_keylog(cfg);
	tickets_use(cfg->tickets); /* re-read files; the random key stays */
}

void
daemon_teardown(struct ev_loop *loop, struct config *cfg, const char *pidfile)
{
	metrics_stop(loop);
	if (pidfile && unlink(pidfile) < 0)
		log_msg(LOG_WARNING, "cannot remove pidfile %s: %s", pidfile, strerror(errno));
	tickets_use(NULL);
	tickets_wipe();
	config_unref(cfg);
	tls_keylog_open(NULL);
	log_detach_loop();
	daemon_reload_outcome_at(NULL);
}

void
daemon_reload(const char *path, struct ev_loop *loop, const struct daemon_reload_ops *ops)
{
	char err[512];
	struct config *cfg;

	sd_notify_reloading();
	cfg = daemon_load(path);
	if (cfg == NULL) {
		log_msg(LOG_ERR, "reload refused: configuration has errors; the old one stays");
		daemon_reload_refused(daemon_load_error());
		return;
	}
	if (ops->listen(ops->arg, cfg, err, sizeof(err)) < 0) {
		log_msg(LOG_ERR, "reload refused: %s; the old configuration stays", err);
		daemon_reload_refused(err);
		config_unref(cfg);
		return;
	}
	daemon_apply_config(loop, cfg);
	int workers = ops->take(ops->arg, cfg);
	log_msg(LOG_INFO, "configuration reloaded");
	daemon_reload_done(cfg, workers);
}

static int
single_listen(void *arg, struct config *cfg, char *err, size_t errlen)
{
	struct server *srv = arg;

	if (listener_apply(srv, cfg, err, errlen) < 0)
		return -1;
	/* One process cannot turn into a master of workers in place. */
	if (cfg->workers > 1)
		log_msg(LOG_WARNING,
		        "workers = %d takes effect at the next start; until then one "
		        "process serves",
		        cfg->workers);
	return 0;
}

static int
single_take(void *arg, struct config *cfg)
{
	struct server *srv = arg;

	config_unref(srv->cfg);
	srv->cfg = cfg;
	listener_start_all(srv);
	return 1;
}

static void
reload(struct server *srv)
{
	const struct daemon_reload_ops ops = {single_listen, single_take, srv};

	daemon_reload(config_path, srv->loop, &ops);
}

static void
on_status_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	daemon_notify(NULL, srv->cfg, 1);
}

static void
on_shutdown_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	log_msg(LOG_INFO, "shutdown_timeout reached: closing %d sessions", srv->active);
	session_close_all(srv);
	ev_break(loop, EVBREAK_ALL);
}

/* Stop accepting; the loop ends with the last session, or when the grace
 * (if any) runs out. */
static void
stop_accepting(struct server *srv, double grace)
{
	srv->stopping = true;
	listener_close_all(srv);
	/* A draining worker leaves /metrics to the new set; a shutdown keeps
	 * it served while sessions finish. */
	if (srv->draining)
		metrics_stop(srv->loop);
	if (srv->active == 0) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	if (grace >= 0) {
		ev_timer_set(&srv->shutdown_timer, grace, 0.);
		ev_timer_start(srv->loop, &srv->shutdown_timer);
	}
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	switch (w->signum) {
	case SIGHUP:
		/* A worker's configuration comes from the master, by replacement. */
		if (!srv->stopping && !srv->worker)
			reload(srv);
		break;
	case SIGUSR1:
		log_reopen();
		log_msg(LOG_INFO, "log file reopened");
		break;
	case SIGUSR2:
		/* Replaced after a reload: serve what is open, however long. */
		if (srv->worker && !srv->stopping) {
			srv->draining = true;
			stop_accepting(srv, -1);
		}
		break;
	case SIGQUIT:
		/* A worker's "stop waiting", from its master. */
		oauth2_login_stop_now();
		on_shutdown_timer(loop, &srv->shutdown_timer, 0);
		break;
	default:
		if (srv->stopping && !srv->draining) {
			/* A second signal stops waiting; a worker takes that from
			 * its master alone (SIGQUIT), so that a SIGTERM sent to
			 * every process at once is not taken for a second one. */
			if (!srv->worker) {
				oauth2_login_stop_now();
				on_shutdown_timer(loop, &srv->shutdown_timer, 0);
			}
			return;
		}
		srv->draining = false;
		log_msg(LOG_INFO, "shutting down: %d sessions, waiting up to %.0fs", srv->active,
		        srv->cfg->shutdown_timeout);
		if (!srv->worker)
			sd_notify_status("STOPPING=1", "shutting down: %d sessions", srv->active);
		stop_accepting(srv, srv->cfg->shutdown_timeout);
		break;
	}
}

/* Two descriptors per session plus listeners and logs. */
void
daemon_raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	rlim_t need = (rlim_t)cfg->max_connections * 2 + 64;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_msg(LOG_WARNING,
		        "descriptor limit %llu is below what max_connections = %d needs (%llu)",
		        (unsigned long long)rl.rlim_cur, cfg->max_connections,
		        (unsigned long long)need);
}

int
daemon_user(const struct config *cfg, uid_t *uid, gid_t *gid, const char **name)
{
	struct passwd *pw;

	*uid = getuid();
	*gid = getgid();
	*name = NULL;
	if (cfg->user == NULL)
		return 0;
	pw = getpwnam(cfg->user);
	if (pw == NULL) {
		log_msg(LOG_ERR, "unknown user '%s'", cfg->user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	*name = pw->pw_name;
	return 0;
}

int
daemon_drop_privileges(const struct config *cfg)
{
	uid_t uid;
	gid_t gid;
	const char *name;

	if (cfg->user == NULL && cfg->group == NULL) {
		if (geteuid() == 0)
			log_msg(LOG_WARNING,
			        "running as root: set user and group to drop privileges");
		return 0;
	}
	if (daemon_user(cfg, &uid, &gid, &name) < 0)
		return -1;
	if (cfg->group) {
		struct group *gr = getgrnam(cfg->group);
		if (gr == NULL) {
			log_msg(LOG_ERR, "unknown group '%s'", cfg->group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	/* Started as that user already (systemd's User=): nothing to switch,
	 * and no capability to switch with. */
	if (geteuid() != 0 && uid == geteuid() && gid == getegid()) {
		log_msg(LOG_INFO, "running as uid=%d gid=%d", (int)uid, (int)gid);
		return 0;
	}
	/* The log file must stay writable for SIGUSR1 reopens. */
	if (log_file_fd() >= 0 && fchown(log_file_fd(), uid, gid) < 0)
		log_msg(LOG_WARNING, "cannot hand the log file to the user: %s", strerror(errno));
	if ((name ? initgroups(name, gid) : setgroups(0, NULL)) < 0 || setgid(gid) < 0 ||
	    setuid(uid) < 0) {
		log_msg(LOG_ERR, "cannot drop privileges: %s", strerror(errno));
		return -1;
	}
	if (uid != 0 && setuid(0) == 0) {
		log_msg(LOG_ERR, "privileges could be regained after dropping them");
		return -1;
	}
	log_msg(LOG_INFO, "running as uid=%d gid=%d", (int)uid, (int)gid);
	return 0;
}

int
daemon_write_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
		log_msg(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The loop of a serving process, from the signal handlers to the exit.
 * BIND (single process only) binds, writes the pidfile and drops
 * privileges once the handlers are in place; a worker's sockets are bound
 * by its master. */
static int
run(struct server *srv, int (*bind)(struct server *))
{
	enum { NSIG_HANDLED = 6 };
	ev_signal sigs[NSIG_HANDLED];
	ev_timer status;
	const int signums[NSIG_HANDLED] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGQUIT};
	sigset_t all;
	int rc = 0;

	srv->loop = ev_default_loop(EVFLAG_AUTO);
	log_attach_loop(srv->loop);
	listener_init(srv);
	ev_init(&srv->shutdown_timer, on_shutdown_timer);
	srv->shutdown_timer.data = srv;
	/* Handlers before the pidfile exists: a SIGHUP sent as soon as it
	 * appears must reload, not kill. A worker starts with these signals
	 * blocked by its master; what came meanwhile is delivered now. */
	sigemptyset(&all);
	for (int i = 0; i < NSIG_HANDLED; i++) {
		if (signums[i] == SIGQUIT && !srv->worker)
			continue; /* a single process keeps SIGQUIT's default */
		ev_signal_init(&sigs[i], on_signal, signums[i]);
		sigs[i].data = srv;
		ev_signal_start(srv->loop, &sigs[i]);
		sigaddset(&all, signums[i]);
	}
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	if (bind && (rc = bind(srv)) != 0)
		goto out;
	listener_start_all(srv);
	metrics_start(srv->loop);
	ev_timer_init(&status, on_status_timer, DAEMON_STATUS_EVERY, DAEMON_STATUS_EVERY);
	status.data = srv;
	if (!srv->worker) {
		log_msg(LOG_INFO, "postern %s started", POSTERN_VERSION);
		/* Every listener is bound and privileges are dropped. */
		daemon_notify("READY=1", srv->cfg, 1);
		if (sd_notify_wanted())
			ev_timer_start(srv->loop, &status);
	} else {
		sd_notify_forget();
	}
	ev_run(srv->loop, 0);
	ev_timer_stop(srv->loop, &status);
	/* No loop will flush the log any more: the last lines are written
	 * directly, waiting a bounded time. */
	log_detach_loop();
	session_close_all(srv);
	/* a rotated refresh token on its way is stored before the exit */
	oauth2_login_finish(srv->loop);
	if (!srv->worker)
		log_msg(LOG_INFO, "stopped");
out:
	listener_close_all(srv);
	daemon_teardown(srv->loop, srv->cfg, single_pidfile);
	ev_loop_destroy(srv->loop);
	return rc;
}

static int
bind_single(struct server *srv)
{
	char err[512];

	/* The pidfile is removed at exit only once this process wrote it: a
	 * start that fails before leaves a running instance's pidfile alone. */
	char *pidfile = single_pidfile;

	single_pidfile = NULL;
	daemon_prepare(srv->cfg);
	if (listener_apply(srv, srv->cfg, err, sizeof(err)) < 0 ||
	    metrics_apply(srv->loop, srv->cfg, err, sizeof(err)) < 0) {
		free(pidfile);
		return daemon_start_failed(err);
	}
	if (pidfile && daemon_write_pidfile(pidfile) < 0) {
		free(pidfile);
		return DAEMON_EXIT_RUNTIME;
	}
	single_pidfile = pidfile;
	if (daemon_drop_privileges(srv->cfg) < 0)
		return DAEMON_EXIT_RUNTIME;
	return 0;
}

int
daemon_serve(struct config *cfg, const char *path)
{
	struct server srv = {0};
	int rc;

	config_path = path;
	srv.cfg = cfg;
	single_pidfile = cfg->pidfile ? strdup(cfg->pidfile) : NULL;
	daemon_reload_outcome_at(cfg->pidfile);
	rc = run(&srv, bind_single);
	free(single_pidfile);
	single_pidfile = NULL;
	return rc;
}

int
daemon_run_worker(struct server *srv)
{
	srv->worker = true;
	tickets_use(srv->cfg->tickets);
	return run(srv, NULL);
}
