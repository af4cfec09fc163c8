/* One line per event. A line is built in a stack buffer and handed on
 * whole: when nothing is pending it goes out in a single write(2), so
 * concurrent writers never interleave within a line.
 *
 * Logging never blocks the event loop. Once a loop is attached, a pipe or
 * socket on stderr (or as the log file) is non-blocking; what it cannot take
 * now waits in a bounded buffer that a write watcher drains, and a line that
 * does not fit there is dropped whole and counted. syslog goes through our
 * own non-blocking client of /dev/log for the same reason: syslog(3) blocks
 * when the daemon's queue is full. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include <postern/log.h>
#include <postern/log_json.h>
#include <postern/log_syslog.h>
#include <postern/log_text.h>
#include <postern/shared.h>

#define LOG_LINE_MAX 4096
#define PENDING_MAX (1024 * 1024)
#define EXIT_FLUSH_SECS 2.0

static int log_level = LOG_INFO;
static enum log_format log_format = LOGFMT_TEXT;
static enum log_target log_target = LOGTO_STDERR;
static int log_fd = -1; /* file target */
static char log_path[4096];
/* Shared with the workers forked after log_configure: one total. */
static uint64_t local_drops, *drops = &local_drops;

/* Bytes the output could not take yet: pend.buf[off, off + len). */
static struct {
	char buf[PENDING_MAX];
	size_t off, len;
} pend;

static struct ev_loop *out_loop;
static ev_io out_io;
static double exit_deadline; /* once detached: no waiting after this */

static const char *
level_name(int level)
{
	switch (level) {
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warn";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

static double
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
out_fd(void)
{
	return log_target == LOGTO_FILE && log_fd >= 0 ? log_fd : STDERR_FILENO;
}

/* ---------------------------------------------------------- stderr, file */

static void
drop_pending(void)
{
	/* Count the lines lost; a partly written one counts too. */
	for (const char *p = pend.buf + pend.off, *end = p + pend.len;
	     (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
		shared_add(drops, 1);
	pend.off = pend.len = 0;
}

/* Writes what FD takes now. 0 when all is out or FD would block, -1 (and
 * the pending lines dropped) on an error that waiting will not cure, such as
 * a reader that went away: retrying would spin. */
/* How much of the pending text to write at once: whole lines, at most
 * PIPE_BUF bytes (a pipe takes those whole or not at all, so lines from
 * several workers sharing it never mix), or one longer line alone. */
static size_t
chunk_len(const char *p, size_t len)
{
	const char *nl = memrchr(p, '\n', len < PIPE_BUF ? len : PIPE_BUF);

	if (nl == NULL)
		nl = memchr(p, '\n', len);
	return nl ? (size_t)(nl - p) + 1 : len;
}

static int
flush_some(int fd)
{
	while (pend.len > 0) {
		ssize_t w =
		        write(fd, pend.buf + pend.off, chunk_len(pend.buf + pend.off, pend.len));
		if (w > 0) {
			pend.off += (size_t)w;
			pend.len -= (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return 0;
		} else {
			drop_pending();
			return -1;
		}
	}
	pend.off = 0;
	return 0;
}

/* Blocks in poll to write out what is pending, then drops the rest: for
 * when no loop runs. At exit all the waiting together is bounded. */
static void
flush_wait(int fd)
{
	double deadline = exit_deadline > 0 ? exit_deadline : now_mono() + EXIT_FLUSH_SECS;

	while (pend.len > 0 && flush_some(fd) == 0 && pend.len > 0) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int left = (int)((deadline - now_mono()) * 1000);
		if (left <= 0 || (poll(&p, 1, left) < 0 && errno != EINTR)) {
			drop_pending();
			return;
		}
	}
}

static void
on_out(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	flush_some(w->fd);
	if (pend.len == 0)
		ev_io_stop(loop, w);
}

static void
pend_add(const char *p, size_t n)
{
	if (pend.off + pend.len + n > sizeof(pend.buf)) {
		memmove(pend.buf, pend.buf + pend.off, pend.len);
		pend.off = 0;
	}
	memcpy(pend.buf + pend.off + pend.len, p, n);
	pend.len += n;
}

static void
put(const char *p, size_t n)
{
	int fd = out_fd();

	if (pend.len == 0) {
		ssize_t w;
		while ((w = write(fd, p, n)) < 0 && errno == EINTR)
			;
		if (w == (ssize_t)n)
			return;
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				shared_add(drops, 1);
				return;
			}
			w = 0;
		}
		/* The rest of a started line always fits: the buffer is empty. */
		pend_add(p + w, n - (size_t)w);
	} else if (n > sizeof(pend.buf) - pend.len) {
		shared_add(drops, 1);
		return;
	} else {
		pend_add(p, n);
	}
	if (out_loop)
		ev_io_start(out_loop, &out_io);
	else
		flush_wait(fd);
}

/* Only pipes and sockets: O_NONBLOCK means nothing to regular files, and
 * setting it on a terminal would surprise the shell that shares it. */
static void
make_nonblocking(int fd)
{
	struct stat st;
	int fl;

	if (fstat(fd, &st) < 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
		return;
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* After the output descriptor changed (or was reopened under its number). */
static void
retarget(void)
{
	if (out_loop == NULL)
		return;
	ev_io_stop(out_loop, &out_io);
	if (log_target == LOGTO_SYSLOG)
		return;
	make_nonblocking(out_fd());
	ev_io_set(&out_io, out_fd(), EV_WRITE);
	if (pend.len > 0)
		ev_io_start(out_loop, &out_io);
}

void
log_attach_loop(struct ev_loop *loop)
{
	out_loop = loop;
	ev_init(&out_io, on_out);
	retarget();
}

void
log_detach_loop(void)
{
	if (out_loop)
		ev_io_stop(out_loop, &out_io);
	out_loop = NULL;
	if (exit_deadline == 0)
		exit_deadline = now_mono() + EXIT_FLUSH_SECS;
	if (log_target != LOGTO_SYSLOG)
		flush_wait(out_fd());
}

uint64_t
log_dropped(void)
{
	return shared_get(drops);
}

/* ------------------------------------------------------------ configure */

static int
open_log_file(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int
log_configure(const struct config *cfg, char *err, size_t errlen)
{
	int fd = -1;

	if (drops == &local_drops) {
		drops = shared_area(sizeof(*drops));
		*drops = local_drops;
	}
	if (cfg->log_target == LOGTO_FILE) {
		fd = open_log_file(cfg->log_file);
		if (fd < 0) {
			snprintf(err, errlen, "cannot open log file %s: %s", cfg->log_file,
			         strerror(errno));
			return -1;
		}
	}
	/* Pending bytes belong to the old output: when it changes, what it
	 * takes now goes and the rest is dropped, never sent to the new one. */
	if (pend.len > 0 && !(log_target == LOGTO_STDERR && cfg->log_target == LOGTO_STDERR)) {
		flush_some(out_fd());
		drop_pending();
	}
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	if (fd >= 0)
		snprintf(log_path, sizeof(log_path), "%s", cfg->log_file);
	/* Connect now, before privileges are dropped. */
	log_syslog_configure(cfg->log_target == LOGTO_SYSLOG,
	                     cfg->log_facility ? cfg->log_facility : LOG_MAIL);
	log_target = cfg->log_target;
	log_level = cfg->log_level;
	log_format = cfg->log_format;
	retarget();
	return 0;
}

int
log_file_fd(void)
{
	return log_fd;
}

void
log_reopen(void)
{
	int fd;

	if (log_target != LOGTO_FILE)
		return;
	fd = open_log_file(log_path);
	if (fd < 0) {
		log_msg(LOG_ERR, "cannot reopen log file %s: %s", log_path, strerror(errno));
		return;
	}
	dup2(fd, log_fd);
	close(fd);
	/* Same number, another file: the watcher must be registered again. */
	retarget();
}

int
log_enabled(int level)
{
	return level <= log_level;
}

/* ---------------------------------------------------------------- lines */

/* stderr is the journal's stream: systemd names it in JOURNAL_STREAM as
 * DEVICE:INODE. The journal stamps each line itself and reads a leading
 * "<N>" as its syslog priority. */
static bool
stderr_is_journal(void)
{
	static int known = -1;
	unsigned long long dev, ino;
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;

	if (known < 0)
		known = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
		        fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
		        (unsigned long long)st.st_ino == ino;
	return known;
}

/* FMT is checked where the callers' own format attributes are. */
__attribute__((format(printf, 3, 0))) static void
emit(int level, const char *who, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX], raw[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	size_t n, stamp, rn;
	int r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03dZ ", (int)(tv.tv_usec / 1000));
	n += (size_t)r;
	stamp = n;
	r = snprintf(raw, sizeof(raw), "%s %s ", level_name(level), who);
	rn = (size_t)r < sizeof(raw) ? (size_t)r : sizeof(raw) - 1;
	size_t msg_at = rn;
	r = vsnprintf(raw + rn, sizeof(raw) - rn, fmt, ap);
	if (r < 0)
		r = 0;
	rn += (size_t)r < sizeof(raw) - rn ? (size_t)r : sizeof(raw) - rn - 1;
	/* Peer bytes (names, commands, errors) must not forge lines or make
	 * the output invalid UTF-8: one escape form for every output. */
	n += log_text_escape(line + n, sizeof(line) - n - 1, raw, rn, 0);
	if (log_format == LOGFMT_JSON) {
		char json[LOG_LINE_MAX * 2], ts[40];
		memcpy(ts, line, stamp - 1);
		ts[stamp - 1] = '\0';
		/* log_json_format escapes each string itself. */
		size_t jn = log_json_format(json, sizeof(json) - 1, ts, level_name(level), who,
		                            raw + msg_at);
		if (log_target == LOGTO_SYSLOG) {
			if (log_syslog_send(level, json) < 0)
				shared_add(drops, 1);
			return;
		}
		json[jn++] = '\n';
		put(json, jn);
		return;
	}
	if (log_target == LOGTO_SYSLOG) {
		if (log_syslog_send(level, line + stamp) < 0)
			shared_add(drops, 1);
		return;
	}
	line[n++] = '\n';
	if (log_target == LOGTO_STDERR && stderr_is_journal()) {
		/* "<N>" in place of the timestamp (levels are 0-7: one digit). */
		char *p = line + stamp - 3;
		p[0] = '<', p[1] = (char)('0' + level), p[2] = '>';
		put(p, n - (size_t)(p - line));
		return;
	}
	put(line, n);
}

void
log_vsession(int level, const char *who, const char *fmt, va_list ap)
{
	if (level <= log_level)
		emit(level, who, fmt, ap);
}

void
log_session(int level, const char *who, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	emit(level, who, fmt, ap);
	va_end(ap);
}

void
log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	emit(level, "postern", fmt, ap);
	va_end(ap);
}
