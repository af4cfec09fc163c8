#include <stdlib.h>
#include <string.h>

#include <postern/buf.h>

void
buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->cap = b->base = cap;
	b->start = b->end = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->start = b->end = 0;
	b->cap = b->base;
}

static void
compact(struct buf *b)
{
	memmove(b->data, b->data + b->start, b->end - b->start);
	b->end -= b->start;
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
		b->start = b->end = 0;
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
	b->start += n;
	if (b->start == b->end)
		b->start = b->end = 0;
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
			char *n = realloc(b->data, b->end + len);
			if (n == NULL)
				return false;
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
		b->start = b->end = 0;
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
