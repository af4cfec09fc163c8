#include <string.h>

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
	if (after_auth && flags == 0)
		pc_log_early(act, scratch, p, n);
	else if (!pc_readable(p, n, plain_only))
		pc_log_unread(act, scratch, "malformed command");
	else
		pu_log_command(act, scratch, p, n, flags);
}
