/* `postern [-c FILE] oauth2-authorize [--loopback] PROVIDER ACCOUNT`: runs
 * the device authorization grant (RFC 8628) or, with --loopback, the
 * authorization code grant with PKCE and a redirect to 127.0.0.1 (RFC 8252,
 * RFC 7636) against the [oauth2:PROVIDER] section of CFG, asks for the
 * local password ACCOUNT's legacy client will use, and stores the refresh
 * token encrypted under it (oauth2_store.h). */
#ifndef POSTERN_OAUTH2_AUTHORIZE_H
#define POSTERN_OAUTH2_AUTHORIZE_H

#include <stdbool.h>

#include <postern/config.h>

/* Whether WORD (the first word after the options) is one of these
 * commands: oauth2-authorize, oauth2-check. */
bool oauth2_is_command(const char *word);

/* ARGV[0] is the command. oauth2-check PROVIDER ACCOUNT asks for the local
 * password (once), decrypts the stored refresh token, gets an access token
 * as a login will, and stores a rotated refresh token. Returns the process
 * exit status: 0 on success, DAEMON_EXIT_CONFIG on a usage or configuration
 * error, DAEMON_EXIT_RUNTIME when the grant, the request or the store
 * failed (a wrong password too). */
int oauth2_command(const struct config *cfg, int argc, char **argv);

#endif
