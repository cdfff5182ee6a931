/*
 * cmd_report.c -- `nudge report journey ID` and `nudge report overview`: a
 * running server's reports as tables in the terminal (or its CSV / JSON).
 *
 * Design: a thin client of the reports API (docs/reporting.md): one GET
 * (`/v1/reports/journeys/ID[?version=N&from=&to=&bucket=]` or
 * `/v1/reports/overview`) with the admin key, then the JSON answer is laid out
 * as tables whose columns are as wide as their widest cell. --csv asks the server
 * for `Accept: text/csv` and prints the answer as is; --json prints the JSON as
 * is. Where to and the key are found as `nudge apply` finds them: --url, else
 * $NUDGE_URL, else http://127.0.0.1:8080; --admin-key, else $NUDGE_ADMIN_KEY,
 * else the admin_key= line of ./data/keys.
 * Exit status: 0 printed, 1 the server refused or could not be reached (the
 * reason on stderr), 2 bad usage.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "app/cmd.h"
#include "base/buf.h"
#include "base/mem.h"

#define REPORT_RESPONSE_MAX_BYTES (64u << 20)
#define REPORT_TIMEOUT_MS	  30000L
#define REPORT_CONNECT_TIMEOUT_MS 5000L
#define REPORT_DEFAULT_URL	  "http://127.0.0.1:8080"
#define REPORT_KEYS_FILE	  "data/keys"
#define REPORT_MAX_ID_BYTES	  64
#define TABLE_MAX_COLS		  16

static void usage(FILE *to)
{
	fprintf(to,
		"usage: nudge report journey ID [--version N] [--from T] [--to T] "
		"[--bucket minute|hour|day]\n"
		"       nudge report step JOURNEY STEP [--version N] [...]\n"
		"       nudge report template ID [...]\n"
		"       nudge report overview\n"
		"  options for both: [--url URL] [--admin-key KEY] [--csv | --json]\n"
		"  prints the funnel, message metrics and conversions as tables; --csv "
		"and "
		"--json print the API's answer\n"
		"  URL: $NUDGE_URL or " REPORT_DEFAULT_URL "; KEY: $NUDGE_ADMIN_KEY or "
		"admin_key= in ./" REPORT_KEYS_FILE "\n");
}

/* ----------------------------------------------------------------- tables */

/* A text table: cells are owned strings; align[c] is 'l' or 'r' (numbers). */
struct table {
	char **cells; /* rows * ncols, owned */
	unsigned ncols, nrows, alloc_rows;
	const char *align; /* ncols letters; static */
};

static void table_init(struct table *t, const char *align)
{
	memset(t, 0, sizeof(*t));
	t->ncols = (unsigned)strlen(align);
	ASSERT(t->ncols <= TABLE_MAX_COLS);
	t->align = align;
}

/* Adds a row of ncols strings (copied). */
static void table_row(struct table *t, const char *const *cells)
{
	if (t->nrows == t->alloc_rows) {
		t->alloc_rows = t->alloc_rows ? 2 * t->alloc_rows : 8;
		t->cells = xrealloc(t->cells,
				    (size_t)t->alloc_rows * t->ncols * sizeof(char *));
	}
	for (unsigned c = 0; c < t->ncols; c++)
		t->cells[(size_t)t->nrows * t->ncols + c] =
			xstrdup(cells[c] ? cells[c] : "");
	t->nrows++;
}

static void table_print(struct table *t)
{
	size_t w[TABLE_MAX_COLS] = {0};

	for (unsigned r = 0; r < t->nrows; r++)
		for (unsigned c = 0; c < t->ncols; c++) {
			size_t n = strlen(t->cells[(size_t)r * t->ncols + c]);

			if (n > w[c])
				w[c] = n;
		}
	for (unsigned r = 0; r < t->nrows; r++) {
		for (unsigned c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[(size_t)r * t->ncols + c];
			bool last = c + 1 == t->ncols;

			if (t->align[c] == 'l')
				printf("%-*s", last ? 0 : (int)w[c], cell);
			else
				printf("%*s", (int)w[c], cell);
			if (!last)
				printf("  ");
		}
		printf("\n");
	}
}

static void table_fini(struct table *t)
{
	for (size_t i = 0; i < (size_t)t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* ------------------------------------------------------------ JSON access */

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (o && json_object_is_type(o, json_type_object))
		json_object_object_get_ex(o, key, &v);
	return v;
}

static int64_t num(struct json_object *o, const char *key)
{
	return json_object_get_int64(get(o, key));
}

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
							     : "";
}

/* Formats o[key] as an integer into out (cap 32). */
static const char *fmt_num(char *out, struct json_object *o, const char *key)
{
	snprintf(out, 32, "%lld", (long long)num(o, key));
	return out;
}

/* A rate as "12.5%", or "-" when the API says null (no denominator). */
static const char *fmt_rate(char *out, struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	if (!v || json_object_is_type(v, json_type_null))
		snprintf(out, 32, "-");
	else
		snprintf(out, 32, "%.1f%%", 100.0 * json_object_get_double(v));
	return out;
}

static const char *fmt_money(char *out, struct json_object *o, const char *key)
{
	double v = json_object_get_double(get(o, key));

	if (v == (double)(int64_t)v)
		snprintf(out, 32, "%lld", (long long)v);
	else
		snprintf(out, 32, "%.2f", v);
	return out;
}

/* "unique/total" for opens and clicks. */
static const char *fmt_pair(char *out, struct json_object *o, const char *uniq,
			    const char *total)
{
	snprintf(out, 32, "%lld/%lld", (long long)num(o, uniq), (long long)num(o, total));
	return out;
}

/* The non-zero reasons of an object of counts: "exit 3, timeout 2" or "-". */
static void fmt_reasons(struct buf *b, struct json_object *o)
{
	buf_reset(b);
	if (o && json_object_is_type(o, json_type_object)) {
		json_object_object_foreach(o, k, v)
		{
			if (json_object_get_int64(v) == 0)
				continue;
			buf_printf(b, "%s%s %lld", b->len ? ", " : "", k,
				   (long long)json_object_get_int64(v));
		}
	}
	if (b->len == 0)
		buf_puts(b, "-");
}

/* ---------------------------------------------------------------- printing */

/* The message rows of a report; k1, k2 name the first two columns (then the
 * channel): "step", "template" for a journey, "journey", "step" for a template. */
static void print_messages(struct json_object *arr, const char *k1, const char *k2)
{
	struct table tb;
	struct buf why;
	char a[16][32];

	if (!json_object_array_length(arr))
		return;
	buf_init(&why, 0);
	printf("\nMessages (opened and clicked: unique/total)\n");
	table_init(&tb, "lllrrrrrrrrrrrrr");
	table_row(&tb, (const char *const[]){k1, k2, "channel", "targeted", "excluded",
					     "sent", "delivered", "bounced", "failed",
					     "opened", "clicked", "unsub", "delivery",
					     "open", "click", "click/open"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);

		snprintf(a[7], 32, "%lld",
			 (long long)(num(m, "bounced_hard") + num(m, "bounced_soft")));
		table_row(&tb,
			  (const char *const[]){
				  str(m, k1), str(m, k2), str(m, "channel"),
				  fmt_num(a[0], m, "targeted"),
				  fmt_num(a[1], m, "excluded_total"),
				  fmt_num(a[2], m, "sent"), fmt_num(a[3], m, "delivered"),
				  a[7], fmt_num(a[4], m, "failed"),
				  fmt_pair(a[5], m, "opened_unique", "opened"),
				  fmt_pair(a[6], m, "clicked_unique", "clicked"),
				  fmt_num(a[8], m, "unsubscribed"),
				  fmt_rate(a[9], m, "delivery_rate"),
				  fmt_rate(a[10], m, "open_rate"),
				  fmt_rate(a[11], m, "click_rate"),
				  fmt_rate(a[12], m, "click_to_open_rate")});
	}
	table_print(&tb);
	table_fini(&tb);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);

		if (num(m, "excluded_total") == 0)
			continue;
		fmt_reasons(&why, get(m, "excluded"));
		printf("  %s excluded: %s\n", str(m, k1), buf_str(&why));
	}
	buf_fini(&why);
}

static void print_arms(struct json_object *arr)
{
	struct table tb;
	char a[4][32];

	if (!json_object_array_length(arr))
		return;
	printf("\nSplit arms (conversions attributed to the arm taken)\n");
	table_init(&tb, "llrrrr");
	table_row(&tb, (const char *const[]){"arm", "split step", "entered",
					     "conversions", "rate", "value"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);

		table_row(&tb,
			  (const char *const[]){str(m, "arm"), str(m, "step"),
						fmt_num(a[0], m, "entered"),
						fmt_num(a[1], m, "conversions"),
						fmt_rate(a[2], m, "conversion_rate"),
						fmt_money(a[3], m, "conversion_value")});
	}
	table_print(&tb);
	table_fini(&tb);
}

/* "entered N, in step N, completed N, errors N; exited: ..." of one object. */
static void print_funnel_line(struct json_object *t, const char *in_key,
			      const char *in_name)
{
	struct buf why;

	buf_init(&why, 0);
	fmt_reasons(&why, get(t, "exited"));
	printf("entered %lld, %s %lld, completed %lld, errors %lld; exited: %s\n",
	       (long long)num(t, "entered"), in_name, (long long)num(t, in_key),
	       (long long)num(t, "completed"), (long long)num(t, "errors"),
	       buf_str(&why));
	buf_fini(&why);
}

static void print_step(struct json_object *o)
{
	char a[2][32];

	printf("journey %s, step %s", str(o, "journey"), str(o, "step"));
	if (num(o, "version"))
		printf(", version %lld\n", (long long)num(o, "version"));
	else
		printf(", all versions\n");
	print_funnel_line(o, "in_step", "in step");
	printf("conversions attributed %lld, value %s\n",
	       (long long)num(o, "conversions"), fmt_money(a[0], o, "conversion_value"));
	(void)a[1];
	print_messages(get(o, "messages"), "step", "template");
	print_arms(get(o, "arms"));
}

static void print_template(struct json_object *o)
{
	struct json_object *t = get(o, "totals");
	char a[8][32];

	printf("template %s\n", str(o, "template"));
	printf("sent %lld, delivered %lld (%s), opened %s (%s), clicked %s (%s), "
	       "conversions %lld, value %s\n",
	       (long long)num(t, "sent"), (long long)num(t, "delivered"),
	       fmt_rate(a[0], t, "delivery_rate"),
	       fmt_pair(a[1], t, "opened_unique", "opened"),
	       fmt_rate(a[2], t, "open_rate"),
	       fmt_pair(a[3], t, "clicked_unique", "clicked"),
	       fmt_rate(a[4], t, "click_rate"), (long long)num(t, "conversions"),
	       fmt_money(a[5], t, "conversion_value"));
	print_messages(get(o, "messages"), "journey", "step");
}

static void print_journey(struct json_object *o)
{
	struct json_object *t = get(o, "totals"), *arr;
	struct buf why;
	struct table tb;
	char a[16][32];

	buf_init(&why, 0);
	printf("journey %s", str(o, "journey"));
	if (num(o, "version"))
		printf(", version %lld\n", (long long)num(o, "version"));
	else
		printf(", all versions\n");
	print_funnel_line(t, "in_progress", "in progress");
	printf("conversions %lld (rate %s), value %s\n", (long long)num(t, "conversions"),
	       fmt_rate(a[0], t, "conversion_rate"),
	       fmt_money(a[1], t, "conversion_value"));

	arr = get(o, "steps");
	printf("\nFunnel\n");
	table_init(&tb, "lrrrrl");
	table_row(&tb, (const char *const[]){"step", "entered", "in step", "completed",
					     "errors", "exited"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *st = json_object_array_get_idx(arr, i);

		fmt_reasons(&why, get(st, "exited"));
		table_row(&tb, (const char *const[]){
				       str(st, "step"), fmt_num(a[0], st, "entered"),
				       fmt_num(a[1], st, "in_step"),
				       fmt_num(a[2], st, "completed"),
				       fmt_num(a[3], st, "errors"), buf_str(&why)});
	}
	table_print(&tb);
	table_fini(&tb);

	print_messages(get(o, "messages"), "step", "template");
	print_arms(get(o, "arms"));
	buf_fini(&why);
}

static void print_overview(struct json_object *o)
{
	struct json_object *arr = get(o, "journeys");
	struct table tb;
	char a[16][32];

	printf("Journeys\n");
	table_init(&tb, "lrrrrrrrrrr");
	table_row(&tb,
		  (const char *const[]){"journey", "entered", "in progress", "completed",
					"errors", "conversions", "conv. rate", "sent",
					"delivered", "open", "click"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *j = json_object_array_get_idx(arr, i);

		table_row(&tb, (const char *const[]){str(j, "journey"),
						     fmt_num(a[0], j, "entered"),
						     fmt_num(a[1], j, "in_progress"),
						     fmt_num(a[2], j, "completed"),
						     fmt_num(a[3], j, "errors"),
						     fmt_num(a[4], j, "conversions"),
						     fmt_rate(a[5], j, "conversion_rate"),
						     fmt_num(a[6], j, "sent"),
						     fmt_num(a[7], j, "delivered"),
						     fmt_rate(a[8], j, "open_rate"),
						     fmt_rate(a[9], j, "click_rate")});
	}
	table_print(&tb);
	table_fini(&tb);

	arr = get(o, "channels");
	printf("\nChannels (opened and clicked: unique/total)\n");
	table_init(&tb, "lrrrrrrrrrr");
	table_row(&tb, (const char *const[]){"channel", "sent", "delivered", "bounced",
					     "failed", "excluded", "opened", "clicked",
					     "delivery", "open", "click"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *c = json_object_array_get_idx(arr, i);

		snprintf(a[3], 32, "%lld",
			 (long long)(num(c, "bounced_hard") + num(c, "bounced_soft")));
		table_row(&tb, (const char *const[]){
				       str(c, "channel"), fmt_num(a[0], c, "sent"),
				       fmt_num(a[1], c, "delivered"), a[3],
				       fmt_num(a[4], c, "failed"),
				       fmt_num(a[5], c, "excluded_total"),
				       fmt_pair(a[6], c, "opened_unique", "opened"),
				       fmt_pair(a[7], c, "clicked_unique", "clicked"),
				       fmt_rate(a[8], c, "delivery_rate"),
				       fmt_rate(a[9], c, "open_rate"),
				       fmt_rate(a[10], c, "click_rate")});
	}
	table_print(&tb);
	table_fini(&tb);
}

/* ------------------------------------------------------------------- HTTP */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;

	return buf_append(b, data, size * nmemb) == NERR_OK ? size * nmemb : 0;
}

/* GETs url; returns true with the status and body, or false after printing why. */
static bool http_get(const char *url, const char *key, bool csv, long *status,
		     struct buf *body)
{
	CURL *c;
	struct curl_slist *h = NULL;
	struct buf auth;
	CURLcode cc;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    !(c = curl_easy_init())) {
		fprintf(stderr, "nudge report: cannot initialize libcurl\n");
		return false;
	}
	buf_init(&auth, 0);
	buf_printf(&auth, "Authorization: Bearer %s", key);
	h = curl_slist_append(h, buf_str(&auth));
	h = curl_slist_append(h, csv ? "Accept: text/csv" : "Accept: application/json");
	buf_fini(&auth);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REPORT_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, REPORT_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "nudge-report");
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	else
		fprintf(stderr, "nudge report: GET %s: %s\n", url,
			curl_easy_strerror(cc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	curl_global_cleanup();
	return cc == CURLE_OK;
}

/* ------------------------------------------------------------------ setup */

static char *key_from_file(void)
{
	FILE *f = fopen(REPORT_KEYS_FILE, "r");
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

static bool valid_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > REPORT_MAX_ID_BYTES)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	return true;
}

/* Appends "name=value" to a query string, percent-encoding the value. */
static void query_param(struct buf *q, const char *name, const char *value)
{
	buf_printf(q, "%c%s=", q->len ? '&' : '?', name);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++)
		if (isalnum(*p) || strchr("-_.~:", *p))
			buf_putc(q, (char)*p);
		else
			buf_printf(q, "%%%02X", *p);
}

/* Prints the API's error answer (or the status) to stderr. */
static void print_refusal(const char *what, long status, const char *body)
{
	struct json_object *o = json_tokener_parse(body), *e = get(o, "error");

	if (e && *str(e, "message"))
		fprintf(stderr, "nudge report: %s: %s (HTTP %ld)\n", what,
			str(e, "message"), status);
	else
		fprintf(stderr, "nudge report: %s: HTTP %ld\n", what, status);
	json_object_put(o);
}

int cmd_report(int argc, char **argv)
{
	const char *url = NULL, *key_arg = NULL, *env, *what = NULL, *id = NULL,
		   *id2 = NULL;
	const char *version = NULL, *from = NULL, *to = NULL, *bucket = NULL;
	bool csv = false, json = false;
	char *key = NULL, *base = NULL;
	struct buf path, query, body;
	long status = 0;
	int rc = 2;

	buf_init(&path, 0);
	buf_init(&query, 0);
	buf_init(&body, REPORT_RESPONSE_MAX_BYTES);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;

		if (strcmp(a, "--url") == 0 && has)
			url = argv[++i];
		else if (strcmp(a, "--admin-key") == 0 && has)
			key_arg = argv[++i];
		else if (strcmp(a, "--version") == 0 && has)
			version = argv[++i];
		else if (strcmp(a, "--from") == 0 && has)
			from = argv[++i];
		else if (strcmp(a, "--to") == 0 && has)
			to = argv[++i];
		else if (strcmp(a, "--bucket") == 0 && has)
			bucket = argv[++i];
		else if (strcmp(a, "--csv") == 0)
			csv = true;
		else if (strcmp(a, "--json") == 0)
			json = true;
		else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			rc = 0;
			goto out;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr,
				"nudge report: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			goto out;
		} else if (!what)
			what = a;
		else if (!id)
			id = a;
		else if (!id2)
			id2 = a;
		else {
			fprintf(stderr, "nudge report: '%s' is extra\n", a);
			usage(stderr);
			goto out;
		}
	}
	if (!what || (strcmp(what, "journey") && strcmp(what, "overview") &&
		      strcmp(what, "step") && strcmp(what, "template"))) {
		fprintf(stderr,
			"nudge report: say what to report: journey ID, step JOURNEY "
			"STEP, template ID, or overview\n");
		usage(stderr);
		goto out;
	}
	{
		unsigned want = strcmp(what, "overview") == 0 ? 0
				: strcmp(what, "step") == 0   ? 2
							      : 1;
		unsigned got = !!id + !!id2;

		if (got != want) {
			fprintf(stderr, "nudge report %s: %s\n", what,
				want == 0   ? "takes no id"
				: want == 1 ? "needs one ID"
					    : "needs JOURNEY and STEP");
			goto out;
		}
		if ((id && !valid_id(id)) || (id2 && !valid_id(id2))) {
			fprintf(stderr,
				"nudge report %s: an id must be 1 to 64 of A-Z a-z 0-9 _ "
				"-\n",
				what);
			goto out;
		}
	}
	if (csv && json) {
		fprintf(stderr, "nudge report: --csv or --json, not both\n");
		goto out;
	}
	if (version) {
		char *end;
		unsigned long v = strtoul(version, &end, 10);

		if (*end || !*version || v == 0 || v > 0xffffffffUL) {
			fprintf(stderr,
				"nudge report: --version must be a positive number\n");
			goto out;
		}
	}
	if (!url && (env = getenv("NUDGE_URL")) && *env)
		url = env;
	if (!url)
		url = REPORT_DEFAULT_URL;
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		fprintf(stderr,
			"nudge report: --url must start with http:// or https://\n");
		goto out;
	}
	base = xstrdup(url);
	while (strlen(base) > 8 && base[strlen(base) - 1] == '/')
		base[strlen(base) - 1] = '\0';
	if (!key_arg && (env = getenv("NUDGE_ADMIN_KEY")) && *env)
		key_arg = env;
	key = key_arg ? xstrdup(key_arg) : key_from_file();
	if (!key || !key_ok(key)) {
		fprintf(stderr,
			"nudge report: no usable admin key: pass --admin-key KEY, set "
			"NUDGE_ADMIN_KEY, or run from the folder whose "
			"./" REPORT_KEYS_FILE " `nudge serve` wrote\n");
		goto out;
	}

	if (version)
		query_param(&query, "version", version);
	if (from)
		query_param(&query, "from", from);
	if (to)
		query_param(&query, "to", to);
	if (bucket)
		query_param(&query, "bucket", bucket);
	if (strcmp(what, "journey") == 0)
		buf_printf(&path, "%s/v1/reports/journeys/%s%s", base, id,
			   buf_str(&query));
	else if (strcmp(what, "step") == 0)
		buf_printf(&path, "%s/v1/reports/journeys/%s/steps/%s%s", base, id, id2,
			   buf_str(&query));
	else if (strcmp(what, "template") == 0)
		buf_printf(&path, "%s/v1/reports/templates/%s%s", base, id,
			   buf_str(&query));
	else
		buf_printf(&path, "%s/v1/reports/overview%s", base, buf_str(&query));
	rc = 1;
	if (!http_get(buf_str(&path), key, csv, &status, &body))
		goto out;
	if (status != 200) {
		char label[192];

		snprintf(label, sizeof(label), "%s%s%s%s%s", what, id ? " " : "",
			 id ? id : "", id2 ? " " : "", id2 ? id2 : "");
		print_refusal(label, status, buf_str(&body));
		goto out;
	}
	if (csv || json) {
		fwrite(body.data ? body.data : "", 1, body.len, stdout);
		if (json && body.len && body.data[body.len - 1] != '\n')
			putchar('\n');
		rc = 0;
		goto out;
	}
	struct json_object *o = json_tokener_parse(buf_str(&body));

	if (!o || !json_object_is_type(o, json_type_object)) {
		fprintf(stderr,
			"nudge report: the server's answer is not a JSON object\n");
		json_object_put(o);
		goto out;
	}
	if (strcmp(what, "journey") == 0)
		print_journey(o);
	else if (strcmp(what, "step") == 0)
		print_step(o);
	else if (strcmp(what, "template") == 0)
		print_template(o);
	else
		print_overview(o);
	json_object_put(o);
	rc = 0;
out:
	free(key);
	free(base);
	buf_fini(&path);
	buf_fini(&query);
	buf_fini(&body);
	return rc;
}
