#include <postern/proto.h>

const struct proto_ops *
proto_get(enum proto_kind kind)
{
	switch (kind) {
	case PROTO_IMAP:
		return &proto_imap;
	case PROTO_POP3:
		return &proto_pop3;
	case PROTO_SMTP:
		return &proto_smtp;
	default:
		return &proto_raw;
	}
}
