/* The plain description of a service's TLS server side, which the
 * configuration fills in and tls.c and tls_binding.c read: a header of its
 * own so that neither of those needs the other's. */
#ifndef POSTERN_TLS_CONF_H
#define POSTERN_TLS_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Whether a client certificate is asked for and required. */
enum tls_verify { TLS_VERIFY_OFF, TLS_VERIFY_OPTIONAL, TLS_VERIFY_REQUIRE };

/* What the server contexts of one service are built from. Only read, and
 * only during tls_server_load. The lines are handed back to say which
 * setting is at fault. */
struct tls_server_conf {
	const char *name; /* the service's: its sessions resume nowhere else */
	int mode;         /* the service's TLS mode, bound like its name */
	const char *alpn; /* ALPN protocol id a client offering ALPN must offer; NULL: any */
	char *const *cert, *const *key; /* N certificate chain and key files, paired by index */
	const int *cert_line, *key_line;
	size_t n;
	int line;                           /* for faults of no one file */
	int min_version;                    /* TLS1_2_VERSION or TLS1_3_VERSION */
	const char *ciphers, *ciphersuites; /* NULL: OpenSSL's defaults */
	enum tls_verify verify;
	const char *client_ca; /* needed unless verify is off */
	/* Directories of certificates (cert_dir), after the pairs above. */
	char *const *dir;
	const int *dir_line;
	size_t ndir;
	/* Refuse a client whose SNI names no certificate, or who sends none. */
	bool strict_sni;
	/* A bad file in a directory fails the load (postern -t) instead of
	 * being skipped with an error line (start and reload). */
	bool dir_files_strict;
	/* Where "FILE: message" lines go: files skipped, certificates about
	 * to expire (NULL: nowhere). */
	FILE *report;
	/* Told of each handshake refused by strict_sni, with the name sent
	 * ("" for none; only a well-formed name, never raw client bytes). */
	void (*refused)(void *arg, const char *name);
	void *refused_arg;
};

/* Certificates of a service, for metrics and the expiry warning. */
struct tls_stats {
	size_t certificates;
	long long soonest_expiry; /* notAfter, Unix time; 0: no certificate */
	size_t expiring;          /* within TLS_EXPIRY_WARN_DAYS */
};
#define TLS_EXPIRY_WARN_DAYS 14

#endif
