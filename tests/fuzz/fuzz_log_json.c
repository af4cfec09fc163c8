/* The JSON log formatter on arbitrary messages (they can carry peer text):
 * the output is always one NUL-terminated line within the buffer, with no
 * raw control character. */
#include <stdlib.h>
#include <string.h>

#include <postern/log_json.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char msg[4096], who[128], out[512];
	size_t split = size ? data[0] % 64 : 0;

	if (size == 0 || size - 1 >= sizeof(msg) + sizeof(who))
		return 0;
	size_t wl = split < size - 1 ? split : size - 1;
	memcpy(who, data + 1, wl);
	who[wl] = '\0';
	size_t ml = size - 1 - wl < sizeof(msg) - 1 ? size - 1 - wl : sizeof(msg) - 1;
	memcpy(msg, data + 1 + wl, ml);
	msg[ml] = '\0';
	size_t n = log_json_format(out, sizeof(out), "2026-11-21T00:00:00.000Z", "info", who, msg);
	if (n >= sizeof(out) || strlen(out) != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)out[i] < 0x20)
			abort();
	return 0;
}
