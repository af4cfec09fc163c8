/* Configuration loader: defaults, every key's values, exact FILE:LINE error
 * messages, the reader's line handling, refcounting. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/config.h>

/* A complete valid service; tests append keys or prepend sections. */
#define SVC                                                                                        \
	"[imaps]\n"                                                                                \
	"protocol = imap\n"                                                                        \
	"listen = 127.0.0.1:993\n"                                                                 \
	"backend = 127.0.0.1:143\n"                                                                \
	"cert = /c.pem\n"                                                                          \
	"key = /k.pem\n"

/* Loads TEXT as "t.ini" without certificates; returns what went to errs
 * (malloc'ed) and the config in *OUT (or unrefs it). */
static char *
load(const char *text, struct config **out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct config *cfg;

	assert_non_null(f);
	cfg = config_load_string("t.ini", text, false, f);
	fclose(f);
	if (out)
		*out = cfg;
	else
		config_unref(cfg);
	return buf;
}

static struct config *
load_ok(const char *text)
{
	struct config *cfg;
	char *errs = load(text, &cfg);

	if (errs[0])
		fprintf(stderr, "unexpected errors:\n%s", errs);
	assert_string_equal(errs, "");
	free(errs);
	assert_non_null(cfg);
	return cfg;
}

/* TEXT must fail with exactly EXPECTED on errs. */
static void
expect_errors(const char *text, const char *expected)
{
	struct config *cfg;
	char *errs = load(text, &cfg);

	assert_string_equal(errs, expected);
	assert_null(cfg);
	free(errs);
}

/* SVC plus LINE (which becomes line 7). */
static void
expect_svc_error(const char *line, const char *expected)
{
	char text[1024];

	snprintf(text, sizeof(text), SVC "%s\n", line);
	expect_errors(text, expected);
}

static struct config *
svc_ok(const char *lines)
{
	char text[1024];

	snprintf(text, sizeof(text), SVC "%s\n", lines);
	return load_ok(text);
}

static uint16_t
port_of(const struct sockaddr_ex *sa)
{
	if (sa->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&sa->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&sa->ss)->sin6_port);
}

/* A backend name is kept for connect time (resolver.c), unresolved. */
static void
test_backend_name_is_not_resolved_at_load(void **state)
{
	struct config *cfg =
	        load_ok("[imaps]\nprotocol = imap\nlisten = 127.0.0.1:993\n"
	                "backend = nowhere.invalid:143\ncert = /c.pem\nkey = /k.pem\n");
	const struct service *svc = &cfg->services[0];

	(void)state;
	assert_int_equal(svc->backend.ss.ss_family, AF_UNSPEC);
	assert_int_equal(ntohs(svc->backend.name_port), 143);
	assert_string_equal(svc->backend_host, "nowhere.invalid");
	assert_true(svc->dns_cache_time == 30);
	config_unref(cfg);
	cfg = svc_ok("dns_cache_time = 0");
	assert_true(cfg->services[0].dns_cache_time == 0);
	config_unref(cfg);
}

static void
test_defaults(void **state)
{
	struct config *cfg = load_ok(SVC);
	struct service *s;

	(void)state;
	assert_string_equal(cfg->path, "t.ini");
	assert_int_equal(cfg->refcount, 1);
	assert_null(cfg->user);
	assert_null(cfg->group);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->log_target, LOGTO_STDERR);
	assert_null(cfg->log_file);
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_int_equal(cfg->log_format, LOGFMT_TEXT);
	assert_null(cfg->pidfile);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->max_handshakes, 1000);
	assert_true(cfg->shutdown_timeout == 30);
	assert_int_equal(cfg->metrics.len, 0);
	assert_int_equal(cfg->ticket_keys.n, 0);
	assert_null(cfg->keylog);
	assert_int_equal(cfg->nservices, 1);

	s = &cfg->services[0];
	assert_string_equal(s->name, "imaps");
	assert_int_equal(s->line, 1);
	assert_int_equal(s->protocol, PROTO_IMAP);
	assert_int_equal(s->nlisten, 1);
	assert_string_equal(s->listen[0].text, "127.0.0.1:993");
	assert_int_equal(s->listen[0].line, 3);
	assert_int_equal(s->listen[0].ss.ss_family, AF_INET);
	assert_int_equal(s->listen[0].len, sizeof(struct sockaddr_in));
	assert_int_equal(port_of(&s->listen[0]), 993);
	assert_int_equal(s->tls, TLSMODE_IMPLICIT);
	assert_true(s->require_tls);
	assert_int_equal(s->cert.n, 1);
	assert_string_equal(s->cert.v[0], "/c.pem");
	assert_int_equal(s->cert.line[0], 5);
	assert_int_equal(s->key.n, 1);
	assert_string_equal(s->key.v[0], "/k.pem");
	assert_int_equal(s->key.line[0], 6);
	assert_string_equal(s->backend.text, "127.0.0.1:143");
	assert_int_equal(s->backend.line, 4);
	assert_int_equal(port_of(&s->backend), 143);
	assert_string_equal(s->backend_host, "127.0.0.1");
	assert_int_equal(s->backend_tls, TLSMODE_OFF);
	assert_true(s->backend_verify);
	assert_null(s->backend_ca);
	assert_null(s->backend_sni);
	assert_null(s->helo_name);
	assert_int_equal(s->proxy_protocol, 0);
	assert_false(s->log_commands);
	assert_null(s->capture_dir);
	assert_int_equal(s->tls_min_version, TLS1_2_VERSION);
	assert_null(s->ciphers);
	assert_null(s->ciphersuites);
	assert_null(s->client_ca);
	assert_int_equal(s->client_verify, CLIENT_VERIFY_OFF);
	assert_true(s->connect_timeout == 10);
	assert_true(s->handshake_timeout == 30);
	assert_true(s->idle_timeout == 1800);
	assert_int_equal(s->accept_proxy_from.n, 0);
	assert_null(s->tls_server);
	config_unref(cfg);
}

static void
test_global_values(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[global]\nuser = mail\ngroup = mail\nworkers = 1\nlog = syslog\n"
	              "log_level = debug\nlog_format = text\npidfile = /run/p.pid\n"
	              "max_connections = 5\nshutdown_timeout = 0\nmax_handshakes = 3\n" SVC);
	assert_string_equal(cfg->user, "mail");
	assert_string_equal(cfg->group, "mail");
	assert_int_equal(cfg->log_target, LOGTO_SYSLOG);
	assert_int_equal(cfg->log_level, LOG_DEBUG);
	assert_string_equal(cfg->pidfile, "/run/p.pid");
	assert_int_equal(cfg->max_connections, 5);
	assert_int_equal(cfg->max_handshakes, 3);
	assert_true(cfg->shutdown_timeout == 0);
	assert_int_equal(cfg->services[0].line, 12);
	config_unref(cfg);

	cfg = load_ok("[global]\nlog = /var/log/postern.log\nlog_level = error\n"
	              "max_connections = 1000000\nshutdown_timeout = 2m\n"
	              "max_handshakes = 1000000\n" SVC);
	assert_int_equal(cfg->log_target, LOGTO_FILE);
	assert_string_equal(cfg->log_file, "/var/log/postern.log");
	assert_int_equal(cfg->log_level, LOG_ERR);
	assert_true(cfg->shutdown_timeout == 120);
	assert_int_equal(cfg->max_handshakes, 1000000);
	config_unref(cfg);

	cfg = load_ok("[global]\nlog = stderr\nlog_level = warn\n" SVC);
	assert_int_equal(cfg->log_target, LOGTO_STDERR);
	assert_int_equal(cfg->log_level, LOG_WARNING);
	config_unref(cfg);
	cfg = load_ok("[global]\nlog_level = INFO\n" SVC);
	assert_int_equal(cfg->log_level, LOG_INFO);
	config_unref(cfg);
}

static void
test_global_bad_values(void **state)
{
	(void)state;
	expect_errors("[global]\n"
	              "workers = 0\n"
	              "max_connections = 0\n"
	              "log_level = loud\n"
	              "log_format = xml\n"
	              "shutdown_timeout = -1\n"
	              "user =\n" SVC,
	              "t.ini:2: workers = 0: invalid value (expected auto or 1 to 512)\n"
	              "t.ini:3: max_connections = 0: invalid value (expected an integer from 1 to "
	              "1000000)\n"
	              "t.ini:4: log_level = loud: invalid value (expected error, warn, info or "
	              "debug)\n"
	              "t.ini:5: log_format = xml: invalid value (expected text or json)\n"
	              "t.ini:6: shutdown_timeout = -1: invalid duration (expected e.g. 30s, 5m, 2h "
	              "or seconds, at most a year)\n"
	              "t.ini:7: user: missing value\n");
	expect_errors("[global]\nmax_connections = 99999999999999999999\nworkers = x\n" SVC,
	              "t.ini:2: max_connections = 99999999999999999999: invalid value (expected an "
	              "integer from 1 to 1000000)\n"
	              "t.ini:3: workers = x: invalid value (expected auto or 1 to 512)\n");
}

static void
test_max_handshakes_bad_values(void **state)
{
	static const char *const bad[] = {"0",   "-5",  "1000001",
	                                  "10k", "1.5", "99999999999999999999"};
	char text[512], want[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text),
		         "[global]\nlog_level = info\nmax_handshakes = %s\n" SVC, bad[i]);
		snprintf(want, sizeof(want),
		         "t.ini:3: max_handshakes = %s: invalid value (expected an integer from 1 "
		         "to 1000000)\n",
		         bad[i]);
		expect_errors(text, want);
	}
	expect_errors("[global]\nmax_handshakes =\n" SVC,
	              "t.ini:2: max_handshakes: missing value\n");
	expect_errors("[global]\nmax_handshakes = 5\nmax_handshakes = 6\n" SVC,
	              "t.ini:3: duplicate key 'max_handshakes' (first at line 2)\n");
	expect_errors(SVC "max_handshakes = 5\n",
	              "t.ini:7: 'max_handshakes' belongs in [global]\n");
}

static void
test_service_values(void **state)
{
	struct config *cfg;
	struct service *s;

	(void)state;
	cfg = svc_ok("require_tls = no\ntls_min_version = TLSv1.3\nciphers = HIGH:!aNULL\n"
	             "ciphersuites = TLS_AES_128_GCM_SHA256\nclient_ca = /ca.pem\n"
	             "client_verify = require\nconnect_timeout = 5\nhandshake_timeout = 1.5s\n"
	             "idle_timeout = 2h\nbackend_tls = off\nproxy_protocol = off\n"
	             "log_commands = no");
	s = &cfg->services[0];
	assert_false(s->require_tls);
	assert_int_equal(s->tls_min_version, TLS1_3_VERSION);
	assert_string_equal(s->ciphers, "HIGH:!aNULL");
	assert_string_equal(s->ciphersuites, "TLS_AES_128_GCM_SHA256");
	assert_string_equal(s->client_ca, "/ca.pem");
	assert_int_equal(s->client_verify, CLIENT_VERIFY_REQUIRE);
	assert_true(s->connect_timeout == 5);
	assert_true(s->handshake_timeout == 1.5);
	assert_true(s->idle_timeout == 7200);
	config_unref(cfg);

	cfg = load_ok("[a]\nprotocol = pop3\nlisten = [::1]:995\nbackend = unix:/run/pop3\n"
	              "cert = /c\nkey = /k\nclient_ca = /ca\nclient_verify = optional\n"
	              "[b]\nprotocol = smtp\ntls = off\nlisten = *:25\nbackend = localhost:2525\n"
	              "[c]\nprotocol = raw\nlisten = localhost:9\nbackend = [::1]:7\ntls = off\n");
	assert_int_equal(cfg->nservices, 3);
	s = &cfg->services[0];
	assert_int_equal(s->protocol, PROTO_POP3);
	assert_int_equal(s->listen[0].ss.ss_family, AF_INET6);
	assert_int_equal(port_of(&s->listen[0]), 995);
	assert_int_equal(s->backend.ss.ss_family, AF_UNIX);
	assert_string_equal(((struct sockaddr_un *)&s->backend.ss)->sun_path, "/run/pop3");
	assert_null(s->backend_host);
	assert_int_equal(s->client_verify, CLIENT_VERIFY_OPTIONAL);
	s = &cfg->services[1];
	assert_int_equal(s->line, 9);
	assert_int_equal(s->protocol, PROTO_SMTP);
	assert_int_equal(s->tls, TLSMODE_OFF);
	assert_int_equal(((struct sockaddr_in *)&s->listen[0].ss)->sin_addr.s_addr,
	                 htonl(INADDR_ANY));
	assert_string_equal(s->backend_host, "localhost");
	assert_int_equal(((struct sockaddr_in *)&s->backend.ss)->sin_addr.s_addr,
	                 htonl(INADDR_LOOPBACK));
	s = &cfg->services[2];
	assert_int_equal(s->protocol, PROTO_RAW);
	assert_string_equal(s->backend_host, "::1");
	assert_int_equal(((struct sockaddr_in *)&s->listen[0].ss)->sin_addr.s_addr,
	                 htonl(INADDR_LOOPBACK));
	config_unref(cfg);
}

static void
test_service_bad_values(void **state)
{
	(void)state;
	expect_svc_error("protocol = http",
	                 "t.ini:7: duplicate key 'protocol' (first at line 2)\n");
	expect_errors("[a]\nprotocol = http\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\n"
	              "tls = bogus\nrequire_tls = maybe\ntls_min_version = TLSv1.1\n"
	              "client_verify = always\nconnect_timeout = 0\nidle_timeout = 5x\n"
	              "handshake_timeout = 1e3\nbackend_tls = bogus\nproxy_protocol = v3\n"
	              "backend_verify = maybe\nlog_commands = 2\ncert = /c\nkey = /k\n",
	              "t.ini:2: protocol = http: invalid value (expected imap, pop3, smtp or raw)\n"
	              "t.ini:5: tls = bogus: invalid value (expected off, implicit or starttls)\n"
	              "t.ini:6: require_tls = maybe: invalid value (expected yes or no)\n"
	              "t.ini:7: tls_min_version = TLSv1.1: invalid value (expected TLSv1.2 or "
	              "TLSv1.3)\n"
	              "t.ini:8: client_verify = always: invalid value (expected off, optional or "
	              "require)\n"
	              "t.ini:9: connect_timeout = 0: must be greater than 0\n"
	              "t.ini:10: idle_timeout = 5x: invalid duration (expected e.g. 30s, 5m, 2h or "
	              "seconds, at most a year)\n"
	              "t.ini:11: handshake_timeout = 1e3: invalid duration (expected e.g. 30s, 5m, "
	              "2h or seconds, at most a year)\n"
	              "t.ini:12: backend_tls = bogus: invalid value (expected off, implicit or "
	              "starttls)\n"
	              "t.ini:13: proxy_protocol = v3: invalid value (expected off, v1 or v2)\n"
	              "t.ini:14: backend_verify = maybe: invalid value (expected yes or no)\n"
	              "t.ini:14: backend_verify needs backend_tls\n"
	              "t.ini:15: log_commands = 2: invalid value (expected yes or no)\n");
}

static void
test_addresses_in_config(void **state)
{
	(void)state;
	expect_errors(
	        "[a]\nprotocol = imap\ntls = off\n"
	        "listen = 127.0.0.1\n"
	        "listen = 127.0.0.1:0 mail.example.com:1\n"
	        "listen = unix:/run/x\n"
	        "listen = [::1]:99999\n"
	        "backend = *:143\n",
	        "t.ini:4: listen = 127.0.0.1: '127.0.0.1': invalid address (expected "
	        "HOST:PORT, [IPV6]:PORT)\n"
	        "t.ini:5: listen = 127.0.0.1:0 mail.example.com:1: '127.0.0.1:0': invalid "
	        "port '0' (expected 1 to 65535)\n"
	        "t.ini:6: listen = unix:/run/x: 'unix:/run/x': unix sockets are not allowed "
	        "here\n"
	        "t.ini:7: listen = [::1]:99999: '[::1]:99999': invalid port '99999' (expected "
	        "1 to 65535)\n"
	        "t.ini:8: backend = *:143: '*' is not allowed here\n");
	expect_errors("[a]\nprotocol = imap\ntls = off\nlisten = mail.example.com:1\n"
	              "backend = unix:rel\n",
	              "t.ini:4: listen = mail.example.com:1: 'mail.example.com:1': host names are "
	              "not allowed here, use an IP address\n"
	              "t.ini:5: backend = unix:rel: unix socket path must be absolute\n");
}

static void
test_durations(void **state)
{
	static const struct {
		const char *s;
		double v;
	} ok[] = {{"30s", 30},   {"5m", 300},           {"2h", 7200},   {"45", 45},
	          {"0", 0},      {"1.5m", 90},          {"0.25", 0.25}, {"8760h", 31536000},
	          {"00010", 10}, {"31536000", 31536000}};
	static const char *const bad[] = {
	        "",    "-1",  "s",     "5x", "1e3", " 5",    "5 ",
	        "1.",  ".5",  "5ms",   "5S", "+5",  "8761h", "99999999999999999999999",
	        "inf", "nan", "1.5.5", "1d"};
	double v;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = -1;
		assert_int_equal(config_parse_duration(ok[i].s, &v), 0);
		assert_true(v == ok[i].v);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (config_parse_duration(bad[i], &v) == 0)
			fail_msg("duration '%s' accepted", bad[i]);
	}
}

static void
test_bools(void **state)
{
	static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True"};
	static const char *const no[] = {"no", "false", "off", "0", "No"};
	static const char *const bad[] = {"", "y", "2", "yess", "enable"};
	bool b;

	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = false;
		assert_int_equal(config_parse_bool(yes[i], &b), 0);
		assert_true(b);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = true;
		assert_int_equal(config_parse_bool(no[i], &b), 0);
		assert_false(b);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(config_parse_bool(bad[i], &b), -1);
}

static void
test_sockaddr(void **state)
{
	static const char *const bad[] = {"",           "127.0.0.1",   "127.0.0.1:",
	                                  ":993",       "127.0.0.1:0", "127.0.0.1:65536",
	                                  "::1:993",    "[::1]993",    "[::1",
	                                  "[]:1",       "256.1.1.1:1", "1.2.3.4:-1",
	                                  "1.2.3.4:+1", "1.2.3.4:1x",  "unix:",
	                                  "unix:rel",   "[1.2.3.4]:1", "a..b:1",
	                                  "-a:1",       "a b:1",       "127.1:1"};
	struct sockaddr_ex sa;
	char *host = NULL, path[200], err[256];

	(void)state;
	assert_int_equal(netaddr_parse_sockaddr("127.0.0.1:993", &sa, &host), 0);
	assert_int_equal(sa.ss.ss_family, AF_INET);
	assert_int_equal(sa.len, sizeof(struct sockaddr_in));
	assert_int_equal(port_of(&sa), 993);
	assert_string_equal(sa.text, "127.0.0.1:993");
	assert_string_equal(host, "127.0.0.1");
	free(host);

	assert_int_equal(netaddr_parse_sockaddr("[::1]:65535", &sa, &host), 0);
	assert_int_equal(sa.ss.ss_family, AF_INET6);
	assert_int_equal(sa.len, sizeof(struct sockaddr_in6));
	assert_int_equal(port_of(&sa), 65535);
	assert_true(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&sa.ss)->sin6_addr));
	assert_string_equal(sa.text, "[::1]:65535");
	assert_string_equal(host, "::1");
	free(host);

	assert_int_equal(netaddr_parse_sockaddr("[::]:1", &sa, NULL), 0);
	assert_true(IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&sa.ss)->sin6_addr));
	assert_int_equal(netaddr_parse_sockaddr("*:25", &sa, NULL), 0);
	assert_int_equal(((struct sockaddr_in *)&sa.ss)->sin_addr.s_addr, htonl(INADDR_ANY));
	assert_int_equal(netaddr_parse_sockaddr("localhost:1", &sa, NULL), 0);
	assert_int_equal(((struct sockaddr_in *)&sa.ss)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));

	host = (char *)"x";
	assert_int_equal(netaddr_parse_sockaddr("unix:/run/dovecot/imap", &sa, &host), 0);
	assert_null(host);
	assert_int_equal(sa.ss.ss_family, AF_UNIX);
	assert_string_equal(((struct sockaddr_un *)&sa.ss)->sun_path, "/run/dovecot/imap");
	assert_int_equal(sa.len, offsetof(struct sockaddr_un, sun_path) + 18);

	/* sun_path holds 107 bytes and the NUL. */
	memset(path, 'p', sizeof(path));
	memcpy(path, "unix:/", 6);
	path[5 + 107] = '\0';
	assert_int_equal(netaddr_parse_sockaddr(path, &sa, NULL), 0);
	path[5 + 107] = 'p';
	path[5 + 108] = '\0';
	assert_int_equal(netaddr_parse_sockaddr(path, &sa, NULL), -1);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (netaddr_parse_sockaddr(bad[i], &sa, NULL) == 0)
			fail_msg("address '%s' accepted", bad[i]);
	}
	assert_int_equal(netaddr_parse("localhost:1", NETADDR_NUMERIC, &sa, NULL, err, sizeof(err)),
	                 0);
	assert_int_equal(netaddr_parse("x.example:1", NETADDR_NUMERIC, &sa, NULL, err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "host names are not allowed here, use an IP address");
}

static void
test_cidr_and_clash(void **state)
{
	static const char *const ok[] = {"10.0.0.0/8", "1.2.3.4", "1.2.3.4/32", "::1",
	                                 "fe80::/10",  "::/0",    "0.0.0.0/0"};
	static const char *const bad[] = {"",         "/8",          "10.0.0.0/",    "10.0.0.0/33",
	                                  "::/129",   "x/8",         "10.0.0.0/8/1", "10.0.0.0/-1",
	                                  "10.0.0/8", "1.2.3.4/0008"};
	struct sockaddr_ex a, b;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(netaddr_parse_cidr(ok[i], NULL), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (netaddr_parse_cidr(bad[i], NULL) == 0)
			fail_msg("CIDR '%s' accepted", bad[i]);
	}
	netaddr_parse_sockaddr("127.0.0.1:1", &a, NULL);
	netaddr_parse_sockaddr("127.0.0.1:1", &b, NULL);
	assert_int_equal(netaddr_clash(&a, &b), 1);
	netaddr_parse_sockaddr("*:1", &b, NULL);
	assert_int_equal(netaddr_clash(&a, &b), 2);
	netaddr_parse_sockaddr("*:2", &b, NULL);
	assert_int_equal(netaddr_clash(&a, &b), 0);
	netaddr_parse_sockaddr("[::]:1", &b, NULL);
	assert_int_equal(netaddr_clash(&a, &b), 0);
	netaddr_parse_sockaddr("[::1]:1", &a, NULL);
	assert_int_equal(netaddr_clash(&a, &b), 2);
}

/* One line per structural error, each at its own line. */
static void
test_structure_errors(void **state)
{
	(void)state;
	expect_errors("user = x\n"
	              "[global]\n"
	              "listen = 127.0.0.1:1\n"
	              "bogus = 1\n"
	              "[global]\n"
	              "user = y\n"
	              "[]\n"
	              "protocol = imap\n"
	              "[broken\n"
	              "protocol = imap\n"
	              "[bad name!]\n"
	              "[ok] trailing\n"
	              "just some words\n"
	              " = value\n" SVC "user = z\nprotocol = pop3\n" SVC,
	              "t.ini:1: key 'user' outside a section\n"
	              "t.ini:3: 'listen' is a service key, not allowed in [global]\n"
	              "t.ini:4: unknown key 'bogus'\n"
	              "t.ini:5: duplicate section [global] (first at line 2)\n"
	              "t.ini:7: empty section name\n"
	              "t.ini:9: malformed section header (missing ']')\n"
	              "t.ini:11: invalid section name 'bad name!' (letters, digits, '-', '_', '.'; "
	              "at most 64)\n"
	              "t.ini:12: unexpected text after section header\n"
	              "t.ini:12: [ok]: missing required key 'protocol'\n"
	              "t.ini:12: [ok]: missing required key 'listen'\n"
	              "t.ini:12: [ok]: missing required key 'backend'\n"
	              "t.ini:12: [ok]: missing required key 'cert' (needed for tls)\n"
	              "t.ini:12: [ok]: missing required key 'key' (needed for tls)\n"
	              "t.ini:13: syntax error (expected 'key = value')\n"
	              "t.ini:14: missing key name\n"
	              "t.ini:21: 'user' belongs in [global]\n"
	              "t.ini:22: duplicate key 'protocol' (first at line 16)\n"
	              "t.ini:23: duplicate section [imaps] (first at line 15)\n");
}

static void
test_no_services(void **state)
{
	(void)state;
	expect_errors("", "t.ini:1: no services defined\n");
	expect_errors("; only a comment\n[global]\nuser = x\n", "t.ini:1: no services defined\n");
}

static void
test_missing_required(void **state)
{
	(void)state;
	expect_errors("[global]\nuser = x\n\n[imaps]\nprotocol = imap\ncert = /c\n",
	              "t.ini:4: [imaps]: missing required key 'listen'\n"
	              "t.ini:4: [imaps]: missing required key 'backend'\n"
	              "t.ini:4: [imaps]: missing required key 'key' (needed for tls)\n");
	/* A key with a bad value is reported at its line, not again as missing. */
	expect_errors("[x]\nprotocol = imap\nlisten = 1.2.3.4\nbackend = 127.0.0.1:1\ntls = off\n",
	              "t.ini:3: listen = 1.2.3.4: '1.2.3.4': invalid address (expected HOST:PORT, "
	              "[IPV6]:PORT)\n");
}

static void
test_cross_key_rules(void **state)
{
	(void)state;
	/* More keys than certs: at the first key without a cert. */
	expect_svc_error("cert = /c2\nkey = /k2 /k3",
	                 "t.ini:8: 2 cert files but 3 key files (they must pair up)\n");
	/* Fewer keys: at the last key line. */
	expect_svc_error("cert = /c2 /c3",
	                 "t.ini:6: 3 cert files but 1 key files (they must pair up)\n");
	expect_errors("[a]\nprotocol = smtp\nlisten = 127.0.0.1:25\nbackend = 127.0.0.1:2525\n"
	              "tls = off\ncert = /c\nkey = /k\nclient_verify = require\n",
	              "t.ini:6: cert/key given but tls = off\n"
	              "t.ini:8: client_verify needs tls (tls = off)\n");
	expect_svc_error("client_verify = optional", "t.ini:7: client_verify needs client_ca\n");
	expect_errors("[a]\nprotocol = raw\nlisten = 127.0.0.1:25\nbackend = 127.0.0.1:2525\n"
	              "tls = starttls\ncert = /c\nkey = /k\n",
	              "t.ini:5: tls = starttls needs protocol imap, pop3 or smtp\n");
}

static void
test_workers_values(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[global]\nworkers = 512\n" SVC);
	assert_int_equal(cfg->workers, 512);
	config_unref(cfg);
	/* auto is resolved at load: one per CPU this process may run on. */
	cfg = load_ok("[global]\nworkers = auto\n" SVC);
	cpu_set_t cpus;
	assert_int_equal(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
	assert_int_equal(cfg->workers,
	                 CPU_COUNT(&cpus) > WORKERS_MAX ? WORKERS_MAX : CPU_COUNT(&cpus));
	config_unref(cfg);
	expect_errors("[global]\nworkers = 513\n" SVC,
	              "t.ini:2: workers = 513: invalid value (expected auto or 1 to 512)\n");
}

static void
test_keys_needing_others(void **state)
{
	(void)state;
	/* Opaque TCP has no commands to log. */
	expect_errors("[a]\nprotocol = raw\nlisten = 127.0.0.1:25\nbackend = 127.0.0.1:2525\n"
	              "tls = off\nlog_commands = yes\ncapture_dir = /tmp/cap\n",
	              "t.ini:6: log_commands needs protocol imap, pop3 or smtp\n"
	              "t.ini:7: capture_dir needs protocol imap, pop3 or smtp\n");
	/* Keys of backend TLS make no sense without it. */
	expect_svc_error("backend_sni = mail.example", "t.ini:7: backend_sni needs backend_tls\n");
	expect_svc_error("accept_proxy_from = 10.0.0.0/33",
	                 "t.ini:7: accept_proxy_from = 10.0.0.0/33: '10.0.0.0/33': invalid address "
	                 "or CIDR block\n");
	expect_errors("[global]\nmetrics = nowhere\n" SVC,
	              "t.ini:2: metrics = nowhere: invalid address (expected HOST:PORT, "
	              "[IPV6]:PORT)\n");
}

static void
test_duplicate_listen(void **state)
{
	(void)state;
	expect_errors(SVC "listen = 127.0.0.1:994 127.0.0.1:993\n"
	                  "[pop3s]\nprotocol = pop3\ntls = off\nbackend = 127.0.0.1:110\n"
	                  "listen = [::1]:995 *:994\n"
	                  "listen = [::]:995 0.0.0.0:25 *:25\n",
	              "t.ini:7: duplicate listen address 127.0.0.1:993 (first at line 3)\n"
	              "t.ini:12: listen address *:994 overlaps 127.0.0.1:994 at line 7\n"
	              "t.ini:13: listen address [::]:995 overlaps [::1]:995 at line 12\n"
	              "t.ini:13: duplicate listen address *:25 (as 0.0.0.0:25 at line 13)\n");
}

/* The reader hands inih at most 199 bytes; longer lines are reported at
 * their own line and their tail is not parsed. */
static void
test_line_too_long(void **state)
{
	char text[1024], pad[300];
	struct config *cfg;
	int n;

	(void)state;
	memset(pad, 'a', sizeof(pad));
	/* A 300-byte line whose bytes from 199 on read "idle_timeout = bogus...". */
	snprintf(text, sizeof(text), SVC "ciphers = %.*sidle_timeout = bogus%.*s\nbogus = 1\n", 189,
	         pad, 81, pad);
	n = (int)(strchr(text + strlen(SVC), '\n') - (text + strlen(SVC)));
	assert_int_equal(n, 300);
	assert_memory_equal(text + strlen(SVC) + 199, "idle_timeout", 12);
	expect_errors(text,
	              "t.ini:7: line too long (max 198 bytes)\nt.ini:8: unknown key 'bogus'\n");

	/* 198 bytes fit, also with CRLF, and as a last line without newline. */
	snprintf(text, sizeof(text), SVC "ciphers = %.*s\r\nciphersuites = %.*s", 188, pad, 183,
	         pad);
	cfg = load_ok(text);
	assert_int_equal(strlen(cfg->services[0].ciphers), 188);
	assert_int_equal(strlen(cfg->services[0].ciphersuites), 183);
	config_unref(cfg);
	snprintf(text, sizeof(text), SVC "ciphers = %.*s\n", 189, pad);
	expect_errors(text, "t.ini:7: line too long (max 198 bytes)\n");
	/* Long comment lines are errors too: inih would parse their tail. */
	snprintf(text, sizeof(text), "; %.*s\n" SVC, 250, pad);
	expect_errors(text, "t.ini:1: line too long (max 198 bytes)\n");
}

static void
test_continuation_lines(void **state)
{
	struct config *cfg;
	struct service *s;

	(void)state;
	cfg = load_ok("[imaps]\nprotocol = imap\n"
	              "listen = 127.0.0.1:993\n"
	              "  127.0.0.1:994 [::1]:993\n"
	              "; a comment does not end the list\n"
	              "\t127.0.0.2:993\n"
	              "listen = 127.0.0.3:993\n"
	              "backend = 127.0.0.1:143\n"
	              "cert = /rsa.pem\n   /ec.pem\nkey = /rsa.key\n  /ec.key\n"
	              "[next]\n  protocol = pop3\nlisten = 127.0.0.1:110\nbackend=127.0.0.1:1\n"
	              "tls:off\n");
	s = &cfg->services[0];
	assert_int_equal(s->nlisten, 5);
	assert_string_equal(s->listen[1].text, "127.0.0.1:994");
	assert_int_equal(s->listen[1].line, 4);
	assert_string_equal(s->listen[2].text, "[::1]:993");
	assert_int_equal(s->listen[2].line, 4);
	assert_int_equal(s->listen[3].line, 6);
	assert_int_equal(s->listen[4].line, 7);
	assert_int_equal(s->cert.n, 2);
	assert_string_equal(s->cert.v[1], "/ec.pem");
	assert_int_equal(s->cert.line[1], 10);
	assert_int_equal(s->key.line[1], 12);
	/* An indented key right after a header is a key (nothing to continue). */
	assert_int_equal(cfg->services[1].protocol, PROTO_POP3);
	assert_int_equal(cfg->services[1].nlisten, 1);
	config_unref(cfg);

	expect_errors("[imaps]\nprotocol = imap\n  pop3\nlisten = 127.0.0.1:993\nbackend = "
	              "127.0.0.1:143\ncert = /c\nkey = /k\n  tls = off\n  junk\nmystery = 1\n  "
	              "more\n",
	              "t.ini:3: continuation line not allowed for 'protocol' (only list keys, or "
	              "remove the leading whitespace)\n"
	              "t.ini:8: indented line continues 'key' but looks like a key (remove the "
	              "leading whitespace)\n"
	              "t.ini:9: 1 cert files but 2 key files (they must pair up)\n"
	              "t.ini:10: unknown key 'mystery'\n");
	expect_errors(SVC "listen = 127.0.0.1:1\n  nonsense\n",
	              "t.ini:8: listen = nonsense: 'nonsense': invalid address (expected "
	              "HOST:PORT, [IPV6]:PORT)\n");
}

static void
test_error_order_and_echo(void **state)
{
	(void)state;
	/* Validation errors at a header come before later parse errors; control
	 * bytes in echoed values are masked. */
	expect_errors("[x]\nprotocol = imap\ntls = \x1b[31m\n",
	              "t.ini:1: [x]: missing required key 'listen'\n"
	              "t.ini:1: [x]: missing required key 'backend'\n"
	              "t.ini:1: [x]: missing required key 'cert' (needed for tls)\n"
	              "t.ini:1: [x]: missing required key 'key' (needed for tls)\n"
	              "t.ini:3: tls = ?[31m: invalid value (expected off, implicit or starttls)\n");
}

static void
test_comments_bom_crlf(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok(
	        "\xEF\xBB\xBF# comment\r\n[imaps] ; the service\r\nprotocol = imap ; inline\r\n"
	        "listen=127.0.0.1:993\r\nbackend = 127.0.0.1:143\r\ncert = /c\r\nkey = /k");
	assert_int_equal(cfg->services[0].protocol, PROTO_IMAP);
	assert_string_equal(cfg->services[0].key.v[0], "/k");
	assert_int_equal(cfg->services[0].key.line[0], 7);
	config_unref(cfg);
}

static void
test_refcount(void **state)
{
	struct config *cfg = load_ok(SVC);

	(void)state;
	assert_ptr_equal(config_ref(cfg), cfg);
	assert_int_equal(cfg->refcount, 2);
	config_unref(cfg);
	assert_int_equal(cfg->refcount, 1);
	config_unref(cfg); /* freed: ASan reports a leak or double free otherwise */
	config_unref(NULL);
}

static void
test_load_file(void **state)
{
	char path[] = "/tmp/postern-test-XXXXXX";
	char *buf = NULL;
	size_t len = 0;
	FILE *errs;
	struct config *cfg;
	int fd = mkstemp(path);
	/* config_load always loads certificates: use a plaintext service. */
	static const char text[] = "[smtp]\nprotocol = smtp\nlisten = 127.0.0.1:25\ntls = off\n"
	                           "backend = 127.0.0.1:2525\nidle_timeout = 1m";
	static const char withnul[] = "[a]\nprotocol = imap\0x\n";

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cfg = config_load(path, stderr);
	assert_non_null(cfg);
	assert_string_equal(cfg->path, path);
	assert_true(cfg->services[0].idle_timeout == 60);
	config_unref(cfg);

	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, withnul, sizeof(withnul) - 1), (ssize_t)sizeof(withnul) - 1);
	close(fd);
	errs = open_memstream(&buf, &len);
	assert_null(config_load(path, errs));
	fclose(errs);
	assert_non_null(strstr(buf, ":2: NUL byte in line\n"));
	free(buf);
	unlink(path);

	buf = NULL;
	errs = open_memstream(&buf, &len);
	assert_null(config_load("/nonexistent/postern.ini", errs));
	fclose(errs);
	assert_string_equal(buf,
	                    "/nonexistent/postern.ini: cannot open: No such file or directory\n");
	free(buf);

	buf = NULL;
	errs = open_memstream(&buf, &len);
	assert_null(config_load("/", errs));
	fclose(errs);
	assert_string_equal(buf, "/: cannot read: Is a directory\n");
	free(buf);
}

/* With load_tls, unreadable certificates fail the service (the message is
 * tls.c's; the line must be in the service), even when another key of the
 * service is also wrong: one run reports both. */
static void
test_tls_load_failure(void **state)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *errs = open_memstream(&buf, &len);
	struct config *cfg;
	char *nl;

	(void)state;
	cfg = config_load_string("t.ini",
	                         "[imaps]\nprotocol = imap\nlisten = 127.0.0.1:993\n"
	                         "backend = 127.0.0.1:143\ncert = /nonexistent/c.pem\n"
	                         "key = /nonexistent/k.pem\nidle_timeout = never\n",
	                         true, errs);
	fclose(errs);
	assert_null(cfg);
	assert_true(strncmp(buf, "t.ini:1: ", 9) == 0 || strncmp(buf, "t.ini:5: ", 9) == 0 ||
	            strncmp(buf, "t.ini:6: ", 9) == 0);
	nl = strchr(buf, '\n');
	assert_non_null(nl);
	assert_string_equal(nl + 1, "t.ini:7: idle_timeout = never: invalid duration (expected "
	                            "e.g. 30s, 5m, 2h or seconds, at most a year)\n");
	free(buf);
	/* tls = off never loads certificates. */
	buf = NULL;
	errs = open_memstream(&buf, &len);
	cfg = config_load_string(
	        "t.ini",
	        "[a]\nprotocol = raw\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\ntls = off\n",
	        true, errs);
	fclose(errs);
	assert_string_equal(buf, "");
	assert_non_null(cfg);
	assert_null(cfg->services[0].tls_server);
	config_unref(cfg);
	free(buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_global_values),
	        cmocka_unit_test(test_global_bad_values),
	        cmocka_unit_test(test_max_handshakes_bad_values),
	        cmocka_unit_test(test_service_values),
	        cmocka_unit_test(test_service_bad_values),
	        cmocka_unit_test(test_addresses_in_config),
	        cmocka_unit_test(test_durations),
	        cmocka_unit_test(test_bools),
	        cmocka_unit_test(test_sockaddr),
	        cmocka_unit_test(test_cidr_and_clash),
	        cmocka_unit_test(test_structure_errors),
	        cmocka_unit_test(test_no_services),
	        cmocka_unit_test(test_missing_required),
	        cmocka_unit_test(test_cross_key_rules),
	        cmocka_unit_test(test_workers_values),
	        cmocka_unit_test(test_keys_needing_others),
	        cmocka_unit_test(test_duplicate_listen),
	        cmocka_unit_test(test_line_too_long),
	        cmocka_unit_test(test_continuation_lines),
	        cmocka_unit_test(test_error_order_and_echo),
	        cmocka_unit_test(test_comments_bom_crlf),
	        cmocka_unit_test(test_refcount),
	        cmocka_unit_test(test_backend_name_is_not_resolved_at_load),
	        cmocka_unit_test(test_load_file),
	        cmocka_unit_test(test_tls_load_failure),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
