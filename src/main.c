/* The command line: check the configuration, open the log, then serve as
 * one process or as a master of workers. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <ev.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include <postern/config.h>
#include <postern/config_advice.h>
#include <postern/control.h>
#include <postern/daemon.h>
#include <postern/log.h>
#include <postern/oauth2_authorize.h>
#include <postern/oauth2_http.h>
#include <postern/tls.h>
#include <postern/workers.h>

#define DEFAULT_CONFIG "/etc/postern/postern.ini"
/* inih has no version call: the build passes what pkg-config says. */
#ifndef POSTERN_INIH_VERSION
#define POSTERN_INIH_VERSION "unknown"
#endif

/* The libraries too: a bug report needs the OpenSSL running (a library
 * upgrade changes it without a rebuild) as much as the one built against. */
static void
print_versions(void)
{
	printf("postern %s\n", POSTERN_VERSION);
	printf("OpenSSL %s (built with %s)\n", OpenSSL_version(OPENSSL_VERSION_STRING),
	       OPENSSL_VERSION_STR);
	printf("libev %d.%d (built with %d.%d)\n", ev_version_major(), ev_version_minor(),
	       EV_VERSION_MAJOR, EV_VERSION_MINOR);
	printf("inih (built with %s)\n", POSTERN_INIH_VERSION);
	printf("libcurl %s\n", oauth2_http_version());
}

static void
warn_on_stderr(void *arg, const char *text)
{
	(void)arg;
	fprintf(stderr, "postern: WARNING: %s\n", text);
}

static void
usage(FILE *out)
{
	fprintf(out, "usage: postern [-c FILE] [-t] [-s reload] [-V] [-h]\n"
	             "       postern [-c FILE] oauth2-authorize [--loopback] PROVIDER ACCOUNT\n"
	             "       postern [-c FILE] oauth2-check PROVIDER ACCOUNT\n"
	             "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
	             "  -t       check the configuration and exit\n"
	             "  -s reload  reload the running daemon (its pidfile) and say the outcome\n"
	             "  -V       print the version and exit\n"
	             "  -h       print this help and exit\n");
}

int
main(int argc, char **argv)
{
	const char *config_path = DEFAULT_CONFIG;
	bool check_only = false, authorize;
	const char *send = NULL;
	struct config *cfg;
	char err[512];
	int c;

	/* '+': options end at the first word (a command with its own options) */
	while ((c = getopt(argc, argv, "+c:ts:Vh")) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 's':
			send = optarg;
			break;
		case 'V':
			print_versions();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return DAEMON_EXIT_CONFIG;
		}
	}
	authorize = optind < argc && oauth2_is_command(argv[optind]);
	if (optind != argc && !authorize) {
		usage(stderr);
		return DAEMON_EXIT_CONFIG;
	}
	if (send)
		return control_send(config_path, send);
	signal(SIGPIPE, SIG_IGN);
	tls_init();
	config_tls_strict_files(check_only); /* -t: a bad file in a cert_dir fails */
	cfg = config_load(config_path, stderr);
	if (cfg == NULL)
		return DAEMON_EXIT_CONFIG;
	if (authorize) {
		c = oauth2_command(cfg, argc - optind, argv + optind);
		config_unref(cfg);
		return c;
	}
	if (check_only) {
		config_advice(cfg, warn_on_stderr, NULL);
		printf("postern: configuration OK\n");
		config_unref(cfg);
		return 0;
	}
	if (log_configure(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "postern: %s\n", err);
		config_unref(cfg);
		return DAEMON_EXIT_RUNTIME;
	}
	if (workers_count(cfg) > 1 || workers_privileged(cfg))
		return workers_run(cfg, config_path);
	return daemon_serve(cfg, config_path);
}
