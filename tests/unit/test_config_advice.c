/* Which SMTP services hide the client's address from a backend on this host. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include <postern/config_advice.h>

static struct service
smtp_to(const char *ip, int proxy_protocol)
{
	struct service svc;

	memset(&svc, 0, sizeof(svc));
	svc.protocol = PROTO_SMTP;
	svc.proxy_protocol = proxy_protocol;
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&svc.backend.ss;
		in6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &in6->sin6_addr);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&svc.backend.ss;
		in->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &in->sin_addr);
	}
	return svc;
}

static void
test_loopback_smtp_without_proxy_hides_the_client(void **state)
{
	static const char *const local[] = {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"};
	struct service svc;

	(void)state;
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		svc = smtp_to(local[i], 0);
		assert_true(config_smtp_hides_client(&svc));
		svc.proxy_protocol = 2; /* the backend is told who the client is */
		assert_false(config_smtp_hides_client(&svc));
	}
	memset(&svc.backend.ss, 0, sizeof(svc.backend.ss));
	svc.backend.ss.ss_family = AF_UNIX; /* a unix socket shows no address either */
	svc.proxy_protocol = 0;
	assert_true(config_smtp_hides_client(&svc));
}

static void
test_remote_backend_or_other_protocol_is_fine(void **state)
{
	struct service svc = smtp_to("192.0.2.25", 0);

	(void)state;
	assert_false(config_smtp_hides_client(&svc));
	svc = smtp_to("2001:db8::25", 0);
	assert_false(config_smtp_hides_client(&svc));
	svc = smtp_to("127.0.0.1", 0);
	svc.protocol = PROTO_IMAP;
	assert_false(config_smtp_hides_client(&svc));
}

/* XCLIENT tells the backend who the client is, as a PROXY header does. */
static void
test_xclient_shows_the_client(void **state)
{
	struct service svc = smtp_to("127.0.0.1", 0);

	(void)state;
	svc.xclient = true;
	assert_false(config_smtp_hides_client(&svc));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_loopback_smtp_without_proxy_hides_the_client),
	        cmocka_unit_test(test_remote_backend_or_other_protocol_is_fine),
	        cmocka_unit_test(test_xclient_shows_the_client),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
