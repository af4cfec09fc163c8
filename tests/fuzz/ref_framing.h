/* Reference framers for the differential fuzzer (fuzz_framing.c): where each
 * command line, literal, body line and chunk of a client's byte stream begins
 * and ends, read as a strict server reads it (IMAP RFC 9051 with LITERAL+
 * RFC 7888 and literal8 RFC 3516; POP3 RFC 1939/2449/5034; SMTP RFC 5321,
 * CHUNKING RFC 3030, AUTH RFC 4954). Written apart from src/ on purpose: it
 * shares no code with the adapters it judges.
 *
 * A framer also plays that server: it answers what it frames through
 * env.reply (greeting, "+ go" for a synchronising literal, 334, 354, final
 * replies), so the harness can relay its answers to the adapter. Whether a
 * command reached the server or was answered by postern itself decides what
 * follows it (a refused synchronising literal is never sent, a refused
 * AUTHENTICATE has no SASL exchange); the framer asks env.fate and waits
 * (REF_BLOCKED) until the answer is known. */
#ifndef REF_FRAMING_H
#define REF_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ref_proto { REF_IMAP, REF_POP3, REF_SMTP };

enum ref_kind {
	RK_CMD,  /* the first line of a command */
	RK_CONT, /* IMAP: a command's line after one of its literals */
	RK_RESP, /* a line that is no command: a SASL response, IMAP's DONE */
	RK_DATA, /* counted bytes: an IMAP literal, a BDAT chunk */
	RK_BODY, /* a line of an SMTP DATA body */
	RK_DOT   /* the "." line that ends the body */
};

/* What a command line asks for, as far as postern's policy goes. */
enum ref_verb {
	RV_OTHER,
	RV_STARTTLS,    /* STARTTLS, STLS: postern's own business */
	RV_CREDENTIALS, /* refused before TLS when require_tls */
	RV_FORWARDING,  /* XCLIENT, XFORWARD, an IMAP ID with x-originating-ip
	                 * and the like: never from a client */
	RV_COMPRESS     /* IMAP COMPRESS: never while commands are logged */
};

struct ref_unit {
	uint64_t start, end;
	enum ref_kind kind;
	enum ref_verb verb; /* RK_CMD only */
	bool partial;       /* cut short by the end of the stream */
};

enum ref_fate { REF_FATE_UNKNOWN, REF_FATE_FORWARDED, REF_FATE_LOCAL };

struct ref_env {
	bool lax;      /* POP3/SMTP verbs split on SP or HTAB after leading white
	                * space (Postfix); else on SP only (RFC, Dovecot, aiosmtpd) */
	bool chunking; /* the SMTP server offers CHUNKING */
	/* IMAP: the session is past login, where Dovecot's imap process answers
	 * an unknown or argument-less command and skips the rest of its line,
	 * literal marker included; before it, imap-login reads the arguments
	 * (and literals) of every command. */
	bool logged_in;
	void (*reply)(void *arg, const char *text); /* NULL: no answers wanted */
	/* Did the command starting at OFFSET reach the server? */
	enum ref_fate (*fate)(void *arg, uint64_t offset);
	void *arg;
};

struct ref {
	enum ref_proto proto;
	struct ref_env env;
	uint64_t pos; /* first byte not framed yet */
	int mode;     /* what the next unit is */
	uint64_t remain;
	int after_data; /* mode once counted data is over */
	bool pending;   /* the command at cmd_start awaits its fate */
	uint64_t cmd_start;
	bool forwarded; /* the fate of the command in progress */
	/* The command in progress, as its first line parsed. */
	int verb;             /* V_* of ref_framing.c */
	bool bad, lit, sync;  /* syntax error; ends in a literal */
	bool has_arg, has_ir; /* POP3/SMTP/AUTHENTICATE arguments */
	bool has_size;        /* SMTP BDAT: a size, maybe followed by junk */
	bool id_forwarding;   /* IMAP ID naming a field only a proxy may set */
	uint64_t lsize;       /* literal or chunk size */
	int depth, bdepth;    /* IMAP: open "(" and "[" across literals */
	char tag[64];
	size_t tag_len;
	bool mail, rcpt; /* SMTP transaction */
};

void ref_init(struct ref *r, enum ref_proto proto, const struct ref_env *env);

enum { REF_BLOCKED = -1, REF_NEED_BYTES = 0, REF_UNIT = 1 };

/* Frames the next unit of the stream S[0..LEN) (EOF: it is complete).
 * REF_UNIT: *U is set; REF_NEED_BYTES: the unit is not all there yet;
 * REF_BLOCKED: env.fate does not know yet. */
int ref_next(struct ref *r, const uint8_t *s, uint64_t len, bool eof, struct ref_unit *u);

const char *ref_kind_name(enum ref_kind k);

#endif
