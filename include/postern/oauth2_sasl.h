/* The SASL messages postern sends a mail server on behalf of a user with an
 * OAuth 2.0 access token, and the error challenge the server may answer
 * with. XOAUTH2 (Google, Microsoft): "user=U^Aauth=Bearer T^A^A".
 * OAUTHBEARER (RFC 7628): "n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A". Both
 * are sent base64-encoded; the result is a secret the caller wipes. */
#ifndef POSTERN_OAUTH2_SASL_H
#define POSTERN_OAUTH2_SASL_H

#include <stddef.h>

/* Each writes the base64 message and a NUL into OUT and returns its
 * length, or -1 if a value holds a byte the message cannot carry (control
 * characters; for OAUTHBEARER's host also ',' '=' and space) or OUT is too
 * small. HOST may be NULL and PORT 0 to leave those pairs out. */
long oauth2_sasl_xoauth2(const char *user, const char *token, char *out, size_t outcap);
long oauth2_sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token,
                             char *out, size_t outcap);

/* What a server's error challenge says (RFC 7628 3.2.2; Google's XOAUTH2
 * challenge has the same shape). Fields are "" when absent. The client
 * answers such a challenge with an empty response (OAUTHBEARER: the single
 * byte ^A, base64 "AQ==") and then reads the final failure. */
struct oauth2_sasl_error {
	char status[64];
	char scope[512];
	char schemes[64];
};

/* Decodes the base64 challenge B64 (N bytes, no CRLF) and reads its JSON.
 * Returns 0, or -1 if it is not base64 of a JSON object. */
int oauth2_sasl_parse_error(const char *b64, size_t n, struct oauth2_sasl_error *e);

/* Base64 (RFC 4648, with padding) of IN into OUT, NUL-terminated; returns
 * the length or -1 if OUT is too small. URL: the URL-safe alphabet without
 * padding (PKCE, state). */
long oauth2_base64(const unsigned char *in, size_t n, char *out, size_t outcap, int url);
/* Strict base64 decoding (padding required, no white space); returns the
 * length or -1. */
long oauth2_unbase64(const char *in, size_t n, unsigned char *out, size_t outcap);

#endif
