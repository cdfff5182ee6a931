/*
 * computed.c -- computed attributes: definitions, and the small JSON state each
 * (profile, attribute) pair keeps so its value updates per event in O(1) (all
 * time) or O(window) (sliding window).
 *
 * Design: the runtime (audience.c) owns the states and the clock; this file only
 * folds events into states, expires window items, reads values and merges states,
 * so every rule below is testable without a store. A definition names one event,
 * one aggregate and (except count) a CEL `value` evaluated on each such event with
 * `event` and `now` bound; profile and journey are null and no journey_eval_ctx is
 * set, so event_count(), consent() and in_audience() fail. The compiler refuses
 * sources that name profile, journey or one of those functions outside a string
 * (a lexical check: it may refuse a comprehension variable called `profile`; it
 * never lets a real reference through), and, like journey definitions, probes the
 * program once on an empty event to refuse undeclared names and unknown functions
 * that trial reaches.
 *
 * State (a json-c object; the caller stores its JSON text). Every state carries
 * its definition's shape, {"agg": "sum", "window_ms": 0, ...}; a state whose shape
 * differs (the attribute was redefined) or that is damaged is treated as empty,
 * and computed_apply() replaces it. The rest depends on the aggregate:
 *   all time (window_ms 0):
 *     count           "n": events counted
 *     sum             "sum": the running total, a JSON int while every input was an
 *                     int and no overflow happened, else a JSON double (json-c writes
 *                     a whole double as "3.0", so the type survives storage)
 *     min, max        "v": the number so far (absent while empty)
 *     first, last     "v": the value, "t": its event time in ms (both absent while
 *                     empty)
 *     distinct_count  "set": {canonical JSON text: 1, ...}, "capped": true once a
 *                     new value arrived while the set held COMPUTED_MAX_DISTINCT
 *                     values; from then on nothing is added and the value stays at
 *                     the cap
 *   windowed (window_ms > 0):
 *     "items": [[t, v], ...] the accepted events still inside the window, sorted
 *     by event time t (ms), equal times in apply order; count keeps [t], sum, min
 *     and max a number, first and last the value, distinct_count the value's
 *     canonical JSON text. Values are recomputed from the items on read.
 * Invariants: (1) items are sorted by time, ties in apply order, so first is
 *   items[0] (earliest apply wins a tie) and last the final item (latest apply
 *   wins); (2) an item stays while now - t < window_ms: computed_next_boundary() is
 *   exactly the time computed_expire() drops the oldest one; (3) at most
 *   COMPUTED_MAX_ITEMS items: beyond, the oldest are dropped (so a windowed count
 *   saturates at the cap); (4) every kept value is non-null JSON whose canonical text
 *   fits COMPUTED_MAX_VALUE_BYTES; sum, min and max keep only finite numbers (a CEL
 *   uint above INT64_MAX is kept as a double).
 * Canonical JSON (distinct_count): object keys sorted bytewise, no whitespace,
 *   strings with the minimal escapes, numbers by value (1 and 1.0 are one value; the
 *   string "1" is another), doubles in the shortest form that reads back the same.
 * Threading: definitions are immutable after compile; states are not shared.
 * References: docs/audiences.md ("Computed attributes"), docs/expressions.md.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "audience/computed.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "journey/def.h"

#define CANON_MAX_DEPTH 64

struct computed_def {
	char *id;    /* owned */
	char *event; /* owned */
	enum computed_agg agg;
	char *value_src;	    /* owned; NULL for count */
	struct expr_program *value; /* owned; NULL for count */
	int64_t window_ms;	    /* 0 = all time */
};

static const char *const agg_names[COMPUTED__COUNT] = {
	[COMPUTED_COUNT] = "count",
	[COMPUTED_SUM] = "sum",
	[COMPUTED_MIN] = "min",
	[COMPUTED_MAX] = "max",
	[COMPUTED_FIRST] = "first",
	[COMPUTED_LAST] = "last",
	[COMPUTED_DISTINCT_COUNT] = "distinct_count",
};

const char *computed_agg_name(enum computed_agg agg)
{
	return (unsigned)agg < COMPUTED__COUNT ? agg_names[agg] : "?";
}

/* ------------------------------------------------------------ small helpers */

static struct json_object *jget(const struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static bool is_int(const struct json_object *v)
{
	return json_object_is_type(v, json_type_int);
}

static bool is_number(const struct json_object *v)
{
	return json_object_is_type(v, json_type_int) ||
	       json_object_is_type(v, json_type_double);
}

/* A new reference to a copy of v (NULL stays NULL). */
static struct json_object *copy(const struct json_object *v)
{
	struct json_object *dst = NULL;

	if (!v)
		return NULL;
	if (json_object_deep_copy((struct json_object *)v, &dst, NULL) != 0)
		ASSERT(!"json_object_deep_copy failed");
	return dst;
}

/* Compares two JSON numbers by value (int64 against double exactly enough: a long
 * double holds every int64). */
static int num_cmp(const struct json_object *a, const struct json_object *b)
{
	long double x, y;

	if (is_int(a) && is_int(b)) {
		int64_t i = json_object_get_int64(a), j = json_object_get_int64(b);
		return (i > j) - (i < j);
	}
	x = is_int(a) ? (long double)json_object_get_int64(a) : json_object_get_double(a);
	y = is_int(b) ? (long double)json_object_get_int64(b) : json_object_get_double(b);
	return (x > y) - (x < y);
}

/* A running sum: an int until a double arrives or the int overflows. */
struct sum_acc {
	bool dbl;
	int64_t i;
	double d;
};

static void acc_add(struct sum_acc *a, const struct json_object *x)
{
	if (!a->dbl && is_int(x)) {
		int64_t y = json_object_get_int64(x), r;

		if (!__builtin_add_overflow(a->i, y, &r)) {
			a->i = r;
			return;
		}
		a->dbl = true;
		a->d = (double)a->i + (double)y;
		return;
	}
	if (!a->dbl) {
		a->dbl = true;
		a->d = (double)a->i;
	}
	a->d += is_int(x) ? (double)json_object_get_int64(x) : json_object_get_double(x);
}

static struct json_object *acc_json(const struct sum_acc *a)
{
	return a->dbl ? json_object_new_double(a->d) : json_object_new_int64(a->i);
}

/* ----------------------------------------------------------- canonical JSON */

static enum nerr canon(struct buf *b, struct json_object *v, int depth);

static enum nerr canon_string(struct buf *b, const char *s, size_t len)
{
	enum nerr rc = buf_putc(b, '"');

	for (size_t i = 0; i < len && rc == NERR_OK; i++) {
		unsigned char c = (unsigned char)s[i];

		switch (c) {
		case '"':
			rc = buf_puts(b, "\\\"");
			break;
		case '\\':
			rc = buf_puts(b, "\\\\");
			break;
		case '\b':
			rc = buf_puts(b, "\\b");
			break;
		case '\f':
			rc = buf_puts(b, "\\f");
			break;
		case '\n':
			rc = buf_puts(b, "\\n");
			break;
		case '\r':
			rc = buf_puts(b, "\\r");
			break;
		case '\t':
			rc = buf_puts(b, "\\t");
			break;
		default:
			rc = c < 0x20 ? buf_printf(b, "\\u%04x", c)
				      : buf_putc(b, (char)c);
		}
	}
	return rc ? rc : buf_putc(b, '"');
}

static enum nerr canon_double(struct buf *b, double d)
{
	char tmp[40];

	if (d == 0)
		return buf_putc(b, '0'); /* also -0 */
	if (isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0)
		return buf_printf(b, "%.0f", d); /* 1.0 reads as 1 */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	return buf_puts(b, tmp);
}

static int key_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static enum nerr canon_object(struct buf *b, struct json_object *v, int depth)
{
	size_t n = (size_t)json_object_object_length(v), k = 0;
	const char **keys = xmalloc((n ? n : 1) * sizeof(*keys));
	enum nerr rc;

	json_object_object_foreach(v, key, val)
	{
		(void)val;
		keys[k++] = key;
	}
	qsort(keys, k, sizeof(*keys), key_cmp);
	rc = buf_putc(b, '{');
	for (size_t i = 0; i < k && rc == NERR_OK; i++) {
		if (i)
			rc = buf_putc(b, ',');
		if (rc == NERR_OK)
			rc = canon_string(b, keys[i], strlen(keys[i]));
		if (rc == NERR_OK)
			rc = buf_putc(b, ':');
		if (rc == NERR_OK)
			rc = canon(b, jget(v, keys[i]), depth + 1);
	}
	if (rc == NERR_OK)
		rc = buf_putc(b, '}');
	free(keys);
	return rc;
}

/* Appends v's canonical JSON text; NERR_TOOBIG past the buffer's cap or depth. */
static enum nerr canon(struct buf *b, struct json_object *v, int depth)
{
	enum nerr rc = NERR_OK;
	int64_t i;

	if (depth > CANON_MAX_DEPTH)
		return NERR_TOOBIG;
	switch (json_object_get_type(v)) {
	case json_type_null:
		return buf_puts(b, "null");
	case json_type_boolean:
		return buf_puts(b, json_object_get_boolean(v) ? "true" : "false");
	case json_type_int:
		/* json-c reads integers above INT64_MAX as uint64, which get_int64
		 * clamps to INT64_MAX; get_uint64 gives them back exactly. */
		i = json_object_get_int64(v);
		if (i == INT64_MAX)
			return buf_printf(b, "%llu",
					  (unsigned long long)json_object_get_uint64(v));
		return buf_printf(b, "%lld", (long long)i);
	case json_type_double:
		return canon_double(b, json_object_get_double(v));
	case json_type_string:
		return canon_string(b, json_object_get_string(v),
				    (size_t)json_object_get_string_len(v));
	case json_type_array:
		rc = buf_putc(b, '[');
		for (size_t k = 0; k < json_object_array_length(v) && rc == NERR_OK;
		     k++) {
			if (k)
				rc = buf_putc(b, ',');
			if (rc == NERR_OK)
				rc = canon(b, json_object_array_get_idx(v, k), depth + 1);
		}
		return rc ? rc : buf_putc(b, ']');
	case json_type_object:
		return canon_object(b, v, depth);
	}
	return NERR_INVAL;
}

/* ------------------------------------------------------------------ compile */

static bool ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool ident_char(char c)
{
	return ident_start(c) || (c >= '0' && c <= '9');
}

/* True for the prefixes of a string literal: r, b, rb, br in either case. */
static bool string_prefix(const char *s, size_t n, bool *raw)
{
	*raw = false;
	if (n == 0 || n > 2)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i] | 0x20;

		if (c == 'r')
			*raw = true;
		else if (c != 'b')
			return false;
	}
	return n == 1 || (s[0] | 0x20) != (s[1] | 0x20);
}

/* Skips the string literal whose opening quote is at s[i]; returns the index after
 * its closing quote (or len when unterminated). */
static size_t skip_string(const char *s, size_t len, size_t i, bool raw)
{
	char q = s[i];
	bool triple = i + 2 < len && s[i + 1] == q && s[i + 2] == q;

	i += triple ? 3 : 1;
	while (i < len) {
		if (s[i] == '\\' && !raw && q != '`') {
			i += 2;
			continue;
		}
		if (s[i] == q &&
		    (!triple || (i + 2 < len && s[i + 1] == q && s[i + 2] == q)))
			return i + (triple ? 3 : 1);
		if (!triple && s[i] == '\n')
			return i;
		i++;
	}
	return len;
}

/*
 * Looks for a name a computed value may not use: the variables profile and journey
 * and the global functions event_count(), consent() and in_audience(), outside strings,
 * comments and member selections (event.profile is fine). Returns the name, or NULL.
 */
static const char *forbidden_ref(const char *s, size_t len)
{
	static const char *const vars[] = {"profile", "journey"};
	static const char *const funcs[] = {"event_count", "consent", "in_audience"};
	char prev = 0;	     /* 'a' after a value (name, number, string), else the last
				significant character */
	bool member = false; /* the previous token is a '.' selecting a member */
	size_t i = 0;

	while (i < len) {
		char c = s[i];

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			i++;
		} else if (c == '/' && i + 1 < len && s[i + 1] == '/') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (c == '"' || c == '\'' || c == '`') {
			i = skip_string(s, len, i, false);
			prev = 'a';
			member = false;
		} else if (ident_start(c)) {
			size_t start = i, n;
			bool raw;

			while (i < len && ident_char(s[i]))
				i++;
			n = i - start;
			if (i < len && (s[i] == '"' || s[i] == '\'') &&
			    string_prefix(s + start, n, &raw)) {
				i = skip_string(s, len, i, raw);
			} else if (!member) {
				size_t j = i;

				while (j < len && (s[j] == ' ' || s[j] == '\t' ||
						   s[j] == '\n' || s[j] == '\r'))
					j++;
				for (size_t k = 0; k < 2; k++)
					if (strlen(vars[k]) == n &&
					    memcmp(s + start, vars[k], n) == 0)
						return vars[k];
				for (size_t k = 0; k < 3 && j < len && s[j] == '('; k++)
					if (strlen(funcs[k]) == n &&
					    memcmp(s + start, funcs[k], n) == 0)
						return funcs[k];
			}
			prev = 'a';
			member = false;
		} else if (c >= '0' && c <= '9') {
			while (i < len && ident_char(s[i]))
				i++;
			prev = 'a';
			member = false;
		} else {
			/* a '.' after a value selects a member; elsewhere (".profile")
			 * it starts an absolute name */
			member = c == '.' && (prev == 'a' || prev == ')' || prev == ']' ||
					      prev == '}');
			prev = c;
			i++;
		}
	}
	return NULL;
}

/* Evaluates prog once on an empty event, as journey definitions do, to refuse
 * names the environment does not declare and unknown functions. */
static bool probe(const struct expr_program *prog, struct nerr_msg *msg)
{
	struct expr_value vars[JOURNEY_VAR__COUNT], out;
	const struct journey_eval_ctx *saved = journey_eval_ctx_get();
	struct json_object *empty = json_object_new_object();
	struct nerr_msg m;
	struct arena scratch;
	bool ok = true;

	memset(vars, 0, sizeof(vars));
	vars[JOURNEY_VAR_EVENT] = expr_value_from_json(empty);
	vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
	arena_init(&scratch, 0);
	scratch.limit_bytes = 1u << 20;
	nerr_clear(&m);
	journey_eval_ctx_set(NULL);
	if (expr_eval(prog, vars, JOURNEY_VAR__COUNT, &scratch, &out, &m) == NERR_EVAL &&
	    (strncmp(m.message, "undeclared reference", 20) == 0 ||
	     strstr(m.message, "unknown function"))) {
		nerr_set(msg, NERR_INVAL, "value", "invalid CEL: %s", m.message);
		ok = false;
	}
	journey_eval_ctx_set(saved);
	arena_fini(&scratch);
	json_object_put(empty);
	return ok;
}

static bool known_field(const char *key)
{
	return strcmp(key, "event") == 0 || strcmp(key, "aggregate") == 0 ||
	       strcmp(key, "value") == 0 || strcmp(key, "window") == 0;
}

/* Returns member key when it is a string, NULL with an error in *rc otherwise. */
static struct json_object *get_string(struct json_object *doc, const char *key,
				      bool required, enum nerr *rc, struct nerr_msg *msg)
{
	struct json_object *v = jget(doc, key);

	if (!v) {
		if (required)
			*rc = nerr_set(msg, NERR_INVAL, key, "is required");
		return NULL;
	}
	if (!json_object_is_type(v, json_type_string)) {
		*rc = nerr_set(msg, NERR_INVAL, key, "must be a string");
		return NULL;
	}
	return v;
}

enum nerr computed_def_compile(const char *id, struct json_object *doc,
			       const struct expr_env *env, struct computed_def **out,
			       struct nerr_msg *msg)
{
	struct computed_def *d = NULL;
	struct json_object *v;
	struct nerr_msg m;
	const char *s, *bad;
	enum nerr rc = NERR_OK;
	size_t len;

	ASSERT(id && env && out);
	ASSERT(expr_env_var_count(env) == JOURNEY_VAR__COUNT);
	*out = NULL;
	nerr_clear(msg);
	if (!json_object_is_type(doc, json_type_object)) {
		rc = nerr_set(msg, NERR_INVAL, "",
			      "a computed attribute must be a JSON object");
		goto out;
	}
	json_object_object_foreach(doc, key, val)
	{
		(void)val;
		if (!known_field(key)) {
			rc = nerr_set(msg, NERR_INVAL, key,
				      "unknown field (expected event, aggregate, value, "
				      "window)");
			goto out;
		}
	}
	d = xcalloc(1, sizeof(*d));
	d->id = xstrdup(id);

	if (!(v = get_string(doc, "event", true, &rc, msg)))
		goto out;
	len = (size_t)json_object_get_string_len(v);
	if (len == 0 || len > COMPUTED_MAX_EVENT_BYTES) {
		rc = nerr_set(msg, NERR_INVAL, "event", "must be 1 to %d bytes",
			      COMPUTED_MAX_EVENT_BYTES);
		goto out;
	}
	d->event = xstrndup(json_object_get_string(v), len);

	if (!(v = get_string(doc, "aggregate", true, &rc, msg)))
		goto out;
	s = json_object_get_string(v);
	for (d->agg = 0; d->agg < COMPUTED__COUNT; d->agg++)
		if (strcmp(s, agg_names[d->agg]) == 0)
			break;
	if (d->agg == COMPUTED__COUNT) {
		rc = nerr_set(msg, NERR_INVAL, "aggregate",
			      "must be one of count, sum, min, max, first, last, "
			      "distinct_count");
		goto out;
	}

	v = get_string(doc, "value", d->agg != COMPUTED_COUNT, &rc, msg);
	if (rc)
		goto out;
	if (v && d->agg == COMPUTED_COUNT) {
		rc = nerr_set(msg, NERR_INVAL, "value", "count takes no value");
		goto out;
	}
	if (v) {
		s = json_object_get_string(v);
		len = (size_t)json_object_get_string_len(v);
		if (len == 0) {
			rc = nerr_set(msg, NERR_INVAL, "value", "must not be empty");
			goto out;
		}
		nerr_clear(&m);
		if (expr_compile_n(s, len, env, &d->value, &m) != NERR_OK) {
			rc = nerr_set(msg, NERR_INVAL, "value", "invalid CEL: %s",
				      m.message);
			goto out;
		}
		if ((bad = forbidden_ref(s, len))) {
			rc = nerr_set(msg, NERR_INVAL, "value",
				      "may only read event and now, not %s", bad);
			goto out;
		}
		if (!probe(d->value, msg)) {
			rc = NERR_INVAL;
			goto out;
		}
		d->value_src = xstrndup(s, len);
	}

	if ((v = get_string(doc, "window", false, &rc, msg))) {
		s = json_object_get_string(v);
		if (strlen(s) != (size_t)json_object_get_string_len(v) ||
		    journey_duration_parse(s, &d->window_ms) != NERR_OK) {
			rc = nerr_set(msg, NERR_INVAL, "window",
				      "invalid duration '%.32s' (use e.g. 90m, 24h, 30d)",
				      s);
			goto out;
		}
	}
	if (rc)
		goto out;
	*out = d;
	d = NULL;
out:
	computed_def_free(d);
	return rc;
}

void computed_def_free(struct computed_def *d)
{
	if (!d)
		return;
	expr_program_free(d->value);
	free(d->value_src);
	free(d->event);
	free(d->id);
	free(d);
}

const char *computed_def_id(const struct computed_def *d)
{
	return d->id;
}

const char *computed_def_event(const struct computed_def *d)
{
	return d->event;
}

enum computed_agg computed_def_aggregate(const struct computed_def *d)
{
	return d->agg;
}

const char *computed_def_value_src(const struct computed_def *d)
{
	return d->value_src;
}

int64_t computed_def_window_ms(const struct computed_def *d)
{
	return d->window_ms;
}

/* -------------------------------------------------------------------- state */

static bool windowed(const struct computed_def *d)
{
	return d->window_ms > 0;
}

/* Invariant 2: an event at t is inside the window at now while now - t < window. */
static bool in_window(const struct computed_def *d, int64_t t, int64_t now_ms)
{
	int64_t age;

	if (t >= now_ms)
		return true;
	return !__builtin_sub_overflow(now_ms, t, &age) && age < d->window_ms;
}

static int64_t item_time(const struct json_object *items, size_t i)
{
	return json_object_get_int64(
		json_object_array_get_idx(json_object_array_get_idx(items, i), 0));
}

static struct json_object *item_value(const struct json_object *items, size_t i)
{
	return json_object_array_get_idx(json_object_array_get_idx(items, i), 1);
}

/* True when a kept value has the JSON kind the aggregate keeps. */
static bool value_ok(const struct computed_def *d, const struct json_object *v)
{
	switch (d->agg) {
	case COMPUTED_COUNT:
		return true;
	case COMPUTED_SUM:
	case COMPUTED_MIN:
	case COMPUTED_MAX:
		return is_number(v);
	case COMPUTED_FIRST:
	case COMPUTED_LAST:
		return v != NULL;
	case COMPUTED_DISTINCT_COUNT:
		return json_object_is_type(v, json_type_string);
	case COMPUTED__COUNT:
		break;
	}
	return false;
}

/*
 * True when state was made for d's aggregate and window and has the shape the
 * functions below read (so none of them can trip over a damaged state).
 */
/* True when state s says it was made for d's aggregate and window. */
static bool tag_ok(const struct computed_def *d, const struct json_object *s)
{
	struct json_object *a = jget(s, "agg"), *w = jget(s, "window_ms");

	return json_object_is_type(a, json_type_string) &&
	       strcmp(json_object_get_string(a), agg_names[d->agg]) == 0 && is_int(w) &&
	       json_object_get_int64(w) == d->window_ms;
}

static bool state_ok(const struct computed_def *d, const struct json_object *s)
{
	struct json_object *x, *t;

	if (!tag_ok(d, s))
		return false;
	if (windowed(d)) {
		struct json_object *items = jget(s, "items");
		int64_t prev = INT64_MIN;
		size_t n;

		if (!json_object_is_type(items, json_type_array))
			return false;
		n = json_object_array_length(items);
		for (size_t i = 0, want = d->agg == COMPUTED_COUNT ? 1 : 2; i < n; i++) {
			struct json_object *it = json_object_array_get_idx(items, i);
			int64_t ti;

			if (!json_object_is_type(it, json_type_array) ||
			    json_object_array_length(it) != want)
				return false;
			x = json_object_array_get_idx(it, 0);
			if (!is_int(x) ||
			    (want == 2 && !value_ok(d, json_object_array_get_idx(it, 1))))
				return false;
			ti = json_object_get_int64(x);
			if (prev > ti)
				return false;
			prev = ti;
		}
		return true;
	}
	switch (d->agg) {
	case COMPUTED_COUNT:
		return is_int(jget(s, "n"));
	case COMPUTED_SUM:
		return is_number(jget(s, "sum"));
	case COMPUTED_MIN:
	case COMPUTED_MAX:
		x = jget(s, "v");
		return !x || is_number(x);
	case COMPUTED_FIRST:
	case COMPUTED_LAST:
		x = jget(s, "v");
		t = jget(s, "t");
		return (!x && !t) || (x && is_int(t));
	case COMPUTED_DISTINCT_COUNT:
		x = jget(s, "capped");
		return json_object_is_type(jget(s, "set"), json_type_object) &&
		       (!x || json_object_is_type(x, json_type_boolean));
	case COMPUTED__COUNT:
		break;
	}
	return false;
}

/* A new empty state for d. */
static struct json_object *state_new(const struct computed_def *d)
{
	struct json_object *s = json_object_new_object();

	json_object_object_add(s, "agg", json_object_new_string(agg_names[d->agg]));
	json_object_object_add(s, "window_ms", json_object_new_int64(d->window_ms));
	if (windowed(d))
		json_object_object_add(s, "items", json_object_new_array());
	else if (d->agg == COMPUTED_COUNT)
		json_object_object_add(s, "n", json_object_new_int64(0));
	else if (d->agg == COMPUTED_SUM)
		json_object_object_add(s, "sum", json_object_new_int64(0));
	else if (d->agg == COMPUTED_DISTINCT_COUNT)
		json_object_object_add(s, "set", json_object_new_object());
	return s;
}

/* A CEL result as a kept number: ints stay ints (a uint above INT64_MAX becomes a
 * double), doubles must be finite; anything else is NULL (skip). */
static struct json_object *number_json(const struct expr_value *v)
{
	switch (v->kind) {
	case EXPR_INT:
		return json_object_new_int64(v->as.i);
	case EXPR_UINT:
		if (v->as.u <= (uint64_t)INT64_MAX)
			return json_object_new_int64((int64_t)v->as.u);
		return json_object_new_double((double)v->as.u);
	case EXPR_DOUBLE:
		return isfinite(v->as.d) ? json_object_new_double(v->as.d) : NULL;
	default:
		return NULL;
	}
}

/*
 * Evaluates d's value on event and returns what the aggregate keeps (a new
 * reference): a number for sum/min/max, the value for first/last, its canonical
 * text (a JSON string) for distinct_count; NULL when the event is skipped.
 */
static struct json_object *eval_value(const struct computed_def *d,
				      struct json_object *event, int64_t now_ms,
				      struct arena *scratch)
{
	struct expr_value vars[JOURNEY_VAR__COUNT], out;
	const struct journey_eval_ctx *saved = journey_eval_ctx_get();
	struct json_object *j = NULL, *kept = NULL;
	struct buf b;
	enum nerr rc;

	memset(vars, 0, sizeof(vars));
	vars[JOURNEY_VAR_EVENT] = expr_value_from_json(event);
	vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
	vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
	vars[JOURNEY_VAR_NOW].as.sec = now_ms / 1000;
	vars[JOURNEY_VAR_NOW].nsec = (int32_t)(now_ms % 1000) * 1000000;
	journey_eval_ctx_set(NULL);
	rc = expr_eval(d->value, vars, JOURNEY_VAR__COUNT, scratch, &out, NULL);
	journey_eval_ctx_set(saved);
	if (rc != NERR_OK)
		return NULL;
	if (d->agg == COMPUTED_SUM || d->agg == COMPUTED_MIN || d->agg == COMPUTED_MAX)
		return number_json(&out);
	if (!(j = expr_value_to_json(&out)))
		return NULL; /* null */
	buf_init(&b, COMPUTED_MAX_VALUE_BYTES);
	if (canon(&b, j, 0) == NERR_OK)
		kept = d->agg == COMPUTED_DISTINCT_COUNT
			       ? json_object_new_string_len(buf_str(&b), (int)b.len)
			       : json_object_get(j);
	buf_fini(&b);
	json_object_put(j);
	return kept;
}

/* Sets key of s to v (taking the reference). */
static void set(struct json_object *s, const char *key, struct json_object *v)
{
	json_object_object_add(s, key, v);
}

/* Adds v (taken; NULL for count) at time t to an all-time state. Returns true
 * when the state changed. */
static bool fold(const struct computed_def *d, struct json_object *s, int64_t t,
		 struct json_object *v)
{
	struct json_object *cur = jget(s, "v"), *ct = jget(s, "t"), *x;
	struct sum_acc acc = {0};
	bool take = false;

	switch (d->agg) {
	case COMPUTED_COUNT:
		set(s, "n",
		    json_object_new_int64(json_object_get_int64(jget(s, "n")) + 1));
		return true;
	case COMPUTED_SUM:
		x = jget(s, "sum");
		acc_add(&acc, x);
		acc_add(&acc, v);
		json_object_put(v);
		if (acc.dbl && !isfinite(acc.d))
			return false; /* a total JSON cannot hold */
		set(s, "sum", acc_json(&acc));
		return true;
	case COMPUTED_MIN:
		take = !cur || num_cmp(v, cur) < 0;
		break;
	case COMPUTED_MAX:
		take = !cur || num_cmp(v, cur) > 0;
		break;
	case COMPUTED_FIRST:
		take = !cur || t < json_object_get_int64(ct);
		break;
	case COMPUTED_LAST:
		take = !cur || t >= json_object_get_int64(ct);
		break;
	case COMPUTED_DISTINCT_COUNT:
		x = jget(s, "set");
		if (json_object_object_get_ex(x, json_object_get_string(v), NULL)) {
			json_object_put(v);
			return false;
		}
		if (json_object_object_length(x) >= COMPUTED_MAX_DISTINCT) {
			json_object_put(v);
			if (json_object_get_boolean(jget(s, "capped")))
				return false;
			set(s, "capped", json_object_new_boolean(1));
			return true;
		}
		json_object_object_add(x, json_object_get_string(v),
				       json_object_new_int(1));
		json_object_put(v);
		return true;
	case COMPUTED__COUNT:
		break;
	}
	if (!take) {
		json_object_put(v);
		return false;
	}
	set(s, "v", v);
	if (d->agg == COMPUTED_FIRST || d->agg == COMPUTED_LAST)
		set(s, "t", json_object_new_int64(t));
	return true;
}

/* Keeps only the newest COMPUTED_MAX_ITEMS items (invariant 3). */
static void cap_items(struct json_object *items)
{
	size_t n = json_object_array_length(items);

	if (n > COMPUTED_MAX_ITEMS)
		json_object_array_del_idx(items, 0, n - COMPUTED_MAX_ITEMS);
}

/* Inserts [t, v] (v taken; NULL for count) into a windowed state after every item
 * with a time <= t. Returns true when the state changed. */
static bool window_add(const struct computed_def *d, struct json_object *s, int64_t t,
		       struct json_object *v)
{
	struct json_object *items = jget(s, "items"), *item = json_object_new_array();
	size_t n = json_object_array_length(items), pos = n;

	json_object_array_add(item, json_object_new_int64(t));
	if (v)
		json_object_array_add(item, v);
	while (pos > 0 && item_time(items, pos - 1) > t)
		pos--;
	if (pos == 0 && n >= COMPUTED_MAX_ITEMS) {
		json_object_put(item); /* it would be the oldest, dropped at once */
		return false;
	}
	if (pos == n) {
		json_object_array_add(items, item);
	} else {
		/* json-c 0.16 has no insert: rebuild (only for late events) */
		struct json_object *a = json_object_new_array_ext((int)n + 1);

		for (size_t i = 0; i < n; i++) {
			if (i == pos)
				json_object_array_add(a, item);
			json_object_array_add(
				a, json_object_get(json_object_array_get_idx(items, i)));
		}
		set(s, "items", a);
		items = a;
	}
	cap_items(items);
	return true;
}

/* Drops the items of a checked windowed state that left the window at now_ms;
 * true when any did. */
static bool expire_items(const struct computed_def *d, struct json_object *state,
			 int64_t now_ms)
{
	struct json_object *items = jget(state, "items");
	size_t n = json_object_array_length(items), k = 0;

	while (k < n && !in_window(d, item_time(items, k), now_ms))
		k++;
	if (k == 0)
		return false;
	json_object_array_del_idx(items, 0, k);
	return true;
}

bool computed_expire(const struct computed_def *d, struct json_object *state,
		     int64_t now_ms)
{
	if (!windowed(d) || !state || !state_ok(d, state))
		return false;
	return expire_items(d, state, now_ms);
}

bool computed_apply(const struct computed_def *d, struct json_object **state,
		    struct json_object *event, int64_t event_ms, int64_t now_ms,
		    struct arena *scratch)
{
	struct json_object *v = NULL;
	bool changed = false;

	if (*state && !state_ok(d, *state)) {
		/* Expected once per profile after a redefinition (debug); a damaged
		 * state of the current shape is worth a warning. */
		if (tag_ok(d, *state))
			log_warn("computed",
				 "msg=\"damaged state; starting afresh\" attribute=%s",
				 d->id);
		else
			log_debug("computed",
				  "msg=\"state of another definition; starting afresh\" "
				  "attribute=%s",
				  d->id);
		json_object_put(*state);
		*state = state_new(d);
		changed = true;
	}
	if (windowed(d)) {
		if (*state)
			changed |= expire_items(d, *state, now_ms);
		if (!in_window(d, event_ms, now_ms))
			return changed;
	}
	if (d->value && !(v = eval_value(d, event, now_ms, scratch)))
		return changed;
	if (!*state)
		*state = state_new(d);
	if (windowed(d))
		return window_add(d, *state, event_ms, v) || changed;
	return fold(d, *state, event_ms, v) || changed;
}

/* The value of a windowed state, recomputed from its items. */
static struct json_object *window_value(const struct computed_def *d,
					const struct json_object *items)
{
	size_t n = json_object_array_length(items);
	struct json_object *best = NULL, *set;
	struct sum_acc acc = {0};
	int64_t distinct;

	switch (d->agg) {
	case COMPUTED_COUNT:
		return json_object_new_int64((int64_t)n);
	case COMPUTED_SUM:
		for (size_t i = 0; i < n; i++)
			acc_add(&acc, item_value(items, i));
		return acc_json(&acc);
	case COMPUTED_MIN:
	case COMPUTED_MAX:
		for (size_t i = 0; i < n; i++) {
			struct json_object *x = item_value(items, i);
			int c = best ? num_cmp(x, best) : 0;

			if (!best || (d->agg == COMPUTED_MIN ? c < 0 : c > 0))
				best = x;
		}
		return copy(best);
	case COMPUTED_FIRST:
		return n ? copy(item_value(items, 0)) : NULL;
	case COMPUTED_LAST:
		return n ? copy(item_value(items, n - 1)) : NULL;
	case COMPUTED_DISTINCT_COUNT:
		set = json_object_new_object();
		for (size_t i = 0; i < n; i++)
			json_object_object_add(
				set, json_object_get_string(item_value(items, i)), NULL);
		distinct = json_object_object_length(set);
		json_object_put(set);
		return json_object_new_int64(distinct);
	case COMPUTED__COUNT:
		break;
	}
	return NULL;
}

struct json_object *computed_value(const struct computed_def *d,
				   const struct json_object *state)
{
	if (!state || !state_ok(d, state)) {
		if (d->agg == COMPUTED_COUNT || d->agg == COMPUTED_SUM ||
		    d->agg == COMPUTED_DISTINCT_COUNT)
			return json_object_new_int64(0);
		return NULL;
	}
	if (windowed(d))
		return window_value(d, jget(state, "items"));
	switch (d->agg) {
	case COMPUTED_COUNT:
		return copy(jget(state, "n"));
	case COMPUTED_SUM:
		return copy(jget(state, "sum"));
	case COMPUTED_DISTINCT_COUNT:
		return json_object_new_int64(
			json_object_object_length(jget(state, "set")));
	default:
		return copy(jget(state, "v"));
	}
}

int64_t computed_next_boundary(const struct computed_def *d,
			       const struct json_object *state)
{
	struct json_object *items;
	int64_t t;

	if (!windowed(d) || !state || !state_ok(d, state))
		return INT64_MAX;
	items = jget(state, "items");
	if (json_object_array_length(items) == 0 ||
	    __builtin_add_overflow(item_time(items, 0), d->window_ms, &t))
		return INT64_MAX;
	return t;
}

/* Merges two windows' items in time order (ties: a's first) into a new array. */
static struct json_object *merge_items(const struct json_object *a,
				       const struct json_object *b)
{
	size_t na = json_object_array_length(a), nb = json_object_array_length(b);
	size_t i = 0, j = 0;
	struct json_object *m = json_object_new_array_ext((int)(na + nb));

	while (i < na || j < nb) {
		bool take_a = j == nb || (i < na && item_time(a, i) <= item_time(b, j));
		struct json_object *x = take_a ? json_object_array_get_idx(a, i++)
					       : json_object_array_get_idx(b, j++);

		json_object_array_add(m, copy(x));
	}
	cap_items(m);
	return m;
}

void computed_merge(const struct computed_def *d, struct json_object **into,
		    const struct json_object *from)
{
	struct json_object *s = *into, *fv, *x;
	struct sum_acc acc = {0};
	bool take = false;

	if (!from || !state_ok(d, from))
		return;
	if (!s || !state_ok(d, s)) {
		json_object_put(s);
		*into = copy(from);
		return;
	}
	if (windowed(d)) {
		set(s, "items", merge_items(jget(s, "items"), jget(from, "items")));
		return;
	}
	fv = jget(from, "v");
	switch (d->agg) {
	case COMPUTED_COUNT:
		set(s, "n",
		    json_object_new_int64(json_object_get_int64(jget(s, "n")) +
					  json_object_get_int64(jget(from, "n"))));
		return;
	case COMPUTED_SUM:
		acc_add(&acc, jget(s, "sum"));
		acc_add(&acc, jget(from, "sum"));
		set(s, "sum", acc_json(&acc));
		return;
	case COMPUTED_MIN:
	case COMPUTED_MAX:
		x = jget(s, "v");
		take = fv && (!x || (d->agg == COMPUTED_MIN ? num_cmp(fv, x) < 0
							    : num_cmp(fv, x) > 0));
		break;
	case COMPUTED_FIRST:
	case COMPUTED_LAST:
		x = jget(s, "v");
		if (fv && !x)
			take = true;
		else if (fv && d->agg == COMPUTED_FIRST)
			take = json_object_get_int64(jget(from, "t")) <
			       json_object_get_int64(jget(s, "t"));
		else if (fv)
			take = json_object_get_int64(jget(from, "t")) >=
			       json_object_get_int64(jget(s, "t"));
		break;
	case COMPUTED_DISTINCT_COUNT:
		x = jget(s, "set");
		json_object_object_foreach(jget(from, "set"), key, val)
		{
			(void)val;
			if (json_object_object_get_ex(x, key, NULL))
				continue;
			if (json_object_object_length(x) >= COMPUTED_MAX_DISTINCT) {
				set(s, "capped", json_object_new_boolean(1));
				continue;
			}
			json_object_object_add(x, key, json_object_new_int(1));
		}
		if (json_object_get_boolean(jget(from, "capped")))
			set(s, "capped", json_object_new_boolean(1));
		return;
	case COMPUTED__COUNT:
		break;
	}
	if (!take)
		return;
	set(s, "v", copy(fv));
	if (d->agg == COMPUTED_FIRST || d->agg == COMPUTED_LAST)
		set(s, "t",
		    json_object_new_int64(json_object_get_int64(jget(from, "t"))));
}
