/*
 * def.c -- journey definitions: from a JSON document to the compiled form the
 * runtime walks.
 *
 * Design: journey_def_compile() runs in three passes over a json-c tree.
 *   1. Shape: every field of the document and of each step is read by a small
 *      typed getter that records an error (step, field path, sentence) instead
 *      of stopping, so one call reports everything wrong. Step ids are collected
 *      first so references (`next`, `else`, `on_event`, …) resolve to indexes
 *      while the steps are read. CEL is compiled with the caller's environment,
 *      Liquid (webhook url, headers, body) with tmpl_compile in strict, non-HTML
 *      mode; templates named by message and webhook steps are checked through
 *      the caller's callback.
 *   2. Graph: every step must be reachable from `start`; a cycle made only of
 *      steps that do not wait (anything but wait and wait_for) is refused, since
 *      the runtime would spin through it on one event; a wait_for on engagement
 *      must name a message step that lies on every path to it (so the message
 *      was sent by the time the wait starts).
 *   3. Index: the sorted step-id index and the list of event names the journey
 *      listens to, so the runtime can route events by name (an entry on an
 *      audience or a business event adds none: the runtime routes those by
 *      audience id and business event name). A business entry's `who` is
 *      analysed once here (expr_index_condition) so the runtime can fan a
 *      business event out through its trait index instead of every profile.
 * Only a document without a single error yields a definition.
 * Invariants: (1) in a compiled definition every step index is in range and
 *   every required program/template is non-NULL; (2) no cycle of the step graph
 *   lacks a wait or wait_for step; (3) every step is reachable from start;
 *   (4) errors are capped at JOURNEY_MAX_ERRORS (the last one says so).
 * Memory: strings and arrays live in the definition's arena; programs and
 *   templates are listed in d->progs / d->tmpls so journey_def_free releases them.
 * Threading: compile is reentrant; the evaluation context is thread-local.
 * References: DESIGN.md §7, §8; docs/journeys.md.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#include "base/buf.h"
#include "base/id.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "journey/def.h"
#include "tmpl/tmpl.h"

#define MAX_NAME_BYTES	      256  /* event names, journey name, split arm names */
#define MAX_TEXT_BYTES	      4096 /* descriptions */
#define MAX_SECRET_BYTES      1024
#define MAX_URL_BYTES	      4096
#define MAX_TEMPLATE_ID_BYTES 128
#define MAX_TRAIT_BYTES	      128
#define MAX_CATEGORY_BYTES    64
#define MAX_ZONE_BYTES	      64
#define DURATION_MAX_MS	      (100LL * 366 * 86400 * 1000)

static const char *const kind_names[JOURNEY_STEP__COUNT] = {
	[JOURNEY_STEP_BRANCH] = "branch",
	[JOURNEY_STEP_WAIT] = "wait",
	[JOURNEY_STEP_WAIT_FOR] = "wait_for",
	[JOURNEY_STEP_SPLIT] = "split",
	[JOURNEY_STEP_MESSAGE] = "message",
	[JOURNEY_STEP_WEBHOOK] = "webhook",
	[JOURNEY_STEP_UPDATE_PROFILE] = "update_profile",
	[JOURNEY_STEP_JUMP] = "jump",
	[JOURNEY_STEP_END] = "end",
};

/* Routing keys each kind takes: required ones, then optional ones. */
static const struct {
	const char *required[2];
	const char *optional[1];
} routes[JOURNEY_STEP__COUNT] = {
	[JOURNEY_STEP_BRANCH] = {{"else"}, {NULL}},
	[JOURNEY_STEP_WAIT] = {{"next"}, {NULL}},
	[JOURNEY_STEP_WAIT_FOR] = {{"on_event", "on_timeout"}, {NULL}},
	[JOURNEY_STEP_SPLIT] = {{NULL}, {NULL}},
	[JOURNEY_STEP_MESSAGE] = {{"next"}, {NULL}},
	[JOURNEY_STEP_WEBHOOK] = {{"next"}, {"on_failure"}},
	[JOURNEY_STEP_UPDATE_PROFILE] = {{"next"}, {NULL}},
	[JOURNEY_STEP_JUMP] = {{NULL}, {"next"}},
	[JOURNEY_STEP_END] = {{NULL}, {NULL}},
};

static const char *const route_keys[] = {"next",       "else",	     "on_event",
					 "on_timeout", "on_failure", NULL};

static const char *const day_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

const char *journey_step_kind_name(enum journey_step_kind kind)
{
	return (unsigned)kind < JOURNEY_STEP__COUNT ? kind_names[kind] : "?";
}

const char *journey_channel_name(enum journey_channel ch)
{
	switch (ch) {
	case JOURNEY_CHANNEL_EMAIL:
		return "email";
	case JOURNEY_CHANNEL_SMS:
		return "sms";
	case JOURNEY_CHANNEL_PUSH:
		return "push";
	}
	return "?";
}

void journey_limits_default(struct journey_limits *lim)
{
	lim->max_steps = JOURNEY_DEFAULT_MAX_STEPS;
	lim->max_wait_ms = JOURNEY_DEFAULT_MAX_WAIT_MS;
	lim->max_def_bytes = JOURNEY_DEFAULT_MAX_DEF_BYTES;
	lim->max_depth = JOURNEY_DEFAULT_MAX_DEPTH;
}

/* ------------------------------------------------------------------ durations */

enum nerr journey_duration_parse(const char *s, int64_t *ms)
{
	int64_t total = 0;
	const char *p = s;

	if (!s || !*s)
		return NERR_INVAL;
	while (*p) {
		int64_t n = 0, unit;
		int digits = 0;

		while (*p >= '0' && *p <= '9') {
			if (++digits > 13)
				return NERR_INVAL;
			n = n * 10 + (*p++ - '0');
		}
		if (digits == 0)
			return NERR_INVAL;
		if (p[0] == 'm' && p[1] == 's') {
			unit = 1;
			p += 2;
		} else {
			switch (*p) {
			case 's':
				unit = 1000;
				break;
			case 'm':
				unit = 60 * 1000;
				break;
			case 'h':
				unit = 3600 * 1000;
				break;
			case 'd':
				unit = 86400 * 1000;
				break;
			case 'w':
				unit = 7 * 86400LL * 1000;
				break;
			default:
				return NERR_INVAL;
			}
			p++;
		}
		if (n > DURATION_MAX_MS / unit)
			return NERR_INVAL;
		total += n * unit;
		if (total > DURATION_MAX_MS)
			return NERR_INVAL;
	}
	if (total <= 0)
		return NERR_INVAL;
	*ms = total;
	return NERR_OK;
}

/* Writes ms as the largest unit that divides it ("400d", "90m", "1500ms"). */
static void format_duration(int64_t ms, char *out, size_t size)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{7 * 86400LL * 1000, "w"}, {86400LL * 1000, "d"}, {3600 * 1000, "h"},
		     {60 * 1000, "m"},		{1000, "s"},	       {1, "ms"}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms % units[i].ms == 0 || units[i].ms == 1) {
			if (units[i].ms == 7 * 86400LL * 1000)
				continue; /* days read better than weeks in limits */
			snprintf(out, size, "%lld%s", (long long)(ms / units[i].ms),
				 units[i].unit);
			return;
		}
	}
}

/* ------------------------------------------------------------------ errors */

void journey_errors_fini(struct journey_errors *e)
{
	free(e->items);
	e->items = NULL;
	e->n = 0;
}

struct json_object *journey_errors_to_json(const struct journey_errors *e)
{
	struct json_object *arr = json_object_new_array();

	for (unsigned i = 0; i < e->n; i++) {
		struct json_object *o = json_object_new_object();

		if (e->items[i].step[0])
			json_object_object_add(o, "step",
					       json_object_new_string(e->items[i].step));
		json_object_object_add(o, "field",
				       json_object_new_string(e->items[i].field));
		json_object_object_add(o, "message",
				       json_object_new_string(e->items[i].message));
		json_object_array_add(arr, o);
	}
	return arr;
}

void journey_error_format(const struct journey_error *err, char *out, size_t size)
{
	if (err->step[0] && err->field[0])
		snprintf(out, size, "step %s: %s: %s", err->step, err->field,
			 err->message);
	else if (err->step[0])
		snprintf(out, size, "step %s: %s", err->step, err->message);
	else
		snprintf(out, size, "%s: %s", err->field[0] ? err->field : "document",
			 err->message);
}

/* ---------------------------------------------------------------- the context */

struct cx {
	struct journey_def *d;
	struct journey_errors *errs;
	struct journey_limits lim;
	const struct expr_env *env;
	journey_template_exists_fn template_exists;
	void *ud;
	const char *step;	   /* current step id, or "" */
	unsigned nerrs;		   /* errors of this compile */
	unsigned ref_errors;	   /* unresolved step references */
	struct json_object *empty; /* {} for the CEL probe */
	struct arena scratch;	   /* for the CEL probe */
};

/* The evaluation context of this thread (journey_eval_ctx_set). */
static _Thread_local const struct journey_eval_ctx *tl_ctx;

static void add_error(struct cx *c, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_error(struct cx *c, const char *field, const char *fmt, ...)
{
	struct journey_error *e;
	va_list ap;

	c->nerrs++;
	if (c->nerrs > JOURNEY_MAX_ERRORS + 1)
		return;
	c->errs->items =
		xrealloc(c->errs->items, (c->errs->n + 1) * sizeof(*c->errs->items));
	e = &c->errs->items[c->errs->n++];
	memset(e, 0, sizeof(*e));
	if (c->nerrs == JOURNEY_MAX_ERRORS + 1) {
		snprintf(e->message, sizeof(e->message),
			 "too many errors; stopped after %d", JOURNEY_MAX_ERRORS);
		return;
	}
	snprintf(e->step, sizeof(e->step), "%s", c->step);
	snprintf(e->field, sizeof(e->field), "%s", field);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

/* Joins a field path: base "" + key = key; base + key = base.key (truncated to
 * size - 1 bytes). */
static const char *path(char *out, size_t size, const char *base, const char *key)
{
	size_t n = 0;

	for (const char *s = base; *s && n + 1 < size; s++)
		out[n++] = *s;
	if (base[0] && n + 1 < size)
		out[n++] = '.';
	for (const char *s = key; *s && n + 1 < size; s++)
		out[n++] = *s;
	out[n] = 0;
	return out;
}

static const char *json_type_word(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null:
		return "null";
	case json_type_boolean:
		return "a boolean";
	case json_type_double:
	case json_type_int:
		return "a number";
	case json_type_object:
		return "an object";
	case json_type_array:
		return "an array";
	case json_type_string:
		return "a string";
	}
	return "?";
}

/* Reports every key of obj that is not in allowed (NULL-terminated). */
static void check_keys(struct cx *c, struct json_object *obj, const char *base,
		       const char *const *allowed)
{
	char p[128];

	json_object_object_foreach(obj, key, val)
	{
		bool ok = false;

		(void)val;
		for (size_t i = 0; allowed[i] && !ok; i++)
			ok = strcmp(key, allowed[i]) == 0;
		if (!ok)
			add_error(c, path(p, sizeof(p), base, key),
				  "unknown field '%.64s'", key);
	}
}

/*
 * Returns the member key of obj when present with the right type, else NULL
 * (recording "is required" or "must be T" as appropriate).
 */
static struct json_object *get_typed(struct cx *c, struct json_object *obj,
				     const char *base, const char *key,
				     enum json_type type, bool required)
{
	struct json_object *v;
	char p[128];
	static const char *const words[] = {
		[json_type_null] = "null",	  [json_type_boolean] = "a boolean",
		[json_type_double] = "a number",  [json_type_int] = "an integer",
		[json_type_object] = "an object", [json_type_array] = "an array",
		[json_type_string] = "a string",
	};

	if (!json_object_object_get_ex(obj, key, &v)) {
		if (required)
			add_error(c, path(p, sizeof(p), base, key), "is required");
		return NULL;
	}
	if (!json_object_is_type(v, type)) {
		add_error(c, path(p, sizeof(p), base, key), "must be %s, not %s",
			  words[type], json_type_word(v));
		return NULL;
	}
	return v;
}

/* Reads a string member (no NUL bytes, 1..max bytes) into the arena, or NULL. */
static char *get_str(struct cx *c, struct json_object *obj, const char *base,
		     const char *key, bool required, size_t max)
{
	struct json_object *v = get_typed(c, obj, base, key, json_type_string, required);
	const char *s;
	size_t len;
	char p[128];

	if (!v)
		return NULL;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (len == 0) {
		add_error(c, path(p, sizeof(p), base, key), "must not be empty");
		return NULL;
	}
	if (memchr(s, 0, len)) {
		add_error(c, path(p, sizeof(p), base, key), "must not contain NUL");
		return NULL;
	}
	if (len > max) {
		add_error(c, path(p, sizeof(p), base, key), "longer than %zu bytes", max);
		return NULL;
	}
	return arena_strndup(&c->d->arena, s, len);
}

/* An id-like string: [A-Za-z0-9_-]{1,max}. */
static char *get_id(struct cx *c, struct json_object *obj, const char *base,
		    const char *key, bool required, size_t max, const char *what)
{
	char *s = get_str(c, obj, base, key, required, 1024);
	char p[128];

	if (s && !id_valid_n(s, strlen(s), max)) {
		add_error(c, path(p, sizeof(p), base, key),
			  "invalid %s '%.64s' (use 1 to %zu of A-Z a-z 0-9 _ -)", what, s,
			  max);
		return NULL;
	}
	return s;
}

static bool zone_valid(const char *name)
{
	UChar u[MAX_ZONE_BYTES + 1], canon[MAX_ZONE_BYTES * 2];
	UErrorCode st = U_ZERO_ERROR;
	UBool system = 0;
	int32_t ulen = 0;
	size_t n = strlen(name);

	if (n == 0 || n > MAX_ZONE_BYTES)
		return false;
	u_strFromUTF8(u, MAX_ZONE_BYTES + 1, &ulen, name, (int32_t)n, &st);
	if (U_FAILURE(st))
		return false;
	ucal_getCanonicalTimeZoneID(u, ulen, canon, MAX_ZONE_BYTES * 2, &system, &st);
	return U_SUCCESS(st) && system;
}

static char *get_zone(struct cx *c, struct json_object *obj, const char *base,
		      const char *key)
{
	char *s = get_str(c, obj, base, key, false, MAX_ZONE_BYTES);
	char p[128];

	if (s && !zone_valid(s)) {
		add_error(c, path(p, sizeof(p), base, key), "unknown time zone '%.64s'",
			  s);
		return NULL;
	}
	return s;
}

/* Reads a duration member into *ms (left unchanged when absent or bad); max_ms
 * 0 = only the parser's own bound. Returns true when present and valid. */
static bool get_duration(struct cx *c, struct json_object *obj, const char *base,
			 const char *key, bool required, int64_t max_ms, int64_t *ms)
{
	struct json_object *v = get_typed(c, obj, base, key, json_type_string, required);
	const char *s;
	int64_t val;
	char p[128], lim[32];

	if (!v)
		return false;
	s = json_object_get_string(v);
	if (journey_duration_parse(s, &val) != NERR_OK ||
	    strlen(s) != (size_t)json_object_get_string_len(v)) {
		add_error(c, path(p, sizeof(p), base, key),
			  "invalid duration '%.32s' (use e.g. 30s, 15m, 1h, 7d, 2w)", s);
		return false;
	}
	if (max_ms > 0 && val > max_ms) {
		format_duration(max_ms, lim, sizeof(lim));
		add_error(c, path(p, sizeof(p), base, key),
			  "duration '%.32s' is longer than the limit of %s", s, lim);
		return false;
	}
	*ms = val;
	return true;
}

/*
 * CEL resolves names when it evaluates, so a misspelt variable (`profle.traits`)
 * or function compiles. Evaluating the program once against empty variables (no
 * evaluation context: nudge's functions answer errors) finds those that are
 * reached; an undeclared reference or unknown function is an error whatever the
 * data, so this never refuses a correct condition. Other evaluation errors
 * depend on the data and are ignored. Returns false after recording an error.
 */
static bool probe_cel(struct cx *c, const char *p, const struct expr_program *prog)
{
	struct expr_value vars[JOURNEY_VAR__COUNT], out;
	const struct journey_eval_ctx *saved = tl_ctx;
	struct nerr_msg msg;
	enum nerr rc;

	if (expr_env_var_count(c->env) != JOURNEY_VAR__COUNT)
		return true; /* not our environment: nothing to bind */
	for (int i = 0; i < JOURNEY_VAR__COUNT; i++)
		vars[i] = expr_value_from_json(c->empty);
	memset(&vars[JOURNEY_VAR_NOW], 0, sizeof(vars[0]));
	vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
	arena_reset(&c->scratch);
	tl_ctx = NULL;
	nerr_clear(&msg);
	rc = expr_eval(prog, vars, JOURNEY_VAR__COUNT, &c->scratch, &out, &msg);
	tl_ctx = saved;
	if (rc == NERR_EVAL && (strncmp(msg.message, "undeclared reference", 20) == 0 ||
				strstr(msg.message, "unknown function"))) {
		add_error(c, p, "invalid CEL: %s", msg.message);
		return false;
	}
	return true;
}

/* Compiles a CEL member into *out; returns true when present and valid. */
static bool get_cel(struct cx *c, struct json_object *obj, const char *base,
		    const char *key, bool required, struct journey_cel *out)
{
	struct json_object *v = get_typed(c, obj, base, key, json_type_string, required);
	struct expr_program *prog = NULL;
	struct nerr_msg msg;
	char p[128];
	const char *s;
	size_t len;

	if (!v)
		return false;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (len == 0) {
		add_error(c, path(p, sizeof(p), base, key), "must not be empty");
		return false;
	}
	nerr_clear(&msg);
	if (expr_compile_n(s, len, c->env, &prog, &msg) != NERR_OK) {
		add_error(c, path(p, sizeof(p), base, key), "invalid CEL: %s",
			  msg.message);
		return false;
	}
	c->d->progs = xrealloc(c->d->progs, (c->d->nprogs + 1) * sizeof(*c->d->progs));
	c->d->progs[c->d->nprogs++] = prog;
	out->src = arena_strndup(&c->d->arena, s, len);
	out->prog = prog;
	return probe_cel(c, path(p, sizeof(p), base, key), prog);
}

/* Compiles Liquid source src (len bytes) for field p; NULL after an error. */
static struct tmpl *compile_liquid(struct cx *c, const char *p, const char *src,
				   size_t len)
{
	struct tmpl_options opt = {.strict = true, .html_escape = false};
	struct tmpl *t = NULL;
	struct nerr_msg msg;
	unsigned line, col;
	int used = 0;

	nerr_clear(&msg);
	if (tmpl_compile(src, len, &opt, &t, &msg) != NERR_OK) {
		if (sscanf(msg.message, "%u:%u: %n", &line, &col, &used) == 2 && used > 0)
			add_error(c, p, "invalid Liquid: line %u, column %u: %s", line,
				  col, msg.message + used);
		else
			add_error(c, p, "invalid Liquid: %s", msg.message);
		return NULL;
	}
	c->d->tmpls = xrealloc(c->d->tmpls, (c->d->ntmpls + 1) * sizeof(*c->d->tmpls));
	c->d->tmpls[c->d->ntmpls++] = t;
	return t;
}

/* Resolves a step reference member into *idx; true when present and known. */
static bool get_ref(struct cx *c, struct json_object *obj, const char *base,
		    const char *key, bool required, int *idx)
{
	struct json_object *v = get_typed(c, obj, base, key, json_type_string, required);
	char p[128];
	int i;

	if (!v) {
		if (required || json_object_object_get_ex(obj, key, NULL))
			c->ref_errors++;
		return false;
	}
	i = journey_def_step_index(c->d, json_object_get_string(v));
	if (i < 0) {
		add_error(c, path(p, sizeof(p), base, key), "unknown step '%.64s'",
			  json_object_get_string(v));
		c->ref_errors++;
		return false;
	}
	*idx = i;
	return true;
}

static bool template_ok(struct cx *c, const char *p, const char *id, const char *channel)
{
	if (!c->template_exists || c->template_exists(c->ud, id, channel))
		return true;
	add_error(c, p, "unknown template '%.64s' for channel %s", id, channel);
	return false;
}

static char *get_template_id(struct cx *c, struct json_object *obj, const char *base,
			     const char *key, bool required)
{
	char *s = get_str(c, obj, base, key, required, MAX_TEMPLATE_ID_BYTES);
	char p[128];

	if (!s)
		return NULL;
	for (const char *q = s; *q; q++) {
		if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-' && *q != '.') {
			add_error(c, path(p, sizeof(p), base, key),
				  "invalid template id '%.64s' (use A-Z a-z 0-9 _ - .)",
				  s);
			return NULL;
		}
	}
	return s;
}

/* ------------------------------------------------------------- step kinds */

static void parse_branch(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"when", "next", NULL};
	size_t n;
	char p[128];

	if (!json_object_is_type(v, json_type_array)) {
		add_error(c, "branch", "must be an array of {\"when\", \"next\"}, not %s",
			  json_type_word(v));
		c->ref_errors++;
		return;
	}
	n = json_object_array_length(v);
	if (n == 0 || n > JOURNEY_MAX_ARMS) {
		add_error(c, "branch", "must have 1 to %d arms, not %zu",
			  JOURNEY_MAX_ARMS, n);
		c->ref_errors += n > 0;
		return;
	}
	st->u.branch.arms = arena_calloc(&c->d->arena, n, sizeof(*st->u.branch.arms));
	st->u.branch.narms = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		struct json_object *arm = json_object_array_get_idx(v, i);
		struct journey_branch_arm *a = &st->u.branch.arms[i];

		a->next = -1;
		snprintf(p, sizeof(p), "branch[%zu]", i);
		if (!json_object_is_type(arm, json_type_object)) {
			add_error(c, p, "must be an object, not %s", json_type_word(arm));
			c->ref_errors++;
			continue;
		}
		check_keys(c, arm, p, keys);
		get_cel(c, arm, p, "when", true, &a->when);
		get_ref(c, arm, p, "next", true, &a->next);
	}
}

static void parse_until_local(struct cx *c, struct journey_wait *w, struct json_object *v)
{
	static const char *const keys[] = {"time", "days", "zone", NULL};
	const char *base = "wait.until_local";
	struct json_object *t, *days;
	unsigned hh, mm;
	int used = 0;

	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, base, "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, base, keys);
	w->days_mask = 0x7f;
	if ((t = get_typed(c, v, base, "time", json_type_string, true))) {
		const char *s = json_object_get_string(t);

		if (strlen(s) != 5 || sscanf(s, "%2u:%2u%n", &hh, &mm, &used) != 2 ||
		    used != 5 || !isdigit((unsigned char)s[0]) ||
		    !isdigit((unsigned char)s[3]) || hh > 23 || mm > 59)
			add_error(c, "wait.until_local.time",
				  "invalid time '%.32s' (use HH:MM, 00:00 to 23:59)", s);
		else
			w->minute_of_day = (int)(hh * 60 + mm);
	}
	if ((days = get_typed(c, v, base, "days", json_type_array, false))) {
		size_t n = json_object_array_length(days);
		uint8_t mask = 0;
		char p[128];

		if (n == 0)
			add_error(c, "wait.until_local.days", "must not be empty");
		for (size_t i = 0; i < n; i++) {
			struct json_object *d = json_object_array_get_idx(days, i);
			const char *s = json_object_get_string(d);
			int day = -1;

			snprintf(p, sizeof(p), "wait.until_local.days[%zu]", i);
			for (int k = 0; k < 7 && json_object_is_type(d, json_type_string);
			     k++)
				if (strcmp(s, day_names[k]) == 0)
					day = k;
			if (day < 0) {
				add_error(c, p,
					  "invalid day (use mon, tue, wed, thu, fri, "
					  "sat, sun)");
			} else if (mask & (1u << day)) {
				add_error(c, p, "day '%s' listed twice", day_names[day]);
			} else {
				mask |= (uint8_t)(1u << day);
			}
		}
		if (mask)
			w->days_mask = mask;
	}
	w->zone = get_zone(c, v, base, "zone");
}

static void parse_wait(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"duration", "until", "until_local", NULL};
	struct journey_wait *w = &st->u.wait;
	struct json_object *ul;
	int modes = 0;

	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "wait", "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, "wait", keys);
	for (size_t i = 0; keys[i]; i++)
		modes += json_object_object_get_ex(v, keys[i], NULL);
	if (modes != 1) {
		add_error(c, "wait", "needs exactly one of duration, until, until_local");
		return;
	}
	if (json_object_object_get_ex(v, "duration", NULL)) {
		w->mode = JOURNEY_WAIT_DURATION;
		get_duration(c, v, "wait", "duration", true, c->lim.max_wait_ms,
			     &w->duration_ms);
	} else if (json_object_object_get_ex(v, "until", NULL)) {
		w->mode = JOURNEY_WAIT_UNTIL;
		get_cel(c, v, "wait", "until", true, &w->until);
	} else {
		w->mode = JOURNEY_WAIT_UNTIL_LOCAL;
		json_object_object_get_ex(v, "until_local", &ul);
		parse_until_local(c, w, ul);
	}
}

static void parse_wait_for(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"event", "when",	  "timeout",
					   "step",  "engagement", NULL};
	struct journey_wait_for *w = &st->u.wait_for;
	struct json_object *eng;

	w->message_step = -1;
	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "wait_for", "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, "wait_for", keys);
	get_duration(c, v, "wait_for", "timeout", true, c->lim.max_wait_ms,
		     &w->timeout_ms);
	if (json_object_object_get_ex(v, "step", NULL)) {
		w->mode = JOURNEY_WAIT_FOR_ENGAGEMENT;
		if (json_object_object_get_ex(v, "event", NULL) ||
		    json_object_object_get_ex(v, "when", NULL))
			add_error(c, "wait_for",
				  "takes either event (and when) or step and engagement, "
				  "not "
				  "both");
		get_ref(c, v, "wait_for", "step", true, &w->message_step);
		if ((eng = get_typed(c, v, "wait_for", "engagement", json_type_string,
				     true))) {
			const char *s = json_object_get_string(eng);

			if (strcmp(s, "opened") == 0)
				w->engagement = JOURNEY_ENGAGEMENT_OPENED;
			else if (strcmp(s, "clicked") == 0)
				w->engagement = JOURNEY_ENGAGEMENT_CLICKED;
			else
				add_error(c, "wait_for.engagement",
					  "must be opened or clicked, not '%.32s'", s);
		}
		return;
	}
	w->mode = JOURNEY_WAIT_FOR_EVENT;
	if (json_object_object_get_ex(v, "engagement", NULL))
		add_error(c, "wait_for.engagement", "needs step (the message step)");
	w->event = get_str(c, v, "wait_for", "event", true, MAX_NAME_BYTES);
	get_cel(c, v, "wait_for", "when", false, &w->when);
}

static void parse_split(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"name", "weight", "next", NULL};
	size_t n;
	char p[128], q[128];

	if (!json_object_is_type(v, json_type_array)) {
		add_error(c, "split",
			  "must be an array of {\"name\", \"weight\", \"next\"}, not %s",
			  json_type_word(v));
		c->ref_errors++;
		return;
	}
	n = json_object_array_length(v);
	if (n == 0 || n > JOURNEY_MAX_ARMS) {
		add_error(c, "split", "must have 1 to %d arms, not %zu", JOURNEY_MAX_ARMS,
			  n);
		c->ref_errors += n > 0;
		return;
	}
	st->u.split.arms = arena_calloc(&c->d->arena, n, sizeof(*st->u.split.arms));
	st->u.split.narms = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		struct json_object *arm = json_object_array_get_idx(v, i), *w;
		struct journey_split_arm *a = &st->u.split.arms[i];

		a->next = -1;
		snprintf(p, sizeof(p), "split[%zu]", i);
		if (!json_object_is_type(arm, json_type_object)) {
			add_error(c, p, "must be an object, not %s", json_type_word(arm));
			c->ref_errors++;
			continue;
		}
		check_keys(c, arm, p, keys);
		a->name = get_str(c, arm, p, "name", true, MAX_NAME_BYTES);
		for (size_t k = 0; a->name && k < i; k++) {
			if (st->u.split.arms[k].name &&
			    strcmp(st->u.split.arms[k].name, a->name) == 0) {
				add_error(c, path(q, sizeof(q), p, "name"),
					  "arm name '%.64s' used twice", a->name);
				break;
			}
		}
		if ((w = get_typed(c, arm, p, "weight", json_type_int, true))) {
			int64_t wt = json_object_get_int64(w);

			if (wt < 1 || wt > JOURNEY_MAX_SPLIT_WEIGHT)
				add_error(c, path(q, sizeof(q), p, "weight"),
					  "must be 1 to %u, not %lld",
					  JOURNEY_MAX_SPLIT_WEIGHT, (long long)wt);
			else
				a->weight = (unsigned)wt;
		}
		st->u.split.total_weight += a->weight;
		get_ref(c, arm, p, "next", true, &a->next);
	}
}

static void parse_message(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"channel", "template", "category", NULL};
	struct journey_message *m = &st->u.message;
	struct json_object *ch;
	bool channel_ok = false;

	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "message", "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, "message", keys);
	if ((ch = get_typed(c, v, "message", "channel", json_type_string, true))) {
		const char *s = json_object_get_string(ch);

		channel_ok = true;
		if (strcmp(s, "email") == 0)
			m->channel = JOURNEY_CHANNEL_EMAIL;
		else if (strcmp(s, "sms") == 0)
			m->channel = JOURNEY_CHANNEL_SMS;
		else if (strcmp(s, "push") == 0)
			m->channel = JOURNEY_CHANNEL_PUSH;
		else {
			channel_ok = false;
			add_error(c, "message.channel",
				  "must be email, sms or push, not '%.32s'", s);
		}
	}
	m->template_id = get_template_id(c, v, "message", "template", true);
	if (m->template_id && channel_ok)
		template_ok(c, "message.template", m->template_id,
			    journey_channel_name(m->channel));
	if (json_object_object_get_ex(v, "category", NULL)) {
		m->category = get_id(c, v, "message", "category", false,
				     MAX_CATEGORY_BYTES, "category");
		if (m->category) {
			for (char *q = m->category; *q; q++) {
				if (isupper((unsigned char)*q)) {
					add_error(c, "message.category",
						  "invalid category '%.64s' (use lower "
						  "case)",
						  m->category);
					break;
				}
			}
		}
	} else {
		m->category = arena_strdup(&c->d->arena, "marketing");
	}
}

static bool header_name_ok(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+.^_`|~-", *s))
			return false;
	return true;
}

static void parse_headers(struct cx *c, struct journey_webhook *w, struct json_object *h)
{
	static const char *const reserved[] = {"content-length",    "host",
					       "idempotency-key",   "x-nudge-signature",
					       "x-nudge-timestamp", "transfer-encoding",
					       "connection",	    NULL};
	size_t n = (size_t)json_object_object_length(h);
	char p[128];

	if (n > JOURNEY_MAX_HEADERS) {
		add_error(c, "webhook.headers", "more than %d headers",
			  JOURNEY_MAX_HEADERS);
		return;
	}
	w->headers = arena_calloc(&c->d->arena, n ? n : 1, sizeof(*w->headers));
	json_object_object_foreach(h, key, val)
	{
		struct journey_header *hd = &w->headers[w->nheaders];
		bool bad = false;
		const char *s;

		snprintf(p, sizeof(p), "webhook.headers.%.64s", key);
		if (!*key || strlen(key) > 128 || !header_name_ok(key)) {
			add_error(c, p, "invalid header name");
			continue;
		}
		for (size_t i = 0; reserved[i]; i++)
			bad |= strcasecmp(key, reserved[i]) == 0;
		if (bad) {
			add_error(c, p, "header '%.64s' is set by nudge", key);
			continue;
		}
		for (unsigned i = 0; i < w->nheaders && !bad; i++)
			bad = strcasecmp(key, w->headers[i].name) == 0;
		if (bad) {
			add_error(c, p, "header '%.64s' given twice (names ignore case)",
				  key);
			continue;
		}
		if (!json_object_is_type(val, json_type_string)) {
			add_error(c, p, "must be a string, not %s", json_type_word(val));
			continue;
		}
		s = json_object_get_string(val);
		if (strpbrk(s, "\r\n") ||
		    strlen(s) != (size_t)json_object_get_string_len(val)) {
			add_error(c, p, "must not contain line breaks or NUL");
			continue;
		}
		hd->name = arena_strdup(&c->d->arena, key);
		hd->value_src = arena_strdup(&c->d->arena, s);
		if ((hd->value = compile_liquid(c, p, s, strlen(s))))
			w->nheaders++;
	}
}

static void parse_webhook(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"url",     "method",	  "headers",
					   "body",    "template", "timeout",
					   "retries", "capture",  NULL};
	struct journey_webhook *w = &st->u.webhook;
	struct json_object *m, *h, *r, *cap;

	w->timeout_ms = JOURNEY_DEFAULT_WEBHOOK_MS;
	w->retries = JOURNEY_DEFAULT_RETRIES;
	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "webhook", "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, "webhook", keys);
	if ((w->url_src = get_str(c, v, "webhook", "url", true, MAX_URL_BYTES))) {
		if (strncasecmp(w->url_src, "http://", 7) != 0 &&
		    strncasecmp(w->url_src, "https://", 8) != 0)
			add_error(c, "webhook.url",
				  "must start with http:// or https://");
		else
			w->url = compile_liquid(c, "webhook.url", w->url_src,
						strlen(w->url_src));
	}
	if ((m = get_typed(c, v, "webhook", "method", json_type_string, false))) {
		const char *s = json_object_get_string(m);

		if (strcmp(s, "POST") == 0)
			w->method = JOURNEY_HTTP_POST;
		else if (strcmp(s, "PUT") == 0)
			w->method = JOURNEY_HTTP_PUT;
		else
			add_error(c, "webhook.method", "must be POST or PUT, not '%.32s'",
				  s);
	}
	if ((h = get_typed(c, v, "webhook", "headers", json_type_object, false)))
		parse_headers(c, w, h);
	if (json_object_object_get_ex(v, "body", NULL) ==
	    json_object_object_get_ex(v, "template", NULL)) {
		add_error(c, "webhook",
			  "needs exactly one of body (inline Liquid) or template");
	} else if (json_object_object_get_ex(v, "body", NULL)) {
		if ((w->body_src = get_str(c, v, "webhook", "body", true, SIZE_MAX)))
			w->body = compile_liquid(c, "webhook.body", w->body_src,
						 strlen(w->body_src));
	} else {
		w->template_id = get_template_id(c, v, "webhook", "template", true);
		if (w->template_id)
			template_ok(c, "webhook.template", w->template_id, "webhook");
	}
	get_duration(c, v, "webhook", "timeout", false, JOURNEY_MAX_WEBHOOK_MS,
		     &w->timeout_ms);
	if ((r = get_typed(c, v, "webhook", "retries", json_type_int, false))) {
		int64_t n = json_object_get_int64(r);

		if (n < 0 || n > JOURNEY_MAX_RETRIES)
			add_error(c, "webhook.retries", "must be 0 to %d, not %lld",
				  JOURNEY_MAX_RETRIES, (long long)n);
		else
			w->retries = (unsigned)n;
	}
	if ((cap = get_typed(c, v, "webhook", "capture", json_type_boolean, false)))
		w->capture = json_object_get_boolean(cap);
}

static bool trait_ok(struct cx *c, const char *p, const char *s, size_t len)
{
	if (len == 0 || len > MAX_TRAIT_BYTES || memchr(s, 0, len)) {
		add_error(c, p, "invalid trait name (1 to %d bytes)", MAX_TRAIT_BYTES);
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20) {
			add_error(c, p, "invalid trait name (control character)");
			return false;
		}
	}
	return true;
}

static void parse_update_profile(struct cx *c, struct journey_step *st,
				 struct json_object *v)
{
	static const char *const keys[] = {"set", "unset", NULL};
	struct journey_update_profile *u = &st->u.update_profile;
	struct json_object *set, *unset;
	size_t nset = 0, nunset = 0;
	char p[160];

	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "update_profile", "must be an object, not %s",
			  json_type_word(v));
		return;
	}
	check_keys(c, v, "update_profile", keys);
	set = get_typed(c, v, "update_profile", "set", json_type_object, false);
	unset = get_typed(c, v, "update_profile", "unset", json_type_array, false);
	nset = set ? (size_t)json_object_object_length(set) : 0;
	nunset = unset ? json_object_array_length(unset) : 0;
	if (nset + nunset == 0) {
		add_error(c, "update_profile",
			  "needs at least one trait in set or unset");
		return;
	}
	if (nset + nunset > JOURNEY_MAX_TRAITS) {
		add_error(c, "update_profile", "more than %d traits", JOURNEY_MAX_TRAITS);
		return;
	}
	u->set = arena_calloc(&c->d->arena, nset ? nset : 1, sizeof(*u->set));
	u->unset = arena_calloc(&c->d->arena, nunset ? nunset : 1, sizeof(*u->unset));
	if (set) {
		json_object_object_foreach(set, key, val)
		{
			struct journey_trait_set *t = &u->set[u->nset];

			(void)val;
			snprintf(p, sizeof(p), "update_profile.set.%.64s", key);
			if (!trait_ok(c, p, key, strlen(key)))
				continue;
			if (get_cel(c, set, "update_profile.set", key, true, &t->value)) {
				t->trait = arena_strdup(&c->d->arena, key);
				u->nset++;
			}
		}
	}
	for (size_t i = 0; i < nunset; i++) {
		struct json_object *t = json_object_array_get_idx(unset, i);
		const char *s;

		snprintf(p, sizeof(p), "update_profile.unset[%zu]", i);
		if (!json_object_is_type(t, json_type_string)) {
			add_error(c, p, "must be a string, not %s", json_type_word(t));
			continue;
		}
		s = json_object_get_string(t);
		if (!trait_ok(c, p, s, (size_t)json_object_get_string_len(t)))
			continue;
		if (set && json_object_object_get_ex(set, s, NULL)) {
			add_error(c, p, "trait '%.64s' is both set and unset", s);
			continue;
		}
		u->unset[u->nunset++] = arena_strdup(&c->d->arena, s);
	}
}

static void parse_jump(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {"journey", NULL};

	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "jump", "must be an object, not %s", json_type_word(v));
		return;
	}
	check_keys(c, v, "jump", keys);
	st->u.jump.journey_id =
		get_id(c, v, "jump", "journey", true, JOURNEY_MAX_ID_BYTES, "journey id");
}

static void parse_end(struct cx *c, struct journey_step *st, struct json_object *v)
{
	static const char *const keys[] = {NULL};

	(void)st;
	if (!json_object_is_type(v, json_type_object)) {
		add_error(c, "end", "must be an empty object {}, not %s",
			  json_type_word(v));
		return;
	}
	check_keys(c, v, "end", keys);
}

static void parse_step(struct cx *c, unsigned idx, struct json_object *obj)
{
	struct journey_step *st = &c->d->steps[idx];
	struct json_object *kv = NULL;
	int kind = -1;
	char p[128];

	c->step = st->id;
	if (!json_object_is_type(obj, json_type_object)) {
		add_error(c, "", "a step must be an object, not %s", json_type_word(obj));
		c->ref_errors++;
		return;
	}
	/* Exactly one kind key. */
	for (int k = 0; k < JOURNEY_STEP__COUNT; k++) {
		struct json_object *v;

		if (!json_object_object_get_ex(obj, kind_names[k], &v))
			continue;
		if (kind >= 0) {
			add_error(c, kind_names[k],
				  "a step has one kind; this one has '%s' and '%s'",
				  kind_names[kind], kind_names[k]);
			return;
		}
		kind = k;
		kv = v;
	}
	if (kind < 0) {
		add_error(c, "",
			  "no step kind (one of branch, wait, wait_for, split, message, "
			  "webhook, update_profile, jump, end)");
		c->ref_errors++;
		json_object_object_foreach(obj, key0, val0)
		{
			bool route = strcmp(key0, "description") == 0;

			(void)val0;
			for (size_t i = 0; route_keys[i]; i++)
				route = route || strcmp(key0, route_keys[i]) == 0;
			if (!route)
				add_error(c, path(p, sizeof(p), "", key0),
					  "unknown field '%.64s'", key0);
		}
		return;
	}
	st->kind = (enum journey_step_kind)kind;
	/* Every other key: a routing key this kind takes, or description. */
	json_object_object_foreach(obj, key, val)
	{
		bool known = strcmp(key, kind_names[kind]) == 0 ||
			     strcmp(key, "description") == 0;
		bool route = false;

		(void)val;
		for (size_t i = 0; i < 2 && !known; i++)
			known = routes[kind].required[i] &&
				strcmp(key, routes[kind].required[i]) == 0;
		known = known || (routes[kind].optional[0] &&
				  strcmp(key, routes[kind].optional[0]) == 0);
		for (size_t i = 0; route_keys[i] && !known; i++)
			route = route || strcmp(key, route_keys[i]) == 0;
		if (known)
			continue;
		if (route)
			add_error(c, path(p, sizeof(p), "", key),
				  "%s %s step does not take '%s'",
				  strchr("aeiou", kind_names[kind][0]) ? "an" : "a",
				  kind_names[kind], key);
		else
			add_error(c, path(p, sizeof(p), "", key), "unknown field '%.64s'",
				  key);
	}
	st->description =
		json_object_object_get_ex(obj, "description", NULL)
			? get_str(c, obj, "", "description", false, MAX_TEXT_BYTES)
			: NULL;
	switch (st->kind) {
	case JOURNEY_STEP_BRANCH:
		parse_branch(c, st, kv);
		break;
	case JOURNEY_STEP_WAIT:
		parse_wait(c, st, kv);
		break;
	case JOURNEY_STEP_WAIT_FOR:
		parse_wait_for(c, st, kv);
		break;
	case JOURNEY_STEP_SPLIT:
		parse_split(c, st, kv);
		break;
	case JOURNEY_STEP_MESSAGE:
		parse_message(c, st, kv);
		break;
	case JOURNEY_STEP_WEBHOOK:
		parse_webhook(c, st, kv);
		break;
	case JOURNEY_STEP_UPDATE_PROFILE:
		parse_update_profile(c, st, kv);
		break;
	case JOURNEY_STEP_JUMP:
		parse_jump(c, st, kv);
		break;
	case JOURNEY_STEP_END:
		parse_end(c, st, kv);
		break;
	case JOURNEY_STEP__COUNT:
		break;
	}
	/* Routing. */
	switch (st->kind) {
	case JOURNEY_STEP_BRANCH:
		get_ref(c, obj, "", "else", true, &st->else_next);
		break;
	case JOURNEY_STEP_WAIT_FOR:
		get_ref(c, obj, "", "on_event", true, &st->on_event);
		get_ref(c, obj, "", "on_timeout", true, &st->on_timeout);
		break;
	case JOURNEY_STEP_WEBHOOK:
		get_ref(c, obj, "", "next", true, &st->next);
		get_ref(c, obj, "", "on_failure", false, &st->on_failure);
		break;
	case JOURNEY_STEP_WAIT:
	case JOURNEY_STEP_MESSAGE:
	case JOURNEY_STEP_UPDATE_PROFILE:
		get_ref(c, obj, "", "next", true, &st->next);
		break;
	case JOURNEY_STEP_JUMP:
		get_ref(c, obj, "", "next", false, &st->next);
		break;
	case JOURNEY_STEP_SPLIT:
	case JOURNEY_STEP_END:
	case JOURNEY_STEP__COUNT:
		break;
	}
}

/* ----------------------------------------------------------- journey level */

/*
 * A business entry's `who` is evaluated for every profile unless it can only hold
 * when a value computed from the event is in (or equal to) a trait: then the
 * runtime takes the candidates from its trait index (expr_index_condition).
 */
static void find_who_index(struct cx *c, struct journey_entry *en)
{
	static const char *const fields[] = {"traits"};
	static const size_t allowed[] = {JOURNEY_VAR_EVENT, JOURNEY_VAR_NOW};
	struct expr_program *value;
	const char *trait;

	if (expr_env_var_count(c->env) != JOURNEY_VAR__COUNT)
		return; /* not our environment: the slots mean something else */
	if (!expr_index_condition(en->who.prog, JOURNEY_VAR_PROFILE, fields, 1, allowed,
				  2, &trait, &value))
		return;
	c->d->progs = xrealloc(c->d->progs, (c->d->nprogs + 1) * sizeof(*c->d->progs));
	c->d->progs[c->d->nprogs++] = value;
	en->index_trait = arena_strdup(&c->d->arena, trait);
	en->index_value = value;
}

/*
 * entry: exactly one of event, audience, business_event says what enters a
 * profile; `on` belongs to audience entries and `who` to business entries only,
 * so a document never carries a field that silently does nothing.
 */
static void parse_entry(struct cx *c, struct json_object *root)
{
	static const char *const keys[] = {"event",	     "when", "key", "audience",
					   "business_event", "on",   "who", NULL};
	struct journey_entry *en = &c->d->entry;
	struct json_object *e = get_typed(c, root, "", "entry", json_type_object, true);
	struct json_object *on;
	bool has_event, has_audience, has_business;

	if (!e)
		return;
	check_keys(c, e, "entry", keys);
	has_event = json_object_object_get_ex(e, "event", NULL);
	has_audience = json_object_object_get_ex(e, "audience", NULL);
	has_business = json_object_object_get_ex(e, "business_event", NULL);
	if ((int)has_event + (int)has_audience + (int)has_business != 1) {
		add_error(c, "entry",
			  "give exactly one of event, audience, business_event");
		return;
	}
	if (has_event) {
		en->kind = JOURNEY_ENTRY_EVENT;
		en->event = get_str(c, e, "entry", "event", true, MAX_NAME_BYTES);
	} else if (has_audience) {
		en->kind = JOURNEY_ENTRY_AUDIENCE;
		en->audience = get_id(c, e, "entry", "audience", true,
				      JOURNEY_MAX_ID_BYTES, "audience id");
	} else {
		en->kind = JOURNEY_ENTRY_BUSINESS;
		en->event =
			get_str(c, e, "entry", "business_event", true, MAX_NAME_BYTES);
	}
	if ((on = get_typed(c, e, "entry", "on", json_type_string, false))) {
		const char *v = json_object_get_string(on);

		if (!has_audience)
			add_error(c, "entry.on", "only applies to an audience entry");
		else if (strcmp(v, "exit") == 0)
			en->on_exit = true;
		else if (strcmp(v, "enter") != 0)
			add_error(c, "entry.on",
				  "must be \"enter\" or \"exit\", not '%.64s'", v);
	}
	if (has_business && get_cel(c, e, "entry", "who", true, &en->who))
		find_who_index(c, en);
	else if (!has_business && json_object_object_get_ex(e, "who", NULL))
		add_error(c, "entry.who", "only applies to a business_event entry");
	get_cel(c, e, "entry", "when", false, &en->when);
	get_cel(c, e, "entry", "key", false, &en->key);
}

static void parse_reentry(struct cx *c, struct json_object *root)
{
	static const char *const keys[] = {"allow", "after", NULL};
	struct json_object *r, *a;

	c->d->reentry.allow = true;
	if (!(r = get_typed(c, root, "", "reentry", json_type_object, false)))
		return;
	check_keys(c, r, "reentry", keys);
	if ((a = get_typed(c, r, "reentry", "allow", json_type_boolean, false)))
		c->d->reentry.allow = json_object_get_boolean(a);
	if (json_object_object_get_ex(r, "after", NULL)) {
		if (!c->d->reentry.allow)
			add_error(c, "reentry.after",
				  "has no effect when allow is false (once ever)");
		get_duration(c, r, "reentry", "after", false, 0, &c->d->reentry.after_ms);
	}
}

static void parse_exits(struct cx *c, struct json_object *root)
{
	static const char *const keys[] = {"event", "when", NULL};
	struct json_object *x = get_typed(c, root, "", "exit", json_type_array, false);
	size_t n;
	char p[32];

	if (!x)
		return;
	n = json_object_array_length(x);
	if (n > JOURNEY_MAX_EXITS) {
		add_error(c, "exit", "more than %d exit criteria", JOURNEY_MAX_EXITS);
		return;
	}
	c->d->exits = arena_calloc(&c->d->arena, n ? n : 1, sizeof(*c->d->exits));
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(x, i);
		struct journey_exit *ex = &c->d->exits[c->d->nexits];

		snprintf(p, sizeof(p), "exit[%zu]", i);
		if (!json_object_is_type(e, json_type_object)) {
			add_error(c, p, "must be an object, not %s", json_type_word(e));
			continue;
		}
		check_keys(c, e, p, keys);
		ex->event = get_str(c, e, p, "event", true, MAX_NAME_BYTES);
		get_cel(c, e, p, "when", false, &ex->when);
		if (ex->event)
			c->d->nexits++;
	}
}

static void parse_goal(struct cx *c, struct json_object *root)
{
	static const char *const keys[] = {"event", "when", "within", "value", NULL};
	struct json_object *g = get_typed(c, root, "", "goal", json_type_object, false);
	struct journey_goal *goal = &c->d->goal;

	if (!g)
		return;
	check_keys(c, g, "goal", keys);
	c->d->has_goal = true;
	goal->event = get_str(c, g, "goal", "event", true, MAX_NAME_BYTES);
	get_cel(c, g, "goal", "when", false, &goal->when);
	get_duration(c, g, "goal", "within", false, c->lim.max_wait_ms, &goal->within_ms);
	get_cel(c, g, "goal", "value", false, &goal->value);
}

/* ------------------------------------------------------------------- graph */

/* Fills out with the successors of step s; returns how many. */
static unsigned successors(const struct journey_step *s, int *out)
{
	unsigned n = 0;

	if (s->kind == JOURNEY_STEP_BRANCH)
		for (unsigned i = 0; i < s->u.branch.narms; i++)
			out[n++] = s->u.branch.arms[i].next;
	if (s->kind == JOURNEY_STEP_SPLIT)
		for (unsigned i = 0; i < s->u.split.narms; i++)
			out[n++] = s->u.split.arms[i].next;
	out[n++] = s->next;
	out[n++] = s->else_next;
	out[n++] = s->on_event;
	out[n++] = s->on_timeout;
	out[n++] = s->on_failure;
	return n;
}

#define MAX_SUCC (JOURNEY_MAX_ARMS + 5)

/* Marks in seen[] the steps reachable from start without passing through skip
 * (-1 = none). */
static void reach(const struct journey_def *d, int skip, bool *seen)
{
	unsigned *stack = xmalloc(d->nsteps * sizeof(*stack)), top = 0;
	int succ[MAX_SUCC];

	memset(seen, 0, d->nsteps * sizeof(*seen));
	if ((int)d->start != skip) {
		seen[d->start] = true;
		stack[top++] = d->start;
	}
	while (top) {
		unsigned u = stack[--top], n = successors(&d->steps[u], succ);

		for (unsigned i = 0; i < n; i++) {
			int v = succ[i];

			if (v >= 0 && v != skip && !seen[v]) {
				seen[v] = true;
				stack[top++] = (unsigned)v;
			}
		}
	}
	free(stack);
}

static bool waits(const struct journey_step *s)
{
	return s->kind == JOURNEY_STEP_WAIT || s->kind == JOURNEY_STEP_WAIT_FOR;
}

/*
 * Finds cycles made only of steps that do not wait: an iterative depth-first
 * search over those steps; each back edge closes one such cycle, reported at the
 * step it returns to, with the path.
 */
static void check_loops(struct cx *c)
{
	const struct journey_def *d = c->d;
	unsigned n = d->nsteps;
	unsigned char *color = xcalloc(n, 1); /* 0 white, 1 on stack, 2 done */
	unsigned *stack = xmalloc(n * sizeof(*stack)), *pos = xcalloc(n, sizeof(*pos));
	int succ[MAX_SUCC];

	for (unsigned root = 0; root < n; root++) {
		unsigned top = 0;

		if (color[root] || waits(&d->steps[root]))
			continue;
		stack[top++] = root;
		color[root] = 1;
		pos[root] = 0;
		while (top) {
			unsigned u = stack[top - 1];
			unsigned ns = successors(&d->steps[u], succ);
			int v = -1;

			while (pos[u] < ns) {
				int w = succ[pos[u]++];

				if (w < 0 || waits(&d->steps[w]))
					continue;
				if (color[w] == 1) {
					struct buf b;
					unsigned k = 0;

					buf_init(&b, 200);
					while (stack[k] != (unsigned)w)
						k++;
					for (unsigned j = k; j < top; j++)
						if (buf_printf(&b, "%s -> ",
							       d->steps[stack[j]].id))
							break;
					buf_printf(&b, "%s", d->steps[w].id);
					c->step = d->steps[w].id;
					add_error(c, "",
						  "loop without a wait: %s (put a wait "
						  "or wait_for "
						  "step in it)",
						  buf_str(&b));
					buf_fini(&b);
					continue;
				}
				if (color[w] == 0) {
					v = w;
					break;
				}
			}
			if (v >= 0) {
				color[v] = 1;
				pos[v] = 0;
				stack[top++] = (unsigned)v;
			} else {
				color[u] = 2;
				top--;
			}
		}
	}
	free(pos);
	free(stack);
	free(color);
}

static void check_graph(struct cx *c)
{
	struct journey_def *d = c->d;
	bool *seen = xcalloc(d->nsteps, sizeof(*seen)), *seen2;

	if (c->ref_errors == 0) {
		reach(d, -1, seen);
		for (unsigned i = 0; i < d->nsteps; i++) {
			if (!seen[i]) {
				c->step = d->steps[i].id;
				add_error(c, "", "unreachable from start step '%s'",
					  d->steps[d->start].id);
			}
		}
	}
	check_loops(c);
	/* Engagement waits name a message step on every path to them. */
	seen2 = xcalloc(d->nsteps, sizeof(*seen2));
	for (unsigned i = 0; i < d->nsteps; i++) {
		const struct journey_step *s = &d->steps[i];
		const struct journey_step *m;
		int ms = s->u.wait_for.message_step;

		if (s->kind != JOURNEY_STEP_WAIT_FOR ||
		    s->u.wait_for.mode != JOURNEY_WAIT_FOR_ENGAGEMENT || ms < 0)
			continue;
		c->step = s->id;
		m = &d->steps[ms];
		if (m->kind != JOURNEY_STEP_MESSAGE) {
			add_error(c, "wait_for.step",
				  "step '%s' is a %s step, not a message step", m->id,
				  kind_names[m->kind]);
			continue;
		}
		if (m->u.message.channel == JOURNEY_CHANNEL_SMS &&
		    s->u.wait_for.engagement == JOURNEY_ENGAGEMENT_OPENED)
			add_error(
				c, "wait_for.engagement",
				"an sms message has no opened engagement (use clicked)");
		reach(d, ms, seen2);
		if (c->ref_errors == 0 && (ms == (int)i || seen2[i]))
			add_error(
				c, "wait_for.step",
				"message step '%s' is not on every path before this step",
				m->id);
	}
	free(seen2);
	free(seen);
}

/* ------------------------------------------------------------------- index */

static void build_index(struct journey_def *d)
{
	d->by_id = arena_calloc(&d->arena, d->nsteps ? d->nsteps : 1, sizeof(*d->by_id));
	for (unsigned i = 0; i < d->nsteps; i++)
		d->by_id[i] = i;
	/* Insertion sort: at most a few thousand ids, and no qsort context needed. */
	for (unsigned i = 1; i < d->nsteps; i++) {
		unsigned v = d->by_id[i], j = i;

		while (j > 0 &&
		       strcmp(d->steps[d->by_id[j - 1]].id, d->steps[v].id) > 0) {
			d->by_id[j] = d->by_id[j - 1];
			j--;
		}
		d->by_id[j] = v;
	}
}

int journey_def_step_index(const struct journey_def *d, const char *id)
{
	unsigned lo = 0, hi = d->nsteps;

	if (!d->by_id || !id)
		return -1;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		int r = strcmp(d->steps[d->by_id[mid]].id, id);

		if (r == 0)
			return (int)d->by_id[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static void add_event(struct journey_def *d, const char *name, unsigned *cap)
{
	if (!name)
		return;
	for (unsigned i = 0; i < d->nevents; i++)
		if (strcmp(d->events[i], name) == 0)
			return;
	if (d->nevents == *cap) {
		char **n = arena_alloc(&d->arena, (*cap * 2 + 4) * sizeof(*n));

		if (d->nevents)
			memcpy(n, d->events, d->nevents * sizeof(*n));
		d->events = n;
		*cap = *cap * 2 + 4;
	}
	d->events[d->nevents++] = (char *)name;
}

static void build_events(struct journey_def *d)
{
	unsigned cap = 0;

	if (d->entry.kind == JOURNEY_ENTRY_EVENT)
		add_event(d, d->entry.event, &cap);
	for (unsigned i = 0; i < d->nsteps; i++)
		if (d->steps[i].kind == JOURNEY_STEP_WAIT_FOR &&
		    d->steps[i].u.wait_for.mode == JOURNEY_WAIT_FOR_EVENT)
			add_event(d, d->steps[i].u.wait_for.event, &cap);
	for (unsigned i = 0; i < d->nexits; i++)
		add_event(d, d->exits[i].event, &cap);
	if (d->has_goal)
		add_event(d, d->goal.event, &cap);
}

const char *const *journey_def_events(const struct journey_def *d, unsigned *n)
{
	*n = d->nevents;
	return (const char *const *)d->events;
}

/* ----------------------------------------------------------------- compile */

/* Records a JSON syntax error with the line and column of offset. */
static void json_error(struct cx *c, const char *json, size_t off, const char *desc)
{
	unsigned line = 1, col = 1;

	for (size_t i = 0; i < off; i++) {
		if (json[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	add_error(c, "", "invalid JSON at line %u, column %u: %s", line, col, desc);
}

static struct json_object *parse_json(struct cx *c, const char *json, size_t len,
				      enum nerr *rc)
{
	struct json_tokener *tok = json_tokener_new_ex((int)c->lim.max_depth);
	struct json_object *root;
	enum json_tokener_error jerr;
	size_t end;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, json, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (!root && jerr == json_tokener_continue)
		jerr = json_tokener_error_parse_eof;
	if (!root || jerr != json_tokener_success) {
		json_error(c, json, end, json_tokener_error_desc(jerr));
		json_object_put(root);
		root = NULL;
	} else {
		while (end < len && strchr(" \t\r\n", json[end]))
			end++;
		if (end != len) {
			json_error(c, json, end, "unexpected data after the document");
			json_object_put(root);
			root = NULL;
		}
	}
	json_tokener_free(tok);
	*rc = root ? NERR_OK : NERR_PARSE;
	return root;
}

static void parse_document(struct cx *c, struct json_object *root)
{
	static const char *const keys[] = {
		"id",	   "name", "description", "timezone", "webhook_secret", "entry",
		"reentry", "exit", "goal",	  "start",    "steps",		NULL};
	struct journey_def *d = c->d;
	struct json_object *steps, *start;
	size_t n;
	unsigned i = 0;

	check_keys(c, root, "", keys);
	d->id = get_id(c, root, "", "id", true, JOURNEY_MAX_ID_BYTES, "journey id");
	d->name = get_str(c, root, "", "name", false, MAX_NAME_BYTES);
	d->description = get_str(c, root, "", "description", false, MAX_TEXT_BYTES);
	d->timezone = get_zone(c, root, "", "timezone");
	d->webhook_secret =
		get_str(c, root, "", "webhook_secret", false, MAX_SECRET_BYTES);
	parse_entry(c, root);
	parse_reentry(c, root);
	parse_exits(c, root);
	parse_goal(c, root);
	start = get_typed(c, root, "", "start", json_type_string, true);
	if (!(steps = get_typed(c, root, "", "steps", json_type_object, true)))
		return;
	n = (size_t)json_object_object_length(steps);
	if (n == 0) {
		add_error(c, "steps", "must have at least one step");
		return;
	}
	if (n > c->lim.max_steps) {
		add_error(c, "steps", "%zu steps, more than the limit of %u", n,
			  c->lim.max_steps);
		return;
	}
	d->steps = arena_calloc(&d->arena, n, sizeof(*d->steps));
	d->nsteps = (unsigned)n;
	json_object_object_foreach(steps, key, val)
	{
		struct journey_step *st = &d->steps[i++];

		(void)val;
		st->id = arena_strdup(&d->arena, key);
		st->next = st->else_next = st->on_event = st->on_timeout =
			st->on_failure = -1;
		if (!id_valid_n(key, strlen(key), JOURNEY_MAX_ID_BYTES)) {
			c->step = st->id;
			add_error(c, "",
				  "invalid step id (use 1 to %d of A-Z a-z 0-9 _ -)",
				  JOURNEY_MAX_ID_BYTES);
			c->step = "";
		}
	}
	build_index(d);
	if (start) {
		int s = journey_def_step_index(d, json_object_get_string(start));

		if (s < 0) {
			add_error(c, "start", "unknown step '%.64s'",
				  json_object_get_string(start));
			c->ref_errors++;
		} else {
			d->start = (unsigned)s;
		}
	} else {
		c->ref_errors++;
	}
	i = 0;
	json_object_object_foreach(steps, key2, val2)
	{
		(void)key2;
		parse_step(c, i++, val2);
	}
	c->step = "";
	if (start && journey_def_step_index(d, json_object_get_string(start)) >= 0)
		check_graph(c);
	else
		check_loops(c);
	c->step = "";
	build_events(d);
}

enum nerr journey_def_compile(const char *json, size_t len,
			      const struct journey_limits *lim,
			      const struct expr_env *env,
			      journey_template_exists_fn template_exists, void *ud,
			      struct journey_def **out, struct journey_errors *errs)
{
	struct cx c = {.errs = errs,
		       .env = env,
		       .template_exists = template_exists,
		       .ud = ud,
		       .step = ""};
	struct json_object *root = NULL;
	struct journey_def *d;
	enum nerr rc = NERR_OK;
	char lim_text[64];

	*out = NULL;
	journey_limits_default(&c.lim);
	if (lim) {
		if (lim->max_steps)
			c.lim.max_steps = lim->max_steps;
		if (lim->max_wait_ms)
			c.lim.max_wait_ms = lim->max_wait_ms;
		if (lim->max_def_bytes)
			c.lim.max_def_bytes = lim->max_def_bytes;
		if (lim->max_depth)
			c.lim.max_depth = lim->max_depth;
	}
	d = xcalloc(1, sizeof(*d));
	arena_init(&d->arena, 16 * 1024);
	c.d = d;
	c.empty = json_object_new_object();
	arena_init(&c.scratch, 0);
	c.scratch.limit_bytes = 4u << 20;
	if (len > c.lim.max_def_bytes || len > INT32_MAX) {
		snprintf(lim_text, sizeof(lim_text), "%zu", c.lim.max_def_bytes);
		add_error(&c, "", "document is %zu bytes, more than the limit of %s", len,
			  lim_text);
		rc = NERR_TOOBIG;
		goto out;
	}
	if (!(root = parse_json(&c, json, len, &rc)))
		goto out;
	if (!json_object_is_type(root, json_type_object)) {
		add_error(&c, "", "a journey must be a JSON object, not %s",
			  json_type_word(root));
		rc = NERR_INVAL;
		goto out;
	}
	parse_document(&c, root);
	if (c.nerrs) {
		rc = NERR_INVAL;
		goto out;
	}
	d->source_json = arena_strndup(&d->arena, json, len);
	d->source_len = len;
	*out = d;
	d = NULL;
out:
	arena_fini(&c.scratch);
	json_object_put(c.empty);
	json_object_put(root);
	journey_def_free(d);
	return rc;
}

void journey_def_free(struct journey_def *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < d->nprogs; i++)
		expr_program_free(d->progs[i]);
	for (unsigned i = 0; i < d->ntmpls; i++)
		tmpl_free(d->tmpls[i]);
	free(d->progs);
	free(d->tmpls);
	arena_fini(&d->arena);
	free(d);
}

/* ------------------------------------------------------ CEL env and functions */

void journey_eval_ctx_set(const struct journey_eval_ctx *ctx)
{
	tl_ctx = ctx;
}

const struct journey_eval_ctx *journey_eval_ctx_get(void)
{
	return tl_ctx;
}

/* Reads a window argument (a duration, or a string like "7d") into ms. */
static bool window_ms(const struct expr_call *call, const struct expr_value *v,
		      int64_t *ms)
{
	if (v->kind == EXPR_DURATION) {
		if (v->as.sec < 0 || v->as.sec > DURATION_MAX_MS / 1000)
			return false;
		*ms = v->as.sec * 1000 + v->nsec / 1000000;
		return *ms > 0;
	}
	if (v->kind == EXPR_STRING) {
		char *s = arena_strndup(call->scratch, v->as.s, v->len);

		return s && journey_duration_parse(s, ms) == NERR_OK;
	}
	return false;
}

static struct expr_value fn_event_count(const struct expr_call *call,
					const struct expr_value *args, size_t nargs)
{
	const struct journey_eval_ctx *ctx = tl_ctx;
	char *name, *pred = NULL;
	int64_t ms, n;

	if (args[0].kind != EXPR_STRING ||
	    (args[1].kind != EXPR_DURATION && args[1].kind != EXPR_STRING) ||
	    (nargs == 3 && args[2].kind != EXPR_STRING))
		return expr_value_error(call, "no such overload: event_count (use "
					      "event_count(string, duration[, string]))");
	if (!window_ms(call, &args[1], &ms))
		return expr_value_error(call, "event_count: invalid window (use e.g. "
					      "duration(\"24h\") or \"7d\")");
	if (!ctx || !ctx->event_count)
		return expr_value_error(call, "event_count is not available here");
	name = arena_strndup(call->scratch, args[0].as.s, args[0].len);
	if (nargs == 3)
		pred = arena_strndup(call->scratch, args[2].as.s, args[2].len);
	if (!name || (nargs == 3 && !pred))
		return expr_value_error(call, "event_count: out of memory");
	n = ctx->event_count(ctx->ud, name, ms, pred);
	if (n < 0)
		return expr_value_error(call, "event_count failed");
	return expr_value_int(n);
}

static struct expr_value fn_consent(const struct expr_call *call,
				    const struct expr_value *args, size_t nargs)
{
	const struct journey_eval_ctx *ctx = tl_ctx;
	char *channel, *purpose = NULL;
	int r;

	if (args[0].kind != EXPR_STRING || (nargs == 2 && args[1].kind != EXPR_STRING))
		return expr_value_error(call, "no such overload: consent (use "
					      "consent(string[, string]))");
	if (!ctx || !ctx->consent)
		return expr_value_error(call, "consent is not available here");
	channel = arena_strndup(call->scratch, args[0].as.s, args[0].len);
	if (nargs == 2)
		purpose = arena_strndup(call->scratch, args[1].as.s, args[1].len);
	if (!channel || (nargs == 2 && !purpose))
		return expr_value_error(call, "consent: out of memory");
	r = ctx->consent(ctx->ud, channel, purpose);
	if (r < 0)
		return expr_value_error(call, "consent failed");
	return expr_value_bool(r > 0);
}

static struct expr_value fn_in_audience(const struct expr_call *call,
					const struct expr_value *args, size_t nargs)
{
	const struct journey_eval_ctx *ctx = tl_ctx;
	char *id;
	int r;

	(void)nargs;
	if (args[0].kind != EXPR_STRING)
		return expr_value_error(call, "no such overload: in_audience (use "
					      "in_audience(string))");
	if (!ctx || !ctx->in_audience)
		return expr_value_error(call, "in_audience is not available here");
	if (!(id = arena_strndup(call->scratch, args[0].as.s, args[0].len)))
		return expr_value_error(call, "in_audience: out of memory");
	r = ctx->in_audience(ctx->ud, id);
	if (r < 0)
		return expr_value_error(call, "in_audience failed");
	return expr_value_bool(r > 0);
}

struct expr_env *journey_env_new(void)
{
	static const char *const vars[JOURNEY_VAR__COUNT] = {
		[JOURNEY_VAR_EVENT] = "event",
		[JOURNEY_VAR_PROFILE] = "profile",
		[JOURNEY_VAR_JOURNEY] = "journey",
		[JOURNEY_VAR_NOW] = "now",
	};
	struct expr_env *env = expr_env_new();
	size_t slot;

	for (size_t i = 0; i < JOURNEY_VAR__COUNT; i++) {
		ASSERT(expr_env_add_var(env, vars[i], &slot) == NERR_OK);
		ASSERT(slot == i);
	}
	ASSERT(expr_env_add_function(env, "event_count", 2, fn_event_count, NULL) ==
	       NERR_OK);
	ASSERT(expr_env_add_function(env, "event_count", 3, fn_event_count, NULL) ==
	       NERR_OK);
	ASSERT(expr_env_add_function(env, "consent", 1, fn_consent, NULL) == NERR_OK);
	ASSERT(expr_env_add_function(env, "consent", 2, fn_consent, NULL) == NERR_OK);
	ASSERT(expr_env_add_function(env, "in_audience", 1, fn_in_audience, NULL) ==
	       NERR_OK);
	return env;
}
