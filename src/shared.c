/* One anonymous shared mapping per caller: the few users each take one at
 * start-up, so a bump allocator would buy nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <postern/shared.h>

void *
shared_area(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p != MAP_FAILED)
		return p;
	/* Correct for one process; workers would then count apart. */
	p = calloc(1, size);
	if (p == NULL) {
		fprintf(stderr, "postern: out of memory\n");
		abort();
	}
	return p;
}
