/*
 * test_clock.c -- RFC 3339 formatting and parsing: the hand-written formatter
 * against snprintf over many instants, and the round trip through the parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"

static void reference(int64_t ms, char out[64])
{
	time_t sec = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	int rem = (int)(ms - (int64_t)sec * 1000);
	struct tm tm;

	gmtime_r(&sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem);
}

static void format_matches_snprintf(void **state)
{
	char got[32], want[64];
	uint64_t x = 88172645463325252ULL;

	(void)state;
	for (int i = 0; i < 200000; i++) {
		int64_t ms;

		/* xorshift: instants from 1970 to 9999 */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ms = (int64_t)(x % 253402300799999ULL);
		if (i < 3)
			ms = i == 0 ? 0 : i == 1 ? 253402300799999LL : 1796162400123LL;
		clock_format_rfc3339(ms, got);
		reference(ms, want);
		assert_string_equal(got, want);
	}
	clock_format_rfc3339(1796162400123LL, got);
	assert_string_equal(got, "2026-12-01T22:00:00.123Z");
}

static void format_parse_round_trip(void **state)
{
	char buf[32];
	int64_t back;

	(void)state;
	for (int64_t ms = 0; ms < 4102444800000LL; ms += 7919LL * 86400 * 1000 + 12345) {
		clock_format_rfc3339(ms, buf);
		assert_int_equal(clock_parse_rfc3339(buf, &back), 0);
		assert_int_equal(back, ms);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(format_matches_snprintf),
		cmocka_unit_test(format_parse_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
