/* What the files of the IMAP adapter share (src/proto_imap.c, the
 * command filter; src/imap_redact.c, the command log; src/imap_id.c, ID's
 * forwarding fields; src/imap_capability.c, capability lists;
 * src/imap_client_role.c, STARTTLS towards the backend). Private to the
 * adapter. */
#ifndef POSTERN_IMAP_INTERNAL_H
#define POSTERN_IMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <postern/imap_token.h>
#include <postern/proto_auth.h>
#include <postern/proto_login.h>
#include <postern/proto_util.h>

#define TAG_MAX 64
#define TAGS_MAX 16
#define LONG_HEAD 128
#define REFUSED_LITERAL "; the literal of a refused command cannot be skipped"

/* The part of a line too long to hold that is still to come. */
struct long_line {
	bool on;
	bool drop; /* refused: swallowed, not passed */
	bool sasl; /* a SASL response: no syntax, all secret */
	uint64_t bytes;
	char head[LONG_HEAD]; /* the log's view of its beginning */
	size_t head_len;
	char tag[TAG_MAX]; /* its tag, watched if it ends in a synchronising literal */
	size_t tag_len;
	unsigned char lit_rule; /* LIT_*: what literal its command may take */
};

/* Whether a command may carry a literal. */
enum {
	LIT_NONE, /* it takes none */
	LIT_ANY,  /* it takes one */
	LIT_SYNC  /* it takes one, but its extension is not one the server
	           * named: a server without it skips the line and runs a
	           * non-synchronising literal as commands */
};

struct imap_state {
	struct pu_adapter a; /* observe: also refuse COMPRESS; SASL challenges:
	                      * "+" lines; c_auth_ended also after a "+" nothing
	                      * asked for */
	/* client -> server */
	struct imap_scan c_scan; /* the command's nesting across its literals */
	struct long_line c_long;
	uint64_t c_literal;         /* literal bytes still to pass */
	bool c_cont;                /* the current command goes on after its literal */
	bool c_sync;                /* a synchronising literal awaits the server's verdict */
	bool c_idle;                /* IDLE sent and not completed: "DONE" ends it, and
	                             * only DONE (a server may end IDLE on any line) */
	bool c_lit_secret;          /* the literal being passed is a password */
	bool c_log_cut;             /* a refused literal left its command's log line open */
	bool c_id;                  /* an ID goes on after its literal: scrubbed */
	bool c_unasked;             /* a "+" nothing asked for came: the server reads
	                             * the next line whole as a response */
	unsigned char c_id_strings; /* strings of that ID so far */
	unsigned char c_login;      /* LOGIN being logged: 1 + its arguments so far */
	uint64_t c_sync_len;
	unsigned inflight; /* forwarded commands not yet completed */
	/* Hashes of the tags of the first of them (more: tags_lost), so that
	 * a synchronising literal knows whether an earlier command shares
	 * its tag (whose completion would look like the literal's refusal). */
	uint32_t tags[TAGS_MAX];
	unsigned char ntags;
	bool tags_lost;
	char tag[TAG_MAX]; /* tag of the command whose completion we watch */
	size_t tag_len;
	struct pa_login auth; /* login attempts in flight, for the auth line */
	bool auth_lit_user;   /* the literal being passed is LOGIN's user name */
	/* server -> client */
	struct imap_scan s_scan;
	struct long_line s_long;
	uint64_t s_literal;
	bool s_cont;
	bool s_greeted;           /* the greeting has passed: nothing may precede it */
	unsigned s_exts;          /* F_EXT_*: the extensions the server's latest
	                           * capability list names */
	bool logged_in;           /* a login succeeded, or PREAUTH, and no
	                           * UNAUTHENTICATE since: LOGIN takes no LITERAL+ */
	char unauth_tag[TAG_MAX]; /* the last UNAUTHENTICATE's tag */
	size_t unauth_tag_len;
	/* backend_auth = oauth2: postern answers the client's login itself
	 * (imap_login.c) */
	bool login;
	unsigned char ol;     /* OL_*: where postern's login is */
	bool ol_bearer;       /* OAUTHBEARER: an error challenge is answered "AQ==" */
	bool ol_done;         /* logged in: AUTH=PLAIN is no longer offered */
	char ol_tag[TAG_MAX]; /* the client's tag, under which it runs */
	size_t ol_tag_len;
	/* OL_LITERAL: where a LOGIN with literals is (imap_login.c) */
	unsigned char ol_lit; /* OLL_* */
	size_t ol_lit_left;   /* bytes of the literal being read */
	char ol_user[PL_USER_MAX];
	size_t ol_user_len;
};

enum {
	OL_IDLE,
	OL_PLAIN,   /* "+" sent for AUTHENTICATE PLAIN: the response comes next */
	OL_LITERAL, /* a LOGIN with literals is being read (ol_lit) */
	OL_TOKEN,   /* PV_LOGIN given: the session fetches the token */
	OL_UPSTREAM /* AUTHENTICATE sent to the server: its completion ends it */
};

enum {
	OLL_USER,       /* the user name's literal */
	OLL_AFTER_USER, /* the line after it */
	OLL_PASS        /* the password's literal and the line that ends the command */
};

enum {
	F_IDLE = PU_OWN,            /* its "DONE" line is no command */
	F_LOGIN = PU_OWN << 1,      /* LOGIN user password */
	F_ID = PU_OWN << 2,         /* RFC 2971: may carry forwarding fields */
	F_COMPRESS = PU_OWN << 3,   /* RFC 4978: would blind the command log */
	F_PRETLS = PU_OWN << 4,     /* may reach the backend before TLS */
	F_UNDERSTOOD = PU_OWN << 5, /* postern acts on it: must parse strictly */
	F_NOARGS = PU_OWN << 6,
	F_LITERAL = PU_OWN << 7, /* takes arguments that may be literals */
	/* The extension a command belongs to: its literal needs the server to
	 * name it (imap_capability.c tells which capabilities do). */
	F_EXT_SORT = PU_OWN << 8,
	F_EXT_THREAD = PU_OWN << 9,
	F_EXT_MOVE = PU_OWN << 10,
	F_EXT_ACL = PU_OWN << 11,
	F_EXT_METADATA = PU_OWN << 12,
	F_EXT_QUOTA = PU_OWN << 13,
	F_EXT_NOTIFY = PU_OWN << 14,
	F_EXT_REPLACE = PU_OWN << 15,
	F_EXT_URLAUTH = PU_OWN << 16,
	F_EXT = F_EXT_SORT | F_EXT_THREAD | F_EXT_MOVE | F_EXT_ACL | F_EXT_METADATA | F_EXT_QUOTA |
	        F_EXT_NOTIFY | F_EXT_REPLACE | F_EXT_URLAUTH
};

#define ID_STRINGS_MAX 60  /* RFC 2971: 30 pairs */
#define ID_STRING_MAX 1024 /* RFC 2971 */

/* ---- the command log (imap_redact.c) ---- */

/* The command log's view of a command line whose verb has FLAGS:
 * LOGIN's password and AUTHENTICATE's initial response become "***"; a
 * line that does not parse shows only its tag and verb. */
void imap_log_command(struct imap_state *s, const struct imap_cmd *c, unsigned flags,
                      struct proto_action *act, char *scratch);
/* A line that continues a command after its literal. */
void imap_log_continuation(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
                           char *scratch);
/* A line too long to hold, once it ended: what it began with, and its
 * size, never its contents (LIT: it ends in a literal of LSIZE bytes). */
void imap_log_long(const struct long_line *l, bool lit, uint64_t lsize, unsigned flags,
                   struct proto_action *act, char *scratch);
/* What the log shows of an over-long line's beginning at P (N bytes). */
void imap_long_head(struct long_line *l, const char *p, size_t n);

/* ---- ID's forwarding fields (imap_id.c) ---- */

/* Whether the string of N bytes at V names a forwarding field. */
bool imap_is_forwarding(const char *v, size_t n);
/* The strings of an ID list from Q on; COUNT counts the strings of the
 * whole command. Returns the refusal ("BAD ..."), or NULL with the offsets
 * of the forwarding fields' first letters in AT (*NAT of them). */
const char *imap_id_strings(const struct imap_cmd *c, const char *q, unsigned *count,
                            size_t at[ID_STRINGS_MAX], size_t *nat);
/* ID NIL, or ID ( strings ): as imap_id_strings for the whole command. */
const char *imap_id_check(const struct imap_cmd *c, unsigned *count, size_t at[ID_STRINGS_MAX],
                          size_t *nat);
/* Forwards a command line with the NAT forwarding keys at AT defaced. */
enum proto_verdict imap_forward_id(const struct imap_cmd *c, const size_t *at, size_t nat,
                                   struct proto_action *act, char *scratch);

/* ---- capability lists (imap_capability.c) ---- */

/* A server response line of N bytes (with its EOL) whose tag is TAG, its
 * next word at Q: "* CAPABILITY ..." or a line with a [CAPABILITY ...]
 * response code gets its list rewritten for the client as S's terms say
 * (REPLACE), and the extensions it names kept in s_exts; any other line
 * passes. */
enum proto_verdict imap_caps_response(struct imap_state *s, const char *p, size_t n,
                                      struct pu_word tag, const char *q, struct proto_action *act,
                                      char *scratch);

/* ---- shared by the adapter's files (proto_imap.c) ---- */

bool imap_server_at_boundary(const struct imap_state *s);
void imap_tag_sent(struct imap_state *s, const char *tag, size_t n);
/* Local answer to a client command C ("BAD why", "NO why"). */
enum proto_verdict imap_answer(struct imap_state *s, const struct imap_cmd *c,
                               struct proto_action *act, char *scratch, const char *text);

/* ---- postern's own login, backend_auth = oauth2 (imap_login.c) ---- */

/* LOGIN or AUTHENTICATE (SASL) C from the client, parsed and past the
 * TLS rules: answered by postern (PV_LOGIN, or "+" for PLAIN's response). */
enum proto_verdict imap_login_command(struct imap_state *s, const struct imap_cmd *c, bool sasl,
                                      struct proto_action *act, char *scratch);
/* The client's response to AUTHENTICATE PLAIN's "+" (N: the line, 0: none yet). */
enum proto_verdict imap_login_response(struct imap_state *s, const char *p, size_t len, size_t n,
                                       bool full, struct proto_action *act, char *scratch);
/* The client's input (LEN bytes, FULL: no more will fit) during a LOGIN
 * with literals: its literals and the lines between them, then the login
 * (PV_LOGIN) with the password's part of the input. */
enum proto_verdict imap_login_literal(struct imap_state *s, const char *p, size_t len, bool full,
                                      struct proto_action *act, char *scratch);
/* A "+" line of N bytes from the server during postern's AUTHENTICATE:
 * an error challenge, answered for the client (PV_TO_SERVER). */
enum proto_verdict imap_login_challenge(struct imap_state *s, size_t n, struct proto_action *act,
                                        char *scratch);
void imap_login_send(void *st, const char *mech, const char *blob, size_t len,
                     struct proto_action *act, char *scratch);
void imap_login_fail(void *st, enum proto_login_fail why, struct proto_action *act, char *scratch);

/* ---- client role (imap_client_role.c) ---- */

struct imap_up {
	int phase;
	bool offers_starttls;
	size_t caps_len; /* capabilities learnt after TLS, in caps */
	char caps[1024];
};

void imap_up_start(void *st, const char *helo, struct proto_action *act, char *scratch);
void imap_up_tls_done(void *st, struct proto_action *act, char *scratch);
enum proto_up imap_upstream(void *st, const char *p, size_t len, bool full,
                            struct proto_action *act, char *scratch);

#endif
