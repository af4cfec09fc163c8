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
 * agree on where each command begins.
 *
 * This file filters commands and responses; the command log is in
 * imap_redact.c, ID's forwarding fields in imap_id.c, capability lists in
 * imap_capability.c and the client role in imap_client_role.c. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <postern/imap_token.h>
#include <postern/proto_auth.h>
#include <postern/proto_cmd.h>
#include <postern/proto_util.h>

#include "imap_internal.h"

/* F_LITERAL: commands with an astring, string or nstring argument, where
 * a literal may stand (RFC 9051; ID RFC 2971, SORT and THREAD RFC 5256,
 * ACL RFC 4314, METADATA RFC 5464, NOTIFY RFC 5465, URLAUTH RFC 4467,
 * REPLACE RFC 8508, QUOTA RFC 9208). A server past login may skip the
 * rest of the line of any other command, literal marker included (Dovecot
 * does), so postern never relays a literal there. Nor does it relay a
 * non-synchronising one after an extension's command (F_EXT_*) unless the
 * server's latest capability list names the extension: a server without
 * it treats the command as unknown. UID is judged by its subcommand. */
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
        {"MOVE", F_LITERAL | F_EXT_MOVE},
        {"SORT", F_LITERAL | F_EXT_SORT},
        {"THREAD", F_LITERAL | F_EXT_THREAD},
        {"GETACL", F_LITERAL | F_EXT_ACL},
        {"SETACL", F_LITERAL | F_EXT_ACL},
        {"DELETEACL", F_LITERAL | F_EXT_ACL},
        {"LISTRIGHTS", F_LITERAL | F_EXT_ACL},
        {"MYRIGHTS", F_LITERAL | F_EXT_ACL},
        {"GETMETADATA", F_LITERAL | F_EXT_METADATA},
        {"SETMETADATA", F_LITERAL | F_EXT_METADATA},
        {"GETQUOTA", F_LITERAL | F_EXT_QUOTA},
        {"GETQUOTAROOT", F_LITERAL | F_EXT_QUOTA},
        {"SETQUOTA", F_LITERAL | F_EXT_QUOTA},
        {"NOTIFY", F_LITERAL | F_EXT_NOTIFY},
        {"REPLACE", F_LITERAL | F_EXT_REPLACE},
        {"URLFETCH", F_LITERAL | F_EXT_URLAUTH},
        {"GENURLAUTH", F_LITERAL | F_EXT_URLAUTH},
        {"RESETKEY", F_LITERAL | F_EXT_URLAUTH},
        {NULL, 0},
};

/* UID's subcommands that take a literal (the others are sequence sets). */
static const char *const uid_literal[] = {"FETCH", "SEARCH", "COPY", "MOVE",
                                          "SORT",  "THREAD", NULL};

static void
imap_init(void *st, const struct proto_conf *conf)
{
	pu_adapter_init(st, sizeof(struct imap_state), conf);
	((struct imap_state *)st)->login = conf->backend_login;
}

static void
imap_tls_started(void *st)
{
	struct imap_state *s = st;

	pu_adapter_tls_started(&s->a);
	s->c_literal = 0;
	s->c_cont = s->c_sync = false;
	s->c_lit_secret = s->c_id = s->auth_lit_user = s->c_unasked = s->c_log_cut = false;
	s->c_login = 0;
	memset(&s->c_long, 0, sizeof(s->c_long));
}

/* The server side is between responses: a local answer may go in here. */
bool
imap_server_at_boundary(const struct imap_state *s)
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
void
imap_tag_sent(struct imap_state *s, const char *tag, size_t n)
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

/* Local answer to a client command ("BAD why"). A synchronising literal
 * is never sent after a tagged reply. A non-synchronising one ends the
 * session: servers disagree on whether a refused command's literal is
 * read (a server that rejects the tag skips the line and reads the
 * literal's bytes as commands), so no framing of what follows is safe. */
enum proto_verdict
imap_answer(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act, char *scratch,
            const char *text)
{
	if (!imap_server_at_boundary(s))
		return PV_WAIT;
	if (c->lit && !c->sync)
		return pu_answer(act, PV_CLOSE, c->len, scratch, "* BYE %s" REFUSED_LITERAL "\r\n",
		                 strchr(text, ' ') + 1);
	if (c->bad_tag) /* no usable tag: untagged */
		return pu_answer(act, PV_REPLY, c->len, scratch, "* %s\r\n", text);
	return pu_answer(act, PV_REPLY, c->len, scratch, "%.*s %s\r\n", (int)c->tag.n, c->tag.p,
	                 text);
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
 * literal (LIT_*): see imap_verbs. */
static unsigned char
literal_rule(const struct imap_state *s, struct pu_word verb, const char *args, const char *end)
{
	const struct pu_verb *v = find_verb(verb);

	if (v == NULL && pu_word_is(verb, "UID")) {
		struct imap_tok sub = imap_next_tok(&args, end);
		for (const char *const *u = uid_literal; sub.kind == IT_ATOM && *u; u++)
			if (pu_word_is((struct pu_word){sub.p, sub.n}, *u))
				v = find_verb((struct pu_word){sub.p, sub.n});
	}
	if (v == NULL || !(v->flags & F_LITERAL))
		return LIT_NONE;
	if ((v->flags & F_EXT) && !(v->flags & F_EXT & s->s_exts))
		return LIT_SYNC;
	return LIT_ANY;
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
		return imap_answer(s, c, act, scratch, "BAD This command takes no literal");
	if (!imap_server_at_boundary(s))
		return PV_WAIT;
	return pu_answer(act, PV_CLOSE, c->len, scratch, "* BYE This command takes no literal\r\n");
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

/* A login goes to the server: its user name (a literal one is not
 * read: unknown) and its tag, whose completion is the verdict. */
static void
auth_sent(struct imap_state *s, const struct imap_cmd *c, bool sasl)
{
	const char *q = c->args, *end = c->end;
	struct imap_tok a = imap_next_tok(&q, end);

	if (sasl) {
		struct imap_tok ir = imap_next_tok(&q, end);
		pa_begin_sasl(&s->auth, c->tag.p, c->tag.n, (struct pu_word){a.p, a.n}, ir.p,
		              ir.kind == IT_ATOM ? ir.n : 0);
	} else {
		if (a.kind == IT_QUOTED && a.n >= 2)
			pa_user(&s->auth, a.p + 1, a.n - 2);
		else
			pa_user(&s->auth, a.p, a.kind == IT_ATOM ? a.n : 0);
		pa_begin(&s->auth, c->tag.p, c->tag.n);
		/* A literal user name follows this line: read as it passes. */
		s->auth_lit_user = a.kind == IT_LITERAL && c->lit;
	}
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
		return imap_answer(s, c, act, scratch, "BAD Invalid tag");
	if (!s->a.tls && memchr(c->p, '\0', c->n))
		return imap_answer(s, c, act, scratch, "BAD NUL byte in command");
	if (c->tag.n > TAG_MAX)
		return imap_answer(s, c, act, scratch, "BAD Tag too long");
	/* Once logged in, the server knows no LOGIN: Dovecot skips the line
	 * and runs a non-synchronising literal that follows as commands. */
	if ((flags & F_LOGIN) && c->lit && !c->sync && s->logged_in && !s->login)
		return imap_answer(s, c, act, scratch, "BAD Already logged in");
	unsigned char lit_rule = c->lit ? literal_rule(s, c->verb, c->args, c->end) : LIT_ANY;
	if (lit_rule == LIT_NONE)
		return refuse_literal(s, c, act, scratch);
	/* A synchronising literal is safe: the server's refusal cancels it. */
	if (lit_rule == LIT_SYNC && !c->sync)
		return imap_answer(s, c, act, scratch,
		                   "BAD The server does not offer this command");
	if (flags & PU_STARTTLS) {
		const char *no =
		        pu_starttls_refusal(&s->a, noargs && !c->err, "BAD TLS is already active",
		                            "BAD STARTTLS takes no arguments");
		if (no)
			return imap_answer(s, c, act, scratch, no);
		/* Replies to earlier commands must arrive in plaintext, before ours. */
		if (!imap_server_at_boundary(s) || s->inflight > 0)
			return PV_WAIT;
		return pu_answer(act, PV_STARTTLS, c->len, scratch,
		                 "%.*s OK Begin TLS negotiation now\r\n", (int)c->tag.n, c->tag.p);
	}
	/* Before TLS nothing malformed passes; after it, nothing postern acts
	 * on, and nothing a laxer server could read a literal into. */
	if (c->err && (!s->a.tls || (flags & F_UNDERSTOOD) || c->ends_in_brace)) {
		snprintf(why, sizeof(why), "BAD Syntax error: %s", c->err);
		return imap_answer(s, c, act, scratch, why);
	}
	if (gated && (flags & PU_REFUSE_PLAIN)) {
		act->event = "plaintext-auth-refused";
		return imap_answer(s, c, act, scratch, "NO [PRIVACYREQUIRED] Use STARTTLS first");
	}
	if (gated && c->lit)
		return imap_answer(s, c, act, scratch,
		                   "BAD Literals are not permitted before STARTTLS");
	if (gated && c->eightbit)
		return imap_answer(s, c, act, scratch,
		                   "BAD 8-bit data is not permitted before STARTTLS");
	if (gated && !(flags & F_PRETLS))
		return imap_answer(s, c, act, scratch, "BAD Command not permitted before STARTTLS");
	if ((flags & F_NOARGS) && !noargs && (gated || (flags & F_UNDERSTOOD))) {
		snprintf(why, sizeof(why), "BAD %s takes no arguments", verb->name);
		return imap_answer(s, c, act, scratch, why);
	}
	if ((flags & F_COMPRESS) && s->a.observe)
		return imap_answer(s, c, act, scratch,
		                   "NO COMPRESS is off while commands are logged");
	size_t at[ID_STRINGS_MAX], nat = 0;
	unsigned ids = 0;
	if (flags & F_ID) {
		const char *bad = imap_id_check(c, &ids, at, &nat);
		if (bad == NULL && nat > 0 && gated)
			bad = "BAD ID forwarding fields are not permitted";
		if (bad)
			return imap_answer(s, c, act, scratch, bad);
	}
	if ((flags & F_LOGIN) && !login_ok(c))
		return imap_answer(s, c, act, scratch, "BAD Invalid LOGIN arguments");
	if ((flags & (F_LOGIN | PU_SASL)) && pa_full(&s->auth))
		return PV_WAIT; /* a verdict makes room */
	if ((flags & (F_LOGIN | PU_SASL)) && s->login)
		return imap_login_command(s, c, (flags & PU_SASL) != 0, act, scratch);
	if (flags & PU_SASL) {
		if (!sasl_ok(c))
			return imap_answer(s, c, act, scratch,
			                   "BAD Invalid AUTHENTICATE arguments");
		/* The exchange ends with this tag's completion: earlier commands,
		 * which may carry the same tag, must have completed first. */
		if (s->inflight > 0 || !imap_server_at_boundary(s))
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
	if (flags & (F_LOGIN | PU_SASL))
		auth_sent(s, c, (flags & PU_SASL) != 0);
	/* Its completion is known by its tag only if no earlier command in
	 * flight has it. */
	if (pu_word_is(c->verb, "UNAUTHENTICATE") && tag_in_flight(s, c->tag.p, c->tag.n) == 0) {
		s->unauth_tag_len = c->tag.n;
		memcpy(s->unauth_tag, c->tag.p, c->tag.n);
	}
	imap_tag_sent(s, c->tag.p, c->tag.n);
	if (c->lit)
		start_literal(s, c, c->tag.p, c->tag.n);
	return imap_forward_id(c, at, nat, act, scratch);
}

/* A line that continues a command after its literal. */
static enum proto_verdict
continuation(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
             char *scratch)
{
	/* The command's beginning is at the backend already: a line that
	 * could end in a literal postern does not see cannot be refused on its
	 * own, and before TLS nothing malformed may pass at all. */
	if (c->err && (!s->a.tls || c->ends_in_brace || s->c_id))
		return pu_answer(act, PV_CLOSE, c->len, scratch,
		                 "* BYE Invalid command syntax\r\n");
	size_t at[ID_STRINGS_MAX], nat = 0;
	if (s->c_id) {
		unsigned ids = s->c_id_strings;
		const char *bad = imap_id_strings(c, c->p, &ids, at, &nat);
		if (bad) /* "BAD why": the command is at the backend already */
			return pu_answer(act, PV_CLOSE, c->len, scratch, "* BYE %s\r\n", bad + 4);
		s->c_id_strings = (unsigned char)ids;
		s->c_id = c->lit;
	}
	if (s->a.observe)
		imap_log_continuation(s, c, act, scratch);
	s->c_cont = c->lit;
	if (c->lit)
		start_literal(s, c, NULL, 0);
	return imap_forward_id(c, at, nat, act, scratch);
}

static enum proto_verdict
literal_bytes(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	size_t n = len < s->c_literal ? len : (size_t)s->c_literal;

	if (s->c_id) {
		/* An ID string (at most 1024 bytes) is judged whole. */
		if (n < s->c_literal && !full)
			return PV_MORE;
		s->c_literal -= n;
		act->consume = n;
		if (!imap_is_forwarding(p, n))
			return PV_PASS;
		memcpy(scratch, p, n);
		scratch[0] = 'y';
		act->text = scratch;
		act->len = n;
		return PV_REPLACE;
	}
	s->c_literal -= n;
	act->consume = n;
	if (s->auth_lit_user) {
		pa_user_more(&s->auth, p, n);
		s->auth_lit_user = s->c_literal > 0;
	}
	if (s->a.observe && s->c_lit_secret) {
		/* A password literal: nothing is logged of it (its line said
		 * "***"), but the session must remember it to mask echoes. */
		pu_log_begin(act, scratch, PL_CONT);
		act->secret = p;
		act->secret_len = n;
	}
	return PV_PASS;
}

static enum proto_verdict
sasl_response(struct imap_state *s, const char *p, size_t n, struct proto_action *act,
              char *scratch)
{
	size_t body = pu_trim_eol(p, n);

	s->a.c_auth_wait = true;
	pa_sasl_response(&s->auth, p, body);
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
	if (!imap_server_at_boundary(s))
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
	} else if (s->c_cont && s->c_id) {
		/* ID strings are judged whole; its start is at the backend. */
		return pu_answer(act, PV_CLOSE, len, scratch, "* BYE Line too long\r\n");
	} else if (s->c_cont) {
		/* It may end in a synchronising literal, told by its tag (as in
		 * client_input). */
		if (tag_in_flight(s, s->tag, s->tag_len) > 1)
			return PV_WAIT;
		l.lit_rule = LIT_ANY; /* the command took one already */
		imap_scan_cont(&sc);
		imap_scan_feed(&sc, p, chunk);
	} else {
		struct pu_word tag, verb;
		size_t at = imap_cmd_head(p, chunk, &tag, &verb);
		const struct pu_verb *known = find_verb(verb);
		imap_scan_init(&sc, true);
		imap_long_head(&l, p, chunk);
		if (at == 0 || tag.n > TAG_MAX || (known && (known->flags & F_UNDERSTOOD))) {
			/* Too long to judge: refused, and swallowed to its end. */
			if (!imap_server_at_boundary(s))
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
			/* It may end in a synchronising literal, whose "+" or
			 * refusal is told by its tag: as in command(). */
			if (tag_in_flight(s, tag.p, tag.n) > 0)
				return PV_WAIT;
			imap_tag_sent(s, tag.p, tag.n);
			s->c_idle = false;
			memcpy(l.tag, tag.p, tag.n);
			l.tag_len = tag.n;
			l.lit_rule = literal_rule(s, verb, p + at, p + chunk);
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
		imap_log_long(l, lit, s->c_scan.lsize, 0, act, scratch);
	if (!drop && !l->sasl && s->c_scan.err && s->c_scan.last == '}')
		return pu_answer(act, PV_CLOSE, k, scratch, "* BYE Invalid command syntax\r\n");
	if (!drop && lit && l->lit_rule == LIT_NONE) /* its beginning is at the backend */
		return pu_answer(act, PV_CLOSE, k, scratch,
		                 "* BYE This command takes no literal\r\n");
	if (!drop && lit && l->lit_rule == LIT_SYNC && !s->c_scan.sync) /* as in command() */
		return pu_answer(act, PV_CLOSE, k, scratch,
		                 "* BYE The server does not offer this command" REFUSED_LITERAL
		                 "\r\n");
	if (drop && lit && !s->c_scan.sync) /* as answer(): no safe framing after */
		return pu_answer(act, PV_CLOSE, k, scratch,
		                 "* BYE Line too long" REFUSED_LITERAL "\r\n");
	s->c_cont = lit && !drop;
	if (s->c_cont) {
		struct imap_cmd c = {.lit = true, .sync = s->c_scan.sync, .lsize = s->c_scan.lsize};
		start_literal(s, &c, l->tag, l->tag_len);
	}
	return drop ? PV_DROP : PV_PASS;
}

static enum proto_verdict
client_input(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->ol == OL_LITERAL)
		return imap_login_literal(s, p, len, full, act, scratch);
	if (s->c_literal > 0)
		return literal_bytes(s, p, len, full, act, scratch);
	if (s->c_sync || s->a.c_auth_wait || !s->s_greeted || s->ol >= OL_TOKEN)
		return PV_WAIT;
	size_t n = pu_line_len(p, len);
	if (s->ol == OL_PLAIN)
		return imap_login_response(s, p, len, n, full, act, scratch);
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
	if (s->c_cont && c.lit && c.sync && tag_in_flight(s, s->tag, s->tag_len) > 1)
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
	/* After a SASL exchange, a line of one word may be a response sent too
	 * early; after a "+" nothing asked for, any line is read as one. */
	bool early = s->a.observe && s->a.c_auth_ended && find_verb(c.verb) == NULL &&
	             (s->c_unasked || pu_one_word(p, c.n));
	if (early) {
		pc_log_early(act, scratch, p, c.n);
		/* Whatever follows its literal is hidden as LOGIN's password is. */
		s->c_login = c.lit ? 2 : 0;
		s->c_lit_secret = c.lit;
		if (c.lit)
			act->log_flags |= PL_CONT;
	} else if (s->a.observe) {
		const struct pu_verb *verb = find_verb(c.verb);
		imap_log_command(s, &c, verb ? verb->flags : 0, act, scratch);
	}
	if (s->c_log_cut && act->log_len > 0) {
		act->log_flags |= PL_NEW;
		s->c_log_cut = false;
	}
	/* A client that sends every response of a refused exchange too
	 * early sends several: each one-word line stays hidden. */
	s->a.c_auth_ended = early && pu_one_word(p, c.n);
	s->c_unasked = false;
	return v;
}

/* ---- server -> client ---- */

static bool
is_plus(struct pu_word tag)
{
	return tag.n == 1 && tag.p[0] == '+';
}

/* What a response line's beginning says, whatever the line's length (END:
 * as far as it is known): a "+" asks for the client's next bytes, a tagged
 * line completes a command. Returns true for a "+". */
static bool
response_begins(struct imap_state *s, struct pu_word tag, const char *q, const char *end,
                struct proto_action *act)
{
	if (is_plus(tag)) {
		/* A continuation nothing postern saw asks for: the server reads
		 * the client's next line as a response (a SASL one, perhaps), so
		 * the log hides it as it hides a response sent too early. */
		if (!s->c_sync && !s->a.c_auth && !s->c_idle)
			s->a.c_auth_ended = s->c_unasked = true;
		if (s->c_sync) { /* the server accepts the literal */
			s->c_sync = false;
			s->c_literal = s->c_sync_len;
		}
		s->a.c_auth_wait = false; /* a SASL challenge: the client answers */
		return true;
	}
	if (tag.n == 1 && tag.p[0] == '*')
		return false;
	bool ok = pu_word_is(pu_next_word(&q, end), "OK");
	tag_completed(s, tag.p, tag.n);
	pa_end(&s->auth, tag.p, tag.n, ok, act);
	if (act->auth) /* a refused synchronising literal never comes */
		s->auth_lit_user = false;
	if (act->auth == PROTO_AUTH_OK)
		s->logged_in = true;
	if (s->unauth_tag_len == tag.n && memcmp(tag.p, s->unauth_tag, tag.n) == 0) {
		s->logged_in = s->logged_in && !ok; /* RFC 8437 UNAUTHENTICATE */
		s->unauth_tag_len = 0;
	}
	if (s->ol == OL_UPSTREAM && s->ol_tag_len == tag.n &&
	    memcmp(tag.p, s->ol_tag, tag.n) == 0) {
		s->ol = OL_IDLE; /* postern's login ended: the client goes on */
		s->ol_done = ok;
	}
	if (s->tag_len == tag.n && memcmp(tag.p, s->tag, tag.n) == 0) {
		/* The watched command completed: a refused literal is never sent. */
		bool refused_secret = s->c_sync && s->c_lit_secret;
		if (s->c_sync) {
			s->c_sync = false;
			s->c_cont = false;
			s->c_log_cut = true; /* its log line ends without it */
		}
		s->a.c_auth_ended = s->a.c_auth;
		/* A client that sends the password anyway makes a line the
		 * server reads (and may echo): hidden as an early response. */
		if (refused_secret)
			s->a.c_auth_ended = true;
		s->a.c_auth = s->a.c_auth_wait = false;
		if (tag_in_flight(s, tag.p, tag.n) == 0) /* not an earlier one's */
			s->c_idle = false;
		/* While its command is still being sent, the completion may be
		 * an earlier one's with the same tag: the watch goes on. */
		if (!s->c_cont && s->c_literal == 0)
			s->tag_len = 0;
	}
	return false;
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
			imap_long_head(l, p, k);
			/* Its beginning says what it is, as a short line's does. */
			const char *q = p;
			struct pu_word tag = pu_next_word(&q, p + k);
			if (is_plus(tag) && s->ol == OL_UPSTREAM) /* no challenge is that long */
				return pu_answer(act, PV_CLOSE, k, scratch,
				                 "* BYE Server response too long\r\n");
			response_begins(s, tag, q, p + k, act);
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
			imap_log_long(l, s->s_cont, s->s_literal, PL_DEBUG, act, scratch);
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
	size_t body = pu_trim_eol(p, n);
	if (!s->s_greeted && body >= 9 && strncasecmp(p, "* PREAUTH", 9) == 0)
		s->logged_in = true;
	s->s_greeted = true;

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
		/* The status after the tag; the tag may be a secret the server
		 * read as a command. */
		act->log_frame = was_cont || p[0] == '+' ? 0 : 2;
	}
	if (was_cont)
		return pass(act, n);

	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	if (is_plus(tag) && s->ol == OL_UPSTREAM)
		return imap_login_challenge(s, n, act, scratch);
	if (response_begins(s, tag, q, end, act))
		return pass(act, n);
	if (s->s_cont)
		return pass(act, n);
	return imap_caps_response(s, p, n, tag, q, act, scratch);
}

static enum proto_verdict
imap_input(void *st, enum proto_dir dir, const char *p, size_t len, bool full,
           struct proto_action *act, char *scratch)
{
	struct imap_state *s = st;

	return dir == PROTO_FROM_CLIENT ? client_input(s, p, len, full, act, scratch)
	                                : server_input(s, p, len, full, act, scratch);
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
        .login_send = imap_login_send,
        .login_fail = imap_login_fail,
};
