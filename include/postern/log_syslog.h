/* The syslog output of log.c: datagrams to /dev/log that never wait. */
#ifndef POSTERN_LOG_SYSLOG_H
#define POSTERN_LOG_SYSLOG_H

#include <stdbool.h>

/* Longest datagram: a JSON line with its escapes, and the header. */
#define LOG_SYSLOG_MAX (4096 * 2 + 128)

/* ON: connect now (before privileges are dropped) with FACILITY
 * (LOG_MAIL, LOG_LOCAL3, ...); off: close. */
void log_syslog_configure(bool on, int facility);

/* Sends "<PRI>Mmm dd hh:mm:ss postern[PID]: MSG". Returns -1 when the line
 * was dropped (a full queue, no daemon). */
int log_syslog_send(int level, const char *msg);

/* Tests: the socket path instead of /dev/log (NULL: back to it). */
void log_syslog_path(const char *path);

#endif
