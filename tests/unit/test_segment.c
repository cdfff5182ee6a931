/*
 * test_segment.c -- strict JSON parsing and the Segment-spec rules (segment.h).
 *
 * Bodies marked "as sent by" are shaped like what the official SDKs put on the
 * wire (analytics.js / analytics-next, @segment/analytics-node,
 * analytics-python); the invariants referred to are segment.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "ingest/segment.h"
#include "profile/profile.h"
#include "../segment_check.h"

/* 2026-01-02T03:04:05.678Z */
#define NOW_MS 1767323045678LL

static struct segment_limits lim;

static struct json_object *parse_ok(const char *body)
{
	struct json_object *o = NULL;
	struct nerr_msg msg;
	enum nerr rc = segment_parse_json(body, strlen(body), &lim, &o, &msg);

	if (rc != NERR_OK)
		fail_msg("parse failed: %s (field '%s') for %s", msg.message, msg.field,
			 body);
	assert_non_null(o);
	return o;
}

/* Expects the body (len bytes) to fail with rc; checks field and that the
 * message contains want_text when given. */
static void parse_fails_n(const char *body, size_t len, enum nerr want_rc,
			  const char *want_field, const char *want_text)
{
	struct json_object *o = (struct json_object *)1;
	struct nerr_msg msg;
	enum nerr rc = segment_parse_json(body, len, &lim, &o, &msg);

	if (rc != want_rc)
		fail_msg("rc %s, want %s (%s) for %.*s", nerr_str(rc), nerr_str(want_rc),
			 msg.message, (int)len, body);
	assert_null(o);
	if (want_field)
		assert_string_equal(msg.field, want_field);
	if (want_text && !strstr(msg.message, want_text))
		fail_msg("message '%s' lacks '%s'", msg.message, want_text);
}

static void parse_fails(const char *body, const char *want_field, const char *want_text)
{
	parse_fails_n(body, strlen(body), NERR_PARSE, want_field, want_text);
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool has(struct json_object *o, const char *key)
{
	return json_object_object_get_ex(o, key, NULL);
}

/* Bodies segment_fast_event() took, over the whole run; events whose view
 * norm() checked. */
static unsigned fast_taken, views_checked;

/*
 * Checks segment_fast_event() against the general path's result (rc, ev,
 * ts_ms) for body: when it takes the body, the general path accepted it too
 * and the two events are equal as JSON (but a messageId each generated).
 * Returns whether it took the body.
 */
static bool fast_agrees(const char *body, int type, enum nerr rc, struct json_object *ev,
			int64_t ts_ms)
{
	struct json_object *fev, *copy = NULL, *in = NULL;
	struct json_tokener *tok;
	struct nerr_msg pm;
	char *out = (char *)1;
	size_t out_len = 0;
	int64_t fts = 0;
	enum nerr frc = segment_fast_event(body, strlen(body), type, NOW_MS, &lim, &out,
					   &out_len, &fts);
	bool generated;

	if (frc != NERR_OK) {
		assert_int_equal(frc, NERR_NOTFOUND);
		assert_null(out);
		return false;
	}
	if (rc != NERR_OK)
		fail_msg("fast path took a body the general path rejects (%s): %s",
			 nerr_str(rc), body);
	assert_int_equal(segment_parse_json(body, strlen(body), &lim, &in, &pm), NERR_OK);
	generated = !get_str(in, "messageId") || !get_str(in, "messageId")[0];
	json_object_put(in);
	tok = json_tokener_new();
	fev = json_tokener_parse_ex(tok, out, (int)out_len);
	json_tokener_free(tok);
	assert_non_null(fev);
	assert_int_equal(top_members(out, out_len), json_object_object_length(fev));
	assert_true(view_matches(out, out_len, fev));
	assert_int_equal(json_object_deep_copy(ev, &copy, NULL), 0);
	if (generated) {
		assert_non_null(get_str(fev, "messageId"));
		json_object_object_del(fev, "messageId");
		json_object_object_del(copy, "messageId");
	}
	if (!json_object_equal(fev, copy))
		fail_msg("fast %.*s\nvs general %s", (int)out_len, out,
			 json_object_to_json_string(copy));
	assert_int_equal(fts, ts_ms);
	assert_true(out_len <= lim.max_event_bytes);
	json_object_put(fev);
	json_object_put(copy);
	free(out);
	fast_taken++;
	return true;
}

/* Parses and normalizes; returns rc and leaves the event in *out. For a
 * single-event type, also checks the fast path against the result. */
static enum nerr norm(const char *body, int type, const char *path,
		      struct json_object **out, int64_t *ts_ms, struct nerr_msg *msg)
{
	int64_t ts = 0;
	enum nerr rc;

	*out = parse_ok(body);
	rc = segment_normalize(*out, type, path, NOW_MS, &lim, &ts, msg);
	if (type >= 0 && !path[0])
		fast_agrees(body, type, rc, *out, ts);
	if (rc == NERR_OK) {
		size_t sl;
		const char *st = json_object_to_json_string_length(
			*out, JSON_C_TO_STRING_PLAIN, &sl);

		assert_true(view_matches(st, sl, *out));
		views_checked++;
	}
	if (ts_ms)
		*ts_ms = ts;
	return rc;
}

static struct json_object *norm_ok(const char *body, int type, int64_t *ts_ms)
{
	struct json_object *ev;
	struct nerr_msg msg;
	enum nerr rc = norm(body, type, "", &ev, ts_ms, &msg);

	if (rc != NERR_OK)
		fail_msg("normalize failed: %s: %s (field '%s') for %s", nerr_str(rc),
			 msg.message, msg.field, body);
	return ev;
}

static void norm_fails_at(const char *body, int type, const char *path, enum nerr want_rc,
			  const char *want_field)
{
	struct json_object *ev;
	struct nerr_msg msg;
	enum nerr rc = norm(body, type, path, &ev, NULL, &msg);

	if (rc != want_rc)
		fail_msg("rc %s, want %s (%s, field '%s') for %s", nerr_str(rc),
			 nerr_str(want_rc), msg.message, msg.field, body);
	assert_string_equal(msg.field, want_field);
	assert_true(msg.message[0] != '\0');
	json_object_put(ev);
}

static void norm_fails(const char *body, int type, const char *want_field)
{
	norm_fails_at(body, type, "", NERR_INVAL, want_field);
}

static int setup(void **state)
{
	segment_limits_default(&lim);
	return 0;
}

/* ---- realistic SDK bodies ---------------------------------------------- */

/* As sent by analytics.js (analytics-next) with the write key in the body. */
static const char ajs_track[] =
	"{\"timestamp\":\"2026-01-02T03:04:03.000Z\",\"integrations\":{\"All\":true,"
	"\"Mixpanel\":false,\"Segment.io\":{\"deliveryStrategy\":{\"strategy\":"
	"\"standard\"}}},\"type\":\"track\",\"properties\":{\"product_id\":\"507f1f77\","
	"\"price\":18.99,\"quantity\":1,\"currency\":\"USD\",\"tags\":[\"a\",\"b\"]},"
	"\"event\":\"Product Added\",\"messageId\":\"ajs-next-1767323043000-3b1e8a52-"
	"6f7f-4f4e-9c8a-8d0f1c2b3a4e\",\"anonymousId\":\"6d4f1c2a-2b3c-4d5e-8f90-"
	"a1b2c3d4e5f6\",\"userId\":null,\"context\":{\"page\":{\"path\":\"/cart\","
	"\"referrer\":\"https://www.google.com/\",\"search\":\"\",\"title\":\"Cart\","
	"\"url\":\"https://shop.example.com/cart\"},\"userAgent\":\"Mozilla/5.0 (X11; "
	"Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
	"Safari/537.36\","
	"\"userAgentData\":{\"brands\":[{\"brand\":\"Chromium\",\"version\":\"120\"}],"
	"\"mobile\":false,\"platform\":\"Linux\"},\"locale\":\"en-US\",\"library\":{"
	"\"name\":"
	"\"analytics.js\",\"version\":\"next-1.64.0\"},\"timezone\":\"Europe/Paris\","
	"\"campaign\":{\"name\":\"spring\",\"source\":\"newsletter\",\"medium\":"
	"\"email\"}},"
	"\"_metadata\":{\"bundled\":[\"Segment.io\"],\"unbundled\":[],\"bundledIds\":[]},"
	"\"writeKey\":\"wk_js_123\",\"sentAt\":\"2026-01-02T03:04:04.000Z\"}";

static void test_analytics_js_track_is_accepted_and_normalized(void **state)
{
	int64_t ts;
	struct json_object *body = parse_ok(ajs_track), *ctx, *lib;

	assert_string_equal(segment_body_write_key(body), "wk_js_123");
	assert_int_equal(
		segment_normalize(body, SEGMENT_TRACK, "", NOW_MS, &lim, &ts, NULL),
		NERR_OK);
	assert_string_equal(get_str(body, "type"), "track");
	assert_string_equal(get_str(body, "event"), "Product Added");
	assert_false(has(body, "writeKey"));
	assert_false(has(body, "userId")); /* null means absent */
	assert_string_equal(get_str(body, "receivedAt"), "2026-01-02T03:04:05.678Z");
	/* sent 1 s after it happened, received at NOW: timestamp = NOW - 1 s */
	assert_string_equal(get_str(body, "timestamp"), "2026-01-02T03:04:04.678Z");
	assert_int_equal(ts, NOW_MS - 1000);
	assert_string_equal(get_str(body, "originalTimestamp"),
			    "2026-01-02T03:04:03.000Z");
	assert_string_equal(get_str(body, "sentAt"), "2026-01-02T03:04:04.000Z");
	assert_true(strncmp(get_str(body, "messageId"), "ajs-next-", 9) == 0);
	assert_true(json_object_object_get_ex(body, "context", &ctx));
	assert_true(json_object_object_get_ex(ctx, "library", &lib));
	assert_string_equal(get_str(lib, "name"), "analytics.js");
	json_object_put(body);
}

static void test_analytics_js_identify_page_group_alias(void **state)
{
	struct json_object *ev;

	ev = norm_ok(
		"{\"type\":\"identify\",\"userId\":\"u-42\",\"anonymousId\":\"anon-1\","
		"\"traits\":{\"email\":\"Ada@Example.com\",\"name\":\"Ada\","
		"\"plan\":\"pro\",\"logins\":5,\"address\":{\"city\":\"Paris\"}},"
		"\"context\":{\"library\":{\"name\":\"analytics.js\",\"version\":"
		"\"next-1.64.0\"},\"traits\":{\"email\":\"Ada@Example.com\"}},"
		"\"integrations\":{},\"messageId\":\"ajs-next-1\","
		"\"timestamp\":\"2026-01-02T03:04:05.000Z\","
		"\"sentAt\":\"2026-01-02T03:04:05.100Z\"}",
		SEGMENT_IDENTIFY, NULL);
	assert_string_equal(get_str(ev, "type"), "identify");
	assert_string_equal(get_str(ev, "userId"), "u-42");
	json_object_put(ev);

	ev = norm_ok(
		"{\"type\":\"page\",\"anonymousId\":\"anon-1\",\"category\":\"Docs\","
		"\"name\":\"Pricing\",\"properties\":{\"path\":\"/pricing\",\"url\":"
		"\"https://example.com/pricing\",\"title\":\"Pricing\"},\"context\":{}}",
		SEGMENT_PAGE, NULL);
	assert_string_equal(get_str(ev, "name"), "Pricing");
	json_object_put(ev);

	ev = norm_ok("{\"type\":\"group\",\"userId\":\"u-42\",\"groupId\":\"acme\","
		     "\"traits\":{\"name\":\"Acme Inc\",\"employees\":120}}",
		     SEGMENT_GROUP, NULL);
	assert_string_equal(get_str(ev, "groupId"), "acme");
	json_object_put(ev);

	ev = norm_ok("{\"type\":\"alias\",\"userId\":\"u-42\",\"previousId\":\"anon-1\","
		     "\"anonymousId\":\"anon-1\"}",
		     SEGMENT_ALIAS, NULL);
	assert_string_equal(get_str(ev, "previousId"), "anon-1");
	json_object_put(ev);
}

/* The fast path takes what SDKs send, and leaves the unusual to the
 * general path (whose rules norm() checks it against in every test). */
static void test_fast_path_takes_common_bodies(void **state)
{
	static const struct {
		const char *body;
		int type;
		bool taken;
	} cases[] = {
		{ajs_track, SEGMENT_TRACK, true},
		{"{\"userId\":\"u1\",\"event\":\"E\",\"properties\":{\"a\":[1,2.5,"
		 "\"\\u00e9\\/\"],\"b\":{\"c\":null}}}",
		 SEGMENT_TRACK, true},
		{" {\n  \"userId\" : \"u1\" ,\n  \"traits\" : { \"plan\" : \"pro\" }\n} ",
		 SEGMENT_IDENTIFY, true},
		{"{\"anonymousId\":\"a\",\"name\":\"Home\",\"category\":null}",
		 SEGMENT_PAGE, true},
		{"{\"anonymousId\":\"a\",\"name\":\"Home\"}", SEGMENT_SCREEN, true},
		{"{\"userId\":\"u\",\"previousId\":\"a\"}", SEGMENT_ALIAS, true},
		{"{\"userId\":\"u\",\"groupId\":\"g\",\"type\":\"track\","
		 "\"receivedAt\":\"x\",\"writeKey\":\"k\"}",
		 SEGMENT_GROUP, true},
		{"{\"userId\":\"u\",\"event\":\"E\",\"timestamp\":"
		 "\"2026-01-02T03:04:03+02:00\",\"sentAt\":\"2026-01-02T03:04:04Z\"}",
		 SEGMENT_TRACK, true},
		{"{\"userId\":\"u\",\"event\":\"E\",\"originalTimestamp\":"
		 "\"2026-01-02T03:04:03Z\",\"foo\":null}",
		 SEGMENT_TRACK, true},
		/* left to the general path */
		{"{\"userId\":\"u\",\"userId\":\"v\",\"event\":\"E\"}", SEGMENT_TRACK,
		 false},
		{"{\"userId\":42,\"event\":\"E\"}", SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"time\\u0073tamp\":\"x\"}",
		 SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"user\\u0049d\":\"v\"}",
		 SEGMENT_TRACK, false},
		{"{\"userId\":\"u\\u0031\",\"event\":\"E\"}", SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"context\":{\"externalIds\":"
		 "[{\"id\":\"x\",\"type\":\"t\"}]}}",
		 SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"\"}", SEGMENT_TRACK,
		 false},
		{"{\"userId\":\"u\",\"event\":\"\"}", SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"timestamp\":\"yesterday\"}",
		 SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"properties\":[]}", SEGMENT_TRACK,
		 false},
		{"{\"userId\":\"u\",\"event\":\"E\"", SEGMENT_TRACK, false},
		{"[]", SEGMENT_TRACK, false},
		{"{\"userId\":\"u\",\"event\":\"E\",\"context\":{\"traits\":{},"
		 "\"traits\":\"x\"}}",
		 SEGMENT_TRACK, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *ev = NULL;
		struct nerr_msg msg;
		int64_t ts = 0;
		enum nerr rc = NERR_PARSE;

		if (segment_parse_json(cases[i].body, strlen(cases[i].body), &lim, &ev,
				       &msg) == NERR_OK)
			rc = segment_normalize(ev, cases[i].type, "", NOW_MS, &lim, &ts,
					       &msg);
		if (fast_agrees(cases[i].body, cases[i].type, rc, ev, ts) !=
		    cases[i].taken)
			fail_msg("case %zu: fast path %s %s", i,
				 cases[i].taken ? "declined" : "took", cases[i].body);
		json_object_put(ev);
	}
	assert_true(fast_taken >= 9);
}

static size_t view_of(const char *rec, char *out)
{
	size_t n = segment_event_view(rec, strlen(rec), profile_event_members,
				      profile_context_members, out);

	out[n] = 0;
	return n;
}

/* As stored from analytics.js: the engine's view keeps what the profile
 * reads, members as they were (escapes, spacing, numbers), and of context
 * only its traits, externalIds, timezone and device. */
static void test_event_view_keeps_what_the_profile_reads(void **state)
{
	static const char rec[] =
		"{\"type\":\"identify\", \"userId\" : \"u\\\"1\\\\\","
		"\"properties\":{\"type\":\"x\",\"context\":{}},\"traits\":{\"a\":1.50,"
		"\"b\":[1,{\"c\":\"}\"}]},\"context\":{\"library\":{\"name\":"
		"\"analytics.js\"},\"ip\":\"1.2.3.4\",\"traits\":{\"email\":\"a@b.c\"},"
		"\"page\":{\"url\":\"https://x/?q=\\\"}\"},\"timezone\":\"Europe/Paris\","
		"\"device\":{\"token\":\"t\"}},\"messageId\":\"m\",\"anonymousId\":null}";
	char out[sizeof(rec)];
	struct json_object *whole;

	(void)state;
	assert_true(view_of(rec, out) > 0);
	assert_string_equal(
		out, "{\"type\":\"identify\",\"userId\" : \"u\\\"1\\\\\",\"traits\":"
		     "{\"a\":1.50,\"b\":[1,{\"c\":\"}\"}]},\"context\":{\"traits\":"
		     "{\"email\":\"a@b.c\"},\"timezone\":\"Europe/Paris\",\"device\":"
		     "{\"token\":\"t\"}},\"anonymousId\":null}");
	whole = parse_ok(rec);
	assert_true(view_matches(rec, strlen(rec), whole));
	json_object_put(whole);
	/* A context that is not an object is kept as it is. */
	assert_true(view_of("{\"context\":null,\"event\":\"e\"}", out) > 0);
	assert_string_equal(out, "{\"context\":null}");
	assert_true(view_of("{ }", out) > 0);
	assert_string_equal(out, "{}");
}

/* What cannot be cut without parsing is left to the caller's whole parse. */
static void test_event_view_declines_what_needs_parsing(void **state)
{
	char out[2048], big[2048];
	size_t n = 0;

	(void)state;
	/* An escaped key may unescape to a kept name. */
	assert_int_equal(view_of("{\"\\u0074ype\":\"track\"}", out), 0);
	assert_int_equal(view_of("{\"context\":{\"\\u0074raits\":{}}}", out), 0);
	assert_int_equal(view_of("[1]", out), 0);
	/* A record a damaged disk cut short, or garbage: no view, and nothing
	 * written or read outside the record's size (ASan, heap buffers). */
	static const char *const cut[] = {
		"{\"type\":\"track\",\"userId\":\"u\"",
		"{\"",
		"{\"type\":\"track\",\"userId\":\"u\",\"properties\":{\"a\":1",
		"{\"context\":{\"traits\":{}",
		"{\"type\" \"track\"}",
		"{\"type\":\"track\" \"userId\":\"u\"}",
		"{\"a\\",
		"{",
		"",
	};
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		size_t len = strlen(cut[i]);
		char *rec = malloc(len ? len : 1), *o = malloc(len ? len : 1);

		memcpy(rec, cut[i], len);
		if (segment_event_view(rec, len, profile_event_members,
				       profile_context_members, o) != 0)
			fail_msg("a view of %s", cut[i]);
		free(rec);
		free(o);
	}
	/* Over 64 members. */
	n += (size_t)sprintf(big + n, "{");
	for (int i = 0; i < 65; i++)
		n += (size_t)sprintf(big + n, "%s\"k%d\":%d", i ? "," : "", i, i);
	sprintf(big + n, "}");
	assert_int_equal(view_of(big, out), 0);
	big[n - 9] = '}'; /* without ,"k64":64 */
	big[n - 8] = 0;
	assert_true(view_of(big, out) > 0);
	assert_string_equal(out, "{}");
}

/* As sent by @segment/analytics-node: Basic auth, no body write key,
 * per-item timestamps, one sentAt for the batch. */
static const char node_batch[] =
	"{\"batch\":[{\"userId\":\"user-1\",\"event\":\"Order Completed\",\"properties\":"
	"{\"order_id\":\"o-1\",\"total\":99.5,\"products\":[{\"sku\":\"s1\",\"price\":"
	"49.75,\"quantity\":2}]},\"type\":\"track\",\"context\":{\"library\":{\"name\":"
	"\"@segment/"
	"analytics-node\",\"version\":\"2.1.2\"}},\"_metadata\":{\"jsRuntime\":"
	"\"node\"},\"integrations\":{},\"messageId\":\"node-next-1767323044000-aa11\","
	"\"timestamp\":\"2026-01-02T03:04:04.000Z\"},{\"userId\":\"user-1\",\"traits\":"
	"{\"email\":\"u1@example.com\"},\"type\":\"identify\",\"context\":{\"library\":"
	"{\"name\":\"@segment/"
	"analytics-node\",\"version\":\"2.1.2\"}},\"integrations\":{},"
	"\"messageId\":\"node-next-1767323044001-bb22\",\"timestamp\":"
	"\"2026-01-02T03:04:04.001Z\"}],\"sentAt\":\"2026-01-02T03:04:05.000Z\"}";

static void test_analytics_node_batch_is_accepted(void **state)
{
	struct json_object *body = parse_ok(node_batch), *items, *it;
	struct nerr_msg msg;
	int64_t ts;

	assert_null(segment_body_write_key(body));
	assert_int_equal(segment_batch_items(body, &lim, &items, &msg), NERR_OK);
	assert_int_equal(json_object_array_length(items), 2);
	it = json_object_array_get_idx(items, 0);
	segment_batch_merge_context(body, it);
	assert_int_equal(segment_normalize(it, -1, "batch[0]", NOW_MS, &lim, &ts, &msg),
			 NERR_OK);
	/* the batch's sentAt applies: 1 s between timestamp and sentAt */
	assert_string_equal(get_str(it, "sentAt"), "2026-01-02T03:04:05.000Z");
	assert_int_equal(ts, NOW_MS - 1000);
	assert_string_equal(get_str(it, "type"), "track");
	it = json_object_array_get_idx(items, 1);
	segment_batch_merge_context(body, it);
	assert_int_equal(segment_normalize(it, -1, "batch[1]", NOW_MS, &lim, &ts, &msg),
			 NERR_OK);
	assert_int_equal(ts, NOW_MS - 999);
	assert_string_equal(get_str(it, "type"), "identify");
	json_object_put(body);
}

/* As sent by analytics-python: write key in the body as well, nulls for
 * absent ids, microsecond timestamps with +00:00. */
static void test_analytics_python_batch_is_accepted(void **state)
{
	struct json_object *body =
		parse_ok("{\"batch\": [{\"integrations\": {}, \"anonymousId\": null, "
			 "\"properties\": "
			 "{\"plan\": \"Enterprise\"}, \"timestamp\": "
			 "\"2026-01-02T03:04:05.123456+00:00\", "
			 "\"context\": {\"library\": {\"name\": \"analytics-python\", "
			 "\"version\": "
			 "\"2.3.2\"}}, \"userId\": \"019mr8mf4r\", \"type\": \"track\", "
			 "\"event\": "
			 "\"Signed Up\", \"messageId\": "
			 "\"2d5f3c7e-5b9a-4c1e-8f6d-0a1b2c3d4e5f\"}], "
			 "\"sentAt\": \"2026-01-02T03:04:05.223456+00:00\", "
			 "\"writeKey\": \"wk_py\"}");
	struct json_object *items, *it;
	int64_t ts;

	assert_string_equal(segment_body_write_key(body), "wk_py");
	assert_int_equal(segment_batch_items(body, &lim, &items, NULL), NERR_OK);
	it = json_object_array_get_idx(items, 0);
	segment_batch_merge_context(body, it);
	assert_int_equal(segment_normalize(it, -1, "batch[0]", NOW_MS, &lim, &ts, NULL),
			 NERR_OK);
	assert_int_equal(ts, NOW_MS - 100);
	assert_false(has(it, "anonymousId"));
	assert_false(has(it, "writeKey"));
	assert_string_equal(get_str(it, "originalTimestamp"),
			    "2026-01-02T03:04:05.123456+00:00");
	json_object_put(body);
}

/* ---- strict JSON --------------------------------------------------------- */

static void test_every_truncation_of_a_valid_body_fails(void **state)
{
	size_t len = strlen(ajs_track);

	for (size_t n = 0; n < len; n++) {
		struct json_object *o = NULL;
		struct nerr_msg msg;

		assert_int_equal(segment_parse_json(ajs_track, n, &lim, &o, &msg),
				 NERR_PARSE);
		assert_null(o);
	}
	parse_fails("{\"a\":1", "a", "unexpected end of input");
	parse_fails("{\"a\":\"xy", "a", "unterminated string");
	parse_fails("{\"a\"", "a", "unexpected end");
}

static void test_trailing_bytes_are_rejected_whitespace_is_not(void **state)
{
	struct json_object *o;

	parse_fails("{}x", "", "after the JSON value");
	parse_fails("{}{}", "", "after the JSON value");
	parse_fails("{} ,", "", "after the JSON value");
	parse_fails("{}\v", "", "after the JSON value");
	o = parse_ok(" \t\r\n{\"a\":1} \n\r\t ");
	json_object_put(o);
}

static void test_nesting_beyond_the_depth_limit_is_rejected(void **state)
{
	char body[256];
	size_t n;

	/* the body object is level 1; 31 arrays inside make 32 */
	for (int depth = 32; depth <= 34; depth++) {
		n = (size_t)snprintf(body, sizeof(body), "{\"a\":");
		for (int i = 1; i < depth; i++)
			body[n++] = '[';
		for (int i = 1; i < depth; i++)
			body[n++] = ']';
		body[n++] = '}';
		body[n] = '\0';
		if (depth == 32) {
			json_object_put(parse_ok(body));
		} else {
			parse_fails(body, NULL, "nesting deeper than 32 levels");
		}
	}
	/* the field names where it broke */
	parse_fails("{\"p\":{\"q\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]"
		    "]]]]]]]]]]]]]]"
		    "}}",
		    "p.q"
		    "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
		    "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]", /* 30 arrays */
		    "nesting");
	/* a smaller configured limit is honoured */
	lim.max_depth = 2;
	json_object_put(parse_ok("{\"a\":{}}"));
	parse_fails("{\"a\":{\"b\":[]}}", "a.b", "deeper than 2");
}

static void test_invalid_utf8_is_rejected(void **state)
{
	parse_fails("{\"a\":\"\xc0\x80\"}", "a", "invalid UTF-8");     /* overlong NUL */
	parse_fails("{\"a\":\"\xe0\x80\xaf\"}", "a", "invalid UTF-8"); /* overlong '/' */
	parse_fails("{\"a\":\"\xed\xa0\x80\"}", "a", "invalid UTF-8"); /* surrogate */
	parse_fails("{\"a\":\"\xe2\x82\"}", "a", "invalid UTF-8");     /* truncated */
	parse_fails("{\"a\":\"\x80\"}", "a", "invalid UTF-8"); /* lone continuation */
	parse_fails("{\"a\":\"\xf5\x80\x80\x80\"}", "a", "invalid UTF-8");
	parse_fails("{\"a\":\"\xf4\x90\x80\x80\"}", "a",
		    "invalid UTF-8"); /* > U+10FFFF */
	parse_fails("{\"a\":\"\xff\"}", "a", "invalid UTF-8");
	parse_fails("{\"\xc3\x28\":1}", "", "invalid UTF-8"); /* in a key */
	parse_fails("{\"a\":\xc3\xa9}", "a", "unexpected byte 0xC3");
	parse_fails("\xef\xbb\xbf{}", "", "unexpected byte 0xEF"); /* BOM */
}

static void test_valid_unicode_is_kept(void **state)
{
	struct json_object *o =
		parse_ok("{\"a\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\","
			 "\"b\":\"\\u00e9\\ud83d\\ude00\\/\"}");

	assert_string_equal(get_str(o, "a"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	assert_string_equal(get_str(o, "b"), "\xc3\xa9\xf0\x9f\x98\x80/");
	json_object_put(o);
}

static void test_bad_escapes_are_rejected(void **state)
{
	parse_fails("{\"a\":\"\\u0000\"}", "a", "\\u0000 is not allowed");
	parse_fails("{\"a\\u0000b\":1}", "", "\\u0000 is not allowed");
	parse_fails("{\"a\":\"\\ud800\"}", "a", "unpaired surrogate");
	parse_fails("{\"a\":\"\\ud800\\u0041\"}", "a", "unpaired surrogate");
	parse_fails("{\"a\":\"\\udc00\"}", "a", "unpaired surrogate");
	parse_fails("{\"a\":\"\\u12\"}", "a", "invalid \\u escape");
	parse_fails("{\"a\":\"\\x41\"}", "a", "invalid escape");
	parse_fails("{\"a\":\"\\'\"}", "a", "invalid escape");
	parse_fails("{\"a\":\"x\ty\"}", "a", "control character");
	parse_fails("{\"a\":\"x\ny\"}", "a", "control character");
}

static void test_nan_infinity_and_out_of_range_numbers_are_rejected(void **state)
{
	struct json_object *o, *v;

	parse_fails("{\"a\":NaN}", "a", "unexpected character 'N'");
	parse_fails("{\"a\":nan}", "a", "invalid literal");
	parse_fails("{\"a\":Infinity}", "a", "unexpected character 'I'");
	parse_fails("{\"a\":-Infinity}", "a", "invalid number");
	parse_fails("{\"a\":1e400}", "a", "out of the double range");
	parse_fails("{\"a\":-1.5E+999}", "a", "out of the double range");
	parse_fails("{\"properties\":{\"n\":99999999999999999999}}", "properties.n",
		    "out of the 64-bit range");
	parse_fails("{\"a\":9223372036854775808}", "a", "64-bit range");
	parse_fails("{\"a\":18446744073709551615}", "a", "64-bit range");
	parse_fails("{\"a\":-9223372036854775809}", "a", "64-bit range");
	parse_fails("{\"a\":[1,2,12345678901234567890123]}", "a[2]", "64-bit range");
	o = parse_ok("{\"a\":9223372036854775807,\"b\":-9223372036854775808,"
		     "\"c\":1e-400,\"d\":1.5e308,\"e\":-0,\"f\":0.5,\"g\":1E+2}");
	assert_true(json_object_object_get_ex(o, "a", &v));
	assert_true(json_object_get_int64(v) == INT64_MAX);
	assert_true(json_object_object_get_ex(o, "b", &v));
	assert_true(json_object_get_int64(v) == INT64_MIN);
	assert_true(json_object_object_get_ex(o, "c", &v));
	assert_true(json_object_get_double(v) == 0.0);
	json_object_put(o);
}

static void test_non_json_number_forms_are_rejected(void **state)
{
	parse_fails("{\"a\":01}", "a", "leading zeros");
	parse_fails("{\"a\":1.}", "a", "decimal point");
	parse_fails("{\"a\":.5}", "a", "unexpected character '.'");
	parse_fails("{\"a\":+1}", "a", "unexpected character '+'");
	parse_fails("{\"a\":1e}", "a", "exponent");
	parse_fails("{\"a\":-}", "a", "invalid number");
	parse_fails("{\"a\":0x10}", "a", "expected ',' or '}'");
}

static void test_nul_bytes_are_rejected(void **state)
{
	parse_fails_n("{\"a\":\"b\0c\"}", 11, NERR_PARSE, "a", "NUL byte");
	parse_fails_n("{\"a\":1}\0", 8, NERR_PARSE, "", "NUL byte");
	parse_fails_n("\0{}", 3, NERR_PARSE, "", "NUL byte");
	parse_fails_n("{\"a\":\0}", 7, NERR_PARSE, "a", "NUL byte");
}

static void test_other_syntax_errors_are_rejected(void **state)
{
	parse_fails("{'a':1}", "", "expected a string key");
	parse_fails("{\"a\":'x'}", "a", "unexpected character");
	parse_fails("{\"a\":1,}", "", "expected a string key");
	parse_fails("{\"a\":[1,]}", "a[1]", "unexpected character ']'");
	parse_fails("{\"a\":/*c*/1}", "a", "unexpected character '/'");
	parse_fails("{\"a\":True}", "a", "unexpected character 'T'");
	parse_fails("{\"a\":tru}", "a", "invalid literal");
	parse_fails("{\"a\":nul}", "a", "invalid literal");
	parse_fails("{\"a\" 1}", "a", "expected ':'");
	parse_fails("{\"a\":1 \"b\":2}", "a", "expected ',' or '}'");
	parse_fails("{\"a\":[1 2]}", "a[0]", "expected ',' or ']'");
	parse_fails("{a:1}", "", "expected a string key");
	parse_fails("", "", "empty");
	parse_fails(" \n ", "", "empty");
}

static void test_syntax_errors_give_line_and_column(void **state)
{
	parse_fails("{\n  \"a\": 1,\n  \"b\": ?\n}", "b", "line 3, column 8 (byte 19)");
	parse_fails("{\"a\":x}", "a", "line 1, column 6 (byte 5)");
}

static void test_long_error_paths_are_cut_on_a_character_boundary(void **state)
{
	char body[512], want[256];
	size_t n = 0, w = 0;

	body[n++] = '{';
	body[n++] = '"';
	for (int i = 0; i < 100; i++) {
		body[n++] = '\xc3';
		body[n++] = '\xa9';
	}
	snprintf(body + n, sizeof(body) - n, "\":x}");
	/* 127 bytes fit in the field: 63 whole characters, not half of the 64th */
	for (int i = 0; i < 63; i++) {
		want[w++] = '\xc3';
		want[w++] = '\xa9';
	}
	want[w] = '\0';
	parse_fails(body, want, "unexpected character 'x'");
}

static void test_top_level_must_be_an_object(void **state)
{
	parse_fails_n("[]", 2, NERR_INVAL, "", "must be a JSON object");
	parse_fails_n("\"x\"", 3, NERR_INVAL, "", "must be a JSON object");
	parse_fails_n("123", 3, NERR_INVAL, "", "must be a JSON object");
	parse_fails_n("null", 4, NERR_INVAL, "", "must be a JSON object");
}

static void test_duplicate_keys_last_one_wins(void **state)
{
	struct json_object *o =
		parse_ok("{\"userId\":\"first\",\"x\":1,\"userId\":\"last\"}");
	struct json_object_iterator it = json_object_iter_begin(o);

	assert_string_equal(get_str(o, "userId"), "last");
	assert_int_equal(json_object_object_length(o), 2);
	/* the key keeps its first position */
	assert_string_equal(json_object_iter_peek_name(&it), "userId");
	json_object_put(o);
}

/* ---- identities -------------------------------------------------------- */

static void test_user_or_anonymous_id_is_required(void **state)
{
	norm_fails("{\"event\":\"E\"}", SEGMENT_TRACK, "userId");
	norm_fails("{\"event\":\"E\",\"userId\":\"\",\"anonymousId\":\"\"}",
		   SEGMENT_TRACK, "userId");
	norm_fails("{\"event\":\"E\",\"userId\":null,\"anonymousId\":null}",
		   SEGMENT_TRACK, "userId");
	norm_fails_at("{\"type\":\"identify\",\"traits\":{}}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].userId");
	norm_fails("{}", SEGMENT_IDENTIFY, "userId");
	norm_fails("{}", SEGMENT_PAGE, "userId");
	norm_fails("{}", SEGMENT_SCREEN, "userId");
	norm_fails("{\"groupId\":\"g\"}", SEGMENT_GROUP, "userId");
}

static void test_empty_ids_do_not_count_and_are_removed(void **state)
{
	struct json_object *ev =
		norm_ok("{\"event\":\"E\",\"userId\":\"\",\"anonymousId\":\"a\"}",
			SEGMENT_TRACK, NULL);

	assert_false(has(ev, "userId"));
	assert_string_equal(get_str(ev, "anonymousId"), "a");
	json_object_put(ev);
}

static void test_numeric_ids_become_strings(void **state)
{
	struct json_object *ev =
		norm_ok("{\"userId\":42,\"anonymousId\":12.5}", SEGMENT_IDENTIFY, NULL);

	assert_string_equal(get_str(ev, "userId"), "42");
	assert_string_equal(get_str(ev, "anonymousId"), "12.5");
	json_object_put(ev);
	ev = norm_ok("{\"userId\":1e3,\"groupId\":-7}", SEGMENT_GROUP, NULL);
	assert_string_equal(get_str(ev, "userId"), "1000");
	assert_string_equal(get_str(ev, "groupId"), "-7");
	json_object_put(ev);
	ev = norm_ok("{\"userId\":9007199254740993,\"previousId\":0.1}", SEGMENT_ALIAS,
		     NULL);
	assert_string_equal(get_str(ev, "userId"), "9007199254740993");
	assert_string_equal(get_str(ev, "previousId"), "0.1");
	json_object_put(ev);
}

static void test_ids_of_other_types_are_rejected(void **state)
{
	norm_fails("{\"userId\":true}", SEGMENT_IDENTIFY, "userId");
	norm_fails("{\"userId\":{\"id\":1}}", SEGMENT_IDENTIFY, "userId");
	norm_fails("{\"userId\":\"u\",\"anonymousId\":[1]}", SEGMENT_IDENTIFY,
		   "anonymousId");
	norm_fails("{\"userId\":\"u\",\"groupId\":false}", SEGMENT_GROUP, "groupId");
	norm_fails("{\"userId\":\"u\",\"previousId\":{}}", SEGMENT_ALIAS, "previousId");
}

/* ---- per-type rules ------------------------------------------------------ */

static void test_track_needs_an_event_name(void **state)
{
	char body[1024];
	struct json_object *ev;

	norm_fails("{\"userId\":\"u\"}", SEGMENT_TRACK, "event");
	norm_fails("{\"userId\":\"u\",\"event\":\"\"}", SEGMENT_TRACK, "event");
	norm_fails("{\"userId\":\"u\",\"event\":null}", SEGMENT_TRACK, "event");
	norm_fails("{\"userId\":\"u\",\"event\":12}", SEGMENT_TRACK, "event");
	norm_fails_at("{\"type\":\"track\",\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].event");
	/* 200 characters pass, 201 do not; multi-byte characters count once */
	snprintf(body, sizeof(body), "{\"userId\":\"u\",\"event\":\"%0200d\"}", 0);
	json_object_put(norm_ok(body, SEGMENT_TRACK, NULL));
	snprintf(body, sizeof(body), "{\"userId\":\"u\",\"event\":\"%0201d\"}", 0);
	norm_fails(body, SEGMENT_TRACK, "event");
	size_t n = (size_t)snprintf(body, sizeof(body), "{\"userId\":\"u\",\"event\":\"");
	for (int i = 0; i < 200; i++) {
		body[n++] = '\xc3';
		body[n++] = '\xa9';
	}
	snprintf(body + n, sizeof(body) - n, "\"}");
	ev = norm_ok(body, SEGMENT_TRACK, NULL);
	json_object_put(ev);
}

static void test_alias_needs_user_id_and_previous_id(void **state)
{
	norm_fails("{\"userId\":\"u\"}", SEGMENT_ALIAS, "previousId");
	norm_fails("{\"userId\":\"u\",\"previousId\":\"\"}", SEGMENT_ALIAS, "previousId");
	norm_fails("{\"anonymousId\":\"a\",\"previousId\":\"p\"}", SEGMENT_ALIAS,
		   "userId");
}

static void test_group_needs_a_group_id(void **state)
{
	norm_fails("{\"userId\":\"u\"}", SEGMENT_GROUP, "groupId");
	norm_fails("{\"userId\":\"u\",\"groupId\":null}", SEGMENT_GROUP, "groupId");
}

static void test_page_and_screen_names_are_optional_strings(void **state)
{
	json_object_put(norm_ok("{\"userId\":\"u\"}", SEGMENT_PAGE, NULL));
	json_object_put(
		norm_ok("{\"userId\":\"u\",\"name\":\"Home\"}", SEGMENT_SCREEN, NULL));
	norm_fails("{\"userId\":\"u\",\"name\":1}", SEGMENT_PAGE, "name");
	norm_fails("{\"userId\":\"u\",\"name\":[]}", SEGMENT_SCREEN, "name");
	norm_fails("{\"userId\":\"u\",\"category\":{}}", SEGMENT_PAGE, "category");
}

static void test_object_fields_must_be_objects(void **state)
{
	struct json_object *ev;

	norm_fails("{\"userId\":\"u\",\"event\":\"E\",\"properties\":[]}", SEGMENT_TRACK,
		   "properties");
	norm_fails("{\"userId\":\"u\",\"traits\":\"x\"}", SEGMENT_IDENTIFY, "traits");
	norm_fails("{\"userId\":\"u\",\"context\":1}", SEGMENT_PAGE, "context");
	norm_fails("{\"userId\":\"u\",\"integrations\":true}", SEGMENT_SCREEN,
		   "integrations");
	norm_fails("{\"userId\":\"u\",\"context\":{\"traits\":[]}}", SEGMENT_IDENTIFY,
		   "context.traits");
	norm_fails_at(
		"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"properties\":1}",
		-1, "batch[7]", NERR_INVAL, "batch[7].properties");
	ev = norm_ok(
		"{\"userId\":\"u\",\"event\":\"E\",\"properties\":null,\"context\":null}",
		SEGMENT_TRACK, NULL);
	assert_false(has(ev, "properties"));
	assert_false(has(ev, "context"));
	json_object_put(ev);
}

static void test_context_external_ids_are_checked(void **state)
{
	struct json_object *ev, *ctx, *ids, *first;

	ev = norm_ok("{\"userId\":\"u\",\"context\":{\"externalIds\":[{\"id\":\"a@b.c\","
		     "\"type\":\"email\",\"collection\":\"users\",\"encoding\":\"none\"},"
		     "{\"id\":12345,\"type\":\"crm_id\"}]}}",
		     SEGMENT_IDENTIFY, NULL);
	assert_true(json_object_object_get_ex(ev, "context", &ctx));
	assert_true(json_object_object_get_ex(ctx, "externalIds", &ids));
	first = json_object_array_get_idx(ids, 1);
	assert_string_equal(get_str(first, "id"), "12345");
	json_object_put(ev);
	norm_fails("{\"userId\":\"u\",\"context\":{\"externalIds\":{}}}",
		   SEGMENT_IDENTIFY, "context.externalIds");
	norm_fails("{\"userId\":\"u\",\"context\":{\"externalIds\":[1]}}",
		   SEGMENT_IDENTIFY, "context.externalIds[0]");
	norm_fails("{\"userId\":\"u\",\"context\":{\"externalIds\":[{\"id\":\"x\","
		   "\"type\":\"t\"},{\"type\":\"email\"}]}}",
		   SEGMENT_IDENTIFY, "context.externalIds[1].id");
	norm_fails("{\"userId\":\"u\",\"context\":{\"externalIds\":[{\"id\":\"x\"}]}}",
		   SEGMENT_IDENTIFY, "context.externalIds[0].type");
	norm_fails("{\"userId\":\"u\",\"context\":{\"externalIds\":[{\"id\":\"x\","
		   "\"type\":\"t\",\"encoding\":5}]}}",
		   SEGMENT_IDENTIFY, "context.externalIds[0].encoding");
	norm_fails_at(
		"{\"type\":\"identify\",\"userId\":\"u\",\"context\":{\"externalIds\":"
		"[{\"id\":true,\"type\":\"t\"}]}}",
		-1, "batch[2]", NERR_INVAL, "batch[2].context.externalIds[0].id");
}

static void test_null_limits_mean_the_defaults(void **state)
{
	struct json_object *o = NULL, *items;
	struct nerr_msg msg;
	char body[256];
	size_t n = (size_t)snprintf(body, sizeof(body), "{\"a\":");

	for (int i = 0; i < 32; i++)
		body[n++] = '[';
	body[n] = '\0';
	assert_int_equal(segment_parse_json(body, n, NULL, &o, &msg), NERR_PARSE);
	assert_non_null(strstr(msg.message, "deeper than 32"));
	snprintf(body, sizeof(body), "{\"batch\":[],\"userId\":\"u\"}");
	assert_int_equal(segment_parse_json(body, strlen(body), NULL, &o, &msg), NERR_OK);
	assert_int_equal(segment_batch_items(o, NULL, &items, &msg), NERR_OK);
	assert_int_equal(
		segment_normalize(o, SEGMENT_IDENTIFY, "", NOW_MS, NULL, NULL, &msg),
		NERR_OK);
	json_object_put(o);
}

static void test_event_must_be_an_object(void **state)
{
	struct json_object *arr = json_object_new_array();
	struct nerr_msg msg;

	assert_int_equal(segment_normalize(arr, -1, "batch[2]", NOW_MS, &lim, NULL, &msg),
			 NERR_INVAL);
	assert_string_equal(msg.field, "batch[2]");
	json_object_put(arr);
}

/* ---- type ---------------------------------------------------------------- */

static void test_type_names_round_trip(void **state)
{
	for (int t = 0; t < SEGMENT__COUNT; t++)
		assert_int_equal(segment_type_from_name(segment_type_name(t)), t);
	assert_int_equal(segment_type_from_name("Track"), -1);
	assert_int_equal(segment_type_from_name("batch"), -1);
	assert_int_equal(segment_type_from_name(NULL), -1);
	assert_string_equal(segment_type_name(SEGMENT__COUNT), "?");
}

static void test_batch_item_type_is_required_and_known(void **state)
{
	norm_fails_at("{\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL, "batch[3].type");
	norm_fails_at("{\"type\":null,\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].type");
	norm_fails_at("{\"type\":\"Track\",\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].type");
	norm_fails_at("{\"type\":\"batch\",\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].type");
	norm_fails_at("{\"type\":1,\"userId\":\"u\"}", -1, "batch[3]", NERR_INVAL,
		      "batch[3].type");
}

static void test_endpoint_type_overrides_the_body(void **state)
{
	struct json_object *ev =
		norm_ok("{\"type\":\"identify\",\"userId\":\"u\",\"event\":\"E\"}",
			SEGMENT_TRACK, NULL);

	assert_string_equal(get_str(ev, "type"), "track");
	json_object_put(ev);
	ev = norm_ok("{\"userId\":\"u\"}", SEGMENT_SCREEN, NULL);
	assert_string_equal(get_str(ev, "type"), "screen");
	json_object_put(ev);
}

/* ---- messageId ----------------------------------------------------------- */

static bool is_uuid_v4(const char *s)
{
	if (!s || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!strchr("0123456789abcdef", s[i])) {
			return false;
		}
	}
	return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static void test_message_id_is_generated_when_absent(void **state)
{
	struct json_object *a = norm_ok("{\"userId\":\"u\"}", SEGMENT_IDENTIFY, NULL);
	struct json_object *b =
		norm_ok("{\"userId\":\"u\",\"messageId\":\"\"}", SEGMENT_IDENTIFY, NULL);
	struct json_object *c =
		norm_ok("{\"userId\":\"u\",\"messageId\":null}", SEGMENT_IDENTIFY, NULL);

	assert_true(is_uuid_v4(get_str(a, "messageId")));
	assert_true(is_uuid_v4(get_str(b, "messageId")));
	assert_true(is_uuid_v4(get_str(c, "messageId")));
	assert_string_not_equal(get_str(a, "messageId"), get_str(b, "messageId"));
	json_object_put(a);
	json_object_put(b);
	json_object_put(c);
}

static void test_message_id_is_kept_and_checked(void **state)
{
	char body[256];
	struct json_object *ev;

	snprintf(body, sizeof(body), "{\"userId\":\"u\",\"messageId\":\"%0100d\"}", 7);
	ev = norm_ok(body, SEGMENT_IDENTIFY, NULL);
	assert_int_equal(strlen(get_str(ev, "messageId")), 100);
	/* normalizing again (a retry through a second hop) keeps it stable */
	assert_int_equal(
		segment_normalize(ev, SEGMENT_IDENTIFY, "", NOW_MS + 5, &lim, NULL, NULL),
		NERR_OK);
	assert_int_equal(strlen(get_str(ev, "messageId")), 100);
	json_object_put(ev);
	snprintf(body, sizeof(body), "{\"userId\":\"u\",\"messageId\":\"%0101d\"}", 7);
	norm_fails(body, SEGMENT_IDENTIFY, "messageId");
	norm_fails("{\"userId\":\"u\",\"messageId\":123}", SEGMENT_IDENTIFY, "messageId");
	norm_fails_at("{\"type\":\"page\",\"userId\":\"u\",\"messageId\":{}}", -1,
		      "batch[0]", NERR_INVAL, "batch[0].messageId");
}

/* ---- timestamps ------------------------------------------------------------ */

static void test_without_client_time_the_event_happens_when_received(void **state)
{
	int64_t ts = 0;
	struct json_object *ev =
		norm_ok("{\"userId\":\"u\",\"receivedAt\":\"2020-01-01T00:00:00Z\","
			"\"sentAt\":\"2026-01-02T03:04:05Z\"}",
			SEGMENT_IDENTIFY, &ts);

	assert_int_equal(ts, NOW_MS);
	assert_string_equal(get_str(ev, "timestamp"), "2026-01-02T03:04:05.678Z");
	assert_string_equal(get_str(ev, "receivedAt"), "2026-01-02T03:04:05.678Z");
	assert_false(has(ev, "originalTimestamp"));
	json_object_put(ev);
}

static void test_timestamp_without_sent_at_is_honoured(void **state)
{
	int64_t ts = 0;
	struct json_object *ev = norm_ok("{\"userId\":\"u\",\"timestamp\":"
					 "\"2025-06-01T12:00:00+02:00\"}",
					 SEGMENT_IDENTIFY, &ts);

	assert_string_equal(get_str(ev, "timestamp"), "2025-06-01T10:00:00.000Z");
	assert_string_equal(get_str(ev, "originalTimestamp"),
			    "2025-06-01T12:00:00+02:00");
	assert_int_equal(ts, 1748772000000LL);
	json_object_put(ev);
}

static void test_original_timestamp_stands_in_for_timestamp(void **state)
{
	int64_t ts = 0;
	struct json_object *ev = norm_ok("{\"userId\":\"u\",\"originalTimestamp\":"
					 "\"2025-06-01T10:00:00.250Z\"}",
					 SEGMENT_IDENTIFY, &ts);

	assert_int_equal(ts, 1748772000250LL);
	assert_string_equal(get_str(ev, "originalTimestamp"), "2025-06-01T10:00:00.250Z");
	json_object_put(ev);
	/* and is corrected with sentAt */
	ev = norm_ok("{\"userId\":\"u\",\"originalTimestamp\":\"2026-01-02T03:00:00Z\","
		     "\"sentAt\":\"2026-01-02T03:10:00Z\"}",
		     SEGMENT_IDENTIFY, &ts);
	assert_int_equal(ts, NOW_MS - 600000);
	json_object_put(ev);
}

static void test_clock_skew_is_corrected_with_sent_at(void **state)
{
	int64_t ts = 0;
	/* a device clock 1 hour fast: event 30 s before sending */
	struct json_object *ev =
		norm_ok("{\"userId\":\"u\",\"timestamp\":\"2026-01-02T04:03:35Z\","
			"\"sentAt\":\"2026-01-02T04:04:05Z\"}",
			SEGMENT_IDENTIFY, &ts);

	assert_int_equal(ts, NOW_MS - 30000);
	assert_string_equal(get_str(ev, "timestamp"), "2026-01-02T03:03:35.678Z");
	assert_string_equal(get_str(ev, "originalTimestamp"), "2026-01-02T04:03:35Z");
	json_object_put(ev);
	/* a given originalTimestamp is kept; timestamp is what gets corrected */
	ev = norm_ok("{\"userId\":\"u\",\"timestamp\":\"2026-01-02T04:03:35Z\","
		     "\"originalTimestamp\":\"2000-01-01T00:00:00Z\","
		     "\"sentAt\":\"2026-01-02T04:04:05Z\"}",
		     SEGMENT_IDENTIFY, &ts);
	assert_int_equal(ts, NOW_MS - 30000);
	assert_string_equal(get_str(ev, "originalTimestamp"), "2000-01-01T00:00:00Z");
	json_object_put(ev);
}

static void test_bad_times_are_rejected(void **state)
{
	norm_fails("{\"userId\":\"u\",\"timestamp\":1767323045678}", SEGMENT_IDENTIFY,
		   "timestamp");
	norm_fails("{\"userId\":\"u\",\"timestamp\":\"yesterday\"}", SEGMENT_IDENTIFY,
		   "timestamp");
	norm_fails("{\"userId\":\"u\",\"timestamp\":\"2026-01-02T03:04:05\"}",
		   SEGMENT_IDENTIFY, "timestamp");
	norm_fails("{\"userId\":\"u\",\"timestamp\":\"2026-02-30T03:04:05Z\"}",
		   SEGMENT_IDENTIFY, "timestamp");
	norm_fails("{\"userId\":\"u\",\"sentAt\":\"now\"}", SEGMENT_IDENTIFY, "sentAt");
	norm_fails("{\"userId\":\"u\",\"originalTimestamp\":{}}", SEGMENT_IDENTIFY,
		   "originalTimestamp");
	norm_fails_at("{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\","
		      "\"timestamp\":\"\"}",
		      -1, "batch[9]", NERR_INVAL, "batch[9].timestamp");
	/* a correction that lands before year 0 */
	norm_fails("{\"userId\":\"u\",\"timestamp\":\"0001-01-01T00:00:00Z\","
		   "\"sentAt\":\"9999-01-01T00:00:00Z\"}",
		   SEGMENT_IDENTIFY, "sentAt");
}

/* ---- writeKey and size ----------------------------------------------------- */

static void test_write_key_is_read_and_not_stored(void **state)
{
	struct json_object *o = parse_ok("{\"writeKey\":\"k1\",\"userId\":\"u\"}");

	assert_string_equal(segment_body_write_key(o), "k1");
	assert_int_equal(
		segment_normalize(o, SEGMENT_IDENTIFY, "", NOW_MS, &lim, NULL, NULL),
		NERR_OK);
	assert_false(has(o, "writeKey"));
	assert_null(segment_body_write_key(o));
	json_object_put(o);
	o = parse_ok("{\"writeKey\":\"\"}");
	assert_null(segment_body_write_key(o));
	json_object_put(o);
	o = parse_ok("{\"writeKey\":42}");
	assert_null(segment_body_write_key(o));
	json_object_put(o);
	o = parse_ok("{\"writeKey\":null}");
	assert_null(segment_body_write_key(o));
	json_object_put(o);
}

static void test_event_size_is_capped_on_the_stored_form(void **state)
{
	const char *body = "{\"userId\":\"u\",\"messageId\":\"m1\",\"properties\":{\"s\":"
			   "\"0123456789012345678901234567890123456789\"}}";
	struct json_object *ev = norm_ok(body, SEGMENT_IDENTIFY, NULL);
	size_t len;
	struct nerr_msg msg;

	json_object_to_json_string_length(ev, SEGMENT_JSON_FLAGS, &len);
	json_object_put(ev);
	lim.max_event_bytes = len;
	json_object_put(norm_ok(body, SEGMENT_IDENTIFY, NULL));
	lim.max_event_bytes = len - 1;
	norm_fails_at(body, SEGMENT_IDENTIFY, "", NERR_TOOBIG, "");
	norm_fails_at(
		"{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"m1\","
		"\"properties\":{\"s\":\"0123456789012345678901234567890123456789\"}}",
		-1, "batch[4]", NERR_TOOBIG, "batch[4]");
	/* the default cap is 32 KiB */
	segment_limits_default(&lim);
	char *big = malloc(40000);
	int n = snprintf(big, 40000, "{\"userId\":\"u\",\"traits\":{\"x\":\"");
	memset(big + n, 'a', 33000);
	strcpy(big + n + 33000, "\"}}");
	ev = parse_ok(big);
	assert_int_equal(
		segment_normalize(ev, SEGMENT_IDENTIFY, "", NOW_MS, &lim, NULL, &msg),
		NERR_TOOBIG);
	assert_non_null(strstr(msg.message, "32768"));
	json_object_put(ev);
	free(big);
}

/* ---- batch ------------------------------------------------------------------- */

static void test_batch_envelope_is_validated(void **state)
{
	struct json_object *o, *items;
	struct nerr_msg msg;
	static const struct {
		const char *body;
		enum nerr rc;
		const char *field;
	} cases[] = {
		{"{}", NERR_INVAL, "batch"},
		{"{\"batch\":null}", NERR_INVAL, "batch"},
		{"{\"batch\":{}}", NERR_INVAL, "batch"},
		{"{\"batch\":\"[]\"}", NERR_INVAL, "batch"},
		{"{\"batch\":[],\"context\":[]}", NERR_INVAL, "context"},
		{"{\"batch\":[],\"integrations\":1}", NERR_INVAL, "integrations"},
		{"{\"batch\":[],\"sentAt\":\"soon\"}", NERR_INVAL, "sentAt"},
		{"{\"batch\":[]}", NERR_OK, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o = parse_ok(cases[i].body);
		assert_int_equal(segment_batch_items(o, &lim, &items, &msg), cases[i].rc);
		assert_string_equal(msg.field, cases[i].field);
		if (cases[i].rc == NERR_OK)
			assert_non_null(items);
		else
			assert_null(items);
		json_object_put(o);
	}
}

static void test_batch_is_capped_at_1000_items(void **state)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array(),
			   *items;
	struct nerr_msg msg;

	json_object_object_add(o, "batch", arr);
	for (int i = 0; i < 1000; i++)
		json_object_array_add(arr, json_object_new_object());
	assert_int_equal(segment_batch_items(o, &lim, &items, &msg), NERR_OK);
	assert_int_equal(json_object_array_length(items), 1000);
	json_object_array_add(arr, json_object_new_object());
	assert_int_equal(segment_batch_items(o, &lim, &items, &msg), NERR_TOOBIG);
	assert_string_equal(msg.field, "batch");
	json_object_put(o);
}

static void test_batch_context_merges_into_items_item_wins(void **state)
{
	struct json_object *body = parse_ok(
		"{\"context\":{\"library\":{\"name\":\"top\"},\"ip\":\"1.2.3.4\","
		"\"price\":1.50},"
		"\"integrations\":{\"All\":false,\"Mixpanel\":true},"
		"\"sentAt\":\"2026-01-02T03:04:05Z\",\"writeKey\":\"wk\","
		"\"batch\":[{\"type\":\"identify\",\"userId\":\"a\",\"context\":{\"ip\":"
		"\"9.9.9.9\"},\"integrations\":{\"All\":true}},"
		"{\"type\":\"identify\",\"userId\":\"b\",\"sentAt\":\"2026-01-02T03:04:"
		"06Z\"},"
		"{\"type\":\"identify\",\"userId\":\"c\",\"context\":null}]}");
	struct json_object *items, *a, *b, *c, *ctx_a, *ctx_b, *ctx_c, *lib, *integ;

	assert_int_equal(segment_batch_items(body, &lim, &items, NULL), NERR_OK);
	a = json_object_array_get_idx(items, 0);
	b = json_object_array_get_idx(items, 1);
	c = json_object_array_get_idx(items, 2);
	segment_batch_merge_context(body, a);
	segment_batch_merge_context(body, b);
	segment_batch_merge_context(body, c);
	assert_true(json_object_object_get_ex(a, "context", &ctx_a));
	assert_string_equal(get_str(ctx_a, "ip"), "9.9.9.9");
	assert_true(json_object_object_get_ex(ctx_a, "library", &lib));
	assert_string_equal(get_str(lib, "name"), "top");
	assert_true(json_object_object_get_ex(a, "integrations", &integ));
	assert_true(json_object_get_boolean(json_object_object_get(integ, "All")));
	assert_true(json_object_get_boolean(json_object_object_get(integ, "Mixpanel")));
	assert_string_equal(get_str(a, "sentAt"), "2026-01-02T03:04:05Z");
	assert_false(has(a, "writeKey"));
	assert_true(json_object_object_get_ex(b, "context", &ctx_b));
	assert_string_equal(get_str(ctx_b, "ip"), "1.2.3.4");
	assert_string_equal(get_str(b, "sentAt"), "2026-01-02T03:04:06Z");
	assert_true(json_object_object_get_ex(c, "context", &ctx_c));
	assert_non_null(ctx_c);
	/* deep copies: the items own their values; the double keeps its text */
	assert_ptr_not_equal(ctx_b, json_object_object_get(body, "context"));
	assert_ptr_not_equal(json_object_object_get(ctx_b, "library"),
			     json_object_object_get(ctx_c, "library"));
	assert_string_equal(
		json_object_to_json_string_ext(json_object_object_get(ctx_c, "price"),
					       JSON_C_TO_STRING_PLAIN),
		"1.50");
	json_object_get(b);
	json_object_put(body);
	assert_int_equal(segment_normalize(b, -1, "batch[1]", NOW_MS, &lim, NULL, NULL),
			 NERR_OK);
	json_object_put(b);
}

static void test_batch_merge_leaves_bad_items_to_normalize(void **state)
{
	struct json_object *body =
		parse_ok("{\"context\":{\"ip\":\"1.2.3.4\"},\"batch\":"
			 "[1,{\"type\":\"track\",\"context\":\"x\"}]}");
	struct json_object *items, *it;
	struct nerr_msg msg;

	assert_int_equal(segment_batch_items(body, &lim, &items, NULL), NERR_OK);
	it = json_object_array_get_idx(items, 0);
	segment_batch_merge_context(body, it);
	assert_int_equal(segment_normalize(it, -1, "batch[0]", NOW_MS, &lim, NULL, &msg),
			 NERR_INVAL);
	assert_string_equal(msg.field, "batch[0]");
	it = json_object_array_get_idx(items, 1);
	segment_batch_merge_context(body, it);
	assert_string_equal(get_str(it, "context"), "x");
	json_object_put(body);
}

static void test_batch_reports_invalid_items_and_keeps_valid_ones(void **state)
{
	struct json_object *body = parse_ok(
		"{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"A\"},"
		"{\"type\":\"track\",\"userId\":\"u\"},"
		"{\"type\":\"page\",\"anonymousId\":\"x\"},"
		"{\"type\":\"alias\",\"userId\":\"u\"},"
		"{\"type\":\"group\",\"userId\":5,\"groupId\":7}]}");
	struct json_object *items;
	const char *want[] = {"", "batch[1].event", "", "batch[3].previousId", ""};
	char path[32];

	assert_int_equal(segment_batch_items(body, &lim, &items, NULL), NERR_OK);
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		struct json_object *it = json_object_array_get_idx(items, i);
		struct nerr_msg msg;
		enum nerr rc;

		snprintf(path, sizeof(path), "batch[%zu]", i);
		segment_batch_merge_context(body, it);
		rc = segment_normalize(it, -1, path, NOW_MS, &lim, NULL, &msg);
		assert_int_equal(rc, want[i][0] ? NERR_INVAL : NERR_OK);
		assert_string_equal(msg.field, want[i]);
	}
	json_object_put(body);
}

static void test_normalize_json_hands_back_the_serialized_event(void **state)
{
	struct json_object *ev = parse_ok(ajs_track);
	const char *json = NULL;
	size_t len = 0;
	int64_t ts = 0;
	char *copy;

	assert_int_equal(segment_normalize_json(ev, SEGMENT_TRACK, "", NOW_MS, &lim, &ts,
						&json, &len, NULL),
			 NERR_OK);
	assert_int_equal(ts, NOW_MS - 1000);
	assert_non_null(json);
	assert_int_equal(strlen(json), len);
	assert_non_null(strstr(json, "\"receivedAt\":\"2026-01-02T03:04:05.678Z\""));
	assert_null(strstr(json, "writeKey"));
	copy = strdup(json);
	assert_string_equal(copy, json_object_to_json_string_ext(ev, SEGMENT_JSON_FLAGS));
	free(copy);
	json_object_put(ev);
}

/* Invariant (1)/(2): a normalized event serializes to JSON our parser takes. */
static void test_normalized_events_round_trip_through_the_parser(void **state)
{
	struct json_object *body = parse_ok(ajs_track), *again;
	const char *s;
	size_t len;
	struct nerr_msg msg;

	assert_int_equal(
		segment_normalize(body, SEGMENT_TRACK, "", NOW_MS, &lim, NULL, NULL),
		NERR_OK);
	s = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &len);
	assert_int_equal(segment_parse_json(s, len, &lim, &again, &msg), NERR_OK);
	assert_true(json_object_equal(body, again));
	json_object_put(again);
	json_object_put(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_analytics_js_track_is_accepted_and_normalized,
				       setup),
		cmocka_unit_test_setup(test_analytics_js_identify_page_group_alias,
				       setup),
		cmocka_unit_test_setup(test_fast_path_takes_common_bodies, setup),
		cmocka_unit_test_setup(test_analytics_node_batch_is_accepted, setup),
		cmocka_unit_test_setup(test_analytics_python_batch_is_accepted, setup),
		cmocka_unit_test_setup(test_every_truncation_of_a_valid_body_fails,
				       setup),
		cmocka_unit_test_setup(test_trailing_bytes_are_rejected_whitespace_is_not,
				       setup),
		cmocka_unit_test_setup(test_nesting_beyond_the_depth_limit_is_rejected,
				       setup),
		cmocka_unit_test_setup(test_invalid_utf8_is_rejected, setup),
		cmocka_unit_test_setup(test_valid_unicode_is_kept, setup),
		cmocka_unit_test_setup(test_bad_escapes_are_rejected, setup),
		cmocka_unit_test_setup(
			test_nan_infinity_and_out_of_range_numbers_are_rejected, setup),
		cmocka_unit_test_setup(test_non_json_number_forms_are_rejected, setup),
		cmocka_unit_test_setup(test_nul_bytes_are_rejected, setup),
		cmocka_unit_test_setup(test_other_syntax_errors_are_rejected, setup),
		cmocka_unit_test_setup(test_syntax_errors_give_line_and_column, setup),
		cmocka_unit_test_setup(
			test_long_error_paths_are_cut_on_a_character_boundary, setup),
		cmocka_unit_test_setup(test_top_level_must_be_an_object, setup),
		cmocka_unit_test_setup(test_event_view_keeps_what_the_profile_reads,
				       setup),
		cmocka_unit_test_setup(test_event_view_declines_what_needs_parsing,
				       setup),
		cmocka_unit_test_setup(test_duplicate_keys_last_one_wins, setup),
		cmocka_unit_test_setup(test_user_or_anonymous_id_is_required, setup),
		cmocka_unit_test_setup(test_empty_ids_do_not_count_and_are_removed,
				       setup),
		cmocka_unit_test_setup(test_numeric_ids_become_strings, setup),
		cmocka_unit_test_setup(test_ids_of_other_types_are_rejected, setup),
		cmocka_unit_test_setup(test_track_needs_an_event_name, setup),
		cmocka_unit_test_setup(test_alias_needs_user_id_and_previous_id, setup),
		cmocka_unit_test_setup(test_group_needs_a_group_id, setup),
		cmocka_unit_test_setup(test_page_and_screen_names_are_optional_strings,
				       setup),
		cmocka_unit_test_setup(test_object_fields_must_be_objects, setup),
		cmocka_unit_test_setup(test_context_external_ids_are_checked, setup),
		cmocka_unit_test_setup(test_null_limits_mean_the_defaults, setup),
		cmocka_unit_test_setup(test_event_must_be_an_object, setup),
		cmocka_unit_test_setup(test_type_names_round_trip, setup),
		cmocka_unit_test_setup(test_batch_item_type_is_required_and_known, setup),
		cmocka_unit_test_setup(test_endpoint_type_overrides_the_body, setup),
		cmocka_unit_test_setup(test_message_id_is_generated_when_absent, setup),
		cmocka_unit_test_setup(test_message_id_is_kept_and_checked, setup),
		cmocka_unit_test_setup(
			test_without_client_time_the_event_happens_when_received, setup),
		cmocka_unit_test_setup(test_timestamp_without_sent_at_is_honoured, setup),
		cmocka_unit_test_setup(test_original_timestamp_stands_in_for_timestamp,
				       setup),
		cmocka_unit_test_setup(test_clock_skew_is_corrected_with_sent_at, setup),
		cmocka_unit_test_setup(test_bad_times_are_rejected, setup),
		cmocka_unit_test_setup(test_write_key_is_read_and_not_stored, setup),
		cmocka_unit_test_setup(test_event_size_is_capped_on_the_stored_form,
				       setup),
		cmocka_unit_test_setup(test_batch_envelope_is_validated, setup),
		cmocka_unit_test_setup(test_batch_is_capped_at_1000_items, setup),
		cmocka_unit_test_setup(test_batch_context_merges_into_items_item_wins,
				       setup),
		cmocka_unit_test_setup(test_batch_merge_leaves_bad_items_to_normalize,
				       setup),
		cmocka_unit_test_setup(
			test_batch_reports_invalid_items_and_keeps_valid_ones, setup),
		cmocka_unit_test_setup(
			test_normalize_json_hands_back_the_serialized_event, setup),
		cmocka_unit_test_setup(
			test_normalized_events_round_trip_through_the_parser, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
