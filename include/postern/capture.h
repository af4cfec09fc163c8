/* capture_dir: one transcript file per session, of the lines the command
 * log sees (already redacted by the adapters), each with a timestamp. */
#ifndef POSTERN_CAPTURE_H
#define POSTERN_CAPTURE_H

#include <stddef.h>

struct capture;

/* Creates DIR/SERVICE-ID-YYYYMMDDTHHMMSSZ.txt (mode 0600, never an
 * existing file) for the session WHO ("SERVICE#ID CLIENTADDR") started at
 * STARTED (epoch seconds). NULL with a reason in ERR on failure. */
struct capture *capture_open(const char *dir, const char *who, double started, char *err,
                             size_t errlen);

/* Appends "TS SIDE: TEXT". Returns -1 (errno set) if the line could not be
 * written whole; the caller then stops the capture. */
int capture_line(struct capture *c, char side, const char *text, size_t len);

/* Writes TRAILER as a comment line (may be NULL), closes and frees. */
void capture_close(struct capture *c, const char *trailer);

#endif
