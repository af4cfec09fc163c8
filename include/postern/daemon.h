/* The life of a serving process: start-up steps shared by a single process
 * and the master of workers, and the event loop that serves connections. */
#ifndef POSTERN_DAEMON_H
#define POSTERN_DAEMON_H

#include <sys/types.h>

#include <postern/config.h>
#include <postern/server.h>

enum { DAEMON_EXIT_CONFIG = 1, DAEMON_EXIT_RUNTIME = 2 };

/* Loads PATH, sending any errors to the log line by line; NULL on errors.
 * daemon_load_error: the first of them, as a reload's reason. */
struct config *daemon_load(const char *path);
const char *daemon_load_error(void);

/* Opens CFG's key log and says loudly what it and other debugging keys
 * expose. */
void daemon_open_keylog(const struct config *cfg);

/* The reload tail of both process models, once the listeners follow CFG:
 * logging, metrics (on LOOP; NULL in a master), the key log and the ticket
 * keys from CFG. What cannot be applied is logged and stays as it was. */
void daemon_apply_config(struct ev_loop *loop, const struct config *cfg);

/* The last steps of a process that served, in either model: metrics
 * stopped (on LOOP; NULL in a master), PIDFILE removed (none: NULL), the
 * ticket keys wiped, CFG released, the key log closed, the log flushed. */
void daemon_teardown(struct ev_loop *loop, struct config *cfg, const char *pidfile);

/* The first start-up steps of either model, before anything is bound: the
 * descriptor limit, the key log (with its warnings) and the ticket keys. */
void daemon_prepare(const struct config *cfg);

/* A start-up step failed for WHY: logged and shown in the service
 * manager's status. Returns the exit status to give. */
int daemon_start_failed(const char *why);

/* A reload (SIGHUP) in either model. LISTEN puts the listeners on the new
 * CFG, all or nothing: -1 with ERR refuses the reload and leaves
 * everything as it was. Then the rest of CFG is applied
 * (daemon_apply_config on LOOP) and TAKE hands CFG to the caller, which
 * releases the old one, starts serving the new one and returns its number
 * of workers. The outcome goes to the service manager and the reload file. */
struct daemon_reload_ops {
	int (*listen)(void *arg, struct config *cfg, char *err, size_t errlen);
	int (*take)(void *arg, struct config *cfg);
	void *arg;
};
void daemon_reload(const char *path, struct ev_loop *loop, const struct daemon_reload_ops *ops);

/* How often the service manager's status line (sessions) is refreshed. */
#define DAEMON_STATUS_EVERY 10.0

/* Raises the descriptor limit to its maximum; warns if max_connections
 * needs more. */
void daemon_raise_fd_limit(const struct config *cfg);

/* The ids of CFG's user (this process's own when unset; NAME then NULL).
 * -1, logged, for an unknown user. */
int daemon_user(const struct config *cfg, uid_t *uid, gid_t *gid, const char **name);

/* Switches to CFG's user and group; a process started as them already
 * (systemd's User=) stays as it is. */
int daemon_drop_privileges(const struct config *cfg);
int daemon_write_pidfile(const char *path);

/* Tells the service manager STATE ("READY=1", "RELOADING=1", or NULL for
 * the status alone) with a status line: services of CFG, sessions open,
 * WORKERS. Nothing without $NOTIFY_SOCKET. */
void daemon_notify(const char *state, const struct config *cfg, int workers);

/* The end of a reload (after sd_notify's RELOADING=1): READY=1 with the
 * status, and the outcome for ExecReload in $RUNTIME_DIRECTORY/reload
 * ("ok" or "refused: WHY") when systemd set that variable. */
void daemon_reload_done(const struct config *cfg, int workers);
void daemon_reload_refused(const char *why);

/* The outcome also goes to PIDFILE + DAEMON_OUTCOME_SUFFIX (none: NULL),
 * where postern -s reload waits for it. */
#define DAEMON_OUTCOME_SUFFIX ".reload"
void daemon_reload_outcome_at(const char *pidfile);

/* workers = 1: binds, writes the pidfile, drops privileges and serves until
 * stopped; reloads PATH on SIGHUP. Takes CFG. Returns the exit status. */
int daemon_serve(struct config *cfg, const char *path);

/* A worker: serves the listeners SRV holds (bound by the master) with
 * SRV->cfg until SIGTERM, or until its last session ends after SIGUSR2
 * (replaced on reload). Returns the exit status. */
int daemon_run_worker(struct server *srv);

#endif
