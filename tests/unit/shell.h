/* For unit tests that make their fixtures with command-line tools
 * (openssl, cp, mv): runs a printf-formatted shell command, returns
 * system()'s status. */
#ifndef POSTERN_TEST_SHELL_H
#define POSTERN_TEST_SHELL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int __attribute__((format(printf, 1, 2), unused)) sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

#endif
