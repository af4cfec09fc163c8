/* IMAP (RFC 9051/3501, STARTTLS per RFC 2595). Commands are tagged, so local
 * answers need no ordering against the backend's; what matters is framing.
 * Every line is read by the tokenizer (imap_token.c), which finds literals
 * ({N}, {N+}, ~{N}) exactly where a strict server does; their bytes are
 * followed byte for byte, so nothing inside one is ever taken for a
 * command, and a synchronising literal is only sent once the server says
 * "+".
 *
 * Before TLS (require_tls) only a short list of fully parsed commands
 * reaches the backend; after TLS the commands postern acts on must parse
 * strictly, and a line that does not parse but could end in a literal for
 * a laxer server is answered locally, so postern and the backend always
 * agree on where each command begins. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <postern/imap_token.h>
#include <postern/proto_cmd.h>
#include <postern/proto_util.h>

#define TAG_MAX 64
#define TAGS_MAX 16
#define LONG_HEAD 128

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
	bool lit_ok; /* its command takes literal arguments */
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
	bool c_drop;                /* the current command is refused: swallow the rest */
	bool c_sync;                /* a synchronising literal awaits the server's verdict */
	bool c_idle;                /* IDLE sent and not completed: "DONE" ends it, and
	                             * only DONE (a server may end IDLE on any line) */
	bool c_lit_secret;          /* the literal being passed is a password */
	bool c_id;                  /* an ID goes on after its literal: scrubbed */
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
	/* server -> client */
	struct imap_scan s_scan;
	struct long_line s_long;
	uint64_t s_literal;
	bool s_cont;
	bool s_greeted; /* the greeting has passed: nothing may precede it */
};

enum {
	F_IDLE = PU_OWN,            /* its "DONE" line is no command */
	F_LOGIN = PU_OWN << 1,      /* LOGIN user password */
	F_ID = PU_OWN << 2,         /* RFC 2971: may carry forwarding fields */
	F_COMPRESS = PU_OWN << 3,   /* RFC 4978: would blind the command log */
	F_PRETLS = PU_OWN << 4,     /* may reach the backend before TLS */
	F_UNDERSTOOD = PU_OWN << 5, /* postern acts on it: must parse strictly */
	F_NOARGS = PU_OWN << 6,
	F_LITERAL = PU_OWN << 7 /* takes arguments that may be literals */
};

/* F_LITERAL: commands with an astring, string or nstring argument, where
 * a literal may stand (RFC 9051; ID RFC 2971, SORT and THREAD RFC 5256,
 * ACL RFC 4314, METADATA RFC 5464, NOTIFY RFC 5465, URLAUTH RFC 4467,
 * REPLACE RFC 8508, QUOTA RFC 9208). A server past login may skip the
 * rest of the line of any other command, literal marker included (Dovecot
 * does), so postern never relays a literal there. UID is judged by its
 * subcommand. */
static const struct pu_verb imap_verbs[] = {
        {"STARTTLS", PU_STARTTLS | F_UNDERSTOOD | F_NOARGS},
        {"LOGIN", PU_REFUSE_PLAIN | F_LOGIN | F_UNDERSTOOD | F_LITERAL},
        {"AUTHENTICATE", PU_REFUSE_PLAIN | PU_SASL | F_UNDERSTOOD},
        {"IDLE", F_IDLE | F_UNDERSTOOD | F_NOARGS},
        {"ID", F_ID | F_PRETLS | F_UNDERSTOOD | F_LITERAL},
        {"COMPRESS", F_COMPRESS | F_UNDERSTOOD},
        {"CAPABILITY", F_PRETLS | F_NOARGS},
        {"NOOP", F_PRETLS | F_NOARGS},
        {"LOGOUT", F_PRETLS | F_NOARGS},
        {"APPEND", F_LITERAL},
        {"SELECT", F_LITERAL},
        {"EXAMINE", F_LITERAL},
        {"CREATE", F_LITERAL},
        {"DELETE", F_LITERAL},
        {"RENAME", F_LITERAL},
        {"SUBSCRIBE", F_LITERAL},
        {"UNSUBSCRIBE", F_LITERAL},
        {"LIST", F_LITERAL},
        {"LSUB", F_LITERAL},
        {"STATUS", F_LITERAL},
        {"SEARCH", F_LITERAL},
        {"FETCH", F_LITERAL},
        {"COPY", F_LITERAL},
        {"MOVE", F_LITERAL},
        {"SORT", F_LITERAL},
        {"THREAD", F_LITERAL},
        {"GETACL", F_LITERAL},
        {"SETACL", F_LITERAL},
        {"DELETEACL", F_LITERAL},
        {"LISTRIGHTS", F_LITERAL},
        {"MYRIGHTS", F_LITERAL},
        {"GETMETADATA", F_LITERAL},
        {"SETMETADATA", F_LITERAL},
        {"GETQUOTA", F_LITERAL},
        {"GETQUOTAROOT", F_LITERAL},
        {"SETQUOTA", F_LITERAL},
        {"NOTIFY", F_LITERAL},
        {"REPLACE", F_LITERAL},
        {"URLFETCH", F_LITERAL},
        {"GENURLAUTH", F_LITERAL},
        {"RESETKEY", F_LITERAL},
        {NULL, 0},
};

/* UID's subcommands that take a literal (the others are sequence sets). */
static const char *const uid_literal[] = {"FETCH", "SEARCH", "COPY", "MOVE",
                                          "SORT",  "THREAD", NULL};

/* ID fields a backend such as Dovecot believes from trusted proxies: a
 * client must not be able to claim them through postern (P6). Keys are
 * compared after unescaping; after TLS their names are defaced in place
 * ("x-" becomes "y-"), so the backend sees unknown fields it ignores. */
static const char *const id_forwarding[] = {"x-originating-", "x-connected-", "x-proxy-ttl",
                                            "x-session-",     "x-forward-",   NULL};
#define ID_STRINGS_MAX 60  /* RFC 2971: 30 pairs */
#define ID_STRING_MAX 1024 /* RFC 2971 */

static const char *const imap_drop_always[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_auth_prefix[] = {"AUTH=", NULL};
static const char *const imap_auth_compress_prefix[] = {"AUTH=", "COMPRESS=", NULL};
static const char *const imap_compress_prefix[] = {"COMPRESS=", NULL};
static const char *const imap_add_login_disabled[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_add_starttls[] = {"STARTTLS", NULL};

static void
imap_init(void *st, const struct proto_conf *conf)
{
	pu_adapter_init(st, sizeof(struct imap_state), conf);
}

static void
imap_tls_started(void *st)
{
	struct imap_state *s = st;

	pu_adapter_tls_started(&s->a);
	s->c_literal = 0;
	s->c_cont = s->c_drop = s->c_sync = false;
	s->c_lit_secret = s->c_id = false;
	s->c_login = 0;
	memset(&s->c_long, 0, sizeof(s->c_long));
}

/* The server side is between responses: a local answer may go in here. */
static bool
server_at_boundary(const struct imap_state *s)
{
	return s->s_literal == 0 && !s->s_cont && !s->s_long.on;
}

static uint32_t
tag_hash(const char *p, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	return h;
}

/* A command was forwarded: it awaits its tagged completion. */
static void
tag_sent(struct imap_state *s, const char *tag, size_t n)
{
	s->inflight++;
	if (s->ntags < TAGS_MAX)
		s->tags[s->ntags++] = tag_hash(tag, n);
	else
		s->tags_lost = true;
}

static void
tag_completed(struct imap_state *s, const char *tag, size_t n)
{
	uint32_t h = tag_hash(tag, n);

	if (s->inflight > 0)
		s->inflight--;
	for (unsigned i = 0; i < s->ntags; i++)
		if (s->tags[i] == h) {
			s->tags[i] = s->tags[--s->ntags];
			break;
		}
	if (s->inflight == 0) {
		s->ntags = 0;
		s->tags_lost = false;
	}
}

/* How many commands in flight may carry TAG (an upper bound). */
static unsigned
tag_in_flight(const struct imap_state *s, const char *tag, size_t n)
{
	uint32_t h = tag_hash(tag, n);
	unsigned k = 0;

	if (s->tags_lost)
		return s->inflight;
	for (unsigned i = 0; i < s->ntags; i++)
		k += s->tags[i] == h;
	return k;
}

static void
watch_tag(struct imap_state *s, const char *tag, size_t n)
{
	s->tag_len = n <= TAG_MAX ? n : 0; /* longer tags are refused before */
	memcpy(s->tag, tag, s->tag_len);
}

static enum proto_verdict
pass(struct proto_action *act, size_t n)
{
	act->consume = n;
	return PV_PASS;
}

static bool
word_is_nil(struct imap_tok t)
{
	return t.kind == IT_ATOM && t.n == 3 && strncasecmp(t.p, "NIL", 3) == 0;
}

/* A literal declared at the end of a command line: the bytes that follow. */
static void
start_literal(struct imap_state *s, const struct imap_cmd *c, const char *tag, size_t tagn)
{
	s->c_cont = true;
	if (tagn > 0) /* its completion may refuse a synchronising literal */
		watch_tag(s, tag, tagn);
	if (c->sync) {
		s->c_sync = true;
		s->c_sync_len = c->lsize;
	} else {
		s->c_literal = c->lsize;
	}
}

/* Local answer to a client command; swallows its non-synchronising
 * literal, if any (a synchronising one is never sent after a tagged reply). */
static enum proto_verdict
answer(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act, char *scratch,
       const char *text)
{
	if (!server_at_boundary(s))
		return PV_WAIT;
	if (c->lit && !c->sync) {
		s->c_drop = s->c_cont = true;
		s->c_literal = c->lsize;
	}
	if (c->bad_tag) /* no usable tag: untagged */
		return pu_answer(act, PV_REPLY, c->len, scratch, "* %s\r\n", text);
	return pu_answer(act, PV_REPLY, c->len, scratch, "%.*s %s\r\n", (int)c->tag.n, c->tag.p,
	                 text);
}

/* ---- command log ---- */

/* The arguments of LOGIN from Q on: the user name as sent, the password
 * and anything after it hidden and remembered as secrets. */
static void
log_login_args(struct imap_state *s, const struct imap_cmd *c, const char *q,
               struct proto_action *act, char *scratch)
{
	const char *end = c->end;

	for (;;) {
		struct imap_tok t = imap_next_tok(&q, end);
		if (t.kind == IT_END)
			break;
		bool user = s->c_login == 1;
		if (s->c_login < 255)
			s->c_login++;
		pu_log_str(act, scratch, " ");
		if (t.kind == IT_LITERAL) {
			if (user)
				pu_log_size(act, scratch, c->lsize);
			else
				pu_log_str(act, scratch, PU_SECRET);
			s->c_lit_secret = !user;
		} else if (user && (t.kind == IT_ATOM || t.kind == IT_QUOTED)) {
			pu_log_put(act, scratch, t.p, t.n);
		} else if (t.kind == IT_QUOTED && t.n >= 2) {
			pu_log_secret(act, scratch, t.p + 1, t.n - 2);
		} else {
			pu_log_secret(act, scratch, t.p, t.n);
		}
	}
}

/* A line as sent, its literal marker shown as "{N bytes}". */
static void
log_plain(const struct imap_cmd *c, struct proto_action *act, char *scratch)
{
	pu_log_put(act, scratch, c->p, c->lit ? c->lit_at : c->n);
	if (c->lit)
		pu_log_size(act, scratch, c->lsize);
}

/* The command log's view of a command line: LOGIN's password and
 * AUTHENTICATE's initial response become "***"; a line that does not
 * parse shows only its tag and verb, as the rest could be anything. */
static void
log_command(struct imap_state *s, const struct imap_cmd *c, unsigned flags,
            struct proto_action *act, char *scratch)
{
	s->c_login = 0;
	s->c_lit_secret = false;
	pu_log_begin(act, scratch, c->lit ? PL_CONT : 0);
	if (c->err) {
		if (c->bad_tag)
			pu_log_str(act, scratch, PU_SECRET);
		else
			pu_log_put(act, scratch, c->tag.p, c->tag.n);
		if (c->verb.n > 0) {
			pu_log_str(act, scratch, " ");
			pu_log_mech(act, scratch, c->verb);
		}
		if (c->verb.p + c->verb.n < c->p + c->n)
			pu_log_str(act, scratch, " " PU_SECRET);
		return;
	}
	size_t head = (size_t)(c->verb.p + c->verb.n - c->p);
	if (flags & F_LOGIN) {
		pu_log_put(act, scratch, c->p, head);
		s->c_login = 1;
		log_login_args(s, c, c->args, act, scratch);
	} else if (flags & PU_SASL) {
		const char *q = c->args, *end = c->end;
		struct imap_tok mech = imap_next_tok(&q, end);
		struct imap_tok ir = imap_next_tok(&q, end);
		pu_log_put(act, scratch, c->p, head);
		if (mech.kind != IT_END) {
			pu_log_str(act, scratch, " ");
			pu_log_mech(act, scratch, (struct pu_word){mech.p, mech.n});
		}
		if (ir.kind != IT_END) {
			pu_log_str(act, scratch, " ");
			pu_log_secret(act, scratch, ir.p, (size_t)(end - ir.p));
		}
	} else {
		log_plain(c, act, scratch);
	}
}

/* A line that continues a command after its literal. */
static void
log_continuation(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
                 char *scratch)
{
	pu_log_begin(act, scratch, c->lit ? PL_CONT : 0);
	s->c_lit_secret = false;
	if (c->err)
		pu_log_str(act, scratch, " " PU_SECRET);
	else if (s->c_login)
		log_login_args(s, c, c->p, act, scratch);
	else
		log_plain(c, act, scratch);
}

/* A line too long to hold, once it ended: what it began with, and its
 * size, never its contents. */
static void
log_long(const struct long_line *l, bool lit, uint64_t lsize, unsigned flags,
         struct proto_action *act, char *scratch)
{
	char t[64];
	int k = snprintf(t, sizeof(t), " ... {line too long: %llu bytes}",
	                 (unsigned long long)l->bytes);

	pu_log_begin(act, scratch, flags | (lit ? PL_CONT : 0));
	pu_log_put(act, scratch, l->head, l->head_len);
	pu_log_put(act, scratch, t, (size_t)k);
	if (lit) {
		pu_log_str(act, scratch, " ");
		pu_log_size(act, scratch, lsize);
	}
}

/* What the log shows of an over-long line's beginning: its first two
 * words where they are plain words, "***" otherwise. */
static void
long_head(struct long_line *l, const char *p, size_t n)
{
	const char *q = p, *end = p + (n < 256 ? n : 256);

	l->head_len = 0;
	for (int i = 0; i < 2; i++) {
		struct pu_word w = pu_next_word(&q, end);
		bool ok = w.n > 0 && w.n <= 40;
		for (size_t k = 0; ok && k < w.n; k++)
			ok = w.p[k] > 0x20 && w.p[k] < 0x7f && w.p[k] != '"' && w.p[k] != '{';
		const char *text = ok ? w.p : PU_SECRET;
		size_t len = ok ? w.n : 3;
		if (l->head_len + len + 1 > sizeof(l->head))
			break;
		if (i > 0)
			l->head[l->head_len++] = ' ';
		memcpy(l->head + l->head_len, text, len);
		l->head_len += len;
		if (!ok)
			break;
	}
}

/* ---- client -> server ---- */

static const struct pu_verb *
find_verb(struct pu_word w)
{
	for (const struct pu_verb *v = imap_verbs; v->name; v++)
		if (pu_word_is(w, v->name))
			return v;
	return NULL;
}

/* Whether the command VERB, its arguments at [args, end), may carry a
 * literal: see imap_verbs. */
static bool
takes_literal(struct pu_word verb, const char *args, const char *end)
{
	const struct pu_verb *v = find_verb(verb);

	if (v != NULL)
		return (v->flags & F_LITERAL) != 0;
	if (!pu_word_is(verb, "UID"))
		return false;
	struct imap_tok sub = imap_next_tok(&args, end);
	for (const char *const *u = uid_literal; sub.kind == IT_ATOM && *u; u++)
		if (pu_word_is((struct pu_word){sub.p, sub.n}, *u))
			return true;
	return false;
}

/* A literal after a command that takes none. The client waits for "+"
 * before a synchronising one, so a BAD keeps the framing; a
 * non-synchronising one is on its way, and whether it is a literal
 * (RFC 7888) or commands (a server that skipped the line) cannot be
 * known: the session ends. */
static enum proto_verdict
refuse_literal(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
               char *scratch)
{
	if (c->sync)
		return answer(s, c, act, scratch, "BAD This command takes no literal");
	if (!server_at_boundary(s))
		return PV_WAIT;
	return pu_answer(act, PV_CLOSE, c->len, scratch, "* BYE This command takes no literal\r\n");
}

static bool
is_forwarding(const char *v, size_t n)
{
	for (const char *const *f = id_forwarding; *f; f++) {
		size_t l = strlen(*f);
		if (n >= l && strncasecmp(v, *f, l) == 0)
			return true;
	}
	return false;
}

/* The strings of an ID list from Q on, in a line that parsed: quoted
 * strings or NIL, then ")" and the end, or a literal last. COUNT counts
 * the strings of the whole command. Values are checked like keys: one
 * named like a field loses nothing by being defaced, and a list's parity
 * is not trusted. Returns the refusal, or NULL with the offsets of the
 * forwarding fields' first letters in AT. */
static const char *
id_strings(const struct imap_cmd *c, const char *q, unsigned *count, size_t at[ID_STRINGS_MAX],
           size_t *nat)
{
	char v[ID_STRING_MAX];

	*nat = 0;
	for (;;) {
		struct imap_tok t = imap_next_tok(&q, c->end);
		if (t.kind == IT_CLOSE && *count % 2 == 0 &&
		    imap_next_tok(&q, c->end).kind == IT_END)
			return NULL;
		if (t.kind == IT_END || t.kind == IT_CLOSE || t.kind == IT_OPEN)
			return "BAD Invalid ID arguments";
		if (++*count > ID_STRINGS_MAX)
			return "BAD Too many ID fields";
		if (t.kind == IT_LITERAL) /* scrubbed whole as it passes */
			return c->lsize <= ID_STRING_MAX ? NULL : "BAD ID string too long";
		if (word_is_nil(t))
			continue;
		if (t.kind != IT_QUOTED)
			return "BAD Invalid ID arguments";
		size_t n = imap_tok_value(t, v, sizeof(v));
		if (n == (size_t)-1)
			return "BAD ID string too long";
		if (is_forwarding(v, n))
			at[(*nat)++] = (size_t)(t.p + 1 - c->p);
	}
}

/* ID NIL, or ID ( strings ). */
static const char *
id_check(const struct imap_cmd *c, unsigned *count, size_t at[ID_STRINGS_MAX], size_t *nat)
{
	const char *q = c->args;
	struct imap_tok t = imap_next_tok(&q, c->end);

	*nat = 0;
	if (word_is_nil(t))
		return imap_next_tok(&q, c->end).kind == IT_END ? NULL : "BAD Invalid ID arguments";
	if (t.kind != IT_OPEN)
		return "BAD Invalid ID arguments";
	return id_strings(c, q, count, at, nat);
}

/* Forwards an ID command with its forwarding keys defaced. Escapes only
 * make '"' and '\', so a key that matched begins with its 'x' as sent. */
static enum proto_verdict
forward_id(const struct imap_cmd *c, const size_t *at, size_t nat, struct proto_action *act,
           char *scratch)
{
	act->consume = c->len;
	if (nat == 0)
		return PV_PASS;
	memcpy(scratch, c->p, c->len);
	for (size_t i = 0; i < nat; i++)
		scratch[at[i]] = 'y';
	act->text = scratch;
	act->len = c->len;
	return PV_REPLACE;
}

/* LOGIN SP astring SP astring; with literals, the rest comes later. */
static bool
login_ok(const struct imap_cmd *c)
{
	const char *q = c->args, *end = c->end;
	unsigned n = 0;

	for (struct imap_tok t; (t = imap_next_tok(&q, end)).kind != IT_END; n++)
		if (t.kind != IT_ATOM && t.kind != IT_QUOTED && t.kind != IT_LITERAL)
			return false;
	return c->lit ? n <= 2 : n == 2;
}

/* AUTHENTICATE SP mechanism [SP initial-response], all atoms. */
static bool
sasl_ok(const struct imap_cmd *c)
{
	const char *q = c->args, *end = c->end;
	unsigned n = 0;

	for (struct imap_tok t; (t = imap_next_tok(&q, end)).kind != IT_END; n++)
		if (t.kind != IT_ATOM)
			return false;
	return n >= 1 && n <= 2;
}

static enum proto_verdict
command(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act, char *scratch)
{
	const struct pu_verb *verb = find_verb(c->verb);
	unsigned flags = verb ? verb->flags : 0;
	bool gated = !s->a.tls && s->a.require_tls; /* only the short list may pass */
	bool noargs = c->args >= c->end;
	char why[96];

	if (c->bad_tag)
		return answer(s, c, act, scratch, "BAD Invalid tag");
	if (!s->a.tls && memchr(c->p, '\0', c->n))
		return answer(s, c, act, scratch, "BAD NUL byte in command");
	if (c->tag.n > TAG_MAX)
		return answer(s, c, act, scratch, "BAD Tag too long");
	if (c->lit && !takes_literal(c->verb, c->args, c->end))
		return refuse_literal(s, c, act, scratch);
	if (flags & PU_STARTTLS) {
		const char *no =
		        pu_starttls_refusal(&s->a, noargs && !c->err, "BAD TLS is already active",
		                            "BAD STARTTLS takes no arguments");
		if (no)
			return answer(s, c, act, scratch, no);
		/* Replies to earlier commands must arrive in plaintext, before ours. */
		if (!server_at_boundary(s) || s->inflight > 0)
			return PV_WAIT;
		return pu_answer(act, PV_STARTTLS, c->len, scratch,
		                 "%.*s OK Begin TLS negotiation now\r\n", (int)c->tag.n, c->tag.p);
	}
	/* Before TLS nothing malformed passes; after it, nothing postern acts
	 * on, and nothing a laxer server could read a literal into. */
	if (c->err && (!s->a.tls || (flags & F_UNDERSTOOD) || c->ends_in_brace)) {
		snprintf(why, sizeof(why), "BAD Syntax error: %s", c->err);
		return answer(s, c, act, scratch, why);
	}
	if (gated && (flags & PU_REFUSE_PLAIN)) {
		act->event = "plaintext-auth-refused";
		return answer(s, c, act, scratch, "NO [PRIVACYREQUIRED] Use STARTTLS first");
	}
	if (gated && c->lit)
		return answer(s, c, act, scratch, "BAD Literals are not permitted before STARTTLS");
	if (gated && c->eightbit)
		return answer(s, c, act, scratch,
		              "BAD 8-bit data is not permitted before STARTTLS");
	if (gated && !(flags & F_PRETLS))
		return answer(s, c, act, scratch, "BAD Command not permitted before STARTTLS");
	if ((flags & F_NOARGS) && !noargs && (gated || (flags & F_UNDERSTOOD))) {
		snprintf(why, sizeof(why), "BAD %s takes no arguments", verb->name);
		return answer(s, c, act, scratch, why);
	}
	if ((flags & F_COMPRESS) && s->a.observe)
		return answer(s, c, act, scratch, "NO COMPRESS is off while commands are logged");
	size_t at[ID_STRINGS_MAX], nat = 0;
	unsigned ids = 0;
	if (flags & F_ID) {
		const char *bad = id_check(c, &ids, at, &nat);
		if (bad == NULL && nat > 0 && gated)
			bad = "BAD ID forwarding fields are not permitted";
		if (bad)
			return answer(s, c, act, scratch, bad);
	}
	if ((flags & F_LOGIN) && !login_ok(c))
		return answer(s, c, act, scratch, "BAD Invalid LOGIN arguments");
	if (flags & PU_SASL) {
		if (!sasl_ok(c))
			return answer(s, c, act, scratch, "BAD Invalid AUTHENTICATE arguments");
		/* The exchange ends with this tag's completion: earlier commands,
		 * which may carry the same tag, must have completed first. */
		if (s->inflight > 0 || !server_at_boundary(s))
			return PV_WAIT;
		s->a.c_auth = s->a.c_auth_wait = true;
		watch_tag(s, c->tag.p, c->tag.n);
	}
	/* The server's "+" or tagged refusal for a synchronising literal is
	 * told by its tag: no earlier command may share it. */
	if (c->lit && c->sync && tag_in_flight(s, c->tag.p, c->tag.n) > 0)
		return PV_WAIT;
	s->c_idle = (flags & F_IDLE) != 0;
	if (s->c_idle) /* its completion (a refusal) ends it too */
		watch_tag(s, c->tag.p, c->tag.n);
	s->c_id = (flags & F_ID) && c->lit;
	s->c_id_strings = (unsigned char)ids;
	tag_sent(s, c->tag.p, c->tag.n);
	if (c->lit)
		start_literal(s, c, c->tag.p, c->tag.n);
	return forward_id(c, at, nat, act, scratch);
}

/* A line that continues a command after its literal. */
static enum proto_verdict
continuation(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
             char *scratch)
{
	bool drop = s->c_drop;

	/* The command's beginning is at the backend already: a line that
	 * could end in a literal postern does not see cannot be refused on its
	 * own, and before TLS nothing malformed may pass at all. */
	if (!drop && c->err && (!s->a.tls || c->ends_in_brace || s->c_id))
		return pu_answer(act, PV_CLOSE, c->len, scratch,
		                 "* BYE Invalid command syntax\r\n");
	size_t at[ID_STRINGS_MAX], nat = 0;
	if (!drop && s->c_id) {
		unsigned ids = s->c_id_strings;
		const char *bad = id_strings(c, c->p, &ids, at, &nat);
		if (bad) /* "BAD why": the command is at the backend already */
			return pu_answer(act, PV_CLOSE, c->len, scratch, "* BYE %s\r\n", bad + 4);
		s->c_id_strings = (unsigned char)ids;
		s->c_id = c->lit;
	}
	if (s->a.observe)
		log_continuation(s, c, act, scratch);
	s->c_cont = c->lit;
	s->c_drop = c->lit && drop;
	if (c->lit && drop && c->sync)
		s->c_cont = s->c_drop = false; /* never sent after our answer */
	else if (c->lit && drop)
		s->c_literal = c->lsize; /* whatever the client sends of it */
	else if (c->lit)
		start_literal(s, c, NULL, 0);
	if (drop) {
		act->consume = c->len;
		return PV_DROP;
	}
	return forward_id(c, at, nat, act, scratch);
}

static enum proto_verdict
literal_bytes(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	size_t n = len < s->c_literal ? len : (size_t)s->c_literal;

	if (s->c_id && !s->c_drop) {
		/* An ID string (at most 1024 bytes) is judged whole. */
		if (n < s->c_literal && !full)
			return PV_MORE;
		s->c_literal -= n;
		act->consume = n;
		if (!is_forwarding(p, n))
			return PV_PASS;
		memcpy(scratch, p, n);
		scratch[0] = 'y';
		act->text = scratch;
		act->len = n;
		return PV_REPLACE;
	}
	s->c_literal -= n;
	act->consume = n;
	if (s->a.observe && s->c_lit_secret) {
		/* A password literal: nothing is logged of it (its line said
		 * "***"), but the session must remember it to mask echoes. */
		pu_log_begin(act, scratch, PL_CONT);
		act->secret = p;
		act->secret_len = n;
	}
	return s->c_drop ? PV_DROP : PV_PASS;
}

static enum proto_verdict
sasl_response(struct imap_state *s, const char *p, size_t n, struct proto_action *act,
              char *scratch)
{
	size_t body = pu_trim_eol(p, n);

	s->a.c_auth_wait = true;
	if (s->a.observe) {
		pu_log_begin(act, scratch, 0);
		if (body == 1 && p[0] == '*')
			pu_log_str(act, scratch, "*"); /* a cancel */
		else
			pu_log_secret(act, scratch, p, body);
	}
	return pass(act, n);
}

/* Bytes of an over-long line to judge now: a CR that may start its EOL
 * waits for the rest. */
static size_t
long_chunk(const char *p, size_t len, size_t n, bool full)
{
	if (n > 0)
		return n;
	return p[len - 1] == '\r' && !full ? len - 1 : len;
}

/* A line other than DONE during IDLE: the server reads it as the end of
 * IDLE (Dovecot answers BAD), a command only for postern. */
static enum proto_verdict
idle_not_done(struct imap_state *s, size_t n, struct proto_action *act, char *scratch)
{
	if (!server_at_boundary(s))
		return PV_WAIT;
	return pu_answer(act, PV_CLOSE, n, scratch, "* BYE Expected DONE\r\n");
}

/* The first 64 KiB of a client line with no end in sight (after TLS). */
static enum proto_verdict
client_long_head(struct imap_state *s, const char *p, size_t len, struct proto_action *act,
                 char *scratch)
{
	struct long_line l = {.on = true};
	struct imap_scan sc = s->c_scan;
	/* FULL, but the CR may still be kept for its LF unless it is all. */
	size_t chunk = long_chunk(p, len, 0, len == 1);
	enum proto_verdict v = PV_PASS;

	if (s->c_idle && !s->c_cont) {
		return idle_not_done(s, len, act, scratch);
	} else if (s->a.c_auth && !s->c_cont) {
		l.sasl = true;
		memcpy(l.head, PU_SECRET, 3);
		l.head_len = 3;
	} else if (s->c_cont && s->c_id && !s->c_drop) {
		/* ID strings are judged whole; its start is at the backend. */
		return pu_answer(act, PV_CLOSE, len, scratch, "* BYE Line too long\r\n");
	} else if (s->c_cont) {
		l.drop = s->c_drop;
		l.lit_ok = true; /* the command took one already */
		imap_scan_cont(&sc);
		imap_scan_feed(&sc, p, chunk);
	} else {
		struct pu_word tag, verb;
		size_t at = imap_cmd_head(p, chunk, &tag, &verb);
		const struct pu_verb *known = find_verb(verb);
		imap_scan_init(&sc, true);
		long_head(&l, p, chunk);
		if (at == 0 || tag.n > TAG_MAX || (known && (known->flags & F_UNDERSTOOD))) {
			/* Too long to judge: refused, and swallowed to its end. */
			if (!server_at_boundary(s))
				return PV_WAIT;
			l.drop = true;
			if (at == 0)
				imap_scan_fail(&sc, "Invalid command");
			else
				imap_scan_feed(&sc, p + at, chunk - at);
			if (at == 0 || tag.n > TAG_MAX)
				pu_answer(act, PV_REPLY, chunk, scratch, "* BAD Line too long\r\n");
			else
				pu_answer(act, PV_REPLY, chunk, scratch,
				          "%.*s BAD Line too long\r\n", (int)tag.n, tag.p);
			v = PV_REPLY;
		} else {
			tag_sent(s, tag.p, tag.n);
			s->c_idle = false;
			memcpy(l.tag, tag.p, tag.n);
			l.tag_len = tag.n;
			l.lit_ok = takes_literal(verb, p + at, p + chunk);
			imap_scan_feed(&sc, p + at, chunk - at);
		}
	}
	l.bytes = chunk;
	s->c_long = l;
	s->c_scan = sc;
	s->c_lit_secret = false;
	act->consume = chunk;
	return v != PV_PASS ? v : l.drop ? PV_DROP : PV_PASS;
}

/* The rest of an over-long client line, up to its end. */
static enum proto_verdict
client_long_tail(struct imap_state *s, const char *p, size_t len, size_t n, bool full,
                 struct proto_action *act, char *scratch)
{
	struct long_line *l = &s->c_long;
	size_t k = long_chunk(p, len, n, full);
	size_t body = n ? pu_trim_eol(p, n) : k;
	bool drop = l->drop;

	if (k == 0)
		return PV_MORE; /* a lone CR: its LF decides */
	if (!l->sasl)
		imap_scan_feed(&s->c_scan, p, body);
	l->bytes += k;
	act->consume = k;
	if (n == 0)
		return drop ? PV_DROP : PV_PASS;
	l->on = false;
	s->a.c_auth_wait = l->sasl;
	bool lit = !l->sasl && imap_scan_end(&s->c_scan);
	if (s->a.observe)
		log_long(l, lit, s->c_scan.lsize, 0, act, scratch);
	if (!drop && !l->sasl && s->c_scan.err && s->c_scan.last == '}')
		return pu_answer(act, PV_CLOSE, k, scratch, "* BYE Invalid command syntax\r\n");
	if (!drop && lit && !l->lit_ok) /* its beginning is at the backend */
		return pu_answer(act, PV_CLOSE, k, scratch,
		                 "* BYE This command takes no literal\r\n");
	s->c_cont = lit;
	s->c_drop = lit && drop;
	if (lit) {
		struct imap_cmd c = {.lit = true, .sync = s->c_scan.sync, .lsize = s->c_scan.lsize};
		if (drop && c.sync)
			s->c_cont = s->c_drop = false; /* never sent after our BAD */
		else if (drop)
			s->c_literal = c.lsize;
		else
			start_literal(s, &c, l->tag, l->tag_len);
	}
	return drop ? PV_DROP : PV_PASS;
}

static enum proto_verdict
client_input(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->c_literal > 0)
		return literal_bytes(s, p, len, full, act, scratch);
	if (s->c_sync || s->a.c_auth_wait || !s->s_greeted)
		return PV_WAIT;
	size_t n = pu_line_len(p, len);
	if (s->c_long.on)
		return client_long_tail(s, p, len, n, full, act, scratch);
	if (n == 0) {
		if (!full)
			return PV_MORE;
		if (!s->a.tls)
			return pu_answer(act, PV_CLOSE, len, scratch, "* BYE Line too long\r\n");
		return client_long_head(s, p, len, act, scratch);
	}
	if (s->a.c_auth && !s->c_cont)
		return sasl_response(s, p, n, act, scratch);

	struct imap_scan sc = s->c_scan;
	struct imap_cmd c;
	imap_cmd_parse(&c, &sc, p, n, s->c_cont);
	if (s->c_cont && c.lit && c.sync && !s->c_drop && tag_in_flight(s, s->tag, s->tag_len) > 1)
		return PV_WAIT; /* as in command(): its tag must be its own */
	if (s->c_cont) {
		s->c_scan = sc;
		return continuation(s, &c, act, scratch);
	}
	if (s->c_idle && c.n == 4 && strncasecmp(p, "DONE", 4) == 0) {
		s->c_idle = false;
		if (s->a.observe)
			pu_log_line(act, scratch, p, c.n, false, 0, 0);
		return pass(act, n);
	}
	if (s->c_idle) /* not a command: it would end IDLE at the server */
		return idle_not_done(s, c.len, act, scratch);
	enum proto_verdict v = command(s, &c, act, scratch);
	if (v == PV_WAIT)
		return v;
	s->c_scan = sc;
	if (s->a.observe && s->a.c_auth_ended && find_verb(c.verb) == NULL) {
		pc_log_early(act, scratch, p, c.n);
		/* Whatever follows its literal is hidden as LOGIN's password is. */
		s->c_login = c.lit ? 2 : 0;
		s->c_lit_secret = c.lit;
		if (c.lit)
			act->log_flags |= PL_CONT;
	} else if (s->a.observe) {
		const struct pu_verb *verb = find_verb(c.verb);
		log_command(s, &c, verb ? verb->flags : 0, act, scratch);
	}
	s->a.c_auth_ended = false;
	return v;
}

/* ---- server -> client ---- */

/* Rewrites a capability list found at [caps, caps+capn) inside LINE. */
static enum proto_verdict
rewrite_caps(const struct imap_state *s, const char *line, size_t n, const char *caps, size_t capn,
             struct proto_action *act, char *scratch)
{
	struct pu_caps pre = {imap_drop_always,
	                      s->a.observe ? imap_auth_compress_prefix : imap_auth_prefix,
	                      s->a.require_tls ? imap_add_login_disabled : imap_add_starttls};
	struct pu_caps post = {imap_drop_always, s->a.observe ? imap_compress_prefix : NULL, NULL};
	size_t head = (size_t)(caps - line), at;

	memcpy(scratch, line, head);
	/* Room for the list: the scratch less what stays of the line around it. */
	at = head + pu_caps_rewrite(caps, capn, s->a.tls ? &post : &pre, scratch + head,
	                            PROTO_SCRATCH - n + capn);
	memcpy(scratch + at, caps + capn, n - head - capn);
	act->consume = n;
	act->text = scratch;
	act->len = at + n - head - capn;
	return PV_REPLACE;
}

/* A server line too long to hold: passed in pieces, its literal found. */
static enum proto_verdict
server_long(struct imap_state *s, const char *p, size_t len, size_t n, bool full,
            struct proto_action *act, char *scratch)
{
	struct long_line *l = &s->s_long;
	size_t k = long_chunk(p, len, n, full);
	size_t body = n ? pu_trim_eol(p, n) : k;

	if (k == 0)
		return PV_MORE; /* a lone CR: its LF decides */
	if (!l->on) {
		memset(l, 0, sizeof(*l));
		l->on = true;
		if (s->s_cont) {
			imap_scan_cont(&s->s_scan);
		} else {
			imap_scan_init(&s->s_scan, false);
			long_head(l, p, k);
		}
	}
	imap_scan_feed(&s->s_scan, p, body);
	l->bytes += k;
	if (n > 0) {
		l->on = false;
		s->s_cont = imap_scan_end(&s->s_scan);
		if (s->s_cont)
			s->s_literal = s->s_scan.lsize;
		if (s->a.observe)
			log_long(l, s->s_cont, s->s_literal, PL_DEBUG, act, scratch);
	}
	return pass(act, k);
}

static enum proto_verdict
server_input(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->s_literal > 0) {
		size_t n = len < s->s_literal ? len : (size_t)s->s_literal;
		s->s_literal -= n;
		return pass(act, n);
	}
	size_t n = pu_line_len(p, len);
	if (n == 0 && !full && !s->s_long.on)
		return PV_MORE;
	if (s->s_long.on || n == 0) {
		enum proto_verdict v = server_long(s, p, len, n, full, act, scratch);
		if (v != PV_MORE)
			s->s_greeted = true; /* even an over-long greeting counts */
		return v;
	}
	s->s_greeted = true;

	size_t body = pu_trim_eol(p, n);
	bool was_cont = s->s_cont;

	if (was_cont)
		imap_scan_cont(&s->s_scan);
	else
		imap_scan_init(&s->s_scan, false);
	imap_scan_feed(&s->s_scan, p, body);
	s->s_cont = imap_scan_end(&s->s_scan);
	if (s->s_cont)
		s->s_literal = s->s_scan.lsize;
	if (s->a.observe) { /* tagged completions matter most; the rest is debug */
		bool untagged =
		        body >= 1 && (p[0] == '*' || p[0] == '+') && (body == 1 || p[1] == ' ');
		pu_log_line(act, scratch, p, body, s->s_cont, s->s_literal,
		            untagged ? PL_DEBUG : 0);
	}
	if (was_cont)
		return pass(act, n);

	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	if (tag.n == 1 && tag.p[0] == '+') {
		/* A continuation nothing postern saw asks for: the server reads
		 * the client's next line as a response (a SASL one, perhaps), so
		 * the log hides it as it hides a response sent too early. */
		if (!s->c_sync && !s->a.c_auth && !s->c_idle)
			s->a.c_auth_ended = true;
		if (s->c_sync) { /* the server accepts the literal */
			s->c_sync = false;
			s->c_literal = s->c_sync_len;
		}
		s->a.c_auth_wait = false; /* a SASL challenge: the client answers */
		return pass(act, n);
	}
	bool tagged = !(tag.n == 1 && tag.p[0] == '*');
	if (tagged)
		tag_completed(s, tag.p, tag.n);
	if (tagged && s->tag_len == tag.n && memcmp(tag.p, s->tag, tag.n) == 0) {
		/* The watched command completed: a refused literal is never sent. */
		if (s->c_sync) {
			s->c_sync = false;
			s->c_cont = false;
		}
		s->a.c_auth_ended = s->a.c_auth;
		s->a.c_auth = s->a.c_auth_wait = false;
		if (tag_in_flight(s, tag.p, tag.n) == 0) /* not an earlier one's */
			s->c_idle = false;
		/* While its command is still being sent, the completion may be
		 * an earlier one's with the same tag: the watch goes on. */
		if (!s->c_cont && s->c_literal == 0)
			s->tag_len = 0;
	}
	if (s->s_cont)
		return pass(act, n);
	/* "* CAPABILITY ..." or a [CAPABILITY ...] response code. */
	struct pu_word w = pu_next_word(&q, end);
	if (tag.n == 1 && tag.p[0] == '*' && pu_word_is(w, "CAPABILITY"))
		return rewrite_caps(s, p, n, q, (size_t)(end - q), act, scratch);
	const char *code = memchr(p, '[', body);
	if (code && (size_t)(end - code) > 12 && strncasecmp(code, "[CAPABILITY ", 12) == 0) {
		const char *close = memchr(code, ']', (size_t)(end - code));
		if (close)
			return rewrite_caps(s, p, n, code + 12, (size_t)(close - code - 12), act,
			                    scratch);
	}
	return pass(act, n);
}

static enum proto_verdict
imap_input(void *st, enum proto_dir dir, const char *p, size_t len, bool full,
           struct proto_action *act, char *scratch)
{
	struct imap_state *s = st;

	return dir == PROTO_FROM_CLIENT ? client_input(s, p, len, full, act, scratch)
	                                : server_input(s, p, len, full, act, scratch);
}

/* ---- client role: STARTTLS towards the backend (RFC 2595 3.1) ---- */

enum { UP_GREETING, UP_CAPA, UP_STARTTLS, UP_CAPA_TLS };

struct imap_up {
	int phase;
	bool offers_starttls;
	size_t caps_len; /* capabilities learnt after TLS, in caps */
	char caps[1024];
};

static void
imap_up_start(void *st, const char *helo, struct proto_action *act, char *scratch)
{
	(void)helo;
	(void)scratch;
	pu_up_begin(st, sizeof(struct imap_up), act);
}

static void
imap_up_tls_done(void *st, struct proto_action *act, char *scratch)
{
	struct imap_up *u = st;

	(void)scratch;
	/* C5: nothing learnt in plaintext is kept; ask again inside TLS. */
	u->phase = UP_CAPA_TLS;
	u->offers_starttls = false;
	act->text = "P3 CAPABILITY\r\n";
	act->len = strlen(act->text);
}

static enum proto_up
up_fail(struct proto_action *act, char *scratch, const char *why, const char *line, size_t n)
{
	pu_answer(act, PV_CLOSE, 0, scratch, "%s: \"%.*s\"", why, (int)(n < 80 ? n : 80), line);
	return PU_UP_FAIL;
}

static enum proto_up
imap_upstream(void *st, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	struct imap_up *u = st;
	size_t n = pu_line_len(p, len);

	if (n == 0)
		return full ? up_fail(act, scratch, "line too long", p, len) : PU_UP_MORE;
	size_t body = pu_trim_eol(p, n);
	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	struct pu_word w = pu_next_word(&q, end);
	bool untagged = tag.n == 1 && tag.p[0] == '*';

	switch (u->phase) {
	case UP_GREETING:
		if (untagged && pu_word_is(w, "OK")) {
			u->phase = UP_CAPA;
			return pu_up(act, n, "P1 CAPABILITY\r\n", PU_UP_SEND);
		}
		if (untagged && pu_word_is(w, "PREAUTH")) /* C3: STARTTLS impossible */
			return up_fail(act, scratch, "PREAUTH greeting, STARTTLS impossible", p,
			               body);
		return up_fail(act, scratch, "greeting refused", p, body);
	case UP_CAPA:
	case UP_CAPA_TLS:
		if (untagged && pu_word_is(w, "CAPABILITY")) {
			const char *c = q;
			while (c < end) {
				struct pu_word cap = pu_next_word(&c, end);
				if (pu_word_is(cap, "STARTTLS"))
					u->offers_starttls = true;
			}
			if (u->phase == UP_CAPA_TLS) {
				static const char *const drop[] = {"STARTTLS", "LOGINDISABLED",
				                                   NULL};
				struct pu_caps pc = {drop, NULL, NULL};
				u->caps_len = pu_caps_rewrite(q, (size_t)(end - q), &pc, u->caps,
				                              sizeof(u->caps));
			}
			return pu_up(act, n, "", PU_UP_SEND);
		}
		if (untagged) /* C5: other untagged data before TLS is ignored */
			return pu_up(act, n, "", PU_UP_SEND);
		if (!pu_word_is(w, "OK"))
			return up_fail(act, scratch, "CAPABILITY failed", p, body);
		if (u->phase == UP_CAPA_TLS) {
			act->consume = n;
			pu_answer(act, PV_PASS, n, scratch, "* OK [CAPABILITY %.*s] ready\r\n",
			          (int)u->caps_len, u->caps);
			return PU_UP_DONE;
		}
		if (!u->offers_starttls) /* C1: stripped or absent: never plaintext */
			return up_fail(act, scratch, "server does not offer STARTTLS", p, body);
		u->phase = UP_STARTTLS;
		return pu_up(act, n, "P2 STARTTLS\r\n", PU_UP_SEND);
	default: /* UP_STARTTLS */
		if (untagged)
			return pu_up(act, n, "", PU_UP_SEND);
		if (tag.n == 2 && memcmp(tag.p, "P2", 2) == 0 && pu_word_is(w, "OK")) {
			act->consume = n;
			return PU_UP_TLS;
		}
		return up_fail(act, scratch, "STARTTLS refused", p, body); /* C2 */
	}
}

const struct proto_ops proto_imap = {
        .name = "imap",
        .alpn = "imap",
        .reply =
                {
                        [PROTO_REPLY_BUSY] =
                                "* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
                        [PROTO_REPLY_BACKEND_DOWN] =
                                "* BYE [UNAVAILABLE] Mail server unavailable, try again later\r\n",
                        [PROTO_REPLY_SHUTDOWN] = "* BYE [UNAVAILABLE] Server shutting down\r\n",
                        [PROTO_REPLY_TIMEOUT] = "* BYE Timeout: STARTTLS not completed in time\r\n",
                },
        .state_size = sizeof(struct imap_state),
        .init = imap_init,
        .input = imap_input,
        .tls_started = imap_tls_started,
        .up_state_size = sizeof(struct imap_up),
        .up_start = imap_up_start,
        .upstream = imap_upstream,
        .up_tls_done = imap_up_tls_done,
};
