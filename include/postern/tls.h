/* OpenSSL contexts: server side (certificates chosen by SNI, ALPN policy,
 * TLS floor, no renegotiation), client side towards backends, and error
 * mapping. Inputs are plain values: the caller (the configuration) says
 * what a service needs, this module knows no configuration or protocol. */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include <postern/tls_conf.h>

struct tls_server;
struct tls_binding;

/* keylog: appends TLS secrets in NSS key log format to PATH (mode 0600) for
 * Wireshark; NULL stops. Returns -1 with errno on failure. */
int tls_keylog_open(const char *path);

/* One-time library setup. */
void tls_init(void);

/* Builds the server contexts of C. On failure returns NULL, writes a
 * message to ERR and the line at fault to *BAD_LINE (the key's line when a
 * key does not match its certificate). */
struct tls_server *tls_server_load(const struct tls_server_conf *c, char *err, size_t errlen,
                                   int *bad_line);
void tls_server_free(struct tls_server *ts);

/* A new server-side SSL for an accepted connection. */
SSL *tls_server_ssl(const struct tls_server *ts);

/* What TS's sessions are bound to (see tls_binding.h). */
const struct tls_binding *tls_server_binding(const struct tls_server *ts);

/* How many certificates TS serves and when they expire (zeros for NULL). */
void tls_server_stats(const struct tls_server *ts, struct tls_stats *st);

/* The client context towards a backend: TLS 1.2 minimum, the chain
 * verified against the CA file CA or the system store (CA NULL) unless
 * VERIFY is false. Returns NULL with a message in ERR on failure. */
SSL_CTX *tls_client_load(bool verify, const char *ca, char *err, size_t errlen);
void tls_client_free(SSL_CTX *ctx);

/* A new client-side SSL of CTX towards the host NAME (a DNS name or an IP
 * literal; NULL: none): SNI for a DNS name, and with VERIFY the name the
 * certificate must match. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name, bool verify);

/* Appends the oldest queued OpenSSL error (or "unknown") to BUF; clears the queue. */
const char *tls_error_string(char *buf, size_t len);

#endif
