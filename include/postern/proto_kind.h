/* Which protocol a service speaks: named by the configuration, served by
 * the adapter proto_get() returns. A header of its own so that neither
 * needs the other. */
#ifndef POSTERN_PROTO_KIND_H
#define POSTERN_PROTO_KIND_H

enum proto_kind { PROTO_IMAP, PROTO_POP3, PROTO_SMTP, PROTO_RAW };

#endif
