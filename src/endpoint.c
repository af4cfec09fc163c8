/* Socket and TLS I/O mapped to five outcomes. The OpenSSL error queue is
 * cleared before every SSL call so a stale entry from another connection
 * never turns WANT_READ into a fake fatal error. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include <postern/endpoint.h>

void
ep_init(struct endpoint *ep, void (*cb)(struct ev_loop *, ev_io *, int), void *data)
{
	memset(ep, 0, sizeof(*ep));
	ep->fd = -1;
	ev_init(&ep->rio, cb);
	ev_init(&ep->wio, cb);
	ep->rio.data = ep->wio.data = data;
}

void
ep_attach(struct endpoint *ep, int fd, SSL *ssl)
{
	ep->fd = fd;
	ep->ssl = ssl;
	ep->drained = false;
	ev_io_set(&ep->rio, fd, EV_READ);
	ev_io_set(&ep->wio, fd, EV_WRITE);
}

void
ep_watch(struct ev_loop *loop, struct endpoint *ep, bool rd, bool wr)
{
	if (ep->fd < 0)
		return;
	if (rd && !ev_is_active(&ep->rio))
		ev_io_start(loop, &ep->rio);
	else if (!rd && ev_is_active(&ep->rio))
		ev_io_stop(loop, &ep->rio);
	if (wr && !ev_is_active(&ep->wio))
		ev_io_start(loop, &ep->wio);
	else if (!wr && ev_is_active(&ep->wio))
		ev_io_stop(loop, &ep->wio);
}

/* Maps an SSL_* return value to an ep_result. */
static int
ssl_result(struct endpoint *ep, int ret)
{
	int e = SSL_get_error(ep->ssl, ret);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return EP_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return EP_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return EP_EOF;
	case SSL_ERROR_SYSCALL:
		ep->ssl_dead = true;
		ep->sys_errno = errno;
		ep->ssl_err = ERR_peek_error();
		if (ep->ssl_err == 0 && ret == 0)
			return EP_EOF; /* peer closed without close_notify */
		return EP_ERR;
	default:
		ep->ssl_dead = true;
		ep->sys_errno = 0;
		ep->ssl_err = ERR_peek_error();
		/* A TCP close without close_notify: most mail clients do this. */
		if (ERR_GET_REASON(ep->ssl_err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			return EP_EOF;
		}
		return EP_ERR;
	}
}

ssize_t
ep_read(struct endpoint *ep, void *dst, size_t len)
{
	if (ep->drained)
		return EP_WANT_READ;
	if (ep->ssl) {
		size_t got = 0;
		ERR_clear_error();
		int r = SSL_read_ex(ep->ssl, dst, len, &got);
		if (r == 1)
			return (ssize_t)got;
		r = ssl_result(ep, r);
		/* OpenSSL retries on its own (SSL_MODE_AUTO_RETRY): wanting to read
		 * means it holds no whole record and the socket is empty. */
		if (r == EP_WANT_READ && ep->track_ready)
			ep->drained = true;
		return r;
	}
	for (;;) {
		ssize_t n = recv(ep->fd, dst, len, 0);
		if (n > 0)
			return n;
		if (n == 0)
			return EP_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			ep->drained = ep->track_ready;
			return EP_WANT_READ;
		}
		ep->sys_errno = errno;
		return EP_ERR;
	}
}

ssize_t
ep_write(struct endpoint *ep, const void *src, size_t len)
{
	if (ep->ssl) {
		size_t put = 0;
		ERR_clear_error();
		int r = SSL_write_ex(ep->ssl, src, len, &put);
		return r == 1 ? (ssize_t)put : ssl_result(ep, r);
	}
	for (;;) {
		ssize_t n = send(ep->fd, src, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return EP_WANT_WRITE;
		ep->sys_errno = errno;
		return EP_ERR;
	}
}

int
ep_handshake(struct endpoint *ep)
{
	ERR_clear_error();
	int r = SSL_do_handshake(ep->ssl);
	if (r == 1) {
		ep->drained = false; /* records may wait in OpenSSL's buffer */
		return 1;
	}
	r = ssl_result(ep, r);
	return r == EP_EOF ? EP_ERR : r;
}

void
ep_shutdown_write(struct endpoint *ep)
{
	if (ep->wr_shut || ep->fd < 0)
		return;
	ep->wr_shut = true;
	if (ep->ssl) {
		/* One unidirectional close_notify; a proxy need not wait for the reply. */
		if (!ep->ssl_dead && SSL_is_init_finished(ep->ssl)) {
			ERR_clear_error();
			if (SSL_shutdown(ep->ssl) < 0)
				ERR_clear_error();
		}
	} else {
		shutdown(ep->fd, SHUT_WR);
	}
}

void
ep_close(struct ev_loop *loop, struct endpoint *ep)
{
	if (ep->fd < 0)
		return;
	ev_io_stop(loop, &ep->rio);
	ev_io_stop(loop, &ep->wio);
	if (ep->ssl) {
		if (!ep->wr_shut && !ep->ssl_dead && SSL_is_init_finished(ep->ssl)) {
			ERR_clear_error();
			if (SSL_shutdown(ep->ssl) < 0)
				ERR_clear_error();
		}
		SSL_free(ep->ssl);
		ep->ssl = NULL;
	}
	close(ep->fd);
	ep->fd = -1;
	ep->drained = false;
}

int
ep_connect(struct endpoint *ep, const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0) {
		ep->sys_errno = errno;
		return EP_ERR;
	}
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ep_attach(ep, fd, NULL);
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno == EINPROGRESS)
		return EP_WANT_WRITE;
	ep->sys_errno = errno;
	return EP_ERR;
}

int
ep_connect_result(const struct endpoint *ep)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(ep->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	return err;
}

ssize_t
ep_peek(struct endpoint *ep, void *dst, size_t len)
{
	ssize_t n = recv(ep->fd, dst, len, MSG_PEEK | MSG_DONTWAIT);

	if (n > 0)
		return n;
	if (n == 0)
		return EP_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return EP_WANT_READ;
	ep->sys_errno = errno;
	return EP_ERR;
}

void
ep_local_addr(const struct endpoint *ep, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof(*ss);

	getsockname(ep->fd, (struct sockaddr *)ss, &len);
}

bool
ep_start_tls(struct endpoint *ep, SSL *ssl, bool server)
{
	if (ssl == NULL || !SSL_set_fd(ssl, ep->fd)) {
		SSL_free(ssl);
		return false;
	}
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	ep->ssl = ssl;
	ep->drained = false;
	return true;
}

void
ep_tls_summary(const struct endpoint *ep, struct ep_tls_info *info)
{
	info->version = SSL_get_version(ep->ssl);
	info->cipher = SSL_get_cipher_name(ep->ssl);
	info->sni = SSL_is_server(ep->ssl) ? SSL_get_servername(ep->ssl, TLSEXT_NAMETYPE_host_name)
	                                   : NULL;
	info->peer_cert = SSL_get0_peer_certificate(ep->ssl) != NULL;
	info->peer_cert_now = info->peer_cert && !SSL_session_reused(ep->ssl);
	info->peer_verified = info->peer_cert && SSL_get_verify_result(ep->ssl) == X509_V_OK;
}

const char *
ep_verify_error(const struct endpoint *ep)
{
	long v = ep->ssl ? SSL_get_verify_result(ep->ssl) : X509_V_OK;

	return v != X509_V_OK ? X509_verify_cert_error_string(v) : NULL;
}

const char *
ep_strerror(const struct endpoint *ep, char *buf, size_t len)
{
	if (ep->ssl_err != 0)
		ERR_error_string_n(ep->ssl_err, buf, len);
	else if (ep->sys_errno != 0)
		snprintf(buf, len, "%s", strerror(ep->sys_errno));
	else
		snprintf(buf, len, "connection closed");
	return buf;
}
