/* The metrics text: one series per service whatever its name's length,
 * label values escaped, the build, start and reload gauges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/crypto.h>

#include <postern/metrics.h>

#define TEXT_CAP (1 << 20)

static char *
render(void)
{
	char *text = malloc(TEXT_CAP + 1);
	size_t n;

	assert_non_null(text);
	n = metrics_render(text, TEXT_CAP);
	assert_true(n < TEXT_CAP);
	text[n] = '\0';
	return text;
}

static size_t
count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
test_longest_service_name_keeps_one_series(void **state)
{
	char name[CONFIG_SERVICE_NAME_MAX + 1], line[CONFIG_SERVICE_NAME_MAX + 64];
	struct metrics_svc *first;
	char *text;

	(void)state;
	memset(name, 'l', CONFIG_SERVICE_NAME_MAX);
	name[CONFIG_SERVICE_NAME_MAX] = '\0';
	first = metrics_service(name);
	/* Every session of the service looks its counters up by name. */
	assert_ptr_equal(metrics_service(name), first);
	assert_ptr_equal(metrics_service(name), first);
	assert_string_equal(first->name, name);
	snprintf(line, sizeof(line), "postern_connections_total{service=\"%s\"} ", name);
	text = render();
	assert_int_equal(count(text, line), 1);
	free(text);
}

static void
test_label_values_escaped(void **state)
{
	char *text;

	(void)state;
	metrics_service("q\"b\\n\nx");
	text = render();
	assert_non_null(strstr(text, "postern_connections_total{service=\"q\\\"b\\\\n\\nx\"} 0\n"));
	free(text);
}

static void
test_build_info_names_version_and_openssl(void **state)
{
	char line[256];
	char *text;

	(void)state;
	snprintf(line, sizeof(line), "postern_build_info{version=\"%s\",openssl=\"%s\"} 1\n",
	         POSTERN_VERSION, OpenSSL_version(OPENSSL_VERSION_STRING));
	text = render();
	assert_non_null(strstr(text, line));
	assert_non_null(strstr(text, "\npostern_start_time_seconds "));
	free(text);
}

static void
test_reload_outcome_shown(void **state)
{
	char *text;

	(void)state;
	text = render();
	assert_non_null(strstr(text, "\npostern_config_reload_success 1\n"));
	free(text);
	metrics_config_reloaded(false);
	text = render();
	assert_non_null(strstr(text, "\npostern_config_reload_success 0\n"));
	free(text);
	metrics_config_reloaded(true);
	text = render();
	assert_non_null(strstr(text, "\npostern_config_reload_success 1\n"));
	assert_non_null(strstr(text, "\npostern_config_last_reload_timestamp_seconds "));
	free(text);
}

/* Last: fills the table. Names beyond it share one series, "other". */
static void
test_names_beyond_the_table_share_other(void **state)
{
	struct metrics_svc *first = NULL, *m;
	char name[32];
	char *text;

	(void)state;
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "fill%d", i);
		m = metrics_service(name);
		if (strcmp(m->name, "other") == 0 && first == NULL)
			first = m;
	}
	assert_non_null(first);
	assert_ptr_equal(metrics_service("fill299"), first);
	text = render();
	assert_int_equal(count(text, "postern_connections_total{service=\"other\"} "), 1);
	assert_int_equal(count(text, "postern_connections_total{service=\"fill0\"} "), 1);
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_longest_service_name_keeps_one_series),
	        cmocka_unit_test(test_label_values_escaped),
	        cmocka_unit_test(test_build_info_names_version_and_openssl),
	        cmocka_unit_test(test_reload_outcome_shown),
	        cmocka_unit_test(test_names_beyond_the_table_share_other),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
