/* The token client on a libev loop against a small HTTPS server forked by
 * the test (loopback, a certificate made here): requests run side by side
 * without blocking the loop, answers are sorted into ok / temporary /
 * permanent / pending / slow_down, timeouts and unverifiable certificates
 * are temporary failures, plain http is never used, a cancelled request
 * calls nothing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <postern/oauth2_http.h>

static char ca_path[64], other_ca_path[64], url[128];
static int port;
static pid_t server;
static EVP_PKEY *key;
static X509 *cert;

/* ---- a self-signed certificate for 127.0.0.1 ---- */

static X509 *
make_cert(EVP_PKEY *k)
{
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)getpid());
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"127.0.0.1", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(x, k, EVP_sha256());
	return x;
}

static void
write_cert(X509 *x, char *path)
{
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
}

/* ---- the server: one process per connection, answers by path ---- */

static void
answer(SSL *ssl, const char *path)
{
	static const struct {
		const char *path;
		int status;
		unsigned delay;
		const char *body;
	} routes[] = {
	        {"/fast", 200, 0,
	         "{\"access_token\":\"AT-1\",\"token_type\":\"bearer\",\"expires_in\":3599,"
	         "\"refresh_token\":\"RT-2\",\"scope\":\"x\"}"},
	        {"/slow", 200, 1, "{\"access_token\":\"AT-slow\",\"token_type\":\"Bearer\"}"},
	        {"/hang", 200, 4, "{}"},
	        {"/503", 503, 0,
	         "{\"error\":\"invalid_request\"}"}, /* 5xx: temporary, whatever it says */
	        {"/denied", 400, 0, "{\"error\":\"invalid_grant\",\"error_codes\":[70000]}"},
	        {"/pending", 400, 0, "{\"error\":\"authorization_pending\"}"},
	        {"/slowdown", 400, 0, "{\"error\":\"slow_down\"}"},
	        {"/html", 502, 0, "<html>Bad Gateway</html>"},
	        {"/notoken", 200, 0, "{\"token_type\":\"Bearer\"}"},
	        {"/device", 200, 0,
	         "{\"device_code\":\"DC\",\"user_code\":\"AB-CD\",\"verification_uri\":"
	         "\"https://x/device\",\"interval\":7,\"expires_in\":\"900\"}"},
	};
	char out[1024];

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(routes[i].path, path) != 0)
			continue;
		sleep(routes[i].delay);
		snprintf(
		        out, sizeof(out),
		        "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		        "Connection: close\r\n\r\n%s",
		        routes[i].status, strlen(routes[i].body), routes[i].body);
		SSL_write(ssl, out, (int)strlen(out));
		return;
	}
}

static void
serve_one(SSL_CTX *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx);
	char req[4096] = "", path[64] = "";
	int n = 0, r;

	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		while (n < (int)sizeof(req) - 1 && !strstr(req, "\r\n\r\n") &&
		       (r = SSL_read(ssl, req + n, (int)sizeof(req) - 1 - n)) > 0) {
			n += r;
			req[n] = '\0';
		}
		if (sscanf(req, "POST %63s HTTP/1.1", path) == 1)
			answer(ssl, path);
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(fd);
	_exit(0);
}

static void
run_server(int lfd)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	SSL_CTX_use_certificate(ctx, cert);
	SSL_CTX_use_PrivateKey(ctx, key);
	signal(SIGCHLD, SIG_IGN);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		if (fork() == 0)
			serve_one(ctx, fd);
		close(fd);
	}
}

static int
setup(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	EVP_PKEY *other_key;
	X509 *other;
	int lfd;

	(void)state;
	key = EVP_EC_gen("P-256");
	cert = make_cert(key);
	other_key = EVP_EC_gen("P-256");
	other = make_cert(other_key);
	strcpy(ca_path, "/tmp/postern-http-ca.XXXXXX");
	strcpy(other_ca_path, "/tmp/postern-http-other.XXXXXX");
	write_cert(cert, ca_path);
	write_cert(other, other_ca_path);
	X509_free(other);
	EVP_PKEY_free(other_key);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	port = ntohs(sa.sin_port);
	if ((server = fork()) == 0) {
		setpgid(0, 0); /* its connection processes too end with it */
		run_server(lfd);
	}
	setpgid(server, server);
	close(lfd);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	kill(-server, SIGTERM);
	waitpid(server, NULL, 0);
	unlink(ca_path);
	unlink(other_ca_path);
	X509_free(cert);
	EVP_PKEY_free(key);
	return 0;
}

/* ---- the client side ---- */

struct outcome {
	int calls;
	struct oauth2_reply r; /* a copy: the reply is wiped after the callback */
	double at;
	struct ev_loop *loop;
	int *pending;
};

static void
done(void *arg, const struct oauth2_reply *r)
{
	struct outcome *o = arg;

	o->calls++;
	o->r = *r;
	o->at = ev_time();
	if (--*o->pending == 0)
		ev_break(o->loop, EVBREAK_ALL);
}

static struct oauth2_endpoint
endpoint(const char *path, const char *ca, double timeout)
{
	snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
	return (struct oauth2_endpoint){.token_url = url,
	                                .client_id = "postern-test",
	                                .client_secret = "s3cr&t",
	                                .ca_file = ca,
	                                .timeout = timeout};
}

/* One refresh request to PATH, the loop run until it ends. */
static struct outcome
refresh_one(const char *path, const char *ca, double timeout)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct oauth2_client *c = oauth2_client_new(loop);
	struct oauth2_endpoint ep = endpoint(path, ca, timeout);
	int pending = 1;
	struct outcome o = {.loop = loop, .pending = &pending};

	assert_non_null(oauth2_refresh(c, &ep, "RT-1", done, &o));
	ev_run(loop, 0);
	oauth2_client_free(c);
	ev_loop_destroy(loop);
	assert_int_equal(o.calls, 1);
	return o;
}

static void
stop(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void
tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	(*(int *)w->data)++;
}

/* Two requests each answered after 1 s end together, and a timer of the
 * same loop keeps firing meanwhile: nothing waits on the network. */
static void
test_requests_run_side_by_side_without_blocking_the_loop(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct oauth2_client *c = oauth2_client_new(loop);
	struct oauth2_endpoint ep = endpoint("/slow", ca_path, 10);
	int pending = 2, ticks = 0;
	struct outcome a = {.loop = loop, .pending = &pending}, b = a;
	ev_timer t;
	double start = ev_time();

	(void)state;
	ev_timer_init(&t, tick, 0.1, 0.1);
	t.data = &ticks;
	ev_timer_start(loop, &t);
	assert_non_null(oauth2_refresh(c, &ep, "RT-a", done, &a));
	assert_non_null(oauth2_refresh(c, &ep, "RT-b", done, &b));
	ev_run(loop, 0);
	ev_timer_stop(loop, &t);
	assert_int_equal(a.r.result, OAUTH2_OK);
	assert_int_equal(b.r.result, OAUTH2_OK);
	assert_string_equal(a.r.access_token, "AT-slow");
	assert_true(b.at - start < 1.8);
	assert_true(ticks >= 7);
	oauth2_client_free(c);
	ev_loop_destroy(loop);
}

static void
test_answers_sorted(void **state)
{
	struct outcome o;

	(void)state;
	o = refresh_one("/fast", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_OK);
	assert_int_equal(o.r.http_status, 200);
	assert_string_equal(o.r.access_token, "AT-1");
	assert_string_equal(o.r.refresh_token, "RT-2");
	assert_int_equal(o.r.expires_in, 3599);
	o = refresh_one("/503", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_int_equal(o.r.http_status, 503);
	o = refresh_one("/denied", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_PERMANENT);
	assert_string_equal(o.r.error, "invalid_grant");
	assert_string_equal(o.r.access_token, "");
	o = refresh_one("/pending", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_PENDING);
	o = refresh_one("/slowdown", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_SLOW_DOWN);
	o = refresh_one("/html", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_non_null(strstr(o.r.detail, "not a JSON object"));
	o = refresh_one("/notoken", ca_path, 10);
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_non_null(strstr(o.r.detail, "without a Bearer access_token"));
}

static void
test_device_answer_read(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct oauth2_client *c = oauth2_client_new(loop);
	struct oauth2_endpoint ep = endpoint("/unused", ca_path, 10);
	char device[128];
	int pending = 1;
	struct outcome o = {.loop = loop, .pending = &pending};

	(void)state;
	snprintf(device, sizeof(device), "https://127.0.0.1:%d/device", port);
	assert_non_null(oauth2_device_start(c, &ep, device, "mail offline_access", done, &o));
	ev_run(loop, 0);
	assert_int_equal(o.r.result, OAUTH2_OK);
	assert_string_equal(o.r.device_code, "DC");
	assert_string_equal(o.r.user_code, "AB-CD");
	assert_string_equal(o.r.verification_uri, "https://x/device");
	assert_int_equal(o.r.interval, 7);
	assert_int_equal(o.r.expires_in, 900);
	oauth2_client_free(c);
	ev_loop_destroy(loop);
}

static void
test_timeout_is_temporary(void **state)
{
	double start = ev_time();
	struct outcome o = refresh_one("/hang", ca_path, 1);

	(void)state;
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_int_equal(o.r.http_status, 0);
	assert_true(o.at - start < 2.5);
	assert_non_null(strcasestr(o.r.detail, "timed out"));
}

static void
test_unverified_certificate_is_refused(void **state)
{
	struct outcome o = refresh_one("/fast", other_ca_path, 10);

	(void)state;
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_int_equal(o.r.http_status, 0);
	assert_string_equal(o.r.access_token, "");
	assert_non_null(strcasestr(o.r.detail, "certificate"));
}

/* The token must never travel in clear: an http URL is not even tried. */
static void
test_plain_http_is_not_used(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct oauth2_client *c = oauth2_client_new(loop);
	struct oauth2_endpoint ep = endpoint("/fast", ca_path, 10);
	int pending = 1;
	struct outcome o = {.loop = loop, .pending = &pending};

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/fast", port);
	assert_non_null(oauth2_refresh(c, &ep, "RT-1", done, &o));
	ev_run(loop, 0);
	assert_int_equal(o.r.result, OAUTH2_TEMPORARY);
	assert_non_null(strcasestr(o.r.detail, "protocol"));
	oauth2_client_free(c);
	ev_loop_destroy(loop);
}

static void
test_cancelled_request_calls_nothing(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct oauth2_client *c = oauth2_client_new(loop);
	struct oauth2_endpoint ep = endpoint("/slow", ca_path, 10);
	int pending = 2, never = 1;
	struct outcome o = {.loop = loop, .pending = &never},
	               kept = {.loop = loop, .pending = &pending};
	struct oauth2_request *r;
	ev_timer t;

	(void)state;
	r = oauth2_refresh(c, &ep, "RT-1", done, &o);
	assert_non_null(r);
	assert_non_null(oauth2_refresh(c, &ep, "RT-2", done, &kept));
	oauth2_cancel(r);
	/* run past the time both answers come (1 s), then a little longer */
	ev_timer_init(&t, stop, 2.0, 0.);
	ev_timer_start(loop, &t);
	ev_run(loop, 0);
	assert_int_equal(kept.calls, 1);
	assert_int_equal(o.calls, 0);
	ev_timer_stop(loop, &t);
	/* a client freed with a request running calls nothing either */
	assert_non_null(oauth2_refresh(c, &ep, "RT-3", done, &o));
	oauth2_client_free(c);
	assert_int_equal(o.calls, 0);
	ev_loop_destroy(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_requests_run_side_by_side_without_blocking_the_loop),
	        cmocka_unit_test(test_answers_sorted),
	        cmocka_unit_test(test_device_answer_read),
	        cmocka_unit_test(test_timeout_is_temporary),
	        cmocka_unit_test(test_unverified_certificate_is_refused),
	        cmocka_unit_test(test_plain_http_is_not_used),
	        cmocka_unit_test(test_cancelled_request_calls_nothing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
