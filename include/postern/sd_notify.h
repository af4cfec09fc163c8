/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram of NAME=VALUE lines to the socket named in $NOTIFY_SOCKET. Only
 * the main process speaks: the master of workers or the single process. */
#ifndef POSTERN_SD_NOTIFY_H
#define POSTERN_SD_NOTIFY_H

#include <stdbool.h>

/* $NOTIFY_SOCKET is set: a service manager is listening. */
bool sd_notify_wanted(void);

/* Sends the formatted state ("READY=1\nSTATUS=..."); nothing without
 * $NOTIFY_SOCKET. Never blocks. -1 if the datagram could not be sent. */
int sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sends STATE (fixed lines such as "READY=1", or NULL) and a STATUS= line
 * formatted from FMT, its control characters made '?'. */
int sd_notify_status(const char *state, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "RELOADING=1" with MONOTONIC_USEC, as Type=notify-reload wants it. */
void sd_notify_reloading(void);

/* A worker: forget the socket, so that only the main process speaks. */
void sd_notify_forget(void);

#endif
