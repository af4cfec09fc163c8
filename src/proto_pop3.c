/* POP3 (RFC 1939, response codes RFC 3206): -ERR [SYS/TEMP] tells the client
 * the failure is transient and not its credentials. */
#include <postern/proto.h>

const struct proto_ops proto_pop3 = {
	.name = "pop3",
	.alpn = "pop3",
	.reply =
		{
			[PROTO_REPLY_BUSY] = "-ERR [SYS/TEMP] Too many connections, try again later\r\n",
			[PROTO_REPLY_BACKEND_DOWN] = "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n",
			[PROTO_REPLY_SHUTDOWN] = "-ERR [SYS/TEMP] Server shutting down\r\n",
		},
};
