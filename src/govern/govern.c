/*
 * govern.c -- governance rules and the send decision: frequency caps, quiet
 * hours, throttles, journey entry caps and bounce counting (DESIGN.md §10).
 *
 * Design: rule documents are stored in STORE_CF_CAPS under "r/<kind>/<id>" as
 * given (plus "id") and compiled into `struct rule` in memory at govern_open and
 * on every put/delete, so a decision reads no rule from disk. Decisions are made
 * on the engine thread inside its batch; everything a decision counts is written
 * to that batch, so counts commit atomically with the envelope and a second
 * decision in the same batch reads the first one's count (no race past a cap).
 *
 * Cost of a decision: no matching rule -> no store read; matching caps -> one
 * read and one write of the profile's cap record whatever the number of rules;
 * quiet hours -> no read (a per-zone cache of the UTC offset and the interval it
 * is valid for, filled from ICU); throttles -> one read and write per matching
 * throttle.
 *
 * On-disk format (STORE_CF_CAPS):
 *   "r/<kind>/<id>"            rule JSON document
 *   "c/" u64be(profile)        cap windows: records of
 *                              u8 idlen, id, u16be n, n x u64be send time (ms, ascending)
 *   "e/" u64be(profile)        entry-cap windows, same record format
 *   "t/s/<journey>/<step>"     step throttle: u64be next free slot (µs)
 *   "t/c/<channel>"            channel throttle: same
 *   "b/<channel>:<address>"    consecutive soft bounces: u32be
 * A window record keeps at most the rule's max newest times inside its window:
 * the cap is reached exactly when the max-th newest send is inside the window, so
 * the count is exact. Records of deleted rules are dropped at the next write.
 *
 * Invariants: (1) a SEND verdict and the counts it implies are in the same batch;
 * (2) rules in memory equal the rules in the batch the engine commits (put/delete
 * change both); (3) a throttle slot is given to one message only.
 * Threading: see govern.h.
 * References: ICU ucal (time zones), RFC 4180 (CSV, import.c).
 */
#include "govern/govern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#include "base/id.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "store/store.h"

#define DAY_MS	     86400000LL
#define MINUTE_MS    60000LL
#define ZONE_BYTES   64
#define ZONE_CACHE   2048
#define CHANNELS_ALL 7u

enum kind { K_CAPS, K_QUIET, K_ENTRY, K_THROTTLE, K__COUNT };

static const char *const kind_names[K__COUNT] = {
	GOVERN_KIND_CAPS, GOVERN_KIND_QUIET_HOURS, GOVERN_KIND_ENTRY_CAPS,
	GOVERN_KIND_THROTTLES};

static const char *const channel_names[3] = {"email", "sms", "push"};
static const char *const day_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

/* One quiet window: starts on the days in `days` (bit 0 = Monday) at from_min. */
struct qwin {
	unsigned days;
	int from_min, to_min; /* to_min <= from_min: ends the next day */
};

/* A compiled rule. Owned by its kind's list in struct govern. */
struct rule {
	char id[GOVERN_MAX_ID_BYTES + 1];
	enum kind kind;
	unsigned chmask; /* channels it applies to (bit = channel index) */
	char *category;	 /* NULL: every category but transactional */
	unsigned max;
	int64_t window_ms;
	struct qwin *wins; /* quiet hours */
	unsigned nwins;
	char *fallback_zone; /* NULL: UTC */
	bool drop;
	int64_t max_delay_ms;
	char **journeys; /* entry caps */
	unsigned njourneys;
	char *journey, *step; /* step throttle; both NULL for a channel throttle */
	int64_t interval_us;  /* throttles: 1 s / rate */
};

struct rules {
	struct rule **v; /* ordered by id */
	unsigned n, cap;
	struct map by_id;
};

/* A time zone's UTC offset and the interval it holds for. */
struct zone {
	UCalendar *cal; /* NULL: not a valid zone */
	int32_t off_ms;
	int64_t from_ms, until_ms;
};

struct govern {
	struct store *s;
	struct govern_config cfg;
	struct rules r[K__COUNT];
	struct map zones; /* name -> struct zone */
	struct zone utc;
};

/* ---------------------------------------------------------------- helpers */

static int channel_index(const char *ch)
{
	for (int i = 0; ch && i < 3; i++)
		if (strcmp(ch, channel_names[i]) == 0)
			return i;
	return -1;
}

static enum kind kind_of(const char *kind)
{
	for (int i = 0; kind && i < K__COUNT; i++)
		if (strcmp(kind, kind_names[i]) == 0)
			return (enum kind)i;
	return K__COUNT;
}

/*
 * Parses a duration: NUMBER UNIT groups with units ms, s, m, h, d, w ("30s",
 * "1h30m", "7d"). Returns false for anything else, zero, or more than max_ms.
 */
static bool duration_parse(const char *s, int64_t max_ms, int64_t *out)
{
	int64_t total = 0;

	if (!s || !*s)
		return false;
	while (*s) {
		int64_t n = 0, unit;

		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9') {
			n = n * 10 + (*s++ - '0');
			if (n > 1000000000LL)
				return false;
		}
		if (s[0] == 'm' && s[1] == 's')
			unit = 1, s += 2;
		else if (*s == 's')
			unit = 1000, s++;
		else if (*s == 'm')
			unit = MINUTE_MS, s++;
		else if (*s == 'h')
			unit = 3600000LL, s++;
		else if (*s == 'd')
			unit = DAY_MS, s++;
		else if (*s == 'w')
			unit = 7 * DAY_MS, s++;
		else
			return false;
		total += n * unit;
		if (total > max_ms)
			return false;
	}
	if (total <= 0)
		return false;
	*out = total;
	return true;
}

/* "HH:MM" to minutes; "24:00" only when allow_24. Returns -1 when invalid. */
static int hhmm(const char *s, bool allow_24)
{
	int h, m;

	if (!s || strlen(s) != 5 || s[2] != ':' || s[0] < '0' || s[0] > '9' ||
	    s[1] < '0' || s[1] > '9' || s[3] < '0' || s[3] > '5' || s[4] < '0' ||
	    s[4] > '9')
		return -1;
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h == 24 && m == 0 && allow_24)
		return 24 * 60;
	if (h > 23)
		return -1;
	return h * 60 + m;
}

static bool zone_valid(const char *name)
{
	UChar u[ZONE_BYTES + 1], canon[ZONE_BYTES * 2];
	UErrorCode st = U_ZERO_ERROR;
	UBool system = 0;
	int32_t ulen = 0;
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > ZONE_BYTES)
		return false;
	u_strFromUTF8(u, ZONE_BYTES + 1, &ulen, name, (int32_t)n, &st);
	if (U_FAILURE(st))
		return false;
	ucal_getCanonicalTimeZoneID(u, ulen, canon, ZONE_BYTES * 2, &system, &st);
	return U_SUCCESS(st) && system;
}

/* ------------------------------------------------------------- validation */

static enum nerr bad(struct nerr_msg *msg, const char *field, const char *what)
{
	return nerr_set(msg, NERR_INVAL, field, "%s", what);
}

static bool is_int(struct json_object *v)
{
	return json_object_is_type(v, json_type_int);
}

/* Checks "channels" (optional array of known channels); fills *mask. */
static enum nerr check_channels(struct json_object *doc, unsigned *mask,
				struct nerr_msg *msg)
{
	struct json_object *v;
	char f[64];

	*mask = CHANNELS_ALL;
	if (!json_object_object_get_ex(doc, "channels", &v))
		return NERR_OK;
	if (!json_object_is_type(v, json_type_array) ||
	    json_object_array_length(v) == 0 || json_object_array_length(v) > 3)
		return bad(msg, "channels",
			   "channels must be a non-empty array of email, sms, push");
	*mask = 0;
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		struct json_object *c = json_object_array_get_idx(v, i);
		int ci = json_object_is_type(c, json_type_string)
				 ? channel_index(json_object_get_string(c))
				 : -1;

		if (ci < 0) {
			snprintf(f, sizeof(f), "channels[%zu]", i);
			return bad(msg, f, "channel must be email, sms or push");
		}
		*mask |= 1u << ci;
	}
	return NERR_OK;
}

static enum nerr check_category(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *v;
	const char *c;

	if (!json_object_object_get_ex(doc, "category", &v))
		return NERR_OK;
	if (!json_object_is_type(v, json_type_string) ||
	    !id_valid(c = json_object_get_string(v), GOVERN_MAX_ID_BYTES))
		return bad(msg, "category",
			   "category must be a name of 1 to 64 letters, digits, _ or -");
	if (strcmp(c, "transactional") == 0)
		return bad(msg, "category",
			   "transactional messages skip caps and quiet hours");
	return NERR_OK;
}

static enum nerr check_max_window(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *v;
	int64_t ms;

	if (!json_object_object_get_ex(doc, "max", &v) || !is_int(v) ||
	    json_object_get_int64(v) < 1 || json_object_get_int64(v) > GOVERN_MAX_COUNT)
		return bad(msg, "max", "max must be an integer from 1 to 1000");
	if (!json_object_object_get_ex(doc, "window", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    !duration_parse(json_object_get_string(v), GOVERN_MAX_WINDOW_MS, &ms))
		return bad(msg, "window",
			   "window must be a duration like \"24h\" or \"7d\" (at most "
			   "400d)");
	return NERR_OK;
}

static enum nerr check_quiet(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *v, *w, *x;
	char f[64];
	int64_t ms;
	enum nerr rc;

	if ((rc = check_category(doc, msg)))
		return rc;
	if (!json_object_object_get_ex(doc, "windows", &v) ||
	    !json_object_is_type(v, json_type_array) ||
	    json_object_array_length(v) == 0 ||
	    json_object_array_length(v) > GOVERN_MAX_WINDOWS)
		return bad(msg, "windows", "windows must be an array of 1 to 50 windows");
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		int from, to;

		w = json_object_array_get_idx(v, i);
		snprintf(f, sizeof(f), "windows[%zu]", i);
		if (!json_object_is_type(w, json_type_object))
			return bad(msg, f, "a window is an object {days, from, to}");
		json_object_object_foreach(w, key, val)
		{
			(void)val;
			if (strcmp(key, "days") && strcmp(key, "from") &&
			    strcmp(key, "to")) {
				snprintf(f, sizeof(f), "windows[%zu].%.32s", i, key);
				return bad(msg, f, "unknown field");
			}
		}
		snprintf(f, sizeof(f), "windows[%zu].days", i);
		if (!json_object_object_get_ex(w, "days", &x) ||
		    !json_object_is_type(x, json_type_array) ||
		    json_object_array_length(x) == 0 || json_object_array_length(x) > 7)
			return bad(msg, f, "days must be an array of mon, tue, ... sun");
		for (size_t d = 0; d < json_object_array_length(x); d++) {
			struct json_object *dv = json_object_array_get_idx(x, d);
			bool ok = false;

			for (int k = 0;
			     k < 7 && json_object_is_type(dv, json_type_string); k++)
				ok |= strcmp(json_object_get_string(dv), day_names[k]) ==
				      0;
			if (!ok) {
				snprintf(f, sizeof(f), "windows[%zu].days[%zu]", i, d);
				return bad(msg, f,
					   "a day is one of mon, tue, wed, thu, fri, "
					   "sat, sun");
			}
		}
		snprintf(f, sizeof(f), "windows[%zu].from", i);
		if (!json_object_object_get_ex(w, "from", &x) ||
		    (from = hhmm(json_object_get_string(x), false)) < 0)
			return bad(msg, f,
				   "from must be a time \"HH:MM\" (00:00 to 23:59)");
		snprintf(f, sizeof(f), "windows[%zu].to", i);
		if (!json_object_object_get_ex(w, "to", &x) ||
		    (to = hhmm(json_object_get_string(x), true)) < 0)
			return bad(msg, f,
				   "to must be a time \"HH:MM\" (00:00 to 24:00)");
		if (from == to)
			return bad(msg, f, "to must differ from from");
	}
	if (json_object_object_get_ex(doc, "fallback_zone", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     !zone_valid(json_object_get_string(v))))
		return bad(msg, "fallback_zone",
			   "fallback_zone must be an IANA time zone like Europe/Paris");
	if (json_object_object_get_ex(doc, "action", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     (strcmp(json_object_get_string(v), "queue") &&
	      strcmp(json_object_get_string(v), "drop"))))
		return bad(msg, "action", "action must be \"queue\" or \"drop\"");
	if (json_object_object_get_ex(doc, "max_delay", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     !duration_parse(json_object_get_string(v), GOVERN_MAX_WINDOW_MS, &ms)))
		return bad(msg, "max_delay",
			   "max_delay must be a duration like \"24h\" (at most 400d)");
	return NERR_OK;
}

static enum nerr check_entry(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *v, *j;
	bool one = json_object_object_get_ex(doc, "journey", &j);
	bool many = json_object_object_get_ex(doc, "journeys", &v);
	char f[64];

	if (one == many)
		return bad(msg, "journeys",
			   "give either journeys (an array of journey ids) or journey");
	if (one && (!json_object_is_type(j, json_type_string) ||
		    !id_valid(json_object_get_string(j), GOVERN_MAX_ID_BYTES)))
		return bad(msg, "journey", "journey must be a journey id");
	if (many) {
		if (!json_object_is_type(v, json_type_array) ||
		    json_object_array_length(v) == 0 ||
		    json_object_array_length(v) > GOVERN_MAX_JOURNEYS)
			return bad(msg, "journeys",
				   "journeys must be an array of 1 to 100 journey ids");
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			j = json_object_array_get_idx(v, i);
			if (!json_object_is_type(j, json_type_string) ||
			    !id_valid(json_object_get_string(j), GOVERN_MAX_ID_BYTES)) {
				snprintf(f, sizeof(f), "journeys[%zu]", i);
				return bad(msg, f,
					   "a journey id is 1 to 64 letters, "
					   "digits, _ or -");
			}
		}
	}
	return check_max_window(doc, msg);
}

static enum nerr check_throttle(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *v, *j, *st, *ch;
	bool has_j = json_object_object_get_ex(doc, "journey", &j);
	bool has_s = json_object_object_get_ex(doc, "step", &st);
	bool has_c = json_object_object_get_ex(doc, "channel", &ch);
	double rate;

	if (has_c && (has_j || has_s))
		return bad(msg, "channel",
			   "a throttle is per journey step or per channel, not both");
	if (has_c) {
		if (!json_object_is_type(ch, json_type_string) ||
		    channel_index(json_object_get_string(ch)) < 0)
			return bad(msg, "channel", "channel must be email, sms or push");
	} else {
		if (!has_j || !json_object_is_type(j, json_type_string) ||
		    !id_valid(json_object_get_string(j), GOVERN_MAX_ID_BYTES))
			return bad(msg, "journey", "journey must be a journey id");
		if (!has_s || !json_object_is_type(st, json_type_string) ||
		    !id_valid(json_object_get_string(st), GOVERN_MAX_ID_BYTES))
			return bad(msg, "step", "step must be a step id");
	}
	if (!json_object_object_get_ex(doc, "rate", &v) ||
	    !(is_int(v) || json_object_is_type(v, json_type_double)))
		return bad(msg, "rate", "rate must be a number of messages per second");
	rate = json_object_get_double(v);
	if (!(rate > 0 && rate <= GOVERN_MAX_RATE) || 1e6 / rate < 1)
		return bad(msg, "rate", "rate must be above 0 and at most 100000");
	return NERR_OK;
}

static const char *const allowed[K__COUNT][9] = {
	[K_CAPS] = {"id", "channels", "category", "max", "window", NULL},
	[K_QUIET] = {"id", "channels", "category", "windows", "fallback_zone", "action",
		     "max_delay", NULL},
	[K_ENTRY] = {"id", "journeys", "journey", "max", "window", NULL},
	[K_THROTTLE] = {"id", "journey", "step", "channel", "rate", NULL},
};

enum nerr govern_rule_check(const char *kind, const char *id, struct json_object *doc,
			    struct nerr_msg *msg)
{
	enum kind k = kind_of(kind);
	struct json_object *v;
	unsigned mask;
	enum nerr rc;

	if (k == K__COUNT)
		return nerr_set(
			msg, NERR_NOTFOUND, "kind",
			"kind must be caps, quiet-hours, entry-caps or throttles");
	if (!id_valid(id, GOVERN_MAX_ID_BYTES))
		return bad(msg, "id", "a rule id is 1 to 64 letters, digits, _ or -");
	if (!json_object_is_type(doc, json_type_object))
		return bad(msg, "", "a rule is a JSON object");
	json_object_object_foreach(doc, key, val)
	{
		bool ok = false;

		(void)val;
		for (int i = 0; allowed[k][i]; i++)
			ok |= strcmp(key, allowed[k][i]) == 0;
		if (!ok)
			return nerr_set(msg, NERR_INVAL, key, "unknown field %.64s", key);
	}
	if (json_object_object_get_ex(doc, "id", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     strcmp(json_object_get_string(v), id) != 0))
		return bad(msg, "id", "id must match the rule's id in the path");
	switch (k) {
	case K_CAPS:
		if ((rc = check_channels(doc, &mask, msg)) ||
		    (rc = check_category(doc, msg)))
			return rc;
		return check_max_window(doc, msg);
	case K_QUIET:
		if ((rc = check_channels(doc, &mask, msg)))
			return rc;
		return check_quiet(doc, msg);
	case K_ENTRY:
		return check_entry(doc, msg);
	case K_THROTTLE:
		return check_throttle(doc, msg);
	default:
		ASSERT(0);
	}
	return NERR_OK;
}

/* ------------------------------------------------------------ compile / keep */

static const char *sget(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static void rule_free(struct rule *r)
{
	if (!r)
		return;
	free(r->category);
	free(r->wins);
	free(r->fallback_zone);
	for (unsigned i = 0; i < r->njourneys; i++)
		free(r->journeys[i]);
	free(r->journeys);
	free(r->journey);
	free(r->step);
	free(r);
}

/* Compiles a checked document. */
static struct rule *rule_compile(enum kind k, const char *id, struct json_object *doc)
{
	struct rule *r = xcalloc(1, sizeof(*r));
	struct json_object *v;
	const char *s;

	snprintf(r->id, sizeof(r->id), "%s", id);
	r->kind = k;
	check_channels(doc, &r->chmask, NULL);
	if ((s = sget(doc, "category")))
		r->category = xstrdup(s);
	if (json_object_object_get_ex(doc, "max", &v))
		r->max = (unsigned)json_object_get_int64(v);
	if ((s = sget(doc, "window")))
		duration_parse(s, GOVERN_MAX_WINDOW_MS, &r->window_ms);
	if (k == K_QUIET) {
		json_object_object_get_ex(doc, "windows", &v);
		r->nwins = (unsigned)json_object_array_length(v);
		r->wins = xcalloc(r->nwins, sizeof(*r->wins));
		for (unsigned i = 0; i < r->nwins; i++) {
			struct json_object *w = json_object_array_get_idx(v, i), *d;

			json_object_object_get_ex(w, "days", &d);
			for (size_t j = 0; j < json_object_array_length(d); j++)
				for (int n = 0; n < 7; n++)
					if (!strcmp(json_object_get_string(
							    json_object_array_get_idx(d,
										      j)),
						    day_names[n]))
						r->wins[i].days |= 1u << n;
			r->wins[i].from_min = hhmm(sget(w, "from"), false);
			r->wins[i].to_min = hhmm(sget(w, "to"), true);
		}
		if ((s = sget(doc, "fallback_zone")))
			r->fallback_zone = xstrdup(s);
		r->drop = (s = sget(doc, "action")) && strcmp(s, "drop") == 0;
		r->max_delay_ms = GOVERN_DEFAULT_DELAY_MS;
		if ((s = sget(doc, "max_delay")))
			duration_parse(s, GOVERN_MAX_WINDOW_MS, &r->max_delay_ms);
	}
	if (k == K_ENTRY) {
		if ((s = sget(doc, "journey"))) {
			r->njourneys = 1;
			r->journeys = xcalloc(1, sizeof(char *));
			r->journeys[0] = xstrdup(s);
		} else {
			json_object_object_get_ex(doc, "journeys", &v);
			r->njourneys = (unsigned)json_object_array_length(v);
			r->journeys = xcalloc(r->njourneys, sizeof(char *));
			for (unsigned i = 0; i < r->njourneys; i++)
				r->journeys[i] = xstrdup(json_object_get_string(
					json_object_array_get_idx(v, i)));
		}
	}
	if (k == K_THROTTLE) {
		if ((s = sget(doc, "channel"))) {
			r->chmask = 1u << channel_index(s);
		} else {
			r->chmask = CHANNELS_ALL;
			r->journey = xstrdup(sget(doc, "journey"));
			r->step = xstrdup(sget(doc, "step"));
		}
		json_object_object_get_ex(doc, "rate", &v);
		r->interval_us = (int64_t)ceil(1e6 / json_object_get_double(v));
	}
	return r;
}

/* Inserts or replaces r in its kind's list (ordered by id); takes ownership. */
static void rules_set(struct rules *rs, struct rule *r)
{
	struct rule *old = map_put(&rs->by_id, r->id, r);
	unsigned i;

	if (old) {
		for (i = 0; rs->v[i] != old; i++)
			;
		rs->v[i] = r;
		rule_free(old);
		return;
	}
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 8;
		rs->v = xrealloc(rs->v, rs->cap * sizeof(*rs->v));
	}
	for (i = rs->n; i > 0 && strcmp(rs->v[i - 1]->id, r->id) > 0; i--)
		rs->v[i] = rs->v[i - 1];
	rs->v[i] = r;
	rs->n++;
}

static bool rules_del(struct rules *rs, const char *id)
{
	struct rule *old = map_del(&rs->by_id, id);
	unsigned i;

	if (!old)
		return false;
	for (i = 0; rs->v[i] != old; i++)
		;
	memmove(&rs->v[i], &rs->v[i + 1], (rs->n - i - 1) * sizeof(*rs->v));
	rs->n--;
	rule_free(old);
	return true;
}

static size_t rule_key(char *k, size_t size, const char *kind, const char *id)
{
	int n = snprintf(k, size, "r/%s/%s", kind, id ? id : "");

	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

void govern_config_default(struct govern_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (int c = 0; c < 3; c++) {
		cfg->consent_default[c][0] = c == 0;
		cfg->consent_default[c][1] = 1;
		cfg->consent_default[c][2] = c == 0;
	}
	cfg->soft_bounce_limit = 3;
}

enum nerr govern_open(struct store *s, const struct govern_config *cfg,
		      struct govern **out, struct nerr_msg *msg)
{
	struct govern *g = xcalloc(1, sizeof(*g));
	struct store_iter *it;
	enum nerr rc = NERR_OK;

	*out = NULL;
	g->s = s;
	if (cfg)
		g->cfg = *cfg;
	else
		govern_config_default(&g->cfg);
	if (g->cfg.soft_bounce_limit == 0)
		g->cfg.soft_bounce_limit = 1;
	for (int k = 0; k < K__COUNT; k++)
		map_init(&g->r[k].by_id);
	map_init(&g->zones);
	g->utc.from_ms = INT64_MIN;
	g->utc.until_ms = INT64_MAX;

	it = store_iter_new(s, NULL, STORE_CF_CAPS);
	for (store_iter_seek(it, "r/", 2); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char kind[32], id[GOVERN_MAX_ID_BYTES + 1];
		const char *slash;
		struct json_object *doc;
		enum kind kd;

		if (kl < 2 || memcmp(k, "r/", 2) != 0)
			break;
		slash = memchr(k + 2, '/', kl - 2);
		if (!slash || (size_t)(slash - k - 2) >= sizeof(kind) ||
		    kl - (size_t)(slash - k) - 1 >= sizeof(id)) {
			rc = nerr_set(msg, NERR_CORRUPT, "rules", "bad rule key");
			break;
		}
		snprintf(kind, sizeof(kind), "%.*s", (int)(slash - k - 2), k + 2);
		snprintf(id, sizeof(id), "%.*s", (int)(kl - (size_t)(slash - k) - 1),
			 slash + 1);
		doc = json_tokener_parse(v);
		(void)vl;
		kd = kind_of(kind);
		if (kd == K__COUNT || govern_rule_check(kind, id, doc, msg) != NERR_OK) {
			json_object_put(doc);
			log_error("govern",
				  "msg=\"stored rule does not check\" kind=%s id=%s",
				  kind, id);
			rc = nerr_set(msg, NERR_CORRUPT, "rules",
				      "stored rule %s/%s does not check", kind, id);
			break;
		}
		rules_set(&g->r[kd], rule_compile(kd, id, doc));
		json_object_put(doc);
	}
	store_iter_free(it);
	if (rc) {
		govern_free(g);
		return rc;
	}
	*out = g;
	return NERR_OK;
}

void govern_free(struct govern *g)
{
	const char *k;
	void *v;

	if (!g)
		return;
	for (int i = 0; i < K__COUNT; i++) {
		for (unsigned j = 0; j < g->r[i].n; j++)
			rule_free(g->r[i].v[j]);
		free(g->r[i].v);
		map_fini(&g->r[i].by_id);
	}
	for (size_t it = 0; map_next(&g->zones, &it, &k, &v);) {
		struct zone *z = v;

		if (z->cal)
			ucal_close(z->cal);
		free(z);
	}
	map_fini(&g->zones);
	free(g);
}

enum nerr govern_rule_put(struct govern *g, struct store_batch *b, const char *kind,
			  const char *id, struct json_object *doc)
{
	enum kind k = kind_of(kind);
	struct json_object *copy = NULL;
	const char *text;
	char key[128];
	enum nerr rc;

	if ((rc = govern_rule_check(kind, id, doc, NULL)))
		return rc;
	if (!map_get(&g->r[k].by_id, id) && g->r[k].n >= GOVERN_MAX_RULES)
		return NERR_LIMIT;
	if (json_object_deep_copy(doc, &copy, NULL) != 0)
		return NERR_NOMEM;
	json_object_object_add(copy, "id", json_object_new_string(id));
	text = json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN);
	store_batch_put(b, STORE_CF_CAPS, key, rule_key(key, sizeof(key), kind, id), text,
			strlen(text));
	rules_set(&g->r[k], rule_compile(k, id, copy));
	json_object_put(copy);
	log_info("govern", "msg=\"rule put\" kind=%s id=%s", kind, id);
	return NERR_OK;
}

enum nerr govern_rule_delete(struct govern *g, struct store_batch *b, const char *kind,
			     const char *id)
{
	enum kind k = kind_of(kind);
	char key[128];

	if (k == K__COUNT || !id_valid(id, GOVERN_MAX_ID_BYTES) ||
	    !rules_del(&g->r[k], id))
		return NERR_NOTFOUND;
	store_batch_delete(b, STORE_CF_CAPS, key, rule_key(key, sizeof(key), kind, id));
	log_info("govern", "msg=\"rule deleted\" kind=%s id=%s", kind, id);
	return NERR_OK;
}

enum nerr govern_rule_get(struct store *s, const char *kind, const char *id,
			  struct json_object **out)
{
	char key[128], *v = NULL;
	size_t vl;
	enum nerr rc;

	*out = NULL;
	if (kind_of(kind) == K__COUNT || !id_valid(id, GOVERN_MAX_ID_BYTES))
		return NERR_NOTFOUND;
	rc = store_get(s, STORE_CF_CAPS, key, rule_key(key, sizeof(key), kind, id), &v,
		       &vl);
	if (rc)
		return rc;
	*out = json_tokener_parse(v);
	free(v);
	return *out ? NERR_OK : NERR_CORRUPT;
}

enum nerr govern_rule_list(struct store *s, const char *kind, struct json_object **out)
{
	struct json_object *arr;
	struct store_iter *it;
	char prefix[64];
	size_t pl;

	*out = NULL;
	if (kind_of(kind) == K__COUNT)
		return NERR_NOTFOUND;
	pl = rule_key(prefix, sizeof(prefix), kind, NULL);
	arr = json_object_new_array();
	it = store_iter_new(s, NULL, STORE_CF_CAPS);
	for (store_iter_seek(it, prefix, pl); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct json_object *doc;

		if (kl < pl || memcmp(k, prefix, pl) != 0)
			break;
		if ((doc = json_tokener_parse(v)))
			json_object_array_add(arr, doc);
	}
	store_iter_free(it);
	*out = json_object_new_object();
	json_object_object_add(*out, "rules", arr);
	return NERR_OK;
}

bool govern_consent_default(const struct govern *g, const char *channel,
			    const char *purpose)
{
	int c = channel_index(channel), p;

	if (c < 0)
		return false;
	if (!purpose || strcmp(purpose, "marketing") == 0)
		p = 0;
	else if (strcmp(purpose, "transactional") == 0)
		p = 1;
	else
		p = 2;
	return g->cfg.consent_default[c][p] != 0;
}

bool govern_consent(const struct govern *g, struct json_object *profile,
		    const char *channel, const char *purpose)
{
	struct json_object *c, *ch, *p;

	if (!purpose)
		purpose = "marketing";
	if (json_object_object_get_ex(profile, "consent", &c) &&
	    json_object_object_get_ex(c, channel, &ch) &&
	    json_object_object_get_ex(ch, purpose, &p) &&
	    json_object_is_type(p, json_type_string)) {
		if (strcmp(json_object_get_string(p), "granted") == 0)
			return true;
		if (strcmp(json_object_get_string(p), "denied") == 0)
			return false;
	}
	return govern_consent_default(g, channel, purpose);
}

/* ------------------------------------------------------------ suppression */

static size_t suppression_key(char *k, size_t size, const char *channel, const char *addr)
{
	int n = snprintf(k, size, "%s:%s", channel, addr);

	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

bool govern_suppressed(struct store_batch *b, const char *channel, const char *address)
{
	char key[GOVERN_MAX_ADDRESS_BYTES + 32], *v = NULL;
	size_t vl;
	bool hit;

	hit = store_batch_get(b, STORE_CF_SUPPRESSION, key,
			      suppression_key(key, sizeof(key), channel, address), &v,
			      &vl) == NERR_OK;
	free(v);
	return hit;
}

void govern_suppress(struct store_batch *b, const char *channel, const char *address,
		     const char *reason, int64_t now_ms)
{
	char key[GOVERN_MAX_ADDRESS_BYTES + 32];
	struct json_object *o = json_object_new_object();
	const char *text;

	json_object_object_add(o, "reason", json_object_new_string(reason));
	json_object_object_add(o, "at_ms", json_object_new_int64(now_ms));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	store_batch_put(b, STORE_CF_SUPPRESSION, key,
			suppression_key(key, sizeof(key), channel, address), text,
			strlen(text));
	json_object_put(o);
}

void govern_unsuppress(struct store_batch *b, const char *channel, const char *address)
{
	char key[GOVERN_MAX_ADDRESS_BYTES + 32];

	store_batch_delete(b, STORE_CF_SUPPRESSION, key,
			   suppression_key(key, sizeof(key), channel, address));
	govern_delivered(NULL, b, channel, address);
}

/* -------------------------------------------------------- rolling windows */

/*
 * A decoded window value (caps or entry caps of one profile): records point into
 * the value read from the store.
 */
struct wrec {
	const char *id;
	size_t idlen;
	const unsigned char *times; /* n x u64be */
	unsigned n;
};

#define MAX_WRECS GOVERN_MAX_RULES /* every rule of a kind may have a record */

/* Decodes v into recs; stops at the first malformed record. Returns the count. */
static unsigned wdecode(const char *v, size_t vl, struct wrec *recs)
{
	const unsigned char *p = (const unsigned char *)v, *end = p + vl;
	unsigned n = 0;

	while (p < end && n < MAX_WRECS) {
		struct wrec *r = &recs[n];

		if (end - p < 1 || end - p < 1 + p[0] + 2)
			break;
		r->idlen = p[0];
		r->id = (const char *)p + 1;
		p += 1 + r->idlen;
		r->n = (unsigned)p[0] << 8 | p[1];
		p += 2;
		if ((size_t)(end - p) < (size_t)r->n * 8)
			break;
		r->times = p;
		p += (size_t)r->n * 8;
		n++;
	}
	return n;
}

static const struct wrec *wfind(const struct wrec *recs, unsigned n, const char *id)
{
	size_t l = strlen(id);

	for (unsigned i = 0; i < n; i++)
		if (recs[i].idlen == l && memcmp(recs[i].id, id, l) == 0)
			return &recs[i];
	return NULL;
}

/* How many times of rec fall inside (now - window, now]. */
static unsigned wcount(const struct wrec *rec, int64_t now_ms, int64_t window_ms)
{
	unsigned c = 0;

	for (unsigned i = rec ? rec->n : 0; i > 0; i--) {
		int64_t t = (int64_t)store_get_u64(rec->times + (i - 1) * 8);

		if (t <= now_ms - window_ms)
			break;
		c++;
	}
	return c;
}

/*
 * Rewrites a window value: keeps the records of rules that still exist (times
 * inside their window, at most max newest), appends now_ms to the rules in
 * hit[0..nhit), and stores it under key in b (deletes it when empty).
 */
static void wstore(struct store_batch *b, const char *key, size_t klen, struct rules *rs,
		   const struct wrec *recs, unsigned nrec, struct rule *const *hit,
		   unsigned nhit, int64_t now_ms)
{
	size_t cap = 256, len = 0;
	unsigned char *out = xmalloc(cap);
	char id[GOVERN_MAX_ID_BYTES + 1];
	struct rule *r;

	for (unsigned i = 0; i < nrec + nhit; i++) {
		const struct wrec *rec;
		bool add = false;
		unsigned keep, start, total;

		if (i < nrec) {
			rec = &recs[i];
			if (rec->idlen > GOVERN_MAX_ID_BYTES)
				continue;
			memcpy(id, rec->id, rec->idlen);
			id[rec->idlen] = '\0';
			if (!(r = map_get(&rs->by_id, id)))
				continue;
			for (unsigned h = 0; h < nhit; h++)
				add |= hit[h] == r;
		} else {
			r = hit[i - nrec];
			if (wfind(recs, nrec, r->id))
				continue; /* done with its record */
			rec = NULL;
			add = true;
		}
		keep = wcount(rec, now_ms, r->window_ms);
		total = keep + add;
		if (total > r->max)
			total = r->max;
		if (total == 0)
			continue;
		keep = total - add;
		start = rec ? rec->n - keep : 0;
		while (len + 3 + GOVERN_MAX_ID_BYTES + (size_t)total * 8 > cap) {
			cap *= 2;
			out = xrealloc(out, cap);
		}
		out[len++] = (unsigned char)strlen(r->id);
		memcpy(out + len, r->id, strlen(r->id));
		len += strlen(r->id);
		out[len++] = (unsigned char)(total >> 8);
		out[len++] = (unsigned char)total;
		if (keep)
			memcpy(out + len, rec->times + (size_t)start * 8,
			       (size_t)keep * 8);
		len += (size_t)keep * 8;
		if (add) {
			store_put_u64(out + len, (uint64_t)now_ms);
			len += 8;
		}
	}
	if (len)
		store_batch_put(b, STORE_CF_CAPS, key, klen, out, len);
	else
		store_batch_delete(b, STORE_CF_CAPS, key, klen);
	free(out);
}

/* ------------------------------------------------------------ time zones */

static struct zone *zone_get(struct govern *g, const char *name)
{
	struct zone *z;
	UChar u[ZONE_BYTES + 1];
	UErrorCode st = U_ZERO_ERROR;
	int32_t ulen = 0;

	if (!name || !*name)
		return NULL;
	if ((z = map_get(&g->zones, name)))
		return z->cal ? z : NULL;
	if (strlen(name) > ZONE_BYTES)
		return NULL;
	if (g->zones.len >= ZONE_CACHE) {
		/* Bounded: profiles may carry any string; start over. */
		const char *k;
		void *v;

		for (size_t it = 0; map_next(&g->zones, &it, &k, &v);) {
			if (((struct zone *)v)->cal)
				ucal_close(((struct zone *)v)->cal);
			free(v);
		}
		map_fini(&g->zones);
		map_init(&g->zones);
	}
	z = xcalloc(1, sizeof(*z));
	if (zone_valid(name)) {
		u_strFromUTF8(u, ZONE_BYTES + 1, &ulen, name, -1, &st);
		z->cal = ucal_open(u, ulen, "en_US", UCAL_GREGORIAN, &st);
		if (U_FAILURE(st) && z->cal) {
			ucal_close(z->cal);
			z->cal = NULL;
		}
	}
	z->from_ms = INT64_MAX; /* empty interval: filled on first use */
	z->until_ms = INT64_MIN;
	map_put(&g->zones, name, z);
	return z->cal ? z : NULL;
}

/* The zone's UTC offset at t (ms), refreshing the cached interval when needed. */
static int32_t zone_offset(struct zone *z, int64_t t)
{
	UErrorCode st = U_ZERO_ERROR;
	UDate d;

	if (t >= z->from_ms && t < z->until_ms)
		return z->off_ms;
	ucal_setMillis(z->cal, (UDate)t, &st);
	z->off_ms = ucal_get(z->cal, UCAL_ZONE_OFFSET, &st) +
		    ucal_get(z->cal, UCAL_DST_OFFSET, &st);
	if (U_FAILURE(st)) {
		z->off_ms = 0;
		z->from_ms = z->until_ms = t; /* no caching */
		return 0;
	}
	z->from_ms = INT64_MIN;
	z->until_ms = INT64_MAX;
	if (ucal_getTimeZoneTransitionDate(z->cal, UCAL_TZ_TRANSITION_PREVIOUS_INCLUSIVE,
					   &d, &st) &&
	    U_SUCCESS(st))
		z->from_ms = (int64_t)d;
	st = U_ZERO_ERROR;
	if (ucal_getTimeZoneTransitionDate(z->cal, UCAL_TZ_TRANSITION_NEXT, &d, &st) &&
	    U_SUCCESS(st))
		z->until_ms = (int64_t)d;
	if (t < z->from_ms || t >= z->until_ms) {
		z->from_ms = z->until_ms = t;
	}
	return z->off_ms;
}

static int64_t floordiv(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/*
 * If local time `local` (ms since the epoch in local wall time) is inside one of
 * r's windows, returns the local time the covering windows end (chained: a window
 * that ends where another starts is one quiet period); else -1.
 */
static int64_t quiet_end(const struct rule *r, int64_t local)
{
	int64_t end = -1, t = local;

	for (int chain = 0; chain < 16; chain++) {
		int64_t day = floordiv(t, DAY_MS), start = day * DAY_MS;
		int wd = (int)(((day + 3) % 7 + 7) % 7); /* 1970-01-01: Thursday */
		int prev = (wd + 6) % 7;
		int m = (int)((t - start) / MINUTE_MS);
		int64_t e = -1;

		for (unsigned i = 0; i < r->nwins; i++) {
			const struct qwin *w = &r->wins[i];
			int64_t we = -1;

			if (w->from_min < w->to_min) {
				if ((w->days >> wd & 1) && m >= w->from_min &&
				    m < w->to_min)
					we = start + w->to_min * MINUTE_MS;
			} else {
				if ((w->days >> wd & 1) && m >= w->from_min)
					we = start + DAY_MS + w->to_min * MINUTE_MS;
				else if ((w->days >> prev & 1) && m < w->to_min)
					we = start + w->to_min * MINUTE_MS;
			}
			if (we > e)
				e = we;
		}
		if (e < 0)
			break;
		end = e;
		t = e;
	}
	return end;
}

/* ------------------------------------------------------------- decisions */

static bool matches(const struct rule *r, int ch, const char *category)
{
	if (!(r->chmask >> ch & 1))
		return false;
	if (r->category)
		return strcmp(r->category, category) == 0;
	return true;
}

static size_t throttle_key(char *k, size_t size, const struct rule *r, int ch)
{
	int n = r->journey ? snprintf(k, size, "t/s/%s/%s", r->journey, r->step)
			   : snprintf(k, size, "t/c/%s", channel_names[ch]);

	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static int64_t read_u64(struct store_batch *b, const char *key, size_t kl)
{
	char *v = NULL;
	size_t vl = 0;
	int64_t x = 0;

	if (store_batch_get(b, STORE_CF_CAPS, key, kl, &v, &vl) == NERR_OK && vl == 8)
		x = (int64_t)store_get_u64(v);
	free(v);
	return x;
}

static void write_u64(struct store_batch *b, const char *key, size_t kl, int64_t x)
{
	unsigned char v[8];

	store_put_u64(v, (uint64_t)x);
	store_batch_put(b, STORE_CF_CAPS, key, kl, v, 8);
}

#define MAX_THROTTLES 16

void govern_decide(struct govern *g, struct store_batch *b, const struct govern_msg *m,
		   struct govern_decision *out)
{
	int ch = channel_index(m->channel);
	const char *cat = m->category ? m->category : "marketing";
	bool transactional = strcmp(cat, "transactional") == 0;
	struct rule *hit[MAX_WRECS], *thr[MAX_THROTTLES];
	unsigned nhit = 0, nthr = 0, nrec = 0;
	struct wrec recs[MAX_WRECS];
	char ckey[10], *cval = NULL;
	size_t cvl = 0;

	memset(out, 0, sizeof(*out));
	if (ch < 0)
		return; /* not a governed channel (webhooks) */

	/* 1. Frequency caps: one read of the profile's windows. */
	if (!transactional) {
		struct rules *rs = &g->r[K_CAPS];

		for (unsigned i = 0; i < rs->n && nhit < MAX_WRECS; i++)
			if (matches(rs->v[i], ch, cat))
				hit[nhit++] = rs->v[i];
	}
	if (nhit) {
		memcpy(ckey, "c/", 2);
		store_put_u64(ckey + 2, m->profile_id);
		if (store_batch_get(b, STORE_CF_CAPS, ckey, 10, &cval, &cvl) == NERR_OK)
			nrec = wdecode(cval, cvl, recs);
		for (unsigned i = 0; i < nhit; i++)
			if (wcount(wfind(recs, nrec, hit[i]->id), m->now_ms,
				   hit[i]->window_ms) >= hit[i]->max) {
				out->verdict = GOVERN_EXCLUDE;
				out->reason = GOVERN_REASON_CAPPED;
				out->rule_id = hit[i]->id;
				goto out;
			}
	}

	/* 2. Quiet hours: the first rule (by id) whose window covers now decides. */
	if (!transactional) {
		struct rules *rs = &g->r[K_QUIET];

		for (unsigned i = 0; i < rs->n; i++) {
			struct rule *r = rs->v[i];
			struct zone *z;
			int64_t off, end_local, until, first;

			if (!matches(r, ch, cat))
				continue;
			if (!(z = zone_get(g, m->timezone)) &&
			    !(z = zone_get(g, r->fallback_zone)))
				z = &g->utc;
			off = z->cal ? zone_offset(z, m->now_ms) : 0;
			end_local = quiet_end(r, m->now_ms + off);
			if (end_local < 0)
				continue;
			until = end_local - off;
			if (z->cal) /* the offset at the end may differ (DST) */
				until = end_local - zone_offset(z, until);
			if (until <= m->now_ms)
				until = m->now_ms + 1;
			first = m->first_try_ms > 0 ? m->first_try_ms : m->now_ms;
			out->rule_id = r->id;
			if (r->drop || until > first + r->max_delay_ms) {
				out->verdict = GOVERN_EXCLUDE;
				out->reason = GOVERN_REASON_QUIET_HOURS_DROPPED;
			} else {
				out->verdict = GOVERN_DELAY;
				out->reason = GOVERN_REASON_QUIET_HOURS;
				out->until_ms = until;
			}
			goto out;
		}
	}

	/* 3. Throttles: every category; a message gets the latest of its slots. */
	{
		struct rules *rs = &g->r[K_THROTTLE];

		for (unsigned i = 0; i < rs->n && nthr < MAX_THROTTLES; i++) {
			struct rule *r = rs->v[i];

			if (r->journey ? (m->journey_id && m->step_id &&
					  !strcmp(r->journey, m->journey_id) &&
					  !strcmp(r->step, m->step_id))
				       : (r->chmask >> ch & 1))
				thr[nthr++] = r;
		}
	}
	if (nthr && !(m->throttle_slot_ms > 0 && m->now_ms >= m->throttle_slot_ms)) {
		int64_t now_us = m->now_ms * 1000, slot = now_us;
		const char *by = NULL;
		char key[160];
		size_t kl;

		for (unsigned i = 0; i < nthr; i++) {
			int64_t next;

			kl = throttle_key(key, sizeof(key), thr[i], ch);
			next = read_u64(b, key, kl);
			if (next > slot) {
				slot = next;
				by = thr[i]->id;
			}
		}
		for (unsigned i = 0; i < nthr; i++) {
			kl = throttle_key(key, sizeof(key), thr[i], ch);
			write_u64(b, key, kl, slot + thr[i]->interval_us);
		}
		if (slot > now_us) {
			out->verdict = GOVERN_DELAY;
			out->reason = GOVERN_REASON_THROTTLED;
			out->rule_id = by;
			out->until_ms = (slot + 999) / 1000;
			goto out;
		}
	}

	/* SEND: count it in the caps' windows (same batch as the envelope). */
	if (nhit)
		wstore(b, ckey, 10, &g->r[K_CAPS], recs, nrec, hit, nhit, m->now_ms);
out:
	free(cval);
}

bool govern_entry_allowed(struct govern *g, struct store_batch *b, const char *journey_id,
			  uint64_t profile_id, int64_t now_ms, const char **rule_id)
{
	struct rules *rs = &g->r[K_ENTRY];
	struct rule *hit[MAX_WRECS];
	struct wrec recs[MAX_WRECS];
	unsigned nhit = 0, nrec = 0;
	char key[10], *v = NULL;
	size_t vl = 0;
	bool ok = true;

	if (rule_id)
		*rule_id = NULL;
	for (unsigned i = 0; i < rs->n && nhit < MAX_WRECS; i++)
		for (unsigned j = 0; j < rs->v[i]->njourneys; j++)
			if (strcmp(rs->v[i]->journeys[j], journey_id) == 0) {
				hit[nhit++] = rs->v[i];
				break;
			}
	if (!nhit)
		return true;
	memcpy(key, "e/", 2);
	store_put_u64(key + 2, profile_id);
	if (store_batch_get(b, STORE_CF_CAPS, key, 10, &v, &vl) == NERR_OK)
		nrec = wdecode(v, vl, recs);
	for (unsigned i = 0; ok && i < nhit; i++)
		if (wcount(wfind(recs, nrec, hit[i]->id), now_ms, hit[i]->window_ms) >=
		    hit[i]->max) {
			ok = false;
			if (rule_id)
				*rule_id = hit[i]->id;
		}
	if (ok)
		wstore(b, key, 10, rs, recs, nrec, hit, nhit, now_ms);
	free(v);
	return ok;
}

/* ---------------------------------------------------------------- bounces */

static size_t bounce_key(char *k, size_t size, const char *channel, const char *addr)
{
	int n = snprintf(k, size, "b/%s:%s", channel, addr);

	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

bool govern_bounce(struct govern *g, struct store_batch *b, const char *channel,
		   const char *address, bool hard)
{
	char key[GOVERN_MAX_ADDRESS_BYTES + 32], *v = NULL;
	size_t kl = bounce_key(key, sizeof(key), channel, address), vl = 0;
	uint32_t n = 0;
	unsigned char nv[4];

	if (!hard && store_batch_get(b, STORE_CF_CAPS, key, kl, &v, &vl) == NERR_OK &&
	    vl == 4)
		n = (uint32_t)(unsigned char)v[0] << 24 |
		    (uint32_t)(unsigned char)v[1] << 16 |
		    (uint32_t)(unsigned char)v[2] << 8 | (unsigned char)v[3];
	free(v);
	if (hard || ++n >= g->cfg.soft_bounce_limit) {
		/* Suppressed from now on: the count has done its job. */
		store_batch_delete(b, STORE_CF_CAPS, key, kl);
		return true;
	}
	nv[0] = (unsigned char)(n >> 24);
	nv[1] = (unsigned char)(n >> 16);
	nv[2] = (unsigned char)(n >> 8);
	nv[3] = (unsigned char)n;
	store_batch_put(b, STORE_CF_CAPS, key, kl, nv, 4);
	return false;
}

void govern_delivered(struct govern *g, struct store_batch *b, const char *channel,
		      const char *address)
{
	char key[GOVERN_MAX_ADDRESS_BYTES + 32], *v = NULL;
	size_t kl = bounce_key(key, sizeof(key), channel, address), vl;

	(void)g;
	/* Read first: most deliveries have no count, and a blind delete would leave
	 * a tombstone per delivery. */
	if (store_batch_get(b, STORE_CF_CAPS, key, kl, &v, &vl) == NERR_OK)
		store_batch_delete(b, STORE_CF_CAPS, key, kl);
	free(v);
}
