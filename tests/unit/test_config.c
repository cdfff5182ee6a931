/*
 * test_config.c -- the option table, value parsing, INI loading and the sample.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/config.h"

static void defaults_match_the_design(void **state)
{
	struct config c;

	config_defaults(&c);
	assert_string_equal(c.listen, "127.0.0.1:8080");
	assert_string_equal(c.data_dir, "./data");
	assert_int_equal(c.max_body_bytes, 4 << 20);
	assert_int_equal(c.max_event_bytes, 32 << 10);
	assert_int_equal(c.max_batch_items, 1000);
	assert_int_equal(c.max_json_depth, 32);
	assert_int_equal(c.dedup_window_ms, 7LL * 86400 * 1000);
	assert_int_equal(c.max_identities, 50);
}

static void durations_and_sizes_parse(void **state)
{
	assert_int_equal(config_parse_duration_ms("250ms"), 250);
	assert_int_equal(config_parse_duration_ms("30s"), 30000);
	assert_int_equal(config_parse_duration_ms("5m"), 300000);
	assert_int_equal(config_parse_duration_ms("1.5h"), 5400000);
	assert_int_equal(config_parse_duration_ms("7d"), 604800000LL);
	assert_int_equal(config_parse_duration_ms("2w"), 1209600000LL);
	assert_int_equal(config_parse_duration_ms("42"), 42);
	assert_int_equal(config_parse_duration_ms("-1s"), -1);
	assert_int_equal(config_parse_duration_ms("5 years"), -1);
	assert_int_equal(config_parse_duration_ms(""), -1);
	assert_int_equal(config_parse_size("32k"), 32768);
	assert_int_equal(config_parse_size("4MiB"), 4 << 20);
	assert_int_equal(config_parse_size("1g"), 1LL << 30);
	assert_int_equal(config_parse_size("12"), 12);
	assert_int_equal(config_parse_size("12 parsecs"), -1);
}

static void set_validates_type_and_bounds(void **state)
{
	struct config c;
	struct nerr_msg m;

	config_defaults(&c);
	assert_int_equal(config_set(&c, "ingest", "max_batch_items", "500", &m), NERR_OK);
	assert_int_equal(c.max_batch_items, 500);
	assert_int_equal(config_set(&c, "ingest", "max_batch_items", "0", &m), NERR_INVAL);
	assert_string_equal(m.field, "ingest.max_batch_items");
	assert_int_equal(config_set(&c, "ingest", "max_batch_items", "ten", &m), NERR_INVAL);
	assert_int_equal(config_set(&c, "ingest", "dedup_window", "1h", &m), NERR_OK);
	assert_int_equal(c.dedup_window_ms, 3600000);
	assert_int_equal(config_set(&c, "ingest", "nope", "1", &m), NERR_INVAL);
	assert_non_null(strstr(m.message, "unknown option"));
	assert_int_equal(config_set(&c, "nosuch", "x", "1", &m), NERR_INVAL);
	assert_non_null(strstr(m.message, "unknown section"));
	char longv[300];
	memset(longv, 'k', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	assert_int_equal(config_set(&c, "server", "write_key", longv, &m), NERR_INVAL);
}

static void load_names_file_and_line(void **state)
{
	char path[] = "/tmp/nudge-conf-XXXXXX";
	int fd = mkstemp(path);
	struct config c;
	struct nerr_msg m;
	const char *text = "[server]\nlisten = 0.0.0.0:9000\n\n[profiles]\n"
			   "history_max_age = forever\n";

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	config_defaults(&c);
	assert_int_equal(config_load(&c, path, &m), NERR_INVAL);
	assert_non_null(strstr(m.message, ":5:"));
	assert_string_equal(m.field, "profiles.history_max_age");
	assert_string_equal(c.listen, "0.0.0.0:9000");
	unlink(path);
	assert_int_equal(config_load(&c, "/nonexistent/nudge.conf", &m), NERR_IO);
}

static void sample_config_documents_every_option_and_loads(void **state)
{
	size_t n;
	const struct config_option *o = config_options(&n);
	FILE *f = fopen("nudge.conf", "r");
	char *text;
	long len;
	struct config c;
	struct nerr_msg m;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = calloc(1, (size_t)len + 1);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	for (size_t i = 0; i < n; i++) {
		char needle[128];

		snprintf(needle, sizeof(needle), "\n%s =", o[i].name);
		if (!strstr(text, needle))
			fail_msg("nudge.conf does not document %s.%s", o[i].section, o[i].name);
	}
	free(text);
	config_defaults(&c);
	assert_int_equal(config_load(&c, "nudge.conf", &m), NERR_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults_match_the_design),
		cmocka_unit_test(durations_and_sizes_parse),
		cmocka_unit_test(set_validates_type_and_bounds),
		cmocka_unit_test(load_names_file_and_line),
		cmocka_unit_test(sample_config_documents_every_option_and_loads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
