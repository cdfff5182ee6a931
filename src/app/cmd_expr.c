/*
 * cmd_expr.c -- `nudge expr [--vars FILE|-] EXPR`: evaluate one CEL expression.
 *
 * Design: the shell twin of what the journey engine does with a condition. The
 * top-level keys of the JSON object in FILE (or stdin with "-") become variables
 * (keys that are not CEL identifiers are skipped) and `now` is the current time
 * unless the file sets it; the result is printed as a CEL literal on stdout. Exit status:
 * 0 on a value, 1 on an evaluation error
 * ("error: MESSAGE" on stderr), 2 on a usage or parse error (the message names
 * line and column).
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "app/cmd.h"
#include "base/buf.h"
#include "base/clock.h"
#include "expr/expr.h"

#define VARS_MAX_BYTES	  (64u << 20)
#define SCRATCH_MAX_BYTES (256u << 20)

static int usage(void)
{
	fprintf(stderr, "usage: nudge expr [--vars FILE|-] EXPR\n");
	return 2;
}

/* Reads and parses the variables file; returns NULL after printing why. */
static struct json_object *load_vars(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	struct buf b;
	char chunk[65536];
	size_t n;
	struct json_object *root = NULL;
	enum json_tokener_error jerr;

	if (!f) {
		fprintf(stderr, "error: cannot open %s\n", path);
		return NULL;
	}
	buf_init(&b, VARS_MAX_BYTES);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(&b, chunk, n) != NERR_OK) {
			fprintf(stderr, "error: %s is larger than %u bytes\n", path,
				VARS_MAX_BYTES);
			goto out;
		}
	}
	root = json_tokener_parse_verbose(buf_str(&b), &jerr);
	if (!root) {
		fprintf(stderr, "error: %s: invalid JSON: %s\n", path,
			json_tokener_error_desc(jerr));
	} else if (!json_object_is_type(root, json_type_object)) {
		fprintf(stderr, "error: %s: variables must be a JSON object\n", path);
		json_object_put(root);
		root = NULL;
	}
out:
	buf_fini(&b);
	if (f != stdin)
		fclose(f);
	return root;
}

int cmd_expr(int argc, char **argv)
{
	const char *vars_path = NULL, *src = NULL;
	struct json_object *root = NULL;
	struct expr_env *env = expr_env_new();
	struct expr_program *prog = NULL;
	struct expr_value vals[EXPR_MAX_VARS], out;
	struct nerr_msg msg;
	struct arena scratch;
	struct buf text;
	size_t nvars = 0;
	int status = 2;

	arena_init(&scratch, 0);
	scratch.limit_bytes = SCRATCH_MAX_BYTES;
	buf_init(&text, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: nudge expr [--vars FILE|-] EXPR\n\nEvaluates the "
			       "CEL "
			       "expression EXPR with the top-level keys of the "
			       "JSON\nobject in FILE "
			       "(- for stdin) as variables and prints the value as "
			       "a\nCEL literal. "
			       "Exit status: 0 value, 1 evaluation error, 2 usage "
			       "or\nparse error. "
			       "See docs/expressions.md.\n");
			status = 0;
			goto out;
		}
		if (strcmp(argv[i], "--vars") == 0 && i + 1 < argc && !vars_path) {
			vars_path = argv[++i];
		} else if (strcmp(argv[i], "--") == 0 && i + 2 == argc && !src) {
			src = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1] && !src &&
			   strcmp(argv[i], "-") != 0 &&
			   !(argv[i][1] >= '0' && argv[i][1] <= '9')) {
			status = usage();
			goto out;
		} else if (!src) {
			src = argv[i];
		} else {
			status = usage();
			goto out;
		}
	}
	if (!src) {
		status = usage();
		goto out;
	}
	if (vars_path) {
		if (!(root = load_vars(vars_path)))
			goto out;
		json_object_object_foreach(root, key, val)
		{
			if (nvars < EXPR_MAX_VARS &&
			    expr_env_add_var(env, key, NULL) == NERR_OK)
				vals[nvars++] = expr_value_from_json(val);
		}
	}
	if (nvars < EXPR_MAX_VARS && expr_env_add_var(env, "now", NULL) == NERR_OK) {
		/* Journeys always have `now`; so does the shell, unless the file sets it.
		 */
		int64_t ms = clock_wall_ms();
		struct expr_value now = {.kind = EXPR_TIMESTAMP};

		now.as.sec = ms / 1000;
		now.nsec = (int32_t)(ms % 1000) * 1000000;
		vals[nvars++] = now;
	}
	if (expr_compile(src, env, &prog, &msg) != NERR_OK) {
		fprintf(stderr, "error: %s\n", msg.message);
		goto out;
	}
	if (expr_eval(prog, vals, nvars, &scratch, &out, &msg) != NERR_OK) {
		fprintf(stderr, "error: %s\n", msg.message);
		status = 1;
		goto out;
	}
	expr_value_format(&out, &text);
	printf("%s\n", buf_str(&text));
	status = 0;
out:
	buf_fini(&text);
	arena_fini(&scratch);
	expr_program_free(prog);
	expr_env_free(env);
	json_object_put(root);
	return status;
}
