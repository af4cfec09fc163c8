/* The JSON log formatter on arbitrary messages (they can carry peer text):
 * the output is always one NUL-terminated object within the buffer, valid
 * UTF-8 with nothing log_text.h escapes (no control, U+0085, U+2028...),
 * braces at both ends and every string closed, and each key at most once. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <postern/log_json.h>
#include <postern/log_text.h>

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
	if (!log_text_is_safe(out, n, 0) || n < 2 || out[0] != '{' || out[n - 1] != '}')
		abort();
	/* Strings: quotes pair up; keys: the strings followed by ':' outside
	 * any string, none twice. */
	const char *keys[64];
	size_t nkeys = 0;
	bool in = false;
	for (size_t i = 0, start = 0; i < n; i++) {
		if (in && out[i] == '\\') {
			i++;
		} else if (out[i] == '"') {
			in = !in;
			if (in) {
				start = i;
			} else if (i + 1 < n && out[i + 1] == ':') {
				for (size_t k = 0; k < nkeys; k++)
					if (strncmp(keys[k], out + start, i - start + 1) == 0)
						abort();
				if (nkeys < 64)
					keys[nkeys++] = out + start;
			}
		}
	}
	if (in)
		abort();
	return 0;
}
