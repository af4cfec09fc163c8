/* The random session-ticket keys: today's encrypts, yesterday's decrypts,
 * older ones are gone; a process forked before a day change computes the
 * same keys as its parent after it. Real TLS 1.2 handshakes in memory, the
 * server's session cache off, so only a ticket can resume. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <postern/tickets.h>
#include <postern/tls_binding.h>

#define DAY (24 * 3600)

static time_t fake_now;

static time_t
fake_clock(time_t *t)
{
	if (t)
		*t = fake_now;
	return fake_now;
}

static void
set_day(long day)
{
	fake_now = (time_t)day * DAY + 3600;
}

static SSL_CTX *
server_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(ctx);
	assert_non_null(key);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"t", 1);
	tickets_attach(ctx);
	return ctx;
}

static SSL_CTX *
client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	/* No client cache: it would mark a renewed session spent, and the
	 * test would measure the client instead of the server's keys. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

/* One handshake in memory, offering SESS if given; whether it resumed, and
 * the client's session (with its new ticket) in *OUT. */
static int
handshake(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess, SSL_SESSION **out)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *sb, *cb;
	int done = 0, reused;

	assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
	SSL_set_bio(s, sb, sb);
	SSL_set_bio(c, cb, cb);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	if (sess)
		SSL_set_session(c, sess);
	for (int i = 0; i < 50 && !done; i++) {
		int rc = SSL_do_handshake(c), rs = SSL_do_handshake(s);
		done = rc == 1 && rs == 1;
	}
	assert_true(done);
	reused = SSL_session_reused(c);
	if (out)
		*out = SSL_get1_session(c);
	/* A clean close: an SSL freed in the middle marks its session spent. */
	SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c);
	SSL_free(s);
	return reused;
}

static void
test_today_and_yesterday_decrypt(void **state)
{
	SSL_CTX *sctx = server_ctx(), *cctx = client_ctx();
	SSL_SESSION *day100, *renewed;

	(void)state;
	tickets_set_clock(fake_clock);
	tickets_use(NULL);
	set_day(100);
	assert_int_equal(tickets_init(), 0);
	assert_false(handshake(sctx, cctx, NULL, &day100));
	assert_true(handshake(sctx, cctx, day100, NULL));
	set_day(101); /* yesterday's key still decrypts, and a new ticket comes */
	assert_true(handshake(sctx, cctx, day100, &renewed));
	set_day(102); /* day 100's key is gone; day 101's is yesterday's */
	assert_false(handshake(sctx, cctx, day100, NULL));
	assert_true(handshake(sctx, cctx, renewed, NULL));
	set_day(90); /* a clock gone back keeps the keys it has */
	assert_true(handshake(sctx, cctx, renewed, NULL));
	SSL_SESSION_free(day100);
	SSL_SESSION_free(renewed);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	tickets_wipe();
	tickets_set_clock(NULL);
}

/* A worker forked on day 200 and its master both move on to day 201 on
 * their own: the child's ticket resumes in the parent. */
static void
test_forked_processes_agree_after_a_day(void **state)
{
	SSL_CTX *sctx = server_ctx(), *cctx = client_ctx();
	unsigned char der[8192];
	int fds[2], status;
	ssize_t n = 0, r;
	pid_t pid;

	(void)state;
	tickets_set_clock(fake_clock);
	tickets_use(NULL);
	set_day(200);
	assert_int_equal(tickets_init(), 0);
	tickets_tick();
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		SSL_SESSION *sess;
		unsigned char *p = der;
		int len;

		set_day(201);
		handshake(sctx, cctx, NULL, &sess);
		len = i2d_SSL_SESSION(sess, &p);
		_exit(len > 0 && write(fds[1], der, (size_t)len) == len ? 0 : 1);
	}
	close(fds[1]);
	while ((r = read(fds[0], der + n, sizeof(der) - (size_t)n)) > 0)
		n += r;
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(status, 0);
	assert_true(n > 0);
	set_day(201);
	{
		const unsigned char *p = der;
		SSL_SESSION *sess = d2i_SSL_SESSION(NULL, &p, n);
		assert_non_null(sess);
		assert_true(handshake(sctx, cctx, sess, NULL));
		SSL_SESSION_free(sess);
	}
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	tickets_wipe();
	tickets_set_clock(NULL);
}

/* Tickets carry the binding of the service that issued them: under the
 * same keys, another service's ticket, or one without a verified client
 * certificate where the service needs one, gets a full handshake. The
 * session id contexts of A and NEEDS_PEER are equal, so that only the
 * ticket check can refuse there. */
static void
test_ticket_resumes_only_under_its_binding(void **state)
{
	static struct tls_binding a, other, needs_peer;
	SSL_CTX *sa = server_ctx(), *sother = server_ctx(), *speer = server_ctx(),
	        *cctx = client_ctx();
	SSL_SESSION *sess;

	(void)state;
	memset(&a, 0xa1, sizeof(a));
	memset(&other, 0xb2, sizeof(other));
	a.need_peer = other.need_peer = false;
	needs_peer = a;
	needs_peer.need_peer = true;
	assert_int_equal(tls_binding_attach(sa, &a), 0);
	assert_int_equal(tls_binding_attach(sother, &other), 0);
	assert_int_equal(tls_binding_attach(speer, &needs_peer), 0);
	tickets_use(NULL);
	assert_false(handshake(sa, cctx, NULL, &sess));
	assert_true(handshake(sa, cctx, sess, NULL)); /* the control */
	assert_false(handshake(sother, cctx, sess, NULL));
	assert_false(handshake(speer, cctx, sess, NULL));
	SSL_SESSION_free(sess);
	SSL_CTX_free(sa);
	SSL_CTX_free(sother);
	SSL_CTX_free(speer);
	SSL_CTX_free(cctx);
	tickets_wipe();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_today_and_yesterday_decrypt),
	        cmocka_unit_test(test_forked_processes_agree_after_a_day),
	        cmocka_unit_test(test_ticket_resumes_only_under_its_binding),
	};

	return cmocka_run_group_tests_name("tickets", tests, NULL, NULL);
}
