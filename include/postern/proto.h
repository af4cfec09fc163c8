/* The protocol adapter interface. An adapter knows one mail protocol and
 * does no I/O: the session asks it for canned replies (and, as the adapters
 * grow, for verdicts on lines). Everything protocol-specific lives behind
 * this table, so the session and relay never test which protocol runs. */
#ifndef POSTERN_PROTO_H
#define POSTERN_PROTO_H

#include <postern/config.h>

enum proto_reply {
	PROTO_REPLY_BUSY,         /* max_connections reached */
	PROTO_REPLY_BACKEND_DOWN, /* backend refused, unreachable or timed out */
	PROTO_REPLY_SHUTDOWN,     /* postern is stopping */
	PROTO_REPLY_COUNT
};

struct proto_ops {
	const char *name; /* "imap", "pop3", "smtp", "raw" */
	const char *alpn; /* ALPN protocol id accepted from clients; NULL: any */
	/* Complete CRLF-terminated lines sent to the client before closing;
	 * NULL where the protocol has no way to say it (raw). */
	const char *reply[PROTO_REPLY_COUNT];
};

extern const struct proto_ops proto_imap, proto_pop3, proto_smtp, proto_raw;

const struct proto_ops *proto_get(enum proto_kind kind);

#endif
