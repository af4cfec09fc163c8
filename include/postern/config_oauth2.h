/* [oauth2:NAME] sections: an OAuth 2.0 provider registration (endpoints,
 * client id and secret, where the encrypted refresh tokens live), used by
 * `postern oauth2-authorize NAME ACCOUNT`. config.c hands these sections'
 * lines to this file; the keys are in postern.ini(5). */
#ifndef POSTERN_CONFIG_OAUTH2_H
#define POSTERN_CONFIG_OAUTH2_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/oauth2_http.h>

enum oauth2_preset { OAUTH2_GENERIC, OAUTH2_MICROSOFT, OAUTH2_GOOGLE };

struct oauth2_provider {
	char *name;
	int line; /* the section header's line */
	enum oauth2_preset preset;
	/* After config_oauth2_check: the preset's values where not set. NULL
	 * authorization_url or device_url: that grant is not available. */
	char *tenant; /* microsoft only */
	char *authorization_url, *device_url, *token_url, *scope;
	char *client_id, *client_secret;
	char *token_dir;
	char *ca; /* CA file for the provider's HTTPS; NULL: system store */
	double timeout;
	bool oauthbearer; /* sasl_mechanism: RFC 7628's OAUTHBEARER, else XOAUTH2 */
	/* What the logins of this configuration learnt (oauth2_login.c): it
	 * lives and dies with the configuration, so a reload starts afresh. */
	struct oauth2_cache_slot *cache;
	int seen[16]; /* line of each key, by its index in config_oauth2.c */
};

/* The one mutable part of a loaded section: a place for oauth2_login.c's
 * per-account cache, which FREE (set by whoever fills it) wipes and frees
 * when the configuration goes. */
struct oauth2_cache_slot {
	void *cache;
	void (*free)(void *cache);
};

struct config_oauth2 {
	struct oauth2_provider *v;
	size_t n;
};

typedef void config_oauth2_report(void *arg, int line, const char *msg);

/* "[oauth2:NAME]" at LINE: opens a provider section (the target of the
 * following keys). Returns 0, or -1 with the reason in ERR (a bad or
 * repeated name); *O is created on first use. */
int config_oauth2_section(struct config_oauth2 **o, const char *name, int line, char *err,
                          size_t errlen);
/* A "KEY = VALUE" line of the section opened last; CONT: an indented
 * continuation line. Returns 0, or -1 with the reason in ERR. */
int config_oauth2_key(struct config_oauth2 *o, const char *key, const char *value, int line,
                      int cont, char *err, size_t errlen);
/* Rules across keys, presets filled in; each problem reported with its
 * line through REPORT. */
void config_oauth2_check(struct config_oauth2 *o, config_oauth2_report *report, void *arg);
void config_oauth2_free(struct config_oauth2 *o);

/* What oauth2_http needs of P (pointers into P). */
void config_oauth2_endpoint(const struct oauth2_provider *p, struct oauth2_endpoint *ep);

/* The provider named NAME, or NULL. */
const struct oauth2_provider *config_oauth2_find(const struct config_oauth2 *o, const char *name);

#endif
