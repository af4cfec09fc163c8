/* Our own syslog client: an AF_UNIX datagram socket to /dev/log, never
 * waiting. syslog(3) blocks when the daemon's queue is full; here a line
 * that cannot go now is dropped and the caller counts it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <postern/log_syslog.h>

#define RETRY_SECS 1.0

static struct {
	int fd;
	int facility;
	double retry_at; /* no reconnect before this (monotonic seconds) */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} slog = {.fd = -1, .facility = LOG_MAIL, .path = "/dev/log"};

static double
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
syslog_close(void)
{
	if (slog.fd >= 0)
		close(slog.fd);
	slog.fd = -1;
}

/* Connecting an AF_UNIX datagram socket never waits; a missing or dead
 * daemon is retried at most once a second. */
static int
syslog_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	double now = now_mono();

	if (now < slog.retry_at)
		return -1;
	memcpy(sa.sun_path, slog.path, sizeof(sa.sun_path));
	slog.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (slog.fd >= 0 && connect(slog.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return 0;
	syslog_close();
	slog.retry_at = now + RETRY_SECS;
	return -1;
}

/* "<PRI>Mmm dd hh:mm:ss postern[PID]: MSG", as glibc's syslog(3) sends. */
int
log_syslog_send(int level, const char *msg)
{
	char dgram[LOG_SYSLOG_MAX];
	struct tm tm;
	time_t t = time(NULL);
	size_t n;
	int r;

	localtime_r(&t, &tm);
	r = snprintf(dgram, sizeof(dgram), "<%d>", slog.facility | level);
	n = (size_t)r;
	n += strftime(dgram + n, sizeof(dgram) - n, "%b %e %H:%M:%S ", &tm);
	r = snprintf(dgram + n, sizeof(dgram) - n, "postern[%d]: %s", (int)getpid(), msg);
	n += (size_t)r < sizeof(dgram) - n ? (size_t)r : sizeof(dgram) - n - 1;
	for (int tries = 0; tries < 2; tries++) {
		if (slog.fd < 0 && syslog_connect() < 0)
			break;
		if (send(slog.fd, dgram, n, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return 0;
		/* A full queue: drop rather than wait. */
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ||
		    errno == EMSGSIZE || errno == EINTR)
			break;
		/* The daemon went away (restarted): reconnect once, now. */
		syslog_close();
		slog.retry_at = 0;
	}
	return -1;
}

void
log_syslog_path(const char *path)
{
	snprintf(slog.path, sizeof(slog.path), "%s", path ? path : "/dev/log");
	syslog_close();
	slog.retry_at = 0;
}

void
log_syslog_configure(bool on, int facility)
{
	slog.facility = facility;
	if (on && slog.fd < 0) {
		slog.retry_at = 0;
		syslog_connect();
	} else if (!on) {
		syslog_close();
	}
}
