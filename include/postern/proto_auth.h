/* Login attempts as the adapters see them, for the auth line of the log
 * (fail2ban's signal) and postern_auth_total: who tried, taken from the
 * command (IMAP LOGIN, POP3 USER/APOP) or the first SASL response (PLAIN's
 * authentication identity, LOGIN's user name), and the verdict, taken from
 * the server's final reply. Never a password: of a SASL response only the
 * user name is kept, and the decoded copy is wiped. Pipelined attempts wait
 * in a short queue, oldest first (IMAP: matched by tag); when it is full the
 * adapter holds the next login until a verdict makes room. */
#ifndef POSTERN_PROTO_AUTH_H
#define POSTERN_PROTO_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/proto.h>
#include <postern/proto_util.h>

/* Longer user names are cut (and end in "..." in the log). */
#define PA_USER_MAX 64
/* Longer tags are refused by the IMAP adapter before. */
#define PA_TAG_MAX 64
#define PA_PENDING_MAX 4

struct pa_name {
	unsigned char len;
	bool cut;
	char b[PA_USER_MAX];
};

struct pa_attempt {
	struct pa_name user;
	unsigned char tag_len;
	char tag[PA_TAG_MAX];
};

struct pa_login {
	struct pa_name user; /* named by the last USER (POP3) */
	unsigned char sasl;  /* the newest attempt's next SASL response names its user */
	unsigned char n;     /* attempts awaiting their verdict, oldest first */
	struct pa_attempt q[PA_PENDING_MAX];
	struct pa_name shown; /* the one act->auth_user points to */
};

/* No room for another attempt: the adapter waits for a verdict. */
bool pa_full(const struct pa_login *l);

/* The user name of the next attempts (POP3 USER, APOP; IMAP LOGIN). */
void pa_user(struct pa_login *l, const char *p, size_t n);

/* An attempt (tagged TAG, or none: TAGN 0) goes to the server with the
 * user name last set. The caller checked pa_full. */
void pa_begin(struct pa_login *l, const char *tag, size_t tagn);

/* The same for a SASL exchange with mechanism MECH and initial response IR
 * (N bytes, base64 or "="; N = 0: none, the first response names the user). */
void pa_begin_sasl(struct pa_login *l, const char *tag, size_t tagn, struct pu_word mech,
                   const char *ir, size_t n);

/* N more bytes of the newest attempt's user name (an IMAP literal, which
 * may come in pieces). */
void pa_user_more(struct pa_login *l, const char *p, size_t n);

/* A SASL response line from the client (without its EOL). */
void pa_sasl_response(struct pa_login *l, const char *p, size_t n);

/* The server's final reply to the oldest attempt (with TAG when TAGN > 0):
 * ACT carries the verdict and the user name when there was one. */
void pa_end(struct pa_login *l, const char *tag, size_t tagn, bool ok, struct proto_action *act);

#endif
