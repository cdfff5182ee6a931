/*
 * render.c -- walks a compiled template against a json-c context: variables and
 * scopes, conditions, the tags' runtime behaviour, partials, limits.
 *
 * Design: a render is one struct rs on the caller's stack; every temporary
 * (strings made by filters, arrays, loop frames, tables) comes from the scratch
 * arena, so a render frees nothing itself and the compiled template is only read.
 * Name lookup follows Ruby Liquid: loop variables and include arguments (binds,
 * innermost first), then assign/capture variables (locals), then
 * increment/decrement counters, then the global context. {% render %} gets fresh
 * locals and counters and sees only its arguments and the globals; {% include %}
 * shares everything with its caller. A {% snippet %} is a value (V_SNIPPET) in
 * the locals pointing at its body in a compiled template that outlives the
 * render (the main one or a cached partial); {% render name %} runs it like a
 * stored snippet. A few heap buffers (the filters' string builder, array
 * printing, the partial cache) are freed before tmpl_render returns.
 * Invariants: (1) tmpl_rs_fail records the first error only and every caller returns
 *   -1 after it; (2) output, loop steps, scratch memory, filter work and partial
 *   depth are all counted against st->lim, so a render ends in bounded time and
 *   space; (3) partials compiled during a render are freed before tmpl_render
 *   returns, so a compiled template is never written and renders of it may run
 *   in parallel.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/mem.h"
#include "tmpl/tmpl_int.h"

/* Work units of running one node (a filter costs 1 per input byte). */
#define NODE_UNITS 10
#define BREAK_I	   1
#define CONTINUE_I 2

static void pos_in(const char *src, size_t len, const char *at, int *line, int *col)
{
	int l = 1;
	const char *ls = src;

	if (!at || at < src || at > src + len) {
		*line = 0;
		*col = 0;
		return;
	}
	for (const char *p = src; p < at; p++)
		if (*p == '\n') {
			l++;
			ls = p + 1;
		}
	*line = l;
	*col = (int)tmpl_utf8_len(ls, (size_t)(at - ls)) + 1;
}

int tmpl_rs_fail(struct rs *st, enum nerr rc, const char *at, const char *fmt, ...)
{
	char reason[200];
	va_list ap;
	int line, col;

	if (st->failed)
		return -1;
	st->failed = true;
	st->rc = rc;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (!at)
		at = st->cur_at;
	pos_in(st->t->src, st->t->len, at, &line, &col);
	if (!line)
		line = col = 1;
	nerr_set(st->msg, rc, "template", "%d:%d: %s", line, col, reason);
	return -1;
}

void *tmpl_rs_alloc(struct rs *st, size_t n)
{
	void *p = arena_alloc(st->a, n ? n : 1);
	if (!p)
		tmpl_rs_fail(st, NERR_LIMIT, NULL,
			     "render needs more than %zu bytes of scratch memory",
			     st->lim.scratch_bytes);
	return p;
}

int tmpl_rs_charge(struct rs *st, size_t units)
{
	if (units > st->lim.work_units || st->work > st->lim.work_units - units) {
		st->work = st->lim.work_units + 1;
		return tmpl_rs_fail(st, NERR_LIMIT, NULL,
				    "render exceeds its work limit");
	}
	st->work += units;
	return 0;
}

/* ---- tables ---- */

uint64_t tmpl_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static struct vtab_ent *vtab_find_h(struct vtab *t, const char *key, uint64_t h)
{
	if (!t->n)
		return NULL;
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (!t->ents[i].key)
			return NULL;
		if (strcmp(t->ents[i].key, key) == 0)
			return &t->ents[i];
	}
}

static struct vtab_ent *vtab_find(struct vtab *t, const char *key)
{
	return t->n ? vtab_find_h(t, key, tmpl_hash_str(key)) : NULL;
}

static int vtab_set(struct rs *st, struct vtab *t, const char *key, const struct val *v)
{
	struct vtab_ent *e = vtab_find(t, key);

	if (e) {
		e->v = *v;
		return 0;
	}
	if ((t->n + 1) * 2 > t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 16;
		struct vtab_ent *ne = tmpl_rs_alloc(st, nc * sizeof(*ne)), *old = t->ents;
		size_t oc = t->cap;
		if (!ne)
			return -1;
		memset(ne, 0, nc * sizeof(*ne));
		t->ents = ne;
		t->cap = nc;
		for (size_t i = 0; i < oc; i++)
			if (old[i].key)
				for (size_t k = tmpl_hash_str(old[i].key) & (nc - 1);;
				     k = (k + 1) & (nc - 1))
					if (!ne[k].key) {
						ne[k] = old[i];
						break;
					}
	}
	for (size_t i = tmpl_hash_str(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1))
		if (!t->ents[i].key) {
			t->ents[i].key = key;
			t->ents[i].v = *v;
			t->n++;
			return 0;
		}
}

/* ---- binds (loop variables, include arguments) ---- */

static int bind_push(struct rs *st, const char *name, const struct val *v)
{
	if (st->nbinds == st->capbinds) {
		size_t nc = st->capbinds ? st->capbinds * 2 : 16;
		struct bind *nb = tmpl_rs_alloc(st, nc * sizeof(*nb));
		if (!nb)
			return -1;
		if (st->nbinds)
			memcpy(nb, st->binds, st->nbinds * sizeof(*nb));
		st->binds = nb;
		st->capbinds = nc;
	}
	st->binds[st->nbinds].name = name;
	st->binds[st->nbinds].v = *v;
	st->nbinds++;
	return 0;
}

/* ---- strings ---- */

static char *sdup(struct rs *st, const char *p, size_t n)
{
	char *s = tmpl_rs_alloc(st, n + 1);
	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

static int inspect_str(struct buf *b, const char *p, size_t n)
{
	buf_putc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (c) {
		case '"':
			buf_puts(b, "\\\"");
			break;
		case '\\':
			buf_puts(b, "\\\\");
			break;
		case '\n':
			buf_puts(b, "\\n");
			break;
		case '\t':
			buf_puts(b, "\\t");
			break;
		case '\r':
			buf_puts(b, "\\r");
			break;
		default:
			if (c < 0x20)
				buf_printf(b, "\\x%02X", c);
			else
				buf_putc(b, (char)c);
		}
	}
	return buf_putc(b, '"') ? -1 : 0;
}

static int to_s_buf(struct rs *st, struct buf *b, const struct val *v, int depth);

/* Ruby's #inspect, which is how a hash prints. */
int tmpl_rs_inspect(struct rs *st, struct buf *b, const struct val *v, int depth)
{
	if (depth > 64 || tmpl_rs_charge(st, 1))
		return depth > 64 ? tmpl_rs_fail(st, NERR_LIMIT, NULL,
						 "value nested too deeply")
				  : -1;
	switch (v->type) {
	case V_NIL:
		return buf_puts(b, "nil") ? -1 : 0;
	case V_STR:
		return inspect_str(b, v->s.p, v->s.len);
	case V_ARR:
	case V_JARR:
	case V_RANGE: {
		size_t n = tmpl_val_seq_len(v);
		buf_putc(b, '[');
		for (size_t i = 0; i < n; i++) {
			struct val x = tmpl_val_seq_at(v, i);
			if (i)
				buf_puts(b, ", ");
			if (tmpl_rs_inspect(st, b, &x, depth + 1))
				return -1;
		}
		return buf_putc(b, ']') ? -1 : 0;
	}
	case V_JOBJ: {
		bool first = true;
		buf_putc(b, '{');
		json_object_object_foreach(v->j, k, jv)
		{
			struct val x = tmpl_val_from_json(jv);
			if (!first)
				buf_puts(b, ", ");
			first = false;
			inspect_str(b, k, strlen(k));
			buf_puts(b, "=>");
			if (tmpl_rs_inspect(st, b, &x, depth + 1))
				return -1;
		}
		return buf_putc(b, '}') ? -1 : 0;
	}
	default:
		return to_s_buf(st, b, v, depth);
	}
}

static int to_s_buf(struct rs *st, struct buf *b, const struct val *v, int depth)
{
	char tmp[64];

	if (depth > 64)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "value nested too deeply");
	switch (v->type) {
	case V_NIL:
	case V_BLANK:
	case V_EMPTY:
	case V_LOOP:
		return 0;
	case V_BOOL:
		buf_puts(b, v->b ? "true" : "false");
		return 0;
	case V_INT:
		buf_printf(b, "%lld", (long long)v->i);
		return 0;
	case V_FLOAT:
		tmpl_val_fmt_float(v->f, tmp, sizeof(tmp));
		buf_puts(b, tmp);
		return 0;
	case V_STR:
		buf_append(b, v->s.p, v->s.len);
		return 0;
	case V_RANGE:
		buf_printf(b, "%lld..%lld", (long long)v->r.lo, (long long)v->r.hi);
		return 0;
	case V_ARR:
	case V_JARR: {
		size_t n = tmpl_val_seq_len(v);
		for (size_t i = 0; i < n; i++) {
			struct val x = tmpl_val_seq_at(v, i);
			if (tmpl_rs_charge(st, 1) || to_s_buf(st, b, &x, depth + 1))
				return -1;
			if (b->len > st->lim.output_bytes)
				return tmpl_rs_fail(
					st, NERR_LIMIT, NULL,
					"string longer than the output limit");
		}
		return 0;
	}
	case V_JOBJ:
		return tmpl_rs_inspect(st, b, v, depth);
	}
	return 0;
}

int tmpl_rs_to_str(struct rs *st, const struct val *v, struct val *out)
{
	char tmp[64];
	struct buf b;
	int rc;

	switch (v->type) {
	case V_STR:
		*out = *v;
		return 0;
	case V_NIL:
	case V_BLANK:
	case V_EMPTY:
	case V_LOOP:
		*out = tmpl_val_str("", 0);
		return 0;
	case V_BOOL:
		*out = v->b ? tmpl_val_str("true", 4) : tmpl_val_str("false", 5);
		return 0;
	case V_INT:
	case V_FLOAT: {
		int n;
		if (v->type == V_INT)
			n = (int)tmpl_val_fmt_int(v->i, tmp);
		else {
			tmpl_val_fmt_float(v->f, tmp, sizeof(tmp));
			n = (int)strlen(tmp);
		}
		char *s = sdup(st, tmp, (size_t)n);
		if (!s)
			return -1;
		*out = tmpl_val_str(s, (size_t)n);
		return 0;
	}
	default:
		break;
	}
	buf_init(&b, 0);
	rc = to_s_buf(st, &b, v, 0);
	if (!rc) {
		char *s = sdup(st, buf_str(&b), b.len);
		if (!s)
			rc = -1;
		else
			*out = tmpl_val_str(s, b.len);
	}
	buf_fini(&b);
	return rc;
}

static void json_str(struct buf *b, const char *p, size_t n)
{
	buf_putc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '"' || c == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)c);
		} else if (c == '\n') {
			buf_puts(b, "\\n");
		} else if (c == '\r') {
			buf_puts(b, "\\r");
		} else if (c == '\t') {
			buf_puts(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_putc(b, (char)c);
		}
	}
	buf_putc(b, '"');
}

int tmpl_rs_json(struct rs *st, struct buf *b, const struct val *v, int depth)
{
	char tmp[64];

	if (depth > 64)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "value nested too deeply");
	if (tmpl_rs_charge(st, 1))
		return -1;
	if (b->len > st->lim.output_bytes)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL,
				    "string longer than the output limit");
	switch (v->type) {
	case V_NIL:
	case V_LOOP:
	case V_SNIPPET:
		buf_puts(b, "null");
		return 0;
	case V_BLANK:
	case V_EMPTY:
		buf_puts(b, "\"\"");
		return 0;
	case V_BOOL:
		buf_puts(b, v->b ? "true" : "false");
		return 0;
	case V_INT:
		buf_printf(b, "%lld", (long long)v->i);
		return 0;
	case V_FLOAT:
		if (!isfinite(v->f)) {
			buf_puts(b, "null");
			return 0;
		}
		tmpl_val_fmt_float(v->f, tmp, sizeof(tmp));
		buf_puts(b, tmp);
		return 0;
	case V_STR:
		json_str(b, v->s.p, v->s.len);
		return 0;
	case V_ARR:
	case V_JARR:
	case V_RANGE: {
		size_t n = tmpl_val_seq_len(v);
		buf_putc(b, '[');
		for (size_t i = 0; i < n; i++) {
			struct val x = tmpl_val_seq_at(v, i);
			if (i)
				buf_putc(b, ',');
			if (tmpl_rs_json(st, b, &x, depth + 1))
				return -1;
		}
		buf_putc(b, ']');
		return 0;
	}
	case V_JOBJ: {
		bool first = true;
		buf_putc(b, '{');
		json_object_object_foreach(v->j, k, jv)
		{
			struct val x = tmpl_val_from_json(jv);
			if (!first)
				buf_putc(b, ',');
			first = false;
			json_str(b, k, strlen(k));
			buf_putc(b, ':');
			if (tmpl_rs_json(st, b, &x, depth + 1))
				return -1;
		}
		buf_putc(b, '}');
		return 0;
	}
	}
	return 0;
}

/* ---- arrays ---- */

struct avec {
	struct val *v;
	size_t n, cap;
};

static int apush(struct rs *st, struct avec *a, const struct val *x)
{
	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 8;
		struct val *nv = tmpl_rs_alloc(st, nc * sizeof(*nv));
		if (!nv)
			return -1;
		if (a->n)
			memcpy(nv, a->v, a->n * sizeof(*nv));
		a->v = nv;
		a->cap = nc;
	}
	a->v[a->n++] = *x;
	return 0;
}

static int flatten_into(struct rs *st, struct avec *a, const struct val *v, int depth)
{
	if (depth > 64)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "array nested too deeply");
	if (tmpl_val_is_seq(v)) {
		size_t n = tmpl_val_seq_len(v);
		if (v->type == V_RANGE && n > st->lim.loop_iterations)
			return tmpl_rs_fail(st, NERR_LIMIT, NULL,
					    "range of %zu items is over the limit", n);
		if (tmpl_rs_charge(st, n))
			return -1;
		for (size_t i = 0; i < n; i++) {
			struct val x = tmpl_val_seq_at(v, i);
			if (flatten_into(st, a, &x, depth + 1))
				return -1;
		}
		return 0;
	}
	return apush(st, a, v);
}

int tmpl_rs_flatten(struct rs *st, const struct val *v, struct val *out)
{
	struct avec a = {0};

	if (v->type != V_NIL && flatten_into(st, &a, v, 0))
		return -1;
	out->type = V_ARR;
	out->safe = 0;
	out->a.items = a.v;
	out->a.n = a.n;
	return 0;
}

static int pair_of(struct rs *st, const char *k, struct json_object *jv, struct val *out)
{
	struct val *p = tmpl_rs_alloc(st, 2 * sizeof(*p));
	if (!p)
		return -1;
	p[0] = tmpl_val_str(k, strlen(k));
	p[1] = tmpl_val_from_json(jv);
	out->type = V_ARR;
	out->safe = 0;
	out->a.items = p;
	out->a.n = 2;
	return 0;
}

/* An object as an array of [key, value] pairs (for loops, first). */
static int obj_pairs(struct rs *st, const struct val *v, struct val *out)
{
	struct avec a = {0};

	json_object_object_foreach(v->j, k, jv)
	{
		struct val p;
		if (pair_of(st, k, jv, &p) || apush(st, &a, &p))
			return -1;
	}
	out->type = V_ARR;
	out->a.items = a.v;
	out->a.n = a.n;
	return 0;
}

/* ---- lookups ---- */

static bool key_is(const struct val *k, const char *w)
{
	return k->type == V_STR && strcmp(k->s.p, w) == 0;
}

static int loop_field(const struct loop *l, const struct val *k, struct val *out)
{
	int64_t i = l->idx0;
	*out = tmpl_val_nil();
	if (key_is(k, "length"))
		*out = tmpl_val_int(l->length);
	else if (key_is(k, "index"))
		*out = tmpl_val_int(i + 1);
	else if (key_is(k, "index0"))
		*out = tmpl_val_int(i);
	else if (key_is(k, "rindex"))
		*out = tmpl_val_int(l->length - i);
	else if (key_is(k, "rindex0"))
		*out = tmpl_val_int(l->length - i - 1);
	else if (key_is(k, "first"))
		*out = tmpl_val_bool(i == 0);
	else if (key_is(k, "last"))
		*out = tmpl_val_bool(i == l->length - 1);
	else if (!l->tablerow && key_is(k, "name") && l->name)
		*out = tmpl_val_str(l->name, strlen(l->name));
	else if (!l->tablerow && key_is(k, "parentloop") && l->parent) {
		out->type = V_LOOP;
		out->loop = l->parent;
	} else if (l->tablerow) {
		int64_t col0 = i % l->cols;
		if (key_is(k, "col"))
			*out = tmpl_val_int(col0 + 1);
		else if (key_is(k, "col0"))
			*out = tmpl_val_int(col0);
		else if (key_is(k, "col_first"))
			*out = tmpl_val_bool(col0 == 0);
		else if (key_is(k, "col_last"))
			*out = tmpl_val_bool(col0 == l->cols - 1);
		else if (key_is(k, "row"))
			*out = tmpl_val_int(i / l->cols + 1);
	}
	return 0;
}

int tmpl_rs_lookup(struct rs *st, const struct val *obj, const struct val *key, bool cmd,
		   struct val *out)
{
	*out = tmpl_val_nil();
	switch (obj->type) {
	case V_JOBJ:
		if (key->type == V_STR) {
			if (tmpl_val_obj_get(obj, key->s.p, out))
				return 0;
			if (key_is(key, "size"))
				*out = tmpl_val_int((int64_t)tmpl_val_obj_len(obj));
			else if (key_is(key, "first")) {
				json_object_object_foreach(obj->j, k, jv)
				{
					return pair_of(st, k, jv, out);
				}
			}
		}
		return 0;
	case V_ARR:
	case V_JARR:
	case V_RANGE: {
		size_t n = tmpl_val_seq_len(obj);
		if (key->type == V_INT) {
			int64_t i = key->i;
			if (i < 0)
				i += (int64_t)n;
			if (i >= 0 && (uint64_t)i < n)
				*out = tmpl_val_seq_at(obj, (size_t)i);
		} else if (key_is(key, "size")) {
			*out = tmpl_val_int((int64_t)n);
		} else if (key_is(key, "first")) {
			if (n)
				*out = tmpl_val_seq_at(obj, 0);
		} else if (key_is(key, "last")) {
			if (n)
				*out = tmpl_val_seq_at(obj, n - 1);
		}
		return 0;
	}
	case V_STR:
		if (key_is(key, "size"))
			*out = tmpl_val_int((int64_t)tmpl_utf8_len(obj->s.p, obj->s.len));
		return 0;
	case V_LOOP:
		return loop_field(obj->loop, key, out);
	default:
		(void)cmd;
		return 0;
	}
}

/* Looks a root name up; s (may be NULL) carries the name's precomputed hashes. */
static void lookup_root_h(struct rs *st, const char *name, const struct seg *s,
			  struct val *out)
{
	struct vtab_ent *e;
	struct json_object *j;

	for (size_t i = st->nbinds; i > st->bind_floor && i > 0; i--)
		if (st->binds[i - 1].name[0] == name[0] &&
		    strcmp(st->binds[i - 1].name, name) == 0) {
			*out = st->binds[i - 1].v;
			return;
		}
	if (st->locals->n || st->counters->n) {
		uint64_t h = s ? s->vhash : tmpl_hash_str(name);
		if ((e = vtab_find_h(st->locals, name, h)) ||
		    (e = vtab_find_h(st->counters, name, h))) {
			*out = e->v;
			return;
		}
	}
	*out = tmpl_val_nil();
	if (!st->globals)
		return;
	if (s) {
		struct lh_table *t = json_object_get_object(st->globals);
		if ((const void *)t->hash_fn == s->jhash_fn) {
			struct lh_entry *le =
				lh_table_lookup_entry_w_hash(t, name, s->jhash);
			if (le)
				*out = tmpl_val_from_json(
					(struct json_object *)lh_entry_v(le));
			return;
		}
	}
	if (json_object_object_get_ex(st->globals, name, &j))
		*out = tmpl_val_from_json(j);
}

static void lookup_root(struct rs *st, const char *name, struct val *out)
{
	lookup_root_h(st, name, NULL, out);
}

/* A key segment of a path on an object, with the precomputed json-c hash. */
static bool obj_get_seg(const struct val *obj, const struct seg *s, struct val *out)
{
	struct lh_table *t = json_object_get_object(obj->j);

	if ((const void *)t->hash_fn == s->jhash_fn) {
		struct lh_entry *le = lh_table_lookup_entry_w_hash(t, s->key, s->jhash);
		if (!le)
			return false;
		*out = tmpl_val_from_json((struct json_object *)lh_entry_v(le));
		return true;
	}
	return tmpl_val_obj_get(obj, s->key, out);
}

/* ---- expressions ---- */

static int eval(struct rs *st, const struct expr *e, struct val *out);

static bool is_blankish(const struct val *v)
{
	switch (v->type) {
	case V_NIL:
		return true;
	case V_BOOL:
		return !v->b;
	case V_STR:
		for (size_t i = 0; i < v->s.len; i++)
			if (!isspace((unsigned char)v->s.p[i]))
				return false;
		return true;
	case V_ARR:
	case V_JARR:
	case V_RANGE:
		return tmpl_val_seq_len(v) == 0;
	case V_JOBJ:
		return tmpl_val_obj_len(v) == 0;
	default:
		return false;
	}
}

static bool is_emptyish(const struct val *v)
{
	switch (v->type) {
	case V_STR:
		return v->s.len == 0;
	case V_ARR:
	case V_JARR:
	case V_RANGE:
		return tmpl_val_seq_len(v) == 0;
	case V_JOBJ:
		return tmpl_val_obj_len(v) == 0;
	default:
		return false;
	}
}

static bool liquid_eq(const struct val *l, const struct val *r)
{
	bool ls = l->type == V_BLANK || l->type == V_EMPTY;
	bool rs = r->type == V_BLANK || r->type == V_EMPTY;

	if (ls && rs)
		return l->type == r->type;
	if (ls || rs) {
		const struct val *s = ls ? l : r, *o = ls ? r : l;
		return s->type == V_BLANK ? is_blankish(o) : is_emptyish(o);
	}
	return tmpl_val_eq(l, r);
}

static int contains(struct rs *st, const struct val *l, const struct val *r)
{
	if (r->type == V_NIL || (r->type == V_BOOL && !r->b))
		return 0;
	if (l->type == V_STR) {
		struct val rs;
		if (tmpl_rs_to_str(st, r, &rs))
			return -1;
		if (tmpl_rs_charge(st, l->s.len))
			return -1;
		if (rs.s.len == 0)
			return 1;
		return memmem(l->s.p, l->s.len, rs.s.p, rs.s.len) != NULL;
	}
	if (tmpl_val_is_seq(l)) {
		size_t n = tmpl_val_seq_len(l);
		if (tmpl_rs_charge(st, n))
			return -1;
		for (size_t i = 0; i < n; i++) {
			struct val x = tmpl_val_seq_at(l, i);
			if (liquid_eq(&x, r))
				return 1;
		}
		return 0;
	}
	if (l->type == V_JOBJ && r->type == V_STR) {
		struct val x;
		return tmpl_val_obj_get(l, r->s.p, &x);
	}
	return 0;
}

static int to_range_int(struct rs *st, const struct expr *e, int64_t *out)
{
	struct val v, n;

	if (eval(st, e, &v))
		return -1;
	n = tmpl_num_from(&v);
	if (n.type == V_FLOAT) {
		if (!(n.f > -9.2e18 && n.f < 9.2e18))
			return tmpl_rs_fail(st, NERR_EVAL, e->at,
					    "range bound out of range");
		*out = (int64_t)n.f;
	} else {
		*out = n.i;
	}
	return 0;
}

static int eval(struct rs *st, const struct expr *e, struct val *out)
{
	struct val l, r;
	int c;

	switch (e->kind) {
	case X_LIT:
		*out = e->lit;
		return 0;
	case X_VAR: {
		const struct seg *s = &e->segs[0];
		if (s->key) {
			lookup_root_h(st, s->key, s, out);
		} else {
			if (eval(st, s->idx, &l))
				return -1;
			if (l.type == V_STR)
				lookup_root(st, l.s.p, out);
			else
				*out = tmpl_val_nil();
		}
		for (size_t i = 1; i < e->nsegs; i++) {
			struct val cur = *out;
			s = &e->segs[i];
			if (s->key) {
				if (cur.type == V_JOBJ && obj_get_seg(&cur, s, out))
					continue;
				l = tmpl_val_str(s->key, s->klen);
				if (tmpl_rs_lookup(st, &cur, &l, true, out))
					return -1;
			} else {
				if (eval(st, s->idx, &l) ||
				    tmpl_rs_lookup(st, &cur, &l, false, out))
					return -1;
			}
		}
		return 0;
	}
	case X_RANGE: {
		int64_t lo, hi;
		if (to_range_int(st, e->l, &lo) || to_range_int(st, e->r, &hi))
			return -1;
		out->type = V_RANGE;
		out->safe = 0;
		out->r.lo = lo;
		out->r.hi = hi;
		return 0;
	}
	case X_AND:
	case X_OR:
		if (eval(st, e->l, &l))
			return -1;
		if (e->kind == X_AND && !tmpl_val_truthy(&l)) {
			*out = tmpl_val_bool(false);
			return 0;
		}
		if (e->kind == X_OR && tmpl_val_truthy(&l)) {
			*out = tmpl_val_bool(true);
			return 0;
		}
		if (eval(st, e->r, &r))
			return -1;
		*out = tmpl_val_bool(tmpl_val_truthy(&r));
		return 0;
	case X_CMP:
		if (eval(st, e->l, &l) || eval(st, e->r, &r))
			return -1;
		/* Comparing arrays or objects walks them: charge their size. */
		if ((l.type == V_ARR || l.type == V_JARR || l.type == V_JOBJ) &&
		    tmpl_rs_charge(st, tmpl_val_seq_len(&l) + tmpl_val_obj_len(&l)))
			return -1;
		switch (e->op) {
		case OP_EQ:
			*out = tmpl_val_bool(liquid_eq(&l, &r));
			return 0;
		case OP_NE:
			*out = tmpl_val_bool(!liquid_eq(&l, &r));
			return 0;
		case OP_CONTAINS:
			if ((c = contains(st, &l, &r)) < 0)
				return -1;
			*out = tmpl_val_bool(c);
			return 0;
		default: {
			bool ok;
			c = tmpl_val_cmp(&l, &r, &ok);
			if (!ok) {
				/* Ruby compares strings with strings and numbers with
				 * numbers; a string against a number raises, anything
				 * else (nil, booleans, arrays) is just false. */
				bool ls = l.type == V_STR, rsn = r.type == V_STR;
				bool ln = l.type == V_INT || l.type == V_FLOAT;
				bool rn = r.type == V_INT || r.type == V_FLOAT;
				if ((ls && rn) || (ln && rsn))
					return tmpl_rs_fail(
						st, NERR_EVAL, e->at,
						"cannot compare a %s with a %s",
						ls ? "string" : "number",
						rsn ? "string" : "number");
				*out = tmpl_val_bool(false);
				return 0;
			}
			*out = tmpl_val_bool(e->op == OP_LT   ? c < 0
					     : e->op == OP_GT ? c > 0
					     : e->op == OP_LE ? c <= 0
							      : c >= 0);
			return 0;
		}
		}
	}
	*out = tmpl_val_nil();
	return 0;
}

static int eval_f(struct rs *st, const struct fexpr *fe, struct val *out)
{
	struct val cur, pos[8], kw[4];

	if (!fe->e) {
		*out = tmpl_val_nil();
		return 0;
	}
	if (eval(st, fe->e, &cur))
		return -1;
	for (size_t i = 0; i < fe->nf; i++) {
		const struct fcall *fc = &fe->f[i];
		struct fargs fa = {.pos = pos,
				   .npos = fc->nargs,
				   .kwnames = fc->kwnames,
				   .kwvals = kw,
				   .nkw = fc->nkw,
				   .at = fc->at};
		struct val res;
		if (!fc->def)
			continue;
		if (fc->nargs > 8 || fc->nkw > 4)
			return tmpl_rs_fail(st, NERR_EVAL, fc->at,
					    "too many filter arguments");
		for (size_t k = 0; k < fc->nargs; k++)
			if (eval(st, fc->args[k], &pos[k]))
				return -1;
		for (size_t k = 0; k < fc->nkw; k++)
			if (eval(st, fc->kwvals[k], &kw[k]))
				return -1;
		if (cur.type == V_BLANK || cur.type == V_EMPTY)
			cur = tmpl_val_str("", 0);
		if (tmpl_rs_charge(st, 1 + (cur.type == V_STR ? cur.s.len : 0)))
			return -1;
		res = tmpl_val_nil();
		st->cur_at = fc->at;
		if (fc->def->fn(st, &cur, &fa, &res))
			return -1;
		if (res.type == V_STR && res.s.len > st->lim.output_bytes)
			return tmpl_rs_fail(st, NERR_LIMIT, fc->at,
					    "string longer than the output limit");
		cur = res;
	}
	*out = cur;
	return 0;
}

/* ---- output ---- */

static int emit(struct rs *st, const char *p, size_t n)
{
	if (st->out->len + n > st->out_limit)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "output exceeds %zu bytes",
				    st->lim.output_bytes);
	if (buf_append(st->out, p, n))
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "output buffer is full");
	return 0;
}

static int emit_escaped(struct rs *st, const char *p, size_t n)
{
	size_t s = 0;
	for (size_t i = 0; i < n; i++) {
		const char *rep;
		switch (p[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			continue;
		}
		if (emit(st, p + s, i - s) || emit(st, rep, strlen(rep)))
			return -1;
		s = i + 1;
	}
	return emit(st, p + s, n - s);
}

static int emit_val(struct rs *st, const struct val *v)
{
	struct val s;
	char tmp[32];
	int n;

	if (v->type == V_INT) {
		n = (int)tmpl_val_fmt_int(v->i, tmp);
		return emit(st, tmp, (size_t)n);
	}
	if (tmpl_rs_to_str(st, v, &s))
		return -1;
	if (st->opt->html_escape && !v->safe)
		return emit_escaped(st, s.s.p, s.s.len);
	return emit(st, s.s.p, s.s.len);
}

/* ---- tags ---- */

static int render_body(struct rs *st, const struct body *b);

static int to_int_arg(struct rs *st, const struct expr *e, const char *what,
		      bool *present, int64_t *out)
{
	struct val v;

	*present = false;
	if (!e)
		return 0;
	if (eval(st, e, &v))
		return -1;
	switch (v.type) {
	case V_NIL:
		return 0;
	case V_INT:
		*out = v.i;
		break;
	case V_FLOAT:
		if (!(v.f > -9.2e18 && v.f < 9.2e18))
			return tmpl_rs_fail(st, NERR_EVAL, e->at, "%s is out of range",
					    what);
		*out = (int64_t)v.f;
		break;
	case V_STR: {
		const char *p = v.s.p;
		char *end;
		while (isspace((unsigned char)*p))
			p++;
		long long x = strtoll(p, &end, 10);
		while (isspace((unsigned char)*end))
			end++;
		if (end == p || *end)
			return tmpl_rs_fail(st, NERR_EVAL, e->at, "%s must be a number",
					    what);
		*out = x;
		break;
	}
	default:
		return tmpl_rs_fail(st, NERR_EVAL, e->at, "%s must be a number", what);
	}
	*present = true;
	return 0;
}

static int step(struct rs *st, const char *at)
{
	if (++st->iterations > st->lim.loop_iterations)
		return tmpl_rs_fail(st, NERR_LIMIT, at, "more than %zu loop iterations",
				    st->lim.loop_iterations);
	return tmpl_rs_charge(st, 1);
}

/* The collection a loop walks: arrays and ranges as they are, an object as its
 * [key, value] pairs, a non-empty string as itself, anything else as nothing. */
static int loop_coll(struct rs *st, const struct val *v, struct val *out)
{
	if (tmpl_val_is_seq(v)) {
		*out = *v;
		return 0;
	}
	if (v->type == V_JOBJ)
		return tmpl_rs_charge(st, tmpl_val_obj_len(v)) || obj_pairs(st, v, out);
	out->type = V_ARR;
	out->a.n = 0;
	out->a.items = NULL;
	if (v->type == V_STR && v->s.len) {
		struct val *one = tmpl_rs_alloc(st, sizeof(*one));
		if (!one)
			return -1;
		*one = *v;
		out->a.items = one;
		out->a.n = 1;
	}
	return 0;
}

static int render_for(struct rs *st, const struct node *n)
{
	struct val cv, coll;
	int64_t from = 0, lim = 0, len;
	bool has_off, has_lim;
	struct vtab_ent *reg;

	if (eval(st, n->loop.coll, &cv) || loop_coll(st, &cv, &coll))
		return -1;
	len = (int64_t)(tmpl_val_seq_len(&coll) > INT64_MAX ? INT64_MAX
							    : tmpl_val_seq_len(&coll));
	if (n->loop.offset_continue) {
		reg = vtab_find(&st->offsets, n->loop.name);
		from = reg ? reg->v.i : 0;
	} else if (to_int_arg(st, n->loop.offset, "offset", &has_off, &from)) {
		return -1;
	}
	if (to_int_arg(st, n->loop.limit, "limit", &has_lim, &lim))
		return -1;
	if (from < 0)
		from = 0;
	int64_t to = len;
	if (has_lim) {
		int64_t t;
		if (__builtin_add_overflow(from, lim, &t))
			t = INT64_MAX;
		if (t < to)
			to = t;
	}
	int64_t count = to > from ? to - from : 0;
	if (n->kind == N_FOR) {
		struct val reg_v = tmpl_val_int(from + count);
		if (vtab_set(st, &st->offsets, n->loop.name, &reg_v))
			return -1;
	}
	if (n->kind == N_FOR && count == 0)
		return render_body(st, &n->loop.els);

	struct loop *lp = tmpl_rs_alloc(st, sizeof(*lp));
	if (!lp)
		return -1;
	memset(lp, 0, sizeof(*lp));
	lp->name = n->loop.name;
	lp->length = count;
	lp->parent = st->loop;
	size_t nb = st->nbinds;
	struct val none = tmpl_val_nil(), lv = {.type = V_LOOP};
	lv.loop = lp;
	if (bind_push(st, n->loop.var, &none))
		return -1;
	if (n->kind == N_FOR) {
		if (bind_push(st, "forloop", &lv))
			return -1;
	} else {
		bool hc;
		int64_t cols = 0;
		if (to_int_arg(st, n->loop.cols, "cols", &hc, &cols))
			return -1;
		lp->tablerow = true;
		lp->cols = hc && cols > 0 ? cols : (count > 0 ? count : 1);
		if (bind_push(st, "tablerowloop", &lv) ||
		    emit(st, "<tr class=\"row1\">\n", 18))
			return -1;
	}
	const struct loop *saved = st->loop;
	if (n->kind == N_FOR)
		st->loop = lp;
	int rc = 0;
	for (int64_t k = 0; k < count; k++) {
		int64_t idx = n->loop.reversed ? to - 1 - k : from + k;
		if (step(st, n->at)) {
			rc = -1;
			break;
		}
		lp->idx0 = k;
		st->binds[nb].v = tmpl_val_seq_at(&coll, (size_t)idx);
		if (n->kind == N_TABLEROW) {
			char tmp[64];
			int w = snprintf(tmp, sizeof(tmp), "<td class=\"col%lld\">",
					 (long long)(k % lp->cols + 1));
			if (emit(st, tmp, (size_t)w)) {
				rc = -1;
				break;
			}
		}
		if (render_body(st, &n->loop.body)) {
			rc = -1;
			break;
		}
		if (n->kind == N_TABLEROW) {
			if (emit(st, "</td>", 5)) {
				rc = -1;
				break;
			}
			if (st->interrupt == BREAK_I) {
				st->interrupt = 0;
				break;
			}
			st->interrupt = 0;
			if (k % lp->cols == lp->cols - 1 && k != count - 1) {
				char tmp[64];
				int w = snprintf(tmp, sizeof(tmp),
						 "</tr>\n<tr class=\"row%lld\">",
						 (long long)(k / lp->cols + 2));
				if (emit(st, tmp, (size_t)w)) {
					rc = -1;
					break;
				}
			}
			continue;
		}
		if (st->interrupt == BREAK_I) {
			st->interrupt = 0;
			break;
		}
		st->interrupt = 0;
	}
	st->loop = saved;
	st->nbinds = nb;
	if (!rc && n->kind == N_TABLEROW)
		rc = emit(st, "</tr>\n", 6);
	return rc;
}

static int render_cycle(struct rs *st, const struct node *n)
{
	struct val g, key, it;
	struct vtab_ent *e;
	const char *k;

	if (n->cycle.group) {
		if (eval(st, n->cycle.group, &g) || tmpl_rs_to_str(st, &g, &key))
			return -1;
		char *s = tmpl_rs_alloc(st, key.s.len + 3);
		if (!s)
			return -1;
		s[0] = 'n';
		s[1] = ':';
		memcpy(s + 2, key.s.p, key.s.len + 1);
		k = s;
	} else {
		k = n->cycle.key;
	}
	e = vtab_find(&st->cycles, k);
	int64_t i = e ? e->v.i : 0;
	if (i >= 0 && (size_t)i < n->cycle.n) {
		if (eval(st, n->cycle.vals[i], &it) || emit_val(st, &it))
			return -1;
	}
	i++;
	if ((size_t)i >= n->cycle.n)
		i = 0;
	it = tmpl_val_int(i);
	if (step(st, n->at))
		return -1;
	return vtab_set(st, &st->cycles, k, &it);
}

static int render_counter(struct rs *st, const struct node *n)
{
	struct vtab_ent *e = vtab_find(st->counters, n->counter.name);
	int64_t v = e && e->v.type == V_INT ? e->v.i : 0;
	struct val nv;
	char tmp[32];

	if (n->kind == N_INCREMENT) {
		nv = tmpl_val_int(v == INT64_MAX ? v : v + 1);
	} else {
		v = v == INT64_MIN ? v : v - 1;
		nv = tmpl_val_int(v);
	}
	int w = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
	if (emit(st, tmp, (size_t)w))
		return -1;
	return vtab_set(st, st->counters, n->counter.name, &nv);
}

static int get_partial(struct rs *st, const struct node *n, const char *name,
		       struct tmpl **out)
{
	struct partial_cache *c;
	struct buf src;
	struct nerr_msg m;
	enum nerr rc;

	for (c = st->partials; c; c = c->next)
		if (strcmp(c->name, name) == 0) {
			*out = c->t;
			return 0;
		}
	if (!st->ro || !st->ro->partial)
		return tmpl_rs_fail(st, NERR_NOTFOUND, n->at, "snippet '%s' not found",
				    name);
	buf_init(&src, st->opt->limits.template_bytes ? st->opt->limits.template_bytes
						      : 1 << 20);
	rc = st->ro->partial(st->ro->partial_userdata, name, &src);
	if (rc) {
		buf_fini(&src);
		if (rc == NERR_NOTFOUND)
			return tmpl_rs_fail(st, NERR_NOTFOUND, n->at,
					    "snippet '%s' not found", name);
		return tmpl_rs_fail(st, rc, n->at, "snippet '%s' could not be loaded",
				    name);
	}
	nerr_clear(&m);
	rc = tmpl_compile(buf_str(&src), src.len, st->opt, out, &m);
	buf_fini(&src);
	if (rc)
		return tmpl_rs_fail(st, NERR_EVAL, n->at, "in snippet '%s': %s", name,
				    m.message);
	c = xcalloc(1, sizeof(*c));
	c->name = xstrdup(name);
	c->t = *out;
	c->next = st->partials;
	st->partials = c;
	return 0;
}

static int render_partial_body(struct rs *st, const struct tmpl *pt,
			       const struct body *body)
{
	const struct tmpl *saved = st->t;
	int rc;

	const char *saved_at = st->cur_at;

	st->t = pt;
	rc = render_body(st, body);
	st->t = saved;
	st->cur_at = saved_at;
	return rc;
}

static int render_include(struct rs *st, const struct node *n)
{
	struct val nv, v;
	const struct tmpl *pt;
	const struct body *pbody;
	const char *bname;
	size_t nb = st->nbinds;
	int rc = 0;

	if (eval(st, n->incl.name, &nv))
		return -1;
	if (st->depth + 1 > st->lim.include_depth)
		return tmpl_rs_fail(st, NERR_LIMIT, n->at,
				    "snippets nested more than %zu deep",
				    st->lim.include_depth);
	if (nv.type == V_SNIPPET) {
		/* An inline {% snippet %}: its name is the variable's. */
		pt = nv.snip->t;
		pbody = nv.snip->body;
		nv = tmpl_val_str(n->incl.name->segs[0].key, n->incl.name->segs[0].klen);
	} else if (n->incl.name->kind == X_VAR && n->kind == N_RENDER) {
		return tmpl_rs_fail(st, NERR_EVAL, n->at, "'%s' is not a snippet",
				    n->incl.name->segs[0].key);
	} else {
		struct tmpl *loaded;
		if (nv.type != V_STR || !nv.s.len)
			return tmpl_rs_fail(st, NERR_EVAL, n->at,
					    "snippet name must be a non-empty string");
		if (get_partial(st, n, nv.s.p, &loaded))
			return -1;
		pt = loaded;
		pbody = &loaded->body;
	}
	bname = n->incl.alias;
	if (!bname) {
		const char *sl = strrchr(nv.s.p, '/');
		bname = sl ? sl + 1 : nv.s.p;
	}
	if (n->incl.with) {
		if (eval(st, n->incl.with, &v))
			return -1;
	} else if (n->kind == N_INCLUDE) {
		lookup_root(st, bname, &v);
	} else {
		v = tmpl_val_nil();
	}
	/* Arguments are evaluated in the caller's scope. */
	struct val *kw = tmpl_rs_alloc(st, (n->incl.nkw + 1) * sizeof(*kw));
	if (!kw)
		return -1;
	for (size_t i = 0; i < n->incl.nkw; i++)
		if (eval(st, n->incl.kwvals[i], &kw[i]))
			return -1;
	st->depth++;
	if (n->kind == N_INCLUDE) {
		for (size_t i = 0; i < n->incl.nkw; i++)
			if (bind_push(st, n->incl.kwnames[i], &kw[i]))
				return -1;
		bool each = v.type == V_ARR || v.type == V_JARR ||
			    (n->incl.is_for && tmpl_val_is_seq(&v));
		size_t cnt = each ? tmpl_val_seq_len(&v) : 1;
		size_t slot = st->nbinds;
		if (bind_push(st, bname, &v))
			return -1;
		for (size_t i = 0; i < cnt && !rc; i++) {
			if (each) {
				if (step(st, n->at))
					return -1;
				st->binds[slot].v = tmpl_val_seq_at(&v, i);
			}
			rc = render_partial_body(st, pt, pbody);
		}
	} else {
		struct vtab *sl = st->locals, *sc = st->counters;
		size_t sf = st->bind_floor;
		const struct loop *sloop = st->loop;
		struct val coll = v;
		bool each = n->incl.is_for && (tmpl_val_is_seq(&v) || v.type == V_JOBJ);
		if (each && loop_coll(st, &v, &coll))
			return -1;
		size_t cnt = each ? tmpl_val_seq_len(&coll) : 1;
		struct loop *lp = NULL;
		if (each) {
			if (!(lp = tmpl_rs_alloc(st, sizeof(*lp))))
				return -1;
			memset(lp, 0, sizeof(*lp));
			lp->name = nv.s.p;
			lp->length = (int64_t)cnt;
		}
		st->bind_floor = st->nbinds;
		st->loop = NULL;
		for (size_t i = 0; i < cnt && !rc; i++) {
			struct vtab *nl = tmpl_rs_alloc(st, sizeof(*nl)),
				    *ncn = tmpl_rs_alloc(st, sizeof(*nl));
			if (!nl || !ncn) {
				rc = -1;
				break;
			}
			memset(nl, 0, sizeof(*nl));
			memset(ncn, 0, sizeof(*ncn));
			st->locals = nl;
			st->counters = ncn;
			if (each) {
				struct val lv = {.type = V_LOOP};
				if (step(st, n->at)) {
					rc = -1;
					break;
				}
				lp->idx0 = (int64_t)i;
				lv.loop = lp;
				if (vtab_set(st, nl, "forloop", &lv)) {
					rc = -1;
					break;
				}
			}
			for (size_t k = 0; k < n->incl.nkw && !rc; k++)
				rc = vtab_set(st, nl, n->incl.kwnames[k], &kw[k]);
			struct val item = each ? tmpl_val_seq_at(&coll, i) : v;
			if (!rc && item.type != V_NIL)
				rc = vtab_set(st, nl, bname, &item);
			if (!rc)
				rc = render_partial_body(st, pt, pbody);
			st->interrupt = 0;
		}
		st->locals = sl;
		st->counters = sc;
		st->loop = sloop;
		st->bind_floor = sf;
	}
	st->depth--;
	st->nbinds = nb;
	if (rc && st->msg && true) {
		/* Point at the include in this template, then say where inside. */
		char inner[sizeof(st->msg->message)];
		int line, col;
		snprintf(inner, sizeof(inner), "%s", st->msg->message);
		pos_in(st->t->src, st->t->len, n->at, &line, &col);
		struct buf m;
		buf_init(&m, 0);
		buf_printf(&m, "%d:%d: in snippet '%.60s': %s", line, col, nv.s.p, inner);
		snprintf(st->msg->message, sizeof(st->msg->message), "%.*s",
			 (int)(sizeof(st->msg->message) - 1), buf_str(&m));
		buf_fini(&m);
	}
	return rc;
}

static int render_node(struct rs *st, const struct node *n)
{
	struct val v;

	st->cur_at = n->at;
	/* Every node run costs a unit, so a large loop body is bounded too. */
	if (tmpl_rs_charge(st, NODE_UNITS))
		return -1;

	switch (n->kind) {
	case N_TEXT:
		return emit(st, n->text.p, n->text.len);
	case N_OUTPUT:
		if (eval_f(st, &n->out, &v))
			return -1;
		return emit_val(st, &v);
	case N_ASSIGN:
		if (eval_f(st, &n->assign.v, &v))
			return -1;
		return vtab_set(st, st->locals, n->assign.name, &v);
	case N_CAPTURE: {
		size_t start = st->out->len;
		if (render_body(st, &n->capture.body))
			return -1;
		char *s = sdup(st, st->out->data ? st->out->data + start : "",
			       st->out->len - start);
		if (!s)
			return -1;
		v = tmpl_val_str(s, st->out->len - start);
		v.safe = 1;
		st->out->len = start;
		if (st->out->data)
			st->out->data[start] = 0;
		return vtab_set(st, st->locals, n->capture.name, &v);
	}
	case N_IF:
		for (size_t i = 0; i < n->cond.n; i++) {
			const struct branch *b = &n->cond.br[i];
			bool yes = true;
			if (b->cond) {
				if (eval(st, b->cond, &v))
					return -1;
				yes = tmpl_val_truthy(&v) != b->negate;
			}
			if (yes)
				return render_body(st, &b->body);
		}
		return 0;
	case N_CASE: {
		struct val subj;
		bool matched = false;
		if (eval(st, n->cond.subject, &subj))
			return -1;
		for (size_t i = 0; i < n->cond.n; i++) {
			const struct branch *b = &n->cond.br[i];
			if (!b->cond) {
				if (!matched && render_body(st, &b->body))
					return -1;
			} else {
				if (eval(st, b->cond, &v))
					return -1;
				if (liquid_eq(&subj, &v)) {
					matched = true;
					if (render_body(st, &b->body))
						return -1;
				}
			}
			if (st->interrupt)
				return 0;
		}
		return 0;
	}
	case N_FOR:
	case N_TABLEROW:
		return render_for(st, n);
	case N_CYCLE:
		return render_cycle(st, n);
	case N_INCREMENT:
	case N_DECREMENT:
		return render_counter(st, n);
	case N_BREAK:
		st->interrupt = BREAK_I;
		return 0;
	case N_CONTINUE:
		st->interrupt = CONTINUE_I;
		return 0;
	case N_INCLUDE:
	case N_RENDER:
		return render_include(st, n);
	case N_SNIPPET: {
		struct snip *sn = tmpl_rs_alloc(st, sizeof(*sn));
		if (!sn)
			return -1;
		sn->body = &n->snippet.body;
		sn->t = st->t;
		v.type = V_SNIPPET;
		v.safe = 0;
		v.snip = sn;
		return vtab_set(st, st->locals, n->snippet.name, &v);
	}
	case N_IFCHANGED: {
		size_t start = st->out->len;
		if (render_body(st, &n->ifchanged))
			return -1;
		const char *p = st->out->data ? st->out->data + start : "";
		size_t len = st->out->len - start;
		if (st->ifchanged && st->ifchanged_len == len &&
		    memcmp(st->ifchanged, p, len) == 0) {
			st->out->len = start;
			if (st->out->data)
				st->out->data[start] = 0;
			return 0;
		}
		char *s = sdup(st, p, len);
		if (!s)
			return -1;
		st->ifchanged = s;
		st->ifchanged_len = len;
		return 0;
	}
	}
	return 0;
}

static int render_body(struct rs *st, const struct body *b)
{
	for (size_t i = 0; i < b->n; i++) {
		if (render_node(st, b->nodes[i]))
			return -1;
		if (st->interrupt)
			return 0;
	}
	return 0;
}

static size_t lim(size_t v, size_t def)
{
	return v ? v : def;
}

enum nerr tmpl_render(const struct tmpl *t, struct json_object *ctx,
		      const struct tmpl_render_options *ro, struct arena *scratch,
		      struct buf *out, struct nerr_msg *msg)
{
	struct rs st;
	struct vtab locals = {0}, counters = {0};
	struct tmpl_limits l = {0};
	size_t saved_limit = scratch->limit_bytes;
	int rc;

	memset(&st, 0, sizeof(st));
	if (ro)
		l = ro->limits;
	st.lim.output_bytes = lim(l.output_bytes, 4 << 20);
	st.lim.loop_iterations = lim(l.loop_iterations, 100000);
	st.lim.include_depth = lim(l.include_depth, 10);
	st.lim.scratch_bytes = lim(l.scratch_bytes, 64 << 20);
	st.lim.work_units = lim(l.work_units, 100000000);
	st.a = scratch;
	st.out = out;
	st.out_limit = out->len + st.lim.output_bytes;
	st.t = t;
	st.opt = &t->opt;
	st.ro = ro;
	st.globals = ctx && json_object_is_type(ctx, json_type_object) ? ctx : NULL;
	st.locals = &locals;
	st.counters = &counters;
	st.msg = msg;
	st.now_ms = ro && ro->now_ms ? ro->now_ms : clock_wall_ms();
	if (!scratch->limit_bytes)
		scratch->limit_bytes = scratch->used_bytes + st.lim.scratch_bytes;
	rc = render_body(&st, &t->body);
	scratch->limit_bytes = saved_limit;
	buf_fini(&st.tb);
	while (st.partials) {
		struct partial_cache *c = st.partials;
		st.partials = c->next;
		tmpl_free(c->t);
		free(c->name);
		free(c);
	}
	if (rc)
		return st.rc ? st.rc : NERR_EVAL;
	return NERR_OK;
}
