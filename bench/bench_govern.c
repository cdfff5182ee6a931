/*
 * bench_govern.c -- the cost of govern_decide() per send decision.
 *
 * A real RocksDB in a temp dir and the engine's pattern: decisions go through a
 * store_batch that is committed (without sync) every 1000 decisions; only the
 * decisions are timed. Cases: no rules; three cap rules that do not match the
 * message (the common path: no store read); three matching cap rules (one read
 * and one write of the profile's window record through the batch); quiet hours
 * outside and inside the window (ICU offsets cached per zone); a step throttle.
 * Each case runs 5 times over 200k decisions (profiles cycle over 10k ids) and
 * the median ns/decision is printed. Issue 7: the common path must stay under
 * 1 µs per decision.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/clock.h"
#include "base/log.h"
#include "govern/govern.h"
#include "store/store.h"

#define DECISIONS 200000
#define RUNS	  5

static struct store *s;
static struct store_batch *b;
static struct govern *g;

static void put(const char *kind, const char *id, const char *json)
{
	struct json_object *doc = json_tokener_parse(json);

	if (!doc || govern_rule_put(g, b, kind, id, doc) != NERR_OK) {
		fprintf(stderr, "bench_govern: bad rule %s\n", json);
		exit(1);
	}
	json_object_put(doc);
	store_batch_commit(b, false, NULL);
}

static void clear_rules(void)
{
	static const char *kinds[] = {"caps", "quiet-hours", "throttles"};

	for (size_t k = 0; k < 3; k++) {
		struct json_object *list, *rules;

		govern_rule_list(s, kinds[k], &list);
		rules = json_object_object_get(list, "rules");
		for (size_t i = 0; i < json_object_array_length(rules); i++)
			govern_rule_delete(
				g, b, kinds[k],
				json_object_get_string(json_object_object_get(
					json_object_array_get_idx(rules, i), "id")));
		json_object_put(list);
	}
	store_batch_commit(b, false, NULL);
}

static int cmp(const void *a, const void *c)
{
	double x = *(const double *)a, y = *(const double *)c;

	return x < y ? -1 : x > y;
}

/* Runs the case; returns the median ns per decision; *sends counts SEND verdicts
 * of the last run (to show what the case exercised). */
static double run(const char *channel, const char *tz, int64_t now_ms, unsigned *sends)
{
	double ns[RUNS];

	for (int r = 0; r < RUNS; r++) {
		uint64_t total = 0;

		*sends = 0;
		for (int i = 0; i < DECISIONS; i += 1000) {
			uint64_t t0 = clock_mono_ns();

			for (int j = i; j < i + 1000; j++) {
				int64_t now = now_ms + (int64_t)r * 86400000LL * 30;
				struct govern_msg m = {
					channel, "marketing", (uint64_t)(j % 10000) + 1,
					tz,	 "journey",   "step",
					now,	 now,	      0};
				struct govern_decision d;

				govern_decide(g, b, &m, &d);
				*sends += d.verdict == GOVERN_SEND;
			}
			total += clock_mono_ns() - t0;
			store_batch_commit(b, false, NULL);
		}
		ns[r] = (double)total / DECISIONS;
	}
	qsort(ns, RUNS, sizeof(ns[0]), cmp);
	return ns[RUNS / 2];
}

/* The cost of the one read a matching cap needs, for comparison. */
static double bare_get(void)
{
	uint64_t total = 0;

	for (int i = 0; i < DECISIONS; i += 1000) {
		uint64_t t0 = clock_mono_ns();

		for (int j = i; j < i + 1000; j++) {
			char key[10], *v = NULL;
			size_t vl;

			memcpy(key, "c/", 2);
			store_put_u64(key + 2, (uint64_t)(j % 10000) + 1);
			store_batch_get(b, STORE_CF_CAPS, key, 10, &v, &vl);
			free(v);
		}
		total += clock_mono_ns() - t0;
	}
	return (double)total / DECISIONS;
}

int main(void)
{
	char dir[64], cmd[128];
	int64_t day = 0, night = 0;
	unsigned sends;
	double ns;

	log_set_level(LOG_WARN);
	snprintf(dir, sizeof(dir), "/tmp/nudge-bench-govern-XXXXXX");
	if (!mkdtemp(dir) || store_open(dir, &s, NULL) != NERR_OK)
		return 1;
	b = store_batch_new(s);
	if (govern_open(s, NULL, &g, NULL) != NERR_OK)
		return 1;
	clock_parse_rfc3339("2026-12-01T12:00:00Z", &day);
	clock_parse_rfc3339("2026-12-01T22:00:00Z", &night);

	printf("govern_decide, ns per decision (median of %d x %d decisions)\n", RUNS,
	       DECISIONS);
	printf("  no rules                          %8.1f ns\n",
	       run("email", "Europe/Paris", day, &sends));

	put("caps", "sms_day",
	    "{\"channels\": [\"sms\"], \"max\": 1, \"window\": \"24h\"}");
	put("caps", "sms_week",
	    "{\"channels\": [\"sms\"], \"max\": 3, \"window\": \"7d\"}");
	put("caps", "push", "{\"channels\": [\"push\"], \"max\": 5, \"window\": \"7d\"}");
	printf("  3 cap rules, none matching        %8.1f ns\n",
	       run("email", "Europe/Paris", day, &sends));
	clear_rules();

	put("caps", "mkt_week",
	    "{\"channels\": [\"email\"], \"category\": \"marketing\", \"max\": 3, "
	    "\"window\": \"7d\"}");
	put("caps", "all_day", "{\"max\": 5, \"window\": \"24h\"}");
	put("caps", "all_month", "{\"max\": 30, \"window\": \"30d\"}");
	ns = run("email", "Europe/Paris", day, &sends);
	printf("  3 cap rules, all matching         %8.1f ns  (%u of %d sent)\n", ns,
	       sends, DECISIONS);
	printf("  (reference: one store_batch_get   %8.1f ns)\n", bare_get());
	clear_rules();

	put("quiet-hours", "night",
	    "{\"category\": \"marketing\", \"windows\": [{\"days\": [\"mon\", \"tue\", "
	    "\"wed\", \"thu\", \"fri\"], \"from\": \"21:00\", \"to\": \"08:00\"}, "
	    "{\"days\": [\"sat\", \"sun\"], \"from\": \"20:00\", \"to\": \"10:00\"}], "
	    "\"fallback_zone\": \"America/New_York\"}");
	printf("  quiet hours, outside the window   %8.1f ns\n",
	       run("email", "Europe/Paris", day, &sends));
	ns = run("email", "Europe/Paris", night, &sends);
	printf("  quiet hours, inside (delayed)     %8.1f ns  (%u sent)\n", ns, sends);
	printf("  quiet hours, fallback zone        %8.1f ns\n",
	       run("email", NULL, day, &sends));
	clear_rules();

	put("throttles", "t",
	    "{\"journey\": \"journey\", \"step\": \"step\", \"rate\": 1000}");
	printf("  step throttle (1 read + 1 write)  %8.1f ns\n",
	       run("email", "Europe/Paris", day, &sends));

	govern_free(g);
	store_batch_free(b);
	store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) != 0;
}
