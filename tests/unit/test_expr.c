/*
 * test_expr.c -- unit tests for src/expr: the cel-spec conformance cases, and one
 * test per behaviour the journey engine relies on (errors, limits, json variables,
 * registered functions, printing, no heap on the hot path, threads).
 *
 * Design: the conformance runner reads ../shared/conformance/cel-cases.json (found
 * through NUDGE_SHARED or the SHARED_DIR macro), binds each case's typed variables,
 * compiles and evaluates, and compares the result strictly (an int is not a uint).
 * A case with "expect.error" passes when compiling or evaluating fails. It prints
 * the pass rate and the failing names, and fails below 95 %. A case that crashes
 * crashes the whole test, so it cannot go unnoticed.
 */
#include <math.h>
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

#include "expr/expr.h"

#ifndef SHARED_DIR
#define SHARED_DIR "../shared"
#endif

static const char *shared_dir(void)
{
	const char *s = getenv("NUDGE_SHARED");

	return s && *s ? s : SHARED_DIR;
}

/* ---- typed values of cel-cases.json to expr values ---- */

static int hexval(char ch)
{
	return ch <= '9' ? ch - '0' : (ch | 32) - 'a' + 10;
}

static bool typed_to_value(struct json_object *t, struct arena *a, struct expr_value *out)
{
	memset(out, 0, sizeof(*out));
	json_object_object_foreach(t, kind, val)
	{
		if (strcmp(kind, "int") == 0) {
			out->kind = EXPR_INT;
			out->as.i = strtoll(json_object_get_string(val), NULL, 10);
		} else if (strcmp(kind, "uint") == 0) {
			out->kind = EXPR_UINT;
			out->as.u = strtoull(json_object_get_string(val), NULL, 10);
		} else if (strcmp(kind, "double") == 0) {
			out->kind = EXPR_DOUBLE;
			if (json_object_is_type(val, json_type_string)) {
				const char *s = json_object_get_string(val);

				out->as.d = strcmp(s, "NaN") == 0	 ? NAN
					    : strcmp(s, "Infinity") == 0 ? INFINITY
									 : -INFINITY;
			} else {
				out->as.d = json_object_get_double(val);
			}
		} else if (strcmp(kind, "string") == 0) {
			out->kind = EXPR_STRING;
			out->len = (uint32_t)json_object_get_string_len(val);
			out->as.s =
				arena_strndup(a, json_object_get_string(val), out->len);
		} else if (strcmp(kind, "bytes") == 0) {
			const char *h = json_object_get_string(val);
			size_t n = strlen(h) / 2;
			char *b = arena_alloc(a, n + 1);

			for (size_t i = 0; i < n; i++)
				b[i] = (char)(hexval(h[2 * i]) * 16 +
					      hexval(h[2 * i + 1]));
			out->kind = EXPR_BYTES;
			out->len = (uint32_t)n;
			out->as.s = b;
		} else if (strcmp(kind, "bool") == 0) {
			out->kind = EXPR_BOOL;
			out->as.b = json_object_get_boolean(val);
		} else if (strcmp(kind, "null") == 0) {
			out->kind = EXPR_NULL;
		} else if (strcmp(kind, "list") == 0) {
			size_t n = json_object_array_length(val);
			struct expr_value *items =
				arena_alloc(a, (n + 1) * sizeof(*items));

			for (size_t i = 0; i < n; i++)
				if (!typed_to_value(json_object_array_get_idx(val, i), a,
						    &items[i]))
					return false;
			out->kind = EXPR_LIST;
			out->len = (uint32_t)n;
			out->as.items = items;
		} else if (strcmp(kind, "map") == 0) {
			size_t n = json_object_array_length(val);
			struct expr_value *items =
				arena_alloc(a, (2 * n + 1) * sizeof(*items));

			for (size_t i = 0; i < n; i++) {
				struct json_object *kv =
					json_object_array_get_idx(val, i);

				if (!typed_to_value(json_object_array_get_idx(kv, 0), a,
						    &items[2 * i]) ||
				    !typed_to_value(json_object_array_get_idx(kv, 1), a,
						    &items[2 * i + 1]))
					return false;
			}
			out->kind = EXPR_MAP;
			out->len = (uint32_t)n;
			out->as.items = items;
		} else {
			return false;
		}
		return true;
	}
	return false;
}

static struct expr_value item(const struct expr_value *v, size_t i)
{
	return v->as.items[i];
}

/* Strict structural equality: kinds must match exactly (1 is not 1u nor 1.0). */
static bool strict_equal(const struct expr_value *want, const struct expr_value *got,
			 struct arena *a);

static struct expr_value native(const struct expr_value *v, struct arena *a)
{
	/* json-backed collections do not occur in results here; values built by
	 * the evaluator are native. */
	(void)a;
	return *v;
}

static bool strict_equal(const struct expr_value *want, const struct expr_value *got,
			 struct arena *a)
{
	if (want->kind != got->kind)
		return false;
	switch (want->kind) {
	case EXPR_NULL:
		return true;
	case EXPR_BOOL:
		return want->as.b == got->as.b;
	case EXPR_INT:
		return want->as.i == got->as.i;
	case EXPR_UINT:
		return want->as.u == got->as.u;
	case EXPR_DOUBLE:
		if (isnan(want->as.d))
			return isnan(got->as.d);
		return want->as.d == got->as.d &&
		       signbit(want->as.d) == signbit(got->as.d);
	case EXPR_STRING:
	case EXPR_BYTES:
		return want->len == got->len &&
		       memcmp(want->as.s, got->as.s, want->len) == 0;
	case EXPR_LIST: {
		struct expr_value g = native(got, a);

		if (want->len != g.len || (g.flags & EXPR_F_JSON))
			return false;
		for (size_t i = 0; i < want->len; i++) {
			struct expr_value x = item(want, i), y = item(&g, i);

			if (!strict_equal(&x, &y, a))
				return false;
		}
		return true;
	}
	case EXPR_MAP: {
		struct expr_value g = native(got, a);

		if (want->len != g.len || (g.flags & EXPR_F_JSON))
			return false;
		for (size_t i = 0; i < want->len; i++) {
			bool found = false;

			for (size_t j = 0; j < g.len && !found; j++) {
				struct expr_value wk = item(want, 2 * i),
						  gk = item(&g, 2 * j);
				struct expr_value wv = item(want, 2 * i + 1),
						  gv = item(&g, 2 * j + 1);

				found = strict_equal(&wk, &gk, a) &&
					strict_equal(&wv, &gv, a);
			}
			if (!found)
				return false;
		}
		return true;
	}
	default:
		return false;
	}
}

/* Runs one case; returns true when it passes. why gets a short reason. */
static bool run_case(struct json_object *cs, char *why, size_t whylen)
{
	struct json_object *bindings = json_object_object_get(cs, "bindings");
	struct json_object *expect = json_object_object_get(cs, "expect");
	struct json_object *want_val = json_object_object_get(expect, "value");
	struct expr_env *env = expr_env_new();
	struct expr_program *prog = NULL;
	struct expr_value vars[EXPR_MAX_VARS], got, want;
	struct nerr_msg msg;
	struct arena a;
	size_t nvars = 0;
	bool ok = false;
	enum nerr rc;

	arena_init(&a, 0);
	a.limit_bytes = 64u << 20;
	if (bindings) {
		json_object_object_foreach(bindings, name, typed)
		{
			if (expr_env_add_var(env, name, NULL) != NERR_OK ||
			    !typed_to_value(typed, &a, &vars[nvars++])) {
				snprintf(why, whylen, "bad binding");
				goto out;
			}
		}
	}
	struct json_object *src = json_object_object_get(cs, "expr");

	rc = expr_compile_n(json_object_get_string(src),
			    (size_t)json_object_get_string_len(src), env, &prog, &msg);
	if (rc != NERR_OK) {
		ok = !want_val;
		snprintf(why, whylen, "compile: %s", msg.message);
		goto out;
	}
	rc = expr_eval(prog, vars, nvars, &a, &got, &msg);
	if (!want_val) {
		ok = rc != NERR_OK;
		snprintf(why, whylen, "expected an error");
		goto out;
	}
	if (rc != NERR_OK) {
		snprintf(why, whylen, "error: %s", msg.message);
		goto out;
	}
	if (!typed_to_value(want_val, &a, &want)) {
		snprintf(why, whylen, "bad expectation");
		goto out;
	}
	ok = strict_equal(&want, &got, &a);
	if (!ok) {
		struct buf b;

		buf_init(&b, 200);
		expr_value_format(&got, &b);
		snprintf(why, whylen, "got %s", buf_str(&b));
		buf_fini(&b);
	}
out:
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
	return ok;
}

static void test_conformance_cases(void **state)
{
	char path[1024], why[300];
	struct json_object *root, *cases;
	size_t n, pass = 0;

	(void)state;
	snprintf(path, sizeof(path), "%s/conformance/cel-cases.json", shared_dir());
	root = json_object_from_file(path);
	assert_non_null(root);
	cases = json_object_object_get(root, "cases");
	n = json_object_array_length(cases);
	assert_true(n > 0);
	for (size_t i = 0; i < n; i++) {
		struct json_object *cs = json_object_array_get_idx(cases, i);

		if (run_case(cs, why, sizeof(why)))
			pass++;
		else
			printf("  FAIL %s/%s/%s: %s\n",
			       json_object_get_string(json_object_object_get(cs, "file")),
			       json_object_get_string(
				       json_object_object_get(cs, "section")),
			       json_object_get_string(json_object_object_get(cs, "name")),
			       why);
	}
	printf("cel conformance: %zu/%zu passed (%.1f %%)\n", pass, n, 100.0 * pass / n);
	json_object_put(root);
	assert_true(pass * 100 >= n * 95);
}

/* ---- helpers for the behaviour tests ---- */

struct fixture {
	struct expr_env *env;
	struct arena arena;
};

/* Compiles and evaluates src with no variables; returns the CEL literal text or
 * "error: ..." in out. */
static enum nerr eval_text(const char *src, char *out, size_t outlen)
{
	struct expr_env *env = expr_env_new();
	struct expr_program *prog = NULL;
	struct expr_value v;
	struct nerr_msg msg;
	struct arena a;
	enum nerr rc;

	arena_init(&a, 0);
	rc = expr_compile(src, env, &prog, &msg);
	if (rc == NERR_OK)
		rc = expr_eval(prog, NULL, 0, &a, &v, &msg);
	if (rc == NERR_OK) {
		struct buf b;

		buf_init(&b, 0);
		expr_value_format(&v, &b);
		snprintf(out, outlen, "%s", buf_str(&b));
		buf_fini(&b);
	} else {
		snprintf(out, outlen, "error: %s", msg.message);
	}
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
	return rc;
}

static void check(const char *src, enum nerr want_rc, const char *want)
{
	char got[512];
	enum nerr rc = eval_text(src, got, sizeof(got));

	if (rc != want_rc || strcmp(got, want) != 0) {
		print_error("%s => [%s] rc=%d, want [%s] rc=%d\n", src, got, rc, want,
			    want_rc);
		fail();
	}
}

static void test_literals_print_as_cel(void **state)
{
	(void)state;
	check("1", NERR_OK, "1");
	check("1u", NERR_OK, "1u");
	check("1.0", NERR_OK, "1.0");
	check("2.5e20", NERR_OK, "2.5e+20");
	check("-0.0", NERR_OK, "-0.0");
	check("1.0/0.0", NERR_OK, "double(\"+Infinity\")");
	check("-1.0/0.0", NERR_OK, "double(\"-Infinity\")");
	check("0.0/0.0", NERR_OK, "double(\"NaN\")");
	check("'a\"b\\n'", NERR_OK, "\"a\\\"b\\n\"");
	check("b'\\x00\\xff'", NERR_OK, "b\"\\x00\\xff\"");
	check("[1, 'x', null, true]", NERR_OK, "[1, \"x\", null, true]");
	check("{'a': 1}", NERR_OK, "{\"a\": 1}");
	check("timestamp('2026-01-02T03:04:05.120Z')", NERR_OK,
	      "timestamp(\"2026-01-02T03:04:05.12Z\")");
	check("duration('1h1.5s')", NERR_OK, "duration(\"3601.5s\")");
	check("0x10 + 0x10u == 32", NERR_EVAL, "error: no such overload: _+_(int, uint)");
	check("r'\\n' + '''x\ny'''", NERR_OK, "\"\\\\nx\\ny\"");
}

static void test_int_overflow_is_an_error(void **state)
{
	(void)state;
	check("9223372036854775807 + 1", NERR_EVAL, "error: integer overflow");
	check("-9223372036854775808 - 1", NERR_EVAL, "error: integer overflow");
	check("-9223372036854775808 / -1", NERR_EVAL, "error: integer overflow");
	check("4611686018427387904 * 2", NERR_EVAL, "error: integer overflow");
	check("0u - 1u", NERR_EVAL, "error: integer overflow");
	check("1 / 0", NERR_EVAL, "error: division by zero");
	check("1 % 0", NERR_EVAL, "error: modulus by zero");
	check("-9223372036854775808", NERR_OK, "-9223372036854775808");
}

static void test_errors_absorbed_by_and_or(void **state)
{
	(void)state;
	check("1/0 == 1 || true", NERR_OK, "true");
	check("true || 1/0 == 1", NERR_OK, "true");
	check("1/0 == 1 && false", NERR_OK, "false");
	check("false && 1/0 == 1", NERR_OK, "false");
	check("1/0 == 1 && true", NERR_EVAL, "error: division by zero");
	check("[1, 0].exists(x, 1 / x == 1)", NERR_OK, "true");
	check("[0, 1].all(x, 1 / x == 2)", NERR_OK, "false");
	check("{'a': 1}.b", NERR_EVAL, "error: no such key: b");
	check("[1][5]", NERR_EVAL, "error: index out of bounds: 5");
}

static void test_heterogeneous_numbers(void **state)
{
	(void)state;
	check("1 == 1.0 && 1u == 1 && 2.5 > 2 && 3u < 3.5 && -1 < 0u", NERR_OK, "true");
	check("1 in [1.0] && 1.0 in {1u: 'x'}", NERR_OK, "true");
	check("{1: 'a'}[1u]", NERR_OK, "\"a\"");
	check("'a' < 1", NERR_EVAL, "error: no such overload: _<_(string, int)");
}

static void test_strings_count_code_points(void **state)
{
	(void)state;
	check("size('héllo') == 5 && 'héllo'.charAt(1) == 'é'", NERR_OK, "true");
	check("'ta©o©αT'.indexOf('α') == 5 && 'ta©o©αT'.substring(2, 5) == '©o©'",
	      NERR_OK, "true");
	check("'a,b,,c'.split(',')", NERR_OK, "[\"a\", \"b\", \"\", \"c\"]");
	check("['a', 'b'].join('-') + ' X '.trim().lowerAscii()", NERR_OK, "\"a-bx\"");
}

static void test_format_clauses(void **state)
{
	(void)state;
	check("'%s|%d|%.2f|%e|%b|%o|%x|%X|%%'.format(['a', -3, 2.345, 1500.0, 5, 8, 255, "
	      "'hi'])",
	      NERR_OK, "\"a|-3|2.35|1.500000e+03|101|10|ff|6869|%\"");
	/* maps print with sorted keys, infinities spelled out */
	check("'%s'.format([{'b': 1, 'a': [1.0 / 0.0, 2.5]}])", NERR_OK,
	      "\"{a: [Infinity, 2.5], b: 1}\"");
	check("'%d'.format(['x'])", NERR_EVAL,
	      "error: error during formatting: decimal clause can only be used on "
	      "integers, was "
	      "given string");
	check("'%d %d'.format([1])", NERR_EVAL, "error: index 1 out of range");
	check("'%q'.format([1])", NERR_EVAL,
	      "error: could not parse formatting clause: unrecognized formatting clause "
	      "\"q\"");
}

static void test_timestamps_and_zones(void **state)
{
	(void)state;
	check("timestamp('2026-03-29T00:30:00Z').getHours('Europe/Paris')", NERR_OK, "1");
	check("timestamp('2026-03-29T01:30:00Z').getHours('Europe/Paris')", NERR_OK, "3");
	check("timestamp('2026-01-01T00:00:00Z').getDayOfWeek()", NERR_OK, "4");
	check("timestamp('2026-01-01T00:00:00Z') - duration('24h')", NERR_OK,
	      "timestamp(\"2025-12-31T00:00:00Z\")");
	check("timestamp('0001-01-01T00:00:00Z').getFullYear()", NERR_OK, "1");
	check("timestamp('2026-01-01T00:00:00Z').getHours('Mars/Olympus')", NERR_EVAL,
	      "error: unknown time zone 'Mars/Olympus'");
	check("timestamp('10000-01-01T00:00:00Z')", NERR_EVAL,
	      "error: timestamp conversion error: '10000-01-01T00:00:00Z' (want RFC 3339 "
	      "in "
	      "range)");
}

static void test_parse_error_names_line_and_column(void **state)
{
	char got[512];

	(void)state;
	assert_int_equal(eval_text("1 +\n  (2 * )", got, sizeof(got)), NERR_PARSE);
	assert_string_equal(got, "error: line 2, column 8: unexpected ')'");
	assert_int_equal(eval_text("'abc", got, sizeof(got)), NERR_PARSE);
	assert_string_equal(got, "error: line 1, column 1: unterminated string literal");
	assert_int_equal(eval_text("99999999999999999999", got, sizeof(got)), NERR_PARSE);
	assert_int_equal(eval_text("a.all(x.y, true)", got, sizeof(got)), NERR_PARSE);
	assert_int_equal(eval_text("'é' + ?", got, sizeof(got)), NERR_PARSE);
	assert_string_equal(got, "error: line 1, column 7: unexpected '?'");
}

static void test_limits_bound_nesting_and_size(void **state)
{
	char *src = malloc(EXPR_MAX_SOURCE_BYTES + 2);
	char got[512];
	size_t n = 0;

	(void)state;
	for (int i = 0; i < EXPR_MAX_DEPTH + 5; i++)
		src[n++] = '(';
	src[n++] = '1';
	for (int i = 0; i < EXPR_MAX_DEPTH + 5; i++)
		src[n++] = ')';
	src[n] = '\0';
	assert_int_equal(eval_text(src, got, sizeof(got)), NERR_LIMIT);
	memset(src, ' ', EXPR_MAX_SOURCE_BYTES + 1);
	src[EXPR_MAX_SOURCE_BYTES + 1] = '\0';
	src[0] = '1';
	assert_int_equal(eval_text(src, got, sizeof(got)), NERR_TOOBIG);
	/* a long && chain is fine: it is built balanced */
	n = 0;
	for (int i = 0; i < 1000; i++)
		n += (size_t)sprintf(src + n, "true && ");
	sprintf(src + n, "false");
	assert_int_equal(eval_text(src, got, sizeof(got)), NERR_OK);
	assert_string_equal(got, "false");
	free(src);
	/* a long subject that overflows the JIT stack still matches (interpreter) */
	n = 0;
	src = malloc(8000);
	src[n++] = '\'';
	for (int i = 0; i < 3000; i++)
		src[n++] = i % 2 ? 'b' : 'a';
	sprintf(src + n, "'.matches('^(a|b)*$')");
	assert_int_equal(eval_text(src, got, sizeof(got)), NERR_OK);
	assert_string_equal(got, "true");
	free(src);
	/* pathological regex hits the match limit instead of hanging */
	assert_int_equal(eval_text("'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches("
				   "'^(a|aa|a?)+$' + '')",
				   got, sizeof(got)),
			 NERR_EVAL);
}

static const char *event_json =
	"{\"name\":\"checkout\",\"properties\":{\"price\":79.9,\"n\":3,\"tags\":[\"a\","
	"\"b\"],"
	"\"items\":[{\"sku\":\"A\",\"qty\":1},{\"sku\":\"X1\",\"qty\":2}]}}";

static void test_json_variables_and_no_heap(void **state)
{
	struct json_object *ev = json_tokener_parse(event_json);
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value vars[1], out;
	struct nerr_msg msg;
	struct arena a;
	size_t slot;

	(void)state;
	arena_init(&a, 0);
	assert_int_equal(expr_env_add_var(env, "event", &slot), NERR_OK);
	assert_int_equal(slot, 0);
	assert_int_equal(expr_env_add_var(env, "event", NULL), NERR_EXISTS);
	vars[0] = expr_value_from_json(ev);
	assert_int_equal(
		expr_compile(
			"event.properties.price > 50.0 && event.properties.n == 3 "
			"&& 'b' in event.properties.tags && "
			"event.properties.items.exists(i, i.sku == 'X1' && i.qty > 1)",
			env, &prog, &msg),
		NERR_OK);
	assert_int_equal(expr_eval(prog, vars, 1, &a, &out, &msg), NERR_OK);
	assert_true(expr_value_is_true(&out));
	/* the common path allocates nothing, not even from the scratch arena */
	assert_int_equal(a.used_bytes, 0);
	expr_program_free(prog);
	assert_int_equal(expr_compile("event.properties.tags + ['c']", env, &prog, &msg),
			 NERR_OK);
	assert_int_equal(expr_eval(prog, vars, 1, &a, &out, &msg), NERR_OK);
	struct json_object *j = expr_value_to_json(&out);

	assert_string_equal(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
			    "[\"a\",\"b\",\"c\"]");
	json_object_put(j);
	expr_program_free(prog);
	expr_env_free(env);
	json_object_put(ev);
	arena_fini(&a);
}

static void test_values_convert_to_json(void **state)
{
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value out;
	struct nerr_msg msg;
	struct arena a;
	struct json_object *j;

	(void)state;
	arena_init(&a, 0);
	assert_int_equal(
		expr_compile("{'a': 1, 'b': [1u, 2.5, 'x', b'\\x01', null, true, "
			     "timestamp('2020-01-01T00:00:00Z'), duration('1.5s'), "
			     "0.0 / 0.0], 3: {}}",
			     env, &prog, &msg),
		NERR_OK);
	assert_int_equal(expr_eval(prog, NULL, 0, &a, &out, &msg), NERR_OK);
	j = expr_value_to_json(&out);
	assert_string_equal(
		json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
		"{\"a\":1,\"b\":[1,2.5,\"x\",[1],null,true,\"2020-01-01T00:00:00Z\","
		"\"1.5s\",\"NaN\"],\"3\":{}}");
	json_object_put(j);
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
}

static struct expr_value consent_fn(const struct expr_call *call,
				    const struct expr_value *args, size_t nargs)
{
	/* the granted channel comes per evaluation when given, else per registration */
	const char *granted = call->eval_data ? call->eval_data : call->userdata;

	if (nargs != 1 || args[0].kind != EXPR_STRING)
		return expr_value_error(call, "consent() wants a channel name");
	return expr_value_bool(args[0].len == strlen(granted) &&
			       memcmp(args[0].as.s, granted, args[0].len) == 0);
}

static void test_registered_function(void **state)
{
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value out;
	struct nerr_msg msg;
	struct arena a;

	(void)state;
	arena_init(&a, 0);
	assert_int_equal(expr_env_add_function(env, "consent", 1, consent_fn, "email"),
			 NERR_OK);
	assert_int_equal(
		expr_compile("consent('email') && !consent('sms')", env, &prog, &msg),
		NERR_OK);
	assert_int_equal(expr_eval(prog, NULL, 0, &a, &out, &msg), NERR_OK);
	assert_true(expr_value_is_true(&out));
	expr_program_free(prog);
	assert_int_equal(expr_compile("consent(1)", env, &prog, &msg), NERR_OK);
	assert_int_equal(expr_eval(prog, NULL, 0, &a, &out, &msg), NERR_EVAL);
	assert_string_equal(msg.message, "consent() wants a channel name");
	expr_program_free(prog);
	assert_int_equal(expr_compile("consent('sms')", env, &prog, &msg), NERR_OK);
	assert_int_equal(expr_eval(prog, NULL, 0, &a, &out, &msg), NERR_OK);
	assert_false(expr_value_is_true(&out));
	assert_int_equal(expr_eval_with(prog, NULL, 0, "sms", &a, &out, &msg), NERR_OK);
	assert_true(expr_value_is_true(&out));
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
}

static void test_repeated_paths_evaluate_consistently(void **state)
{
	struct json_object *ev = json_tokener_parse(event_json);
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value vars[1], out;
	struct nerr_msg msg;
	struct arena a;

	(void)state;
	arena_init(&a, 0);
	expr_env_add_var(env, "event", NULL);
	vars[0] = expr_value_from_json(ev);
	/* event.properties and event.properties.nope occur several times: the
	 * first occurrence computes them (value or error) for all the others */
	assert_int_equal(
		expr_compile(
			"(event.properties.nope == 1 || true) && "
			"!has(event.properties.nope) && event.properties.n + "
			"event.properties.n == 6 && event.properties.items.exists(i, "
			"i.qty == event.properties.n - 1) && "
			"[event.properties.nope].size() == 1",
			env, &prog, &msg),
		NERR_OK);
	assert_int_equal(expr_eval(prog, vars, 1, &a, &out, &msg), NERR_EVAL);
	assert_string_equal(msg.message, "no such key: nope");
	expr_program_free(prog);
	expr_env_free(env);
	json_object_put(ev);
	arena_fini(&a);
}

static void test_dotted_variable_names(void **state)
{
	struct json_object *ab = json_tokener_parse("{\"c\": \"oops\", \"d\": 1}");
	struct json_object *abc = json_tokener_parse("\"yeah\"");
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value vars[2], out;
	struct nerr_msg msg;
	struct arena a;

	(void)state;
	arena_init(&a, 0);
	assert_int_equal(expr_env_add_var(env, "a.b", NULL), NERR_OK);
	assert_int_equal(expr_env_add_var(env, "a.b.c", NULL), NERR_OK);
	vars[0] = expr_value_from_json(ab);
	vars[1] = expr_value_from_json(abc);
	/* the longest declared prefix wins */
	assert_int_equal(expr_compile("a.b.c == 'yeah' && a.b.d == 1 && has(a.b.d)", env,
				      &prog, &msg),
			 NERR_OK);
	assert_int_equal(expr_eval(prog, vars, 2, &a, &out, &msg), NERR_OK);
	assert_true(expr_value_is_true(&out));
	expr_program_free(prog);
	expr_env_free(env);
	json_object_put(ab);
	json_object_put(abc);
	arena_fini(&a);
}

struct thread_arg {
	const struct expr_program *prog;
	const struct expr_value *vars;
	int trues;
};

static void *thread_main(void *p)
{
	struct thread_arg *t = p;
	struct arena a;
	struct expr_value out;

	arena_init(&a, 0);
	for (int i = 0; i < 2000; i++) {
		if (expr_eval(t->prog, t->vars, 1, &a, &out, NULL) == NERR_OK &&
		    expr_value_is_true(&out))
			t->trues++;
		arena_reset(&a);
	}
	arena_fini(&a);
	return NULL;
}

static void test_one_program_many_threads(void **state)
{
	struct json_object *ev = json_tokener_parse(event_json);
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value vars[1];
	struct nerr_msg msg;
	pthread_t th[4];
	struct thread_arg args[4];

	(void)state;
	expr_env_add_var(env, "event", NULL);
	vars[0] = expr_value_from_json(ev);
	assert_int_equal(
		expr_compile(
			"event.name.matches('^check') && "
			"event.properties.items.map(i, i.sku).join(',') == 'A,X1' && "
			"timestamp('2026-03-29T01:30:00Z').getHours('Europe/Paris') == 3",
			env, &prog, &msg),
		NERR_OK);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){prog, vars, 0};
		pthread_create(&th[i], NULL, thread_main, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].trues, 2000);
	}
	expr_program_free(prog);
	expr_env_free(env);
	json_object_put(ev);
}

static void test_scratch_limit_stops_growth(void **state)
{
	struct expr_env *env = expr_env_new();
	struct expr_program *prog;
	struct expr_value out;
	struct nerr_msg msg;
	struct arena a;

	(void)state;
	arena_init(&a, 0);
	a.limit_bytes = 1 << 13;
	assert_int_equal(
		expr_compile("[1,2,3,4,5,6,7,8,9,10].map(x, [1,2,3,4,5,6,7,8,9,10]"
			     ".map(y, [1,2,3,4,5,6,7,8,9,10].map(z, 'abc' + 'def')))",
			     env, &prog, &msg),
		NERR_OK);
	assert_int_equal(expr_eval(prog, NULL, 0, &a, &out, &msg), NERR_EVAL);
	assert_string_equal(msg.message, "evaluation memory limit exceeded");
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
}

static void test_step_budget_stops_work(void **state)
{
	char list[1200], src[4000];
	size_t n = 0;

	(void)state;
	n += (size_t)sprintf(list + n, "[");
	for (int i = 0; i < 200; i++)
		n += (size_t)sprintf(list + n, "%s%d", i ? "," : "", i);
	sprintf(list + n, "]");
	/* 200^3 = 8M iterations, far past the 1M step budget */
	snprintf(src, sizeof(src), "%s.exists(a, %s.exists(b, %s.exists(c, false)))",
		 list, list, list);
	check(src, NERR_EVAL, "error: evaluation step limit exceeded");
	/* the budget is not something || can absorb */
	snprintf(src, sizeof(src),
		 "%s.exists(a, %s.exists(b, %s.exists(c, false))) || true", list, list,
		 list);
	check(src, NERR_EVAL, "error: evaluation step limit exceeded");
}

/* ---- index analysis (expr_index_condition) ---- */

enum { IX_EVENT, IX_PROFILE, IX_JOURNEY, IX_NOW, IX_NVARS };

static struct expr_value ix_identity(const struct expr_call *call,
				     const struct expr_value *args, size_t nargs)
{
	(void)call;
	(void)nargs;
	return args[0];
}

/* The journey variables in their slot order, and a registered function f(x). */
static struct expr_env *ix_env(void)
{
	struct expr_env *env = expr_env_new();

	assert_int_equal(expr_env_add_var(env, "event", NULL), NERR_OK);
	assert_int_equal(expr_env_add_var(env, "profile", NULL), NERR_OK);
	assert_int_equal(expr_env_add_var(env, "journey", NULL), NERR_OK);
	assert_int_equal(expr_env_add_var(env, "now", NULL), NERR_OK);
	assert_int_equal(expr_env_add_function(env, "f", 1, ix_identity, NULL), NERR_OK);
	return env;
}

/*
 * Compiles src and runs the analysis for profile.traits.T with event and now
 * allowed. Returns whether it found a test; T is copied into trait. With prog_out
 * set, the program and the value program are handed to the caller.
 */
static bool ix_find(struct expr_env *env, const char *src, char *trait, size_t size,
		    struct expr_program **prog_out, struct expr_program **value_out)
{
	static const char *const fields[] = {"traits"};
	static const size_t allowed[] = {IX_EVENT, IX_NOW};
	struct expr_program *prog = NULL, *value = NULL;
	const char *t = NULL;
	struct nerr_msg msg;
	bool found;

	if (expr_compile(src, env, &prog, &msg) != NERR_OK)
		fail_msg("%s: %s", src, msg.message);
	found = expr_index_condition(prog, IX_PROFILE, fields, 1, allowed, 2, &t, &value);
	if (found) {
		assert_non_null(t);
		assert_non_null(value);
		snprintf(trait, size, "%s", t);
	} else {
		assert_null(t);
		assert_null(value);
	}
	if (prog_out) {
		*prog_out = prog;
		*value_out = value;
	} else {
		expr_program_free(value);
		expr_program_free(prog);
	}
	return found;
}

static void expect_indexed(struct expr_env *env, const char *src, const char *want)
{
	char trait[128];

	if (!ix_find(env, src, trait, sizeof(trait), NULL, NULL))
		fail_msg("not indexed: %s", src);
	assert_string_equal(trait, want);
}

static void expect_not_indexed(struct expr_env *env, const char *src)
{
	char trait[128];

	if (ix_find(env, src, trait, sizeof(trait), NULL, NULL))
		fail_msg("indexed on %s: %s", trait, src);
}

static void test_index_condition_recognises_membership_forms(void **state)
{
	struct expr_env *env = ix_env();

	(void)state;
	expect_indexed(env,
		       "profile.traits.wishlist.exists(x, x == event.properties.sku)",
		       "wishlist");
	expect_indexed(env,
		       "profile.traits.wishlist.exists(x, event.properties.sku == x)",
		       "wishlist");
	expect_indexed(env, "event.properties.sku in profile.traits.wishlist",
		       "wishlist");
	expect_indexed(env, "profile.traits.tier == event.properties.tier", "tier");
	expect_indexed(env, "event.properties.tier == profile.traits.tier", "tier");
	/* any operand of the top-level && chain, however it nests */
	expect_indexed(
		env,
		"has(event.properties.sku) && event.properties.price < 30.0 && "
		"event.properties.sku in profile.traits.wishlist && profile.traits.vip",
		"wishlist");
	expect_indexed(
		env,
		"(profile.traits.vip || event.properties.all) && (profile.traits.optin "
		"&& profile.traits.city == event.properties.city)",
		"city");
	expect_indexed(env,
		       "event.properties.sku in profile.traits.wishlist && "
		       "(profile.traits.vip || event.properties.all)",
		       "wishlist");
	/* an && chain as the body of exists() */
	expect_indexed(
		env,
		"profile.traits.items.exists(i, i.size() > 0 && (i == "
		"event.properties.sku && now > timestamp('2020-01-01T00:00:00Z')))",
		"items");
	/* E may use now, builtins, macros of its own and regexes */
	expect_indexed(
		env,
		"event.properties.skus.filter(s, s != '')[0] in profile.traits.wishlist",
		"wishlist");
	expect_indexed(env, "now.getFullYear() in profile.traits.years", "years");
	expect_indexed(
		env,
		"profile.traits.letters.exists(l, l == (event.properties.sku.matches("
		"'^X') ? 'x' : 'y'))",
		"letters");
	expr_env_free(env);
}

static void test_index_condition_refuses_what_is_not_necessary(void **state)
{
	struct expr_env *env = ix_env();

	(void)state;
	/* the form under ||, !, ?: or compared with something */
	expect_not_indexed(env,
			   "event.properties.sku in profile.traits.wishlist || false");
	expect_not_indexed(env, "has(event.properties.sku) && (event.properties.sku in "
				"profile.traits.wishlist || profile.traits.vip)");
	expect_not_indexed(env, "!(event.properties.sku in profile.traits.wishlist)");
	expect_not_indexed(env, "event.properties.any ? true : event.properties.sku in "
				"profile.traits.wishlist");
	expect_not_indexed(env,
			   "(event.properties.sku in profile.traits.wishlist) == false");
	expect_not_indexed(env, "profile.traits.tier != event.properties.tier");
	/* other macros and other bodies */
	expect_not_indexed(env,
			   "profile.traits.wishlist.all(x, x == event.properties.sku)");
	expect_not_indexed(
		env, "profile.traits.wishlist.exists_one(x, x == event.properties.sku)");
	expect_not_indexed(
		env, "profile.traits.wishlist.exists(x, x != event.properties.sku)");
	expect_not_indexed(
		env, "profile.traits.wishlist.exists(x, x == event.properties.sku || "
		     "true)");
	expect_not_indexed(
		env, "profile.traits.wishlist.exists(x, !(x == event.properties.sku))");
	expect_not_indexed(
		env, "profile.traits.prices.exists(k, v, v == event.properties.sku)");
	expect_not_indexed(env, "profile.traits.wishlist.map(x, x).exists(x, x == "
				"event.properties.sku)");
	/* E reading the comprehension variable, the profile, journey, a registered
	 * function or an undeclared name */
	expect_not_indexed(env, "profile.traits.wishlist.exists(x, x == x)");
	expect_not_indexed(env, "profile.traits.wishlist.exists(x, x == x + '')");
	expect_not_indexed(
		env, "profile.traits.wishlist.exists(x, x == profile.traits.favourite)");
	expect_not_indexed(env, "profile.traits.a in profile.traits.b");
	expect_not_indexed(env, "profile.traits.tier == profile.traits.tier");
	expect_not_indexed(env,
			   "journey.entry.properties.sku in profile.traits.wishlist");
	expect_not_indexed(env, "f(event.properties.sku) in profile.traits.wishlist");
	expect_not_indexed(env, "nope in profile.traits.wishlist");
	/* a comprehension variable of an enclosing macro is not E's own */
	expect_not_indexed(env,
			   "event.properties.skus.all(s, s in profile.traits.wishlist)");
	/* other paths */
	expect_not_indexed(env, "event.properties.sku in profile.wishlist");
	expect_not_indexed(env, "event.properties.sku in profile.traits.wishlist.items");
	expect_not_indexed(env, "event.properties.sku in event.traits.wishlist");
	expect_not_indexed(env, "event.properties.sku in profile.traits");
	expect_not_indexed(env, "event.properties.sku in [profile.traits.wishlist][0]");
	expect_not_indexed(env, "event.properties.sku == 'X1'");
	expr_env_free(env);
}

/*
 * Evaluates cond (and the value program E with the profile nulled) for one event
 * and profile; when cond is true, checks with CEL's own == and `in` that E equals
 * the trait or is an item (list) or key (map) of it. Returns whether cond held.
 */
static bool ix_check_one(const struct expr_program *prog,
			 const struct expr_program *value,
			 const struct expr_program *checker, const char *ev_json,
			 const char *pr_json, struct arena *a)
{
	struct json_object *ev = json_tokener_parse(ev_json);
	struct json_object *pr = json_tokener_parse(pr_json);
	struct json_object *traits = json_object_object_get(pr, "traits");
	struct expr_value vars[IX_NVARS] = {0}, out, cv[2];
	bool holds;

	vars[IX_EVENT] = expr_value_from_json(ev);
	vars[IX_PROFILE] = expr_value_from_json(pr);
	vars[IX_JOURNEY] = expr_value_from_json(NULL);
	vars[IX_NOW].kind = EXPR_TIMESTAMP;
	arena_reset(a);
	holds = expr_eval(prog, vars, IX_NVARS, a, &out, NULL) == NERR_OK &&
		expr_value_is_true(&out);
	if (holds) {
		vars[IX_PROFILE] = expr_value_from_json(NULL);
		assert_int_equal(expr_eval(value, vars, IX_NVARS, a, &cv[0], NULL),
				 NERR_OK);
		cv[1] = expr_value_from_json(json_object_object_get(traits, "t"));
		if (expr_eval(checker, cv, 2, a, &out, NULL) != NERR_OK ||
		    !expr_value_is_true(&out))
			fail_msg("true for %s / %s but E is not in t", ev_json, pr_json);
	}
	json_object_put(ev);
	json_object_put(pr);
	return holds;
}

/*
 * The guarantee itself: over a grid of events and profiles, whenever a condition
 * the analysis accepts is true, the value program's result is in the trait. Also
 * frees the value both before and after the program it borrows from.
 */
static void test_index_condition_is_a_necessary_condition(void **state)
{
	static const char *const conds[] = {
		"profile.traits.t.exists(x, x == event.properties.v)",
		"profile.traits.t.exists(x, event.properties.v == x && x != 'b')",
		"event.properties.v in profile.traits.t",
		"profile.traits.t == event.properties.v",
		"event.properties.v == profile.traits.t && profile.traits.t != null",
		"has(event.properties.v) && event.properties.v in profile.traits.t",
		"event.properties.w.map(s, s + 1)[0] in profile.traits.t",
	};
	static const char *const events[] = {
		"{\"properties\": {\"v\": \"a\", \"w\": [1]}}",
		"{\"properties\": {\"v\": \"b\", \"w\": [23]}}",
		"{\"properties\": {\"v\": 24.0, \"w\": [23.0]}}",
		"{\"properties\": {\"v\": 24, \"w\": [0]}}",
		"{\"properties\": {\"v\": [\"a\"], \"w\": []}}",
		"{\"properties\": {}}",
	};
	static const char *const profiles[] = {
		"{\"traits\": {\"t\": [\"a\", \"b\"]}}",
		"{\"traits\": {\"t\": [24, \"c\"]}}",
		"{\"traits\": {\"t\": {\"a\": 1, \"b\": 2}}}",
		"{\"traits\": {\"t\": \"a\"}}",
		"{\"traits\": {\"t\": 24}}",
		"{\"traits\": {\"t\": [\"a\"]}}",
		"{\"traits\": {\"t\": [[\"a\"]]}}",
		"{\"traits\": {\"t\": []}}",
		"{\"traits\": {}}",
	};
	struct expr_env *env = ix_env(), *cenv = expr_env_new();
	struct expr_program *checker;
	struct nerr_msg msg;
	struct arena a;
	unsigned trues = 0;

	(void)state;
	arena_init(&a, 0);
	assert_int_equal(expr_env_add_var(cenv, "e", NULL), NERR_OK);
	assert_int_equal(expr_env_add_var(cenv, "t", NULL), NERR_OK);
	assert_int_equal(expr_compile("e == t || (type(t) in [list, map] && e in t)",
				      cenv, &checker, &msg),
			 NERR_OK);
	for (size_t ci = 0; ci < sizeof(conds) / sizeof(conds[0]); ci++) {
		struct expr_program *prog, *value;
		char trait[64];

		assert_true(ix_find(env, conds[ci], trait, sizeof(trait), &prog, &value));
		assert_string_equal(trait, "t");
		for (size_t ei = 0; ei < sizeof(events) / sizeof(events[0]); ei++)
			for (size_t pi = 0; pi < sizeof(profiles) / sizeof(profiles[0]);
			     pi++)
				trues += ix_check_one(prog, value, checker, events[ei],
						      profiles[pi], &a);
		if (ci % 2) {
			expr_program_free(value);
			expr_program_free(prog);
		} else {
			expr_program_free(prog);
			expr_program_free(value);
		}
	}
	/* the grid exercises the guarantee, not only conditions that are false */
	assert_true(trues >= 30);
	expr_program_free(checker);
	expr_env_free(cenv);
	arena_fini(&a);
	expr_env_free(env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conformance_cases),
		cmocka_unit_test(test_literals_print_as_cel),
		cmocka_unit_test(test_int_overflow_is_an_error),
		cmocka_unit_test(test_errors_absorbed_by_and_or),
		cmocka_unit_test(test_heterogeneous_numbers),
		cmocka_unit_test(test_strings_count_code_points),
		cmocka_unit_test(test_format_clauses),
		cmocka_unit_test(test_timestamps_and_zones),
		cmocka_unit_test(test_parse_error_names_line_and_column),
		cmocka_unit_test(test_limits_bound_nesting_and_size),
		cmocka_unit_test(test_json_variables_and_no_heap),
		cmocka_unit_test(test_values_convert_to_json),
		cmocka_unit_test(test_registered_function),
		cmocka_unit_test(test_repeated_paths_evaluate_consistently),
		cmocka_unit_test(test_dotted_variable_names),
		cmocka_unit_test(test_one_program_many_threads),
		cmocka_unit_test(test_scratch_limit_stops_growth),
		cmocka_unit_test(test_step_budget_stops_work),
		cmocka_unit_test(test_index_condition_recognises_membership_forms),
		cmocka_unit_test(test_index_condition_refuses_what_is_not_necessary),
		cmocka_unit_test(test_index_condition_is_a_necessary_condition),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
