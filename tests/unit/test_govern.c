/*
 * test_govern.c -- governance rules against a real RocksDB in a temp dir with a
 * simulated clock: caps with rolling windows, one batch never exceeding a cap,
 * quiet hours in two zones and the fallback, max_delay and drop, throttle slots,
 * entry caps across a group, bounce counting, import parsing, rule validation and
 * rules surviving a reopen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/clock.h"
#include "govern/govern.h"
#include "store/store.h"

#define HOUR_MS (3600LL * 1000)
#define DAY_MS	(24 * HOUR_MS)

struct fx {
	char dir[64];
	struct store *s;
	struct store_batch *b;
	struct govern *g;
};

/* One database for the run (opening one costs ~0.5 s); each test starts from
 * empty caps and suppression column families and a fresh govern. */
static struct fx fx;

static int group_setup(void **state)
{
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/nudge-govern-XXXXXX");
	if (!mkdtemp(fx.dir) || store_open(fx.dir, &fx.s, NULL) != NERR_OK)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	store_close(fx.s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx.dir);
	return system(cmd);
}

static int setup(void **state)
{
	struct store_iter *it;

	fx.b = store_batch_new(fx.s);
	for (int cf = 0; cf < 2; cf++) {
		it = store_iter_new(fx.s, NULL,
				    cf ? STORE_CF_SUPPRESSION : STORE_CF_CAPS);
		for (store_iter_seek_first(it); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl;
			const char *k = store_iter_key(it, &kl);

			store_batch_delete(
				fx.b, cf ? STORE_CF_SUPPRESSION : STORE_CF_CAPS, k, kl);
		}
		store_iter_free(it);
	}
	if (store_batch_commit(fx.b, false, NULL) != NERR_OK)
		return -1;
	if (govern_open(fx.s, NULL, &fx.g, NULL) != NERR_OK)
		return -1;
	*state = &fx;
	return 0;
}

static int teardown(void **state)
{
	govern_free(fx.g);
	store_batch_free(fx.b);
	fx.g = NULL;
	fx.b = NULL;
	return 0;
}

static int64_t at(const char *rfc3339)
{
	int64_t ms = 0;

	assert_int_equal(clock_parse_rfc3339(rfc3339, &ms), 0);
	return ms;
}

static void put(struct fx *f, const char *kind, const char *id, const char *json)
{
	struct json_object *doc = json_tokener_parse(json);

	assert_non_null(doc);
	assert_int_equal(govern_rule_put(f->g, f->b, kind, id, doc), NERR_OK);
	json_object_put(doc);
}

static void commit(struct fx *f)
{
	assert_int_equal(store_batch_commit(f->b, false, NULL), NERR_OK);
}

static struct govern_decision decide(struct fx *f, const char *channel,
				     const char *category, uint64_t pid, const char *tz,
				     int64_t now_ms)
{
	struct govern_msg m = {channel, category, pid, tz, "j1", "s1", now_ms, now_ms, 0};
	struct govern_decision d;

	govern_decide(f->g, f->b, &m, &d);
	return d;
}

/* ------------------------------------------------------------------ config */

static void consent_defaults_follow_the_config(void **state)
{
	struct fx *f = *state;
	struct govern_config cfg;
	struct govern *g2;

	assert_true(govern_consent_default(f->g, "email", "marketing"));
	assert_true(govern_consent_default(f->g, "email", NULL));
	assert_false(govern_consent_default(f->g, "sms", "marketing"));
	assert_false(govern_consent_default(f->g, "push", "marketing"));
	assert_true(govern_consent_default(f->g, "sms", "transactional"));
	assert_true(govern_consent_default(f->g, "push", "transactional"));
	assert_false(govern_consent_default(f->g, "sms", "newsletter"));
	assert_true(govern_consent_default(f->g, "email", "newsletter"));
	assert_false(govern_consent_default(f->g, "fax", "transactional"));

	govern_config_default(&cfg);
	cfg.consent_default[0][0] = 0; /* email marketing denied */
	cfg.consent_default[1][2] = 1; /* sms other granted */
	assert_int_equal(govern_open(f->s, &cfg, &g2, NULL), NERR_OK);
	assert_false(govern_consent_default(g2, "email", "marketing"));
	assert_true(govern_consent_default(g2, "sms", "newsletter"));
	govern_free(g2);
}

static void profile_consent_wins_over_the_default(void **state)
{
	struct fx *f = *state;
	struct json_object *p = json_tokener_parse(
		"{\"consent\": {\"sms\": {\"marketing\": \"granted\"}, \"email\": "
		"{\"marketing\": \"denied\", \"transactional\": \"denied\"}}}");

	assert_true(govern_consent(f->g, p, "sms", "marketing"));
	assert_false(govern_consent(f->g, p, "sms", "promo"));
	assert_false(govern_consent(f->g, p, "email", NULL));
	assert_false(govern_consent(f->g, p, "email", "transactional"));
	assert_true(govern_consent(f->g, p, "push", "transactional"));
	assert_false(govern_consent(f->g, p, "push", "marketing"));
	assert_true(govern_consent(f->g, NULL, "email", "marketing"));
	json_object_put(p);
}

static void suppression_reads_its_batch_and_unsuppress_resets_bounces(void **state)
{
	struct fx *f = *state;
	char *v = NULL;
	size_t vl;

	assert_false(govern_suppressed(f->b, "email", "a@x.org"));
	govern_suppress(f->b, "email", "a@x.org", "complaint", 1234);
	assert_true(govern_suppressed(f->b, "email", "a@x.org"));
	assert_false(govern_suppressed(f->b, "sms", "a@x.org"));
	commit(f);
	assert_int_equal(
		store_get(f->s, STORE_CF_SUPPRESSION, "email:a@x.org", 13, &v, &vl),
		NERR_OK);
	assert_string_equal(v, "{\"reason\":\"complaint\",\"at_ms\":1234}");
	free(v);
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	govern_unsuppress(f->b, "email", "a@x.org");
	assert_false(govern_suppressed(f->b, "email", "a@x.org"));
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_true(govern_bounce(f->g, f->b, "email", "a@x.org", false));
}

/* -------------------------------------------------------------- validation */

static void rule_validation_names_the_field(void **state)
{
	static const struct {
		const char *kind, *id, *doc, *field;
	} cases[] = {
		{"caps", "c1", "{\"max\": 0, \"window\": \"7d\"}", "max"},
		{"caps", "c1", "{\"max\": 1001, \"window\": \"7d\"}", "max"},
		{"caps", "c1", "{\"max\": \"3\", \"window\": \"7d\"}", "max"},
		{"caps", "c1", "{\"max\": 3, \"window\": \"7 days\"}", "window"},
		{"caps", "c1", "{\"max\": 3}", "window"},
		{"caps", "c1", "{\"max\": 3, \"window\": \"0s\"}", "window"},
		{"caps", "c1",
		 "{\"max\": 3, \"window\": \"7d\", \"channels\": [\"fax\"]}",
		 "channels[0]"},
		{"caps", "c1", "{\"max\": 3, \"window\": \"7d\", \"channels\": []}",
		 "channels"},
		{"caps", "c1",
		 "{\"max\": 3, \"window\": \"7d\", \"category\": \"transactional\"}",
		 "category"},
		{"caps", "c1", "{\"max\": 3, \"window\": \"7d\", \"colour\": 1}",
		 "colour"},
		{"caps", "c1", "{\"max\": 3, \"window\": \"7d\", \"id\": \"other\"}",
		 "id"},
		{"caps", "bad id", "{\"max\": 3, \"window\": \"7d\"}", "id"},
		{"quiet-hours", "q1", "{}", "windows"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"08:00\"}, {\"days\": [\"tue\"], \"from\": \"25:00\", \"to\": "
		 "\"08:00\"}]}",
		 "windows[1].from"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\", \"funday\"], \"from\": \"21:00\", "
		 "\"to\": \"08:00\"}]}",
		 "windows[0].days[1]"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"8:00\"}]}",
		 "windows[0].to"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"21:00\"}]}",
		 "windows[0].to"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"08:00\", \"tz\": 1}]}",
		 "windows[0].tz"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"08:00\"}], \"fallback_zone\": \"Mars/Olympus\"}",
		 "fallback_zone"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"08:00\"}], \"action\": \"bounce\"}",
		 "action"},
		{"quiet-hours", "q1",
		 "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
		 "\"08:00\"}], \"max_delay\": \"forever\"}",
		 "max_delay"},
		{"entry-caps", "e1", "{\"max\": 1, \"window\": \"30d\"}", "journeys"},
		{"entry-caps", "e1",
		 "{\"journeys\": [\"a\", 7], \"max\": 1, \"window\": \"30d\"}",
		 "journeys[1]"},
		{"entry-caps", "e1", "{\"journeys\": [\"a\"], \"window\": \"30d\"}",
		 "max"},
		{"throttles", "t1", "{\"rate\": 10}", "journey"},
		{"throttles", "t1", "{\"journey\": \"j\", \"rate\": 10}", "step"},
		{"throttles", "t1", "{\"journey\": \"j\", \"step\": \"s\", \"rate\": 0}",
		 "rate"},
		{"throttles", "t1", "{\"channel\": \"sms\"}", "rate"},
		{"throttles", "t1", "{\"channel\": \"fax\", \"rate\": 5}", "channel"},
		{"throttles", "t1",
		 "{\"channel\": \"sms\", \"journey\": \"j\", \"rate\": 5}", "channel"},
	};
	struct nerr_msg msg;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *doc = json_tokener_parse(cases[i].doc);

		assert_non_null(doc);
		nerr_clear(&msg);
		if (govern_rule_check(cases[i].kind, cases[i].id, doc, &msg) !=
			    NERR_INVAL ||
		    strcmp(msg.field, cases[i].field) != 0)
			fail_msg("case %zu: %s: field '%s' (%s), want '%s'", i,
				 cases[i].doc, msg.field, msg.message, cases[i].field);
		json_object_put(doc);
	}
	assert_int_equal(govern_rule_check("limits", "x", NULL, &msg), NERR_NOTFOUND);
	assert_string_equal(msg.field, "kind");
}

static void valid_rules_pass_validation(void **state)
{
	static const struct {
		const char *kind, *doc;
	} cases[] = {
		{"caps",
		 "{\"channels\": [\"email\"], \"category\": \"marketing\", \"max\": 3, "
		 "\"window\": \"7d\"}"},
		{"caps",
		 "{\"channels\": [\"sms\"], \"max\": 1, \"window\": \"24h\", \"id\": "
		 "\"r\"}"},
		{"quiet-hours",
		 "{\"channels\": [\"email\", \"sms\"], \"category\": \"marketing\", "
		 "\"windows\": [{\"days\": [\"mon\", \"tue\"], \"from\": \"21:00\", "
		 "\"to\": "
		 "\"08:00\"}, {\"days\": [\"sun\"], \"from\": \"00:00\", \"to\": "
		 "\"24:00\"}], "
		 "\"fallback_zone\": \"Europe/Paris\", \"action\": \"queue\", "
		 "\"max_delay\": "
		 "\"24h\"}"},
		{"entry-caps",
		 "{\"journeys\": [\"a\", \"b\"], \"max\": 1, \"window\": \"30d\"}"},
		{"entry-caps", "{\"journey\": \"a\", \"max\": 2, \"window\": \"1h30m\"}"},
		{"throttles", "{\"journey\": \"j\", \"step\": \"s\", \"rate\": 10}"},
		{"throttles", "{\"channel\": \"sms\", \"rate\": 0.5}"},
	};
	struct nerr_msg msg;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *doc = json_tokener_parse(cases[i].doc);

		if (govern_rule_check(cases[i].kind, "r", doc, &msg) != NERR_OK)
			fail_msg("case %zu: %s: %s", i, msg.field, msg.message);
		json_object_put(doc);
	}
}

/* -------------------------------------------------------------------- caps */

static void cap_allows_max_then_the_next_after_the_window(void **state)
{
	struct fx *f = *state;
	int64_t t0 = at("2026-12-01T10:00:00Z");
	struct govern_decision d;

	put(f, "caps", "mkt",
	    "{\"channels\": [\"email\"], \"category\": \"marketing\", \"max\": 3, "
	    "\"window\": \"7d\"}");
	commit(f);
	for (int i = 0; i < 3; i++) {
		d = decide(f, "email", "marketing", 7, NULL, t0 + i * DAY_MS);
		assert_int_equal(d.verdict, GOVERN_SEND);
		commit(f);
	}
	d = decide(f, "email", "marketing", 7, NULL, t0 + 3 * DAY_MS);
	assert_int_equal(d.verdict, GOVERN_EXCLUDE);
	assert_string_equal(d.reason, GOVERN_REASON_CAPPED);
	assert_string_equal(d.rule_id, "mkt");
	/* Other profiles, channels and transactional messages are not counted. */
	assert_int_equal(decide(f, "email", "marketing", 8, NULL, t0).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "sms", "marketing", 7, NULL, t0).verdict, GOVERN_SEND);
	assert_int_equal(
		decide(f, "email", "transactional", 7, NULL, t0 + 3 * DAY_MS).verdict,
		GOVERN_SEND);
	assert_int_equal(
		decide(f, "email", "newsletter", 7, NULL, t0 + 3 * DAY_MS).verdict,
		GOVERN_SEND);
	/* The first send leaves the window 7 days after it: one more fits. */
	d = decide(f, "email", "marketing", 7, NULL, t0 + 7 * DAY_MS - 1);
	assert_int_equal(d.verdict, GOVERN_EXCLUDE);
	d = decide(f, "email", "marketing", 7, NULL, t0 + 7 * DAY_MS);
	assert_int_equal(d.verdict, GOVERN_SEND);
	d = decide(f, "email", "marketing", 7, NULL, t0 + 7 * DAY_MS + 1);
	assert_int_equal(d.verdict, GOVERN_EXCLUDE);
	d = decide(f, "email", "marketing", 7, NULL, t0 + 8 * DAY_MS);
	assert_int_equal(d.verdict, GOVERN_SEND);
}

static void two_journeys_in_one_batch_never_exceed_a_cap(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");
	unsigned sent = 0;

	put(f, "caps", "mkt",
	    "{\"category\": \"marketing\", \"max\": 3, \"window\": \"7d\"}");
	commit(f);
	/* Two journeys interleave their sends for one profile inside one batch. */
	for (int i = 0; i < 10; i++) {
		struct govern_msg m = {
			"email", "marketing", 42,  NULL, i % 2 ? "ja" : "jb",
			"s",	 now,	      now, 0};
		struct govern_decision d;

		govern_decide(f->g, f->b, &m, &d);
		sent += d.verdict == GOVERN_SEND;
	}
	assert_int_equal(sent, 3);
	commit(f);
	assert_int_equal(decide(f, "email", "marketing", 42, NULL, now + HOUR_MS).verdict,
			 GOVERN_EXCLUDE);
}

static void caps_without_channels_count_every_channel(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");

	put(f, "caps", "all", "{\"max\": 2, \"window\": \"24h\"}");
	put(f, "caps", "sms",
	    "{\"channels\": [\"sms\"], \"max\": 1, \"window\": \"24h\"}");
	assert_int_equal(decide(f, "sms", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
	{
		struct govern_decision d =
			decide(f, "sms", "marketing", 1, NULL, now + 1);

		assert_int_equal(d.verdict, GOVERN_EXCLUDE);
		assert_string_equal(d.rule_id, "sms");
	}
	assert_int_equal(decide(f, "push", "promo", 1, NULL, now + 2).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now + 3).verdict,
			 GOVERN_EXCLUDE);
}

static void rule_changes_apply_at_once(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");

	put(f, "caps", "c", "{\"max\": 1, \"window\": \"7d\"}");
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_EXCLUDE);
	put(f, "caps", "c", "{\"max\": 2, \"window\": \"7d\"}");
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_EXCLUDE);
	assert_int_equal(govern_rule_delete(f->g, f->b, "caps", "c"), NERR_OK);
	assert_int_equal(govern_rule_delete(f->g, f->b, "caps", "c"), NERR_NOTFOUND);
	assert_int_equal(govern_rule_delete(f->g, f->b, "nope", "c"), NERR_NOTFOUND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
}

static void rules_per_kind_are_bounded_and_all_count(void **state)
{
	struct fx *f = *state;
	struct json_object *doc = json_tokener_parse("{\"max\": 2, \"window\": \"1d\"}");
	int64_t now = at("2026-12-01T10:00:00Z");
	char id[16];

	for (int i = 0; i < GOVERN_MAX_RULES; i++) {
		snprintf(id, sizeof(id), "c%d", i);
		assert_int_equal(govern_rule_put(f->g, f->b, "caps", id, doc), NERR_OK);
	}
	assert_int_equal(govern_rule_put(f->g, f->b, "caps", "one-more", doc),
			 NERR_LIMIT);
	assert_int_equal(govern_rule_put(f->g, f->b, "caps", "c0", doc), NERR_OK);
	json_object_put(doc);
	/* Every rule keeps its record in the profile's one value. */
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_EXCLUDE);
	/* c99 sorts last, so its record is the last in the value. */
	for (int i = 0; i < GOVERN_MAX_RULES; i++) {
		snprintf(id, sizeof(id), "c%d", i);
		if (strcmp(id, "c99") != 0)
			assert_int_equal(govern_rule_delete(f->g, f->b, "caps", id),
					 NERR_OK);
	}
	assert_int_equal(decide(f, "email", "marketing", 1, NULL, now).verdict,
			 GOVERN_EXCLUDE);
}

static void rules_survive_reopen_and_read_back(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");
	struct json_object *doc, *list, *rules;

	put(f, "caps", "mkt",
	    "{\"category\": \"marketing\", \"max\": 1, \"window\": \"7d\"}");
	put(f, "caps", "all", "{\"max\": 5, \"window\": \"1d\"}");
	put(f, "throttles", "sms", "{\"channel\": \"sms\", \"rate\": 5}");
	assert_int_equal(decide(f, "email", "marketing", 3, NULL, now).verdict,
			 GOVERN_SEND);
	commit(f);

	govern_free(f->g);
	store_batch_free(f->b);
	store_close(f->s);
	assert_int_equal(store_open(f->dir, &f->s, NULL), NERR_OK);
	f->b = store_batch_new(f->s);
	assert_int_equal(govern_open(f->s, NULL, &f->g, NULL), NERR_OK);

	assert_int_equal(decide(f, "email", "marketing", 3, NULL, now + HOUR_MS).verdict,
			 GOVERN_EXCLUDE);
	assert_int_equal(govern_rule_get(f->s, "caps", "mkt", &doc), NERR_OK);
	assert_string_equal(json_object_get_string(json_object_object_get(doc, "id")),
			    "mkt");
	assert_int_equal(json_object_get_int(json_object_object_get(doc, "max")), 1);
	json_object_put(doc);
	assert_int_equal(govern_rule_get(f->s, "caps", "none", &doc), NERR_NOTFOUND);
	assert_int_equal(govern_rule_list(f->s, "caps", &list), NERR_OK);
	rules = json_object_object_get(list, "rules");
	assert_int_equal(json_object_array_length(rules), 2);
	assert_string_equal(json_object_get_string(json_object_object_get(
				    json_object_array_get_idx(rules, 0), "id")),
			    "all");
	json_object_put(list);
	assert_int_equal(govern_rule_list(f->s, "throttles", &list), NERR_OK);
	assert_int_equal(json_object_array_length(json_object_object_get(list, "rules")),
			 1);
	json_object_put(list);

	assert_int_equal(govern_rule_delete(f->g, f->b, "caps", "mkt"), NERR_OK);
	commit(f);
	assert_int_equal(govern_rule_get(f->s, "caps", "mkt", &doc), NERR_NOTFOUND);
	govern_free(f->g);
	assert_int_equal(govern_open(f->s, NULL, &f->g, NULL), NERR_OK);
	assert_int_equal(decide(f, "email", "marketing", 3, NULL, now + HOUR_MS).verdict,
			 GOVERN_SEND);
}

/* ------------------------------------------------------------- quiet hours */

static const char *night =
	"{\"category\": \"marketing\", \"windows\": [{\"days\": [\"mon\", \"tue\", "
	"\"wed\", \"thu\", \"fri\", \"sat\", \"sun\"], \"from\": \"21:00\", \"to\": "
	"\"08:00\"}], \"fallback_zone\": \"Asia/Tokyo\", \"max_delay\": \"24h\"}";

static void quiet_hours_queue_in_one_zone_and_not_another(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T22:00:00Z"); /* Tuesday */
	struct govern_decision d;

	put(f, "quiet-hours", "night", night);
	/* Paris: 23:00 -> queued until 08:00 Paris = 07:00Z. */
	d = decide(f, "email", "marketing", 1, "Europe/Paris", now);
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_string_equal(d.reason, GOVERN_REASON_QUIET_HOURS);
	assert_string_equal(d.rule_id, "night");
	assert_true(d.until_ms == at("2026-12-02T07:00:00Z"));
	/* New York: 17:00 -> sent now. */
	d = decide(f, "email", "marketing", 1, "America/New_York", now);
	assert_int_equal(d.verdict, GOVERN_SEND);
	/* No zone (or an unknown one): the fallback, Tokyo, 07:00 -> until 08:00. */
	d = decide(f, "email", "marketing", 1, NULL, now);
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2026-12-01T23:00:00Z"));
	d = decide(f, "email", "marketing", 1, "Not/AZone", now);
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2026-12-01T23:00:00Z"));
	/* Transactional and other categories pass. */
	assert_int_equal(
		decide(f, "email", "transactional", 1, "Europe/Paris", now).verdict,
		GOVERN_SEND);
	assert_int_equal(decide(f, "email", "promo", 1, "Europe/Paris", now).verdict,
			 GOVERN_SEND);
	/* At the end of the window the message goes. */
	assert_int_equal(decide(f, "email", "marketing", 1, "Europe/Paris",
				at("2026-12-02T07:00:00Z"))
				 .verdict,
			 GOVERN_SEND);
}

static void quiet_hours_without_fallback_use_utc_and_weekdays(void **state)
{
	struct fx *f = *state;
	struct govern_decision d;

	/* Friday 21:00 to Monday 08:00, as two windows that chain. */
	put(f, "quiet-hours", "weekend",
	    "{\"windows\": [{\"days\": [\"fri\"], \"from\": \"21:00\", \"to\": "
	    "\"24:00\"},"
	    " {\"days\": [\"sat\", \"sun\"], \"from\": \"00:00\", \"to\": \"24:00\"},"
	    " {\"days\": [\"mon\"], \"from\": \"00:00\", \"to\": \"08:00\"}],"
	    " \"max_delay\": \"3d\"}");
	d = decide(f, "sms", "marketing", 1, NULL, at("2026-12-04T22:30:00Z")); /* Fri */
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2026-12-07T08:00:00Z"));
	d = decide(f, "sms", "marketing", 1, NULL, at("2026-12-06T12:00:00Z")); /* Sun */
	assert_true(d.until_ms == at("2026-12-07T08:00:00Z"));
	d = decide(f, "sms", "marketing", 1, NULL, at("2026-12-04T20:59:00Z"));
	assert_int_equal(d.verdict, GOVERN_SEND);
	d = decide(f, "sms", "marketing", 1, NULL, at("2026-12-03T22:00:00Z")); /* Thu */
	assert_int_equal(d.verdict, GOVERN_SEND);
}

static void quiet_hours_cross_midnight_from_the_listed_day(void **state)
{
	struct fx *f = *state;
	struct govern_decision d;

	put(f, "quiet-hours", "mon",
	    "{\"windows\": [{\"days\": [\"mon\"], \"from\": \"21:00\", \"to\": "
	    "\"08:00\"}]}");
	/* Tuesday 03:00 is inside Monday's window; Monday 03:00 is not. */
	d = decide(f, "email", "marketing", 1, "UTC", at("2026-12-01T03:00:00Z"));
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2026-12-01T08:00:00Z"));
	d = decide(f, "email", "marketing", 1, "UTC", at("2026-11-30T03:00:00Z"));
	assert_int_equal(d.verdict, GOVERN_SEND);
	d = decide(f, "email", "marketing", 1, "UTC", at("2026-11-30T21:00:00Z"));
	assert_int_equal(d.verdict, GOVERN_DELAY);
}

static void quiet_hours_end_in_local_time_across_a_dst_change(void **state)
{
	struct fx *f = *state;
	struct govern_decision d;

	put(f, "quiet-hours", "night",
	    "{\"windows\": [{\"days\": [\"sat\"], \"from\": \"21:00\", \"to\": "
	    "\"08:00\"}]}");
	/* Paris, Saturday 23:00 CET; Sunday 08:00 is CEST (clocks moved at 02:00). */
	d = decide(f, "email", "marketing", 1, "Europe/Paris",
		   at("2027-03-27T22:00:00Z"));
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2027-03-28T06:00:00Z"));
	/* And back in autumn: Sunday 08:00 CET. */
	d = decide(f, "email", "marketing", 1, "Europe/Paris",
		   at("2027-10-30T20:00:00Z"));
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2027-10-31T07:00:00Z"));
	/* A half-hour zone: Kathmandu is UTC+05:45; 21:00 local is 15:15Z. */
	assert_int_equal(decide(f, "email", "marketing", 1, "Asia/Kathmandu",
				at("2027-03-27T15:14:00Z"))
				 .verdict,
			 GOVERN_SEND);
	d = decide(f, "email", "marketing", 1, "Asia/Kathmandu",
		   at("2027-03-27T15:15:00Z"));
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == at("2027-03-28T02:15:00Z"));
}

static void queued_past_max_delay_is_dropped(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T22:00:00Z");
	struct govern_msg m = {"email", "marketing", 1, "Europe/Paris", "j", "s",
			       now,	now,	     0};
	struct govern_decision d;

	put(f, "quiet-hours", "short",
	    "{\"windows\": [{\"days\": [\"tue\"], \"from\": \"21:00\", \"to\": "
	    "\"08:00\"}],"
	    " \"max_delay\": \"9h\"}");
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_DELAY); /* 07:00Z is 9 h away */
	m.first_try_ms = now - 1;
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_EXCLUDE);
	assert_string_equal(d.reason, GOVERN_REASON_QUIET_HOURS_DROPPED);
	assert_string_equal(d.rule_id, "short");
}

static void quiet_hours_drop_action_excludes(void **state)
{
	struct fx *f = *state;
	struct govern_decision d;

	put(f, "quiet-hours", "drop",
	    "{\"channels\": [\"push\"], \"windows\": [{\"days\": [\"tue\"], \"from\": "
	    "\"21:00\", \"to\": \"23:00\"}], \"fallback_zone\": \"Europe/Paris\", "
	    "\"action\": \"drop\"}");
	d = decide(f, "push", "marketing", 1, NULL, at("2026-12-01T20:30:00Z"));
	assert_int_equal(d.verdict, GOVERN_EXCLUDE);
	assert_string_equal(d.reason, GOVERN_REASON_QUIET_HOURS_DROPPED);
	assert_int_equal(
		decide(f, "email", "marketing", 1, NULL, at("2026-12-01T20:30:00Z"))
			.verdict,
		GOVERN_SEND);
}

static void capped_and_quiet_messages_are_not_counted(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T22:00:00Z");

	put(f, "caps", "one", "{\"max\": 1, \"window\": \"7d\"}");
	put(f, "quiet-hours", "night", night);
	/* Delayed by quiet hours: no send counted, so the later try is sent. */
	assert_int_equal(decide(f, "email", "marketing", 1, "Europe/Paris", now).verdict,
			 GOVERN_DELAY);
	assert_int_equal(decide(f, "email", "marketing", 1, "Europe/Paris",
				at("2026-12-02T07:00:00Z"))
				 .verdict,
			 GOVERN_SEND);
	assert_int_equal(decide(f, "email", "marketing", 1, "Europe/Paris",
				at("2026-12-02T07:00:01Z"))
				 .verdict,
			 GOVERN_EXCLUDE);
}

/* --------------------------------------------------------------- throttles */

static void throttled_step_gets_slots_at_the_configured_rate(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");
	struct govern_msg m = {"sms", "transactional", 1, NULL, "j1", "s1", now, now, 0};
	struct govern_decision d;
	int64_t slots[5];

	put(f, "throttles", "step",
	    "{\"journey\": \"j1\", \"step\": \"s1\", \"rate\": 10}");
	for (int i = 0; i < 5; i++) {
		m.profile_id = (uint64_t)i + 1;
		govern_decide(f->g, f->b, &m, &d);
		if (i == 0) {
			assert_int_equal(d.verdict, GOVERN_SEND);
			slots[i] = now;
			continue;
		}
		assert_int_equal(d.verdict, GOVERN_DELAY);
		assert_string_equal(d.reason, GOVERN_REASON_THROTTLED);
		assert_string_equal(d.rule_id, "step");
		slots[i] = d.until_ms;
	}
	for (int i = 1; i < 5; i++)
		assert_true(slots[i] - slots[i - 1] == 100);
	/* A message coming back at its reserved slot is sent and takes no new slot. */
	m.now_ms = slots[2];
	m.throttle_slot_ms = slots[2];
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_SEND);
	/* Another step is not throttled; a new message queues behind the reserved. */
	m.step_id = "s2";
	m.throttle_slot_ms = 0;
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_SEND);
	m.step_id = "s1";
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == slots[4] + 100);
	/* Later than every slot: sent at once. */
	m.now_ms = now + 10000;
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_SEND);
}

static void channel_throttle_applies_across_journeys(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");
	struct govern_msg m = {"sms", "marketing", 1, NULL, "a", "s", now, now, 0};
	struct govern_decision d;

	put(f, "throttles", "sms", "{\"channel\": \"sms\", \"rate\": 2}");
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_SEND);
	commit(f);
	m.journey_id = "b";
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_DELAY);
	assert_true(d.until_ms == now + 500);
	m.channel = "email";
	govern_decide(f->g, f->b, &m, &d);
	assert_int_equal(d.verdict, GOVERN_SEND);
}

/* ------------------------------------------------------------- entry caps */

static void entry_caps_count_across_a_group(void **state)
{
	struct fx *f = *state;
	int64_t now = at("2026-12-01T10:00:00Z");
	const char *rid = NULL;

	put(f, "entry-caps", "welcome",
	    "{\"journeys\": [\"welcome_a\", \"welcome_b\"], \"max\": 1, \"window\": "
	    "\"30d\"}");
	put(f, "entry-caps", "promo",
	    "{\"journey\": \"promo\", \"max\": 2, \"window\": \"1d\"}");
	assert_true(govern_entry_allowed(f->g, f->b, "welcome_a", 5, now, &rid));
	assert_null(rid);
	assert_false(
		govern_entry_allowed(f->g, f->b, "welcome_b", 5, now + DAY_MS, &rid));
	assert_string_equal(rid, "welcome");
	assert_false(
		govern_entry_allowed(f->g, f->b, "welcome_a", 5, now + DAY_MS, &rid));
	assert_true(govern_entry_allowed(f->g, f->b, "welcome_b", 6, now, &rid));
	assert_true(govern_entry_allowed(f->g, f->b, "other", 5, now, &rid));
	assert_true(govern_entry_allowed(f->g, f->b, "welcome_b", 5, now + 30 * DAY_MS,
					 &rid));
	commit(f);
	assert_true(govern_entry_allowed(f->g, f->b, "promo", 5, now, NULL));
	assert_true(govern_entry_allowed(f->g, f->b, "promo", 5, now + 1, NULL));
	assert_false(govern_entry_allowed(f->g, f->b, "promo", 5, now + 2, NULL));
	/* The welcome record survives promo's writes (one value per profile). */
	assert_false(govern_entry_allowed(f->g, f->b, "welcome_a", 5, now + 31 * DAY_MS,
					  &rid));
}

/* ---------------------------------------------------------------- bounces */

static void soft_bounces_suppress_after_the_limit_and_reset(void **state)
{
	struct fx *f = *state;

	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	commit(f);
	govern_delivered(f->g, f->b, "email", "a@x.org");
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_false(govern_bounce(f->g, f->b, "email", "b@x.org", false));
	assert_true(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	/* The count starts over after suppressing. */
	assert_false(govern_bounce(f->g, f->b, "email", "a@x.org", false));
	assert_true(govern_bounce(f->g, f->b, "sms", "+33612345678", true));
	govern_delivered(f->g, f->b, "email", "never@x.org");
}

/* ----------------------------------------------------------------- import */

struct rows {
	char buf[1024];
	unsigned n;
};

static void collect(void *ud, const char *channel, const char *address,
		    const char *reason)
{
	struct rows *r = ud;
	size_t l = strlen(r->buf);

	snprintf(r->buf + l, sizeof(r->buf) - l, "%s|%s|%s;", channel, address, reason);
	r->n++;
}

static int error_line(struct json_object *errors, size_t i)
{
	return json_object_get_int(
		json_object_object_get(json_object_array_get_idx(errors, i), "line"));
}

static void import_csv_accepts_good_rows_and_reports_bad_lines(void **state)
{
	const char *csv = "reason,Address,channel\r\n"
			  "complaint,Bob@Example.COM,email\r\n"
			  ",\"+33 6 12 34 56 78\",sms\n"
			  "\n"
			  "manual,not-an-email,email\n"
			  "manual,x@y.z,fax\n"
			  "spite,x@y.z,email\n"
			  "manual,\"broken,email\n"
			  "hard_bounce,tok123,push\n"
			  "manual,\"a,\"\"b\"\"@x.org\",\n";
	struct rows r = {"", 0};
	struct json_object *errors = NULL;
	unsigned accepted;

	assert_int_equal(govern_import_parse(csv, strlen(csv), false, "email", collect,
					     &r, &accepted, &errors),
			 NERR_OK);
	assert_int_equal(accepted, 4);
	assert_string_equal(r.buf, "email|bob@example.com|complaint;"
				   "sms|+33612345678|manual;"
				   "push|tok123|hard_bounce;"
				   "email|a,\"b\"@x.org|manual;");
	assert_int_equal(json_object_array_length(errors), 4);
	assert_int_equal(error_line(errors, 0), 5);
	assert_int_equal(error_line(errors, 1), 6);
	assert_int_equal(error_line(errors, 2), 7);
	assert_int_equal(error_line(errors, 3), 8);
	json_object_put(errors);
}

static void import_csv_needs_an_address_column_and_a_channel(void **state)
{
	const char *csv = "email,reason\na@b.c,manual\n";
	const char *csv2 = "address\na@b.c\n";
	struct rows r = {"", 0};
	struct json_object *errors = NULL;
	unsigned accepted;

	assert_int_equal(govern_import_parse(csv, strlen(csv), false, "email", collect,
					     &r, &accepted, &errors),
			 NERR_INVAL);
	assert_int_equal(r.n, 0);
	assert_int_equal(error_line(errors, 0), 1);
	json_object_put(errors);
	assert_int_equal(govern_import_parse(csv2, strlen(csv2), false, NULL, collect, &r,
					     &accepted, &errors),
			 NERR_OK);
	assert_int_equal(accepted, 0);
	assert_int_equal(error_line(errors, 0), 2);
	json_object_put(errors);
	assert_int_equal(govern_import_parse(csv2, strlen(csv2), false, "fax", collect,
					     &r, &accepted, &errors),
			 NERR_INVAL);
	json_object_put(errors);
}

static void import_ndjson_rows(void **state)
{
	const char *nd =
		"{\"channel\": \"email\", \"address\": \"A@b.org\", \"reason\": "
		"\"unsubscribe_all\"}\n"
		"{\"address\": \"c@d.org\"}  \n"
		"[1,2]\n"
		"{\"channel\": \"sms\", \"address\": \"12345\"}\n"
		"{\"channel\": \"sms\"\n"
		"{\"channel\": \"sms\", \"address\": \"+4915112345678\"} trailing\n";
	struct rows r = {"", 0};
	struct json_object *errors = NULL;
	unsigned accepted;

	assert_int_equal(govern_import_parse(nd, strlen(nd), true, "email", collect, &r,
					     &accepted, &errors),
			 NERR_OK);
	assert_int_equal(accepted, 2);
	assert_string_equal(r.buf, "email|a@b.org|unsubscribe_all;email|c@d.org|manual;");
	assert_int_equal(json_object_array_length(errors), 4);
	assert_int_equal(error_line(errors, 0), 3);
	assert_int_equal(error_line(errors, 1), 4);
	assert_int_equal(error_line(errors, 2), 5);
	assert_int_equal(error_line(errors, 3), 6);
	json_object_put(errors);
}

static void import_refuses_too_many_rows(void **state)
{
	size_t n = GOVERN_IMPORT_MAX_ROWS + 1, len = 8 + n * 6;
	char *body = malloc(len);
	struct rows r = {"", 0};
	struct json_object *errors = NULL;
	unsigned accepted = 7;

	memcpy(body, "address\n", 8);
	for (size_t i = 0; i < n; i++)
		memcpy(body + 8 + i * 6, "a@b.c\n", 6);
	assert_int_equal(govern_import_parse(body, len, false, "email", collect, &r,
					     &accepted, &errors),
			 NERR_TOOBIG);
	assert_int_equal(r.n, 0);
	assert_int_equal(accepted, 0);
	json_object_put(errors);
	free(body);
}

static void addresses_normalize_like_the_engine(void **state)
{
	char out[GOVERN_MAX_ADDRESS_BYTES + 1];
	const char *why;

	assert_true(
		govern_address_normalize("email", " Ann@Example.ORG ", 17, out, &why));
	assert_string_equal(out, "ann@example.org");
	assert_false(govern_address_normalize("email", "@x", 2, out, &why));
	assert_true(govern_address_normalize("sms", "+1 (415) 555-0100", 17, out, &why));
	assert_string_equal(out, "+14155550100");
	assert_false(govern_address_normalize("sms", "4155550100", 10, out, &why));
	assert_false(govern_address_normalize("sms", "+1415abc0100", 12, out, &why));
	assert_false(govern_address_normalize("sms", "+1234567", 8, out, &why));
	assert_false(govern_address_normalize("push", "a\nb", 3, out, &why));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(consent_defaults_follow_the_config, setup,
						teardown),
		cmocka_unit_test_setup_teardown(profile_consent_wins_over_the_default,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			suppression_reads_its_batch_and_unsuppress_resets_bounces, setup,
			teardown),
		cmocka_unit_test(rule_validation_names_the_field),
		cmocka_unit_test(valid_rules_pass_validation),
		cmocka_unit_test_setup_teardown(
			cap_allows_max_then_the_next_after_the_window, setup, teardown),
		cmocka_unit_test_setup_teardown(
			two_journeys_in_one_batch_never_exceed_a_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(caps_without_channels_count_every_channel,
						setup, teardown),
		cmocka_unit_test_setup_teardown(rule_changes_apply_at_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(rules_per_kind_are_bounded_and_all_count,
						setup, teardown),
		cmocka_unit_test_setup_teardown(rules_survive_reopen_and_read_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			quiet_hours_queue_in_one_zone_and_not_another, setup, teardown),
		cmocka_unit_test_setup_teardown(
			quiet_hours_without_fallback_use_utc_and_weekdays, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			quiet_hours_cross_midnight_from_the_listed_day, setup, teardown),
		cmocka_unit_test_setup_teardown(
			quiet_hours_end_in_local_time_across_a_dst_change, setup,
			teardown),
		cmocka_unit_test_setup_teardown(queued_past_max_delay_is_dropped, setup,
						teardown),
		cmocka_unit_test_setup_teardown(quiet_hours_drop_action_excludes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(capped_and_quiet_messages_are_not_counted,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			throttled_step_gets_slots_at_the_configured_rate, setup,
			teardown),
		cmocka_unit_test_setup_teardown(channel_throttle_applies_across_journeys,
						setup, teardown),
		cmocka_unit_test_setup_teardown(entry_caps_count_across_a_group, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			soft_bounces_suppress_after_the_limit_and_reset, setup, teardown),
		cmocka_unit_test(import_csv_accepts_good_rows_and_reports_bad_lines),
		cmocka_unit_test(import_csv_needs_an_address_column_and_a_channel),
		cmocka_unit_test(import_ndjson_rows),
		cmocka_unit_test(import_refuses_too_many_rows),
		cmocka_unit_test(addresses_normalize_like_the_engine),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
