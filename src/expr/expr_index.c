/*
 * expr_index.c -- finds, in a compiled condition, a membership test a caller can
 * answer from an index instead of evaluating the condition on every record.
 *
 * Design: a business event entry (journeys) has a `who` condition evaluated over
 * every profile, e.g. `profile.traits.wishlist.exists(s, s == event.properties.sku)`.
 * When the condition can only be true if a value computed from the event alone is
 * an element of (or equal to) one trait, the runtime asks its trait-value index for
 * the profiles holding that value and evaluates the full condition on those only.
 * expr_index_condition() recognises such a test syntactically on the resolved tree:
 *   (a) P.exists(x, BODY) where BODY is x == E, E == x, or a && chain with one of
 *       those as an operand (recursively);
 *   (b) E in P;
 *   (c) P == E and E == P;
 * either as the whole condition or as any operand of the top-level && chain
 * (recursively), where P is the field path <var>.<f1>...<fn>.T the caller names
 * up to T, and E reads no variable outside the caller's allowed slots, no
 * comprehension variable bound outside E, and calls no registered function (those
 * read state, e.g. the profile's events).
 * The value program is a view: a struct expr_program whose root is E's node in the
 * original tree and which borrows the original's nodes, regexes, match context and
 * zones (the parser records no source offsets, so E cannot be recompiled from text,
 * and copying a subtree would have to duplicate regexes and calendars).
 * Invariants: (1) soundness: whenever the condition evaluates to true, the value of
 *   E is equal to the trait (c) or is an element of it (a, b: a list item or a map
 *   key), in the sense of CEL equality (expr_val_equal: 1 == 1u == 1.0). This holds
 *   because && is true only when both operands are true, exists() is true only when
 *   some iteration's body is true, and E reads nothing an iteration binds, so its
 *   value is the same in every iteration and outside the loop. (2) Nothing else is
 *   recognised: ||, !, ternaries, all(), exists_one(), two-variable exists(), E
 *   reading the comprehension variable or another variable all answer false.
 * References: cel-spec langdef.md "Logical operators", "Macros".
 */
#include <string.h>

#include "base/mem.h"
#include "expr/expr_int.h"

struct ix {
	size_t slot;		   /* the variable the path starts at */
	const char *const *fields; /* then these fields */
	size_t nfields;
	const size_t *allowed; /* slots E may read */
	size_t nallowed;
};

/* Returns true when n is <slot>.<fields...>.T and sets *t to T's select node. */
static bool is_path(const struct ix *x, const struct node *n, const struct node **t)
{
	const struct node *p;

	if (n->op != N_SELECT || n->na != 1 || strlen(n->name) != n->len)
		return false;
	p = n->a[0];
	for (size_t i = x->nfields; i-- > 0;) {
		if (p->op != N_SELECT || p->na != 1 ||
		    strcmp(p->name, x->fields[i]) != 0 || strlen(x->fields[i]) != p->len)
			return false;
		p = p->a[0];
	}
	if (p->op != N_VAR || p->u.slot != x->slot)
		return false;
	*t = n;
	return true;
}

/*
 * Returns true when n reads no variable outside x->allowed, no comprehension
 * variable except those in bound (a bit per local index, bound by comprehensions
 * inside E), and calls no registered or unknown function.
 */
static bool reads_only_allowed(const struct ix *x, const struct node *n, uint64_t bound)
{
	switch (n->op) {
	case N_VAR:
		for (size_t i = 0; i < x->nallowed; i++)
			if (x->allowed[i] == n->u.slot)
				return true;
		return false;
	case N_LOCAL:
		return n->u.slot < 64 && (bound >> n->u.slot & 1);
	case N_UNDECL:
	case N_USER:
	case N_NOFUNC:
		return false;
	case N_COMPREH: {
		uint64_t inner = bound;

		/* the range is evaluated outside the loop, the rest inside it */
		if (!reads_only_allowed(x, n->a[0], bound))
			return false;
		if (n->u.comp.v1 < 0 || n->u.comp.v1 >= 64 || n->u.comp.v2 >= 64)
			return false;
		inner |= 1ull << n->u.comp.v1;
		if (n->u.comp.v2 >= 0)
			inner |= 1ull << n->u.comp.v2;
		for (size_t i = 1; i < n->na; i++)
			if (!reads_only_allowed(x, n->a[i], inner))
				return false;
		return true;
	}
	default:
		for (size_t i = 0; i < n->na; i++)
			if (!reads_only_allowed(x, n->a[i], bound))
				return false;
		return true;
	}
}

/* Returns true when n may serve as E: it reads only what the caller allows. */
static bool is_value(const struct ix *x, const struct node *n)
{
	return reads_only_allowed(x, n, 0);
}

/* The body of P.exists(v, BODY): v == E, E == v, or an && operand of that form. */
static bool match_body(const struct ix *x, const struct node *n, int v,
		       const struct node **e)
{
	if (n->op == N_AND)
		return match_body(x, n->a[0], v, e) || match_body(x, n->a[1], v, e);
	if (n->op != N_EQ)
		return false;
	for (int side = 0; side < 2; side++) {
		const struct node *l = n->a[side], *r = n->a[1 - side];

		if (l->op == N_LOCAL && l->u.slot == (size_t)v && is_value(x, r)) {
			*e = r;
			return true;
		}
	}
	return false;
}

/* A conjunct of the top-level && chain (or the whole condition). */
static bool match(const struct ix *x, const struct node *n, const struct node **t,
		  const struct node **e)
{
	switch (n->op) {
	case N_AND:
		return match(x, n->a[0], t, e) || match(x, n->a[1], t, e);
	case N_COMPREH:
		return n->kind == C_EXISTS && n->u.comp.v2 < 0 && n->na == 2 &&
		       is_path(x, n->a[0], t) && match_body(x, n->a[1], n->u.comp.v1, e);
	case N_IN:
		if (is_path(x, n->a[1], t) && is_value(x, n->a[0])) {
			*e = n->a[0];
			return true;
		}
		return false;
	case N_EQ:
		for (int side = 0; side < 2; side++) {
			if (is_path(x, n->a[side], t) && is_value(x, n->a[1 - side])) {
				*e = n->a[1 - side];
				return true;
			}
		}
		return false;
	default:
		return false;
	}
}

bool expr_index_condition(const struct expr_program *prog, size_t slot,
			  const char *const *fields, size_t nfields,
			  const size_t *allowed_slots, size_t nallowed,
			  const char **field, struct expr_program **value)
{
	struct ix x = {slot, fields, nfields, allowed_slots, nallowed};
	const struct node *t = NULL, *e = NULL;
	struct expr_program *v;

	*field = NULL;
	*value = NULL;
	if (!prog || !prog->root || !match(&x, prog->root, &t, &e))
		return false;
	v = xcalloc(1, sizeof(*v));
	arena_init(&v->arena, 0);
	v->view_of = prog;
	v->root = (struct node *)e;
	v->env = prog->env;
	v->mctx = prog->mctx;
	v->zones = prog->zones;
	v->nzones = prog->nzones;
	*field = t->name;
	*value = v;
	return true;
}
