/* The per-direction pump. No protocol knowledge, no per-byte work: bytes go
 * from the source into a buffer and from the buffer to the destination. */
#include <postern/relay.h>

void
relay_init(struct relay_dir *d, struct endpoint *src, struct endpoint *dst)
{
	d->src = src;
	d->dst = dst;
	buf_init(&d->in, RELAY_LINE_BUF_SIZE);
	buf_init(&d->buf, RELAY_BUF_SIZE);
	d->bytes = 0;
	d->src_wait = d->dst_wait = RELAY_IDLE;
	d->eof = d->done = d->discard = d->paused = d->held = false;
	d->filter = NULL;
	d->filter_arg = NULL;
	d->failed = NULL;
}

static enum relay_wait
wait_for(ssize_t r)
{
	return r == EP_WANT_READ ? RELAY_WAIT_READ : RELAY_WAIT_WRITE;
}

/* Reads what fits; returns bytes read, 0, or -1 on failure. */
static long
pump_read(struct relay_dir *d)
{
	struct buf *target = d->filter ? &d->in : &d->buf;
	size_t room;
	char *tail;
	ssize_t r;

	d->src_wait = RELAY_IDLE;
	if (d->eof || d->paused || (tail = buf_tail(target, &room)) == NULL)
		return 0;
	r = ep_read(d->src, tail, room);
	if (r > 0) {
		buf_commit(target, (size_t)r);
		if (d->discard)
			buf_consume(target, (size_t)r);
		return r;
	}
	if (r == EP_EOF)
		d->eof = true;
	else if (r == EP_ERR)
		return -1;
	else
		d->src_wait = wait_for(r);
	return 0;
}

static long
pump_write(struct relay_dir *d)
{
	ssize_t w;

	d->dst_wait = RELAY_IDLE;
	if (buf_len(&d->buf) == 0)
		return 0;
	w = ep_write(d->dst, buf_head(&d->buf), buf_len(&d->buf));
	if (w > 0) {
		buf_consume(&d->buf, (size_t)w);
		d->bytes += (uint64_t)w;
		return w;
	}
	if (w == EP_ERR || w == EP_EOF)
		return -1;
	d->dst_wait = wait_for(w);
	return 0;
}

long
relay_pump(struct relay_dir *d)
{
	long moved = 0, n;

	if (d->done)
		return 0;
	for (;;) {
		long before = moved;

		if ((n = pump_read(d)) < 0) {
			d->failed = d->src;
			return -1;
		}
		moved += n;
		if (d->filter && !d->held && buf_len(&d->in) > 0) {
			if ((n = d->filter(d->filter_arg, d)) < 0)
				return -2;
			moved += n;
		}
		if ((n = pump_write(d)) < 0) {
			d->failed = d->dst;
			return -1;
		}
		moved += n;
		if (moved == before)
			break;
	}
	if (buf_len(&d->buf) == 0) {
		/* Idle sessions keep no relay memory. */
		buf_release_if_empty(&d->buf);
		buf_release_if_empty(&d->in);
		if (d->eof && buf_len(&d->in) == 0) {
			ep_shutdown_write(d->dst);
			d->done = true;
		}
	}
	return moved;
}

void
relay_wants(const struct relay_dir *d, const struct endpoint *ep, bool *rd, bool *wr)
{
	if (d->done)
		return;
	if (ep == d->src && !d->eof && !d->paused) {
		*rd |= d->src_wait == RELAY_WAIT_READ;
		*wr |= d->src_wait == RELAY_WAIT_WRITE;
	}
	if (ep == d->dst && buf_len(&d->buf) > 0) {
		*rd |= d->dst_wait == RELAY_WAIT_READ;
		*wr |= d->dst_wait == RELAY_WAIT_WRITE;
	}
}

void
relay_free(struct relay_dir *d)
{
	buf_free(&d->in);
	buf_free(&d->buf);
}
