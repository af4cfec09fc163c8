/* Prometheus counters and the tiny HTTP/1.0 server that exposes them.
 * Scrapes are rare and small: each connection reads one request, gets one
 * response, and is closed; a slow or silent scraper is cut off by a timer
 * so it can never hold the loop or a descriptor for long. Connections that
 * send nothing cannot lock the scraper out either: when every slot is
 * taken, a new connection takes the slot of the oldest one. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <postern/log.h>
#include <postern/metrics.h>

#define MAX_SERVICES 256
/* Scrape connections held at once, per process. A real scraper sends its
 * request as soon as it is connected; to evict it before that, a flood
 * would have to open this many connections within that moment. */
#define MAX_CLIENTS 64
#define REQ_MAX 2048
#define SCRAPE_TIMEOUT 5.0

/* Shared by all workers. svc[MAX_SERVICES] is "other", for names beyond
 * the table. active[slot][i]: sessions of service i open in the process
 * using that slot, written by that process only. The times are seconds
 * since the epoch, set by the first process (the master) and on reload. */
struct table {
	uint32_t nservices, slots_used;
	uint64_t start_time, reload_ok, reload_time;
	struct metrics_svc svc[MAX_SERVICES + 1];
	int32_t active[METRICS_SLOTS][MAX_SERVICES + 1];
};

static struct table *tab;
static int my_slot;

static struct table *
table(void)
{
	if (tab == NULL) {
		tab = shared_area(sizeof(*tab));
		snprintf(tab->svc[MAX_SERVICES].name, sizeof(tab->svc[0].name), "other");
		tab->slots_used = 1;
		tab->start_time = tab->reload_time = (uint64_t)time(NULL);
		tab->reload_ok = 1;
	}
	return tab;
}

struct scrape {
	ev_io io;
	ev_timer timer;
	int fd;
	size_t rlen, off, len;
	char req[REQ_MAX];
	char *resp;                 /* NULL while the request is incomplete */
	struct scrape *prev, *next; /* in the order they were accepted */
};

static struct {
	int fd;
	ev_io io;
	struct sockaddr_ex addr;
	int clients;
	struct scrape *oldest, *newest;
} http = {.fd = -1};

struct metrics_svc *
metrics_service(const char *name)
{
	struct table *t = table();
	uint32_t n = __atomic_load_n(&t->nservices, __ATOMIC_ACQUIRE);

	/* Compared as stored: a name longer than the field (the configuration
	 * allows none) still finds its one entry instead of adding another. */
	for (uint32_t i = 0; i < n; i++)
		if (strncmp(t->svc[i].name, name, sizeof(t->svc[i].name) - 1) == 0)
			return &t->svc[i];
	if (n == MAX_SERVICES)
		return &t->svc[MAX_SERVICES];
	snprintf(t->svc[n].name, sizeof(t->svc[n].name), "%s", name);
	__atomic_store_n(&t->nservices, n + 1, __ATOMIC_RELEASE);
	return &t->svc[n];
}

void
metrics_config_reloaded(bool ok)
{
	struct table *t = table();

	__atomic_store_n(&t->reload_ok, ok ? 1 : 0, __ATOMIC_RELAXED);
	if (ok)
		__atomic_store_n(&t->reload_time, (uint64_t)time(NULL), __ATOMIC_RELAXED);
}

void
metrics_active(struct metrics_svc *m, int delta)
{
	struct table *t = table();
	int32_t *a = &t->active[my_slot][m - t->svc];

	__atomic_store_n(a, __atomic_load_n(a, __ATOMIC_RELAXED) + delta, __ATOMIC_RELAXED);
}

void
metrics_reserve_slot(int slot)
{
	struct table *t = table();

	metrics_clear_slot(slot);
	/* Only the master writes it, and before the worker exists. */
	if ((uint32_t)slot >= __atomic_load_n(&t->slots_used, __ATOMIC_RELAXED))
		__atomic_store_n(&t->slots_used, (uint32_t)slot + 1, __ATOMIC_RELEASE);
}

void
metrics_use_slot(int slot)
{
	my_slot = slot;
}

void
metrics_clear_slot(int slot)
{
	struct table *t = table();

	for (size_t i = 0; i <= MAX_SERVICES; i++)
		__atomic_store_n(&t->active[slot][i], 0, __ATOMIC_RELAXED);
}

static uint64_t
active_total(const struct table *t, size_t i)
{
	uint32_t slots = __atomic_load_n(&t->slots_used, __ATOMIC_RELAXED);
	int64_t sum = 0;

	for (uint32_t k = 0; k < slots && k < METRICS_SLOTS; k++)
		sum += __atomic_load_n(&t->active[k][i], __ATOMIC_RELAXED);
	return sum > 0 ? (uint64_t)sum : 0;
}

uint64_t
metrics_sessions_open(void)
{
	const struct table *t = table();
	uint64_t n = 0;

	for (size_t i = 0; i <= MAX_SERVICES; i++)
		n += active_total(t, i);
	return n;
}

struct text {
	char *p;
	size_t cap, n;
};

static void __attribute__((format(printf, 2, 3))) emit(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (t->n >= t->cap)
		return;
	va_start(ap, fmt);
	r = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
	va_end(ap);
	if (r > 0)
		t->n = (size_t)r < t->cap - t->n ? t->n + (size_t)r : t->cap;
}

/* V as a label value: the text format escapes backslash, double quote and
 * line feed; every other byte stands as it is. */
static const char *
label_value(char *dst, size_t cap, const char *v)
{
	size_t n = 0;

	for (; *v && n + 3 <= cap; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n')
			dst[n++] = '\\';
		dst[n++] = *v == '\n' ? 'n' : *v;
	}
	dst[n] = '\0';
	return dst;
}

static void
family(struct text *t, const char *name, const char *type, const char *help)
{
	emit(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

size_t
metrics_render(char *dst, size_t cap)
{
	static const char *const hs[MH_COUNT] = {"timeout", "error"};
	static const char *const be[MB_COUNT] = {"unreachable", "tls"};
	static const char *const au[MA_COUNT] = {"ok", "failed"};
	static const char *const oa[MO_COUNT] = {"ok", "temporary", "refused"};
	static const char *const ref[MR_COUNT] = {"max_connections", "proxy_header", "protocol",
	                                          "max_handshakes", "unknown_server_name"};
	struct text t = {dst, cap, 0};
	const struct table *tb = table();
	size_t i, n = __atomic_load_n(&tb->nservices, __ATOMIC_ACQUIRE);
	char esc[2 * sizeof(tb->svc[0].name) + 1], ver[2 * sizeof(POSTERN_VERSION) + 1], ossl[128];
	int k;

	if (n == MAX_SERVICES)
		n++; /* and "other" */
#define EACH for (i = 0; i < n; i++)
#define S tb->svc[i]
/* The service's name as a label value. */
#define L label_value(esc, sizeof(esc), S.name)
#define V(x) (unsigned long long)shared_get(&(x))
	family(&t, "postern_connections_total", "counter", "Connections accepted.");
	EACH emit(&t, "postern_connections_total{service=\"%s\"} %llu\n", L, V(S.connections));
	family(&t, "postern_connections_active", "gauge", "Sessions open now.");
	EACH emit(&t, "postern_connections_active{service=\"%s\"} %llu\n", L,
	          (unsigned long long)active_total(tb, i));
	family(&t, "postern_handshake_failures_total", "counter", "Client handshakes that failed.");
	EACH for (k = 0; k < MH_COUNT; k++)
	        emit(&t, "postern_handshake_failures_total{service=\"%s\",reason=\"%s\"} %llu\n", L,
	             hs[k], V(S.handshake_failures[k]));
	family(&t, "postern_bytes_total", "counter", "Application bytes relayed.");
	EACH emit(&t,
	          "postern_bytes_total{service=\"%s\",direction=\"in\"} %llu\n"
	          "postern_bytes_total{service=\"%s\",direction=\"out\"} %llu\n",
	          L, V(S.bytes_in), L, V(S.bytes_out));
	family(&t, "postern_backend_errors_total", "counter",
	       "Backends unreachable or failing TLS.");
	EACH for (k = 0; k < MB_COUNT; k++)
	        emit(&t, "postern_backend_errors_total{service=\"%s\",reason=\"%s\"} %llu\n", L,
	             be[k], V(S.backend_errors[k]));
	family(&t, "postern_starttls_total", "counter", "STARTTLS performed.");
	EACH emit(&t,
	          "postern_starttls_total{service=\"%s\",side=\"client\"} %llu\n"
	          "postern_starttls_total{service=\"%s\",side=\"backend\"} %llu\n",
	          L, V(S.starttls_client), L, V(S.starttls_backend));
	family(&t, "postern_plaintext_auth_refused_total", "counter",
	       "Credentials refused before TLS.");
	EACH emit(&t, "postern_plaintext_auth_refused_total{service=\"%s\"} %llu\n", L,
	          V(S.plaintext_auth_refused));
	family(&t, "postern_auth_total", "counter",
	       "Login attempts relayed, by the server's verdict.");
	EACH for (k = 0; k < MA_COUNT; k++)
	        emit(&t, "postern_auth_total{service=\"%s\",result=\"%s\"} %llu\n", L, au[k],
	             V(S.auth[k]));
	family(&t, "postern_oauth2_token_requests_total", "counter",
	       "Requests to the OAuth 2.0 token endpoint (backend_auth = oauth2), by outcome.");
	EACH for (k = 0; k < MO_COUNT; k++)
	        emit(&t, "postern_oauth2_token_requests_total{service=\"%s\",result=\"%s\"} %llu\n",
	             L, oa[k], V(S.oauth2_token_requests[k]));
	family(&t, "postern_refused_total", "counter", "Connections refused.");
	EACH for (k = 0; k < MR_COUNT; k++)
	        emit(&t, "postern_refused_total{service=\"%s\",reason=\"%s\"} %llu\n", L, ref[k],
	             V(S.refused[k]));
	family(&t, "postern_certificates", "gauge", "Certificates loaded.");
	EACH emit(&t, "postern_certificates{service=\"%s\"} %llu\n", L, V(S.certificates));
	family(&t, "postern_certificate_expiry_soonest_seconds", "gauge",
	       "The soonest notAfter of the certificates loaded, in seconds since the epoch.");
	EACH emit(&t, "postern_certificate_expiry_soonest_seconds{service=\"%s\"} %llu\n", L,
	          V(S.certificate_soonest_expiry));
	family(&t, "postern_certificates_expiring", "gauge",
	       "Certificates loaded that expire within 14 days.");
	EACH emit(&t, "postern_certificates_expiring{service=\"%s\",within=\"14d\"} %llu\n", L,
	          V(S.certificates_expiring));
	family(&t, "postern_build_info", "gauge",
	       "Always 1; the labels say which postern and which OpenSSL (at run time).");
	emit(&t, "postern_build_info{version=\"%s\",openssl=\"%s\"} 1\n",
	     label_value(ver, sizeof(ver), POSTERN_VERSION),
	     label_value(ossl, sizeof(ossl), OpenSSL_version(OPENSSL_VERSION_STRING)));
	family(&t, "postern_start_time_seconds", "gauge",
	       "When postern started, in seconds since the epoch.");
	emit(&t, "postern_start_time_seconds %llu\n", V(tb->start_time));
	family(&t, "postern_config_reload_success", "gauge",
	       "1 when the last reload of the configuration succeeded (or none was "
	       "tried), 0 when it was refused.");
	emit(&t, "postern_config_reload_success %llu\n", V(tb->reload_ok));
	family(&t, "postern_config_last_reload_timestamp_seconds", "gauge",
	       "When the configuration in use was loaded (start or successful reload), "
	       "in seconds since the epoch.");
	emit(&t, "postern_config_last_reload_timestamp_seconds %llu\n", V(tb->reload_time));
	family(&t, "postern_log_dropped_total", "counter",
	       "Log lines dropped because the log output could not take them.");
	emit(&t, "postern_log_dropped_total %llu\n", (unsigned long long)log_dropped());
#undef EACH
#undef S
#undef L
#undef V
	return t.n;
}

static void
scrape_end(struct ev_loop *loop, struct scrape *c)
{
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	close(c->fd);
	free(c->resp);
	if (c->prev)
		c->prev->next = c->next;
	else
		http.oldest = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		http.newest = c->prev;
	free(c);
	http.clients--;
}

/* Every slot is taken: the oldest connection still short of a whole request
 * makes room, or failing that the oldest of all. So silent or slow clients,
 * however many, only ever push each other out, and a scraper's connection
 * lives until MAX_CLIENTS newer ones have come. */
static void
evict_one(struct ev_loop *loop)
{
	struct scrape *c = http.oldest;

	while (c && c->resp != NULL)
		c = c->next;
	if (c == NULL)
		c = http.oldest;
	if (c)
		scrape_end(loop, c);
}

static void
on_scrape_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	scrape_end(loop, w->data);
}

/* The response is built with HEAD_ROOM bytes free in front of the body, so
 * the headers, which give the body's length, go just before it once it is
 * known; sending starts at the headers (c->off). */
#define HEAD_ROOM 256

/* Whether the request target T is /metrics, with or without a query. */
static bool
is_metrics_path(const char *t)
{
	return strncmp(t, "/metrics", 8) == 0 && t[8] != '\0' && strchr(" ?#\r\n", t[8]);
}

/* GET /metrics gets the text; HEAD /metrics the same headers alone, as
 * HTTP wants; another method there 405; any other path 404. A query string
 * is ignored, as Prometheus' own exporters do. */
static void
respond(struct scrape *c)
{
	size_t cap = HEAD_ROOM + 4096 +
	             (__atomic_load_n(&table()->nservices, __ATOMIC_ACQUIRE) + 1) * 6144;
	const char *sp = strchr(c->req, ' ');
	bool get = strncmp(c->req, "GET ", 4) == 0, head = strncmp(c->req, "HEAD ", 5) == 0;
	const char *status = "200 OK", *extra = "Content-Type: text/plain; version=0.0.4\r\n";
	char hdr[HEAD_ROOM];
	size_t blen;
	int hlen;

	c->resp = malloc(cap);
	if (c->resp == NULL)
		return;
	if (sp == NULL || !is_metrics_path(sp + 1)) {
		status = "404 Not Found";
		extra = "Content-Type: text/plain\r\n";
		blen = (size_t)snprintf(c->resp + HEAD_ROOM, cap - HEAD_ROOM, "not found\n");
	} else if (!get && !head) {
		status = "405 Method Not Allowed";
		extra = "Allow: GET, HEAD\r\nContent-Type: text/plain\r\n";
		blen = (size_t)snprintf(c->resp + HEAD_ROOM, cap - HEAD_ROOM,
		                        "method not allowed\n");
	} else {
		blen = metrics_render(c->resp + HEAD_ROOM, cap - HEAD_ROOM);
	}
	hlen = snprintf(hdr, sizeof(hdr),
	                "HTTP/1.0 %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
	                extra, blen);
	memcpy(c->resp + HEAD_ROOM - (size_t)hlen, hdr, (size_t)hlen);
	c->off = HEAD_ROOM - (size_t)hlen;
	c->len = head ? HEAD_ROOM : HEAD_ROOM + blen;
}

static void
on_scrape_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct scrape *c = w->data;

	(void)revents;
	if (c->resp == NULL) {
		ssize_t n = recv(c->fd, c->req + c->rlen, sizeof(c->req) - 1 - c->rlen, 0);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			scrape_end(loop, c);
			return;
		}
		c->rlen += (size_t)n;
		c->req[c->rlen] = '\0';
		if (strstr(c->req, "\r\n\r\n") == NULL && strstr(c->req, "\n\n") == NULL) {
			if (c->rlen == sizeof(c->req) - 1)
				scrape_end(loop, c);
			return;
		}
		respond(c);
		if (c->resp == NULL) {
			scrape_end(loop, c);
			return;
		}
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, c->fd, EV_WRITE);
		ev_io_start(loop, &c->io);
		return;
	}
	ssize_t n = send(c->fd, c->resp + c->off, c->len - c->off, MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		c->off += (size_t)n;
	if (n <= 0 || c->off == c->len)
		scrape_end(loop, c);
}

static void
on_http_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)w;
	(void)revents;
	for (;;) {
		int fd = accept4(http.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct scrape *c;

		if (fd < 0)
			return;
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		if (http.clients >= MAX_CLIENTS)
			evict_one(loop);
		http.clients++;
		c->fd = fd;
		c->prev = http.newest;
		if (http.newest)
			http.newest->next = c;
		else
			http.oldest = c;
		http.newest = c;
		ev_io_init(&c->io, on_scrape_io, fd, EV_READ);
		c->io.data = c;
		ev_timer_init(&c->timer, on_scrape_timeout, SCRAPE_TIMEOUT, 0.);
		c->timer.data = c;
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
	}
}

void
metrics_stop(struct ev_loop *loop)
{
	if (http.fd < 0)
		return;
	if (ev_is_active(&http.io))
		ev_io_stop(loop, &http.io);
	close(http.fd);
	http.fd = -1;
}

void
metrics_start(struct ev_loop *loop)
{
	if (http.fd >= 0 && !ev_is_active(&http.io))
		ev_io_start(loop, &http.io);
}

int
metrics_apply(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	const struct sockaddr_ex *a = &cfg->metrics;
	int fd, one = 1;

	/* Every configured service shows its series from the start, at 0.
	 * Names are kept since the start (counters outlive reloads): beyond
	 * MAX_SERVICES of them, the others share the series "other". */
	for (size_t i = 0; i < cfg->nservices; i++) {
		struct metrics_svc *m = metrics_service(cfg->services[i].name);
		struct tls_stats st;
		if (m == &table()->svc[MAX_SERVICES])
			log_msg(LOG_WARNING,
			        "metrics: service %s is counted as service=\"other\": more than %d "
			        "service names since the start",
			        cfg->services[i].name, MAX_SERVICES);
		tls_server_stats(cfg->services[i].tls_server, &st);
		__atomic_store_n(&m->certificates, st.certificates, __ATOMIC_RELAXED);
		__atomic_store_n(&m->certificate_soonest_expiry, (uint64_t)st.soonest_expiry,
		                 __ATOMIC_RELAXED);
		__atomic_store_n(&m->certificates_expiring, st.expiring, __ATOMIC_RELAXED);
	}
	if (http.fd >= 0 && a->len == http.addr.len && memcmp(&a->ss, &http.addr.ss, a->len) == 0)
		return 0;
	if (a->len == 0) {
		metrics_stop(loop);
		return 0;
	}
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 64) < 0) {
		snprintf(err, errlen, "cannot serve metrics on %s: %s", a->text, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	metrics_stop(loop);
	http.fd = fd;
	http.addr = *a;
	ev_io_init(&http.io, on_http_accept, fd, EV_READ);
	if (loop)
		ev_io_start(loop, &http.io);
	log_msg(LOG_INFO, "metrics on http://%s/metrics", a->text);
	return 0;
}
