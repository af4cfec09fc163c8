/* libcurl's multi interface on libev: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> one ev_io each) and when to call it back
 * (CURLMOPT_TIMERFUNCTION -> one ev_timer); each event goes back to
 * curl_multi_socket_action, and finished transfers are read from
 * curl_multi_info_read. Request bodies and answers hold secrets (refresh
 * token, client secret, access token): they are wiped when released. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <postern/oauth2_http.h>
#include <postern/oauth2_json.h>

#define BODY_MAX 16384 /* the form we send */

struct oauth2_client {
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer;
	struct oauth2_request *reqs; /* running, for oauth2_client_free */
};

enum kind { REQ_TOKEN, REQ_DEVICE };

struct oauth2_request {
	struct oauth2_client *c;
	struct oauth2_request *next, **prevp;
	CURL *easy;
	enum kind kind;
	oauth2_done_cb *cb;
	void *arg;
	char *body;
	size_t bodylen;
	char *answer; /* OAUTH2_JSON_MAX bytes */
	size_t answerlen;
	bool too_long;
	char curl_err[CURL_ERROR_SIZE];
};

/* One watched socket. */
struct sock {
	ev_io io;
	struct oauth2_client *c;
};

static void drain(struct oauth2_client *c);

static void
secure_free(char *p, size_t n)
{
	if (p) {
		OPENSSL_cleanse(p, n);
		free(p);
	}
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	/* the action may close the socket and free W: keep the client */
	struct oauth2_client *c = ((struct sock *)w)->c;
	int running, flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
	                     (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);

	(void)loop;
	curl_multi_socket_action(c->multi, w->fd, flags, &running);
	drain(c);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct oauth2_client *c = w->data;
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	drain(c);
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct oauth2_client *c = userp;
	struct sock *s = socketp;
	int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(c->loop, &s->io);
			curl_multi_assign(c->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	if (!s) {
		if (!(s = calloc(1, sizeof(*s))))
			return -1;
		s->c = c;
		curl_multi_assign(c->multi, fd, s);
	} else {
		ev_io_stop(c->loop, &s->io);
	}
	ev_io_init(&s->io, io_cb, fd, ev);
	ev_io_start(c->loop, &s->io);
	return 0;
}

static int
timerfunc_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct oauth2_client *c = userp;

	(void)multi;
	ev_timer_stop(c->loop, &c->timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
	return 0;
}

struct oauth2_client *
oauth2_client_new(struct ev_loop *loop)
{
	static bool initialized;
	struct oauth2_client *c;

	if (!initialized) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		initialized = true;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	if (!(c->multi = curl_multi_init())) {
		free(c);
		return NULL;
	}
	c->loop = loop;
	ev_timer_init(&c->timer, timer_cb, 0., 0.);
	c->timer.data = c;
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timerfunc_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	return c;
}

static void
request_free(struct oauth2_request *r)
{
	if (r->prevp) {
		*r->prevp = r->next;
		if (r->next)
			r->next->prevp = r->prevp;
	}
	if (r->easy) {
		curl_multi_remove_handle(r->c->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	secure_free(r->body, r->bodylen);
	secure_free(r->answer, OAUTH2_JSON_MAX);
	free(r);
}

void
oauth2_cancel(struct oauth2_request *r)
{
	if (r)
		request_free(r);
}

void
oauth2_client_free(struct oauth2_client *c)
{
	if (!c)
		return;
	while (c->reqs)
		request_free(c->reqs);
	ev_timer_stop(c->loop, &c->timer);
	curl_multi_cleanup(c->multi);
	free(c);
}

const char *
oauth2_http_version(void)
{
	return curl_version_info(CURLVERSION_NOW)->version;
}

static size_t
write_cb(char *data, size_t size, size_t n, void *userp)
{
	struct oauth2_request *r = userp;
	size_t len = size * n;

	if (len > OAUTH2_JSON_MAX - r->answerlen) {
		r->too_long = true;
		return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
	}
	memcpy(r->answer + r->answerlen, data, len);
	r->answerlen += len;
	return len;
}

/* The OAuth error codes that no retry will cure (RFC 6749 5.2, RFC 8628
 * 3.5): the admin must authorize again or fix the registration. */
static enum oauth2_result
classify_error(const char *error)
{
	if (strcmp(error, "authorization_pending") == 0)
		return OAUTH2_PENDING;
	if (strcmp(error, "slow_down") == 0)
		return OAUTH2_SLOW_DOWN;
	if (strcmp(error, "temporarily_unavailable") == 0 || strcmp(error, "server_error") == 0)
		return OAUTH2_TEMPORARY;
	return OAUTH2_PERMANENT;
}

/* Reads the answer of a finished transfer into REPLY. */
static void
judge(struct oauth2_request *r, CURLcode code, struct oauth2_reply *reply)
{
	char type[32];
	long status = 0;
	struct oauth2_json_field f[] = {
	        {.name = "error",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->error,
	         .cap = sizeof(reply->error)},
	        {.name = "access_token",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->access_token,
	         .cap = sizeof(reply->access_token)},
	        {.name = "refresh_token",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->refresh_token,
	         .cap = sizeof(reply->refresh_token)},
	        {.name = "token_type",
	         .type = OAUTH2_JSON_STRING,
	         .buf = type,
	         .cap = sizeof(type)},
	        {.name = "expires_in", .type = OAUTH2_JSON_INT},
	        {.name = "device_code",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->device_code,
	         .cap = sizeof(reply->device_code)},
	        {.name = "user_code",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->user_code,
	         .cap = sizeof(reply->user_code)},
	        {.name = "verification_uri",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->verification_uri,
	         .cap = sizeof(reply->verification_uri)},
	        {.name = "verification_uri_complete",
	         .type = OAUTH2_JSON_STRING,
	         .buf = reply->verification_uri_complete,
	         .cap = sizeof(reply->verification_uri_complete)},
	        {.name = "interval", .type = OAUTH2_JSON_INT},
	};

	reply->result = OAUTH2_TEMPORARY;
	if (code != CURLE_OK) {
		snprintf(reply->detail, sizeof(reply->detail), "%s",
		         r->too_long      ? "answer too long"
		         : r->curl_err[0] ? r->curl_err
		                          : curl_easy_strerror(code));
		return;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	reply->http_status = (int)status;
	if (oauth2_json_extract(r->answer, r->answerlen, f, sizeof(f) / sizeof(f[0])) < 0) {
		memset(reply, 0, sizeof(*reply));
		reply->result = OAUTH2_TEMPORARY;
		reply->http_status = (int)status;
		snprintf(reply->detail, sizeof(reply->detail), "HTTP %ld, not a JSON object",
		         status);
		return;
	}
	reply->expires_in = f[4].num;
	reply->interval = f[9].num;
	if (status >= 500 || status == 429) {
		snprintf(reply->detail, sizeof(reply->detail), "HTTP %ld%s%s", status,
		         reply->error[0] ? ", " : "", reply->error);
		return;
	}
	if (status != 200) {
		if (!reply->error[0]) {
			snprintf(reply->detail, sizeof(reply->detail),
			         "HTTP %ld without an error code", status);
			return;
		}
		reply->result = classify_error(reply->error);
		snprintf(reply->detail, sizeof(reply->detail), "HTTP %ld, %s", status,
		         reply->error);
		return;
	}
	if (r->kind == REQ_DEVICE) {
		if (!reply->device_code[0] || !reply->user_code[0] || !reply->verification_uri[0]) {
			snprintf(
			        reply->detail, sizeof(reply->detail),
			        "device answer without device_code, user_code or verification_uri");
			return;
		}
	} else if (!reply->access_token[0] || strcasecmp(type, "Bearer") != 0) {
		snprintf(reply->detail, sizeof(reply->detail),
		         "token answer without a Bearer access_token");
		return;
	}
	reply->result = OAUTH2_OK;
	snprintf(reply->detail, sizeof(reply->detail), "HTTP 200");
}

static void
finish(struct oauth2_request *r, CURLcode code)
{
	struct oauth2_reply *reply = calloc(1, sizeof(*reply));
	oauth2_done_cb *cb = r->cb;
	void *arg = r->arg;

	if (reply)
		judge(r, code, reply);
	request_free(r);
	if (!reply) {
		static struct oauth2_reply oom = {.result = OAUTH2_TEMPORARY,
		                                  .detail = "out of memory"};
		cb(arg, &oom);
		return;
	}
	cb(arg, reply);
	OPENSSL_cleanse(reply, sizeof(*reply));
	free(reply);
}

static void
drain(struct oauth2_client *c)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(c->multi, &left))) {
		struct oauth2_request *r = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r)
			finish(r, m->data.result);
	}
}

/* Appends "&NAME=VALUE" (form-encoded) to R's body. */
static int
form_add(struct oauth2_request *r, const char *name, const char *value)
{
	char *enc;
	size_t n;
	int len;

	if (!value || !*value)
		return 0;
	if (!(enc = curl_easy_escape(r->easy, value, 0)))
		return -1;
	n = strlen(enc);
	len = snprintf(r->body + r->bodylen, BODY_MAX - r->bodylen, "%s%s=%s",
	               r->bodylen ? "&" : "", name, enc);
	OPENSSL_cleanse(enc, n);
	curl_free(enc);
	if (len < 0 || (size_t)len >= BODY_MAX - r->bodylen)
		return -1;
	r->bodylen += (size_t)len;
	return 0;
}

static struct oauth2_request *
request_new(struct oauth2_client *c, const struct oauth2_endpoint *ep, enum kind kind,
            oauth2_done_cb *cb, void *arg)
{
	struct oauth2_request *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->c = c;
	r->kind = kind;
	r->cb = cb;
	r->arg = arg;
	r->body = calloc(1, BODY_MAX);
	r->answer = malloc(OAUTH2_JSON_MAX);
	r->easy = curl_easy_init();
	if (!r->body || !r->answer || !r->easy || form_add(r, "client_id", ep->client_id) < 0 ||
	    form_add(r, "client_secret", ep->client_secret) < 0) {
		request_free(r);
		return NULL;
	}
	return r;
}

/* Sets up and starts R's POST to URL. */
static struct oauth2_request *
request_start(struct oauth2_request *r, const struct oauth2_endpoint *ep, const char *url)
{
	CURL *e = r->easy;
	long ms = ep->timeout > 0 ? (long)(ep->timeout * 1000) : 10000;
	bool ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK &&
	          /* a token must never travel in clear text, nor be redirected */
	          curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	          (!ep->ca_file || curl_easy_setopt(e, CURLOPT_CAINFO, ep->ca_file) == CURLE_OK) &&
	          curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->bodylen) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_USERAGENT, "postern/" POSTERN_VERSION) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err) == CURLE_OK &&
	          curl_easy_setopt(e, CURLOPT_PRIVATE, r) == CURLE_OK;

	if (!ok || curl_multi_add_handle(r->c->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		r->easy = NULL;
		request_free(r);
		return NULL;
	}
	r->next = r->c->reqs;
	if (r->next)
		r->next->prevp = &r->next;
	r->c->reqs = r;
	r->prevp = &r->c->reqs;
	return r;
}

/* A POST of FORM (name, value, ..., NULL) plus the client's id and
 * secret to URL. */
static struct oauth2_request *
post(struct oauth2_client *c, const struct oauth2_endpoint *ep, enum kind kind, const char *url,
     const char *const *form, oauth2_done_cb *cb, void *arg)
{
	struct oauth2_request *r = request_new(c, ep, kind, cb, arg);

	if (!r)
		return NULL;
	for (; form[0]; form += 2) {
		if (form_add(r, form[0], form[1]) < 0) {
			request_free(r);
			return NULL;
		}
	}
	return request_start(r, ep, url);
}

struct oauth2_request *
oauth2_refresh(struct oauth2_client *c, const struct oauth2_endpoint *ep, const char *refresh_token,
               oauth2_done_cb *cb, void *arg)
{
	const char *form[] = {"grant_type", "refresh_token", "refresh_token", refresh_token, NULL};

	return post(c, ep, REQ_TOKEN, ep->token_url, form, cb, arg);
}

struct oauth2_request *
oauth2_device_start(struct oauth2_client *c, const struct oauth2_endpoint *ep,
                    const char *device_url, const char *scope, oauth2_done_cb *cb, void *arg)
{
	const char *form[] = {"scope", scope, NULL};

	return post(c, ep, REQ_DEVICE, device_url, form, cb, arg);
}

struct oauth2_request *
oauth2_device_poll(struct oauth2_client *c, const struct oauth2_endpoint *ep,
                   const char *device_code, oauth2_done_cb *cb, void *arg)
{
	const char *form[] = {"grant_type", "urn:ietf:params:oauth:grant-type:device_code",
	                      "device_code", device_code, NULL};

	return post(c, ep, REQ_TOKEN, ep->token_url, form, cb, arg);
}

struct oauth2_request *
oauth2_code_exchange(struct oauth2_client *c, const struct oauth2_endpoint *ep, const char *code,
                     const char *redirect_uri, const char *verifier, oauth2_done_cb *cb, void *arg)
{
	const char *form[] = {"grant_type", "authorization_code", "code",   code, "redirect_uri",
	                      redirect_uri, "code_verifier",      verifier, NULL};

	return post(c, ep, REQ_TOKEN, ep->token_url, form, cb, arg);
}
