/*
 * expr.c -- environments (variables and registered functions) and the evaluation
 * entry point.
 *
 * Design: an environment is a small array of variable names (a name's index is its
 * slot) and a small array of registered functions; both are searched only at
 * compile time. expr_eval() sets up the per-evaluation context on the caller's
 * stack, catches scratch-arena exhaustion and an exhausted step budget (longjmp
 * from expr_ealloc and charge) and turns an error value into NERR_EVAL plus a message.
 * The step budget counts comprehension iterations and, for functions and
 * operators whose work grows with their input, that input's size, so no
 * expression can run for long (the fuzzer checks this).
 * Threading: environments and programs are read-only after setup; all mutable
 * evaluation state is in struct ectx (stack) and the caller's scratch arena.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "expr/expr_int.h"

struct user_fn {
	char *name;
	int arity;
	expr_function_fn fn;
	void *userdata;
};

struct expr_env {
	char *vars[EXPR_MAX_VARS]; /* owned */
	size_t nvars;
	struct user_fn *fns; /* owned */
	size_t nfns;
};

struct expr_env *expr_env_new(void)
{
	return xcalloc(1, sizeof(struct expr_env));
}

void expr_env_free(struct expr_env *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->nvars; i++)
		free(env->vars[i]);
	for (size_t i = 0; i < env->nfns; i++)
		free(env->fns[i].name);
	free(env->fns);
	free(env);
}

static bool valid_name(const char *name, bool dots)
{
	if (!name || !*name)
		return false;
	for (const char *s = name; *s; s++) {
		bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			  *s == '_' || (s > name && *s >= '0' && *s <= '9') ||
			  (dots && *s == '.' && s > name);

		if (!ok)
			return false;
	}
	return true;
}

enum nerr expr_env_add_var(struct expr_env *env, const char *name, size_t *slot)
{
	if (!valid_name(name, true))
		return NERR_INVAL;
	if (expr_env_find_var(env, name, strlen(name), NULL))
		return NERR_EXISTS;
	if (env->nvars == EXPR_MAX_VARS)
		return NERR_LIMIT;
	env->vars[env->nvars] = xstrdup(name);
	if (slot)
		*slot = env->nvars;
	env->nvars++;
	return NERR_OK;
}

size_t expr_env_var_count(const struct expr_env *env)
{
	return env->nvars;
}

enum nerr expr_env_add_function(struct expr_env *env, const char *name, int arity,
				expr_function_fn fn, void *userdata)
{
	if (!valid_name(name, true) || !fn)
		return NERR_INVAL;
	env->fns = xrealloc(env->fns, (env->nfns + 1) * sizeof(*env->fns));
	env->fns[env->nfns++] = (struct user_fn){xstrdup(name), arity, fn, userdata};
	return NERR_OK;
}

bool expr_env_find_var(const struct expr_env *env, const char *name, size_t len,
		       size_t *slot)
{
	if (!env)
		return false;
	for (size_t i = 0; i < env->nvars; i++) {
		if (strlen(env->vars[i]) == len && memcmp(env->vars[i], name, len) == 0) {
			if (slot)
				*slot = i;
			return true;
		}
	}
	return false;
}

bool expr_env_find_function(const struct expr_env *env, const char *name, size_t len,
			    size_t na, expr_function_fn *fn, void **userdata)
{
	if (!env)
		return false;
	for (size_t i = 0; i < env->nfns; i++) {
		const struct user_fn *f = &env->fns[i];

		if (strlen(f->name) == len && memcmp(f->name, name, len) == 0 &&
		    (f->arity < 0 || (size_t)f->arity == na)) {
			*fn = f->fn;
			*userdata = f->userdata;
			return true;
		}
	}
	return false;
}

/* ---- errors and memory during evaluation ---- */

void *expr_ealloc(struct ectx *c, size_t n)
{
	void *p = arena_alloc(c->scratch, n ? n : 1);

	if (!p)
		longjmp(c->oom, 1);
	return p;
}

struct expr_value expr_eerr_static(const char *msg)
{
	struct expr_value v = {.kind = EXPR_ERROR, .len = (uint32_t)strlen(msg)};

	v.as.s = msg;
	return v;
}

static struct expr_value verr(struct arena *a, jmp_buf *oom, const char *fmt, va_list ap)
{
	char tmp[256];
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	char *s;

	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	s = arena_strndup(a, tmp, (size_t)n);
	if (!s) {
		if (oom)
			longjmp(*oom, 1);
		return expr_eerr_static("out of evaluation memory");
	}
	struct expr_value v = {.kind = EXPR_ERROR, .len = (uint32_t)n};

	v.as.s = s;
	return v;
}

struct expr_value expr_eerr(struct ectx *c, const char *fmt, ...)
{
	va_list ap;
	struct expr_value v;

	va_start(ap, fmt);
	v = verr(c->scratch, &c->oom, fmt, ap);
	va_end(ap);
	return v;
}

struct expr_value expr_value_error(const struct expr_call *call, const char *fmt, ...)
{
	va_list ap;
	struct expr_value v;

	va_start(ap, fmt);
	v = verr(call->scratch, NULL, fmt, ap);
	va_end(ap);
	return v;
}

struct expr_value expr_no_overload(struct ectx *c, const char *fn,
				   const struct expr_value *a, size_t na)
{
	char types[160];
	size_t off = 0;

	types[0] = '\0';
	for (size_t i = 0; i < na && off < sizeof(types) - 20; i++)
		off += (size_t)snprintf(types + off, sizeof(types) - off, "%s%s",
					i ? ", " : "", expr_kind_name(&a[i]));
	return expr_eerr(c, "no such overload: %s(%s)", fn, types);
}

struct expr_value expr_value_bool(bool b)
{
	return mk_bool(b);
}

struct expr_value expr_value_int(int64_t i)
{
	return mk_int(i);
}

struct expr_value expr_value_string(const char *s, size_t len)
{
	return mk_str(s, len);
}

bool expr_value_is_true(const struct expr_value *v)
{
	return v->kind == EXPR_BOOL && v->as.b;
}

enum nerr expr_eval(const struct expr_program *prog, const struct expr_value *vars,
		    size_t nvars, struct arena *scratch, struct expr_value *out,
		    struct nerr_msg *msg)
{
	return expr_eval_with(prog, vars, nvars, NULL, scratch, out, msg);
}

enum nerr expr_eval_with(const struct expr_program *prog, const struct expr_value *vars,
			 size_t nvars, void *eval_data, struct arena *scratch,
			 struct expr_value *out, struct nerr_msg *msg)
{
	struct ectx c;

	c.eval_data = eval_data;
	c.memo_valid = 0;
	c.scratch = scratch;
	c.prog = prog;
	c.vars = vars;
	c.nvars = nvars;
	c.steps_left = EXPR_DEFAULT_MAX_STEPS;
	c.gctx = NULL;
	c.md = NULL;
	switch (setjmp(c.oom)) {
	case 0:
		break;
	case 1:
		*out = expr_eerr_static("evaluation memory limit exceeded");
		return nerr_set(msg, NERR_EVAL, "", "%s", out->as.s);
	default:
		*out = expr_eerr_static("evaluation step limit exceeded");
		return nerr_set(msg, NERR_EVAL, "", "%s", out->as.s);
	}
	*out = expr_eval_node(&c, prog->root);
	if (out->kind == EXPR_ERROR)
		return nerr_set(msg, NERR_EVAL, "", "%.*s", (int)out->len, out->as.s);
	return NERR_OK;
}
