/* Small pure helpers the protocol adapters share: line framing, words,
 * IMAP literal suffixes and capability-list editing. */
#ifndef POSTERN_PROTO_UTIL_H
#define POSTERN_PROTO_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <postern/proto.h>

/* Length of the first line at P including its LF, or 0 if there is none. */
size_t pu_line_len(const char *p, size_t len);

/* Length of a line without its trailing CRLF or LF. */
size_t pu_trim_eol(const char *p, size_t n);

/* A word: the bytes up to the next space. Advances *P past it and one space. */
struct pu_word {
	const char *p;
	size_t n;
};
struct pu_word pu_next_word(const char **p, const char *end);

/* A verb or argument of SMTP and POP3 as the laxest server reads it
 * (Postfix splits on any white space and skips leading white space):
 * leading SP/HTAB skipped, the word ends at SP or HTAB, and *P is left
 * past the white space that follows it. */
struct pu_word pu_next_token(const char **p, const char *end);

/* Whether the N bytes at P hold one word at most (pu_next_token's): the
 * shape of a SASL response (base64, "*" or "="), never that of a command
 * with arguments or of an IMAP command. */
bool pu_one_word(const char *p, size_t n);

/* Command tables: each adapter lists its verbs with these flags (and its
 * own from PU_OWN up), so policy is data and one routine applies it. */
enum {
	PU_STARTTLS = 1 << 0,       /* the STARTTLS/STLS command */
	PU_REFUSE_PLAIN = 1 << 1,   /* refused before TLS when require_tls */
	PU_SASL = 1 << 2,           /* starts a SASL exchange */
	PU_HIDE_ARGS = 1 << 3,      /* logged as "VERB ***" (a password) */
	PU_HIDE_AFTER_ARG = 1 << 4, /* logged as "VERB arg ***" (APOP, a SASL IR) */
	PU_FORWARDING = 1 << 5,     /* client data a trusting backend would believe:
	                             * answered by postern, never relayed (P6) */
	PU_PLAIN = 1 << 6,          /* relayed before TLS when require_tls (POP3,
	                             * SMTP): nothing else is (fail closed) */
	PU_OWN = 1 << 8             /* first flag an adapter may define */
};
struct pu_verb {
	const char *name;
	unsigned flags;
};
unsigned pu_verb_flags(const struct pu_verb *table, struct pu_word w);

/* What every adapter's state begins with (its first member, named a):
 * the session's terms and the SASL exchange, which the framing and the
 * common policy read the same way for all three protocols. */
struct pu_adapter {
	bool require_tls;  /* refuse credentials before TLS */
	bool tls;          /* the client's side is TLS (post-STARTTLS rules) */
	bool observe;      /* commands are logged */
	bool c_auth;       /* client lines are SASL responses */
	bool c_auth_wait;  /* a SASL line is out: the next client line is a
	                    * response after a challenge, a command after the
	                    * final reply, so it waits for the server's answer */
	bool c_auth_ended; /* ... which was final (or a continuation nothing
	                    * asked for came): the next line may still be a
	                    * response the client sent too early */
};

/* Zeroes an adapter's state ST of SIZE bytes, which begins with a struct
 * pu_adapter, and sets that from CONF. Without STARTTLS offered, the
 * client is TLS or postern's side to the backend is: the post-TLS rules
 * apply from the start. */
void pu_adapter_init(void *st, size_t size, const struct proto_conf *conf);

/* The client side is TLS now: what the plaintext SASL exchange left is
 * forgotten. */
void pu_adapter_tls_started(struct pu_adapter *a);

/* The server's final reply ended the SASL exchange: client lines are
 * commands again, the next one perhaps a response sent too early. */
void pu_sasl_ended(struct pu_adapter *a);

/* STARTTLS, the same rule in every protocol: refused with TLS_ACTIVE when
 * the client's side is TLS already, with TLS_ARGS when it came with
 * arguments (NOARGS false); NULL when it may go on. */
const char *pu_starttls_refusal(const struct pu_adapter *a, bool noargs, const char *tls_active,
                                const char *tls_args);

/* Line framing, what a line-based adapter does first with the LEN bytes
 * at P from one side. *N: the length of the line with its LF, 0 when none
 * has come; ACT consumes it, or all LEN bytes when there is no LF.
 * MIDLINE: that side is inside a line too long to hold. */
enum pu_frame {
	PF_LINE,    /* a whole line of *N bytes */
	PF_MIDLINE, /* more of a line too long to hold, passed; *N > 0: its end */
	PF_MORE,    /* no LF yet, and room to wait for it */
	PF_LONG     /* no LF and no room (FULL): a line too long to hold begins */
};
enum pu_frame pu_frame(bool *midline, const char *p, size_t len, bool full,
                       struct proto_action *act, size_t *n);
/* The verdict on what is not a whole line, for a side that passes lines
 * too long to hold (a server's, a SASL response, a message body). */
enum proto_verdict pu_frame_pass(bool *midline, enum pu_frame f);

/* Case-insensitive comparison of a word with a literal. */
bool pu_word_is(struct pu_word w, const char *lit);

/* True if only spaces remain in [p, end). */
bool pu_blank(const char *p, const char *end);

/* IMAP: does the line (without EOL) end in a literal {N}, {N+} or
 * "~{N}"? Returns 1 and sets SIZE and SYNC, 0 if not, -1 if the number is
 * malformed or too large. */
int pu_imap_literal(const char *line, size_t n, uint64_t *size, bool *sync);

/* Capability policy: what to remove from and add to a backend's list. */
struct pu_caps {
	const char *const *remove;        /* exact names, case-insensitive */
	const char *const *remove_prefix; /* e.g. "AUTH=" */
	const char *const *add;
};
bool pu_cap_removed(struct pu_word w, const struct pu_caps *c);

/* Rewrites the space-separated list in [p, p+n) into DST (cap bytes):
 * whole atoms only (a word that does not fit, or holds a control, an 8-bit
 * byte or an atom-special such as "]", is left out), the added ones
 * always. Returns the length. */
size_t pu_caps_rewrite(const char *p, size_t n, const struct pu_caps *c, char *dst, size_t cap);

/* The commands in flight of an untagged protocol (POP3, SMTP): replies come
 * in order, so the head is the command the next reply answers. */
#define PU_QUEUE_MAX 64
struct pu_queue {
	unsigned char kind[PU_QUEUE_MAX];
	unsigned head, count;
};
void pu_queue_push(struct pu_queue *q, int kind);
void pu_queue_pop(struct pu_queue *q);
static inline int
pu_queue_head(const struct pu_queue *q)
{
	return q->kind[q->head];
}

/* Client role: the start of every adapter's up_start, its state ST of
 * SIZE bytes zeroed and ACT set to send nothing yet (the server speaks
 * first). */
void pu_up_begin(void *st, size_t size, struct proto_action *act);

/* Client role: sets ACT to consume N bytes and send TEXT; returns R. */
enum proto_up pu_up(struct proto_action *act, size_t consume, const char *text, enum proto_up r);

/* Sets ACT to answer with a formatted line built in SCRATCH. */
enum proto_verdict pu_answer(struct proto_action *act, enum proto_verdict v, size_t consume,
                             char *scratch, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* Command log. Text is built in scratch + PROTO_SCRATCH, at most
 * PROTO_LOG_MAX bytes ("..." marks a cut), so a reply built in the scratch
 * and the log line of the same verdict never overlap. */
#define PU_SECRET "***"
void pu_log_begin(struct proto_action *act, char *scratch, unsigned flags);
void pu_log_put(struct proto_action *act, char *scratch, const char *p, size_t n);
void pu_log_str(struct proto_action *act, char *scratch, const char *s);
/* Opaque content (a literal, a message body): "{N bytes}". */
void pu_log_size(struct proto_action *act, char *scratch, uint64_t n);
/* A whole line (without EOL) of LEN bytes. With an IMAP literal at its
 * end (LIT), the marker is shown as "{N bytes}" and PL_CONT is set. */
void pu_log_line(struct proto_action *act, char *scratch, const char *p, size_t len, bool lit,
                 uint64_t size, unsigned flags);

/* An untagged command line (POP3, SMTP) for the log, its secrets hidden
 * as the PU_HIDE_* flags of its verb say (a PU_SASL mechanism through
 * pu_log_mech) and recorded with pu_log_secret. The verb is split as
 * pu_next_token does; after odd white space around it (a TAB, leading or
 * doubled spaces) all that follows the verb is hidden. */
void pu_log_command(struct proto_action *act, char *scratch, const char *p, size_t len,
                    unsigned flags);
/* Hides [p, p+n) as "***" and records it in ACT as the secret the
 * session must mask wherever it reappears. */
void pu_log_secret(struct proto_action *act, char *scratch, const char *p, size_t n);
/* A SASL mechanism name: logged as sent when it is one (RFC 4422: at most
 * 20 of [A-Za-z0-9_-]), "***" otherwise, since it may be a response. */
void pu_log_mech(struct proto_action *act, char *scratch, struct pu_word mech);
/* A SASL response line: "*" (a cancel) or "***" (recorded as a secret). */
void pu_log_sasl(struct proto_action *act, char *scratch, const char *p, size_t len);

/* Case-insensitive search for NEEDLE in [p, p+n). */
bool pu_contains_ci(const char *p, size_t n, const char *needle);

#endif
