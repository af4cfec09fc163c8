/* Start-up order: parse and check the configuration, open logs, bind,
 * write the pidfile, drop privileges, then serve until a signal says stop. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include <postern/config.h>
#include <postern/listener.h>
#include <postern/log.h>
#include <postern/metrics.h>
#include <postern/server.h>
#include <postern/session.h>
#include <postern/tickets.h>
#include <postern/tls.h>

#define DEFAULT_CONFIG "/etc/postern/postern.ini"

enum { EXIT_CONFIG = 1, EXIT_RUNTIME = 2 };

static const char *config_path = DEFAULT_CONFIG;

static void
usage(FILE *out)
{
	fprintf(out, "usage: postern [-c FILE] [-t] [-V] [-h]\n"
	             "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
	             "  -t       check the configuration and exit\n"
	             "  -V       print the version and exit\n"
	             "  -h       print this help and exit\n");
}

/* Loads the configuration, sending any errors to the log line by line. */
static struct config *
load_logged(const char *path)
{
	char *text = NULL;
	size_t len = 0;
	FILE *errs = open_memstream(&text, &len);
	struct config *cfg;

	if (errs == NULL)
		return NULL;
	cfg = config_load(path, errs);
	fclose(errs);
	for (char *line = text, *nl; line && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		log_msg(LOG_ERR, "%s", line);
		if (!nl)
			break;
	}
	free(text);
	return cfg;
}

/* Secrets on disk: say so loudly, every time. */
static void
open_keylog(const struct config *cfg)
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
}

static void
reload(struct server *srv)
{
	char err[512];
	struct config *cfg = load_logged(config_path);

	if (cfg == NULL) {
		log_msg(LOG_ERR, "reload refused: configuration has errors; the old one stays");
		return;
	}
	if (listener_apply(srv, cfg, err, sizeof(err)) < 0) {
		log_msg(LOG_ERR, "reload refused: %s; the old configuration stays", err);
		config_unref(cfg);
		return;
	}
	if (log_configure(cfg, err, sizeof(err)) < 0)
		log_msg(LOG_ERR, "reload: %s; logging unchanged", err);
	if (metrics_apply(srv->loop, cfg, err, sizeof(err)) < 0)
		log_msg(LOG_ERR, "reload: %s; metrics unchanged", err);
	open_keylog(cfg);
	tickets_use(cfg->tickets); /* re-read files; the random key stays */
	config_unref(srv->cfg);
	srv->cfg = cfg;
	listener_start_all(srv);
	log_msg(LOG_INFO, "configuration reloaded");
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

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	switch (w->signum) {
	case SIGHUP:
		if (!srv->stopping)
			reload(srv);
		break;
	case SIGUSR1:
		log_reopen();
		log_msg(LOG_INFO, "log file reopened");
		break;
	default:
		if (srv->stopping) {
			/* A second signal: stop waiting. */
			on_shutdown_timer(loop, &srv->shutdown_timer, 0);
			return;
		}
		srv->stopping = true;
		listener_close_all(srv);
		log_msg(LOG_INFO, "shutting down: %d sessions, waiting up to %.0fs", srv->active,
		        srv->cfg->shutdown_timeout);
		if (srv->active == 0) {
			ev_break(loop, EVBREAK_ALL);
			return;
		}
		ev_timer_set(&srv->shutdown_timer, srv->cfg->shutdown_timeout, 0.);
		ev_timer_start(loop, &srv->shutdown_timer);
		break;
	}
}

/* Two descriptors per session plus listeners and logs. */
static void
raise_fd_limit(const struct config *cfg)
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

static int
drop_privileges(const struct config *cfg)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	const char *name = NULL;

	if (cfg->user == NULL && cfg->group == NULL) {
		if (geteuid() == 0)
			log_msg(LOG_WARNING,
			        "running as root: set user and group to drop privileges");
		return 0;
	}
	if (cfg->user) {
		struct passwd *pw = getpwnam(cfg->user);
		if (pw == NULL) {
			log_msg(LOG_ERR, "unknown user '%s'", cfg->user);
			return -1;
		}
		uid = pw->pw_uid;
		gid = pw->pw_gid;
		name = pw->pw_name;
	}
	if (cfg->group) {
		struct group *gr = getgrnam(cfg->group);
		if (gr == NULL) {
			log_msg(LOG_ERR, "unknown group '%s'", cfg->group);
			return -1;
		}
		gid = gr->gr_gid;
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

static int
write_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
		log_msg(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int
serve(struct config *cfg)
{
	struct server srv = {0};
	ev_signal sigs[4];
	const int signums[4] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1};
	char err[512];
	char *pidfile = cfg->pidfile ? strdup(cfg->pidfile) : NULL;
	int rc = 0;

	srv.loop = ev_default_loop(EVFLAG_AUTO);
	srv.cfg = cfg;
	tickets_use(cfg->tickets);
	log_attach_loop(srv.loop);
	listener_init(&srv);
	ev_init(&srv.shutdown_timer, on_shutdown_timer);
	srv.shutdown_timer.data = &srv;
	/* Handlers before the pidfile exists: a SIGHUP sent as soon as it
	 * appears must reload, not kill. */
	for (int i = 0; i < 4; i++) {
		ev_signal_init(&sigs[i], on_signal, signums[i]);
		sigs[i].data = &srv;
		ev_signal_start(srv.loop, &sigs[i]);
	}
	raise_fd_limit(cfg);
	open_keylog(cfg);
	if (listener_apply(&srv, cfg, err, sizeof(err)) < 0 ||
	    metrics_apply(srv.loop, cfg, err, sizeof(err)) < 0) {
		log_msg(LOG_ERR, "%s", err);
		rc = EXIT_RUNTIME;
		goto out;
	}
	if (pidfile && write_pidfile(pidfile) < 0) {
		free(pidfile);
		pidfile = NULL;
		rc = EXIT_RUNTIME;
		goto out;
	}
	if (drop_privileges(cfg) < 0) {
		rc = EXIT_RUNTIME;
		goto out;
	}
	listener_start_all(&srv);
	log_msg(LOG_INFO, "postern %s started", POSTERN_VERSION);
	ev_run(srv.loop, 0);
	/* No loop will flush the log any more: the last lines are written
	 * directly, waiting a bounded time. */
	log_detach_loop();
	session_close_all(&srv);
	log_msg(LOG_INFO, "stopped");
out:
	listener_close_all(&srv);
	metrics_stop(srv.loop);
	if (pidfile && unlink(pidfile) < 0)
		log_msg(LOG_WARNING, "cannot remove pidfile %s: %s", pidfile, strerror(errno));
	free(pidfile);
	tickets_use(NULL);
	config_unref(srv.cfg);
	tls_keylog_open(NULL);
	log_detach_loop();
	ev_loop_destroy(srv.loop);
	return rc;
}

int
main(int argc, char **argv)
{
	bool check_only = false;
	struct config *cfg;
	char err[512];
	int c;

	while ((c = getopt(argc, argv, "c:tVh")) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'V':
			printf("postern %s\n", POSTERN_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_CONFIG;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_CONFIG;
	}
	signal(SIGPIPE, SIG_IGN);
	tls_init();
	cfg = config_load(config_path, stderr);
	if (cfg == NULL)
		return EXIT_CONFIG;
	if (check_only) {
		printf("postern: configuration OK\n");
		config_unref(cfg);
		return 0;
	}
	if (log_configure(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "postern: %s\n", err);
		config_unref(cfg);
		return EXIT_RUNTIME;
	}
	return serve(cfg);
}
