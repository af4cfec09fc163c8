/* The IMAP tokenizer shared by the client and server roles of the IMAP
 * adapter. It decides where a command begins and where a literal starts
 * the way a strict server does (RFC 9051 section 4 and 9): a literal
 * {N}, {N+} or ~{N} is only an argument of its own, starting after SP or
 * "(" and outside a quoted string, and it ends the line. Anything else
 * that merely ends in "{N}" is no literal.
 *
 * The scanner is a byte state machine, so a line too long to hold can be
 * fed in pieces and still be judged at its end. */
#ifndef POSTERN_IMAP_TOKEN_H
#define POSTERN_IMAP_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <postern/proto_util.h>

/* Deepest nesting of "(" and "[" accepted. */
#define IMAP_DEPTH_MAX 64

struct imap_scan {
	unsigned char state;
	bool strict;         /* client commands: the first error ends the scan */
	unsigned char depth; /* open "(" and "[" */
	uint64_t brackets;   /* bit d: level d was opened by "[" */
	unsigned char lost;  /* "[" closed by a ")": a later "]" or a literal
	                      * must end the line */
	unsigned char ndig;
	bool sync, binary; /* of the literal marker being read or just read */
	uint64_t lsize;
	uint64_t pos;    /* bytes fed since the line began */
	uint64_t mark;   /* where the last literal marker began ("{" or "~") */
	char last;       /* last byte fed that is not white space */
	const char *err; /* first syntax error (strict), or NULL */
};

/* A new line. STRICT: a client command's arguments; otherwise a server
 * response, read leniently (errors are skipped to the next SP) since only
 * its literal matters. */
void imap_scan_init(struct imap_scan *sc, bool strict);
/* The line that continues a command or response after its literal: the
 * literal was an argument that just ended; open lists stay open. */
void imap_scan_cont(struct imap_scan *sc);
void imap_scan_feed(struct imap_scan *sc, const char *p, size_t n);
/* Marks the line as not parsing (its beginning could not be read). */
void imap_scan_fail(struct imap_scan *sc, const char *why);
/* End of line (without its EOL). True if the line ends in a literal
 * marker: sc->lsize, sc->sync, sc->binary, sc->mark describe it. In strict
 * mode a line with an error never ends in a literal. */
bool imap_scan_end(struct imap_scan *sc);

/* One client line, parsed. */
struct imap_cmd {
	const char *p;            /* the line */
	size_t len;               /* with its EOL: what the line consumes */
	size_t n;                 /* without its EOL */
	struct pu_word tag, verb; /* empty on a continuation line */
	const char *args;         /* first byte of the arguments (end: none) */
	const char *end;          /* end of the arguments: trailing spaces excluded */
	const char *err;          /* first syntax error; NULL: the line parses */
	bool bad_tag;             /* no usable tag: only an untagged answer fits */
	bool lit, sync, binary;   /* ends in a literal marker */
	uint64_t lsize;
	size_t lit_at;      /* offset of the marker in the line */
	bool eightbit;      /* a byte >= 0x80 */
	bool ends_in_brace; /* the last byte but white space is "}": a lax
	                     * server may see a literal there when the line
	                     * does not parse */
};

/* Parses a command line of LEN bytes (EOL included) with SC, which holds
 * the nesting of the command across its literals. CONT: the line goes on
 * after a literal (no tag, no verb). */
void imap_cmd_parse(struct imap_cmd *c, struct imap_scan *sc, const char *p, size_t len, bool cont);

/* The head of a line too long to hold: tag and verb, and the offset where
 * the arguments begin (0 if the head is no valid "tag SP verb"). */
size_t imap_cmd_head(const char *p, size_t n, struct pu_word *tag, struct pu_word *verb);

/* Arguments of a line that parsed, one token at a time. */
enum imap_tok_kind { IT_END, IT_ATOM, IT_QUOTED, IT_LITERAL, IT_OPEN, IT_CLOSE };
struct imap_tok {
	enum imap_tok_kind kind;
	const char *p; /* as written: a quoted string with its quotes */
	size_t n;
};
struct imap_tok imap_next_tok(const char **p, const char *end);
/* A quoted string's value (escapes removed) or an atom's text into DST;
 * returns its length, or (size_t)-1 if it does not fit or is no string. */
size_t imap_tok_value(struct imap_tok t, char *dst, size_t cap);

#endif
