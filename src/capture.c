/* Session transcripts. Each line is one write(2) to a regular file, so a
 * line is either whole or, on a full disk, reported as failed; nothing is
 * buffered that a crash or a stop could lose. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <postern/capture.h>
#include <postern/log_text.h>

/* A log line of PROTO_LOG_MAX bytes, each escaped as up to 4. */
#define CAPTURE_LINE_MAX 8192

struct capture {
	int fd;
};

/* "2026-11-21T22:40:01.123Z" */
static size_t
stamp(char *dst, size_t cap, const struct timeval *tv)
{
	struct tm tm;
	time_t sec = tv->tv_sec;
	size_t n;

	gmtime_r(&sec, &tm);
	n = strftime(dst, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(dst + n, cap - n, ".%03dZ", (int)(tv->tv_usec / 1000));
	return n;
}

static int
write_whole(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = ENOSPC;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

struct capture *
capture_open(const char *dir, const char *who, double started, char *err, size_t errlen)
{
	const char *hash = strchr(who, '#'), *sp = strchr(who, ' ');
	char path[4096], head[CAPTURE_LINE_MAX], when[32];
	struct timeval tv = {(time_t)started,
	                     (suseconds_t)((started - (double)(time_t)started) * 1e6)};
	time_t sec = tv.tv_sec;
	struct tm tm;
	int n;

	if (!hash || !sp || sp < hash) {
		snprintf(err, errlen, "no session id");
		return NULL;
	}
	gmtime_r(&sec, &tm);
	strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	n = snprintf(path, sizeof(path), "%s/%.*s-%.*s-%s.txt", dir, (int)(hash - who), who,
	             (int)(sp - hash - 1), hash + 1, when);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(err, errlen, "path too long");
		return NULL;
	}
	/* O_EXCL|O_NOFOLLOW: a planted file or link is never written through. */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return NULL;
	}
	struct capture *c = malloc(sizeof(*c));
	if (c == NULL) {
		close(fd);
		unlink(path);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->fd = fd;
	stamp(when, sizeof(when), &tv);
	n = snprintf(head, sizeof(head),
	             "# postern transcript service=%.*s session=%.*s client=%s start=%s\n",
	             (int)(hash - who), who, (int)(sp - hash - 1), hash + 1, sp + 1, when);
	if (write_whole(fd, head, n < (int)sizeof(head) ? (size_t)n : sizeof(head) - 1) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		capture_close(c, NULL);
		return NULL;
	}
	return c;
}

int
capture_line(struct capture *c, char side, const char *text, size_t len)
{
	char line[CAPTURE_LINE_MAX];
	struct timeval tv;
	size_t n;

	gettimeofday(&tv, NULL);
	n = stamp(line, sizeof(line), &tv);
	line[n++] = ' ';
	line[n++] = side;
	line[n++] = ':';
	line[n++] = ' ';
	/* A peer's bytes must not forge lines or a terminal: escaped as in
	 * the log (log_text.h), the room for the newline kept. */
	n += log_text_escape(line + n, sizeof(line) - n - 1, text, len, 0);
	line[n++] = '\n';
	return write_whole(c->fd, line, n);
}

void
capture_close(struct capture *c, const char *trailer)
{
	if (c == NULL)
		return;
	if (trailer) {
		char line[CAPTURE_LINE_MAX];
		int n = snprintf(line, sizeof(line), "# %s\n", trailer);
		if (n > 0)
			(void)write_whole(c->fd, line,
			                  (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
	close(c->fd);
	free(c);
}
