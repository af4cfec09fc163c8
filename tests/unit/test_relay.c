/* The relay pump over real sockets (socketpairs, no event loop): bytes
 * arrive intact, a full buffer stops reading (backpressure), and EOF on one
 * side becomes a half-close on the other once the buffer is flushed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/relay.h>

struct pairs {
	int client_app, client_side; /* the client writes at client_app */
	int backend_side, backend_app;
	struct endpoint src, dst;
	struct relay_dir d;
};

static void
nop_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

static void
setup_pairs(struct pairs *p)
{
	int a[2], b[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
	p->client_app = a[0];
	p->client_side = a[1];
	p->backend_side = b[0];
	p->backend_app = b[1];
	ep_init(&p->src, nop_cb, NULL);
	ep_init(&p->dst, nop_cb, NULL);
	ep_attach(&p->src, p->client_side, NULL);
	ep_attach(&p->dst, p->backend_side, NULL);
	relay_init(&p->d, &p->src, &p->dst);
}

static void
teardown_pairs(struct pairs *p)
{
	relay_free(&p->d);
	close(p->client_app);
	close(p->client_side);
	close(p->backend_side);
	close(p->backend_app);
}

static void
test_bytes_flow(void **state)
{
	struct pairs p;
	char got[64];

	(void)state;
	setup_pairs(&p);
	assert_int_equal(write(p.client_app, "a1 NOOP\r\n", 9), 9);
	assert_int_equal(relay_pump(&p.d), 18); /* 9 read + 9 written */
	assert_int_equal(read(p.backend_app, got, sizeof(got)), 9);
	assert_memory_equal(got, "a1 NOOP\r\n", 9);
	assert_int_equal(p.d.bytes, 9);
	assert_int_equal(p.d.src_wait, RELAY_WAIT_READ);
	assert_null(p.d.buf.data); /* drained: no memory kept */
	teardown_pairs(&p);
}

static void
test_backpressure(void **state)
{
	struct pairs p;
	static char chunk[65536];
	bool rd = false, wr = false;
	uint64_t total = 0;

	(void)state;
	setup_pairs(&p);
	/* Stuff the client side until its socket is full; the backend never reads. */
	for (;;) {
		ssize_t n = write(p.client_app, chunk, sizeof(chunk));
		if (n < 0)
			break;
		total += (uint64_t)n;
		relay_pump(&p.d);
		if (p.d.dst_wait == RELAY_WAIT_WRITE && buf_len(&p.d.buf) == RELAY_BUF_SIZE)
			break;
	}
	assert_int_equal(p.d.dst_wait, RELAY_WAIT_WRITE);
	assert_int_equal(buf_len(&p.d.buf), RELAY_BUF_SIZE);
	assert_int_equal(p.d.src_wait, RELAY_IDLE); /* full: not reading */
	relay_wants(&p.d, &p.src, &rd, &wr);
	assert_false(rd);
	rd = wr = false;
	relay_wants(&p.d, &p.dst, &rd, &wr);
	assert_true(wr);
	/* Draining the backend lets everything through, in order of arrival. */
	uint64_t seen = 0;
	char sink[65536];
	for (int i = 0; i < 10000 && seen < total; i++) {
		ssize_t n = read(p.backend_app, sink, sizeof(sink));
		if (n > 0)
			seen += (uint64_t)n;
		relay_pump(&p.d);
	}
	assert_int_equal(seen, total);
	teardown_pairs(&p);
}

static void
test_half_close(void **state)
{
	struct pairs p;
	char got[16];

	(void)state;
	setup_pairs(&p);
	assert_int_equal(write(p.client_app, "QUIT\r\n", 6), 6);
	shutdown(p.client_app, SHUT_WR);
	relay_pump(&p.d);
	assert_true(p.d.eof);
	assert_true(p.d.done);
	assert_int_equal(read(p.backend_app, got, sizeof(got)), 6);
	assert_int_equal(read(p.backend_app, got, sizeof(got)), 0); /* FIN passed on */
	/* The other direction still works: the backend can answer. */
	assert_int_equal(write(p.backend_app, "+OK\r\n", 5), 5);
	assert_int_equal(read(p.backend_side, got, sizeof(got)), 5);
	teardown_pairs(&p);
}

static void
test_error_names_endpoint(void **state)
{
	struct pairs p;

	(void)state;
	setup_pairs(&p);
	close(p.backend_app);
	p.backend_app = open("/dev/null", O_RDONLY);
	assert_int_equal(write(p.client_app, "x", 1), 1);
	assert_int_equal(relay_pump(&p.d), -1);
	assert_ptr_equal(p.d.failed, &p.dst);
	assert_int_equal(p.dst.sys_errno, EPIPE);
	teardown_pairs(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_bytes_flow),
	        cmocka_unit_test(test_backpressure),
	        cmocka_unit_test(test_half_close),
	        cmocka_unit_test(test_error_names_endpoint),
	};
	return cmocka_run_group_tests_name("relay", tests, NULL, NULL);
}
