/* Linear probing with backward-shift deletion (no tombstones). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <postern/cert_map.h>

struct entry {
	char *key;
	void *value;
	size_t hash; /* compared before the key: paths share long prefixes */
};

struct cert_map {
	struct entry *e;
	size_t cap, n;
};

static size_t
hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33; /* every bit of the key reaches the low bits taken */
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h;
}

struct cert_map *
cert_map_new(void)
{
	return calloc(1, sizeof(struct cert_map));
}

void
cert_map_free(struct cert_map *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->cap; i++)
		free(m->e[i].key);
	free(m->e);
	free(m);
}

static struct entry *
slot_of(const struct cert_map *m, const char *key, size_t h)
{
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1))
		if (m->e[i].key == NULL || (m->e[i].hash == h && strcmp(m->e[i].key, key) == 0))
			return &m->e[i];
}

static struct entry *
slot(const struct cert_map *m, const char *key)
{
	return slot_of(m, key, hash(key));
}

void *
cert_map_get(const struct cert_map *m, const char *key)
{
	return m->n ? slot(m, key)->value : NULL;
}

static int
grow(struct cert_map *m)
{
	struct cert_map bigger = {calloc(m->cap ? m->cap * 2 : 16, sizeof(struct entry)),
	                          m->cap ? m->cap * 2 : 16, m->n};

	if (bigger.e == NULL)
		return -1;
	for (size_t i = 0; i < m->cap; i++)
		if (m->e[i].key)
			*slot_of(&bigger, m->e[i].key, m->e[i].hash) = m->e[i];
	free(m->e);
	*m = bigger;
	return 0;
}

int
cert_map_put(struct cert_map *m, const char *key, void *value)
{
	struct entry *e;

	if ((m->n + 1) * 2 > m->cap && grow(m) < 0)
		return -1;
	size_t h = hash(key);
	e = slot_of(m, key, h);
	if (e->key == NULL) {
		if ((e->key = strdup(key)) == NULL)
			return -1;
		e->hash = h;
		m->n++;
	}
	e->value = value;
	return 0;
}

void
cert_map_del(struct cert_map *m, const char *key)
{
	size_t mask = m->cap - 1, i, j;
	struct entry *e;

	if (m->n == 0 || (e = slot(m, key))->key == NULL)
		return;
	free(e->key);
	i = (size_t)(e - m->e);
	m->e[i] = (struct entry){0};
	m->n--;
	/* Move back each later entry of the run that may sit in the hole. */
	for (j = (i + 1) & mask; m->e[j].key; j = (j + 1) & mask) {
		size_t home = m->e[j].hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->e[i] = m->e[j];
			m->e[j] = (struct entry){0};
			i = j;
		}
	}
}

void
cert_map_each(const struct cert_map *m, void (*fn)(void *arg, const char *key, void *value),
              void *arg)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->e[i].key)
			fn(arg, m->e[i].key, m->e[i].value);
}

size_t
cert_map_count(const struct cert_map *m)
{
	return m->n;
}
