/* What the adapters share to answer a client's password login themselves
 * (backend_auth = oauth2, PV_LOGIN): reading the credentials out of the
 * SASL mechanisms they accept. Pure; the decoded bytes are secrets the
 * caller wipes. */
#ifndef POSTERN_PROTO_LOGIN_H
#define POSTERN_PROTO_LOGIN_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/proto.h>
#include <postern/proto_util.h>

/* Longest user name and password accepted. */
#define PL_USER_MAX 255
#define PL_PASS_MAX PROTO_LOGIN_PASS_MAX

/* SASL PLAIN's response (RFC 4616: "authzid NUL authcid NUL passwd") as
 * B64 (N bytes of base64; "=" is an empty response), decoded into OUT
 * (CAP bytes): *USER and *PASS point into it. An authorization identity
 * other than none or the user's own is refused: postern logs in as the
 * account only. Returns 0, or -1 when it is not such a response. */
int pl_sasl_plain(const char *b64, size_t n, char *out, size_t cap, struct pu_word *user,
                  struct pu_word *pass);

/* Sets ACT for PV_LOGIN: consume CONSUME bytes, log in as USER with PASS. */
enum proto_verdict pl_login(struct proto_action *act, size_t consume, struct pu_word user,
                            struct pu_word pass);

/* ---- the untagged protocols (POP3, SMTP) ----
 * Their logins share one course: the client's AUTH PLAIN or LOGIN (SMTP),
 * or USER and PASS (POP3), is answered by postern; the server then gets
 * "AUTH XOAUTH2 <message>" (or OAUTHBEARER), its error challenge an empty
 * response, and its final reply goes to the client. The adapters only
 * give their words and say when a line is theirs. */

/* An adapter's replies, each a whole line without its CRLF. */
struct pl_words {
	const char *go;        /* ask for a SASL response ("334 ", "+ ") */
	const char *user_go;   /* AUTH LOGIN's "Username:" challenge, NULL: no LOGIN */
	const char *pass_go;   /* ... and its "Password:" one */
	const char *cancelled; /* the client sent "*" */
	const char *bad;       /* a response that is not what the mechanism wants */
	const char *no_mech;   /* another mechanism */
	const char *fail[3];   /* by enum proto_login_fail */
};

enum {
	PLS_IDLE,
	PLS_PLAIN,    /* PLAIN's response comes next */
	PLS_USER,     /* AUTH LOGIN's user name comes next */
	PLS_PASS,     /* ... then its password */
	PLS_TOKEN,    /* PV_LOGIN given: the session fetches the token */
	PLS_UPSTREAM, /* AUTH sent to the server: its final reply ends it */
};

struct pa_login;

struct pl_login {
	struct pa_login *auth; /* the adapter's, for the auth line: set at init */
	unsigned char state;   /* PLS_* */
	bool bearer;           /* OAUTHBEARER: an error challenge is answered "AQ==" */
	bool done;             /* logged in: no second login is answered */
	unsigned char user_len;
	char user[PL_USER_MAX + 1]; /* POP3 USER, AUTH LOGIN's first response */
};

/* Whether client lines wait (PLS_TOKEN, PLS_UPSTREAM). */
static inline bool
pl_busy(const struct pl_login *l)
{
	return l->state >= PLS_TOKEN;
}
/* Whether the next client line is a SASL response for postern. */
static inline bool
pl_reading(const struct pl_login *l)
{
	return l->state >= PLS_PLAIN && l->state <= PLS_PASS;
}

/* A client line too long to read, dropped and answered with the
 * adapter's error: a SASL response postern waited for is over, so the
 * next line is a command again. */
static inline void
pl_line_dropped(struct pl_login *l)
{
	if (pl_reading(l))
		l->state = PLS_IDLE;
}

/* AUTH with MECH and its initial response IR (IR.n 0: none), a whole
 * line of N bytes. The caller made sure no reply is owed before (its
 * answer is local). */
enum proto_verdict pl_auth(struct pl_login *l, const struct pl_words *w, struct pu_word mech,
                           struct pu_word ir, size_t n, struct proto_action *act, char *scratch);
/* A client line of N bytes while pl_reading. */
enum proto_verdict pl_response(struct pl_login *l, const struct pl_words *w, const char *p,
                               size_t n, struct proto_action *act, char *scratch);
/* PV_LOGIN with the user name kept in L (POP3's USER) and PASS. */
enum proto_verdict pl_login_kept(struct pl_login *l, size_t n, struct pu_word pass,
                                 struct proto_action *act);
/* login_send: "AUTH MECH BLOB". */
void pl_send(struct pl_login *l, const char *mech, const char *blob, size_t len,
             struct proto_action *act, char *scratch);
/* A challenge line of N bytes from the server during PLS_UPSTREAM. */
enum proto_verdict pl_challenge(const struct pl_login *l, size_t n, struct proto_action *act);
/* The server's final reply to postern's AUTH (OK: it succeeded): ACT
 * gets the verdict for the auth line. */
void pl_ended(struct pl_login *l, bool ok, struct proto_action *act);
/* login_fail: the client's answer. */
void pl_fail(struct pl_login *l, const struct pl_words *w, enum proto_login_fail why,
             struct proto_action *act, char *scratch);

#endif
