/* The encrypted refresh-token file: it opens only with the password and
 * the account it was written for, any changed byte is noticed, it is mode
 * 0600, and a copy without the password gives nothing away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <postern/oauth2_store.h>

#define TOKEN "M.C507_BAY.0.U.-Crefresh-token-value!*xyz"
#define PW "correct horse battery"
#define ACCOUNT "alice@example.com"
#define FAST 10 /* the scrypt cost floor: tests need no slow KDF */

static char dir[64], path[128];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/postern-store.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(oauth2_store_path(dir, ACCOUNT, path, sizeof(path)), 0);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void
store(const char *pw, const char *token, unsigned log2n)
{
	char err[256];

	assert_int_equal(oauth2_store_write(path, ACCOUNT, pw, strlen(pw), token, strlen(token),
	                                    log2n, err, sizeof(err)),
	                 OAUTH2_STORE_OK);
}

static enum oauth2_store_result
load(const char *account, const char *pw, char **tok, size_t *len)
{
	char err[256];

	return oauth2_store_read(path, account, pw, strlen(pw), tok, len, err, sizeof(err));
}

static long
file_bytes(unsigned char *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, cap, f);
	fclose(f);
	return (long)n;
}

static void
put_bytes(const unsigned char *buf, size_t n)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, n, f), n);
	fclose(f);
	assert_int_equal(chmod(path, 0600), 0);
}

static void
test_round_trip_with_default_cost(void **state)
{
	char *tok;
	size_t len;

	(void)state;
	store(PW, TOKEN, 0);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_OK);
	assert_int_equal(len, strlen(TOKEN));
	assert_string_equal(tok, TOKEN);
	oauth2_secret_free(tok, len);
	/* a rotated token replaces the old one */
	store(PW, "rotated", FAST);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_OK);
	assert_string_equal(tok, "rotated");
	oauth2_secret_free(tok, len);
}

static void
test_wrong_password_is_its_own_error(void **state)
{
	char *tok = (char *)1;
	size_t len = 1;

	(void)state;
	store(PW, TOKEN, FAST);
	assert_int_equal(load(ACCOUNT, "correct horse batterY", &tok, &len),
	                 OAUTH2_STORE_BAD_PASSWORD);
	assert_null(tok);
	assert_int_equal(len, 0);
	assert_int_equal(load(ACCOUNT, "", &tok, &len), OAUTH2_STORE_BAD_PASSWORD);
}

/* Every byte matters: no single changed byte gives a token back. */
static void
test_tampered_byte_never_opens(void **state)
{
	unsigned char orig[512], buf[512];
	long n;
	char *tok;
	size_t len;

	(void)state;
	store(PW, TOKEN, FAST);
	n = file_bytes(orig, sizeof(orig));
	assert_true(n > 80);
	for (long i = 0; i < n; i++) {
		memcpy(buf, orig, (size_t)n);
		buf[i] ^= 0x01;
		put_bytes(buf, (size_t)n);
		assert_int_not_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_OK);
		assert_null(tok);
	}
	/* the ciphertext and the tag: damaged, not a wrong password */
	memcpy(buf, orig, (size_t)n);
	buf[n - 20] ^= 0x80;
	put_bytes(buf, (size_t)n);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_CORRUPT);
	put_bytes(orig, (size_t)n - 1);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_CORRUPT);
	put_bytes(orig, (size_t)n);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_OK);
	oauth2_secret_free(tok, len);
}

/* The account name is authenticated: bob's file copied to alice's name
 * does not open as alice's. */
static void
test_other_accounts_file_refused(void **state)
{
	char *tok;
	size_t len;

	(void)state;
	store(PW, TOKEN, FAST);
	assert_int_equal(load("bob@example.com", PW, &tok, &len), OAUTH2_STORE_CORRUPT);
	assert_null(tok);
}

static void
test_file_mode_0600_even_with_open_umask(void **state)
{
	struct stat st;
	mode_t old = umask(0);
	char *tok;
	size_t len;

	(void)state;
	store(PW, TOKEN, FAST);
	umask(old);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* a file others may read is refused, not used */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_INSECURE);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_OK);
	oauth2_secret_free(tok, len);
}

/* What a thief with the file alone has: no token text in it, and two
 * files of the same token under the same password share nothing (fresh
 * salt and nonce each time). */
static void
test_copied_file_useless_without_password(void **state)
{
	unsigned char a[512], b[512];
	long na, nb;

	(void)state;
	store(PW, TOKEN, FAST);
	na = file_bytes(a, sizeof(a));
	assert_null(memmem(a, (size_t)na, "refresh-token", 13));
	assert_null(memmem(a, (size_t)na, PW, strlen(PW)));
	store(PW, TOKEN, FAST);
	nb = file_bytes(b, sizeof(b));
	assert_int_equal(na, nb);
	/* salt, nonce, check and ciphertext all differ */
	assert_memory_not_equal(a + 13, b + 13, 16);
	assert_memory_not_equal(a + 29, b + 29, 12);
	assert_memory_not_equal(a + 61, b + 61, (size_t)na - 61);
}

static void
test_missing_file_and_bad_names(void **state)
{
	char *tok, out[64];
	size_t len;

	(void)state;
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_NOT_FOUND);
	assert_int_equal(oauth2_store_path("/x", "../etc/passwd", out, sizeof(out)), -1);
	assert_int_equal(oauth2_store_path("/x", ".hidden", out, sizeof(out)), -1);
	assert_int_equal(oauth2_store_path("/x", "a/b", out, sizeof(out)), -1);
	assert_int_equal(oauth2_store_path("/x", "", out, sizeof(out)), -1);
	assert_int_equal(oauth2_store_path("/x", "a b", out, sizeof(out)), -1);
	assert_int_equal(oauth2_store_path("/x", "bob+tag@example.org", out, sizeof(out)), 0);
	assert_string_equal(out, "/x/bob+tag@example.org");
	/* a symlink in place of the file is not followed */
	assert_int_equal(symlink("/etc/hostname", path), 0);
	assert_int_equal(load(ACCOUNT, PW, &tok, &len), OAUTH2_STORE_INSECURE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_round_trip_with_default_cost, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_wrong_password_is_its_own_error, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_tampered_byte_never_opens, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_other_accounts_file_refused, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_file_mode_0600_even_with_open_umask, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_copied_file_useless_without_password, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_missing_file_and_bad_names, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
