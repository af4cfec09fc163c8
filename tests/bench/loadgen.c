/* tests/bench/loadgen.c: the load generator of `make bench`.
 *
 *   loadgen -m MODE -p PORT [options]
 *
 * One thread, non-blocking sockets, epoll (edge-triggered), OpenSSL's
 * TLS_client_method without certificate verification (bench only), SNI
 * "localhost". It talks to tests/bench/backend.c through a TLS proxy, which
 * greets with "* OK bench\r\n", echoes, answers "TAG CAPABILITY" and streams
 * on "BULK".
 *
 * Modes:
 *   handshake      -c connections at a time, each: TCP connect, full TLS
 *                  handshake, read the greeting, close. Reports handshakes/s.
 *   resume         the same, offering a session the server gave: a TLS 1.3
 *                  ticket once each (as RFC 8446 asks of clients), the
 *                  latest TLS 1.2 ticket again and again; reports the resumed
 *                  fraction (a rate is a resumption rate only if it is ~1)
 *                  and the fraction of offers that reused a session.
 *   starttls-imap  plaintext: greeting, "a STARTTLS", its OK; then the
 *                  handshake, "b CAPABILITY" and its tagged reply; close.
 *   bulk           -c connections (default 1) ask the backend to stream;
 *                  reports MB/s (10^6 bytes) received after decryption.
 *   latency        one connection, a small request echoed at a time; reports
 *                  the round trip's p50 and p99 in microseconds.
 *   idle           opens connections (handshake + one round trip each) up to
 *                  each count of -n (e.g. 5000,9000), at most -c handshakes
 *                  at a time; at each prints "ready N ..." and waits for
 *                  SIGUSR1 (at most -T seconds); then closes them all. With
 *                  -r, all but the first resume a session.
 *
 * Options:
 *   -H ADDR      server address (127.0.0.1)       -p PORT  server port
 *   -c N         concurrency (handshake modes 64, idle 200, others 1)
 *   -t SECONDS   measured time (3); in idle mode the time allowed per step
 *   -w SECONDS   warm-up before the measured window (0.25)
 *   -V 1.2|1.3   force the TLS version (default: any from 1.2)
 *   -x LIST      TLS 1.2 cipher list (ECDHE-ECDSA-AES128-GCM-SHA256:
 *                ECDHE-RSA-AES128-GCM-SHA256)
 *   -X LIST      TLS 1.3 ciphersuites (TLS_AES_128_GCM_SHA256)
 *   -g LIST      key exchange groups (X25519:P-256: the key share is X25519;
 *                P-256 must be listed for ECDSA P-256 certificates in TLS 1.2)
 *   -P           plaintext, no TLS (latency without a proxy)
 *   -r           idle: after one full handshake, resume sessions as the
 *                resume mode does (faster to open many connections)
 *   -R           offer the latest session every time, TLS 1.3 tickets too
 *                (many connections at once then offer the same ticket)
 *   -S PIDS      comma-separated pids whose CPU use (utime+stime from
 *                /proc/PID/stat) is sampled over the measured window (cpu=)
 *   -B PIDS      the same for the backend (backendcpu=)
 *   -n LIST      idle: comma-separated connection counts
 *   -T SECONDS   idle: longest wait for SIGUSR1 at each count (120)
 *   -s NAME      the SNI sent (localhost); @FILE: a name of FILE (one a
 *                line) at random for each connection (make bench-sni)
 *
 * Output: one line "result key=value ..." on stdout (idle: "ready N ..."
 * lines first); the first error seen is described on stderr. Exit status 0
 * if anything succeeded, 1 otherwise, 2 for usage errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

enum mode { M_HANDSHAKE, M_RESUME, M_STARTTLS, M_BULK, M_LATENCY, M_IDLE };

enum state {
	ST_FREE,
	ST_CONNECT,
	ST_PLAIN_GREET, /* starttls: read the plaintext greeting */
	ST_STLS_SEND,
	ST_STLS_WAIT,
	ST_HANDSHAKE,
	ST_GREET, /* read "* OK bench" through TLS */
	ST_CAPA_SEND,
	ST_CAPA_WAIT,
	ST_BULK_SEND,
	ST_BULK,
	ST_PING_SEND,
	ST_PING_WAIT,
	ST_HOLD, /* idle: established, held open */
};

struct conn {
	int fd;
	enum state state;
	SSL *ssl;
	int again; /* on the run-again list */
	size_t blen;
	uint64_t t_send;
	char buf[1024];
};

static const char PING[] = "ping 0123456789abcdef0123456789\r\n";

/* ------------------------------------------------------------------ options */

static enum mode mode = M_HANDSHAKE;
static const char *host = "127.0.0.1";
static int port;
static int conc = -1;
static double secs = 3, warmup = 0.25, hold_max = 120;
static int tlsver; /* 0, 12 or 13 */
static const char *ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
static const char *suites = "TLS_AES_128_GCM_SHA256";
static const char *groups = "X25519:P-256";
static int plain;
static int resume; /* offer sessions: mode resume, or idle with -r */
static int reuse;  /* -R: offer the latest session every time */
static pid_t pids[32];
static int npids;
static pid_t bpids[8]; /* -B: the backend, sampled the same way */
static int nbpids;
static long targets[16];
static int ntargets;

/* ------------------------------------------------------------------- state */

static SSL_CTX *ctx;
static struct sockaddr_in srv;
static int ep;
static struct conn *conns;
static int nconns;
static struct conn **again_list;
static int nagain;

static uint64_t now_ns, t_win_start, t_win_end;
static int in_window, window_done;

static long completed; /* in the window */
static long resumed;   /* in the window */
static long errors;    /* all */
static long inflight;  /* connections not free and not held */
static long held;      /* idle: established and open */
static long dropped;   /* idle: closed by the other side while held */
static long idle_est;  /* idle: open at the last count */
static uint64_t bytes; /* bulk, in the window */
static uint64_t *rtts; /* latency, in the window */
static size_t nrtts, rtts_cap;

/* Sessions to offer. A TLS 1.3 ticket is used once (RFC 8446, C.4: clients
 * should not reuse a ticket), and every resumption brings a fresh one; when
 * the pool is empty (TLS 1.2, whose ticket is reused, or a server that sends
 * none on resumption) the latest session is offered again. */
#define POOL_MAX 4096
static SSL_SESSION *pool[POOL_MAX];
static int npool;
static SSL_SESSION *cur_sess; /* the latest one */
static long reused_offers;    /* offers of an already offered session */
static long offers;
static int sess_has_ticket;
static int primed; /* resume: a session is there to offer */

static char info[256]; /* proto/cipher/group/key of the first success */
static char first_err[256];

static uint64_t cpu_start, cpu_end;   /* proxy ticks */
static uint64_t bcpu_start, bcpu_end; /* backend ticks */
#define NCPU_MAX 64
/* per CPU, from /proc/stat: idle (+iowait) and steal ticks */
static uint64_t idle_start[NCPU_MAX], idle_end[NCPU_MAX], steal_start[NCPU_MAX],
        steal_end[NCPU_MAX];
static int ncpu_seen;
static struct rusage ru_start, ru_end;

/* ------------------------------------------------------------------ helpers */

static uint64_t
mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
note_error(const char *fmt, ...)
{
	va_list ap;

	errors++;
	if (first_err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(first_err, sizeof(first_err), fmt, ap);
	va_end(ap);
}

static const char *
ssl_errstr(void)
{
	static char s[160];
	unsigned long e = ERR_get_error();

	if (e == 0)
		return errno ? strerror(errno) : "connection closed";
	ERR_error_string_n(e, s, sizeof(s));
	ERR_clear_error();
	return s;
}

/* utime + stime of the pids, in clock ticks. */
static uint64_t
cpu_ticks(const pid_t *pids, int npids)
{
	uint64_t sum = 0;

	for (int i = 0; i < npids; i++) {
		char path[64], buf[1024];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pids[i]);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		char *p = strrchr(buf, ')');
		if (p == NULL)
			continue;
		/* after ") ": state(3) ppid ... utime is field 14, stime 15 */
		unsigned long long ut = 0, st = 0;
		int field = 2;
		for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
			field++;
			if (field == 14)
				ut = strtoull(tok, NULL, 10);
			else if (field == 15) {
				st = strtoull(tok, NULL, 10);
				break;
			}
		}
		sum += ut + st;
	}
	return sum;
}

/* Reads the idle and steal ticks of each CPU from /proc/stat. */
static void
cpu_stat(uint64_t *idle, uint64_t *steal)
{
	FILE *f = fopen("/proc/stat", "re");
	char line[512];

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v[8] = {0};
		int cpu;
		if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
			continue;
		if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0],
		           &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9 ||
		    cpu < 0 || cpu >= NCPU_MAX)
			continue;
		idle[cpu] = v[3] + v[4];
		steal[cpu] = v[7];
		if (cpu + 1 > ncpu_seen)
			ncpu_seen = cpu + 1;
	}
	fclose(f);
}

static double
tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void
mark_again(struct conn *c)
{
	if (!c->again) {
		c->again = 1;
		again_list[nagain++] = c;
	}
}

/* ---------------------------------------------------------------------- I/O */

/* >0 bytes read, 0 would block, -1 closed or failed. */
static int
cread(struct conn *c, void *b, int n)
{
	if (c->ssl == NULL) {
		ssize_t r = recv(c->fd, b, (size_t)n, 0);
		if (r > 0)
			return (int)r;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		if (r == 0)
			errno = 0;
		return -1;
	}
	errno = 0;
	int r = SSL_read(c->ssl, b, n);
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	return -1;
}

/* 1 written, 0 would block (retry with the same bytes), -1 failed. */
static int
cwrite(struct conn *c, const void *b, int n)
{
	if (c->ssl == NULL) {
		ssize_t r = send(c->fd, b, (size_t)n, MSG_NOSIGNAL);
		if (r == n)
			return 1;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		if (r >= 0) { /* short write of a small message: not expected */
			errno = EIO;
		}
		return -1;
	}
	errno = 0;
	int r = SSL_write(c->ssl, b, n);
	if (r > 0)
		return 1;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	return -1;
}

/* Reads into c->buf until a line starting with prefix is complete (any line
 * if prefix is NULL), which is then left at the start of c->buf; what came
 * after it is dropped (the exchanges are lock-step). 1 found, 0 would block,
 * -1 failed. */
static int
read_line(struct conn *c, const char *prefix)
{
	for (;;) {
		/* look for a complete line in the buffer */
		char *start = c->buf, *end = c->buf + c->blen, *nl;
		while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
			if (prefix == NULL || strncmp(start, prefix, strlen(prefix)) == 0) {
				size_t ll = (size_t)(nl - start) + 1;
				memmove(c->buf, start, ll);
				c->buf[ll] = '\0'; /* the line stays in buf for the caller */
				c->blen = 0;
				return 1;
			}
			start = nl + 1;
		}
		/* keep the partial line only */
		if (start != c->buf) {
			memmove(c->buf, start, (size_t)(end - start));
			c->blen = (size_t)(end - start);
		}
		if (c->blen >= sizeof(c->buf) - 1)
			c->blen = 0; /* an overlong line: drop it */
		int r = cread(c, c->buf + c->blen, (int)(sizeof(c->buf) - 1 - c->blen));
		if (r <= 0)
			return r;
		c->blen += (size_t)r;
	}
}

/* ---------------------------------------------------------------- sessions */

static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	if (!SSL_SESSION_is_resumable(sess))
		return 0;
	if (SSL_SESSION_has_ticket(sess))
		sess_has_ticket = 1;
	if (cur_sess)
		SSL_SESSION_free(cur_sess);
	cur_sess = sess; /* we keep the reference we were given */
	if (!reuse && SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION &&
	    npool < POOL_MAX) {
		SSL_SESSION_up_ref(sess);
		pool[npool++] = sess;
	}
	return 1;
}

/* -------------------------------------------------------- connection logic */

static void conn_launch(struct conn *c);

static void
record_info(struct conn *c)
{
	char key[16] = "-";
	const char *grp = "-";

	if (info[0] || c->ssl == NULL)
		return;
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	if (cert) {
		EVP_PKEY *pk = X509_get0_pubkey(cert);
		if (pk)
			snprintf(key, sizeof(key), "%s",
			         EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC    ? "ECDSA"
			         : EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA ? "RSA"
			                                                    : "other");
	}
	int g = SSL_get_negotiated_group(c->ssl);
	if (g > 0 && OBJ_nid2sn(g & ~TLSEXT_nid_unknown))
		grp = OBJ_nid2sn(g & ~TLSEXT_nid_unknown);
	snprintf(info, sizeof(info), "proto=%s cipher=%s group=%s key=%s", SSL_get_version(c->ssl),
	         SSL_get_cipher_name(c->ssl), grp, key);
}

static void
conn_free(struct conn *c)
{
	if (c->state == ST_FREE)
		return;
	if (c->state == ST_HOLD)
		held--;
	else
		inflight--;
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = ST_FREE;
	c->blen = 0;
}

static void
conn_fail(struct conn *c, const char *what)
{
	if (c->state == ST_HOLD) {
		dropped++;
		conn_free(c);
		return;
	}
	note_error("%s: %s", what, ssl_errstr());
	conn_free(c);
	if (mode != M_IDLE && !window_done)
		mark_again(c); /* relaunch on the next turn, not in a tight loop */
}

/* One transaction done: count it, close, start the next one. */
static void
conn_done(struct conn *c)
{
	if (in_window) {
		completed++;
		if (c->ssl && SSL_session_reused(c->ssl))
			resumed++;
	}
	record_info(c);
	/* close_notify, as a well-behaved client sends; without it OpenSSL also
	 * marks the session as not resumable when the SSL is freed */
	if (c->ssl)
		SSL_shutdown(c->ssl);
	conn_free(c);
	if (resume && cur_sess)
		primed = 1;
	if (!window_done)
		conn_launch(c);
}

/* The SNI of each connection: sni_names[random] when there are several. */
static char *sni_one = "localhost";
static char **sni_names;
static size_t sni_n;

static void
sni_load(char *arg)
{
	FILE *f;
	char line[512];

	if (arg[0] != '@') {
		sni_one = arg;
		return;
	}
	if ((f = fopen(arg + 1, "r")) == NULL) {
		perror(arg + 1);
		exit(2);
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0])
			continue;
		if ((sni_n & (sni_n - 1)) == 0 &&
		    !(sni_names = realloc(sni_names, (sni_n ? 2 * sni_n : 1) * sizeof(*sni_names))))
			exit(2);
		if (!(sni_names[sni_n++] = strdup(line)))
			exit(2);
	}
	fclose(f);
}

static int
start_tls(struct conn *c)
{
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		return -1;
	SSL_set_tlsext_host_name(c->ssl, sni_n ? sni_names[(size_t)random() % sni_n] : sni_one);
	SSL_set_connect_state(c->ssl);
	if (resume && cur_sess) {
		offers++;
		if (npool > 0) { /* the newest unused ticket */
			SSL_SESSION *ps = pool[--npool];
			SSL_set_session(c->ssl, ps);
			SSL_SESSION_free(ps);
		} else {
			SSL_set_session(c->ssl, cur_sess);
			reused_offers++;
		}
	}
	c->state = ST_HANDSHAKE;
	return 0;
}

/* Drives a connection until it would block (or is done or failed). */
static void
step(struct conn *c)
{
	int r;

	for (;;) {
		switch (c->state) {
		case ST_FREE:
			return;
		case ST_CONNECT: {
			int err = 0;
			socklen_t l = sizeof(err);
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
				errno = err;
				conn_fail(c, "connect");
				return;
			}
			if (mode == M_STARTTLS)
				c->state = ST_PLAIN_GREET;
			else if (plain)
				c->state = ST_GREET;
			else if (start_tls(c) < 0) {
				conn_fail(c, "SSL_new");
				return;
			}
			break;
		}
		case ST_PLAIN_GREET:
			r = read_line(c, NULL);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "greeting");
				return;
			}
			c->state = ST_STLS_SEND;
			break;
		case ST_STLS_SEND:
			r = cwrite(c, "a STARTTLS\r\n", 12);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "send STARTTLS");
				return;
			}
			c->state = ST_STLS_WAIT;
			break;
		case ST_STLS_WAIT:
			r = read_line(c, "a ");
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "STARTTLS reply");
				return;
			}
			if (strncmp(c->buf, "a OK", 4) != 0) {
				errno = EPROTO;
				conn_fail(c, "STARTTLS refused");
				return;
			}
			if (start_tls(c) < 0) {
				conn_fail(c, "SSL_new");
				return;
			}
			break;
		case ST_HANDSHAKE:
			errno = 0;
			r = SSL_do_handshake(c->ssl);
			if (r != 1) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					return;
				conn_fail(c, "handshake");
				return;
			}
			c->state = mode == M_STARTTLS ? ST_CAPA_SEND : ST_GREET;
			break;
		case ST_GREET:
			r = read_line(c, NULL);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "greeting");
				return;
			}
			switch (mode) {
			case M_BULK:
				c->state = ST_BULK_SEND;
				break;
			case M_LATENCY:
			case M_IDLE:
				c->state = ST_PING_SEND;
				break;
			default:
				conn_done(c);
				return;
			}
			break;
		case ST_CAPA_SEND:
			r = cwrite(c, "b CAPABILITY\r\n", 14);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "send CAPABILITY");
				return;
			}
			c->state = ST_CAPA_WAIT;
			break;
		case ST_CAPA_WAIT:
			r = read_line(c, "b ");
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "CAPABILITY reply");
				return;
			}
			conn_done(c);
			return;
		case ST_BULK_SEND:
			record_info(c);
			r = cwrite(c, "BULK\r\n", 6);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "send BULK");
				return;
			}
			c->state = ST_BULK;
			break;
		case ST_BULK: {
			static char big[65536];
			uint64_t got = 0;
			for (;;) {
				r = cread(c, big, sizeof(big));
				if (r < 0) {
					conn_fail(c, "bulk read");
					return;
				}
				if (r == 0)
					return;
				if (in_window)
					bytes += (uint64_t)r;
				got += (uint64_t)r;
				if (got >= (4u << 20)) { /* let the clock be looked at */
					mark_again(c);
					return;
				}
			}
		}
		case ST_PING_SEND:
			record_info(c);
			/* the clock is read before the write: on loopback the echo may
			 * come back before send() has returned */
			c->t_send = mono_ns();
			r = cwrite(c, PING, sizeof(PING) - 1);
			if (r <= 0) {
				if (r < 0)
					conn_fail(c, "send request");
				return;
			}
			c->state = ST_PING_WAIT;
			break;
		case ST_PING_WAIT:
			while (c->blen < sizeof(PING) - 1) {
				r = cread(c, c->buf + c->blen, (int)(sizeof(c->buf) - c->blen));
				if (r < 0) {
					conn_fail(c, "echo");
					return;
				}
				if (r == 0)
					return;
				c->blen += (size_t)r;
			}
			c->blen = 0;
			if (mode == M_IDLE) {
				record_info(c);
				if (c->ssl && SSL_session_reused(c->ssl))
					resumed++;
				inflight--;
				held++;
				c->state = ST_HOLD;
				break;
			}
			now_ns = mono_ns();
			if (in_window && now_ns < t_win_end) {
				if (nrtts == rtts_cap) {
					rtts_cap = rtts_cap ? rtts_cap * 2 : 65536;
					rtts = realloc(rtts, rtts_cap * sizeof(*rtts));
					if (rtts == NULL) {
						perror("realloc");
						exit(1);
					}
				}
				rtts[nrtts++] = now_ns - c->t_send;
				completed++;
			}
			if (window_done)
				return;
			c->state = ST_PING_SEND;
			break;
		case ST_HOLD: {
			char junk[4096];
			for (;;) {
				r = cread(c, junk, sizeof(junk));
				if (r < 0) {
					conn_fail(c, "held");
					return;
				}
				if (r == 0)
					return;
			}
		}
		}
	}
}

static void
conn_launch(struct conn *c)
{
	int one = 1;

	c->again = 0;
	c->blen = 0;
	c->ssl = NULL;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		note_error("socket: %s", strerror(errno));
		mark_again(c);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	inflight++;
	c->state = ST_CONNECT;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
	                         .data.ptr = c};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		note_error("epoll_ctl: %s", strerror(errno));
		conn_free(c);
		mark_again(c);
		return;
	}
	if (connect(c->fd, (struct sockaddr *)&srv, sizeof(srv)) < 0 && errno != EINPROGRESS) {
		note_error("connect: %s", strerror(errno));
		conn_free(c);
		mark_again(c);
		return;
	}
	/* the first event (EPOLLOUT) drives it on */
}

/* ------------------------------------------------------------------- setup */

static void
usage(void)
{
	fprintf(stderr,
	        "usage: loadgen -m handshake|resume|starttls-imap|bulk|latency|idle -p PORT\n"
	        "       [-H ADDR] [-c N] [-t SECONDS] [-w SECONDS] [-V 1.2|1.3] [-x CIPHERS] [-r] "
	        "[-R]\n"
	        "       [-X CIPHERSUITES] [-g GROUPS] [-P] [-S PID,...] [-B PID,...] [-n N,...]\n"
	        "       [-T SECONDS] [-s NAME|@FILE]\n");
	exit(2);
}

static int
parse_list(const char *s, long *out, int max)
{
	int n = 0;
	char *end;

	while (*s && n < max) {
		long v = strtol(s, &end, 10);
		if (end == s || v <= 0)
			return -1;
		out[n++] = v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

static int
parse_pids(const char *s, pid_t *out, int max)
{
	int n = 0;
	char *end;

	while (*s && n < max) {
		long v = strtol(s, &end, 10);
		if (end == s || v <= 0 || (*end && *end != ','))
			usage();
		out[n++] = (pid_t)v;
		s = *end == ',' ? end + 1 : end;
	}
	return n;
}

static void
setup_ctx(void)
{
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		fprintf(stderr, "loadgen: SSL_CTX_new failed\n");
		exit(1);
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_min_proto_version(ctx, tlsver == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, tlsver == 12 ? TLS1_2_VERSION : TLS1_3_VERSION);
	if (mode == M_IDLE)
		SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, suites) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, groups) != 1) {
		fprintf(stderr, "loadgen: bad cipher, ciphersuite or group list: %s\n",
		        ssl_errstr());
		exit(2);
	}
	if (resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	} else {
		/* tickets are still offered, as a real client would */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	if (nrtts == 0)
		return 0;
	size_t i = (size_t)(p * (double)(nrtts - 1) + 0.5);
	return (double)rtts[i] / 1000.0;
}

static void
begin_window(void)
{
	in_window = 1;
	cpu_start = cpu_ticks(pids, npids);
	bcpu_start = cpu_ticks(bpids, nbpids);
	cpu_stat(idle_start, steal_start);
	getrusage(RUSAGE_SELF, &ru_start);
}

static void
end_window(void)
{
	in_window = 0;
	window_done = 1;
	cpu_end = cpu_ticks(pids, npids);
	bcpu_end = cpu_ticks(bpids, nbpids);
	cpu_stat(idle_end, steal_end);
	getrusage(RUSAGE_SELF, &ru_end);
}

static void
print_result(void)
{
	double w = (double)(t_win_end - t_win_start) / 1e9;
	double self = (tv_s(ru_end.ru_utime) - tv_s(ru_start.ru_utime)) +
	              (tv_s(ru_end.ru_stime) - tv_s(ru_start.ru_stime));
	double hz = (double)sysconf(_SC_CLK_TCK);
	double cpu = npids ? (double)(cpu_end - cpu_start) / hz / w * 100 : -1;
	double bcpu = nbpids ? (double)(bcpu_end - bcpu_start) / hz / w * 100 : -1;
	static const char *names[] = {"handshake", "resume",  "starttls-imap",
	                              "bulk",      "latency", "idle"};

	printf("result mode=%s secs=%.3f n=%ld errors=%ld", names[mode], w, completed, errors);
	switch (mode) {
	case M_BULK:
		printf(" rate=%.1f bytes=%llu", (double)bytes / 1e6 / w, (unsigned long long)bytes);
		break;
	case M_LATENCY:
		qsort(rtts, nrtts, sizeof(*rtts), cmp_u64);
		printf(" rate=%.1f p50=%.1f p99=%.1f", (double)completed / w, pct(0.50), pct(0.99));
		break;
	default:
		printf(" rate=%.1f", (double)completed / w);
		break;
	}
	if (mode == M_RESUME)
		printf(" resumed=%.4f ticket=%d reoffered=%.4f",
		       completed ? (double)resumed / (double)completed : 0, sess_has_ticket,
		       offers ? (double)reused_offers / (double)offers : 0);
	printf(" cpu=%.1f selfcpu=%.1f backendcpu=%.1f", cpu, self / w * 100, bcpu);
	/* how idle each CPU was, and how much the hypervisor took (steal) */
	for (int i = 0; i < ncpu_seen && i < 4; i++)
		printf(" idle%d=%.1f steal%d=%.1f", i,
		       (double)(idle_end[i] - idle_start[i]) / hz / w * 100, i,
		       (double)(steal_end[i] - steal_start[i]) / hz / w * 100);
	printf(" %s\n", info[0] ? info : "");
	fflush(stdout);
}

static void
run_timed(void)
{
	uint64_t t0 = mono_ns();
	int launch = mode == M_RESUME ? 1 : nconns; /* resume: prime with one */
	struct epoll_event evs[512];

	t_win_start = t0 + (uint64_t)(warmup * 1e9);
	t_win_end = t_win_start + (uint64_t)(secs * 1e9);
	for (int i = 0; i < launch; i++)
		conn_launch(&conns[i]);
	for (;;) {
		int timeout = nagain ? 0 : 1;
		int n = epoll_wait(ep, evs, 512, timeout);
		if (n < 0 && errno != EINTR) {
			perror("epoll_wait");
			exit(1);
		}
		now_ns = mono_ns();
		if (!in_window && !window_done && now_ns >= t_win_start)
			begin_window();
		if (in_window && now_ns >= t_win_end) {
			end_window();
			break;
		}
		for (int i = 0; i < n; i++)
			step(evs[i].data.ptr);
		/* conns that asked to run again, and failed ones to relaunch */
		int k = nagain;
		nagain = 0;
		for (int i = 0; i < k; i++) {
			struct conn *c = again_list[i];
			c->again = 0;
			if (c->state == ST_FREE)
				conn_launch(c);
			else
				step(c);
		}
		if (mode == M_RESUME && primed && launch < nconns) {
			while (launch < nconns)
				conn_launch(&conns[launch++]);
		}
	}
	print_result();
	for (int i = 0; i < nconns; i++)
		conn_free(&conns[i]);
}

static void
run_idle(void)
{
	sigset_t ss;
	struct epoll_event evs[512];
	int sfd, next = 0;
	long limit = conc; /* handshakes in flight at a time */

	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
	struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
	if (sfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sev) < 0) {
		perror("signalfd");
		exit(1);
	}
	in_window = 1; /* for record_info only */
	for (int step_i = 0; step_i < ntargets; step_i++) {
		long target = targets[step_i];
		uint64_t deadline = mono_ns() + (uint64_t)(secs * 1e9);
		long errs_at_start = errors;
		int waiting = 0;
		uint64_t wait_until = 0;

		for (;;) {
			/* launch more while under the target */
			/* resuming: one full handshake first, for a session */
			long lim = resume && cur_sess == NULL ? 1 : limit;
			while (!waiting && held + inflight < target && inflight < lim &&
			       next < nconns) {
				/* find a free slot, starting at next */
				while (next < nconns && conns[next].state != ST_FREE)
					next++;
				if (next >= nconns)
					break;
				conn_launch(&conns[next]);
				if (conns[next].state == ST_FREE)
					break; /* failed at once: try on the next turn */
				next++;
			}
			if (next >= nconns)
				next = 0; /* slots freed by failures are reused */
			now_ns = mono_ns();
			if (!waiting && inflight == 0 &&
			    (held >= target || now_ns >= deadline ||
			     errors - errs_at_start > target)) {
				printf("ready %ld errors=%ld dropped=%ld resumed=%ld%s\n", held,
				       errors, dropped, resumed, held >= target ? "" : " partial");
				fflush(stdout);
				waiting = 1;
				wait_until = now_ns + (uint64_t)(hold_max * 1e9);
			}
			if (waiting && now_ns >= wait_until)
				break;
			if (!waiting && now_ns >= deadline) {
				/* stop launching; let those in flight finish or fail */
				limit = 0;
			}
			int n = epoll_wait(ep, evs, 512, nagain ? 0 : 5);
			int sig = 0;
			for (int i = 0; i < n; i++) {
				if (evs[i].data.ptr == NULL) {
					struct signalfd_siginfo si;
					while (read(sfd, &si, sizeof(si)) == sizeof(si))
						sig = 1;
					continue;
				}
				step(evs[i].data.ptr);
			}
			nagain = 0; /* failed slots are found again by the scan */
			for (int i = 0; i < nconns; i++)
				conns[i].again = 0;
			if (sig && waiting)
				break;
			if (sig && !waiting) {
				/* asked to go on early: treat as reached */
				break;
			}
		}
		limit = conc;
		next = 0;
	}
	idle_est = held;
	for (int i = 0; i < nconns; i++)
		conn_free(&conns[i]);
	printf("result mode=idle established=%ld errors=%ld dropped=%ld resumed=%ld %s\n", idle_est,
	       errors, dropped, resumed, info);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	int opt;
	struct rlimit rl;

	while ((opt = getopt(argc, argv, "m:H:p:c:t:w:V:x:X:g:PrRS:B:n:T:s:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "handshake"))
				mode = M_HANDSHAKE;
			else if (!strcmp(optarg, "resume"))
				mode = M_RESUME, resume = 1;
			else if (!strcmp(optarg, "starttls-imap"))
				mode = M_STARTTLS;
			else if (!strcmp(optarg, "bulk"))
				mode = M_BULK;
			else if (!strcmp(optarg, "latency"))
				mode = M_LATENCY;
			else if (!strcmp(optarg, "idle"))
				mode = M_IDLE;
			else
				usage();
			break;
		case 'H':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'c':
			conc = atoi(optarg);
			break;
		case 't':
			secs = atof(optarg);
			break;
		case 'w':
			warmup = atof(optarg);
			break;
		case 'V':
			tlsver = !strcmp(optarg, "1.2") ? 12 : !strcmp(optarg, "1.3") ? 13 : -1;
			if (tlsver < 0)
				usage();
			break;
		case 'x':
			ciphers = optarg;
			break;
		case 'X':
			suites = optarg;
			break;
		case 'g':
			groups = optarg;
			break;
		case 'P':
			plain = 1;
			break;
		case 'r':
			resume = 1;
			break;
		case 'R':
			reuse = 1;
			break;
		case 's':
			sni_load(optarg);
			break;
		case 'S':
			npids = parse_pids(optarg, pids, (int)(sizeof(pids) / sizeof(pids[0])));
			break;
		case 'B':
			nbpids = parse_pids(optarg, bpids, (int)(sizeof(bpids) / sizeof(bpids[0])));
			break;
		case 'n':
			ntargets = parse_list(optarg, targets, 16);
			if (ntargets <= 0)
				usage();
			break;
		case 'T':
			hold_max = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (port <= 0 || port > 65535 || secs <= 0 || warmup < 0 || optind != argc)
		usage();
	if (plain && mode != M_LATENCY && mode != M_HANDSHAKE)
		usage();
	if (mode == M_IDLE && ntargets == 0)
		usage();
	if (conc < 0)
		conc = mode == M_IDLE ? 200 : (mode == M_BULK || mode == M_LATENCY) ? 1 : 64;
	if (mode == M_LATENCY)
		conc = 1;
	if (conc <= 0)
		usage();

	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(&srv, 0, sizeof(srv));
	srv.sin_family = AF_INET;
	srv.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, host, &srv.sin_addr) != 1) {
		fprintf(stderr, "loadgen: bad address %s\n", host);
		return 2;
	}
	if (!plain)
		setup_ctx();
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("epoll_create1");
		return 1;
	}

	nconns = conc;
	if (mode == M_IDLE)
		for (int i = 0; i < ntargets; i++)
			if (targets[i] > nconns)
				nconns = (int)targets[i];
	conns = calloc((size_t)nconns, sizeof(*conns));
	again_list = calloc((size_t)nconns, sizeof(*again_list));
	if (conns == NULL || again_list == NULL) {
		perror("calloc");
		return 1;
	}
	for (int i = 0; i < nconns; i++)
		conns[i].fd = -1;

	if (mode == M_IDLE)
		run_idle();
	else
		run_timed();

	if (first_err[0])
		fprintf(stderr, "loadgen: %ld errors; first: %s\n", errors, first_err);
	if (mode == M_IDLE)
		return idle_est > 0 ? 0 : 1;
	return completed > 0 ? 0 : 1;
}
