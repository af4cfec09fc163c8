/* The adapters' client role (backend_tls = starttls) on arbitrary server
 * bytes: the first byte picks the protocol, the rest is what the "server"
 * says, delivered in pieces whose sizes come from the input too. Checks
 * that the dialogue always ends or waits, never consumes what it was not
 * given, and that TLS is only started after a STARTTLS command was sent. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <postern/filter.h>
#include <postern/proto.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define CHECK(c) ((c) ? (void)0 : abort())
#define IN_CAP (65536 + 2)

static char scratch[PROTO_SCRATCH_ALLOC];
static char pending[IN_CAP];
static bool sent_starttls, tls;

/* WORD stands alone in [p, p+n): capability lists are words between
 * spaces, brackets and the line end; "X2STARTTLS" is another capability. */
static bool
has_word(const char *p, size_t n, const char *word)
{
	size_t l = strlen(word);

	for (const char *q = p; (q = memmem(q, n - (size_t)(q - p), word, l)) != NULL; q++) {
		bool start = q == p || q[-1] == ' ' || q[-1] == '[';
		const char *e = q + l;
		bool end = e == p + n || *e == ' ' || *e == ']' || *e == '\r' || *e == '\n';
		if (start && end)
			return true;
	}
	return false;
}

static void
judged(void *arg, enum proto_dir dir, int r, const struct proto_action *a, const char *p,
       size_t have, bool full)
{
	(void)arg;
	(void)dir;
	(void)p;
	if (r == PU_UP_MORE) {
		CHECK(!full || have == 0);
		return;
	}
	if (r == PU_UP_FAIL) {
		CHECK(a->text != NULL);
		return;
	}
	CHECK(a->consume > 0 && a->consume <= have);
	if (r == PU_UP_SEND) {
		CHECK(a->len == 0 || (a->text && a->text[a->len - 1] == '\n'));
		if (a->len >= 4 &&
		    (memmem(a->text, a->len, "STARTTLS", 8) || memmem(a->text, a->len, "STLS", 4)))
			sent_starttls = true;
	} else if (r == PU_UP_TLS) {
		CHECK(sent_starttls && !tls); /* C1: never TLS without asking */
	} else {                              /* PU_UP_DONE */
		CHECK(tls);                   /* never a greeting before TLS */
		CHECK(a->len > 2 && a->text[a->len - 1] == '\n');
		CHECK(!has_word(a->text, a->len, "STARTTLS") &&
		      !has_word(a->text, a->len, "LOGINDISABLED"));
	}
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static const struct proto_ops *const ops[3] = {&proto_imap, &proto_pop3, &proto_smtp};
	static const struct filter_hooks hooks = {.judged = judged};
	struct proto_action act = {0};
	struct buf out[2];
	struct filter f = {
	        .out = {&out[0], &out[1]}, .reply = &out[1], .hooks = &hooks, .scratch = scratch};
	size_t have = 0, at = 1;

	if (size < 1)
		return 0;
	sent_starttls = tls = false;
	buf_init(&out[0], FILTER_OUT_MAX);
	buf_init(&out[1], FILTER_OUT_MAX);
	f.proto = ops[data[0] % 3];
	f.state = calloc(1, f.proto->up_state_size);
	f.proto->up_start(f.state, "gw.example", &act, scratch);
	while (at < size) {
		size_t chunk = 1 + data[at++] % 64;
		if (chunk > size - at)
			chunk = size - at;
		if (chunk > IN_CAP - have)
			chunk = IN_CAP - have;
		memcpy(pending + have, data + at, chunk);
		have += chunk;
		at += chunk;
		bool last = at >= size;
		for (int guard = 0; have > 0; guard++) {
			struct filter_result r;
			CHECK(guard < 100000);
			/* The session's loop over the backend's bytes (filter.c). */
			filter_upstream(&f, pending, have, IN_CAP, last, &r);
			buf_free(&out[0]);
			memmove(pending, pending + r.consumed, have - r.consumed);
			have -= r.consumed;
			if (r.stop == FILTER_UP_FAIL || r.stop == FILTER_UP_DONE)
				goto out;
			if (r.stop == FILTER_UP_TLS) {
				struct proto_action a = {0};
				tls = true;
				have = 0; /* C4: the rest is discarded */
				f.proto->up_tls_done(f.state, &a, scratch);
				CHECK(a.len > 0);
				continue;
			}
			CHECK(r.stop == FILTER_IDLE);
			break;
		}
	}
out:
	free(f.state);
	return 0;
}
