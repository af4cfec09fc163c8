/* The command log and the transcript of one session: pieces put together
 * per direction, secrets masked, bytes escaped, then written to the log
 * and the capture file. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/capture.h>
#include <postern/log.h>
#include <postern/log_text.h>
#include <postern/observe.h>
#include <postern/proto_auth.h>
#include <postern/proto_util.h>
#include <postern/secrets.h>

struct observe {
	const char *who;
	bool log_commands;
	struct capture *cap;
	struct observe_line line[2]; /* by enum proto_dir */
	struct secrets secrets;      /* what the adapters hid so far: masked for good */
};

static void
capture_failed(struct observe *o)
{
	log_session(LOG_WARNING, o->who, "capture stopped: %s", strerror(errno));
	capture_close(o->cap, NULL);
	o->cap = NULL;
}

/* TEXT may hold several lines separated by '\n' (one multi-line reply):
 * all but the last are of lesser interest. Each line has the session's
 * secrets masked, then its bytes escaped (a NUL no longer cuts it). */
static void
emit(struct observe *o, char side, const char *text, size_t len, unsigned flags, unsigned frame)
{
	static char masked[4 * PROTO_LOG_MAX], shown[4 * PROTO_LOG_MAX + 1];

	for (;;) {
		bool debug;
		size_t n = observe_first_line(text, len, flags, &debug);
		int level = debug ? LOG_DEBUG : LOG_INFO;
		size_t m = secrets_mask_line(&o->secrets, text, n, frame, masked, sizeof(masked));
		size_t e = log_text_escape(shown, sizeof(shown), masked, m, 0);
		if (o->log_commands)
			log_session(level, o->who, "%c: %s", side, shown);
		if (o->cap && capture_line(o->cap, side, shown, e) < 0)
			capture_failed(o);
		if (n == len)
			break;
		text += n + 1;
		len -= n + 1;
	}
}

void
observe_auth(const char *who, struct metrics_svc *m, const struct proto_action *act)
{
	char user[4 * PA_USER_MAX + 1];
	bool ok = act->auth == PROTO_AUTH_OK;

	if (act->auth_user_len == 0)
		strcpy(user, "-");
	else
		log_text_escape(user, sizeof(user), act->auth_user, act->auth_user_len,
		                LOG_ESC_SPACE);
	shared_add(&m->auth[ok ? MA_OK : MA_FAILED], 1);
	log_session(LOG_INFO, who, "auth user=%s%s result=%s", user,
	            act->auth_user_cut ? "..." : "", ok ? "ok" : "failed");
}

size_t
observe_first_line(const char *text, size_t len, unsigned flags, bool *debug)
{
	const char *nl = memchr(text, '\n', len);

	*debug = nl || (flags & PL_DEBUG);
	return nl ? (size_t)(nl - text) : len;
}

bool
observe_line_cut(struct observe_line *l, const struct proto_action *act)
{
	if (!(act->log_flags & PL_NEW) || !l->open)
		return false;
	l->open = false;
	return true;
}

bool
observe_line_add(struct observe_line *l, const struct proto_action *act)
{
	size_t n = act->log_len;
	bool cut;

	if (!l->open) {
		l->open = true;
		l->len = 0;
		l->flags = act->log_flags;
		l->frame = act->log_frame;
	}
	cut = n > sizeof(l->text) - l->len;
	if (cut)
		n = sizeof(l->text) - l->len;
	memcpy(l->text + l->len, act->log, n);
	l->len += n;
	if (cut) /* say so: a cut line is never taken for a whole one */
		memcpy(l->text + sizeof(l->text) - 3, "...", 3);
	if (act->log_flags & PL_CONT)
		return false;
	l->open = false;
	return true;
}

void
observe_action(struct observe *o, enum proto_dir dir, const struct proto_action *act)
{
	if (o == NULL)
		return;
	if (act->secret) /* before the line is shown: it may repeat the secret */
		secrets_add(&o->secrets, act->secret, act->secret_len);
	struct observe_line *l = &o->line[dir];
	char who = dir == PROTO_FROM_CLIENT ? 'C' : 'S';
	if (observe_line_cut(l, act))
		emit(o, who, l->text, l->len, l->flags, l->frame);
	if (observe_line_add(l, act))
		emit(o, who, l->text, l->len, l->flags, l->frame);
}

void
observe_reply(struct observe *o, const char *text, size_t len)
{
	size_t n;

	while (o && (n = pu_line_len(text, len)) > 0) {
		emit(o, 'S', text, pu_trim_eol(text, n), 0, 0);
		text += n;
		len -= n;
	}
}

struct observe *
observe_start(const struct service *svc, const char *who, double started_wall)
{
	struct observe *o;
	char err[256];

	if (!svc->log_commands && !svc->capture_dir)
		return NULL;
	if ((o = calloc(1, sizeof(*o))) == NULL) {
		log_session(LOG_ERR, who, "out of memory: no command log for this session");
		return NULL;
	}
	o->who = who;
	o->log_commands = svc->log_commands;
	if (svc->capture_dir &&
	    !(o->cap = capture_open(svc->capture_dir, who, started_wall, err, sizeof(err))))
		log_session(LOG_WARNING, who, "no capture: %s", err);
	return o;
}

void
observe_end(struct observe *o, const char *reason, uint64_t in, uint64_t out)
{
	char trailer[128];

	if (o == NULL)
		return;
	for (int d = 0; d < 2; d++) /* a line cut by the close is shown as it stands */
		if (o->line[d].open)
			emit(o, d == PROTO_FROM_CLIENT ? 'C' : 'S', o->line[d].text, o->line[d].len,
			     o->line[d].flags, o->line[d].frame);
	snprintf(trailer, sizeof(trailer), "end reason=%s in=%llu out=%llu", reason,
	         (unsigned long long)in, (unsigned long long)out);
	capture_close(o->cap, trailer);
	secrets_wipe(&o->secrets);
	free(o);
}
