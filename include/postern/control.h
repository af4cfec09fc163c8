/* postern -s: talks to the running daemon named by the pidfile of a
 * configuration. */
#ifndef POSTERN_CONTROL_H
#define POSTERN_CONTROL_H

/* "reload": SIGHUP to the daemon of the configuration at PATH, then waits
 * for the outcome it writes next to its pidfile. Prints it; returns the exit
 * status (0 reloaded, 1 refused or no answer, 2 no daemon to ask). */
int control_send(const char *path, const char *what);

#endif
