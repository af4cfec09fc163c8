/* TLS session-ticket keys. ticket_keys files use the 80-byte format nginx
 * uses (16 bytes key name, 32 bytes HMAC-SHA256 key, 32 bytes AES-256-CBC
 * key): the first file's key encrypts, all decrypt, so a fleet sharing the
 * files resumes anywhere (on the service that issued the ticket: see
 * tls_binding.h). Without them a random key is made at start and
 * replaced daily, the previous one still decrypting; it survives SIGHUP and
 * is shared by workers. */
#ifndef POSTERN_TICKETS_H
#define POSTERN_TICKETS_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

struct ticket_keys;

/* Makes the secret the random daily keys come from; call before forking
 * workers so that they share it (otherwise made at the first ticket).
 * -1 if the RNG fails. */
int tickets_init(void);

/* The master of workers, at least hourly: moves the random keys on to the
 * new day (and wipes the old secret) so that workers forked later start
 * from today's. */
void tickets_tick(void);

/* At exit: wipes the random keys' secret. */
void tickets_wipe(void);

/* Tests: the clock that says which day it is (NULL: time). */
void tickets_set_clock(time_t (*fn)(time_t *));

/* Reads the files PATHS[0..n). NULL with a message naming the file in ERR
 * and its index in *BAD on failure. */
struct ticket_keys *tickets_load(char *const *paths, size_t n, char *err, size_t errlen,
                                 size_t *bad);
void tickets_free(struct ticket_keys *k);

/* Makes K (NULL: the random daily key) the set every context uses from now
 * on. The caller keeps K alive while it is in use. */
void tickets_use(const struct ticket_keys *k);

/* Server contexts encrypt and decrypt their tickets with the set in use. */
void tickets_attach(SSL_CTX *ctx);

#endif
