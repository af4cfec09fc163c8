/* The verdict loop shared by the session, the unit tests and the fuzzers. */
#include <string.h>

#include <postern/filter.h>

static bool
out_full(const struct filter *f, enum proto_dir dir)
{
	return buf_len(f->out[dir]) >= FILTER_OUT_MAX ||
	       buf_len(f->out[PROTO_FROM_SERVER]) >= FILTER_OUT_MAX ||
	       buf_len(f->reply) >= FILTER_OUT_MAX;
}

static bool
answer(struct filter *f, const char *text, size_t len)
{
	if (!buf_append_grow(f->reply, text, len))
		return false;
	if (f->hooks && f->hooks->reply)
		f->hooks->reply(f->hooks->arg, text, len);
	return true;
}

void
filter_input(struct filter *f, enum proto_dir dir, const char *p, size_t len, size_t cap, bool eof,
             struct filter_result *r)
{
	const struct filter_hooks *h = f->hooks;

	memset(r, 0, sizeof(*r));
	r->last = -1; /* no verdict yet */
	if (dir == PROTO_FROM_CLIENT && f->check_first_byte && len > 0) {
		f->check_first_byte = false;
		/* 0x16 starts a TLS handshake record: a client that speaks TLS
		 * before STARTTLS is refused at once, never after a timeout. */
		if (p[0] == 0x16) {
			r->stop = FILTER_TLS_HELLO;
			return;
		}
	}
	while (r->consumed < len) {
		struct proto_action act = {0};
		const char *at = p + r->consumed;
		size_t n = len - r->consumed;

		/* Backpressure: judge more only once the output has drained. */
		if (out_full(f, dir))
			break;
		bool full = n >= cap || eof;
		enum proto_verdict v =
		        f->proto->input(f->state, dir, at, n, full, &act, f->scratch);
		r->last = (int)v;
		if (h && h->judged)
			h->judged(h->arg, dir, (int)v, &act, at, n, full);
		if (v == PV_MORE || v == PV_WAIT)
			break;
		if (act.log && h && h->log)
			h->log(h->arg, dir, &act);
		if (act.event && h && h->event)
			h->event(h->arg, act.event);
		if (act.auth && h && h->auth)
			h->auth(h->arg, &act);
		switch (v) {
		case PV_PASS:
			if (!buf_append_grow(f->out[dir], at, act.consume))
				goto nomem;
			break;
		case PV_REPLACE:
			if (!buf_append_grow(f->out[dir], act.text, act.len))
				goto nomem;
			break;
		case PV_REPLY:
			if (!answer(f, act.text, act.len))
				goto nomem;
			break;
		case PV_STARTTLS:
			if (!answer(f, act.text, act.len))
				goto nomem;
			r->consumed += act.consume;
			/* CVE-2011-0411: what the client pipelined after STARTTLS
			 * was sent in plaintext; it is dropped, never executed. */
			r->discarded = len - r->consumed;
			r->stop = FILTER_STARTTLS;
			return;
		case PV_TO_SERVER:
			if (!buf_append_grow(f->out[PROTO_FROM_CLIENT], act.text, act.len))
				goto nomem;
			break;
		case PV_LOGIN:
			r->consumed += act.consume;
			r->login = act;
			r->stop = FILTER_LOGIN;
			return;
		case PV_CLOSE:
			r->consumed += act.consume;
			r->text = act.text;
			r->len = act.len;
			r->stop = FILTER_CLOSE;
			return;
		default:
			break;
		}
		r->consumed += act.consume;
	}
	return;
nomem:
	r->stop = FILTER_NOMEM;
}

void
filter_upstream(struct filter *f, const char *p, size_t len, size_t cap, bool eof,
                struct filter_result *r)
{
	const struct filter_hooks *h = f->hooks;

	memset(r, 0, sizeof(*r));
	r->last = -1;
	while (r->consumed < len) {
		struct proto_action act = {0};
		const char *at = p + r->consumed;
		size_t n = len - r->consumed;
		bool full = n >= cap || eof;
		enum proto_up u = f->proto->upstream(f->state, at, n, full, &act, f->scratch);

		r->last = (int)u;
		if (h && h->judged)
			h->judged(h->arg, PROTO_FROM_SERVER, (int)u, &act, at, n, full);
		if (u == PU_UP_MORE)
			break;
		if (u == PU_UP_FAIL) {
			r->stop = FILTER_UP_FAIL;
			r->text = act.text;
			return;
		}
		r->consumed += act.consume;
		if (u == PU_UP_SEND) {
			(void)buf_append_grow(f->out[PROTO_FROM_CLIENT], act.text, act.len);
		} else if (u == PU_UP_DONE) {
			r->stop = FILTER_UP_DONE;
			r->text = act.text;
			r->len = act.len;
			r->event = act.event;
			return;
		} else { /* PU_UP_TLS: what the server sent after its OK is not trusted */
			r->discarded = len - r->consumed;
			r->stop = FILTER_UP_TLS;
			return;
		}
	}
}
