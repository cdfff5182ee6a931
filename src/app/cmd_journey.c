/*
 * cmd_journey.c -- `nudge journey validate FILE [--templates DIR]`: check a journey
 * document offline.
 *
 * Design: the same compiler the server runs on PUT/validate/publish
 * (src/journey/def.c) with the default limits, driven from the shell. Templates
 * are not checked unless --templates DIR is given; then a message or webhook step
 * naming template ID of channel CH needs the file DIR/ID.json holding a JSON
 * object whose "channel" is CH (the document `PUT /v1/templates/ID` takes).
 * Output: "valid: N steps" on stdout and exit 0; otherwise one line per error on
 * stderr ("step X: FIELD: MESSAGE" or "FIELD: MESSAGE") and exit 1. Exit 2 on
 * bad usage or an unreadable file.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "app/cmd.h"
#include "base/buf.h"
#include "expr/expr.h"
#include "journey/def.h"

#define TEMPLATE_MAX_BYTES (4u << 20)

static int usage(void)
{
	fprintf(stderr, "usage: nudge journey validate FILE [--templates DIR]\n");
	return 2;
}

/* Reads path into b (capped); returns 0 or -1 with errno set. */
static int read_file(const char *path, struct buf *b)
{
	FILE *f = fopen(path, "rb");
	char tmp[65536];
	size_t n;
	int rc = 0;

	if (!f)
		return -1;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
		if (buf_append(b, tmp, n)) {
			errno = EFBIG;
			rc = -1;
			break;
		}
	}
	if (ferror(f))
		rc = -1;
	fclose(f);
	return rc;
}

/* template_exists callback: DIR/ID.json with a matching "channel". */
static bool template_in_dir(void *ud, const char *id, const char *channel)
{
	const char *dir = ud;
	struct json_object *root, *ch;
	char file[4096];
	struct buf b;
	bool ok = false;

	if (!*id || id[0] == '.' || strchr(id, '/'))
		return false;
	snprintf(file, sizeof(file), "%s/%s.json", dir, id);
	buf_init(&b, TEMPLATE_MAX_BYTES);
	if (read_file(file, &b) == 0 && (root = json_tokener_parse(buf_str(&b)))) {
		ok = json_object_object_get_ex(root, "channel", &ch) &&
		     json_object_is_type(ch, json_type_string) &&
		     strcmp(json_object_get_string(ch), channel) == 0;
		json_object_put(root);
	}
	buf_fini(&b);
	return ok;
}

static int validate(int argc, char **argv)
{
	const char *file = NULL, *templates = NULL;
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	struct journey_limits lim;
	struct expr_env *env = NULL;
	struct buf src;
	char line[700];
	int status = 2;

	buf_init(&src, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--templates") == 0 && i + 1 < argc && !templates)
			templates = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1])
			goto usage;
		else if (!file)
			file = argv[i];
		else
			goto usage;
	}
	if (!file)
		goto usage;
	journey_limits_default(&lim);
	src.cap_bytes = lim.max_def_bytes + 1;
	if (read_file(file, &src)) {
		if (errno == EFBIG)
			fprintf(stderr, "document: larger than the limit of %zu bytes\n",
				lim.max_def_bytes);
		else
			fprintf(stderr, "nudge journey: %s: %s\n", file, strerror(errno));
		status = errno == EFBIG ? 1 : 2;
		goto out;
	}
	env = journey_env_new();
	if (journey_def_compile(buf_str(&src), src.len, &lim, env,
				templates ? template_in_dir : NULL, (void *)templates, &d,
				&errs) == NERR_OK) {
		printf("valid: %u steps\n", d->nsteps);
		status = 0;
		goto out;
	}
	for (unsigned i = 0; i < errs.n; i++) {
		journey_error_format(&errs.items[i], line, sizeof(line));
		fprintf(stderr, "%s\n", line);
	}
	status = 1;
	goto out;
usage:
	status = usage();
out:
	journey_def_free(d);
	journey_errors_fini(&errs);
	expr_env_free(env);
	buf_fini(&src);
	return status;
}

int cmd_journey(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "validate") == 0)
		return validate(argc - 1, argv + 1);
	return usage();
}
