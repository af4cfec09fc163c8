#include <string.h>

#include <postern/proto_auth.h>
#include <postern/proto_cmd.h>
#include <postern/proto_util.h>

bool
pc_plain_form(const char *p, size_t n)
{
	if (n > 0 && p[0] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
			return false;
	return true;
}

bool
pc_has_control(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return true;
	}
	return false;
}

bool
pc_readable(const char *p, size_t n, bool plain_only)
{
	return plain_only ? pc_plain_form(p, n) : !pc_has_control(p, n);
}

size_t
pc_skip_tail(const char *p, size_t len, struct proto_action *act)
{
	size_t n = pu_line_len(p, len);

	if (n == 0)
		act->consume = len;
	return n;
}

void
pc_log_unread(struct proto_action *act, char *scratch, const char *why)
{
	pu_log_begin(act, scratch, 0);
	pu_log_str(act, scratch, "(");
	pu_log_str(act, scratch, why);
	pu_log_str(act, scratch, ")");
}

void
pc_log_early(struct proto_action *act, char *scratch, const char *p, size_t n)
{
	pu_log_begin(act, scratch, 0);
	pu_log_secret(act, scratch, p, n);
}

void
pc_log_command(struct proto_action *act, char *scratch, const char *p, size_t n, unsigned flags,
               bool after_auth, bool plain_only)
{
	if (after_auth && flags == 0 && pu_one_word(p, n))
		pc_log_early(act, scratch, p, n);
	else if (!pc_readable(p, n, plain_only))
		pc_log_unread(act, scratch, "malformed command");
	else
		pu_log_command(act, scratch, p, n, flags);
}

struct pc_ruling
pc_rule(const struct pu_adapter *a, unsigned flags, const char *p, size_t n, bool noargs,
        const struct pc_replies *r)
{
	struct pc_ruling no = {PC_REFUSE, NULL, NULL};

	/* Before TLS nothing but a plain command of the short list reaches
	 * the backend: no word a laxer server could read differently. */
	if (!a->tls && a->require_tls && (!(flags & PU_PLAIN) || !pc_plain_form(p, n))) {
		no.text = r->need_tls;
		if (flags & PU_REFUSE_PLAIN)
			no.event = "plaintext-auth-refused";
		return no;
	}
	if (pc_has_control(p, n))
		no.text = r->bad_char;
	else if (flags & PU_STARTTLS)
		no.text = pu_starttls_refusal(a, noargs, r->tls_active, r->tls_args);
	else if (flags & PU_FORWARDING)
		no.text = r->forwarding;
	if (no.text == NULL && (flags & PU_STARTTLS))
		return (struct pc_ruling){PC_STARTTLS, r->tls_go, NULL};
	if (no.text == NULL)
		no.rule = PC_RELAY;
	return no;
}

enum proto_verdict
pc_command_line(struct pu_adapter *a, const struct pu_queue *q, struct pa_login *login,
                const struct pu_verb *verbs, pc_judge *judge, void *st, const char *p, size_t n,
                struct proto_action *act, char *scratch)
{
	size_t body = pu_trim_eol(p, n);

	if (a->c_auth) { /* a SASL response, or "*" to cancel */
		a->c_auth_wait = true;
		pa_sasl_response(login, p, body);
		if (a->observe)
			pu_log_sasl(act, scratch, p, body);
		return PV_PASS;
	}
	if (q->count == PU_QUEUE_MAX)
		return PV_WAIT;
	/* The verb as the laxest server (Postfix) reads it: any white space
	 * around it. */
	const char *args = p;
	unsigned flags = pu_verb_flags(verbs, pu_next_token(&args, p + body));
	enum proto_verdict v = judge(st, p, n, flags, args, act, scratch);
	if (v == PV_WAIT)
		return v;
	if (a->observe)
		pc_log_command(act, scratch, p, body, flags, a->c_auth_ended,
		               !a->tls && a->require_tls);
	/* A client that sends every response of a refused exchange too
	 * early sends several: each one-word line stays hidden. */
	a->c_auth_ended = a->c_auth_ended && flags == 0 && pu_one_word(p, body);
	return v;
}
