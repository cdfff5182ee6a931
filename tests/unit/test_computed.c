/*
 * test_computed.c -- unit tests for src/audience/computed.c: every aggregate all
 * time and windowed with exact values, window expiry and boundaries, late events,
 * merges, caps, damaged states and every compile error with its field.
 *
 * Design: each test compiles a small definition (def()), folds events built from a
 * properties object (apply(): event "Order Completed") into a state and compares
 * computed_value() as JSON text, so an int (35) and a double (35.0) differ. Times
 * are T0 plus minutes. Invariants referred to are those of computed.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "audience/computed.h"
#include "base/buf.h"
#include "expr/expr.h"
#include "journey/def.h"

#define T0   1700000000000LL /* 2023-11-14T22:13:20Z */
#define MIN  (60LL * 1000)
#define HOUR (60 * MIN)

static struct expr_env *env;
static struct arena scratch;

static int setup(void **state)
{
	(void)state;
	env = journey_env_new();
	arena_init(&scratch, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	arena_fini(&scratch);
	expr_env_free(env);
	return 0;
}

/* Compiles json into a definition or fails the test. */
static struct computed_def *def(const char *json)
{
	struct json_object *doc = json_tokener_parse(json);
	struct computed_def *d = NULL;
	struct nerr_msg msg;

	assert_non_null(doc);
	if (computed_def_compile("attr", doc, env, &d, &msg) != NERR_OK)
		fail_msg("%s does not compile: %s: %s", json, msg.field, msg.message);
	json_object_put(doc);
	return d;
}

/* Applies an event with properties props (JSON text) at t, with the clock at now. */
static bool apply_at(const struct computed_def *d, struct json_object **st,
		     const char *props, int64_t t, int64_t now)
{
	struct json_object *ev = json_object_new_object(), *p = json_tokener_parse(props);
	bool changed;

	assert_non_null(p);
	json_object_object_add(ev, "event", json_object_new_string("Order Completed"));
	json_object_object_add(ev, "properties", p);
	changed = computed_apply(d, st, ev, t, now, &scratch);
	arena_reset(&scratch);
	json_object_put(ev);
	return changed;
}

/* The same with the clock at the event's time. */
static bool apply(const struct computed_def *d, struct json_object **st,
		  const char *props, int64_t t)
{
	return apply_at(d, st, props, t, t);
}

/* Asserts that the attribute's value prints as want ("null" for JSON null). */
static void value_is(const struct computed_def *d, const struct json_object *st,
		     const char *want)
{
	struct json_object *v = computed_value(d, st);
	const char *got =
		v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null";

	if (strcmp(got, want) != 0)
		fail_msg("value %s, want %s", got, want);
	json_object_put(v);
}

/* A state through its stored form: JSON text and back (what the runtime does). */
static struct json_object *round_trip(struct json_object *st)
{
	struct json_object *back = json_tokener_parse(json_object_to_json_string(st));

	json_object_put(st);
	assert_non_null(back);
	return back;
}

/* ------------------------------------------------------------ all time */

static void test_count_all_time(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"Order Completed\", \"aggregate\": \"count\"}");
	struct json_object *st = NULL;

	(void)unused;
	value_is(d, NULL, "0");
	assert_true(apply(d, &st, "{}", T0));
	assert_true(apply(d, &st, "{\"total\": 5}", T0 - HOUR)); /* any time counts */
	assert_true(apply(d, &st, "{}", T0 + 400 * 24 * HOUR));
	value_is(d, st, "3");
	assert_int_equal(computed_next_boundary(d, st), INT64_MAX);
	assert_false(computed_expire(d, st, INT64_MAX / 2));
	value_is(d, st, "3");
	json_object_put(st);
	computed_def_free(d);
}

static void test_sum_of_ints_stays_int(void **unused)
{
	struct computed_def *d = def("{\"event\": \"Order Completed\", \"aggregate\": "
				     "\"sum\", \"value\": \"event.properties.total\"}");
	struct json_object *st = NULL;

	(void)unused;
	value_is(d, NULL, "0");
	apply(d, &st, "{\"total\": 10}", T0);
	apply(d, &st, "{\"total\": 20}", T0 + MIN);
	apply(d, &st, "{\"total\": -5}", T0 + 2 * MIN);
	value_is(d, st, "25");
	st = round_trip(st);
	apply(d, &st, "{\"total\": 1}", T0 + 3 * MIN);
	value_is(d, st, "26");
	json_object_put(st);
	computed_def_free(d);
}

static void test_sum_turns_double_on_a_double_and_keeps_it_through_storage(void **unused)
{
	struct computed_def *d = def("{\"event\": \"Order Completed\", \"aggregate\": "
				     "\"sum\", \"value\": \"event.properties.total\"}");
	struct json_object *st = NULL;

	(void)unused;
	apply(d, &st, "{\"total\": 1}", T0);
	apply(d, &st, "{\"total\": 0.5}", T0);
	value_is(d, st, "1.5");
	apply(d, &st, "{\"total\": 1.5}", T0);
	value_is(d, st, "3.0"); /* whole, but a double: an input was one */
	st = round_trip(st);
	value_is(d, st, "3.0");
	apply(d, &st, "{\"total\": 2}", T0);
	value_is(d, st, "5.0");
	json_object_put(st);
	computed_def_free(d);
}

static void test_sum_overflow_and_big_uint_become_double(void **unused)
{
	struct computed_def *d = def("{\"event\": \"Order Completed\", \"aggregate\": "
				     "\"sum\", \"value\": \"event.properties.total\"}");
	struct json_object *st = NULL, *v;

	(void)unused;
	apply(d, &st, "{\"total\": 9223372036854775807}", T0);
	value_is(d, st, "9223372036854775807");
	apply(d, &st, "{\"total\": 1}", T0);
	v = computed_value(d, st);
	assert_true(json_object_is_type(v, json_type_double));
	assert_true(json_object_get_double(v) == 9223372036854775808.0);
	json_object_put(v);
	json_object_put(st);
	st = NULL;

	apply(d, &st, "{\"total\": 18446744073709551615}", T0); /* a CEL uint */
	v = computed_value(d, st);
	assert_true(json_object_is_type(v, json_type_double));
	assert_true(json_object_get_double(v) == 18446744073709551615.0);
	json_object_put(v);
	json_object_put(st);
	computed_def_free(d);
}

static void test_min_and_max_all_time_compare_ints_and_doubles(void **unused)
{
	struct computed_def *mn = def("{\"event\": \"E\", \"aggregate\": \"min\", "
				      "\"value\": \"event.properties.v\"}");
	struct computed_def *mx = def("{\"event\": \"E\", \"aggregate\": \"max\", "
				      "\"value\": \"event.properties.v\"}");
	const char *vals[] = {"{\"v\": 3}",  "{\"v\": 2.5}", "{\"v\": 9}",
			      "{\"v\": -1}", "{\"v\": 9.0}", "{\"v\": \"100\"}"};
	struct json_object *a = NULL, *b = NULL;

	(void)unused;
	value_is(mn, NULL, "null");
	value_is(mx, NULL, "null");
	assert_true(apply(mn, &a, vals[0], T0));
	assert_true(apply(mn, &a, vals[1], T0));
	assert_false(apply(mn, &a, vals[2], T0));
	value_is(mn, a, "2.5");
	for (size_t i = 3; i < 6; i++)
		apply(mn, &a, vals[i], T0);
	value_is(mn, a, "-1");
	for (size_t i = 0; i < 6; i++)
		apply(mx, &b, vals[i], T0);
	value_is(mx, b, "9"); /* 9.0 is not greater; the string "100" is skipped */
	json_object_put(a);
	json_object_put(b);
	computed_def_free(mn);
	computed_def_free(mx);
}

static void test_first_and_last_all_time_go_by_event_time(void **unused)
{
	struct computed_def *f = def("{\"event\": \"E\", \"aggregate\": \"first\", "
				     "\"value\": \"event.properties.sku\"}");
	struct computed_def *l = def("{\"event\": \"E\", \"aggregate\": \"last\", "
				     "\"value\": \"event.properties.sku\"}");
	struct json_object *a = NULL, *b = NULL;

	(void)unused;
	value_is(f, NULL, "null");
	value_is(l, NULL, "null");
	assert_true(apply(f, &a, "{\"sku\": \"b\"}", T0 + 2 * MIN));
	assert_true(apply(f, &a, "{\"sku\": \"a\"}", T0 + MIN)); /* late, earlier */
	assert_false(apply(f, &a, "{\"sku\": \"c\"}", T0 + 3 * MIN));
	assert_false(
		apply(f, &a, "{\"sku\": \"a2\"}", T0 + MIN)); /* tie: earlier apply */
	value_is(f, a, "\"a\"");

	apply(l, &b, "{\"sku\": \"b\"}", T0 + 2 * MIN);
	assert_false(apply(l, &b, "{\"sku\": \"a\"}", T0 + MIN));
	apply(l, &b, "{\"sku\": \"c\"}", T0 + 3 * MIN);
	assert_true(apply(l, &b, "{\"sku\": {\"x\": [1, 2]}}", T0 + 3 * MIN)); /* tie */
	value_is(l, b, "{\"x\":[1,2]}");
	json_object_put(a);
	json_object_put(b);
	computed_def_free(f);
	computed_def_free(l);
}

static void test_distinct_count_compares_canonical_json(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"E\", \"aggregate\": "
		    "\"distinct_count\", \"value\": \"event.properties.v\"}");
	struct json_object *st = NULL;

	(void)unused;
	value_is(d, NULL, "0");
	assert_true(apply(d, &st, "{\"v\": \"1\"}", T0));
	assert_true(apply(d, &st, "{\"v\": 1}", T0));	 /* "1" and 1 differ */
	assert_false(apply(d, &st, "{\"v\": 1.0}", T0)); /* 1.0 is 1 */
	assert_false(apply(d, &st, "{\"v\": \"1\"}", T0));
	assert_true(apply(d, &st, "{\"v\": {\"a\": 1, \"b\": [true, null]}}", T0));
	assert_false(apply(d, &st, "{\"v\": {\"b\": [true, null], \"a\": 1}}", T0));
	assert_true(apply(d, &st, "{\"v\": [\"a\\\"b\"]}", T0));
	assert_true(apply(d, &st, "{\"v\": 0.1}", T0));
	value_is(d, st, "5");
	st = round_trip(st);
	assert_false(apply(d, &st, "{\"v\": 0.1}", T0));
	value_is(d, st, "5");
	json_object_put(st);
	computed_def_free(d);
}

static void test_distinct_count_caps_the_set(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"E\", \"aggregate\": "
		    "\"distinct_count\", \"value\": \"event.properties.v\"}");
	struct json_object *st = NULL, *set;
	char key[32];

	(void)unused;
	apply(d, &st, "{\"v\": 0}", T0);
	set = json_object_object_get(st, "set");
	for (int i = 1; i < COMPUTED_MAX_DISTINCT; i++) {
		snprintf(key, sizeof(key), "%d", i);
		json_object_object_add(set, key, json_object_new_int(1));
	}
	value_is(d, st, "10000");
	assert_false(apply(d, &st, "{\"v\": 17}", T0));	  /* already in the set */
	assert_true(apply(d, &st, "{\"v\": 10000}", T0)); /* new: marks capped */
	assert_true(json_object_get_boolean(json_object_object_get(st, "capped")));
	assert_false(apply(d, &st, "{\"v\": 10001}", T0));
	value_is(d, st, "10000");
	json_object_put(st);
	computed_def_free(d);
}

static void test_skipped_events_leave_the_state_alone(void **unused)
{
	struct computed_def *s = def("{\"event\": \"E\", \"aggregate\": \"sum\", "
				     "\"value\": \"event.properties.total\"}");
	struct computed_def *f = def("{\"event\": \"E\", \"aggregate\": \"first\", "
				     "\"value\": \"event.properties.total\"}");
	struct json_object *st = NULL;
	struct buf big;

	(void)unused;
	assert_false(apply(s, &st, "{}", T0)); /* no such key: a CEL error */
	assert_null(st);
	assert_false(apply(s, &st, "{\"total\": null}", T0));
	assert_false(apply(s, &st, "{\"total\": \"12\"}", T0)); /* not a number */
	assert_false(apply(s, &st, "{\"total\": true}", T0));
	assert_null(st);
	assert_true(apply(s, &st, "{\"total\": 2}", T0));
	assert_false(apply(s, &st, "{\"total\": [1]}", T0));
	value_is(s, st, "2");
	json_object_put(st);
	st = NULL;

	assert_false(apply(f, &st, "{\"total\": null}", T0));
	assert_null(st);
	buf_init(&big, 0);
	buf_puts(&big, "{\"total\": \"");
	for (int i = 0; i < COMPUTED_MAX_VALUE_BYTES; i++)
		buf_putc(&big, 'x');
	buf_puts(&big, "\"}");
	assert_false(apply(f, &st, buf_str(&big), T0)); /* too big to keep */
	assert_null(st);
	buf_fini(&big);
	assert_true(apply(f, &st, "{\"total\": \"ok\"}", T0));
	value_is(f, st, "\"ok\"");
	json_object_put(st);
	computed_def_free(s);
	computed_def_free(f);
}

static void test_value_reads_now(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"E\", \"aggregate\": \"last\", \"value\": \"now\"}");
	struct computed_def *c =
		def("{\"event\": \"E\", \"aggregate\": \"sum\", "
		    "\"value\": \"int(now) - int(timestamp(event.properties.at))\"}");
	struct json_object *st = NULL, *cs = NULL;

	(void)unused;
	apply_at(d, &st, "{}", T0 - MIN, T0);
	value_is(d, st, "\"2023-11-14T22:13:20Z\"");
	apply_at(c, &cs, "{\"at\": \"2023-11-14T22:12:20Z\"}", T0 - MIN, T0);
	value_is(c, cs, "60");
	json_object_put(st);
	json_object_put(cs);
	computed_def_free(d);
	computed_def_free(c);
}

/* ------------------------------------------------------------- windowed */

static void test_windowed_count_expires_at_the_boundary(void **unused)
{
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"1h\"}");
	struct json_object *st = NULL;

	(void)unused;
	assert_int_equal(computed_def_window_ms(d), HOUR);
	assert_int_equal(computed_next_boundary(d, NULL), INT64_MAX);
	apply(d, &st, "{}", T0);
	apply(d, &st, "{}", T0 + 10 * MIN);
	apply(d, &st, "{}", T0 + 50 * MIN);
	value_is(d, st, "3");
	assert_int_equal(computed_next_boundary(d, st), T0 + HOUR);
	assert_false(computed_expire(d, st, T0 + HOUR - 1));
	value_is(d, st, "3");
	assert_true(computed_expire(d, st, T0 + HOUR)); /* invariant 2 */
	value_is(d, st, "2");
	assert_int_equal(computed_next_boundary(d, st), T0 + 10 * MIN + HOUR);
	assert_true(computed_expire(d, st, T0 + 50 * MIN + HOUR));
	value_is(d, st, "0");
	assert_int_equal(computed_next_boundary(d, st), INT64_MAX);
	assert_false(computed_expire(d, st, T0 + 100 * HOUR));
	json_object_put(st);
	computed_def_free(d);
}

static void test_windowed_apply_ignores_old_events_and_expires(void **unused)
{
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"1h\"}");
	struct json_object *st = NULL;

	(void)unused;
	assert_false(apply_at(d, &st, "{}", T0 - HOUR, T0)); /* just outside */
	assert_null(st);
	assert_true(apply_at(d, &st, "{}", T0 - HOUR + 1, T0));
	assert_true(apply_at(d, &st, "{}", T0 + MIN, T0)); /* ahead of the clock */
	value_is(d, st, "2");
	/* two minutes on, the first has left (applying drops it) and a late
	 * event inside the window joins */
	assert_true(apply_at(d, &st, "{}", T0 - 5 * MIN, T0 + 2 * MIN));
	value_is(d, st, "2");
	assert_int_equal(computed_next_boundary(d, st), T0 - 5 * MIN + HOUR);
	/* an event outside the window still drops expired items */
	assert_true(apply_at(d, &st, "{}", T0, T0 + 3 * HOUR));
	value_is(d, st, "0");
	json_object_put(st);
	computed_def_free(d);
}

static void test_windowed_aggregates_recompute_after_expiry(void **unused)
{
	static const char *const aggs[] = {"sum",   "min",  "max",
					   "first", "last", "distinct_count"};
	/* values at T0, +10m, +20m, +30m; windows of 1h */
	static const char *const props[] = {"{\"v\": 5}", "{\"v\": 2.5}", "{\"v\": 8}",
					    "{\"v\": 5}"};
	static const char *const full[] = {"20.5", "2.5", "8", "5", "5", "3"};
	static const char *const after[] = {"15.5", "2.5", "8", "2.5", "5", "3"};
	static const char *const late[] = {"13", "5", "8", "8", "5", "2"};
	char json[200];

	(void)unused;
	for (size_t a = 0; a < 6; a++) {
		struct computed_def *d;
		struct json_object *st = NULL;

		snprintf(json, sizeof(json),
			 "{\"event\": \"E\", \"aggregate\": \"%s\", \"value\": "
			 "\"event.properties.v\", \"window\": \"1h\"}",
			 aggs[a]);
		d = def(json);
		for (int i = 0; i < 4; i++)
			assert_true(apply(d, &st, props[i], T0 + i * 10 * MIN));
		value_is(d, st, full[a]);
		st = round_trip(st);
		assert_true(computed_expire(d, st, T0 + HOUR));
		value_is(d, st, after[a]);
		assert_true(computed_expire(d, st, T0 + 10 * MIN + HOUR));
		value_is(d, st, late[a]);
		assert_int_equal(computed_next_boundary(d, st), T0 + 20 * MIN + HOUR);
		json_object_put(st);
		computed_def_free(d);
	}
}

static void test_windowed_empty_values(void **unused)
{
	static const char *const aggs[] = {"sum",   "min",  "max",
					   "first", "last", "distinct_count"};
	static const char *const empty[] = {"0", "null", "null", "null", "null", "0"};
	char json[200];

	(void)unused;
	for (size_t a = 0; a < 6; a++) {
		struct computed_def *d;
		struct json_object *st = NULL;

		snprintf(json, sizeof(json),
			 "{\"event\": \"E\", \"aggregate\": \"%s\", \"value\": "
			 "\"event.properties.v\", \"window\": \"30m\"}",
			 aggs[a]);
		d = def(json);
		value_is(d, NULL, empty[a]);
		apply(d, &st, "{\"v\": 7}", T0);
		assert_true(computed_expire(d, st, T0 + 30 * MIN));
		value_is(d, st, empty[a]);
		json_object_put(st);
		computed_def_free(d);
	}
}

static void test_windowed_late_events_are_kept_in_time_order(void **unused)
{
	struct computed_def *f =
		def("{\"event\": \"E\", \"aggregate\": \"first\", "
		    "\"value\": \"event.properties.v\", \"window\": \"1h\"}");
	struct computed_def *l =
		def("{\"event\": \"E\", \"aggregate\": \"last\", "
		    "\"value\": \"event.properties.v\", \"window\": \"1h\"}");
	struct json_object *a = NULL, *b = NULL;
	const int64_t now = T0 + 30 * MIN;

	(void)unused;
	apply_at(f, &a, "{\"v\": \"c\"}", T0 + 30 * MIN, now);
	apply_at(f, &a, "{\"v\": \"a\"}", T0 + 10 * MIN, now);
	apply_at(f, &a, "{\"v\": \"b\"}", T0 + 20 * MIN, now);
	apply_at(f, &a, "{\"v\": \"a2\"}", T0 + 10 * MIN, now); /* tie: after "a" */
	value_is(f, a, "\"a\"");
	assert_int_equal(computed_next_boundary(f, a), T0 + 10 * MIN + HOUR);
	assert_true(computed_expire(f, a, T0 + 10 * MIN + HOUR)); /* drops a and a2 */
	value_is(f, a, "\"b\"");

	apply_at(l, &b, "{\"v\": \"c\"}", T0 + 30 * MIN, now);
	apply_at(l, &b, "{\"v\": \"a\"}", T0 + 10 * MIN, now);
	value_is(l, b, "\"c\"");
	apply_at(l, &b, "{\"v\": \"c2\"}", T0 + 30 * MIN, now); /* tie: later wins */
	value_is(l, b, "\"c2\"");
	json_object_put(a);
	json_object_put(b);
	computed_def_free(f);
	computed_def_free(l);
}

static void test_window_keeps_at_most_max_items(void **unused)
{
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"30d\"}");
	struct json_object *st = NULL, *items;

	(void)unused;
	apply(d, &st, "{}", T0);
	items = json_object_object_get(st, "items");
	for (int i = 1; i < COMPUTED_MAX_ITEMS; i++) {
		struct json_object *it = json_object_new_array();

		json_object_array_add(it, json_object_new_int64(T0 + i));
		json_object_array_add(items, it);
	}
	value_is(d, st, "10000");
	/* older than every item: it would be dropped at once */
	assert_false(apply_at(d, &st, "{}", T0 - 1, T0 + COMPUTED_MAX_ITEMS));
	assert_int_equal(computed_next_boundary(d, st), T0 + 30 * 24 * HOUR);
	assert_true(
		apply_at(d, &st, "{}", T0 + COMPUTED_MAX_ITEMS, T0 + COMPUTED_MAX_ITEMS));
	value_is(d, st, "10000"); /* the oldest (T0) made room */
	assert_int_equal(computed_next_boundary(d, st), T0 + 1 + 30 * 24 * HOUR);
	json_object_put(st);
	computed_def_free(d);
}

/* ---------------------------------------------------------------- merge */

static void test_merge_all_time(void **unused)
{
	static const char *const aggs[] = {"count", "sum",  "min",	     "max",
					   "first", "last", "distinct_count"};
	static const char *const want[] = {"4", "11.5", "1", "6", "3", "6", "4"};
	char json[200];

	(void)unused;
	for (size_t a = 0; a < 7; a++) {
		struct computed_def *d;
		struct json_object *x = NULL, *y = NULL;

		snprintf(json, sizeof(json),
			 "{\"event\": \"E\", \"aggregate\": \"%s\"%s}", aggs[a],
			 a ? ", \"value\": \"event.properties.v\"" : "");
		d = def(json);
		apply(d, &x, "{\"v\": 3}", T0 + MIN);
		apply(d, &x, "{\"v\": 1.5}", T0 + 2 * MIN);
		apply(d, &y, "{\"v\": 6}", T0 + 3 * MIN);
		apply(d, &y, "{\"v\": 1}", T0 + MIN); /* ties x's first: x keeps it */
		computed_merge(d, &x, y);
		value_is(d, x, want[a]);
		json_object_put(y);
		json_object_put(x);
		computed_def_free(d);
	}
}

static void test_merge_last_tie_takes_from(void **unused)
{
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"last\", "
				     "\"value\": \"event.properties.v\"}");
	struct json_object *x = NULL, *y = NULL;

	(void)unused;
	apply(d, &x, "{\"v\": \"x\"}", T0);
	apply(d, &y, "{\"v\": \"y\"}", T0);
	computed_merge(d, &x, y);
	value_is(d, x, "\"y\"");
	json_object_put(x);
	json_object_put(y);
	computed_def_free(d);

	/* the same in a window: from's items go after into's equal ones */
	d = def("{\"event\": \"E\", \"aggregate\": \"last\", "
		"\"value\": \"event.properties.v\", \"window\": \"1h\"}");
	x = y = NULL;
	apply(d, &x, "{\"v\": \"x\"}", T0);
	apply(d, &y, "{\"v\": \"y\"}", T0);
	computed_merge(d, &x, y);
	value_is(d, x, "\"y\"");
	json_object_put(x);
	json_object_put(y);
	computed_def_free(d);
}

static void test_merge_with_null_and_empty_sides(void **unused)
{
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"sum\", "
				     "\"value\": \"event.properties.v\"}");
	struct json_object *x = NULL, *y = NULL;

	(void)unused;
	computed_merge(d, &x, NULL);
	assert_null(x);
	apply(d, &y, "{\"v\": 2}", T0);
	computed_merge(d, &x, y); /* into empty: a copy */
	assert_non_null(x);
	assert_ptr_not_equal(x, y);
	apply(d, &y, "{\"v\": 5}", T0);
	value_is(d, x, "2");
	computed_merge(d, &x, NULL);
	value_is(d, x, "2");
	computed_merge(d, &x, y);
	value_is(d, x, "9");
	json_object_put(x);
	json_object_put(y);
	computed_def_free(d);
}

static void test_merge_windows_interleaves_and_caps(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"E\", \"aggregate\": \"last\", "
		    "\"value\": \"event.properties.v\", \"window\": \"1h\"}");
	struct computed_def *c = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"30d\"}");
	struct json_object *x = NULL, *y = NULL, *items;

	(void)unused;
	apply(d, &x, "{\"v\": 1}", T0 + 10 * MIN);
	apply(d, &x, "{\"v\": 3}", T0 + 30 * MIN);
	apply(d, &y, "{\"v\": 2}", T0 + 20 * MIN);
	apply(d, &y, "{\"v\": 4}", T0 + 5 * MIN);
	computed_merge(d, &x, y);
	value_is(d, x, "3");
	assert_int_equal(computed_next_boundary(d, x), T0 + 5 * MIN + HOUR);
	items = json_object_object_get(x, "items");
	assert_int_equal(json_object_array_length(items), 4);
	assert_true(computed_expire(d, x, T0 + 20 * MIN + HOUR)); /* 5, 10, 20 */
	value_is(d, x, "3");
	json_object_put(x);
	json_object_put(y);
	x = y = NULL;

	for (int i = 0; i < 2; i++) {
		struct json_object **s = i ? &y : &x;

		apply(c, s, "{}", T0);
		items = json_object_object_get(*s, "items");
		for (int k = 1; k < COMPUTED_MAX_ITEMS; k++) {
			struct json_object *it = json_object_new_array();

			json_object_array_add(it, json_object_new_int64(T0 + 2 * k + i));
			json_object_array_add(items, it);
		}
	}
	computed_merge(c, &x, y);
	value_is(c, x, "10000");
	/* the newest 10,000 of 20,000 interleaved items: from T0 + 10000 on */
	assert_int_equal(computed_next_boundary(c, x), T0 + 10000 + 30 * 24 * HOUR);
	json_object_put(x);
	json_object_put(y);
	computed_def_free(d);
	computed_def_free(c);
}

static void test_distinct_merge_is_a_union(void **unused)
{
	struct computed_def *d =
		def("{\"event\": \"E\", \"aggregate\": "
		    "\"distinct_count\", \"value\": \"event.properties.v\"}");
	struct json_object *x = NULL, *y = NULL;

	(void)unused;
	apply(d, &x, "{\"v\": \"a\"}", T0);
	apply(d, &x, "{\"v\": \"b\"}", T0);
	apply(d, &y, "{\"v\": \"b\"}", T0);
	apply(d, &y, "{\"v\": \"c\"}", T0);
	computed_merge(d, &x, y);
	value_is(d, x, "3");
	json_object_put(x);
	json_object_put(y);
	computed_def_free(d);
}

/* ------------------------------------------------ foreign and damaged states */

static void test_state_of_another_definition_starts_afresh(void **unused)
{
	struct computed_def *c = def("{\"event\": \"E\", \"aggregate\": \"count\"}");
	struct computed_def *w = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"1h\"}");
	struct computed_def *s = def("{\"event\": \"E\", \"aggregate\": \"sum\", "
				     "\"value\": \"event.properties.v\"}");
	struct json_object *st = NULL;

	(void)unused;
	apply(c, &st, "{\"v\": 7}", T0);
	apply(c, &st, "{\"v\": 7}", T0);
	value_is(c, st, "2");
	value_is(w, st, "0"); /* another window: empty */
	value_is(s, st, "0");
	assert_int_equal(computed_next_boundary(w, st), INT64_MAX);
	assert_true(apply(s, &st, "{\"v\": 7}", T0));
	value_is(s, st, "7");
	json_object_put(st);
	computed_def_free(c);
	computed_def_free(w);
	computed_def_free(s);
}

static void test_damaged_states_read_as_empty(void **unused)
{
	static const char *const bad[] = {
		"[]",
		"{\"agg\": \"count\", \"window_ms\": 3600000}",
		"{\"agg\": \"count\", \"window_ms\": 3600000, \"items\": {}}",
		"{\"agg\": \"count\", \"window_ms\": 3600000, \"items\": [[\"x\"]]}",
		"{\"agg\": \"count\", \"window_ms\": 3600000, \"items\": [5]}",
		"{\"agg\": \"count\", \"window_ms\": 3600000, \"items\": [[2], [1]]}",
		"{\"agg\": \"count\", \"window_ms\": \"3600000\", \"items\": []}",
	};
	struct computed_def *d = def("{\"event\": \"E\", \"aggregate\": \"count\", "
				     "\"window\": \"1h\"}");

	(void)unused;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json_object *st = json_tokener_parse(bad[i]);

		assert_non_null(st);
		value_is(d, st, "0");
		assert_false(computed_expire(d, st, T0));
		assert_int_equal(computed_next_boundary(d, st), INT64_MAX);
		assert_true(apply(d, &st, "{}", T0));
		value_is(d, st, "1");
		json_object_put(st);
	}
	computed_def_free(d);
}

/* -------------------------------------------------------------- compile */

static void test_compile_fields_and_accessors(void **unused)
{
	struct computed_def *d = def("{\"event\": \"Order Completed\", \"aggregate\": "
				     "\"sum\", \"value\": \"event.properties.total\", "
				     "\"window\": \"30d\"}");
	struct computed_def *c =
		def("{\"event\": \"Order Completed\", \"aggregate\": \"count\"}");

	(void)unused;
	assert_string_equal(computed_def_id(d), "attr");
	assert_string_equal(computed_def_event(d), "Order Completed");
	assert_int_equal(computed_def_aggregate(d), COMPUTED_SUM);
	assert_string_equal(computed_agg_name(computed_def_aggregate(d)), "sum");
	assert_string_equal(computed_def_value_src(d), "event.properties.total");
	assert_int_equal(computed_def_window_ms(d), 30LL * 24 * HOUR);
	assert_int_equal(computed_def_window_ms(c), 0);
	assert_null(computed_def_value_src(c));
	assert_string_equal(computed_agg_name(COMPUTED__COUNT), "?");
	computed_def_free(d);
	computed_def_free(c);
}

static void test_compile_accepts_names_inside_strings_and_members(void **unused)
{
	static const char *const ok[] = {
		"event.properties.profile",
		"event.properties['journey']",
		"'profile' + event.properties.x",
		"\"\"\"journey \"\"\" + r'consent(' + event.properties.x",
		"event.properties.x // profile.traits",
		"event.properties.consent(1)",
		"event.properties.items.map(x, x.price)",
		"now",
	};

	(void)unused;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct json_object *doc = json_object_new_object();
		struct computed_def *d = NULL;
		struct nerr_msg msg;

		json_object_object_add(doc, "event", json_object_new_string("E"));
		json_object_object_add(doc, "aggregate", json_object_new_string("last"));
		json_object_object_add(doc, "value", json_object_new_string(ok[i]));
		if (computed_def_compile("a", doc, env, &d, &msg) != NERR_OK)
			fail_msg("%s refused: %s: %s", ok[i], msg.field, msg.message);
		computed_def_free(d);
		json_object_put(doc);
	}
}

static void test_compile_errors_name_the_field(void **unused)
{
	static const struct {
		const char *doc, *field, *message;
	} cases[] = {
		{"[]", "", "must be a JSON object"},
		{"{\"event\": \"E\", \"aggregate\": \"count\", \"max_items\": 3}",
		 "max_items", "unknown field"},
		{"{\"aggregate\": \"count\"}", "event", "is required"},
		{"{\"event\": 5, \"aggregate\": \"count\"}", "event", "must be a string"},
		{"{\"event\": \"\", \"aggregate\": \"count\"}", "event",
		 "1 to 200 bytes"},
		{"{\"event\": \"E\"}", "aggregate", "is required"},
		{"{\"event\": \"E\", \"aggregate\": \"avg\"}", "aggregate",
		 "must be one of count, sum"},
		{"{\"event\": \"E\", \"aggregate\": \"count\", \"value\": \"1\"}",
		 "value", "count takes no value"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\"}", "value", "is required"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\", \"value\": 3}", "value",
		 "must be a string"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\", \"value\": \"\"}", "value",
		 "must not be empty"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\", \"value\": \"event.x +\"}",
		 "value", "invalid CEL: line 1, column"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\", \"value\": "
		 "\"profile.traits.x\"}",
		 "value", "may only read event and now, not profile"},
		{"{\"event\": \"E\", \"aggregate\": \"sum\", \"value\": "
		 "\"journey.entry.x\"}",
		 "value", "not journey"},
		{"{\"event\": \"E\", \"aggregate\": \"count_x\", \"value\": \"1\"}",
		 "aggregate", "must be one of"},
		{"{\"event\": \"E\", \"aggregate\": \"max\", \"value\": "
		 "\"event_count('E', "
		 "'1d')\"}",
		 "value", "not event_count"},
		{"{\"event\": \"E\", \"aggregate\": \"max\", \"value\": \"1 + "
		 "consent ('email') \"}",
		 "value", "not consent"},
		{"{\"event\": \"E\", \"aggregate\": \"last\", \"value\": "
		 "\"in_audience('vip')\"}",
		 "value", "not in_audience"},
		{"{\"event\": \"E\", \"aggregate\": \"max\", \"value\": \"[1].map(x, "
		 ".profile)\"}",
		 "value", "not profile"},
		{"{\"event\": \"E\", \"aggregate\": \"max\", \"value\": \"events.x\"}",
		 "value", "invalid CEL: undeclared reference"},
		{"{\"event\": \"E\", \"aggregate\": \"max\", \"value\": \"nope(1)\"}",
		 "value", "unknown function"},
		{"{\"event\": \"E\", \"aggregate\": \"count\", \"window\": \"30x\"}",
		 "window", "invalid duration"},
		{"{\"event\": \"E\", \"aggregate\": \"count\", \"window\": \"0d\"}",
		 "window", "invalid duration"},
		{"{\"event\": \"E\", \"aggregate\": \"count\", \"window\": 30}", "window",
		 "must be a string"},
	};
	struct buf longname;

	(void)unused;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *doc = json_tokener_parse(cases[i].doc);
		struct computed_def *d = (struct computed_def *)1;
		struct nerr_msg msg;

		assert_non_null(doc);
		assert_int_equal(computed_def_compile("a", doc, env, &d, &msg),
				 NERR_INVAL);
		assert_null(d);
		if (strcmp(msg.field, cases[i].field) != 0 ||
		    !strstr(msg.message, cases[i].message))
			fail_msg("%s: got %s: %s, want %s: ...%s...", cases[i].doc,
				 msg.field, msg.message, cases[i].field,
				 cases[i].message);
		json_object_put(doc);
	}

	buf_init(&longname, 0);
	buf_puts(&longname, "{\"event\": \"");
	for (int i = 0; i < COMPUTED_MAX_EVENT_BYTES; i++)
		buf_putc(&longname, 'e');
	buf_puts(&longname, "\", \"aggregate\": \"count\"}");
	{
		struct json_object *doc = json_tokener_parse(buf_str(&longname));
		struct computed_def *d = NULL;
		struct nerr_msg msg;

		assert_int_equal(computed_def_compile("a", doc, env, &d, &msg), NERR_OK);
		computed_def_free(d);
		json_object_put(doc);
		/* one byte more is refused */
		buf_reset(&longname);
		buf_puts(&longname, "{\"event\": \"e");
		for (int i = 0; i < COMPUTED_MAX_EVENT_BYTES; i++)
			buf_putc(&longname, 'e');
		buf_puts(&longname, "\", \"aggregate\": \"count\"}");
		doc = json_tokener_parse(buf_str(&longname));
		assert_int_equal(computed_def_compile("a", doc, env, &d, &msg),
				 NERR_INVAL);
		assert_string_equal(msg.field, "event");
		json_object_put(doc);
	}
	buf_fini(&longname);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_count_all_time),
		cmocka_unit_test(test_sum_of_ints_stays_int),
		cmocka_unit_test(
			test_sum_turns_double_on_a_double_and_keeps_it_through_storage),
		cmocka_unit_test(test_sum_overflow_and_big_uint_become_double),
		cmocka_unit_test(test_min_and_max_all_time_compare_ints_and_doubles),
		cmocka_unit_test(test_first_and_last_all_time_go_by_event_time),
		cmocka_unit_test(test_distinct_count_compares_canonical_json),
		cmocka_unit_test(test_distinct_count_caps_the_set),
		cmocka_unit_test(test_skipped_events_leave_the_state_alone),
		cmocka_unit_test(test_value_reads_now),
		cmocka_unit_test(test_windowed_count_expires_at_the_boundary),
		cmocka_unit_test(test_windowed_apply_ignores_old_events_and_expires),
		cmocka_unit_test(test_windowed_aggregates_recompute_after_expiry),
		cmocka_unit_test(test_windowed_empty_values),
		cmocka_unit_test(test_windowed_late_events_are_kept_in_time_order),
		cmocka_unit_test(test_window_keeps_at_most_max_items),
		cmocka_unit_test(test_merge_all_time),
		cmocka_unit_test(test_merge_last_tie_takes_from),
		cmocka_unit_test(test_merge_with_null_and_empty_sides),
		cmocka_unit_test(test_merge_windows_interleaves_and_caps),
		cmocka_unit_test(test_distinct_merge_is_a_union),
		cmocka_unit_test(test_state_of_another_definition_starts_afresh),
		cmocka_unit_test(test_damaged_states_read_as_empty),
		cmocka_unit_test(test_compile_fields_and_accessors),
		cmocka_unit_test(test_compile_accepts_names_inside_strings_and_members),
		cmocka_unit_test(test_compile_errors_name_the_field),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
