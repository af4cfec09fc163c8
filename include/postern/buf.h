/* A byte buffer with one reader and one writer. Storage is allocated on
 * first use and can be released when empty, so an idle session holds none. */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t cap;   /* capacity once allocated */
	size_t base;  /* the capacity to return to after growing */
	size_t start; /* first unread byte */
	size_t end;   /* one past the last written byte */
	bool secret;  /* it holds a secret (a token on its way): bytes are
	               * wiped as they are consumed or released; cleared when
	               * it is empty */
};

void buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);

static inline size_t
buf_len(const struct buf *b)
{
	return b->end - b->start;
}

static inline const char *
buf_head(const struct buf *b)
{
	return b->data + b->start;
}

/* Room at the tail, after compacting if that makes room; allocates storage
 * on first use. Returns NULL (and *room = 0) when full or out of memory. */
char *buf_tail(struct buf *b, size_t *room);

/* Marks N bytes at the tail as written. */
void buf_commit(struct buf *b, size_t n);

/* Drops N bytes from the head. */
void buf_consume(struct buf *b, size_t n);

/* Copies LEN bytes in; returns false if they do not fit. */
bool buf_append(struct buf *b, const void *p, size_t len);

/* Copies LEN bytes in, growing the storage beyond its capacity if need be
 * (replies and rewritten lines must not wait for room); false on ENOMEM. */
bool buf_append_grow(struct buf *b, const void *p, size_t len);

/* Frees the storage if the buffer is empty (idle connections hold none). */
void buf_release_if_empty(struct buf *b);

/* Length of the first line including its LF, or 0 if no complete line. */
size_t buf_line_len(const struct buf *b);

#endif
