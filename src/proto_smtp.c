/* SMTP (RFC 5321, STARTTLS RFC 3207, AUTH RFC 4954, PIPELINING RFC 2920,
 * CHUNKING RFC 3030). Replies carry no tags: a queue of commands in flight
 * pairs each reply with its command, so a local answer waits its turn, a
 * DATA body is known for what it is, and the EHLO reply can be rewritten
 * whole (its last line must end with "250 ", not "250-"). */
#include <stdio.h>
#include <string.h>

#include <postern/proto_auth.h>
#include <postern/proto_cmd.h>
#include <postern/proto_login.h>
#include <postern/proto_util.h>

enum smtp_kind {
	K_SIMPLE,
	K_EHLO, /* rewritten */
	K_DATA, /* 354 starts the body */
	K_AUTH, /* 334 challenges until a final reply */
	K_OAUTH /* postern's own AUTH (backend_auth = oauth2) */
};

struct smtp_state {
	struct pu_adapter a;   /* SASL challenges: 334 replies */
	bool helo_seen;        /* after TLS: the client has said EHLO again */
	uint64_t c_body_bytes; /* of the DATA body passing, for the log */
	bool c_body;           /* DATA body: lines until "." */
	bool c_data_wait;      /* DATA sent: body or command depends on the reply */
	bool c_skip;           /* the rest of a command line too long to judge */
	bool chunking;         /* the last EHLO reply offered CHUNKING (BDAT) */
	bool c_midline, s_midline;
	uint64_t c_chunk;     /* BDAT bytes still to come */
	struct pu_queue q;    /* commands awaiting their reply */
	struct pa_login auth; /* the AUTH in flight, for the auth line */
	bool login;           /* backend_auth = oauth2: postern answers AUTH */
	struct pl_login ol;
};

static const struct pl_words smtp_words = {
        .go = "334 ",
        .user_go = "334 VXNlcm5hbWU6", /* "Username:" */
        .pass_go = "334 UGFzc3dvcmQ6", /* "Password:" */
        .cancelled = "501 5.7.0 Authentication cancelled",
        .bad = "501 5.5.2 Invalid AUTH response",
        .no_mech = "504 5.5.4 Unsupported mechanism: use PLAIN or LOGIN",
        .fail =
                {
                        [PROTO_LOGIN_REFUSED] = "535 5.7.8 Authentication credentials invalid",
                        [PROTO_LOGIN_REVOKED] = "535 5.7.8 Authentication credentials invalid: "
                                                "the account must be authorized again",
                        [PROTO_LOGIN_TEMPORARY] = "454 4.7.0 Temporary authentication failure, "
                                                  "try again later",
                },
};

/* XCLIENT and XFORWARD are for proxies the server trusts, never clients. */
static const char *const ehlo_drop_always[] = {"STARTTLS", "XCLIENT", "XFORWARD", NULL};
static const char *const ehlo_drop_pretls[] = {"STARTTLS", "AUTH", "XCLIENT", "XFORWARD", NULL};
static const char *const ehlo_auth_prefix[] = {"AUTH=", NULL};
/* backend_auth = oauth2: the server's AUTH is for postern; the client gets
 * postern's own. */
static const char *const ehlo_drop_login[] = {"STARTTLS", "AUTH", "XCLIENT", "XFORWARD", NULL};

static void
smtp_init(void *st, const struct proto_conf *conf)
{
	struct smtp_state *s = st;

	pu_adapter_init(s, sizeof(*s), conf);
	pu_queue_push(&s->q, K_SIMPLE); /* the greeting */
	s->login = conf->backend_login;
	s->ol.auth = &s->auth;
}

/* RFC 3207 4.2: everything learnt before TLS is forgotten; EHLO again. */
static void
smtp_tls_started(void *st)
{
	struct smtp_state *s = st;

	pu_adapter_tls_started(&s->a);
	s->helo_seen = false;
	s->c_body = s->c_data_wait = s->c_midline = false;
	s->c_skip = s->chunking = false;
	s->c_chunk = 0;
}

static enum proto_verdict
local(struct smtp_state *s, struct proto_action *act, size_t n, char *scratch, const char *text)
{
	if (s->q.count > 0 || s->s_midline)
		return PV_WAIT;
	return pu_answer(act, PV_REPLY, n, scratch, "%s\r\n", text);
}

enum {
	F_BEFORE_EHLO = PU_OWN, /* allowed after TLS before the new EHLO */
	F_EHLO = PU_OWN << 1,   /* EHLO: its reply is rewritten */
	F_HELO = PU_OWN << 2,   /* EHLO or HELO: the client has introduced itself */
	F_DATA = PU_OWN << 3,   /* a body follows if the server says 354 */
	F_CHUNK = PU_OWN << 4   /* BDAT: a sized chunk follows */
};

static const struct pu_verb smtp_verbs[] = {
        {"STARTTLS", PU_STARTTLS | PU_PLAIN},
        {"EHLO", F_BEFORE_EHLO | F_EHLO | F_HELO | PU_PLAIN},
        {"HELO", F_BEFORE_EHLO | F_HELO | PU_PLAIN},
        {"NOOP", F_BEFORE_EHLO | PU_PLAIN},
        {"RSET", F_BEFORE_EHLO | PU_PLAIN},
        {"QUIT", F_BEFORE_EHLO | PU_PLAIN},
        {"HELP", F_BEFORE_EHLO},
        {"MAIL", PU_REFUSE_PLAIN},
        {"RCPT", PU_REFUSE_PLAIN},
        {"DATA", PU_REFUSE_PLAIN | F_DATA},
        {"BDAT", PU_REFUSE_PLAIN | F_CHUNK},
        {"AUTH", PU_REFUSE_PLAIN | PU_SASL | PU_HIDE_AFTER_ARG},
        {"XCLIENT", PU_FORWARDING},
        {"XFORWARD", PU_FORWARDING},
        {NULL, 0},
};

/* RFC 3030: "BDAT" SP size [SP "LAST"], nothing else. *CHUNK is set
 * whenever the size begins with a number, since even a refused chunk
 * follows (a server may end the number at a byte postern keeps in the
 * word, such as a CR). */
static bool
bdat_args(const char *q, const char *end, uint64_t *chunk)
{
	struct pu_word size = pu_next_token(&q, end);
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < size.n && i < 10 && size.p[i] >= '0' && size.p[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(size.p[i] - '0');
	if (i == 0 || v > UINT32_MAX)
		return false;
	*chunk = v;
	if (i != size.n)
		return false;
	/* Exactly one SP before LAST and nothing after: trailing white space
	 * is a syntax error for a strict server. */
	if (size.p + size.n == end)
		return true;
	struct pu_word last = pu_next_token(&q, end);
	return pu_word_is(last, "LAST") && last.p == size.p + size.n + 1 && size.p[size.n] == ' ' &&
	       last.p + last.n == end;
}

/* A BDAT with a size (so at least "BDAT" SP digit: P[5] is in the line),
 * but not at the start or not followed by one SP: a server that splits on
 * SP only (RFC 5321) sees no BDAT and no chunk, one that splits on any
 * white space (Postfix) sees both. */
static bool
bdat_odd(const char *p)
{
	return !(p[4] == ' ' && p[5] != ' ' && p[5] != '\t');
}

/* Which bytes come after an odd BDAT is unknowable, and so are those
 * after a BDAT postern refuses: a server that refuses its syntax (Postfix)
 * reads the chunk as commands, one that refuses it in a transaction reads
 * it as data. The session ends. WHY is the refusal, or NULL. */
static enum proto_verdict
bdat_close(struct smtp_state *s, struct proto_action *act, size_t n, char *scratch, const char *why)
{
	if (s->q.count > 0 || s->s_midline)
		return PV_WAIT;
	if (why == NULL)
		return pu_answer(act, PV_CLOSE, n, scratch,
		                 "421 4.7.0 BDAT with odd white space, closing\r\n");
	/* Every refusal starts with its code and enhanced code. */
	return pu_answer(act, PV_CLOSE, n, scratch, "421 4.7.0 BDAT refused (%s), closing\r\n",
	                 why + sizeof("500 5.5.2 ") - 1);
}

static const struct pc_replies smtp_replies = {
        .need_tls = "530 5.7.0 Must issue a STARTTLS command first",
        .bad_char = "500 5.5.2 Invalid character in command",
        .tls_active = "503 5.5.1 TLS already active",
        .tls_args = "501 5.5.4 No parameters allowed",
        .tls_go = "220 2.0.0 Ready to start TLS",
        .forwarding = "550 5.7.1 Not relayed: only the proxy may send this",
};

/* Why postern answers the command itself, once the common policy let it
 * through, or NULL to relay it. */
static const char *
refusal(struct smtp_state *s, unsigned flags, bool bdat_ok)
{
	if (s->a.tls && !s->helo_seen && !(flags & (F_BEFORE_EHLO | PU_STARTTLS)))
		return "503 5.5.1 EHLO first";
	if ((flags & F_CHUNK) && !bdat_ok)
		return "501 5.5.4 Syntax: BDAT count [LAST]";
	/* A server without CHUNKING would run the chunk as commands. */
	if ((flags & F_CHUNK) && !s->chunking)
		return "502 5.5.1 BDAT not available: the server did not offer CHUNKING";
	return NULL;
}

static enum proto_verdict
client_command(void *st, const char *p, size_t n, unsigned flags, const char *args,
               struct proto_action *act, char *scratch)
{
	struct smtp_state *s = st;
	size_t body = pu_trim_eol(p, n);
	const char *end = p + body;
	uint64_t chunk = 0;
	bool bdat_ok = (flags & F_CHUNK) && bdat_args(args, end, &chunk);
	struct pc_ruling r = pc_rule(&s->a, flags, p, body, args == end, &smtp_replies);

	if (r.rule == PC_RELAY && (r.text = refusal(s, flags, bdat_ok)) != NULL)
		r.rule = PC_REFUSE;
	if (chunk > 0 && (bdat_odd(p) || r.rule == PC_REFUSE)) {
		enum proto_verdict v = bdat_close(s, act, n, scratch, bdat_odd(p) ? NULL : r.text);
		if (v == PV_CLOSE)
			act->event = r.event;
		return v;
	}
	if (r.rule == PC_STARTTLS) {
		if (s->q.count > 0 || s->s_midline)
			return PV_WAIT;
		return pu_answer(act, PV_STARTTLS, n, scratch, "%s\r\n", r.text);
	}
	if (r.rule == PC_REFUSE) {
		enum proto_verdict v = local(s, act, n, scratch, r.text);
		if (v != PV_REPLY)
			return v;
		act->event = r.event;
		return v;
	}
	/* Once logged in, a login's password is the key of the token file:
	 * it never reaches the server. */
	if ((flags & PU_SASL) && s->login && s->ol.done)
		return local(s, act, n, scratch, "503 5.5.1 Already authenticated");
	if ((flags & PU_SASL) && s->login) {
		if (s->q.count > 0 || s->s_midline || pa_full(&s->auth))
			return PV_WAIT; /* answered in turn */
		struct pu_word mech = pu_next_token(&args, end);
		return pl_auth(&s->ol, &smtp_words, mech, pu_next_token(&args, end), n, act,
		               scratch);
	}
	if (flags & F_HELO) {
		s->helo_seen = true;
		s->chunking = false; /* until an EHLO reply offers it */
	}
	if (flags & F_EHLO) {
		pu_queue_push(&s->q, K_EHLO);
	} else if (flags & F_DATA) {
		pu_queue_push(&s->q, K_DATA);
		s->c_data_wait = true;
	} else if (flags & PU_SASL) {
		pu_queue_push(&s->q, K_AUTH);
		s->a.c_auth = s->a.c_auth_wait = true;
		struct pu_word mech = pu_next_token(&args, end);
		struct pu_word ir = pu_next_token(&args, end);
		if (mech.n > 0)
			pa_begin_sasl(&s->auth, NULL, 0, mech, ir.p, ir.n);
	} else {
		pu_queue_push(&s->q, K_SIMPLE);
		s->c_chunk = chunk;
	}
	act->consume = n;
	return PV_PASS;
}

static enum proto_verdict
client_input(struct smtp_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->c_chunk > 0) {
		size_t n = len < s->c_chunk ? len : (size_t)s->c_chunk;
		s->c_chunk -= n;
		act->consume = n;
		return PV_PASS;
	}
	if (s->c_data_wait || s->a.c_auth_wait || pl_busy(&s->ol))
		return PV_WAIT;
	if (s->c_skip) {
		size_t n = pc_skip_tail(p, len, act);
		if (n == 0)
			return PV_DROP;
		enum proto_verdict v = local(s, act, n, scratch, "500 5.5.2 Line too long");
		s->c_skip = v == PV_WAIT;
		return v;
	}
	size_t n;
	enum pu_frame f = pu_frame(&s->c_midline, p, len, full, act, &n);

	if (f == PF_MIDLINE && s->c_body)
		s->c_body_bytes += act->consume;
	if (f == PF_MIDLINE && s->a.c_auth && n > 0)
		s->a.c_auth_wait = true;
	if (f == PF_LONG && !s->c_body && !s->a.c_auth) {
		if (!s->a.tls)
			return pu_answer(act, PV_CLOSE, len, scratch,
			                 "500 5.5.2 Line too long\r\n");
		/* A command too long to judge is never relayed: dropped, then
		 * refused once its end has come. A BDAT's chunk would follow. */
		uint64_t chunk = 0;
		const char *q = p;
		if (pu_verb_flags(smtp_verbs, pu_next_token(&q, p + len)) & F_CHUNK)
			bdat_args(q, p + len, &chunk);
		if (chunk > 0)
			return bdat_close(s, act, len, scratch,
			                  bdat_odd(p) ? NULL : "500 5.5.2 Line too long");
		s->c_skip = true;
		pl_line_dropped(&s->ol);
		if (s->a.observe)
			pc_log_unread(act, scratch, "line too long");
		return PV_DROP;
	}
	if (f != PF_LINE)
		return pu_frame_pass(&s->c_midline, f);
	if (s->c_body) {
		if (pu_trim_eol(p, n) == 1 && p[0] == '.') {
			if (s->q.count == PU_QUEUE_MAX)
				return PV_WAIT;
			s->c_body = false;
			pu_queue_push(&s->q, K_SIMPLE); /* the reply to the whole message */
			if (s->a.observe) {             /* the message is shown by its size only */
				pu_log_begin(act, scratch, 0);
				pu_log_size(act, scratch, s->c_body_bytes);
			}
		} else {
			s->c_body_bytes += n;
		}
		return PV_PASS;
	}
	if (pl_reading(&s->ol)) { /* a response to postern's own 334 */
		if (s->a.observe)
			pu_log_sasl(act, scratch, p, pu_trim_eol(p, n));
		return pl_response(&s->ol, &smtp_words, p, n, act, scratch);
	}
	return pc_command_line(&s->a, &s->q, &s->auth, smtp_verbs, client_command, s, p, n, act,
	                       scratch);
}

/* Length of a complete multi-line reply at P ("250-..." lines then one
 * "250 ..."), or 0 if its last line has not arrived. */
static size_t
reply_len(const char *p, size_t len)
{
	size_t at = 0, n;

	while ((n = pu_line_len(p + at, len - at)) > 0) {
		bool more = n >= 4 && p[at + 3] == '-';
		at += n;
		if (!more)
			return at;
	}
	return 0;
}

/* A whole multi-line reply for the log, its lines separated by '\n'. */
static void
log_reply(const char *p, size_t total, struct proto_action *act, char *scratch)
{
	size_t at = 0;

	pu_log_begin(act, scratch, 0);
	while (at < total) {
		size_t n = pu_line_len(p + at, total - at);
		if (at > 0)
			pu_log_str(act, scratch, "\n");
		pu_log_put(act, scratch, p + at, pu_trim_eol(p + at, n));
		at += n;
	}
}

/* EHLO reply: keep the greeting line and the extensions the client may
 * see, add STARTTLS while in plaintext, and fix the continuation marks. */
static enum proto_verdict
rewrite_ehlo(struct smtp_state *s, const char *p, size_t total, struct proto_action *act,
             char *scratch)
{
	const char *lines[256];
	size_t lens[256], k = 0, at = 0, out = 0;
	struct pu_caps pre = {ehlo_drop_pretls, ehlo_auth_prefix, NULL};
	struct pu_caps post = {ehlo_drop_always, NULL, NULL};
	const struct pu_caps *c = s->a.tls ? &post : &pre;
	bool offer = s->login && !s->ol.done && (s->a.tls || !s->a.require_tls);

	if (s->login)
		post = (struct pu_caps){ehlo_drop_login, ehlo_auth_prefix, NULL};
	static const struct pu_caps mechs = {NULL, NULL, NULL};
	char auth[1024]; /* AUTH lines with their mechanisms filtered */
	size_t auth_at = 0;

	while (at < total) {
		size_t n = pu_line_len(p + at, total - at);
		size_t body = pu_trim_eol(p + at, n);
		if (k == 255) /* more extensions than any server has: refuse */
			return pu_answer(act, PV_CLOSE, total, scratch,
			                 "421 4.3.0 Mail server reply too long\r\n");
		const char *q = p + at + 4, *end = p + at + body;
		if (body < 4)
			q = end;
		struct pu_word w = pu_next_word(&q, end);
		/* A NUL would hide the rest of the line from the check. */
		if (k == 0 || (!pu_cap_removed(w, c) && memchr(p + at, '\0', body) == NULL)) {
			lines[k] = body > 4 ? p + at + 4 : "";
			lens[k++] = body > 4 ? body - 4 : 0;
			if (at > 0 && pu_word_is(w, "CHUNKING"))
				s->chunking = true;
		}
		if (k > 1 && lines[k - 1] == w.p && pu_word_is(w, "AUTH") &&
		    auth_at + 5 + (size_t)(end - q) <= sizeof(auth)) {
			size_t from = auth_at;
			memcpy(auth + auth_at, "AUTH ", 5);
			auth_at += 5;
			auth_at += pu_caps_rewrite(q, (size_t)(end - q), &mechs, auth + auth_at,
			                           sizeof(auth) - auth_at);
			lines[k - 1] = auth + from;
			lens[k - 1] = auth_at - from;
		}
		at += n;
	}
	if (offer) {
		lines[k] = "AUTH PLAIN LOGIN";
		lens[k++] = 16;
	}
	if (!s->a.tls) {
		lines[k] = "STARTTLS";
		lens[k++] = 8;
	}
	for (size_t i = 0; i < k; i++) {
		int r = snprintf(scratch + out, PROTO_SCRATCH - out, "250%c%.*s\r\n",
		                 i + 1 < k ? '-' : ' ', (int)lens[i], lines[i]);
		if (r < 0 || (size_t)r >= PROTO_SCRATCH - out)
			break;
		out += (size_t)r;
	}
	act->consume = total;
	act->text = scratch;
	act->len = out;
	return PV_REPLACE;
}

static enum proto_verdict
server_input(struct smtp_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	size_t n;
	enum pu_frame f = pu_frame(&s->s_midline, p, len, full, act, &n);

	/* A reply line is at most 512 bytes (RFC 5321): one too long to hold
	 * could not be matched with its command, whose state (DATA's body,
	 * AUTH's exchange) would then be wrong for all that follows. */
	if (f == PF_LONG)
		return pu_answer(act, PV_CLOSE, len, scratch,
		                 "421 4.3.0 Mail server reply too long\r\n");
	if (f != PF_LINE)
		return pu_frame_pass(&s->s_midline, f);
	bool more = n >= 4 && p[3] == '-';
	if (s->a.observe) /* the last line of a reply matters most */
		pu_log_line(act, scratch, p, pu_trim_eol(p, n), false, 0, more ? PL_DEBUG : 0);
	if (s->q.count == 0)
		return PV_PASS; /* unsolicited (e.g. a 421 before closing) */
	enum smtp_kind k = pu_queue_head(&s->q);
	if (k == K_EHLO && n >= 3 && strncmp(p, "250", 3) == 0) {
		size_t total = reply_len(p, len);
		if (total == 0 && full) /* cannot be rewritten whole: fail closed */
			return pu_answer(act, PV_CLOSE, len, scratch,
			                 "421 4.3.0 Mail server reply too long\r\n");
		if (total == 0)
			return PV_MORE;
		pu_queue_pop(&s->q);
		s->chunking = false; /* this reply says again what the server offers */
		if (s->a.observe)
			log_reply(p, total, act, scratch);
		return rewrite_ehlo(s, p, total, act, scratch);
	}
	if (more)
		return PV_PASS;
	if (k == K_OAUTH && strncmp(p, "334", 3) == 0)
		return pl_challenge(&s->ol, n, act);
	if (k == K_OAUTH)
		pl_ended(&s->ol, p[0] == '2', act);
	if (k == K_AUTH && strncmp(p, "334", 3) == 0) {
		s->a.c_auth_wait = false; /* a challenge: the client answers it */
		return PV_PASS;
	}
	if (k == K_DATA) {
		s->c_data_wait = false;
		s->c_body = strncmp(p, "354", 3) == 0;
		s->c_body_bytes = 0;
	}
	if (k == K_AUTH) {
		pu_sasl_ended(&s->a);
		pa_end(&s->auth, NULL, 0, p[0] == '2', act);
	}
	pu_queue_pop(&s->q);
	return PV_PASS;
}

static enum proto_verdict
smtp_input(void *st, enum proto_dir dir, const char *p, size_t len, bool full,
           struct proto_action *act, char *scratch)
{
	struct smtp_state *s = st;

	return dir == PROTO_FROM_CLIENT ? client_input(s, p, len, full, act, scratch)
	                                : server_input(s, p, len, full, act, scratch);
}

/* ---- client role: STARTTLS towards the backend (RFC 3207) ---- */

enum { UP_GREETING, UP_EHLO, UP_STARTTLS, UP_EHLO_TLS, UP_XCLIENT };

struct smtp_up {
	int phase;
	bool offers_starttls, offers_xclient;
	bool starttls; /* the STARTTLS dialogue (backend_tls = starttls) */
	char helo[256];
	char xclient[256]; /* "XCLIENT ...\r\n" to send; empty: none */
};

static void
smtp_up_start(void *st, const char *helo, struct proto_action *act, char *scratch)
{
	struct smtp_up *u = st;

	(void)scratch;
	pu_up_begin(u, sizeof(*u), act);
	u->starttls = true;
	snprintf(u->helo, sizeof(u->helo), "%s", helo);
}

static void
smtp_up_xclient(void *st, const char *args, bool starttls)
{
	struct smtp_up *u = st;

	u->starttls = starttls;
	snprintf(u->xclient, sizeof(u->xclient), "XCLIENT %s\r\n", args);
}

/* The last EHLO reply is in: XCLIENT if asked and offered, else the
 * client is relayed now, with a greeting of postern's. */
static enum proto_up
up_ready(struct smtp_up *u, size_t n, struct proto_action *act, char *scratch)
{
	if (u->xclient[0] && u->offers_xclient) {
		u->phase = UP_XCLIENT;
		return pu_up(act, n, u->xclient, PU_UP_SEND);
	}
	if (u->xclient[0])
		act->event = "xclient-not-offered";
	act->consume = n;
	pu_answer(act, PV_PASS, n, scratch, "220 %s ESMTP ready\r\n", u->helo);
	return PU_UP_DONE;
}

static void
smtp_up_tls_done(void *st, struct proto_action *act, char *scratch)
{
	struct smtp_up *u = st;

	/* RFC 3207 4.2: everything known before TLS is discarded; EHLO again. */
	u->phase = UP_EHLO_TLS;
	u->offers_xclient = false; /* what the EHLO inside TLS offers counts */
	pu_answer(act, PV_PASS, 0, scratch, "EHLO %s\r\n", u->helo);
}

static enum proto_up
smtp_upstream(void *st, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	struct smtp_up *u = st;
	size_t n = pu_line_len(p, len);

	if (n == 0)
		return full ? pu_up(act, 0, "line too long", PU_UP_FAIL) : PU_UP_MORE;
	size_t body = pu_trim_eol(p, n);
	bool more = body >= 4 && p[3] == '-';
	int code = body >= 3 ? (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0') : 0;

	if (u->phase == UP_EHLO || u->phase == UP_EHLO_TLS) {
		const char *q = p + (body >= 4 ? 4 : body);
		struct pu_word w = pu_next_word(&q, p + body);
		if (code == 250 && pu_word_is(w, "STARTTLS"))
			u->offers_starttls = true;
		if (code == 250 && pu_word_is(w, "XCLIENT"))
			u->offers_xclient = true;
	}
	if (more) /* C11: a reply ends with its last line, in whatever segment */
		return pu_up(act, n, "", PU_UP_SEND);
	switch (u->phase) {
	case UP_GREETING:
		if (code != 220)
			return pu_up(act, n, "greeting refused", PU_UP_FAIL); /* C12 */
		u->phase = UP_EHLO;
		act->consume = n;
		pu_answer(act, PV_PASS, n, scratch, "EHLO %s\r\n", u->helo);
		return PU_UP_SEND;
	case UP_EHLO:
		if (code != 250)
			return pu_up(act, n, "EHLO refused", PU_UP_FAIL);
		if (!u->starttls)
			return up_ready(u, n, act, scratch);
		if (!u->offers_starttls) /* C1 */
			return pu_up(act, n, "server does not offer STARTTLS", PU_UP_FAIL);
		u->phase = UP_STARTTLS;
		return pu_up(act, n, "STARTTLS\r\n", PU_UP_SEND);
	case UP_STARTTLS:
		if (code != 220)
			return pu_up(act, n, "STARTTLS refused", PU_UP_FAIL); /* C2 */
		act->consume = n;
		return PU_UP_TLS;
	case UP_EHLO_TLS:
		if (code != 250)
			return pu_up(act, n, "EHLO after TLS refused", PU_UP_FAIL);
		return up_ready(u, n, act, scratch);
	default:                   /* UP_XCLIENT: the server starts afresh with a greeting */
		if (code != 220) { /* the reply says why: the log shows it (escaped) */
			pu_answer(act, PV_PASS, n, scratch, "XCLIENT refused: %.*s",
			          (int)(body < 200 ? body : 200), p);
			return PU_UP_FAIL;
		}
		act->consume = n;
		pu_answer(act, PV_PASS, n, scratch, "%.*s\r\n", (int)body, p);
		return PU_UP_DONE;
	}
}

static void
smtp_login_send(void *st, const char *mech, const char *blob, size_t len, struct proto_action *act,
                char *scratch)
{
	struct smtp_state *s = st;

	pl_send(&s->ol, mech, blob, len, act, scratch);
	pu_queue_push(&s->q, K_OAUTH);
}

static void
smtp_login_fail(void *st, enum proto_login_fail why, struct proto_action *act, char *scratch)
{
	struct smtp_state *s = st;

	pl_fail(&s->ol, &smtp_words, why, act, scratch);
}

const struct proto_ops proto_smtp = {
        .name = "smtp",
        .alpn = "smtp",
        .reply =
                {
                        [PROTO_REPLY_BUSY] = "421 4.3.2 Too many connections, try again later\r\n",
                        [PROTO_REPLY_BACKEND_DOWN] =
                                "421 4.4.1 Mail server unavailable, try again later\r\n",
                        [PROTO_REPLY_SHUTDOWN] = "421 4.3.2 Server shutting down\r\n",
                        [PROTO_REPLY_TIMEOUT] =
                                "421 4.4.2 Timeout: STARTTLS not completed in time\r\n",
                },
        .state_size = sizeof(struct smtp_state),
        .init = smtp_init,
        .input = smtp_input,
        .tls_started = smtp_tls_started,
        .up_state_size = sizeof(struct smtp_up),
        .up_start = smtp_up_start,
        .upstream = smtp_upstream,
        .up_tls_done = smtp_up_tls_done,
        .up_xclient = smtp_up_xclient,
        .login_send = smtp_login_send,
        .login_fail = smtp_login_fail,
};
