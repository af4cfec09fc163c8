/* The adapters' client role (backend_tls = starttls) on arbitrary server
 * bytes: the first byte picks the protocol, the rest is what the "server"
 * says, delivered in pieces whose sizes come from the input too. Checks
 * that the dialogue always ends or waits, never consumes what it was not
 * given, and that TLS is only started after a STARTTLS command was sent. */
#include <stdlib.h>
#include <string.h>

#include <postern/proto.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define CHECK(c) ((c) ? (void)0 : abort())
#define IN_CAP (65536 + 2)

static char scratch[PROTO_SCRATCH_ALLOC];
static char pending[IN_CAP];

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static const struct proto_ops *const ops[3] = {&proto_imap, &proto_pop3, &proto_smtp};
	const struct proto_ops *p;
	struct proto_action act = {0};
	size_t have = 0, at = 1;
	bool sent_starttls = false, tls = false;
	void *st;

	if (size < 1)
		return 0;
	p = ops[data[0] % 3];
	st = calloc(1, p->up_state_size);
	p->up_start(st, "gw.example", &act, scratch);
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
			CHECK(guard < 100000);
			struct proto_action a = {0};
			bool full = have == IN_CAP || last;
			enum proto_up r = p->upstream(st, pending, have, full, &a, scratch);
			if (r == PU_UP_MORE) {
				CHECK(!full || have == 0);
				break;
			}
			if (r == PU_UP_FAIL) {
				CHECK(a.text != NULL);
				goto out;
			}
			CHECK(a.consume > 0 && a.consume <= have);
			memmove(pending, pending + a.consume, have - a.consume);
			have -= a.consume;
			if (r == PU_UP_SEND) {
				CHECK(a.len == 0 || (a.text && a.text[a.len - 1] == '\n'));
				if (a.len >= 4 && (memmem(a.text, a.len, "STARTTLS", 8) ||
				                   memmem(a.text, a.len, "STLS", 4)))
					sent_starttls = true;
			} else if (r == PU_UP_TLS) {
				CHECK(sent_starttls && !tls); /* C1: never TLS without asking */
				tls = true;
				have = 0; /* C4: the rest is discarded */
				p->up_tls_done(st, &a, scratch);
				CHECK(a.len > 0);
			} else {            /* PU_UP_DONE */
				CHECK(tls); /* never a greeting before TLS */
				CHECK(a.len > 2 && a.text[a.len - 1] == '\n');
				CHECK(!memmem(a.text, a.len, "STARTTLS", 8) &&
				      !memmem(a.text, a.len, "LOGINDISABLED", 13));
				goto out;
			}
		}
	}
out:
	free(st);
	return 0;
}
