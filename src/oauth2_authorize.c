/* The oauth2-authorize command. It runs once, in the foreground, before the
 * daemon uses the account: plain blocking code where only the user waits
 * (the password prompt, the browser's redirect), the token requests on a
 * private libev loop through oauth2_http. Nothing secret is printed: the
 * user sees URLs and the user code, never a token. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <postern/config_oauth2.h>
#include <postern/daemon.h>
#include <postern/oauth2_authorize.h>
#include <postern/oauth2_http.h>
#include <postern/oauth2_sasl.h>
#include <postern/oauth2_store.h>

#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024
#define REDIRECT_WAIT 300 /* seconds the user has to finish in the browser */
#define DEVICE_WAIT_MAX 1800

struct run {
	struct ev_loop *loop;
	struct oauth2_client *client;
	struct oauth2_endpoint ep;
	const struct oauth2_provider *prov;
	ev_timer poll; /* device grant: the next poll */
	char device_code[1024];
	double interval;
	ev_tstamp deadline;
	bool ok;
	char refresh[OAUTH2_REFRESH_MAX];
	long long expires_in;
	bool give; /* root runs the command for the daemon's user: files go to uid, gid */
	uid_t uid;
	gid_t gid;
};

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("postern: oauth2-authorize: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Text from the provider shown on the terminal: control bytes become '?'
 * (an escape sequence must not reach the terminal). */
static const char *
shown(const char *s, char *buf, size_t cap)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < cap; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

/* ---- the local password ---- */

/* One line from FP into BUF, without its newline; -1 at EOF or if too long. */
static int
read_line(FILE *fp, char *buf, size_t cap)
{
	size_t n;

	if (!fgets(buf, (int)cap, fp))
		return -1;
	n = strlen(buf);
	if (n == 0 || buf[n - 1] != '\n') {
		if (!feof(fp))
			return -1;
	} else {
		buf[--n] = '\0';
	}
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return 0;
}

static int
prompt(FILE *tty, const char *text, char *buf, size_t cap)
{
	struct termios old, quiet;
	int fd = fileno(tty), rc;

	fputs(text, stderr);
	fflush(stderr);
	if (tcgetattr(fd, &old) < 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(fd, TCSAFLUSH, &quiet);
	rc = read_line(tty, buf, cap);
	tcsetattr(fd, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return rc;
}

/* From the terminal (asked twice), or the first line of stdin when stdin
 * is not a terminal (scripts, tests). */
static int
get_password(const char *account, bool confirm, char *pw, size_t cap)
{
	char again[PASSWORD_MAX + 2], text[400];
	FILE *tty;
	int rc = -1;

	if (!isatty(STDIN_FILENO)) {
		setvbuf(stdin, NULL, _IONBF, 0); /* no copy left in a stdio buffer */
		if (read_line(stdin, pw, cap) < 0) {
			fail("no password on standard input");
			return -1;
		}
	} else {
		if (!(tty = fopen("/dev/tty", "r+"))) {
			fail("cannot open the terminal: %s", strerror(errno));
			return -1;
		}
		setvbuf(tty, NULL, _IONBF, 0);
		snprintf(
		        text, sizeof(text),
		        "Local password for %s (the password its mail client will use): ", account);
		if (prompt(tty, text, pw, cap) == 0 &&
		    (!confirm || prompt(tty, "Again: ", again, sizeof(again)) == 0))
			rc = !confirm || strcmp(pw, again) == 0 ? 0 : 1;
		OPENSSL_cleanse(again, sizeof(again));
		fclose(tty);
		if (rc != 0) {
			fail("%s", rc > 0 ? "the passwords differ" : "no password");
			return -1;
		}
	}
	if (strlen(pw) < PASSWORD_MIN) {
		fail("the local password must have at least %d bytes", PASSWORD_MIN);
		return -1;
	}
	return 0;
}

/* ---- the token requests, on the private loop ---- */

static void
keep_refresh_token(struct run *run, const struct oauth2_reply *r)
{
	if (r->result == OAUTH2_OK && !r->refresh_token[0]) {
		fail("the provider gave no refresh token (does the scope ask for offline "
		     "access?)");
	} else if (r->result == OAUTH2_OK) {
		snprintf(run->refresh, sizeof(run->refresh), "%s", r->refresh_token);
		run->ok = true;
	} else {
		char detail[sizeof(r->detail)];

		fail("token request failed: %s%s", shown(r->detail, detail, sizeof(detail)),
		     r->result == OAUTH2_TEMPORARY ? " (temporary: try again later)" : "");
	}
	ev_break(run->loop, EVBREAK_ALL);
}

static void poll_due(struct ev_loop *loop, ev_timer *w, int revents);

static void
polled(void *arg, const struct oauth2_reply *r)
{
	struct run *run = arg;

	if (r->result == OAUTH2_PENDING || r->result == OAUTH2_SLOW_DOWN) {
		if (r->result == OAUTH2_SLOW_DOWN)
			run->interval += 5; /* RFC 8628 3.5 */
		if (ev_now(run->loop) + run->interval > run->deadline) {
			fail("the code expired before it was entered");
			ev_break(run->loop, EVBREAK_ALL);
			return;
		}
		ev_timer_set(&run->poll, run->interval, 0.);
		ev_timer_start(run->loop, &run->poll);
		return;
	}
	keep_refresh_token(run, r);
}

static void
poll_due(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct run *run = w->data;

	(void)loop;
	(void)revents;
	if (!oauth2_device_poll(run->client, &run->ep, run->device_code, polled, run)) {
		fail("cannot start a token request");
		ev_break(run->loop, EVBREAK_ALL);
	}
}

static void
device_started(void *arg, const struct oauth2_reply *r)
{
	struct run *run = arg;
	long long life = r->expires_in > 0 && r->expires_in < DEVICE_WAIT_MAX ? r->expires_in
	                                                                      : DEVICE_WAIT_MAX;
	char uri[sizeof(r->verification_uri_complete)], code[sizeof(r->user_code)];

	if (r->result != OAUTH2_OK) {
		fail("device authorization request failed: %s", shown(r->detail, uri, sizeof(uri)));
		ev_break(run->loop, EVBREAK_ALL);
		return;
	}

	printf("postern: to authorize, open %s and enter the code %s\n",
	       shown(r->verification_uri, uri, sizeof(uri)),
	       shown(r->user_code, code, sizeof(code)));
	if (r->verification_uri_complete[0])
		printf("postern: (or open %s)\n",
		       shown(r->verification_uri_complete, uri, sizeof(uri)));
	printf("postern: waiting for the approval (at most %lld s)\n", life);
	fflush(stdout);
	snprintf(run->device_code, sizeof(run->device_code), "%s", r->device_code);
	run->interval = r->interval > 0 && r->interval < 60 ? (double)r->interval : 5;
	run->deadline = ev_now(run->loop) + (double)life;
	ev_timer_init(&run->poll, poll_due, run->interval, 0.);
	run->poll.data = run;
	ev_timer_start(run->loop, &run->poll);
}

static void
code_exchanged(void *arg, const struct oauth2_reply *r)
{
	keep_refresh_token(arg, r);
}

/* ---- the loopback redirect (RFC 8252 7.3) ---- */

/* The value of NAME in the query string Q (form-decoded) into OUT. */
static int
query_get(const char *q, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name), o = 0;

	for (const char *p = q; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		if (strncmp(p, name, n) != 0 || p[n] != '=')
			continue;
		for (p += n + 1; *p && *p != '&' && *p != ' '; p++) {
			unsigned v;
			char c = *p;
			if (c == '+')
				c = ' ';
			else if (c == '%' && sscanf(p + 1, "%2x", &v) == 1 && p[1] && p[2]) {
				c = (char)v;
				p += 2;
			}
			if (o + 1 >= cap || c == '\0')
				return -1;
			out[o++] = c;
		}
		out[o] = '\0';
		return 0;
	}
	return -1;
}

static void
answer(int fd, const char *status, const char *text)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
	                 "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
	                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	                 status, strlen(text), text);

	(void)!write(fd, buf, (size_t)n);
}

/* Waits for the browser's GET /?code=...&state=... on LFD. Returns 0 with
 * the code, or -1 (state mismatch, an error from the provider, timeout). */
static int
wait_redirect(int lfd, const char *state, char *code, size_t cap)
{
	time_t end = time(NULL) + REDIRECT_WAIT;
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};

	for (;;) {
		char req[8192], got[128], err[128] = "no code";
		struct timeval tv = {10, 0};
		size_t n = 0;
		time_t left = end - time(NULL);
		int fd;

		if (left <= 0 || poll(&pfd, 1, (int)left * 1000) <= 0) {
			fail("no redirect came within %d s", REDIRECT_WAIT);
			return -1;
		}
		if ((fd = accept(lfd, NULL, NULL)) < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (n < sizeof(req) - 1) {
			ssize_t r = read(fd, req + n, sizeof(req) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			req[n] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[n] = '\0';
		if (strncmp(req, "GET /?", 6) != 0) {
			answer(fd, "404 Not Found", "postern: nothing here\n");
			close(fd);
			continue;
		}
		if (query_get(req + 6, "state", got, sizeof(got)) < 0 || strcmp(got, state) != 0) {
			answer(fd, "400 Bad Request",
			       "postern: the state does not match; ignored\n");
			close(fd);
			fail("a redirect with a wrong state came (not from this authorization)");
			return -1;
		}
		if (query_get(req + 6, "error", err, sizeof(err)) == 0 ||
		    query_get(req + 6, "code", code, cap) < 0) {
			answer(fd, "400 Bad Request", "postern: the authorization was refused\n");
			close(fd);
			fail("the provider refused the authorization: %s",
			     shown(err, got, sizeof(got)));
			return -1;
		}
		answer(fd, "200 OK",
		       "postern: authorization received; you may close this window.\n");
		OPENSSL_cleanse(req, sizeof(req));
		close(fd);
		return 0;
	}
}

/* Appends "&name=value" to the URL in BUF, value percent-encoded. */
static void
url_add(char *buf, size_t cap, const char *name, const char *value)
{
	size_t n = strlen(buf);

	n += (size_t)snprintf(buf + n, cap > n ? cap - n : 0, "%c%s=", strchr(buf, '?') ? '&' : '?',
	                      name);
	for (const unsigned char *p = (const unsigned char *)value; *p && n + 4 < cap; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p))
			buf[n++] = (char)*p;
		else
			n += (size_t)snprintf(buf + n, cap - n, "%%%02X", *p);
	}
	buf[n < cap ? n : cap - 1] = '\0';
}

static int
random_b64url(char *out, size_t cap, size_t nbytes)
{
	unsigned char raw[32];

	return nbytes <= sizeof(raw) && RAND_bytes(raw, (int)nbytes) == 1 &&
	                       oauth2_base64(raw, nbytes, out, cap, 1) > 0
	               ? 0
	               : -1;
}

static int
loopback_grant(struct run *run, const char *account)
{
	char state[32], verifier[64], challenge[64], redirect[64], code[2048], url[4096];
	unsigned char digest[SHA256_DIGEST_LENGTH];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = -1;

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
		fail("cannot listen on 127.0.0.1: %s", strerror(errno));
		goto out;
	}
	/* RFC 7636: a 256-bit verifier, S256 challenge; the state ties the
	 * redirect to this run. */
	if (random_b64url(state, sizeof(state), 16) < 0 ||
	    random_b64url(verifier, sizeof(verifier), 32) < 0) {
		fail("no random bytes");
		goto out;
	}
	SHA256((unsigned char *)verifier, strlen(verifier), digest);
	oauth2_base64(digest, sizeof(digest), challenge, sizeof(challenge), 1);
	snprintf(redirect, sizeof(redirect), "http://127.0.0.1:%u/", ntohs(sa.sin_port));
	snprintf(url, sizeof(url), "%s", run->prov->authorization_url);
	url_add(url, sizeof(url), "client_id", run->prov->client_id);
	url_add(url, sizeof(url), "response_type", "code");
	url_add(url, sizeof(url), "redirect_uri", redirect);
	url_add(url, sizeof(url), "scope", run->prov->scope);
	url_add(url, sizeof(url), "state", state);
	url_add(url, sizeof(url), "code_challenge", challenge);
	url_add(url, sizeof(url), "code_challenge_method", "S256");
	url_add(url, sizeof(url), "login_hint", account);
	if (run->prov->preset == OAUTH2_GOOGLE) { /* a refresh token, every time */
		url_add(url, sizeof(url), "access_type", "offline");
		url_add(url, sizeof(url), "prompt", "consent");
	}
	printf("postern: open this URL in a browser on this machine and sign in as %s:\n%s\n",
	       account, url);
	printf("postern: waiting for the redirect to %s (at most %d s)\n", redirect, REDIRECT_WAIT);
	fflush(stdout);
	if (wait_redirect(lfd, state, code, sizeof(code)) < 0)
		goto out;
	if (!oauth2_code_exchange(run->client, &run->ep, code, redirect, verifier, code_exchanged,
	                          run)) {
		fail("cannot start a token request");
		goto out;
	}
	ev_run(run->loop, 0);
	rc = run->ok ? 0 : -1;
out:
	OPENSSL_cleanse(code, sizeof(code));
	OPENSSL_cleanse(verifier, sizeof(verifier));
	if (lfd >= 0)
		close(lfd);
	return rc;
}

static int
device_grant(struct run *run)
{
	if (!oauth2_device_start(run->client, &run->ep, run->prov->device_url, run->prov->scope,
	                         device_started, run)) {
		fail("cannot start a request");
		return -1;
	}
	ev_run(run->loop, 0);
	ev_timer_stop(run->loop, &run->poll);
	return run->ok ? 0 : -1;
}

/* TOKEN_DIR and the directories above it that are missing, mode 0700,
 * given to the daemon's user when RUN->give. */
static int
make_dirs(const struct run *run, const char *dir)
{
	char path[4096];
	size_t n = strlen(dir);

	if (n >= sizeof(path))
		return -1;
	memcpy(path, dir, n + 1);
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0700) == 0) {
			if (run->give && chown(path, run->uid, run->gid) < 0)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		*p = c;
		if (c == '\0')
			return 0;
	}
}

/* A token file written by root for a daemon that runs as `user`. */
static int
give_file(const struct run *run, const char *path)
{
	if (run->give && chown(path, run->uid, run->gid) < 0) {
		fail("cannot give %s to uid %d: %s", path, (int)run->uid, strerror(errno));
		return -1;
	}
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: postern [-c FILE] oauth2-authorize [--loopback] PROVIDER ACCOUNT\n"
	                "       postern [-c FILE] oauth2-check PROVIDER ACCOUNT\n");
}

static void
refreshed(void *arg, const struct oauth2_reply *r)
{
	struct run *run = arg;
	char detail[sizeof(r->detail)];

	if (r->result == OAUTH2_OK) {
		snprintf(run->refresh, sizeof(run->refresh), "%s", r->refresh_token);
		run->expires_in = r->expires_in;
		run->ok = true;
	} else if (r->result == OAUTH2_PERMANENT) {
		fail("the provider refused the refresh token (%s): authorize the account again "
		     "with "
		     "oauth2-authorize",
		     shown(r->detail, detail, sizeof(detail)));
	} else {
		fail("token request failed: %s (temporary: try again later)",
		     shown(r->detail, detail, sizeof(detail)));
	}
	ev_break(run->loop, EVBREAK_ALL);
}

/* oauth2-check: what a login will do, once: decrypt the stored refresh
 * token, get an access token, store a rotated refresh token. */
static int
check(struct run *run, const char *path, const char *account, const char *pw)
{
	char *token = NULL, err[512];
	size_t len = 0;
	enum oauth2_store_result st;
	int rc = -1;

	st = oauth2_store_read(path, account, pw, strlen(pw), &token, &len, err, sizeof(err));
	if (st != OAUTH2_STORE_OK) {
		fail("%s%s", err,
		     st == OAUTH2_STORE_NOT_FOUND ? " (run oauth2-authorize first)" : "");
		return -1;
	}
	if (!oauth2_refresh(run->client, &run->ep, token, refreshed, run)) {
		fail("cannot start a token request");
		goto out;
	}
	ev_run(run->loop, 0);
	if (!run->ok)
		goto out;
	if (run->refresh[0] && strcmp(run->refresh, token) != 0 &&
	    oauth2_store_write(path, account, pw, strlen(pw), run->refresh, strlen(run->refresh), 0,
	                       err, sizeof(err)) != OAUTH2_STORE_OK) {
		fail("the provider rotated the refresh token but it cannot be stored: %s", err);
		goto out;
	}
	if (run->refresh[0] && give_file(run, path) < 0)
		goto out;
	printf("postern: %s: the provider issued an access token valid for %lld s%s\n", account,
	       run->expires_in, run->refresh[0] ? "; the rotated refresh token is stored" : "");
	rc = 0;
out:
	oauth2_secret_free(token, len);
	return rc;
}

bool
oauth2_is_command(const char *word)
{
	return strcmp(word, "oauth2-authorize") == 0 || strcmp(word, "oauth2-check") == 0;
}

int
oauth2_command(const struct config *cfg, int argc, char **argv)
{
	struct run run = {0};
	char path[4096], pw[PASSWORD_MAX + 2], err[512];
	bool loopback = false, checking = strcmp(argv[0], "oauth2-check") == 0;
	const char *name, *account;
	int i = 1, rc = DAEMON_EXIT_RUNTIME;

	if (!checking && i < argc && strcmp(argv[i], "--loopback") == 0) {
		loopback = true;
		i++;
	}
	if (argc - i != 2) {
		usage();
		return DAEMON_EXIT_CONFIG;
	}
	name = argv[i];
	account = argv[i + 1];
	/* no core dump of a process holding the password and tokens */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (!(run.prov = config_oauth2_find(cfg->oauth2, name))) {
		fail("%s: no section [oauth2:%s]", cfg->path, name);
		return DAEMON_EXIT_CONFIG;
	}
	if (oauth2_store_path(run.prov->token_dir, account, path, sizeof(path)) < 0) {
		fail("invalid account name '%s' (letters, digits and . _ @ + -)", account);
		return DAEMON_EXIT_CONFIG;
	}
	if (!checking && (loopback ? !run.prov->authorization_url : !run.prov->device_url)) {
		fail("[oauth2:%s] has no %s", name,
		     loopback ? "authorization_url" : "device_authorization_url (use --loopback)");
		return DAEMON_EXIT_CONFIG;
	}
	if (geteuid() == 0 && cfg->user) {
		struct passwd *user = getpwnam(cfg->user);
		if (!user) {
			fail("no user '%s'", cfg->user);
			return DAEMON_EXIT_CONFIG;
		}
		run.give = true;
		run.uid = user->pw_uid;
		run.gid = user->pw_gid;
	}
	if (!checking && make_dirs(&run, run.prov->token_dir) < 0) {
		fail("cannot create %s: %s", run.prov->token_dir, strerror(errno));
		return DAEMON_EXIT_RUNTIME;
	}
	if (get_password(account, !checking, pw, sizeof(pw)) < 0)
		goto out;
	config_oauth2_endpoint(run.prov, &run.ep);
	if (!(run.loop = ev_loop_new(EVFLAG_AUTO)) || !(run.client = oauth2_client_new(run.loop))) {
		fail("cannot set up the HTTPS client");
		goto out;
	}
	if (checking) {
		rc = check(&run, path, account, pw) == 0 ? 0 : DAEMON_EXIT_RUNTIME;
		goto out;
	}
	if ((loopback ? loopback_grant(&run, account) : device_grant(&run)) < 0)
		goto out;
	if (oauth2_store_write(path, account, pw, strlen(pw), run.refresh, strlen(run.refresh), 0,
	                       err, sizeof(err)) != OAUTH2_STORE_OK) {
		fail("%s", err);
		goto out;
	}
	if (give_file(&run, path) < 0)
		goto out;
	printf("postern: %s authorized; its refresh token is stored encrypted in %s\n", account,
	       path);
	rc = 0;
out:
	OPENSSL_cleanse(pw, sizeof(pw));
	OPENSSL_cleanse(run.refresh, sizeof(run.refresh));
	OPENSSL_cleanse(run.device_code, sizeof(run.device_code));
	oauth2_client_free(run.client);
	if (run.loop)
		ev_loop_destroy(run.loop);
	return rc;
}
