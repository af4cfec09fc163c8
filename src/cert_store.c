/* Loading certificate pairs, cached by file; see include/postern/cert_store.h. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
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

static int
file_sig(const char *path, struct file_sig *s)
{
	struct stat st;

	if (path == NULL) {
		memset(s, 0, sizeof(*s));
		return 0;
	}
	if (stat(path, &st) < 0)
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

/* The one copy of intermediate X (taking over X's reference). */
static X509 *
intern(X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char hex[2 * 20 + 1];
	X509 *have;

	if ((interned == NULL && (interned = sni_index_new()) == NULL) ||
	    X509_digest(x, EVP_sha256(), md, &len) != 1 || len < 20)
		return x;
	for (int i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if ((have = sni_index_find(interned, hex, 40)) != NULL) {
		X509_free(x);
		X509_up_ref(have);
		return have;
	}
	if (sni_index_add(interned, hex, 40, x) == 0)
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

/* The leaf first, then each intermediate; OpenSSL skips the other PEM
 * blocks (a key in a combined file). */
static int
read_chain(struct cert_pair *p, const char *path, char *why, size_t whylen)
{
	BIO *b = open_file(path, why, whylen);
	X509 *x;

	if (b == NULL)
		return -1;
	p->leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (p->leaf == NULL) {
		snprintf(why, whylen, "no certificate in the file");
		BIO_free(b);
		ERR_clear_error();
		return -1;
	}
	p->chain = sk_X509_new_null();
	while (p->chain && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(p->chain, intern(x)))
			X509_free(x);
	ERR_clear_error(); /* the end of the file */
	BIO_free(b);
	return p->chain ? 0 : -1;
}

static int
read_key(struct cert_pair *p, const char *path, char *why, size_t whylen, int *key_fault)
{
	*key_fault = 1;
	BIO *b = open_file(path, why, whylen);

	if (b == NULL)
		return -1;
	p->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	if (p->key == NULL) {
		snprintf(why, whylen, "no private key in the file");
		return -1;
	}
	if (X509_check_private_key(p->leaf, p->key) != 1) {
		ERR_clear_error();
		snprintf(why, whylen, "the private key does not match the certificate");
		return -1;
	}
	return 0;
}

static struct cert_pair *
read_pair(const char *cert, const char *key, char *why, size_t whylen, int *key_fault)
{
	struct cert_pair *p = calloc(1, sizeof(*p));
	const ASN1_TIME *end;
	struct tm tm;

	if (p == NULL || (p->file = strdup(cert)) == NULL) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	p->refs = 1;
	if (read_chain(p, cert, why, whylen) < 0 ||
	    read_key(p, key ? key : cert, why, whylen, key_fault) < 0)
		goto fail;
	*key_fault = 0;
	end = X509_get0_notAfter(p->leaf);
	if (end == NULL || ASN1_TIME_to_tm(end, &tm) != 1) {
		snprintf(why, whylen, "the certificate has no valid end date");
		goto fail;
	}
	p->not_after = timegm(&tm);
	read_names(p);
	return p;
fail:
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
	char *id;
	size_t len = strlen(cert) + (key ? strlen(key) : 0) + 2;

	*key_fault = 0;
	if (file_sig(cert, &cs) < 0 || (*key_fault = file_sig(key, &ks) < 0)) {
		snprintf(why, whylen, "cannot read: %s", strerror(errno));
		return NULL;
	}
	if ((id = malloc(len)) == NULL || (cache == NULL && (cache = cert_map_new()) == NULL)) {
		free(id);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	snprintf(id, len, "%s\n%s", cert, key ? key : "");
	c = cert_map_get(cache, id);
	if (c && same_sig(&c->cert, &cs) && same_sig(&c->key, &ks)) {
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
	free(id);
	return p;
}

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
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n > m && strcmp(s + n - m, suf) == 0;
}

int
cert_dir_each(const char *dir, int (*fn)(void *arg, const char *cert, const char *key), void *arg,
              char *why, size_t whylen)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL, cert[4096], key[4096];
	size_t n = 0, cap = 0;
	int rc = 0;

	if (d == NULL) {
		snprintf(why, whylen, "cannot read: %s", strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    !(has_suffix(de->d_name, ".pem") || has_suffix(de->d_name, ".key")))
			continue;
		if (n == cap) {
			char **v = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*v));
			if (v == NULL)
				break;
			names = v;
		}
		if ((names[n] = strdup(de->d_name)) != NULL)
			n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n && rc == 0; i++) {
		size_t l = strlen(names[i]);
		if (!has_suffix(names[i], ".pem"))
			continue;
		/* NAME.key, if listed, sorts right after NAME.pem's stem: look it up */
		char want[1024], *k = want;
		snprintf(want, sizeof(want), "%.*s.key", (int)(l - 4), names[i]);
		int paired = bsearch(&k, names, n, sizeof(*names), by_name) != NULL;
		snprintf(cert, sizeof(cert), "%s/%s", dir, names[i]);
		snprintf(key, sizeof(key), "%s/%s", dir, want);
		rc = fn(arg, cert, paired ? key : NULL);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}
