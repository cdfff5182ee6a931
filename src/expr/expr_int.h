/*
 * expr_int.h -- what the files of src/expr share and nobody else sees.
 *
 * Design: the compiled form is a tree of struct node allocated in the program's
 * arena. Every node is resolved at compile time: identifiers to variable slots or
 * comprehension locals, calls to a C function pointer, macros to comprehension
 * nodes. The evaluator (expr_eval.c) walks the tree with a per-evaluation context
 * (struct ectx) that holds the scratch arena, the locals and the step budget.
 * Out-of-memory in the scratch arena (when it has a limit) unwinds with longjmp
 * from expr_ealloc() to expr_eval(); nothing between holds a heap resource.
 */
#ifndef NUDGE_EXPR_INT_H
#define NUDGE_EXPR_INT_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>

#include "expr/expr.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

struct ectx;
struct node;

/* Select paths over variables that occur more than once in a condition
 * (`profile.traits` in a has() chain) are evaluated once per evaluation. */
#define EXPR_MAX_MEMO 32

/* A builtin: receives evaluated, non-error arguments (receiver first). */
typedef struct expr_value (*builtin_fn)(struct ectx *c, const struct node *n,
					const struct expr_value *a, size_t na);

enum node_op {
	N_LIT,
	N_VAR,	  /* slot */
	N_LOCAL,  /* local index */
	N_UNDECL, /* name: evaluates to an error */
	N_SELECT, /* a[0].name */
	N_HAS,	  /* has(a[0].name) */
	N_INDEX,  /* a[0][a[1]] */
	N_AND,
	N_OR,
	N_NOT,
	N_NEG,
	N_COND,
	N_EQ,
	N_NE,
	N_LT,
	N_LE,
	N_GT,
	N_GE,
	N_IN,
	N_ADD,
	N_SUB,
	N_MUL,
	N_DIV,
	N_MOD,
	N_LIST,
	N_MAP,		 /* a[2i] key, a[2i+1] value */
	N_CALL,		 /* builtin fn over a[] */
	N_USER,		 /* registered native function */
	N_NOFUNC,	 /* unknown function: evaluates args, then an error */
	N_COMPREH,	 /* macro */
	N_MATCHES_CONST, /* a[0].matches(constant pattern), regex precompiled */
};

enum comp_kind {
	C_ALL,
	C_EXISTS,
	C_EXISTS_ONE,
	C_MAP, /* map(x, t) / map(x, p, t) / transformList */
	C_FILTER,
	C_TMAP, /* transformMap */
};

struct node {
	uint8_t op;	     /* enum node_op */
	uint8_t kind;	     /* enum comp_kind for N_COMPREH */
	uint16_t na;	     /* number of a[] */
	uint32_t len;	     /* length of name */
	uint32_t zone;	     /* time getters: 1 + index in prog->zones, or 0 */
	uint32_t memo;	     /* N_SELECT: 1 + memo slot when the path repeats, or 0 */
	unsigned long hash;  /* N_SELECT/N_HAS: json-c hash of name, if hash_fn */
	const void *hash_fn; /* the json-c hash function hash was computed with */
	struct node **a;     /* children */
	const char *name;    /* field, identifier or function name */
	union {
		struct expr_value lit;
		size_t slot;
		builtin_fn fn;
		struct {
			expr_function_fn fn;
			void *userdata;
		} user;
		struct {
			int v1, v2;    /* local indexes; v2 < 0 for one variable */
			bool has_pred; /* map/transform with a filter predicate */
		} comp;
		pcre2_code *re;
	} u;
};

struct expr_program {
	struct arena arena; /* owns the nodes and literals */
	struct node *root;
	const struct expr_env *env;
	pcre2_code **regexes; /* owned, freed with the program */
	size_t nregex;
	pcre2_match_context *mctx; /* owned; match and depth limits */
	struct expr_zone *zones;   /* owned; calendars for constant time zones */
	size_t nzones;
	/* Non-NULL for a view (expr_index_condition): root is a node of view_of's
	 * tree, and nodes, regexes, mctx and zones are view_of's, not freed here. */
	const struct expr_program *view_of;
};

/* An ICU calendar opened at compile time for a constant zone name; ICU
 * calendars are not thread-safe, so evaluations take the mutex. */
struct expr_zone {
	void *cal; /* UCalendar */
	pthread_mutex_t mu;
};

struct ectx {
	struct arena *scratch;
	void *eval_data; /* expr_eval_with's, for native functions */
	const struct expr_program *prog;
	const struct expr_value *vars;
	size_t nvars;
	struct expr_value locals[EXPR_MAX_LOCALS];
	uint32_t memo_valid; /* bit i: memo[i] holds the value of memo slot i */
	struct expr_value memo[EXPR_MAX_MEMO];
	uint64_t steps_left;
	pcre2_general_context *gctx; /* arena-backed, created on first use */
	pcre2_match_data *md;
	jmp_buf oom;
};

/* Memory from the scratch arena; unwinds to expr_eval() on exhaustion. */
void *expr_ealloc(struct ectx *c, size_t n);
/* Charges cost steps of work; unwinds to expr_eval() when the budget is spent. */
static inline void charge(struct ectx *c, uint64_t cost)
{
	if (c->steps_left < cost)
		longjmp(c->oom, 2);
	c->steps_left -= cost;
}
struct expr_value expr_eerr(struct ectx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
struct expr_value expr_eerr_static(const char *msg);
struct expr_value expr_no_overload(struct ectx *c, const char *fn,
				   const struct expr_value *a, size_t na);

static inline struct expr_value mk_bool(bool b)
{
	struct expr_value v = {.kind = EXPR_BOOL};
	v.as.b = b;
	return v;
}
static inline struct expr_value mk_int(int64_t i)
{
	struct expr_value v = {.kind = EXPR_INT};
	v.as.i = i;
	return v;
}
static inline struct expr_value mk_uint(uint64_t u)
{
	struct expr_value v = {.kind = EXPR_UINT};
	v.as.u = u;
	return v;
}
static inline struct expr_value mk_double(double d)
{
	struct expr_value v = {.kind = EXPR_DOUBLE};
	v.as.d = d;
	return v;
}
static inline struct expr_value mk_str(const char *s, size_t len)
{
	struct expr_value v = {.kind = EXPR_STRING, .len = (uint32_t)len};
	v.as.s = s;
	return v;
}
static inline struct expr_value mk_bytes(const char *s, size_t len)
{
	struct expr_value v = {.kind = EXPR_BYTES, .len = (uint32_t)len};
	v.as.s = s;
	return v;
}
static inline struct expr_value mk_null(void)
{
	struct expr_value v = {.kind = EXPR_NULL};
	return v;
}

/* expr_value.c: lists, maps, equality, ordering, printing. */
const char *expr_kind_name(const struct expr_value *v);
/* Item i of a list (i < coll_size). */
struct expr_value expr_list_get(const struct expr_value *v, size_t i);
/* Iterates a map's entries (json maps: in json-c's insertion order). */
struct map_iter {
	const struct expr_value *m;
	size_t i;
	void *entry; /* json-c lh_entry cursor */
};
void expr_map_iter_init(struct map_iter *it, const struct expr_value *m);
bool expr_map_next(struct map_iter *it, struct expr_value *k, struct expr_value *val);
/* Looks key up; returns false when absent or when the key type cannot match. */
bool expr_map_find(const struct expr_value *m, const struct expr_value *key,
		   struct expr_value *out);
bool expr_map_find_str(const struct expr_value *m, const char *s, size_t len,
		       struct expr_value *out);
/* The same for a field name of a select node (NUL-terminated, hash precomputed). */
bool expr_map_find_field(const struct expr_value *m, const struct node *n,
			 struct expr_value *out);
/* Precomputes n->hash for json-c lookups of n->name (NUL-terminated). */
void expr_field_hash(struct node *n);
/* CEL equality: returns a bool value or an error (never errors for kinds). */
bool expr_val_equal(const struct expr_value *a, const struct expr_value *b);
/* Ordering: returns -1/0/1, 2 when unordered (NaN), 3 when unsupported. */
int expr_val_compare(const struct expr_value *a, const struct expr_value *b);
enum print_mode {
	PRINT_LITERAL, /* a CEL literal: 1u, "a\n", b"\x00", timestamp("...") */
	PRINT_STRING,  /* what string() returns */
	PRINT_FORMAT,  /* format("%s"): infinities spelled out, map keys sorted */
};
enum nerr expr_val_print(const struct expr_value *v, struct buf *out,
			 enum print_mode mode);
void expr_print_double(double d, struct buf *out, bool literal);
bool expr_utf8_valid(const char *s, size_t len);
size_t expr_utf8_count(const char *s, size_t len);
/* Decodes one code point at s (len > 0); returns bytes consumed (1 on bad). */
size_t expr_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
size_t expr_utf8_encode(uint32_t cp, char *out);

/* expr_time.c */
#define TS_MIN_SEC (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define TS_MAX_SEC 253402300799LL   /* 9999-12-31T23:59:59Z */
/* Durations span what cel-go's time.Duration does: int64 nanoseconds (~292 years). */
#define DUR_MAX_NSEC INT64_MAX
bool expr_ts_parse(const char *s, size_t len, int64_t *sec, int32_t *nsec);
void expr_ts_format(int64_t sec, int32_t nsec, char *out /* >= 40 */);
bool expr_dur_parse(const char *s, size_t len, int64_t *sec, int32_t *nsec);
void expr_dur_format(int64_t sec, int32_t nsec, char *out /* >= 40 */);
struct expr_value expr_ts_make(struct ectx *c, int64_t sec, int64_t nsec);
struct expr_value expr_dur_make(struct ectx *c, int64_t sec, int64_t nsec);
/* Opens a calendar for the constant zone id (an IANA name) and returns its
 * n->zone number, or 0 when the zone needs no calendar or is unknown (then the
 * getter decides at evaluation, with an error for an unknown zone). */
uint32_t expr_zone_register(struct expr_program *prog, const char *id, size_t len);
void expr_zones_free(struct expr_program *prog);
/* Timestamp and duration getters (name = "getFullYear", ...). */
builtin_fn expr_time_getter(const char *name, size_t na);

/* expr_funcs.c: resolves a call at compile time (receiver counts in na). */
builtin_fn expr_builtin_lookup(const char *name, size_t len, size_t na, bool receiver);
struct expr_value expr_call_matches(struct ectx *c, const struct expr_value *s,
				    const pcre2_code *re);
pcre2_code *expr_regex_compile(const char *pat, size_t len, pcre2_general_context *g,
			       char *err, size_t errlen);

/* expr_eval.c */
struct expr_value expr_eval_node(struct ectx *c, const struct node *n);

/* expr_env (expr.c) */
bool expr_env_find_var(const struct expr_env *env, const char *name, size_t len,
		       size_t *slot);
bool expr_env_find_function(const struct expr_env *env, const char *name, size_t len,
			    size_t na, expr_function_fn *fn, void **userdata);

#endif
