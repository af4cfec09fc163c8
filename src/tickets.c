/* Session tickets under postern's own keys instead of OpenSSL's per-context
 * random one: a context made on reload, or for another certificate, must
 * resume what an earlier one issued, and a fleet needs keys it shares. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <postern/tickets.h>

#define KEY_FILE_SIZE 80
#define ROTATE_SECS (24 * 3600)

struct ticket_key {
	unsigned char name[16], hmac[32], aes[32];
};

struct ticket_keys {
	size_t n;
	struct ticket_key key[];
};

static const struct ticket_keys *in_use; /* from files; NULL: random */
/* The random keys come from a secret made once, before workers are forked,
 * and replaced by a one-way function of itself each day (the old one is
 * wiped): every worker computes the same key for the same day without
 * talking to the others, and what is in memory today cannot give back the
 * keys of tickets older than yesterday. */
static unsigned char seed[32]; /* the secret of seed_day */
static long seed_day;
static int seeded;
static struct {
	struct ticket_key key[2]; /* today's, yesterday's */
	size_t n;
	long day;
} daily = {.day = -1};
static EVP_CIPHER *aes; /* fetched once, not per ticket */

struct ticket_keys *
tickets_load(char *const *paths, size_t n, char *err, size_t errlen, size_t *bad)
{
	struct ticket_keys *k = calloc(1, sizeof(*k) + n * sizeof(k->key[0]));
	unsigned char buf[KEY_FILE_SIZE + 1];

	if (k == NULL) {
		snprintf(err, errlen, "out of memory");
		*bad = 0;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		FILE *f = fopen(paths[i], "rb");
		size_t got = f ? fread(buf, 1, sizeof(buf), f) : 0;
		if (f == NULL || ferror(f) || got != KEY_FILE_SIZE) {
			if (f == NULL)
				snprintf(err, errlen, "cannot read %s: %s", paths[i],
				         strerror(errno));
			else
				snprintf(err, errlen,
				         "%s: a ticket key file must hold exactly %d bytes "
				         "(e.g. openssl rand 80 > FILE)",
				         paths[i], KEY_FILE_SIZE);
			if (f)
				fclose(f);
			OPENSSL_cleanse(buf, sizeof(buf));
			tickets_free(k);
			*bad = i;
			return NULL;
		}
		fclose(f);
		memcpy(k->key[i].name, buf, 16);
		memcpy(k->key[i].hmac, buf + 16, 32);
		memcpy(k->key[i].aes, buf + 48, 32);
		OPENSSL_cleanse(buf, sizeof(buf));
		k->n++;
	}
	return k;
}

void
tickets_free(struct ticket_keys *k)
{
	if (k == NULL)
		return;
	OPENSSL_cleanse(k->key, k->n * sizeof(k->key[0]));
	free(k);
}

void
tickets_use(const struct ticket_keys *k)
{
	in_use = k && k->n > 0 ? k : NULL;
}

static time_t (*clock_fn)(time_t *) = time;

void
tickets_set_clock(time_t (*fn)(time_t *))
{
	clock_fn = fn ? fn : time;
}

static long
today(void)
{
	return (long)(clock_fn(NULL) / ROTATE_SECS);
}

int
tickets_init(void)
{
	if (seeded)
		return 0;
	if (RAND_priv_bytes(seed, sizeof(seed)) != 1)
		return -1;
	seed_day = today();
	seeded = 1;
	return 0;
}

static int
hmac_seed(const char *label, unsigned char out[32])
{
	size_t len;

	return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, seed, sizeof(seed),
	                 (const unsigned char *)label, strlen(label), out, 32, &len) == NULL
	               ? -1
	               : 0;
}

/* The key of seed_day: HMAC-SHA256(seed, label), three blocks cut to size. */
static int
derive(struct ticket_key *k)
{
	static const char *const labels[3] = {"postern ticket key 0", "postern ticket key 1",
	                                      "postern ticket key 2"};
	unsigned char out[3 * 32];
	int rc = 0;

	for (int i = 0; i < 3 && rc == 0; i++)
		rc = hmac_seed(labels[i], out + 32 * i);
	if (rc == 0) {
		memcpy(k->name, out, 16);
		memcpy(k->hmac, out + 16, 32);
		memcpy(k->aes, out + 48, 32);
	}
	OPENSSL_cleanse(out, sizeof(out));
	return rc;
}

static int
ratchet(void)
{
	unsigned char next[32];

	if (hmac_seed("postern ticket next day", next) < 0)
		return -1;
	memcpy(seed, next, sizeof(seed));
	OPENSSL_cleanse(next, sizeof(next));
	seed_day++;
	return 0;
}

/* Brings the keys to DAY: today's encrypts, yesterday's still decrypts
 * (longer than any ticket lives). A clock gone back keeps the keys. */
static int
refresh(long day)
{
	if (tickets_init() < 0)
		return -1;
	if (day == daily.day || day < seed_day)
		return daily.day < 0 ? -1 : 0;
	daily.n = 1;
	while (seed_day < day) {
		if (seed_day == day - 1) {
			if (derive(&daily.key[1]) < 0)
				return -1;
			daily.n = 2;
		}
		if (ratchet() < 0)
			return -1;
	}
	if (derive(&daily.key[0]) < 0)
		return -1;
	daily.day = day;
	return 0;
}

void
tickets_tick(void)
{
	(void)refresh(today());
}

void
tickets_wipe(void)
{
	OPENSSL_cleanse(seed, sizeof(seed));
	OPENSSL_cleanse(&daily, sizeof(daily));
	daily.day = -1;
	seeded = 0;
}

static int
daily_keys(const struct ticket_key **keys, size_t *n)
{
	if (refresh(today()) < 0)
		return -1;
	*keys = daily.key;
	*n = daily.n;
	return 0;
}

static int
init_hmac(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
	OSSL_PARAM params[] = {
	        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
	        OSSL_PARAM_construct_end(),
	};

	return EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket callback: 1 ticket handled, 2 handled and a new one is
 * to be issued, 0 unknown key (full handshake), -1 error. A new ticket is
 * wanted after a TLS 1.2 resumption under an older key, and after every
 * TLS 1.3 resumption: a TLS 1.3 client uses a ticket once, and without a
 * fresh one its next connection would be a full handshake. */
static int
ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
          EVP_MAC_CTX *hctx, int enc)
{
	const struct ticket_key *keys;
	size_t n;

	if (in_use) {
		keys = in_use->key;
		n = in_use->n;
	} else if (daily_keys(&keys, &n) < 0) {
		return -1;
	}
	if (aes == NULL && (aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) == NULL)
		return -1;
	if (enc) {
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) != 1 ||
		    EVP_EncryptInit_ex(cctx, aes, NULL, keys[0].aes, iv) != 1 ||
		    init_hmac(hctx, &keys[0]) < 0)
			return -1;
		memcpy(name, keys[0].name, 16);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (memcmp(name, keys[i].name, 16) != 0)
			continue;
		if (init_hmac(hctx, &keys[i]) < 0 ||
		    EVP_DecryptInit_ex(cctx, aes, NULL, keys[i].aes, iv) != 1)
			return -1;
		return i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
	}
	return 0;
}

void
tickets_attach(SSL_CTX *ctx)
{
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
}
