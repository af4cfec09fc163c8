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

static size_t
put(char *dst, size_t cap, size_t at, const char *p, size_t n)
{
	if (at + n > cap)
		n = at < cap ? cap - at : 0;
	memcpy(dst + at, p, n);
	return at + n;
}

size_t
pu_caps_rewrite(const char *p, size_t n, const struct pu_caps *c, char *dst, size_t cap)
{
	const char *end = p + n;
	size_t at = 0;

	while (p < end) {
		struct pu_word w = pu_next_word(&p, end);
		if (w.n == 0 || pu_cap_removed(w, c))
			continue;
		if (at > 0)
			at = put(dst, cap, at, " ", 1);
		at = put(dst, cap, at, w.p, w.n);
	}
	for (const char *const *a = c->add; a && *a; a++) {
		if (at > 0)
			at = put(dst, cap, at, " ", 1);
		at = put(dst, cap, at, *a, strlen(*a));
	}
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
