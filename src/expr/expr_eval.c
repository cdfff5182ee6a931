/*
 * expr_eval.c -- the tree-walking evaluator: operators, literals and macros.
 *
 * Design: expr_eval_node() switches on the node op; everything it needs was resolved at
 * compile time. Errors are values: an operator or function whose operand is an
 * error returns that error, except && and || (commutative: an error on one side
 * is absorbed when the other side decides) and the all/exists macros (an error
 * for one element is absorbed when another element decides). Intermediate
 * results (strings, lists, maps) go to the scratch arena via expr_ealloc().
 * Invariants: (1) int and uint arithmetic never wraps: overflow is an error;
 * (2) recursion depth is bounded by the tree depth (EXPR_MAX_DEPTH), and loop work
 * by the step budget, so no evaluation runs unbounded; (3) an operation on kinds
 * it does not support returns "no such overload", never a crash.
 * References: cel-spec langdef.md "Evaluation", "Macros", "Functions".
 */
#include <math.h>
#include <string.h>

#include "expr/expr_int.h"

/* Literals and comprehension variables, the most common leaves, without a call. */
static inline struct expr_value eval_fast(struct ectx *c, const struct node *x)
{
	if (x->op == N_LIT)
		return x->u.lit;
	if (x->op == N_LOCAL)
		return c->locals[x->u.slot];
	return expr_eval_node(c, x);
}

static const char *op_name(int op)
{
	switch (op) {
	case N_ADD:
		return "_+_";
	case N_SUB:
		return "_-_";
	case N_MUL:
		return "_*_";
	case N_DIV:
		return "_/_";
	case N_MOD:
		return "_%_";
	case N_LT:
		return "_<_";
	case N_LE:
		return "_<=_";
	case N_GT:
		return "_>_";
	case N_GE:
		return "_>=_";
	case N_IN:
		return "@in";
	case N_NEG:
		return "-_";
	case N_NOT:
		return "!_";
	case N_INDEX:
		return "_[_]";
	default:
		return "?";
	}
}

static struct expr_value overflow(void)
{
	return expr_eerr_static("integer overflow");
}

__attribute__((noinline)) static struct expr_value
arith(struct ectx *c, int op, const struct expr_value *a, const struct expr_value *b)
{
	int64_t ri;
	uint64_t ru;
	struct expr_value args[2] = {*a, *b};

	switch (a->kind * 16 + b->kind) {
	case EXPR_INT * 16 + EXPR_INT:
		switch (op) {
		case N_ADD:
			return __builtin_add_overflow(a->as.i, b->as.i, &ri) ? overflow()
									     : mk_int(ri);
		case N_SUB:
			return __builtin_sub_overflow(a->as.i, b->as.i, &ri) ? overflow()
									     : mk_int(ri);
		case N_MUL:
			return __builtin_mul_overflow(a->as.i, b->as.i, &ri) ? overflow()
									     : mk_int(ri);
		case N_DIV:
		case N_MOD:
			if (b->as.i == 0)
				return expr_eerr_static(op == N_DIV ? "division by zero"
								    : "modulus by zero");
			if (a->as.i == INT64_MIN && b->as.i == -1)
				return overflow();
			return mk_int(op == N_DIV ? a->as.i / b->as.i
						  : a->as.i % b->as.i);
		}
		break;
	case EXPR_UINT * 16 + EXPR_UINT:
		switch (op) {
		case N_ADD:
			return __builtin_add_overflow(a->as.u, b->as.u, &ru)
				       ? overflow()
				       : mk_uint(ru);
		case N_SUB:
			return __builtin_sub_overflow(a->as.u, b->as.u, &ru)
				       ? overflow()
				       : mk_uint(ru);
		case N_MUL:
			return __builtin_mul_overflow(a->as.u, b->as.u, &ru)
				       ? overflow()
				       : mk_uint(ru);
		case N_DIV:
		case N_MOD:
			if (b->as.u == 0)
				return expr_eerr_static(op == N_DIV ? "division by zero"
								    : "modulus by zero");
			return mk_uint(op == N_DIV ? a->as.u / b->as.u
						   : a->as.u % b->as.u);
		}
		break;
	case EXPR_DOUBLE * 16 + EXPR_DOUBLE:
		switch (op) {
		case N_ADD:
			return mk_double(a->as.d + b->as.d);
		case N_SUB:
			return mk_double(a->as.d - b->as.d);
		case N_MUL:
			return mk_double(a->as.d * b->as.d);
		case N_DIV:
			return mk_double(a->as.d / b->as.d);
		}
		break;
	case EXPR_STRING * 16 + EXPR_STRING:
	case EXPR_BYTES * 16 + EXPR_BYTES:
		if (op == N_ADD) {
			size_t n = (size_t)a->len + b->len;
			char *s;

			if (n > UINT32_MAX)
				return expr_eerr_static("string too long");
			s = expr_ealloc(c, n + 1);
			memcpy(s, a->as.s, a->len);
			memcpy(s + a->len, b->as.s, b->len);
			s[n] = '\0';
			return a->kind == EXPR_STRING ? mk_str(s, n) : mk_bytes(s, n);
		}
		break;
	case EXPR_LIST * 16 + EXPR_LIST:
		if (op == N_ADD) {
			size_t n = (size_t)a->len + b->len;
			struct expr_value *items = expr_ealloc(c, n * sizeof(*items));
			struct expr_value r = {.kind = EXPR_LIST, .len = (uint32_t)n};

			for (size_t i = 0; i < a->len; i++)
				items[i] = expr_list_get(a, i);
			for (size_t i = 0; i < b->len; i++)
				items[a->len + i] = expr_list_get(b, i);
			r.as.items = items;
			return r;
		}
		break;
	case EXPR_TIMESTAMP * 16 + EXPR_DURATION:
		if (op == N_ADD || op == N_SUB) {
			int64_t s = op == N_ADD ? a->as.sec + b->as.sec
						: a->as.sec - b->as.sec;
			int64_t ns = op == N_ADD ? (int64_t)a->nsec + b->nsec
						 : (int64_t)a->nsec - b->nsec;
			return expr_ts_make(c, s, ns);
		}
		break;
	case EXPR_DURATION * 16 + EXPR_TIMESTAMP:
		if (op == N_ADD)
			return expr_ts_make(c, a->as.sec + b->as.sec,
					    (int64_t)a->nsec + b->nsec);
		break;
	case EXPR_DURATION * 16 + EXPR_DURATION:
		if (op == N_ADD)
			return expr_dur_make(c, a->as.sec + b->as.sec,
					     (int64_t)a->nsec + b->nsec);
		if (op == N_SUB)
			return expr_dur_make(c, a->as.sec - b->as.sec,
					     (int64_t)a->nsec - b->nsec);
		break;
	case EXPR_TIMESTAMP * 16 + EXPR_TIMESTAMP:
		if (op == N_SUB)
			return expr_dur_make(c, a->as.sec - b->as.sec,
					     (int64_t)a->nsec - b->nsec);
		break;
	}
	return expr_no_overload(c, op_name(op), args, 2);
}

__attribute__((noinline)) static struct expr_value
index_value(struct ectx *c, const struct expr_value *t, const struct expr_value *k)
{
	struct expr_value out;

	if (t->kind == EXPR_LIST) {
		int64_t i;

		if (k->kind == EXPR_INT) {
			i = k->as.i;
		} else if (k->kind == EXPR_UINT) {
			i = k->as.u > INT64_MAX ? -1 : (int64_t)k->as.u;
		} else if (k->kind == EXPR_DOUBLE && k->as.d == trunc(k->as.d) &&
			   fabs(k->as.d) < 9.2e18) {
			i = (int64_t)k->as.d;
		} else {
			struct expr_value args[2] = {*t, *k};
			return expr_no_overload(c, "_[_]", args, 2);
		}
		if (i < 0 || (uint64_t)i >= t->len)
			return expr_eerr(c, "index out of bounds: %lld", (long long)i);
		return expr_list_get(t, (size_t)i);
	}
	if (t->kind == EXPR_MAP) {
		if (expr_map_find(t, k, &out))
			return out;
		if (k->kind == EXPR_STRING)
			return expr_eerr(c, "no such key: %.*s",
					 (int)(k->len > 100 ? 100 : k->len), k->as.s);
		return expr_eerr_static("no such key");
	}
	struct expr_value args[2] = {*t, *k};
	return expr_no_overload(c, "_[_]", args, 2);
}

static struct expr_value eval_and_or(struct ectx *c, const struct node *n, bool is_or)
{
	struct expr_value l = eval_fast(c, n->a[0]), r;

	/* The deciding value is true for ||, false for &&. */
	if (l.kind == EXPR_BOOL && l.as.b == is_or)
		return l;
	r = eval_fast(c, n->a[1]);
	if (r.kind == EXPR_BOOL && r.as.b == is_or)
		return r;
	if (l.kind == EXPR_BOOL) {
		if (r.kind == EXPR_BOOL || r.kind == EXPR_ERROR)
			return r;
		return expr_no_overload(c, is_or ? "_||_" : "_&&_", &r, 1);
	}
	if (l.kind == EXPR_ERROR)
		return l;
	if (r.kind == EXPR_ERROR)
		return r;
	return expr_no_overload(c, is_or ? "_||_" : "_&&_", &l, 1);
}

__attribute__((noinline)) static struct expr_value build_map(struct ectx *c,
							     const struct node *n)
{
	size_t cnt = n->na / 2;
	struct expr_value *items = expr_ealloc(c, (cnt ? cnt : 1) * 2 * sizeof(*items));
	struct expr_value m = {.kind = EXPR_MAP, .len = 0};

	/* the repeated-key check compares each key with the ones before it */
	charge(c, 1 + cnt * cnt / 32);
	m.as.items = items;
	for (size_t i = 0; i < cnt; i++) {
		struct expr_value k = expr_eval_node(c, n->a[2 * i]);
		struct expr_value v;

		if (k.kind == EXPR_ERROR)
			return k;
		v = expr_eval_node(c, n->a[2 * i + 1]);
		if (v.kind == EXPR_ERROR)
			return v;
		if (k.kind != EXPR_INT && k.kind != EXPR_UINT && k.kind != EXPR_BOOL &&
		    k.kind != EXPR_STRING)
			return expr_eerr(c, "unsupported key type: %s",
					 expr_kind_name(&k));
		if (expr_map_find(&m, &k, NULL))
			return expr_eerr_static("Failed with repeated key");
		items[2 * i] = k;
		items[2 * i + 1] = v;
		m.len++;
	}
	return m;
}

static struct expr_value eval_args(struct ectx *c, const struct node *n,
				   struct expr_value *args)
{
	for (size_t i = 0; i < n->na; i++) {
		args[i] = eval_fast(c, n->a[i]);
		if (args[i].kind == EXPR_ERROR)
			return args[i];
	}
	return mk_null();
}

__attribute__((noinline)) static struct expr_value eval_call(struct ectx *c,
							     const struct node *n)
{
	struct expr_value small[6], *args = small, r;

	if (n->na > 6)
		args = expr_ealloc(c, n->na * sizeof(*args));
	r = eval_args(c, n, args);
	if (r.kind == EXPR_ERROR)
		return r;
	/* String and list functions do work in proportion to their inputs. */
	uint64_t cost = 1;

	for (size_t i = 0; i < n->na; i++)
		if (args[i].kind >= EXPR_STRING && args[i].kind <= EXPR_MAP)
			cost += args[i].len / 16;
	charge(c, cost);
	switch (n->op) {
	case N_CALL:
		return n->u.fn(c, n, args, n->na);
	case N_USER: {
		struct expr_call call = {c->scratch, n->u.user.userdata, c->eval_data};

		r = n->u.user.fn(&call, args, n->na);
		if (r.kind > EXPR_ERROR)
			return expr_eerr_static("native function returned a bad value");
		/* r points into the scratch arena or static data, never into call */
		// cppcheck-suppress returnDanglingLifetime
		return r;
	}
	default:
		return expr_eerr(
			c, "no such overload: unknown function '%.*s' with %u arguments",
			(int)n->len, n->name, (unsigned)n->na);
	}
}

__attribute__((noinline)) static struct expr_value
eval_comprehension(struct ectx *c, const struct node *n)
{
	struct expr_value rng = expr_eval_node(c, n->a[0]);
	int v1 = n->u.comp.v1, v2 = n->u.comp.v2;
	bool is_map = rng.kind == EXPR_MAP;
	struct expr_value err = {.kind = EXPR_NULL}, out = {.kind = EXPR_NULL};
	struct expr_value *items = NULL;
	size_t count = 0, cap = rng.len;
	struct map_iter it;
	const struct node *pred = n->u.comp.has_pred ? n->a[1] : NULL;
	const struct node *body = n->a[n->na - 1];

	if (rng.kind == EXPR_ERROR)
		return rng;
	if (rng.kind != EXPR_LIST && rng.kind != EXPR_MAP)
		return expr_no_overload(c, "comprehension", &rng, 1);
	if (n->kind == C_MAP || n->kind == C_FILTER || n->kind == C_TMAP)
		items = expr_ealloc(c, (cap ? cap : 1) * (n->kind == C_TMAP ? 2 : 1) *
					       sizeof(*items));
	if (is_map)
		expr_map_iter_init(&it, &rng);
	for (size_t i = 0; i < rng.len; i++) {
		struct expr_value k, v, r;

		charge(c, 1);
		if (is_map) {
			if (!expr_map_next(&it, &k, &v))
				break;
		} else {
			k = mk_int((int64_t)i);
			v = expr_list_get(&rng, i);
		}
		if (v2 >= 0) {
			c->locals[v1] = k;
			c->locals[v2] = v;
		} else {
			c->locals[v1] = is_map ? k : v;
		}
		switch (n->kind) {
		case C_ALL:
		case C_EXISTS: {
			bool decide = n->kind == C_EXISTS;

			r = expr_eval_node(c, body);
			if (r.kind == EXPR_BOOL) {
				if (r.as.b == decide)
					return r;
			} else if (err.kind != EXPR_ERROR) {
				err = r.kind == EXPR_ERROR
					      ? r
					      : expr_no_overload(c, "predicate", &r, 1);
			}
			break;
		}
		case C_EXISTS_ONE:
			r = expr_eval_node(c, body);
			if (r.kind == EXPR_ERROR)
				return r;
			if (r.kind != EXPR_BOOL)
				return expr_no_overload(c, "predicate", &r, 1);
			count += r.as.b;
			break;
		case C_FILTER:
			r = expr_eval_node(c, body);
			if (r.kind == EXPR_ERROR)
				return r;
			if (r.kind != EXPR_BOOL)
				return expr_no_overload(c, "predicate", &r, 1);
			if (r.as.b)
				items[count++] = is_map ? k : v;
			break;
		case C_MAP:
		case C_TMAP:
			if (pred) {
				r = expr_eval_node(c, pred);
				if (r.kind == EXPR_ERROR)
					return r;
				if (r.kind != EXPR_BOOL)
					return expr_no_overload(c, "predicate", &r, 1);
				if (!r.as.b)
					break;
			}
			r = expr_eval_node(c, body);
			if (r.kind == EXPR_ERROR)
				return r;
			if (n->kind == C_MAP) {
				items[count++] = r;
			} else {
				items[2 * count] = k;
				items[2 * count + 1] = r;
				count++;
			}
			break;
		}
	}
	switch (n->kind) {
	case C_ALL:
		return err.kind == EXPR_ERROR ? err : mk_bool(true);
	case C_EXISTS:
		return err.kind == EXPR_ERROR ? err : mk_bool(false);
	case C_EXISTS_ONE:
		return mk_bool(count == 1);
	default:
		out.kind = n->kind == C_TMAP ? EXPR_MAP : EXPR_LIST;
		out.len = (uint32_t)count;
		out.as.items = items;
		return out;
	}
}

/* a[0].name: a map lookup; selecting from anything else is an error. */
static struct expr_value select_field(struct ectx *c, const struct node *n)
{
	struct expr_value a = eval_fast(c, n->a[0]), r;

	if (a.kind == EXPR_ERROR)
		return a;
	if (a.kind != EXPR_MAP)
		return expr_eerr(c, "type '%s' does not support field selection",
				 expr_kind_name(&a));
	if (expr_map_find_field(&a, n, &r))
		return r;
	return expr_eerr(c, "no such key: %.*s", (int)n->len, n->name);
}

struct expr_value expr_eval_node(struct ectx *c, const struct node *n)
{
	struct expr_value a, b, r;
	int cmp;

	switch (n->op) {
	case N_LIT:
		return n->u.lit;
	case N_VAR:
		if (n->u.slot >= c->nvars)
			return expr_eerr(c, "no value for variable '%.*s'", (int)n->len,
					 n->name);
		return c->vars[n->u.slot];
	case N_LOCAL:
		return c->locals[n->u.slot];
	case N_UNDECL:
		return expr_eerr(c, "undeclared reference to '%.*s'", (int)n->len,
				 n->name);
	case N_SELECT:
		if (n->memo) {
			uint32_t bit = 1u << (n->memo - 1);

			if (c->memo_valid & bit)
				return c->memo[n->memo - 1];
			r = select_field(c, n);
			c->memo[n->memo - 1] = r;
			c->memo_valid |= bit;
			return r;
		}
		return select_field(c, n);
	case N_HAS:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_ERROR)
			return a;
		if (a.kind != EXPR_MAP)
			return expr_eerr(c, "type '%s' does not support field selection",
					 expr_kind_name(&a));
		if (expr_map_find_field(&a, n, &r))
			return n->op == N_HAS ? mk_bool(true) : r;
		if (n->op == N_HAS)
			return mk_bool(false);
		return expr_eerr(c, "no such key: %.*s", (int)n->len, n->name);
	case N_INDEX:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_ERROR)
			return a;
		b = eval_fast(c, n->a[1]);
		if (b.kind == EXPR_ERROR)
			return b;
		return index_value(c, &a, &b);
	case N_AND:
		return eval_and_or(c, n, false);
	case N_OR:
		return eval_and_or(c, n, true);
	case N_NOT:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_BOOL)
			return mk_bool(!a.as.b);
		return a.kind == EXPR_ERROR ? a : expr_no_overload(c, "!_", &a, 1);
	case N_NEG:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_INT)
			return a.as.i == INT64_MIN ? overflow() : mk_int(-a.as.i);
		if (a.kind == EXPR_DOUBLE)
			return mk_double(-a.as.d);
		return a.kind == EXPR_ERROR ? a : expr_no_overload(c, "-_", &a, 1);
	case N_COND:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_BOOL)
			return expr_eval_node(c, n->a[a.as.b ? 1 : 2]);
		return a.kind == EXPR_ERROR ? a : expr_no_overload(c, "_?_:_", &a, 1);
	case N_EQ:
	case N_NE:
	case N_LT:
	case N_LE:
	case N_GT:
	case N_GE:
	case N_IN:
	case N_ADD:
	case N_SUB:
	case N_MUL:
	case N_DIV:
	case N_MOD:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_ERROR)
			return a;
		b = eval_fast(c, n->a[1]);
		if (b.kind == EXPR_ERROR)
			return b;
		if (a.kind >= EXPR_STRING && a.kind <= EXPR_MAP)
			charge(c, a.len / 16);
		if (b.kind >= EXPR_STRING && b.kind <= EXPR_MAP)
			charge(c, b.len / 16);
		switch (n->op) {
		case N_EQ:
			return mk_bool(expr_val_equal(&a, &b));
		case N_NE:
			return mk_bool(!expr_val_equal(&a, &b));
		case N_IN:
			if (b.kind == EXPR_LIST) {
				for (size_t i = 0; i < b.len; i++) {
					struct expr_value x = expr_list_get(&b, i);

					if (expr_val_equal(&a, &x))
						return mk_bool(true);
				}
				return mk_bool(false);
			}
			if (b.kind == EXPR_MAP)
				return mk_bool(expr_map_find(&b, &a, NULL));
			break;
		case N_LT:
		case N_LE:
		case N_GT:
		case N_GE:
			cmp = expr_val_compare(&a, &b);
			if (cmp == 3)
				break;
			if (cmp == 2)
				return mk_bool(false);
			return mk_bool(n->op == N_LT   ? cmp < 0
				       : n->op == N_LE ? cmp <= 0
				       : n->op == N_GT ? cmp > 0
						       : cmp >= 0);
		default:
			return arith(c, n->op, &a, &b);
		}
		{
			struct expr_value args[2] = {a, b};
			return expr_no_overload(c, op_name(n->op), args, 2);
		}
	case N_LIST: {
		struct expr_value *items =
			expr_ealloc(c, (n->na ? n->na : 1) * sizeof(*items));

		r = eval_args(c, n, items);
		if (r.kind == EXPR_ERROR)
			return r;
		r.kind = EXPR_LIST;
		r.flags = 0;
		r.len = n->na;
		r.as.items = items;
		return r;
	}
	case N_MAP:
		return build_map(c, n);
	case N_CALL:
	case N_USER:
	case N_NOFUNC:
		return eval_call(c, n);
	case N_COMPREH:
		return eval_comprehension(c, n);
	case N_MATCHES_CONST:
		a = eval_fast(c, n->a[0]);
		if (a.kind == EXPR_ERROR)
			return a;
		if (a.kind != EXPR_STRING)
			return expr_no_overload(c, "matches", &a, 1);
		return expr_call_matches(c, &a, n->u.re);
	}
	return expr_eerr_static("internal error: bad node");
}
