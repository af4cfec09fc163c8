/* [oauth2:NAME] sections: presets fill in the real endpoints and scopes,
 * explicit URLs override them, every mistake is a FILE:LINE error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <postern/config.h>
#include <postern/config_oauth2.h>

#define SERVICE                                                                                    \
	"[imap]\nprotocol = imap\nlisten = 127.0.0.1:1143\ntls = off\nbackend = 127.0.0.1:1\n"

static char errs[4096];

static struct config *
load(const char *text)
{
	FILE *f = fmemopen(errs, sizeof(errs), "w");
	struct config *cfg;

	assert_non_null(f);
	memset(errs, 0, sizeof(errs));
	cfg = config_load_string("t.ini", text, false, f);
	fclose(f);
	return cfg;
}

static void
test_microsoft_preset_with_tenant(void **state)
{
	struct config *cfg = load(
	        SERVICE "[oauth2:m365]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\n"
	                "client_id = 11111111-2222-3333-4444-555555555555\n");
	const struct oauth2_provider *p;

	(void)state;
	assert_non_null(cfg);
	p = config_oauth2_find(cfg->oauth2, "m365");
	assert_non_null(p);
	assert_int_equal(p->preset, OAUTH2_MICROSOFT);
	assert_string_equal(p->token_url,
	                    "https://login.microsoftonline.com/contoso.onmicrosoft.com/"
	                    "oauth2/v2.0/token");
	assert_string_equal(p->device_url, "https://login.microsoftonline.com/"
	                                   "contoso.onmicrosoft.com/oauth2/v2.0/devicecode");
	assert_string_equal(p->authorization_url, "https://login.microsoftonline.com/"
	                                          "contoso.onmicrosoft.com/oauth2/v2.0/authorize");
	assert_non_null(strstr(p->scope, "offline_access"));
	assert_non_null(strstr(p->scope, "https://outlook.office.com/IMAP.AccessAsUser.All"));
	assert_non_null(strstr(p->scope, "https://outlook.office.com/SMTP.Send"));
	assert_null(p->client_secret);
	assert_string_equal(p->token_dir, "/var/lib/postern/oauth2/m365");
	assert_true(p->timeout == 10);
	assert_null(config_oauth2_find(cfg->oauth2, "other"));
	config_unref(cfg);
}

/* Google: loopback only (no device grant for mail scopes), a secret. */
static void
test_google_preset_and_overrides(void **state)
{
	struct config *cfg =
	        load(SERVICE "[oauth2:gmail]\nprovider = google\nclient_id = x\n"
	                     "client_secret = y\nscope = https://mail.google.com/ email\n"
	                     "token_dir = /srv/tok\ntimeout = 30s\n");
	const struct oauth2_provider *p;

	(void)state;
	assert_non_null(cfg);
	p = config_oauth2_find(cfg->oauth2, "gmail");
	assert_string_equal(p->authorization_url, "https://accounts.google.com/o/oauth2/v2/auth");
	assert_string_equal(p->token_url, "https://oauth2.googleapis.com/token");
	assert_null(p->device_url);
	assert_string_equal(p->scope, "https://mail.google.com/ email");
	assert_string_equal(p->token_dir, "/srv/tok");
	assert_true(p->timeout == 30);
	config_unref(cfg);
	assert_null(load(SERVICE "[oauth2:gmail]\nprovider = google\nclient_id = x\n"));
	assert_non_null(strstr(errs, "t.ini:6: [oauth2:gmail]: provider = google needs "
	                             "client_secret"));
}

static void
test_mistakes_reported_by_line(void **state)
{
	(void)state;
	assert_null(load(SERVICE "[oauth2:x]\nclient_id = a\ntoken_url = http://h/t\n"
	                         "device_authorization_url = https://h/d\nscope = s\n"
	                         "client_id = b\ncolour = red\ntimeout = 0\ntenant = t\n"
	                         "token_dir = rel\n  cont\n[oauth2:x]\n[oauth2:]\n[oauth2:a b]\n"
	                         "[oauth2:y]\nprovider = yahoo\n"));
	assert_non_null(strstr(errs, "t.ini:8: token_url: must be an https:// URL"));
	assert_non_null(strstr(errs, "t.ini:11: duplicate key 'client_id' (first at line 7)"));
	assert_non_null(strstr(errs, "t.ini:12: unknown key 'colour' in [oauth2:x]"));
	assert_non_null(strstr(errs, "t.ini:13: timeout = 0: expected seconds from 1 to 300"));
	assert_non_null(strstr(errs, "t.ini:14: tenant: only for provider = microsoft"));
	assert_non_null(strstr(errs, "t.ini:15: token_dir: must be an absolute path"));
	assert_non_null(strstr(errs, "t.ini:16: continuation line not allowed in [oauth2:x]"));
	assert_non_null(strstr(errs, "t.ini:17: duplicate section [oauth2:x] (first at line 6)"));
	assert_non_null(strstr(errs, "t.ini:18: invalid provider name in [oauth2:...]"));
	assert_non_null(strstr(errs, "t.ini:19: invalid provider name in [oauth2:...]"));
	assert_non_null(strstr(errs, "t.ini:21: provider = yahoo: expected microsoft, google or "
	                             "generic"));
	assert_non_null(strstr(errs, "t.ini:20: [oauth2:y]: client_id is required"));
	assert_non_null(strstr(errs, "t.ini:20: [oauth2:y]: token_url is required"));
	assert_non_null(strstr(errs, "t.ini:20: [oauth2:y]: set authorization_url or "
	                             "device_authorization_url"));
}

#define PROVIDER                                                                                   \
	"[oauth2:fake]\nclient_id = a\ntoken_url = https://h/t\n"                                  \
	"device_authorization_url = https://h/d\nscope = s\n"

static void
test_backend_auth_names_a_provider_section(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load("[imap]\nprotocol = imap\nlisten = 127.0.0.1:1143\ntls = off\n"
	           "backend = 127.0.0.1:993\nbackend_tls = implicit\nbackend_auth = "
	           "oauth2:fake\n" PROVIDER "sasl_mechanism = oauthbearer\n");
	assert_non_null(cfg);
	assert_non_null(cfg->services[0].oauth2);
	assert_string_equal(cfg->services[0].oauth2->name, "fake");
	assert_true(cfg->services[0].oauth2->oauthbearer);
	config_unref(cfg);
	cfg = load(SERVICE "backend_auth = passthrough\n");
	assert_non_null(cfg);
	assert_null(cfg->services[0].oauth2);
	config_unref(cfg);
}

static void
test_backend_auth_misuse_reported_by_line(void **state)
{
	(void)state;
	/* no backend TLS; a provider that does not exist; not a known value;
	 * a protocol without logins */
	assert_null(load(SERVICE "backend_auth = oauth2:fake\n"
	                         "[imap2]\nprotocol = imap\nlisten = 127.0.0.1:1144\ntls = off\n"
	                         "backend = 127.0.0.1:993\nbackend_tls = implicit\n"
	                         "backend_auth = oauth2:nosuch\n"
	                         "[imap3]\nprotocol = imap\nlisten = 127.0.0.1:1145\ntls = off\n"
	                         "backend = 127.0.0.1:993\nbackend_tls = implicit\n"
	                         "backend_auth = token\n"
	                         "[raw]\nprotocol = raw\nlisten = 127.0.0.1:1110\ntls = off\n"
	                         "backend = 127.0.0.1:995\nbackend_tls = implicit\n"
	                         "backend_auth = oauth2:fake\n" PROVIDER
	                         "sasl_mechanism = plain\n"));
	assert_non_null(strstr(errs, "t.ini:6: backend_auth = oauth2 needs backend_tls"));
	assert_non_null(strstr(errs, "t.ini:13: backend_auth: no section [oauth2:nosuch]"));
	assert_non_null(strstr(errs, "t.ini:20: backend_auth = token: expected passthrough or "
	                             "oauth2:NAME"));
	assert_non_null(
	        strstr(errs, "t.ini:27: backend_auth = oauth2 needs protocol imap, pop3 or smtp"));
	assert_non_null(strstr(errs, "t.ini:33: sasl_mechanism = plain: expected xoauth2 or "
	                             "oauthbearer"));
}

static void
test_no_oauth2_section_no_state(void **state)
{
	struct config *cfg = load(SERVICE);

	(void)state;
	assert_non_null(cfg);
	assert_null(cfg->oauth2);
	assert_null(config_oauth2_find(cfg->oauth2, "x"));
	config_unref(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_microsoft_preset_with_tenant),
	        cmocka_unit_test(test_google_preset_and_overrides),
	        cmocka_unit_test(test_mistakes_reported_by_line),
	        cmocka_unit_test(test_no_oauth2_section_no_state),
	        cmocka_unit_test(test_backend_auth_names_a_provider_section),
	        cmocka_unit_test(test_backend_auth_misuse_reported_by_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
