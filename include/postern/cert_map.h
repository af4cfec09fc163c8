/* A small map from strings to pointers (open addressing, at most half
 * full), for the certificate cache keyed by file and the grouping of
 * certificates by their set of names. Keys are copied. */
#ifndef POSTERN_CERT_MAP_H
#define POSTERN_CERT_MAP_H

#include <stddef.h>

struct cert_map;

struct cert_map *cert_map_new(void);
/* Frees the map and its keys, not the values. */
void cert_map_free(struct cert_map *m);

/* The value of KEY, or NULL. */
void *cert_map_get(const struct cert_map *m, const char *key);
/* Sets KEY to VALUE (not NULL), replacing any value. -1 when out of memory. */
int cert_map_put(struct cert_map *m, const char *key, void *value);
/* Removes KEY if present. */
void cert_map_del(struct cert_map *m, const char *key);

/* Calls FN for each entry; FN may not change the map. */
void cert_map_each(const struct cert_map *m, void (*fn)(void *arg, const char *key, void *value),
                   void *arg);
size_t cert_map_count(const struct cert_map *m);

#endif
