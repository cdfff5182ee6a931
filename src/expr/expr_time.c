/*
 * expr_time.c -- CEL timestamps and durations: parsing, printing, range checks and
 * the calendar getters, with IANA time zones through ICU.
 *
 * Design: a timestamp is (seconds since the Unix epoch, nanoseconds 0..999999999)
 * in UTC; a duration is (seconds, nanoseconds) with both parts of the same sign.
 * Calendar fields are computed here with the proleptic Gregorian calendar
 * (Hinnant's days_from_civil), so years 1..9999 work everywhere; ICU is asked only
 * for a zone's UTC offset at an instant.
 * Invariants: (1) a timestamp value is always within 0001-01-01T00:00:00Z ..
 * 9999-12-31T23:59:59.999999999Z; (2) a duration fits in int64 nanoseconds (about
 * +-292 years, as cel-go's time.Duration); arithmetic outside either is an error.
 * References: RFC 3339; cel-spec langdef.md "Timestamps and durations";
 * http://howardhinnant.github.io/date_algorithms.html; ICU ucal.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unicode/ucal.h>

#include "base/mem.h"
#include "expr/expr_int.h"

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;

	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && ((a < 0) != (b < 0)));
}

static bool digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool expr_ts_parse(const char *s, size_t len, int64_t *sec, int32_t *nsec)
{
	int y, mo, d, h, mi, se, ns = 0, off = 0;
	size_t i = 19;
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
	    s[16] != ':' || !digits(s + 17, 2, &se))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    se > 59)
		return false;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return false;
	if (s[i] == '.') {
		int nd = 0;

		i++;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (nd < 9) {
				ns = ns * 10 + (s[i] - '0');
				nd++;
			} else {
				return false;
			}
			i++;
		}
		if (nd == 0)
			return false;
		while (nd++ < 9)
			ns *= 10;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 <= len && (s[i] == '+' || s[i] == '-')) {
		int oh, om;

		if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
		    !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		off = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return false;
	}
	if (i != len)
		return false;
	*sec = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
	       mi * 60 + se - off;
	*nsec = ns;
	return *sec >= TS_MIN_SEC && *sec <= TS_MAX_SEC;
}

/* Appends ".fffffffff" without trailing zeros (nothing for 0). */
static int frac(char *out, int32_t ns)
{
	int n;

	if (ns == 0)
		return 0;
	n = sprintf(out, ".%09d", ns);
	while (out[n - 1] == '0')
		n--;
	out[n] = '\0';
	return n;
}

void expr_ts_format(int64_t sec, int32_t nsec, char *out)
{
	int64_t days = floor_div(sec, 86400), y;
	int64_t rem = sec - days * 86400;
	unsigned m, d;
	int n;

	civil_from_days(days, &y, &m, &d);
	n = sprintf(out, "%04d-%02u-%02uT%02d:%02d:%02d", (int)y, m, d, (int)(rem / 3600),
		    (int)(rem / 60 % 60), (int)(rem % 60));
	n += frac(out + n, nsec);
	strcpy(out + n, "Z");
}

/*
 * Parses a Go-style duration ("1h30m", "-1.5s", "300ms", "0") into seconds and
 * nanoseconds. Units: h, m, s, ms, us, µs, ns.
 */
bool expr_dur_parse(const char *s, size_t len, int64_t *sec, int32_t *nsec)
{
	__int128 total = 0;
	const __int128 limit = (__int128)DUR_MAX_NSEC;
	bool neg = false;
	size_t i = 0;

	if (i < len && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (len - i == 1 && s[i] == '0') {
		*sec = 0;
		*nsec = 0;
		return true;
	}
	if (i == len)
		return false;
	while (i < len) {
		__int128 whole = 0, fnum = 0, fden = 1, unit;
		bool any = false;

		while (i < len && s[i] >= '0' && s[i] <= '9') {
			whole = whole * 10 + (s[i++] - '0');
			any = true;
			if (whole > limit)
				return false;
		}
		if (i < len && s[i] == '.') {
			i++;
			while (i < len && s[i] >= '0' && s[i] <= '9') {
				if (fden < (__int128)1000000000000000000LL) {
					fnum = fnum * 10 + (s[i] - '0');
					fden *= 10;
				}
				i++;
				any = true;
			}
		}
		if (!any)
			return false;
		if (i + 2 <= len && memcmp(s + i, "ns", 2) == 0) {
			unit = 1;
			i += 2;
		} else if (i + 2 <= len && (memcmp(s + i, "us", 2) == 0)) {
			unit = 1000;
			i += 2;
		} else if (i + 3 <= len && (memcmp(s + i, "\xc2\xb5s", 3) == 0 ||
					    memcmp(s + i, "\xce\xbcs", 3) == 0)) {
			unit = 1000;
			i += 3;
		} else if (i + 2 <= len && memcmp(s + i, "ms", 2) == 0) {
			unit = 1000000;
			i += 2;
		} else if (i < len && s[i] == 's') {
			unit = 1000000000;
			i++;
		} else if (i < len && s[i] == 'm') {
			unit = 60LL * 1000000000;
			i++;
		} else if (i < len && s[i] == 'h') {
			unit = 3600LL * 1000000000;
			i++;
		} else {
			return false;
		}
		total += whole * unit + fnum * unit / fden;
		if (total > limit)
			return false;
	}
	if (neg)
		total = -total;
	*sec = (int64_t)(total / 1000000000);
	*nsec = (int32_t)(total % 1000000000);
	return true;
}

void expr_dur_format(int64_t sec, int32_t nsec, char *out)
{
	int n = 0;

	if (sec < 0 || nsec < 0) {
		out[n++] = '-';
		sec = -sec;
		nsec = -nsec;
	}
	n += sprintf(out + n, "%" PRId64, sec);
	n += frac(out + n, nsec);
	strcpy(out + n, "s");
}

struct expr_value expr_ts_make(struct ectx *c, int64_t sec, int64_t nsec)
{
	struct expr_value v = {.kind = EXPR_TIMESTAMP};

	(void)c;
	sec += floor_div(nsec, 1000000000);
	nsec -= floor_div(nsec, 1000000000) * 1000000000;
	if (sec < TS_MIN_SEC || sec > TS_MAX_SEC)
		return expr_eerr_static("timestamp out of range");
	v.as.sec = sec;
	v.nsec = (int32_t)nsec;
	return v;
}

struct expr_value expr_dur_make(struct ectx *c, int64_t sec, int64_t nsec)
{
	struct expr_value v = {.kind = EXPR_DURATION};
	__int128 total = (__int128)sec * 1000000000 + nsec;

	(void)c;
	if (total > (__int128)DUR_MAX_NSEC || total < -(__int128)DUR_MAX_NSEC)
		return expr_eerr_static("duration out of range");
	v.as.sec = (int64_t)(total / 1000000000);
	v.nsec = (int32_t)(total % 1000000000);
	return v;
}

/*
 * The UTC offset in seconds of zone tz at instant sec: "UTC", "+05:30", "-02:00",
 * "02:00" or an IANA name ("Europe/Paris"). Returns false for an unknown zone.
 */
/* A fixed offset ("UTC", "Z", "+05:30", "-02:00", "02:00"); false if not one. */
static bool fixed_offset(const char *s, size_t len, int64_t *off)
{
	size_t i = len && (s[0] == '+' || s[0] == '-') ? 1 : 0;
	int h, m;

	if ((len == 3 && memcmp(s, "UTC", 3) == 0) || (len == 1 && s[0] == 'Z')) {
		*off = 0;
		return true;
	}
	if (len - i == 5 && digits(s + i, 2, &h) && s[i + 2] == ':' &&
	    digits(s + i + 3, 2, &m) && m < 60) {
		*off = (h * 3600 + m * 60) * (s[0] == '-' ? -1 : 1);
		return true;
	}
	return false;
}

/* Opens an ICU calendar for an IANA zone name, or returns NULL if unknown. */
static UCalendar *open_zone(const char *s, size_t len)
{
	UChar id[128], canon[128];
	UErrorCode st = U_ZERO_ERROR;
	UBool sys;
	UCalendar *cal;

	if (len == 0 || len >= 128)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] >= 0x80)
			return NULL;
		id[i] = (UChar)s[i];
	}
	ucal_getCanonicalTimeZoneID(id, (int32_t)len, canon, 128, &sys, &st);
	if (U_FAILURE(st) || !sys)
		return NULL;
	cal = ucal_open(id, (int32_t)len, "en_US", UCAL_GREGORIAN, &st);
	if (U_FAILURE(st)) {
		ucal_close(cal);
		return NULL;
	}
	return cal;
}

static bool calendar_offset(UCalendar *cal, int64_t sec, int64_t *off)
{
	UErrorCode st = U_ZERO_ERROR;
	int32_t zo, dst;

	ucal_setMillis(cal, (UDate)sec * 1000.0, &st);
	zo = ucal_get(cal, UCAL_ZONE_OFFSET, &st);
	dst = ucal_get(cal, UCAL_DST_OFFSET, &st);
	if (U_FAILURE(st))
		return false;
	*off = (zo + dst) / 1000;
	return true;
}

uint32_t expr_zone_register(struct expr_program *prog, const char *id, size_t len)
{
	int64_t off;
	UCalendar *cal;

	if (fixed_offset(id, len, &off) || !(cal = open_zone(id, len)))
		return 0;
	prog->zones = xrealloc(prog->zones, (prog->nzones + 1) * sizeof(*prog->zones));
	prog->zones[prog->nzones].cal = cal;
	pthread_mutex_init(&prog->zones[prog->nzones].mu, NULL);
	return (uint32_t)++prog->nzones;
}

void expr_zones_free(struct expr_program *prog)
{
	for (size_t i = 0; i < prog->nzones; i++) {
		ucal_close(prog->zones[i].cal);
		pthread_mutex_destroy(&prog->zones[i].mu);
	}
	free(prog->zones);
	prog->zones = NULL;
	prog->nzones = 0;
}

/*
 * The UTC offset in seconds of zone tz at instant sec. A constant zone name was
 * opened at compile time (zone > 0: a locked lookup, no allocation); a computed
 * one opens and closes a calendar here. Returns false for an unknown zone.
 */
static bool zone_offset(struct ectx *c, uint32_t zone, const struct expr_value *tz,
			int64_t sec, int64_t *off)
{
	UCalendar *cal;
	bool ok;

	if (fixed_offset(tz->as.s, tz->len, off))
		return true;
	if (zone > 0 && zone <= c->prog->nzones) {
		struct expr_zone *z = &c->prog->zones[zone - 1];

		pthread_mutex_lock(&z->mu);
		ok = calendar_offset(z->cal, sec, off);
		pthread_mutex_unlock(&z->mu);
		return ok;
	}
	if (!(cal = open_zone(tz->as.s, tz->len)))
		return false;
	ok = calendar_offset(cal, sec, off);
	ucal_close(cal);
	return ok;
}

enum tfield {
	F_YEAR,
	F_MONTH,
	F_DATE,
	F_DOM,
	F_DOW,
	F_DOY,
	F_HOURS,
	F_MINUTES,
	F_SECONDS,
	F_MILLIS
};

static struct expr_value getter(struct ectx *c, const struct node *n, enum tfield f,
				const struct expr_value *a, size_t na, const char *name)
{
	if (a[0].kind == EXPR_DURATION && na == 1) {
		int64_t s = a[0].as.sec;

		switch (f) {
		case F_HOURS:
			return mk_int(s / 3600);
		case F_MINUTES:
			return mk_int(s / 60);
		case F_SECONDS:
			return mk_int(s);
		case F_MILLIS:
			return mk_int(a[0].nsec / 1000000);
		default:
			break;
		}
	}
	if (a[0].kind != EXPR_TIMESTAMP || (na == 2 && a[1].kind != EXPR_STRING))
		return expr_no_overload(c, name, a, na);
	int64_t sec = a[0].as.sec, off = 0, days, y;
	unsigned m, d;

	if (na == 2 && !zone_offset(c, n ? n->zone : 0, &a[1], sec, &off))
		return expr_eerr(c, "unknown time zone '%.*s'",
				 (int)(a[1].len > 64 ? 64 : a[1].len), a[1].as.s);
	sec += off;
	days = floor_div(sec, 86400);
	int64_t rem = sec - days * 86400;

	civil_from_days(days, &y, &m, &d);
	switch (f) {
	case F_YEAR:
		return mk_int(y);
	case F_MONTH:
		return mk_int(m - 1);
	case F_DATE:
		return mk_int(d);
	case F_DOM:
		return mk_int(d - 1);
	case F_DOW:
		return mk_int((days % 7 + 11) % 7);
	case F_DOY:
		return mk_int(days - days_from_civil(y, 1, 1));
	case F_HOURS:
		return mk_int(rem / 3600);
	case F_MINUTES:
		return mk_int(rem / 60 % 60);
	case F_SECONDS:
		return mk_int(rem % 60);
	case F_MILLIS:
		return mk_int(a[0].nsec / 1000000);
	}
	return expr_no_overload(c, name, a, na);
}

#define GETTER(fn, field, nm)                                                            \
	static struct expr_value fn(struct ectx *c, const struct node *n,                \
				    const struct expr_value *a, size_t na)               \
	{                                                                                \
		return getter(c, n, field, a, na, nm);                                   \
	}
GETTER(g_year, F_YEAR, "getFullYear")
GETTER(g_month, F_MONTH, "getMonth")
GETTER(g_date, F_DATE, "getDate")
GETTER(g_dom, F_DOM, "getDayOfMonth")
GETTER(g_dow, F_DOW, "getDayOfWeek")
GETTER(g_doy, F_DOY, "getDayOfYear")
GETTER(g_hours, F_HOURS, "getHours")
GETTER(g_minutes, F_MINUTES, "getMinutes")
GETTER(g_seconds, F_SECONDS, "getSeconds")
GETTER(g_millis, F_MILLIS, "getMilliseconds")

builtin_fn expr_time_getter(const char *name, size_t na)
{
	static const struct {
		const char *name;
		builtin_fn fn;
	} t[] = {
		{"getFullYear", g_year},   {"getMonth", g_month},
		{"getDate", g_date},	   {"getDayOfMonth", g_dom},
		{"getDayOfWeek", g_dow},   {"getDayOfYear", g_doy},
		{"getHours", g_hours},	   {"getMinutes", g_minutes},
		{"getSeconds", g_seconds}, {"getMilliseconds", g_millis},
	};
	if (na < 1 || na > 2)
		return NULL;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(t[i].name, name) == 0)
			return t[i].fn;
	return NULL;
}
