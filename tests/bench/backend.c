/* tests/bench/backend.c: the plaintext backend of `make bench`.
 *
 *   backend PORT [ADDR]        (ADDR defaults to 127.0.0.1; PORT 0 = any)
 *
 * One thread, non-blocking, epoll (edge-triggered). Every connection gets
 * the greeting "* OK bench\r\n" at once, as an IMAP server would. What the
 * client sends next decides the rest, looking only at each chunk read:
 *
 *   "BULK..."          stream a fixed buffer as fast as the socket takes it,
 *                      until the client closes (bulk throughput);
 *   "TAG CAPABILITY"   an IMAP capability reply, "* CAPABILITY IMAP4rev1"
 *                      and "TAG OK" (a STARTTLS proxy asks after TLS);
 *   anything else      echoed back (round trips, idle connections).
 *
 * So one backend on one port serves every proxy and every measurement (hitch
 * has a single backend for all its frontends). Prints "listening ADDR:PORT"
 * on stdout once ready; runs until killed. Bench tool only: no limits on
 * what a client may make it do. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define GREETING "* OK bench\r\n"
#define BULK_CHUNK (256 * 1024)

enum { M_ECHO, M_BULK };

struct conn {
	int fd;
	int mode;
	char *out; /* pending output (echo or reply), malloc'd */
	size_t out_len, out_off;
};

static struct conn **conns; /* indexed by fd */
static int conns_max;
static char bulk_buf[BULK_CHUNK];

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

static void
conn_close(struct conn *c)
{
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->out);
	free(c);
}

/* Queues bytes behind whatever is pending. Returns -1 on allocation failure. */
static int
queue(struct conn *c, const char *p, size_t n)
{
	size_t left = c->out_len - c->out_off;
	char *nb = malloc(left + n);

	if (nb == NULL)
		return -1;
	if (left)
		memcpy(nb, c->out + c->out_off, left);
	memcpy(nb + left, p, n);
	free(c->out);
	c->out = nb;
	c->out_len = left + n;
	c->out_off = 0;
	return 0;
}

/* Writes pending output. 1: all written, 0: would block, -1: error. */
static int
flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
		}
		c->out_off += (size_t)n;
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	return 1;
}

/* Sends p[0..n) now, queueing what the socket does not take. */
static int
reply(struct conn *c, const char *p, size_t n)
{
	if (c->out_len == 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return -1;
			w = 0;
		}
		p += w;
		n -= (size_t)w;
		if (n == 0)
			return 0;
	}
	return queue(c, p, n);
}

/* "TAG CAPABILITY\r\n" (any case): writes the tag into tag[] and returns 1. */
static int
is_capability(const char *p, size_t n, char *tag, size_t tagsz)
{
	const char *sp = memchr(p, ' ', n);
	size_t tl;

	if (sp == NULL || n < 12 || (size_t)(sp - p) + 1 >= tagsz)
		return 0;
	tl = (size_t)(sp - p);
	if (n - tl - 1 < 10 || strncasecmp(sp + 1, "CAPABILITY", 10) != 0)
		return 0;
	memcpy(tag, p, tl);
	tag[tl] = '\0';
	return 1;
}

static int
process(struct conn *c, const char *p, size_t n)
{
	char tag[64], msg[160];

	if (c->mode == M_BULK)
		return 0; /* the client's bytes are ignored while streaming */
	if (n >= 4 && memcmp(p, "BULK", 4) == 0) {
		c->mode = M_BULK;
		return 0;
	}
	if (is_capability(p, n, tag, sizeof(tag))) {
		int len = snprintf(msg, sizeof(msg),
		                   "* CAPABILITY IMAP4rev1\r\n%s OK CAPABILITY completed\r\n", tag);
		return reply(c, msg, (size_t)len);
	}
	return reply(c, p, n);
}

/* Runs a connection until its socket would block either way it is used. */
static void
service(struct conn *c)
{
	char rbuf[16384];

	for (;;) {
		int r = flush(c);
		if (r < 0)
			goto gone;
		if (r == 0)
			return; /* wait for EPOLLOUT */
		ssize_t n = recv(c->fd, rbuf, sizeof(rbuf), 0);
		if (n == 0)
			goto gone;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				goto gone;
			break;
		}
		if (process(c, rbuf, (size_t)n) < 0)
			goto gone;
	}
	if (c->mode == M_BULK) {
		for (;;) {
			ssize_t n = send(c->fd, bulk_buf, sizeof(bulk_buf), MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN && errno != EWOULDBLOCK)
					goto gone;
				return;
			}
		}
	}
	return;
gone:
	conn_close(c);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sa;
	struct rlimit rl;
	socklen_t slen = sizeof(sa);
	int lfd, ep, one = 1;
	char addr[64];

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: backend PORT [ADDR]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit");
	conns_max = rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
	conns = calloc((size_t)conns_max, sizeof(*conns));
	if (conns == NULL)
		die("calloc");
	for (size_t i = 0; i < sizeof(bulk_buf); i++)
		bulk_buf[i] = (char)('a' + i % 26);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	if (inet_pton(AF_INET, argc > 2 ? argv[2] : "127.0.0.1", &sa.sin_addr) != 1) {
		fprintf(stderr, "backend: bad address\n");
		return 2;
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind");
	if (listen(lfd, 4096) < 0)
		die("listen");
	if (getsockname(lfd, (struct sockaddr *)&sa, &slen) < 0)
		die("getsockname");
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
		die("epoll_ctl");
	printf("listening %s:%d\n", inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr)),
	       ntohs(sa.sin_port));
	fflush(stdout);

	for (;;) {
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c != NULL) {
				service(c);
				continue;
			}
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0) {
					if (errno == EINTR || errno == ECONNABORTED)
						continue;
					if (errno != EAGAIN && errno != EWOULDBLOCK)
						perror("backend: accept");
					break;
				}
				if (fd >= conns_max || (c = calloc(1, sizeof(*c))) == NULL) {
					close(fd);
					continue;
				}
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				c->fd = fd;
				conns[fd] = c;
				struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
				                                   EPOLLET,
				                         .data.ptr = c};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
				    reply(c, GREETING, sizeof(GREETING) - 1) < 0) {
					conn_close(c);
					continue;
				}
			}
		}
	}
}
