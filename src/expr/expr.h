/*
 * expr.h -- the CEL condition language: compile once, evaluate many times.
 *
 * Design: an environment (struct expr_env) declares the variables a condition may
 * name (each gets a slot number, in declaration order) and the extra functions the
 * engine provides (event_count, consent, in_audience, ...). expr_compile() parses a
 * CEL source text against an environment into an immutable program whose variable
 * references are already resolved to slots and whose calls are already resolved to
 * functions. expr_eval() runs a program against one value per slot and a
 * caller-owned scratch arena; it touches the heap only through that arena, so a
 * program can be evaluated from several threads at once (one arena per thread).
 *
 * Values: struct expr_value is a small tagged union. Lists and maps either live in
 * the scratch arena or are views of json-c objects (variables are never copied).
 * An evaluation error is itself a value (EXPR_ERROR) because CEL errors propagate
 * and can be absorbed by && and ||.
 *
 * The language as nudge supports it is documented in docs/expressions.md.
 * References: cel-spec (github.com/google/cel-spec), langdef.md.
 */
#ifndef NUDGE_EXPR_EXPR_H
#define NUDGE_EXPR_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"

struct json_object;

/* Caps on client-written conditions (STYLE.md: everything sized by a client is capped).
 */
#define EXPR_MAX_SOURCE_BYTES  16384   /* length of the source text */
#define EXPR_MAX_DEPTH	       200     /* nesting of the syntax tree */
#define EXPR_MAX_LITERAL_BYTES 4096    /* one string or bytes literal */
#define EXPR_MAX_LITERAL_ITEMS 1024    /* items of one list or map literal */
#define EXPR_MAX_VARS	       64      /* variables of one environment */
#define EXPR_MAX_LOCALS	       32      /* comprehension variables in scope at once */
#define EXPR_MAX_REGEX_BYTES   1024    /* one matches() pattern */
#define EXPR_DEFAULT_MAX_STEPS 1000000 /* comprehension iterations per evaluation */

enum expr_kind {
	EXPR_NULL = 0,
	EXPR_BOOL,
	EXPR_INT,
	EXPR_UINT,
	EXPR_DOUBLE,
	EXPR_STRING, /* UTF-8, not NUL-terminated: use len */
	EXPR_BYTES,
	EXPR_LIST,
	EXPR_MAP,
	EXPR_TIMESTAMP, /* seconds since the Unix epoch + nanoseconds, UTC */
	EXPR_DURATION,	/* seconds + nanoseconds, both with the same sign */
	EXPR_TYPE,	/* a type name as a value: type(1) == int */
	EXPR_ERROR,	/* an evaluation error; s is the message */
};

/* Set in expr_value.flags when a list or map is a view of a json-c object. */
#define EXPR_F_JSON 1u

/*
 * 16 bytes, so the x86-64 ABI returns it in two registers: the evaluator passes
 * values around by value without touching memory.
 */
struct expr_value {
	uint8_t kind;  /* enum expr_kind */
	uint8_t flags; /* EXPR_F_* */
	union {
		uint32_t
			len; /* bytes of a string/bytes/type/error, items of a list/map */
		int32_t nsec; /* timestamp/duration: nanoseconds, same sign as as.sec */
	};
	union {
		bool b;
		int64_t i;
		uint64_t u;
		double d;
		const char *s;
		/* list: len values; map: 2*len values, key then value */
		const struct expr_value *items;
		struct json_object *json; /* when flags & EXPR_F_JSON */
		int64_t sec;		  /* timestamp/duration: seconds */
	} as;
};

struct expr_env;
struct expr_program;

/*
 * What a native function receives besides its arguments: the scratch arena for
 * results and the userdata given at registration.
 */
struct expr_call {
	struct arena *scratch;
	void *userdata;	 /* given to expr_env_add_function */
	void *eval_data; /* given to expr_eval_with (NULL from expr_eval) */
};

/*
 * A native function. args are already evaluated and none is an error (errors
 * propagate before the call). Returns the result; use expr_value_error() for a
 * failure. Memory for a result comes from call->scratch or outlives the evaluation.
 */
typedef struct expr_value (*expr_function_fn)(const struct expr_call *call,
					      const struct expr_value *args,
					      size_t nargs);

/* A new environment with no variables and the standard library. */
struct expr_env *expr_env_new(void);
void expr_env_free(struct expr_env *env);
/*
 * Declares a variable; *slot (may be NULL) receives its index in the vars array
 * expr_eval() takes. Returns NERR_EXISTS for a duplicate, NERR_LIMIT past
 * EXPR_MAX_VARS, NERR_INVAL for a name that is not a CEL identifier. A dotted
 * name ("journey.entry") is a qualified identifier: `journey.entry.x` reads it.
 */
enum nerr expr_env_add_var(struct expr_env *env, const char *name, size_t *slot);
/* The number of declared variables (the length expr_eval() expects). */
size_t expr_env_var_count(const struct expr_env *env);
/*
 * Registers a global function `name` taking exactly `arity` arguments (arity < 0:
 * any number). A registered function takes precedence over a standard one with
 * the same name and arity. The name may contain dots ("nudge.consent").
 */
enum nerr expr_env_add_function(struct expr_env *env, const char *name, int arity,
				expr_function_fn fn, void *userdata);

/*
 * Compiles src against env (which must outlive the program). On a syntax error
 * returns NERR_PARSE with msg->message "line L, column C: reason"; NERR_TOOBIG or
 * NERR_LIMIT when a cap is exceeded.
 */
enum nerr expr_compile(const char *src, const struct expr_env *env,
		       struct expr_program **out, struct nerr_msg *msg);
/* The same for a source of len bytes that may contain NUL bytes (in literals). */
enum nerr expr_compile_n(const char *src, size_t len, const struct expr_env *env,
			 struct expr_program **out, struct nerr_msg *msg);
void expr_program_free(struct expr_program *prog);

/*
 * Evaluates prog with vars[slot] as the value of each declared variable (nvars
 * must be expr_env_var_count(env); a variable left as EXPR_ERROR reads as an
 * error). Temporary values and the result live in scratch, which the caller
 * resets between evaluations. Returns NERR_OK with the value in *out, or
 * NERR_EVAL with the error value in *out and its message in msg (may be NULL).
 * Thread-safe for one program as long as each thread has its own scratch.
 */
enum nerr expr_eval(const struct expr_program *prog, const struct expr_value *vars,
		    size_t nvars, struct arena *scratch, struct expr_value *out,
		    struct nerr_msg *msg);

/*
 * The same, with eval_data handed to every native function of this evaluation
 * (call->eval_data): the per-evaluation context a function like event_count needs
 * (the profile, the store), without thread-locals.
 */
enum nerr expr_eval_with(const struct expr_program *prog, const struct expr_value *vars,
			 size_t nvars, void *eval_data, struct arena *scratch,
			 struct expr_value *out, struct nerr_msg *msg);

/*
 * Index analysis: whether prog can be true only when the value of some
 * sub-expression E is an element of, or equal to, the value of a field path
 * <var>.<f1>...<fn>.T, so a caller holding an index of those values can find the
 * records for which prog may hold without evaluating it on every record (and must
 * then still evaluate prog on each).
 *
 * The path is the variable of slot `slot` followed by the nfields names in
 * `fields`, then any field T: for a journey's `who`, slot JOURNEY_VAR_PROFILE and
 * {"traits"} look for profile.traits.T. E may read only the variables whose slots
 * are in allowed_slots (for `who`: event and now), no comprehension variable
 * bound outside itself, and call no registered function. Recognised, as the whole
 * condition or as any operand of the top-level && chain (recursively):
 *   P.exists(x, x == E)   (also E == x, and that test as an operand of an &&
 *                          chain that forms the body)
 *   E in P
 *   P == E, E == P
 * Nothing under ||, !, ?:, all(), exists_one() or a two-variable exists() is.
 *
 * Returns true with *field = T (NUL-terminated, points into prog: valid while prog
 * lives) and *value = a new program that evaluates E; false with both NULL.
 * Guarantee: whenever prog evaluates to true, E's value equals the value of P, or
 * equals (CEL equality: 1 == 1u == 1.0) an item of P when P is a list or a key of
 * P when P is a map. Evaluate *value with the same vars array as prog (variables
 * outside allowed_slots may be null). An index holding scalar items should scan
 * instead when E yields a list or a map, and may select nothing when E yields an
 * error (prog is then not true).
 * *value is a view: it borrows prog's syntax tree, so evaluate it only while prog
 * lives; free it (before or after prog) with expr_program_free().
 */
bool expr_index_condition(const struct expr_program *prog, size_t slot,
			  const char *const *fields, size_t nfields,
			  const size_t *allowed_slots, size_t nallowed,
			  const char **field, struct expr_program **value);

/* Wraps a json-c object as a value without copying (NULL is null). Integers map to
 * int (above INT64_MAX: uint), other numbers to double, objects to map, arrays to
 * list, strings to string (a timestamp string stays a string). The value points
 * into json, which must outlive it. */
struct expr_value expr_value_from_json(struct json_object *json);
/* Converts a value to a new json-c object (caller owns the reference; NULL for
 * null and errors). Timestamps and durations become their RFC 3339 / "1.5s"
 * strings, NaN and infinities the strings "NaN", "Infinity", "-Infinity", bytes an
 * array of octets (JSON has no binary type), map keys their string() form. */
struct json_object *expr_value_to_json(const struct expr_value *v);
/* Appends the value as a CEL literal ("1u", "2.5e+20", "b\"\\x00\"", ...). */
enum nerr expr_value_format(const struct expr_value *v, struct buf *out);
/* True only for the bool value true (errors and other kinds are not true). */
bool expr_value_is_true(const struct expr_value *v);

/* Helpers for native functions. */
struct expr_value expr_value_error(const struct expr_call *call, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
struct expr_value expr_value_bool(bool b);
struct expr_value expr_value_int(int64_t i);
struct expr_value expr_value_string(const char *s, size_t len);

#endif
