/* TLS for each service: the plain description tls.c builds contexts from,
 * taken from the service's keys, and the SSLs its sessions start with. */
#include <stdlib.h>
#include <syslog.h>

#include <postern/config.h>
#include <postern/log.h>
#include <postern/metrics.h>
#include <postern/proto.h>
#include <postern/tls.h>

static bool strict_files;

void
config_tls_strict_files(bool on)
{
	strict_files = on;
}

/* strict_sni refused a handshake: counted, and said (the session's own
 * line says who and "handshake failed"). */
static void
on_sni_refused(void *arg, const char *name)
{
	const char *svc = arg;

	shared_add(&metrics_service(svc)->refused[MR_UNKNOWN_SNI], 1);
	log_msg(LOG_INFO, "service %s: TLS handshake refused (strict_sni): %s%s", svc,
	        *name ? "no certificate for " : "no server name sent", name);
}

void
config_tls_conf(const struct service *svc, struct tls_server_conf *c)
{
	*c = (struct tls_server_conf){
	        .name = svc->name,
	        .mode = svc->tls,
	        .alpn = proto_get(svc->protocol)->alpn,
	        .cert = svc->cert.v,
	        .key = svc->key.v,
	        .cert_line = svc->cert.line,
	        .key_line = svc->key.line,
	        .n = svc->cert.n, /* as many keys: the validation pass checks */
	        .line = svc->line,
	        .min_version = svc->tls_min_version,
	        .ciphers = svc->ciphers,
	        .ciphersuites = svc->ciphersuites,
	        .verify = svc->client_verify == CLIENT_VERIFY_REQUIRE    ? TLS_VERIFY_REQUIRE
	                  : svc->client_verify == CLIENT_VERIFY_OPTIONAL ? TLS_VERIFY_OPTIONAL
	                                                                 : TLS_VERIFY_OFF,
	        .client_ca = svc->client_ca,
	        .dir = svc->cert_dir.v,
	        .dir_line = svc->cert_dir.line,
	        .ndir = svc->cert_dir.n,
	        .strict_sni = svc->strict_sni,
	        .dir_files_strict = strict_files,
	        .refused = on_sni_refused,
	        .refused_arg = svc->name,
	};
}

int
config_tls_load(struct service *svc, FILE *report, char *err, size_t errlen, int *bad_line)
{
	struct tls_server_conf c;

	config_tls_conf(svc, &c);
	c.report = report;
	svc->tls_server = tls_server_load(&c, err, errlen, bad_line);
	return svc->tls_server ? 0 : -1;
}

int
config_tls_backend_load(struct service *svc, char *err, size_t errlen)
{
	svc->tls_backend = tls_client_load(svc->backend_verify, svc->backend_ca, err, errlen);
	return svc->tls_backend ? 0 : -1;
}

void
config_tls_free(struct service *svc)
{
	tls_server_free(svc->tls_server);
	svc->tls_server = NULL;
	tls_client_free(svc->tls_backend);
	svc->tls_backend = NULL;
}

SSL *
tls_server_new(const struct service *svc)
{
	return tls_server_ssl(svc->tls_server);
}

SSL *
tls_backend_new(const struct service *svc)
{
	return tls_client_ssl(svc->tls_backend,
	                      svc->backend_sni ? svc->backend_sni : svc->backend_host,
	                      svc->backend_verify);
}
