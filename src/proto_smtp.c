/* SMTP (RFC 5321 3.8, enhanced codes RFC 3463): 421 closes the channel and
 * tells the client to retry later. */
#include <postern/proto.h>

const struct proto_ops proto_smtp = {
	.name = "smtp",
	.alpn = "smtp",
	.reply =
		{
			[PROTO_REPLY_BUSY] = "421 4.3.2 Too many connections, try again later\r\n",
			[PROTO_REPLY_BACKEND_DOWN] = "421 4.4.1 Mail server unavailable, try again later\r\n",
			[PROTO_REPLY_SHUTDOWN] = "421 4.3.2 Server shutting down\r\n",
		},
};
