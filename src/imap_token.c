/* IMAP tokenizer: see include/postern/imap_token.h. */
#include <string.h>

#include <postern/imap_token.h>

enum {
	ST_ARG_SP,   /* after SP: an argument must begin */
	ST_ARG_OPEN, /* after "(": an argument or ")" */
	ST_AFTER,    /* a string, literal or list just ended */
	ST_ATOM,
	ST_TILDE, /* "~" at an argument start: literal8 or an atom */
	ST_QUOTED,
	ST_QESC,
	ST_LIT,        /* after "{" */
	ST_LIT_DIGITS, /* "{" and digits */
	ST_LIT_PLUS,   /* "{N+" */
	ST_LIT_END,    /* "{N}": only the end of the line may follow */
	ST_TRAIL,      /* spaces at the end of the line, which servers skip */
	ST_TEXT,       /* lenient mode: skipping what did not parse */
	ST_ERROR
};

/* Bytes of an atom argument: ATOM-CHAR plus what commands write in atoms
 * ("\Seen", "1:*", LIST's "%", "]"); "[" and "]" nest (BODY[...]). */
static bool
is_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

/* RFC 9051 tag: ASTRING-CHAR except "+". */
static bool
is_tag_char(unsigned char c)
{
	return is_atom_char(c) && c != '%' && c != '*' && c != '\\' && c != '+';
}

/* A command name is an atom (RFC 9051), as servers read it: "[" and
 * "]" may be in one, and the server reads the arguments of a name it does
 * not know (imap-login does), literals included. */
static bool
is_verb_char(unsigned char c)
{
	return is_tag_char(c);
}

static void
fail(struct imap_scan *sc, const char *why)
{
	if (sc->strict) {
		if (sc->err == NULL)
			sc->err = why;
		sc->state = ST_ERROR;
	} else {
		sc->state = ST_TEXT;
	}
}

void
imap_scan_fail(struct imap_scan *sc, const char *why)
{
	bool strict = sc->strict;

	sc->strict = true;
	fail(sc, why);
	sc->strict = strict;
}

void
imap_scan_init(struct imap_scan *sc, bool strict)
{
	memset(sc, 0, sizeof(*sc));
	sc->strict = strict;
	sc->state = ST_ARG_SP;
}

void
imap_scan_cont(struct imap_scan *sc)
{
	sc->state = ST_AFTER;
	sc->pos = 0;
	sc->err = NULL;
	sc->last = 0;
}

static void
open_level(struct imap_scan *sc, bool bracket)
{
	if (sc->depth >= IMAP_DEPTH_MAX) {
		fail(sc, "Too deeply nested");
		return;
	}
	if (bracket)
		sc->brackets |= (uint64_t)1 << sc->depth;
	else
		sc->brackets &= ~((uint64_t)1 << sc->depth);
	sc->depth++;
}

static bool
top_is(const struct imap_scan *sc, bool bracket)
{
	return sc->depth > 0 && ((sc->brackets >> (sc->depth - 1)) & 1) == (bracket ? 1 : 0);
}

/* ")" ends a list, and with it a "[" left open inside ("(\\S[x)"): a
 * server that nests brackets apart from lists (Dovecot) reads on, so the
 * line may still end in a literal; without one, it lacks its "]" (a later
 * "]" closes it). */
static void
close_list(struct imap_scan *sc)
{
	unsigned char d = sc->depth;

	while (d > 0 && ((sc->brackets >> (d - 1)) & 1))
		d--;
	if (d == 0) {
		fail(sc, "Unexpected ')'");
		return;
	}
	for (unsigned char k = d; k < sc->depth && sc->lost < UINT8_MAX; k++)
		sc->lost++;
	sc->depth = d - 1;
	sc->state = ST_AFTER;
}

/* A byte inside an atom (or starting one). */
static void
atom_byte(struct imap_scan *sc, unsigned char c)
{
	if (c == ' ') {
		sc->state = ST_ARG_SP;
	} else if (c == ')') {
		close_list(sc);
	} else if (c == '[') {
		open_level(sc, true);
		if (sc->state != ST_TEXT && sc->state != ST_ERROR)
			sc->state = ST_ATOM;
	} else if (c == ']' && top_is(sc, true)) {
		sc->depth--;
		sc->state = ST_ATOM;
	} else if (c == ']' && sc->lost > 0) {
		sc->lost--;
		sc->state = ST_ATOM;
	} else if (is_atom_char(c)) {
		sc->state = ST_ATOM;
	} else {
		fail(sc, (c & 0x80) ? "8-bit data in atom" : "Invalid characters in atom");
	}
}

static void
arg_start(struct imap_scan *sc, unsigned char c, bool after_open)
{
	switch (c) {
	case ' ':
		fail(sc, "White space other than one SP");
		break;
	case '"':
		sc->state = ST_QUOTED;
		break;
	case '{':
	case '~':
		sc->mark = sc->pos;
		sc->binary = c == '~';
		sc->lsize = 0;
		sc->ndig = 0;
		sc->state = c == '~' ? ST_TILDE : ST_LIT;
		break;
	case '(':
		open_level(sc, false);
		if (sc->state != ST_TEXT && sc->state != ST_ERROR)
			sc->state = ST_ARG_OPEN;
		break;
	case ')':
		if (!after_open)
			fail(sc, "White space before ')'");
		else
			close_list(sc);
		break;
	default:
		atom_byte(sc, c);
	}
}

static void
scan_byte(struct imap_scan *sc, unsigned char c)
{
	switch (sc->state) {
	case ST_ARG_SP:
		if (c == ' ' && !sc->strict)
			break;
		if (c == ' ' && sc->depth == 0)
			sc->state = ST_TRAIL; /* only the end of the line may follow */
		else
			arg_start(sc, c, false);
		break;
	case ST_TRAIL:
		if (c != ' ')
			fail(sc, "White space other than one SP");
		break;
	case ST_ARG_OPEN:
		if (c == ' ' && !sc->strict)
			sc->state = ST_ARG_SP;
		else
			arg_start(sc, c, true);
		break;
	case ST_AFTER:
		if (c == ' ')
			sc->state = ST_ARG_SP;
		else if (c == ')')
			close_list(sc);
		else if (c == ']' && top_is(sc, true))
			sc->depth--, sc->state = ST_ATOM;
		else if (c == ']' && sc->lost > 0)
			sc->lost--, sc->state = ST_ATOM;
		else
			fail(sc, "Missing SP between arguments");
		break;
	case ST_ATOM:
		atom_byte(sc, c);
		break;
	case ST_TILDE:
		if (c == '{')
			sc->state = ST_LIT;
		else
			atom_byte(sc, c);
		break;
	case ST_QUOTED:
		if (c == '"')
			sc->state = ST_AFTER;
		else if (c == '\\')
			sc->state = ST_QESC;
		else if (c == '\r' || c == '\n' || c == '\0')
			fail(sc, "Invalid characters in quoted string");
		break;
	case ST_QESC:
		/* RFC 9051 quoted-specials: only '"' and '\' are escaped. */
		if (c == '"' || c == '\\' || !sc->strict)
			sc->state = ST_QUOTED;
		else
			fail(sc, "Invalid escape in quoted string");
		break;
	case ST_LIT:
	case ST_LIT_DIGITS:
		if (c >= '0' && c <= '9') {
			sc->lsize = sc->lsize * 10 + (uint64_t)(c - '0');
			if (++sc->ndig > 10 || sc->lsize > UINT32_MAX)
				fail(sc, "Literal size too large");
			else
				sc->state = ST_LIT_DIGITS;
		} else if (sc->state == ST_LIT_DIGITS && (c == '}' || c == '+')) {
			sc->sync = c == '}';
			sc->state = c == '}' ? ST_LIT_END : ST_LIT_PLUS;
		} else {
			fail(sc, "Invalid literal size");
		}
		break;
	case ST_LIT_PLUS:
		if (c == '}')
			sc->state = ST_LIT_END;
		else
			fail(sc, "Invalid literal size");
		break;
	case ST_LIT_END:
		fail(sc, "Literal not at the end of the line");
		break;
	case ST_TEXT:
		if (c == ' ')
			sc->state = ST_ARG_SP;
		break;
	default: /* ST_ERROR */
		break;
	}
}

void
imap_scan_feed(struct imap_scan *sc, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (sc->state == ST_ERROR)
			break;
		scan_byte(sc, (unsigned char)p[i]);
		sc->pos++;
		if (p[i] != ' ' && p[i] != '\t')
			sc->last = p[i];
	}
}

bool
imap_scan_end(struct imap_scan *sc)
{
	switch (sc->state) {
	case ST_LIT_END:
		return true;
	case ST_ATOM:
	case ST_AFTER:
	case ST_TILDE:
		if (sc->lost > 0)
			fail(sc, "Missing ']'");
		else if (sc->depth > 0)
			fail(sc, top_is(sc, true) ? "Missing ']'" : "Missing ')'");
		return false;
	case ST_ARG_SP:
		/* Trailing spaces (Dovecot skips them), or a continuation
		 * line that is empty. */
		if (sc->lost > 0)
			fail(sc, "Missing ']'");
		else if (sc->depth > 0)
			fail(sc, "Missing ')'");
		return false;
	case ST_ARG_OPEN:
		fail(sc, "Missing ')'");
		return false;
	case ST_QUOTED:
	case ST_QESC:
		fail(sc, "Missing '\"'");
		return false;
	case ST_LIT:
	case ST_LIT_DIGITS:
	case ST_LIT_PLUS:
		fail(sc, "Invalid literal size");
		return false;
	default:
		return false;
	}
}

/* "tag SP verb" at P: offset of what follows the verb (its SP or the
 * end), or 0 when the head is not valid. */
static size_t
head(const char *p, size_t n, struct pu_word *tag, struct pu_word *verb, bool *tag_ok)
{
	size_t i = 0;

	while (i < n && is_tag_char((unsigned char)p[i]))
		i++;
	*tag = (struct pu_word){p, i};
	*verb = (struct pu_word){p + i, 0};
	*tag_ok = i > 0 && (i == n || p[i] == ' ');
	if (!*tag_ok || i == n)
		return 0;
	size_t v = ++i;
	while (i < n && is_verb_char((unsigned char)p[i]))
		i++;
	*verb = (struct pu_word){p + v, i - v};
	if (i == v || (i < n && p[i] != ' '))
		return 0;
	return i;
}

size_t
imap_cmd_head(const char *p, size_t n, struct pu_word *tag, struct pu_word *verb)
{
	bool tag_ok;
	size_t at = head(p, n, tag, verb, &tag_ok);

	return at > 0 && at < n ? at + 1 : 0; /* past the SP that must follow */
}

void
imap_cmd_parse(struct imap_cmd *c, struct imap_scan *sc, const char *p, size_t len, bool cont)
{
	memset(c, 0, sizeof(*c));
	c->p = p;
	c->len = len;
	c->n = pu_trim_eol(p, len);
	c->args = p;
	c->end = p + c->n;
	while (c->end > p && (c->end[-1] == ' ' || c->end[-1] == '\t'))
		c->end--;
	c->ends_in_brace = c->end > p && c->end[-1] == '}';
	for (size_t i = 0; i < c->n; i++)
		if ((unsigned char)p[i] >= 0x80)
			c->eightbit = true;

	size_t at = 0;
	if (cont) {
		imap_scan_cont(sc);
	} else {
		bool tag_ok;
		at = head(p, c->n, &c->tag, &c->verb, &tag_ok);
		c->bad_tag = !tag_ok;
		imap_scan_init(sc, true);
		if (at == 0) {
			c->err = tag_ok ? "Invalid command name" : "Invalid tag";
			c->args = p + c->n;
			return;
		}
		if (at < c->n)
			at++; /* the SP before the arguments */
		c->args = p + at < c->end ? p + at : c->end;
	}
	if (at < c->n || cont) {
		imap_scan_feed(sc, p + at, c->n - at);
		c->lit = imap_scan_end(sc);
	}
	c->err = sc->err;
	if (c->lit) {
		c->sync = sc->sync;
		c->binary = sc->binary;
		c->lsize = sc->lsize;
		c->lit_at = at + (size_t)sc->mark;
	}
}

struct imap_tok
imap_next_tok(const char **pp, const char *end)
{
	const char *p = *pp;
	struct imap_tok t = {IT_END, p, 0};

	if (p < end && *p == ' ')
		p++;
	if (p >= end) {
		*pp = end;
		return t;
	}
	t.p = p;
	if (*p == '(' || *p == ')') {
		t.kind = *p == '(' ? IT_OPEN : IT_CLOSE;
		p++;
	} else if (*p == '"') {
		t.kind = IT_QUOTED;
		for (p++; p < end && *p != '"'; p++)
			if (*p == '\\' && p + 1 < end)
				p++;
		if (p < end)
			p++;
	} else if (*p == '{' || (*p == '~' && p + 1 < end && p[1] == '{')) {
		t.kind = IT_LITERAL; /* always the last thing on its line */
		p = end;
	} else {
		t.kind = IT_ATOM;
		while (p < end && *p != ' ' && *p != ')')
			p++;
	}
	t.n = (size_t)(p - t.p);
	*pp = p;
	return t;
}

size_t
imap_tok_value(struct imap_tok t, char *dst, size_t cap)
{
	size_t n = 0;

	if (t.kind == IT_ATOM) {
		if (t.n > cap)
			return (size_t)-1;
		memcpy(dst, t.p, t.n);
		return t.n;
	}
	if (t.kind != IT_QUOTED || t.n < 2)
		return (size_t)-1;
	for (size_t i = 1; i + 1 < t.n; i++) {
		if (t.p[i] == '\\')
			i++;
		if (n == cap)
			return (size_t)-1;
		dst[n++] = t.p[i];
	}
	return n;
}
