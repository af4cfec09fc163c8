/* Listening sockets: bind, accept, max_connections, EMFILE back-off, and
 * the reconciliation of listeners with a reloaded configuration. */
#ifndef POSTERN_LISTENER_H
#define POSTERN_LISTENER_H

#include <sys/types.h>

#include <postern/config.h>
#include <postern/server.h>

/* Prepares SRV's listener state (once, before listener_apply). */
void listener_init(struct server *srv);

/* Makes srv->listeners match CFG: keeps sockets whose address stays, binds
 * new ones, closes the rest, and points each at its service in CFG. All or
 * nothing: on failure nothing changes, -1 is returned and ERR says why. */
int listener_apply(struct server *srv, struct config *cfg, char *err, size_t errlen);

/* listener_apply in two steps, for a master applying one configuration to
 * the socket sets of all its workers at once: prepare binds what is new
 * (on failure nothing changes, -1 with ERR); then either commit (closes
 * what is no longer configured, points each listener at its service) or
 * abort (closes what prepare bound). */
int listener_prepare(struct server *srv, struct config *cfg, struct listener **plan, char *err,
                     size_t errlen);
void listener_commit(struct server *srv, struct config *cfg, struct listener *plan);
void listener_abort(struct server *srv, struct listener *plan);

/* Workers' sockets (SO_REUSEPORT) are made as UID: the kernel lets only
 * sockets of one owner share a port, and those bound after privileges are
 * dropped (a reload adding workers) are the user's. */
void listener_set_owner(uid_t uid);

/* Starts accepting on every listener. */
void listener_start_all(struct server *srv);

/* Closes every listener (shutdown). */
void listener_close_all(struct server *srv);

#endif
