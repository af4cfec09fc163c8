/* libFuzzer harness: the IMAP, POP3 and SMTP adapters, both directions,
 * driven by the session's own verdict loop (filter.c). Whatever the peers send, an
 * adapter must never read out of bounds, never claim more bytes than it was
 * given, never stall the session (no zero-byte verdicts, no MORE when the
 * buffer is full), never change its state when it answers MORE or WAIT
 * (the session offers the same bytes again), and only ever answer the
 * client.
 *
 * Input format:
 *   byte 0: bits 0-1 protocol (0 IMAP, 1 POP3, 2 SMTP, 3 IMAP),
 *           bit 2 require_tls, bit 5 observe (command log on), bit 3 call
 *           tls_started half-way through the
 *           input, bit 4 both peers close (EOF) once the input is used up,
 *           bit 6 backend_auth = oauth2 in client mode (no STARTTLS
 *           offered; postern answers logins: each PV_LOGIN is ended by
 *           login_send, or by login_fail for each reason in turn).
 *   then records, each a control byte C:
 *     C & 1: direction (0 client -> server, 1 server -> client);
 *     op = C >> 1:
 *       0..119  a chunk of op+1 bytes follows (fewer if the input ends)
 *       120     fill: 2 bytes N (big-endian), 1 byte B: N+1 copies of B
 *       121     the same, followed by "\r\n"
 *       122     a chunk of 121 + next byte bytes follows
 *       123     this direction reaches EOF (later chunks for it are ignored)
 *       124     tls_started now (as if a handshake had completed)
 *       125..127 a chunk of op+1 bytes follows
 * Bytes of a direction queue up like a socket's; the session's buffer for
 * them holds 65538 bytes (RELAY_LINE_BUF_SIZE) and is refilled as the
 * adapter consumes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <postern/filter.h>
#include <postern/proto.h>
#include <postern/proto_util.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define IN_CAP (PROTO_LINE_MAX + 2)
#define FEED_MAX (4u << 20) /* bytes offered per input, fills included */

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_adapters: invariant failed: %s (line %d)\n", #cond,  \
			        __LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Build with -DFUZZ_TRACE to print every verdict on stderr (reproducers). */
#ifdef FUZZ_TRACE
#define TRACE(...) fprintf(stderr, __VA_ARGS__)
#else
#define TRACE(...) ((void)0)
#endif

/* A socket's worth of bytes not yet read, then the session's input buffer. */
struct side {
	uint8_t *q; /* queued by the peer, not yet read */
	size_t qlen, qcap, qoff;
	char in[IN_CAP]; /* the session's d->in */
	size_t start, end;
	bool eof;
};

struct sim {
	const struct proto_ops *ops;
	void *st, *copy;
	struct side side[2];
	bool tls, closed, starttls_pending, login;
	size_t fed, iter, logins;
	struct buf out[2]; /* what the session would write out */
	char scratch[PROTO_SCRATCH_ALLOC];
};

static void
queue_add(struct side *d, const uint8_t *p, size_t n, int fill)
{
	if (n == 0)
		return;
	if (d->qlen + n > d->qcap) {
		size_t cap = d->qcap ? d->qcap : 4096;
		while (cap < d->qlen + n)
			cap *= 2;
		uint8_t *q = realloc(d->q, cap);
		CHECK(q != NULL);
		d->q = q;
		d->qcap = cap;
	}
	if (p)
		memcpy(d->q + d->qlen, p, n);
	else
		memset(d->q + d->qlen, fill, n);
	d->qlen += n;
}

/* Reads what fits into the input buffer, compacting it first when its tail
 * is used up (as buf_tail does). Returns the bytes read. */
static size_t
side_read(struct side *d)
{
	if (d->start == d->end)
		d->start = d->end = 0;
	else if (d->end == IN_CAP && d->start > 0) {
		memmove(d->in, d->in + d->start, d->end - d->start);
		d->end -= d->start;
		d->start = 0;
	}
	size_t avail = d->qlen - d->qoff, room = IN_CAP - d->end;
	size_t n = avail < room ? avail : room;
	if (n == 0)
		return 0;
	memcpy(d->in + d->end, d->q + d->qoff, n);
	d->end += n;
	d->qoff += n;
	if (d->qoff == d->qlen)
		d->qoff = d->qlen = 0;
	return n;
}

static bool
text_ok(const struct sim *s, const char *t, size_t len)
{
	if (t == NULL || len > PROTO_SCRATCH)
		return false;
	/* Inside the scratch buffer, if it points there. */
	if (t >= s->scratch && t < s->scratch + PROTO_SCRATCH)
		return (size_t)(t - s->scratch) + len <= PROTO_SCRATCH;
	return true;
}

/* An SMTP EHLO rewrite is a well-formed reply: "250-" lines, one last
 * "250 " line, all CRLF-terminated. Before TLS it offers STARTTLS and no
 * AUTH; inside TLS no STARTTLS (the first line is the server's name). */
static void
check_ehlo(const char *t, size_t len, bool tls)
{
	size_t at = 0, starttls = 0;

	CHECK(len > 0);
	for (int line = 0; at < len; line++) {
		size_t n = pu_line_len(t + at, len - at);
		CHECK(n >= 6);
		CHECK(memcmp(t + at, "250", 3) == 0);
		CHECK(t[at + n - 2] == '\r');
		CHECK(t[at + 3] == (at + n < len ? '-' : ' '));
		const char *q = t + at + 4, *end = t + at + n - 2;
		struct pu_word w = pu_next_word(&q, end);
		if (line > 0) {
			if (!tls)
				CHECK(!pu_word_is(w, "AUTH") &&
				      !(w.n >= 5 && strncasecmp(w.p, "AUTH=", 5) == 0));
			starttls += pu_word_is(w, "STARTTLS");
		}
		at += n;
	}
	CHECK(starttls == (tls ? 0 : 1));
}

/* The answer to STARTTLS, per protocol. */
static bool
starttls_text_ok(const struct sim *s, const char *t, size_t len)
{
	static const char imap[] = " OK Begin TLS negotiation now\r\n";
	static const char pop3[] = "+OK Begin TLS negotiation now\r\n";
	static const char smtp[] = "220 2.0.0 Ready to start TLS\r\n";

	/* IMAP: the command's tag, which is never empty, "*" or "+". */
	if (s->ops == &proto_imap)
		return len > sizeof(imap) - 1 && t[0] != ' ' && t[0] != '*' && t[0] != '+' &&
		       memcmp(t + len - (sizeof(imap) - 1), imap, sizeof(imap) - 1) == 0;
	if (s->ops == &proto_pop3)
		return len == sizeof(pop3) - 1 && memcmp(t, pop3, len) == 0;
	return len == sizeof(smtp) - 1 && memcmp(t, smtp, len) == 0;
}

/* The invariants of every verdict, checked as the session's loop runs. */
static void
judged(void *arg, enum proto_dir dir, int verdict, const struct proto_action *act, const char *p,
       size_t len, bool full)
{
	struct sim *s = arg;
	enum proto_verdict v = (enum proto_verdict)verdict;

	CHECK(++s->iter <= IN_CAP + 1); /* every verdict below takes a byte */
	CHECK(v >= PV_PASS && v <= PV_TO_SERVER);
	CHECK(s->login || v <= PV_WAIT);
	TRACE("%c v=%d len=%zu full=%d consume=%zu [%.*s] text=[%.*s]\n", dir ? 'S' : 'C', (int)v,
	      len, (int)full, act->consume, (int)(act->consume < 80 ? act->consume : 80), p,
	      (int)(act->text && act->len < 200 ? act->len : 0), act->text ? act->text : "");
	if (v == PV_MORE || v == PV_WAIT) {
		CHECK(!(v == PV_MORE && full)); /* the session would stall */
		/* The same bytes come again: nothing may have been learnt. */
		CHECK(memcmp(s->copy, s->st, s->ops->state_size) == 0);
		return;
	}
	memcpy(s->copy, s->st, s->ops->state_size);
	CHECK(act->consume > 0);
	CHECK(act->consume <= len);
	CHECK(act->log == NULL ||
	      (act->log == s->scratch + PROTO_SCRATCH && act->log_len <= PROTO_LOG_MAX));
	switch (v) {
	case PV_PASS:
	case PV_DROP:
		break;
	case PV_REPLACE:
		CHECK(text_ok(s, act->text, act->len));
		/* Whole lines, or an IMAP ID literal scrubbed in place. */
		CHECK(act->len > 0 && (act->text[act->len - 1] == '\n' ||
		                       (s->ops == &proto_imap && act->len == act->consume)));
		if (s->ops == &proto_smtp)
			check_ehlo(act->text, act->len, s->tls);
		if (s->ops == &proto_pop3) /* the end of CAPA, or its SASL line */
			CHECK((act->len >= 3 &&
			       memcmp(act->text + act->len - 3, ".\r\n", 3) == 0) ||
			      (act->len > 7 && memcmp(act->text, "SASL ", 5) == 0));
		break;
	case PV_LOGIN:
		CHECK(dir == PROTO_FROM_CLIENT);
		CHECK(act->login_user_len > 0 && act->login_user_len <= 255);
		CHECK(act->login_pass_len <= PROTO_LOGIN_PASS_MAX);
		CHECK(act->login_user && act->login_pass);
		break;
	case PV_TO_SERVER:
		CHECK(dir == PROTO_FROM_SERVER && s->login);
		CHECK(act->len >= 2 && act->text[act->len - 1] == '\n');
		break;
	case PV_REPLY:
	case PV_STARTTLS:
	case PV_CLOSE:
		CHECK(dir == PROTO_FROM_CLIENT || v == PV_CLOSE);
		CHECK(text_ok(s, act->text, act->len));
		CHECK(act->len >= 3 && act->text[act->len - 2] == '\r' &&
		      act->text[act->len - 1] == '\n');
		/* one line; POP3's AUTH listing postern's mechanisms excepted */
		CHECK(memchr(act->text, '\n', act->len - 1) == NULL ||
		      (s->login && s->ops == &proto_pop3 &&
		       strncmp(act->text, "+OK\r\nPLAIN\r\n.\r\n", act->len) == 0));
		if (v == PV_STARTTLS) {
			CHECK(starttls_text_ok(s, act->text, act->len));
			CHECK(!s->tls); /* never a second STARTTLS */
		}
		break;
	default:
		CHECK(0);
	}
}

/* What the session does after PV_LOGIN: the token's SASL message goes to
 * the server, or the client gets one of the failures, in turn. */
static void
end_login(struct sim *s)
{
	struct proto_action act = {0};
	unsigned k = (unsigned)(s->logins++ % 4);

	if (k == 3) {
		s->ops->login_send(s->st, (s->logins >> 2) & 1 ? "OAUTHBEARER" : "XOAUTH2",
		                   "dXNlcj1h", 8, &act, s->scratch);
	} else {
		s->ops->login_fail(s->st, (enum proto_login_fail)k, &act, s->scratch);
		CHECK(act.auth == PROTO_AUTH_NONE || k == PROTO_LOGIN_REFUSED);
	}
	CHECK(text_ok(s, act.text, act.len));
	CHECK(act.len >= 3 && act.text[act.len - 2] == '\r' && act.text[act.len - 1] == '\n');
	CHECK(memchr(act.text, '\n', act.len - 1) == NULL);
	memcpy(s->copy, s->st, s->ops->state_size);
}

/* The session's verdict loop (filter.c) for one direction, its output
 * written out at once. Returns the bytes consumed. */
static size_t
filter(struct sim *s, enum proto_dir dir)
{
	static const struct filter_hooks hooks_proto = {.judged = judged};
	struct side *d = &s->side[dir];
	struct filter_hooks hooks = hooks_proto;
	struct filter f = {.proto = s->ops,
	                   .state = s->st,
	                   .out = {&s->out[0], &s->out[1]},
	                   .reply = &s->out[1],
	                   .hooks = &hooks,
	                   .scratch = s->scratch};
	struct filter_result r;

	if (s->closed || (dir == PROTO_FROM_CLIENT && s->starttls_pending))
		return 0;
	hooks.arg = s;
	s->iter = 0;
	filter_input(&f, dir, d->in + d->start, d->end - d->start, IN_CAP, d->eof && d->qlen == 0,
	             &r);
	buf_free(&s->out[0]);
	buf_free(&s->out[1]);
	CHECK(r.stop == FILTER_IDLE || r.stop == FILTER_STARTTLS || r.stop == FILTER_CLOSE ||
	      (r.stop == FILTER_LOGIN && s->login));
	d->start += r.consumed;
	if (r.stop == FILTER_LOGIN)
		end_login(s);
	if (r.stop == FILTER_CLOSE)
		s->closed = true;
	if (r.stop == FILTER_STARTTLS) {
		/* CVE-2011-0411: the rest is discarded, never judged. */
		d->start = d->end = 0;
		d->qoff = d->qlen = 0;
		s->starttls_pending = true;
	}
	if (d->start == d->end)
		d->start = d->end = 0;
	return r.consumed;
}

static void
handshake_done(struct sim *s)
{
	TRACE("-- tls_started\n");
	s->starttls_pending = false;
	s->tls = true;
	s->ops->tls_started(s->st);
	memcpy(s->copy, s->st, s->ops->state_size);
}

/* Reads and filters both directions until nothing moves. */
static void
settle(struct sim *s)
{
	for (unsigned rounds = 0;; rounds++) {
		size_t moved = 0;

		CHECK(rounds < 10u * FEED_MAX);
		if (s->closed)
			return;
		if (s->starttls_pending)
			handshake_done(s); /* the handshake always succeeds here */
		for (int dir = 0; dir < 2; dir++) {
			moved += side_read(&s->side[dir]);
			moved += filter(s, (enum proto_dir)dir);
		}
		if (moved == 0)
			return;
	}
}

static void
add(struct sim *s, int dir, const uint8_t *p, size_t n, int fill)
{
	struct side *d = &s->side[dir];

	if (d->eof || s->fed + n > FEED_MAX)
		return;
	if (dir == PROTO_FROM_CLIENT && s->starttls_pending)
		return;
	queue_add(d, p, n, fill);
	s->fed += n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto_ops *const protos[4] = {&proto_imap, &proto_pop3, &proto_smtp,
	                                                  &proto_imap};
	static struct sim sim;
	struct sim *s = &sim;

	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	bool login = (flags & 64) != 0;
	struct proto_conf conf = {.starttls = !login,
	                          .require_tls = (flags & 4) != 0,
	                          .observe = (flags & 32) != 0,
	                          .backend_login = login};
	bool midway = (flags & 8) != 0, midway_done = false;

	s->ops = protos[flags & 3];
	s->st = calloc(1, s->ops->state_size);
	s->copy = malloc(s->ops->state_size);
	CHECK(s->st && s->copy);
	s->ops->init(s->st, &conf);
	memcpy(s->copy, s->st, s->ops->state_size);
	s->tls = login; /* client mode: the post-TLS rules from the start */
	s->closed = s->starttls_pending = false;
	s->login = login;
	s->fed = s->logins = 0;
	for (int i = 0; i < 2; i++) {
		s->side[i].start = s->side[i].end = 0;
		s->side[i].qlen = s->side[i].qoff = 0;
		s->side[i].eof = false;
	}

	size_t at = 1;
	while (at < size && !s->closed) {
		uint8_t c = data[at++];
		int dir = c & 1;
		unsigned op = c >> 1;

		if (op == 120 || op == 121) {
			if (size - at < 3)
				break;
			size_t n = ((size_t)data[at] << 8 | data[at + 1]) + 1;
			int b = data[at + 2];
			at += 3;
			add(s, dir, NULL, n, b);
			if (op == 121)
				add(s, dir, (const uint8_t *)"\r\n", 2, 0);
		} else if (op == 123) {
			settle(s);
			s->side[dir].eof = true;
		} else if (op == 124) {
			settle(s);
			if (!s->tls && !s->closed)
				handshake_done(s);
		} else {
			size_t n = op + 1;
			if (op == 122) {
				if (at >= size)
					break;
				n = 121 + (size_t)data[at++];
			}
			if (n > size - at)
				n = size - at;
			add(s, dir, data + at, n, 0);
			at += n;
		}
		settle(s);
		if (midway && !midway_done && at >= size / 2) {
			midway_done = true;
			if (!s->tls && !s->closed)
				handshake_done(s);
			settle(s);
		}
	}
	if (flags & 16) {
		s->side[0].eof = s->side[1].eof = true;
		settle(s);
	}
	free(s->st);
	free(s->copy);
	return 0;
}
