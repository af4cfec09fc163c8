/* Two open-addressing hash tables (linear probing, at most half full) of
 * normalised names; see include/postern/sni_index.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <postern/sni_index.h>

struct slot {
	uint64_t hash;
	char *name; /* NULL: empty */
	void *value;
};

struct table {
	struct slot *slot;
	size_t cap, n; /* cap: a power of two */
};

/* The names' text, in blocks that never move: 100 000 names are a few
 * allocations, not 100 000 (a reload builds a whole new index). */
struct block {
	struct block *next;
	size_t used, cap;
	char text[];
};

struct sni_index {
	struct table exact, wild;
	struct block *blocks;
	uint64_t seed;
	unsigned long long probes;
};

int
sni_name_normalize(const char *name, size_t len, char *out, int wildcard)
{
	size_t label = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > SNI_NAME_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
			out[i] = '.';
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		else if (c == '*') {
			/* only the whole first label */
			if (!wildcard || i != 0 || len < 2 || name[1] != '.')
				return -1;
		} else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		             c == '_'))
			return -1;
		if (++label > 63)
			return -1;
		out[i] = (char)c;
	}
	if (label == 0)
		return -1;
	out[len] = '\0';
	return (int)len;
}

/* FNV-1a from a per-index seed, then a 64-bit finaliser (MurmurHash3's
 * fmix64) so that every bit of the seed reaches the slot index. */
static uint64_t
hash(uint64_t seed, const char *s, size_t len)
{
	uint64_t h = seed ^ 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static struct slot *
probe(struct sni_index *ix, struct table *t, uint64_t h, const char *name)
{
	size_t mask = t->cap - 1;

	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		struct slot *s = &t->slot[i];
		ix->probes++;
		if (s->name == NULL || (s->hash == h && strcmp(s->name, name) == 0))
			return s;
	}
}

static int
grow(struct table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 16;
	struct slot *n = calloc(cap, sizeof(*n));

	if (n == NULL)
		return -1;
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slot[i].name == NULL)
			continue;
		size_t j = (size_t)t->slot[i].hash & (cap - 1);
		while (n[j].name != NULL)
			j = (j + 1) & (cap - 1);
		n[j] = t->slot[i];
	}
	free(t->slot);
	t->slot = n;
	t->cap = cap;
	return 0;
}

struct sni_index *
sni_index_new(void)
{
	struct sni_index *ix = calloc(1, sizeof(*ix));

	if (ix == NULL)
		return NULL;
	if (getrandom(&ix->seed, sizeof(ix->seed), GRND_NONBLOCK) != sizeof(ix->seed))
		ix->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)ix;
	return ix;
}

/* A copy of the LEN bytes at S, and a NUL, in IX's blocks; NULL when out
 * of memory. */
static char *
keep(struct sni_index *ix, const char *s, size_t len)
{
	struct block *b = ix->blocks;
	char *p;

	if (b == NULL || b->cap - b->used < len + 1) {
		size_t cap = 64 * 1024 - sizeof(*b);
		if ((b = malloc(sizeof(*b) + cap)) == NULL)
			return NULL;
		*b = (struct block){ix->blocks, 0, cap};
		ix->blocks = b;
	}
	p = b->text + b->used;
	memcpy(p, s, len);
	p[len] = '\0';
	b->used += len + 1;
	return p;
}

void
sni_index_free(struct sni_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->exact.slot);
	free(ix->wild.slot);
	while (ix->blocks) {
		struct block *b = ix->blocks;
		ix->blocks = b->next;
		free(b);
	}
	free(ix);
}

int
sni_index_add(struct sni_index *ix, const char *name, size_t len, void *value)
{
	char norm[SNI_NAME_MAX + 1];
	int n = sni_name_normalize(name, len, norm, 1);
	struct table *t = &ix->exact;
	const char *key = norm;

	if (n < 0)
		return -1;
	if (norm[0] == '*') {
		key = norm + 2;
		n -= 2;
		/* "*.com" would answer for a whole top-level domain */
		if (n <= 0 || memchr(key, '.', (size_t)n) == NULL)
			return -1;
		t = &ix->wild;
	}
	if ((t->n + 1) * 2 > t->cap && grow(t) < 0)
		return -2;
	uint64_t h = hash(ix->seed, key, (size_t)n);
	unsigned long long before = ix->probes; /* loading is not a lookup */
	struct slot *s = probe(ix, t, h, key);
	ix->probes = before;
	if (s->name != NULL)
		return 1;
	if ((s->name = keep(ix, key, (size_t)n)) == NULL)
		return -2;
	s->hash = h;
	s->value = value;
	t->n++;
	return 0;
}

static void *
lookup(struct sni_index *ix, struct table *t, const char *key, size_t len)
{
	if (t->n == 0)
		return NULL;
	return probe(ix, t, hash(ix->seed, key, len), key)->value;
}

void *
sni_index_find(struct sni_index *ix, const char *name, size_t len)
{
	char norm[SNI_NAME_MAX + 1];
	int n = sni_name_normalize(name, len, norm, 0);
	void *v;

	if (n < 0)
		return NULL;
	if ((v = lookup(ix, &ix->exact, norm, (size_t)n)) != NULL)
		return v;
	const char *dot = memchr(norm, '.', (size_t)n);
	if (dot == NULL)
		return NULL;
	return lookup(ix, &ix->wild, dot + 1, (size_t)(norm + n - dot - 1));
}

size_t
sni_index_count(const struct sni_index *ix)
{
	return ix->exact.n + ix->wild.n;
}

unsigned long long
sni_index_probes(const struct sni_index *ix)
{
	return ix->probes;
}
