/*
 * fuzz_expr.c -- libFuzzer target: compile and evaluate any CEL text.
 *
 * The input is the expression source (it may contain NUL bytes, which only string
 * literals accept). It is compiled against an environment with two json
 * variables, evaluated with a scratch arena capped at 4 MiB, and the result is
 * printed as a CEL literal and converted to json. Anything but a clean value or a
 * clean error (a crash, a leak, a sanitizer report, a hang past the step budget)
 * is a bug.
 */
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "expr/expr.h"

static const char *event_json =
	"{\"name\":\"checkout\",\"timestamp\":\"2026-11-27T08:15:00Z\",\"properties\":"
	"{\"price\":79.9,\"n\":3,\"tags\":[\"a\",\"b\"],\"items\":[{\"sku\":\"A\","
	"\"qty\":1},"
	"{\"sku\":\"X1\",\"qty\":2,\"none\":null,\"ok\":true}]}}";

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
			"{\"traits\":{\"country\":\"FR\",\"age\":41}}");
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
		}
	}
	expr_program_free(prog);
	expr_env_free(env);
	arena_fini(&a);
	return 0;
}
