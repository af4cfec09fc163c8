/* What the adapters share to answer a client's password login themselves
 * (backend_auth = oauth2, PV_LOGIN): reading the credentials out of the
 * SASL mechanisms they accept. Pure; the decoded bytes are secrets the
 * caller wipes. */
#ifndef POSTERN_PROTO_LOGIN_H
#define POSTERN_PROTO_LOGIN_H

#include <stddef.h>

#include <postern/proto.h>
#include <postern/proto_util.h>

/* Longest user name and password accepted. */
#define PL_USER_MAX 255
#define PL_PASS_MAX PROTO_LOGIN_PASS_MAX

/* SASL PLAIN's response (RFC 4616: "authzid NUL authcid NUL passwd") as
 * B64 (N bytes of base64; "=" is an empty response), decoded into OUT
 * (CAP bytes): *USER and *PASS point into it. An authorization identity
 * other than none or the user's own is refused: postern logs in as the
 * account only. Returns 0, or -1 when it is not such a response. */
int pl_sasl_plain(const char *b64, size_t n, char *out, size_t cap, struct pu_word *user,
                  struct pu_word *pass);

/* Sets ACT for PV_LOGIN: consume CONSUME bytes, log in as USER with PASS. */
enum proto_verdict pl_login(struct proto_action *act, size_t consume, struct pu_word user,
                            struct pu_word pass);

#endif
