/* workers > 1: a master process that binds one SO_REUSEPORT socket per
 * worker and address, forks the workers, replaces one that dies, and on
 * SIGHUP starts a new set with the new configuration while the old set
 * finishes its sessions. */
#ifndef POSTERN_WORKERS_H
#define POSTERN_WORKERS_H

#include <postern/config.h>

/* The number of workers CFG asks for (auto is resolved at load). */
int workers_count(const struct config *cfg);

/* Runs the master until SIGTERM/SIGINT and the workers' exit; reloads PATH
 * on SIGHUP. Takes CFG. Returns the exit status. */
int workers_run(struct config *cfg, const char *path);

#endif
