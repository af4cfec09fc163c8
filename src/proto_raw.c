/* Opaque TCP: no protocol, so nothing to say; failures just close. */
#include <postern/proto.h>

const struct proto_ops proto_raw = {
        .name = "raw",
        .alpn = NULL,
        .reply = {NULL},
};
