/* The SNI name index against a plain reference: the input is lines, those
 * before the first empty line are names to add (in order), the rest names
 * a client sends. For each, the index must answer what a walk over every
 * name added would (the first exact match, else the first wildcard whose
 * parent is the name minus its first label), and reading a name never goes
 * past its bytes. */
#include <stdlib.h>
#include <string.h>

#include <postern/sni_index.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define MAXNAMES 64

/* The reference: the first entry (by order added) that matches. */
static int
walk(char names[][SNI_NAME_MAX + 1], int n, const char *name, size_t len)
{
	char norm[SNI_NAME_MAX + 1];
	int l = sni_name_normalize(name, len, norm, 0);
	const char *dot;

	if (l < 0)
		return -1;
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], norm) == 0)
			return i;
	if ((dot = strchr(norm, '.')) == NULL)
		return -1;
	for (int i = 0; i < n; i++)
		if (names[i][0] == '*' && strcmp(names[i] + 2, dot + 1) == 0)
			return i;
	return -1;
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static char names[MAXNAMES][SNI_NAME_MAX + 1];
	static int ids[MAXNAMES];
	struct sni_index *ix = sni_index_new();
	const char *p = (const char *)data, *end = p + size;
	int n = 0, adding = 1;

	if (ix == NULL)
		return 0;
	for (int i = 0; i < MAXNAMES; i++)
		ids[i] = i;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		char *copy = malloc(len ? len : 1); /* exact size: ASan catches overreads */
		if (copy == NULL)
			break;
		memcpy(copy, p, len);
		if (adding && len == 0) {
			adding = 0;
		} else if (adding && n < MAXNAMES) {
			char norm[SNI_NAME_MAX + 1];
			int r = sni_index_add(ix, copy, len, &ids[n]);
			int l = sni_name_normalize(copy, len, norm, 1);
			/* taken exactly when it is a name (a wildcard's parent
			 * having two labels or more), and then once */
			int ok = l >= 0 && (norm[0] != '*' || strchr(norm + 2, '.') != NULL);
			if (ok != (r >= 0) || r == -2)
				abort();
			if (r >= 0) {
				int seen = 0;
				for (int i = 0; i < n; i++)
					seen |= strcmp(names[i], norm) == 0;
				if (seen != r)
					abort();
				if (r == 0)
					memcpy(names[n++], norm, (size_t)l + 1);
			}
		} else if (!adding) {
			int *got = sni_index_find(ix, copy, len);
			int want = walk(names, n, copy, len);
			if ((got ? *got : -1) != want)
				abort();
		}
		free(copy);
		p = nl ? nl + 1 : end;
	}
	sni_index_free(ix);
	return 0;
}
