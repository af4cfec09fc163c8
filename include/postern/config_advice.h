/* Settings that load and work but are unsafe in a way the admin should hear
 * about: said by `postern -t` (on stderr) and in the start log. */
#ifndef POSTERN_CONFIG_ADVICE_H
#define POSTERN_CONFIG_ADVICE_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/config.h>

/* True if SVC relays SMTP to a backend on this host (a loopback address or
 * a unix socket) without telling it the client's address: every client then
 * looks local to the backend, and one that lets local clients relay
 * (Postfix's and Exim's stock mynetworks) relays for anyone. */
bool config_smtp_hides_client(const struct service *svc);

/* Calls SAY with the text of each warning for CFG, without a "WARNING:"
 * prefix or a newline. */
void config_advice(const struct config *cfg, void (*say)(void *arg, const char *text), void *arg);

#endif
