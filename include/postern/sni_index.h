/* The names a service answers to, for SNI: exact names in one hash table,
 * wildcards ("*.example.com": one whole leftmost label, RFC 6125 6.4.3) in
 * a second keyed by the parent ("example.com"). A lookup costs one exact
 * and at most one wildcard probe sequence, whatever the number of names:
 * the hash is keyed per index (a client cannot aim at a long run of
 * slots) and the tables stay at most half full. Knows no TLS. */
#ifndef POSTERN_SNI_INDEX_H
#define POSTERN_SNI_INDEX_H

#include <stddef.h>

/* The longest DNS name in text, without the trailing dot (RFC 1035). */
#define SNI_NAME_MAX 253

/* NAME (LEN bytes) in the form the index keeps: lower case, one trailing
 * dot dropped, labels of 1 to 63 of [a-z0-9_-] (IDNA A-labels are kept as
 * given); with WILDCARD a whole leftmost "*" label is allowed. Writes it to
 * OUT (SNI_NAME_MAX + 1 bytes) and returns its length, or -1 when NAME is
 * not such a name (empty, too long, an empty label, another byte). */
int sni_name_normalize(const char *name, size_t len, char *out, int wildcard);

struct sni_index;

struct sni_index *sni_index_new(void);
void sni_index_free(struct sni_index *ix);

/* Adds NAME (exact or "*.parent", any case, a trailing dot allowed) with
 * VALUE (not NULL). Returns 0 when added, 1 when the name was there already (the
 * first value stays), -1 when NAME is not a name the index takes (see
 * sni_name_normalize; "*.com" too: a wildcard needs a parent of two labels
 * or more), -2 when out of memory. */
int sni_index_add(struct sni_index *ix, const char *name, size_t len, void *value);

/* The value for the name a client sent: its exact entry, else the wildcard
 * of its parent, else NULL (also for anything that is not a name: a
 * client's "*" is a character, never a wildcard). */
void *sni_index_find(struct sni_index *ix, const char *name, size_t len);

/* Entries (exact and wildcard) held. */
size_t sni_index_count(const struct sni_index *ix);

/* Slots inspected by every sni_index_find so far: how tests see the cost
 * of a lookup without timing it. */
unsigned long long sni_index_probes(const struct sni_index *ix);

#endif
