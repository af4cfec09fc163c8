/* What the configuration loader's files share (src/config.c,
 * src/config_reader.c, src/config_values.c): the state of one load and its
 * error list. Private to the loader. */
#ifndef POSTERN_CONFIG_PARSE_H
#define POSTERN_CONFIG_PARSE_H

#include <stdbool.h>
#include <stdio.h>

#include <postern/config.h>

#define SEC_NONE (-1)   /* before any section header */
#define SEC_SINK (-2)   /* after a broken header: keys are ignored */
#define SEC_GLOBAL (-3) /* [global] */
#define SEC_OAUTH2 (-4) /* [oauth2:NAME]: keys go to config_oauth2.c */

#define MAX_SECTION_NAME CONFIG_SERVICE_NAME_MAX
#define ERRLEN 512

struct keydef;

struct cfg_err {
	int line; /* 0: no line ("FILE: message") */
	size_t seq;
	char *msg;
};

/* Per-service bookkeeping that does not belong in struct service. */
struct svcmeta {
	int *seen;    /* line where each key (by table index) was first set */
	bool ignored; /* duplicate or badly named section: not validated */
};

struct parse {
	const char *name;
	FILE *fp;
	const char *mem;
	size_t pos;

	int read_errno; /* set when reading the file failed */
	int lineno;
	bool cont;      /* the current line continues the previous key */
	bool have_prev; /* mirrors inih's prev_name != "" */
	const struct keydef *prev_key;
	bool prev_bad; /* the key being continued was rejected */
	int cur;       /* SEC_* or a service index */
	int global_line;

	struct config *cfg;
	struct svcmeta *meta;
	size_t svccap;
	int *gseen;

	struct cfg_err *errs;
	size_t nerrs, errcap;
	bool oom;

	FILE *warns; /* warnings: shown after the errors, never failing the load */
	char *warn_text;
	size_t warn_len;
};

/* Records an error at LINE (0: none); all are printed at the end, sorted. */
void perr(struct parse *ps, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* S with terminal control bytes replaced, in BUF of N bytes: values are
 * echoed in messages. */
const char *shown(const char *s, char *buf, size_t n);

/* Opens a service section NAME at the current line (IGNORED: a duplicate or
 * bad name, whose keys are read but not validated): its index, or SEC_SINK
 * when out of memory (src/config.c). */
int service_add(struct parse *ps, const char *name, bool ignored);

/* inih's ini_reader over PS (src/config_reader.c): one physical line per
 * call, sections tracked here, broken lines reported and hidden from inih. */
char *cfg_reader(char *str, int num, void *stream);

#endif
