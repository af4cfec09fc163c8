/* workers > 1, or root with a user: a master process that binds one SO_REUSEPORT socket per
 * worker and address, forks the workers, replaces one that dies, and on
 * SIGHUP starts a new set with the new configuration while the old set
 * finishes its sessions. */
#ifndef POSTERN_WORKERS_H
#define POSTERN_WORKERS_H

#include <postern/config.h>

/* The number of workers CFG asks for (auto is resolved at load). */
int workers_count(const struct config *cfg);

/* Started as root with a user or group: a master that keeps root (to read
 * keys at reload) and workers that drop privileges, even for workers = 1. */
bool workers_privileged(const struct config *cfg);

/* Runs the master until SIGTERM/SIGINT and the workers' exit; reloads PATH
 * on SIGHUP. Takes CFG. Returns the exit status. */
int workers_run(struct config *cfg, const char *path);

#endif
