/* One side of a session: a socket, an optional SSL, and its two libev
 * watchers. Plain and TLS sockets return the same outcomes, so the relay has
 * no "if (ssl)". */
#ifndef POSTERN_ENDPOINT_H
#define POSTERN_ENDPOINT_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ev.h>
#include <openssl/ssl.h>

enum ep_result {
	EP_WANT_READ = -1,  /* try again when the socket is readable */
	EP_WANT_WRITE = -2, /* try again when the socket is writable */
	EP_EOF = -3,        /* orderly end of the peer's stream */
	EP_ERR = -4         /* fatal; see ep->err */
};

struct endpoint {
	int fd;
	SSL *ssl;
	ev_io rio, wio;
	bool ssl_dead; /* a fatal SSL error occurred: SSL_shutdown is forbidden */
	bool wr_shut;  /* our write side is closed (FIN or close_notify sent) */
	/* With track_ready (sessions set it; its owner clears drained when the
	 * read watcher fires), a read that found the socket drained is not
	 * tried again before the socket is reported readable: ep_read answers
	 * EP_WANT_READ without a system call, and the caller watches for
	 * readability as after any EP_WANT_READ. */
	bool track_ready;
	bool drained;
	int sys_errno; /* errno of the last EP_ERR on a syscall, or 0 */
	unsigned long ssl_err;
};

/* Watchers call CB with w->data = DATA. The fd is not owned until ep_attach. */
void ep_init(struct endpoint *ep, void (*cb)(struct ev_loop *, ev_io *, int), void *data);
void ep_attach(struct endpoint *ep, int fd, SSL *ssl);

/* Arms exactly the watchers asked for; stops the rest. */
void ep_watch(struct ev_loop *loop, struct endpoint *ep, bool rd, bool wr);

ssize_t ep_read(struct endpoint *ep, void *dst, size_t len);
ssize_t ep_write(struct endpoint *ep, const void *src, size_t len);

/* Drives SSL_do_handshake: 1 done, or EP_WANT_READ/EP_WANT_WRITE/EP_ERR. */
int ep_handshake(struct endpoint *ep);

/* Closes our write direction: close_notify on TLS, FIN on plain sockets. */
void ep_shutdown_write(struct endpoint *ep);

/* Stops watchers, sends close_notify once if still healthy, frees SSL, closes. */
void ep_close(struct ev_loop *loop, struct endpoint *ep);

/* Connects a fresh non-blocking socket to SA (TCP_NODELAY unless a Unix
 * socket) and attaches it: 0 connected, EP_WANT_WRITE in progress (see
 * ep_connect_result once writable), EP_ERR (ep->sys_errno) on failure. */
int ep_connect(struct endpoint *ep, const struct sockaddr *sa, socklen_t len);

/* The outcome of a connect in progress: 0 connected, EINPROGRESS or
 * EALREADY still going, else the errno it failed with. */
int ep_connect_result(const struct endpoint *ep);

/* Copies up to LEN waiting bytes without taking them: the count, EP_EOF,
 * EP_WANT_READ (none yet) or EP_ERR (ep->sys_errno). Plain sockets only. */
ssize_t ep_peek(struct endpoint *ep, void *dst, size_t len);

/* The local address of the socket (the client's view of us). */
void ep_local_addr(const struct endpoint *ep, struct sockaddr_storage *ss);

/* Puts SSL (fresh, from tls.c; may be NULL) on the socket, as the server
 * (SERVER) or the client side, to be driven by ep_handshake. False, with
 * SSL freed, if it cannot. */
bool ep_start_tls(struct endpoint *ep, SSL *ssl, bool server);

/* What the log says of an established TLS connection. */
struct ep_tls_info {
	const char *version, *cipher;
	const char *sni;    /* the client's server name (server side), or NULL */
	bool peer_cert;     /* the peer presented a certificate (maybe in a resumed session) */
	bool peer_cert_now; /* ... in this handshake, not a resumed one */
	bool peer_verified; /* ... and it verified */
};
void ep_tls_summary(const struct endpoint *ep, struct ep_tls_info *info);

/* Why the peer's certificate was not accepted, or NULL. */
const char *ep_verify_error(const struct endpoint *ep);

/* Human-readable cause of the last EP_ERR. */
const char *ep_strerror(const struct endpoint *ep, char *buf, size_t len);

#endif
