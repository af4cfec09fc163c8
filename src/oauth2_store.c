/* The encrypted refresh-token file (format in include/postern/oauth2_store.h).
 * Every buffer that held a key, a password-derived value or the token is
 * wiped before it is released. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <postern/oauth2_store.h>

#define MAGIC "PSTNOA2T"
#define MAGIC_LEN 8
#define VERSION 1
#define KDF_SCRYPT 1
#define SALT_LEN 16
#define NONCE_LEN 12
#define CHECK_LEN 16
#define KEY_LEN 32
#define TAG_LEN 16
/* magic, version, kdf, log2 N, r, p, salt, nonce, check, length */
#define HEADER_LEN (MAGIC_LEN + 5 + SALT_LEN + NONCE_LEN + CHECK_LEN + 4)
#define FILE_MAX (HEADER_LEN + OAUTH2_STORE_TOKEN_MAX + TAG_LEN)
#define SCRYPT_R 8
#define SCRYPT_P 1
/* Bounds a file may ask for: a crafted header must not make a login
 * spend seconds or gigabytes. */
#define LOG2N_MIN 10
#define LOG2N_MAX 20
#define R_MAX 16
#define P_MAX 4

static void say(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
}

int
oauth2_store_account_ok(const char *account)
{
	size_t n = strlen(account);

	if (n == 0 || n > 254 || account[0] == '.')
		return 0;
	for (const char *p = account; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._@+-", c)))
			return 0;
	}
	return 1;
}

int
oauth2_store_path(const char *dir, const char *account, char *out, size_t outlen)
{
	int n;

	if (!oauth2_store_account_ok(account))
		return -1;
	n = snprintf(out, outlen, "%s/%s", dir, account);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

void
oauth2_secret_free(char *p, size_t n)
{
	if (p) {
		OPENSSL_cleanse(p, n);
		free(p);
	}
}

/* KEY (32 bytes) then CHECK (16 bytes) from the password. */
static int
derive(const char *password, size_t passlen, const unsigned char *salt, unsigned log2n, unsigned r,
       unsigned p, unsigned char out[KEY_LEN + CHECK_LEN])
{
	uint64_t n = (uint64_t)1 << log2n;
	uint64_t maxmem = 128 * (uint64_t)r * n * 2 + (1u << 20);

	return EVP_PBE_scrypt(password, passlen, salt, SALT_LEN, n, r, p, maxmem, out,
	                      KEY_LEN + CHECK_LEN) == 1
	               ? 0
	               : -1;
}

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* AES-256-GCM over IN (N bytes) into OUT, with AAD1 (the header) and AAD2
 * (the account). ENC: 1 encrypt (TAG written), 0 decrypt (TAG checked).
 * Returns 0, or -1 (for decryption: the tag did not match). */
static int
gcm(int enc, const unsigned char *key, const unsigned char *nonce, const unsigned char *aad1,
    size_t aad1len, const char *aad2, const unsigned char *in, size_t n, unsigned char *out,
    unsigned char *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len, ok = 0;

	if (!c)
		return -1;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1 ||
	    EVP_CipherUpdate(c, NULL, &len, aad1, (int)aad1len) != 1 ||
	    EVP_CipherUpdate(c, NULL, &len, (const unsigned char *)aad2, (int)strlen(aad2)) != 1)
		goto out;
	if (n > 0 && EVP_CipherUpdate(c, out, &len, in, (int)n) != 1)
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(c, out + n, &len) != 1)
		goto out;
	if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
		goto out;
	ok = 1;
out:
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

static int
write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes BUF to a fresh 0600 file beside PATH, then renames it over PATH
 * and syncs the directory, so a reader sees the old file or the new one. */
static enum oauth2_store_result
replace_file(const char *path, const unsigned char *buf, size_t n, char *err, size_t errlen)
{
	char tmp[4096], dir[4096];
	int fd, dfd, e;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
		say(err, errlen, "%s: path too long", path);
		return OAUTH2_STORE_IO;
	}
	if ((fd = mkstemp(tmp)) < 0) { /* mkstemp creates mode 0600 */
		say(err, errlen, "%s: %s", tmp, strerror(errno));
		return OAUTH2_STORE_IO;
	}
	if (fchmod(fd, 0600) < 0 || write_all(fd, buf, n) < 0 || fsync(fd) < 0) {
		e = errno;
		close(fd);
		unlink(tmp);
		say(err, errlen, "%s: %s", tmp, strerror(e ? e : EIO));
		return OAUTH2_STORE_IO;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		e = errno;
		unlink(tmp);
		say(err, errlen, "%s: %s", path, strerror(e));
		return OAUTH2_STORE_IO;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	if ((dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return OAUTH2_STORE_OK;
}

enum oauth2_store_result
oauth2_store_write(const char *path, const char *account, const char *password, size_t passlen,
                   const char *token, size_t tokenlen, unsigned log2n, char *err, size_t errlen)
{
	unsigned char dk[KEY_LEN + CHECK_LEN], *buf, *h;
	size_t total = HEADER_LEN + tokenlen + TAG_LEN;
	enum oauth2_store_result rc = OAUTH2_STORE_IO;

	if (log2n == 0)
		log2n = OAUTH2_STORE_LOG2N_DEFAULT;
	if (!oauth2_store_account_ok(account) || tokenlen == 0 ||
	    tokenlen > OAUTH2_STORE_TOKEN_MAX || log2n < LOG2N_MIN || log2n > LOG2N_MAX) {
		say(err, errlen, "invalid account name or token for %s", path);
		return OAUTH2_STORE_IO;
	}
	if (!(buf = malloc(total))) {
		say(err, errlen, "%s: out of memory", path);
		return OAUTH2_STORE_IO;
	}
	h = buf;
	memcpy(h, MAGIC, MAGIC_LEN);
	h += MAGIC_LEN;
	*h++ = VERSION;
	*h++ = KDF_SCRYPT;
	*h++ = (unsigned char)log2n;
	*h++ = SCRYPT_R;
	*h++ = SCRYPT_P;
	if (RAND_bytes(h, SALT_LEN + NONCE_LEN) != 1 ||
	    derive(password, passlen, h, log2n, SCRYPT_R, SCRYPT_P, dk) < 0) {
		say(err, errlen, "%s: key derivation failed", path);
		goto out;
	}
	memcpy(h + SALT_LEN + NONCE_LEN, dk + KEY_LEN, CHECK_LEN);
	put32(h + SALT_LEN + NONCE_LEN + CHECK_LEN, (uint32_t)tokenlen);
	if (gcm(1, dk, h + SALT_LEN, buf, HEADER_LEN, account, (const unsigned char *)token,
	        tokenlen, buf + HEADER_LEN, buf + HEADER_LEN + tokenlen) < 0) {
		say(err, errlen, "%s: encryption failed", path);
		goto out;
	}
	rc = replace_file(path, buf, total, err, errlen);
out:
	OPENSSL_cleanse(dk, sizeof(dk));
	OPENSSL_cleanse(buf, total);
	free(buf);
	return rc;
}

/* The whole file into BUF (at most FILE_MAX bytes) and what fstat said of
 * it into ST; refuses what is not a regular file or is open to group or
 * others. */
static enum oauth2_store_result
slurp(const char *path, unsigned char *buf, size_t *n, struct stat *st, char *err, size_t errlen)
{
	ssize_t r;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		int e = errno;
		say(err, errlen, "%s: %s", path, strerror(e));
		return e == ENOENT  ? OAUTH2_STORE_NOT_FOUND
		       : e == ELOOP ? OAUTH2_STORE_INSECURE
		                    : OAUTH2_STORE_IO;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || (st->st_mode & 077)) {
		close(fd);
		say(err, errlen,
		    "%s: not a regular file of mode 0600 (chmod 600 it, or authorize again)", path);
		return OAUTH2_STORE_INSECURE;
	}
	while (got < FILE_MAX + 1) {
		r = read(fd, buf + got, FILE_MAX + 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			say(err, errlen, "%s: %s", path, strerror(e));
			return OAUTH2_STORE_IO;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*n = got;
	return OAUTH2_STORE_OK;
}

enum oauth2_store_result
oauth2_store_read(const char *path, const char *account, const char *password, size_t passlen,
                  char **token, size_t *tokenlen, char *err, size_t errlen)
{
	struct stat st;

	return oauth2_store_read_file(path, account, password, passlen, token, tokenlen, &st, err,
	                              errlen);
}

enum oauth2_store_result
oauth2_store_read_file(const char *path, const char *account, const char *password, size_t passlen,
                       char **token, size_t *tokenlen, struct stat *file, char *err, size_t errlen)
{
	unsigned char dk[KEY_LEN + CHECK_LEN], *buf, *h, *tag;
	enum oauth2_store_result rc;
	size_t n = 0, len;
	unsigned log2n, r, p;
	char *out = NULL;

	*token = NULL;
	*tokenlen = 0;
	if (!(buf = malloc(FILE_MAX + 1))) {
		say(err, errlen, "%s: out of memory", path);
		return OAUTH2_STORE_IO;
	}
	if ((rc = slurp(path, buf, &n, file, err, errlen)) != OAUTH2_STORE_OK)
		goto out;
	rc = OAUTH2_STORE_CORRUPT;
	h = buf + MAGIC_LEN;
	if (n < HEADER_LEN + TAG_LEN || memcmp(buf, MAGIC, MAGIC_LEN) != 0 || h[0] != VERSION ||
	    h[1] != KDF_SCRYPT) {
		say(err, errlen, "%s: token file damaged or not %s's (authorize again)", path,
		    account);
		goto out;
	}
	log2n = h[2];
	r = h[3];
	p = h[4];
	len = get32(h + 5 + SALT_LEN + NONCE_LEN + CHECK_LEN);
	if (log2n < LOG2N_MIN || log2n > LOG2N_MAX || r < 1 || r > R_MAX || p < 1 || p > P_MAX ||
	    len == 0 || len > OAUTH2_STORE_TOKEN_MAX || n != HEADER_LEN + len + TAG_LEN) {
		say(err, errlen, "%s: token file damaged or not %s's (authorize again)", path,
		    account);
		goto out;
	}
	h += 5;
	if (derive(password, passlen, h, log2n, r, p, dk) < 0) {
		rc = OAUTH2_STORE_IO;
		say(err, errlen, "%s: key derivation failed", path);
		goto out;
	}
	if (CRYPTO_memcmp(dk + KEY_LEN, h + SALT_LEN + NONCE_LEN, CHECK_LEN) != 0) {
		rc = OAUTH2_STORE_BAD_PASSWORD;
		say(err, errlen, "%s: wrong password for %s", path, account);
		goto wipe;
	}
	tag = buf + HEADER_LEN + len;
	if (!(out = malloc(len + 1))) {
		rc = OAUTH2_STORE_IO;
		say(err, errlen, "%s: out of memory", path);
		goto wipe;
	}
	if (gcm(0, dk, h + SALT_LEN, buf, HEADER_LEN, account, buf + HEADER_LEN, len,
	        (unsigned char *)out, tag) < 0) {
		oauth2_secret_free(out, len + 1);
		say(err, errlen, "%s: token file damaged or not %s's (authorize again)", path,
		    account);
		goto wipe;
	}
	out[len] = '\0';
	*token = out;
	*tokenlen = len;
	rc = OAUTH2_STORE_OK;
wipe:
	OPENSSL_cleanse(dk, sizeof(dk));
out:
	OPENSSL_cleanse(buf, FILE_MAX + 1);
	free(buf);
	return rc;
}
