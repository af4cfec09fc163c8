/* IMAP (RFC 9051/3501, STARTTLS per RFC 2595). Commands are tagged, so local
 * answers need no ordering against the backend's; what matters is framing:
 * literals ({N}, {N+}) are followed byte for byte so nothing inside one is
 * ever taken for a command, and a synchronising literal is only sent once
 * the server says "+". */
#include <string.h>
#include <strings.h>

#include <postern/proto_util.h>

#define TAG_MAX 64

/* Where the command being logged stands with respect to a password. */
enum { SEC_NONE, SEC_NEXT /* the next argument is secret */, SEC_REST /* all the rest is */ };

struct imap_state {
	bool require_tls, tls;  /* tls: the client's side is TLS (post-STARTTLS rules) */
	bool observe;           /* commands are logged: redact, and refuse COMPRESS */
	unsigned char c_secret; /* SEC_*, for the continuation lines of a command */
	bool c_id;              /* an ID command: its literals and lines are scrubbed */
	/* client -> server */
	uint64_t c_literal; /* literal bytes still to pass */
	bool c_cont;        /* the current command goes on after its literal */
	bool c_drop;        /* the current command is refused: swallow the rest */
	bool c_midline;     /* passing the tail of an over-long line */
	bool c_sync;        /* a synchronising literal awaits the server's verdict */
	bool c_auth;        /* AUTHENTICATE exchange: lines are SASL responses */
	bool c_idle;        /* IDLE sent: "DONE" ends it */
	uint64_t c_sync_len;
	unsigned inflight; /* forwarded commands not yet completed */
	char tag[TAG_MAX]; /* tag of the command whose completion we watch */
	size_t tag_len;
	/* server -> client */
	uint64_t s_literal;
	bool s_cont;
	bool s_midline;
	bool s_greeted; /* the greeting has passed: nothing may precede it */
};

enum {
	F_IDLE = PU_OWN,         /* its "DONE" line is no command */
	F_LOGIN = PU_OWN << 1,   /* LOGIN user password */
	F_ID = PU_OWN << 2,      /* RFC 2971: may carry forwarding fields */
	F_COMPRESS = PU_OWN << 3 /* RFC 4978: would blind the command log */
};

static const struct pu_verb imap_verbs[] = {
        {"STARTTLS", PU_STARTTLS},
        {"LOGIN", PU_REFUSE_PLAIN | F_LOGIN},
        {"AUTHENTICATE", PU_REFUSE_PLAIN | PU_SASL},
        {"IDLE", F_IDLE},
        {"ID", F_ID},
        {"COMPRESS", F_COMPRESS},
        {NULL, 0},
};

/* ID fields a backend such as Dovecot believes from trusted proxies: a
 * client must not be able to claim them through postern (P6). Their names
 * are defaced in place ("x-" becomes "y-"), which keeps literal sizes
 * right, so the backend sees unknown fields it ignores. RFC 2971 limits
 * ID strings to 1024 octets: a literal is scrubbed whole, in one piece. */
#define ID_LITERAL_MAX 1024
static const char *const id_forwarding[] = {"x-originating-", "x-connected-", "x-proxy-ttl",
                                            "x-session-",     "x-forward-",   NULL};

static const char *const imap_drop_always[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_auth_prefix[] = {"AUTH=", NULL};
static const char *const imap_auth_compress_prefix[] = {"AUTH=", "COMPRESS=", NULL};
static const char *const imap_compress_prefix[] = {"COMPRESS=", NULL};
static const char *const imap_add_login_disabled[] = {"STARTTLS", "LOGINDISABLED", NULL};
static const char *const imap_add_starttls[] = {"STARTTLS", NULL};

static void
imap_init(void *st, const struct proto_conf *conf)
{
	struct imap_state *s = st;

	memset(s, 0, sizeof(*s));
	/* Without STARTTLS offered, the client is TLS or postern's side to
	 * the backend is: the backend's own STARTTLS is hidden all the same. */
	s->tls = !conf->starttls;
	s->require_tls = conf->require_tls;
	s->observe = conf->observe;
}

static void
imap_tls_started(void *st)
{
	struct imap_state *s = st;

	s->tls = true;
	s->c_literal = 0;
	s->c_cont = s->c_drop = s->c_midline = s->c_sync = s->c_auth = false;
	s->c_secret = SEC_NONE;
	s->c_id = false;
}

/* The server side is between responses: a local answer may go in here. */
static bool
server_at_boundary(const struct imap_state *s)
{
	return s->s_literal == 0 && !s->s_cont && !s->s_midline;
}

static void
watch_tag(struct imap_state *s, struct pu_word tag)
{
	s->tag_len = tag.n < TAG_MAX ? tag.n : 0; /* an absurd tag is never matched */
	memcpy(s->tag, tag.p, s->tag_len);
}

static enum proto_verdict
pass(struct proto_action *act, size_t n)
{
	act->consume = n;
	return PV_PASS;
}

/* Local answer to a client command; swallows its non-synchronising
 * literal, if any (a synchronising one is never sent after a tagged reply). */
static enum proto_verdict
answer(struct imap_state *s, struct proto_action *act, size_t n, bool lit, bool sync,
       uint64_t lsize, char *scratch, const char *tag, size_t tagn, const char *text)
{
	if (!server_at_boundary(s))
		return PV_WAIT;
	if (lit && !sync) {
		s->c_drop = s->c_cont = true;
		s->c_literal = lsize;
	}
	if (tagn == 0) /* no usable tag: untagged */
		tag = "*", tagn = 1;
	return pu_answer(act, PV_REPLY, n, scratch, "%.*s %s\r\n", (int)tagn, tag, text);
}

/* End of the first argument of LOGIN at Q: an atom, or a quoted string
 * with its escapes; NULL if it does not end on this line. */
static const char *
login_user_end(const char *q, const char *end)
{
	if (q < end && *q == '"') {
		for (q++; q < end; q++) {
			if (*q == '\\')
				q++;
			else if (*q == '"')
				return q + 1;
		}
		return NULL;
	}
	const char *sp = memchr(q, ' ', (size_t)(end - q));
	return sp ? sp : NULL;
}

/* The command log's view of a command line: the password of LOGIN and
 * whatever follows the mechanism of AUTHENTICATE become "***", and
 * c_secret says what to hide of the continuation lines. */
static void
log_command(struct imap_state *s, const char *p, size_t body, bool lit, uint64_t lsize,
            struct proto_action *act, char *scratch)
{
	const char *q = p, *end = p + body;

	s->c_secret = SEC_NONE;
	pu_next_word(&q, end);
	struct pu_word verb = pu_next_word(&q, end);
	unsigned flags = pu_verb_flags(imap_verbs, verb);
	if (memchr(p, '\t', (size_t)(verb.p + verb.n - p))) { /* see pu_log_command */
		pu_log_begin(act, scratch, lit ? PL_CONT : 0);
		pu_log_str(act, scratch, PU_SECRET);
		s->c_secret = SEC_REST;
		return;
	}
	if (!(flags & (F_LOGIN | PU_SASL))) {
		pu_log_line(act, scratch, p, body, lit, lsize, 0);
		return;
	}
	pu_log_begin(act, scratch, lit ? PL_CONT : 0);
	pu_log_put(act, scratch, p, (size_t)(q - p)); /* "tag VERB " */
	s->c_secret = lit ? SEC_REST : SEC_NONE;
	if (flags & PU_SASL) { /* the mechanism, then an initial response */
		struct pu_word mech = pu_next_word(&q, end);
		pu_log_put(act, scratch, mech.p, mech.n);
		if (q < end)
			pu_log_str(act, scratch, " " PU_SECRET);
		return;
	}
	const char *user = q;
	if (lit && (*user == '{' || *user == '~')) { /* the user name is a literal */
		pu_log_size(act, scratch, lsize);
		s->c_secret = SEC_NEXT;
		return;
	}
	const char *user_end = login_user_end(user, end);
	if (user_end)
		pu_log_put(act, scratch, user, (size_t)(user_end - user));
	pu_log_str(act, scratch, user_end ? " " PU_SECRET : PU_SECRET);
}

/* A line that continues a command after its literal, or a SASL response. */
static void
log_continuation(struct imap_state *s, const char *p, size_t body, bool lit, uint64_t lsize,
                 struct proto_action *act, char *scratch)
{
	if (s->c_auth && !s->c_cont) {
		pu_log_sasl(act, scratch, p, body);
		return;
	}
	if (s->c_secret == SEC_NONE) {
		pu_log_line(act, scratch, p, body, lit, lsize, 0);
		return;
	}
	pu_log_begin(act, scratch, lit ? PL_CONT : 0);
	if (s->c_secret == SEC_NEXT)
		pu_log_str(act, scratch, " " PU_SECRET);
	s->c_secret = lit ? SEC_REST : SEC_NONE;
}

/* Forwards N bytes of an ID command with forwarding field names defaced. */
static enum proto_verdict
scrub_id(const char *p, size_t n, struct proto_action *act, char *scratch)
{
	bool hit = false;

	act->consume = n;
	for (const char *const *f = id_forwarding; *f; f++)
		hit |= pu_contains_ci(p, n, *f);
	if (!hit)
		return PV_PASS;
	memcpy(scratch, p, n);
	for (const char *const *f = id_forwarding; *f; f++) {
		size_t l = strlen(*f);
		for (size_t i = 0; l <= n && i <= n - l; i++)
			if (strncasecmp(scratch + i, *f, l) == 0)
				scratch[i] = 'y';
	}
	act->text = scratch;
	act->len = n;
	return PV_REPLACE;
}

static enum proto_verdict command(struct imap_state *s, const char *p, size_t n, size_t body,
                                  int lit, bool sync, uint64_t lsize, struct proto_action *act,
                                  char *scratch);

static enum proto_verdict
client_input(struct imap_state *s, const char *p, size_t len, bool full, struct proto_action *act,
             char *scratch)
{
	if (s->c_literal > 0) {
		size_t n = len < s->c_literal ? len : (size_t)s->c_literal;
		if (s->c_id && !s->c_drop) {
			if (n < s->c_literal && !full)
				return PV_MORE; /* a key must not hide across reads */
			s->c_literal -= n;
			return scrub_id(p, n, act, scratch);
		}
		s->c_literal -= n;
		act->consume = n;
		return s->c_drop ? PV_DROP : PV_PASS;
	}
	if (s->c_sync || !s->s_greeted)
		return PV_WAIT;
	size_t n = pu_line_len(p, len);
	if (s->c_midline) {
		s->c_midline = n == 0;
		return pass(act, n ? n : len);
	}
	if (n == 0) {
		if (!full)
			return PV_MORE;
		if (!s->tls)
			return pu_answer(act, PV_CLOSE, len, scratch, "* BYE Line too long\r\n");
		s->c_midline = true;
		return pass(act, len);
	}
	size_t body = pu_trim_eol(p, n);
	uint64_t lsize = 0;
	bool sync = false;
	int lit = pu_imap_literal(p, body, &lsize, &sync);
	if (lit < 0)
		return pu_answer(act, PV_CLOSE, n, scratch, "* BYE Invalid literal\r\n");

	if (s->c_cont || s->c_auth) {
		/* The rest of a command after a literal, or a SASL response. */
		bool drop = s->c_drop;
		if (s->observe)
			log_continuation(s, p, body, lit == 1, lsize, act, scratch);
		if (s->c_cont) {
			s->c_cont = lit == 1;
			s->c_drop = s->c_cont && drop;
			if (lit == 1 && sync && !drop) {
				s->c_sync = true;
				s->c_sync_len = lsize;
			} else if (lit == 1) {
				s->c_literal = lsize;
			}
		}
		act->consume = n;
		if (!drop && s->c_id) {
			if (lit == 1 && lsize > ID_LITERAL_MAX) /* see ID_LITERAL_MAX */
				return pu_answer(act, PV_CLOSE, n, scratch,
				                 "* BYE ID string too long\r\n");
			return scrub_id(p, n, act, scratch);
		}
		return drop ? PV_DROP : PV_PASS;
	}
	enum proto_verdict v = command(s, p, n, body, lit, sync, lsize, act, scratch);
	if (s->observe && v != PV_WAIT && v != PV_MORE)
		log_command(s, p, body, lit == 1, lsize, act, scratch);
	return v;
}

static enum proto_verdict
command(struct imap_state *s, const char *p, size_t n, size_t body, int lit, bool sync,
        uint64_t lsize, struct proto_action *act, char *scratch)
{
	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);

	if (s->c_idle && pu_word_is(tag, "DONE") && q == end) {
		s->c_idle = false;
		return pass(act, n);
	}
	/* RFC 9051: a tag is one or more characters, never "*" or "+". */
	if (tag.n == 0 || memchr(tag.p, '*', tag.n) || memchr(tag.p, '+', tag.n) ||
	    memchr(tag.p, '\0', tag.n))
		return answer(s, act, n, lit, sync, lsize, scratch, "*", 1, "BAD Invalid tag");
	if (!s->tls && memchr(p, '\0', body) != NULL)
		return answer(s, act, n, lit, sync, lsize, scratch, tag.p,
		              memchr(tag.p, '\0', tag.n) ? 0 : tag.n, "BAD NUL byte in command");
	unsigned flags = pu_verb_flags(imap_verbs, pu_next_word(&q, end));
	bool noargs = pu_blank(q, end);

	if (flags & PU_STARTTLS) {
		if (s->tls)
			return answer(s, act, n, lit, sync, lsize, scratch, tag.p, tag.n,
			              "BAD TLS is already active");
		if (!noargs || lit)
			return answer(s, act, n, lit, sync, lsize, scratch, tag.p, tag.n,
			              "BAD STARTTLS takes no arguments");
		/* Replies to earlier commands must arrive in plaintext, before ours. */
		if (!server_at_boundary(s) || s->inflight > 0)
			return PV_WAIT;
		return pu_answer(act, PV_STARTTLS, n, scratch,
		                 "%.*s OK Begin TLS negotiation now\r\n", (int)tag.n, tag.p);
	}
	if (!s->tls && s->require_tls && (flags & PU_REFUSE_PLAIN)) {
		act->event = "plaintext-auth-refused";
		return answer(s, act, n, lit, sync, lsize, scratch, tag.p, tag.n,
		              "NO [PRIVACYREQUIRED] Use STARTTLS first");
	}
	if ((flags & F_COMPRESS) && s->observe)
		return answer(s, act, n, lit, sync, lsize, scratch, tag.p, tag.n,
		              "NO COMPRESS is off while commands are logged");
	if ((flags & F_ID) && lit == 1 && lsize > ID_LITERAL_MAX)
		return answer(s, act, n, lit, sync, lsize, scratch, tag.p, tag.n,
		              "BAD ID string too long");
	if (flags & PU_SASL) {
		s->c_auth = true;
		watch_tag(s, tag);
	}
	s->c_idle = (flags & F_IDLE) != 0;
	s->c_id = (flags & F_ID) != 0;
	s->inflight++;
	if (lit == 1) {
		s->c_cont = true;
		if (sync) {
			s->c_sync = true;
			s->c_sync_len = lsize;
			watch_tag(s, tag);
		} else {
			s->c_literal = lsize;
		}
	}
	return s->c_id ? scrub_id(p, n, act, scratch) : pass(act, n);
}

/* Rewrites a capability list found at [caps, caps+capn) inside LINE. */
static enum proto_verdict
rewrite_caps(const struct imap_state *s, const char *line, size_t n, const char *caps, size_t capn,
             struct proto_action *act, char *scratch)
{
	struct pu_caps pre = {imap_drop_always,
	                      s->observe ? imap_auth_compress_prefix : imap_auth_prefix,
	                      s->require_tls ? imap_add_login_disabled : imap_add_starttls};
	struct pu_caps post = {imap_drop_always, s->observe ? imap_compress_prefix : NULL, NULL};
	size_t head = (size_t)(caps - line), at;

	memcpy(scratch, line, head);
	/* Room for the list: the scratch less what stays of the line around it. */
	at = head + pu_caps_rewrite(caps, capn, s->tls ? &post : &pre, scratch + head,
	                            PROTO_SCRATCH - n + capn);
	memcpy(scratch + at, caps + capn, n - head - capn);
	act->consume = n;
	act->text = scratch;
	act->len = at + n - head - capn;
	return PV_REPLACE;
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
	if (n == 0 && !full && !s->s_midline)
		return PV_MORE;
	s->s_greeted = true; /* even an over-long greeting counts */
	if (s->s_midline) {
		s->s_midline = n == 0;
		return pass(act, n ? n : len);
	}
	if (n == 0) {
		if (!full)
			return PV_MORE;
		s->s_midline = true;
		return pass(act, len);
	}
	size_t body = pu_trim_eol(p, n);
	uint64_t lsize = 0;
	bool sync = false;
	bool was_cont = s->s_cont;

	if (pu_imap_literal(p, body, &lsize, &sync) == 1) {
		s->s_literal = lsize;
		s->s_cont = true;
	} else {
		s->s_cont = false;
	}
	if (s->observe) { /* tagged completions matter most; the rest is debug */
		bool untagged =
		        body >= 1 && (p[0] == '*' || p[0] == '+') && (body == 1 || p[1] == ' ');
		pu_log_line(act, scratch, p, body, s->s_cont, lsize, untagged ? PL_DEBUG : 0);
	}
	if (was_cont)
		return pass(act, n);

	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	if (tag.n == 1 && tag.p[0] == '+') {
		if (s->c_sync) { /* the server accepts the literal */
			s->c_sync = false;
			s->c_literal = s->c_sync_len;
		}
		return pass(act, n);
	}
	bool tagged = !(tag.n == 1 && tag.p[0] == '*');
	if (tagged && s->inflight > 0)
		s->inflight--;
	if (tagged && s->tag_len == tag.n && memcmp(tag.p, s->tag, tag.n) == 0) {
		/* The watched command completed: a refused literal is never sent. */
		if (s->c_sync) {
			s->c_sync = false;
			s->c_cont = false;
		}
		s->c_auth = false;
		s->tag_len = 0;
	}
	if (s->s_cont)
		return pass(act, n);
	/* "* CAPABILITY ..." or a [CAPABILITY ...] response code. */
	struct pu_word w = pu_next_word(&q, end);
	if (tag.n == 1 && tag.p[0] == '*' && pu_word_is(w, "CAPABILITY"))
		return rewrite_caps(s, p, n, q, (size_t)(end - q), act, scratch);
	const char *code = memchr(p, '[', body);
	if (code && (size_t)(end - code) > 12 && strncasecmp(code, "[CAPABILITY ", 12) == 0) {
		const char *close = memchr(code, ']', (size_t)(end - code));
		if (close)
			return rewrite_caps(s, p, n, code + 12, (size_t)(close - code - 12), act,
			                    scratch);
	}
	return pass(act, n);
}

static enum proto_verdict
imap_input(void *st, enum proto_dir dir, const char *p, size_t len, bool full,
           struct proto_action *act, char *scratch)
{
	struct imap_state *s = st;

	return dir == PROTO_FROM_CLIENT ? client_input(s, p, len, full, act, scratch)
	                                : server_input(s, p, len, full, act, scratch);
}

/* ---- client role: STARTTLS towards the backend (RFC 2595 3.1) ---- */

enum { UP_GREETING, UP_CAPA, UP_STARTTLS, UP_CAPA_TLS };

struct imap_up {
	int phase;
	bool offers_starttls;
	size_t caps_len; /* capabilities learnt after TLS, in caps */
	char caps[1024];
};

static void
imap_up_start(void *st, const char *helo, struct proto_action *act, char *scratch)
{
	(void)helo;
	(void)scratch;
	memset(st, 0, sizeof(struct imap_up));
	act->text = "";
	act->len = 0;
}

static void
imap_up_tls_done(void *st, struct proto_action *act, char *scratch)
{
	struct imap_up *u = st;

	(void)scratch;
	/* C5: nothing learnt in plaintext is kept; ask again inside TLS. */
	u->phase = UP_CAPA_TLS;
	u->offers_starttls = false;
	act->text = "P3 CAPABILITY\r\n";
	act->len = strlen(act->text);
}

static enum proto_up
up_fail(struct proto_action *act, char *scratch, const char *why, const char *line, size_t n)
{
	pu_answer(act, PV_CLOSE, 0, scratch, "%s: \"%.*s\"", why, (int)(n < 80 ? n : 80), line);
	return PU_UP_FAIL;
}

static enum proto_up
imap_upstream(void *st, const char *p, size_t len, bool full, struct proto_action *act,
              char *scratch)
{
	struct imap_up *u = st;
	size_t n = pu_line_len(p, len);

	if (n == 0)
		return full ? up_fail(act, scratch, "line too long", p, len) : PU_UP_MORE;
	size_t body = pu_trim_eol(p, n);
	const char *q = p, *end = p + body;
	struct pu_word tag = pu_next_word(&q, end);
	struct pu_word w = pu_next_word(&q, end);
	bool untagged = tag.n == 1 && tag.p[0] == '*';

	switch (u->phase) {
	case UP_GREETING:
		if (untagged && pu_word_is(w, "OK")) {
			u->phase = UP_CAPA;
			return pu_up(act, n, "P1 CAPABILITY\r\n", PU_UP_SEND);
		}
		if (untagged && pu_word_is(w, "PREAUTH")) /* C3: STARTTLS impossible */
			return up_fail(act, scratch, "PREAUTH greeting, STARTTLS impossible", p,
			               body);
		return up_fail(act, scratch, "greeting refused", p, body);
	case UP_CAPA:
	case UP_CAPA_TLS:
		if (untagged && pu_word_is(w, "CAPABILITY")) {
			const char *c = q;
			while (c < end) {
				struct pu_word cap = pu_next_word(&c, end);
				if (pu_word_is(cap, "STARTTLS"))
					u->offers_starttls = true;
			}
			if (u->phase == UP_CAPA_TLS) {
				static const char *const drop[] = {"STARTTLS", "LOGINDISABLED",
				                                   NULL};
				struct pu_caps pc = {drop, NULL, NULL};
				u->caps_len = pu_caps_rewrite(q, (size_t)(end - q), &pc, u->caps,
				                              sizeof(u->caps));
			}
			return pu_up(act, n, "", PU_UP_SEND);
		}
		if (untagged) /* C5: other untagged data before TLS is ignored */
			return pu_up(act, n, "", PU_UP_SEND);
		if (!pu_word_is(w, "OK"))
			return up_fail(act, scratch, "CAPABILITY failed", p, body);
		if (u->phase == UP_CAPA_TLS) {
			act->consume = n;
			pu_answer(act, PV_PASS, n, scratch, "* OK [CAPABILITY %.*s] ready\r\n",
			          (int)u->caps_len, u->caps);
			return PU_UP_DONE;
		}
		if (!u->offers_starttls) /* C1: stripped or absent: never plaintext */
			return up_fail(act, scratch, "server does not offer STARTTLS", p, body);
		u->phase = UP_STARTTLS;
		return pu_up(act, n, "P2 STARTTLS\r\n", PU_UP_SEND);
	default: /* UP_STARTTLS */
		if (untagged)
			return pu_up(act, n, "", PU_UP_SEND);
		if (tag.n == 2 && memcmp(tag.p, "P2", 2) == 0 && pu_word_is(w, "OK")) {
			act->consume = n;
			return PU_UP_TLS;
		}
		return up_fail(act, scratch, "STARTTLS refused", p, body); /* C2 */
	}
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
};
