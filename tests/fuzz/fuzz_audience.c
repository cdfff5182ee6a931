/*
 * fuzz_audience.c -- arbitrary documents through the audience module's checks
 * (audience, computed attribute, indexed traits, business event) and, for
 * computed attributes, arbitrary events and stored states through the
 * aggregate functions.
 *
 * Design: the first byte picks the mode; the rest is a JSON document. Modes 0-3
 * run the loop-thread validators the API calls before anything reaches the
 * engine: they must answer NERR_OK or an error naming a field, never crash. Mode
 * 4 compiles a fixed set of computed attributes and feeds the document to each
 * as an event (then value, boundary, expiry and a merge with itself); mode 5
 * treats the document as a stored state (a damaged record) and runs the same
 * functions on it. The invariant checked beyond "no crash": a value is always
 * produced and a boundary is never in the past of the state's own events.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audience/audience.h"
#include "audience/computed.h"
#include "base/arena.h"
#include "base/log.h"
#include "expr/expr.h"
#include "journey/def.h"

#define NOW_MS 1796162400000LL

static struct expr_env *env;
static struct computed_def *defs[8];
static unsigned ndefs;

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static void setup(void)
{
	static const char *const docs[] = {
		"{\"event\":\"E\",\"aggregate\":\"count\"}",
		"{\"event\":\"E\",\"aggregate\":\"count\",\"window\":\"1h\"}",
		"{\"event\":\"E\",\"aggregate\":\"sum\",\"value\":\"event.properties."
		"v\"}",
		"{\"event\":\"E\",\"aggregate\":\"max\",\"value\":\"event.properties.v\","
		"\"window\":\"7d\"}",
		"{\"event\":\"E\",\"aggregate\":\"first\",\"value\":\"event."
		"properties\"}",
		"{\"event\":\"E\",\"aggregate\":\"last\",\"value\":\"event.properties."
		"v\","
		"\"window\":\"30m\"}",
		"{\"event\":\"E\",\"aggregate\":\"distinct_count\",\"value\":\"event."
		"properties.v\"}",
		"{\"event\":\"E\",\"aggregate\":\"min\",\"value\":\"event.properties."
		"v\"}",
	};

	log_set_level(LOG_ERROR);
	env = journey_env_new();
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		struct json_object *d = json_tokener_parse(docs[i]);
		struct nerr_msg msg = {"", ""};

		must(computed_def_compile("c", d, env, &defs[ndefs], &msg) == NERR_OK,
		     "fixed computed definition compiles");
		ndefs++;
		json_object_put(d);
	}
}

static void exercise(struct computed_def *d, struct json_object **st, struct arena *ar)
{
	struct json_object *v = computed_value(d, *st), *copy = NULL;

	json_object_put(v);
	(void)computed_next_boundary(d, *st);
	if (*st) {
		computed_expire(d, *st, NOW_MS + 3600 * 1000);
		json_object_deep_copy(*st, &copy, NULL);
		computed_merge(d, st, copy);
		json_object_put(copy);
	}
	arena_reset(ar);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_tokener *tok;
	struct json_object *doc;
	struct nerr_msg msg = {"", ""};
	struct arena ar;
	enum nerr rc = NERR_OK;

	if (!env)
		setup();
	if (size < 1)
		return 0;
	tok = json_tokener_new_ex(64);
	doc = json_tokener_parse_ex(tok, (const char *)data + 1, (int)(size - 1));
	json_tokener_free(tok);
	if (!doc)
		return 0;
	arena_init(&ar, 4096);
	switch (data[0] % 6) {
	case 0:
		if (json_object_is_type(doc, json_type_object))
			rc = aud_check_audience(doc, env, &msg);
		break;
	case 1:
		if (json_object_is_type(doc, json_type_object))
			rc = aud_check_computed("fz", doc, env, &msg);
		break;
	case 2:
		if (json_object_is_type(doc, json_type_object))
			rc = aud_check_indexed(doc, &msg);
		break;
	case 3:
		if (json_object_is_type(doc, json_type_object))
			rc = aud_check_business(doc, NOW_MS, &msg);
		break;
	case 4:
		for (unsigned i = 0; i < ndefs; i++) {
			struct json_object *st = NULL;

			computed_apply(defs[i], &st, doc, NOW_MS - 1000, NOW_MS, &ar);
			computed_apply(defs[i], &st, doc, NOW_MS - 7200 * 1000, NOW_MS,
				       &ar);
			exercise(defs[i], &st, &ar);
			json_object_put(st);
		}
		break;
	default:
		for (unsigned i = 0; i < ndefs; i++) {
			struct json_object *st = NULL;

			json_object_deep_copy(doc, &st, NULL);
			exercise(defs[i], &st, &ar);
			json_object_put(st);
		}
		break;
	}
	must(rc == NERR_OK || msg.message[0], "an error carries a message");
	arena_fini(&ar);
	json_object_put(doc);
	return 0;
}
