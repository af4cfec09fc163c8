/* POP3 (RFC 1939, CAPA RFC 2449, STLS RFC 2595). Responses carry no tags,
 * so postern keeps a queue of the commands in flight: it tells which
 * responses are multi-line (and end with "."), and a local answer waits
 * until every earlier command has been answered, keeping the order. */
#include <string.h>

#include <postern/proto_auth.h>
#include <postern/proto_cmd.h>
#include <postern/proto_login.h>
#include <postern/proto_util.h>

enum pop3_kind {
	K_SIMPLE, /* one status line */
	K_MULTI,  /* status line, then a body ending with "." if +OK */
	K_CAPA,   /* multi-line, and rewritten */
	K_AUTH,   /* "+ " challenges until a status line */
	K_LOGIN,  /* PASS or APOP: its status line is a login's verdict */
	K_OAUTH   /* postern's own AUTH (backend_auth = oauth2) */
};

enum {
	F_MULTI = PU_OWN,             /* multi-line response */
	F_MULTI_NOARGS = PU_OWN << 1, /* multi-line when given no argument */
	F_CAPA = PU_OWN << 2,
	F_KNOWN = PU_OWN << 3, /* nothing special, but a command (RFC 1939) */
	F_USER = PU_OWN << 4,  /* names the user of the next PASS (or APOP) */
	F_LOGIN = PU_OWN << 5  /* a login attempt: PASS, APOP */
};

static const struct pu_verb pop3_verbs[] = {
        {"STLS", PU_STARTTLS | PU_PLAIN},
        {"QUIT", PU_PLAIN},
        {"USER", PU_REFUSE_PLAIN | F_USER},
        {"PASS", PU_REFUSE_PLAIN | PU_HIDE_ARGS | F_LOGIN},
        {"APOP", PU_REFUSE_PLAIN | PU_HIDE_AFTER_ARG | F_USER | F_LOGIN},
        {"AUTH", PU_REFUSE_PLAIN | PU_SASL | F_MULTI_NOARGS | PU_HIDE_AFTER_ARG},
        {"XCLIENT", PU_FORWARDING},
        {"CAPA", F_CAPA | PU_PLAIN},
        {"RETR", F_MULTI},
        {"TOP", F_MULTI},
        {"LIST", F_MULTI_NOARGS},
        {"UIDL", F_MULTI_NOARGS},
        {"STAT", F_KNOWN},
        {"DELE", F_KNOWN},
        {"NOOP", F_KNOWN},
        {"RSET", F_KNOWN},
        {NULL, 0},
};

struct pop3_state {
	struct pu_adapter a; /* SASL challenges: "+" lines */
	bool c_midline, s_midline;
	bool c_skip;           /* the rest of a command line too long to judge */
	uint64_t s_body_bytes; /* of the multi-line body passing, for the log */
	bool s_body;           /* inside a multi-line body */
	bool s_capa;           /* ... of a CAPA response */
	struct pu_queue q;     /* commands awaiting their reply */
	struct pa_login auth;  /* the login attempt in flight, for the auth line */
	bool login;            /* backend_auth = oauth2: postern answers logins */
	struct pl_login ol;
};

static const struct pl_words pop3_words = {
        .go = "+ ",
        .cancelled = "-ERR Authentication cancelled",
        .bad = "-ERR Invalid AUTH PLAIN response",
        .no_mech = "-ERR Unsupported mechanism: use PLAIN, or USER and PASS",
        .fail =
                {
                        [PROTO_LOGIN_REFUSED] = "-ERR [AUTH] Authentication failed",
                        [PROTO_LOGIN_REVOKED] = "-ERR [AUTH] Authentication failed: the account "
                                                "must be authorized again",
                        [PROTO_LOGIN_TEMPORARY] = "-ERR [SYS/TEMP] Authentication service "
                                                  "unavailable, try again later",
                },
};

static void
pop3_init(void *st, const struct proto_conf *conf)
{
	struct pop3_state *s = st;

	pu_adapter_init(s, sizeof(*s), conf);
	pu_queue_push(&s->q, K_SIMPLE); /* the greeting */
	s->login = conf->backend_login;
	s->ol.auth = &s->auth;
}

static void
pop3_tls_started(void *st)
{
	struct pop3_state *s = st;

	pu_adapter_tls_started(&s->a);
	s->c_midline = s->c_skip = false;
}

static enum proto_verdict
local(struct pop3_state *s, struct proto_action *act, size_t n, char *scratch, const char *text)
{
	/* Answer only once every earlier command has its answer. */
	if (s->q.count > 0 || s->s_body || s->s_midline)
		return PV_WAIT;
	return pu_answer(act, PV_REPLY, n, scratch, "%s\r\n", text);
}

static const struct pc_replies pop3_replies = {
        .need_tls = "-ERR Use STLS first (plaintext authentication is disabled)",
        .bad_char = "-ERR Invalid character in command",
        .tls_active = "-ERR TLS is already active",
        .tls_args = "-ERR STLS takes no arguments",
        .tls_go = "+OK Begin TLS negotiation now",
        .forwarding = "-ERR Not relayed: only the proxy may send this",
};

/* USER names the user, PASS and APOP try it, AUTH's mechanism and
 * initial response say how to find it. */
static void
auth_sent(struct pa_login *l, unsigned flags, const char *q, const char *end)
{
	struct pu_word w = pu_next_token(&q, end);

	if (flags & F_USER)
		pa_user(l, w.p, w.n);
	if (flags & F_LOGIN) {
		pa_begin(l, NULL, 0);
	} else if (flags & PU_SASL) {
		struct pu_word ir = pu_next_token(&q, end);
		pa_begin_sasl(l, NULL, 0, w, ir.p, ir.n);
	}
}

/* backend_auth = oauth2: USER, PASS and AUTH answered by postern. */
static enum proto_verdict
own_login(struct pop3_state *s, const char *p, size_t n, unsigned flags, const char *args,
          struct proto_action *act, char *scratch)
{
	const char *end = p + pu_trim_eol(p, n), *q = args;
	struct pu_word w = pu_next_token(&q, end);

	if (s->q.count > 0 || s->s_body || s->s_midline || pa_full(&s->auth))
		return PV_WAIT;            /* answered in turn */
	if ((flags & PU_SASL) && w.n == 0) /* the mechanisms on offer */
		return pu_answer(act, PV_REPLY, n, scratch, "+OK\r\nPLAIN\r\n.\r\n");
	if (flags & PU_SASL)
		return pl_auth(&s->ol, &pop3_words, w, pu_next_token(&q, end), n, act, scratch);
	if ((flags & F_LOGIN) && (flags & F_USER)) /* APOP: no password to give */
		return local(s, act, n, scratch, "-ERR APOP is not offered: use USER and PASS");
	if (flags & F_USER) {
		if (w.n == 0 || w.n > PL_USER_MAX || q < end)
			return local(s, act, n, scratch, "-ERR Invalid user name");
		memcpy(s->ol.user, w.p, w.n);
		s->ol.user_len = (unsigned char)w.n;
		return local(s, act, n, scratch, "+OK");
	}
	/* PASS: the rest of the line, spaces included, as servers read it */
	if (s->ol.user_len == 0)
		return local(s, act, n, scratch, "-ERR USER first");
	if ((size_t)(end - args) > PL_PASS_MAX)
		return local(s, act, n, scratch, "-ERR [AUTH] Authentication failed");
	return pl_login_kept(&s->ol, n, (struct pu_word){args, (size_t)(end - args)}, act);
}

static enum proto_verdict
command(void *st, const char *p, size_t n, unsigned flags, const char *args,
        struct proto_action *act, char *scratch)
{
	struct pop3_state *s = st;
	size_t body = pu_trim_eol(p, n);
	bool noargs = args == p + body;
	struct pc_ruling r = pc_rule(&s->a, flags, p, body, noargs, &pop3_replies);

	if (r.rule == PC_REFUSE) {
		enum proto_verdict v = local(s, act, n, scratch, r.text);
		if (v == PV_REPLY)
			act->event = r.event;
		return v;
	}
	if (r.rule == PC_STARTTLS) {
		if (s->q.count > 0 || s->s_body || s->s_midline)
			return PV_WAIT;
		return pu_answer(act, PV_STARTTLS, n, scratch, "%s\r\n", r.text);
	}
	/* Once logged in, a login's password is the key of the token file:
	 * it never reaches the server. */
	if (s->login && s->ol.done && (flags & (F_USER | F_LOGIN | PU_SASL)))
		return local(s, act, n, scratch, "-ERR Already authenticated");
	if (s->login && (flags & (F_USER | F_LOGIN | PU_SASL)))
		return own_login(s, p, n, flags, args, act, scratch);
	bool sasl = (flags & PU_SASL) && !noargs; /* AUTH alone lists the mechanisms */
	if (((flags & F_LOGIN) || sasl) && pa_full(&s->auth))
		return PV_WAIT; /* a verdict makes room */
	if ((flags & (F_LOGIN | F_USER)) || sasl)
		auth_sent(&s->auth, flags, args, p + body);
	if (flags & F_LOGIN)
		pu_queue_push(&s->q, K_LOGIN);
	else if (flags & F_CAPA)
		pu_queue_push(&s->q, K_CAPA);
	else if ((flags & F_MULTI) || ((flags & F_MULTI_NOARGS) && noargs))
		pu_queue_push(&s->q, K_MULTI); /* AUTH alone lists the mechanisms */
	else if (flags & PU_SASL) {
		pu_queue_push(&s->q, K_AUTH);
		s->a.c_auth = s->a.c_auth_wait = true;
	} else
		pu_queue_push(&s->q, K_SIMPLE);
	return PV_PASS;
}

static enum proto_verdict
client_input(struct pop3_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->a.c_auth_wait || pl_busy(&s->ol))
		return PV_WAIT;
	if (s->c_skip) {
		size_t n = pc_skip_tail(p, len, act);
		if (n == 0)
			return PV_DROP;
		enum proto_verdict v = local(s, act, n, scratch, "-ERR Line too long");
		s->c_skip = v == PV_WAIT;
		return v;
	}
	size_t n;
	enum pu_frame f = pu_frame(&s->c_midline, p, len, full, act, &n);

	if (f == PF_MIDLINE && s->a.c_auth && n > 0)
		s->a.c_auth_wait = true;
	if (f == PF_LONG && !s->a.c_auth) {
		if (!s->a.tls)
			return pu_answer(act, PV_CLOSE, len, scratch, "-ERR Line too long\r\n");
		/* A command too long to judge is never relayed: dropped, then
		 * refused once its end has come. */
		s->c_skip = true;
		pl_line_dropped(&s->ol);
		if (s->a.observe)
			pc_log_unread(act, scratch, "line too long");
		return PV_DROP;
	}
	if (f != PF_LINE)
		return pu_frame_pass(&s->c_midline, f);
	if (pl_reading(&s->ol)) { /* a response to postern's own "+" */
		if (s->a.observe)
			pu_log_sasl(act, scratch, p, pu_trim_eol(p, n));
		return pl_response(&s->ol, &pop3_words, p, n, act, scratch);
	}
	return pc_command_line(&s->a, &s->q, &s->auth, pop3_verbs, command, s, p, n, act, scratch);
}

/* The end of a multi-line body completes its status line in the log. */
static void
body_end_log(struct pop3_state *s, struct proto_action *act, char *scratch)
{
	if (!s->a.observe)
		return;
	pu_log_begin(act, scratch, 0);
	pu_log_str(act, scratch, " ");
	pu_log_size(act, scratch, s->s_body_bytes);
}

/* One line of a CAPA body: drop what the client must not see, and add STLS
 * before the terminating dot while in plaintext. */
static enum proto_verdict
capa_line(struct pop3_state *s, const char *p, size_t n, struct proto_action *act, char *scratch)
{
	size_t body = pu_trim_eol(p, n);
	const char *q = p, *end = p + body;
	struct pu_word w = pu_next_word(&q, end);

	act->consume = n;
	if (body == 1 && p[0] == '.') {
		s->s_body = s->s_capa = false;
		pu_queue_pop(&s->q);
		body_end_log(s, act, scratch);
		bool offer = s->login && (s->a.tls || !s->a.require_tls);
		if (s->a.tls && !offer)
			return PV_PASS;
		return pu_answer(act, PV_REPLACE, n, scratch, "%s%s.\r\n",
		                 offer ? "USER\r\nSASL PLAIN\r\n" : "", s->a.tls ? "" : "STLS\r\n");
	}
	s->s_body_bytes += n;
	if (pu_word_is(w, "STLS") || pu_word_is(w, "XCLIENT"))
		return PV_DROP;
	if (s->login && (pu_word_is(w, "USER") || pu_word_is(w, "SASL")))
		return PV_DROP; /* postern's own offer comes at the end */
	if (!s->a.tls && s->a.require_tls && (pu_word_is(w, "USER") || pu_word_is(w, "SASL")))
		return PV_DROP;
	if (pu_word_is(w, "SASL")) { /* without mechanisms postern cannot relay */
		static const struct pu_caps mechs = {NULL, NULL, NULL};
		size_t m = pu_caps_rewrite(q, (size_t)(end - q), &mechs, scratch + 5,
		                           PROTO_SCRATCH - 7);
		if (m == 0)
			return PV_DROP;
		memcpy(scratch, "SASL ", 5);
		memcpy(scratch + 5 + m, "\r\n", 2);
		act->text = scratch;
		act->len = m + 7;
		return PV_REPLACE;
	}
	return PV_PASS;
}

static enum proto_verdict
server_input(struct pop3_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	size_t n;
	enum pu_frame f = pu_frame(&s->s_midline, p, len, full, act, &n);

	/* A status or CAPA line is short (RFC 2449: 512 bytes); one too long
	 * to hold could not be matched with its command (as in SMTP). Only a
	 * message's lines may be longer. */
	if (f == PF_LONG && (!s->s_body || s->s_capa))
		return pu_answer(act, PV_CLOSE, len, scratch,
		                 "-ERR Mail server reply too long\r\n");
	if (f != PF_LINE)
		return pu_frame_pass(&s->s_midline, f);
	if (s->s_capa)
		return capa_line(s, p, n, act, scratch);
	if (s->s_body) {
		if (pu_trim_eol(p, n) == 1 && p[0] == '.') {
			s->s_body = false;
			pu_queue_pop(&s->q);
			body_end_log(s, act, scratch);
		} else {
			s->s_body_bytes += n;
		}
		return PV_PASS;
	}
	size_t body = pu_trim_eol(p, n);
	if (s->a.observe) {
		pu_log_line(act, scratch, p, body, false, 0, 0);
		act->log_frame = 1; /* +OK, -ERR */
	}
	if (s->q.count == 0)
		return PV_PASS; /* unsolicited: not ours to judge */
	enum pop3_kind k = pu_queue_head(&s->q);
	bool status = n >= 3 && (strncmp(p, "+OK", 3) == 0 || strncmp(p, "-ER", 3) == 0);
	if (k == K_OAUTH && !status && p[0] == '+')
		return pl_challenge(&s->ol, n, act);
	if (k == K_OAUTH) {
		pl_ended(&s->ol, strncmp(p, "+OK", 3) == 0, act);
		pu_queue_pop(&s->q);
		return PV_PASS;
	}
	if (k == K_AUTH && n >= 1 && p[0] == '+' && (n < 3 || p[1] != 'O')) {
		act->log_flags |= PL_DEBUG;
		s->a.c_auth_wait = false; /* the client answers the challenge */
		return PV_PASS;
	}
	bool ok = n >= 3 && strncmp(p, "+OK", 3) == 0;
	if (ok && (k == K_MULTI || k == K_CAPA)) {
		s->s_body = true;
		s->s_capa = k == K_CAPA;
		s->s_body_bytes = 0;
		act->log_flags |= PL_CONT; /* the body's size completes the line */
	} else {
		if (k == K_AUTH)
			pu_sasl_ended(&s->a);
		if (k == K_AUTH || k == K_LOGIN)
			pa_end(&s->auth, NULL, 0, ok, act);
		pu_queue_pop(&s->q);
	}
	return PV_PASS;
}

static enum proto_verdict
pop3_input(void *st, enum proto_dir dir, const char *p, size_t len, bool full,
           struct proto_action *act, char *scratch)
{
	struct pop3_state *s = st;

	return dir == PROTO_FROM_CLIENT ? client_input(s, p, len, full, act, scratch)
	                                : server_input(s, p, len, full, act, scratch);
}

static void
pop3_login_send(void *st, const char *mech, const char *blob, size_t len, struct proto_action *act,
                char *scratch)
{
	struct pop3_state *s = st;

	pl_send(&s->ol, mech, blob, len, act, scratch);
	pu_queue_push(&s->q, K_OAUTH);
}

static void
pop3_login_fail(void *st, enum proto_login_fail why, struct proto_action *act, char *scratch)
{
	struct pop3_state *s = st;

	pl_fail(&s->ol, &pop3_words, why, act, scratch);
}

/* ---- client role: STLS towards the backend (RFC 2595 4) ---- */

enum { UP_GREETING, UP_CAPA, UP_CAPA_BODY, UP_STLS, UP_CAPA_TLS, UP_CAPA_TLS_BODY };

struct pop3_up {
	int phase;
	bool offers_stls;
};

static void
pop3_up_start(void *st, const char *helo, struct proto_action *act, char *scratch)
{
	(void)helo;
	(void)scratch;
	pu_up_begin(st, sizeof(struct pop3_up), act);
}

static void
pop3_up_tls_done(void *st, struct proto_action *act, char *scratch)
{
	struct pop3_up *u = st;

	(void)scratch;
	u->phase = UP_CAPA_TLS;
	act->text = "CAPA\r\n";
	act->len = 6;
}

static enum proto_up
pop3_upstream(void *st, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	struct pop3_up *u = st;
	size_t n = pu_line_len(p, len);

	if (n == 0) {
		if (!full)
			return PU_UP_MORE;
		return pu_up(act, 0, "line too long", PU_UP_FAIL);
	}
	size_t body = pu_trim_eol(p, n);
	bool ok = body >= 3 && memcmp(p, "+OK", 3) == 0;
	bool dot = body == 1 && p[0] == '.';

	switch (u->phase) {
	case UP_GREETING:
		if (!ok)
			return pu_up(act, n, "greeting refused", PU_UP_FAIL);
		u->phase = UP_CAPA;
		return pu_up(act, n, "CAPA\r\n", PU_UP_SEND);
	case UP_CAPA:
	case UP_CAPA_TLS:
		if (!ok)
			return pu_up(act, n, "CAPA refused", PU_UP_FAIL);
		u->phase = u->phase == UP_CAPA ? UP_CAPA_BODY : UP_CAPA_TLS_BODY;
		return pu_up(act, n, "", PU_UP_SEND);
	case UP_CAPA_BODY:
	case UP_CAPA_TLS_BODY:
		if (!dot) {
			const char *q = p;
			if (pu_word_is(pu_next_word(&q, p + body), "STLS"))
				u->offers_stls = true;
			return pu_up(act, n, "", PU_UP_SEND);
		}
		if (u->phase == UP_CAPA_TLS_BODY) {
			act->consume = n;
			/* postern's own words: the greeting, and with it any APOP
			 * challenge, came before TLS, where a man in the middle
			 * could have written it. */
			pu_answer(act, PV_PASS, n, scratch, "+OK ready\r\n");
			return PU_UP_DONE;
		}
		if (!u->offers_stls) /* C1 */
			return pu_up(act, n, "server does not offer STLS", PU_UP_FAIL);
		u->phase = UP_STLS;
		return pu_up(act, n, "STLS\r\n", PU_UP_SEND);
	default: /* UP_STLS */
		if (!ok)
			return pu_up(act, n, "STLS refused", PU_UP_FAIL); /* C2 */
		act->consume = n;
		return PU_UP_TLS;
	}
}

const struct proto_ops proto_pop3 = {
        .name = "pop3",
        .alpn = "pop3",
        .reply =
                {
                        [PROTO_REPLY_BUSY] =
                                "-ERR [SYS/TEMP] Too many connections, try again later\r\n",
                        [PROTO_REPLY_BACKEND_DOWN] =
                                "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n",
                        [PROTO_REPLY_SHUTDOWN] = "-ERR [SYS/TEMP] Server shutting down\r\n",
                        [PROTO_REPLY_TIMEOUT] =
                                "-ERR [SYS/TEMP] Timeout: STLS not completed in time\r\n",
                },
        .state_size = sizeof(struct pop3_state),
        .init = pop3_init,
        .input = pop3_input,
        .tls_started = pop3_tls_started,
        .up_state_size = sizeof(struct pop3_up),
        .up_start = pop3_up_start,
        .upstream = pop3_upstream,
        .up_tls_done = pop3_up_tls_done,
        .login_send = pop3_login_send,
        .login_fail = pop3_login_fail,
};
