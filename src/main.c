/* The command line: check the configuration, open the log, then serve as
 * one process or as a master of workers. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include <postern/config.h>
#include <postern/control.h>
#include <postern/daemon.h>
#include <postern/log.h>
#include <postern/tls.h>
#include <postern/workers.h>

#define DEFAULT_CONFIG "/etc/postern/postern.ini"

static void
usage(FILE *out)
{
	fprintf(out, "usage: postern [-c FILE] [-t] [-s reload] [-V] [-h]\n"
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
	bool check_only = false;
	const char *send = NULL;
	struct config *cfg;
	char err[512];
	int c;

	while ((c = getopt(argc, argv, "c:ts:Vh")) != -1) {
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
			printf("postern %s\n", POSTERN_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return DAEMON_EXIT_CONFIG;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return DAEMON_EXIT_CONFIG;
	}
	if (send)
		return control_send(config_path, send);
	signal(SIGPIPE, SIG_IGN);
	tls_init();
	cfg = config_load(config_path, stderr);
	if (cfg == NULL)
		return DAEMON_EXIT_CONFIG;
	if (check_only) {
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
