/* The command log and the transcript of one session (log_commands,
 * capture_dir). A line may arrive in pieces (an IMAP command with
 * literals); it is put together per direction and written once whole, with
 * the secrets the adapters hid so far masked wherever they reappear. Every
 * function takes NULL (the session observes nothing) and does nothing. */
#ifndef POSTERN_OBSERVE_H
#define POSTERN_OBSERVE_H

#include <stddef.h>
#include <stdint.h>

#include <postern/config.h>
#include <postern/metrics.h>
#include <postern/proto.h>

#include <stdbool.h>

struct observe;

/* A command-log line put together from an adapter's pieces. */
struct observe_line {
	char text[PROTO_LOG_MAX];
	size_t len;
	unsigned flags;      /* of the line's first piece */
	unsigned char frame; /* its log_frame: the word never masked */
	bool open;
};

/* True when ACT starts a new line (PL_NEW) while L is still open: L then
 * holds a line to show as it is (a refused literal never completed it).
 * Pure: shared with the unit tests. */
bool observe_line_cut(struct observe_line *l, const struct proto_action *act);

/* Adds ACT's log piece to L. True when the line is whole: L->text then
 * holds it, cut to PROTO_LOG_MAX with "..." at its end if it was longer.
 * Pure: shared with the unit tests. */
bool observe_line_add(struct observe_line *l, const struct proto_action *act);

/* The length of the first of the lines in TEXT (those of one multi-line
 * reply are separated by '\n'); *DEBUG tells whether it is of lesser
 * interest: not the last line, or FLAGS has PL_DEBUG. */
size_t observe_first_line(const char *text, size_t len, unsigned flags, bool *debug);

/* NULL when SVC neither logs commands nor captures (or out of memory,
 * which is logged). WHO must outlive the observer. */
struct observe *observe_start(const struct service *svc, const char *who, double started_wall);

/* An adapter's log piece (and secret) for what it just judged from DIR. */
void observe_action(struct observe *o, enum proto_dir dir, const struct proto_action *act);

/* postern's own answer to the client, as the client sees it. */
void observe_reply(struct observe *o, const char *text, size_t len);

/* The server's verdict on a login attempt (ACT->auth): one info line,
 * logged whether or not commands are, "auth user=NAME result=ok|failed",
 * NAME escaped as a key=value value (a space is \x20, so no name can add
 * a field), "-" when unknown; counted in M's postern_auth_total. */
void observe_auth(const char *who, struct metrics_svc *m, const struct proto_action *act);

/* Shows lines cut by the close, writes the transcript's trailer, wipes the
 * secrets and frees O. */
void observe_end(struct observe *o, const char *reason, uint64_t in, uint64_t out);

#endif
