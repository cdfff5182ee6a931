/*
 * cmd_apply.c -- `nudge apply DIR`: upload a folder of templates and journeys to a
 * running server through the admin API, and publish the journeys.
 *
 * Design: journeys-as-code. A folder holds templates/ID.json (the document
 * `PUT /v1/templates/ID` takes: a JSON object with "channel") and journey
 * documents *.json (a JSON object with "steps"; the id is the document's "id").
 * Templates go first because journeys name them, then each journey is PUT as a
 * draft and published (--no-publish: PUT and validate only). Files are taken in
 * byte order of their names, so a run is repeatable; a journey id met a second
 * time is refused (it would silently replace the first). One file failing does not
 * stop the others: every file gets one line on stdout ("template X: ok (version
 * N)", "journey X: published version N", or "journey X: invalid" followed by one
 * indented line per error, formatted like `nudge journey validate`), then a
 * summary line.
 *
 * --dry-run contacts nobody: templates are checked with the server's own
 * template check, journeys compiled with the server's compiler (src/journey/def.c,
 * default limits) and their template references resolved against the folder's
 * valid templates. What it cannot see is what only the server knows (templates
 * already stored there, configured limits).
 *
 * Where to: --url, else $NUDGE_URL, else http://127.0.0.1:8080. The admin key:
 * --admin-key, else $NUDGE_ADMIN_KEY, else the admin_key= line of ./data/keys
 * (the file `nudge serve` writes on first start with the sample config).
 * Exit status: 0 when every file succeeded, 1 when any failed (or DIR holds
 * nothing to apply), 2 on bad usage (no DIR, DIR unreadable, no admin key).
 *
 * HTTP is libcurl's easy interface with one handle, so a run reuses one
 * keep-alive connection.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "app/cmd.h"
#include "base/buf.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "journey/def.h"
#include "journey/run.h"

/* Files are capped at the server's default body size; answers are small, the cap
 * only bounds a wrong peer. */
#define APPLY_FILE_MAX_BYTES	 (4u << 20)
#define APPLY_RESPONSE_MAX_BYTES (16u << 20)
#define APPLY_JSON_DEPTH	 64 /* what the admin API accepts */
#define APPLY_TIMEOUT_MS	 30000L
#define APPLY_CONNECT_TIMEOUT_MS 5000L
#define APPLY_DEFAULT_URL	 "http://127.0.0.1:8080"
#define APPLY_KEYS_FILE		 "data/keys"

/* A template found in DIR/templates, kept for the dry run's reference check. */
struct apply_template {
	char *id;      /* owned */
	char *channel; /* owned */
};

/* One run. Owned by cmd_apply(); everything in it is freed at its end. */
struct apply {
	const char *dir;
	char *url; /* base URL without a trailing slash; owned */
	char *key; /* admin key; owned; NULL in a dry run without one */
	bool publish;
	bool dry_run;
	CURL *curl;		    /* NULL in a dry run */
	struct curl_slist *headers; /* Authorization, Content-Type */
	struct apply_template *tmpls;
	unsigned ntmpls;
	char **journey_ids;   /* ids taken so far, owned; journey_files[i] names the
				 file that took journey_ids[i] */
	char **journey_files; /* owned */
	unsigned njourneys;
	struct expr_env *env; /* dry run: the journey compiler's CEL env */
	unsigned templates_ok, journeys_ok, failed, skipped;
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: nudge apply DIR [--url URL] [--admin-key KEY] [--no-publish] "
		"[--dry-run]\n"
		"  uploads DIR/templates/*.json, then every journey DIR/*.json, and "
		"publishes them\n"
		"  URL: $NUDGE_URL or " APPLY_DEFAULT_URL "; KEY: $NUDGE_ADMIN_KEY or "
		"admin_key= in ./" APPLY_KEYS_FILE "\n");
}

/* True for the ids the admin API accepts: 1 to 64 of [A-Za-z0-9_-]. */
static bool valid_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > JOURNEY_MAX_ID_BYTES)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	return true;
}

/* Reads path into b (capped at APPLY_FILE_MAX_BYTES); returns 0 or -1 with
 * errno set (EFBIG when too large). */
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
	if (rc == 0 && ferror(f))
		rc = -1;
	fclose(f);
	return rc;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Lists the regular files DIR/NAME.json (not hidden), sorted by name. Returns 0
 * with *names (owned array of owned strings, freed with free_names) and *n, or -1
 * with errno set when dir cannot be read.
 */
static int list_json(const char *dir, char ***names, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t cap = 0;

	*names = NULL;
	*n = 0;
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct buf path;
		struct stat st;
		bool regular;

		if (de->d_name[0] == '.' || len <= 5 ||
		    strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		buf_init(&path, 0);
		buf_printf(&path, "%s/%s", dir, de->d_name);
		regular = stat(buf_str(&path), &st) == 0 && S_ISREG(st.st_mode);
		buf_fini(&path);
		if (!regular)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*names = xrealloc(*names, cap * sizeof(**names));
		}
		(*names)[(*n)++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (*n)
		qsort(*names, *n, sizeof(**names), cmp_names);
	return 0;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * Parses text as exactly one JSON value. Returns it (caller puts), or NULL after
 * printing "PATH: bad JSON at line L, column C (byte B): REASON" with json-c's
 * position and reason.
 */
static struct json_object *parse_file_json(const char *path, const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(APPLY_JSON_DEPTH);
	struct json_object *obj;
	enum json_tokener_error jerr;
	const char *reason = NULL;
	size_t at, line = 1, col = 1;

	obj = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	at = json_tokener_get_parse_end(tok);
	if (jerr == json_tokener_continue) {
		reason = "unexpected end of file";
		at = len;
	} else if (jerr != json_tokener_success) {
		reason = json_tokener_error_desc(jerr);
	} else {
		while (at < len && isspace((unsigned char)text[at]))
			at++;
		if (at < len)
			reason = "unexpected data after the JSON value";
	}
	json_tokener_free(tok);
	if (!reason)
		return obj;
	json_object_put(obj);
	if (at > len)
		at = len;
	for (size_t i = 0; i < at; i++) {
		if (text[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	printf("%s: bad JSON at line %zu, column %zu (byte %zu): %s\n", path, line, col,
	       at, reason);
	return NULL;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* Prints "  FIELD: MESSAGE" for a {"code","field","message"} error object. */
static void print_api_error(struct json_object *err)
{
	const char *field = jstr(err, "field"), *message = jstr(err, "message");

	if (field && *field)
		printf("  %s: %s\n", field, message ? message : "(no message)");
	else
		printf("  %s\n", message ? message : "(no message)");
}

/* Prints one indented line per {"step","field","message"} of a journey error
 * array, formatted as journey_error_format() does. */
static void print_journey_errors(struct json_object *arr)
{
	size_t n = json_object_is_type(arr, json_type_array)
			   ? json_object_array_length(arr)
			   : 0;

	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(arr, i);
		struct journey_error je;
		const char *s;
		char line[700];

		memset(&je, 0, sizeof(je));
		if ((s = jstr(e, "step")))
			snprintf(je.step, sizeof(je.step), "%s", s);
		if ((s = jstr(e, "field")))
			snprintf(je.field, sizeof(je.field), "%s", s);
		snprintf(je.message, sizeof(je.message), "%s",
			 (s = jstr(e, "message")) ? s : "(no message)");
		journey_error_format(&je, line, sizeof(line));
		printf("  %s\n", line);
	}
}

/* ------------------------------------------------------------------ HTTP */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;

	/* A short count makes curl fail the transfer (CURLE_WRITE_ERROR). */
	return buf_append(b, data, size * nmemb) == NERR_OK ? size * nmemb : 0;
}

/*
 * Sends METHOD URL/path with body (NULL = empty). Returns true with the HTTP
 * status in *status and the parsed JSON answer in *resp (caller puts; NULL when
 * the answer is not JSON), or false after appending the transport error to why.
 */
static bool http_call(struct apply *ap, const char *method, const char *path,
		      const char *body, size_t len, long *status,
		      struct json_object **resp, struct buf *why)
{
	struct buf out, url;
	CURLcode cc;

	*status = 0;
	*resp = NULL;
	buf_init(&out, APPLY_RESPONSE_MAX_BYTES);
	buf_init(&url, 0);
	buf_printf(&url, "%s%s", ap->url, path);
	curl_easy_setopt(ap->curl, CURLOPT_URL, buf_str(&url));
	curl_easy_setopt(ap->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(ap->curl, CURLOPT_POSTFIELDS, body ? body : "");
	curl_easy_setopt(ap->curl, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)(body ? len : 0));
	curl_easy_setopt(ap->curl, CURLOPT_WRITEDATA, &out);
	cc = curl_easy_perform(ap->curl);
	if (cc == CURLE_OK) {
		curl_easy_getinfo(ap->curl, CURLINFO_RESPONSE_CODE, status);
		if (out.len)
			*resp = json_tokener_parse(buf_str(&out));
	} else {
		buf_printf(why, "%s %s: %s", method, buf_str(&url),
			   curl_easy_strerror(cc));
	}
	buf_fini(&url);
	buf_fini(&out);
	return cc == CURLE_OK;
}

static bool http_open(struct apply *ap)
{
	struct buf auth;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return false;
	ap->curl = curl_easy_init();
	if (!ap->curl)
		return false;
	buf_init(&auth, 0);
	buf_printf(&auth, "Authorization: Bearer %s", ap->key);
	ap->headers = curl_slist_append(ap->headers, buf_str(&auth));
	buf_fini(&auth);
	ap->headers = curl_slist_append(ap->headers, "Content-Type: application/json");
	ap->headers = curl_slist_append(ap->headers, "Expect:");
	curl_easy_setopt(ap->curl, CURLOPT_HTTPHEADER, ap->headers);
	curl_easy_setopt(ap->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(ap->curl, CURLOPT_TIMEOUT_MS, APPLY_TIMEOUT_MS);
	curl_easy_setopt(ap->curl, CURLOPT_CONNECTTIMEOUT_MS, APPLY_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(ap->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ap->curl, CURLOPT_USERAGENT, "nudge-apply");
	return true;
}

static void http_close(struct apply *ap)
{
	if (ap->curl) {
		curl_easy_cleanup(ap->curl);
		curl_slist_free_all(ap->headers);
		curl_global_cleanup();
	}
}

/*
 * Prints the reason of an unexpected answer after a "KIND ID: failed" prefix:
 * the API's error object when there is one, else the status alone.
 */
static void print_failure(const char *kind, const char *id, long status,
			  struct json_object *resp)
{
	struct json_object *err;

	printf("%s %s: failed (HTTP %ld)\n", kind, id, status);
	if (resp && json_object_object_get_ex(resp, "error", &err))
		print_api_error(err);
}

/* ------------------------------------------------------------- templates */

static bool template_in_dir(void *ud, const char *id, const char *channel)
{
	const struct apply *ap = ud;

	for (unsigned i = 0; i < ap->ntmpls; i++)
		if (strcmp(ap->tmpls[i].id, id) == 0 &&
		    strcmp(ap->tmpls[i].channel, channel) == 0)
			return true;
	return false;
}

/* Applies (or, in a dry run, checks) DIR/templates/NAME; returns true on success. */
static bool apply_template(struct apply *ap, const char *tdir, const char *name)
{
	struct json_object *doc = NULL, *resp = NULL;
	struct nerr_msg msg = {"", ""};
	struct buf text, path, route, why;
	char *id = xstrndup(name, strlen(name) - 5);
	bool ok = false;
	long status;

	buf_init(&text, APPLY_FILE_MAX_BYTES);
	buf_init(&path, 0);
	buf_init(&route, 0);
	buf_init(&why, 0);
	buf_printf(&path, "%s/%s", tdir, name);
	if (!valid_id(id)) {
		printf("template %s: invalid\n  the file name (the template id) must be "
		       "1 "
		       "to 64 of [A-Za-z0-9_-] before .json\n",
		       id);
		goto out;
	}
	if (read_file(buf_str(&path), &text)) {
		printf("template %s: cannot read %s: %s\n", id, buf_str(&path),
		       strerror(errno));
		goto out;
	}
	doc = parse_file_json(buf_str(&path), buf_str(&text), text.len);
	if (!doc)
		goto out;
	if (!json_object_is_type(doc, json_type_object) || !jstr(doc, "channel")) {
		printf("template %s: invalid\n  channel: a template is a JSON object "
		       "with "
		       "a \"channel\" string\n",
		       id);
		goto out;
	}
	if (ap->dry_run) {
		/* The server drops "id" and "version" before its check. */
		json_object_object_del(doc, "id");
		json_object_object_del(doc, "version");
		if (journey_template_check(doc, &msg) != NERR_OK) {
			printf("template %s: invalid\n", id);
			if (msg.field[0])
				printf("  %s: %s\n", msg.field, msg.message);
			else
				printf("  %s\n", msg.message);
			goto out;
		}
		ap->tmpls = xrealloc(ap->tmpls, (ap->ntmpls + 1) * sizeof(*ap->tmpls));
		ap->tmpls[ap->ntmpls].id = xstrdup(id);
		ap->tmpls[ap->ntmpls].channel = xstrdup(jstr(doc, "channel"));
		ap->ntmpls++;
		printf("template %s: valid (%s)\n", id, jstr(doc, "channel"));
		ok = true;
		goto out;
	}

	buf_printf(&route, "/v1/templates/%s", id);
	if (!http_call(ap, "PUT", buf_str(&route), buf_str(&text), text.len, &status,
		       &resp, &why)) {
		printf("template %s: failed: %s\n", id, buf_str(&why));
		goto out;
	}
	if (status == 200) {
		printf("template %s: ok (version %lld)\n", id,
		       (long long)jint(resp, "version"));
		ok = true;
	} else if (status == 400) {
		struct json_object *err;

		printf("template %s: invalid\n", id);
		if (json_object_object_get_ex(resp, "error", &err))
			print_api_error(err);
	} else {
		print_failure("template", id, status, resp);
	}
out:
	json_object_put(resp);
	json_object_put(doc);
	buf_fini(&why);
	buf_fini(&route);
	buf_fini(&path);
	buf_fini(&text);
	free(id);
	return ok;
}

/* -------------------------------------------------------------- journeys */

/* Dry run: compiles the journey as the server would; returns true when valid. */
static bool check_journey(struct apply *ap, const char *id, const char *text, size_t len)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	char line[700];
	bool ok;

	if (!ap->env)
		ap->env = journey_env_new();
	ok = journey_def_compile(text, len, NULL, ap->env, template_in_dir, ap, &d,
				 &errs) == NERR_OK;
	if (ok) {
		printf("journey %s: valid (%u steps)\n", id, d->nsteps);
	} else {
		printf("journey %s: invalid\n", id);
		for (unsigned i = 0; i < errs.n; i++) {
			journey_error_format(&errs.items[i], line, sizeof(line));
			printf("  %s\n", line);
		}
	}
	journey_def_free(d);
	journey_errors_fini(&errs);
	return ok;
}

/* PUT, then publish (or validate with --no-publish); returns true on success. */
static bool upload_journey(struct apply *ap, const char *id, const char *text, size_t len)
{
	struct json_object *resp = NULL, *errs;
	struct buf route, why;
	bool ok = false;
	long status;

	buf_init(&route, 0);
	buf_init(&why, 0);
	buf_printf(&route, "/v1/journeys/%s", id);
	if (!http_call(ap, "PUT", buf_str(&route), text, len, &status, &resp, &why)) {
		printf("journey %s: failed: %s\n", id, buf_str(&why));
		goto out;
	}
	if (status == 400 && resp && json_object_object_get_ex(resp, "error", &errs)) {
		printf("journey %s: invalid\n", id);
		print_api_error(errs);
		goto out;
	}
	if (status != 200) {
		print_failure("journey", id, status, resp);
		goto out;
	}
	int64_t active = jint(resp, "version");
	json_object_put(resp);
	resp = NULL;

	buf_printf(&route, "/%s", ap->publish ? "publish" : "validate");
	if (!http_call(ap, "POST", buf_str(&route), NULL, 0, &status, &resp, &why)) {
		printf("journey %s: draft saved, but %s failed: %s\n", id,
		       ap->publish ? "publish" : "validate", buf_str(&why));
		goto out;
	}
	if (status == 422) {
		printf("journey %s: invalid\n", id);
		if (resp && json_object_object_get_ex(resp, "errors", &errs))
			print_journey_errors(errs);
		goto out;
	}
	if (status != 200) {
		print_failure("journey", id, status, resp);
		goto out;
	}
	if (ap->publish)
		printf("journey %s: published version %lld\n", id,
		       (long long)jint(resp, "version"));
	else if (active > 0)
		printf("journey %s: draft saved (valid; version %lld stays active)\n", id,
		       (long long)active);
	else
		printf("journey %s: draft saved (valid; not published)\n", id);
	ok = true;
out:
	json_object_put(resp);
	buf_fini(&why);
	buf_fini(&route);
	return ok;
}

/*
 * Applies (or checks) the journey DIR/NAME. Returns 1 on success, 0 on failure,
 * -1 when the file is JSON but not a journey (skipped).
 */
static int apply_journey(struct apply *ap, const char *name)
{
	struct json_object *doc = NULL, *steps;
	struct buf text, path;
	const char *id;
	int rc = 0;

	buf_init(&text, APPLY_FILE_MAX_BYTES);
	buf_init(&path, 0);
	buf_printf(&path, "%s/%s", ap->dir, name);
	if (read_file(buf_str(&path), &text)) {
		printf("%s: cannot read: %s\n", buf_str(&path), strerror(errno));
		goto out;
	}
	doc = parse_file_json(buf_str(&path), buf_str(&text), text.len);
	if (!doc)
		goto out;
	if (!json_object_is_type(doc, json_type_object) ||
	    !json_object_object_get_ex(doc, "steps", &steps)) {
		printf("%s: skipped (not a journey: no \"steps\")\n", buf_str(&path));
		rc = -1;
		goto out;
	}
	id = jstr(doc, "id");
	if (!id || !valid_id(id)) {
		printf("journey %s: invalid\n  id: %s\n", name,
		       id ? "a journey id is 1 to 64 of [A-Za-z0-9_-]"
			  : "the document needs an \"id\" string");
		goto out;
	}
	/* Two files with one id would silently publish one over the other. */
	for (unsigned i = 0; i < ap->njourneys; i++) {
		if (strcmp(ap->journey_ids[i], id) == 0) {
			printf("journey %s: invalid\n  id: %s already has this id; this "
			       "file (%s) was not applied\n",
			       id, ap->journey_files[i], name);
			goto out;
		}
	}
	ap->journey_ids =
		xrealloc(ap->journey_ids, (ap->njourneys + 1) * sizeof(*ap->journey_ids));
	ap->journey_files = xrealloc(ap->journey_files,
				     (ap->njourneys + 1) * sizeof(*ap->journey_files));
	ap->journey_ids[ap->njourneys] = xstrdup(id);
	ap->journey_files[ap->njourneys] = xstrdup(name);
	ap->njourneys++;
	if (ap->dry_run)
		rc = check_journey(ap, id, buf_str(&text), text.len);
	else
		rc = upload_journey(ap, id, buf_str(&text), text.len);
out:
	json_object_put(doc);
	buf_fini(&path);
	buf_fini(&text);
	return rc;
}

/* ------------------------------------------------------------------ setup */

/* Returns the admin_key= value of ./data/keys (owned), or NULL. */
static char *key_from_file(void)
{
	FILE *f = fopen(APPLY_KEYS_FILE, "r");
	char line[512], *key = NULL;

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "admin_key=", 10) == 0 && line[10]) {
			free(key);
			key = xstrdup(line + 10);
		}
	}
	fclose(f);
	return key;
}

static bool key_ok(const char *key)
{
	for (const char *p = key; *p; p++)
		if ((unsigned char)*p < 0x21 || *p == 0x7f)
			return false;
	return *key != '\0';
}

int cmd_apply(int argc, char **argv)
{
	struct apply ap = {.publish = true};
	const char *url = NULL, *key = NULL, *env;
	char **tnames = NULL, **jnames = NULL, *tdir = NULL;
	size_t ntnames = 0, njnames = 0;
	struct stat st;
	int status = 2;

	/* One line per file as it happens, also into a pipe or a CI log. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
			url = argv[++i];
		} else if (strcmp(argv[i], "--admin-key") == 0 && i + 1 < argc) {
			key = argv[++i];
		} else if (strcmp(argv[i], "--no-publish") == 0) {
			ap.publish = false;
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			ap.dry_run = true;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr,
				"nudge apply: unknown or incomplete option '%s'\n",
				argv[i]);
			usage(stderr);
			return 2;
		} else if (!ap.dir) {
			ap.dir = argv[i];
		} else {
			fprintf(stderr, "nudge apply: one DIR only ('%s' is extra)\n",
				argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!ap.dir) {
		fprintf(stderr, "nudge apply: missing DIR (the folder with the journey "
				"*.json files and templates/)\n");
		usage(stderr);
		return 2;
	}
	if (stat(ap.dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "nudge apply: %s: %s\n", ap.dir,
			stat(ap.dir, &st) != 0 ? strerror(errno) : "not a directory");
		return 2;
	}
	if (!url && (env = getenv("NUDGE_URL")) && *env)
		url = env;
	if (!url)
		url = APPLY_DEFAULT_URL;
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		fprintf(stderr,
			"nudge apply: --url must start with http:// or https:// "
			"(got '%s')\n",
			url);
		return 2;
	}
	ap.url = xstrdup(url);
	while (strlen(ap.url) > 8 && ap.url[strlen(ap.url) - 1] == '/')
		ap.url[strlen(ap.url) - 1] = '\0';
	if (!key && (env = getenv("NUDGE_ADMIN_KEY")) && *env)
		key = env;
	ap.key = key ? xstrdup(key) : key_from_file();
	if (!ap.dry_run && !ap.key) {
		fprintf(stderr, "nudge apply: no admin key: pass --admin-key KEY, set "
				"NUDGE_ADMIN_KEY, or run from the folder whose "
				"./" APPLY_KEYS_FILE " `nudge serve` wrote\n");
		goto out;
	}
	if (!ap.dry_run && !key_ok(ap.key)) {
		fprintf(stderr, "nudge apply: the admin key is empty or holds spaces or "
				"control characters\n");
		goto out;
	}

	tdir = xmalloc(strlen(ap.dir) + sizeof("/templates"));
	sprintf(tdir, "%s/templates", ap.dir);
	if (list_json(tdir, &tnames, &ntnames) && errno != ENOENT && errno != ENOTDIR) {
		fprintf(stderr, "nudge apply: %s: %s\n", tdir, strerror(errno));
		goto out;
	}
	if (list_json(ap.dir, &jnames, &njnames)) {
		fprintf(stderr, "nudge apply: %s: %s\n", ap.dir, strerror(errno));
		goto out;
	}
	if (ntnames == 0 && njnames == 0) {
		printf("nothing to apply: no %s/*.json and no journey %s/*.json\n", tdir,
		       ap.dir);
		status = 1;
		goto out;
	}
	if (!ap.dry_run && !http_open(&ap)) {
		fprintf(stderr, "nudge apply: cannot initialize libcurl\n");
		status = 1;
		goto out;
	}

	for (size_t i = 0; i < ntnames; i++) {
		if (apply_template(&ap, tdir, tnames[i]))
			ap.templates_ok++;
		else
			ap.failed++;
	}
	for (size_t i = 0; i < njnames; i++) {
		int r = apply_journey(&ap, jnames[i]);

		if (r > 0)
			ap.journeys_ok++;
		else if (r == 0)
			ap.failed++;
		else
			ap.skipped++;
	}
	printf("%s: %u template%s, %u journey%s %s, %u failed",
	       ap.dry_run ? "dry run" : "done", ap.templates_ok,
	       ap.templates_ok == 1 ? "" : "s", ap.journeys_ok,
	       ap.journeys_ok == 1 ? "" : "s",
	       ap.dry_run   ? "valid"
	       : ap.publish ? "published"
			    : "saved as drafts",
	       ap.failed);
	if (ap.skipped)
		printf(", %u skipped", ap.skipped);
	if (ap.dry_run)
		printf(" (nothing was sent)\n");
	else
		printf(" (%s)\n", ap.url);
	status = ap.failed ? 1 : 0;
out:
	http_close(&ap);
	free(tdir);
	free_names(tnames, ntnames);
	free_names(jnames, njnames);
	for (unsigned i = 0; i < ap.ntmpls; i++) {
		free(ap.tmpls[i].id);
		free(ap.tmpls[i].channel);
	}
	free(ap.tmpls);
	for (unsigned i = 0; i < ap.njourneys; i++) {
		free(ap.journey_ids[i]);
		free(ap.journey_files[i]);
	}
	free(ap.journey_ids);
	free(ap.journey_files);
	expr_env_free(ap.env);
	free(ap.key);
	free(ap.url);
	return status;
}
