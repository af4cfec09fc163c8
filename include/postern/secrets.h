/* The secrets one session has shown (passwords, SASL responses), kept so
 * that the command log and the transcript mask them wherever they reappear
 * later in the session, in either direction: a server that echoes a
 * password back ("<password> BAD Error in IMAP command"), a reply that
 * quotes a SASL response.
 *
 * Bounded: SECRETS_MAX slots of at most SECRET_LEN_MAX bytes; when all are
 * taken the oldest is forgotten. Besides the bytes as sent, a secret adds
 * the forms a server may reflect: the content of an IMAP quoted string, and
 * what base64 decodes to (of SASL PLAIN the password, of XOAUTH2 /
 * OAUTHBEARER the token, else the whole decoded text), and of a hidden text
 * of several words each word (and its decoding) that is not an upper-case
 * verb or mechanism name. Secrets shorter than
 * SECRET_LEN_MIN bytes are not remembered: masking them would deface every
 * line. The memory is wiped (OPENSSL_cleanse) by secrets_wipe. */
#ifndef POSTERN_SECRETS_H
#define POSTERN_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/proto.h>

#define SECRETS_MAX 16
#define SECRET_LEN_MIN 4
/* A reappearance is seen in log text, which is at most PROTO_LOG_MAX long:
 * a longer secret is kept by its first bytes (and masked to the end of the
 * word that follows them). */
#define SECRET_LEN_MAX PROTO_LOG_MAX

struct secret {
	unsigned short len;
	bool cut; /* only the first SECRET_LEN_MAX bytes are kept */
	char b[SECRET_LEN_MAX];
};

struct secrets {
	struct secret s[SECRETS_MAX];
	unsigned next; /* the slot to take next (the oldest when all are used) */
};

/* Remembers [p, p+n) (white space around it trimmed) and its derived forms. */
void secrets_add(struct secrets *sec, const char *p, size_t n);

/* Copies [in, in+n) into OUT (CAP bytes, not NUL-terminated) with every
 * remembered secret replaced by "***", also one cut by the end of the text
 * (or by the "..." that marks a cut line), in any letter case (a server
 * may echo it in upper case). Only whole words are masked: a
 * span of secrets with a letter or digit on both sides of one of its ends
 * is part of a longer word, which stays. Returns the length written. */
size_t secrets_mask(const struct secrets *sec, const char *in, size_t n, char *out, size_t cap);

/* The same for a log line whose word FRAME (1: its first; 0: none), its
 * verb or status, is never masked: a client cannot hide what a line is by
 * choosing it as its password. */
size_t secrets_mask_line(const struct secrets *sec, const char *in, size_t n, unsigned frame,
                         char *out, size_t cap);

/* Forgets everything, overwriting the memory. */
void secrets_wipe(struct secrets *sec);

#endif
