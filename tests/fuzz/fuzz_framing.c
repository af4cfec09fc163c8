/* libFuzzer harness: a differential oracle for the framing of the IMAP, POP3
 * and SMTP adapters. The fuzz input is what a client sends; the adapter is
 * driven as session_filter drives it, and a simulated server, itself a
 * strict reference framer (ref_framing.c, written apart from src/), answers
 * whatever postern forwards. A second reference framer reads the client's
 * own stream. The adapter's view of each verdict is recovered from its
 * answers: where it ends (act->consume), and whether it needed the line's
 * LF to decide (a command line) or not (literal or chunk data: the same
 * verdict with the final LF changed to another byte, on a copy of the
 * adapter's state). A finding, printed with the input, is:
 *   - a verdict that ends inside a reference unit (other than where the
 *     adapter ran out of input, as with a literal read in pieces);
 *   - bytes the reference calls literal or chunk data judged as a line, or
 *     a command line (or continuation, SASL response, body line) passed as
 *     data;
 *   - a local answer (PV_REPLY, PV_STARTTLS) to anything but the start of
 *     a command, or STARTTLS taken from a line that is no STARTTLS;
 *   - with the command log on: a forwarded command without a log line, or
 *     literal/body data logged as if it were a command;
 *   - the server executing what postern must never let through: STARTTLS,
 *     XCLIENT/XFORWARD, COMPRESS while logging, or credentials (LOGIN,
 *     AUTHENTICATE, USER, PASS, APOP, AUTH, MAIL, RCPT, DATA, BDAT) before
 *     TLS with require_tls;
 *   - a verdict that would stall the session (MORE when full, zero bytes).
 * A PV_CLOSE is a safe local refusal: comparison stops there.
 *
 * Input format:
 *   byte 0: bits 0-1 protocol (0 IMAP, 1 POP3, 2 SMTP, 3 IMAP), bit 2
 *           require_tls, bit 3 implicit TLS (no STARTTLS offered: post-TLS
 *           rules from the start), bit 4 observe (command log on), bit 5
 *           the SMTP server offers CHUNKING / the IMAP session is past
 *           login (Dovecot's imap process: no literal after an unknown or
 *           argument-less command, see ref_framing.c), bit 6 the POP3/SMTP
 *           server splits verbs on any white space (Postfix) rather than on
 *           SP, bit 7 the client's bytes arrive in pieces (byte 1: piece
 *           size - 1).
 *   then the client's byte stream, in which FF FE n1 n2 b stands for
 *   (n1 * 256 + n2 + 1) * 2 bytes b (lines past the 64 KiB buffer).
 * FUZZ_FRAMING_ONLY=imap, pop3 or smtp in the environment pins the
 * protocol, and FUZZ_FRAMING_CLEAR=N clears the bits N of byte 0 (e.g. 16:
 * no command log), to hunt on while a known finding is open.
 * The client waits for STARTTLS to complete: the bytes after a STARTTLS
 * line are its first bytes inside TLS. The server answers at once, and
 * both peers read at once (no backpressure); the client closes once all
 * its bytes are sent, so the last verdicts see full = true. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <postern/proto.h>

#include "ref_framing.h"
/* The fuzz build compiles one source per harness: the reference comes in
 * here. */
#include "ref_framing.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Build with -DFUZZ_TRACE to print every verdict and unit (reproducers). */
#ifdef FUZZ_TRACE
#define TRACE(...) fprintf(stderr, __VA_ARGS__)
#else
#define TRACE(...) ((void)0)
#endif

#define IN_CAP (PROTO_LINE_MAX + 2) /* RELAY_LINE_BUF_SIZE */
#define STREAM_MAX (IN_CAP + 32768) /* room for one line past the buffer */

struct bytes {
	uint8_t *p;
	size_t len, cap;
};

enum cls { CL_UNKNOWN, CL_LINE, CL_COUNTED };

/* One client-side verdict of the adapter. */
struct rec {
	uint64_t a, b;  /* consumed [a, b) of the client's stream */
	uint64_t avail; /* end of what the adapter was offered */
	enum proto_verdict v;
	enum cls cls;
	bool log;
	size_t loglen;
	char logtext[16];
};

struct sim {
	const struct proto_ops *ops;
	struct proto_conf conf;
	bool chunking, lax;
	void *st, *pre, *probe;
	struct bytes cs; /* the client's whole stream */
	uint64_t c_start, c_end, c_deliv;
	size_t piece; /* 0: all at once */
	bool c_eof;
	struct bytes fw; /* what the server received */
	struct bytes ss; /* what the server sent */
	uint64_t s_start;
	bool tls, closed;
	struct rec *rec;
	size_t nrec, caprec, checked;
	struct ref refc, refs;
	struct ref_unit *cu;
	size_t ncu, capcu, ui;
	struct ref_unit owed; /* a command passed without its log line yet */
	bool refc_done;
	char scratch[PROTO_SCRATCH_ALLOC], pscratch[PROTO_SCRATCH_ALLOC];
	char probe_buf[IN_CAP];
};

static struct sim sim;

static void *
grow(void *p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	size_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	p = realloc(p, c * elem);
	if (p == NULL)
		abort();
	*cap = c;
	return p;
}

static void
bytes_add(struct bytes *b, const void *p, size_t n, int fill)
{
	b->p = grow(b->p, &b->cap, b->len + n, 1);
	if (p)
		memcpy(b->p + b->len, p, n);
	else
		memset(b->p + b->len, fill, n);
	b->len += n;
}

/* ---- reporting ---- */

static const char *const verdict_names[] = {"PASS",     "REPLACE", "DROP", "REPLY",
                                            "STARTTLS", "CLOSE",   "MORE", "WAIT"};
static const char *const cls_names[] = {"unknown", "a line", "counted data"};

static void
escaped(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r')
			fputs("\\r", stderr);
		else if (p[i] == '\n')
			fputs("\\n", stderr);
		else if (p[i] == '\\' || p[i] == '"')
			fprintf(stderr, "\\%c", p[i]);
		else if (p[i] >= 0x20 && p[i] < 0x7f)
			fputc(p[i], stderr);
		else
			fprintf(stderr, "\\x%02x", p[i]);
	}
}

/* The bytes around [a, b) of STREAM, marked. */
static void
excerpt(const char *name, const struct bytes *stream, uint64_t a, uint64_t b)
{
	uint64_t from = a > 160 ? a - 160 : 0, to;

	if (b - a > 240)
		b = a + 240;
	to = b + 80 < stream->len ? b + 80 : stream->len;
	fprintf(stderr, "  %s bytes %llu..%llu: \"", name, (unsigned long long)from,
	        (unsigned long long)to);
	escaped(stream->p + from, a - from);
	fputs("\" [[ \"", stderr);
	escaped(stream->p + a, b - a);
	fputs("\" ]] \"", stderr);
	if (b < to)
		escaped(stream->p + b, to - b);
	fputs("\"\n", stderr);
}

static void __attribute__((noreturn))
finding(const struct sim *s, const struct rec *r, const struct ref_unit *u, const char *what)
{
	fprintf(stderr, "fuzz_framing: FINDING (%s, %s%s%s%s%s%s): %s\n", s->ops->name,
	        s->conf.starttls ? "starttls" : "implicit tls", s->tls ? ", inside TLS" : "",
	        s->conf.require_tls ? ", require_tls" : "", s->conf.observe ? ", observe" : "",
	        s->lax ? ", lax server" : "",
	        !s->chunking            ? ""
	        : s->ops == &proto_imap ? ", logged in"
	                                : ", CHUNKING",
	        what);
	if (r)
		fprintf(stderr, "  adapter: %s of client bytes [%llu, %llu), judged as %s%s\n",
		        verdict_names[r->v], (unsigned long long)r->a, (unsigned long long)r->b,
		        cls_names[r->cls], r->log ? ", logged" : "");
	if (u)
		fprintf(stderr, "  reference: %s%s [%llu, %llu)\n", ref_kind_name(u->kind),
		        u->partial ? " (cut short)" : "", (unsigned long long)u->start,
		        (unsigned long long)u->end);
	if (r)
		excerpt("client", &s->cs, r->a, r->b);
	else if (u)
		excerpt("forwarded", &s->fw, u->start, u->end);
	__builtin_trap();
}

/* ---- the simulated server ---- */

static void
server_says(void *arg, const char *text)
{
	struct sim *s = arg;

	bytes_add(&s->ss, text, strlen(text), 0);
}

static enum ref_fate
server_hears_all(void *arg, uint64_t off)
{
	(void)arg;
	(void)off;
	return REF_FATE_FORWARDED;
}

/* What the server executes must be something postern lets through. */
static void
police(const struct sim *s, const struct ref_unit *u)
{
	if (u->kind != RK_CMD || u->partial)
		return;
	if (u->verb == RV_STARTTLS)
		finding(s, NULL, u, "the server got a STARTTLS command");
	if (u->verb == RV_FORWARDING)
		finding(s, NULL, u, "the server got a client-forwarding command");
	if (u->verb == RV_COMPRESS && s->conf.observe)
		finding(s, NULL, u, "the server got COMPRESS while commands are logged");
	if (u->verb == RV_CREDENTIALS && !s->tls && s->conf.require_tls)
		finding(s, NULL, u, "the server got a credential-bearing command before TLS");
}

static void
server_reads(struct sim *s)
{
	struct ref_unit u;

	while (ref_next(&s->refs, s->fw.p, s->fw.len, false, &u) == REF_UNIT)
		police(s, &u);
}

/* ---- the client's stream, framed by the reference ---- */

/* The adapter's verdict on the command starting at OFF. */
static enum ref_fate
postern_fate(void *arg, uint64_t off)
{
	struct sim *s = arg;
	size_t lo = 0, hi = s->nrec;

	while (lo < hi) { /* the record with a <= off < b */
		size_t mid = (lo + hi) / 2;
		if (s->rec[mid].b <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == s->nrec)
		return s->closed ? REF_FATE_LOCAL : REF_FATE_UNKNOWN;
	enum proto_verdict v = s->rec[lo].v;
	return v == PV_PASS || v == PV_REPLACE ? REF_FATE_FORWARDED : REF_FATE_LOCAL;
}

static bool
logged_verbatim(const struct sim *s, const struct rec *r, const struct ref_unit *u)
{
	size_t n = (size_t)(u->end - u->start), k = r->loglen;

	if (k > n)
		k = n;
	return k >= 4 && memcmp(r->logtext, s->cs.p + u->start, k) == 0;
}

/* A POP3 or SMTP command line whose verb, read as the laxest server reads
 * it (white space around it skipped), is STLS or STARTTLS: postern answers
 * it itself, so nothing of it reaches a stricter server. */
static bool
lax_starttls(const struct sim *s, const struct ref_unit *f)
{
	const char *p = (const char *)s->cs.p + f->start, *end = (const char *)s->cs.p + f->end;

	if (s->ops == &proto_imap || f->kind != RK_CMD)
		return false;
	while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	size_t n = (size_t)(end - p);
	return (n == 4 && strncasecmp(p, "STLS", 4) == 0) ||
	       (n == 8 && strncasecmp(p, "STARTTLS", 8) == 0);
}

static void
check_one(struct sim *s, const struct rec *prev, const struct rec *r, const struct ref_unit *f,
          const struct ref_unit *l)
{
	bool at_start = r->a == f->start, at_end = r->b == l->end;

	if (s->owed.end > 0 && r->a >= s->owed.end)
		finding(s, prev, &s->owed, "a forwarded command left no command log line");
	if (r->log)
		s->owed.end = 0;
	/* Pieces may end where the input did, or hold back a CR that may
	 * start the line's end; an unfinished last unit splits anywhere. */
	bool edge = r->b == r->avail || (r->b + 1 == r->avail && s->cs.p[r->b] == '\r');
	if (!at_end && !edge && !l->partial)
		finding(s, r, l, "the adapter's unit ends inside one of the reference");
	if (r->v == PV_REPLY || r->v == PV_STARTTLS) {
		/* An over-long command may be swallowed in pieces, then answered. */
		bool swallowed =
		        prev && prev->b > f->start && (prev->v == PV_DROP || prev->v == PV_REPLY);
		if (f->kind != RK_CMD || !(at_start || swallowed))
			finding(s, r, f, "postern answered bytes that start no command");
		if (r->v == PV_STARTTLS && f->verb != RV_STARTTLS && !lax_starttls(s, f))
			finding(s, r, f, "STARTTLS taken from a line that is no STARTTLS");
	}
	if (!at_start)
		return;
	if (r->cls == CL_COUNTED && (f->kind != RK_DATA || l->kind != RK_DATA))
		finding(s, r, f->kind != RK_DATA ? f : l, "a line passed as literal or chunk data");
	if (r->cls == CL_LINE && (f->kind == RK_DATA || l->kind == RK_DATA))
		finding(s, r, f->kind == RK_DATA ? f : l, "literal or chunk data judged as a line");
	if (!s->conf.observe)
		return;
	/* A command passed in pieces may be logged with any of them. */
	if ((r->v == PV_PASS || r->v == PV_REPLACE) && f->kind == RK_CMD && !f->partial && !r->log)
		s->owed = *f;
	if (r->log && (f->kind == RK_DATA || f->kind == RK_BODY) && logged_verbatim(s, r, f))
		finding(s, r, f, "data written to the command log as a command");
}

/* Frames the client's stream as far as the adapter's verdicts allow and
 * compares every verdict with it. */
static void
check_records(struct sim *s)
{
	struct ref_unit u;
	int k;

	while (!s->refc_done &&
	       (k = ref_next(&s->refc, s->cs.p, s->cs.len, true, &u)) != REF_BLOCKED) {
		if (k == REF_NEED_BYTES) {
			s->refc_done = true;
			break;
		}
		TRACE("ref  %-12s [%llu, %llu)%s\n", ref_kind_name(u.kind),
		      (unsigned long long)u.start, (unsigned long long)u.end,
		      u.partial ? " partial" : "");
		s->cu = grow(s->cu, &s->capcu, s->ncu + 1, sizeof(*s->cu));
		s->cu[s->ncu++] = u;
	}
	while (s->checked < s->nrec) {
		const struct rec *r = &s->rec[s->checked];
		if (r->v == PV_CLOSE) { /* a safe local refusal: nothing after counts */
			s->checked = s->nrec;
			s->owed.end = 0;
			return;
		}
		while (s->ui < s->ncu && s->cu[s->ui].end <= r->a)
			s->ui++;
		size_t j = s->ui;
		while (j < s->ncu && s->cu[j].end < r->b)
			j++;
		if (j >= s->ncu) { /* the reference is not that far yet */
			if (s->refc_done)
				finding(s, r, NULL, "the adapter consumed bytes past the stream");
			return;
		}
		check_one(s, s->checked ? r - 1 : NULL, r, &s->cu[s->ui], &s->cu[j]);
		s->checked++;
	}
}

/* ---- driving the adapter as session_filter does ---- */

/* Did the adapter need the final LF of [p, p+c) to reach its verdict? The
 * same call on a copy of its earlier state, with that LF changed: a line
 * reader now waits (or stops at an earlier line), a byte counter does not. */
static enum cls
classify(struct sim *s, const char *p, size_t c, bool full, enum proto_verdict v)
{
	struct proto_action act = {0};

	if (v == PV_CLOSE || v == PV_STARTTLS)
		return CL_UNKNOWN;
	if (p[c - 1] != '\n') /* only data, or a line cut by a full buffer */
		return full ? CL_UNKNOWN : CL_COUNTED;
	memcpy(s->probe_buf, p, c);
	s->probe_buf[c - 1] = 'x';
	memcpy(s->probe, s->pre, s->ops->state_size);
	enum proto_verdict pv = s->ops->input(s->probe, PROTO_FROM_CLIENT, s->probe_buf, c, false,
	                                      &act, s->pscratch);
	if ((pv == PV_PASS || pv == PV_REPLACE || pv == PV_DROP) && act.consume == c)
		return CL_COUNTED;
	return full ? CL_UNKNOWN : CL_LINE;
}

static size_t
client_filter(struct sim *s)
{
	size_t moved = 0;

	while (!s->closed) {
		uint64_t lim = s->c_start + IN_CAP < s->c_deliv ? s->c_start + IN_CAP : s->c_deliv;
		if (s->c_end < lim)
			s->c_end = lim; /* a read */
		size_t len = (size_t)(s->c_end - s->c_start);
		if (len == 0)
			break;
		bool full = len >= IN_CAP || (s->c_eof && s->c_end == s->cs.len);
		const char *p = (const char *)s->cs.p + s->c_start;
		struct proto_action act = {0};
		struct rec r = {.a = s->c_start, .avail = s->c_end};

		memcpy(s->pre, s->st, s->ops->state_size);
		r.v = s->ops->input(s->st, PROTO_FROM_CLIENT, p, len, full, &act, s->scratch);
		if (r.v == PV_MORE || r.v == PV_WAIT) {
			if (r.v == PV_MORE && full)
				finding(s, &r, NULL, "MORE with a full buffer: the session stalls");
			break;
		}
		r.b = r.a + act.consume;
		if (act.consume == 0 || act.consume > len)
			finding(s, &r, NULL, "a verdict on zero bytes, or on more than given");
		r.cls = classify(s, p, act.consume, full, r.v);
		if (act.log) {
			r.log = true;
			r.loglen =
			        act.log_len < sizeof(r.logtext) ? act.log_len : sizeof(r.logtext);
			memcpy(r.logtext, act.log, r.loglen);
		}
		TRACE("C %-8s [%llu, %llu) %s%s\n", verdict_names[r.v], (unsigned long long)r.a,
		      (unsigned long long)r.b, cls_names[r.cls], r.log ? " logged" : "");
		s->rec = grow(s->rec, &s->caprec, s->nrec + 1, sizeof(*s->rec));
		s->rec[s->nrec++] = r;
		s->c_start = r.b;
		moved += act.consume;
		if (r.v == PV_PASS || r.v == PV_REPLACE) {
			if (r.v == PV_PASS)
				bytes_add(&s->fw, p, act.consume, 0);
			else
				bytes_add(&s->fw, act.text, act.len, 0);
			server_reads(s);
		} else if (r.v == PV_STARTTLS) {
			s->tls = true; /* the handshake succeeds */
			s->ops->tls_started(s->st);
		} else if (r.v == PV_CLOSE) {
			s->closed = true;
		}
	}
	return moved;
}

static size_t
server_filter(struct sim *s)
{
	size_t moved = 0;

	while (!s->closed && s->s_start < s->ss.len) {
		size_t len = s->ss.len - s->s_start < IN_CAP ? s->ss.len - s->s_start : IN_CAP;
		struct proto_action act = {0};
		enum proto_verdict v =
		        s->ops->input(s->st, PROTO_FROM_SERVER, (const char *)s->ss.p + s->s_start,
		                      len, len >= IN_CAP, &act, s->scratch);
		if (v == PV_MORE || v == PV_WAIT)
			break;
		if (act.consume == 0 || act.consume > len)
			finding(s, NULL, NULL, "a server-side verdict on zero bytes, or too many");
		TRACE("S %-8s \"%.*s\"\n", verdict_names[v],
		      (int)(act.consume < 60 ? act.consume : 60),
		      (const char *)s->ss.p + s->s_start);
		s->s_start += act.consume;
		moved += act.consume;
		if (v == PV_CLOSE)
			s->closed = true;
	}
	return moved;
}

static void
settle(struct sim *s)
{
	for (;;) {
		size_t moved = client_filter(s);
		moved += server_filter(s);
		check_records(s);
		if (moved == 0 || s->closed)
			return;
	}
}

/* The client's stream from the input: FF FE n1 n2 b is a run of b. */
static void
build_stream(struct sim *s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && s->cs.len < STREAM_MAX; i++) {
		if (p[i] == 0xff && i + 4 < n && p[i + 1] == 0xfe) {
			size_t run = (((size_t)p[i + 2] << 8 | p[i + 3]) + 1) * 2;
			if (run > STREAM_MAX - s->cs.len)
				run = STREAM_MAX - s->cs.len;
			bytes_add(&s->cs, NULL, run, p[i + 4]);
			i += 4;
		} else {
			bytes_add(&s->cs, p + i, 1, 0);
		}
	}
}

/* FUZZ_FRAMING_ONLY and FUZZ_FRAMING_CLEAR (see the top). */
static uint8_t
hunting(uint8_t flags)
{
	static int only = -1, clear;

	if (only < 0) {
		const char *e = getenv("FUZZ_FRAMING_ONLY"), *c = getenv("FUZZ_FRAMING_CLEAR");
		only = 4;
		for (int i = 0; e && i < 3; i++)
			if (strcmp(e, (const char *[]){"imap", "pop3", "smtp"}[i]) == 0)
				only = i;
		clear = c ? atoi(c) & 0xfc : 0;
	}
	flags = (uint8_t)(flags & ~clear);
	return only < 4 ? (uint8_t)((flags & ~3) | only) : flags;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto_ops *const protos[4] = {&proto_imap, &proto_pop3, &proto_smtp,
	                                                  &proto_imap};
	static const enum ref_proto refp[4] = {REF_IMAP, REF_POP3, REF_SMTP, REF_IMAP};
	struct sim *s = &sim;

	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	size_t at = 1;

	flags = hunting(flags);

	s->ops = protos[flags & 3];
	s->conf = (struct proto_conf){.starttls = !(flags & 8),
	                              .require_tls = (flags & 4) != 0,
	                              .observe = (flags & 16) != 0};
	s->chunking = (flags & 32) != 0;
	s->lax = (flags & 64) != 0;
	s->piece = 0;
	if ((flags & 128) && size > 1)
		s->piece = (size_t)data[at++] + 1;
	s->cs.len = s->fw.len = s->ss.len = 0;
	build_stream(s, data + at, size - at);
	s->c_start = s->c_end = s->s_start = 0;
	s->c_deliv = s->piece && s->piece < s->cs.len ? s->piece : s->cs.len;
	s->c_eof = s->closed = s->refc_done = false;
	s->tls = !s->conf.starttls;
	s->nrec = s->checked = s->ncu = s->ui = 0;
	s->owed.end = 0;

	s->st = calloc(1, s->ops->state_size);
	s->pre = malloc(s->ops->state_size);
	s->probe = malloc(s->ops->state_size);
	if (!s->st || !s->pre || !s->probe)
		abort();
	s->ops->init(s->st, &s->conf);
	bool imap = s->ops == &proto_imap;
	struct ref_env server = {s->lax,      s->chunking && !imap, s->chunking && imap,
	                         server_says, server_hears_all,     s};
	struct ref_env client = server;

	client.reply = NULL;
	client.fate = postern_fate;
	ref_init(&s->refs, refp[flags & 3], &server);
	ref_init(&s->refc, refp[flags & 3], &client);

	for (;;) {
		settle(s);
		if (s->closed || s->c_deliv == s->cs.len)
			break;
		s->c_deliv = s->c_deliv + s->piece < s->cs.len ? s->c_deliv + s->piece : s->cs.len;
	}
	s->c_eof = true; /* the client has said all it had to say */
	settle(s);
	if (s->checked < s->nrec)
		finding(s, &s->rec[s->checked], NULL, "a verdict the reference never reached");
	if (s->owed.end > 0)
		finding(s, &s->rec[s->nrec - 1], &s->owed,
		        "a forwarded command left no command log line");

	free(s->st);
	free(s->pre);
	free(s->probe);
	return 0;
}
