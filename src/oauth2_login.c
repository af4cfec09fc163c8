/* The login decision of backend_auth = oauth2 and the access token.
 *
 * Per provider section, a cache of accounts lives with the loaded
 * configuration (config_oauth2.h's slot): a reload starts with an empty
 * one, and the old one is wiped when the old configuration goes. Each
 * account keeps, once a password opened its token file:
 *
 *  - the refresh token, and the access token until a minute before it
 *    expires, so most logins send nothing to the provider;
 *  - a check of the password: SHA-256 of a random salt and the password.
 *    The file's key costs scrypt, ~0.1 s of CPU. It runs on a helper
 *    thread (oauth2_store_async.h), so that the loop serving every session
 *    of this process goes on meanwhile, and only once per account (and
 *    again only when the file changed, e.g. oauth2-authorize ran again):
 *    the logins of an account arriving while its file is opened wait for
 *    that one opening, and later logins compare the check, in
 *    microseconds. The check is no weaker than what memory already holds:
 *    the refresh token itself. Until an account's password is known, a
 *    wrong one pauses its scrypt for a second (its logins meanwhile get a
 *    temporary failure, not counted as failed: they were not checked), so
 *    a client retrying a wrong password in a loop cannot keep the thread
 *    busy either.
 *
 * Logins of one account share one token request: a rotating provider
 * invalidates a refresh token once used, so two requests with it would
 * make the second fail. A rotated token is stored again with the password
 * of the login that asked, while it is still at hand.
 *
 * For the same reason a token request, once sent, is never cancelled: the
 * provider may have rotated the token already, and its answer is then the
 * only copy of the new one. The request belongs to the process, not to
 * the session (which may time out or go) nor to the configuration (which
 * a reload replaces): its answer is stored whoever still waits for it, a
 * new configuration's login of the same account joins it rather than
 * sending the old token again, and the process waits for it before it
 * exits (oauth2_login_finish). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <postern/log.h>
#include <postern/oauth2_http.h>
#include <postern/oauth2_login.h>
#include <postern/oauth2_store.h>
#include <postern/oauth2_store_async.h>

/* An access token is renewed this long before it expires. */
#define RENEW_MARGIN 60.0
/* After a wrong password, the account's file is not opened again (scrypt)
 * for this long: its attempts get a temporary failure at once meanwhile. */
#define SCRYPT_PAUSE 1.0
#define WHO_MAX 112
#define PATH_MAX_LEN 4096

struct account {
	struct account *next;
	const struct oauth2_provider *p;
	char name[256];
	bool known; /* the password check and the refresh token are set */
	unsigned char salt[16], check[32];
	struct stat file;       /* the token file they came from */
	ev_tstamp scrypt_after; /* a wrong password was tried: no scrypt before */
	char *refresh;          /* secret */
	size_t refresh_len;
	char *access; /* secret; NULL: none usable */
	size_t access_len;
	ev_tstamp renew_at;
	struct refresh *req; /* the token request in flight */
	struct oauth2_login *waiters;
	/* the token file being opened off the loop, and the logins that wait
	 * for it (each with its password, checked once the file is open) */
	struct oauth2_open *opening;
	char opening_who[WHO_MAX];
	struct ev_loop *opening_loop;
	struct oauth2_login *openers;
};

/* A token request in flight and what its end needs, copied: it outlives
 * the login, the session and the configuration that started it. */
struct refresh {
	struct refresh *next;
	struct account *a; /* NULL once the account's configuration went */
	struct oauth2_request *req;
	char name[256], provider[64];
	char path[PATH_MAX_LEN];
	struct stat file; /* the token file the refresh token sent came from */
	char *sent;       /* secret: the refresh token sent */
	size_t sent_len;
	char *pass; /* secret: to store a rotated refresh token */
	size_t pass_len;
	struct metrics_svc *m;
	char who[WHO_MAX];
};

struct cache {
	struct account *accounts;
};

struct oauth2_login {
	struct oauth2_login *next;
	struct account *a;
	bool detached;  /* being answered: cancel only marks it */
	bool cancelled; /* ... and then it is not called */
	oauth2_login_cb *cb;
	void *arg;
	/* while the token file is opened (account's openers) */
	bool opener; /* its password opens the file */
	char *pass;  /* secret */
	size_t plen;
	char who[WHO_MAX];
	struct metrics_svc *m;
	struct ev_loop *loop;
};

/* One HTTP client per process, on the loop that serves the sessions. */
static struct oauth2_client *client;
static struct ev_loop *client_loop;
/* Every token request in flight in this process. */
static struct refresh *refreshes;

static void
secret_free(char **p, size_t *n)
{
	oauth2_secret_free(*p, *n);
	*p = NULL;
	*n = 0;
}

/* The account no longer trusts what it learnt (a refused token, a file
 * that changed): the next login opens the file again. */
static void
forget_password(struct account *a)
{
	secret_free(&a->refresh, &a->refresh_len);
	OPENSSL_cleanse(a->check, sizeof(a->check));
	a->known = false;
}

static void
forget(struct account *a)
{
	forget_password(a);
	secret_free(&a->access, &a->access_len);
}

static void
login_free(struct oauth2_login *l)
{
	secret_free(&l->pass, &l->plen);
	free(l);
}

static void
cache_free(void *arg)
{
	struct cache *c = arg;
	struct account *a, *next;

	for (a = c ? c->accounts : NULL; a; a = next) {
		next = a->next;
		/* Only sessions start logins, and they hold the configuration:
		 * none waits now. A request in flight goes on alone. */
		if (a->req)
			a->req->a = NULL;
		oauth2_open_cancel(a->opening);
		while (a->openers) {
			struct oauth2_login *l = a->openers;
			a->openers = l->next;
			login_free(l);
		}
		forget(a);
		free(a);
	}
	free(c);
}

/* The account NAME of P's cache, or NULL. The list is walked: it holds
 * only accounts whose token file existed when a login came (a name
 * without a file gets no entry, and loses its entry once its file is
 * gone), so its length is bounded by the files the administrator made,
 * not by the names clients try. */
static struct account *
account_find(const struct oauth2_provider *p, const char *name)
{
	struct cache *c = p->cache->cache;
	struct account *a;

	for (a = c ? c->accounts : NULL; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			return a;
	return NULL;
}

/* The account NAME of P's cache, made if need be: only once its token
 * file was found (see account_find). */
static struct account *
account_of(const struct oauth2_provider *p, const char *name)
{
	struct cache *c = p->cache->cache;
	struct account *a;

	if (c == NULL) {
		if (!(c = calloc(1, sizeof(*c))))
			return NULL;
		p->cache->cache = c;
		p->cache->free = cache_free;
	}
	if ((a = account_find(p, name)) != NULL)
		return a;
	if (!(a = calloc(1, sizeof(*a))))
		return NULL;
	a->p = p;
	strcpy(a->name, name);
	a->next = c->accounts;
	c->accounts = a;
	return a;
}

/* NAME's token file is gone: its account goes too, unless a token
 * request or an opening of the file still refers to it. */
static void
account_drop(const struct oauth2_provider *p, const char *name)
{
	struct cache *c = p->cache->cache;
	struct account **pp, *a;

	for (pp = c ? &c->accounts : NULL; pp && (a = *pp) != NULL; pp = &a->next)
		if (strcmp(a->name, name) == 0) {
			if (a->req || a->opening || a->waiters || a->openers)
				return;
			*pp = a->next;
			forget(a);
			free(a);
			return;
		}
}

size_t
oauth2_login_accounts(const struct oauth2_provider *p)
{
	const struct cache *c = p->cache->cache;
	size_t n = 0;

	for (const struct account *a = c ? c->accounts : NULL; a; a = a->next)
		n++;
	return n;
}

static void
password_check(const struct account *a, const char *pass, size_t plen, unsigned char out[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 32;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(ctx, a->salt, sizeof(a->salt)) ||
	    !EVP_DigestUpdate(ctx, pass, plen) || !EVP_DigestFinal_ex(ctx, out, &n))
		RAND_bytes(out, 32); /* matches nothing */
	EVP_MD_CTX_free(ctx);
}

static bool
same_file(const struct stat *x, const struct stat *y)
{
	return x->st_dev == y->st_dev && x->st_ino == y->st_ino && x->st_size == y->st_size &&
	       x->st_mtim.tv_sec == y->st_mtim.tv_sec && x->st_mtim.tv_nsec == y->st_mtim.tv_nsec;
}

/* What A learns from its token file, opened with PASS (scrypt: see the
 * file comment): R and, if OK, its refresh TOKEN (copied) and ST, the
 * file the token was read from (not what a stat before the read saw:
 * the file may have been replaced meanwhile). Returns OK, REFUSED or
 * TEMPORARY. */
static enum oauth2_login_result
learn_store(struct account *a, const struct stat *st, const char *who, const char *pass,
            size_t plen, enum oauth2_store_result r, const char *token, size_t len, const char *err)
{
	/* An access token outlives a rotated refresh token (another worker
	 * stored one): it is kept when the password opens the new file. */
	forget_password(a);
	if (r != OAUTH2_STORE_OK)
		secret_free(&a->access, &a->access_len);
	switch (r) {
	case OAUTH2_STORE_OK:
		break;
	case OAUTH2_STORE_BAD_PASSWORD:
		return OAUTH2_LOGIN_REFUSED;
	case OAUTH2_STORE_NOT_FOUND:
		log_session(
		        LOG_INFO, who,
		        "oauth2: account %s is not authorized: run 'postern oauth2-authorize %s "
		        "%s'",
		        a->name, a->p->name, a->name);
		return OAUTH2_LOGIN_REFUSED;
	default:
		log_session(LOG_ERR, who, "oauth2: token file of account %s: %s", a->name, err);
		return OAUTH2_LOGIN_TEMPORARY;
	}
	if (!(a->refresh = malloc(len + 1)) || RAND_bytes(a->salt, sizeof(a->salt)) != 1) {
		forget(a);
		return OAUTH2_LOGIN_TEMPORARY;
	}
	memcpy(a->refresh, token, len + 1);
	a->refresh_len = len;
	password_check(a, pass, plen, a->check);
	a->file = *st;
	a->known = true;
	return OAUTH2_LOGIN_OK;
}

/* Opens the token file on the loop: when the helper thread cannot run. */
static enum oauth2_login_result
open_store(struct account *a, const char *path, const char *who, const char *pass, size_t plen)
{
	char err[256], *token = NULL;
	size_t len = 0;
	struct stat st;
	enum oauth2_store_result r = oauth2_store_read_file(path, a->name, pass, plen, &token, &len,
	                                                    &st, err, sizeof(err));
	enum oauth2_login_result res = learn_store(a, &st, who, pass, plen, r, token, len, err);

	oauth2_secret_free(token, len);
	return res;
}

static bool
password_ok(const struct account *a, const char *pass, size_t plen)
{
	unsigned char check[32];
	bool ok;

	password_check(a, pass, plen, check);
	ok = CRYPTO_memcmp(check, a->check, sizeof(check)) == 0;
	OPENSSL_cleanse(check, sizeof(check));
	return ok;
}

/* Whether the token file is no longer the one RF's refresh token came
 * from; also, if GONE, when it was removed. */
static bool
file_replaced(const struct refresh *rf, bool gone)
{
	struct stat st;

	if (stat(rf->path, &st) < 0)
		return gone;
	return !same_file(&rf->file, &st);
}

/* A rotated refresh token: stored under the password of the login that
 * asked for it. Its scrypt (~0.1 s) runs on the loop, once per rotation
 * (at most once per access token's life). Returns false, storing nothing, when the
 * token file changed since the account read it: the administrator
 * authorized the account again (perhaps with a new password) or removed
 * it, and writing would undo that. */
static bool
store_rotated(struct refresh *rf, const char *token)
{
	char err[256];
	struct stat st;

	if (file_replaced(rf, true)) {
		log_session(LOG_INFO, rf->who,
		            "oauth2: the token file of account %s was replaced or removed "
		            "meanwhile: the rotated refresh token is not stored",
		            rf->name);
		return false;
	}
	if (oauth2_store_write(rf->path, rf->name, rf->pass, rf->pass_len, token, strlen(token), 0,
	                       err, sizeof(err)) == OAUTH2_STORE_OK) {
		if (stat(rf->path, &st) == 0)
			rf->file = st;
	} else {
		log_session(LOG_ERR, rf->who,
		            "oauth2: the rotated refresh token of account %s cannot be stored "
		            "(%s)%s",
		            rf->name, err, rf->a ? ": it lasts until postern stops" : "");
	}
	return true;
}

static void
answer_waiters(struct account *a, enum oauth2_login_result r)
{
	struct oauth2_login *l, *list = a->waiters;

	a->waiters = NULL;
	for (l = list; l; l = l->next)
		l->detached = true;
	while ((l = list) != NULL) {
		list = l->next;
		if (!l->cancelled)
			l->cb(l->arg, r, r == OAUTH2_LOGIN_OK ? a->access : NULL);
		free(l);
	}
}

static void
refresh_free(struct refresh *rf)
{
	struct refresh **pp;

	for (pp = &refreshes; *pp; pp = &(*pp)->next)
		if (*pp == rf) {
			*pp = rf->next;
			break;
		}
	if (rf->a)
		rf->a->req = NULL;
	if (rf->req)
		oauth2_cancel(rf->req);
	secret_free(&rf->sent, &rf->sent_len);
	secret_free(&rf->pass, &rf->pass_len);
	free(rf);
}

/* What account A learns from a successful token request: the access
 * token and, when STORED, the rotated refresh token (ROTATED, or NULL). */
static bool
learn(struct account *a, const struct refresh *rf, const struct oauth2_reply *reply,
      const char *rotated)
{
	size_t n = strlen(reply->access_token);
	double life = reply->expires_in > 0 ? (double)reply->expires_in : 3600.;
	char *copy;

	if (!(a->access = malloc(n + 1)))
		return false;
	memcpy(a->access, reply->access_token, n + 1);
	a->access_len = n;
	/* a short-lived token is renewed halfway instead */
	a->renew_at =
	        ev_now(client_loop) + (life > 2 * RENEW_MARGIN ? life - RENEW_MARGIN : life / 2);
	if (rotated && (copy = strdup(rotated)) != NULL) {
		secret_free(&a->refresh, &a->refresh_len);
		a->refresh = copy;
		a->refresh_len = strlen(copy);
		a->file = rf->file;
	}
	return true;
}

static void
refreshed(void *arg, const struct oauth2_reply *reply)
{
	struct refresh *rf = arg;
	struct account *a = rf->a;
	enum oauth2_login_result r = OAUTH2_LOGIN_TEMPORARY;
	enum metrics_oauth2 k = MO_TEMPORARY;
	const char *rotated = NULL;

	rf->req = NULL;
	if (a)
		secret_free(&a->access, &a->access_len);
	if (reply->result == OAUTH2_OK && reply->access_token[0]) {
		k = MO_OK;
		if (reply->refresh_token[0] && strcmp(reply->refresh_token, rf->sent) != 0)
			rotated = reply->refresh_token;
		if (rotated && !store_rotated(rf, rotated)) {
			/* The logins waiting were checked against the old file: they
			 * try again, against the new one (or none). */
			if (a)
				forget(a);
		} else if (!a || learn(a, rf, reply, rotated)) {
			log_session(LOG_INFO, rf->who,
			            "oauth2: account %s: access token valid for %lld s%s", rf->name,
			            reply->expires_in > 0 ? reply->expires_in : 3600LL,
			            rotated ? ", rotated refresh token stored" : "");
			r = OAUTH2_LOGIN_OK;
		}
	} else if (reply->result == OAUTH2_PERMANENT && file_replaced(rf, false)) {
		/* Another worker stored a rotated token (or oauth2-authorize ran)
		 * while this one used the old: the next login reads the new. */
		log_session(LOG_INFO, rf->who,
		            "oauth2: the refresh token of account %s was replaced meanwhile: the "
		            "next login uses the new one",
		            rf->name);
		if (a)
			forget(a);
		k = MO_REFUSED;
	} else if (reply->result == OAUTH2_PERMANENT) {
		log_session(LOG_WARNING, rf->who,
		            "oauth2: the provider refused the refresh token of account %s (%s): "
		            "authorize it again with 'postern oauth2-authorize %s %s'",
		            rf->name, reply->detail, rf->provider, rf->name);
		if (a)
			forget(a);
		r = OAUTH2_LOGIN_REVOKED;
		k = MO_REFUSED;
	} else {
		log_session(LOG_WARNING, rf->who, "oauth2: token request for account %s failed: %s",
		            rf->name,
		            reply->result == OAUTH2_OK ? "no access token" : reply->detail);
	}
	shared_add(&rf->m->oauth2_token_requests[k], 1);
	refresh_free(rf);
	if (a)
		answer_waiters(a, r);
}

/* The requests of another loop (this is a new process, forked with the
 * old one's state): never to end here. */
static void
drop_refreshes(void)
{
	while (refreshes) {
		refreshes->req = NULL; /* freed with the old client */
		refresh_free(refreshes);
	}
}

/* A request in flight for A's token file, started by a configuration
 * that has gone: A's login waits for it rather than sending the same
 * refresh token again. */
static bool
join_orphan(struct account *a, const char *path)
{
	struct refresh *rf;

	for (rf = refreshes; rf; rf = rf->next)
		if (!rf->a && strcmp(rf->path, path) == 0 && same_file(&rf->file, &a->file)) {
			rf->a = a;
			a->req = rf;
			return true;
		}
	return false;
}

static bool
start_refresh(struct account *a, const char *path, struct ev_loop *loop, struct metrics_svc *m,
              const char *who, const char *pass, size_t plen)
{
	struct oauth2_endpoint ep;
	struct refresh *rf;

	if (client_loop != loop) {
		if (client)
			oauth2_client_free(client);
		drop_refreshes();
		client = oauth2_client_new(loop);
		client_loop = client ? loop : NULL;
	}
	if (!client)
		return false;
	if (join_orphan(a, path))
		return true;
	if (!(rf = calloc(1, sizeof(*rf))))
		return false;
	rf->sent = strdup(a->refresh);
	rf->sent_len = rf->sent ? a->refresh_len : 0;
	rf->pass = malloc(plen + 1);
	if (!rf->sent || !rf->pass) {
		refresh_free(rf);
		return false;
	}
	memcpy(rf->pass, pass, plen);
	rf->pass_len = plen;
	snprintf(rf->name, sizeof(rf->name), "%s", a->name);
	snprintf(rf->provider, sizeof(rf->provider), "%s", a->p->name);
	snprintf(rf->path, sizeof(rf->path), "%s", path);
	snprintf(rf->who, sizeof(rf->who), "%s", who);
	rf->file = a->file;
	rf->m = m;
	config_oauth2_endpoint(a->p, &ep);
	if (!(rf->req = oauth2_refresh(client, &ep, rf->sent, refreshed, rf))) {
		refresh_free(rf);
		return false;
	}
	rf->a = a;
	a->req = rf;
	rf->next = refreshes;
	refreshes = rf;
	return true;
}

/* Told to stop at once ("stop now"): no token request is waited for. */
static bool stop_now;

void
oauth2_login_stop_now(void)
{
	stop_now = true;
}

static void
finish_late(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	*(bool *)w->data = true;
}

void
oauth2_login_finish(struct ev_loop *loop)
{
	ev_timer limit;
	bool late = false;
	int left = 0;

	if (refreshes && client_loop == loop && !stop_now) {
		ev_now_update(loop);
		ev_timer_init(&limit, finish_late, OAUTH2_FINISH_MAX, 0.);
		limit.data = &late;
		ev_timer_start(loop, &limit);
		while (refreshes && !late && !stop_now)
			ev_run(loop, EVRUN_ONCE);
		ev_timer_stop(loop, &limit);
	}
	if (client_loop == loop) {
		for (struct refresh *rf = refreshes; rf; rf = rf->next)
			left++;
		if (left)
			log_msg(LOG_WARNING,
			        "oauth2: stopping without the answer of %d token request(s): a "
			        "refresh token the provider rotated meanwhile is lost (if the "
			        "account's next login is refused, authorize it again)",
			        left);
		while (refreshes)
			refresh_free(refreshes);
	}
	oauth2_open_stop();
}

/* L, whose password matched A's: answered from the cache, or waiting
 * for the token request (then true: it is among A's waiters). */
static bool
wait_token(struct account *a, struct oauth2_login *l, const char *path, struct ev_loop *loop,
           struct metrics_svc *m, const char *who, const char *pass, size_t plen)
{
	if (a->access && ev_now(loop) < a->renew_at) {
		l->cb(l->arg, OAUTH2_LOGIN_OK, a->access);
		return false;
	}
	secret_free(&a->access, &a->access_len);
	if (!a->req && !start_refresh(a, path, loop, m, who, pass, plen)) {
		log_session(LOG_ERR, who, "oauth2: cannot start a token request");
		l->cb(l->arg, OAUTH2_LOGIN_TEMPORARY, NULL);
		return false;
	}
	l->next = a->waiters;
	a->waiters = l;
	return true;
}

/* A's token file is open (or not): each login that waited for it is
 * checked against it now. Only the login whose password was tried learns
 * that it is wrong; the others were not checked: a temporary failure. */
static void
opened(void *arg, const struct oauth2_opened *o)
{
	struct account *a = arg;
	struct oauth2_login *l, *list = a->openers;
	char path[PATH_MAX_LEN];
	enum oauth2_login_result r;

	a->opening = NULL;
	a->openers = NULL;
	r = learn_store(a, o->file, a->opening_who, o->password, o->password_len, o->result,
	                o->token, o->token_len, o->err);
	if (r == OAUTH2_LOGIN_REFUSED)
		a->scrypt_after = ev_now(a->opening_loop) + SCRYPT_PAUSE;
	if (oauth2_store_path(a->p->token_dir, a->name, path, sizeof(path)) < 0)
		path[0] = '\0';
	for (l = list; l; l = l->next)
		l->detached = true;
	while ((l = list) != NULL) {
		bool waits = false;

		list = l->next;
		if (l->cancelled)
			;
		else if (r != OAUTH2_LOGIN_OK)
			l->cb(l->arg,
			      o->result == OAUTH2_STORE_BAD_PASSWORD && !l->opener
			              ? OAUTH2_LOGIN_TEMPORARY
			              : r,
			      NULL);
		else if (!password_ok(a, l->pass, l->plen))
			l->cb(l->arg, OAUTH2_LOGIN_REFUSED, NULL);
		else
			waits = wait_token(a, l, path, l->loop, l->m, l->who, l->pass, l->plen);
		if (waits) {
			l->detached = false;
			secret_free(&l->pass, &l->plen);
		} else {
			login_free(l);
		}
	}
}

/* L waits for A's token file to be opened off the loop (with its
 * password, if no opening runs yet). False when it cannot. */
static bool
wait_open(struct account *a, struct oauth2_login *l, const char *path, struct ev_loop *loop,
          struct metrics_svc *m, const char *who, const char *pass, size_t plen)
{
	if (!(l->pass = malloc(plen + 1)))
		return false;
	memcpy(l->pass, pass, plen);
	l->plen = plen;
	snprintf(l->who, sizeof(l->who), "%s", who);
	l->m = m;
	l->loop = loop;
	if (!a->opening) {
		a->opening = oauth2_open_start(loop, path, a->name, pass, plen, opened, a);
		if (!a->opening)
			return false;
		a->opening_loop = loop;
		snprintf(a->opening_who, sizeof(a->opening_who), "%s", who);
		l->opener = true;
	}
	l->next = a->openers;
	a->openers = l;
	return true;
}

struct oauth2_login *
oauth2_login_start(struct ev_loop *loop, const struct oauth2_provider *p, struct metrics_svc *m,
                   const char *who, const char *user, size_t ulen, const char *pass, size_t plen,
                   oauth2_login_cb *cb, void *arg)
{
	char name[256], path[PATH_MAX_LEN];
	struct account *a;
	struct oauth2_login *l;
	struct stat st;
	enum oauth2_login_result r;

	if (ulen == 0 || ulen >= sizeof(name) || memchr(user, '\0', ulen))
		goto refused;
	memcpy(name, user, ulen);
	name[ulen] = '\0';
	if (!oauth2_store_account_ok(name) ||
	    oauth2_store_path(p->token_dir, name, path, sizeof(path)) < 0)
		goto refused;
	if (stat(path, &st) < 0) {
		if (errno != ENOENT) {
			log_session(LOG_ERR, who, "oauth2: token file of account %s: %s", name,
			            strerror(errno));
			goto temporary;
		}
		account_drop(p, name);
		log_session(LOG_INFO, who,
		            "oauth2: account %s is not authorized: run 'postern oauth2-authorize "
		            "%s %s'",
		            name, p->name, name);
		goto refused;
	}
	if (!(a = account_of(p, name)) || !(l = calloc(1, sizeof(*l))))
		goto temporary;
	l->a = a;
	l->cb = cb;
	l->arg = arg;
	if (a->known && (a->req || same_file(&a->file, &st))) {
		if (!password_ok(a, pass, plen)) {
			free(l);
			goto refused;
		}
	} else if (ev_now(loop) < a->scrypt_after) {
		/* Not checked: not a failed login of this client (fail2ban would
		 * ban the owner's address for a guesser's attempts). */
		free(l);
		goto temporary;
	} else if (!a->opening && oauth2_open_full()) {
		/* Not checked either: too many token files wait to be opened. */
		log_session(LOG_WARNING, who,
		            "oauth2: %d token files are waiting to be opened: the login of %s "
		            "fails for now",
		            OAUTH2_OPEN_MAX, name);
		free(l);
		goto temporary;
	} else if (wait_open(a, l, path, loop, m, who, pass, plen)) {
		return l;
	} else {
		/* no thread (or no memory): opened on the loop, as a last resort */
		secret_free(&l->pass, &l->plen);
		r = a->opening ? OAUTH2_LOGIN_TEMPORARY : open_store(a, path, who, pass, plen);
		if (r != OAUTH2_LOGIN_OK) {
			free(l);
			if (r == OAUTH2_LOGIN_REFUSED)
				a->scrypt_after = ev_now(loop) + SCRYPT_PAUSE;
			cb(arg, r, NULL);
			return NULL;
		}
	}
	secret_free(&l->pass, &l->plen);
	if (wait_token(a, l, path, loop, m, who, pass, plen))
		return l;
	free(l);
	return NULL;
refused:
	cb(arg, OAUTH2_LOGIN_REFUSED, NULL);
	return NULL;
temporary:
	cb(arg, OAUTH2_LOGIN_TEMPORARY, NULL);
	return NULL;
}

void
oauth2_login_cancel(struct oauth2_login *l)
{
	struct oauth2_login **pp;

	if (l == NULL)
		return;
	if (l->detached) {
		l->cancelled = true;
		return;
	}
	for (pp = &l->a->waiters; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			login_free(l);
			return;
		}
	for (pp = &l->a->openers; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	/* the opener left: the file is opened all the same, for the others */
	login_free(l);
}
