/* log_format = json: one object per line. The event line "end in=1 out=2
 * reason=x" becomes {"event":"end","in":1,"out":2,"reason":"x"}.
 *
 * Keys are postern's, never a peer's: a word becomes a field only when its
 * key is one of the fixed names postern writes and that key is not in the
 * object yet (ts, level, service, session and client come first, from
 * postern's own text). The first word that is not such a field ends the
 * fields, and the rest of the line goes to "msg" whole. Every string is
 * escaped as log_text.h says before JSON quoting, so the object is valid
 * UTF-8 with no raw control, U+0085 or U+2028/U+2029, and a cut line still
 * parses (strings are cut between characters and closed). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <postern/log_json.h>
#include <postern/log_text.h>

/* The keys postern writes. The first ones come from the line's header and
 * the JSON form itself; the rest may come from the message's key=value. */
enum { K_TS, K_LEVEL, K_SERVICE, K_SESSION, K_CLIENT, K_EVENT, K_LINE, K_MSG, K_FIRST_FIELD };
static const char *const keys[] = {
        "ts",  "level",    "service", "session", "client",         "event",   "line",
        "msg", "tls",      "cipher",  "sni",     "backend_verify", "WARNING", "in",
        "out", "duration", "reason",  "limit",   "addr",           "uid",     "gid",
        "pid", "workers",  "user",    "result",  "mech",           NULL,
};

struct out {
	char *p;
	size_t lim, n; /* bytes usable before the closing "}" and the NUL */
	bool full;     /* something did not fit: no further field */
	uint32_t seen; /* keys already in the object */
};

static bool
room(struct out *o, size_t k)
{
	if (o->full || o->n + k > o->lim) {
		o->full = true;
		return false;
	}
	return true;
}

static void
raw(struct out *o, const char *s, size_t k)
{
	memcpy(o->p + o->n, s, k);
	o->n += k;
}

/* Length of the character starting with byte C of escaped (valid UTF-8) text. */
static size_t
char_len(unsigned char c)
{
	return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

static void
put_str(struct out *o, const char *s, size_t len)
{
	static char esc[4 * 4096 + 1];
	size_t n = log_text_escape(esc, sizeof(esc), s, len, 0);

	if (!room(o, 2))
		return;
	raw(o, "\"", 1);
	for (size_t i = 0; i < n;) {
		size_t k = char_len((unsigned char)esc[i]);
		bool quote = esc[i] == '"' || esc[i] == '\\';
		if (o->n + k + quote + 1 > o->lim) { /* +1: the closing quote */
			o->full = true;
			break;
		}
		if (quote)
			raw(o, "\\", 1);
		raw(o, esc + i, k);
		i += k;
	}
	raw(o, "\"", 1);
}

/* Starts the field KEY: false if it is taken or does not fit. */
static bool
put_key(struct out *o, int key)
{
	size_t kl = strlen(keys[key]);

	if (o->seen & (1u << key) || !room(o, kl + 6)) /* ,"key":"" */
		return false;
	o->seen |= 1u << key;
	raw(o, ",\"", 2);
	raw(o, keys[key], kl);
	raw(o, "\":", 2);
	return true;
}

static void
put_field(struct out *o, int key, const char *val, size_t vlen)
{
	if (put_key(o, key))
		put_str(o, val, vlen);
}

/* A JSON number: digits with at most one dot, no leading zero but "0". */
static int
is_number(const char *s, size_t n)
{
	size_t i = 0, dots = 0;

	if (n == 0 || n > 18 || (s[0] == '0' && n > 1 && s[1] != '.'))
		return 0;
	for (; i < n; i++) {
		if (s[i] == '.' && i > 0 && i + 1 < n && !dots++)
			continue;
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

/* The index of a key the message may set, free in O; -1 if none. */
static int
message_key(const struct out *o, const char *k, size_t n)
{
	for (int i = K_FIRST_FIELD; keys[i]; i++)
		if (strlen(keys[i]) == n && memcmp(keys[i], k, n) == 0)
			return o->seen & (1u << i) ? -1 : i;
	if (n == 7 && memcmp(k, "service", 7) == 0 && !(o->seen & (1u << K_SERVICE)))
		return K_SERVICE; /* "listening service=..." of the process */
	return -1;
}

/* The key=value word [w, we): its key index, or -1. */
static int
field_of(const struct out *o, const char *w, const char *we)
{
	const char *eq = memchr(w, '=', (size_t)(we - w));

	return eq && eq > w ? message_key(o, w, (size_t)(eq - w)) : -1;
}

static void
put_message(struct out *o, const char *msg)
{
	const char *p = msg, *end = msg + strlen(msg);
	const char *we = memchr(p, ' ', (size_t)(end - p));

	/* The first word names the event when fields or nothing follow it. */
	we = we ? we : end;
	const char *nx = we < end ? we + 1 : end, *nxe = memchr(nx, ' ', (size_t)(end - nx));
	nxe = nxe ? nxe : end;
	if (we > p && memchr(p, '=', (size_t)(we - p)) == NULL &&
	    (nx == end || field_of(o, nx, nxe) >= 0)) {
		put_field(o, K_EVENT, p, (size_t)(we - p));
		p = nx;
	}
	while (p < end && !o->full) {
		const char *e = memchr(p, ' ', (size_t)(end - p));
		e = e ? e : end;
		int key = field_of(o, p, e);
		if (key < 0)
			break;
		const char *v = memchr(p, '=', (size_t)(e - p)) + 1;
		size_t vl = (size_t)(e - v);
		if (is_number(v, vl)) {
			if (put_key(o, key) && room(o, vl))
				raw(o, v, vl);
		} else {
			put_field(o, key, v, vl);
		}
		p = e < end ? e + 1 : end;
	}
	if (p < end)
		put_field(o, K_MSG, p, (size_t)(end - p));
}

size_t
log_json_format(char *dst, size_t cap, const char *ts, const char *level, const char *who,
                const char *msg)
{
	struct out o = {dst, cap >= 3 ? cap - 2 : 0, 0, false, 0};
	const char *hash = strchr(who, '#'), *sp = strchr(who, ' ');

	if (cap < 3) {
		if (cap > 0)
			dst[0] = '\0';
		return 0;
	}
	raw(&o, "{", 1);
	if (room(&o, 5)) { /* "ts": without the comma put_key writes */
		raw(&o, "\"ts\":", 5);
		o.seen |= 1u << K_TS;
		put_str(&o, ts, strlen(ts));
	}
	put_field(&o, K_LEVEL, level, strlen(level));
	if (hash && sp && hash < sp) {
		put_field(&o, K_SERVICE, who, (size_t)(hash - who));
		put_field(&o, K_SESSION, hash + 1, (size_t)(sp - hash - 1));
		put_field(&o, K_CLIENT, sp + 1, strlen(sp + 1));
	} else if (sp) { /* "SERVICE ADDR": a connection refused before it was a session */
		put_field(&o, K_SERVICE, who, (size_t)(sp - who));
		put_field(&o, K_CLIENT, sp + 1, strlen(sp + 1));
	}
	/* Command log lines: "C: text" and "S: text" are whole protocol lines,
	 * never to be split into fields. */
	if ((msg[0] == 'C' || msg[0] == 'S') && msg[1] == ':' && msg[2] == ' ') {
		put_field(&o, K_EVENT, msg[0] == 'C' ? "command" : "reply", msg[0] == 'C' ? 7 : 5);
		put_field(&o, K_LINE, msg + 3, strlen(msg + 3));
	} else {
		put_message(&o, msg);
	}
	dst[o.n++] = '}';
	dst[o.n] = '\0';
	return o.n;
}
