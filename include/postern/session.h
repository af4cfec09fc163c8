/* One client <-> backend pair, from accept to the single exit door. */
#ifndef POSTERN_SESSION_H
#define POSTERN_SESSION_H

#include <sys/socket.h>

#include <postern/config.h>
#include <postern/server.h>

/* Takes ownership of FD, accepted on a listener of SVC (part of CFG). */
void session_start(struct server *srv, struct config *cfg, const struct service *svc, int fd,
                   const struct sockaddr *peer, socklen_t peerlen);

/* Makes the session id counter, shared with workers forked afterwards
 * (otherwise made at the first session). */
void session_ids_init(void);

/* SIGTERM grace over: closes every live session with reason=shutdown. */
void session_close_all(struct server *srv);

/* Formats ADDR as "1.2.3.4:5" or "[::1]:5". */
void session_format_addr(const struct sockaddr *sa, char *dst, size_t len);

#endif
