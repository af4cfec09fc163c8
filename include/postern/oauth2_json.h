/* A strict, bounded reader for the JSON objects OAuth 2.0 endpoints answer
 * with (token, device authorization, SASL error challenges). It validates
 * the whole text as JSON (RFC 8259, nesting at most OAUTH2_JSON_DEPTH) and
 * copies out the top-level string and integer members the caller asks for,
 * into the caller's buffers: it never allocates. */
#ifndef POSTERN_OAUTH2_JSON_H
#define POSTERN_OAUTH2_JSON_H

#include <stdbool.h>
#include <stddef.h>

#define OAUTH2_JSON_MAX 65536 /* longest document read */
#define OAUTH2_JSON_DEPTH 16

enum oauth2_json_type {
	OAUTH2_JSON_STRING, /* decoded (escapes resolved) into buf, NUL-terminated */
	OAUTH2_JSON_INT,    /* 0 to 2^31-1; a string of digits is accepted too
	                       (some Azure endpoints quote expires_in) */
};

struct oauth2_json_field {
	const char *name; /* member name, matched exactly */
	enum oauth2_json_type type;
	char *buf;  /* STRING: where the value goes */
	size_t cap; /* STRING: size of buf, NUL included */
	/* out */
	bool found;
	size_t len;    /* STRING: bytes in buf */
	long long num; /* INT */
};

/* Parses TEXT (N bytes): it must be one JSON object, nothing else but white
 * space around it. Fills the FIELDS found at the top level. Returns 0, or
 * -1 when the text is not JSON, is nested too deep or too long, repeats a
 * member name, has a member of the wrong type or a string longer than its
 * buffer (then the found values are not to be trusted). */
int oauth2_json_extract(const char *text, size_t n, struct oauth2_json_field *fields,
                        size_t nfields);

#endif
