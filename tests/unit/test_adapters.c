/* The IMAP, POP3 and SMTP adapters, driven by the session's own verdict
 * loop (filter.c): the bytes waiting in one direction are offered to
 * input() again and again, each verdict is applied, act.consume bytes are
 * taken off, and the loop stops on MORE or WAIT (or on STARTTLS/CLOSE,
 * which end plaintext).
 * What would be forwarded and what would be answered to the client are
 * collected and compared with the exact bytes the protocols require. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include <postern/buf.h>
#include <postern/filter.h>
#include <postern/observe.h>
#include <postern/proto.h>
#include <postern/proto_util.h>
#include <postern/secrets.h>

#define C PROTO_FROM_CLIENT
#define S PROTO_FROM_SERVER

/* What the session can hold in one direction (RELAY_LINE_BUF_SIZE). */
#define IN_CAP (PROTO_LINE_MAX + 2)
#define REFUSED_LITERAL "; the literal of a refused command cannot be skipped\r\n"
#define NO_FINAL (-1)

/* A growable byte string, always NUL-terminated for printing. */
struct str {
	char *p;
	size_t n, cap;
};

static void
str_add(struct str *s, const char *p, size_t n)
{
	if (s->n + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 64;
		while (cap < s->n + n + 1)
			cap *= 2;
		char *q = realloc(s->p, cap);
		assert_non_null(q);
		s->p = q;
		s->cap = cap;
	}
	if (n)
		memcpy(s->p + s->n, p, n);
	s->n += n;
	s->p[s->n] = '\0';
}

static void
str_clear(struct str *s)
{
	s->n = 0;
	if (s->p)
		s->p[0] = '\0';
}

static void
str_consume(struct str *s, size_t n)
{
	memmove(s->p, s->p + n, s->n - n);
	s->n -= n;
	s->p[s->n] = '\0';
}

/* One adapter instance and what the session would have done with its
 * verdicts. fwd[C] goes to the server, fwd[S] to the client; ans holds the
 * local answers to the client (REPLY, STARTTLS, CLOSE). */
struct sess {
	const struct proto_ops *ops;
	void *st;
	struct str pend[2];
	struct str fwd[2];
	struct str ans;
	bool eof[2];
	int final;                  /* first STARTTLS/CLOSE not yet handled */
	enum proto_verdict stop[2]; /* why the last drive stopped */
	const char *event;          /* last act.event */
	struct str log;    /* command log: "C: ..."/"S: ..." lines, "d" before debug ones */
	struct str secret; /* act.secret of each verdict, one a line */
	struct observe_line line[2]; /* a log line being put together (PL_CONT) */
	struct str login;            /* PV_LOGIN: "user|password" */
	bool mask;                   /* the log is masked as the session's is */
	struct secrets mem;          /* ... with the secrets remembered so far */
	char scratch[PROTO_SCRATCH_ALLOC];
};

/* The next sess_new observes (log_commands): set by the redaction tests. */
static bool observe_next;
/* The next sess_new masks its log with the secrets it remembers (observe.c). */
static bool mask_next;
/* The next sess_new is a client-mode service with backend_auth = oauth2:
 * no STARTTLS offered, postern answers logins. */
static bool login_next;

/* Sessions of the running test, freed by teardown even when it fails. */
#define LIVE_MAX 16
static struct sess *live[LIVE_MAX];
/* A test's own large buffer, also freed by teardown. */
static struct str tmp;

static struct sess *
sess_new(const struct proto_ops *ops, bool require_tls)
{
	struct sess *s = calloc(1, sizeof(*s));
	struct proto_conf conf = {.starttls = !login_next,
	                          .require_tls = require_tls,
	                          .observe = observe_next,
	                          .backend_login = login_next};
	size_t i;

	assert_non_null(s);
	for (i = 0; i < LIVE_MAX && live[i]; i++)
		;
	assert_true(i < LIVE_MAX);
	live[i] = s;
	for (int d = 0; d < 2; d++) {
		str_add(&s->pend[d], "", 0);
		str_add(&s->fwd[d], "", 0);
	}
	str_add(&s->ans, "", 0);
	s->ops = ops;
	s->st = calloc(1, ops->state_size);
	assert_non_null(s->st);
	ops->init(s->st, &conf);
	s->final = NO_FINAL;
	s->mask = mask_next;
	return s;
}

static void
sess_free(struct sess *s)
{
	for (size_t i = 0; i < LIVE_MAX; i++)
		if (live[i] == s)
			live[i] = NULL;
	for (int d = 0; d < 2; d++) {
		free(s->pend[d].p);
		free(s->fwd[d].p);
	}
	free(s->ans.p);
	free(s->log.p);
	free(s->secret.p);
	free(s->login.p);
	secrets_wipe(&s->mem);
	free(s->st);
	free(s);
}

/* observe.c's assembly: pieces make a line; a multi-line text is split,
 * all lines but the last being debug. */
static void
show_line(struct sess *s, enum proto_dir dir, const struct observe_line *l)
{
	const char *p = l->text;
	size_t n = l->len;
	for (;;) {
		bool debug;
		size_t k = observe_first_line(p, n, l->flags, &debug);
		if (debug)
			str_add(&s->log, "d", 1);
		str_add(&s->log, dir == C ? "C: " : "S: ", 3);
		if (s->mask) {
			char shown[4 * PROTO_LOG_MAX];
			size_t m = secrets_mask_line(&s->mem, p, k, l->frame, shown, sizeof(shown));
			str_add(&s->log, shown, m);
		} else {
			str_add(&s->log, p, k);
		}
		str_add(&s->log, "\n", 1);
		if (k == n)
			break;
		p += k + 1;
		n -= k + 1;
	}
}

static void
log_piece(struct sess *s, enum proto_dir dir, const struct proto_action *act)
{
	struct observe_line *l = &s->line[dir];

	assert_true(act->log_len <= PROTO_LOG_MAX);
	if (observe_line_cut(l, act))
		show_line(s, dir, l);
	if (observe_line_add(l, act))
		show_line(s, dir, l);
}

/* The invariants of every verdict, checked as the loop runs. */
static void
drive_judged(void *arg, enum proto_dir dir, int v, const struct proto_action *act, const char *p,
             size_t len, bool full)
{
	struct sess *s = arg;

	(void)p;
	if (v == PV_MORE || v == PV_WAIT) {
		assert_false(v == PV_MORE && full); /* MORE is not an answer when full */
		return;
	}
	assert_true(act->consume > 0);
	assert_true(act->consume <= len);
	if (act->secret) {
		str_add(&s->secret, act->secret, act->secret_len);
		str_add(&s->secret, "\n", 1);
		secrets_add(&s->mem, act->secret, act->secret_len);
	}
	switch (v) {
	case PV_PASS:
	case PV_DROP:
		break;
	case PV_REPLACE:
		assert_non_null(act->text);
		assert_true(act->len <= PROTO_SCRATCH);
		break;
	case PV_LOGIN:
		assert_true(dir == C);
		assert_true(act->login_user_len > 0);
		assert_non_null(act->login_pass);
		break;
	case PV_TO_SERVER:
		assert_true(dir == S);
		assert_true(act->len > 0);
		break;
	case PV_REPLY:
	case PV_STARTTLS:
	case PV_CLOSE:
		/* Only CLOSE may answer a server's bytes (a reply too long to
		 * rewrite safely). */
		assert_true(dir == C || v == PV_CLOSE);
		assert_non_null(act->text);
		assert_true(act->len > 0 && act->len <= PROTO_SCRATCH);
		break;
	default:
		fail_msg("unknown verdict %d", v);
	}
}

static void
drive_log(void *arg, enum proto_dir dir, const struct proto_action *act)
{
	log_piece(arg, dir, act);
}

static void
drive_event(void *arg, const char *event)
{
	((struct sess *)arg)->event = event;
}

/* What the relay writes out: the output buffer's bytes, into DST. */
static void
drain_to(struct buf *b, struct str *dst)
{
	str_add(dst, buf_head(b), buf_len(b));
	buf_free(b);
}

/* The session's verdict loop (filter.c) over the pending bytes of DIR,
 * run again as its output drains, until MORE/WAIT or until they are all
 * consumed. Returns how many bytes stay unconsumed. On STARTTLS the rest is
 * counted, then discarded as the session does. */
static size_t
drive(struct sess *s, enum proto_dir dir)
{
	struct str *in = &s->pend[dir];
	struct filter_hooks hooks = {
	        .arg = s, .judged = drive_judged, .log = drive_log, .event = drive_event};
	struct buf out[2], ans;
	struct filter f = {.proto = s->ops,
	                   .state = s->st,
	                   .out = {&out[C], &out[S]},
	                   .reply = &ans,
	                   .hooks = &hooks,
	                   .scratch = s->scratch};
	size_t rest = in->n;

	s->stop[dir] = PV_PASS;
	if (s->final != NO_FINAL)
		return in->n; /* CLOSE, or STARTTLS not yet completed */
	buf_init(&out[C], FILTER_OUT_MAX);
	buf_init(&out[S], FILTER_OUT_MAX);
	buf_init(&ans, FILTER_OUT_MAX);
	for (unsigned iter = 0; in->n > 0; iter++) {
		struct filter_result r;

		assert_true(iter < 10000000);
		filter_input(&f, dir, in->p, in->n, IN_CAP, s->eof[dir], &r);
		drain_to(&out[C], &s->fwd[C]);
		drain_to(&out[S], &s->fwd[S]);
		drain_to(&ans, &s->ans);
		str_consume(in, r.consumed);
		rest = in->n;
		if (r.stop == FILTER_CLOSE || r.stop == FILTER_STARTTLS) {
			s->final = r.stop == FILTER_CLOSE ? PV_CLOSE : PV_STARTTLS;
			s->stop[dir] = (enum proto_verdict)s->final;
			if (r.stop == FILTER_CLOSE)
				str_add(&s->ans, r.text, r.len);
			else
				str_clear(in); /* CVE-2011-0411: never executed */
			break;
		}
		if (r.stop == FILTER_LOGIN) { /* the session takes over: the test goes on */
			str_add(&s->login, r.login.login_user, r.login.login_user_len);
			str_add(&s->login, "|", 1);
			str_add(&s->login, r.login.login_pass, r.login.login_pass_len);
			s->stop[dir] = PV_LOGIN;
			break;
		}
		assert_int_equal(r.stop, FILTER_IDLE);
		if (r.last == PV_MORE || r.last == PV_WAIT) {
			s->stop[dir] = (enum proto_verdict)r.last;
			break;
		}
	}
	return rest;
}

static int
teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < LIVE_MAX; i++)
		if (live[i])
			sess_free(live[i]);
	free(tmp.p);
	memset(&tmp, 0, sizeof(tmp));
	return 0;
}

static size_t
feed_n(struct sess *s, enum proto_dir dir, const char *p, size_t n)
{
	assert_true(s->pend[dir].n + n <= IN_CAP);
	str_add(&s->pend[dir], p, n);
	return drive(s, dir);
}

static size_t
feed(struct sess *s, enum proto_dir dir, const char *p)
{
	return feed_n(s, dir, p, strlen(p));
}

/* Like a socket under back-pressure: offers as much of P as the pending
 * buffer has room for, drives, and goes on while bytes are taken. Returns
 * how many bytes of P could not be delivered. */
static size_t
feed_stream(struct sess *s, enum proto_dir dir, const char *p, size_t n)
{
	while (n > 0) {
		size_t room = IN_CAP - s->pend[dir].n, k = n < room ? n : room;
		if (k == 0)
			break;
		feed_n(s, dir, p, k);
		p += k;
		n -= k;
	}
	return n;
}

/* The client-side handshake finished. */
static void
tls_start(struct sess *s)
{
	assert_true(s->final == NO_FINAL || s->final == PV_STARTTLS);
	s->final = NO_FINAL;
	s->ops->tls_started(s->st);
}

static void
expect_at(struct str *got, const char *want, size_t n, const char *file, int line)
{
	if (got->n != n || memcmp(got->p, want, n) != 0) {
		print_error("got  (%zu) [%.*s]\nwant (%zu) [%.*s]\n", got->n,
		            got->n > 2000 ? 2000 : (int)got->n, got->p ? got->p : "", n,
		            n > 2000 ? 2000 : (int)n, want);
		_fail(file, line);
	}
	str_clear(got);
}

/* Compare and clear: bytes forwarded to the server / to the client, and
 * local answers to the client. */
#define TO_SERVER(s, w) expect_at(&(s)->fwd[C], (w), strlen(w), __FILE__, __LINE__)
#define TO_CLIENT(s, w) expect_at(&(s)->fwd[S], (w), strlen(w), __FILE__, __LINE__)
#define ANSWER(s, w) expect_at(&(s)->ans, (w), strlen(w), __FILE__, __LINE__)
#define LOGGED(s, w) expect_at(&(s)->log, (w), strlen(w), __FILE__, __LINE__)
#define SECRETS(s, w) expect_at(&(s)->secret, (w), strlen(w), __FILE__, __LINE__)
#define NOTHING(s)                                                                                 \
	do {                                                                                       \
		TO_SERVER(s, "");                                                                  \
		TO_CLIENT(s, "");                                                                  \
		ANSWER(s, "");                                                                     \
	} while (0)

/* ------------------------------------------------------------------ */
/* proto_util */

static void
test_util_imap_literal(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		int ret;
		uint64_t size;
		bool sync;
	} cases[] = {
	        {"{0}", 1, 0, true},
	        {"{12+}", 1, 12, false},
	        {"~{3}", 1, 3, true},
	        {"a APPEND INBOX (\\Seen) {310}", 1, 310, true},
	        {"a LOGIN {5+}", 1, 5, false},
	        {"{4294967295}", 1, 4294967295u, true},
	        {"{4294967296}", -1, 0, false},
	        {"{99999999999}", -1, 0, false},
	        {"{99999999999+}", -1, 0, false},
	        {"{}", 0, 0, false},
	        {"{+}", 0, 0, false},
	        {"a {}", 0, 0, false},
	        {"{12", 0, 0, false},
	        {"12}", 0, 0, false},
	        {"a 12}", 0, 0, false},
	        {"{1a}", 0, 0, false},
	        {"{-1}", 0, 0, false},
	        {"}", 0, 0, false},
	        {"", 0, 0, false},
	        {"a NOOP", 0, 0, false},
	        {"{5} x", 0, 0, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t size = 12345;
		bool sync = false;
		int r = pu_imap_literal(cases[i].line, strlen(cases[i].line), &size, &sync);
		if (r != cases[i].ret)
			fail_msg("pu_imap_literal(\"%s\") = %d, want %d", cases[i].line, r,
			         cases[i].ret);
		if (r == 1) {
			assert_int_equal(size, cases[i].size);
			assert_int_equal(sync, cases[i].sync);
		}
	}
	/* Only N bytes are looked at: the closing brace past N is not seen. */
	uint64_t size;
	bool sync;
	assert_int_equal(pu_imap_literal("{5}", 2, &size, &sync), 0);
}

static void
test_util_caps_rewrite(void **state)
{
	(void)state;
	static const char *const rm[] = {"STARTTLS", "LOGINDISABLED", NULL};
	static const char *const pfx[] = {"AUTH=", NULL};
	static const char *const add[] = {"STARTTLS", "LOGINDISABLED", NULL};
	struct pu_caps c = {rm, pfx, add};
	char out[256];
	size_t n;

	n = pu_caps_rewrite("IMAP4rev1 AUTH=PLAIN starttls  LITERAL+ auth=LOGIN ID", 53, &c, out,
	                    sizeof(out));
	assert_int_equal(n, strlen("IMAP4rev1 LITERAL+ ID STARTTLS LOGINDISABLED"));
	assert_memory_equal(out, "IMAP4rev1 LITERAL+ ID STARTTLS LOGINDISABLED", n);

	/* An empty list gets only the additions. */
	n = pu_caps_rewrite("", 0, &c, out, sizeof(out));
	assert_int_equal(n, 22);
	assert_memory_equal(out, "STARTTLS LOGINDISABLED", n);

	/* Nothing to add: only removals; a name merely starting like a removed
	 * one stays. */
	struct pu_caps post = {rm, NULL, NULL};
	n = pu_caps_rewrite("IMAP4rev1 STARTTLSX AUTH=PLAIN LOGINDISABLED", 44, &post, out,
	                    sizeof(out));
	assert_int_equal(n, strlen("IMAP4rev1 STARTTLSX AUTH=PLAIN"));
	assert_memory_equal(out, "IMAP4rev1 STARTTLSX AUTH=PLAIN", n);

	/* Everything removed, nothing added. */
	n = pu_caps_rewrite("STARTTLS AUTH=X", 15, &(struct pu_caps){rm, pfx, NULL}, out,
	                    sizeof(out));
	assert_int_equal(n, 0);

	/* The capacity is never exceeded, what postern adds comes first, and
	 * no word is cut into another one. */
	memset(out, 'Z', sizeof(out));
	n = pu_caps_rewrite("IMAP4rev1 IDLE NAMESPACE", 24, &c, out, 10);
	assert_int_equal(n, 8);
	assert_memory_equal(out, "STARTTLS", n);
	assert_int_equal(out[10], 'Z');
	n = pu_caps_rewrite("IMAP4rev1 STARTTLSX", 19, &post, out, 18);
	assert_int_equal(n, 9);
	assert_memory_equal(out, "IMAP4rev1", n);

	/* A word with a NUL, a control or an 8-bit byte is no capability: it
	 * could end the list early where it is printed ("STARTTLS\0..."). */
	n = pu_caps_rewrite("IDLE STARTTLS\0X \x97 A\rB ID", 24, &post, out, sizeof(out));
	assert_int_equal(n, 7);
	assert_memory_equal(out, "IDLE ID", n);

	/* Nor is a word with an atom-special: "X]" would close the greeting's
	 * [CAPABILITY ...] code and what follows would read as capabilities. */
	n = pu_caps_rewrite("IDLE X]STARTTLS (A) \"Q\" ID", 26, &post, out, sizeof(out));
	assert_int_equal(n, 7);
	assert_memory_equal(out, "IDLE ID", n);
}

static void
test_util_words(void **state)
{
	(void)state;
	const char *line = "a  STARTTLS";
	const char *p = line, *end = line + strlen(line);
	struct pu_word w = pu_next_word(&p, end);

	assert_true(pu_word_is(w, "A"));
	w = pu_next_word(&p, end);
	assert_int_equal(w.n, 0);
	w = pu_next_word(&p, end);
	assert_true(pu_word_is(w, "starttls"));
	assert_true(p == end);
	assert_int_equal(pu_line_len("ab\r\ncd", 6), 4);
	assert_int_equal(pu_line_len("ab\r", 3), 0);
	assert_int_equal(pu_trim_eol("ab\r\n", 4), 2);
	assert_int_equal(pu_trim_eol("ab\n", 3), 2);
	assert_true(pu_blank(line, line));
	const char *blank = " \t ", *x = " x";
	assert_true(pu_blank(blank, blank + 3));
	assert_false(pu_blank(x, x + 2));
}

/* ------------------------------------------------------------------ */
/* IMAP */

static struct sess *
imap(bool require_tls, bool greet)
{
	struct sess *s = sess_new(&proto_imap, require_tls);
	if (greet) {
		assert_int_equal(feed(s, S, "* OK ready\r\n"), 0);
		TO_CLIENT(s, "* OK ready\r\n");
	}
	return s;
}

static void
test_imap_caps_pretls(void **state)
{
	(void)state;
	struct sess *s = imap(true, false);

	assert_int_equal(feed(s, S, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+] hi\r\n"), 0);
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED] hi\r\n");

	feed(s, S, "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=LOGIN IDLE LOGINDISABLED\r\n");
	TO_CLIENT(s, "* CAPABILITY IMAP4rev1 IDLE STARTTLS LOGINDISABLED\r\n");

	feed(s, S, "a OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Logged in\r\n");
	TO_CLIENT(s, "a OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] Logged in\r\n");

	/* Case-insensitive keywords, bare LF kept as it came. */
	feed(s, S, "* capability imap4rev1 auth=plain\n");
	TO_CLIENT(s, "* capability imap4rev1 STARTTLS LOGINDISABLED\n");

	/* Other responses are left alone. */
	feed(s, S, "* OK [ALERT] AUTH=PLAIN STARTTLS\r\n* 3 EXISTS\r\n");
	TO_CLIENT(s, "* OK [ALERT] AUTH=PLAIN STARTTLS\r\n* 3 EXISTS\r\n");

	/* Split across reads: nothing passes before the line is complete. */
	assert_int_equal(feed(s, S, "* CAPABILITY IMAP4rev1 AUTH="), 28);
	assert_int_equal(s->stop[S], PV_MORE);
	TO_CLIENT(s, "");
	assert_int_equal(feed(s, S, "PLAIN\r\n"), 0);
	TO_CLIENT(s, "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_imap_caps_pretls_optional(void **state)
{
	(void)state;
	struct sess *s = imap(false, false);

	feed(s, S, "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n");
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] hi\r\n");
	feed(s, S, "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n");
	TO_CLIENT(s, "* CAPABILITY IMAP4rev1 STARTTLS\r\n");
	sess_free(s);
}

static void
test_imap_caps_posttls(void **state)
{
	(void)state;
	struct sess *s = imap(true, false);

	feed(s, S, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n");
	assert_int_equal(feed(s, C, "a STARTTLS\r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	tls_start(s);

	feed(s, C, "b CAPABILITY\r\n");
	TO_SERVER(s, "b CAPABILITY\r\n");
	feed(s, S,
	     "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED AUTH=SCRAM-SHA-256\r\n"
	     "b OK done\r\n");
	TO_CLIENT(s, "* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=SCRAM-SHA-256\r\nb OK done\r\n");
	feed(s, S, "c OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ok\r\n");
	TO_CLIENT(s, "c OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ok\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_imap_login_refused(void **state)
{
	(void)state;
	static const char *const cmds[][2] = {
	        {"a LOGIN user secret\r\n", "a NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"},
	        {"b AUTHENTICATE PLAIN\r\n", "b NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"},
	        {"c authenticate PLAIN AGZvbwBiYXI=\r\n",
	         "c NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"},
	        {"d login user secret\n", "d NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"},
	        {"e.1 Login \"user\" \"secret\"\r\n",
	         "e.1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"},
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct sess *s = imap(true, true);
		assert_int_equal(feed(s, C, cmds[i][0]), 0);
		ANSWER(s, cmds[i][1]);
		TO_SERVER(s, "");
		assert_string_equal(s->event, "plaintext-auth-refused");
		assert_int_equal(s->final, NO_FINAL);
		/* The session goes on in command mode. */
		feed(s, C, "z NOOP\r\n");
		TO_SERVER(s, "z NOOP\r\n");
		sess_free(s);
	}
}

static void
test_imap_login_literal_refused(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	/* A synchronising literal: refused at once; the client never sends it. */
	assert_int_equal(feed(s, C, "c LOGIN {4}\r\n"), 0);
	ANSWER(s, "c NO [PRIVACYREQUIRED] Use STARTTLS first\r\n");
	TO_SERVER(s, "");
	assert_int_equal(s->final, NO_FINAL);
	sess_free(s);

	/* Non-synchronising literals: refused, and the session ends, since
	 * the literal's bytes have no framing every server agrees on. */
	s = imap(true, true);
	feed(s, C, "a LOGIN {4+}\r\nuser {6+}\r\nsecret\r\nb NOOP\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE [PRIVACYREQUIRED] Use STARTTLS first" REFUSED_LITERAL);
	TO_SERVER(s, "");
	sess_free(s);
}

static void
test_imap_login_optional(void **state)
{
	(void)state;
	struct sess *s = imap(false, true);

	feed(s, C, "a LOGIN user secret\r\n");
	TO_SERVER(s, "a LOGIN user secret\r\n");
	/* An AUTHENTICATE waits for the commands before it to complete. */
	assert_int_equal(feed(s, C, "b AUTHENTICATE PLAIN\r\n"), 22);
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "a NO [AUTHENTICATIONFAILED] no\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "b AUTHENTICATE PLAIN\r\n");
	ANSWER(s, "");
	assert_null(s->event);
	sess_free(s);
}

static void
test_imap_starttls(void **state)
{
	(void)state;
	static const char *const ok[][2] = {
	        {"a STARTTLS\r\n", "a OK Begin TLS negotiation now\r\n"},
	        {"x1 starttls\r\n", "x1 OK Begin TLS negotiation now\r\n"},
	        {"T StartTLS\r\n", "T OK Begin TLS negotiation now\r\n"},
	        {"a STARTTLS\n", "a OK Begin TLS negotiation now\r\n"},
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct sess *s = imap(true, true);
		assert_int_equal(feed(s, C, ok[i][0]), 0);
		assert_int_equal(s->final, PV_STARTTLS);
		ANSWER(s, ok[i][1]);
		TO_SERVER(s, "");
		sess_free(s);
	}

	/* S2: what follows STARTTLS in the same read is not executed. */
	struct sess *s = imap(true, true);
	assert_int_equal(feed(s, C, "A STARTTLS\r\nX NOOP\r\n"), 8);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "A OK Begin TLS negotiation now\r\n");
	TO_SERVER(s, "");
	tls_start(s);
	assert_int_equal(s->pend[C].n, 0);
	feed(s, C, "B NOOP\r\n");
	TO_SERVER(s, "B NOOP\r\n");
	sess_free(s);

	/* S7: an APPEND literal injected after STARTTLS is gone, and the
	 * victim's LOGIN after TLS is a command, not literal data. */
	s = imap(true, true);
	assert_int_equal(feed(s, C, "A STARTTLS\r\nB APPEND INBOX {30}\r\n"), 21);
	tls_start(s);
	feed(s, C, "C LOGIN user secret\r\n");
	TO_SERVER(s, "C LOGIN user secret\r\n");
	feed(s, C, "D STARTTLS\r\n");
	ANSWER(s, "A OK Begin TLS negotiation now\r\nD BAD TLS is already active\r\n");
	sess_free(s);
}

static void
test_imap_starttls_bad(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	assert_int_equal(feed(s, C, "a STARTTLS foo\r\n"), 0);
	ANSWER(s, "a BAD STARTTLS takes no arguments\r\n");
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "");

	/* With a literal argument: a synchronising one is never sent. */
	assert_int_equal(feed(s, C, "b STARTTLS {5}\r\nc NOOP\r\n"), 0);
	ANSWER(s, "b BAD This command takes no literal\r\n");
	TO_SERVER(s, "c NOOP\r\n");
	feed(s, S, "c OK\r\n");

	/* Inside TLS. */
	assert_int_equal(feed(s, C, "d STARTTLS\r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "d OK Begin TLS negotiation now\r\n");
	tls_start(s);
	assert_int_equal(feed(s, C, "a STARTTLS\r\n"), 0);
	ANSWER(s, "a BAD TLS is already active\r\n");
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "");
	sess_free(s);
}

static void
test_imap_login_posttls(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	feed(s, C, "b LOGIN user secret\r\n");
	TO_SERVER(s, "b LOGIN user secret\r\n");
	ANSWER(s, "");
	feed(s, S, "b NO [AUTHENTICATIONFAILED] no\r\n");
	TO_CLIENT(s, "b NO [AUTHENTICATIONFAILED] no\r\n");

	/* An AUTHENTICATE exchange: the SASL lines are not commands. */
	feed(s, C, "c AUTHENTICATE PLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "d STARTTLS\r\n");
	TO_SERVER(s, "c AUTHENTICATE PLAIN\r\nd STARTTLS\r\n");
	ANSWER(s, "");
	feed(s, S, "c NO bad\r\n");
	TO_CLIENT(s, "+ \r\nc NO bad\r\n");
	feed(s, C, "e STARTTLS\r\n");
	ANSWER(s, "e BAD TLS is already active\r\n");
	sess_free(s);
}

static void
test_imap_literal_plus(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	/* Before TLS: refused and closed; STARTTLS inside the literal does
	 * not trigger. */
	feed(s, C, "a APPEND INBOX {10+}\r\nb STARTTLS\r\n");
	TO_SERVER(s, "");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Literals are not permitted before STARTTLS" REFUSED_LITERAL);
	sess_free(s);

	/* After TLS: all 8 literal bytes pass, no STARTTLS verdict. */
	s = imap(true, true);
	feed(s, C, "c STARTTLS\r\n");
	ANSWER(s, "c OK Begin TLS negotiation now\r\n");
	tls_start(s);
	assert_int_equal(feed(s, C, "a APPEND INBOX {8+}\r\nSTARTTLS\r\n"), 0);
	TO_SERVER(s, "a APPEND INBOX {8+}\r\nSTARTTLS\r\n");
	ANSWER(s, "");
	assert_int_equal(s->final, NO_FINAL);

	/* A literal split over reads, then a second literal in one command. */
	feed(s, C, "b APPEND INBOX {7+}\r\nd ST");
	feed(s, C, "ART");
	feed(s, C, " {4+}\r\nx NO\r\n");
	TO_SERVER(s, "b APPEND INBOX {7+}\r\nd START {4+}\r\nx NO\r\n");
	ANSWER(s, "");
	feed(s, C, "e STARTTLS\r\n");
	ANSWER(s, "e BAD TLS is already active\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_imap_sync_literal(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, C, "a STARTTLS\r\n");
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	tls_start(s);

	/* The literal waits for the server's "+". */
	assert_int_equal(feed(s, C, "a APPEND INBOX {8}\r\n"), 0);
	TO_SERVER(s, "a APPEND INBOX {8}\r\n");
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 10);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "");
	feed(s, S, "+ go ahead\r\n");
	TO_CLIENT(s, "+ go ahead\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "STARTTLS\r\n");
	ANSWER(s, "");
	feed(s, S, "a OK appended\r\n");
	TO_CLIENT(s, "a OK appended\r\n");

	/* Refused by the server: the literal is not sent, command mode again. */
	feed(s, C, "b APPEND INBOX {800000}\r\n");
	TO_SERVER(s, "b APPEND INBOX {800000}\r\n");
	assert_int_equal(feed(s, C, "c NOOP\r\n"), 8);
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "b NO [TOOBIG] too big\r\n");
	TO_CLIENT(s, "b NO [TOOBIG] too big\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "c NOOP\r\n");
	feed(s, C, "d STARTTLS\r\n");
	ANSWER(s, "d BAD TLS is already active\r\n");

	/* Another tag's completion does not cancel the wait. */
	feed(s, C, "e APPEND INBOX {3}\r\n");
	TO_SERVER(s, "e APPEND INBOX {3}\r\n");
	assert_int_equal(feed(s, C, "abc\r\n"), 5);
	feed(s, S, "c OK noop\r\n* 4 EXISTS\r\n");
	assert_int_equal(drive(s, C), 5);
	feed(s, S, "+ \r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "abc\r\n");
	TO_CLIENT(s, "c OK noop\r\n* 4 EXISTS\r\n+ \r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_imap_server_literal(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);
	const char *fetch = "* 1 FETCH (BODY[] {29}\r\na1 OK [CAPABILITY STARTTLS]\r\n)\r\n";

	/* A literal that looks like a capability response is not rewritten. */
	assert_int_equal(feed(s, S, fetch), 0);
	TO_CLIENT(s, fetch);
	feed(s, S, "a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] done\r\n");
	TO_CLIENT(s, "a1 OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] done\r\n");

	/* Byte by byte. */
	for (const char *p = fetch; *p; p++)
		feed_n(s, S, p, 1);
	TO_CLIENT(s, fetch);

	/* Literal without a trailing line break inside, and two literals. */
	const char *two = "* 2 FETCH (BODY[HEADER] {4}\r\n* CA BODY[TEXT] {24}\r\n"
	                  "* CAPABILITY AUTH=PLAIN\n)\r\n";
	feed(s, S, two);
	TO_CLIENT(s, two);
	feed(s, S, "* CAPABILITY AUTH=PLAIN\r\n");
	TO_CLIENT(s, "* CAPABILITY STARTTLS LOGINDISABLED\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_imap_long_line(void **state)
{
	(void)state;
	char *big = malloc(IN_CAP);
	assert_non_null(big);
	memset(big, 'a', IN_CAP);

	/* Before TLS: closed. */
	struct sess *s = imap(true, true);
	assert_int_equal(feed_n(s, C, big, IN_CAP - 1), IN_CAP - 1);
	assert_int_equal(s->stop[C], PV_MORE);
	assert_int_equal(feed_n(s, C, big, 1), 0);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Line too long\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* A line of exactly 64 KiB plus CRLF is still a line. */
	s = imap(false, true);
	memcpy(big, "a NOOP ", 7);
	memcpy(big + IN_CAP - 2, "\r\n", 2);
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->fwd[C].n, IN_CAP);
	str_clear(&s->fwd[C]);
	ANSWER(s, "");
	sess_free(s);

	/* After TLS: passed, and the line's end is not a command. */
	s = imap(true, true);
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	memset(big, 'a', IN_CAP);
	memcpy(big, "a NOOP ", 7);
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->fwd[C].n, IN_CAP);
	str_clear(&s->fwd[C]);
	feed(s, C, "b STARTTLS\r\nc STARTTLS\r\n");
	TO_SERVER(s, "b STARTTLS\r\n");
	ANSWER(s, "a OK Begin TLS negotiation now\r\nc BAD TLS is already active\r\n");
	sess_free(s);

	/* Without a readable "tag verb" head, or for a command postern acts
	 * on: refused and swallowed up to the line's end. */
	const char *heads[] = {"", "a ID (", "a LOGIN user "};
	for (size_t i = 0; i < 3; i++) {
		s = imap(true, true);
		feed(s, C, "a STARTTLS\r\n");
		tls_start(s);
		ANSWER(s, "a OK Begin TLS negotiation now\r\n");
		memset(big, 'a', IN_CAP);
		memcpy(big, heads[i], strlen(heads[i]));
		assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
		ANSWER(s, i == 0 ? "* BAD Line too long\r\n" : "a BAD Line too long\r\n");
		feed(s, C, "b STARTTLS\r\nc NOOP\r\n");
		TO_SERVER(s, "c NOOP\r\n");
		ANSWER(s, "");
		sess_free(s);
	}

	/* An ID that goes on after a literal with a line too long to judge:
	 * its beginning is at the backend, so the session ends. */
	s = imap(true, true);
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	feed(s, C, "b ID (\"name\" {1+}\r\nx");
	TO_SERVER(s, "b ID (\"name\" {1+}\r\nx");
	memset(big, 'a', IN_CAP);
	memcpy(big, " \"x-originating-ip\" \"", 22);
	feed_n(s, C, big, IN_CAP);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Line too long\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* At the end of the input a lone CR after TLS is judged, not kept. */
	s = imap(true, true);
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	s->eof[C] = true;
	assert_int_equal(feed(s, C, "\r"), 0);
	TO_SERVER(s, "");
	sess_free(s);

	/* Server lines of any length pass. */
	s = imap(true, true);
	assert_int_equal(feed_n(s, S, big, IN_CAP), 0);
	assert_int_equal(s->fwd[S].n, IN_CAP);
	str_clear(&s->fwd[S]);
	feed(s, S, "* CAPABILITY AUTH=PLAIN\r\n");
	TO_SERVER(s, "");
	TO_CLIENT(s, "* CAPABILITY AUTH=PLAIN\r\n");
	feed(s, S, "* CAPABILITY AUTH=PLAIN\r\n");
	TO_CLIENT(s, "* CAPABILITY STARTTLS LOGINDISABLED\r\n");
	sess_free(s);
	free(big);
}

static void
test_imap_before_greeting(void **state)
{
	(void)state;
	struct sess *s = imap(true, false);

	assert_int_equal(feed(s, C, "a CAPABILITY\r\n"), 14);
	assert_int_equal(s->stop[C], PV_WAIT);
	assert_int_equal(feed(s, C, "b STARTTLS\r\n"), 26);
	NOTHING(s);
	feed(s, S, "* OK [CAPABILITY IMAP4rev1] ready\r\n");
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n");
	/* STARTTLS then waits for the CAPABILITY reply, which must come in
	 * plaintext, before the TLS handshake. */
	assert_int_equal(drive(s, C), 12);
	TO_SERVER(s, "a CAPABILITY\r\n");
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "* CAPABILITY IMAP4rev1\r\n");
	assert_int_equal(drive(s, C), 12);
	feed(s, S, "a OK done\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "b OK Begin TLS negotiation now\r\n");
	sess_free(s);
}

/* Commands forwarded before STARTTLS are answered before it, in plaintext. */
static void
test_imap_starttls_order(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	assert_int_equal(feed(s, C, "a NOOP\r\nb CAPABILITY\r\nc STARTTLS\r\n"), 12);
	TO_SERVER(s, "a NOOP\r\nb CAPABILITY\r\n");
	feed(s, S, "a OK\r\n* CAPABILITY IMAP4rev1\r\n");
	assert_int_equal(drive(s, C), 12);
	ANSWER(s, "");
	feed(s, S, "b OK\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "c OK Begin TLS negotiation now\r\n");
	sess_free(s);

	/* Refused commands are not in flight: nothing to wait for. */
	s = imap(true, true);
	assert_int_equal(feed(s, C, "a LOGIN u p\r\nb STARTTLS\r\n"), 0);
	ANSWER(s,
	       "a NO [PRIVACYREQUIRED] Use STARTTLS first\r\nb OK Begin TLS negotiation now\r\n");
	sess_free(s);
}

static void
test_imap_malformed(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	assert_int_equal(feed_n(s, C, "a NOOP\0x\r\n", 10), 0);
	ANSWER(s, "a BAD NUL byte in command\r\n");
	TO_SERVER(s, "");
	/* No usable tag: untagged. */
	assert_int_equal(feed_n(s, C, "a\0b NOOP\r\n", 10), 0);
	ANSWER(s, "* BAD Invalid tag\r\n");
	TO_SERVER(s, "");
	assert_int_equal(s->final, NO_FINAL);

	assert_int_equal(feed(s, C, "a APPEND INBOX {99999999999}\r\n"), 0);
	ANSWER(s, "a BAD Syntax error: Literal size too large\r\n");
	TO_SERVER(s, "");
	sess_free(s);
}

/* A local answer is only put into the server's stream between responses:
 * inside a literal it would become part of the message. */
static void
test_imap_answer_waits_for_server_literal(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, S, "* 1 FETCH (BODY[] {20}\r\n0123456789");
	TO_CLIENT(s, "* 1 FETCH (BODY[] {20}\r\n0123456789");
	assert_int_equal(feed(s, C, "a LOGIN u p\r\n"), 13);
	assert_int_equal(s->stop[C], PV_WAIT);
	ANSWER(s, "");
	feed(s, S, "0123456789)\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "a NO [PRIVACYREQUIRED] Use STARTTLS first\r\n");

	feed(s, S, "* 2 FETCH (BODY[] {20}\r\n0123456789");
	assert_int_equal(feed(s, C, "b STARTTLS\r\n"), 12);
	assert_int_equal(s->stop[C], PV_WAIT);
	ANSWER(s, "");
	feed(s, S, "0123456789)\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "b OK Begin TLS negotiation now\r\n");
	sess_free(s);

	/* The same holds for the NUL-byte refusal. */
	s = imap(true, true);
	feed(s, S, "* 1 FETCH (BODY[] {20}\r\n0123456789");
	assert_int_equal(feed_n(s, C, "c NOOP\0\r\n", 9), 9);
	assert_int_equal(s->stop[C], PV_WAIT);
	ANSWER(s, "");
	feed(s, S, "0123456789)\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "c BAD NUL byte in command\r\n");
	sess_free(s);
}

/* RFC 9051/3501: a tag is one or more ASTRING-CHARs, never "*" or "+".
 * A line without a valid tag is no command: it must not start TLS, and an
 * answer to it can only be untagged ("* BAD"); "+ OK ..." or " OK ..." is
 * not an IMAP response. Fail closed: credentials are still not forwarded. */
static void
test_imap_bad_tags(void **state)
{
	(void)state;
	static const char *const lines[] = {
	        " STARTTLS\r\n",          "* STARTTLS\r\n",          "+ STARTTLS\r\n",
	        " LOGIN user secret\r\n", "* LOGIN user secret\r\n", "+ LOGIN user secret\r\n",
	};

	int bad = 0;

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct sess *s = imap(true, true);
		int len = (int)strlen(lines[i]) - 2;
		feed(s, C, lines[i]);
		if (s->final == PV_STARTTLS) {
			print_error("\"%.*s\" started TLS\n", len, lines[i]);
			bad++;
		}
		if (s->ans.n > 0 && strncmp(s->ans.p, "* ", 2) != 0) {
			print_error("\"%.*s\" answered \"%.*s\"\n", len, lines[i],
			            (int)s->ans.n - 2, s->ans.p);
			bad++;
		}
		if (strstr(lines[i], "LOGIN") && s->fwd[C].n > 0) {
			print_error("\"%.*s\" forwarded before TLS\n", len, lines[i]);
			bad++;
		}
		sess_free(s);
	}
	assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ */
/* POP3 */

static const char *const CAPA_BODY = "+OK Capability list follows\r\n"
                                     "TOP\r\n"
                                     "USER\r\n"
                                     "SASL PLAIN LOGIN\r\n"
                                     "STLS\r\n"
                                     "UIDL\r\n"
                                     ".\r\n";

static struct sess *
pop3(bool require_tls, bool greet)
{
	struct sess *s = sess_new(&proto_pop3, require_tls);
	if (greet) {
		assert_int_equal(feed(s, S, "+OK POP3 ready\r\n"), 0);
		TO_CLIENT(s, "+OK POP3 ready\r\n");
	}
	return s;
}

static void
pop3_stls(struct sess *s)
{
	assert_int_equal(feed(s, C, "STLS\r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "+OK Begin TLS negotiation now\r\n");
	tls_start(s);
}

static void
test_pop3_capa(void **state)
{
	(void)state;
	struct sess *s = pop3(true, true);

	feed(s, C, "CAPA\r\n");
	TO_SERVER(s, "CAPA\r\n");
	feed(s, S, CAPA_BODY);
	TO_CLIENT(s, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n");

	/* A -ERR to CAPA has no body. */
	feed(s, C, "capa\r\n");
	feed(s, S, "-ERR unknown\r\nTOP\r\n");
	TO_CLIENT(s, "-ERR unknown\r\nTOP\r\n");
	TO_SERVER(s, "capa\r\n");

	/* Split in the middle of lines. */
	feed(s, C, "CAPA\r\n");
	TO_SERVER(s, "CAPA\r\n");
	for (size_t at = 0, len = strlen(CAPA_BODY); at < len; at += 3)
		feed_n(s, S, CAPA_BODY + at, len - at < 3 ? len - at : 3);
	TO_CLIENT(s, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n");

	/* After TLS: STLS is gone, USER and SASL are back. */
	pop3_stls(s);
	feed(s, C, "CAPA\r\n");
	TO_SERVER(s, "CAPA\r\n");
	feed(s, S, CAPA_BODY);
	TO_CLIENT(
	        s,
	        "+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nUIDL\r\n.\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_pop3_capa_optional(void **state)
{
	(void)state;
	struct sess *s = pop3(false, true);

	feed(s, C, "CAPA\r\n");
	feed(s, S, CAPA_BODY);
	TO_CLIENT(s, "+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nUIDL\r\n"
	             "STLS\r\n.\r\n");
	feed(s, C, "USER bob\r\n");
	TO_SERVER(s, "CAPA\r\nUSER bob\r\n");
	ANSWER(s, "");
	sess_free(s);
}

static void
test_pop3_auth_refused(void **state)
{
	(void)state;
	static const char *const cmds[] = {
	        "USER bob\r\n",
	        "PASS secret\r\n",
	        "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n",
	        "AUTH PLAIN\r\n",
	        "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
	        "user bob\r\n",
	        "AUTH\r\n",
	        "pass secret\n",
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct sess *s = pop3(true, true);
		assert_int_equal(feed(s, C, cmds[i]), 0);
		ANSWER(s, "-ERR Use STLS first (plaintext authentication is disabled)\r\n");
		TO_SERVER(s, "");
		assert_string_equal(s->event, "plaintext-auth-refused");
		feed(s, C, "CAPA\r\n");
		TO_SERVER(s, "CAPA\r\n");
		sess_free(s);
	}

	/* After TLS they pass. */
	struct sess *s = pop3(true, true);
	pop3_stls(s);
	feed(s, C, "USER bob\r\n");
	feed(s, S, "+OK\r\n");
	feed(s, C, "PASS secret\r\n");
	TO_SERVER(s, "USER bob\r\nPASS secret\r\n");
	ANSWER(s, "");
	sess_free(s);
}

static void
test_pop3_ordering(void **state)
{
	(void)state;
	struct sess *s = pop3(true, true);

	assert_int_equal(feed(s, C, "CAPA\r\nUSER x\r\n"), 8);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "CAPA\r\n");
	ANSWER(s, "");
	feed(s, S, "+OK\r\nTOP\r\n");
	assert_int_equal(drive(s, C), 8);
	ANSWER(s, "");
	feed(s, S, ".\r\n");
	TO_CLIENT(s, "+OK\r\nTOP\r\nSTLS\r\n.\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "-ERR Use STLS first (plaintext authentication is disabled)\r\n");

	/* Several commands in flight; STLS waits for all of them. */
	sess_free(s);
	s = pop3(false, true);
	assert_int_equal(feed(s, C, "NOOP\r\nSTAT\r\nSTLS\r\n"), 6);
	TO_SERVER(s, "NOOP\r\nSTAT\r\n");
	feed(s, S, "+OK\r\n");
	assert_int_equal(drive(s, C), 6);
	feed(s, S, "+OK 2 320\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "+OK Begin TLS negotiation now\r\n");
	sess_free(s);
}

static void
test_pop3_stls(void **state)
{
	(void)state;
	struct sess *s = pop3(true, true);

	assert_int_equal(feed(s, C, "stls  \r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "+OK Begin TLS negotiation now\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* S3: pipelined commands after STLS are discarded. */
	s = pop3(true, true);
	assert_int_equal(feed(s, C, "STLS\r\nCAPA\r\n"), 6);
	ANSWER(s, "+OK Begin TLS negotiation now\r\n");
	TO_SERVER(s, "");
	tls_start(s);
	assert_int_equal(s->pend[C].n, 0);

	/* Second STLS inside TLS. */
	assert_int_equal(feed(s, C, "STLS\r\n"), 0);
	ANSWER(s, "-ERR TLS is already active\r\n");
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "");
	sess_free(s);

	s = pop3(true, true);
	assert_int_equal(feed(s, C, "STLS foo\r\n"), 0);
	ANSWER(s, "-ERR STLS takes no arguments\r\n");
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "");
	sess_free(s);

	/* Before the greeting: waits. */
	s = pop3(true, false);
	assert_int_equal(feed(s, C, "STLS\r\n"), 6);
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "+OK hi\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	sess_free(s);
}

static void
test_pop3_retr_body(void **state)
{
	(void)state;
	/* Optional TLS: what is relayed before TLS is judged the same way. */
	struct sess *s = pop3(false, true);
	const char *body = "+OK 120 octets\r\n"
	                   "+OK fake\r\n"
	                   "-ERR fake\r\n"
	                   "STLS\r\n"
	                   "USER\r\n"
	                   "..\r\n"
	                   ".. \r\n"
	                   "SASL PLAIN\r\n"
	                   ".\r\n";

	feed(s, C, "RETR 1\r\n");
	feed(s, S, body);
	TO_CLIENT(s, body);

	/* The body ended at its dot: a CAPA response is judged again. */
	feed(s, C, "CAPA\r\n");
	feed(s, S, CAPA_BODY);
	TO_CLIENT(s, "+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nUIDL\r\n"
	             "STLS\r\n.\r\n");

	/* A local answer waits for the body's end, whatever the body says. */
	feed(s, C, "TOP 1 10\r\n");
	feed(s, S, "+OK\r\nline\r\n-ERR fake\r\n+OK fake\r\n");
	assert_int_equal(feed(s, C, "XCLIENT a\r\n"), 11);
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, ".\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "-ERR Not relayed: only the proxy may send this\r\n");

	/* LIST without an argument is multi-line, with one it is not. */
	feed(s, C, "LIST\r\n");
	feed(s, S, "+OK 2 messages\r\n1 120\r\n");
	assert_int_equal(feed(s, C, "XCLIENT a\r\n"), 11);
	feed(s, S, "2 200\r\n.\r\n");
	assert_int_equal(drive(s, C), 0);
	feed(s, C, "LIST 1\r\n");
	feed(s, S, "+OK 1 120\r\n");
	assert_int_equal(feed(s, C, "XCLIENT a\r\n"), 0);

	/* -ERR to RETR: no body. */
	feed(s, C, "RETR 9\r\n");
	feed(s, S, "-ERR no such message\r\n");
	assert_int_equal(feed(s, C, "XCLIENT a\r\n"), 0);
	ANSWER(s, "-ERR Not relayed: only the proxy may send this\r\n"
	          "-ERR Not relayed: only the proxy may send this\r\n"
	          "-ERR Not relayed: only the proxy may send this\r\n");
	TO_SERVER(s, "RETR 1\r\nCAPA\r\nTOP 1 10\r\nLIST\r\nLIST 1\r\nRETR 9\r\n");

	/* Inside TLS, STLS in a body is still data; the second STLS is ours. */
	pop3_stls(s);
	str_clear(&s->fwd[S]);
	feed(s, C, "RETR 2\r\n");
	feed(s, S, "+OK\r\nSTLS\r\n");
	assert_int_equal(feed(s, C, "STLS\r\n"), 6);
	feed(s, S, ".\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "-ERR TLS is already active\r\n");
	TO_CLIENT(s, "+OK\r\nSTLS\r\n.\r\n");
	sess_free(s);
}

static void
test_pop3_sasl_posttls(void **state)
{
	(void)state;
	struct sess *s = pop3(true, true);

	pop3_stls(s);
	feed(s, C, "AUTH PLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "STLS\r\n"); /* a SASL response, whatever it says */
	TO_SERVER(s, "AUTH PLAIN\r\nSTLS\r\n");
	ANSWER(s, "");
	feed(s, S, "-ERR authentication failed\r\n");
	feed(s, C, "STLS\r\n");
	ANSWER(s, "-ERR TLS is already active\r\n");
	sess_free(s);
}

static void
test_pop3_long_line(void **state)
{
	(void)state;
	char *big = malloc(IN_CAP);
	assert_non_null(big);
	memset(big, 'x', IN_CAP);

	struct sess *s = pop3(true, true);
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "-ERR Line too long\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* After TLS a command too long to judge is never relayed: dropped
	 * up to its end, then refused in its turn. */
	s = pop3(true, true);
	pop3_stls(s);
	feed(s, C, "LIST\r\n");
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	feed_n(s, C, "AUTH", 4);
	assert_int_equal(feed(s, C, " PLAIN x\r\nCAPA\r\n"), 16);
	TO_SERVER(s, "LIST\r\n");
	ANSWER(s, "");
	feed(s, S, "+OK\r\n.\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "-ERR Line too long\r\n");
	TO_SERVER(s, "CAPA\r\n");

	/* A SASL response is not a command: a long one goes on. */
	feed(s, S, "+OK\r\n.\r\n");
	feed(s, C, "AUTH PLAIN\r\n");
	feed(s, S, "+ \r\n");
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->fwd[C].n, 12 + IN_CAP);
	str_clear(&s->fwd[C]);
	ANSWER(s, "");
	sess_free(s);
	free(big);
}

/* ------------------------------------------------------------------ */
/* SMTP */

static const char *const EHLO_REPLY = "250-mx.example.org Hello\r\n"
                                      "250-PIPELINING\r\n"
                                      "250-AUTH PLAIN LOGIN\r\n"
                                      "250-AUTH=PLAIN\r\n"
                                      "250-STARTTLS\r\n"
                                      "250-SIZE 10240000\r\n"
                                      "250 8BITMIME\r\n";

static struct sess *
smtp(bool require_tls, bool greet)
{
	struct sess *s = sess_new(&proto_smtp, require_tls);
	if (greet) {
		assert_int_equal(feed(s, S, "220 mx.example.org ESMTP\r\n"), 0);
		TO_CLIENT(s, "220 mx.example.org ESMTP\r\n");
	}
	return s;
}

/* STARTTLS, the handshake, and the new EHLO. */
static void
smtp_tls(struct sess *s, bool ehlo)
{
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "220 2.0.0 Ready to start TLS\r\n");
	tls_start(s);
	if (ehlo) {
		feed(s, C, "EHLO client\r\n");
		TO_SERVER(s, "EHLO client\r\n");
		feed(s, S, EHLO_REPLY);
		TO_CLIENT(s,
		          "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n"
		          "250-AUTH=PLAIN\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");
	}
}

/* STARTTLS, and an EHLO whose reply offers CHUNKING. */
static void
smtp_tls_chunking(struct sess *s)
{
	smtp_tls(s, false);
	feed(s, C, "EHLO client\r\n");
	feed(s, S, "250-mx\r\n250 CHUNKING\r\n");
	TO_SERVER(s, "EHLO client\r\n");
	TO_CLIENT(s, "250-mx\r\n250 CHUNKING\r\n");
}

static void
test_smtp_ehlo_pretls(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	feed(s, C, "EHLO client\r\n");
	TO_SERVER(s, "EHLO client\r\n");
	feed(s, S, EHLO_REPLY);
	TO_CLIENT(s, "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	             "250-8BITMIME\r\n250 STARTTLS\r\n");

	/* Split: nothing passes until the last line is there. */
	feed(s, C, "ehlo client\r\n");
	size_t half = strlen(EHLO_REPLY) / 2;
	assert_int_equal(feed_n(s, S, EHLO_REPLY, half), half);
	assert_int_equal(s->stop[S], PV_MORE);
	TO_CLIENT(s, "");
	assert_int_equal(feed(s, S, EHLO_REPLY + half), 0);
	TO_CLIENT(s, "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	             "250-8BITMIME\r\n250 STARTTLS\r\n");

	/* A one-line reply gets STARTTLS as a second line. */
	feed(s, C, "EHLO c\r\n");
	feed(s, S, "250 mx\r\n");
	TO_CLIENT(s, "250-mx\r\n250 STARTTLS\r\n");

	/* An error reply is not rewritten. */
	feed(s, C, "EHLO c\r\n");
	feed(s, S, "501-bad\r\n501 syntax\r\n");
	TO_CLIENT(s, "501-bad\r\n501 syntax\r\n");

	/* HELO replies are not EHLO replies. */
	feed(s, C, "HELO c\r\n");
	feed(s, S, "250 mx\r\n");
	TO_CLIENT(s, "250 mx\r\n");
	TO_SERVER(s, "ehlo client\r\nEHLO c\r\nEHLO c\r\nHELO c\r\n");
	NOTHING(s);
	sess_free(s);
}

/* An EHLO reply larger than the buffer still never shows AUTH before TLS,
 * and is still a well-formed reply. */
static void
test_smtp_ehlo_huge_pretls(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);
	struct str *r = &tmp;
	char line[128];

	str_add(r, "250-mx\r\n250-AUTH PLAIN LOGIN\r\n", 30);
	for (int i = 0; r->n < 2 * IN_CAP; i++) {
		int k = snprintf(line, sizeof(line), "250-X-EXTENSION-%06d %0100d\r\n", i, 0);
		str_add(r, line, (size_t)k);
	}
	str_add(r, "250-AUTH=LOGIN\r\n250 8BITMIME\r\n", 30);
	feed(s, C, "EHLO c\r\n");
	feed_stream(s, S, r->p, r->n);
	/* A reply that cannot be rewritten whole is refused, never passed
	 * piecemeal with its AUTH lines. */
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "421 4.3.0 Mail server reply too long\r\n");
	struct str *out = &s->fwd[S];
	assert_null(memmem(out->p, out->n, "AUTH", 4));
	size_t finals = 1;
	assert_int_equal(finals, 1);
	sess_free(s);
}

/* A NUL byte inside an extension line must not let AUTH through: the
 * rewrite judges and copies the same bytes. */
static void
test_smtp_ehlo_nul(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);
	static const char reply[] = "250-mx\r\n250-AUTH\0 PLAIN\r\n250 8BITMIME\r\n";

	feed(s, C, "EHLO c\r\n");
	assert_int_equal(feed_n(s, S, reply, sizeof(reply) - 1), 0);
	struct str *out = &s->fwd[S];
	for (size_t at = 0, n; at < out->n; at += n) {
		n = pu_line_len(out->p + at, out->n - at);
		assert_true(n >= 6);
		if (strncasecmp(out->p + at + 4, "AUTH", 4) == 0)
			fail_msg("AUTH offered before TLS: \"%.*s\"", (int)n - 2, out->p + at);
	}
	sess_free(s);
}

static void
test_smtp_ehlo_posttls(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls(s, true);
	feed(s, C, "EHLO again\r\n");
	feed(s, S, "250 mx\r\n");
	TO_CLIENT(s, "250 mx\r\n");
	feed(s, C, "EHLO again\r\n");
	feed(s, S, "250-mx\r\n250 STARTTLS\r\n");
	TO_CLIENT(s, "250 mx\r\n");
	TO_SERVER(s, "EHLO again\r\nEHLO again\r\n");
	NOTHING(s);
	sess_free(s);
}

static void
test_smtp_refused_pretls(void **state)
{
	(void)state;
	static const char *const cmds[] = {
	        "MAIL FROM:<a@example.org>\r\n",
	        "RCPT TO:<b@example.org>\r\n",
	        "DATA\r\n",
	        "BDAT 0 LAST\r\n",
	        "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	        "AUTH LOGIN\r\n",
	        "mail from:<a@example.org>\n",
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct sess *s = smtp(true, true);
		assert_int_equal(feed(s, C, cmds[i]), 0);
		ANSWER(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");
		TO_SERVER(s, "");
		assert_string_equal(s->event, "plaintext-auth-refused");
		assert_int_equal(s->final, NO_FINAL);
		feed(s, C, "NOOP\r\n");
		TO_SERVER(s, "NOOP\r\n");
		sess_free(s);
	}

	/* Without require_tls they pass. */
	struct sess *s = smtp(false, true);
	feed(s, C, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\n");
	TO_SERVER(s, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\n");
	ANSWER(s, "");
	sess_free(s);
}

static void
test_smtp_pipelining_order(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	assert_int_equal(feed(s, C, "EHLO x\r\nMAIL FROM:<a>\r\n"), 15);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "EHLO x\r\n");
	ANSWER(s, "");
	feed(s, S, "250-mx\r\n");
	assert_int_equal(drive(s, C), 15);
	ANSWER(s, "");
	feed(s, S, "250 AUTH PLAIN\r\n");
	TO_CLIENT(s, "250-mx\r\n250 STARTTLS\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");

	/* S12: EHLO and STARTTLS pipelined; STARTTLS waits for the reply. */
	assert_int_equal(feed(s, C, "EHLO x\r\nSTARTTLS\r\n"), 10);
	TO_SERVER(s, "EHLO x\r\n");
	feed(s, S, EHLO_REPLY);
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "220 2.0.0 Ready to start TLS\r\n");
	sess_free(s);

	/* Before the greeting, STARTTLS waits. */
	s = smtp(true, false);
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 10);
	feed(s, S, "220-mx\r\n");
	assert_int_equal(drive(s, C), 10);
	feed(s, S, "220 mx\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	sess_free(s);
}

static void
test_smtp_starttls(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	assert_int_equal(feed(s, C, "starttls  \r\n"), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	ANSWER(s, "220 2.0.0 Ready to start TLS\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* S1: the injected RSET is not executed. */
	s = smtp(true, true);
	assert_int_equal(feed(s, C, "STARTTLS\r\nRSET\r\n"), 6);
	tls_start(s);
	assert_int_equal(s->pend[C].n, 0);
	TO_SERVER(s, "");
	sess_free(s);

	s = smtp(true, true);
	assert_int_equal(feed(s, C, "STARTTLS foo\r\n"), 0);
	ANSWER(s, "501 5.5.4 No parameters allowed\r\n");
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "");

	smtp_tls(s, false);
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 0);
	ANSWER(s, "503 5.5.1 TLS already active\r\n");
	assert_int_equal(s->final, NO_FINAL);

	/* S9: a fresh EHLO is needed after TLS. */
	assert_int_equal(feed(s, C, "MAIL FROM:<a>\r\n"), 0);
	ANSWER(s, "503 5.5.1 EHLO first\r\n");
	assert_int_equal(feed(s, C, "AUTH PLAIN AGEAYg==\r\n"), 0);
	ANSWER(s, "503 5.5.1 EHLO first\r\n");
	feed(s, C, "NOOP\r\nEHLO c\r\n");
	feed(s, S, "250 ok\r\n250 mx\r\n");
	feed(s, C, "MAIL FROM:<a>\r\n");
	TO_SERVER(s, "NOOP\r\nEHLO c\r\nMAIL FROM:<a>\r\n");
	ANSWER(s, "");
	sess_free(s);
}

static void
test_smtp_data(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls(s, true);
	feed(s, C, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n");
	TO_SERVER(s, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n");
	const char *body = "MAIL FROM:<x>\r\nSTARTTLS\r\nQUIT\r\n..\r\n";
	assert_int_equal(feed(s, C, body), strlen(body));
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "250 ok\r\n250 ok\r\n");
	assert_int_equal(drive(s, C), strlen(body));
	feed(s, S, "354 go ahead\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, body);
	ANSWER(s, "");
	feed(s, C, "more\r\n.\r\nSTARTTLS\r\n");
	TO_SERVER(s, "more\r\n.\r\n");
	feed(s, S, "250 queued\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "503 5.5.1 TLS already active\r\n");

	/* 554 to DATA: command mode. */
	feed(s, C, "DATA\r\n");
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 10);
	feed(s, S, "554 5.5.1 no valid recipients\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "503 5.5.1 TLS already active\r\n");
	TO_SERVER(s, "DATA\r\n");
	sess_free(s);

	/* Before TLS, optional TLS: a body saying STARTTLS is data. */
	s = smtp(false, true);
	feed(s, C, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n");
	feed(s, S, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(feed(s, C, "STARTTLS\r\n.\r\n"), 0);
	assert_int_equal(s->final, NO_FINAL);
	TO_SERVER(s, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nSTARTTLS\r\n.\r\n");
	feed(s, S, "250 ok\r\n");
	feed(s, C, "DATA\r\nSTARTTLS\r\n");
	feed(s, S, "554 no\r\n");
	assert_int_equal(drive(s, C), 0);
	assert_int_equal(s->final, PV_STARTTLS);
	sess_free(s);
}

/* A refused BDAT whose size parsed ends the session: servers disagree on
 * whether its chunk is read (Postfix reads it as commands after a syntax
 * error), so nothing after it may be judged. */
static void
assert_bdat_closed(const char *chunk_line, const char *why)
{
	struct sess *s = smtp(true, true);
	char want[160];

	smtp_tls_chunking(s);
	feed(s, C, chunk_line);
	snprintf(want, sizeof(want), "421 4.7.0 BDAT refused (%s), closing\r\n", why);
	ANSWER(s, want);
	TO_SERVER(s, "");
	assert_int_equal(s->final, PV_CLOSE);
	sess_free(s);
}

static void
test_smtp_bdat(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls_chunking(s);
	feed(s, C, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\n");
	assert_int_equal(feed(s, C, "BDAT 5\r\nQUIT\r"), 0);
	/* After the chunk: a command again, answered in its turn. */
	assert_int_equal(feed(s, C, "STARTTLS\r\n"), 10);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nBDAT 5\r\nQUIT\r");
	ANSWER(s, "");
	feed(s, S, "250 ok\r\n250 ok\r\n");
	assert_int_equal(drive(s, C), 10);
	feed(s, S, "250 5 octets received\r\n");
	assert_int_equal(drive(s, C), 0);
	ANSWER(s, "503 5.5.1 TLS already active\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	s = smtp(true, true);
	smtp_tls_chunking(s);
	/* A chunk split across reads. */
	feed(s, C, "BDAT 13 LAST\r\nSTART");
	feed(s, C, "TLS\r\nQ");
	feed(s, C, "\r\n");
	TO_SERVER(s, "BDAT 13 LAST\r\nSTARTTLS\r\nQ\r\n");
	ANSWER(s, "");
	sess_free(s);

	/* Refused before TLS: closed, the chunk never taken for commands. */
	s = smtp(true, true);
	feed(s, C, "BDAT 10\r\nSTARTTLS\r\nNOOP\r\n");
	ANSWER(s, "421 4.7.0 BDAT refused (Must issue a STARTTLS command first), closing\r\n");
	TO_SERVER(s, "");
	assert_int_equal(s->final, PV_CLOSE);
	sess_free(s);

	/* ... also when the refusal had to wait for an earlier reply. */
	s = smtp(true, true);
	feed(s, C, "NOOP\r\n");
	assert_int_equal(feed(s, C, "BDAT 10 LAST\r\nSTARTTLS\r\n"), 24);
	feed(s, S, "250 ok\r\n");
	drive(s, C);
	ANSWER(s, "421 4.7.0 BDAT refused (Must issue a STARTTLS command first), closing\r\n");
	TO_SERVER(s, "NOOP\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	sess_free(s);

	/* Anything but "BDAT size [LAST]" is refused: a server that reads
	 * it otherwise would not skip the chunk postern skips, or would skip
	 * one postern relays as commands. Without a size there is no chunk:
	 * refused, and the session goes on. */
	s = smtp(true, true);
	smtp_tls_chunking(s);
	static const char *const bad[] = {"BDAT x\r\n", "BDAT 99999999999\r\n", "BDAT +5\r\n",
	                                  "BDAT\r\n", "BDAT -1\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(feed(s, C, bad[i]), 0);
		ANSWER(s, "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
	}
	feed(s, C, "RSET\r\n");
	TO_SERVER(s, "RSET\r\n");
	sess_free(s);

	/* With a size: closed. */
	static const char *const sized[] = {"BDAT 5abc\r\nRSET\n", "BDAT 5 LAST x\r\nRSET\n",
	                                    "BDAT 5 FIRST\r\nRSET\n"};
	for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++)
		assert_bdat_closed(sized[i], "Syntax: BDAT count [LAST]");
}

static void
test_smtp_auth_posttls(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls(s, true);
	feed(s, C, "AUTH LOGIN\r\n");
	feed(s, S, "334 VXNlcm5hbWU6\r\n");
	feed(s, C, "STARTTLS\r\n"); /* a SASL response */
	feed(s, S, "334 UGFzc3dvcmQ6\r\n");
	feed(s, C, "cGFzcw==\r\n");
	TO_SERVER(s, "AUTH LOGIN\r\nSTARTTLS\r\ncGFzcw==\r\n");
	ANSWER(s, "");
	feed(s, S, "535 5.7.8 failed\r\n");
	TO_CLIENT(s, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8 failed\r\n");
	feed(s, C, "STARTTLS\r\n");
	ANSWER(s, "503 5.5.1 TLS already active\r\n");
	sess_free(s);
}

static void
test_smtp_malformed(void **state)
{
	(void)state;
	char *big = malloc(IN_CAP);
	assert_non_null(big);
	memset(big, 'x', IN_CAP);

	struct sess *s = smtp(true, true);
	assert_int_equal(feed_n(s, C, "NOOP\0\r\n", 7), 0);
	ANSWER(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");
	TO_SERVER(s, "");
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "500 5.5.2 Line too long\r\n");
	TO_SERVER(s, "");
	sess_free(s);

	/* A long body line is not a command line. */
	s = smtp(false, true);
	feed(s, C, "DATA\r\n");
	feed(s, S, "354 go\r\n");
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(s->final, NO_FINAL);
	assert_int_equal(s->fwd[C].n, 6 + IN_CAP);
	str_clear(&s->fwd[C]);
	feed(s, C, "\r\n.\r\n");
	TO_SERVER(s, "\r\n.\r\n");
	sess_free(s);
	free(big);
}

/* P1: channel binding cannot cross postern's TLS: *-PLUS is never shown. */
static void
test_channel_binding_hidden(void **state)
{
	(void)state;
	struct sess *s = imap(false, false);

	feed(s, S, "* OK [CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-256-PLUS] hi\r\n");
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n");
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	feed(s, C, "b CAPABILITY\r\n");
	feed(s, S, "* CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256 AUTH=scram-sha-1-plus\r\nb OK\r\n");
	TO_CLIENT(s, "* CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256\r\nb OK\r\n");

	struct sess *p = pop3(false, true);
	feed(p, C, "STLS\r\n");
	tls_start(p);
	feed(p, C, "CAPA\r\n");
	feed(p, S, "+OK\r\nSASL PLAIN SCRAM-SHA-256-PLUS\r\nSASL SCRAM-SHA-1-PLUS\r\nTOP\r\n.\r\n");
	TO_CLIENT(p, "+OK\r\nSASL PLAIN\r\nTOP\r\n.\r\n");

	struct sess *m = sess_new(&proto_smtp, false);
	feed(m, S, "220 hi\r\n");
	feed(m, C, "EHLO me\r\n");
	feed(m, S, "250-hi\r\n250-AUTH PLAIN SCRAM-SHA-256-PLUS LOGIN\r\n250 8BITMIME\r\n");
	TO_CLIENT(m, "220 hi\r\n250-hi\r\n250-8BITMIME\r\n250 STARTTLS\r\n");
	feed(m, C, "STARTTLS\r\n");
	tls_start(m);
	feed(m, C, "EHLO me\r\n");
	feed(m, S, "250-hi\r\n250-AUTH PLAIN SCRAM-SHA-256-PLUS LOGIN\r\n250 8BITMIME\r\n");
	TO_CLIENT(m, "250-hi\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
}

/* ---- SMTP/POP3 verbs as the laxest server reads them ---- */

/* Postfix splits a command on any white space and skips leading white
 * space: before TLS a verb in any other form than the plainest is refused
 * locally, never relayed for a laxer server to run. */
static void
test_smtp_pretls_odd_white_space_refused(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		bool credential;
	} cmds[] = {
	        {"MAIL\tFROM:<x@example.org>\r\n", true},
	        {" RCPT TO:<y@example.org>\r\n", true},
	        {"DATA\t\r\n", true},
	        {"\tDATA\r\n", true},
	        {"AUTH\tPLAIN AGFsaWNlAHNlY3JldA==\r\n", true},
	        {"BDAT\t0 LAST\r\n", true},
	        /* not on the short list, or not in plain form */
	        {"VRFY postmaster\r\n", false},
	        {"HELP\r\n", false},
	        {"XCLIENT ADDR=6.6.6.6\r\n", false},
	        {"NOOP\t\r\n", false},
	        {" EHLO x\r\n", false},
	        {"EHLO\tx\r\n", false},
	        {"STARTTLS\t\r\n", false},
	        {"NOOP\vMAIL\r\n", false},
	        {"NOOP \x80\r\n", false},
	        {"NOOP\rDATA\r\n", false},
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct sess *s = smtp(true, true);
		assert_int_equal(feed(s, C, cmds[i].line), 0);
		ANSWER(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");
		TO_SERVER(s, "");
		assert_int_equal(s->final, NO_FINAL);
		if (cmds[i].credential)
			assert_string_equal(s->event, "plaintext-auth-refused");
		else
			assert_null(s->event);
		sess_free(s);
	}

	/* The short list, in plain form, passes. */
	struct sess *s = smtp(true, true);
	feed(s, C, "EHLO x\r\nNOOP\r\nRSET\r\nHELO x\r\nquit\r\n");
	TO_SERVER(s, "EHLO x\r\nNOOP\r\nRSET\r\nHELO x\r\nquit\r\n");
	ANSWER(s, "");
	sess_free(s);

	/* require_tls = no: everything may pass, read the same way. */
	s = smtp(false, true);
	feed(s, C, "MAIL\tFROM:<x>\r\n");
	TO_SERVER(s, "MAIL\tFROM:<x>\r\n");
	feed(s, S, "250 ok\r\n");
	feed(s, C, " XCLIENT ADDR=6.6.6.6\r\n");
	ANSWER(s, "550 5.7.1 Not relayed: only the proxy may send this\r\n");
	feed(s, C, "DATA\t\r\n");
	feed(s, S, "354 go\r\n");
	feed(s, C, "STARTTLS\r\n.\r\n"); /* a body: the server said 354 */
	TO_SERVER(s, "DATA\t\r\nSTARTTLS\r\n.\r\n");
	assert_int_equal(s->final, NO_FINAL);
	sess_free(s);
}

/* After TLS the verb is the one Postfix sees: XCLIENT behind a tab or
 * leading space is still XCLIENT; a control byte a server would read as
 * white space (VT, FF, CR) or as the end (NUL) makes the line refused. */
static void
test_smtp_posttls_verb_any_white_space(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls_chunking(s);
	static const char *const fwd[] = {
	        "XCLIENT\tADDR=6.6.6.6 LOGIN=victim\r\n",
	        " XCLIENT ADDR=6.6.6.6\r\n",
	        "\txforward\tADDR=6.6.6.6\r\n",
	};
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++) {
		assert_int_equal(feed(s, C, fwd[i]), 0);
		ANSWER(s, "550 5.7.1 Not relayed: only the proxy may send this\r\n");
	}
	static const char ctl[][32] = {"XCLIENT\vADDR=6.6.6.6\r\n", "XCLIENT\fADDR=6.6.6.6\r\n",
	                               "DATA\r\r\n", "RSET\rDATA\r\n", "BDAT\v10\r\n"};
	for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
		assert_int_equal(feed(s, C, ctl[i]), 0);
		ANSWER(s, "500 5.5.2 Invalid character in command\r\n");
	}
	assert_int_equal(feed_n(s, C, "DATA\0\r\n", 7), 0);
	ANSWER(s, "500 5.5.2 Invalid character in command\r\n");
	assert_int_equal(feed(s, C, " STARTTLS\r\n"), 0);
	ANSWER(s, "503 5.5.1 TLS already active\r\n");
	TO_SERVER(s, "");

	/* DATA with a tab is DATA: its 354 starts a body. */
	feed(s, C, "MAIL FROM:<a>\r\nRCPT\tTO:<b>\r\n DATA\t\r\n");
	assert_int_equal(feed(s, C, "XCLIENT ADDR=1.2.3.4\r\n.\r\n"), 25);
	feed(s, S, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "MAIL FROM:<a>\r\nRCPT\tTO:<b>\r\n DATA\t\r\nXCLIENT ADDR=1.2.3.4\r\n.\r\n");
	ANSWER(s, "");

	/* AUTH with a tab is AUTH: its lines are SASL responses. */
	feed(s, S, "250 queued\r\n");
	feed(s, C, "AUTH\tLOGIN\r\n");
	feed(s, S, "334 VXNlcm5hbWU6\r\n");
	feed(s, C, "STARTTLS\r\n");
	TO_SERVER(s, "AUTH\tLOGIN\r\nSTARTTLS\r\n");
	ANSWER(s, "");
	sess_free(s);
}

/* BDAT to a server that did not offer CHUNKING: the server would answer
 * 500 and run the chunk as commands. postern refuses it and ends the
 * session, whatever the chunk says. */
#define NO_CHUNKING_CLOSE                                                                          \
	"421 4.7.0 BDAT refused (BDAT not available: the server did not offer CHUNKING), "         \
	"closing\r\n"

static void
test_smtp_bdat_refused_without_chunking(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);
	static const char chunk[] = "XCLIENT ADDR=6.6.6.6\r\nQUIT\r\n"; /* 28 bytes */

	smtp_tls(s, true); /* EHLO_REPLY has no CHUNKING */
	feed(s, C, "MAIL FROM:<a>\r\n");
	feed(s, S, "250 ok\r\n");
	feed(s, C, "BDAT 28 LAST\r\n");
	feed(s, C, chunk);
	ANSWER(s, NO_CHUNKING_CLOSE);
	TO_SERVER(s, "MAIL FROM:<a>\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	sess_free(s);

	s = smtp(true, true);
	smtp_tls(s, true);
	str_clear(&s->fwd[C]);

	/* A new EHLO says again what is offered: CHUNKING now, then not
	 * after HELO. */
	feed(s, C, "EHLO c\r\n");
	feed(s, S, "250-mx\r\n250 CHUNKING\r\n");
	feed(s, C, "BDAT 4\r\nRSET");
	TO_SERVER(s, "EHLO c\r\nBDAT 4\r\nRSET");
	feed(s, S, "250 ok\r\n");
	feed(s, C, "HELO c\r\n");
	feed(s, S, "250 mx\r\n");
	feed(s, C, "BDAT 6\r\nRSET\r\n");
	ANSWER(s, NO_CHUNKING_CLOSE);
	assert_int_equal(s->final, PV_CLOSE);
	TO_SERVER(s, "HELO c\r\n");

	/* STARTTLS forgets it (RFC 3207 4.2). */
	sess_free(s);
	s = smtp(true, true);
	feed(s, C, "EHLO c\r\n");
	feed(s, S, "250-mx\r\n250 CHUNKING\r\n");
	TO_SERVER(s, "EHLO c\r\n");
	str_clear(&s->fwd[S]);
	smtp_tls(s, true);
	feed(s, C, "BDAT 6\r\nRSET\r\n");
	ANSWER(s, NO_CHUNKING_CLOSE);
	assert_int_equal(s->final, PV_CLOSE);
	TO_SERVER(s, "");
	sess_free(s);
}

/* After TLS a command line too long to judge is refused, not relayed in
 * pieces; a body line of that length is data. */
static void
test_smtp_long_command_posttls_refused(void **state)
{
	(void)state;
	char *big = malloc(IN_CAP);
	assert_non_null(big);
	memcpy(big, "XCLIENT ADDR=6.6.6.6 ", 21);
	memset(big + 21, 'x', IN_CAP - 21);

	struct sess *s = smtp(true, true);
	smtp_tls(s, true);
	assert_int_equal(feed_n(s, C, big, IN_CAP), 0);
	assert_int_equal(feed_n(s, C, big, 1000), 0);
	TO_SERVER(s, "");
	ANSWER(s, "");
	assert_int_equal(feed(s, C, "x\r\nNOOP\r\n"), 0);
	ANSWER(s, "500 5.5.2 Line too long\r\n");
	TO_SERVER(s, "NOOP\r\n");
	assert_int_equal(s->final, NO_FINAL);
	sess_free(s);
	free(big);
}

/* POP3: the same rules for USER, PASS, APOP, AUTH and STLS. */
static void
test_pop3_odd_white_space(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		bool credential;
	} pre[] = {
	        {"USER\talice\r\n", true},
	        {" USER alice\r\n", true},
	        {"PASS\tsecret\r\n", true},
	        {"APOP\talice 0123\r\n", true},
	        {"AUTH\tPLAIN AGEAYg==\r\n", true},
	        {"NOOP\r\n", false},
	        {"STAT\r\n", false},
	        {"STLS\t\r\n", false},
	        {" CAPA\r\n", false},
	        {"CAPA\rUSER x\r\n", false},
	        {"CAPA \xc3\xa9\r\n", false},
	};

	for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++) {
		struct sess *s = pop3(true, true);
		assert_int_equal(feed(s, C, pre[i].line), 0);
		ANSWER(s, "-ERR Use STLS first (plaintext authentication is disabled)\r\n");
		TO_SERVER(s, "");
		if (pre[i].credential)
			assert_string_equal(s->event, "plaintext-auth-refused");
		else
			assert_null(s->event);
		sess_free(s);
	}

	struct sess *s = pop3(true, true);
	feed(s, C, "CAPA\r\n");
	feed(s, S, CAPA_BODY);
	feed(s, C, "QUIT\r\n");
	TO_SERVER(s, "CAPA\r\nQUIT\r\n");
	sess_free(s);

	/* After TLS: the verb behind any white space. */
	s = pop3(true, true);
	pop3_stls(s);
	feed(s, C, "XCLIENT\tADDR=6.6.6.6\r\n");
	feed(s, C, " XCLIENT ADDR=6.6.6.6\r\n");
	ANSWER(s, "-ERR Not relayed: only the proxy may send this\r\n"
	          "-ERR Not relayed: only the proxy may send this\r\n");
	feed(s, C, "\tSTLS\r\n");
	ANSWER(s, "-ERR TLS is already active\r\n");
	feed(s, C, "XCLIENT\vADDR=6.6.6.6\r\n");
	ANSWER(s, "-ERR Invalid character in command\r\n");
	TO_SERVER(s, "");
	/* AUTH with a tab starts a SASL exchange; LIST with a tab and no
	 * argument is multi-line. */
	feed(s, C, "AUTH\tPLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "STLS\r\n");
	feed(s, S, "+OK in\r\n");
	feed(s, C, "LIST\t\r\n");
	feed(s, S, "+OK\r\n-ERR fake\r\n.\r\n");
	TO_SERVER(s, "AUTH\tPLAIN\r\nSTLS\r\nLIST\t\r\n");
	TO_CLIENT(s, "+ \r\n+OK in\r\n+OK\r\n-ERR fake\r\n.\r\n");
	ANSWER(s, "");
	sess_free(s);
}

/* Client role: the greeting the legacy client gets is postern's own, not
 * the plaintext greeting a man in the middle could have written (its APOP
 * challenge or an [ALERT] text). */
static void
test_pop3_upstream_greeting_not_from_plaintext(void **state)
{
	(void)state;
	char up[64], scratch[PROTO_SCRATCH_ALLOC];
	struct proto_action act = {0};
	static const char *const steps[] = {
	        "+OK <[ALERT]re-enter-password-at-evil.example> ready\r\n",
	        "+OK\r\n",
	        "STLS\r\n",
	        ".\r\n",
	        "+OK begin TLS\r\n",
	};

	assert_true(proto_pop3.up_state_size <= sizeof(up));
	proto_pop3.up_start(up, "helo", &act, scratch);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		memset(&act, 0, sizeof(act));
		enum proto_up r =
		        proto_pop3.upstream(up, steps[i], strlen(steps[i]), false, &act, scratch);
		assert_int_equal(r,
		                 i + 1 < sizeof(steps) / sizeof(steps[0]) ? PU_UP_SEND : PU_UP_TLS);
	}
	proto_pop3.up_tls_done(up, &act, scratch);
	static const char *const tls[] = {"+OK\r\n", "STLS\r\n", ".\r\n"};
	enum proto_up r = PU_UP_MORE;
	for (size_t i = 0; i < 3; i++) {
		memset(&act, 0, sizeof(act));
		r = proto_pop3.upstream(up, tls[i], strlen(tls[i]), false, &act, scratch);
	}
	assert_int_equal(r, PU_UP_DONE);
	assert_int_equal(act.len, strlen("+OK ready\r\n"));
	assert_memory_equal(act.text, "+OK ready\r\n", act.len);
}

/* ---- command log: what each adapter says of what it judged ---- */

/* The secrets of these tests all start with "Zs": none may be logged. */
static void
assert_no_secret(struct sess *s)
{
	if (s->log.p && strstr(s->log.p, "Zs"))
		fail_msg("secret in the log:\n%s", s->log.p);
}

static void
test_imap_log_redaction(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(false, true);
	observe_next = false;

	LOGGED(s, "dS: * OK ready\n");
	feed(s, C, "a1 LOGIN alice Zsecret1\r\n");
	feed(s, C, "a2 LOGIN \"al \\\"ice\" \"Zsecret 2\"\r\n");
	feed(s, C, "a3 LOGIN {5+}\r\nalice {8+}\r\nZsecret3\r\n");
	/* Three arguments: refused, all but the user hidden. */
	feed(s, C, "a4 login alice Zsecret4 Zs5\r\n");
	ANSWER(s, "a4 BAD Invalid LOGIN arguments\r\n");
	feed(s, S, "a1 NO no\r\na2 NO no\r\na3 NO no\r\n");
	feed(s, C, "a5 AUTHENTICATE PLAIN AHNlY3JldA==\r\n");
	assert_no_secret(s);
	LOGGED(s, "C: a1 LOGIN alice ***\n"
	          "C: a2 LOGIN \"al \\\"ice\" ***\n"
	          "C: a3 LOGIN {5 bytes} ***\n"
	          "C: a4 login alice *** ***\n"
	          "S: a1 NO no\n"
	          "S: a2 NO no\n"
	          "S: a3 NO no\n"
	          "C: a5 AUTHENTICATE PLAIN ***\n");
	feed(s, S, "a5 OK done\r\n");
	feed(s, C, "a6 AUTHENTICATE PLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "AHpzZWNyZXQ2\r\n");
	feed(s, S, "a6 NO bad\r\n");
	feed(s, C, "a7 AUTHENTICATE LOGIN\r\n");
	feed(s, S, "+ VXNlcm5hbWU6\r\n");
	feed(s, C, "*\r\n");
	feed(s, S, "a7 BAD cancelled\r\n");
	LOGGED(s, "S: a5 OK done\n"
	          "C: a6 AUTHENTICATE PLAIN\n"
	          "dS: + \n"
	          "C: ***\n"
	          "S: a6 NO bad\n"
	          "C: a7 AUTHENTICATE LOGIN\n"
	          "dS: + VXNlcm5hbWU6\n"
	          "C: *\n"
	          "S: a7 BAD cancelled\n");
	/* A synchronising literal password, sent after the server's "+". */
	feed(s, C, "a8 LOGIN alice {8}\r\n");
	feed(s, S, "+ OK\r\n");
	feed(s, C, "Zsecret8\r\n");
	/* A literal's contents are never a command, nor logged. */
	feed(s, C, "a9 APPEND INBOX {21+}\r\nb1 LOGIN x Zsecret9\r\n\r\n");
	feed(s, S, "* 1 FETCH (BODY[] {5}\r\nZs123)\r\nb2 OK\r\n");
	assert_no_secret(s);
	LOGGED(s, "dS: + OK\n"
	          "C: a8 LOGIN alice ***\n"
	          "C: a9 APPEND INBOX {21 bytes}\n"
	          "dS: * 1 FETCH (BODY[] {5 bytes})\n"
	          "S: b2 OK\n");
	/* A tab could make a server see a verb the log does not. */
	feed(s, C, "c1\tLOGIN alice Zsecret10\r\n");
	assert_no_secret(s);
	sess_free(s);
}

static void
test_imap_observe_rules(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(false, false);
	observe_next = false;

	/* COMPRESS would blind the log: hidden, and refused by postern. */
	feed(s, S, "* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] hi\r\n");
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 IDLE STARTTLS] hi\r\n");
	feed(s, C, "a COMPRESS DEFLATE\r\n");
	ANSWER(s, "a NO COMPRESS is off while commands are logged\r\n");
	TO_SERVER(s, "");
	/* P6: forwarding fields are never relayed from a client. */
	feed(s, C, "b ID (\"name\" \"x\" \"X-Originating-IP\" \"192.0.2.1\")\r\n");
	TO_SERVER(s, "b ID (\"name\" \"x\" \"y-Originating-IP\" \"192.0.2.1\")\r\n");
	/* In literals too, split over reads: a key never slips through. */
	feed(s, C, "c ID ({16+}\r\nx-orig");
	feed(s, C, "inating-ip \"1.2.3.4\" \"x-session-id\" {3+}\r\nabc)\r\n");
	TO_SERVER(s,
	          "c ID ({16+}\r\ny-originating-ip \"1.2.3.4\" \"y-session-id\" {3+}\r\nabc)\r\n");
	/* RFC 2971: strings of at most 1024 bytes, so each is judged whole. */
	feed(s, C, "e1 ID ({2000}\r\n");
	ANSWER(s, "e1 BAD ID string too long\r\n");

	feed(s, C, "d ID (\"name\" \"thunderbird\")\r\n");
	TO_SERVER(s, "d ID (\"name\" \"thunderbird\")\r\n");
	feed(s, C, "e ID (\"name\" \"thunderbird\"\r\n");
	ANSWER(s, "e BAD Syntax error: Missing ')'\r\n");
	sess_free(s);
}

/* ---- issue 11: framing and the allowlist before TLS ---- */

/* Finding 1: a "{N}" that does not start an argument is no literal; the
 * bytes after it are commands, judged (and here refused) by postern. */
static void
test_imap_brace_after_non_argument_is_no_literal(void **state)
{
	(void)state;
	static const char *const heads[] = {"a NOOP x",      "a NOOP \"x",     "a NOOP (x",
	                                    "a ID (\"a\" x", "a CAPABILITY x", "a XYZZY x"};
	static const char hidden[] = "b LOGIN attacker attackerpw\r\n";
	char line[128];

	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		for (int req = 0; req < 2; req++) {
			struct sess *s = imap(req, true);
			snprintf(line, sizeof(line), "%s{%zu+}\r\n%s", heads[i], strlen(hidden),
			         hidden);
			assert_int_equal(feed(s, C, line), 0);
			/* Nothing of the "a" line is forwarded; "b" is a command, as
			 * it is for Dovecot: refused before TLS, or passed whole. */
			if (s->fwd[C].n != (req ? 0 : strlen(hidden)) ||
			    (!req && strcmp(s->fwd[C].p, hidden) != 0))
				fail_msg("\"%s\" (require_tls=%d) forwarded \"%s\"", heads[i], req,
				         s->fwd[C].p);
			assert_true(strncmp(s->ans.p, "a BAD ", 6) == 0);
			if (req)
				assert_non_null(strstr(s->ans.p, "b NO [PRIVACYREQUIRED]"));
			sess_free(s);
		}
	}

	/* After TLS, the hidden command reaches the backend as a command, and
	 * one postern acts on is judged: the same framing as Dovecot's. */
	struct sess *s = imap(true, true);
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	feed(s, C, "a NOOP x{20+}\r\nb COMPRESS DEFLATE\r\n");
	ANSWER(s, "a BAD Syntax error: Invalid characters in atom\r\n");
	TO_SERVER(s, "b COMPRESS DEFLATE\r\n");
	/* Not parsing and not ending in '}': the backend answers it. */
	feed(s, C, "c SEARCH \"x\r\n");
	TO_SERVER(s, "c SEARCH \"x\r\n");
	/* A malformed continuation that could hide a literal ends the session. */
	feed(s, C, "d APPEND INBOX {3+}\r\nabc x{5+}\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Invalid command syntax\r\n");
	sess_free(s);
}

/* Before TLS with require_tls: the short allowlist, fully parsed. */
static void
test_imap_pretls_allowlist(void **state)
{
	(void)state;
	static const char *const ok[] = {"a CAPABILITY\r\n",
	                                 "a NOOP\r\n",
	                                 "a LOGOUT\r\n",
	                                 "a ID NIL\r\n",
	                                 "a ID (\"name\" \"x\" \"os\" NIL)\r\n",
	                                 "a noop   \r\n"};
	static const char *const refused[][2] = {
	        {"a SELECT INBOX\r\n", "a BAD Command not permitted before STARTTLS\r\n"},
	        {"a NOOP x\r\n", "a BAD NOOP takes no arguments\r\n"},
	        {"a LOGIN\tu p\r\n", "a BAD Syntax error: Invalid command name\r\n"},
	        {"a  LOGIN u p\r\n", "a BAD Syntax error: Invalid command name\r\n"},
	        {"a LOGIN u  p\r\n", "a BAD Syntax error: White space other than one SP\r\n"},
	        {" a LOGIN u p\r\n", "* BAD Invalid tag\r\n"},
	        {"a ID (\"x\" \"caf\xc3\xa9\")\r\n",
	         "a BAD 8-bit data is not permitted before STARTTLS\r\n"},
	        {"a ID (\"x-originating-ip\" \"1.2.3.4\")\r\n",
	         "a BAD ID forwarding fields are not permitted\r\n"},
	        {"a ID (\"X-Forward-For\" \"1.2.3.4\")\r\n",
	         "a BAD ID forwarding fields are not permitted\r\n"},
	        {"a ID (\"x-originat\\ing-ip\" \"1.2.3.4\")\r\n",
	         "a BAD Syntax error: Invalid escape in quoted string\r\n"},
	        {"a ID (\"name\")\r\n", "a BAD Invalid ID arguments\r\n"},
	        {"a ID ({4}\r\n", "a BAD Literals are not permitted before STARTTLS\r\n"},
	        {"a STARTTLS\t\r\n", "a BAD STARTTLS takes no arguments\r\n"},
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct sess *s = imap(true, true);
		feed(s, C, ok[i]);
		TO_SERVER(s, ok[i]);
		ANSWER(s, "");
		sess_free(s);
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct sess *s = imap(true, true);
		feed(s, C, refused[i][0]);
		TO_SERVER(s, "");
		ANSWER(s, refused[i][1]);
		assert_int_equal(s->final, NO_FINAL);
		sess_free(s);
	}

	/* require_tls = no: anything that parses passes, literals included;
	 * what does not parse is refused. */
	struct sess *s = imap(false, true);
	feed(s, C, "a SELECT INBOX\r\nb APPEND INBOX {3+}\r\nabc\r\n");
	TO_SERVER(s, "a SELECT INBOX\r\nb APPEND INBOX {3+}\r\nabc\r\n");
	feed(s, C, "c LOGIN\tu p\r\n");
	TO_SERVER(s, "");
	ANSWER(s, "c BAD Syntax error: Invalid command name\r\n");
	sess_free(s);
}

/* Finding 4: keys compared after unescaping; after TLS, defaced keys and
 * refused what cannot be judged. */
static void
test_imap_id_keys_after_tls(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	feed(s, C, "b ID (\"x-originat\\ing-ip\" \"6.6.6.6\")\r\n");
	ANSWER(s, "b BAD Syntax error: Invalid escape in quoted string\r\n");
	feed(s, C, "c ID (\"name\" \"a\\\"b\" \"X-Proxy-TTL\" \"5\")\r\n");
	TO_SERVER(s, "c ID (\"name\" \"a\\\"b\" \"y-Proxy-TTL\" \"5\")\r\n");
	feed(s, C, "d ID (\"name\"  \"x\")\r\n");
	ANSWER(s, "d BAD Syntax error: White space other than one SP\r\n");
	feed(s, C, "e ID (\"a\" {3+}\r\nx-s \"x-session-id\" \"1\")\r\n");
	TO_SERVER(s, "e ID (\"a\" {3+}\r\nx-s \"y-session-id\" \"1\")\r\n");
	NOTHING(s);
	sess_free(s);
}

/* Finding 5a: an AUTHENTICATE waits for the commands before it, so the
 * completion that ends its exchange can only be its own. */
static void
test_imap_authenticate_same_tag_pipelined(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(false, true);
	observe_next = false;

	feed(s, C, "A1 NOOP\r\nA1 AUTHENTICATE PLAIN\r\n");
	TO_SERVER(s, "A1 NOOP\r\n");
	feed(s, S, "A1 OK NOOP completed\r\n");
	drive(s, C);
	TO_SERVER(s, "A1 AUTHENTICATE PLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "AHpzZWNyZXQ=\r\n");
	feed(s, S, "A1 OK Logged in\r\n");
	feed(s, C, "A2 NOOP\r\n");
	LOGGED(s, "dS: * OK ready\n"
	          "C: A1 NOOP\n"
	          "S: A1 OK NOOP completed\n"
	          "C: A1 AUTHENTICATE PLAIN\n"
	          "dS: + \n"
	          "C: ***\n"
	          "S: A1 OK Logged in\n"
	          "C: A2 NOOP\n");
	SECRETS(s, "AHpzZWNyZXQ=\n");
	sess_free(s);
}

/* Finding 5b, 8: mechanisms are logged only when they are names; a long
 * tag never leaves later commands hidden; every hidden secret is
 * recorded for the session to mask its echoes. */
static void
test_imap_log_secrets_recorded(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(false, true);
	observe_next = false;
	char line[200];

	feed(s, C, "c1 AUTHENTICATE PLAIN\tAHpzZWNyZXQ=\r\n");
	ANSWER(s, "c1 BAD Syntax error: Invalid characters in atom\r\n");
	feed(s, C, "c2 AUTHENTICATE PLAIN AHpzZWNyZXQ=\r\n");
	feed(s, S, "c2 NO no\r\n");
	feed(s, C, "c3 LOGIN alice \"Zs pw\\\"1\"\r\n");
	feed(s, S, "c3 NO no\r\n");
	feed(s, C, "c4 LOGIN alice {4+}\r\nZsp2\r\n");
	feed(s, S, "c4 NO no\r\n");
	memset(line, 't', 70);
	snprintf(line + 70, sizeof(line) - 70, " AUTHENTICATE PLAIN\r\n");
	feed(s, C, line);
	TO_SERVER(s, "c2 AUTHENTICATE PLAIN AHpzZWNyZXQ=\r\n"
	             "c3 LOGIN alice \"Zs pw\\\"1\"\r\nc4 LOGIN alice {4+}\r\nZsp2\r\n");
	assert_true(s->ans.n > 70 && strstr(s->ans.p, " BAD Tag too long\r\n"));
	str_clear(&s->ans);
	feed(s, C, "c5 NOOP\r\n");
	TO_SERVER(s, "c5 NOOP\r\n");
	assert_no_secret(s);
	assert_non_null(strstr(s->log.p, "C: c1 AUTHENTICATE ***\n"));
	assert_non_null(strstr(s->log.p, "C: c2 AUTHENTICATE PLAIN ***\n"));
	assert_non_null(strstr(s->log.p, "C: c3 LOGIN alice ***\n"));
	assert_non_null(strstr(s->log.p, "C: c4 LOGIN alice ***\n"));
	assert_non_null(strstr(s->log.p, "C: c5 NOOP\n"));
	SECRETS(s, "AHpzZWNyZXQ=\nZs pw\\\"1\nZsp2\n");
	sess_free(s);
}

/* Finding 7: a server line over 64 KiB that ends in a literal: the
 * literal is followed, whatever its contents look like. */
static void
test_imap_long_server_line_literal(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(true, true);
	observe_next = false;
	static const char body[] = "* CAPABILITY STARTTLS Zsbody\r\n";
	char tail[64];

	str_add(&tmp, "* 1 FETCH (BODYSTRUCTURE (", 26);
	while (tmp.n < 70000)
		str_add(&tmp, "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1) ", 40);
	snprintf(tail, sizeof(tail), ") BODY[] {%zu}\r\n", strlen(body));
	str_add(&tmp, tail, strlen(tail));
	str_add(&tmp, body, strlen(body));
	str_add(&tmp, ")\r\n", 3);
	assert_int_equal(feed_stream(s, S, tmp.p, tmp.n), 0);
	assert_int_equal(s->fwd[S].n, tmp.n);
	assert_memory_equal(s->fwd[S].p, tmp.p, tmp.n);
	str_clear(&s->fwd[S]);
	assert_no_secret(s);
	assert_non_null(strstr(s->log.p, "dS: * 1 ... {line too long: "));
	/* The next response is one again. */
	feed(s, S, "* CAPABILITY AUTH=PLAIN\r\n");
	TO_CLIENT(s, "* CAPABILITY STARTTLS LOGINDISABLED\r\n");

	/* The same for a client line after TLS, split anywhere. */
	s = imap(true, true);
	feed(s, C, "a STARTTLS\r\n");
	tls_start(s);
	str_clear(&tmp);
	str_add(&tmp, "b APPEND INBOX (", 16);
	while (tmp.n < 70000)
		str_add(&tmp, "\\Seen ", 6);
	str_add(&tmp, "\\Seen) {18+}\r\nc STARTTLS\r\nd STA\r\n", 33);
	assert_int_equal(feed_stream(s, C, tmp.p, tmp.n), 0);
	assert_int_equal(s->fwd[C].n, tmp.n);
	str_clear(&s->fwd[C]);
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	feed(s, C, "e STARTTLS\r\n");
	ANSWER(s, "e BAD TLS is already active\r\n");
}

static void
test_pop3_log_redaction(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = pop3(false, true);
	observe_next = false;

	LOGGED(s, "S: +OK POP3 ready\n");
	feed(s, C, "USER alice\r\nPASS Zsecret 1\r\nAPOP alice Zs0123456789abcdef\r\n");
	feed(s, S, "+OK\r\n-ERR no\r\n-ERR no\r\n");
	feed(s, C, "AUTH PLAIN AHNlY3JldA==\r\n");
	feed(s, S, "-ERR no\r\n");
	feed(s, C, "AUTH PLAIN\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "AHpzZWNyZXQ2\r\n");
	feed(s, S, "+OK in\r\n");
	feed(s, C, "RETR 1\r\n");
	feed(s, S, "+OK 12 octets\r\nZsbody\r\n..x\r\n.\r\n");
	feed(s, C, "XCLIENT ADDR=192.0.2.1\r\n");
	ANSWER(s, "-ERR Not relayed: only the proxy may send this\r\n");
	assert_no_secret(s);
	LOGGED(s, "C: USER alice\nC: PASS ***\nC: APOP alice ***\n"
	          "S: +OK\nS: -ERR no\nS: -ERR no\n"
	          "C: AUTH PLAIN ***\nS: -ERR no\n"
	          "C: AUTH PLAIN\ndS: + \nC: ***\nS: +OK in\n"
	          "C: RETR 1\nS: +OK 12 octets {13 bytes}\n"
	          "C: XCLIENT ADDR=192.0.2.1\n"); /* the session logs its own answers */
	sess_free(s);
}

static void
test_smtp_log_redaction(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = sess_new(&proto_smtp, false);
	observe_next = false;

	feed(s, S, "220 hi\r\n");
	feed(s, C, "EHLO me\r\n");
	feed(s, S, "250-hi\r\n250-XCLIENT ADDR NAME\r\n250 AUTH PLAIN LOGIN\r\n");
	TO_CLIENT(s, "220 hi\r\n250-hi\r\n250 STARTTLS\r\n");
	feed(s, C, "AUTH PLAIN AHNlY3JldA==\r\n");
	feed(s, S, "535 no\r\n");
	feed(s, C, "AUTH LOGIN\r\n");
	feed(s, S, "334 VXNlcm5hbWU6\r\n");
	feed(s, C, "Zs-user\r\n");
	feed(s, S, "334 UGFzc3dvcmQ6\r\n");
	feed(s, C, "Zs-pass\r\n");
	feed(s, S, "235 ok\r\n");
	feed(s, C, "AUTH XOAUTH2 Zs-token\r\n");
	feed(s, S, "334 eyJ9\r\n");
	feed(s, C, "*\r\n");
	feed(s, S, "501 cancelled\r\n");
	feed(s, C, "XCLIENT ADDR=192.0.2.1\r\n");
	ANSWER(s, "550 5.7.1 Not relayed: only the proxy may send this\r\n");
	feed(s, C, "DATA\r\n");
	feed(s, S, "354 go\r\n");
	feed(s, C, "Subject: Zs\r\n\r\nAUTH PLAIN Zs\r\n.\r\n");
	feed(s, S, "250 queued\r\n");
	assert_no_secret(s);
	LOGGED(s, "S: 220 hi\nC: EHLO me\ndS: 250-hi\ndS: 250-XCLIENT ADDR NAME\nS: 250 AUTH PLAIN "
	          "LOGIN\n"
	          "C: AUTH PLAIN ***\nS: 535 no\n"
	          "C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: ***\nS: 334 UGFzc3dvcmQ6\nC: ***\nS: 235 "
	          "ok\n"
	          "C: AUTH XOAUTH2 ***\nS: 334 eyJ9\nC: *\nS: 501 cancelled\n"
	          "C: XCLIENT ADDR=192.0.2.1\n"
	          "C: DATA\nS: 354 go\nC: {30 bytes}\nS: 250 queued\n");
	sess_free(s);
}

/* Before TLS a malformed line is refused and never shown: behind a tab
 * its words are not the ones postern parsed, and may be a SASL response. */
static void
test_smtp_pop3_log_hides_malformed_pretls(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = smtp(true, true);
	struct sess *p = pop3(true, true);
	observe_next = false;

	feed(s, C,
	     "AUTH PLAIN\tZsZWNyZXQ=\r\nAUTH\tPLAIN ZsZWNyZXQ=\r\n AUTH PLAIN ZsZWNyZXQ=\r\n");
	ANSWER(s, "530 5.7.0 Must issue a STARTTLS command first\r\n"
	          "530 5.7.0 Must issue a STARTTLS command first\r\n"
	          "530 5.7.0 Must issue a STARTTLS command first\r\n");
	assert_no_secret(s);
	LOGGED(s, "S: 220 mx.example.org ESMTP\nC: (malformed command)\nC: (malformed command)\n"
	          "C: (malformed command)\n");
	feed(p, C, "PASS\tZsecret\r\nAUTH PLAIN\tZsZWNyZXQ=\r\n");
	assert_no_secret(p);
	LOGGED(p, "S: +OK POP3 ready\nC: (malformed command)\nC: (malformed command)\n");
}

/* After a SASL line the client's next line is a response only if the
 * server challenges; after a final reply it is a command. A line pipelined
 * behind an initial response waits for the server, then is judged as the
 * command the server will run (XCLIENT refused, not passed as SASL). */
static void
test_sasl_ir_then_pipelined_command_waits_for_reply(void **state)
{
	(void)state;
	struct sess *m = smtp(true, true);
	struct sess *p = pop3(true, true);
	struct sess *i = imap(true, true);

	smtp_tls(m, true);
	assert_int_equal(
	        feed(m, C, "AUTH PLAIN AGZvbwBiYXI=\r\nXCLIENT ADDR=6.6.6.6 LOGIN=victim\r\n"), 35);
	assert_int_equal(m->stop[C], PV_WAIT);
	TO_SERVER(m, "AUTH PLAIN AGZvbwBiYXI=\r\n");
	feed(m, S, "235 2.7.0 Authentication successful\r\n");
	assert_int_equal(drive(m, C), 0);
	TO_SERVER(m, "");
	ANSWER(m, "550 5.7.1 Not relayed: only the proxy may send this\r\n");
	/* A challenge makes the next line a response, and it waits again. */
	feed(m, C, "AUTH LOGIN\r\nZm9v\r\nYmFy\r\n");
	TO_SERVER(m, "AUTH LOGIN\r\n");
	feed(m, S, "334 VXNlcm5hbWU6\r\n");
	assert_int_equal(drive(m, C), 6);
	TO_SERVER(m, "Zm9v\r\n");
	feed(m, S, "334 UGFzc3dvcmQ6\r\n");
	assert_int_equal(drive(m, C), 0);
	TO_SERVER(m, "YmFy\r\n");

	pop3_stls(p);
	assert_int_equal(feed(p, C, "AUTH PLAIN AGZvbwBiYXI=\r\nXCLIENT ADDR=6.6.6.6\r\n"), 22);
	TO_SERVER(p, "AUTH PLAIN AGZvbwBiYXI=\r\n");
	feed(p, S, "+OK Logged in\r\n");
	assert_int_equal(drive(p, C), 0);
	TO_SERVER(p, "");
	ANSWER(p, "-ERR Not relayed: only the proxy may send this\r\n");

	feed(i, C, "a STARTTLS\r\n");
	ANSWER(i, "a OK Begin TLS negotiation now\r\n");
	tls_start(i);
	assert_int_equal(feed(i, C,
	                      "a AUTHENTICATE PLAIN AGZvbwBiYXI=\r\n"
	                      "b ID (\"x-originating-ip\" \"6.6.6.6\")\r\n"),
	                 37);
	TO_SERVER(i, "a AUTHENTICATE PLAIN AGZvbwBiYXI=\r\n");
	feed(i, S, "a OK Logged in\r\n");
	assert_int_equal(drive(i, C), 0);
	TO_SERVER(i, "b ID (\"y-originating-ip\" \"6.6.6.6\")\r\n");
	feed(i, S, "b OK ID completed\r\n");
	/* "+" makes it a response. */
	feed(i, C, "c AUTHENTICATE PLAIN\r\nAGZvbwBiYXI=\r\n");
	TO_SERVER(i, "c AUTHENTICATE PLAIN\r\n");
	feed(i, S, "+ \r\n");
	assert_int_equal(drive(i, C), 0);
	TO_SERVER(i, "AGZvbwBiYXI=\r\n");
}

/* An IMAP session inside TLS, greeted. */
static struct sess *
imap_in_tls(void)
{
	struct sess *s = imap(true, true);

	feed(s, C, "a STARTTLS\r\n");
	ANSWER(s, "a OK Begin TLS negotiation now\r\n");
	tls_start(s);
	return s;
}

/* The server's "+" or tagged refusal for a synchronising literal is known
 * by its tag: while an earlier command with the same tag is in flight,
 * its completion ("b OK") must not cancel the literal, so the command
 * waits for it. */
static void
test_imap_sync_literal_waits_for_earlier_same_tag(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	feed(s, C, "b NOOP\r\n");
	TO_SERVER(s, "b NOOP\r\n");
	assert_int_equal(feed(s, C, "b APPEND INBOX {5}\r\n12345\r\nc NOOP\r\n"), 35);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "");
	feed(s, S, "b OK NOOP completed\r\n");
	assert_int_equal(drive(s, C), 15);
	TO_SERVER(s, "b APPEND INBOX {5}\r\n");
	feed(s, S, "+ OK\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "12345\r\nc NOOP\r\n");
	TO_CLIENT(s, "b OK NOOP completed\r\n+ OK\r\n");
	NOTHING(s);
}

/* The same on a line too long to hold: its end may bring the literal, so
 * its head waits for the earlier command with its tag to complete. */
static void
test_imap_long_line_sync_literal_waits_for_earlier_same_tag(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	feed(s, C, "b NOOP\r\n");
	TO_SERVER(s, "b NOOP\r\n");
	str_add(&tmp, "b APPEND INBOX ", 15);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, " {5}\r\n", 6);
	size_t left = feed_stream(s, C, tmp.p, tmp.n);
	assert_true(left > 0);
	assert_int_equal(s->stop[C], PV_WAIT);
	TO_SERVER(s, "");
	feed(s, S, "b OK NOOP completed\r\n");
	drive(s, C);
	assert_int_equal(feed_stream(s, C, tmp.p + tmp.n - left, left), 0);
	assert_int_equal(s->fwd[C].n, tmp.n);
	assert_memory_equal(s->fwd[C].p, tmp.p, tmp.n);
	str_clear(&s->fwd[C]);
	/* The NOOP's completion did not cancel the literal: its bytes wait
	 * for the "+" and then pass as data. */
	assert_int_equal(feed(s, C, "12345\r\n"), 7);
	TO_SERVER(s, "");
	feed(s, S, "+ OK\r\n");
	assert_int_equal(drive(s, C), 0);
	TO_SERVER(s, "12345\r\n");
	TO_CLIENT(s, "b OK NOOP completed\r\n+ OK\r\n");
	NOTHING(s);
}

/* Feeds the server a tagged response "TAG STATUS xxx...x" too long to hold
 * (over 64 KiB), streamed as a socket would, and checks it reached the
 * client whole. */
static void
feed_long_response(struct sess *s, const char *tag_status)
{
	str_clear(&tmp);
	str_add(&tmp, tag_status, strlen(tag_status));
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, "\r\n", 2);
	assert_int_equal(feed_stream(s, S, tmp.p, tmp.n), 0);
	assert_int_equal(s->fwd[S].n, tmp.n);
	str_clear(&s->fwd[S]);
}

/* A tagged completion too long to hold completes its command as a short
 * one does: the commands that wait for all earlier ones to complete
 * (STARTTLS, AUTHENTICATE) go on, and a synchronising literal refused
 * with a long NO is never sent. */
static void
test_imap_long_completion_completes_its_command(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, C, "a NOOP\r\n");
	TO_SERVER(s, "a NOOP\r\n");
	feed_long_response(s, "a OK ");
	feed(s, C, "b STARTTLS\r\n");
	ANSWER(s, "b OK Begin TLS negotiation now\r\n");
	tls_start(s);

	feed(s, C, "c NOOP\r\n");
	TO_SERVER(s, "c NOOP\r\n");
	feed_long_response(s, "c OK ");
	feed(s, C, "d AUTHENTICATE PLAIN\r\n");
	TO_SERVER(s, "d AUTHENTICATE PLAIN\r\n");
	feed(s, S, "d NO bad\r\n");
	TO_CLIENT(s, "d NO bad\r\n");

	feed(s, C, "e APPEND INBOX {5}\r\n");
	TO_SERVER(s, "e APPEND INBOX {5}\r\n");
	feed_long_response(s, "e NO [TOOBIG] ");
	/* The literal was refused: the next line is a command. */
	feed(s, C, "f NOOP\r\n");
	TO_SERVER(s, "f NOOP\r\n");
	NOTHING(s);
}

/* Once logged in, LOGIN is no command for the server: Dovecot skips its
 * line and runs what follows as commands, so a LITERAL+ "password" would
 * be a command hidden from the log as "***". Refused, also after a
 * PREAUTH greeting, until an UNAUTHENTICATE succeeds; with a synchronising
 * literal (which the server never asks for) it is harmless and passes. */
static void
test_imap_login_after_login_refused(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	feed(s, C, "a LOGIN alice pw\r\n");
	TO_SERVER(s, "a LOGIN alice pw\r\n");
	feed(s, S, "a OK Logged in\r\n");
	TO_CLIENT(s, "a OK Logged in\r\n");
	feed(s, C, "b UNAUTHENTICATE\r\n");
	feed(s, S, "b NO not now\r\n");
	feed(s, C, "c LOGIN alice {5}\r\n");
	feed(s, S, "c BAD Unknown command\r\n");
	TO_SERVER(s, "b UNAUTHENTICATE\r\nc LOGIN alice {5}\r\n");
	TO_CLIENT(s, "b NO not now\r\nc BAD Unknown command\r\n");
	feed(s, C, "d LOGIN alice {15+}\r\ne DELETE INBOX\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Already logged in" REFUSED_LITERAL);
	TO_SERVER(s, "");

	struct sess *p = sess_new(&proto_imap, false);
	feed(p, S, "* PREAUTH ready\r\n");
	TO_CLIENT(p, "* PREAUTH ready\r\n");
	tls_start(p);
	feed(p, C, "a LOGIN alice {15+}\r\nb DELETE INBOX\r\n");
	assert_int_equal(p->final, PV_CLOSE);
	TO_SERVER(p, "");

	struct sess *u = imap_in_tls();
	feed(u, C, "a LOGIN alice pw\r\n");
	feed(u, S, "a OK Logged in\r\n");
	feed(u, C, "b UNAUTHENTICATE\r\n");
	feed(u, S, "b OK Unauthenticated\r\n");
	feed(u, C, "c LOGIN alice {2+}\r\npw\r\n");
	TO_SERVER(u, "a LOGIN alice pw\r\nb UNAUTHENTICATE\r\nc LOGIN alice {2+}\r\npw\r\n");
	ANSWER(u, "");
	/* An UNAUTHENTICATE sharing its tag with an earlier command: the
	 * earlier one's OK says nothing of it. */
	feed(u, S, "c OK Logged in\r\n");
	feed(u, C, "d NOOP\r\nd UNAUTHENTICATE\r\n");
	feed(u, S, "d OK NOOP completed\r\n");
	feed(u, C, "e LOGIN alice {2+}\r\npw\r\n");
	assert_int_equal(u->final, PV_CLOSE);
}

/* A server without an extension treats its commands as unknown: Dovecot
 * skips the line and runs a LITERAL+ literal's bytes as commands, hidden
 * from the log. An extension command's non-synchronising literal passes
 * only when the server's latest capability list names the extension; a
 * synchronising one always does (the server's refusal cancels it). */
static void
test_imap_extension_literal_needs_capability(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	feed(s, C, "l LOGIN alice pw\r\n");
	feed(s, S, "l OK [CAPABILITY IMAP4rev1 LITERAL+ SORT THREAD=REFERENCES] Logged in\r\n");
	feed(s, C, "a GETACL {5+}\r\nb NOOP\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE The server does not offer this command" REFUSED_LITERAL);
	TO_SERVER(s, "l LOGIN alice pw\r\n");

	/* Named by the latest list: relayed, as is THREAD=REFERENCES's THREAD. */
	struct sess *a = imap_in_tls();
	feed(a, S, "* CAPABILITY IMAP4rev1 LITERAL+ ACL THREAD=REFERENCES\r\n");
	feed(a, C, "a GETACL {5+}\r\nb NOOP\r\n");
	feed(a, C, "c UID THREAD REFERENCES {5+}\r\nUTF-8 ALL\r\n");
	TO_SERVER(a, "a GETACL {5+}\r\nb NOOP\r\nc UID THREAD REFERENCES {5+}\r\nUTF-8 ALL\r\n");
	ANSWER(a, "");
	assert_int_equal(a->final, NO_FINAL);
	/* A later list without ACL takes it back. */
	feed(a, S, "* CAPABILITY IMAP4rev1 LITERAL+\r\n");
	feed(a, C, "d MYRIGHTS {5+}\r\nINBOX\r\n");
	assert_int_equal(a->final, PV_CLOSE);

	/* "[CAPABILITY" anywhere but right after a status word is text a
	 * client may have chosen (a mailbox name the server quotes back). */
	static const char *const spoofs[] = {
	        "c NO Mailbox doesn't exist: [CAPABILITY ACL]nonexist\r\n",
	        "* LIST () \"/\" \"[CAPABILITY ACL]\"\r\n", "* OK Text [CAPABILITY ACL] later\r\n"};
	for (size_t i = 0; i < sizeof(spoofs) / sizeof(spoofs[0]); i++) {
		struct sess *f = imap_in_tls();
		feed(f, S, "* CAPABILITY IMAP4rev1 LITERAL+\r\n");
		feed(f, S, spoofs[i]);
		feed(f, C, "x GETACL {18+}\r\ny DELETE victim\r\n");
		assert_int_equal(f->final, PV_CLOSE);
		ANSWER(f, "* BYE The server does not offer this command" REFUSED_LITERAL);
	}

	/* A synchronising literal is relayed and waits for the server's "+". */
	struct sess *y = imap_in_tls();
	feed(y, C, "a GETACL {5}\r\n");
	TO_SERVER(y, "a GETACL {5}\r\n");
	assert_int_equal(feed(y, C, "b NOOP\r\n"), 8);
	assert_int_equal(y->stop[C], PV_WAIT);
	feed(y, S, "a BAD Unknown command\r\n");
	assert_int_equal(drive(y, C), 0);
	TO_SERVER(y, "b NOOP\r\n");
	assert_int_equal(y->final, NO_FINAL);

	/* The same at the end of a line too long to hold. */
	char *big = malloc(IN_CAP);
	assert_non_null(big);
	for (int sync = 0; sync < 2; sync++) {
		struct sess *l = imap_in_tls();
		memset(big, 'a', IN_CAP);
		memcpy(big, "a GETACL ", 9);
		assert_int_equal(feed_n(l, C, big, IN_CAP), 0);
		str_clear(&l->fwd[C]);
		feed(l, C, sync ? " {5}\r\n" : " {5+}\r\nb NOOP\r\n");
		assert_int_equal(l->final, sync ? NO_FINAL : PV_CLOSE);
		if (sync)
			TO_SERVER(l, " {5}\r\n");
		else
			ANSWER(l, "* BYE The server does not offer this command" REFUSED_LITERAL);
	}
	free(big);
}

/* A POP3 or SMTP reply line too long to hold (RFC 2449 and 5321: 512
 * bytes) cannot be matched with its command: the session ends, rather
 * than take the next reply for this one's (a 354 for a RCPT's, and the
 * message for commands). A POP3 message's long lines still pass. */
static void
test_long_status_line_closes_pop3_and_smtp(void **state)
{
	(void)state;
	struct sess *m = smtp(true, true);
	struct sess *p = pop3(true, true);

	smtp_tls(m, true);
	feed(m, C, "MAIL FROM:<a@example.org>\r\n");
	TO_SERVER(m, "MAIL FROM:<a@example.org>\r\n");
	str_clear(&tmp);
	str_add(&tmp, "250 ", 4);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, "\r\n", 2);
	feed_stream(m, S, tmp.p, tmp.n);
	assert_int_equal(m->final, PV_CLOSE);
	ANSWER(m, "421 4.3.0 Mail server reply too long\r\n");

	pop3_stls(p);
	feed(p, C, "RETR 1\r\n");
	feed(p, S, "+OK\r\n");
	tmp.p[0] = 'y'; /* a message line */
	assert_int_equal(feed_stream(p, S, tmp.p, tmp.n), 0);
	feed(p, S, ".\r\n");
	assert_int_equal(p->final, NO_FINAL);
	feed(p, C, "STAT\r\n");
	memcpy(tmp.p, "+OK ", 4);
	feed_stream(p, S, tmp.p, tmp.n);
	assert_int_equal(p->final, PV_CLOSE);
	ANSWER(p, "-ERR Mail server reply too long\r\n");
}

/* A literal after a command that takes none (NOOP, an unknown command,
 * UID EXPUNGE): a server past login skips the rest of such a line (Dovecot
 * does) and runs the "literal" as commands. A synchronising one is refused
 * (the client never sends it); a non-synchronising one ends the session. */
static void
test_imap_literal_only_after_commands_that_take_one(void **state)
{
	(void)state;
	static const char *const closing[] = {
	        "a NOOP {19+}\r\nb COMPRESS DEFLATE\r\n", "a XFOO {9+}\r\nb NOOP\r\n",
	        "a UID EXPUNGE {5+}\r\nb ID NIL\r\n", "a IDLE {5+}\r\nDONE\r\n"};

	for (size_t i = 0; i < sizeof(closing) / sizeof(closing[0]); i++) {
		observe_next = true;
		struct sess *s = imap_in_tls();
		observe_next = false;
		feed(s, C, closing[i]);
		assert_int_equal(s->final, PV_CLOSE);
		ANSWER(s, "* BYE This command takes no literal\r\n");
		TO_SERVER(s, "");
		sess_free(s);
	}

	struct sess *s = imap_in_tls();
	assert_int_equal(feed(s, C, "a XFOO {5}\r\nb NOOP\r\n"), 0);
	ANSWER(s, "a BAD This command takes no literal\r\n");
	TO_SERVER(s, "b NOOP\r\n");
	feed(s, S, "b OK\r\n");
	/* The commands that do take one relay it, UID by its subcommand. */
	feed(s, C,
	     "c UID FETCH 1 (BODY[HEADER.FIELDS ({4+}\r\nFROM)])\r\n"
	     "d SELECT {5+}\r\nINBOX\r\n");
	TO_SERVER(s, "c UID FETCH 1 (BODY[HEADER.FIELDS ({4+}\r\nFROM)])\r\n"
	             "d SELECT {5+}\r\nINBOX\r\n");
	TO_CLIENT(s, "b OK\r\n");
	NOTHING(s);
}

/* A line too long to hold whose command takes no literal, ending in one:
 * its beginning is at the backend already, so the session ends. */
static void
test_imap_long_line_literal_after_command_without_one(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	str_add(&tmp, "a XFOO ", 7);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, " {5+}\r\nb NOOP\r\n", 15);
	feed_stream(s, C, tmp.p, tmp.n);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE This command takes no literal\r\n");
	assert_null(strstr(s->fwd[C].p, "b NOOP"));
}

/* A command postern refuses itself never reaches the server, but servers
 * disagree on its literal: one that rejects the tag skips the line and
 * reads the literal's bytes as commands, one that parses on reads them as
 * data. A refused command with a {N+} literal therefore ends the session,
 * before and after TLS, on a short or an over-long line. */
static void
test_imap_refused_command_with_nonsync_literal_closes(void **state)
{
	(void)state;
	char tag[80 + 1];
	memset(tag, ':', 80);
	tag[80] = 0;
	char line[256];
	snprintf(line, sizeof(line), "%s NOOP {38+}\r\nb COMP\r\nc NOOP\r\n", tag);

	struct sess *s = imap(false, true);
	feed(s, C, line);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Tag too long" REFUSED_LITERAL);
	TO_SERVER(s, "");
	sess_free(s);

	/* Over 64 KiB, after TLS: swallowed to the line's end, then closed. */
	s = imap_in_tls();
	str_add(&tmp, tag, 80);
	str_add(&tmp, " NOOP ", 6);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, " {3+}\r\nabcd NOOP\r\n", 18);
	feed_stream(s, C, tmp.p, tmp.n);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BAD Line too long\r\n* BYE Line too long" REFUSED_LITERAL);
	assert_null(strstr(s->fwd[C].p, "NOOP"));
}

/* During IDLE only DONE is relayed: the server takes any line for the end
 * of IDLE, so a line postern would judge as a command ends the session.
 * An IDLE the server refused is over: commands follow. */
static void
test_imap_idle_only_done(void **state)
{
	(void)state;
	struct sess *s = imap_in_tls();

	feed(s, C, "a IDLE\r\n");
	feed(s, S, "+ idling\r\n");
	feed(s, C, "b STARTTLS\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE Expected DONE\r\n");
	TO_SERVER(s, "a IDLE\r\n");
	sess_free(s);

	s = imap_in_tls();
	feed(s, C, "a NOOP\r\na IDLE\r\n");
	feed(s, S, "a OK NOOP completed\r\n+ idling\r\n");
	feed(s, C, "DONE\r\n");
	feed(s, S, "a OK IDLE completed\r\n");
	feed(s, C, "b IDLE\r\n");
	feed(s, S, "b NO not now\r\n");
	feed(s, C, "c NOOP\r\n");
	TO_SERVER(s, "a NOOP\r\na IDLE\r\nDONE\r\nb IDLE\r\nc NOOP\r\n");
	ANSWER(s, "");
}

/* A BDAT whose size is a number followed by junk (a bare CR, letters) is
 * refused, and the session ends: a server that ends the number at the CR
 * reads a chunk, one that refuses the line reads commands. */
static void
test_smtp_bdat_size_then_junk_closes(void **state)
{
	(void)state;
	assert_bdat_closed("BDAT 06\r\r\nRSET\r\nNOOP\r\n", "Invalid character in command");
}

/* Before TLS too (a backend that greets with PREAUTH is past login): a
 * non-synchronising literal after a command that takes none ends the
 * session. */
static void
test_imap_pretls_literal_after_command_without_one(void **state)
{
	(void)state;
	struct sess *s = imap(true, true);

	feed(s, C, "a NOOP {19+}\r\nb COMPRESS DEFLATE\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE This command takes no literal\r\n");
	TO_SERVER(s, "");
}

/* A BDAT line too long to judge announces a chunk that would follow:
 * refused and closed at once. */
static void
test_smtp_long_bdat_line_closes(void **state)
{
	(void)state;
	struct sess *s = smtp(true, true);

	smtp_tls_chunking(s);
	str_add(&tmp, "BDAT 6 ", 7);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, "\r\nRSET\r\nNOOP\r\n", 14);
	feed_stream(s, C, tmp.p, tmp.n);
	ANSWER(s, "421 4.7.0 BDAT refused (Line too long), closing\r\n");
	TO_SERVER(s, "");
	assert_int_equal(s->final, PV_CLOSE);
}

/* A BDAT with a size behind odd white space: a server splitting on SP
 * sees no chunk, Postfix sees one; the session ends rather than guess. */
static void
test_smtp_bdat_odd_white_space_closes(void **state)
{
	(void)state;
	static const char *const lines[] = {" BDAT 3\r\nRSET\r\n", "BDAT\t3\r\nRSET\r\n",
	                                    "BDAT  3 LAST\r\nRSET\r\n", " BDAT 03\xff\r\nRSET\r\n"};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct sess *s = smtp(true, true);
		smtp_tls_chunking(s);
		feed(s, C, lines[i]);
		assert_int_equal(s->final, PV_CLOSE);
		ANSWER(s, "421 4.7.0 BDAT with odd white space, closing\r\n");
		TO_SERVER(s, "");
		sess_free(s);
	}
	/* So does one too long to judge. */
	struct sess *s = smtp(true, true);
	smtp_tls_chunking(s);
	str_add(&tmp, "BDAT  6 ", 8);
	for (size_t i = 0; i < PROTO_LINE_MAX + 100; i++)
		str_add(&tmp, "x", 1);
	str_add(&tmp, "\r\nRSET\r\nNOOP\r\n", 14);
	feed_stream(s, C, tmp.p, tmp.n);
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "421 4.7.0 BDAT with odd white space, closing\r\n");
	TO_SERVER(s, "");
}

/* Trailing white space after a BDAT's size or LAST is a syntax error for
 * a strict server: refused, and closed (the chunk follows all the same). */
static void
test_smtp_bdat_trailing_space_refused(void **state)
{
	(void)state;
	static const char *const lines[] = {"BDAT 6 \r\nRSET\r\nNOOP\r\n",
	                                    "BDAT 6 LAST \r\nRSET\r\nNOOP\r\n"};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		assert_bdat_closed(lines[i], "Syntax: BDAT count [LAST]");
}

/* The line after a SASL exchange that ended with a final reply is judged
 * as a command, yet it may be a SASL response the client sent too early:
 * unless its verb is one postern knows, the log shows "***" and the
 * session remembers it. */
static void
test_sasl_line_sent_early_hidden_from_log(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *m = smtp(true, true);
	struct sess *p = pop3(true, true);
	observe_next = false;

	smtp_tls(m, true);
	feed(m, C, "AUTH PLAIN\r\nZsecret\r\n");
	feed(m, S, "504 5.5.4 Unrecognized authentication type\r\n");
	assert_int_equal(drive(m, C), 0);
	TO_SERVER(m, "AUTH PLAIN\r\nZsecret\r\n");
	assert_null(strstr(m->log.p, "Zsecret"));
	assert_non_null(strstr(m->log.p, "C: ***\n"));
	SECRETS(m, "Zsecret\n");

	pop3_stls(p);
	feed(p, C, "AUTH PLAIN\r\nZsecret\r\n");
	feed(p, S, "-ERR no\r\n");
	assert_int_equal(drive(p, C), 0);
	TO_SERVER(p, "AUTH PLAIN\r\nZsecret\r\n");
	assert_null(strstr(p->log.p, "Zsecret"));
	SECRETS(p, "Zsecret\n");
}

/* A command with arguments is never a SASL response: after an exchange
 * it is logged as any command is, its verb shown even when postern does
 * not know it, and nothing of it is remembered as a secret. */
static void
test_command_after_sasl_exchange_logged_as_any(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *m = smtp(true, true);
	struct sess *p = pop3(true, true);
	struct sess *i = imap(true, true);
	observe_next = false;

	smtp_tls(m, true);
	str_clear(&m->log);
	feed(m, C, "AUTH PLAIN AGFsaWNlAHB3\r\n");
	feed(m, S, "235 2.7.0 Authentication successful\r\n");
	feed(m, C, "XFOO bar baz\r\n");
	LOGGED(m, "C: AUTH PLAIN ***\nS: 235 2.7.0 Authentication successful\nC: XFOO bar baz\n");
	SECRETS(m, "AGFsaWNlAHB3\n");

	pop3_stls(p);
	str_clear(&p->log);
	feed(p, C, "AUTH PLAIN\r\n");
	feed(p, S, "+ \r\n");
	feed(p, C, "AGFsaWNlAHB3\r\n");
	feed(p, S, "+OK logged in\r\n");
	feed(p, C, "XFOO bar\r\n");
	LOGGED(p, "C: AUTH PLAIN\ndS: + \nC: ***\nS: +OK logged in\nC: XFOO bar\n");
	SECRETS(p, "AGFsaWNlAHB3\n");

	feed(i, C, "a STARTTLS\r\n");
	tls_start(i);
	str_clear(&i->log);
	feed(i, C, "b AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
	feed(i, S, "b OK Logged in\r\n");
	feed(i, C, "c UID FETCH 1:* FLAGS\r\n");
	LOGGED(i, "C: b AUTHENTICATE PLAIN ***\nS: b OK Logged in\nC: c UID FETCH 1:* FLAGS\n");
	SECRETS(i, "AGFsaWNlAHB3\n");
}

/* A client may send every response of an exchange the server refuses
 * too early: each of those one-word lines is hidden, up to the next
 * command, in SMTP, POP3 and IMAP. */
static void
test_every_early_sasl_response_hidden(void **state)
{
	(void)state;
	observe_next = mask_next = true;
	struct sess *m = smtp(true, true);
	struct sess *p = pop3(true, true);
	struct sess *i = imap(true, true);
	observe_next = mask_next = false;

	smtp_tls(m, true);
	str_clear(&m->log);
	feed(m, C, "AUTH LOGIN\r\n");
	feed(m, S, "538 5.7.11 Encryption required\r\n");
	feed(m, C, "YWxpY2U=\r\n");
	feed(m, S, "500 Error: command \"YWXPY2U=\" not recognized\r\n");
	feed(m, C, "c2VjcmV0\r\n");
	feed(m, S, "500 Error: command \"C2VJCMV0\" not recognized\r\n");
	feed(m, C, "NOOP\r\n");
	assert_null(strstr(m->log.p, "c2VjcmV0"));
	assert_non_null(strstr(m->log.p, "C: NOOP\n"));

	pop3_stls(p);
	str_clear(&p->log);
	feed(p, C, "AUTH FOO\r\n");
	feed(p, S, "-ERR Unsupported authentication mechanism\r\n");
	feed(p, C, "YWxpY2U=\r\n");
	feed(p, S, "-ERR Unknown command\r\n");
	feed(p, C, "c2VjcmV0\r\n");
	feed(p, S, "-ERR Unknown command\r\n");
	feed(p, C, "NOOP\r\n");
	assert_null(strstr(p->log.p, "c2VjcmV0"));
	assert_non_null(strstr(p->log.p, "C: NOOP\n"));

	feed(i, C, "a STARTTLS\r\n");
	tls_start(i);
	str_clear(&i->log);
	feed(i, C, "a AUTHENTICATE FOO\r\n");
	feed(i, S, "a NO Unsupported authentication mechanism\r\n");
	feed(i, C, "YWxpY2U=\r\n");
	feed(i, S, "YWxpY2U= BAD Error in IMAP command received by server.\r\n");
	feed(i, C, "c2VjcmV0\r\n");
	feed(i, S, "c2VjcmV0 BAD Error in IMAP command received by server.\r\n");
	feed(i, C, "b NOOP\r\n");
	assert_null(strstr(i->log.p, "c2VjcmV0"));
	assert_non_null(strstr(i->log.p, "C: b NOOP\n"));
}

/* A synchronising literal the server refuses never comes: its command's
 * log line ends without it, and a password the client sends anyway (a
 * line the server reads and echoes) is hidden. */
static void
test_refused_literal_ends_its_log_line(void **state)
{
	(void)state;
	observe_next = mask_next = true;
	struct sess *i = imap_in_tls();
	struct sess *g = imap_in_tls();
	observe_next = mask_next = false;

	str_clear(&i->log);
	feed(i, C, "a LOGIN alice {6}\r\n");
	feed(i, S, "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed\r\n");
	feed(i, C, "secret\r\n");
	feed(i, S, "secret BAD Error in IMAP command received by server.\r\n");
	feed(i, C, "b NOOP\r\n");
	assert_null(strstr(i->log.p, "secret"));
	assert_non_null(strstr(i->log.p, "C: a LOGIN alice ***\n"));
	assert_non_null(strstr(i->log.p, "C: b NOOP\n"));

	feed(g, C, "l LOGIN alice pw\r\n");
	feed(g, S, "l OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n");
	str_clear(&g->log);
	feed(g, C, "b GETACL {5}\r\n");
	feed(g, S, "b BAD Error in IMAP command GETACL: Unknown command\r\n");
	feed(g, C, "c CREATE victim\r\n");
	assert_non_null(strstr(g->log.p, "C: c CREATE victim\n"));
}

/* A client chooses what it sends as a password, which the session then
 * masks wherever it reappears: it must not be able to hide what a line is
 * (a command's verb, a reply's status) nor a word that merely contains
 * it. A real password's echo stays masked. */
static void
test_client_chosen_password_masks_no_verb_status_or_part_word(void **state)
{
	(void)state;
	observe_next = mask_next = true;
	struct sess *i = imap(true, true);
	struct sess *p = pop3(true, true);
	observe_next = mask_next = false;

	tls_start(i);
	feed(i, C, "a LOGIN alice DELETE\r\n");
	feed(i, S, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	feed(i, C, "b LOGIN alice mail\r\n");
	feed(i, S, "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	str_clear(&i->log);
	feed(i, C, "c DELETE mailbox\r\n");
	feed(i, S, "c NO DELETE: no mail in mailbox\r\n");
	LOGGED(i, "C: c DELETE mailbox\nS: c NO ***: no *** in mailbox\n");
	/* Dovecot reads a LITERAL+ password as a command and echoes it. */
	feed(i, C, "d LOGIN alice {9+}\r\nhunter2pw\r\n");
	feed(i, S, "d BAD Unknown command\r\nhunter2pw BAD Error in IMAP command\r\n");
	LOGGED(i, "C: d LOGIN alice ***\nS: d BAD Unknown command\n"
	          "S: *** BAD Error in IMAP command\n");

	pop3_stls(p);
	str_clear(&p->log);
	feed(p, C, "USER alice\r\n");
	feed(p, S, "+OK\r\n");
	feed(p, C, "PASS -ERR\r\n");
	feed(p, S, "-ERR [AUTH] Authentication failed.\r\n");
	feed(p, C, "USER alice\r\n");
	feed(p, S, "+OK\r\n");
	feed(p, C, "PASS RETR\r\n");
	feed(p, S, "-ERR [AUTH] RETR is no password\r\n");
	LOGGED(p, "C: USER alice\nS: +OK\nC: PASS ***\nS: -ERR [AUTH] Authentication failed.\n"
	          "C: USER alice\nS: +OK\nC: PASS ***\nS: -ERR [AUTH] *** is no password\n");
	feed(p, C, "RETR 1\r\n");
	LOGGED(p, "C: RETR 1\n");
}

/* aiosmtpd echoes an unknown command in upper case: a SASL response sent
 * too early (after a final reply) comes back as 500 Error: command
 * "AGFSAWNL..." not recognized, from which trying the letter cases finds
 * the password. Masked whatever its case. */
static void
test_secret_echoed_in_upper_case_masked(void **state)
{
	(void)state;
	observe_next = mask_next = true;
	struct sess *m = smtp(true, true);
	observe_next = mask_next = false;

	smtp_tls(m, true);
	str_clear(&m->log);
	feed(m, C, "AUTH FOO\r\nAGFsaWNlAGh1bnRlcjJwdw==\r\n");
	feed(m, S, "504 5.5.4 Unrecognized authentication type\r\n");
	drive(m, C);
	feed(m, S, "500 Error: command \"AGFSAWNLAGH1BNRLCJJWDW==\" not recognized\r\n");
	LOGGED(m, "C: AUTH FOO\nS: 504 5.5.4 Unrecognized authentication type\nC: ***\n"
	          "S: 500 Error: command \"***\" not recognized\n");
}

/* A continuation nothing postern saw asks for ("+" after a command whose
 * literal already passed): the server reads the next line as a response,
 * so the log hides it and remembers it, as a SASL response. */
static void
test_imap_unasked_continuation_hides_next_line(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = imap(true, true);
	observe_next = false;

	tls_start(s);
	feed(s, C, "a NOOP\r\n");
	TO_SERVER(s, "a NOOP\r\n");
	feed(s, S, "+ \r\n");
	feed(s, C, "Zsecret==\r\n");
	TO_SERVER(s, "Zsecret==\r\n");
	assert_null(strstr(s->log.p, "Zsecret"));
	assert_non_null(strstr(s->log.p, "C: ***\n"));
	SECRETS(s, "Zsecret==\n");
	/* Only the one line: what follows is logged again. */
	feed(s, C, "b NOOP\r\n");
	assert_non_null(strstr(s->log.p, "C: b NOOP\n"));
}

/* ------------------------------------------------------------------ */
/* backend_auth = oauth2: postern answers the client's login */

#define LOGIN_GREETING                                                                             \
	"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGINDISABLED AUTH=XOAUTH2 AUTH=OAUTHBEARER] "         \
	"ready\r\n"

static struct sess *
login_sess(void)
{
	struct sess *s;

	login_next = true;
	s = sess_new(&proto_imap, false);
	login_next = false;
	feed(s, S, LOGIN_GREETING);
	TO_CLIENT(s, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n");
	return s;
}

/* The session's side of PV_LOGIN: the access token's SASL message goes
 * to the server, or the client gets a refusal. */
static void
login_send(struct sess *s, const char *mech, const char *blob)
{
	struct proto_action act = {0};

	s->ops->login_send(s->st, mech, blob, strlen(blob), &act, s->scratch);
	str_add(&s->fwd[C], act.text, act.len);
}

static enum proto_auth
login_fail(struct sess *s, enum proto_login_fail why)
{
	struct proto_action act = {0};

	s->ops->login_fail(s->st, why, &act, s->scratch);
	str_add(&s->ans, act.text, act.len);
	return act.auth;
}

#define LOGIN_AS(s, w) expect_at(&(s)->login, (w), strlen(w), __FILE__, __LINE__)

static void
test_imap_oauth2_login_answered_by_postern(void **state)
{
	(void)state;
	struct sess *s = login_sess();

	/* quoted strings unquoted; nothing reaches the server */
	feed(s, C, "a1 LOGIN alice \"pw \\\"with\\\\ quotes\"\r\na2 NOOP\r\n");
	assert_int_equal(s->stop[C], PV_LOGIN);
	LOGIN_AS(s, "alice|pw \"with\\ quotes");
	NOTHING(s);
	/* the next command waits for the outcome */
	drive(s, C);
	assert_int_equal(s->stop[C], PV_WAIT);
	NOTHING(s);
	login_send(s, "XOAUTH2", "dXNlcj1hbGljZQ==");
	TO_SERVER(s, "a1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	/* the error challenge is answered for the client, which sees the NO */
	feed(s, S, "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
	TO_SERVER(s, "\r\n");
	TO_CLIENT(s, "");
	feed(s, S, "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	TO_CLIENT(s, "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	drive(s, C);
	TO_SERVER(s, "a2 NOOP\r\n");
	feed(s, S, "a2 OK NOOP completed\r\n");
	TO_CLIENT(s, "a2 OK NOOP completed\r\n");
	/* OAUTHBEARER's error challenge is answered with ^A */
	feed(s, C, "b1 LOGIN alice pw\r\n");
	LOGIN_AS(s, "alice|pw");
	login_send(s, "OAUTHBEARER", "bixhPWFsaWNlLAE=");
	TO_SERVER(s, "b1 AUTHENTICATE OAUTHBEARER bixhPWFsaWNlLAE=\r\n");
	feed(s, S, "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
	TO_SERVER(s, "AQ==\r\n");
	/* logged in: AUTH=PLAIN is no longer offered */
	feed(s, S, "b1 OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2] Logged in\r\n");
	TO_CLIENT(s, "b1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
}

static void
test_imap_oauth2_authenticate_plain(void **state)
{
	(void)state;
	struct sess *s = login_sess();

	/* "\0alice\0pw" and "alice\0alice\0pw" as initial responses */
	feed(s, C, "a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
	assert_int_equal(s->stop[C], PV_LOGIN);
	LOGIN_AS(s, "alice|pw");
	assert_int_equal(login_fail(s, PROTO_LOGIN_TEMPORARY), PROTO_AUTH_NONE);
	ANSWER(s, "a NO [UNAVAILABLE] Authentication service unavailable, try again later\r\n");
	feed(s, C, "b AUTHENTICATE PLAIN YWxpY2UAYWxpY2UAcHc=\r\n");
	LOGIN_AS(s, "alice|pw");
	assert_int_equal(login_fail(s, PROTO_LOGIN_REFUSED), PROTO_AUTH_FAILED);
	ANSWER(s, "b NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
	/* without one: "+", then the response line */
	feed(s, C, "c AUTHENTICATE PLAIN\r\n");
	ANSWER(s, "+ \r\n");
	feed(s, C, "AGFsaWNlAHB3\r\n");
	LOGIN_AS(s, "alice|pw");
	login_fail(s, PROTO_LOGIN_REVOKED);
	ANSWER(s, "c NO [AUTHENTICATIONFAILED] Authentication failed: the account must be "
	          "authorized again\r\n");
	/* cancelled; another user's identity; not base64; another mechanism */
	feed(s, C, "d AUTHENTICATE PLAIN\r\n*\r\n");
	ANSWER(s, "+ \r\nd BAD Authentication cancelled\r\n");
	feed(s, C, "e AUTHENTICATE PLAIN Ym9iAGFsaWNlAHB3\r\n");
	ANSWER(s, "e BAD Invalid AUTHENTICATE PLAIN response\r\n");
	feed(s, C, "f AUTHENTICATE PLAIN ###\r\n");
	ANSWER(s, "f BAD Invalid AUTHENTICATE PLAIN response\r\n");
	feed(s, C, "g AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	ANSWER(s, "g NO [CANNOT] Unsupported mechanism: use PLAIN or LOGIN\r\n");
	NOTHING(s);
	assert_int_equal(s->login.n, 0);
}

/* LOGIN's user name and password as literals, synchronising or not (old
 * clients send a password with special characters so): read by postern,
 * nothing sent to the server, the password hidden in the log, remembered
 * as a secret and left in the input for the login to consume (wiped). */
static void
test_imap_oauth2_login_with_literals(void **state)
{
	(void)state;
	observe_next = true;
	struct sess *s = login_sess();
	observe_next = false;
	str_clear(&s->log);

	/* synchronising: "+" for each, the bytes in pieces */
	feed(s, C, "a LOGIN {5}\r\n");
	ANSWER(s, "+ Ready for literal data\r\n");
	feed(s, C, "ali");
	feed(s, C, "ce {11}\r\n");
	ANSWER(s, "+ Ready for literal data\r\n");
	feed(s, C, "p\"w\\ {1}\r\nx");
	assert_int_equal(s->stop[C], PV_MORE);
	feed(s, C, "\r\nz NOOP\r\n");
	assert_int_equal(s->stop[C], PV_LOGIN);
	assert_int_equal(s->pend[C].n, strlen("z NOOP\r\n")); /* consumed with the login */
	LOGIN_AS(s, "alice|p\"w\\ {1}\r\nx");
	NOTHING(s);
	LOGGED(s, "C: a LOGIN {5 bytes} ***\n");
	SECRETS(s, "p\"w\\ {1}\r\nx\n");
	login_fail(s, PROTO_LOGIN_REFUSED);
	ANSWER(s, "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
	drive(s, C);
	TO_SERVER(s, "z NOOP\r\n");
	feed(s, S, "z OK done\r\n");
	TO_CLIENT(s, "z OK done\r\n");
	str_clear(&s->log);
	/* LITERAL+ (RFC 7888), all at once; a literal user, a quoted password */
	feed(s, C, "b LOGIN \"alice\" {3+}\r\npw!\r\n");
	LOGIN_AS(s, "alice|pw!");
	NOTHING(s);
	LOGGED(s, "C: b LOGIN \"alice\" ***\n");
	SECRETS(s, "pw!\n");
	login_fail(s, PROTO_LOGIN_TEMPORARY);
	ANSWER(s, "b NO [UNAVAILABLE] Authentication service unavailable, try again later\r\n");
	feed(s, C, "c LOGIN {5+}\r\nalice \"pw 2\"\r\n");
	LOGIN_AS(s, "alice|pw 2");
	LOGGED(s, "C: c LOGIN {5 bytes} ***\n");
	SECRETS(s, "pw 2\n");
	login_fail(s, PROTO_LOGIN_TEMPORARY);
	ANSWER(s, "c NO [UNAVAILABLE] Authentication service unavailable, try again later\r\n");
	/* too long: refused before the client sends it; bad arguments */
	feed(s, C, "d LOGIN alice {5000}\r\n");
	ANSWER(s, "d BAD User name or password too long\r\n");
	feed(s, C, "e LOGIN {0}\r\n");
	ANSWER(s, "+ Ready for literal data\r\n");
	feed(s, C, " pw\r\n");
	ANSWER(s, "e BAD Invalid LOGIN arguments\r\n");
	feed(s, C, "f LOGIN {5}\r\n");
	ANSWER(s, "+ Ready for literal data\r\n");
	feed(s, C, "alice pw more\r\n");
	ANSWER(s, "f BAD Invalid LOGIN arguments\r\n");
	feed(s, C, "g LOGIN alice ~{2}\r\n");
	ANSWER(s, "g BAD Invalid LOGIN arguments\r\n");
	NOTHING(s);
	assert_int_equal(s->login.n, 0);
	/* a non-synchronising literal too long to read: no framing is safe */
	feed(s, C, "h LOGIN alice {5000+}\r\n");
	assert_int_equal(s->final, PV_CLOSE);
	ANSWER(s, "* BYE User name or password too long; the literal of a refused command "
	          "cannot be skipped\r\n");
}

static void
test_imap_oauth2_login_waits_for_commands_in_flight(void **state)
{
	(void)state;
	struct sess *s = login_sess();

	/* its completion must be the first one after it */
	feed(s, C, "a NOOP\r\nb LOGIN alice pw\r\n");
	TO_SERVER(s, "a NOOP\r\n");
	assert_int_equal(s->stop[C], PV_WAIT);
	feed(s, S, "a OK done\r\n");
	TO_CLIENT(s, "a OK done\r\n");
	drive(s, C);
	assert_int_equal(s->stop[C], PV_LOGIN);
	LOGIN_AS(s, "alice|pw");
}

/* Logged in through postern: a second LOGIN or AUTHENTICATE is answered
 * at once, never another token request. */
static void
test_imap_oauth2_login_after_login_answered_locally(void **state)
{
	(void)state;
	struct sess *s = login_sess();

	feed(s, C, "a LOGIN alice pw\r\n");
	LOGIN_AS(s, "alice|pw");
	login_send(s, "XOAUTH2", "dXNlcj1hbGljZQ==");
	TO_SERVER(s, "a AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	feed(s, S, "a OK Logged in\r\n");
	TO_CLIENT(s, "a OK Logged in\r\n");
	feed(s, C, "b LOGIN bob pw2\r\nc AUTHENTICATE PLAIN AGJvYgBwdzI=\r\nd NOOP\r\n");
	assert_int_not_equal(s->stop[C], PV_LOGIN);
	ANSWER(s, "b BAD Already authenticated\r\nc BAD Already authenticated\r\n");
	TO_SERVER(s, "d NOOP\r\n");
	assert_int_equal(s->login.n, 0);
}

/* A LOGIN refused for its arguments leaves nothing of its password in
 * the scratch (a static buffer in the daemon). */
static void
test_imap_oauth2_refused_login_wipes_its_password(void **state)
{
	(void)state;
	struct sess *s = login_sess();

	feed(s, C, "a LOGIN \"\" \"Sup3rSecretLocalPw\"\r\n");
	ANSWER(s, "a BAD Invalid LOGIN arguments\r\n");
	assert_null(memmem(s->scratch, sizeof(s->scratch), "Sup3rSecretLocalPw", 18));
}

static struct sess *
login_sess_of(const struct proto_ops *ops, const char *greeting)
{
	struct sess *s;

	login_next = true;
	s = sess_new(ops, false);
	login_next = false;
	feed(s, S, greeting);
	TO_CLIENT(s, greeting);
	return s;
}

static void
test_pop3_oauth2_user_pass_and_auth_plain(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_pop3, "+OK ready\r\n");

	/* the server's USER and SASL are for postern; the client gets these */
	feed(s, C, "CAPA\r\n");
	TO_SERVER(s, "CAPA\r\n");
	feed(s, S, "+OK\r\nUSER\r\nSASL XOAUTH2 OAUTHBEARER\r\nTOP\r\n.\r\n");
	TO_CLIENT(s, "+OK\r\nTOP\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
	feed(s, C, "PASS pw\r\n");
	ANSWER(s, "-ERR USER first\r\n");
	feed(s, C, "USER alice\r\nPASS pass word\r\nSTAT\r\n");
	ANSWER(s, "+OK\r\n");
	assert_int_equal(s->stop[C], PV_LOGIN);
	LOGIN_AS(s, "alice|pass word");
	NOTHING(s);
	drive(s, C); /* STAT waits for the outcome */
	assert_int_equal(s->stop[C], PV_WAIT);
	login_send(s, "XOAUTH2", "dXNlcj1hbGljZQ==");
	TO_SERVER(s, "AUTH XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	feed(s, S, "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
	TO_SERVER(s, "\r\n");
	TO_CLIENT(s, "");
	feed(s, S, "-ERR [AUTH] Authentication failed.\r\n");
	TO_CLIENT(s, "-ERR [AUTH] Authentication failed.\r\n");
	drive(s, C);
	TO_SERVER(s, "STAT\r\n");
	feed(s, S, "-ERR Unknown command\r\n");
	TO_CLIENT(s, "-ERR Unknown command\r\n");
	/* AUTH PLAIN, then a temporary failure in POP3's words */
	feed(s, C, "AUTH PLAIN\r\n");
	ANSWER(s, "+ \r\n");
	feed(s, C, "AGFsaWNlAHB3\r\n");
	LOGIN_AS(s, "alice|pw");
	login_fail(s, PROTO_LOGIN_TEMPORARY);
	ANSWER(s, "-ERR [SYS/TEMP] Authentication service unavailable, try again later\r\n");
	assert_int_equal(login_fail(s, PROTO_LOGIN_REFUSED), PROTO_AUTH_NONE); /* none pending */
	ANSWER(s, "-ERR [AUTH] Authentication failed\r\n");
	feed(s, C, "AUTH\r\nAUTH XOAUTH2 dXNlcj1hbGljZQ==\r\nAPOP alice 0123\r\n");
	ANSWER(s, "+OK\r\nPLAIN\r\n.\r\n-ERR Unsupported mechanism: use PLAIN, or USER and PASS\r\n"
	          "-ERR APOP is not offered: use USER and PASS\r\n");
	NOTHING(s);
}

static void
test_smtp_oauth2_auth_plain_and_login(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_smtp, "220 mx ESMTP\r\n");

	feed(s, C, "EHLO me\r\n");
	TO_SERVER(s, "EHLO me\r\n");
	feed(s, S,
	     "250-mx\r\n250-AUTH XOAUTH2 OAUTHBEARER\r\n250-AUTH=XOAUTH2\r\n250 8BITMIME\r\n");
	TO_CLIENT(s, "250-mx\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n");
	/* AUTH LOGIN without and with an initial response */
	feed(s, C, "AUTH LOGIN\r\n");
	ANSWER(s, "334 VXNlcm5hbWU6\r\n");
	feed(s, C, "YWxpY2U=\r\n");
	ANSWER(s, "334 UGFzc3dvcmQ6\r\n");
	feed(s, C, "cHc=\r\nMAIL FROM:<a@b>\r\n");
	assert_int_equal(s->stop[C], PV_LOGIN);
	LOGIN_AS(s, "alice|pw");
	drive(s, C); /* MAIL waits for the outcome */
	assert_int_equal(s->stop[C], PV_WAIT);
	NOTHING(s);
	assert_int_equal(login_fail(s, PROTO_LOGIN_REFUSED), PROTO_AUTH_FAILED);
	ANSWER(s, "535 5.7.8 Authentication credentials invalid\r\n");
	drive(s, C);
	TO_SERVER(s, "MAIL FROM:<a@b>\r\n");
	feed(s, S, "530 5.7.0 Authentication required\r\n");
	TO_CLIENT(s, "530 5.7.0 Authentication required\r\n");
	feed(s, C, "AUTH LOGIN YWxpY2U=\r\n");
	ANSWER(s, "334 UGFzc3dvcmQ6\r\n");
	feed(s, C, "*\r\n");
	ANSWER(s, "501 5.7.0 Authentication cancelled\r\n");
	feed(s, C, "AUTH PLAIN AGFsaWNlAHB3\r\n");
	LOGIN_AS(s, "alice|pw");
	login_fail(s, PROTO_LOGIN_TEMPORARY);
	ANSWER(s, "454 4.7.0 Temporary authentication failure, try again later\r\n");
	/* the token goes to the server; its challenge is answered */
	feed(s, C, "AUTH PLAIN\r\n");
	ANSWER(s, "334 \r\n");
	feed(s, C, "AGFsaWNlAHB3\r\n");
	LOGIN_AS(s, "alice|pw");
	login_send(s, "OAUTHBEARER", "bixhPWFsaWNlLAE=");
	TO_SERVER(s, "AUTH OAUTHBEARER bixhPWFsaWNlLAE=\r\n");
	feed(s, S, "334 eyJzdGF0dXMiOiI0MDEifQ==\r\n");
	TO_SERVER(s, "AQ==\r\n");
	TO_CLIENT(s, "");
	feed(s, S, "235 2.7.0 Authentication successful\r\n");
	TO_CLIENT(s, "235 2.7.0 Authentication successful\r\n");
	/* logged in: a second AUTH carries the local password, the key of
	 * the token file, so postern answers it and the server never sees it */
	feed(s, C, "AUTH PLAIN AGFsaWNlAHB3\r\nAUTH CRAM-MD5\r\n");
	ANSWER(s, "503 5.5.1 Already authenticated\r\n503 5.5.1 Already authenticated\r\n");
	NOTHING(s);
}

/* After postern's own login, no later AUTH reaches the server: its local
 * password is the key of the token file. */
static void
test_smtp_oauth2_auth_after_login_not_relayed(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_smtp, "220 mx ESMTP\r\n");

	feed(s, C, "EHLO me\r\n");
	TO_SERVER(s, "EHLO me\r\n");
	feed(s, S, "250-mx\r\n250 AUTH XOAUTH2\r\n");
	TO_CLIENT(s, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
	feed(s, C, "AUTH PLAIN AGFsaWNlAGxvY2FscHc=\r\n"); /* \0alice\0localpw */
	LOGIN_AS(s, "alice|localpw");
	login_send(s, "XOAUTH2", "dXNlcj1hbGljZQ==");
	TO_SERVER(s, "AUTH XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	feed(s, S, "235 2.7.0 ok\r\n");
	TO_CLIENT(s, "235 2.7.0 ok\r\n");
	feed(s, C, "AUTH PLAIN AGFsaWNlAGxvY2FscHc=\r\nAUTH LOGIN\r\nNOOP\r\n");
	ANSWER(s, "503 5.5.1 Already authenticated\r\n503 5.5.1 Already authenticated\r\n");
	TO_SERVER(s, "NOOP\r\n");
	assert_int_equal(s->login.n, 0);
}

static void
test_pop3_oauth2_login_after_login_not_relayed(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_pop3, "+OK ready\r\n");

	feed(s, C, "USER alice\r\nPASS localpw\r\n");
	ANSWER(s, "+OK\r\n");
	LOGIN_AS(s, "alice|localpw");
	login_send(s, "XOAUTH2", "dXNlcj1hbGljZQ==");
	TO_SERVER(s, "AUTH XOAUTH2 dXNlcj1hbGljZQ==\r\n");
	feed(s, S, "+OK Logged in.\r\n");
	TO_CLIENT(s, "+OK Logged in.\r\n");
	feed(s, C,
	     "USER alice\r\nPASS localpw\r\nAPOP alice 0123\r\n"
	     "AUTH PLAIN AGFsaWNlAGxvY2FscHc=\r\nSTAT\r\n");
	ANSWER(s, "-ERR Already authenticated\r\n-ERR Already authenticated\r\n"
	          "-ERR Already authenticated\r\n-ERR Already authenticated\r\n");
	TO_SERVER(s, "STAT\r\n");
	assert_int_equal(s->login.n, 0);
}

/* A SASL response too long to read ends the exchange: the client gets
 * the line-too-long error, and its next line is a command again. */
static void
test_smtp_oauth2_long_sasl_response_ends_the_exchange(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_smtp, "220 mx ESMTP\r\n");
	static char big[IN_CAP + 100];

	feed(s, C, "EHLO me\r\n");
	TO_SERVER(s, "EHLO me\r\n");
	feed(s, S, "250-mx\r\n250 AUTH XOAUTH2\r\n");
	TO_CLIENT(s, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
	feed(s, C, "AUTH LOGIN\r\n");
	ANSWER(s, "334 VXNlcm5hbWU6\r\n");
	memset(big, 'A', sizeof(big) - 2);
	memcpy(big + sizeof(big) - 2, "\r\n", 2);
	feed_stream(s, C, big, sizeof(big));
	ANSWER(s, "500 5.5.2 Line too long\r\n");
	feed(s, C, "RSET\r\n");
	ANSWER(s, "");
	TO_SERVER(s, "RSET\r\n");
}

static void
test_pop3_oauth2_long_sasl_response_ends_the_exchange(void **state)
{
	(void)state;
	struct sess *s = login_sess_of(&proto_pop3, "+OK ready\r\n");
	static char big[IN_CAP + 100];

	feed(s, C, "AUTH PLAIN\r\n");
	ANSWER(s, "+ \r\n");
	memset(big, 'A', sizeof(big) - 2);
	memcpy(big + sizeof(big) - 2, "\r\n", 2);
	feed_stream(s, C, big, sizeof(big));
	ANSWER(s, "-ERR Line too long\r\n");
	feed(s, C, "STAT\r\n");
	ANSWER(s, "");
	TO_SERVER(s, "STAT\r\n");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_util_imap_literal, teardown),
	        cmocka_unit_test_teardown(test_util_caps_rewrite, teardown),
	        cmocka_unit_test_teardown(test_util_words, teardown),
	        cmocka_unit_test_teardown(test_imap_caps_pretls, teardown),
	        cmocka_unit_test_teardown(test_imap_caps_pretls_optional, teardown),
	        cmocka_unit_test_teardown(test_imap_caps_posttls, teardown),
	        cmocka_unit_test_teardown(test_imap_login_refused, teardown),
	        cmocka_unit_test_teardown(test_imap_login_literal_refused, teardown),
	        cmocka_unit_test_teardown(test_imap_login_optional, teardown),
	        cmocka_unit_test_teardown(test_imap_starttls, teardown),
	        cmocka_unit_test_teardown(test_imap_starttls_bad, teardown),
	        cmocka_unit_test_teardown(test_imap_login_posttls, teardown),
	        cmocka_unit_test_teardown(test_imap_literal_plus, teardown),
	        cmocka_unit_test_teardown(test_imap_sync_literal, teardown),
	        cmocka_unit_test_teardown(test_imap_server_literal, teardown),
	        cmocka_unit_test_teardown(test_imap_long_line, teardown),
	        cmocka_unit_test_teardown(test_imap_before_greeting, teardown),
	        cmocka_unit_test_teardown(test_imap_starttls_order, teardown),
	        cmocka_unit_test_teardown(test_imap_malformed, teardown),
	        cmocka_unit_test_teardown(test_imap_answer_waits_for_server_literal, teardown),
	        cmocka_unit_test_teardown(test_imap_bad_tags, teardown),
	        cmocka_unit_test_teardown(test_imap_brace_after_non_argument_is_no_literal,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_pretls_allowlist, teardown),
	        cmocka_unit_test_teardown(test_imap_id_keys_after_tls, teardown),
	        cmocka_unit_test_teardown(test_imap_authenticate_same_tag_pipelined, teardown),
	        cmocka_unit_test_teardown(test_imap_log_secrets_recorded, teardown),
	        cmocka_unit_test_teardown(test_imap_long_server_line_literal, teardown),
	        cmocka_unit_test_teardown(test_pop3_capa, teardown),
	        cmocka_unit_test_teardown(test_pop3_capa_optional, teardown),
	        cmocka_unit_test_teardown(test_pop3_auth_refused, teardown),
	        cmocka_unit_test_teardown(test_pop3_ordering, teardown),
	        cmocka_unit_test_teardown(test_pop3_stls, teardown),
	        cmocka_unit_test_teardown(test_pop3_retr_body, teardown),
	        cmocka_unit_test_teardown(test_pop3_sasl_posttls, teardown),
	        cmocka_unit_test_teardown(test_pop3_long_line, teardown),
	        cmocka_unit_test_teardown(test_smtp_ehlo_pretls, teardown),
	        cmocka_unit_test_teardown(test_smtp_ehlo_huge_pretls, teardown),
	        cmocka_unit_test_teardown(test_smtp_ehlo_nul, teardown),
	        cmocka_unit_test_teardown(test_smtp_ehlo_posttls, teardown),
	        cmocka_unit_test_teardown(test_smtp_refused_pretls, teardown),
	        cmocka_unit_test_teardown(test_smtp_pipelining_order, teardown),
	        cmocka_unit_test_teardown(test_smtp_starttls, teardown),
	        cmocka_unit_test_teardown(test_smtp_data, teardown),
	        cmocka_unit_test_teardown(test_smtp_bdat, teardown),
	        cmocka_unit_test_teardown(test_smtp_auth_posttls, teardown),
	        cmocka_unit_test_teardown(test_smtp_malformed, teardown),
	        cmocka_unit_test_teardown(test_smtp_pretls_odd_white_space_refused, teardown),
	        cmocka_unit_test_teardown(test_smtp_posttls_verb_any_white_space, teardown),
	        cmocka_unit_test_teardown(test_smtp_bdat_refused_without_chunking, teardown),
	        cmocka_unit_test_teardown(test_smtp_long_command_posttls_refused, teardown),
	        cmocka_unit_test_teardown(test_pop3_odd_white_space, teardown),
	        cmocka_unit_test_teardown(test_pop3_upstream_greeting_not_from_plaintext, teardown),
	        cmocka_unit_test_teardown(test_channel_binding_hidden, teardown),
	        cmocka_unit_test_teardown(test_imap_log_redaction, teardown),
	        cmocka_unit_test_teardown(test_imap_observe_rules, teardown),
	        cmocka_unit_test_teardown(test_pop3_log_redaction, teardown),
	        cmocka_unit_test_teardown(test_smtp_log_redaction, teardown),
	        cmocka_unit_test_teardown(test_smtp_pop3_log_hides_malformed_pretls, teardown),
	        cmocka_unit_test_teardown(test_sasl_ir_then_pipelined_command_waits_for_reply,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_sync_literal_waits_for_earlier_same_tag,
	                                  teardown),
	        cmocka_unit_test_teardown(
	                test_imap_long_line_sync_literal_waits_for_earlier_same_tag, teardown),
	        cmocka_unit_test_teardown(test_imap_long_completion_completes_its_command,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_login_after_login_refused, teardown),
	        cmocka_unit_test_teardown(test_imap_extension_literal_needs_capability, teardown),
	        cmocka_unit_test_teardown(test_long_status_line_closes_pop3_and_smtp, teardown),
	        cmocka_unit_test_teardown(test_imap_literal_only_after_commands_that_take_one,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_long_line_literal_after_command_without_one,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_refused_command_with_nonsync_literal_closes,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_idle_only_done, teardown),
	        cmocka_unit_test_teardown(test_smtp_bdat_size_then_junk_closes, teardown),
	        cmocka_unit_test_teardown(test_smtp_long_bdat_line_closes, teardown),
	        cmocka_unit_test_teardown(test_smtp_bdat_odd_white_space_closes, teardown),
	        cmocka_unit_test_teardown(test_smtp_bdat_trailing_space_refused, teardown),
	        cmocka_unit_test_teardown(test_sasl_line_sent_early_hidden_from_log, teardown),
	        cmocka_unit_test_teardown(
	                test_client_chosen_password_masks_no_verb_status_or_part_word, teardown),
	        cmocka_unit_test_teardown(test_secret_echoed_in_upper_case_masked, teardown),
	        cmocka_unit_test_teardown(test_command_after_sasl_exchange_logged_as_any, teardown),
	        cmocka_unit_test_teardown(test_every_early_sasl_response_hidden, teardown),
	        cmocka_unit_test_teardown(test_refused_literal_ends_its_log_line, teardown),
	        cmocka_unit_test_teardown(test_imap_unasked_continuation_hides_next_line, teardown),
	        cmocka_unit_test_teardown(test_imap_pretls_literal_after_command_without_one,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_login_answered_by_postern, teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_login_with_literals, teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_authenticate_plain, teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_login_waits_for_commands_in_flight,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_login_after_login_answered_locally,
	                                  teardown),
	        cmocka_unit_test_teardown(test_imap_oauth2_refused_login_wipes_its_password,
	                                  teardown),
	        cmocka_unit_test_teardown(test_pop3_oauth2_user_pass_and_auth_plain, teardown),
	        cmocka_unit_test_teardown(test_smtp_oauth2_auth_plain_and_login, teardown),
	        cmocka_unit_test_teardown(test_smtp_oauth2_auth_after_login_not_relayed, teardown),
	        cmocka_unit_test_teardown(test_pop3_oauth2_login_after_login_not_relayed, teardown),
	        cmocka_unit_test_teardown(test_smtp_oauth2_long_sasl_response_ends_the_exchange,
	                                  teardown),
	        cmocka_unit_test_teardown(test_pop3_oauth2_long_sasl_response_ends_the_exchange,
	                                  teardown),
	};
	return cmocka_run_group_tests_name("adapters", tests, NULL, NULL);
}
