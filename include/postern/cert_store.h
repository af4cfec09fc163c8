/* Certificate and key files as loaded pairs: the leaf, its key, its chain
 * (identical intermediates held once, whichever files repeat them), its
 * names and expiry. Each pair read is cached by file, and read again only
 * when a file's inode, size or mtime changed: a reload among 100 000
 * certificates re-reads the few that changed. Knows no configuration. */
#ifndef POSTERN_CERT_STORE_H
#define POSTERN_CERT_STORE_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

#define CERT_DIGEST_LEN 32 /* SHA-256 */

struct cert_pair {
	X509 *leaf;
	EVP_PKEY *key;
	int key_type; /* EVP_PKEY_get_base_id(key), asked once: each call searches tables */
	STACK_OF(X509) * chain; /* the intermediates, shared */
	time_t not_after;
	char *file;   /* the certificate's file, for messages */
	char **names; /* normalised DNS subjectAltNames, else the subject CN */
	size_t nnames;
	char *names_key; /* the names sorted, joined by spaces: pairs alike share it */
	/* The certificates served: the leaf's and the chain's DER as read,
	 * each framed by its length. What a session binds to, not the file's
	 * path: the same certificates bind alike from any file. */
	unsigned char digest[CERT_DIGEST_LEN];
	int refs;
};

/* The pair from the chain file CERT and the key file KEY (NULL: the key is
 * in CERT, HAProxy's combined file): a new reference, from the cache when
 * neither file changed. NULL with the reason in WHY (a file unreadable, no
 * certificate, no key, a key of another certificate), and *KEY_FAULT set
 * when the fault is the key's (its file, or a key of another certificate). */
struct cert_pair *cert_pair_load(const char *cert, const char *key, char *why, size_t whylen,
                                 int *key_fault);
struct cert_pair *cert_pair_ref(struct cert_pair *p);
void cert_pair_unref(struct cert_pair *p);

/* Calls FN for each pair of files in DIR, in the order of their names:
 * NAME.pem with NAME.key beside it, else NAME.pem alone (combined). Names
 * starting with a dot are skipped (editors' and tools' temporary files).
 * -1 with the reason in WHY when DIR cannot be read (or memory runs out);
 * else what FN returned last if it stopped the walk by returning non-zero,
 * else 0. DIR's listing is kept until the next walk of DIR (or until no
 * pair is cached), which sorts it again only if readdir's names changed. */
int cert_dir_each(const char *dir, int (*fn)(void *arg, const char *cert, const char *key),
                  void *arg, char *why, size_t whylen);

/* Drops cached pairs that nothing uses any longer (files removed, or
 * replaced and reloaded). */
void cert_store_sweep(void);

#endif
