/* Logging: one line per event, to stderr, syslog or a file.
 * Text lines: "TS LEVEL WHO message", WHO = "postern" for process events or
 * "SERVICE#ID CLIENTADDR" for session events. log.c never decides what is
 * secret: callers pass already-redacted text. Logging never blocks the
 * event loop: a line the output cannot take is dropped whole and counted. */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdarg.h>
#include <stdint.h>
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

struct ev_loop;
/* From attach on, a pipe or socket output is non-blocking and what it
 * cannot take at once is flushed by a watcher on LOOP (before: blocking
 * writes). Detach when the loop has stopped, for good: what is pending and
 * the lines that follow are written with waits of at most 2s in all, then
 * dropped. */
void log_attach_loop(struct ev_loop *loop);
void log_detach_loop(void);

/* Lines dropped so far: output full or failing, syslog queue full or gone. */
uint64_t log_dropped(void);

/* Process-level event. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Session event: WHO is "SERVICE#ID CLIENTADDR". */
void log_session(int level, const char *who, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void log_vsession(int level, const char *who, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

#endif
