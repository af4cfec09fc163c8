/* log_format = json: one object per line. The event line "end in=1 out=2
 * reason=x" becomes {"event":"end","in":1,"out":2,"reason":"x"}; words
 * that are not key=value go to "msg". */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <postern/log_json.h>

struct out {
	char *p;
	size_t cap, n;
};

static void
put(struct out *o, const char *s, size_t len)
{
	for (size_t i = 0; i < len && o->n + 1 < o->cap; i++)
		o->p[o->n++] = s[i];
}

static void
put_str(struct out *o, const char *s, size_t len)
{
	put(o, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(o, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(o, esc, 6);
		} else {
			put(o, (const char *)&s[i], 1);
		}
	}
	put(o, "\"", 1);
}

static void
put_field(struct out *o, const char *key, size_t klen, const char *val, size_t vlen)
{
	put(o, ",", 1);
	put_str(o, key, klen);
	put(o, ":", 1);
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

size_t
log_json_format(char *dst, size_t cap, const char *ts, const char *level, const char *who,
                const char *msg)
{
	struct out o = {dst, cap, 0};
	const char *hash = strchr(who, '#'), *sp = strchr(who, ' ');
	char rest[4096];
	size_t rn = 0;

	if (cap == 0)
		return 0;
	put(&o, "{\"ts\":", 6);
	put_str(&o, ts, strlen(ts));
	put_field(&o, "level", 5, level, strlen(level));
	if (hash && sp && hash < sp) {
		put_field(&o, "service", 7, who, (size_t)(hash - who));
		put_field(&o, "session", 7, hash + 1, (size_t)(sp - hash - 1));
		put_field(&o, "client", 6, sp + 1, strlen(sp + 1));
	} else if (sp) { /* "SERVICE ADDR": a connection refused before it was a session */
		put_field(&o, "service", 7, who, (size_t)(sp - who));
		put_field(&o, "client", 6, sp + 1, strlen(sp + 1));
	}
	/* Command log lines: "C: text" and "S: text" are whole protocol lines,
	 * never to be split into fields. */
	if ((msg[0] == 'C' || msg[0] == 'S') && msg[1] == ':' && msg[2] == ' ') {
		const char *ev = msg[0] == 'C' ? "command" : "reply";
		put_field(&o, "event", 5, ev, strlen(ev));
		put_field(&o, "line", 4, msg + 3, strlen(msg + 3));
		put(&o, "}", 1);
		dst[o.n] = '\0';
		return o.n;
	}
	/* The first word names the event; key=value words become fields. */
	const char *p = msg, *end = msg + strlen(msg);
	const char *w = p, *we = memchr(p, ' ', (size_t)(end - p));
	we = we ? we : end;
	/* ... when what follows is key=value, or nothing: else it is prose. */
	const char *nx = we < end ? we + 1 : end, *nxe = memchr(nx, ' ', (size_t)(end - nx));
	nxe = nxe ? nxe : end;
	bool event = we > w && memchr(w, '=', (size_t)(we - w)) == NULL &&
	             (nx == end || memchr(nx, '=', (size_t)(nxe - nx)) != NULL);
	if (event) {
		put_field(&o, "event", 5, w, (size_t)(we - w));
		p = we < end ? we + 1 : end;
	}
	while (p < end) {
		const char *e = memchr(p, ' ', (size_t)(end - p));
		const char *eq;
		e = e ? e : end;
		eq = memchr(p, '=', (size_t)(e - p));
		if (eq && eq > p && rn == 0) {
			const char *v = eq + 1;
			size_t vl = (size_t)(e - v);
			put(&o, ",", 1);
			put_str(&o, p, (size_t)(eq - p));
			put(&o, ":", 1);
			if (is_number(v, vl))
				put(&o, v, vl);
			else
				put_str(&o, v, vl);
		} else {
			/* Free text: everything from here on is the message. */
			size_t l = (size_t)(end - p);
			if (l >= sizeof(rest))
				l = sizeof(rest) - 1;
			memcpy(rest, p, l);
			rn = l;
			break;
		}
		p = e < end ? e + 1 : end;
	}
	if (rn)
		put_field(&o, "msg", 3, rest, rn);
	put(&o, "}", 1);
	dst[o.n] = '\0';
	return o.n;
}
