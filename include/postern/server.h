/* Process-wide state of one worker: the loop, the configuration in force,
 * the listeners and the live sessions. Passed around, never global. */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

#include <stdbool.h>

#include <ev.h>

#include <postern/config.h>

struct listener;
struct session;

struct server {
	struct ev_loop *loop;
	struct config *cfg; /* in force for new connections */
	struct listener *listeners;
	struct session *sessions; /* all live sessions, for shutdown */
	int active;               /* live sessions, against max_connections */
	int handshakes;           /* client TLS handshakes in progress, against max_handshakes */
	bool stopping;            /* SIGTERM received: no new sessions */
	bool draining;            /* replaced on reload: exit when the last session ends */
	bool worker;              /* one of several: SO_REUSEPORT sockets, config by the master */
	bool quiet;               /* another worker's copy: do not log listeners */
	ev_timer accept_pause;    /* EMFILE back-off */
	ev_timer shutdown_timer;
};

#endif
