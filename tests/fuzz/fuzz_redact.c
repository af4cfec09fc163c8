/* libFuzzer harness: the command log never shows a credential. Arbitrary
 * client and server lines are interleaved with credential-bearing commands
 * in every form the adapters know (IMAP LOGIN with atoms, quoted strings
 * and literals, AUTHENTICATE with an initial response or continuations,
 * POP3 PASS/APOP/AUTH, SMTP AUTH PLAIN/LOGIN/XOAUTH2), delivered in
 * arbitrary segments. Every secret contains a 'Z' and the other bytes
 * never do, so any 'Z' in the log is a leak. The log is checked as the
 * session shows it: after the session's memory of secrets (secrets.h) has
 * masked what the adapters hid before, so a server that echoes a password
 * or a SASL response (plain or decoded) must not show it either.
 *
 * Input: byte 0: bits 0-1 protocol (0 IMAP, 1 POP3, 2 SMTP, 3 IMAP),
 * bit 2 STARTTLS offered (pre-TLS rules), bit 3 require_tls. Then records,
 * a control byte C and its data:
 *   C % 4 == 0: a client line of (next byte) bytes;
 *   C % 4 == 1: a server line of (next byte) bytes;
 *   C % 4 == 2: credential form (next byte) of the protocol;
 *   C % 4 == 3: segment size becomes (next byte) + 1. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <postern/filter.h>
#include <postern/proto.h>
#include <postern/proto_util.h>
#include <postern/secrets.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PEND_MAX 8192

struct dir {
	char q[PEND_MAX]; /* queued by the peer */
	size_t qlen;
	char in[PEND_MAX]; /* handed to the adapter */
	size_t inlen;
};

struct sim {
	const struct proto_ops *ops;
	void *st;
	struct dir d[2];
	size_t seg;
	bool over;
	bool answered;        /* postern answered the client itself */
	unsigned client_logs; /* client bytes the log showed as a command */
	char scratch[PROTO_SCRATCH_ALLOC];
	struct secrets secrets;
};

static void
check_log(void *arg, enum proto_dir dir, const struct proto_action *act)
{
	struct sim *s = arg;
	char shown[PROTO_LOG_MAX];
	size_t n;

	if (dir == PROTO_FROM_CLIENT && act->log_len > 0)
		s->client_logs++;
	if (act->secret)
		secrets_add(&s->secrets, act->secret, act->secret_len);
	n = secrets_mask_line(&s->secrets, act->log, act->log_len, act->log_frame, shown,
	                      sizeof(shown));
	if (memchr(shown, 'Z', n)) {
		fprintf(stderr, "fuzz_redact: secret in the log: [%.*s]\n", (int)n, shown);
		abort();
	}
}

static void
judged(void *arg, enum proto_dir dir, int v, const struct proto_action *act, const char *p,
       size_t len, bool full)
{
	(void)dir;
	(void)act;
	(void)p;
	(void)len;
	(void)full;
	if (v == PV_REPLY)
		((struct sim *)arg)->answered = true;
}

/* Offers queued bytes a segment at a time to the session's verdict loop
 * (filter.c) until nothing moves. */
static void
drive(struct sim *s)
{
	struct filter_hooks hooks = {.arg = s, .judged = judged, .log = check_log};
	struct buf out[2];
	struct filter f = {.proto = s->ops,
	                   .state = s->st,
	                   .out = {&out[0], &out[1]},
	                   .reply = &out[1],
	                   .hooks = &hooks,
	                   .scratch = s->scratch};
	bool moved = true;

	buf_init(&out[0], FILTER_OUT_MAX);
	buf_init(&out[1], FILTER_OUT_MAX);
	while (moved && !s->over) {
		moved = false;
		for (int k = 0; k < 2 && !s->over; k++) {
			struct dir *d = &s->d[k];
			struct filter_result r;
			if (d->qlen > 0 && d->inlen < PEND_MAX) {
				size_t n = d->qlen < s->seg ? d->qlen : s->seg;
				if (n > PEND_MAX - d->inlen)
					n = PEND_MAX - d->inlen;
				memcpy(d->in + d->inlen, d->q, n);
				d->inlen += n;
				memmove(d->q, d->q + n, d->qlen - n);
				d->qlen -= n;
				moved = true;
			}
			if (d->inlen == 0)
				continue;
			/* Never full: the adapters' MORE is always an answer here. */
			filter_input(&f, (enum proto_dir)k, d->in, d->inlen, SIZE_MAX, false, &r);
			buf_free(&out[0]);
			buf_free(&out[1]);
			if (r.stop == FILTER_STARTTLS) {
				d->inlen = 0;
				s->ops->tls_started(s->st);
				continue;
			}
			if (r.stop != FILTER_IDLE) {
				s->over = true;
				break;
			}
			memmove(d->in, d->in + r.consumed, d->inlen - r.consumed);
			d->inlen -= r.consumed;
			moved |= r.consumed > 0;
		}
	}
}

static void
queue(struct sim *s, int k, const char *p, size_t n)
{
	struct dir *d = &s->d[k];

	if (n > PEND_MAX - d->qlen)
		n = PEND_MAX - d->qlen;
	memcpy(d->q + d->qlen, p, n);
	d->qlen += n;
}

/* An arbitrary line: no 'Z' (that marks secrets), no line ends inside,
 * and no client literal or BDAT chunk (the bytes after it would not be
 * commands at all, so no credential could be planted there). */
static void
queue_line(struct sim *s, int k, const uint8_t *p, size_t n)
{
	char line[258];
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		char c = (char)p[i];
		if (c == 'Z' || c == '\r' || c == '\n' || (k == 0 && c == '{'))
			c = 'x';
		line[m++] = c;
	}
	if (k == 0 && m >= 4 && strncasecmp(line, "BDAT", 4) == 0)
		line[0] = 'x';
	line[m++] = '\r';
	line[m++] = '\n';
	queue(s, k, line, m);
	drive(s);
}

/* Credential forms: NULL-separated pieces alternating client, server. */
static const char *const imap_forms[][6] = {
        {"p LOGIN alice ZS1\r\n"},
        {"p LOGIN \"al\\\"ice\" \"ZS 2\"\r\n"},
        {"p LOGIN alice {4+}\r\nZS3Z\r\n"},
        {"p LOGIN {5+}\r\nalice {4+}\r\nZS4Z\r\n"},
        {"p LOGIN {5+}\r\nalice ZS5\r\n"},
        {"p AUTHENTICATE PLAIN ZS6ZZ==\r\n"},
        {"p AUTHENTICATE PLAIN\r\n", "+ \r\n", "ZS7ZZ==\r\n", "p OK\r\n"},
        {"p LOGIN alice {4}\r\n", "+ go\r\n", "ZS8Z\r\n"},
        {"p login alice ZS9 more\r\n"},
        {"p LOGIN ~{5+}\r\nalice ZS10\r\n"},
};
static const char *const pop3_forms[][6] = {
        {"PASS ZS1\r\n"},
        {"APOP alice ZS2\r\n"},
        {"AUTH PLAIN ZS3==\r\n"},
        {"AUTH PLAIN\r\n", "+ \r\n", "ZS4==\r\n"},
        {"pass ZS 5\r\n"},
        /* odd white space a lax server splits on */
        {"AUTH PLAIN\tZS6==\r\n"},
        {"PASS\tZS7\r\n"},
        /* servers that echo the secret */
        {"PASS ZpassZ8\r\n", "-ERR ZpassZ8 is wrong\r\n"},
        {"AUTH PLAIN AGFsaWNlAFpzZWNacmV0Wg==\r\n", "-ERR ZsecZretZ refused\r\n"},
};
static const char *const smtp_forms[][6] = {
        {"AUTH PLAIN ZS1==\r\n"},
        {"AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n", "ZS2\r\n", "334 UGFzc3dvcmQ6\r\n", "ZS3\r\n"},
        {"AUTH LOGIN ZS4==\r\n"},
        {"AUTH XOAUTH2 ZS5==\r\n"},
        {"auth plain\r\n", "334 \r\n", "ZS6==\r\n"},
        /* odd white space a lax server splits on */
        {"AUTH PLAIN\tZS7==\r\n"},
        {"AUTH\tPLAIN ZS8==\r\n"},
        {" AUTH  PLAIN  ZS9==\r\n"},
        {"AUTH ZS10==\r\n"},
        /* servers that echo the response, or the password it decodes to */
        {"AUTH PLAIN AGFsaWNlAFpzZWNacmV0Wg==\r\n",
         "535 AGFsaWNlAFpzZWNacmV0Wg== ZsecZretZ refused\r\n"},
        {"AUTH PLAIN\r\n", "334 \r\n", "AGFsaWNlAFpacHda\r\n", "535 ZZpwZ wrong\r\n"},
        {"AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n", "WnVzZXJaMQ==\r\n",
         "334 ZuserZ1 UGFzc3dvcmQ6\r\n", "WmxvZ2luUHda\r\n", "535 ZloginPwZ bad\r\n"},
};

/* The rest of a form is a credential only if its command reached the
 * server: one that postern answered, or that still waits its turn, is
 * followed by nothing a real client would send. Nor is a form postern
 * did not log as a command (it went as message body, say): the server
 * does not take it for a login, so nothing it answers is a credential. */
static void
queue_form(struct sim *s, const char *const *form)
{
	unsigned logs = s->client_logs;

	s->answered = false;
	for (int i = 0; i < 6 && form[i]; i++) {
		queue(s, i % 2, form[i], strlen(form[i]));
		drive(s);
		if (i == 0 && (s->answered || s->d[0].qlen > 0 || s->d[0].inlen > 0 ||
		               s->client_logs == logs))
			return;
		/* A client piece postern still holds (a SASL response waits for
		 * the server's challenge) has not reached the server, which can
		 * neither answer nor echo it. */
		if (i % 2 == 0 && (s->d[0].qlen > 0 || s->d[0].inlen > 0))
			return;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sim sim;
	struct sim *s = &sim;
	static const struct proto_ops *const ops[] = {&proto_imap, &proto_pop3, &proto_smtp,
	                                              &proto_imap};

	if (size < 1)
		return 0;
	memset(s->d, 0, sizeof(s->d));
	secrets_wipe(&s->secrets);
	s->ops = ops[data[0] & 3];
	s->seg = 7;
	s->over = false;
	struct proto_conf conf = {
	        .starttls = (data[0] & 4) != 0, .require_tls = (data[0] & 8) != 0, .observe = true};
	s->st = calloc(1, s->ops->state_size);
	if (s->st == NULL)
		return 0;
	s->ops->init(s->st, &conf);
	const char *greeting = s->ops == &proto_smtp   ? "220 hi\r\n"
	                       : s->ops == &proto_pop3 ? "+OK hi\r\n"
	                                               : "* OK hi\r\n";
	queue(s, 1, greeting, strlen(greeting));
	drive(s);
	for (size_t at = 1; at + 1 < size && !s->over;) {
		uint8_t c = data[at++], arg = data[at++];
		switch (c % 4) {
		case 0:
		case 1: {
			size_t n = arg <= size - at ? arg : size - at;
			queue_line(s, c % 4, data + at, n);
			at += n;
			break;
		}
		case 2:
			if (s->ops == &proto_imap)
				queue_form(s, imap_forms[arg % (sizeof(imap_forms) /
				                                sizeof(imap_forms[0]))]);
			else if (s->ops == &proto_pop3)
				queue_form(s, pop3_forms[arg % (sizeof(pop3_forms) /
				                                sizeof(pop3_forms[0]))]);
			else
				queue_form(s, smtp_forms[arg % (sizeof(smtp_forms) /
				                                sizeof(smtp_forms[0]))]);
			break;
		default:
			s->seg = (size_t)arg + 1;
			break;
		}
	}
	free(s->st);
	return 0;
}
