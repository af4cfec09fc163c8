/* The refresh token of one provider account, kept on disk encrypted with a
 * key derived from the local password the legacy client logs in with
 * (scrypt, AES-256-GCM, the account name bound as associated data). A copy
 * of the file without the password is useless; the file is written whole
 * (temp file, fsync, rename) with mode 0600.
 *
 * File format, version 1 (all integers big-endian):
 *   magic "PSTNOA2T" (8) | version 1 (1) | kdf 1 = scrypt (1) | log2 N (1) |
 *   r (1) | p (1) | salt (16) | nonce (12) | check (16) | length (4) |
 *   ciphertext (length) | GCM tag (16)
 * The scrypt output is 48 bytes: the AES key, then "check", a value that
 * tells a wrong password (check differs) from a damaged file or another
 * account's file (check equal, tag wrong) without decrypting anything. The
 * GCM associated data is the header (everything before the ciphertext)
 * followed by the account name. */
#ifndef POSTERN_OAUTH2_STORE_H
#define POSTERN_OAUTH2_STORE_H

#include <stddef.h>

#include <sys/stat.h>

enum oauth2_store_result {
	OAUTH2_STORE_OK = 0,
	OAUTH2_STORE_NOT_FOUND,    /* no token file: the account was never authorized */
	OAUTH2_STORE_BAD_PASSWORD, /* the password does not open this file */
	OAUTH2_STORE_CORRUPT,      /* damaged, truncated, or another account's file */
	OAUTH2_STORE_INSECURE,     /* not a regular file, or readable by group/others */
	OAUTH2_STORE_IO,           /* any other system error */
};

/* Longest refresh token kept (Microsoft's are ~1.5 KiB). */
#define OAUTH2_STORE_TOKEN_MAX 8192
/* scrypt cost of new files: N = 2^15, r = 8, p = 1 (32 MiB, ~0.1 s of CPU). */
#define OAUTH2_STORE_LOG2N_DEFAULT 15

/* Whether ACCOUNT may name a token file: 1 to 254 bytes of
 * [A-Za-z0-9._@+-], not starting with '.'. */
int oauth2_store_account_ok(const char *account);

/* DIR/ACCOUNT into OUT; -1 if the account name is not allowed or OUT is
 * too small. */
int oauth2_store_path(const char *dir, const char *account, char *out, size_t outlen);

/* Encrypts TOKEN for ACCOUNT under PASSWORD and replaces PATH atomically.
 * LOG2N: the scrypt cost, 0 for OAUTH2_STORE_LOG2N_DEFAULT (tests use
 * less). Returns OAUTH2_STORE_OK or OAUTH2_STORE_IO with a reason in ERR. */
enum oauth2_store_result oauth2_store_write(const char *path, const char *account,
                                            const char *password, size_t passlen, const char *token,
                                            size_t tokenlen, unsigned log2n, char *err,
                                            size_t errlen);

/* Reads PATH for ACCOUNT with PASSWORD. On OAUTH2_STORE_OK, *TOKEN is a
 * NUL-terminated copy (length *TOKENLEN) the caller releases with
 * oauth2_secret_free; otherwise *TOKEN is NULL and ERR says why. */
enum oauth2_store_result oauth2_store_read(const char *path, const char *account,
                                           const char *password, size_t passlen, char **token,
                                           size_t *tokenlen, char *err, size_t errlen);

/* The same, and on OAUTH2_STORE_OK, FILE: fstat of the file it read (not
 * of whatever PATH names before or after: the file may be replaced at any
 * time), to tell later whether PATH still is that file. */
enum oauth2_store_result oauth2_store_read_file(const char *path, const char *account,
                                                const char *password, size_t passlen, char **token,
                                                size_t *tokenlen, struct stat *file, char *err,
                                                size_t errlen);

/* Wipes N bytes at P (OPENSSL_cleanse) and frees it; NULL is fine. */
void oauth2_secret_free(char *p, size_t n);

#endif
