/* Binds TLS sessions to the service that issued them. All services share
 * the ticket keys, so a session (TLS 1.2 session id or ticket, TLS 1.3
 * ticket) would otherwise resume on any of them: a client without a
 * certificate would take one from an open service, or from before a
 * reload that turned client certificates on, to a service that requires
 * one. A resumed session must never grant what a full handshake refuses. */
#ifndef POSTERN_TLS_BINDING_H
#define POSTERN_TLS_BINDING_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct tls_server_conf;

#define TLS_BINDING_LEN 32 /* SHA-256; also SSL_MAX_SID_CTX_LENGTH */

struct tls_binding {
	/* A digest of everything that gates access to the service: its name,
	 * TLS mode, client_verify, client_ca's contents, TLS floor, ciphers,
	 * ciphersuites and the certificates it serves (from cert and cert_dir
	 * alike). Contents, not paths: a fleet with the same files binds
	 * alike. */
	unsigned char id[TLS_BINDING_LEN];
	bool need_peer; /* client_verify = require */
};

/* Computes into B the binding of the service C describes, serving the
 * NSERVED certificate pairs whose digests (struct cert_pair's) are SERVED,
 * in an order that depends only on the configuration and the files. On failure (client_ca cannot be
 * read) returns -1 with a message in ERR and the config line in *BAD_LINE. */
int tls_binding_compute(const struct tls_server_conf *c, const unsigned char *const *served,
                        size_t nserved, struct tls_binding *b, char *err, size_t errlen,
                        int *bad_line);

/* Makes CTX's session id context B's id and checks every ticket it
 * decrypts against B: a ticket of another binding, or without a verified
 * client certificate where B needs one, gets a full handshake. B must
 * outlive CTX. Returns -1 if OpenSSL refuses. */
int tls_binding_attach(SSL_CTX *ctx, const struct tls_binding *b);

#endif
