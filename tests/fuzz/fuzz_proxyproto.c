/* The PROXY header parser on arbitrary bytes: never reads past LEN, never
 * claims more than it was given, and a header it accepts builds back to a
 * header it accepts the same way. */
#include <stdlib.h>
#include <string.h>

#include <postern/proxyproto.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct proxyproto_info info, again;
	char *copy = malloc(size ? size : 1); /* exact size: ASan catches overreads */
	char out[PROXYPROTO_MAX];

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	int r = proxyproto_parse(copy, size, &info);
	if (r > 0) {
		if ((size_t)r > size || r > PROXYPROTO_MAX)
			abort();
		if (!info.local) {
			for (int v = 1; v <= 2; v++) {
				size_t n = proxyproto_build(v, (struct sockaddr *)&info.src,
				                            (struct sockaddr *)&info.dst, NULL, out,
				                            sizeof(out));
				if (n == 0 || proxyproto_parse(out, n, &again) != (int)n ||
				    again.local || again.src.ss_family != info.src.ss_family)
					abort();
			}
		}
	} else if (r != PROXYPROTO_MORE && r != PROXYPROTO_BAD) {
		abort();
	}
	free(copy);
	return 0;
}
