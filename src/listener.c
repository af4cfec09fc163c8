#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdbool.h>

#include <postern/listener.h>
#include <postern/log.h>
#include <postern/metrics.h>
#include <postern/proto.h>
#include <postern/session.h>

/* Connections taken per readiness event. Each one's handshake starts at
 * once (its ClientHello is usually there already), so a batch costs up to
 * a handshake's CPU per connection while established sessions wait: at 64,
 * a burst held back other clients' Finished messages, and so their session
 * tickets and first bytes, for 10-30 ms. A few at a time interleave new
 * and established sessions; the listener stays ready for the rest. */
#define ACCEPT_BATCH 4
/* Pause after running out of descriptors, instead of spinning on a
 * listener that stays readable. */
#define EMFILE_PAUSE 0.25

struct listener {
	int fd;
	ev_io io;
	struct server *srv;
	const struct service *svc;
	struct sockaddr_ex addr;
	struct listener *next;
};

static void
refuse_busy(struct listener *l, int fd, const struct sockaddr *peer)
{
	const char *busy = proto_get(l->svc->protocol)->reply[PROTO_REPLY_BUSY];
	char who[160], addr[64];

	/* Plaintext gets the protocol's reply (a fresh socket's buffer takes a
	 * line); an implicit-TLS client is closed before any CPU goes into a
	 * handshake. */
	if (l->svc->tls != TLSMODE_IMPLICIT && busy)
		(void)send(fd, busy, strlen(busy), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
	shared_add(&metrics_service(l->svc->name)->refused[MR_MAX_CONNECTIONS], 1);
	session_format_addr(peer, addr, sizeof(addr));
	snprintf(who, sizeof(who), "%s %s", l->svc->name, addr);
	log_session(LOG_WARNING, who, "refused reason=max_connections limit=%d",
	            l->srv->cfg->max_connections);
}

static void
pause_accepting(struct server *srv)
{
	for (struct listener *l = srv->listeners; l; l = l->next)
		ev_io_stop(srv->loop, &l->io);
	ev_timer_stop(srv->loop, &srv->accept_pause);
	ev_timer_set(&srv->accept_pause, EMFILE_PAUSE, 0.);
	ev_timer_start(srv->loop, &srv->accept_pause);
}

static void
on_accept_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	if (!srv->stopping)
		listener_start_all(srv);
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct server *srv = l->srv;

	(void)loop;
	(void)revents;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_msg(LOG_WARNING, "accept on %s: %s; pausing for %.2fs",
				        l->addr.text, strerror(errno), EMFILE_PAUSE);
				pause_accepting(srv);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_msg(LOG_ERR, "accept on %s: %s", l->addr.text, strerror(errno));
			}
			return;
		}
		if (srv->active >= srv->cfg->max_connections) {
			refuse_busy(l, fd, (struct sockaddr *)&ss);
			continue;
		}
		session_start(srv, srv->cfg, l->svc, fd, (struct sockaddr *)&ss, len);
	}
}

/* Owner of workers' sockets: see listener_set_owner. */
static uid_t owner = (uid_t)-1;

void
listener_set_owner(uid_t uid)
{
	owner = uid;
}

static int
open_socket(const struct sockaddr_ex *a, bool reuseport, char *err, size_t errlen)
{
	bool as_owner = reuseport && owner != (uid_t)-1;
	/* A socket belongs to the file-system uid that makes it. */
	uid_t prev = as_owner ? (uid_t)setfsuid(owner) : 0;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (as_owner)
		setfsuid(prev);

	if (fd < 0) {
		snprintf(err, errlen, "socket for %s: %s", a->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per worker: the kernel spreads connections over them. */
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		snprintf(err, errlen, "SO_REUSEPORT for %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	/* Accepted sockets inherit it (Linux): no setsockopt per connection. */
	if (a->ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* [::]:993 means IPv6 only; 0.0.0.0:993 can be listed beside it. */
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static bool
same_addr(const struct sockaddr_ex *a, const struct sockaddr_ex *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static void
listener_free(struct server *srv, struct listener *l)
{
	if (ev_is_active(&l->io))
		ev_io_stop(srv->loop, &l->io);
	close(l->fd);
	free(l);
}

int
listener_prepare(struct server *srv, struct config *cfg, struct listener **plan, char *err,
                 size_t errlen)
{
	struct listener *fresh = NULL, **tail = &fresh;

	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct service *svc = &cfg->services[i];
		for (size_t j = 0; j < svc->nlisten; j++) {
			const struct sockaddr_ex *a = &svc->listen[j];
			struct listener *l = NULL, **pp;

			/* Reuse a bound socket: reloads never drop queued clients. */
			for (pp = &srv->listeners; *pp; pp = &(*pp)->next) {
				if (same_addr(&(*pp)->addr, a)) {
					l = *pp;
					*pp = l->next;
					break;
				}
			}
			if (l == NULL) {
				int fd = open_socket(a, srv->worker, err, errlen);
				if (fd < 0)
					goto rollback;
				l = calloc(1, sizeof(*l));
				if (l == NULL) {
					close(fd);
					snprintf(err, errlen, "out of memory");
					goto rollback;
				}
				l->fd = fd;
				l->srv = srv;
				ev_io_init(&l->io, on_accept, fd, EV_READ);
				l->io.data = l;
				l->addr = *a;
			}
			l->next = NULL;
			*tail = l;
			tail = &l->next;
		}
	}
	*plan = fresh;
	return 0;

rollback:
	listener_abort(srv, fresh);
	return -1;
}

void
listener_commit(struct server *srv, struct config *cfg, struct listener *fresh)
{
	/* What is left in srv->listeners is no longer configured. */
	while (srv->listeners) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		if (!srv->quiet)
			log_msg(LOG_INFO, "closed listener addr=%s", l->addr.text);
		listener_free(srv, l);
	}
	srv->listeners = fresh;
	/* Point every listener at its service in the new configuration. */
	for (struct listener *l = fresh; l; l = l->next) {
		bool is_new = l->svc == NULL;
		for (size_t i = 0; i < cfg->nservices; i++)
			for (size_t j = 0; j < cfg->services[i].nlisten; j++)
				if (same_addr(&cfg->services[i].listen[j], &l->addr))
					l->svc = &cfg->services[i];
		if (is_new && !srv->quiet)
			log_msg(LOG_INFO, "listening service=%s addr=%s", l->svc->name,
			        l->addr.text);
	}
}

void
listener_abort(struct server *srv, struct listener *fresh)
{
	/* Give reused sockets back, close the new ones. */
	while (fresh) {
		struct listener *l = fresh;
		fresh = l->next;
		if (l->svc == NULL) {
			listener_free(srv, l);
		} else {
			l->next = srv->listeners;
			srv->listeners = l;
		}
	}
}

int
listener_apply(struct server *srv, struct config *cfg, char *err, size_t errlen)
{
	struct listener *plan;

	if (listener_prepare(srv, cfg, &plan, err, errlen) < 0)
		return -1;
	listener_commit(srv, cfg, plan);
	return 0;
}

void
listener_init(struct server *srv)
{
	ev_init(&srv->accept_pause, on_accept_pause);
	srv->accept_pause.data = srv;
}

void
listener_start_all(struct server *srv)
{
	for (struct listener *l = srv->listeners; l; l = l->next)
		ev_io_start(srv->loop, &l->io);
}

void
listener_close_all(struct server *srv)
{
	ev_timer_stop(srv->loop, &srv->accept_pause);
	while (srv->listeners) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		listener_free(srv, l);
	}
}
