/* Configuration: parsed from INI with inih, validated in a second pass,
 * immutable once built. Sessions hold a reference so SIGHUP can swap it. */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include <postern/netaddr.h>
#include <postern/proto_kind.h>
#include <postern/tls.h>

enum tls_mode { TLSMODE_OFF, TLSMODE_IMPLICIT, TLSMODE_STARTTLS };
enum log_target { LOGTO_STDERR, LOGTO_SYSLOG, LOGTO_FILE };
enum log_format { LOGFMT_TEXT, LOGFMT_JSON };
enum client_verify { CLIENT_VERIFY_OFF, CLIENT_VERIFY_OPTIONAL, CLIENT_VERIFY_REQUIRE };

struct config_oauth2;
struct oauth2_provider;

/* A list of strings, each remembering the config line it came from. */
struct strlist {
	char **v;
	int *line;
	size_t n;
};

/* The longest service (section) name: logs and metric labels carry it whole. */
#define CONFIG_SERVICE_NAME_MAX 64

struct service {
	char *name;
	int line; /* the section header's line */
	enum proto_kind protocol;

	struct sockaddr_ex *listen;
	size_t nlisten;

	enum tls_mode tls;
	bool require_tls;
	struct strlist cert, key;
	struct strlist cert_dir; /* directories of pairs, after cert/key */
	bool strict_sni;         /* refuse a name no certificate has */

	struct sockaddr_ex backend;
	char *backend_host; /* host part of backend (NULL for unix:) */
	enum tls_mode backend_tls;
	bool backend_verify;
	char *backend_ca, *backend_sni, *helo_name;

	int proxy_protocol; /* 0 off, 1 or 2 */
	bool log_commands;
	bool xclient; /* SMTP: the client's address to the backend by XCLIENT */
	/* backend_auth = oauth2:NAME: postern answers the client's password
	 * login itself and logs in to the backend with an OAuth 2.0 token of
	 * that provider (oauth2_login.h). NULL: passthrough. Set by the
	 * validation pass. */
	char *backend_auth;
	const struct oauth2_provider *oauth2;
	char *capture_dir;

	int tls_min_version; /* TLS1_2_VERSION or TLS1_3_VERSION */
	char *ciphers, *ciphersuites;
	char *client_ca;
	enum client_verify client_verify;

	double connect_timeout, handshake_timeout, idle_timeout; /* seconds */
	double dns_cache_time; /* how long a backend name's addresses are reused */

	struct netaddr_cidrs accept_proxy_from;

	/* Built by the validation pass (config_tls_load), NULL when tls = off. */
	struct tls_server *tls_server;
	/* Built by config_tls_backend_load when backend_tls != off. */
	SSL_CTX *tls_backend;
};

struct config {
	char *path;
	int refcount;

	char *user, *group;
	int workers; /* 1 to WORKERS_MAX; auto is resolved to the CPU count at load */
	enum log_target log_target;
	char *log_file;
	int log_level; /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG from <syslog.h> */
	enum log_format log_format;
	int log_facility; /* log = syslog:NAME; <syslog.h> LOG_MAIL..., 0 means LOG_MAIL */
	char *pidfile;
	int max_connections;
	int max_handshakes; /* client TLS handshakes in progress, per worker */
	double shutdown_timeout;
	struct sockaddr_ex metrics; /* metrics.len == 0 when unset */
	struct strlist ticket_keys;
	struct ticket_keys *tickets; /* loaded from ticket_keys (load_tls) */
	char *keylog;

	struct service *services;
	size_t nservices;

	struct config_oauth2 *oauth2; /* [oauth2:NAME] sections (config_oauth2.h), or NULL */
};

/* Most workers one configuration may ask for; two sets of them overlap
 * during a reload. */
#define WORKERS_MAX 512

/* Parses and validates PATH. On success returns a config with refcount 1.
 * On failure returns NULL and has written every error to ERRS as
 * "FILE:LINE: message\n" lines. */
struct config *config_load(const char *path, FILE *errs);

/* Same, from a string already in memory (unit tests, fuzzing); NAME is used
 * as FILE in messages. load_tls = false skips certificate loading. */
struct config *config_load_string(const char *name, const char *text, bool load_tls, FILE *errs);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* config_parse_duration: "30s", "5m", "2h", "1.5m" or plain seconds, from 0
 * to a year. config_parse_bool: yes/no, true/false, on/off, 1/0. Both
 * return 0, or -1 on a bad value (src/config_values.c). */
int config_parse_duration(const char *s, double *out);
int config_parse_bool(const char *s, bool *out);

void config_strlist_free(struct strlist *l);

/* TLS of a service (src/config_tls.c). config_tls_conf describes SVC's
 * server side for tls.c (pointers into SVC). config_tls_load builds
 * svc->tls_server (skipped files and expiry warnings as lines to REPORT,
 * which may be NULL) and config_tls_backend_load svc->tls_backend, returning
 * -1 with a message in ERR (and the line at fault in *BAD_LINE) on
 * failure; config_tls_free frees both. tls_server_new gives the SSL of a
 * connection accepted on SVC, tls_backend_new one towards SVC's backend
 * with SNI and the name its certificate must match. */
void config_tls_conf(const struct service *svc, struct tls_server_conf *c);
int config_tls_load(struct service *svc, FILE *report, char *err, size_t errlen, int *bad_line);
/* With ON (postern -t), a bad file in a cert_dir fails the load; without,
 * it is skipped with a "FILE: message" line in REPORT (start, reload). */
void config_tls_strict_files(bool on);
int config_tls_backend_load(struct service *svc, char *err, size_t errlen);
void config_tls_free(struct service *svc);
SSL *tls_server_new(const struct service *svc);
SSL *tls_backend_new(const struct service *svc);

/* Key parsers for the key table in config.c (src/config_values.c). Each
 * stores VALUE in the field at BASE + OFF (BASE: the struct config or struct
 * service), records LINE where the field keeps lines, and on a bad value
 * returns -1 with the reason in ERR. ARG: names for enums, a range for ints. */
struct config_enum {
	const char *name;
	int val;
};
struct config_range {
	long min, max;
};
typedef int config_key_parser(void *base, size_t off, const void *arg, const char *value, int line,
                              char *err, size_t errlen);
config_key_parser config_key_str, config_key_strlist, config_key_cidrs, config_key_listen,
        config_key_backend, config_key_addr, config_key_bool, config_key_enum, config_key_int,
        config_key_workers, config_key_duration, config_key_timeout, config_key_log;

#endif
