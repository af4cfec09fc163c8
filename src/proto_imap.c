/* IMAP (RFC 9051): untagged BYE is the only way to refuse before a command. */
#include <postern/proto.h>

const struct proto_ops proto_imap = {
	.name = "imap",
	.alpn = "imap",
	.reply =
		{
			[PROTO_REPLY_BUSY] = "* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
			[PROTO_REPLY_BACKEND_DOWN] = "* BYE [UNAVAILABLE] Mail server unavailable, try again later\r\n",
			[PROTO_REPLY_SHUTDOWN] = "* BYE [UNAVAILABLE] Server shutting down\r\n",
		},
};
