/*
 * test_report.c -- report counters on a real RocksDB in a temp dir: counts reach
 * the store only with their batch (invariant 2), discard drops them, totals and
 * minute buckets survive reopen, the 24 h window prunes, buckets aggregate to
 * hours and days, rates, CSV shape, and /metrics output promtool accepts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report/metrics.h"
#include "report/report.h"
#include "store/store.h"

#define T0  1764000000000LL /* a wall time on a minute boundary */
#define MIN 60000LL

static char dir[64];
static struct store *s;
static struct report *r;

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/nudge-report-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	if (store_open(dir, &s, NULL) != NERR_OK)
		return -1;
	return report_open(s, &r) == NERR_OK ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	report_free(r);
	store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void reopen(void)
{
	report_free(r);
	store_close(s);
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	assert_int_equal(report_open(s, &r), NERR_OK);
}

/* Counts, flushes and commits one batch at now_ms. */
static void commit_at(int64_t now_ms)
{
	struct store_batch *b = store_batch_new(s);

	report_flush(r, b, now_ms);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_batch_free(b);
}

static struct json_object *journey_json(const char *id, const struct report_query *q)
{
	struct buf out;
	struct nerr_msg msg;
	struct json_object *o;

	buf_init(&out, 0);
	assert_int_equal(report_journey(s, id, q, &out, &msg), NERR_OK);
	o = json_tokener_parse(buf_str(&out));
	assert_non_null(o);
	buf_fini(&out);
	return o;
}

/* The value at a dotted path ("totals.exited.goal"); arrays by index. */
static struct json_object *at(struct json_object *o, const char *path)
{
	char tmp[256], *save = NULL;

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = strtok_r(tmp, ".", &save); p && o;
	     p = strtok_r(NULL, ".", &save)) {
		if (json_object_is_type(o, json_type_array))
			o = json_object_array_get_idx(o, (size_t)atoi(p));
		else if (!json_object_object_get_ex(o, p, &o))
			o = NULL;
	}
	return o;
}

static int64_t iat(struct json_object *o, const char *path)
{
	struct json_object *v = at(o, path);

	if (!v)
		fail_msg("missing %s", path);
	return json_object_get_int64(v);
}

static double dat(struct json_object *o, const char *path)
{
	struct json_object *v = at(o, path);

	if (!v)
		fail_msg("missing %s", path);
	return json_object_get_double(v);
}

static const struct report_dims J = {.journey = "cart", .version = 1};
static const struct report_dims S1 = {.journey = "cart", .version = 1, .step = "wait"};
static const struct report_dims M1 = {.journey = "cart",
				      .version = 1,
				      .step = "remind",
				      .template_id = "cart-reminder",
				      .channel = "email"};

static void counts_reach_the_store_only_with_their_batch(void **state)
{
	struct store_batch *b = store_batch_new(s);
	struct buf out;
	struct json_object *o;
	struct report_query q = {0};

	buf_init(&out, 0);
	report_count(r, &J, REPORT_ENTERED, 1);
	report_count(r, &J, REPORT_ENTERED, 1);
	report_count(r, &S1, REPORT_ENTERED, 2);
	report_count(r, &S1, REPORT_IN_STEP, 2);
	report_flush(r, b, T0);
	/* Flushed but not committed: the committed state has nothing. */
	assert_int_equal(report_journey(s, "cart", &q, &out, NULL), NERR_NOTFOUND);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_batch_free(b);

	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.entered"), 2); /* step arrivals are not entries */
	assert_int_equal(iat(o, "totals.in_progress"), 2);
	assert_string_equal(json_object_get_string(at(o, "steps.0.step")), "wait");
	assert_int_equal(iat(o, "steps.0.entered"), 2);
	assert_int_equal(iat(o, "steps.0.in_step"), 2);
	json_object_put(o);

	/* A second batch adds to the same counters (one read-modify-write each). */
	report_count(r, &S1, REPORT_IN_STEP, -1);
	report_count(r, &S1, REPORT_COMPLETED, 1);
	commit_at(T0 + 1000);
	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "steps.0.in_step"), 1);
	assert_int_equal(iat(o, "steps.0.completed"), 1);
	json_object_put(o);
	buf_fini(&out);
}

static void discard_drops_pending_counts(void **state)
{
	struct report_query q = {0};
	struct json_object *o;

	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0);
	report_count(r, &J, REPORT_ENTERED, 5);
	report_discard(r);
	commit_at(T0 + 1); /* the next batch carries nothing from the discarded one */
	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.entered"), 1);
	json_object_put(o);
}

static void discard_after_a_failed_commit_forgets_the_flushed_values(void **state)
{
	struct store_batch *b = store_batch_new(s);
	struct report_query q = {.bucket = "minute", .now_ms = T0 + MIN};
	struct json_object *o;

	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0); /* stored: 1 */
	report_count(r, &J, REPORT_ENTERED, 10);
	report_flush(r, b, T0 + 1);
	store_batch_clear(b); /* the commit "failed": nothing reached the store */
	report_discard(r);
	store_batch_free(b);
	report_count(r, &J, REPORT_ENTERED, 2);
	commit_at(T0 + 2);
	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.entered"), 3);
	assert_int_equal(iat(o, "series.points.0.counters.entered"), 3);
	json_object_put(o);
}

static void many_interleaved_dims_each_keep_their_own_counts(void **state)
{
	char step[16];
	struct json_object *o;

	for (int round = 1; round <= 3; round++) {
		for (int i = 0; i < 40; i++) {
			struct report_dims d = {
				.journey = "cart", .version = 1 + (i % 2), .step = step};

			snprintf(step, sizeof(step), "s%02d", i / 2);
			report_count(r, &d, REPORT_ENTERED, i);
		}
		commit_at(T0 + round);
	}
	o = journey_json("cart", &(struct report_query){.version = 2});
	for (int k = 0; k < 20; k++) {
		char path[32];

		snprintf(path, sizeof(path), "steps.%d.entered", k);
		assert_int_equal(iat(o, path), 3 * (2 * k + 1));
	}
	json_object_put(o);
}

/* Appends a packed entry [len][name][int64 BE]. */
static void pack(struct buf *b, const char *name, int64_t v)
{
	unsigned char vb[8];

	buf_putc(b, (char)strlen(name));
	buf_puts(b, name);
	store_put_u64(vb, (uint64_t)v);
	buf_append(b, vb, 8);
}

static void names_from_a_newer_build_are_kept(void **state)
{
	struct store_batch *b = store_batch_new(s);
	static const char key[] = "tcart\x1f"
				  "1\x1f\x1f\x1f\x1f";
	struct buf v;
	char *got = NULL;
	size_t len;
	struct json_object *o;

	buf_init(&v, 0);
	pack(&v, "entered", 4);
	pack(&v, "future_counter", 7);
	store_batch_put(b, STORE_CF_COUNTERS, key, sizeof(key) - 1, v.data, v.len);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_batch_free(b);
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0);
	o = journey_json("cart", &(struct report_query){0});
	assert_int_equal(iat(o, "totals.entered"), 5);
	json_object_put(o);
	assert_int_equal(
		store_get(s, STORE_CF_COUNTERS, key, sizeof(key) - 1, &got, &len),
		NERR_OK);
	buf_reset(&v);
	pack(&v, "entered", 5);
	pack(&v, "future_counter", 7);
	assert_int_equal(len, v.len);
	assert_memory_equal(got, v.data, len);
	free(got);
	buf_fini(&v);
}

static void totals_and_minute_buckets_survive_reopen(void **state)
{
	struct report_query q = {.bucket = "minute", .now_ms = T0 + 10 * MIN};
	struct json_object *o;

	report_count(r, &J, REPORT_ENTERED, 3);
	report_count(r, &M1, REPORT_SENT, 2);
	report_count(r, &M1, REPORT_CONVERSION_VALUE, 19.99);
	report_count(r, &M1, REPORT_CONVERSIONS, 1);
	commit_at(T0);
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0 + 2 * MIN + 5);
	reopen();
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0 + 2 * MIN + 7); /* same minute: adds to the stored bucket */

	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.entered"), 5);
	assert_int_equal(iat(o, "totals.sent"), 2);
	assert_true(dat(o, "totals.conversion_value") > 19.989 &&
		    dat(o, "totals.conversion_value") < 19.991);
	assert_int_equal(json_object_array_length(at(o, "series.points")), 2);
	assert_int_equal(iat(o, "series.points.0.start_ms"), T0);
	assert_int_equal(iat(o, "series.points.0.counters.entered"), 3);
	assert_int_equal(iat(o, "series.points.1.start_ms"), T0 + 2 * MIN);
	assert_int_equal(iat(o, "series.points.1.counters.entered"), 2);
	assert_int_equal(iat(o, "series.sums.entered"), 5);
	json_object_put(o);
}

static size_t minute_keys(void)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_COUNTERS);
	size_t n = 0;

	for (store_iter_seek(it, "m", 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);

		if (k[0] != 'm')
			break;
		n++;
	}
	store_iter_free(it);
	return n;
}

static void minute_buckets_older_than_24h_are_pruned_in_bounded_steps(void **state)
{
	struct report_query q = {
		.bucket = "minute", .from_ms = T0, .to_ms = T0 + 3 * MIN};
	struct json_object *o;
	int64_t later = T0 + (REPORT_MINUTES_KEPT + 10) * MIN;
	char step[32];

	/* 300 distinct step dims in one old minute: more than one flush deletes. */
	for (int i = 0; i < 300; i++) {
		struct report_dims d = {.journey = "cart", .version = 1, .step = step};

		snprintf(step, sizeof(step), "s%03d", i);
		report_count(r, &d, REPORT_ENTERED, 1);
	}
	commit_at(T0);
	assert_int_equal(minute_keys(), 300);
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(later);
	assert_int_equal(minute_keys(), 300 + 1 - REPORT_PRUNE_PER_FLUSH);
	commit_at(later + 1);
	assert_int_equal(minute_keys(), 1);
	/* Totals stay. */
	o = journey_json("cart", &(struct report_query){0});
	assert_int_equal(iat(o, "steps.299.entered"), 1);
	json_object_put(o);
	/* The old window reads empty. */
	o = journey_json("cart", &q);
	assert_int_equal(json_object_array_length(at(o, "series.points")), 0);
	json_object_put(o);
	/* A bucket exactly 24 h - 1 min old is kept. */
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(later + 5 * MIN);
	commit_at(later + 5 * MIN + (REPORT_MINUTES_KEPT - 1) * MIN);
	assert_int_equal(minute_keys(), 1);
}

/* Minute keys whose minute is before `minute` (the minute follows journey US). */
static size_t minute_keys_before(int64_t minute)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_COUNTERS);
	size_t n = 0;

	for (store_iter_seek(it, "m", 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		const char *us = memchr(k, 0x1f, kl);

		if (k[0] != 'm')
			break;
		assert_non_null(us);
		unsigned char mb[8];
		memcpy(mb, us + 1, 8);
		if ((int64_t)store_get_u64(mb) < minute)
			n++;
	}
	store_iter_free(it);
	return n;
}

static void pruning_steps_over_many_journeys_and_keeps_recent_buckets(void **state)
{
	int64_t later = T0 + (REPORT_MINUTES_KEPT + 10) * MIN;
	char id[32];

	for (int i = 0; i < 100; i++) {
		struct report_dims d = {.journey = id, .version = 1};

		snprintf(id, sizeof(id), "j%03d", i);
		report_count(r, &d, REPORT_ENTERED, 1);
	}
	commit_at(T0);
	for (int i = 0; i < 100; i++) {
		struct report_dims d = {.journey = id, .version = 1};

		snprintf(id, sizeof(id), "j%03d", i);
		report_count(r, &d, REPORT_ENTERED, 1);
	}
	commit_at(T0 + 20 * MIN); /* kept: within 24 h of `later` */
	assert_int_equal(minute_keys(), 200);
	commit_at(later);
	size_t left = minute_keys_before(later / MIN - REPORT_MINUTES_KEPT);
	assert_true(left > 0 && left < 100); /* bounded work per flush */
	commit_at(later + 1);
	commit_at(later + 2);
	assert_int_equal(minute_keys_before(later / MIN - REPORT_MINUTES_KEPT), 0);
	assert_int_equal(minute_keys(), 100);
}

static void series_of_one_journey_skips_others_and_overview_sums_all(void **state)
{
	static const char *const ids[] = {"cart", "cart-x", "cart2", "aaa"};
	struct report_query q = {.from_ms = T0 + MIN, .to_ms = T0 + 40 * MIN};
	struct buf out;
	struct json_object *o;
	const int64_t at_ms[] = {T0, T0 + 2 * MIN, T0 + 30 * MIN, T0 + 45 * MIN};

	for (unsigned t = 0; t < 4; t++) {
		for (unsigned i = 0; i < 4; i++) {
			struct report_dims d = {.journey = ids[i], .version = 1};

			report_count(r, &d, REPORT_ENTERED, (double)(1 + i) * (1 + t));
		}
		commit_at(at_ms[t]);
	}
	o = journey_json("cart", &q);
	assert_int_equal(json_object_array_length(at(o, "series.points")), 2);
	assert_int_equal(iat(o, "series.points.0.counters.entered"), 2);
	assert_int_equal(iat(o, "series.points.1.counters.entered"), 3);
	assert_int_equal(iat(o, "totals.entered"), 1 + 2 + 3 + 4);
	json_object_put(o);
	buf_init(&out, 0);
	assert_int_equal(report_overview(s, &q, &out, NULL), NERR_OK);
	o = json_tokener_parse(buf_str(&out));
	/* (1+2+3+4) per unit, at t = 1 and 2 (x2, x3). */
	assert_int_equal(iat(o, "series.sums.entered"), 10 * 2 + 10 * 3);
	assert_int_equal(iat(o, "series.points.1.counters.entered"), 30);
	json_object_put(o);
	buf_fini(&out);
}

static void buckets_aggregate_to_hours_and_days(void **state)
{
	struct report_query q = {.bucket = "hour", .now_ms = T0 + 5 * 3600000LL};
	struct json_object *o;
	/* T0 is 2025-11-24T16:00:00Z: on an hour, not on a day. */
	int64_t hour0 = T0 / 3600000 * 3600000;

	for (int m = 0; m < 130; m += 10) {
		report_count(r, &J, REPORT_ENTERED, 1);
		commit_at(T0 + m * MIN);
	}
	o = journey_json("cart", &q);
	assert_int_equal(json_object_array_length(at(o, "series.points")), 3);
	assert_int_equal(iat(o, "series.points.0.start_ms"), hour0);
	assert_int_equal(iat(o, "series.points.0.counters.entered"), 6);
	assert_int_equal(iat(o, "series.points.1.counters.entered"), 6);
	assert_int_equal(iat(o, "series.points.2.counters.entered"), 1);
	assert_string_equal(json_object_get_string(at(o, "series.points.1.start")),
			    "2025-11-24T17:00:00.000Z");
	json_object_put(o);
	q.bucket = "day";
	o = journey_json("cart", &q);
	assert_int_equal(json_object_array_length(at(o, "series.points")), 1);
	assert_int_equal(iat(o, "series.points.0.start_ms"), T0 / 86400000 * 86400000);
	assert_int_equal(iat(o, "series.points.0.counters.entered"), 13);
	json_object_put(o);
	/* from/to select minutes. */
	q.bucket = "minute";
	q.from_ms = T0 + 10 * MIN;
	q.to_ms = T0 + 30 * MIN;
	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "series.sums.entered"), 2);
	json_object_put(o);
}

static void bad_queries_are_refused_with_the_field(void **state)
{
	struct buf out;
	struct nerr_msg msg;
	struct report_query q = {.bucket = "week"};

	buf_init(&out, 0);
	report_count(r, &J, REPORT_ENTERED, 1);
	commit_at(T0);
	assert_int_equal(report_journey(s, "cart", &q, &out, &msg), NERR_INVAL);
	assert_string_equal(msg.field, "bucket");
	q.bucket = NULL;
	q.from_ms = T0;
	q.to_ms = T0;
	assert_int_equal(report_journey(s, "cart", &q, &out, &msg), NERR_INVAL);
	assert_string_equal(msg.field, "from");
	q = (struct report_query){0};
	assert_int_equal(report_journey(s, "nope", &q, &out, &msg), NERR_NOTFOUND);
	assert_int_equal(report_step(s, "cart", "nope", &q, &out, &msg), NERR_NOTFOUND);
	assert_int_equal(report_template(s, "nope", &q, &out, &msg), NERR_NOTFOUND);
	assert_int_equal(out.len, 0);
	buf_fini(&out);
}

static void rates_and_funnel_are_computed_from_the_counts(void **state)
{
	static const struct report_dims A = {
		.journey = "cart", .version = 1, .step = "split", .arm = "A"};
	static const struct report_dims B = {
		.journey = "cart", .version = 1, .step = "split", .arm = "B"};
	static const struct report_dims MA = {.journey = "cart",
					      .version = 1,
					      .step = "remind",
					      .template_id = "cart-reminder",
					      .channel = "email",
					      .arm = "A"};
	enum report_counter c;
	struct json_object *o;
	struct report_query q = {0};

	report_count(r, &J, REPORT_ENTERED, 10);
	report_count(r, &A, REPORT_ENTERED, 4);
	report_count(r, &B, REPORT_ENTERED, 6);
	report_count(r, &M1, REPORT_ENTERED, 8);
	report_count(r, &M1, REPORT_TARGETED, 8);
	assert_true(report_exclusion_counter("no_consent", &c));
	report_count(r, &M1, c, 2);
	assert_false(report_exclusion_counter("bogus", &c));
	report_count(r, &M1, REPORT_SENT, 6);
	report_count(r, &M1, REPORT_DELIVERED, 5);
	report_count(r, &M1, REPORT_BOUNCED_HARD, 1);
	report_count(r, &M1, REPORT_OPENED, 7);
	report_count(r, &M1, REPORT_OPENED_UNIQUE, 4);
	report_count(r, &M1, REPORT_CLICKED, 3);
	report_count(r, &M1, REPORT_CLICKED_UNIQUE, 1);
	report_count(r, &MA, REPORT_CONVERSIONS, 2);
	/* A step that sorts after the split step: its rows come after the arm's. */
	report_count(
		r,
		&(struct report_dims){
			.journey = "cart", .version = 1, .step = "thanks", .arm = "B"},
		REPORT_CONVERSIONS, 3);
	report_count(r, &MA, REPORT_CONVERSION_VALUE, 30.5);
	assert_true(report_exit_counter("goal", &c));
	assert_int_equal(c, REPORT_EXITED_GOAL);
	report_count(r, &M1, c, 3);
	report_latency(r, &J, REPORT_LAT_EVENT_TO_ENTRY, 0.003);
	report_latency(r, &J, REPORT_LAT_EVENT_TO_ENTRY, 0.003);
	report_latency(r, &J, REPORT_LAT_EVENT_TO_ENTRY, 0.2);
	commit_at(T0);

	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.entered"), 10);
	assert_int_equal(iat(o, "totals.exited.goal"), 3);
	assert_int_equal(iat(o, "totals.conversions"), 5);
	assert_true(dat(o, "totals.conversion_rate") == 0.5);
	assert_int_equal(iat(o, "messages.0.excluded.no_consent"), 2);
	assert_int_equal(iat(o, "messages.0.excluded_total"), 2);
	assert_true(dat(o, "messages.0.delivery_rate") == 5.0 / 6.0);
	assert_true(dat(o, "messages.0.open_rate") == 4.0 / 5.0);
	assert_true(dat(o, "messages.0.click_rate") == 1.0 / 5.0);
	assert_true(dat(o, "messages.0.click_to_open_rate") == 1.0 / 4.0);
	assert_int_equal(iat(o, "messages.0.conversions"), 2);
	/* Split arms: entries at the split, conversions attributed to the arm. */
	assert_string_equal(json_object_get_string(at(o, "arms.0.arm")), "A");
	assert_string_equal(json_object_get_string(at(o, "arms.0.step")), "split");
	assert_int_equal(iat(o, "arms.0.entered"), 4);
	assert_int_equal(iat(o, "arms.0.conversions"), 2);
	assert_true(dat(o, "arms.0.conversion_rate") == 0.5);
	assert_true(dat(o, "arms.0.conversion_value") == 30.5);
	assert_int_equal(json_object_array_length(at(o, "arms")), 2);
	assert_string_equal(json_object_get_string(at(o, "arms.1.step")), "split");
	assert_int_equal(iat(o, "arms.1.entered"), 6);
	assert_int_equal(iat(o, "arms.1.conversions"), 3);
	assert_true(dat(o, "arms.1.conversion_rate") == 0.5);
	/* Latency: 2 of 3 at <= 5 ms, p50 is that bucket's bound. */
	assert_int_equal(iat(o, "latency.event_to_entry.count"), 3);
	assert_true(dat(o, "latency.event_to_entry.p50") == 0.005);
	assert_true(dat(o, "latency.event_to_entry.p99") == 0.25);
	assert_null(at(o, "latency.event_to_decision.p50"));
	json_object_put(o);

	/* No denominators: rates are null. */
	report_count(r, &(struct report_dims){.journey = "empty"}, REPORT_ERRORS, 1);
	commit_at(T0);
	o = journey_json("empty", &q);
	assert_non_null(at(o, "totals"));
	assert_null(at(o, "totals.conversion_rate"));
	assert_null(at(o, "totals.open_rate"));
	json_object_put(o);
}

static void steps_follow_the_definition_order(void **state)
{
	struct store_batch *b = store_batch_new(s);
	static const char doc[] =
		"{\"id\":\"cart\",\"steps\":{\"zeta\":{},\"alpha\":{},\"mid\":{}}}";
	unsigned char key[12] = "v/cart/";
	struct json_object *o;
	const char *names[] = {"alpha", "mid", "zeta", "extra"};

	key[7] = 0, key[8] = 0, key[9] = 0, key[10] = 1;
	store_batch_put(b, STORE_CF_JOURNEYS, key, 11, doc, sizeof(doc) - 1);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_batch_free(b);
	for (unsigned i = 0; i < 4; i++) {
		struct report_dims d = {
			.journey = "cart", .version = 1, .step = names[i]};

		report_count(r, &d, REPORT_ENTERED, 1);
	}
	commit_at(T0);
	o = journey_json("cart", &(struct report_query){0});
	assert_string_equal(json_object_get_string(at(o, "steps.0.step")), "zeta");
	assert_string_equal(json_object_get_string(at(o, "steps.1.step")), "alpha");
	assert_string_equal(json_object_get_string(at(o, "steps.2.step")), "mid");
	assert_string_equal(json_object_get_string(at(o, "steps.3.step")), "extra");
	json_object_put(o);
}

static void versions_filter_and_template_and_overview_reports(void **state)
{
	struct report_dims v2 = M1;
	struct buf out;
	struct json_object *o;
	struct report_query q = {.version = 2};

	v2.version = 2;
	report_count(r, &M1, REPORT_SENT, 1);
	report_count(r, &v2, REPORT_SENT, 4);
	report_count(r,
		     &(struct report_dims){.journey = "other",
					   .version = 1,
					   .step = "x",
					   .template_id = "cart-reminder",
					   .channel = "sms"},
		     REPORT_SENT, 10);
	commit_at(T0);
	o = journey_json("cart", &q);
	assert_int_equal(iat(o, "totals.sent"), 4);
	assert_int_equal(iat(o, "versions.0"), 2);
	json_object_put(o);
	o = journey_json("cart", &(struct report_query){0});
	assert_int_equal(iat(o, "totals.sent"), 5);
	assert_int_equal(json_object_array_length(at(o, "versions")), 2);
	json_object_put(o);

	buf_init(&out, 0);
	assert_int_equal(report_template(s, "cart-reminder", &(struct report_query){0},
					 &out, NULL),
			 NERR_OK);
	o = json_tokener_parse(buf_str(&out));
	assert_int_equal(iat(o, "totals.sent"), 15);
	assert_int_equal(json_object_array_length(at(o, "messages")), 2);
	json_object_put(o);
	buf_reset(&out);
	assert_int_equal(
		report_step(s, "cart", "remind", &(struct report_query){0}, &out, NULL),
		NERR_OK);
	o = json_tokener_parse(buf_str(&out));
	assert_int_equal(iat(o, "messages.0.sent"), 5);
	json_object_put(o);
	buf_reset(&out);
	assert_int_equal(report_overview(s, &(struct report_query){0}, &out, NULL),
			 NERR_OK);
	o = json_tokener_parse(buf_str(&out));
	assert_int_equal(iat(o, "totals.sent"), 15);
	assert_string_equal(json_object_get_string(at(o, "journeys.0.journey")), "cart");
	assert_int_equal(iat(o, "journeys.1.sent"), 10);
	assert_string_equal(json_object_get_string(at(o, "channels.0.channel")), "email");
	assert_int_equal(iat(o, "channels.1.sent"), 10);
	json_object_put(o);
	buf_fini(&out);
}

static void csv_has_one_row_per_counter_with_a_header(void **state)
{
	struct buf out;
	struct report_query q = {.csv = true};
	static const struct report_dims odd = {
		.journey = "cart", .version = 1, .step = "a,b", .template_id = "t\"q"};

	buf_init(&out, 0);
	report_count(r, &M1, REPORT_SENT, 2);
	report_count(r, &M1, REPORT_CONVERSION_VALUE, 12.5);
	report_count(r, &odd, REPORT_ERRORS, 1);
	commit_at(T0);
	assert_int_equal(report_journey(s, "cart", &q, &out, NULL), NERR_OK);
	assert_string_equal(
		buf_str(&out),
		"journey,version,step,template,channel,arm,counter,value\r\n"
		"cart,1,\"a,b\",\"t\"\"q\",,,errors,1\r\n"
		"cart,1,remind,cart-reminder,email,,sent,2\r\n"
		"cart,1,remind,cart-reminder,email,,conversion_value,12.5\r\n");
	buf_reset(&out);
	q.bucket = "minute";
	q.now_ms = T0 + MIN;
	assert_int_equal(report_journey(s, "cart", &q, &out, NULL), NERR_OK);
	assert_string_equal(buf_str(&out),
			    "bucket_start,counter,value\r\n"
			    "2025-11-24T16:00:00.000Z,errors,1\r\n"
			    "2025-11-24T16:00:00.000Z,sent,2\r\n"
			    "2025-11-24T16:00:00.000Z,conversion_value,12.5\r\n");
	buf_fini(&out);
}

static void http_entry_routes_parses_the_query_and_answers_errors(void **state)
{
	struct buf out;
	const char *ct;
	struct json_object *o;

	buf_init(&out, 0);
	report_count(r, &J, REPORT_ENTERED, 2);
	report_count(r, &M1, REPORT_SENT, 3);
	report_count(r, &(struct report_dims){.journey = "cart", .version = 2},
		     REPORT_ENTERED, 5);
	commit_at(T0);

	assert_int_equal(report_http(s, "journeys/cart", "version=1", NULL, &out, &ct),
			 200);
	assert_string_equal(ct, "application/json");
	o = json_tokener_parse(buf_str(&out));
	assert_int_equal(iat(o, "totals.entered"), 2);
	assert_int_equal(iat(o, "version"), 1);
	json_object_put(o);

	buf_reset(&out);
	assert_int_equal(
		report_http(s, "journeys/cart",
			    "bucket=hour&from=2025-11-24T15%3A00%3A00Z&to=1764007200000",
			    "application/json", &out, &ct),
		200);
	o = json_tokener_parse(buf_str(&out));
	assert_string_equal(json_object_get_string(at(o, "series.from")),
			    "2025-11-24T15:00:00.000Z");
	assert_string_equal(json_object_get_string(at(o, "series.bucket")), "hour");
	assert_int_equal(iat(o, "series.sums.entered"), 7);
	json_object_put(o);

	buf_reset(&out);
	assert_int_equal(
		report_http(s, "journeys/cart/steps/remind", "", "text/csv", &out, &ct),
		200);
	assert_string_equal(ct, "text/csv; charset=utf-8");
	assert_string_equal(buf_str(&out),
			    "journey,version,step,template,channel,arm,counter,value\r\n"
			    "cart,1,remind,cart-reminder,email,,sent,3\r\n");

	buf_reset(&out);
	assert_int_equal(report_http(s, "templates/cart-reminder", NULL, NULL, &out, &ct),
			 200);
	buf_reset(&out);
	assert_int_equal(report_http(s, "overview", NULL, NULL, &out, &ct), 200);

	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys/cart", "version=0", NULL, &out, &ct),
			 400);
	o = json_tokener_parse(buf_str(&out));
	assert_string_equal(json_object_get_string(at(o, "error.code")), "invalid");
	assert_string_equal(json_object_get_string(at(o, "error.field")), "version");
	json_object_put(o);
	buf_reset(&out);
	assert_int_equal(
		report_http(s, "journeys/cart", "from=yesterday", NULL, &out, &ct), 400);
	assert_non_null(strstr(buf_str(&out), "\"field\":\"from\""));
	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys/cart", "bucket=%zz", NULL, &out, &ct),
			 400);
	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys/nope", NULL, NULL, &out, &ct), 404);
	assert_non_null(strstr(buf_str(&out), "\"not_found\""));
	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys", NULL, NULL, &out, &ct), 404);
	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys/cart/steps", NULL, NULL, &out, &ct),
			 404);
	buf_reset(&out);
	assert_int_equal(report_http(s, "journeys/a%00b", NULL, NULL, &out, &ct), 404);
	buf_fini(&out);
}

/* Runs promtool check metrics on text; returns its exit status, -1 if absent. */
static int promtool(const char *text, char *report, size_t cap)
{
	char path[128], cmd[256];
	FILE *f, *p;
	size_t n;
	int st;

	if (system("command -v promtool >/dev/null 2>&1") != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/metrics.txt", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(report, 1, cap - 1, p);
	report[n] = '\0';
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void metrics_render_per_journey_and_channel_and_promtool_accepts(void **state)
{
	struct buf out;
	char why[4096];
	int rc;

	buf_init(&out, 0);
	report_count(r, &J, REPORT_ENTERED, 3);
	report_count(r, &S1, REPORT_IN_STEP, 2);
	report_count(r, &M1, REPORT_SENT, 2);
	report_count(r, &M1, REPORT_EXCLUDED_SUPPRESSED, 1);
	report_count(r, &M1, REPORT_CONVERSION_VALUE, 9.75);
	report_count(r, &(struct report_dims){.journey = "we\"ird", .channel = "sms"},
		     REPORT_BOUNCED_SOFT, 1);
	report_latency(r, &J, REPORT_LAT_EVENT_TO_DECISION, 0.004);
	commit_at(T0);
	report_register_metrics(s);
	metrics_render(&out);
	assert_non_null(
		strstr(buf_str(&out),
		       "nudge_report_journey_entered_total{journey=\"cart\"} 3\n"));
	assert_non_null(strstr(buf_str(&out),
			       "nudge_report_journey_in_progress{journey=\"cart\"} 2\n"));
	assert_non_null(strstr(buf_str(&out),
			       "nudge_report_messages_sent_total{journey=\"cart\","
			       "channel=\"email\"} 2\n"));
	assert_non_null(
		strstr(buf_str(&out),
		       "nudge_report_messages_excluded_total{journey=\"cart\",channel="
		       "\"email\",reason=\"suppressed\"} 1\n"));
	assert_non_null(strstr(
		buf_str(&out),
		"nudge_report_journey_conversion_value_total{journey=\"cart\"} 9.75\n"));
	assert_non_null(
		strstr(buf_str(&out),
		       "nudge_report_messages_bounced_total{journey=\"we\\\"ird\","
		       "channel=\"sms\",kind=\"soft\"} 1\n"));
	assert_non_null(strstr(
		buf_str(&out),
		"nudge_report_latency_seconds_bucket{journey=\"cart\",stage=\"event_"
		"to_decision\",le=\"0.005\"} 1\n"));
	assert_non_null(strstr(buf_str(&out),
			       "nudge_report_latency_seconds_count{journey=\"cart\","
			       "stage=\"event_to_decision\"} 1\n"));
	/* Registering again replaces the store (no second copy); NULL stops it. */
	report_register_metrics(s);
	buf_reset(&out);
	metrics_render(&out);
	{
		const char *first = strstr(buf_str(&out),
					   "# TYPE nudge_report_journey_entered_total");

		assert_non_null(first);
		assert_null(
			strstr(first + 1, "# TYPE nudge_report_journey_entered_total"));
	}
	rc = promtool(buf_str(&out), why, sizeof(why));
	if (rc < 0) {
		print_message(
			"promtool not installed (Debian package prometheus): skipped "
			"the promtool check\n");
	} else {
		if (rc != 0)
			fail_msg(
				"promtool check metrics failed (%d):\n%s\n--- input:\n%s",
				rc, why, buf_str(&out));
	}
	report_register_metrics(NULL);
	buf_reset(&out);
	metrics_render(&out);
	assert_null(strstr(buf_str(&out), "nudge_report_"));
	buf_fini(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			counts_reach_the_store_only_with_their_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(discard_drops_pending_counts, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			discard_after_a_failed_commit_forgets_the_flushed_values, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			many_interleaved_dims_each_keep_their_own_counts, setup,
			teardown),
		cmocka_unit_test_setup_teardown(names_from_a_newer_build_are_kept, setup,
						teardown),
		cmocka_unit_test_setup_teardown(totals_and_minute_buckets_survive_reopen,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			minute_buckets_older_than_24h_are_pruned_in_bounded_steps, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			pruning_steps_over_many_journeys_and_keeps_recent_buckets, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			series_of_one_journey_skips_others_and_overview_sums_all, setup,
			teardown),
		cmocka_unit_test_setup_teardown(buckets_aggregate_to_hours_and_days,
						setup, teardown),
		cmocka_unit_test_setup_teardown(bad_queries_are_refused_with_the_field,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			rates_and_funnel_are_computed_from_the_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(steps_follow_the_definition_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			versions_filter_and_template_and_overview_reports, setup,
			teardown),
		cmocka_unit_test_setup_teardown(csv_has_one_row_per_counter_with_a_header,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			http_entry_routes_parses_the_query_and_answers_errors, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			metrics_render_per_journey_and_channel_and_promtool_accepts,
			setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
