/* Peer bytes made safe for a log line: every output (text log, JSON,
 * syslog, transcripts) is valid UTF-8 in which no byte or character can end
 * a line, for a byte-oriented reader or a Unicode-aware one.
 *
 * Escape form (the same everywhere, documented in README "Logs"):
 *   \xNN    a byte that is a C0 control (NUL, TAB, CR, LF...), DEL, or not
 *           part of valid UTF-8 (NN: two lower-case hex digits);
 *   \uNNNN  a character that is a C1 control (U+0080-U+009F, NEL U+0085
 *           included), a line or paragraph separator (U+2028, U+2029) or a
 *           bidirectional override (U+200E, U+200F, U+202A-U+202E,
 *           U+2066-U+2069).
 * A backslash is written as itself, so escaping already escaped text
 * changes nothing: the log is for reading, not for restoring bytes. */
#ifndef POSTERN_LOG_TEXT_H
#define POSTERN_LOG_TEXT_H

#include <stdbool.h>
#include <stddef.h>

enum {
	LOG_ESC_SPACE = 1 << 0 /* also escape SP as \x20: a value in "key=value" */
};

/* Writes the escaped form of [p, p+n) into DST (CAP bytes, CAP >= 1),
 * NUL-terminated and never cut inside an escape or a character. Returns
 * its length. */
size_t log_text_escape(char *dst, size_t cap, const char *p, size_t n, unsigned flags);

/* True if [p, p+n) is valid UTF-8 that log_text_escape leaves unchanged. */
bool log_text_is_safe(const char *p, size_t n, unsigned flags);

/* A host name as SNI may carry it: LDH labels of 1-63 bytes, not starting
 * or ending with '-', separated by single dots, 1-253 bytes in all. */
bool log_hostname_valid(const char *name);

#endif
