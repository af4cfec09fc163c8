/* The IMAP adapter's command log: each command line as the log shows it,
 * with LOGIN's password, AUTHENTICATE's initial response and secret
 * literals hidden as "***" and recorded as secrets the session masks
 * wherever they reappear. */
#include <stdio.h>
#include <string.h>

#include <postern/imap_token.h>
#include <postern/proto_util.h>

#include "imap_internal.h"

/* The arguments of LOGIN from Q on: the user name as sent, the password
 * and anything after it hidden and remembered as secrets. */
static void
log_login_args(struct imap_state *s, const struct imap_cmd *c, const char *q,
               struct proto_action *act, char *scratch)
{
	const char *end = c->end;

	for (;;) {
		struct imap_tok t = imap_next_tok(&q, end);
		if (t.kind == IT_END)
			break;
		bool user = s->c_login == 1;
		if (s->c_login < 255)
			s->c_login++;
		pu_log_str(act, scratch, " ");
		if (t.kind == IT_LITERAL) {
			if (user)
				pu_log_size(act, scratch, c->lsize);
			else
				pu_log_str(act, scratch, PU_SECRET);
			s->c_lit_secret = !user;
		} else if (user && (t.kind == IT_ATOM || t.kind == IT_QUOTED)) {
			pu_log_put(act, scratch, t.p, t.n);
		} else if (t.kind == IT_QUOTED && t.n >= 2) {
			pu_log_secret(act, scratch, t.p + 1, t.n - 2);
		} else {
			pu_log_secret(act, scratch, t.p, t.n);
		}
	}
}

/* A line as sent, its literal marker shown as "{N bytes}". */
static void
log_plain(const struct imap_cmd *c, struct proto_action *act, char *scratch)
{
	pu_log_put(act, scratch, c->p, c->lit ? c->lit_at : c->n);
	if (c->lit)
		pu_log_size(act, scratch, c->lsize);
}

/* The command log's view of a command line: LOGIN's password and
 * AUTHENTICATE's initial response become "***"; a line that does not
 * parse shows only its tag and verb, as the rest could be anything. */
void
imap_log_command(struct imap_state *s, const struct imap_cmd *c, unsigned flags,
                 struct proto_action *act, char *scratch)
{
	s->c_login = 0;
	s->c_lit_secret = false;
	pu_log_begin(act, scratch, c->lit ? PL_CONT : 0);
	act->log_frame = 2; /* tag verb */
	if (c->err) {
		if (c->bad_tag)
			pu_log_str(act, scratch, PU_SECRET);
		else
			pu_log_put(act, scratch, c->tag.p, c->tag.n);
		if (c->verb.n > 0) {
			pu_log_str(act, scratch, " ");
			pu_log_mech(act, scratch, c->verb);
		}
		if (c->verb.p + c->verb.n < c->p + c->n)
			pu_log_str(act, scratch, " " PU_SECRET);
		return;
	}
	size_t head = (size_t)(c->verb.p + c->verb.n - c->p);
	if (flags & F_LOGIN) {
		pu_log_put(act, scratch, c->p, head);
		s->c_login = 1;
		log_login_args(s, c, c->args, act, scratch);
	} else if (flags & PU_SASL) {
		const char *q = c->args, *end = c->end;
		struct imap_tok mech = imap_next_tok(&q, end);
		struct imap_tok ir = imap_next_tok(&q, end);
		pu_log_put(act, scratch, c->p, head);
		if (mech.kind != IT_END) {
			pu_log_str(act, scratch, " ");
			pu_log_mech(act, scratch, (struct pu_word){mech.p, mech.n});
		}
		if (ir.kind != IT_END) {
			pu_log_str(act, scratch, " ");
			pu_log_secret(act, scratch, ir.p, (size_t)(end - ir.p));
		}
	} else {
		log_plain(c, act, scratch);
	}
}

/* A line that continues a command after its literal. */
void
imap_log_continuation(struct imap_state *s, const struct imap_cmd *c, struct proto_action *act,
                      char *scratch)
{
	pu_log_begin(act, scratch, c->lit ? PL_CONT : 0);
	s->c_lit_secret = false;
	if (c->err)
		pu_log_str(act, scratch, " " PU_SECRET);
	else if (s->c_login)
		log_login_args(s, c, c->p, act, scratch);
	else
		log_plain(c, act, scratch);
}

/* A line too long to hold, once it ended: what it began with, and its
 * size, never its contents. */
void
imap_log_long(const struct long_line *l, bool lit, uint64_t lsize, unsigned flags,
              struct proto_action *act, char *scratch)
{
	char t[64];
	int k = snprintf(t, sizeof(t), " ... {line too long: %llu bytes}",
	                 (unsigned long long)l->bytes);

	pu_log_begin(act, scratch, flags | (lit ? PL_CONT : 0));
	pu_log_put(act, scratch, l->head, l->head_len);
	pu_log_put(act, scratch, t, (size_t)k);
	if (lit) {
		pu_log_str(act, scratch, " ");
		pu_log_size(act, scratch, lsize);
	}
}

/* What the log shows of an over-long line's beginning: its first two
 * words where they are plain words, "***" otherwise. */
void
imap_long_head(struct long_line *l, const char *p, size_t n)
{
	const char *q = p, *end = p + (n < 256 ? n : 256);

	l->head_len = 0;
	for (int i = 0; i < 2; i++) {
		struct pu_word w = pu_next_word(&q, end);
		bool ok = w.n > 0 && w.n <= 40;
		for (size_t k = 0; ok && k < w.n; k++)
			ok = w.p[k] > 0x20 && w.p[k] < 0x7f && w.p[k] != '"' && w.p[k] != '{';
		const char *text = ok ? w.p : PU_SECRET;
		size_t len = ok ? w.n : 3;
		if (l->head_len + len + 1 > sizeof(l->head))
			break;
		if (i > 0)
			l->head[l->head_len++] = ' ';
		memcpy(l->head + l->head_len, text, len);
		l->head_len += len;
		if (!ok)
			break;
	}
}
