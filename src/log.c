/* One line per event. Lines are built in a stack buffer and written with a
 * single write(2) so concurrent writers never interleave within a line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <postern/log.h>
#include <postern/log_json.h>

#define LOG_LINE_MAX 4096

static int log_level = LOG_INFO;
static enum log_format log_format = LOGFMT_TEXT;
static enum log_target log_target = LOGTO_STDERR;
static int log_fd = -1; /* file target */
static char log_path[4096];

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

static int
open_log_file(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int
log_configure(const struct config *cfg, char *err, size_t errlen)
{
	int fd = -1;

	if (cfg->log_target == LOGTO_FILE) {
		fd = open_log_file(cfg->log_file);
		if (fd < 0) {
			snprintf(err, errlen, "cannot open log file %s: %s", cfg->log_file,
			         strerror(errno));
			return -1;
		}
	}
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	if (fd >= 0)
		snprintf(log_path, sizeof(log_path), "%s", cfg->log_file);
	if (cfg->log_target == LOGTO_SYSLOG && log_target != LOGTO_SYSLOG)
		openlog("postern", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (cfg->log_target != LOGTO_SYSLOG && log_target == LOGTO_SYSLOG)
		closelog();
	log_target = cfg->log_target;
	log_level = cfg->log_level;
	log_format = cfg->log_format;
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
}

int
log_enabled(int level)
{
	return level <= log_level;
}

static void
write_all(const char *p, size_t n)
{
	int fd = log_target == LOGTO_FILE && log_fd >= 0 ? log_fd : STDERR_FILENO;

	while (write(fd, p, n) < 0 && errno == EINTR)
		;
}

static void
emit(int level, const char *who, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	size_t n, stamp;
	int r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03dZ ", (int)(tv.tv_usec / 1000));
	n += (size_t)r;
	stamp = n;
	r = snprintf(line + n, sizeof(line) - n, "%s %s ", level_name(level), who);
	n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	size_t msg_at = n - stamp;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r < 0)
		r = 0;
	n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	/* Control characters from peers (names, errors) must not forge lines. */
	for (size_t i = stamp; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	if (log_format == LOGFMT_JSON) {
		char json[LOG_LINE_MAX * 2], ts[40];
		const char *msg = line + stamp + msg_at;
		memcpy(ts, line, stamp - 1);
		ts[stamp - 1] = '\0';
		line[n] = '\0';
		size_t jn =
		        log_json_format(json, sizeof(json) - 1, ts, level_name(level), who, msg);
		if (log_target == LOGTO_SYSLOG) {
			syslog(level, "%s", json);
			return;
		}
		json[jn++] = '\n';
		write_all(json, jn);
		return;
	}
	if (log_target == LOGTO_SYSLOG) {
		line[n] = '\0';
		syslog(level, "%s", line + stamp);
		return;
	}
	line[n++] = '\n';
	write_all(line, n);
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
