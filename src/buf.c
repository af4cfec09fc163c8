#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include <postern/buf.h>

static void
wipe(struct buf *b, size_t from, size_t n)
{
	if (b->secret && b->data != NULL && n > 0)
		OPENSSL_cleanse(b->data + from, n);
}

/* Empty now: what was wiped stays wiped, and what comes next is not
 * taken for a secret. */
static void
emptied(struct buf *b)
{
	b->start = b->end = 0;
	b->secret = false;
}

void
buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->cap = b->base = cap;
	b->start = b->end = 0;
	b->secret = false;
}

void
buf_free(struct buf *b)
{
	wipe(b, 0, b->end);
	free(b->data);
	b->data = NULL;
	emptied(b);
	b->cap = b->base;
}

static void
compact(struct buf *b)
{
	size_t n = b->end - b->start;

	memmove(b->data, b->data + b->start, n);
	wipe(b, n, b->end - n); /* the copies left behind */
	b->end = n;
	b->start = 0;
}

char *
buf_tail(struct buf *b, size_t *room)
{
	if (b->data == NULL) {
		b->data = malloc(b->cap);
		if (b->data == NULL) {
			*room = 0;
			return NULL;
		}
	}
	if (b->start == b->end) {
		emptied(b);
	} else if (b->end == b->cap && b->start > 0) {
		/* Compact only when the tail is exhausted: moving bytes costs a copy. */
		compact(b);
	}
	*room = b->cap - b->end;
	return *room ? b->data + b->end : NULL;
}

void
buf_commit(struct buf *b, size_t n)
{
	b->end += n;
}

void
buf_consume(struct buf *b, size_t n)
{
	wipe(b, b->start, n);
	b->start += n;
	if (b->start == b->end)
		emptied(b);
}

bool
buf_append(struct buf *b, const void *p, size_t len)
{
	size_t room;
	char *t = buf_tail(b, &room);

	if (t != NULL && room < len && b->start > 0) {
		compact(b);
		room = b->cap - b->end;
	}
	if (t == NULL || room < len)
		return false;
	t = b->data + b->end;
	memcpy(t, p, len);
	buf_commit(b, len);
	return true;
}

bool
buf_append_grow(struct buf *b, const void *p, size_t len)
{
	size_t room;

	if (buf_tail(b, &room) != NULL || b->data != NULL) {
		if (b->cap - b->end < len && b->start > 0)
			compact(b);
		if (b->cap - b->end < len) {
			char *n = b->secret ? malloc(b->end + len) : realloc(b->data, b->end + len);
			if (n == NULL)
				return false;
			if (b->secret) { /* realloc could leave a copy behind */
				memcpy(n, b->data, b->end);
				OPENSSL_cleanse(b->data, b->cap);
				free(b->data);
			}
			b->data = n;
			b->cap = b->end + len;
		}
	}
	return buf_append(b, p, len);
}

void
buf_release_if_empty(struct buf *b)
{
	if (b->data != NULL && b->start == b->end) {
		free(b->data);
		b->data = NULL;
		emptied(b);
		b->cap = b->base;
	}
}

size_t
buf_line_len(const struct buf *b)
{
	const char *nl;

	if (b->data == NULL)
		return 0;
	nl = memchr(b->data + b->start, '\n', b->end - b->start);
	return nl ? (size_t)(nl - (b->data + b->start)) + 1 : 0;
}
