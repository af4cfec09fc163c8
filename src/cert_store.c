/* Loading certificate pairs, cached by file; see include/postern/cert_store.h. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <postern/cert_map.h>
#include <postern/cert_store.h>
#include <postern/sni_index.h>

/* What says a file is the one read before. */
struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct cached {
	struct file_sig cert, key;
	struct cert_pair *pair;
};

static struct cert_map *cache;     /* "CERT\nKEY" -> struct cached */
static struct sni_index *interned; /* digest of an intermediate (hex) -> X509 */

/* The directory cert_dir_each is walking: the files of its pairs are
 * checked relative to it, which spares the kernel a walk of the whole path
 * for each of 100 000 files (a third of a reload's time). */
static struct {
	int fd; /* -1: none */
	const char *path;
	size_t len;
} walking = {-1, NULL, 0};

static int
file_sig(const char *path, struct file_sig *s)
{
	struct stat st;
	int r;

	if (path == NULL) {
		memset(s, 0, sizeof(*s));
		return 0;
	}
	if (walking.fd >= 0 && strncmp(path, walking.path, walking.len) == 0 &&
	    path[walking.len] == '/' && strchr(path + walking.len + 1, '/') == NULL)
		r = fstatat(walking.fd, path + walking.len + 1, &st, 0);
	else
		r = stat(path, &st);
	if (r < 0)
		return -1;
	*s = (struct file_sig){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
	return 0;
}

static int
same_sig(const struct file_sig *a, const struct file_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* The one copy of the intermediate whose DER is DER: parsed only the first
 * time (parsing a certificate makes an OpenSSL 3.0 decoder for its public
 * key, which costs more than all the rest of loading a file). */
static X509 *
intern(const unsigned char *der, long len)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char hex[2 * 20 + 1];
	const unsigned char *q = der;
	X509 *x;

	if (interned == NULL && (interned = sni_index_new()) == NULL)
		return d2i_X509(NULL, &q, len);
	SHA256(der, (size_t)len, md);
	for (int i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if ((x = sni_index_find(interned, hex, 40)) != NULL) {
		X509_up_ref(x);
		return x;
	}
	if ((x = d2i_X509(NULL, &q, len)) != NULL && sni_index_add(interned, hex, 40, x) == 0)
		X509_up_ref(x); /* the table's own reference */
	return x;
}

static void
add_name(struct cert_pair *p, const char *name, size_t len)
{
	char norm[SNI_NAME_MAX + 1];
	int n = sni_name_normalize(name, len, norm, 1);
	char **v;

	if (n < 0 || (v = realloc(p->names, (p->nnames + 1) * sizeof(*v))) == NULL)
		return;
	p->names = v;
	if ((v[p->nnames] = strdup(norm)) != NULL)
		p->nnames++;
}

static int
by_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* P's names, sorted, without repeats, joined by spaces: equal for pairs
 * that serve the same names whatever their subjects. */
static char *
names_key(const struct cert_pair *p)
{
	char **v = malloc((p->nnames ? p->nnames : 1) * sizeof(*v)), *key, *w;
	size_t len = 1;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < p->nnames; i++) {
		v[i] = p->names[i];
		len += strlen(v[i]) + 1;
	}
	qsort(v, p->nnames, sizeof(*v), by_str);
	if ((w = key = malloc(len)) != NULL) {
		*w = '\0';
		for (size_t i = 0; i < p->nnames; i++) {
			if (i > 0 && strcmp(v[i], v[i - 1]) == 0)
				continue;
			w += sprintf(w, "%s%s", w == key ? "" : " ", v[i]);
		}
	}
	free(v);
	return key;
}

/* DNS subjectAltNames; the subject's CN only when there is no SAN. */
static void
read_names(struct cert_pair *p)
{
	GENERAL_NAMES *san = X509_get_ext_d2i(p->leaf, NID_subject_alt_name, NULL, NULL);

	if (san != NULL) {
		for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
			if (g->type == GEN_DNS)
				add_name(p, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
				         (size_t)ASN1_STRING_length(g->d.dNSName));
		}
		GENERAL_NAMES_free(san);
		return;
	}
	X509_NAME *subj = X509_get_subject_name(p->leaf);
	int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (i >= 0) {
		ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
		add_name(p, (const char *)ASN1_STRING_get0_data(cn),
		         (size_t)ASN1_STRING_length(cn));
	}
}

static void
pair_free(struct cert_pair *p)
{
	X509_free(p->leaf);
	EVP_PKEY_free(p->key);
	sk_X509_pop_free(p->chain, X509_free);
	for (size_t i = 0; i < p->nnames; i++)
		free(p->names[i]);
	free(p->names);
	free(p->names_key);
	free(p->file);
	free(p);
}

static BIO *
open_file(const char *path, char *why, size_t whylen)
{
	BIO *b = BIO_new_file(path, "r");

	if (b == NULL) {
		snprintf(why, whylen, "cannot read: %s", strerror(errno ? errno : EIO));
		ERR_clear_error();
	}
	return b;
}

/* The key types of PEM keys, each with a decoder made once: making an
 * OpenSSL 3 decoder (what PEM_read_bio_PrivateKey does for every key)
 * searches every provider's decoders under locks and costs more than the
 * decoding itself, which with 100 000 keys is most of the start. */
static struct key_kind {
	const char *pem, *structure, *type;
	OSSL_DECODER_CTX *ctx;
	EVP_PKEY *out; /* where the decoder puts what it made */
} key_kinds[] = {
        {"PRIVATE KEY", "PrivateKeyInfo", NULL, NULL, NULL},
        {"EC PRIVATE KEY", "type-specific", "EC", NULL, NULL},
        {"RSA PRIVATE KEY", "type-specific", "RSA", NULL, NULL},
};

static EVP_PKEY *
decode_key(struct key_kind *k, const unsigned char *der, long len)
{
	const unsigned char *p = der;
	size_t left = (size_t)len;
	EVP_PKEY *key;

	if (k->ctx == NULL &&
	    (k->ctx = OSSL_DECODER_CTX_new_for_pkey(&k->out, "DER", k->structure, k->type,
	                                            EVP_PKEY_KEYPAIR, NULL, NULL)) == NULL)
		return NULL;
	k->out = NULL;
	if (OSSL_DECODER_from_data(k->ctx, &p, &left) != 1) {
		EVP_PKEY_free(k->out);
		k->out = NULL;
		return NULL;
	}
	key = k->out;
	k->out = NULL;
	return key;
}

/* Adds one certificate's DER, framed by its length, to the pair's digest. */
static int
digest_cert(EVP_MD_CTX *md, const unsigned char *der, long len)
{
	unsigned char n[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                      (unsigned char)(len >> 8), (unsigned char)len};

	return EVP_DigestUpdate(md, n, sizeof(n)) == 1 &&
	                       EVP_DigestUpdate(md, der, (size_t)len) == 1
	               ? 0
	               : -1;
}

/* Reads the PEM blocks of PATH: with CERTS (the pair's digest) the first
 * certificate is the leaf, the next ones its chain; with WANT_KEY the first
 * private key. Other blocks are passed over. */
static int
read_blocks(struct cert_pair *p, const char *path, EVP_MD_CTX *certs, bool want_key, char *why,
            size_t whylen)
{
	BIO *b = open_file(path, why, whylen);
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	long len = 0;
	int rc = 0;

	if (b == NULL)
		return -1;
	while (rc == 0 && PEM_read_bio(b, &name, &header, &der, &len) == 1) {
		if (certs && (strcmp(name, PEM_STRING_X509) == 0 ||
		              strcmp(name, PEM_STRING_X509_OLD) == 0)) {
			const unsigned char *q = der;
			X509 *x = p->leaf ? intern(der, len) : d2i_X509(NULL, &q, len);
			if (x == NULL || digest_cert(certs, der, len) < 0)
				X509_free(x), rc = -1;
			else if (p->leaf == NULL)
				p->leaf = x;
			else if (!sk_X509_push(p->chain, x))
				X509_free(x), rc = -1;
			if (rc < 0)
				snprintf(why, whylen, "a certificate that cannot be parsed");
		} else if (want_key && p->key == NULL) {
			for (size_t i = 0; i < sizeof(key_kinds) / sizeof(key_kinds[0]); i++)
				if (strcmp(name, key_kinds[i].pem) == 0 &&
				    (p->key = decode_key(&key_kinds[i], der, len)) == NULL) {
					snprintf(why, whylen,
					         "a private key that cannot be parsed");
					rc = -1;
				}
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_clear_free(der, (size_t)len);
	}
	BIO_free(b);
	ERR_clear_error(); /* the end of the file */
	return rc;
}

static struct cert_pair *
read_pair(const char *cert, const char *key, char *why, size_t whylen, int *key_fault)
{
	struct cert_pair *p = calloc(1, sizeof(*p));
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	const ASN1_TIME *end;
	struct tm tm;

	if (p == NULL || (p->file = strdup(cert)) == NULL || md == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	p->refs = 1;
	if ((p->chain = sk_X509_new_null()) == NULL) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	if (read_blocks(p, cert, md, key == NULL, why, whylen) < 0)
		goto fail;
	if (p->leaf == NULL) {
		snprintf(why, whylen, "no certificate in the file");
		goto fail;
	}
	if (EVP_DigestFinal_ex(md, p->digest, NULL) != 1) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	*key_fault = 1;
	if (key != NULL && read_blocks(p, key, NULL, true, why, whylen) < 0)
		goto fail;
	if (p->key == NULL) {
		snprintf(why, whylen, "no private key in the file");
		goto fail;
	}
	if (X509_check_private_key(p->leaf, p->key) != 1) {
		ERR_clear_error();
		snprintf(why, whylen, "the private key does not match the certificate");
		goto fail;
	}
	*key_fault = 0;
	p->key_type = EVP_PKEY_get_base_id(p->key);
	end = X509_get0_notAfter(p->leaf);
	if (end == NULL || ASN1_TIME_to_tm(end, &tm) != 1) {
		snprintf(why, whylen, "the certificate has no valid end date");
		goto fail;
	}
	p->not_after = timegm(&tm);
	read_names(p);
	if ((p->names_key = names_key(p)) == NULL) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	EVP_MD_CTX_free(md);
	return p;
fail:
	EVP_MD_CTX_free(md);
	if (p)
		pair_free(p);
	return NULL;
}

struct cert_pair *
cert_pair_ref(struct cert_pair *p)
{
	p->refs++;
	return p;
}

void
cert_pair_unref(struct cert_pair *p)
{
	if (p && --p->refs == 0)
		pair_free(p);
}

struct cert_pair *
cert_pair_load(const char *cert, const char *key, char *why, size_t whylen, int *key_fault)
{
	struct file_sig cs, ks;
	struct cached *c;
	char small[512], *id = small; /* on the stack: a reload looks up every file */
	size_t clen = strlen(cert), klen = key ? strlen(key) : 0, len = clen + klen + 2;

	*key_fault = 0;
	if (file_sig(cert, &cs) < 0 || (*key_fault = file_sig(key, &ks) < 0)) {
		snprintf(why, whylen, "cannot read: %s", strerror(errno));
		return NULL;
	}
	if ((len > sizeof(small) && (id = malloc(len)) == NULL) ||
	    (cache == NULL && (cache = cert_map_new()) == NULL)) {
		if (id != small)
			free(id);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	memcpy(id, cert, clen); /* "CERT\nKEY" */
	id[clen] = '\n';
	memcpy(id + clen + 1, key ? key : "", klen + 1);
	c = cert_map_get(cache, id);
	if (c && same_sig(&c->cert, &cs) && same_sig(&c->key, &ks)) {
		if (id != small)
			free(id);
		return cert_pair_ref(c->pair);
	}
	struct cert_pair *p = read_pair(cert, key, why, whylen, key_fault);
	if (p != NULL) {
		if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL &&
		    cert_map_put(cache, id, c) < 0) {
			free(c);
			c = NULL;
		}
		if (c != NULL) {
			cert_pair_unref(c->pair);
			*c = (struct cached){cs, ks, cert_pair_ref(p)};
		}
	}
	if (id != small)
		free(id);
	return p;
}

static void listings_drop(void);

static void
collect_unused(void *arg, const char *key, void *value)
{
	struct cached *c = value;
	struct cert_map *gone = arg;

	if (c->pair->refs == 1)
		cert_map_put(gone, key, c);
}

static void
drop(void *arg, const char *key, void *value)
{
	struct cached *c = value;

	(void)arg;
	cert_map_del(cache, key);
	cert_pair_unref(c->pair);
	free(c);
}

void
cert_store_sweep(void)
{
	struct cert_map *gone;

	if (cache == NULL || (gone = cert_map_new()) == NULL)
		return;
	cert_map_each(cache, collect_unused, gone);
	cert_map_each(gone, drop, NULL);
	cert_map_free(gone);
	if (cert_map_count(cache) == 0)
		listings_drop();
}

static int
has_suffix(const char *s, size_t n, const char *suf)
{
	size_t m = strlen(suf);

	return n > m && memcmp(s + n - m, suf, m) == 0;
}

/* The names of a directory's pairs as its last walk found them: readdir's
 * order (the text), and the order by name. Replacing a file keeps its
 * name and its place in readdir's order, so a reload that finds the same
 * text skips sorting 100 000 names again. One per directory walked; all
 * go when nothing is cached any longer. */
struct listing {
	struct listing *next;
	char *dir;
	char *text; /* the names, each ending in '\0' */
	size_t len;
	char **sorted; /* into text */
	size_t n;
	bool keys; /* some NAME.key among them */
};

static struct listing *listings;

static void
listing_free(struct listing *l)
{
	if (l == NULL)
		return;
	free(l->dir);
	free(l->text);
	free(l->sorted);
	free(l);
}

static void
listings_drop(void)
{
	while (listings) {
		struct listing *l = listings;
		listings = l->next;
		listing_free(l);
	}
}

/* The names (*.pem and *.key, not starting with a dot) of the open
 * directory D in readdir's order, as one text of *LEN bytes; *N of them,
 * *KEYS when one is a .key. NULL when out of memory. */
static char *
read_dir_names(DIR *d, size_t *len, size_t *n, bool *keys)
{
	size_t cap = 1 << 16;
	char *text = malloc(cap);
	struct dirent *de;

	*len = *n = 0;
	*keys = false;
	while (text && (de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		bool key = has_suffix(de->d_name, l, ".key");
		if (de->d_name[0] == '.' || !(key || has_suffix(de->d_name, l, ".pem")))
			continue;
		if (*len + l + 1 > cap) {
			char *t = realloc(text, cap *= 2);
			if (t == NULL) {
				free(text);
				return NULL;
			}
			text = t;
		}
		memcpy(text + *len, de->d_name, l + 1);
		*len += l + 1;
		++*n;
		*keys |= key;
	}
	return text;
}

/* DIR's listing: the one of its last walk when readdir gives the same
 * names in the same order, else a new one, sorted, that replaces it. */
static struct listing *
list_dir(const char *dir, DIR *d)
{
	struct listing **at = &listings, *l;
	size_t len, n;
	bool keys;
	char *text = read_dir_names(d, &len, &n, &keys);

	if (text == NULL)
		return NULL;
	while (*at && strcmp((*at)->dir, dir) != 0)
		at = &(*at)->next;
	if (*at && (*at)->len == len && memcmp((*at)->text, text, len) == 0) {
		free(text);
		return *at;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL || (l->dir = strdup(dir)) == NULL ||
	    (l->sorted = malloc((n ? n : 1) * sizeof(*l->sorted))) == NULL) {
		free(text);
		listing_free(l);
		return NULL;
	}
	l->text = text;
	l->len = len;
	l->n = n;
	l->keys = keys;
	for (size_t i = 0, off = 0; i < n; i++, off += strlen(text + off) + 1)
		l->sorted[i] = text + off;
	qsort(l->sorted, n, sizeof(*l->sorted), by_str);
	if (*at) {
		l->next = (*at)->next;
		listing_free(*at);
	}
	*at = l;
	return l;
}

int
cert_dir_each(const char *dir, int (*fn)(void *arg, const char *cert, const char *key), void *arg,
              char *why, size_t whylen)
{
	DIR *d = opendir(dir);
	struct listing *l;
	char cert[4096], key[4096];
	size_t dlen = strlen(dir);
	int rc = 0;

	if (d == NULL || dlen + 1 + NAME_MAX + 1 > sizeof(cert)) {
		snprintf(why, whylen, "cannot read: %s", strerror(d ? ENAMETOOLONG : errno));
		if (d)
			closedir(d);
		return -1;
	}
	if ((l = list_dir(dir, d)) == NULL) {
		closedir(d);
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	walking.fd = dirfd(d);
	walking.path = dir;
	walking.len = dlen;
	memcpy(cert, dir, dlen);
	cert[dlen] = '/';
	memcpy(key, cert, dlen + 1);
	for (size_t i = 0; i < l->n && rc == 0; i++) {
		const char *name = l->sorted[i];
		size_t len = strlen(name);
		if (!has_suffix(name, len, ".pem"))
			continue;
		memcpy(cert + dlen + 1, name, len + 1);
		memcpy(key + dlen + 1, name, len - 4);
		memcpy(key + dlen + 1 + len - 4, ".key", 5);
		/* NAME.key sorts just before NAME.pem unless a name falls between */
		const char *want = key + dlen + 1;
		int paired = l->keys &&
		             ((i > 0 && strcmp(l->sorted[i - 1], want) == 0) ||
		              bsearch(&want, l->sorted, l->n, sizeof(*l->sorted), by_str) != NULL);
		rc = fn(arg, cert, paired ? key : NULL);
	}
	walking.fd = -1;
	closedir(d);
	return rc;
}
