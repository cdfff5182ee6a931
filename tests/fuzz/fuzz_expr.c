/*
 * fuzz_expr.c -- libFuzzer target: compile and evaluate any CEL text.
 *
 * The input is the expression source (it may contain NUL bytes, which only string
 * literals accept). It is compiled against an environment with two json
 * variables, evaluated with a scratch arena capped at 4 MiB, and the result is
 * printed as a CEL literal and converted to json. Anything but a clean value or a
 * clean error (a crash, a leak, a sanitizer report, a hang past the step budget)
 * is a bug. The index analysis runs on every program too, with its guarantee as
 * the oracle: when it finds profile.traits.T and the program is true, the value it
 * extracted must be equal to T or in it (checked by a second CEL program), else
 * the target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "expr/expr.h"

static const char *event_json =
	"{\"name\":\"checkout\",\"timestamp\":\"2026-11-27T08:15:00Z\",\"properties\":"
	"{\"price\":79.9,\"n\":3,\"tags\":[\"a\",\"b\"],\"items\":[{\"sku\":\"A\","
	"\"qty\":1},"
	"{\"sku\":\"X1\",\"qty\":2,\"none\":null,\"ok\":true}]}}";

/* Checks the guarantee of expr_index_condition() for a program that was true. */
static void check_index(const struct expr_program *prog, struct json_object *profile,
			struct expr_value *vars, struct arena *a)
{
	static const char *const fields[] = {"traits"};
	static const size_t allowed[] = {0};
	static struct expr_env *cenv;
	static struct expr_program *checker;
	struct expr_program *value = NULL;
	struct json_object *traits, *t = NULL;
	struct expr_value cv[2], out;
	const char *trait;
	struct nerr_msg msg;

	if (!expr_index_condition(prog, 1, fields, 1, allowed, 1, &trait, &value))
		return;
	if (!cenv) {
		cenv = expr_env_new();
		expr_env_add_var(cenv, "e", NULL);
		expr_env_add_var(cenv, "t", NULL);
		if (expr_compile("e == t || (type(t) in [list, map] && e in t)", cenv,
				 &checker, &msg) != NERR_OK)
			abort();
	}
	if (json_object_object_get_ex(profile, "traits", &traits))
		json_object_object_get_ex(traits, trait, &t);
	/* E sees the event only */
	cv[1] = vars[1];
	vars[1] = expr_value_from_json(NULL);
	if (expr_eval(value, vars, 2, a, &cv[0], &msg) != NERR_OK) {
		/* E's own step or memory budget may run out; nothing to check then */
		if (!strstr(msg.message, "limit exceeded"))
			abort();
	} else {
		cv[1] = expr_value_from_json(t);
		if (expr_eval(checker, cv, 2, a, &out, &msg) != NERR_OK ||
		    !expr_value_is_true(&out))
			abort();
	}
	expr_program_free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct json_object *event, *profile;
	struct expr_env *env = expr_env_new();
	struct expr_program *prog = NULL;
	struct expr_value vars[2], out;
	struct nerr_msg msg;
	struct arena a;

	if (!event) {
		event = json_tokener_parse(event_json);
		profile = json_tokener_parse(
			"{\"traits\":{\"country\":\"FR\",\"age\":41,"
			"\"wishlist\":[\"X1\",79.9,3],\"seen\":{\"A\":1}}}");
	}
	expr_env_add_var(env, "event", NULL);
	expr_env_add_var(env, "profile", NULL);
	vars[0] = expr_value_from_json(event);
	vars[1] = expr_value_from_json(profile);
	arena_init(&a, 0);
	a.limit_bytes = 4u << 20;
	if (expr_compile_n((const char *)data, size, env, &prog, &msg) == NERR_OK) {
		if (expr_eval(prog, vars, 2, &a, &out, &msg) == NERR_OK) {
			struct buf b;
			struct json_object *j;

			buf_init(&b, 1u << 20);
			expr_value_format(&out, &b);
			buf_fini(&b);
			j = expr_value_to_json(&out);
			json_object_put(j);
			if (expr_value_is_true(&out))
				check_index(prog, profile, vars, &a);
		}
	}
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
	return 0;
}
