/* One direction of a session: source endpoint -> buffer -> destination
 * endpoint, with backpressure (stop reading while the buffer is full) and
 * half-close (source EOF, once flushed, closes the destination's write side).
 * A filtered direction reads into a separate input buffer and lets a filter
 * (the protocol adapter, through the session) decide what reaches the output
 * buffer; an unfiltered one reads straight into the output buffer. */
#ifndef POSTERN_RELAY_H
#define POSTERN_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include <postern/buf.h>
#include <postern/endpoint.h>

/* A relay buffer: one TLS record's worth. */
#define RELAY_BUF_SIZE 16384
/* A filtered direction's input buffer holds one maximal line. */
#define RELAY_LINE_BUF_SIZE (65536 + 2)

enum relay_wait { RELAY_IDLE, RELAY_WAIT_READ, RELAY_WAIT_WRITE };

struct relay_dir;

/* Moves bytes from d->in to an output buffer; returns bytes consumed, or -1
 * to stop the pump (the filter has arranged what happens next). */
typedef long (*relay_filter_fn)(void *arg, struct relay_dir *d);

struct relay_dir {
	struct endpoint *src, *dst;
	struct buf in;            /* filtered directions: bytes not yet judged */
	struct buf buf;           /* bytes for dst */
	uint64_t bytes;           /* delivered to dst */
	enum relay_wait src_wait; /* what src needs before we can read again */
	enum relay_wait dst_wait; /* what dst needs before we can write again */
	bool eof;                 /* nothing more will come from src */
	bool done;                /* eof, flushed, and dst's write side shut */
	bool discard;             /* drop what src sends (closing after a reply) */
	bool paused;              /* do not read src for now */
	bool held;                /* do not run the filter for now */
	relay_filter_fn filter;   /* NULL: unfiltered */
	void *filter_arg;
	struct endpoint *failed; /* the endpoint that failed, after relay_pump < 0 */
};

void relay_init(struct relay_dir *d, struct endpoint *src, struct endpoint *dst);

/* Moves what can move now. Returns the number of bytes moved (0 = no
 * progress), -1 when an endpoint failed (d->failed), -2 when the filter
 * stopped the pump. */
long relay_pump(struct relay_dir *d);

/* Which readiness the endpoint EP needs on behalf of D. */
void relay_wants(const struct relay_dir *d, const struct endpoint *ep, bool *rd, bool *wr);

void relay_free(struct relay_dir *d);

#endif
