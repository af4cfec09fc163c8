/* The per-direction pump. No protocol knowledge, no per-byte work: bytes go
 * from the source into the buffer and from the buffer to the destination. */
#include <postern/relay.h>

void
relay_init(struct relay_dir *d, struct endpoint *src, struct endpoint *dst)
{
	d->src = src;
	d->dst = dst;
	buf_init(&d->buf, RELAY_BUF_SIZE);
	d->bytes = 0;
	d->src_wait = d->dst_wait = RELAY_IDLE;
	d->eof = d->done = d->discard = false;
	d->failed = NULL;
}

static enum relay_wait
wait_for(ssize_t r)
{
	return r == EP_WANT_READ ? RELAY_WAIT_READ : RELAY_WAIT_WRITE;
}

long
relay_pump(struct relay_dir *d)
{
	long moved = 0;

	if (d->done)
		return 0;
	for (;;) {
		long before = moved;

		d->src_wait = RELAY_IDLE;
		if (!d->eof) {
			size_t room;
			char *tail = buf_tail(&d->buf, &room);
			if (tail != NULL) {
				ssize_t r = ep_read(d->src, tail, room);
				if (r > 0) {
					buf_commit(&d->buf, (size_t)r);
					if (d->discard)
						buf_consume(&d->buf, (size_t)r);
					moved += r;
				} else if (r == EP_EOF) {
					d->eof = true;
				} else if (r == EP_ERR) {
					d->failed = d->src;
					return -1;
				} else {
					d->src_wait = wait_for(r);
				}
			}
		}
		d->dst_wait = RELAY_IDLE;
		if (buf_len(&d->buf) > 0) {
			ssize_t w = ep_write(d->dst, buf_head(&d->buf), buf_len(&d->buf));
			if (w > 0) {
				buf_consume(&d->buf, (size_t)w);
				d->bytes += (uint64_t)w;
				moved += w;
			} else if (w == EP_ERR || w == EP_EOF) {
				d->failed = d->dst;
				return -1;
			} else {
				d->dst_wait = wait_for(w);
			}
		}
		if (moved == before)
			break;
	}
	if (buf_len(&d->buf) == 0) {
		/* Idle sessions keep no relay memory. */
		buf_release_if_empty(&d->buf);
		if (d->eof) {
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
	if (ep == d->src && !d->eof) {
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
	buf_free(&d->buf);
}
