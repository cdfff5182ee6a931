/*
 * test_journey_def.c -- unit tests for src/journey/def.c: every example in
 * examples/ compiles, every step kind is parsed into the fields the runtime reads,
 * and every rejection the compiler makes is checked with its step, field and text.
 *
 * Design: most tests build a small journey around the steps under test (doc()),
 * compile it and look for one expected error (expect_error()); an expected error
 * must be present with exactly that step and field and a message containing the
 * given text. Tests run from the repository root (make unit), where examples/ is.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "base/buf.h"
#include "expr/expr.h"
#include "journey/def.h"

#define EXAMPLES_DIR "examples"

static struct expr_env *env;

static int setup(void **state)
{
	(void)state;
	env = journey_env_new();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	expr_env_free(env);
	return 0;
}

/* A journey with entry event "E", start "s" and the given steps (JSON members). */
static char *doc(const char *steps)
{
	struct buf b;

	buf_init(&b, 0);
	buf_printf(&b,
		   "{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		   "\"steps\": {%s}}",
		   steps);
	return buf_take(&b);
}

static enum nerr compile_lim(const char *json, const struct journey_limits *lim,
			     journey_template_exists_fn tf, void *ud,
			     struct journey_def **d, struct journey_errors *errs)
{
	return journey_def_compile(json, strlen(json), lim, env, tf, ud, d, errs);
}

static void print_errors(const struct journey_errors *errs)
{
	char line[700];

	for (unsigned i = 0; i < errs->n; i++) {
		journey_error_format(&errs->items[i], line, sizeof(line));
		fprintf(stderr, "  %s\n", line);
	}
}

/* Compiles json and fails the test unless it is valid; returns the definition. */
static struct journey_def *must_compile(const char *json)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	enum nerr rc = compile_lim(json, NULL, NULL, NULL, &d, &errs);

	if (rc != NERR_OK) {
		fprintf(stderr, "unexpected errors for %s\n", json);
		print_errors(&errs);
	}
	assert_int_equal(rc, NERR_OK);
	assert_non_null(d);
	assert_int_equal(errs.n, 0);
	journey_errors_fini(&errs);
	return d;
}

/* Checks that errs holds an error with this step, field and message part. */
static void assert_has_error(const struct journey_errors *errs, const char *step,
			     const char *field, const char *text)
{
	for (unsigned i = 0; i < errs->n; i++) {
		const struct journey_error *e = &errs->items[i];

		if (strcmp(e->step, step) == 0 && strcmp(e->field, field) == 0 &&
		    strstr(e->message, text))
			return;
	}
	fprintf(stderr, "missing error: step '%s' field '%s' message ~ '%s'; got:\n",
		step, field, text);
	print_errors(errs);
	fail();
}

static void expect_error_lim(const char *json, const struct journey_limits *lim,
			     enum nerr want_rc, const char *step, const char *field,
			     const char *text)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	enum nerr rc = compile_lim(json, lim, NULL, NULL, &d, &errs);

	assert_int_equal(rc, want_rc);
	assert_null(d);
	assert_true(errs.n > 0);
	assert_has_error(&errs, step, field, text);
	journey_errors_fini(&errs);
}

static void expect_error(const char *json, const char *step, const char *field,
			 const char *text)
{
	expect_error_lim(json, NULL, NERR_INVAL, step, field, text);
}

/* The same for a journey made by doc(steps). */
static void expect_step_error(const char *steps, const char *step, const char *field,
			      const char *text)
{
	char *json = doc(steps);

	expect_error(json, step, field, text);
	free(json);
}

/* Exactly one error, with this text. */
static void expect_only_error(const char *steps, const char *step, const char *field,
			      const char *text)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	char *json = doc(steps);

	assert_int_equal(compile_lim(json, NULL, NULL, NULL, &d, &errs), NERR_INVAL);
	if (errs.n != 1)
		print_errors(&errs);
	assert_int_equal(errs.n, 1);
	assert_has_error(&errs, step, field, text);
	journey_errors_fini(&errs);
	free(json);
}

/* ------------------------------------------------------------ examples */

/* template_exists over examples/templates/ID.json (channel must match). */
static bool example_template(void *ud, const char *id, const char *channel)
{
	char p[512];
	struct json_object *o, *ch;
	bool ok;

	snprintf(p, sizeof(p), "%s/%s.json", (const char *)ud, id);
	if (!(o = json_object_from_file(p)))
		return false;
	ok = json_object_object_get_ex(o, "channel", &ch) &&
	     strcmp(json_object_get_string(ch), channel) == 0;
	json_object_put(o);
	return ok;
}

static void test_every_example_compiles(void **state)
{
	DIR *dir = opendir(EXAMPLES_DIR);
	struct dirent *de;
	unsigned n = 0;

	(void)state;
	assert_non_null(dir);
	while ((de = readdir(dir))) {
		struct journey_errors errs = {0};
		struct journey_def *d = NULL;
		char p[512];
		struct buf b;
		FILE *f;
		char tmp[4096];
		size_t got;
		enum nerr rc;

		if (!strstr(de->d_name, ".json"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", EXAMPLES_DIR, de->d_name);
		assert_non_null(f = fopen(p, "rb"));
		buf_init(&b, 0);
		while ((got = fread(tmp, 1, sizeof(tmp), f)) > 0)
			assert_int_equal(buf_append(&b, tmp, got), NERR_OK);
		fclose(f);
		rc = journey_def_compile(buf_str(&b), b.len, NULL, env, example_template,
					 EXAMPLES_DIR "/templates", &d, &errs);
		if (rc != NERR_OK) {
			fprintf(stderr, "%s:\n", p);
			print_errors(&errs);
		}
		assert_int_equal(rc, NERR_OK);
		/* the id is the file name */
		assert_int_equal(strncmp(de->d_name, d->id, strlen(d->id)), 0);
		assert_string_equal(de->d_name + strlen(d->id), ".json");
		assert_true(d->nsteps >= 2);
		journey_def_free(d);
		journey_errors_fini(&errs);
		buf_fini(&b);
		n++;
	}
	closedir(dir);
	assert_int_equal(n, 11);
}

static void test_design_example_compiles_into_indexes(void **state)
{
	static const char json[] =
		"{ \"id\": \"cart-abandonment\", \"name\": \"Cart abandonment\",\n"
		"  \"entry\": { \"event\": \"Product Added\", \"when\": "
		"\"event.properties.price > "
		"0\" },\n"
		"  \"reentry\": { \"allow\": true, \"after\": \"24h\" },\n"
		"  \"exit\": [ { \"event\": \"Order Completed\" } ],\n"
		"  \"goal\": { \"event\": \"Order Completed\", \"within\": \"7d\", "
		"\"value\": "
		"\"event.properties.revenue\" },\n"
		"  \"start\": \"wait_order\",\n"
		"  \"steps\": {\n"
		"    \"wait_order\": { \"wait_for\": { \"event\": \"Order Completed\", "
		"\"timeout\": \"1h\" },\n"
		"                    \"on_event\": \"done\", \"on_timeout\": "
		"\"has_email\" },\n"
		"    \"has_email\":  { \"branch\": [ { \"when\": "
		"\"has(profile.traits.email)\", "
		"\"next\": \"remind\" } ],\n"
		"                    \"else\": \"done\" },\n"
		"    \"remind\":     { \"message\": { \"channel\": \"email\", "
		"\"template\": "
		"\"cart-reminder\",\n"
		"                                 \"category\": \"marketing\" }, "
		"\"next\": "
		"\"done\" },\n"
		"    \"done\":       { \"end\": {} } } }";
	struct journey_def *d = must_compile(json);
	const struct journey_step *s;
	const char *const *ev;
	unsigned nev;

	(void)state;
	assert_string_equal(d->id, "cart-abandonment");
	assert_string_equal(d->name, "Cart abandonment");
	assert_null(d->timezone);
	assert_null(d->webhook_secret);
	assert_string_equal(d->entry.event, "Product Added");
	assert_string_equal(d->entry.when.src, "event.properties.price > 0");
	assert_non_null(d->entry.when.prog);
	assert_null(d->entry.key.prog);
	assert_true(d->reentry.allow);
	assert_int_equal(d->reentry.after_ms, 24 * 3600 * 1000LL);
	assert_int_equal(d->nexits, 1);
	assert_string_equal(d->exits[0].event, "Order Completed");
	assert_null(d->exits[0].when.prog);
	assert_true(d->has_goal);
	assert_int_equal(d->goal.within_ms, 7 * 86400 * 1000LL);
	assert_non_null(d->goal.value.prog);
	assert_int_equal(d->nsteps, 4);
	assert_int_equal(d->start, journey_def_step_index(d, "wait_order"));
	/* steps keep document order */
	assert_string_equal(d->steps[0].id, "wait_order");
	assert_string_equal(d->steps[3].id, "done");
	s = &d->steps[journey_def_step_index(d, "wait_order")];
	assert_int_equal(s->kind, JOURNEY_STEP_WAIT_FOR);
	assert_int_equal(s->u.wait_for.mode, JOURNEY_WAIT_FOR_EVENT);
	assert_string_equal(s->u.wait_for.event, "Order Completed");
	assert_int_equal(s->u.wait_for.timeout_ms, 3600 * 1000);
	assert_int_equal(s->on_event, journey_def_step_index(d, "done"));
	assert_int_equal(s->on_timeout, journey_def_step_index(d, "has_email"));
	assert_int_equal(s->next, -1);
	s = &d->steps[1];
	assert_int_equal(s->kind, JOURNEY_STEP_BRANCH);
	assert_int_equal(s->u.branch.narms, 1);
	assert_int_equal(s->u.branch.arms[0].next, 2);
	assert_int_equal(s->else_next, 3);
	assert_int_equal(journey_def_step_index(d, "nope"), -1);
	assert_int_equal(journey_def_step_index(d, ""), -1);
	/* events: entry first, duplicates once */
	ev = journey_def_events(d, &nev);
	assert_int_equal(nev, 2);
	assert_string_equal(ev[0], "Product Added");
	assert_string_equal(ev[1], "Order Completed");
	assert_int_equal(d->source_len, strlen(json));
	assert_string_equal(d->source_json, json);
	journey_def_free(d);
}

/* ------------------------------------------------------------ step kinds */

static void test_branch_parsed(void **state)
{
	char *json = doc(
		"\"s\": {\"branch\": [{\"when\": \"profile.traits.vip == true\", "
		"\"next\": \"a\"}, {\"when\": \"now > timestamp(0)\", \"next\": \"b\"}], "
		"\"else\": \"b\", \"description\": \"who is vip\"},"
		"\"a\": {\"end\": {}}, \"b\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);
	const struct journey_step *s = &d->steps[0];

	(void)state;
	assert_int_equal(s->kind, JOURNEY_STEP_BRANCH);
	assert_string_equal(s->description, "who is vip");
	assert_int_equal(s->u.branch.narms, 2);
	assert_string_equal(s->u.branch.arms[1].when.src, "now > timestamp(0)");
	assert_int_equal(s->u.branch.arms[0].next, 1);
	assert_int_equal(s->u.branch.arms[1].next, 2);
	assert_int_equal(s->else_next, 2);
	assert_int_equal(d->steps[1].kind, JOURNEY_STEP_END);
	journey_def_free(d);
	free(json);
}

static void test_wait_modes_parsed(void **state)
{
	char *json = doc("\"s\": {\"wait\": {\"duration\": \"1h30m\"}, \"next\": \"u\"},"
			 "\"u\": {\"wait\": {\"until\": "
			 "\"timestamp(journey.entry.properties.at) - "
			 "duration('72h')\"}, \"next\": \"l\"},"
			 "\"l\": {\"wait\": {\"until_local\": {\"time\": \"09:30\", "
			 "\"days\": [\"mon\", "
			 "\"sun\"], \"zone\": \"America/New_York\"}}, \"next\": \"l2\"},"
			 "\"l2\": {\"wait\": {\"until_local\": {\"time\": \"23:59\"}}, "
			 "\"next\": \"e\"},"
			 "\"e\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);

	(void)state;
	assert_int_equal(d->steps[0].u.wait.mode, JOURNEY_WAIT_DURATION);
	assert_int_equal(d->steps[0].u.wait.duration_ms, 90 * 60 * 1000);
	assert_int_equal(d->steps[0].next, 1);
	assert_int_equal(d->steps[1].u.wait.mode, JOURNEY_WAIT_UNTIL);
	assert_non_null(d->steps[1].u.wait.until.prog);
	assert_int_equal(d->steps[2].u.wait.mode, JOURNEY_WAIT_UNTIL_LOCAL);
	assert_int_equal(d->steps[2].u.wait.minute_of_day, 9 * 60 + 30);
	assert_int_equal(d->steps[2].u.wait.days_mask, 0x41);
	assert_string_equal(d->steps[2].u.wait.zone, "America/New_York");
	assert_int_equal(d->steps[3].u.wait.minute_of_day, 23 * 60 + 59);
	assert_int_equal(d->steps[3].u.wait.days_mask, 0x7f);
	assert_null(d->steps[3].u.wait.zone);
	journey_def_free(d);
	free(json);
}

static void test_wait_for_modes_parsed(void **state)
{
	char *json = doc(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"t\"}, "
		"\"next\": "
		"\"w\"},"
		"\"w\": {\"wait_for\": {\"step\": \"s\", \"engagement\": \"clicked\", "
		"\"timeout\": \"2d\"}, \"on_event\": \"w2\", \"on_timeout\": \"e\"},"
		"\"w2\": {\"wait_for\": {\"event\": \"Order Completed\", \"when\": "
		"\"event.properties.cart_id == journey.entry.properties.cart_id\", "
		"\"timeout\": "
		"\"1w\"}, \"on_event\": \"e\", \"on_timeout\": \"e\"},"
		"\"e\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);
	const char *const *ev;
	unsigned n;

	(void)state;
	assert_int_equal(d->steps[1].u.wait_for.mode, JOURNEY_WAIT_FOR_ENGAGEMENT);
	assert_int_equal(d->steps[1].u.wait_for.message_step, 0);
	assert_int_equal(d->steps[1].u.wait_for.engagement, JOURNEY_ENGAGEMENT_CLICKED);
	assert_int_equal(d->steps[1].u.wait_for.timeout_ms, 2 * 86400 * 1000LL);
	assert_int_equal(d->steps[2].u.wait_for.mode, JOURNEY_WAIT_FOR_EVENT);
	assert_int_equal(d->steps[2].u.wait_for.message_step, -1);
	assert_non_null(d->steps[2].u.wait_for.when.prog);
	assert_int_equal(d->steps[2].u.wait_for.timeout_ms, 7 * 86400 * 1000LL);
	ev = journey_def_events(d, &n);
	assert_int_equal(n, 2);
	assert_string_equal(ev[1], "Order Completed");
	journey_def_free(d);
	free(json);
}

static void test_split_parsed(void **state)
{
	char *json =
		doc("\"s\": {\"split\": [{\"name\": \"A\", \"weight\": 30, \"next\": "
		    "\"a\"}, {\"name\": \"B\", \"weight\": 70, \"next\": \"b\"}]},"
		    "\"a\": {\"end\": {}}, \"b\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);
	const struct journey_step *s = &d->steps[0];

	(void)state;
	assert_int_equal(s->kind, JOURNEY_STEP_SPLIT);
	assert_int_equal(s->u.split.narms, 2);
	assert_string_equal(s->u.split.arms[0].name, "A");
	assert_int_equal(s->u.split.arms[0].weight, 30);
	assert_int_equal(s->u.split.arms[1].next, 2);
	assert_int_equal(s->u.split.total_weight, 100);
	journey_def_free(d);
	free(json);
}

static void test_message_parsed_with_default_category(void **state)
{
	char *json = doc(
		"\"s\": {\"message\": {\"channel\": \"sms\", \"template\": \"t.v2\"}, "
		"\"next\": \"p\"},"
		"\"p\": {\"message\": {\"channel\": \"push\", \"template\": \"p\", "
		"\"category\": \"order_updates\"}, \"next\": \"e\"},"
		"\"e\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);

	(void)state;
	assert_int_equal(d->steps[0].u.message.channel, JOURNEY_CHANNEL_SMS);
	assert_string_equal(d->steps[0].u.message.template_id, "t.v2");
	assert_string_equal(d->steps[0].u.message.category, "marketing");
	assert_int_equal(d->steps[1].u.message.channel, JOURNEY_CHANNEL_PUSH);
	assert_string_equal(d->steps[1].u.message.category, "order_updates");
	assert_string_equal(journey_channel_name(JOURNEY_CHANNEL_PUSH), "push");
	journey_def_free(d);
	free(json);
}

static void test_webhook_parsed_with_defaults(void **state)
{
	char *json =
		doc("\"s\": {\"webhook\": {\"url\": \"https://example.com/{{ profile.id "
		    "}}\", "
		    "\"body\": \"{\\\"a\\\": {{ event | json }}}\"}, \"next\": \"t\"},"
		    "\"t\": {\"webhook\": {\"url\": \"http://127.0.0.1:9/x\", "
		    "\"method\": \"PUT\", "
		    "\"headers\": {\"X-Token\": \"{{ profile.traits.token }}\", "
		    "\"X-Plain\": \"1\"}, "
		    "\"template\": \"hook\", \"timeout\": \"30s\", \"retries\": 0, "
		    "\"capture\": "
		    "true}, \"next\": \"e\", \"on_failure\": \"e\"},"
		    "\"e\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);
	const struct journey_webhook *w = &d->steps[0].u.webhook;

	(void)state;
	assert_string_equal(w->url_src, "https://example.com/{{ profile.id }}");
	assert_non_null(w->url);
	assert_int_equal(w->method, JOURNEY_HTTP_POST);
	assert_int_equal(w->nheaders, 0);
	assert_non_null(w->body);
	assert_null(w->template_id);
	assert_int_equal(w->timeout_ms, 10000);
	assert_int_equal(w->retries, 3);
	assert_false(w->capture);
	assert_int_equal(d->steps[0].on_failure, -1);
	w = &d->steps[1].u.webhook;
	assert_int_equal(w->method, JOURNEY_HTTP_PUT);
	assert_int_equal(w->nheaders, 2);
	assert_string_equal(w->headers[0].name, "X-Token");
	assert_non_null(w->headers[0].value);
	assert_null(w->body);
	assert_string_equal(w->template_id, "hook");
	assert_int_equal(w->timeout_ms, 30000);
	assert_int_equal(w->retries, 0);
	assert_true(w->capture);
	assert_int_equal(d->steps[1].next, 2);
	assert_int_equal(d->steps[1].on_failure, 2);
	journey_def_free(d);
	free(json);
}

static void test_update_profile_jump_end_parsed(void **state)
{
	char *json = doc(
		"\"s\": {\"update_profile\": {\"set\": {\"score\": \"1 + 2\", "
		"\"seen\": \"now\"}, \"unset\": [\"old\"]}, \"next\": \"j\"},"
		"\"j\": {\"jump\": {\"journey\": \"other-journey\"}, \"next\": \"k\"},"
		"\"k\": {\"jump\": {\"journey\": \"third\"}}");
	struct journey_def *d = must_compile(json);
	const struct journey_update_profile *u = &d->steps[0].u.update_profile;

	(void)state;
	assert_int_equal(u->nset, 2);
	assert_string_equal(u->set[0].trait, "score");
	assert_string_equal(u->set[0].value.src, "1 + 2");
	assert_int_equal(u->nunset, 1);
	assert_string_equal(u->unset[0], "old");
	assert_string_equal(d->steps[1].u.jump.journey_id, "other-journey");
	assert_int_equal(d->steps[1].next, 2);
	assert_int_equal(d->steps[2].next, -1);
	assert_string_equal(journey_step_kind_name(d->steps[2].kind), "jump");
	journey_def_free(d);
	free(json);
}

static void test_journey_level_fields_parsed(void **state)
{
	static const char json[] =
		"{\"id\": \"j_1-x\", \"name\": \"N\", \"description\": \"D\", "
		"\"timezone\": "
		"\"Europe/Paris\", \"webhook_secret\": \"s3cr3t\","
		"\"entry\": {\"event\": \"E\", \"when\": \"true\", \"key\": "
		"\"event.properties.cart_id\"},"
		"\"reentry\": {\"allow\": false},"
		"\"exit\": [{\"event\": \"X\", \"when\": \"event.properties.a == 1\"}, "
		"{\"event\": \"E\"}],"
		"\"goal\": {\"event\": \"G\"},"
		"\"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}";
	struct journey_def *d = must_compile(json);
	const char *const *ev;
	unsigned n;

	(void)state;
	assert_string_equal(d->timezone, "Europe/Paris");
	assert_string_equal(d->webhook_secret, "s3cr3t");
	assert_string_equal(d->description, "D");
	assert_non_null(d->entry.key.prog);
	assert_false(d->reentry.allow);
	assert_int_equal(d->reentry.after_ms, 0);
	assert_int_equal(d->nexits, 2);
	assert_non_null(d->exits[0].when.prog);
	assert_true(d->has_goal);
	assert_int_equal(d->goal.within_ms, 0);
	assert_null(d->goal.value.prog);
	ev = journey_def_events(d, &n);
	assert_int_equal(n, 3);
	assert_string_equal(ev[0], "E");
	assert_string_equal(ev[1], "X");
	assert_string_equal(ev[2], "G");
	journey_def_free(d);
}

static void test_reentry_defaults_to_allowed(void **state)
{
	char *json = doc("\"s\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);

	(void)state;
	assert_true(d->reentry.allow);
	assert_int_equal(d->reentry.after_ms, 0);
	assert_false(d->has_goal);
	assert_int_equal(d->nexits, 0);
	journey_def_free(d);
	free(json);
}

/* ------------------------------------------------------------ document shape */

static void test_rejects_bad_json_with_position(void **state)
{
	(void)state;
	expect_error_lim("{\"id\": \"j\",\n  \"entry\": }", NULL, NERR_PARSE, "", "",
			 "invalid JSON at line 2, column 12");
	expect_error_lim("{\"id\": \"j\"} x", NULL, NERR_PARSE, "", "",
			 "invalid JSON at line 1, column 13");
	expect_error_lim("{\"id\": \"j\"", NULL, NERR_PARSE, "", "", "invalid JSON");
	expect_error_lim("", NULL, NERR_PARSE, "", "", "invalid JSON");
	expect_error("[1]", "", "", "a journey must be a JSON object, not an array");
}

static void test_rejects_too_big_and_too_deep(void **state)
{
	struct journey_limits lim = {.max_def_bytes = 50};
	char *json = doc("\"s\": {\"end\": {}}");
	struct buf deep;

	(void)state;
	expect_error_lim(json, &lim, NERR_TOOBIG, "", "", "more than the limit of 50");
	buf_init(&deep, 0);
	buf_puts(&deep, "{\"id\": \"j\", \"description\": ");
	for (int i = 0; i < 40; i++)
		buf_putc(&deep, '[');
	for (int i = 0; i < 40; i++)
		buf_putc(&deep, ']');
	buf_putc(&deep, '}');
	expect_error_lim(buf_str(&deep), NULL, NERR_PARSE, "", "", "nesting too deep");
	buf_fini(&deep);
	free(json);
}

static void test_rejects_unknown_fields(void **state)
{
	(void)state;
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		     "\"steps\": {\"s\": {\"end\": {}}}, \"stpes\": 1}",
		     "", "stpes", "unknown field 'stpes'");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\", \"filter\": \"x\"}, "
		     "\"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		     "", "entry.filter", "unknown field 'filter'");
	expect_only_error("\"s\": {\"wait\": {\"duration\": \"1h\", \"jitter\": \"1m\"}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait.jitter", "unknown field 'jitter'");
	expect_only_error("\"s\": {\"end\": {}, \"color\": \"red\"}", "s", "color",
			  "unknown field 'color'");
	expect_only_error("\"s\": {\"end\": {\"now\": true}}", "s", "end.now",
			  "unknown field 'now'");
	expect_step_error("\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"e\", "
			  "\"weight\": 1}], \"else\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "branch[0].weight", "unknown field 'weight'");
}

static void test_rejects_wrong_types(void **state)
{
	(void)state;
	expect_error("{\"id\": 7, \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		     "\"steps\": {\"s\": {\"end\": {}}}}",
		     "", "id", "must be a string, not a number");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"reentry\": {\"allow\": "
		"\"no\"}, \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "reentry.allow", "must be a boolean, not a string");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"exit\": {}, "
		     "\"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		     "", "exit", "must be an array, not an object");
	expect_error(
		"{\"id\": \"j\", \"entry\": [], \"start\": \"s\", \"steps\": {\"s\": "
		"{\"end\": {}}}}",
		"", "entry", "must be an object, not an array");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		     "\"steps\": []}",
		     "", "steps", "must be an object, not an array");
	expect_only_error("\"s\": \"end\"", "s", "",
			  "a step must be an object, not a string");
	expect_only_error("\"s\": {\"end\": []}", "s", "end",
			  "must be an empty object {}, not an array");
	expect_step_error("\"s\": {\"wait\": \"1h\", \"next\": \"s\"}", "s", "wait",
			  "must be an object, not a string");
}

static void test_rejects_missing_required_fields(void **state)
{
	(void)state;
	expect_error(
		"{\"entry\": {\"event\": \"E\"}, \"start\": \"s\", \"steps\": {\"s\": "
		"{\"end\": {}}}}",
		"", "id", "is required");
	expect_error(
		"{\"id\": \"j\", \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "entry", "is required");
	expect_error("{\"id\": \"j\", \"entry\": {\"when\": \"true\"}, \"start\": \"s\", "
		     "\"steps\": {\"s\": {\"end\": {}}}}",
		     "", "entry", "give exactly one of event, audience, business_event");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"\"}, \"start\": \"s\", "
		     "\"steps\": {\"s\": {\"end\": {}}}}",
		     "", "entry.event", "must not be empty");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"steps\": {\"s\": "
		     "{\"end\": {}}}}",
		     "", "start", "is required");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\"}",
		     "", "steps", "is required");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		     "\"steps\": {}}",
		     "", "steps", "must have at least one step");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"goal\": {\"within\": "
		"\"1d\"}, \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "goal.event", "is required");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"exit\": [{\"when\": "
		"\"true\"}], \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "exit[0].event", "is required");
}

static void test_rejects_bad_ids_and_zone(void **state)
{
	(void)state;
	expect_error("{\"id\": \"my journey\", \"entry\": {\"event\": \"E\"}, \"start\": "
		     "\"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		     "", "id", "invalid journey id 'my journey'");
	expect_error(
		"{\"id\": \"j\", \"timezone\": \"Mars/Olympus\", \"entry\": {\"event\": "
		"\"E\"}, \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "timezone", "unknown time zone 'Mars/Olympus'");
	expect_step_error("\"s\": {\"end\": {}}, \"bad.id\": {\"end\": {}}", "bad.id", "",
			  "invalid step id");
	expect_only_error("\"s\": {\"jump\": {\"journey\": \"a/b\"}}", "s",
			  "jump.journey", "invalid journey id 'a/b'");
}

/* A journey with the given entry object and one end step. */
static char *entry_doc(const char *entry)
{
	struct buf b;

	buf_init(&b, 0);
	buf_printf(&b,
		   "{\"id\": \"j\", \"entry\": %s, \"start\": \"s\", \"steps\": "
		   "{\"s\": {\"end\": {}}}}",
		   entry);
	return buf_take(&b);
}

static void expect_entry_error(const char *entry, const char *field, const char *text)
{
	char *json = entry_doc(entry);

	expect_error(json, "", field, text);
	free(json);
}

static void test_audience_entry_parsed(void **state)
{
	char *json = entry_doc("{\"audience\": \"vip_buyers-2\", \"when\": "
			       "\"event.properties.audience == 'vip_buyers-2'\"}");
	struct journey_def *d = must_compile(json);
	unsigned n;

	(void)state;
	assert_int_equal(d->entry.kind, JOURNEY_ENTRY_AUDIENCE);
	assert_string_equal(d->entry.audience, "vip_buyers-2");
	assert_null(d->entry.event);
	assert_false(d->entry.on_exit);
	assert_non_null(d->entry.when.prog);
	assert_null(d->entry.who.prog);
	assert_null(d->entry.index_trait);
	assert_null(d->entry.index_value);
	journey_def_events(d, &n);
	assert_int_equal(n, 0);
	journey_def_free(d);
	free(json);

	json = entry_doc("{\"audience\": \"vips\", \"on\": \"exit\"}");
	d = must_compile(json);
	assert_true(d->entry.on_exit);
	journey_def_free(d);
	free(json);
	json = entry_doc("{\"audience\": \"vips\", \"on\": \"enter\"}");
	d = must_compile(json);
	assert_false(d->entry.on_exit);
	journey_def_free(d);
	free(json);
}

static void test_business_entry_parsed_and_not_listened_to(void **state)
{
	static const char json[] =
		"{\"id\": \"j\", \"entry\": {\"business_event\": \"Price Dropped\", "
		"\"who\": \"event.properties.sku in profile.traits.wishlist\", "
		"\"key\": \"event.properties.sku\"}, "
		"\"exit\": [{\"event\": \"Order Completed\"}], "
		"\"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}";
	struct journey_def *d = must_compile(json);
	const char *const *ev;
	unsigned n;

	(void)state;
	assert_int_equal(d->entry.kind, JOURNEY_ENTRY_BUSINESS);
	assert_string_equal(d->entry.event, "Price Dropped");
	assert_null(d->entry.audience);
	assert_string_equal(d->entry.who.src,
			    "event.properties.sku in profile.traits.wishlist");
	assert_non_null(d->entry.who.prog);
	assert_string_equal(d->entry.index_trait, "wishlist");
	assert_non_null(d->entry.index_value);
	assert_non_null(d->entry.key.prog);
	/* the business event is not a profile's event: only the exit is listened to */
	ev = journey_def_events(d, &n);
	assert_int_equal(n, 1);
	assert_string_equal(ev[0], "Order Completed");
	journey_def_free(d);
}

/* Evaluates a business entry's index value for event_json (profile and journey
 * null, as the runtime does) and checks its JSON form. */
static void expect_index_value(const struct journey_def *d, const char *event_json,
			       const char *want)
{
	struct json_object *ev = json_tokener_parse(event_json), *j;
	struct expr_value vars[JOURNEY_VAR__COUNT] = {0}, out;
	struct arena scratch;

	arena_init(&scratch, 0);
	vars[JOURNEY_VAR_EVENT] = expr_value_from_json(ev);
	vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
	assert_int_equal(expr_eval(d->entry.index_value, vars, JOURNEY_VAR__COUNT,
				   &scratch, &out, NULL),
			 NERR_OK);
	j = expr_value_to_json(&out);
	assert_string_equal(json_object_to_json_string(j), want);
	json_object_put(j);
	json_object_put(ev);
	arena_fini(&scratch);
}

static void test_business_entry_who_index(void **state)
{
	char *json = entry_doc(
		"{\"business_event\": \"Price Dropped\", \"who\": "
		"\"event.properties.new_price < 30 && "
		"profile.traits.wishlist.exists(s, s == event.properties.sku) && "
		"consent('email')\"}");
	struct journey_def *d = must_compile(json);

	(void)state;
	assert_string_equal(d->entry.index_trait, "wishlist");
	assert_non_null(d->entry.index_value);
	expect_index_value(d, "{\"properties\": {\"sku\": \"X1\", \"new_price\": 24}}",
			   "\"X1\"");
	journey_def_free(d);
	free(json);

	json = entry_doc("{\"business_event\": \"Launch\", \"who\": "
			 "\"profile.traits.city == event.properties.city\"}");
	d = must_compile(json);
	assert_string_equal(d->entry.index_trait, "city");
	expect_index_value(d, "{\"properties\": {\"city\": \"Lyon\"}}", "\"Lyon\"");
	journey_def_free(d);
	free(json);

	/* under || there is no necessary membership test: every profile is a candidate */
	json = entry_doc("{\"business_event\": \"Price Dropped\", \"who\": "
			 "\"event.properties.sku in profile.traits.wishlist || "
			 "profile.traits.vip\"}");
	d = must_compile(json);
	assert_null(d->entry.index_trait);
	assert_null(d->entry.index_value);
	journey_def_free(d);
	free(json);

	/* a value that reads the profile cannot be computed from the event */
	json = entry_doc("{\"business_event\": \"P\", \"who\": "
			 "\"profile.traits.fav in profile.traits.wishlist\"}");
	d = must_compile(json);
	assert_null(d->entry.index_trait);
	assert_null(d->entry.index_value);
	journey_def_free(d);
	free(json);
}

static void test_event_entry_kind_and_events(void **state)
{
	char *json = doc("\"s\": {\"end\": {}}");
	struct journey_def *d = must_compile(json);
	const char *const *ev;
	unsigned n;

	(void)state;
	assert_int_equal(d->entry.kind, JOURNEY_ENTRY_EVENT);
	assert_string_equal(d->entry.event, "E");
	assert_null(d->entry.audience);
	assert_null(d->entry.who.prog);
	ev = journey_def_events(d, &n);
	assert_int_equal(n, 1);
	assert_string_equal(ev[0], "E");
	journey_def_free(d);
	free(json);
}

static void test_rejects_bad_entry_forms(void **state)
{
	(void)state;
	expect_entry_error("{}", "entry",
			   "give exactly one of event, audience, business_event");
	expect_entry_error("{\"event\": \"E\", \"audience\": \"vips\"}", "entry",
			   "give exactly one of event, audience, business_event");
	expect_entry_error("{\"event\": \"E\", \"business_event\": \"B\", \"who\": "
			   "\"true\"}",
			   "entry",
			   "give exactly one of event, audience, business_event");
	expect_entry_error("{\"audience\": \"a\", \"business_event\": \"B\"}", "entry",
			   "give exactly one of event, audience, business_event");
	/* business_event without who */
	expect_entry_error("{\"business_event\": \"Price Dropped\"}", "entry.who",
			   "is required");
	expect_entry_error("{\"business_event\": \"Price Dropped\", \"who\": \"\"}",
			   "entry.who", "must not be empty");
	expect_entry_error("{\"business_event\": \"P\", \"who\": \"profile.(\"}",
			   "entry.who", "invalid CEL: line 1, column");
	expect_entry_error("{\"business_event\": \"P\", \"who\": \"profle.x == 1\"}",
			   "entry.who", "invalid CEL: undeclared reference");
	expect_entry_error("{\"business_event\": \"\", \"who\": \"true\"}",
			   "entry.business_event", "must not be empty");
	expect_entry_error("{\"business_event\": 3, \"who\": \"true\"}",
			   "entry.business_event", "must be a string, not a number");
	/* who and on only where they apply */
	expect_entry_error("{\"event\": \"E\", \"who\": \"true\"}", "entry.who",
			   "only applies to a business_event entry");
	expect_entry_error("{\"audience\": \"vips\", \"who\": \"true\"}", "entry.who",
			   "only applies to a business_event entry");
	expect_entry_error("{\"event\": \"E\", \"on\": \"exit\"}", "entry.on",
			   "only applies to an audience entry");
	expect_entry_error("{\"business_event\": \"B\", \"who\": \"true\", \"on\": "
			   "\"enter\"}",
			   "entry.on", "only applies to an audience entry");
	expect_entry_error("{\"audience\": \"vips\", \"on\": \"leave\"}", "entry.on",
			   "must be \"enter\" or \"exit\", not 'leave'");
	expect_entry_error("{\"audience\": \"vips\", \"on\": true}", "entry.on",
			   "must be a string, not a boolean");
	/* audience ids */
	expect_entry_error("{\"audience\": \"vip buyers\"}", "entry.audience",
			   "invalid audience id 'vip buyers'");
	expect_entry_error("{\"audience\": \"\"}", "entry.audience", "must not be empty");
	expect_entry_error(
		"{\"audience\": "
		"\"a123456789a123456789a123456789a123456789a123456789a123456789a"
		"1234\"}",
		"entry.audience", "invalid audience id");
	expect_entry_error("{\"audience\": 7}", "entry.audience",
			   "must be a string, not a number");
	/* when and key still checked for every kind */
	expect_entry_error("{\"audience\": \"vips\", \"when\": \"1 +\"}", "entry.when",
			   "invalid CEL");
	expect_entry_error("{\"business_event\": \"B\", \"who\": \"true\", \"key\": "
			   "\"nope.x\"}",
			   "entry.key", "invalid CEL: undeclared reference");
	expect_entry_error("{\"audience\": \"vips\", \"typo\": 1}", "entry.typo",
			   "unknown field 'typo'");
}

static void test_rejects_reentry_after_without_allow(void **state)
{
	(void)state;
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"reentry\": "
		"{\"allow\": false, \"after\": \"1d\"}, \"start\": \"s\", \"steps\": "
		"{\"s\": {\"end\": {}}}}",
		"", "reentry.after", "has no effect when allow is false");
}

/* ------------------------------------------------------------ step kinds: rejections */

static void test_rejects_no_kind_two_kinds_unknown_kind(void **state)
{
	(void)state;
	expect_step_error("\"s\": {\"next\": \"e\"}, \"e\": {\"end\": {}}", "s", "",
			  "no step kind (one of branch, wait, wait_for, split, message, "
			  "webhook, update_profile, jump, end)");
	expect_step_error("\"s\": {\"sleep\": {\"duration\": \"1h\"}}", "s", "sleep",
			  "unknown field 'sleep'");
	expect_step_error(
		"\"s\": {\"wait\": {\"duration\": \"1h\"}, \"end\": {}, \"next\": "
		"\"s\"}",
		"s", "end", "a step has one kind; this one has 'wait' and 'end'");
}

static void test_rejects_routing_key_of_another_kind(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"e\", "
			  "\"else\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "else", "a wait step does not take 'else'");
	expect_only_error("\"s\": {\"end\": {}, \"next\": \"s\"}", "s", "next",
			  "an end step does not take 'next'");
	expect_step_error(
		"\"s\": {\"split\": [{\"name\": \"a\", \"weight\": 1, \"next\": "
		"\"e\"}], \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "next", "a split step does not take 'next'");
}

static void test_rejects_missing_and_unknown_references(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"wait\": {\"duration\": \"1h\"}}", "s", "next",
			  "is required");
	expect_only_error(
		"\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"nowhere\"}", "s",
		"next", "unknown step 'nowhere'");
	expect_step_error("\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"e\"}]}, "
			  "\"e\": {\"end\": {}}",
			  "s", "else", "is required");
	expect_step_error("\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"x\"}], "
			  "\"else\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "branch[0].next", "unknown step 'x'");
	expect_step_error(
		"\"s\": {\"wait_for\": {\"event\": \"X\", \"timeout\": \"1h\"}, "
		"\"on_event\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "on_timeout", "is required");
	expect_step_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\"}, "
		"\"next\": \"e\", \"on_failure\": \"oops\"}, \"e\": {\"end\": {}}",
		"s", "on_failure", "unknown step 'oops'");
	expect_step_error("\"s\": {\"split\": [{\"name\": \"a\", \"weight\": 1}]}", "s",
			  "split[0].next", "is required");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"begin\", "
		"\"steps\": {\"s\": {\"end\": {}}}}",
		"", "start", "unknown step 'begin'");
	expect_only_error("\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": 3}", "s",
			  "next", "must be a string, not a number");
}

static void test_rejects_branch_shapes(void **state)
{
	struct buf b;

	(void)state;
	expect_only_error(
		"\"s\": {\"branch\": [], \"else\": \"e\"}, \"e\": {\"end\": {}}", "s",
		"branch", "must have 1 to 100 arms, not 0");
	expect_only_error(
		"\"s\": {\"branch\": {\"when\": \"true\"}, \"else\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "branch", "must be an array of {\"when\", \"next\"}, not an object");
	expect_step_error(
		"\"s\": {\"branch\": [{\"next\": \"e\"}], \"else\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "branch[0].when", "is required");
	expect_step_error(
		"\"s\": {\"branch\": [true], \"else\": \"e\"}, \"e\": {\"end\": {}}", "s",
		"branch[0]", "must be an object, not a boolean");
	buf_init(&b, 0);
	buf_puts(&b, "\"s\": {\"branch\": [");
	for (int i = 0; i < 101; i++)
		buf_printf(&b, "%s{\"when\": \"true\", \"next\": \"e\"}", i ? "," : "");
	buf_puts(&b, "], \"else\": \"e\"}, \"e\": {\"end\": {}}");
	expect_step_error(buf_str(&b), "s", "branch", "must have 1 to 100 arms, not 101");
	buf_fini(&b);
}

static void test_rejects_wait_shapes(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"wait\": {}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait",
			  "needs exactly one of duration, until, until_local");
	expect_only_error("\"s\": {\"wait\": {\"duration\": \"1h\", \"until\": \"now\"}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait",
			  "needs exactly one of duration, until, until_local");
	expect_only_error("\"s\": {\"wait\": {\"until_local\": {\"time\": \"24:00\"}}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait.until_local.time",
			  "invalid time '24:00' (use HH:MM, 00:00 to 23:59)");
	expect_only_error("\"s\": {\"wait\": {\"until_local\": {\"time\": \"9:00\"}}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait.until_local.time", "invalid time '9:00'");
	expect_only_error("\"s\": {\"wait\": {\"until_local\": {\"time\": \"09:0x\"}}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait.until_local.time", "invalid time '09:0x'");
	expect_only_error("\"s\": {\"wait\": {\"until_local\": {\"days\": [\"mon\"]}}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "wait.until_local.time", "is required");
	expect_only_error(
		"\"s\": {\"wait\": {\"until_local\": {\"time\": \"10:00\", \"days\": "
		"[\"monday\"]}}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait.until_local.days[0]",
		"invalid day (use mon, tue, wed, thu, fri, sat, sun)");
	expect_only_error(
		"\"s\": {\"wait\": {\"until_local\": {\"time\": \"10:00\", \"days\": "
		"[\"mon\", \"tue\", \"mon\"]}}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait.until_local.days[2]", "day 'mon' listed twice");
	expect_only_error(
		"\"s\": {\"wait\": {\"until_local\": {\"time\": \"10:00\", \"days\": "
		"[]}}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait.until_local.days", "must not be empty");
	expect_only_error(
		"\"s\": {\"wait\": {\"until_local\": {\"time\": \"10:00\", \"zone\": "
		"\"Europe/Atlantis\"}}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait.until_local.zone", "unknown time zone 'Europe/Atlantis'");
}

static void test_rejects_bad_durations(void **state)
{
	static const char *const bad[] = {"30", "1y",  "-1h", "0s", "1.5h",
					  "h",	"1h ", " 1h", "1H", "99999999999999d"};
	struct journey_limits lim;
	char steps[256];
	char *json;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[96];

		snprintf(steps, sizeof(steps),
			 "\"s\": {\"wait\": {\"duration\": \"%s\"}, \"next\": \"e\"}, "
			 "\"e\": "
			 "{\"end\": {}}",
			 bad[i]);
		snprintf(want, sizeof(want),
			 "invalid duration '%s' (use e.g. 30s, 15m, 1h, 7d, 2w)", bad[i]);
		expect_only_error(steps, "s", "wait.duration", want);
	}
	expect_only_error(
		"\"s\": {\"wait\": {\"duration\": \"\"}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "wait.duration", "invalid duration ''");
	/* the limit: 400 days by default, configurable */
	expect_only_error(
		"\"s\": {\"wait\": {\"duration\": \"401d\"}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "wait.duration", "duration '401d' is longer than the limit of 400d");
	expect_only_error(
		"\"s\": {\"wait_for\": {\"event\": \"X\", \"timeout\": \"58w\"}, "
		"\"on_event\": \"e\", \"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait_for.timeout", "longer than the limit of 400d");
	json = doc("\"s\": {\"wait\": {\"duration\": \"400d\"}, \"next\": \"e\"}, \"e\": "
		   "{\"end\": {}}");
	journey_def_free(must_compile(json));
	journey_limits_default(&lim);
	lim.max_wait_ms = 90LL * 86400 * 1000;
	expect_error_lim(json, &lim, NERR_INVAL, "s", "wait.duration",
			 "duration '400d' is longer than the limit of 90d");
	free(json);
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"goal\": {\"event\": "
		"\"G\", \"within\": \"2 days\"}, \"start\": \"s\", \"steps\": {\"s\": "
		"{\"end\": {}}}}",
		"", "goal.within", "invalid duration '2 days'");
	expect_only_error(
		"\"s\": {\"wait_for\": {\"event\": \"X\"}, \"on_event\": \"e\", "
		"\"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait_for.timeout", "is required");
}

static void test_duration_parser(void **state)
{
	int64_t ms = 0;

	(void)state;
	assert_int_equal(journey_duration_parse("30s", &ms), NERR_OK);
	assert_int_equal(ms, 30000);
	assert_int_equal(journey_duration_parse("15m", &ms), NERR_OK);
	assert_int_equal(ms, 900000);
	assert_int_equal(journey_duration_parse("1h", &ms), NERR_OK);
	assert_int_equal(ms, 3600000);
	assert_int_equal(journey_duration_parse("7d", &ms), NERR_OK);
	assert_int_equal(ms, 7 * 86400000LL);
	assert_int_equal(journey_duration_parse("2w", &ms), NERR_OK);
	assert_int_equal(ms, 14 * 86400000LL);
	assert_int_equal(journey_duration_parse("1h30m15s250ms", &ms), NERR_OK);
	assert_int_equal(ms, 5415250);
	assert_int_equal(journey_duration_parse("36500d", &ms), NERR_OK);
	assert_int_equal(journey_duration_parse("40000d", &ms), NERR_INVAL);
	assert_int_equal(journey_duration_parse("0s0m", &ms), NERR_INVAL);
	assert_int_equal(journey_duration_parse(NULL, &ms), NERR_INVAL);
	assert_int_equal(journey_duration_parse("1", &ms), NERR_INVAL);
	assert_int_equal(journey_duration_parse("m", &ms), NERR_INVAL);
}

static void test_rejects_wait_for_shapes(void **state)
{
	(void)state;
	expect_only_error(
		"\"s\": {\"wait_for\": {\"timeout\": \"1h\"}, \"on_event\": \"e\", "
		"\"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait_for.event", "is required");
	expect_step_error(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"t\"}, "
		"\"next\": \"w\"}, \"w\": {\"wait_for\": {\"event\": \"X\", \"step\": "
		"\"s\", \"engagement\": \"opened\", \"timeout\": \"1h\"}, \"on_event\": "
		"\"e\", \"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"w", "wait_for", "takes either event (and when) or step and engagement");
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"t\"}, "
		"\"next\": \"w\"}, \"w\": {\"wait_for\": {\"step\": \"s\", "
		"\"engagement\": \"read\", \"timeout\": \"1h\"}, \"on_event\": \"e\", "
		"\"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"w", "wait_for.engagement", "must be opened or clicked, not 'read'");
	expect_only_error(
		"\"s\": {\"wait_for\": {\"event\": \"X\", \"engagement\": "
		"\"opened\", \"timeout\": \"1h\"}, \"on_event\": \"e\", \"on_timeout\": "
		"\"e\"}, \"e\": {\"end\": {}}",
		"s", "wait_for.engagement", "needs step (the message step)");
}

static void test_rejects_engagement_of_non_message_or_later_step(void **state)
{
	(void)state;
	/* not a message step */
	expect_only_error(
		"\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"w\"}, "
		"\"w\": {\"wait_for\": {\"step\": \"s\", \"engagement\": \"opened\", "
		"\"timeout\": \"1h\"}, \"on_event\": \"e\", \"on_timeout\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"w", "wait_for.step", "step 's' is a wait step, not a message step");
	/* a message step on only one branch before the wait */
	expect_only_error(
		"\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"m\"}], "
		"\"else\": \"w\"}, \"m\": {\"message\": {\"channel\": \"email\", "
		"\"template\": \"t\"}, \"next\": \"w\"}, \"w\": {\"wait_for\": "
		"{\"step\": \"m\", \"engagement\": \"opened\", \"timeout\": \"1h\"}, "
		"\"on_event\": \"e\", \"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"w", "wait_for.step",
		"message step 'm' is not on every path before this step");
	/* a message step after the wait */
	expect_only_error(
		"\"s\": {\"wait_for\": {\"step\": \"m\", \"engagement\": "
		"\"clicked\", \"timeout\": \"1h\"}, \"on_event\": \"m\", "
		"\"on_timeout\": \"m\"}, \"m\": {\"message\": {\"channel\": \"email\", "
		"\"template\": \"t\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "wait_for.step",
		"message step 'm' is not on every path before this step");
	/* sms has no opens */
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"sms\", \"template\": \"t\"}, "
		"\"next\": \"w\"}, \"w\": {\"wait_for\": {\"step\": \"s\", "
		"\"engagement\": \"opened\", \"timeout\": \"1h\"}, \"on_event\": \"e\", "
		"\"on_timeout\": \"e\"}, \"e\": {\"end\": {}}",
		"w", "wait_for.engagement",
		"an sms message has no opened engagement (use clicked)");
}

static void test_rejects_split_weights(void **state)
{
	struct buf b;

	(void)state;
	expect_only_error(
		"\"s\": {\"split\": [{\"name\": \"a\", \"weight\": 0, \"next\": "
		"\"e\"}]}, \"e\": {\"end\": {}}",
		"s", "split[0].weight", "must be 1 to 1000000, not 0");
	expect_only_error(
		"\"s\": {\"split\": [{\"name\": \"a\", \"weight\": -5, \"next\": "
		"\"e\"}]}, \"e\": {\"end\": {}}",
		"s", "split[0].weight", "must be 1 to 1000000, not -5");
	expect_only_error(
		"\"s\": {\"split\": [{\"name\": \"a\", \"weight\": 0.5, \"next\": "
		"\"e\"}]}, \"e\": {\"end\": {}}",
		"s", "split[0].weight", "must be an integer, not a number");
	expect_only_error(
		"\"s\": {\"split\": [{\"name\": \"a\", \"weight\": 1, \"next\": "
		"\"e\"}, {\"name\": \"a\", \"weight\": 1, \"next\": \"e\"}]}, \"e\": "
		"{\"end\": {}}",
		"s", "split[1].name", "arm name 'a' used twice");
	expect_only_error("\"s\": {\"split\": []}", "s", "split",
			  "must have 1 to 100 arms, not 0");
	buf_init(&b, 0);
	buf_puts(&b, "\"s\": {\"split\": [");
	for (int i = 0; i < 101; i++)
		buf_printf(&b, "%s{\"name\": \"a%d\", \"weight\": 1, \"next\": \"e\"}",
			   i ? "," : "", i);
	buf_puts(&b, "]}, \"e\": {\"end\": {}}");
	expect_only_error(buf_str(&b), "s", "split", "must have 1 to 100 arms, not 101");
	buf_fini(&b);
}

static void test_rejects_message_shapes(void **state)
{
	(void)state;
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"fax\", \"template\": \"t\"}, "
		"\"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "message.channel", "must be email, sms or push, not 'fax'");
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"email\"}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "message.template", "is required");
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"a "
		"b\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "message.template", "invalid template id 'a b'");
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"t\", "
		"\"category\": \"Marketing\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "message.category", "invalid category 'Marketing' (use lower case)");
	expect_only_error(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": \"t\"}}",
		"s", "next", "is required");
}

/* Knows templates "welcome" (email) and "hook" (webhook) only. */
static bool known_templates(void *ud, const char *id, const char *channel)
{
	(*(int *)ud)++;
	return (strcmp(id, "welcome") == 0 && strcmp(channel, "email") == 0) ||
	       (strcmp(id, "hook") == 0 && strcmp(channel, "webhook") == 0);
}

static void test_rejects_unknown_templates_through_callback(void **state)
{
	char *json = doc(
		"\"s\": {\"message\": {\"channel\": \"email\", \"template\": "
		"\"welcome\"}, \"next\": \"m\"},"
		"\"m\": {\"message\": {\"channel\": \"sms\", \"template\": \"welcome\"}, "
		"\"next\": \"w\"},"
		"\"w\": {\"webhook\": {\"url\": \"http://h/\", \"template\": \"hook\"}, "
		"\"next\": \"x\"},"
		"\"x\": {\"webhook\": {\"url\": \"http://h/\", \"template\": \"nope\"}, "
		"\"next\": \"e\"},"
		"\"e\": {\"end\": {}}");
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	int calls = 0;

	(void)state;
	assert_int_equal(compile_lim(json, NULL, known_templates, &calls, &d, &errs),
			 NERR_INVAL);
	assert_int_equal(calls, 4);
	assert_int_equal(errs.n, 2);
	assert_has_error(&errs, "m", "message.template",
			 "unknown template 'welcome' for channel sms");
	assert_has_error(&errs, "x", "webhook.template",
			 "unknown template 'nope' for channel webhook");
	journey_errors_fini(&errs);
	/* no callback: not checked */
	journey_def_free(must_compile(json));
	free(json);
}

static void test_rejects_webhook_shapes(void **state)
{
	(void)state;
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"ftp://h/\", \"body\": \"{}\"}, "
		"\"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.url", "must start with http:// or https://");
	expect_only_error("\"s\": {\"webhook\": {\"url\": \"{{ profile.traits.url }}\", "
			  "\"body\": \"{}\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "webhook.url", "must start with http:// or https://");
	expect_only_error(
		"\"s\": {\"webhook\": {\"body\": \"{}\"}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "webhook.url", "is required");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"method\": \"GET\", "
		"\"body\": \"{}\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.method", "must be POST or PUT, not 'GET'");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\"}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "webhook", "needs exactly one of body (inline Liquid) or template");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"template\": \"t\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook", "needs exactly one of body (inline Liquid) or template");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"retries\": 11}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.retries", "must be 0 to 10, not 11");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"timeout\": \"10m\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.timeout", "duration '10m' is longer than the limit of 5m");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"capture\": \"yes\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.capture", "must be a boolean, not a string");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"X-Nudge-Signature\": \"forged\"}}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "webhook.headers.X-Nudge-Signature",
		"header 'X-Nudge-Signature' is set by nudge");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"Idempotency-Key\": \"x\"}}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "webhook.headers.Idempotency-Key", "is set by nudge");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"X-A\": \"1\\r\\nX-B: 2\"}}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "webhook.headers.X-A", "must not contain line breaks or NUL");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"Bad Name\": \"1\"}}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "webhook.headers.Bad Name", "invalid header name");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"X-A\": 1}}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "webhook.headers.X-A", "must be a string, not a number");
}

static void test_rejects_bad_liquid_with_position(void **state)
{
	(void)state;
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": "
		"\"{\\n  \\\"a\\\": {{ event | jsonn }}\\n}\"}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "webhook.body",
		"invalid Liquid: line 2, column 19: unknown filter 'jsonn'");
	expect_only_error("\"s\": {\"webhook\": {\"url\": \"http://h/{{ x \", \"body\": "
			  "\"{}\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "webhook.url", "invalid Liquid: line 1, column 10:");
	expect_only_error(
		"\"s\": {\"webhook\": {\"url\": \"http://h/\", \"body\": \"{}\", "
		"\"headers\": {\"X-A\": \"{% if %}\"}}, \"next\": \"e\"}, \"e\": "
		"{\"end\": {}}",
		"s", "webhook.headers.X-A", "invalid Liquid: line 1, column ");
}

static void test_rejects_bad_cel_with_position(void **state)
{
	(void)state;
	expect_only_error(
		"\"s\": {\"branch\": [{\"when\": \"profile.traits.a &&\\n  (1 + \", "
		"\"next\": \"e\"}], \"else\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "branch[0].when",
		"invalid CEL: line 2, column 8: unexpected end of expression");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\", \"when\": \"event.name "
		"=== 'x'\"}, \"start\": \"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		"", "entry.when", "invalid CEL: line 1, column 1");
	expect_error("{\"id\": \"j\", \"entry\": {\"event\": \"E\", \"key\": \"\"}, "
		     "\"start\": "
		     "\"s\", \"steps\": {\"s\": {\"end\": {}}}}",
		     "", "entry.key", "must not be empty");
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"goal\": {\"event\": "
		"\"G\", \"value\": \"event.properties.revenue +\"}, \"start\": \"s\", "
		"\"steps\": {\"s\": {\"end\": {}}}}",
		"", "goal.value", "invalid CEL: line 1, column 27: ");
	expect_only_error(
		"\"s\": {\"wait\": {\"until\": \"timestamp(\"}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "wait.until", "invalid CEL: line 1, column 11");
	expect_only_error("\"s\": {\"update_profile\": {\"set\": {\"score\": \"1 +\"}}, "
			  "\"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "update_profile.set.score",
			  "invalid CEL: line 1, column 4");
}

static void test_rejects_undeclared_names_in_cel(void **state)
{
	char *ok;

	(void)state;
	expect_error(
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\", \"when\": "
		"\"profle.traits.vip == true\"}, \"start\": \"s\", \"steps\": {\"s\": "
		"{\"end\": {}}}}",
		"", "entry.when", "invalid CEL: undeclared reference to 'profle'");
	expect_only_error(
		"\"s\": {\"branch\": [{\"when\": \"evnt_count('X', '1d') > 0\", "
		"\"next\": \"e\"}], \"else\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "branch[0].when",
		"invalid CEL: no such overload: unknown function 'evnt_count' with 2 "
		"arguments");
	/* data-dependent errors (missing keys, nudge functions without a context) are
	 * not compile errors */
	ok = doc("\"s\": {\"branch\": [{\"when\": \"event.properties.a.b > 1 && "
		 "event_count('X', '1d') > 0 && consent('email') && now > "
		 "timestamp(journey.entry.properties.at)\", \"next\": \"e\"}], \"else\": "
		 "\"e\"}, \"e\": {\"end\": {}}");
	journey_def_free(must_compile(ok));
	free(ok);
}

static void test_rejects_update_profile_shapes(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"update_profile\": {}, \"next\": \"e\"}, \"e\": "
			  "{\"end\": {}}",
			  "s", "update_profile",
			  "needs at least one trait in set or unset");
	expect_only_error(
		"\"s\": {\"update_profile\": {\"set\": {\"a\": \"1\"}, \"unset\": "
		"[\"a\"]}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
		"s", "update_profile.unset[0]", "trait 'a' is both set and unset");
	expect_only_error(
		"\"s\": {\"update_profile\": {\"unset\": [1]}, \"next\": \"e\"}, "
		"\"e\": {\"end\": {}}",
		"s", "update_profile.unset[0]", "must be a string, not a number");
	expect_only_error("\"s\": {\"update_profile\": {\"set\": {\"a\": 1}}, \"next\": "
			  "\"e\"}, \"e\": {\"end\": {}}",
			  "s", "update_profile.set.a", "must be a string, not a number");
	expect_only_error(
		"\"s\": {\"update_profile\": {\"set\": {\"\": \"1\"}}, \"next\": "
		"\"e\"}, \"e\": {\"end\": {}}",
		"s", "update_profile.set.", "invalid trait name");
}

static void test_rejects_nul_in_strings(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"message\": {\"channel\": \"email\", \"template\": "
			  "\"a\\u0000b\"}, \"next\": \"e\"}, \"e\": {\"end\": {}}",
			  "s", "message.template", "must not contain NUL");
}

/* ------------------------------------------------------------ graph */

static void test_rejects_unreachable_steps(void **state)
{
	(void)state;
	expect_only_error("\"s\": {\"end\": {}}, \"orphan\": {\"end\": {}}", "orphan", "",
			  "unreachable from start step 's'");
	/* an island that only points into the reachable part is unreachable too */
	expect_step_error("\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"e\"}, "
			  "\"i\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"s\"}, "
			  "\"e\": {\"end\": {}}",
			  "i", "", "unreachable from start step 's'");
}

static void test_rejects_loop_without_wait(void **state)
{
	char *ok;

	(void)state;
	expect_only_error(
		"\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"e\"}], "
		"\"else\": \"h\"}, \"h\": {\"webhook\": {\"url\": \"http://h/\", "
		"\"body\": \"{}\"}, \"next\": \"s\"}, \"e\": {\"end\": {}}",
		"s", "",
		"loop without a wait: s -> h -> s (put a wait or wait_for step in it)");
	/* self loop */
	expect_only_error("\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"e\"}], "
			  "\"else\": \"s\"}, \"e\": {\"end\": {}}",
			  "s", "", "loop without a wait: s -> s");
	/* jump back through update_profile */
	expect_only_error(
		"\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"a\"}, "
		"\"a\": {\"update_profile\": {\"set\": {\"x\": \"1\"}}, \"next\": "
		"\"b\"}, \"b\": {\"split\": [{\"name\": \"x\", \"weight\": 1, \"next\": "
		"\"a\"}, {\"name\": \"y\", \"weight\": 1, \"next\": \"s\"}]}",
		"a", "", "loop without a wait: a -> b -> a");
	/* a loop through a wait is fine */
	ok = doc("\"s\": {\"branch\": [{\"when\": \"true\", \"next\": \"e\"}], \"else\": "
		 "\"w\"}, \"w\": {\"wait\": {\"duration\": \"1d\"}, \"next\": \"s\"}, "
		 "\"e\": "
		 "{\"end\": {}}");
	journey_def_free(must_compile(ok));
	free(ok);
	ok = doc("\"s\": {\"wait_for\": {\"event\": \"X\", \"timeout\": \"1d\"}, "
		 "\"on_event\": \"m\", \"on_timeout\": \"e\"}, \"m\": {\"message\": "
		 "{\"channel\": \"push\", \"template\": \"t\"}, \"next\": \"s\"}, \"e\": "
		 "{\"end\": {}}");
	journey_def_free(must_compile(ok));
	free(ok);
}

static void test_rejects_too_many_steps(void **state)
{
	struct journey_limits lim;
	struct buf b;

	(void)state;
	journey_limits_default(&lim);
	lim.max_steps = 3;
	buf_init(&b, 0);
	buf_puts(
		&b,
		"{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s\", "
		"\"steps\": {\"s\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"a\"}, "
		"\"a\": {\"wait\": {\"duration\": \"1h\"}, \"next\": \"b\"}, \"b\": "
		"{\"wait\": {\"duration\": \"1h\"}, \"next\": \"c\"}, \"c\": {\"end\": "
		"{}}}}");
	expect_error_lim(buf_str(&b), &lim, NERR_INVAL, "", "steps",
			 "4 steps, more than the limit of 3");
	buf_reset(&b);
	/* the default: 500 */
	buf_puts(&b, "{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s0\", "
		     "\"steps\": {");
	for (int i = 0; i < 501; i++)
		buf_printf(&b, "%s\"s%d\": {\"end\": {}}", i ? "," : "", i);
	buf_puts(&b, "}}");
	expect_error(buf_str(&b), "", "steps", "501 steps, more than the limit of 500");
	buf_fini(&b);
}

static void test_error_cap_and_formats(void **state)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	struct json_object *arr, *o, *v;
	char line[700];
	struct buf b;

	(void)state;
	buf_init(&b, 0);
	buf_puts(&b, "{\"id\": \"j\", \"entry\": {\"event\": \"E\"}, \"start\": \"s0\", "
		     "\"steps\": {");
	for (int i = 0; i < 150; i++)
		buf_printf(&b, "%s\"s%d\": {\"end\": {}, \"bogus\": 1}", i ? "," : "", i);
	buf_puts(&b, "}}");
	assert_int_equal(compile_lim(buf_str(&b), NULL, NULL, NULL, &d, &errs),
			 NERR_INVAL);
	assert_int_equal(errs.n, JOURNEY_MAX_ERRORS + 1);
	assert_string_equal(errs.items[JOURNEY_MAX_ERRORS].message,
			    "too many errors; stopped after 100");
	journey_error_format(&errs.items[0], line, sizeof(line));
	assert_string_equal(line, "step s0: bogus: unknown field 'bogus'");
	arr = journey_errors_to_json(&errs);
	assert_int_equal(json_object_array_length(arr), JOURNEY_MAX_ERRORS + 1);
	o = json_object_array_get_idx(arr, 0);
	assert_true(json_object_object_get_ex(o, "step", &v));
	assert_string_equal(json_object_get_string(v), "s0");
	assert_true(json_object_object_get_ex(o, "field", &v));
	assert_string_equal(json_object_get_string(v), "bogus");
	assert_true(json_object_object_get_ex(o, "message", &v));
	assert_string_equal(json_object_get_string(v), "unknown field 'bogus'");
	json_object_put(arr);
	journey_errors_fini(&errs);
	buf_fini(&b);

	/* journey-level and field-less formats; json without "step" */
	assert_int_equal(compile_lim("[]", NULL, NULL, NULL, &d, &errs), NERR_INVAL);
	journey_error_format(&errs.items[0], line, sizeof(line));
	assert_string_equal(line,
			    "document: a journey must be a JSON object, not an array");
	arr = journey_errors_to_json(&errs);
	assert_false(json_object_object_get_ex(json_object_array_get_idx(arr, 0), "step",
					       NULL));
	json_object_put(arr);
	journey_errors_fini(&errs);
	assert_int_equal(compile_lim("{\"id\": 1}", NULL, NULL, NULL, &d, &errs),
			 NERR_INVAL);
	journey_error_format(&errs.items[0], line, sizeof(line));
	assert_string_equal(line, "id: must be a string, not a number");
	journey_errors_fini(&errs);
}

/* ------------------------------------------------------------ CEL env */

static int64_t fake_event_count(void *ud, const char *name, int64_t window_ms,
				const char *predicate)
{
	char *seen = ud;

	snprintf(seen, 256, "%s|%lld|%s", name, (long long)window_ms,
		 predicate ? predicate : "-");
	return 7;
}

static int fake_consent(void *ud, const char *channel, const char *purpose)
{
	(void)ud;
	return strcmp(channel, "email") == 0 &&
	       (!purpose || strcmp(purpose, "marketing") == 0);
}

static int fake_in_audience(void *ud, const char *audience_id)
{
	(void)ud;
	if (strcmp(audience_id, "broken") == 0)
		return -1;
	return strcmp(audience_id, "vips") == 0;
}

static struct expr_value eval(const char *src, struct arena *scratch, enum nerr *rc)
{
	struct expr_value vars[JOURNEY_VAR__COUNT], out;
	struct expr_program *prog = NULL;
	struct nerr_msg msg;

	for (int i = 0; i < JOURNEY_VAR__COUNT; i++)
		vars[i] = expr_value_from_json(NULL);
	assert_int_equal(expr_compile(src, env, &prog, &msg), NERR_OK);
	*rc = expr_eval(prog, vars, JOURNEY_VAR__COUNT, scratch, &out, &msg);
	expr_program_free(prog);
	return out;
}

static void test_env_functions_read_the_eval_context(void **state)
{
	char seen[256] = "";
	struct journey_eval_ctx ctx = {
		.ud = seen, .event_count = fake_event_count, .consent = fake_consent};
	struct arena scratch;
	struct expr_value v;
	enum nerr rc;

	(void)state;
	arena_init(&scratch, 0);
	assert_int_equal(expr_env_var_count(env), JOURNEY_VAR__COUNT);
	/* no context: an error, not a crash */
	journey_eval_ctx_set(NULL);
	v = eval("event_count('Order Completed', duration('24h'))", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	assert_int_equal(v.kind, EXPR_ERROR);
	v = eval("consent('email')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);

	journey_eval_ctx_set(&ctx);
	assert_ptr_equal(journey_eval_ctx_get(), &ctx);
	v = eval("event_count('Order Completed', duration('24h'))", &scratch, &rc);
	assert_int_equal(rc, NERR_OK);
	assert_int_equal(v.kind, EXPR_INT);
	assert_int_equal(v.as.i, 7);
	assert_string_equal(seen, "Order Completed|86400000|-");
	v = eval("event_count('Product Viewed', '7d', 'event.properties.price > 10') > 5",
		 &scratch, &rc);
	assert_int_equal(rc, NERR_OK);
	assert_true(expr_value_is_true(&v));
	assert_string_equal(seen, "Product Viewed|604800000|event.properties.price > 10");
	v = eval("event_count('X', 'soon')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	v = eval("event_count(1, '1d')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	v = eval("event_count('X', duration('-1h'))", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	v = eval(
		"consent('email') && consent('email', 'marketing') && !consent('sms') && "
		"!consent('email', 'other')",
		&scratch, &rc);
	assert_int_equal(rc, NERR_OK);
	assert_true(expr_value_is_true(&v));
	v = eval("consent(1)", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	journey_eval_ctx_set(NULL);
	arena_fini(&scratch);
}

static void test_in_audience_reads_the_eval_context(void **state)
{
	struct journey_eval_ctx no_cb = {.ud = NULL};
	struct journey_eval_ctx ctx = {.ud = NULL, .in_audience = fake_in_audience};
	struct arena scratch;
	struct expr_value v;
	enum nerr rc;

	(void)state;
	arena_init(&scratch, 0);
	journey_eval_ctx_set(NULL);
	v = eval("in_audience('vips')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	assert_int_equal(v.kind, EXPR_ERROR);
	assert_memory_equal(v.as.s, "in_audience is not available here", v.len);
	journey_eval_ctx_set(&no_cb);
	v = eval("in_audience('vips')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	assert_memory_equal(v.as.s, "in_audience is not available here", v.len);

	journey_eval_ctx_set(&ctx);
	v = eval("in_audience('vips') && !in_audience('churned')", &scratch, &rc);
	assert_int_equal(rc, NERR_OK);
	assert_true(expr_value_is_true(&v));
	v = eval("in_audience('broken')", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	v = eval("in_audience(1)", &scratch, &rc);
	assert_int_equal(rc, NERR_EVAL);
	journey_eval_ctx_set(NULL);
	arena_fini(&scratch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_example_compiles),
		cmocka_unit_test(test_design_example_compiles_into_indexes),
		cmocka_unit_test(test_branch_parsed),
		cmocka_unit_test(test_wait_modes_parsed),
		cmocka_unit_test(test_wait_for_modes_parsed),
		cmocka_unit_test(test_split_parsed),
		cmocka_unit_test(test_message_parsed_with_default_category),
		cmocka_unit_test(test_webhook_parsed_with_defaults),
		cmocka_unit_test(test_update_profile_jump_end_parsed),
		cmocka_unit_test(test_journey_level_fields_parsed),
		cmocka_unit_test(test_reentry_defaults_to_allowed),
		cmocka_unit_test(test_rejects_bad_json_with_position),
		cmocka_unit_test(test_rejects_too_big_and_too_deep),
		cmocka_unit_test(test_rejects_unknown_fields),
		cmocka_unit_test(test_rejects_wrong_types),
		cmocka_unit_test(test_rejects_missing_required_fields),
		cmocka_unit_test(test_rejects_bad_ids_and_zone),
		cmocka_unit_test(test_audience_entry_parsed),
		cmocka_unit_test(test_business_entry_parsed_and_not_listened_to),
		cmocka_unit_test(test_business_entry_who_index),
		cmocka_unit_test(test_event_entry_kind_and_events),
		cmocka_unit_test(test_rejects_bad_entry_forms),
		cmocka_unit_test(test_rejects_reentry_after_without_allow),
		cmocka_unit_test(test_rejects_no_kind_two_kinds_unknown_kind),
		cmocka_unit_test(test_rejects_routing_key_of_another_kind),
		cmocka_unit_test(test_rejects_missing_and_unknown_references),
		cmocka_unit_test(test_rejects_branch_shapes),
		cmocka_unit_test(test_rejects_wait_shapes),
		cmocka_unit_test(test_rejects_bad_durations),
		cmocka_unit_test(test_duration_parser),
		cmocka_unit_test(test_rejects_wait_for_shapes),
		cmocka_unit_test(test_rejects_engagement_of_non_message_or_later_step),
		cmocka_unit_test(test_rejects_split_weights),
		cmocka_unit_test(test_rejects_message_shapes),
		cmocka_unit_test(test_rejects_unknown_templates_through_callback),
		cmocka_unit_test(test_rejects_webhook_shapes),
		cmocka_unit_test(test_rejects_bad_liquid_with_position),
		cmocka_unit_test(test_rejects_bad_cel_with_position),
		cmocka_unit_test(test_rejects_undeclared_names_in_cel),
		cmocka_unit_test(test_rejects_update_profile_shapes),
		cmocka_unit_test(test_rejects_nul_in_strings),
		cmocka_unit_test(test_rejects_unreachable_steps),
		cmocka_unit_test(test_rejects_loop_without_wait),
		cmocka_unit_test(test_rejects_too_many_steps),
		cmocka_unit_test(test_error_cap_and_formats),
		cmocka_unit_test(test_env_functions_read_the_eval_context),
		cmocka_unit_test(test_in_audience_reads_the_eval_context),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
