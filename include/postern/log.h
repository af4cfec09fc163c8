/* Logging: one line per event, to stderr, syslog or a file.
 * Text lines: "TS LEVEL WHO message", WHO = "postern" for process events or
 * "SERVICE#ID CLIENTADDR" for session events. log.c never decides what is
 * secret: callers pass already-redacted text. */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdarg.h>
#include <syslog.h>

#include <postern/config.h>

/* Applies the log target, level and format of CFG (stderr until called).
 * Returns -1 with a message in ERR if a log file cannot be opened. */
int log_configure(const struct config *cfg, char *err, size_t errlen);

/* Descriptor of the log file, or -1 (for chown before dropping privileges). */
int log_file_fd(void);

/* Reopens the log file (SIGUSR1). */
void log_reopen(void);

int log_enabled(int level);

/* Process-level event. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Session event: WHO is "SERVICE#ID CLIENTADDR". */
void log_session(int level, const char *who, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void log_vsession(int level, const char *who, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

#endif
