/*
 * clock.c -- time helpers (see clock.h). Parsing is strict enough to reject
 * garbage and lenient enough for what Segment SDKs send (fractional seconds of
 * any length, 'Z' or +hh:mm / +hhmm offsets).
 */
#include "base/clock.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t clock_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes v (0 <= v < 10^n, else its last n digits) as n digits. */
static void put_digits(char *out, int v, int n)
{
	if (v < 0)
		v = -v;
	for (int i = n - 1; i >= 0; i--) {
		out[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

void clock_format_rfc3339(int64_t wall_ms, char *out)
{
	time_t sec = (time_t)(wall_ms >= 0 ? wall_ms / 1000 : (wall_ms - 999) / 1000);
	int ms = (int)(wall_ms - (int64_t)sec * 1000);
	struct tm tm;

	gmtime_r(&sec, &tm);
	/* By hand: every ingested event is stamped twice, and snprintf was a
	 * tenth of the loop thread's time. Same bytes as
	 * "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ". */
	put_digits(out, (tm.tm_year + 1900) % 10000, 4);
	out[4] = '-';
	put_digits(out + 5, (tm.tm_mon + 1) % 100, 2);
	out[7] = '-';
	put_digits(out + 8, tm.tm_mday % 100, 2);
	out[10] = 'T';
	put_digits(out + 11, tm.tm_hour % 100, 2);
	out[13] = ':';
	put_digits(out + 14, tm.tm_min % 100, 2);
	out[16] = ':';
	put_digits(out + 17, tm.tm_sec % 100, 2);
	out[19] = '.';
	put_digits(out + 20, ms % 1000, 3);
	out[23] = 'Z';
	out[24] = '\0';
}

static int digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)**p))
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*out = v;
	return 0;
}

/* Days from civil date, proleptic Gregorian (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

int clock_parse_rfc3339(const char *s, int64_t *wall_ms)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	const char *p = s;
	int y, mo, d, h = 0, mi = 0, se = 0, ms = 0, off_min = 0;

	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
		return -1;
	if (*p == '\0')
		goto done;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -1;
	p++;
	if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
		return -1;
	if (*p == ':') {
		p++;
		if (digits(&p, 2, &se))
			return -1;
	}
	if (h > 23 || mi > 59 || se > 60)
		return -1;
	if (*p == '.' || *p == ',') {
		int scale = 100, n = 0;

		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p)) {
			ms += (*p - '0') * scale;
			scale /= 10;
			p++;
			if (++n > 12)
				return -1;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh, om = 0;

		p++;
		if (digits(&p, 2, &oh))
			return -1;
		if (*p == ':')
			p++;
		if (*p && digits(&p, 2, &om))
			return -1;
		if (oh > 23 || om > 59)
			return -1;
		off_min = sign * (oh * 60 + om);
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
done:
	if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return -1;
	*wall_ms = (days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
		    mi * 60 + se - off_min * 60) *
			   1000 +
		   ms;
	return 0;
}
