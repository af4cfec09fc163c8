/* OpenSSL contexts: server side (certificates chosen by SNI, ALPN policy,
 * TLS floor, no renegotiation) and error mapping. */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct service;

/* keylog: appends TLS secrets in NSS key log format to PATH (mode 0600) for
 * Wireshark; NULL stops. Returns -1 with errno on failure. */
int tls_keylog_open(const char *path);

/* One-time library setup. */
void tls_init(void);

/* Builds the server contexts for SVC from its cert/key lists and TLS keys.
 * On failure returns -1, writes a message to ERR and the config line that is
 * at fault to *BAD_LINE (the key line when a key does not match its cert). */
int tls_service_load(struct service *svc, char *err, size_t errlen, int *bad_line);
void tls_service_free(struct service *svc);

/* Builds the client context towards SVC's backend: TLS 1.2 minimum, the
 * chain verified against backend_ca or the system store unless
 * backend_verify = no. Returns -1 with a message in ERR on failure. */
int tls_backend_load(struct service *svc, char *err, size_t errlen);

/* A new client-side SSL towards SVC's backend: SNI and the name (or IP)
 * that the certificate must match are set. */
SSL *tls_backend_new(const struct service *svc);

/* A new server-side SSL for an accepted connection on SVC. */
SSL *tls_server_new(const struct service *svc);

/* Appends the oldest queued OpenSSL error (or "unknown") to BUF; clears the queue. */
const char *tls_error_string(char *buf, size_t len);

#endif
