/*
 * cmd_render.c -- `nudge render`: preview a Liquid template against JSON data.
 *
 * Design: the exact engine the delivery path uses (src/tmpl), driven from the
 * shell. TEMPLATE_FILE is compiled (--strict, --html as the message's channel
 * would set them), rendered with the object read from --data FILE (or stdin for
 * "-"), and the output goes to stdout. Snippets for {% include 'x' %} and
 * {% render 'x' %} are read from --partials DIR: DIR/x.liquid when that file
 * exists, else DIR/x; names that could leave DIR ("..", absolute) are not found.
 * Exit status: 0 rendered; 1 render error; 2 compile error or bad usage/input.
 * Errors go to stderr as "FILE:LINE:COL: reason".
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "app/cmd.h"
#include "base/arena.h"
#include "base/buf.h"
#include "tmpl/tmpl.h"

#define RENDER_MAX_INPUT_BYTES (64u << 20)

static int read_stream(FILE *f, struct buf *b)
{
	char tmp[65536];
	size_t n;

	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (buf_append(b, tmp, n))
			return -1;
	return ferror(f) ? -1 : 0;
}

/* Reads path ("-" = stdin) into b; returns 0 or -1 with errno-ish reason printed. */
static int read_path(const char *path, struct buf *b)
{
	FILE *f;
	int rc;

	if (strcmp(path, "-") == 0)
		return read_stream(stdin, b);
	f = fopen(path, "rb");
	if (!f)
		return -1;
	rc = read_stream(f, b);
	fclose(f);
	return rc;
}

static enum nerr partial_from_dir(void *ud, const char *name, struct buf *src)
{
	const char *dir = ud;
	char path[4096];

	if (!dir || !*name || name[0] == '/' || strstr(name, ".."))
		return NERR_NOTFOUND;
	snprintf(path, sizeof(path), "%s/%s.liquid", dir, name);
	if (access(path, R_OK) != 0)
		snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (read_path(path, src))
		return errno == ENOENT ? NERR_NOTFOUND : NERR_IO;
	return NERR_OK;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: nudge render TEMPLATE_FILE [--data FILE|-] [--partials DIR] "
		"[--html] [--strict]\n");
}

static struct json_object *parse_data(const char *text, size_t len, const char *path)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *obj;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, text, (int)len);
	if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len ||
	    !json_object_is_type(obj, json_type_object)) {
		fprintf(stderr, "nudge render: %s: %s\n", path,
			obj && json_tokener_get_error(tok) == json_tokener_success
				? "data must be one JSON object"
				: json_tokener_error_desc(json_tokener_get_error(tok)));
		json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	return obj;
}

int cmd_render(int argc, char **argv)
{
	const char *file = NULL, *data_path = NULL, *partials = NULL;
	struct tmpl_options opt = {0};
	struct tmpl_render_options ro = {0};
	struct json_object *data = NULL;
	struct tmpl *t = NULL;
	struct nerr_msg msg;
	struct buf src, dbuf, out;
	struct arena scratch;
	enum nerr rc;
	int status = 2;

	buf_init(&src, RENDER_MAX_INPUT_BYTES);
	buf_init(&dbuf, RENDER_MAX_INPUT_BYTES);
	buf_init(&out, 0);
	arena_init(&scratch, 64 * 1024);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
			data_path = argv[++i];
		else if (strcmp(argv[i], "--partials") == 0 && i + 1 < argc)
			partials = argv[++i];
		else if (strcmp(argv[i], "--html") == 0)
			opt.html_escape = true;
		else if (strcmp(argv[i], "--strict") == 0)
			opt.strict = true;
		else if (argv[i][0] == '-' && argv[i][1]) {
			usage();
			goto out;
		} else if (!file)
			file = argv[i];
		else {
			usage();
			goto out;
		}
	}
	if (!file) {
		usage();
		goto out;
	}
	if (read_path(file, &src)) {
		fprintf(stderr, "nudge render: %s: %s\n", file,
			strerror(errno ? errno : EIO));
		goto out;
	}
	if (data_path) {
		if (read_path(data_path, &dbuf)) {
			fprintf(stderr, "nudge render: %s: %s\n", data_path,
				strerror(errno ? errno : EIO));
			goto out;
		}
		if (!(data = parse_data(buf_str(&dbuf), dbuf.len, data_path)))
			goto out;
	}
	nerr_clear(&msg);
	rc = tmpl_compile(buf_str(&src), src.len, &opt, &t, &msg);
	if (rc) {
		fprintf(stderr, "nudge render: %s:%s\n", file, msg.message);
		goto out;
	}
	ro.partial = partial_from_dir;
	ro.partial_userdata = (void *)partials;
	rc = tmpl_render(t, data, &ro, &scratch, &out, &msg);
	if (rc) {
		fprintf(stderr, "nudge render: %s:%s (%s)\n", file, msg.message,
			nerr_str(rc));
		status = 1;
		goto out;
	}
	if (fwrite(buf_str(&out), 1, out.len, stdout) != out.len || fflush(stdout)) {
		fprintf(stderr, "nudge render: writing output: %s\n", strerror(errno));
		status = 1;
		goto out;
	}
	status = 0;
out:
	tmpl_free(t);
	json_object_put(data);
	arena_fini(&scratch);
	buf_fini(&out);
	buf_fini(&dbuf);
	buf_fini(&src);
	return status;
}
