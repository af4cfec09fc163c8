/* Requests to an OAuth 2.0 provider's endpoints (token, device
 * authorization) over HTTPS with certificate verification, without
 * blocking: libcurl's multi interface driven by the caller's libev loop.
 * One oauth2_client per loop; any number of requests at once, each ending
 * in exactly one call of its callback (unless cancelled). */
#ifndef POSTERN_OAUTH2_HTTP_H
#define POSTERN_OAUTH2_HTTP_H

#include <stddef.h>

#include <ev.h>

/* What a request needs to know about the provider. Strings are copied at
 * the start of each request. */
struct oauth2_endpoint {
	const char *token_url; /* https:// */
	const char *client_id;
	const char *client_secret; /* NULL or "" when the provider needs none */
	const char *ca_file;       /* NULL: the system's trust store */
	double timeout;            /* seconds for the whole request */
};

enum oauth2_result {
	OAUTH2_OK,
	OAUTH2_TEMPORARY, /* no answer, timeout, TLS failure, 5xx, 429, bad answer: try later */
	OAUTH2_PERMANENT, /* invalid_grant and the like: authorize again */
	OAUTH2_PENDING,   /* device grant: the user has not approved yet */
	OAUTH2_SLOW_DOWN, /* device grant: poll 5 s less often */
};

#define OAUTH2_ACCESS_MAX 8192
#define OAUTH2_REFRESH_MAX 8192

/* The outcome, valid during the callback only: it is wiped afterwards. */
struct oauth2_reply {
	enum oauth2_result result;
	int http_status;  /* 0 when no HTTP answer came */
	char error[64];   /* the OAuth "error" code, or "" */
	char detail[256]; /* for the log: what went wrong (never a token) */
	/* token endpoint */
	char access_token[OAUTH2_ACCESS_MAX];
	char refresh_token[OAUTH2_REFRESH_MAX]; /* "" when not rotated */
	long long expires_in;                   /* seconds; 0 when absent */
	/* device authorization endpoint */
	char device_code[1024];
	char user_code[128];
	char verification_uri[512];
	char verification_uri_complete[640];
	long long interval; /* seconds between polls; 0 when absent */
};

typedef void oauth2_done_cb(void *arg, const struct oauth2_reply *reply);

struct oauth2_client;
struct oauth2_request;

/* NULL when libcurl cannot be set up. */
struct oauth2_client *oauth2_client_new(struct ev_loop *loop);
/* Cancels every request still running (their callbacks are not called).
 * Not from inside a callback. */
void oauth2_client_free(struct oauth2_client *c);

/* grant_type=refresh_token (RFC 6749 6). */
struct oauth2_request *oauth2_refresh(struct oauth2_client *c, const struct oauth2_endpoint *ep,
                                      const char *refresh_token, oauth2_done_cb *cb, void *arg);
/* Device authorization request (RFC 8628 3.1) to DEVICE_URL. */
struct oauth2_request *oauth2_device_start(struct oauth2_client *c,
                                           const struct oauth2_endpoint *ep, const char *device_url,
                                           const char *scope, oauth2_done_cb *cb, void *arg);
/* One poll of the token endpoint for DEVICE_CODE (RFC 8628 3.4). */
struct oauth2_request *oauth2_device_poll(struct oauth2_client *c, const struct oauth2_endpoint *ep,
                                          const char *device_code, oauth2_done_cb *cb, void *arg);
/* grant_type=authorization_code with the PKCE verifier (RFC 7636 4.5). */
struct oauth2_request *oauth2_code_exchange(struct oauth2_client *c,
                                            const struct oauth2_endpoint *ep, const char *code,
                                            const char *redirect_uri, const char *verifier,
                                            oauth2_done_cb *cb, void *arg);
/* Each returns NULL (and calls nothing) when the request cannot start. */

/* Stops REQ; its callback is not called. */
void oauth2_cancel(struct oauth2_request *req);

/* The libcurl version in use, for postern -V. */
const char *oauth2_http_version(void);

#endif
