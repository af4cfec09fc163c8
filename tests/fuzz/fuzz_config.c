/* libFuzzer harness: arbitrary bytes as a configuration file. The loader
 * must never crash, leak or read out of bounds, whatever it is given. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/config.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct config *cfg;
	char *text;

	if (!devnull && !(devnull = fopen("/dev/null", "w")))
		abort();
	/* config_load_string takes a C string: embedded NULs end it early. */
	if (!(text = malloc(size + 1)))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	cfg = config_load_string("fuzz.ini", text, false, devnull);
	if (cfg)
		config_unref(config_ref(cfg));
	config_unref(cfg);
	free(text);
	return 0;
}
