/* The reader in front of inih (see src/config.c): it hands inih one
 * physical line per call, counts lines, rejects lines too long for inih's
 * 200-byte buffer or holding a NUL, drops lines inih would skip silently,
 * and opens sections itself, since inih gives its handler no line number
 * and truncates section names. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <postern/config_oauth2.h>

#include "config_parse.h"

/* ---- sections ---- */

static bool
valid_section_name(const char *s)
{
	for (; *s; s++) {
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
			return false;
	}
	return true;
}

/* A "[name]" line (P points at '['): opens a section or reports why not. */
static void
section_header(struct parse *ps, char *p)
{
	char *close = strchr(p, ']'), *name = p + 1, *rest, *end;
	int line = ps->lineno;

	if (!close) {
		perr(ps, line, "malformed section header (missing ']')");
		ps->cur = SEC_SINK;
		return;
	}
	rest = close + 1;
	rest += strspn(rest, " \t\r\v\f");
	if (*rest && *rest != ';' && *rest != '#')
		perr(ps, line, "unexpected text after section header");
	*close = '\0';
	while (isspace((unsigned char)*name))
		name++;
	for (end = close; end > name && isspace((unsigned char)end[-1]);)
		*--end = '\0';
	if (*name == '\0') {
		perr(ps, line, "empty section name");
		ps->cur = SEC_SINK;
		return;
	}
	if (strcmp(name, "global") == 0) {
		if (ps->global_line) {
			perr(ps, line, "duplicate section [global] (first at line %d)",
			     ps->global_line);
			ps->cur = SEC_SINK;
		} else {
			ps->global_line = line;
			ps->cur = SEC_GLOBAL;
		}
		return;
	}
	if (strncmp(name, "oauth2:", 7) == 0) {
		char err[ERRLEN];
		bool ok = config_oauth2_section(&ps->cfg->oauth2, name + 7, line, err,
		                                sizeof(err)) == 0;
		if (!ok)
			perr(ps, line, "%s", err);
		ps->cur = ok ? SEC_OAUTH2 : SEC_SINK;
		return;
	}
	if (strlen(name) > MAX_SECTION_NAME || !valid_section_name(name)) {
		char sh[MAX_SECTION_NAME + 1];

		perr(ps, line,
		     "invalid section name '%s%s' (letters, digits, '-', '_', '.'; "
		     "at most %d)",
		     shown(name, sh, sizeof(sh)), strlen(name) > MAX_SECTION_NAME ? "..." : "",
		     MAX_SECTION_NAME);
		ps->cur = service_add(ps, name, true);
		return;
	}
	for (size_t i = 0; i < ps->cfg->nservices; i++) {
		const char *other = ps->cfg->services[i].name;

		if (other && strcmp(other, name) == 0) {
			perr(ps, line, "duplicate section [%s] (first at line %d)", name,
			     ps->cfg->services[i].line);
			ps->cur = service_add(ps, name, true);
			return;
		}
	}
	ps->cur = service_add(ps, name, false);
}

/* ---- the reader: one physical line per call ---- */

static int
src_getc(struct parse *ps)
{
	int c;

	if (ps->fp) {
		if ((c = getc(ps->fp)) == EOF && ferror(ps->fp))
			ps->read_errno = errno ? errno : EIO;
		return c;
	}
	if (ps->mem[ps->pos] == '\0')
		return EOF;
	return (unsigned char)ps->mem[ps->pos++];
}

/* Mirrors inih's inline comment rule: ';' after whitespace starts one. */
static char *
find_sep(char *s)
{
	bool was_space = false;

	for (; *s && *s != '=' && *s != ':'; s++) {
		if (was_space && *s == ';')
			break;
		was_space = isspace((unsigned char)*s);
	}
	return s;
}

/* A "name = value" line: checks what inih would silently skip. Returns
 * false if the line is to be dropped. */
static bool
key_line(struct parse *ps, char *p)
{
	char *sep = find_sep(p), *end = sep;

	if (*sep != '=' && *sep != ':') {
		perr(ps, ps->lineno, "syntax error (expected 'key = value')");
		return false;
	}
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	if (end == p) {
		perr(ps, ps->lineno, "missing key name");
		return false;
	}
	return true;
}

/* inih's ini_reader. inih hands us a buffer of NUM bytes; a line that does
 * not fit (with its newline and NUL) is reported here and consumed whole,
 * so its tail is never parsed as a line of its own. Every line returned
 * ends in '\n'. Lines inih must not see are replaced: an empty line
 * (state unchanged) or "[]" (a section, which resets inih's continuation
 * state as a real header does). */
char *
cfg_reader(char *str, int num, void *stream)
{
	struct parse *ps = stream;
	size_t max = num > 2 ? (size_t)num - 2 : 0, n = 0;
	bool too_long = false, nul = false;
	char *p;
	int c;

	if (num < 4 || (c = src_getc(ps)) == EOF)
		return NULL;
	ps->lineno++;
	ps->cont = false;
	for (; c != EOF && c != '\n'; c = src_getc(ps)) {
		if (c == '\0')
			nul = true;
		if (n <= max)
			str[n++] = (char)c; /* one spare byte: a '\r' may go */
		else
			too_long = true;
	}
	if (n > 0 && str[n - 1] == '\r' && !too_long)
		n--;
	if (n > max)
		too_long = true;
	str[n] = '\0';
	if (too_long || nul) {
		if (too_long)
			perr(ps, ps->lineno, "line too long (max %zu bytes)", max);
		else
			perr(ps, ps->lineno, "NUL byte in line");
		strcpy(str, "\n");
		return str;
	}
	if (ps->lineno == 1 && n >= 3 && memcmp(str, "\xEF\xBB\xBF", 3) == 0) {
		memmove(str, str + 3, n - 2);
		n -= 3;
	}
	for (p = str; isspace((unsigned char)*p); p++)
		;
	if (*p == '\0' || *p == ';' || *p == '#') {
		/* blank or comment */
	} else if (ps->have_prev && p > str) {
		ps->cont = true;
	} else if (*p == '[') {
		section_header(ps, p);
		ps->have_prev = false;
		strcpy(str, "[]\n");
		return str;
	} else if (key_line(ps, p)) {
		ps->have_prev = true;
	} else {
		strcpy(str, "\n");
		return str;
	}
	str[n] = '\n';
	str[n + 1] = '\0';
	return str;
}
