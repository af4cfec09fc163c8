/* Reference framers: see ref_framing.h. Strict where the RFCs are, and a
 * line ends at LF (with or without CR) as in every server postern fronts. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ref_framing.h"

/* The reference is the yardstick, not the code under test: no coverage
 * feedback from it (it would only slow the fuzzer down on long lines). */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

enum { M_CMD, M_CONT, M_RESP, M_IDLE, M_DATA, M_BODY };

enum {
	V_NONE,
	V_STARTTLS,
	V_LOGIN,
	V_AUTH,
	V_IDLE,
	V_COMPRESS,
	V_CAPA,
	V_USER,
	V_PASS,
	V_APOP,
	V_XCLIENT,
	V_EHLO,
	V_HELO,
	V_MAIL,
	V_RCPT,
	V_DATA,
	V_BDAT,
	V_RSET,
	V_QUIT,
	V_RETR,
	V_LIST,
	V_ID
};

struct verb {
	const char *name;
	int v;
	enum ref_verb policy;
};

static const struct verb imap_verbs[] = {
        {"STARTTLS", V_STARTTLS, RV_STARTTLS},
        {"LOGIN", V_LOGIN, RV_CREDENTIALS},
        {"AUTHENTICATE", V_AUTH, RV_CREDENTIALS},
        {"IDLE", V_IDLE, RV_OTHER},
        {"COMPRESS", V_COMPRESS, RV_COMPRESS},
        {"CAPABILITY", V_CAPA, RV_OTHER},
        {"LOGOUT", V_QUIT, RV_OTHER},
        {"ID", V_ID, RV_OTHER},
        {NULL, V_NONE, RV_OTHER},
};

static const struct verb pop3_verbs[] = {
        {"STLS", V_STARTTLS, RV_STARTTLS}, {"USER", V_USER, RV_CREDENTIALS},
        {"PASS", V_PASS, RV_CREDENTIALS},  {"APOP", V_APOP, RV_CREDENTIALS},
        {"AUTH", V_AUTH, RV_CREDENTIALS},  {"XCLIENT", V_XCLIENT, RV_FORWARDING},
        {"CAPA", V_CAPA, RV_OTHER},        {"RETR", V_RETR, RV_OTHER},
        {"TOP", V_RETR, RV_OTHER},         {"LIST", V_LIST, RV_OTHER},
        {"UIDL", V_LIST, RV_OTHER},        {"QUIT", V_QUIT, RV_OTHER},
        {NULL, V_NONE, RV_OTHER},
};

static const struct verb smtp_verbs[] = {
        {"STARTTLS", V_STARTTLS, RV_STARTTLS},
        {"EHLO", V_EHLO, RV_OTHER},
        {"HELO", V_HELO, RV_OTHER},
        {"MAIL", V_MAIL, RV_CREDENTIALS},
        {"RCPT", V_RCPT, RV_CREDENTIALS},
        {"DATA", V_DATA, RV_CREDENTIALS},
        {"BDAT", V_BDAT, RV_CREDENTIALS},
        {"AUTH", V_AUTH, RV_CREDENTIALS},
        {"XCLIENT", V_XCLIENT, RV_FORWARDING},
        {"XFORWARD", V_XCLIENT, RV_FORWARDING},
        {"RSET", V_RSET, RV_OTHER},
        {"QUIT", V_QUIT, RV_OTHER},
        {NULL, V_NONE, RV_OTHER},
};

static const struct verb *
verbs_of(enum ref_proto p)
{
	return p == REF_IMAP ? imap_verbs : p == REF_POP3 ? pop3_verbs : smtp_verbs;
}

static const struct verb *
lookup(enum ref_proto p, const uint8_t *w, size_t n)
{
	const struct verb *t = verbs_of(p);

	for (; t->name; t++)
		if (strlen(t->name) == n && strncasecmp(t->name, (const char *)w, n) == 0)
			return t;
	return t; /* the V_NONE sentinel */
}

static enum ref_verb
policy_of(enum ref_proto p, int v)
{
	const struct verb *t = verbs_of(p);

	while (t->name && t->v != v)
		t++;
	return t->policy;
}

const char *
ref_kind_name(enum ref_kind k)
{
	static const char *const names[] = {"command", "continuation", "response",
	                                    "data",    "body",         "dot"};

	return names[k];
}

static void
say(struct ref *r, const char *text)
{
	if (r->env.reply)
		r->env.reply(r->env.arg, text);
}

/* "TAG text\r\n" with the command's tag, "*" when it had none. */
static void
say_tagged(struct ref *r, const char *text)
{
	char line[128];

	snprintf(line, sizeof(line), "%.*s %s\r\n", (int)(r->tag_len ? r->tag_len : 1),
	         r->tag_len ? r->tag : "*", text);
	say(r, line);
}

/* The extensions of imap_with_args, as that Dovecot names them once logged
 * in: postern relays their commands' LITERAL+ literals only then. */
#define IMAP_EXTENSIONS "SORT THREAD=REFERENCES MOVE ACL QUOTA METADATA NOTIFY REPLACE URLAUTH"

void
ref_init(struct ref *r, enum ref_proto proto, const struct ref_env *env)
{
	memset(r, 0, sizeof(*r));
	r->proto = proto;
	r->env = *env;
	r->mode = M_CMD;
	if (proto == REF_IMAP && env->logged_in) /* past login from the start */
		say(r, "* PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS ID IDLE " IMAP_EXTENSIONS
		       "] ready\r\n");
	else if (proto == REF_IMAP)
		say(r,
		    "* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS AUTH=PLAIN ID IDLE] ready\r\n");
	else if (proto == REF_POP3)
		say(r, "+OK ready\r\n");
	else
		say(r, "220 sim ESMTP\r\n");
}

/* ---- IMAP: RFC 9051 section 9 ---- */

static bool
ctl(uint8_t c)
{
	return c < 0x20 || c == 0x7f;
}

/* tag = 1*<any ASTRING-CHAR except "+"> */
static bool
tag_char(uint8_t c)
{
	return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\+", c);
}

enum { S_START, S_ATOM, S_END };

/* The arguments of a command line [p, p+n), or a line after a literal
 * (CONT). A literal is an argument of its own: it starts where an argument
 * may start (after SP or "(", outside quotes) and its "}" ends the
 * line. Anything else out of place makes the line a syntax error, which a
 * server answers with BAD without looking for a literal. */
static void
imap_args(struct ref *r, const uint8_t *p, size_t n, bool cont)
{
	int st = cont ? S_END : S_START;
	bool open = false; /* just after "(" or "[" */

	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if (c == ' ') {
			if (st == S_START) /* two spaces, or one after "(" */
				goto bad;
			st = S_START;
			open = false;
			continue;
		}
		if (ctl(c))
			goto bad;
		if (c == '(') {
			if (st != S_START)
				goto bad;
			r->depth++;
			open = true;
			continue;
		}
		if (c == ')' || (c == ']' && r->bdepth > 0)) {
			if (st == S_START && !open)
				goto bad;
			if (c == ')' && r->depth-- == 0)
				goto bad;
			if (c == ']')
				r->bdepth--;
			st = c == ']' ? S_ATOM : S_END; /* BODY[]<0.10> goes on */
			open = false;
			continue;
		}
		if (c == '[') { /* a section: BODY[HEADER.FIELDS (FROM)] */
			if (st == S_END)
				goto bad;
			/* Part of an atom: Dovecot's parser starts a string,
			 * literal or list only at an argument's first byte,
			 * so "BODY[{5}" or "[(" is a syntax error there. */
			r->bdepth++;
			st = S_ATOM;
			open = false;
			continue;
		}
		if (c == '"') {
			if (st != S_START)
				goto bad;
			for (i++; i < n && p[i] != '"'; i++) {
				if (p[i] == '\0')
					goto bad;
				if (p[i] == '\\') {
					if (i + 1 >= n || (p[i + 1] != '"' && p[i + 1] != '\\'))
						goto bad;
					i++;
				}
			}
			if (i >= n) /* unterminated */
				goto bad;
			st = S_END;
			open = false;
			continue;
		}
		if (st == S_START && (c == '{' || (c == '~' && i + 1 < n && p[i + 1] == '{'))) {
			size_t j = i + (c == '~' ? 2 : 1), d = j;
			uint64_t v = 0;
			while (j < n && p[j] >= '0' && p[j] <= '9' && j - d < 10)
				v = v * 10 + (uint64_t)(p[j++] - '0');
			if (j == d || v > UINT32_MAX)
				goto bad;
			r->sync = !(j < n && p[j] == '+');
			if (!r->sync)
				j++;
			if (j + 1 != n || p[j] != '}') /* "}" must end the line */
				goto bad;
			r->lit = true;
			r->lsize = v;
			return;
		}
		if (c == '{' || c >= 0x80 || st == S_END) /* "{" or 8-bit data in an
		                                           * atom (Dovecot), x"y", )x */
			goto bad;
		st = S_ATOM;
		open = false;
	}
	if ((st == S_START && (n > 0 || !cont)) || r->depth > 0 || r->bdepth > 0)
		goto bad; /* trailing space, or unclosed "(" or "[" */
	return;
bad:
	r->bad = true;
	r->lit = false;
}

/* RFC 2971 fields a backend believes from a trusted proxy (Dovecot), as
 * the server reads them: a quoted string whose value, backslash escapes
 * undone, names one (Dovecot compares the whole key, or its "x-forward-"
 * prefix; a string that merely contains such a name sets nothing). */
static bool
id_forwarding(const uint8_t *p, size_t n)
{
	static const char *const keys[] = {"x-originating-", "x-connected-", "x-proxy-ttl",
	                                   "x-session-",     "x-forward-",   NULL};

	for (size_t i = 0; i < n; i++) {
		char plain[1024];
		size_t k = 0;

		if (p[i] != '"')
			continue;
		for (i++; i < n && p[i] != '"'; i++) {
			if (p[i] == '\\' && i + 1 < n)
				i++;
			if (k < sizeof(plain) - 1)
				plain[k++] = (char)p[i];
		}
		plain[k] = '\0';
		for (const char *const *key = keys; *key; key++)
			if (strncasecmp(plain, *key, strlen(*key)) == 0)
				return true;
	}
	return false;
}

/* Commands whose arguments Dovecot's imap process reads (literals
 * included) before it judges them. An unknown command, or one that takes
 * no arguments, gets its answer and the rest of its line is skipped: a
 * literal marker there is never honoured, and what the client sends as the
 * literal is read as commands (env.logged_in). LOGIN is unknown there.
 * The list is that of a Dovecot with the acl, quota, imap_urlauth and
 * metadata plugins (without them those commands are unknown too), whose
 * capabilities past login name them (IMAP_EXTENSIONS). */
static const char *const imap_with_args[] = {
        "APPEND",       "AUTHENTICATE", "COPY",        "CREATE",     "DELETE",      "DELETEACL",
        "ENABLE",       "EXAMINE",      "FETCH",       "GETACL",     "GETMETADATA", "GETQUOTA",
        "GETQUOTAROOT", "ID",           "LIST",        "LISTRIGHTS", "LSUB",        "MOVE",
        "MYRIGHTS",     "NOTIFY",       "RENAME",      "SEARCH",     "SELECT",      "SETACL",
        "SETMETADATA",  "SETQUOTA",     "SORT",        "STATUS",     "STORE",       "SUBSCRIBE",
        "THREAD",       "UID",          "UNSUBSCRIBE", "COMPRESS",   "REPLACE",     "EXPUNGE",
        "URLFETCH",     "GENURLAUTH",   "RESETKEY",    NULL};

static bool
imap_takes_args(const uint8_t *w, size_t n)
{
	for (const char *const *c = imap_with_args; *c; c++)
		if (strlen(*c) == n && strncasecmp(*c, (const char *)w, n) == 0)
			return true;
	return false;
}

static void
imap_first_line(struct ref *r, const uint8_t *p, size_t n)
{
	size_t i = 0, c0;

	r->bad = r->lit = r->sync = r->has_arg = r->has_ir = r->id_forwarding = false;
	r->depth = r->bdepth = 0;
	r->verb = V_NONE;
	while (i < n && tag_char(p[i]))
		i++;
	r->tag_len = i < sizeof(r->tag) ? i : 0;
	memcpy(r->tag, p, r->tag_len);
	if (i == 0 || i >= n || p[i] != ' ') {
		r->tag_len = 0;
		r->bad = true;
		return;
	}
	c0 = ++i; /* the command name: an atom (imap-login reads any) */
	while (i < n && tag_char(p[i]))
		i++;
	if (i == c0 || (i < n && p[i] != ' ')) {
		r->bad = true;
		return;
	}
	r->verb = lookup(REF_IMAP, p + c0, i - c0)->v;
	r->id_forwarding = r->verb == V_ID && id_forwarding(p + i, n - i);
	/* Dovecot skips spaces after a command name that ends the line
	 * ("b STARTTLS "): that is a command without arguments. */
	size_t rest = i;
	while (rest < n && p[rest] == ' ')
		rest++;
	if (rest == n)
		return;

	r->has_arg = true;
	if (r->env.logged_in && !imap_takes_args(p + c0, i - c0)) { /* see imap_with_args */
		r->bad = true;
		return;
	}
	imap_args(r, p + i + 1, n - i - 1, false);
	if (!r->bad && !r->lit && r->verb == V_AUTH) /* AUTHENTICATE mech [initial-response] */
		r->has_ir = memchr(p + i + 1, ' ', n - i - 1) != NULL;
}

/* What follows an IMAP line once the command's fate is known. FIRST: the
 * line was the command's first (AUTHENTICATE and IDLE have no literals). */
static void
imap_after_line(struct ref *r, bool first)
{
	bool fwd = r->forwarded;

	r->mode = M_CMD;
	if (r->bad) {
		if (fwd)
			say_tagged(r, "BAD Syntax error");
		return;
	}
	if (r->lit) {
		if (r->sync && !fwd) /* answered already: the client never sends it */
			return;
		if (r->sync)
			say(r, "+ go ahead\r\n");
		r->mode = M_DATA;
		r->remain = r->lsize;
		r->after_data = M_CONT;
		return;
	}
	if (!fwd)
		return;
	if (first && r->verb == V_AUTH) {
		if (r->has_ir) {
			say_tagged(r, "OK Logged in");
		} else {
			say(r, "+ \r\n");
			r->mode = M_RESP;
		}
		return;
	}
	if (first && r->verb == V_IDLE && !r->has_arg) {
		say(r, "+ idling\r\n");
		r->mode = M_IDLE;
		return;
	}
	if (r->verb == V_CAPA && r->env.logged_in)
		say(r, "* CAPABILITY IMAP4rev1 LITERAL+ " IMAP_EXTENSIONS "\r\n");
	else if (r->verb == V_CAPA)
		say(r, "* CAPABILITY IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED AUTH=PLAIN\r\n");
	if (r->verb == V_QUIT)
		say(r, "* BYE logging out\r\n");
	say_tagged(r, "OK done");
}

/* ---- POP3 and SMTP: a verb and its arguments ---- */

static bool
white(uint8_t c, bool lax)
{
	return c == ' ' || (lax && c == '\t');
}

/* Splits the line: the verb, then whether arguments follow, and whether
 * a second argument does (a SASL initial response). */
static const struct verb *
split_verb(struct ref *r, const uint8_t *p, size_t n, const uint8_t **args, size_t *argn)
{
	bool lax = r->env.lax;
	size_t i = 0, v0;

	while (lax && i < n && white(p[i], true))
		i++;
	v0 = i;
	while (i < n && !white(p[i], lax))
		i++;
	const struct verb *v = lookup(r->proto, p + v0, i - v0);
	if (i < n)
		i++;
	while (lax && i < n && white(p[i], true))
		i++;
	*args = p + i;
	*argn = n - i;
	r->has_arg = i < n;
	r->has_ir = false;
	for (size_t k = i; k < n; k++)
		if (white(p[k], lax))
			r->has_ir = k + 1 < n;
	return v;
}

/* BDAT 1*DIGIT [SP "LAST"] */
static bool
bdat_size(struct ref *r, const uint8_t *a, size_t n, uint64_t *size, bool *last)
{
	size_t i = 0;
	uint64_t v = 0;

	while (i < n && a[i] >= '0' && a[i] <= '9' && i < 10)
		v = v * 10 + (uint64_t)(a[i++] - '0');
	if (i == 0 || v > UINT32_MAX)
		return false;
	*size = v;
	*last = false;
	r->has_size = true; /* a client sends that much, whatever follows */
	if (i == n)
		return true;
	if (!white(a[i], r->env.lax) || n - i - 1 != 4 ||
	    strncasecmp((const char *)a + i + 1, "LAST", 4))
		return false;
	*last = true;
	return true;
}

static void
smtp_line(struct ref *r, const uint8_t *p, size_t n)
{
	const uint8_t *a;
	size_t an;
	bool last = false;

	r->verb = split_verb(r, p, n, &a, &an)->v;
	r->has_size = false;
	r->lit = r->verb == V_BDAT && bdat_size(r, a, an, &r->lsize, &last);
	r->sync = last; /* reused: the last chunk */
}

static void
smtp_after_line(struct ref *r)
{
	static const char ehlo[] =
	        "250-sim\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n";
	bool fwd = r->forwarded;

	r->mode = M_CMD;
	if (r->verb == V_BDAT && (fwd ? r->lit && r->env.chunking : r->has_size)) {
		/* RFC 3030: the chunk follows at once, answered or not; a server
		 * without CHUNKING, or refusing the syntax, reads it as commands. */
		r->mode = M_DATA;
		r->remain = r->lsize;
		r->after_data = M_CMD;
		return;
	}
	if (!fwd)
		return;
	switch (r->verb) {
	case V_EHLO:
		say(r, ehlo);
		say(r, r->env.chunking ? "250-CHUNKING\r\n250 STARTTLS\r\n" : "250 STARTTLS\r\n");
		break;
	case V_HELO:
		say(r, "250 sim\r\n");
		break;
	case V_MAIL:
		say(r, r->mail ? "503 5.5.1 Nested MAIL\r\n" : "250 2.1.0 Ok\r\n");
		r->mail = true;
		break;
	case V_RCPT:
		say(r, r->mail ? "250 2.1.5 Ok\r\n" : "503 5.5.1 Need MAIL\r\n");
		r->rcpt = r->mail;
		break;
	case V_DATA:
		if (r->has_arg || !r->rcpt) {
			say(r,
			    r->has_arg ? "501 5.5.4 Syntax: DATA\r\n" : "503 5.5.1 Need RCPT\r\n");
			break;
		}
		say(r, "354 End data with <CR><LF>.<CR><LF>\r\n");
		r->mode = M_BODY;
		break;
	case V_BDAT:
		say(r, r->env.chunking ? "501 5.5.4 Syntax: BDAT size [LAST]\r\n"
		                       : "500 5.5.1 Unknown command\r\n");
		break;
	case V_AUTH:
		if (!r->has_arg) {
			say(r, "501 5.5.4 Syntax: AUTH mechanism\r\n");
		} else if (r->has_ir) {
			say(r, "235 2.7.0 Authenticated\r\n");
		} else {
			say(r, "334 \r\n");
			r->mode = M_RESP;
		}
		break;
	case V_RSET:
		r->mail = r->rcpt = false;
		say(r, "250 2.0.0 Ok\r\n");
		break;
	case V_QUIT:
		say(r, "221 2.0.0 Bye\r\n");
		break;
	case V_STARTTLS:
		say(r, "454 4.7.0 TLS not available\r\n");
		break;
	case V_XCLIENT:
		say(r, "550 5.7.0 Not authorized\r\n");
		break;
	default:
		say(r, "500 5.5.2 Error: command not recognized\r\n");
	}
}

static void
pop3_after_line(struct ref *r)
{
	r->mode = M_CMD;
	if (!r->forwarded)
		return;
	switch (r->verb) {
	case V_AUTH:
		if (!r->has_arg) {
			say(r, "+OK\r\nPLAIN\r\n.\r\n");
		} else if (r->has_ir) {
			say(r, "+OK Logged in\r\n");
		} else {
			say(r, "+ \r\n");
			r->mode = M_RESP;
		}
		break;
	case V_CAPA:
		say(r, "+OK\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n");
		break;
	case V_RETR:
		say(r, r->has_arg ? "+OK\r\nSubject: x\r\n\r\n..body\r\n.\r\n" : "-ERR Syntax\r\n");
		break;
	case V_LIST:
		say(r, r->has_arg ? "+OK 1 10\r\n" : "+OK\r\n1 10\r\n.\r\n");
		break;
	case V_STARTTLS:
		say(r, "-ERR TLS not available\r\n");
		break;
	case V_XCLIENT:
		say(r, "-ERR Not authorized\r\n");
		break;
	case V_QUIT:
		say(r, "+OK Bye\r\n");
		break;
	default:
		say(r, "+OK\r\n");
	}
}

/* The end of a SASL response (or IMAP's DONE) line. */
static void
resp_done(struct ref *r, const uint8_t *p, size_t n)
{
	bool cancel = n == 1 && p[0] == '*';

	r->mode = M_CMD;
	if (r->proto == REF_IMAP)
		say_tagged(r, cancel ? "BAD Cancelled" : "OK done");
	else if (r->proto == REF_POP3)
		say(r, cancel ? "-ERR Cancelled\r\n" : "+OK Logged in\r\n");
	else
		say(r, cancel ? "501 5.7.0 Cancelled\r\n" : "235 2.7.0 Authenticated\r\n");
}

static void
after_line(struct ref *r, bool first)
{
	if (r->proto == REF_IMAP)
		imap_after_line(r, first);
	else if (r->proto == REF_SMTP)
		smtp_after_line(r);
	else
		pop3_after_line(r);
}

static void
data_done(struct ref *r)
{
	r->mode = r->after_data;
	if (r->proto == REF_SMTP && r->forwarded) {
		say(r, r->rcpt ? "250 2.0.0 Chunk accepted\r\n" : "503 5.5.1 Need RCPT\r\n");
		if (r->sync) /* LAST */
			r->mail = r->rcpt = false;
	}
}

static enum ref_kind
line_kind(const struct ref *r)
{
	switch (r->mode) {
	case M_CONT:
		return RK_CONT;
	case M_RESP:
	case M_IDLE:
		return RK_RESP;
	case M_BODY:
		return RK_BODY;
	default:
		return RK_CMD;
	}
}

int
ref_next(struct ref *r, const uint8_t *s, uint64_t len, bool eof, struct ref_unit *u)
{
	if (r->pending) {
		enum ref_fate f = r->env.fate(r->env.arg, r->cmd_start);
		if (f == REF_FATE_UNKNOWN)
			return REF_BLOCKED;
		r->pending = false;
		r->forwarded = f == REF_FATE_FORWARDED;
		after_line(r, true);
	}
	while (r->mode == M_DATA && r->remain == 0) /* {0} */
		data_done(r);
	memset(u, 0, sizeof(*u));
	u->start = r->pos;
	if (r->pos >= len)
		return REF_NEED_BYTES;
	if (r->mode == M_DATA) {
		u->kind = RK_DATA;
		if (len - r->pos < r->remain) {
			if (!eof)
				return REF_NEED_BYTES;
			r->remain -= len - r->pos;
			u->end = r->pos = len;
			u->partial = true;
			return REF_UNIT;
		}
		u->end = r->pos += r->remain;
		r->remain = 0;
		data_done(r);
		return REF_UNIT;
	}
	const uint8_t *p = s + r->pos;
	const uint8_t *lf = memchr(p, '\n', len - r->pos);
	u->kind = line_kind(r);
	if (lf == NULL) {
		if (!eof)
			return REF_NEED_BYTES;
		u->end = r->pos = len; /* never completed: no effect */
		u->partial = true;
		return REF_UNIT;
	}
	size_t n = (size_t)(lf - p);
	if (n > 0 && p[n - 1] == '\r')
		n--;
	u->end = r->pos = (uint64_t)(lf - s) + 1;
	switch (r->mode) {
	case M_CMD:
		r->lit = false;
		if (r->proto == REF_IMAP) {
			imap_first_line(r, p, n);
			u->verb = r->bad ? RV_OTHER : policy_of(REF_IMAP, r->verb);
			if (r->id_forwarding) /* Dovecot reads it even from a malformed line */
				u->verb = RV_FORWARDING;
		} else if (r->proto == REF_SMTP) {
			smtp_line(r, p, n);
			u->verb = policy_of(REF_SMTP, r->verb);
		} else {
			const uint8_t *a;
			size_t an;
			r->verb = split_verb(r, p, n, &a, &an)->v;
			u->verb = policy_of(REF_POP3, r->verb);
		}
		r->pending = true;
		r->cmd_start = u->start;
		break;
	case M_CONT:
		r->lit = r->bad = false;
		imap_args(r, p, n, true);
		after_line(r, false);
		break;
	case M_RESP:
	case M_IDLE:
		resp_done(r, p, n);
		break;
	case M_BODY:
		if (n == 1 && p[0] == '.') {
			u->kind = RK_DOT;
			r->mode = M_CMD;
			r->mail = r->rcpt = false;
			say(r, "250 2.0.0 Queued\r\n");
		}
		break;
	}
	return REF_UNIT;
}

#pragma clang attribute pop
