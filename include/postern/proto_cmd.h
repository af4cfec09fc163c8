/* Command lines of the untagged protocols (SMTP, POP3): postern relays a
 * line only when the verb it sees is the verb every server would see.
 * Postfix splits a command on any isspace() byte (SP, HTAB, VT, FF, CR)
 * and stops reading at a NUL; stricter servers split on SP only. */
#ifndef POSTERN_PROTO_CMD_H
#define POSTERN_PROTO_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/proto.h>
#include <postern/proto_util.h>

/* Before TLS a command is relayed only in its plainest form: printable
 * ASCII with the verb at the start of the line. No NUL, 8-bit byte, bare
 * CR, tab or leading white space (N: the line without its EOL). */
bool pc_plain_form(const char *p, size_t n);

/* A control byte other than HTAB (NUL, CR, VT, FF, ...) or DEL in the
 * line: some server would split or cut the command there. */
bool pc_has_control(const char *p, size_t n);

/* Whether the command log may show the line: no control byte, and in
 * plain form when PLAIN_ONLY (before TLS with require_tls). */
bool pc_readable(const char *p, size_t n, bool plain_only);

/* The rest of a command line too long to judge: its bytes are dropped up
 * to its LF, where the caller refuses the whole line. Returns the length
 * of the tail up to and including the LF, or 0 when the LEN bytes at P
 * are all dropped (ACT is then set to consume them). */
size_t pc_skip_tail(const char *p, size_t len, struct proto_action *act);

/* Log text for a command line postern would not read: the line is never
 * shown, since its words are not the ones a server would see. */
void pc_log_unread(struct proto_action *act, char *scratch, const char *why);

/* Log text for a line the client sent before the server answered its SASL
 * line: a command if that answer was final, but perhaps a SASL response
 * the client sent too early. Shown as "***" and remembered as a secret. */
void pc_log_early(struct proto_action *act, char *scratch, const char *p, size_t n);

/* The command log's view of a POP3 or SMTP command line of N bytes (no
 * EOL) whose verb has FLAGS: hidden after a SASL exchange that just ended
 * (AFTER_AUTH) when it is one word postern does not know as a verb (a
 * response has that shape; a command with arguments has not), unread
 * when it is malformed
 * (in plain form only when PLAIN_ONLY), else with its PU_HIDE_* secrets. */
void pc_log_command(struct proto_action *act, char *scratch, const char *p, size_t n,
                    unsigned flags, bool after_auth, bool plain_only);

/* The replies of one untagged protocol for the policy it shares. */
struct pc_replies {
	const char *need_tls;   /* before TLS (require_tls): anything but a
	                         * PU_PLAIN command in plain form */
	const char *bad_char;   /* a control byte (pc_has_control) */
	const char *tls_active; /* STARTTLS when TLS is on already */
	const char *tls_args;   /* STARTTLS with arguments */
	const char *tls_go;     /* STARTTLS accepted: TLS begins after it */
	const char *forwarding; /* a PU_FORWARDING verb */
};
enum pc_rule {
	PC_RELAY,    /* nothing common against it: the adapter's own rules go on */
	PC_REFUSE,   /* answered locally with TEXT (EVENT: counted as such) */
	PC_STARTTLS, /* TEXT, then TLS with the client */
};
struct pc_ruling {
	enum pc_rule rule;
	const char *text;
	const char *event;
};

/* The policy POP3 and SMTP share for a command line of N bytes (no EOL)
 * whose verb has FLAGS, in this order: the require_tls gate, control
 * bytes, STARTTLS (NOARGS: nothing after the verb), forwarding verbs. */
struct pc_ruling pc_rule(const struct pu_adapter *a, unsigned flags, const char *p, size_t n,
                         bool noargs, const struct pc_replies *r);

/* An adapter's judgement of a command line of N bytes at P (with its EOL)
 * whose verb has FLAGS, its arguments at ARGS. */
typedef enum proto_verdict pc_judge(void *st, const char *p, size_t n, unsigned flags,
                                    const char *args, struct proto_action *act, char *scratch);

/* A whole client line of N bytes (with its EOL) of POP3 or SMTP: a SASL
 * response while an exchange runs (shown to LOGIN, which may read the
 * user's name in it); else, once Q has room, a command whose verb (read
 * as pu_next_token does) is looked up in VERBS and judged by JUDGE on ST,
 * then written to the command log unless it waits. */
struct pa_login;
enum proto_verdict pc_command_line(struct pu_adapter *a, const struct pu_queue *q,
                                   struct pa_login *login, const struct pu_verb *verbs,
                                   pc_judge *judge, void *st, const char *p, size_t n,
                                   struct proto_action *act, char *scratch);

#endif
