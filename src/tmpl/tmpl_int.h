/*
 * tmpl_int.h -- what the files of the template module share: runtime values, the
 * compiled syntax tree, the render state and the filter table. Not public.
 */
#ifndef NUDGE_TMPL_INT_H
#define NUDGE_TMPL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "tmpl/tmpl.h"

/* ---- values ---- */

enum val_type {
	V_NIL,
	V_BOOL,
	V_INT,
	V_FLOAT,
	V_STR,	   /* s: NUL-terminated (p[len] == 0) */
	V_ARR,	   /* a: array made during the render */
	V_JARR,	   /* j: a json-c array of the context */
	V_JOBJ,	   /* j: a json-c object of the context */
	V_RANGE,   /* r: lo..hi inclusive */
	V_BLANK,   /* the literal `blank` */
	V_EMPTY,   /* the literal `empty` */
	V_LOOP,	   /* loop: forloop / tablerowloop */
	V_SNIPPET, /* snip: a {% snippet %} defined during the render */
};

struct loop;
struct snip;

struct val {
	uint8_t type;
	uint8_t safe; /* V_STR already HTML-safe (escape, raw, capture) */
	union {
		bool b;
		int64_t i;
		double f;
		struct {
			const char *p;
			size_t len;
		} s;
		struct {
			const struct val *items;
			size_t n;
		} a;
		struct json_object *j;
		struct {
			int64_t lo, hi;
		} r;
		const struct loop *loop;
		const struct snip *snip;
	};
};

struct loop {
	const char *name; /* forloop.name */
	int64_t length, idx0;
	const struct loop *parent;
	bool tablerow;
	int64_t cols, col0, row;
};

/* ---- compiled tree ---- */

enum expr_kind { X_LIT, X_VAR, X_RANGE, X_CMP, X_AND, X_OR };
enum cmp_op { OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE, OP_CONTAINS };

struct expr;

struct seg {
	const char *key; /* NUL-terminated; NULL when idx is set */
	size_t klen;
	struct expr *idx;     /* bracketed expression */
	uint64_t vhash;	      /* key's hash for render tables (tmpl_hash_str) */
	unsigned long jhash;  /* key's hash for json-c objects ... */
	const void *jhash_fn; /* ... when they hash with this function */
};

struct expr {
	uint8_t kind;
	uint8_t op;
	const char *at;
	struct val lit;	  /* X_LIT */
	struct seg *segs; /* X_VAR: segs[0] is the root */
	size_t nsegs;
	struct expr *l, *r; /* X_RANGE, X_CMP, X_AND, X_OR */
};

struct rs;
struct fargs;
typedef int (*filter_fn)(struct rs *st, const struct val *in, const struct fargs *fa,
			 struct val *out);

struct filter_def {
	const char *name;
	uint8_t min, max;
	const char *kw; /* allowed keyword argument or NULL */
	filter_fn fn;
};

struct fcall {
	const struct filter_def *def; /* NULL: unknown filter in lax mode, skipped */
	const char *at;
	struct expr **args;
	size_t nargs;
	const char **kwnames;
	struct expr **kwvals;
	size_t nkw;
};

struct fexpr {
	struct expr *e; /* NULL: empty output */
	struct fcall *f;
	size_t nf;
};

enum node_kind {
	N_TEXT,
	N_OUTPUT,
	N_ASSIGN,
	N_CAPTURE,
	N_IF,
	N_CASE,
	N_FOR,
	N_TABLEROW,
	N_CYCLE,
	N_INCREMENT,
	N_DECREMENT,
	N_BREAK,
	N_CONTINUE,
	N_INCLUDE,
	N_RENDER,
	N_IFCHANGED,
	N_SNIPPET,
};

struct node;

struct body {
	struct node **nodes;
	size_t n;
};

struct branch {
	struct expr *cond; /* NULL for else */
	bool negate;	   /* unless */
	struct body body;
};

struct node {
	uint8_t kind;
	bool blank; /* renders nothing but whitespace (Liquid's blank blocks) */
	const char *at;
	union {
		struct {
			const char *p;
			size_t len;
		} text;
		struct fexpr out;
		struct {
			const char *name;
			struct fexpr v;
		} assign;
		struct {
			const char *name;
			struct body body;
		} capture;
		struct {
			struct expr *subject; /* N_CASE only */
			struct branch *br;
			size_t n;
		} cond;
		struct {
			const char *var;
			const char *name; /* "var-collection" */
			struct expr *coll, *limit, *offset, *cols;
			bool reversed, offset_continue;
			struct body body, els;
		} loop;
		struct {
			struct expr *group; /* NULL: keyed by key */
			const char *key;
			struct expr **vals;
			size_t n;
		} cycle;
		struct {
			const char *name;
		} counter;
		struct {
			struct expr *name;
			struct expr *with;
			bool is_for;
			const char *alias; /* NULL: the snippet name */
			const char **kwnames;
			struct expr **kwvals;
			size_t nkw;
		} incl;
		struct body ifchanged;
		struct {
			const char *name;
			struct body body;
		} snippet;
	};
};

/* A snippet value: its body and the template it came from (for positions). */
struct snip {
	const struct body *body;
	const struct tmpl *t;
};

struct tmpl {
	struct arena arena; /* owns everything below */
	const char *src;    /* copy of the source */
	size_t len;
	struct tmpl_options opt;
	struct body body;
};

/* ---- render state ---- */

struct vtab_ent {
	const char *key;
	struct val v;
};

struct vtab {
	struct vtab_ent *ents;
	size_t n, cap;
};

struct bind {
	const char *name;
	struct val v;
};

struct fargs {
	const struct val *pos;
	size_t npos;
	const char *const *kwnames;
	const struct val *kwvals;
	size_t nkw;
	const char *at;
};

struct partial_cache {
	char *name;
	struct tmpl *t;
	struct partial_cache *next;
};

struct rs {
	struct arena *a;
	struct buf *out;
	size_t out_limit;     /* out->len may not pass this */
	const struct tmpl *t; /* template being rendered (positions) */
	const struct tmpl_options *opt;
	struct tmpl_limits lim;
	const struct tmpl_render_options *ro;
	struct json_object *globals;
	struct vtab *locals, *counters;
	struct vtab cycles, offsets;
	struct bind *binds;
	size_t nbinds, capbinds;
	size_t bind_floor;	 /* binds below are hidden from a {% render %} */
	const struct loop *loop; /* innermost for loop (parentloop) */
	int interrupt;		 /* 0, 1 = break, 2 = continue */
	const char *ifchanged;
	size_t ifchanged_len;
	size_t iterations, depth, work;
	int64_t now_ms;
	struct partial_cache *partials;
	struct buf tb; /* filters' string builder, see filters.c */
	enum nerr rc;
	struct nerr_msg *msg;
	bool failed;
	const char *cur_at; /* node or filter being run: where errors point */
};

/* render.c: the hash of locals/counters tables, precomputed for names */
uint64_t tmpl_hash_str(const char *s);

/* value.c */
void tmpl_val_fmt_float(double d, char *out, size_t n);
size_t tmpl_val_fmt_int(int64_t v, char *out);
bool tmpl_val_truthy(const struct val *v);
size_t tmpl_val_seq_len(const struct val *v);
struct val tmpl_val_seq_at(const struct val *v, size_t i);
bool tmpl_val_is_seq(const struct val *v);
struct val tmpl_val_from_json(struct json_object *j);
struct val tmpl_val_str(const char *p, size_t len);
struct val tmpl_val_int(int64_t i);
struct val tmpl_val_float(double f);
struct val tmpl_val_bool(bool b);
struct val tmpl_val_nil(void);
bool tmpl_val_eq(const struct val *a, const struct val *b);
int tmpl_val_cmp(const struct val *a, const struct val *b, bool *ok);
size_t tmpl_val_obj_len(const struct val *v);
bool tmpl_val_obj_get(const struct val *v, const char *key, struct val *out);
size_t tmpl_utf8_len(const char *p, size_t n);

/* render.c helpers used by filters */
int tmpl_rs_fail(struct rs *st, enum nerr rc, const char *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void *tmpl_rs_alloc(struct rs *st, size_t n);
int tmpl_rs_charge(struct rs *st, size_t units);
/* Converts v to its string form (into the arena when needed). */
int tmpl_rs_to_str(struct rs *st, const struct val *v, struct val *out);
int tmpl_rs_inspect(struct rs *st, struct buf *b, const struct val *v, int depth);
int tmpl_rs_json(struct rs *st, struct buf *b, const struct val *v, int depth);
/* Builds a flat array of the elements (Liquid's InputIterator). */
int tmpl_rs_flatten(struct rs *st, const struct val *v, struct val *out);
int tmpl_rs_lookup(struct rs *st, const struct val *obj, const struct val *key, bool cmd,
		   struct val *out);

/* filters.c */
const struct filter_def *tmpl_filter_find(const char *name, size_t len);

/* number helpers (value.c) */
struct val tmpl_num_from(const struct val *v);
int tmpl_num_arith(char op, const struct val *a, const struct val *b, struct val *out);
int tmpl_num_round(const struct val *v, int64_t nd, struct val *out);

#endif
