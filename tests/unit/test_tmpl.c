/*
 * test_tmpl.c -- unit tests of the Liquid template engine (src/tmpl).
 *
 * Design: the golden-liquid conformance cases (../shared/conformance/
 * liquid-cases.json) run as data through one test that prints the pass rate and
 * fails below 90 %; the failures that remain are listed with reasons in
 * docs/templates.md. The other tests each pin one behaviour nudge relies on
 * beyond the suite: the benchmark email renders byte for byte, HTML escaping,
 * the json filter, error positions, every resource limit, input immutability
 * and concurrent renders of one compiled template.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "base/arena.h"
#include "base/buf.h"
#include "tmpl/tmpl.h"

#ifndef SHARED_DIR
#define SHARED_DIR "../shared"
#endif

/* 2026-01-02T03:04:05Z */
#define FIXED_NOW_MS 1767323045000LL

static const char *shared_dir(void)
{
	const char *e = getenv("NUDGE_SHARED");
	return e && *e ? e : SHARED_DIR;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char tmp[4096];
	size_t n;

	if (!f)
		return NULL;
	buf_init(&b, 0);
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	fclose(f);
	*len = b.len;
	if (!b.data)
		buf_append(&b, "", 0);
	return buf_take(&b);
}

/* Partials from a JSON object {name: source}. */
static enum nerr partial_from_json(void *ud, const char *name, struct buf *src)
{
	struct json_object *t;

	if (!ud || !json_object_object_get_ex(ud, name, &t))
		return NERR_NOTFOUND;
	return buf_append(src, json_object_get_string(t),
			  (size_t)json_object_get_string_len(t));
}

struct result {
	enum nerr compile_rc, render_rc;
	char *out;
	struct nerr_msg msg;
};

static void run(const char *src, struct json_object *data, struct json_object *partials,
		const struct tmpl_options *opt, const struct tmpl_limits *rl,
		struct result *r)
{
	struct tmpl *t = NULL;
	struct arena a;
	struct buf out;
	struct tmpl_render_options ro = {.partial = partial_from_json,
					 .partial_userdata = partials,
					 .now_ms = FIXED_NOW_MS};

	if (rl)
		ro.limits = *rl;
	memset(r, 0, sizeof(*r));
	r->compile_rc = tmpl_compile(src, strlen(src), opt, &t, &r->msg);
	if (r->compile_rc)
		return;
	arena_init(&a, 0);
	buf_init(&out, 0);
	r->render_rc = tmpl_render(t, data, &ro, &a, &out, &r->msg);
	r->out = buf_take(&out);
	if (!r->out)
		r->out = strdup("");
	arena_fini(&a);
	tmpl_free(t);
}

/* Renders src with JSON data text; returns the output (caller frees) or NULL on
 * error, with the codes in *r. */
static char *render(const char *src, const char *json, bool strict, bool html,
		    struct result *r)
{
	struct tmpl_options opt = {.strict = strict, .html_escape = html};
	struct json_object *data = json ? json_tokener_parse(json) : NULL;

	run(src, data, NULL, &opt, NULL, r);
	json_object_put(data);
	if (r->compile_rc || r->render_rc) {
		free(r->out);
		r->out = NULL;
	}
	return r->out;
}

static void expect(const char *src, const char *json, const char *want)
{
	struct result r;
	char *got = render(src, json, false, false, &r);

	if (!got)
		fail_msg("%s: error %s: %s", src,
			 nerr_str(r.compile_rc ? r.compile_rc : r.render_rc),
			 r.msg.message);
	if (strcmp(got, want) != 0)
		fail_msg("%s: got '%s', want '%s'", src, got, want);
	free(got);
}

static void test_conformance(void **state)
{
	char path[1024];
	struct json_object *root, *tests;
	int total = 0, passed = 0;

	(void)state;
	snprintf(path, sizeof(path), "%s/conformance/liquid-cases.json", shared_dir());
	root = json_object_from_file(path);
	assert_non_null(root);
	assert_true(json_object_object_get_ex(root, "tests", &tests));
	for (size_t i = 0; i < json_object_array_length(tests); i++) {
		struct json_object *c = json_object_array_get_idx(tests, i), *v;
		struct json_object *data = NULL, *templates = NULL, *tags = NULL;
		struct tmpl_options opt = {0};
		struct result r;
		bool invalid = false, ok = false;
		const char *name = "", *src = "";

		if (json_object_object_get_ex(c, "name", &v))
			name = json_object_get_string(v);
		if (json_object_object_get_ex(c, "template", &v))
			src = json_object_get_string(v);
		json_object_object_get_ex(c, "data", &data);
		json_object_object_get_ex(c, "templates", &templates);
		if (json_object_object_get_ex(c, "invalid", &v))
			invalid = json_object_get_boolean(v);
		if (json_object_object_get_ex(c, "tags", &tags))
			for (size_t k = 0; k < json_object_array_length(tags); k++)
				if (strcmp(json_object_get_string(
						   json_object_array_get_idx(tags, k)),
					   "strict") == 0)
					opt.strict = true;
		run(src, data, templates, &opt, NULL, &r);
		if (invalid) {
			ok = r.compile_rc || r.render_rc;
		} else if (!r.compile_rc && !r.render_rc) {
			if (json_object_object_get_ex(c, "result", &v))
				ok = strcmp(r.out, json_object_get_string(v)) == 0;
			if (json_object_object_get_ex(c, "results", &v))
				for (size_t k = 0; k < json_object_array_length(v); k++)
					ok = ok ||
					     strcmp(r.out,
						    json_object_get_string(
							    json_object_array_get_idx(
								    v, k))) == 0;
		}
		total++;
		if (ok)
			passed++;
		else
			printf("  FAIL %s%s%s%s\n", name, r.out ? " -> '" : " -> error: ",
			       r.out ? r.out : r.msg.message, r.out ? "'" : "");
		free(r.out);
	}
	printf("liquid conformance: %d/%d passed (%.1f %%)\n", passed, total,
	       total ? 100.0 * passed / total : 0.0);
	json_object_put(root);
	assert_true(total > 0);
	assert_true(passed * 100 >= total * 90);
}

static void test_cart_reminder_renders_exactly(void **state)
{
	char path[1024];
	size_t slen, elen;
	char *src, *want;
	struct json_object *data;
	struct result r;

	(void)state;
	snprintf(path, sizeof(path), "%s/bench/cart-reminder.liquid", shared_dir());
	assert_non_null(src = read_file(path, &slen));
	snprintf(path, sizeof(path), "%s/bench/cart-reminder.expected.html",
		 shared_dir());
	assert_non_null(want = read_file(path, &elen));
	snprintf(path, sizeof(path), "%s/bench/cart-reminder.data.json", shared_dir());
	assert_non_null(data = json_object_from_file(path));
	run(src, data, NULL, NULL, NULL, &r);
	assert_int_equal(r.compile_rc, NERR_OK);
	assert_int_equal(r.render_rc, NERR_OK);
	assert_string_equal(r.out, want);
	free(r.out);
	free(src);
	free(want);
	json_object_put(data);
}

static void test_html_mode_escapes_output_unless_raw(void **state)
{
	struct result r;
	char *got;

	(void)state;
	got = render("<p>{{ v }}|{{ v | raw }}|{{ v | escape }}|{% echo v %}</p>",
		     "{\"v\":\"<a href='x'>&</a>\"}", false, true, &r);
	assert_non_null(got);
	assert_string_equal(
		got, "<p>&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;|<a href='x'>&</a>|"
		     "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;|&lt;a "
		     "href=&#39;x&#39;&gt;&amp;&lt;/a&gt;</p>");
	free(got);
	/* Captured template output is not escaped a second time. */
	got = render("{% capture c %}<b>{{ v }}</b>{% endcapture %}{{ c }}",
		     "{\"v\":\"&\"}", false, true, &r);
	assert_non_null(got);
	assert_string_equal(got, "<b>&amp;</b>");
	free(got);
	/* Off by default: text, SMS and webhook bodies. */
	expect("{{ v }}", "{\"v\":\"<&>\"}", "<&>");
}

static void test_json_filter_embeds_any_value(void **state)
{
	(void)state;
	expect("{\"name\": {{ profile.traits.first_name | json }}, \"t\": {{ "
	       "profile.traits | json }}}",
	       "{\"profile\":{\"traits\":{\"first_name\":\"A "
	       "\\\"q\\\"\\n\",\"n\":[1,2.5,null,true]}}}",
	       "{\"name\": \"A \\\"q\\\"\\n\", \"t\": {\"first_name\":\"A "
	       "\\\"q\\\"\\n\",\"n\":[1,2.5,null,true]}}");
	expect("{{ missing | json }}|{{ (1..3) | json }}|{{ 'a,b' | split: ',' | json }}",
	       NULL, "null|[1,2,3]|[\"a\",\"b\"]");
}

static void test_errors_name_line_and_column(void **state)
{
	struct result r;

	(void)state;
	assert_null(render("Hello\n  {% frobnicate %}", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
	assert_non_null(strstr(r.msg.message, "2:3:"));
	assert_non_null(strstr(r.msg.message, "frobnicate"));
	assert_null(render("{% if x %}\nunclosed", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
	assert_null(render("a\nb {{ 1 | divided_by: 0 }}", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_OK);
	assert_int_equal(r.render_rc, NERR_EVAL);
	assert_non_null(strstr(r.msg.message, "2:"));
}

static void test_strict_mode_rejects_unknown_filters(void **state)
{
	struct result r;
	char *got;

	(void)state;
	got = render("{{ 'x' | nope: 1 }}", NULL, false, false, &r);
	assert_non_null(got);
	assert_string_equal(got, "x");
	free(got);
	assert_null(render("{{ 'x' | nope }}", NULL, true, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
	/* Wrong arity of a known filter is an error in both modes. */
	assert_null(render("{{ 'x' | append }}", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
}

static void test_number_semantics_follow_ruby_liquid(void **state)
{
	(void)state;
	expect("{{ 19.99 | times: 100 }} {{ 10.1 | minus: 2.2 }} {{ 0.1 | plus: 0.2 }}",
	       NULL, "1999.0 7.9 0.3");
	expect("{{ 7 | divided_by: 2 }} {{ -7 | divided_by: 2 }} {{ 7 | divided_by: 2.0 "
	       "}}",
	       NULL, "3 -4 3.5");
	expect("{{ -7 | modulo: 3 }} {{ 2.675 | round: 2 }} {{ 2.5 | round }} {{ nil | "
	       "default: 1 }}",
	       NULL, "2 2.68 3 1");
	expect("{{ 9223372036854775807 | plus: 1 }} {{ 1.0 }} {{ 100000000000000000.0 }}",
	       NULL, "9.223372036854776e+18 1.0 1.0e+17");
}

static void test_unicode_case_mapping(void **state)
{
	(void)state;
	expect("{{ 'straße' | upcase }} {{ 'ÉCOLE' | downcase }} {{ 'élan VITAL' | "
	       "capitalize }}",
	       NULL, "STRASSE école Élan vital");
	expect("{{ 'añb' | size }} {{ 'añb' | slice: 1 }} {{ 'añbc' | truncate: 3, '' }}",
	       NULL, "3 ñ añb");
}

static void test_date_filter(void **state)
{
	(void)state;
	expect("{{ 0 | date: '%Y-%m-%d %H:%M' }}|{{ 'now' | date: '%Y-%m-%dT%H:%M:%S' }}",
	       NULL, "1970-01-01 00:00|2026-01-02T03:04:05");
	expect("{{ '2024-03-05T10:20:30Z' | date: '%b %-d, %Y %I:%M %p' }}|{{ 'March 14, "
	       "2016' | "
	       "date: '%a %d' }}|{{ 'garbage' | date: '%Y' }}",
	       NULL, "Mar 5, 2024 10:20 AM|Mon 14|garbage");
}

static void test_limits_end_the_render(void **state)
{
	struct tmpl_limits rl = {
		.loop_iterations = 1000, .output_bytes = 100, .include_depth = 3};
	struct json_object *parts =
		json_tokener_parse("{\"me\":\"x{% include 'me' %}\"}");
	struct tmpl_options small = {
		.limits = {.template_bytes = 10, .nesting_depth = 8}};
	struct result r;
	struct buf deep;

	(void)state;
	run("{% for i in (1..100000000) %}{% endfor %}", NULL, NULL, NULL, &rl, &r);
	assert_int_equal(r.render_rc, NERR_LIMIT);
	free(r.out);
	run("{% for i in (1..50) %}0123456789{% endfor %}", NULL, NULL, NULL, &rl, &r);
	assert_int_equal(r.render_rc, NERR_LIMIT);
	assert_true(strlen(r.out) <= 100);
	free(r.out);
	run("{% include 'me' %}", NULL, parts, NULL, &rl, &r);
	assert_int_equal(r.render_rc, NERR_LIMIT);
	free(r.out);
	run("{% assign s = 'ab' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% "
	    "endfor %}",
	    NULL, NULL, NULL, &rl, &r);
	assert_int_equal(r.render_rc, NERR_LIMIT);
	free(r.out);
	run("0123456789ABC", NULL, NULL, &small, NULL, &r);
	assert_int_equal(r.compile_rc, NERR_TOOBIG);
	buf_init(&deep, 0);
	for (int i = 0; i < 20; i++)
		buf_puts(&deep, "{% if true %}");
	small.limits.template_bytes = 0;
	run(buf_str(&deep), NULL, NULL, &small, NULL, &r);
	assert_int_equal(r.compile_rc, NERR_PARSE);
	buf_reset(&deep);
	buf_puts(&deep, "{{ ");
	for (int i = 0; i < 5000; i++)
		buf_puts(&deep, "a[");
	run(buf_str(&deep), NULL, NULL, NULL, NULL, &r);
	assert_int_equal(r.compile_rc, NERR_PARSE);
	buf_fini(&deep);
	json_object_put(parts);
}

static void test_render_does_not_modify_context(void **state)
{
	const char *json = "{\"a\":[3,1,2],\"o\":{\"k\":\"v\",\"n\":1.5},\"s\":\"x\"}";
	struct json_object *data = json_tokener_parse(json);
	char before[256];
	struct result r;

	(void)state;
	snprintf(before, sizeof(before), "%s", json_object_to_json_string(data));
	run("{% assign a = a | sort | reverse %}{% assign o = 1 %}{{ a | join }}{{ s | "
	    "upcase }}"
	    "{% increment s %}{% capture s %}y{% endcapture %}{{ o }}{% for x in o %}{% "
	    "endfor %}",
	    data, NULL, NULL, NULL, &r);
	assert_int_equal(r.render_rc, NERR_OK);
	assert_string_equal(json_object_to_json_string(data), before);
	free(r.out);
	json_object_put(data);
}

struct shared {
	const struct tmpl *t;
	struct json_object *data;
	const char *want;
	int failures;
};

static void *render_many(void *arg)
{
	struct shared *sh = arg;
	struct arena a;
	struct buf out;
	struct nerr_msg msg;

	arena_init(&a, 0);
	buf_init(&out, 0);
	for (int i = 0; i < 500; i++) {
		arena_reset(&a);
		buf_reset(&out);
		if (tmpl_render(sh->t, sh->data, NULL, &a, &out, &msg) ||
		    strcmp(buf_str(&out), sh->want) != 0)
			__atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
	}
	buf_fini(&out);
	arena_fini(&a);
	return NULL;
}

static void test_one_template_renders_from_many_threads(void **state)
{
	const char *src = "{% for i in items %}{% cycle 'a','b' %}{{ i | times: 2 }}{% "
			  "increment n %}"
			  "{% endfor %}{% assign x = name | upcase %}{{ x }}";
	struct shared sh = {0};
	struct tmpl *t;
	struct nerr_msg msg;
	pthread_t th[4];

	(void)state;
	assert_int_equal(tmpl_compile(src, strlen(src), NULL, &t, &msg), NERR_OK);
	sh.t = t;
	sh.data = json_tokener_parse("{\"items\":[1,2,3],\"name\":\"ann\"}");
	sh.want = "a20b41a62ANN";
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, render_many, &sh);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(sh.failures, 0);
	json_object_put(sh.data);
	tmpl_free(t);
}

static void test_message_variables(void **state)
{
	(void)state;
	expect("{{ profile.traits.first_name | default: 'there' }} {{ "
	       "event.properties.total | "
	       "times: 1.0 }} {{ journey.id }} {{ message.unsubscribe_url }}",
	       "{\"profile\":{\"traits\":{}},\"event\":{\"properties\":{\"total\":5}},"
	       "\"journey\":{\"id\":\"cart\"},\"message\":{\"unsubscribe_url\":\"u\"}}",
	       "there 5.0 cart u");
}

static void test_render_is_isolated_include_is_not(void **state)
{
	struct json_object *parts = json_tokener_parse(
		"{\"p\":\"[{{ x }}{{ g }}{{ arg }}]{% assign y = 1 %}\"}");
	struct json_object *data = json_tokener_parse("{\"g\":\"G\"}");
	struct result r;

	(void)state;
	run("{% assign x = 'X' %}{% include 'p', arg: 'A' %}{{ y }}|{% assign y = nil %}"
	    "{% render 'p', arg: 'B' %}{{ y }}",
	    data, parts, NULL, NULL, &r);
	json_object_put(data);
	assert_int_equal(r.render_rc, NERR_OK);
	assert_string_equal(r.out, "[XGA]1|[GB]");
	free(r.out);
	json_object_put(parts);
}

static void test_ruby_liquid_edge_cases(void **state)
{
	struct result r;

	(void)state;
	expect("{{ ' a  b \n c ' | squish }}|{{ a | sum }}|{{ a | sort | first }}",
	       "{\"a\":[0.3,0.1,0.2]}", "a b c|0.6|0.1");
	expect("{% for i in (1..6) limit: 4 %}{% if i == 3 %}{% break %}{% endif %}{{ i "
	       "}}{% endfor %}"
	       "{% for i in (1..6) offset: continue %}{{ i }}{% endfor %}",
	       NULL, "1256");
	expect("{% case 'x' %}{% when 'y' %}a{% else %}b{% else %}c{% when 'x' %}d{% "
	       "endcase %}",
	       NULL, "bcd");
	expect("{% if a contains false %}T{% else %}F{% endif %}", "{\"a\":[false]}",
	       "F");
	assert_null(render("{% if '2' > 1 %}x{% endif %}", NULL, false, false, &r));
	assert_int_equal(r.render_rc, NERR_EVAL);
	assert_null(render("{{ 123 | where: 'a' }}", NULL, false, false, &r));
	assert_int_equal(r.render_rc, NERR_EVAL);
	assert_null(render("{{ a | sort }}", "{\"a\":[{},1,\"4\"]}", false, false, &r));
	assert_int_equal(r.render_rc, NERR_EVAL);
	expect("{{ 'hello' | slice: 1, nothing }}|{{ (1..5) | slice: 1, 3 }}|{{ (s..5) | "
	       "join }}",
	       "{\"s\":\"x\"}", "e|..5|0 1 2 3 4 5");
	expect("[{{ a | find: 'z' }}][{{ a | has: 'z' }}][{{ b | has: 2 }}]",
	       "{\"a\":[\"x\",null,\"z\"],\"b\":[1,2,3]}", "[][][true]");
	expect("{% assign 123 = 'x' %}{{ 123 }}|{{ 'March 14, 2016' | date: '%s' }}",
	       NULL, "123|1457913600");
	assert_null(render("{% doc x %}{% enddoc %}", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
	assert_null(render("{% assign a? = 1 %}", NULL, true, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
}

static void test_inline_snippets(void **state)
{
	struct result r;

	(void)state;
	expect("{% assign z = 1 %}{% snippet card %}[{{ z }}{{ t }}]{% assign leak = 1 %}"
	       "{% endsnippet %}{% render card, t: 'x' %}{% render card for xs as t %}{{ "
	       "leak }}",
	       "{\"xs\":[1,2]}", "[x][1][2]");
	expect("{% if f %}{% snippet s %}a{% endsnippet %}{% else %}{% snippet s %}b{% "
	       "endsnippet %}"
	       "{% endif %}{% render s %}",
	       "{\"f\":false}", "b");
	assert_null(render("{% render nosuch %}", NULL, false, false, &r));
	assert_int_equal(r.render_rc, NERR_EVAL);
	assert_null(render("{% snippet 'q' %}{% endsnippet %}", NULL, false, false, &r));
	assert_int_equal(r.compile_rc, NERR_PARSE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conformance),
		cmocka_unit_test(test_cart_reminder_renders_exactly),
		cmocka_unit_test(test_html_mode_escapes_output_unless_raw),
		cmocka_unit_test(test_json_filter_embeds_any_value),
		cmocka_unit_test(test_errors_name_line_and_column),
		cmocka_unit_test(test_strict_mode_rejects_unknown_filters),
		cmocka_unit_test(test_number_semantics_follow_ruby_liquid),
		cmocka_unit_test(test_unicode_case_mapping),
		cmocka_unit_test(test_date_filter),
		cmocka_unit_test(test_limits_end_the_render),
		cmocka_unit_test(test_render_does_not_modify_context),
		cmocka_unit_test(test_one_template_renders_from_many_threads),
		cmocka_unit_test(test_message_variables),
		cmocka_unit_test(test_render_is_isolated_include_is_not),
		cmocka_unit_test(test_ruby_liquid_edge_cases),
		cmocka_unit_test(test_inline_snippets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
