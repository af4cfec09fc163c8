/* The OAuth 2.0 JSON reader and the SASL error challenge on arbitrary
 * input (an endpoint or a mail server could send anything): no crash, no
 * read or write outside the buffers, every string value NUL-terminated
 * with its length, a proper prefix of an accepted document refused, the
 * same input always the same verdict, and base64 decoding undoing the
 * encoding. */
#include <stdlib.h>
#include <string.h>

#include <postern/oauth2_json.h>
#include <postern/oauth2_sasl.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static int
extract(const char *text, size_t n, char bufs[3][40], struct oauth2_json_field *f)
{
	static const char *names[] = {"access_token", "error", "user_code"};

	for (int i = 0; i < 3; i++)
		f[i] = (struct oauth2_json_field){
		        .name = names[i], .type = OAUTH2_JSON_STRING, .buf = bufs[i], .cap = 40};
	f[3] = (struct oauth2_json_field){.name = "expires_in", .type = OAUTH2_JSON_INT};
	return oauth2_json_extract(text, n, f, 4);
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char bufs[3][40], again[3][40], b64[4097];
	unsigned char raw[3072];
	struct oauth2_json_field f[4], g[4];
	struct oauth2_sasl_error e;
	char *text;
	int rc;

	if (size > OAUTH2_JSON_MAX + 1)
		return 0;
	/* an exact-size heap copy: ASan sees any read past the end */
	text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	rc = extract(text, size, bufs, f);
	if (rc == 0) {
		for (int i = 0; i < 3; i++) {
			if (f[i].found && (f[i].len >= 40 || strlen(bufs[i]) != f[i].len))
				abort();
		}
		if (f[3].found && (f[3].num < 0 || f[3].num > 0x7FFFFFFF))
			abort();
		size_t last = size;
		while (last > 0 && strchr(" \t\r\n", text[last - 1]))
			last--;
		if (last > 0 && extract(text, last - 1 - (size % last), again, g) == 0)
			abort();
	}
	if (extract(text, size, again, g) != rc)
		abort();
	(void)oauth2_sasl_parse_error(text, size, &e);
	if (strlen(e.status) >= sizeof(e.status) || strlen(e.scope) >= sizeof(e.scope))
		abort();
	if (size <= sizeof(raw)) {
		long n = oauth2_base64(data, size, b64, sizeof(b64), size & 1);
		if (n < 0)
			abort();
		if (!(size & 1) &&
		    (oauth2_unbase64(b64, (size_t)n, raw, sizeof(raw)) != (long)size ||
		     memcmp(raw, data, size) != 0))
			abort();
	}
	free(text);
	return 0;
}
