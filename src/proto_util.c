#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <postern/proto_util.h>

size_t
pu_line_len(const char *p, size_t len)
{
	const char *nl = memchr(p, '\n', len);

	return nl ? (size_t)(nl - p) + 1 : 0;
}

size_t
pu_trim_eol(const char *p, size_t n)
{
	if (n > 0 && p[n - 1] == '\n')
		n--;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	return n;
}

struct pu_word
pu_next_word(const char **p, const char *end)
{
	struct pu_word w = {*p, 0};
	const char *sp = memchr(*p, ' ', (size_t)(end - *p));

	w.n = (size_t)((sp ? sp : end) - *p);
	*p = sp ? sp + 1 : end;
	return w;
}

static bool
is_white(char c)
{
	return c == ' ' || c == '\t';
}

struct pu_word
pu_next_token(const char **p, const char *end)
{
	const char *q = *p;
	struct pu_word w;

	while (q < end && is_white(*q))
		q++;
	w.p = q;
	while (q < end && !is_white(*q))
		q++;
	w.n = (size_t)(q - w.p);
	while (q < end && is_white(*q))
		q++;
	*p = q;
	return w;
}

bool
pu_one_word(const char *p, size_t n)
{
	const char *q = p;

	pu_next_token(&q, p + n);
	return q == p + n;
}

bool
pu_word_is(struct pu_word w, const char *lit)
{
	return w.n == strlen(lit) && strncasecmp(w.p, lit, w.n) == 0;
}

unsigned
pu_verb_flags(const struct pu_verb *table, struct pu_word w)
{
	for (; table->name; table++)
		if (pu_word_is(w, table->name))
			return table->flags;
	return 0;
}

bool
pu_blank(const char *p, const char *end)
{
	for (; p < end; p++)
		if (*p != ' ' && *p != '\t')
			return false;
	return true;
}

int
pu_imap_literal(const char *line, size_t n, uint64_t *size, bool *sync)
{
	size_t i;
	uint64_t v = 0, mul = 1;

	if (n < 3 || line[n - 1] != '}')
		return 0;
	i = n - 2;
	*sync = true;
	if (line[i] == '+') {
		*sync = false;
		i--;
	}
	size_t digits_end = i + 1;
	while (i > 0 && line[i] >= '0' && line[i] <= '9')
		i--;
	if (line[i] != '{')
		return 0;
	size_t ndig = digits_end - (i + 1);
	if (ndig == 0)
		return 0;
	if (ndig > 10)
		return -1;
	for (size_t k = digits_end; k > i + 1; k--) {
		v += (uint64_t)(line[k - 1] - '0') * mul;
		mul *= 10;
	}
	if (v > UINT32_MAX)
		return -1;
	*size = v;
	return 1;
}

bool
pu_cap_removed(struct pu_word w, const struct pu_caps *c)
{
	/* SASL channel binding (SCRAM-*-PLUS) binds to a TLS channel that
	 * ends at postern: the backend could never verify it (P1). */
	if (w.n > 5 && strncasecmp(w.p + w.n - 5, "-PLUS", 5) == 0)
		return true;
	for (const char *const *r = c->remove; r && *r; r++)
		if (pu_word_is(w, *r))
			return true;
	for (const char *const *r = c->remove_prefix; r && *r; r++) {
		size_t l = strlen(*r);
		if (w.n >= l && strncasecmp(w.p, *r, l) == 0)
			return true;
	}
	return false;
}

/* Appends a whole word (after a space unless first) or nothing: a word cut
 * at the end of DST could become another one ("STARTTLSX" -> "STARTTLS"). */
static size_t
put_word(char *dst, size_t cap, size_t at, const char *p, size_t n)
{
	size_t sep = at > 0;

	if (at + sep + n > cap)
		return at;
	memcpy(dst + at, " ", sep);
	memcpy(dst + at + sep, p, n);
	return at + sep + n;
}

/* A capability (IMAP capability, SASL mechanism) is an atom: a word with a
 * control, NUL, 8-bit byte or atom-special is no capability any client
 * would act on; a NUL would end the text early where it is printed with
 * %s, and a "]" would close a [CAPABILITY ...] response code early and
 * make what follows it read as capabilities. */
static bool
atom_word(struct pu_word w)
{
	for (size_t i = 0; i < w.n; i++) {
		unsigned char c = (unsigned char)w.p[i];
		if (c < 0x21 || c > 0x7e || strchr("()[]{}%*\"\\", c))
			return false;
	}
	return true;
}

size_t
pu_caps_rewrite(const char *p, size_t n, const struct pu_caps *c, char *dst, size_t cap)
{
	const char *end = p + n;
	size_t at = 0, reserve = 0;

	/* What postern adds (LOGINDISABLED before TLS) always finds room. */
	for (const char *const *a = c->add; a && *a; a++)
		reserve += strlen(*a) + 1;
	while (p < end) {
		struct pu_word w = pu_next_word(&p, end);
		if (w.n == 0 || !atom_word(w) || pu_cap_removed(w, c))
			continue;
		at = put_word(dst, cap > reserve ? cap - reserve : 0, at, w.p, w.n);
	}
	for (const char *const *a = c->add; a && *a; a++)
		at = put_word(dst, cap, at, *a, strlen(*a));
	return at;
}

enum proto_verdict
pu_answer(struct proto_action *act, enum proto_verdict v, size_t consume, char *scratch,
          const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(scratch, PROTO_SCRATCH, fmt, ap);
	va_end(ap);
	act->consume = consume;
	act->text = scratch;
	act->len = n < 0 ? 0 : (size_t)n < PROTO_SCRATCH ? (size_t)n : PROTO_SCRATCH - 1;
	return v;
}

void
pu_queue_push(struct pu_queue *q, int kind)
{
	if (q->count < PU_QUEUE_MAX)
		q->kind[(q->head + q->count++) % PU_QUEUE_MAX] = (unsigned char)kind;
}

void
pu_queue_pop(struct pu_queue *q)
{
	if (q->count > 0) {
		q->head = (q->head + 1) % PU_QUEUE_MAX;
		q->count--;
	}
}

enum proto_up
pu_up(struct proto_action *act, size_t consume, const char *text, enum proto_up r)
{
	act->consume = consume;
	act->text = text;
	act->len = strlen(text);
	return r;
}

void
pu_up_begin(void *st, size_t size, struct proto_action *act)
{
	memset(st, 0, size);
	pu_up(act, 0, "", PU_UP_SEND);
}

void
pu_log_begin(struct proto_action *act, char *scratch, unsigned flags)
{
	act->log = scratch + PROTO_SCRATCH;
	act->log_len = 0;
	act->log_flags = flags;
	act->log_frame = 0;
}

void
pu_log_put(struct proto_action *act, char *scratch, const char *p, size_t n)
{
	char *log = scratch + PROTO_SCRATCH;
	size_t room = PROTO_LOG_MAX - act->log_len;

	if (act->log == NULL)
		pu_log_begin(act, scratch, 0);
	if (n <= room) {
		memcpy(log + act->log_len, p, n);
		act->log_len += n;
		return;
	}
	/* Cut, and say so: a long line is never mistaken for a whole one. */
	memcpy(log + act->log_len, p, room);
	memcpy(log + PROTO_LOG_MAX - 3, "...", 3);
	act->log_len = PROTO_LOG_MAX;
}

void
pu_log_str(struct proto_action *act, char *scratch, const char *s)
{
	pu_log_put(act, scratch, s, strlen(s));
}

void
pu_log_size(struct proto_action *act, char *scratch, uint64_t n)
{
	char t[40];
	int r = snprintf(t, sizeof(t), "{%llu bytes}", (unsigned long long)n);

	pu_log_put(act, scratch, t, (size_t)r);
}

void
pu_log_line(struct proto_action *act, char *scratch, const char *p, size_t len, bool lit,
            uint64_t size, unsigned flags)
{
	pu_log_begin(act, scratch, flags);
	if (lit) {
		const char *brace = len ? memrchr(p, '{', len) : NULL;
		if (brace == NULL) /* a caller's mistake: show nothing of it */
			brace = p;
		if (brace > p && brace[-1] == '~') /* binary literal, RFC 3516 */
			brace--;
		pu_log_put(act, scratch, p, (size_t)(brace - p));
		pu_log_size(act, scratch, size);
		act->log_flags |= PL_CONT;
		return;
	}
	pu_log_put(act, scratch, p, len);
}

bool
pu_contains_ci(const char *p, size_t n, const char *needle)
{
	size_t l = strlen(needle);

	for (size_t i = 0; l <= n && i <= n - l; i++)
		if (strncasecmp(p + i, needle, l) == 0)
			return true;
	return false;
}

void
pu_log_command(struct proto_action *act, char *scratch, const char *p, size_t len, unsigned flags)
{
	const char *q = p, *w = p, *end = p + len;
	struct pu_word verb = pu_next_token(&q, end), word = pu_next_word(&w, end);
	/* White space other than one SP after the verb: the caller's flags may
	 * be those of another verb than the one a lax server reads (Postfix
	 * splits on any white space), so everything after the verb is hidden. */
	bool odd = word.p != verb.p || word.n != verb.n || q != w;

	if (!odd && !(flags & (PU_HIDE_ARGS | PU_HIDE_AFTER_ARG | PU_SASL))) {
		pu_log_line(act, scratch, p, len, false, 0, 0);
		act->log_frame = 1;
		return;
	}
	pu_log_begin(act, scratch, 0);
	act->log_frame = 1;
	pu_log_put(act, scratch, verb.p, verb.n);
	if (flags & (PU_HIDE_AFTER_ARG | PU_SASL)) {
		struct pu_word arg = pu_next_token(&q, end);
		if (arg.n > 0) {
			pu_log_str(act, scratch, " ");
			if (flags & PU_SASL)
				pu_log_mech(act, scratch, arg);
			else
				pu_log_put(act, scratch, arg.p, arg.n);
		}
	}
	if (q < end) {
		pu_log_str(act, scratch, " ");
		pu_log_secret(act, scratch, q, (size_t)(end - q));
	}
}

void
pu_log_secret(struct proto_action *act, char *scratch, const char *p, size_t n)
{
	pu_log_str(act, scratch, PU_SECRET);
	if (n > 0) {
		act->secret = p;
		act->secret_len = n;
	}
}

void
pu_log_mech(struct proto_action *act, char *scratch, struct pu_word mech)
{
	bool ok = mech.n > 0 && mech.n <= 20;

	for (size_t i = 0; ok && i < mech.n; i++) {
		char c = mech.p[i];
		ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		     c == '_' || c == '-';
	}
	if (ok)
		pu_log_put(act, scratch, mech.p, mech.n);
	else
		pu_log_str(act, scratch, PU_SECRET);
}

void
pu_log_sasl(struct proto_action *act, char *scratch, const char *p, size_t len)
{
	pu_log_begin(act, scratch, 0);
	if (len == 1 && p[0] == '*')
		pu_log_str(act, scratch, "*");
	else
		pu_log_secret(act, scratch, p, len);
}

void
pu_adapter_init(void *st, size_t size, const struct proto_conf *conf)
{
	struct pu_adapter *a = st;

	memset(st, 0, size);
	a->tls = !conf->starttls;
	a->require_tls = conf->require_tls;
	a->observe = conf->observe;
}

void
pu_adapter_tls_started(struct pu_adapter *a)
{
	a->tls = true;
	a->c_auth = a->c_auth_wait = a->c_auth_ended = false;
}

void
pu_sasl_ended(struct pu_adapter *a)
{
	a->c_auth = a->c_auth_wait = false;
	a->c_auth_ended = true;
}

const char *
pu_starttls_refusal(const struct pu_adapter *a, bool noargs, const char *tls_active,
                    const char *tls_args)
{
	if (a->tls)
		return tls_active;
	if (!noargs)
		return tls_args;
	return NULL;
}

enum pu_frame
pu_frame(bool *midline, const char *p, size_t len, bool full, struct proto_action *act, size_t *n)
{
	*n = pu_line_len(p, len);
	act->consume = *n ? *n : len;
	if (*midline) {
		*midline = *n == 0;
		return PF_MIDLINE;
	}
	if (*n > 0)
		return PF_LINE;
	return full ? PF_LONG : PF_MORE;
}

enum proto_verdict
pu_frame_pass(bool *midline, enum pu_frame f)
{
	if (f == PF_MORE)
		return PV_MORE;
	if (f == PF_LONG)
		*midline = true;
	return PV_PASS;
}
