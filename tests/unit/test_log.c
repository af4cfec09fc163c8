/* Log output that never blocks: syslog datagrams (PRI, format, a full queue,
 * a restarted daemon) to a socket of ours, `log = syslog:FACILITY` parsing,
 * and stderr as a pipe nobody reads (bounded buffer, whole lines only, drops
 * counted exactly). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include <postern/config.h>
#include <postern/log.h>
#include <postern/log_syslog.h>

static char dir[64], sock_path[96];

static int
bind_dgram(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	unlink(sock_path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void
configure(enum log_target target, enum log_format format, int facility)
{
	struct config cfg = {.log_target = target,
	                     .log_level = LOG_DEBUG,
	                     .log_format = format,
	                     .log_facility = facility};
	char err[256];

	assert_int_equal(log_configure(&cfg, err, sizeof(err)), 0);
}

/* The next datagram on FD, NUL-terminated, or "" after 1s. */
static const char *
recv_dgram(int fd)
{
	static char buf[16384];
	struct timeval tv = {1, 0};
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* "<PRI>Mmm dd hh:mm:ss postern[PID]: " + MSG */
static void
expect_dgram(int fd, int pri, const char *msg)
{
	const char *d = recv_dgram(fd);
	char head[32], tail[64];
	int n = snprintf(head, sizeof(head), "<%d>", pri);

	assert_true(strncmp(d, head, (size_t)n) == 0);
	d += n;
	/* The timestamp, as glibc writes it in the C locale. */
	assert_true(strlen(d) > 16);
	assert_true(d[3] == ' ' && d[6] == ' ' && d[9] == ':' && d[12] == ':' && d[15] == ' ');
	snprintf(tail, sizeof(tail), "postern[%d]: ", (int)getpid());
	assert_true(strncmp(d + 16, tail, strlen(tail)) == 0);
	assert_string_equal(d + 16 + strlen(tail), msg);
}

static void
test_syslog_pri_and_format(void **state)
{
	int rx = bind_dgram();

	(void)state;
	log_syslog_path(sock_path);
	configure(LOGTO_SYSLOG, LOGFMT_TEXT, 0); /* unset: mail */
	log_msg(LOG_INFO, "hello %d", 1);
	expect_dgram(rx, LOG_MAIL | LOG_INFO, "info postern hello 1");
	log_session(LOG_WARNING, "imaps#a3f9 192.0.2.1:1", "backend down");
	expect_dgram(rx, 20, "warn imaps#a3f9 192.0.2.1:1 backend down");

	configure(LOGTO_SYSLOG, LOGFMT_TEXT, LOG_LOCAL3);
	log_msg(LOG_ERR, "e");
	expect_dgram(rx, 155, "error postern e");
	log_msg(LOG_WARNING, "w");
	expect_dgram(rx, 156, "warn postern w");
	log_msg(LOG_INFO, "i");
	expect_dgram(rx, 158, "info postern i");
	log_msg(LOG_DEBUG, "d");
	expect_dgram(rx, 159, "debug postern d");

	configure(LOGTO_SYSLOG, LOGFMT_JSON, LOG_DAEMON);
	log_msg(LOG_INFO, "cannot open x");
	const char *d = recv_dgram(rx);
	assert_true(strncmp(d, "<30>", 4) == 0);
	assert_non_null(strstr(d, "]: {\"ts\":\""));
	assert_non_null(strstr(d, "\"level\":\"info\",\"msg\":\"cannot open x\"}"));
	close(rx);
}

/* Peer bytes reach syslog escaped (log_text.h), text and JSON alike: no
 * line break of any reader, valid UTF-8, one JSON key each. */
static void
test_syslog_peer_bytes_escaped(void **state)
{
	int rx = bind_dgram();
	const char *peer = "a\xe2\x80\xa8"
	                   "b\xc2\x85\xff\n\x1b"
	                   "c level=error";

	(void)state;
	log_syslog_path(sock_path);
	configure(LOGTO_SYSLOG, LOGFMT_TEXT, 0);
	log_session(LOG_INFO, "imaps#1 192.0.2.1:1", "C: %s", peer);
	expect_dgram(rx, LOG_MAIL | LOG_INFO,
	             "info imaps#1 192.0.2.1:1 C: a\\u2028b\\u0085\\xff\\x0a\\x1bc level=error");
	configure(LOGTO_SYSLOG, LOGFMT_JSON, 0);
	log_session(LOG_INFO, "imaps#1 192.0.2.1:1", "start tls=off %s", peer);
	const char *d = recv_dgram(rx);
	assert_non_null(strstr(d, "\"level\":\"info\",\"service\":\"imaps\",\"session\":\"1\","
	                          "\"client\":\"192.0.2.1:1\",\"event\":\"start\",\"tls\":\"off\","
	                          "\"msg\":\"a\\\\u2028b\\\\u0085\\\\xff\\\\x0a\\\\x1bc "
	                          "level=error\"}"));
	close(rx);
}

/* A daemon that stops reading: datagrams beyond its queue are dropped and
 * counted, and logging returns at once. */
static void
test_syslog_full_queue(void **state)
{
	int rx = bind_dgram();
	uint64_t before;
	struct timespec t0, t1;

	(void)state;
	log_syslog_path(sock_path);
	configure(LOGTO_SYSLOG, LOGFMT_TEXT, 0);
	before = log_dropped();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 5000; i++)
		log_msg(LOG_INFO, "line %d", i);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(log_dropped() > before);
	assert_true(t1.tv_sec - t0.tv_sec < 5);
	close(rx);
}

/* The daemon restarts on the same path: the next line reconnects. */
static void
test_syslog_reconnect(void **state)
{
	int rx = bind_dgram();
	uint64_t before;

	(void)state;
	log_syslog_path(sock_path);
	configure(LOGTO_SYSLOG, LOGFMT_TEXT, 0);
	log_msg(LOG_INFO, "one");
	expect_dgram(rx, 22, "info postern one");
	close(rx);
	rx = bind_dgram();
	before = log_dropped();
	log_msg(LOG_INFO, "two");
	expect_dgram(rx, 22, "info postern two");
	assert_int_equal(log_dropped(), before);
	close(rx);
	/* No daemon at all: dropped, counted, no error. */
	unlink(sock_path);
	log_msg(LOG_INFO, "three");
	assert_int_equal(log_dropped(), before + 1);
}

static struct config *
load(const char *log, char **errs)
{
	char text[512];
	size_t len = 0;
	FILE *f = open_memstream(errs, &len);
	struct config *cfg;

	snprintf(text, sizeof(text),
	         "[global]\nlog = %s\n[imaps]\nprotocol = imap\nlisten = 127.0.0.1:993\n"
	         "backend = 127.0.0.1:143\ntls = off\n",
	         log);
	cfg = config_load_string("t.ini", text, false, f);
	fclose(f);
	return cfg;
}

static void
test_config_facility(void **state)
{
	static const struct {
		const char *value;
		int facility;
	} ok[] = {{"syslog", LOG_MAIL},          {"syslog:mail", LOG_MAIL},
	          {"syslog:daemon", LOG_DAEMON}, {"syslog:user", LOG_USER},
	          {"syslog:local0", LOG_LOCAL0}, {"syslog:local3", LOG_LOCAL3},
	          {"syslog:local7", LOG_LOCAL7}};
	static const char *const bad[] = {"syslog:bogus", "syslog:", "syslog:kern", "syslog:local8",
	                                  "syslog:auth"};
	struct config *cfg;
	char *errs;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cfg = load(ok[i].value, &errs);
		assert_string_equal(errs, "");
		assert_non_null(cfg);
		assert_int_equal(cfg->log_target, LOGTO_SYSLOG);
		assert_int_equal(cfg->log_facility, ok[i].facility);
		config_unref(cfg);
		free(errs);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg = load(bad[i], &errs);
		assert_null(cfg);
		assert_true(strncmp(errs, "t.ini:2: ", 9) == 0);
		assert_non_null(strstr(errs, "facility"));
		free(errs);
	}
	/* Not a syslog target: no facility. */
	cfg = load("stderr", &errs);
	assert_non_null(cfg);
	assert_int_equal(cfg->log_target, LOGTO_STDERR);
	config_unref(cfg);
	free(errs);
}

/* Checks that BUF[0, N) holds only the lines pipe_case logged, each whole
 * (its exact filler and end) and in order; returns how many of the TOTAL
 * lines are missing, and in *TORN how many lines are not whole. */
static long
missing_lines(const char *buf, size_t n, enum log_format format, int total, int *torn)
{
	const bool json = format == LOGFMT_JSON;
	const char *start = json ? "{\"ts\":\"20" : "20";
	const char *mark = json ? "\"msg\":\"number " : " info postern number ";
	const char *fill = json ? "\\\"" : "x", *tail = json ? ".\"}" : ".";
	long seen = 0;
	int last = -1;

	*torn = 0;
	for (const char *p = buf, *end = buf + n; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *m = memmem(p, len, mark, strlen(mark)), *q;
		int k = -1, used = 0,
		    ok = nl && m && strncmp(p, start, strlen(start)) == 0 &&
		         sscanf(m + strlen(mark), "%d %n", &k, &used) == 1 && used > 0 &&
		         k > last && k < total;
		q = ok ? m + strlen(mark) + used : NULL;
		for (int i = 0; ok && i < (k % 7) * 500; i++, q += strlen(fill))
			ok = (size_t)(nl - q) >= strlen(fill) && memcmp(q, fill, strlen(fill)) == 0;
		ok = ok && (size_t)(nl - q) == strlen(tail) && memcmp(q, tail, strlen(tail)) == 0;
		if (ok) {
			last = k;
			seen++;
		} else {
			(*torn)++;
		}
		p += len + 1;
	}
	return total - seen;
}

/* stderr is a pipe nobody reads, then a slow reader: nothing blocks, lines
 * (some longer than PIPE_BUF, written in parts) arrive whole and in order,
 * and exactly the lines not written are counted as dropped. */
static void
pipe_case(enum log_format format)
{
	enum { TOTAL = 12000 };
	static char out[8 << 20];
	size_t got = 0;
	int p[2], saved = dup(STDERR_FILENO), torn = 0;
	uint64_t before = log_dropped();
	struct ev_loop *loop = ev_loop_new(0);
	char filler[3001];
	ssize_t r;

	assert_true(saved >= 0 && pipe(p) == 0 && loop != NULL);
	assert_true(dup2(p[1], STDERR_FILENO) == STDERR_FILENO);
	close(p[1]);
	configure(LOGTO_STDERR, format, 0);
	log_attach_loop(loop);
	/* Quotes double in JSON: those lines are longer than PIPE_BUF. */
	memset(filler, format == LOGFMT_JSON ? '"' : 'x', sizeof(filler) - 1);
	filler[sizeof(filler) - 1] = '\0';
	for (int i = 0; i < TOTAL; i++)
		log_msg(LOG_INFO, "number %d %.*s.", i, (i % 7) * 500, filler);
	/* Read while the loop flushes what is pending. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	for (int idle = 0; idle < 50;) {
		ev_run(loop, EVRUN_NOWAIT);
		r = read(p[0], out + got, sizeof(out) - got);
		if (r > 0) {
			got += (size_t)r;
			idle = 0;
		} else {
			idle++;
			usleep(1000);
		}
	}
	log_detach_loop();
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[0]);
	ev_loop_destroy(loop);

	long missing = missing_lines(out, got, format, TOTAL, &torn);
	assert_int_equal(torn, 0);
	assert_true(missing > 0);
	assert_int_equal((uint64_t)missing, log_dropped() - before);
}

static void
test_stderr_pipe_text(void **state)
{
	(void)state;
	pipe_case(LOGFMT_TEXT);
}

static void
test_stderr_pipe_json(void **state)
{
	(void)state;
	pipe_case(LOGFMT_JSON);
}

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/postern-test-log.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/log.sock", dir);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	unlink(sock_path);
	rmdir(dir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_syslog_pri_and_format),
	        cmocka_unit_test(test_syslog_peer_bytes_escaped),
	        cmocka_unit_test(test_syslog_full_queue),
	        cmocka_unit_test(test_syslog_reconnect),
	        cmocka_unit_test(test_config_facility),
	        cmocka_unit_test(test_stderr_pipe_text),
	        /* Last: detaching for good bounds all later waits. */
	        cmocka_unit_test(test_stderr_pipe_json),
	};
	return cmocka_run_group_tests_name("log", tests, setup, teardown);
}
