/*
 * bench_expr.c -- compile time and evaluation speed of typical journey conditions.
 *
 * Inputs: ../shared/bench/cel-bench.json (four conditions and their bindings,
 * the same work the reference figures in ../shared/bench/README.md measured),
 * plus two more conditions journeys use (a timestamp comparison and an `in` list).
 * The typed bindings are turned into json-c objects first, because that is what
 * the engine hands expr_eval() (events and profiles arrive as JSON). Each
 * condition is compiled once, checked to evaluate to true, then evaluated in a
 * loop for about 0.3 s of CPU time with the scratch arena reset between
 * evaluations; the median of 5 such runs is printed as ns/eval and evals/s (per
 * core, thread CPU time, so other load on the machine does not inflate it). DESIGN.md
 * §12: a typical condition should take under 200 ns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "base/clock.h"
#include "expr/expr.h"

#ifndef SHARED_DIR
#define SHARED_DIR "../shared"
#endif

/* Typed value ({"int": "5"}, {"map": [[k, v]]}, ...) to a new json-c object. */
static struct json_object *typed_to_json(struct json_object *t)
{
	json_object_object_foreach(t, kind, val)
	{
		if (strcmp(kind, "int") == 0)
			return json_object_new_int64(
				strtoll(json_object_get_string(val), NULL, 10));
		if (strcmp(kind, "double") == 0)
			return json_object_new_double(json_object_get_double(val));
		if (strcmp(kind, "string") == 0)
			return json_object_new_string(json_object_get_string(val));
		if (strcmp(kind, "bool") == 0)
			return json_object_new_boolean(json_object_get_boolean(val));
		if (strcmp(kind, "null") == 0)
			return NULL;
		if (strcmp(kind, "list") == 0) {
			struct json_object *a = json_object_new_array();

			for (size_t i = 0; i < json_object_array_length(val); i++)
				json_object_array_add(
					a,
					typed_to_json(json_object_array_get_idx(val, i)));
			return a;
		}
		if (strcmp(kind, "map") == 0) {
			struct json_object *o = json_object_new_object();

			for (size_t i = 0; i < json_object_array_length(val); i++) {
				struct json_object *kv =
					json_object_array_get_idx(val, i);
				struct json_object *k = json_object_array_get_idx(kv, 0);

				json_object_object_add(
					o,
					json_object_get_string(
						json_object_object_get(k, "string")),
					typed_to_json(json_object_array_get_idx(kv, 1)));
			}
			return o;
		}
	}
	fprintf(stderr, "bench_expr: unsupported typed value\n");
	exit(1);
}

/* CPU time of this thread: the machine is shared, so wall time would count the
 * time other processes hold the core. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void bench_one(const char *name, const char *src, struct expr_env *env,
		      const struct expr_value *vars, size_t nvars)
{
	struct expr_program *prog = NULL;
	struct expr_value out;
	struct nerr_msg msg;
	struct arena a;
	double runs[5], compile_us;
	uint64_t t0;
	int ncompile = 0;
	const char *only = getenv("BENCH_ONLY");

	if (only && !strstr(name, only))
		return;
	t0 = cpu_ns();
	do {
		expr_program_free(prog);
		if (expr_compile(src, env, &prog, &msg) != NERR_OK) {
			fprintf(stderr, "bench_expr: %s: %s\n", name, msg.message);
			exit(1);
		}
		ncompile++;
	} while (cpu_ns() - t0 < 100000000ull);
	compile_us = (double)(cpu_ns() - t0) / ncompile / 1000.0;

	arena_init(&a, 0);
	if (expr_eval(prog, vars, nvars, &a, &out, &msg) != NERR_OK ||
	    !expr_value_is_true(&out)) {
		fprintf(stderr, "bench_expr: %s did not evaluate to true (%s)\n", name,
			msg.message);
		exit(1);
	}
	for (int r = 0; r < 5; r++) {
		uint64_t n = 0, start = cpu_ns(), el;

		do {
			for (int i = 0; i < 1000; i++) {
				expr_eval(prog, vars, nvars, &a, &out, NULL);
				arena_reset(&a);
			}
			n += 1000;
			el = cpu_ns() - start;
		} while (el < 60000000ull);
		runs[r] = (double)el / (double)n;
	}
	qsort(runs, 5, sizeof(runs[0]), cmp_double);
	printf("%-22s compile %7.2f us   eval %8.1f ns/eval  %12.0f evals/s\n", name,
	       compile_us, runs[2], 1e9 / runs[2]);
	arena_fini(&a);
	expr_program_free(prog);
}

int main(void)
{
	const char *dir = getenv("NUDGE_SHARED") ? getenv("NUDGE_SHARED") : SHARED_DIR;
	char path[1024];
	struct json_object *root, *bindings, *cases, *event, *profile;
	struct expr_env *env = expr_env_new();
	struct expr_value vars[2];

	snprintf(path, sizeof(path), "%s/bench/cel-bench.json", dir);
	root = json_object_from_file(path);
	if (!root) {
		fprintf(stderr, "bench_expr: cannot read %s\n", path);
		return 1;
	}
	bindings = json_object_object_get(root, "bindings");
	event = typed_to_json(json_object_object_get(bindings, "event"));
	profile = typed_to_json(json_object_object_get(bindings, "profile"));
	expr_env_add_var(env, "event", NULL);
	expr_env_add_var(env, "profile", NULL);
	vars[0] = expr_value_from_json(event);
	vars[1] = expr_value_from_json(profile);

	printf("CEL conditions (%s), median of 5 runs:\n", path);
	cases = json_object_object_get(root, "cases");
	for (size_t i = 0; i < json_object_array_length(cases); i++) {
		struct json_object *c = json_object_array_get_idx(cases, i);
		char name[64];

		snprintf(name, sizeof(name), "(%s) %s",
			 json_object_get_string(json_object_object_get(c, "id")),
			 json_object_get_string(json_object_object_get(c, "name")));
		bench_one(name, json_object_get_string(json_object_object_get(c, "expr")),
			  env, vars, 2);
	}
	bench_one("timestamp_after",
		  "timestamp(event.timestamp) > timestamp('2026-11-27T08:00:00Z')", env,
		  vars, 2);
	bench_one("quiet_hours_paris",
		  "timestamp(event.timestamp).getHours('Europe/Paris') >= 9", env, vars,
		  2);
	bench_one("name_in_list", "event.name in ['cart_viewed', 'checkout_started']",
		  env, vars, 2);
	json_object_put(event);
	json_object_put(profile);
	json_object_put(root);
	expr_env_free(env);
	return 0;
}
