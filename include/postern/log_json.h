/* The JSON form of a log line (log_format = json). */
#ifndef POSTERN_LOG_JSON_H
#define POSTERN_LOG_JSON_H

#include <stddef.h>

/* Writes one JSON object (no newline, NUL-terminated) for the event MSG of
 * WHO ("postern" or "SERVICE#ID CLIENT") into DST; returns its length. */
size_t log_json_format(char *dst, size_t cap, const char *ts, const char *level, const char *who,
                       const char *msg);

#endif
