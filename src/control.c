/* postern -s reload: the caller learns whether the daemon took the new
 * configuration, not just that a signal was sent. The daemon writes "ok" or
 * "refused: WHY" to PIDFILE.reload once the reload is done. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <postern/config.h>
#include <postern/control.h>
#include <postern/daemon.h>

/* A reload loads every certificate again: allow for many of them. */
#define ANSWER_WITHIN 30.0
#define POLL_NS 20000000L

/* The pidfile named by the configuration at PATH, read without loading
 * keys (the caller need not be able to read them). NULL, said, if none. */
static char *
pidfile_of(const char *path)
{
	char *text = NULL, *pidfile = NULL;
	size_t cap = 0;
	FILE *f = fopen(path, "r");
	struct config *cfg;

	if (f == NULL) {
		fprintf(stderr, "postern: %s: cannot open: %s\n", path, strerror(errno));
		return NULL;
	}
	if (getdelim(&text, &cap, '\0', f) < 0) {
		fprintf(stderr, "postern: %s: cannot read: %s\n", path, strerror(errno));
		fclose(f);
		free(text);
		return NULL;
	}
	fclose(f);
	cfg = config_load_string(path, text, false, stderr);
	free(text);
	if (cfg == NULL)
		return NULL;
	if (cfg->pidfile == NULL)
		fprintf(stderr, "postern: %s sets no pidfile: no daemon to find\n", path);
	else
		pidfile = strdup(cfg->pidfile);
	config_unref(cfg);
	return pidfile;
}

static long
read_pid(const char *pidfile)
{
	FILE *f = fopen(pidfile, "r");
	long pid = 0;

	if (f == NULL) {
		fprintf(stderr, "postern: cannot open pidfile %s: %s (is postern running?)\n",
		        pidfile, strerror(errno));
		return 0;
	}
	if (fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
		fprintf(stderr, "postern: pidfile %s holds no process id\n", pidfile);
		pid = 0;
	}
	fclose(f);
	return pid;
}

/* Waits for OUTCOME to appear; prints what it says. */
static int
await_outcome(const char *outcome, long pid)
{
	struct timespec step = {0, POLL_NS};
	char line[600];

	for (double waited = 0; waited < ANSWER_WITHIN; waited += POLL_NS / 1e9) {
		FILE *f = fopen(outcome, "r");
		if (f != NULL) {
			int got = fgets(line, sizeof(line), f) != NULL;
			fclose(f);
			line[strcspn(line, "\n")] = '\0';
			if (got && strcmp(line, "ok") == 0) {
				printf("postern: configuration reloaded (pid %ld)\n", pid);
				return 0;
			}
			fprintf(stderr, "postern: reload %s\n", got ? line : "outcome unreadable");
			return 1;
		}
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
			fprintf(stderr, "postern: pid %ld exited during the reload\n", pid);
			return 1;
		}
		nanosleep(&step, NULL);
	}
	fprintf(stderr, "postern: no reload outcome in %s within %.0fs\n", outcome, ANSWER_WITHIN);
	return 1;
}

int
control_send(const char *path, const char *what)
{
	char *pidfile, *outcome = NULL;
	long pid;
	int rc = DAEMON_EXIT_RUNTIME;

	if (strcmp(what, "reload") != 0) {
		fprintf(stderr, "postern: -s %s: only reload is known\n", what);
		return DAEMON_EXIT_CONFIG;
	}
	if ((pidfile = pidfile_of(path)) == NULL)
		return DAEMON_EXIT_CONFIG;
	pid = read_pid(pidfile);
	if (pid > 0 && asprintf(&outcome, "%s" DAEMON_OUTCOME_SUFFIX, pidfile) >= 0) {
		/* An answer from an earlier reload must not pass for this one. */
		if (unlink(outcome) < 0 && errno != ENOENT)
			fprintf(stderr, "postern: cannot remove %s: %s\n", outcome,
			        strerror(errno));
		else if (kill((pid_t)pid, SIGHUP) < 0)
			fprintf(stderr, "postern: cannot signal pid %ld (pidfile %s): %s\n", pid,
			        pidfile, strerror(errno));
		else
			rc = await_outcome(outcome, pid);
	}
	free(outcome);
	free(pidfile);
	return rc;
}
