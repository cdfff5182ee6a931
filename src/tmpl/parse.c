/*
 * parse.c -- Liquid source to a compiled template: lexer, expression parser,
 * tag parsers, whitespace control, tmpl_compile and tmpl_free.
 *
 * Design: one pass. The lexer cuts the source into text, {{ output }} and
 * {% tag %} tokens (or, inside {% liquid %}, one tag per line) and applies
 * whitespace control ({%- -%} {{- -}}) to the neighbouring text as it goes. A
 * recursive-descent parser builds the tree; each block tag parses its bodies by
 * calling parse_body until one of its delimiters ({% else %}, {% endif %}, ...)
 * comes up. Everything is allocated from the template's arena, and text nodes
 * and names point into the template's own copy of the source.
 * Invariants: (1) every error message starts with "LINE:COLUMN: " of the
 *   offending token; (2) nesting (blocks, brackets, ranges, and/or chains) is
 *   capped by limits.nesting_depth, so neither parse nor render recurses without
 *   bound; (3) as in Liquid, a block whose bodies hold only whitespace and
 *   "blank" tags (assign, capture, comments, blank blocks) drops that whitespace.
 * Strict mode: unknown filters, unknown filter keywords and stray tokens after a
 *   {% when %} value are errors; lax mode skips them. Unknown tags and malformed
 *   expressions are errors in both modes (the golden-liquid suite expects so).
 * References: Shopify Liquid 5 (lib/liquid/tokenizer.rb, block_body.rb, tags/),
 *   golden-liquid.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "tmpl/tmpl_int.h"

struct pc {
	struct tmpl *t;
	struct arena *a;
	const char *src, *end;
	bool strict;
	size_t max_depth;
	struct nerr_msg *msg;
	bool failed;
	const void *jhash_fn; /* json-c's string hash, asked once per compile */
};

enum { T_EOF, T_TEXT, T_OUT, T_TAG };

struct tok {
	int type;
	const char *at;
	const char *p; /* text, output content or tag markup */
	size_t len;
	const char *name;
	size_t nlen;
	bool lstrip, rstrip;
};

struct lex {
	const char *p, *end;
	bool strip_next;
	bool lines; /* inside {% liquid %}: one tag per line */
	bool in_comment;
	bool no_close_out; /* no "}}" left in the source */
};

static void pos_of(const char *src, const char *at, int *line, int *col)
{
	int l = 1;
	const char *ls = src;

	for (const char *p = src; p < at; p++)
		if (*p == '\n') {
			l++;
			ls = p + 1;
		}
	*line = l;
	*col = (int)tmpl_utf8_len(ls, (size_t)(at - ls)) + 1;
}

static int perr(struct pc *pc, const char *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int perr(struct pc *pc, const char *at, const char *fmt, ...)
{
	char reason[200];
	va_list ap;
	int line, col;

	if (pc->failed)
		return -1;
	pc->failed = true;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (!at || at < pc->src || at > pc->end)
		at = pc->src;
	pos_of(pc->src, at, &line, &col);
	nerr_set(pc->msg, NERR_PARSE, "template", "%d:%d: %s", line, col, reason);
	return -1;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_id0(char c)
{
	return isalpha((unsigned char)c) || c == '_';
}

static bool is_idc(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static const char *find2(const char *p, const char *end, char a, char b)
{
	while (p + 1 < end) {
		const char *q = memchr(p, a, (size_t)(end - p - 1));
		if (!q)
			return NULL;
		if (q[1] == b)
			return q;
		p = q + 1;
	}
	return NULL;
}

/* Splits a tag's inside into name and markup. */
static void split_tag(struct tok *t, const char *c, const char *e)
{
	while (c < e && is_ws(*c))
		c++;
	t->name = c;
	if (c < e && *c == '#') {
		c++;
	} else {
		if (c < e && is_id0(*c))
			c++;
		while (c < e && (isalnum((unsigned char)*c) || *c == '_'))
			c++;
	}
	t->nlen = (size_t)(c - t->name);
	while (c < e && is_ws(*c))
		c++;
	while (e > c && is_ws(e[-1]))
		e--;
	t->p = c;
	t->len = (size_t)(e - c);
}

static int lex_lines(struct lex *lx, struct tok *t)
{
	for (;;) {
		const char *s = lx->p, *e;
		if (s >= lx->end) {
			t->type = T_EOF;
			t->at = lx->end;
			return 0;
		}
		e = memchr(s, '\n', (size_t)(lx->end - s));
		if (!e)
			e = lx->end;
		lx->p = e < lx->end ? e + 1 : e;
		while (s < e && is_ws(*s))
			s++;
		if (s == e)
			continue;
		memset(t, 0, sizeof(*t));
		t->type = T_TAG;
		t->at = s;
		split_tag(t, s, e);
		return 0;
	}
}

static int lex_next(struct pc *pc, struct lex *lx, struct tok *t)
{
	const char *p = lx->p, *end = lx->end, *q, *c, *close;

	if (lx->lines)
		return lex_lines(lx, t);
	memset(t, 0, sizeof(*t));
	if (p >= end) {
		t->type = T_EOF;
		t->at = end;
		return 0;
	}
	if (p + 1 < end && p[0] == '{' && (p[1] == '{' || p[1] == '%')) {
		bool out = p[1] == '{';
		t->at = p;
		t->lstrip = p + 2 < end && p[2] == '-';
		c = p + 2 + t->lstrip;
		/* Once a search for "}}" has failed, every later one would too:
		 * remember it, or a comment full of "{{" would scan quadratically. */
		close = out && lx->no_close_out ? NULL
						: find2(c, end, out ? '}' : '%', '}');
		if (!close && out)
			lx->no_close_out = true;
		if (!close) {
			if (lx->in_comment) {
				t->type = T_TEXT;
				t->p = p;
				t->len = 2;
				lx->p = p + 2;
				return 0;
			}
			return perr(pc, p, "'%s' was never closed", out ? "{{" : "{%");
		}
		t->rstrip = close > c && close[-1] == '-';
		q = close - t->rstrip;
		lx->p = close + 2;
		lx->strip_next = t->rstrip;
		if (out) {
			t->type = T_OUT;
			t->p = c;
			t->len = (size_t)(q - c);
		} else {
			t->type = T_TAG;
			split_tag(t, c, q);
		}
		return 0;
	}
	/* Text up to the next delimiter. */
	for (q = p;; q++) {
		q = memchr(q, '{', (size_t)(end - q));
		if (!q || q + 1 >= end) {
			q = end;
			break;
		}
		if (q[1] == '{' || q[1] == '%')
			break;
	}
	t->type = T_TEXT;
	t->at = p;
	const char *s = p, *e = q;
	if (lx->strip_next)
		while (s < e && is_ws(*s))
			s++;
	if (q + 2 < end && q[2] == '-')
		while (e > s && is_ws(e[-1]))
			e--;
	t->p = s;
	t->len = (size_t)(e - s);
	lx->strip_next = false;
	lx->p = q;
	return 0;
}

/*
 * Finds {% endNAME %} for raw and doc; returns the body (with whitespace control
 * applied) and moves past the end tag.
 */
static int lex_raw(struct pc *pc, struct lex *lx, const char *endname, const char *at,
		   const char **bp, size_t *blen)
{
	const char *p = lx->p, *end = lx->end, *s = p;
	size_t nl = strlen(endname);

	for (;;) {
		const char *q = find2(s, end, '{', '%'), *r, *close;
		if (!q)
			return perr(pc, at, "'%.*s' was never closed", (int)(nl - 3),
				    endname + 3);
		r = q + 2;
		bool lstrip = r < end && *r == '-';
		r += lstrip;
		while (r < end && is_ws(*r))
			r++;
		if ((size_t)(end - r) >= nl && memcmp(r, endname, nl) == 0) {
			r += nl;
			while (r < end && is_ws(*r))
				r++;
			bool rstrip = r < end && *r == '-';
			r += rstrip;
			if (r + 1 < end && r[0] == '%' && r[1] == '}') {
				close = r;
				const char *bs = p, *be = q;
				if (lx->strip_next)
					while (bs < be && is_ws(*bs))
						bs++;
				if (lstrip)
					while (be > bs && is_ws(be[-1]))
						be--;
				*bp = bs;
				*blen = (size_t)(be - bs);
				lx->p = close + 2;
				lx->strip_next = rstrip;
				return 0;
			}
		}
		s = q + 2;
	}
}

/* ---- allocation helpers ---- */

static void *palloc(struct pc *pc, size_t n)
{
	void *p = arena_calloc(pc->a, 1, n);
	ASSERT(p);
	return p;
}

static char *pstr(struct pc *pc, const char *p, size_t n)
{
	char *s = arena_strndup(pc->a, p, n);
	ASSERT(s);
	return s;
}

/* A growable array of pointers in the arena. */
struct vec {
	void **v;
	size_t n, cap;
};

static void vpush(struct pc *pc, struct vec *v, void *x)
{
	if (v->n == v->cap) {
		size_t nc = v->cap ? v->cap * 2 : 8;
		void **nv = palloc(pc, nc * sizeof(void *));
		if (v->n)
			memcpy(nv, v->v, v->n * sizeof(void *));
		v->v = nv;
		v->cap = nc;
	}
	v->v[v->n++] = x;
}

/* ---- expressions ---- */

enum {
	X_EOF,
	X_IDENT,
	X_STR,
	X_INT,
	X_FLOAT,
	X_DOT,
	X_DOTDOT,
	X_LBR,
	X_RBR,
	X_LP,
	X_RP,
	X_PIPE,
	X_COLON,
	X_COMMA,
	X_OP,
	X_ASSIGN,
	X_BAD,
};

struct xt {
	int type;
	const char *p;
	size_t len;
	int op;
};

struct xp {
	struct pc *pc;
	const char *p, *end;
	struct xt cur;
	const char *prev_end; /* end of the last consumed token */
	size_t depth;
};

static void xlex(const char **pp, const char *end, struct xt *t)
{
	const char *p = *pp;

	while (p < end && is_ws(*p))
		p++;
	t->p = p;
	t->op = 0;
	if (p >= end) {
		t->type = X_EOF;
		t->len = 0;
		*pp = p;
		return;
	}
	char c = *p;
	if (c == '"' || c == '\'') {
		const char *q = memchr(p + 1, c, (size_t)(end - p - 1));
		if (!q) {
			t->type = X_BAD;
			t->len = 1;
			*pp = p + 1;
			return;
		}
		t->type = X_STR;
		t->p = p + 1;
		t->len = (size_t)(q - p - 1);
		*pp = q + 1;
		return;
	}
	if (isdigit((unsigned char)c) ||
	    (c == '-' && p + 1 < end && isdigit((unsigned char)p[1]))) {
		const char *q = p + 1;
		while (q < end && isdigit((unsigned char)*q))
			q++;
		t->type = X_INT;
		if (q + 1 < end && *q == '.' && isdigit((unsigned char)q[1])) {
			q++;
			while (q < end && isdigit((unsigned char)*q))
				q++;
			t->type = X_FLOAT;
		}
		t->len = (size_t)(q - p);
		*pp = q;
		return;
	}
	if (is_id0(c)) {
		const char *q = p + 1;
		while (q < end && is_idc(*q))
			q++;
		if (q < end && *q == '?')
			q++;
		t->type = X_IDENT;
		t->len = (size_t)(q - p);
		*pp = q;
		return;
	}
	t->len = 1;
	switch (c) {
	case '.':
		if (p + 1 < end && p[1] == '.') {
			t->type = X_DOTDOT;
			t->len = 2;
		} else {
			t->type = X_DOT;
		}
		break;
	case '[':
		t->type = X_LBR;
		break;
	case ']':
		t->type = X_RBR;
		break;
	case '(':
		t->type = X_LP;
		break;
	case ')':
		t->type = X_RP;
		break;
	case '|':
		t->type = X_PIPE;
		break;
	case ':':
		t->type = X_COLON;
		break;
	case ',':
		t->type = X_COMMA;
		break;
	case '=':
		if (p + 1 < end && p[1] == '=') {
			t->type = X_OP;
			t->op = OP_EQ;
			t->len = 2;
		} else {
			t->type = X_ASSIGN;
		}
		break;
	case '!':
		if (p + 1 < end && p[1] == '=') {
			t->type = X_OP;
			t->op = OP_NE;
			t->len = 2;
		} else {
			t->type = X_BAD;
		}
		break;
	case '<':
	case '>':
		t->type = X_OP;
		if (p + 1 < end && p[1] == '=') {
			t->op = c == '<' ? OP_LE : OP_GE;
			t->len = 2;
		} else if (c == '<' && p + 1 < end && p[1] == '>') {
			t->op = OP_NE;
			t->len = 2;
		} else {
			t->op = c == '<' ? OP_LT : OP_GT;
		}
		break;
	default:
		t->type = X_BAD;
		/* a whole UTF-8 character, for the message */
		while (p + t->len < end && ((unsigned char)p[t->len] & 0xC0) == 0x80)
			t->len++;
	}
	*pp = p + t->len;
}

static void xadv(struct xp *x)
{
	x->prev_end =
		x->cur.type == X_STR ? x->cur.p + x->cur.len + 1 : x->cur.p + x->cur.len;
	xlex(&x->p, x->end, &x->cur);
}

static void xinit(struct xp *x, struct pc *pc, const char *p, size_t len)
{
	memset(x, 0, sizeof(*x));
	x->pc = pc;
	x->p = p;
	x->end = p + len;
	x->prev_end = p;
	xlex(&x->p, x->end, &x->cur);
}

static struct xt xpeek(struct xp *x)
{
	const char *p = x->p;
	struct xt t;
	xlex(&p, x->end, &t);
	return t;
}

static bool xis(struct xp *x, const char *word)
{
	size_t n = strlen(word);
	return x->cur.type == X_IDENT && x->cur.len == n &&
	       memcmp(x->cur.p, word, n) == 0;
}

static int xunexpected(struct xp *x)
{
	if (x->cur.type == X_EOF)
		return perr(x->pc, x->cur.p, "unexpected end of expression");
	if (x->cur.type == X_BAD && (*x->cur.p == '"' || *x->cur.p == '\''))
		return perr(x->pc, x->cur.p, "string was never closed");
	return perr(x->pc, x->cur.p, "unexpected '%.*s'", (int)x->cur.len, x->cur.p);
}

static int xexpect(struct xp *x, int type)
{
	if (x->cur.type != type)
		return xunexpected(x);
	xadv(x);
	return 0;
}

static struct expr *new_expr(struct pc *pc, int kind, const char *at)
{
	struct expr *e = palloc(pc, sizeof(*e));
	e->kind = (uint8_t)kind;
	e->at = at;
	return e;
}

static struct expr *lit_expr(struct pc *pc, const char *at, struct val v)
{
	struct expr *e = new_expr(pc, X_LIT, at);
	e->lit = v;
	return e;
}

static struct expr *parse_primary(struct xp *x);

/* Precomputes a key segment's hashes so renders skip hashing (json-c objects
 * all hash with one global function; a throwaway object tells which). */
static void seg_hash(struct pc *pc, struct seg *s)
{
	if (!s->key)
		return;
	if (!pc->jhash_fn) {
		struct json_object *o = json_object_new_object();
		pc->jhash_fn = (const void *)json_object_get_object(o)->hash_fn;
		json_object_put(o);
	}
	s->vhash = tmpl_hash_str(s->key);
	s->jhash_fn = pc->jhash_fn;
	s->jhash = ((lh_hash_fn *)pc->jhash_fn)(s->key);
}

static int parse_var_tail(struct xp *x, struct vec *segs)
{
	for (;;) {
		struct seg *s;
		if (x->cur.type == X_DOT) {
			xadv(x);
			if (x->cur.type != X_IDENT)
				return xunexpected(x);
			s = palloc(x->pc, sizeof(*s));
			s->key = pstr(x->pc, x->cur.p, x->cur.len);
			s->klen = x->cur.len;
			xadv(x);
			vpush(x->pc, segs, s);
		} else if (x->cur.type == X_LBR) {
			xadv(x);
			struct expr *i = parse_primary(x);
			if (!i || xexpect(x, X_RBR))
				return -1;
			s = palloc(x->pc, sizeof(*s));
			if (i->kind == X_LIT && i->lit.type == V_STR) {
				s->key = i->lit.s.p;
				s->klen = i->lit.s.len;
			} else {
				s->idx = i;
			}
			vpush(x->pc, segs, s);
		} else {
			return 0;
		}
	}
}

static struct expr *parse_primary(struct xp *x)
{
	struct pc *pc = x->pc;
	struct xt t = x->cur;
	struct expr *e = NULL;
	struct vec segs = {0};

	if (++x->depth > pc->max_depth) {
		perr(pc, t.p, "expression nested too deeply");
		return NULL;
	}
	switch (t.type) {
	case X_STR:
		xadv(x);
		e = lit_expr(pc, t.p, tmpl_val_str(pstr(pc, t.p, t.len), t.len));
		break;
	case X_INT: {
		char tmp[64];
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(t.len < 60 ? t.len : 60), t.p);
		errno = 0;
		long long v = strtoll(tmp, NULL, 10);
		xadv(x);
		e = lit_expr(pc, t.p,
			     errno == ERANGE ? tmpl_val_float(strtod(tmp, NULL))
					     : tmpl_val_int(v));
		break;
	}
	case X_FLOAT: {
		char tmp[400];
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(t.len < 390 ? t.len : 390), t.p);
		xadv(x);
		e = lit_expr(pc, t.p, tmpl_val_float(strtod(tmp, NULL)));
		break;
	}
	case X_LP: {
		xadv(x);
		e = new_expr(pc, X_RANGE, t.p);
		if (!(e->l = parse_primary(x)) || xexpect(x, X_DOTDOT) ||
		    !(e->r = parse_primary(x)) || xexpect(x, X_RP))
			e = NULL;
		break;
	}
	case X_IDENT: {
		struct xt nx = xpeek(x);
		if (nx.type != X_DOT && nx.type != X_LBR) {
			static const struct {
				const char *w;
				uint8_t type;
				bool b;
			} kw[] = {{"nil", V_NIL, 0},	 {"null", V_NIL, 0},
				  {"true", V_BOOL, 1},	 {"false", V_BOOL, 0},
				  {"blank", V_BLANK, 0}, {"empty", V_EMPTY, 0}};
			for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
				if (xis(x, kw[i].w)) {
					struct val v = {.type = kw[i].type};
					v.b = kw[i].b;
					xadv(x);
					e = lit_expr(pc, t.p, v);
					goto out;
				}
		}
		struct seg *s = palloc(pc, sizeof(*s));
		s->key = pstr(pc, t.p, t.len);
		s->klen = t.len;
		vpush(pc, &segs, s);
		xadv(x);
		goto tail;
	}
	case X_LBR: {
		xadv(x);
		struct expr *i = parse_primary(x);
		if (!i || xexpect(x, X_RBR))
			break;
		struct seg *s = palloc(pc, sizeof(*s));
		if (i->kind == X_LIT && i->lit.type == V_STR) {
			s->key = i->lit.s.p;
			s->klen = i->lit.s.len;
		} else {
			s->idx = i;
		}
		vpush(pc, &segs, s);
		goto tail;
	}
	default:
		xunexpected(x);
		break;
	}
	goto out;
tail:
	if (parse_var_tail(x, &segs))
		goto out;
	e = new_expr(pc, X_VAR, t.p);
	e->nsegs = segs.n;
	e->segs = palloc(pc, segs.n * sizeof(struct seg));
	for (size_t i = 0; i < segs.n; i++) {
		e->segs[i] = *(struct seg *)segs.v[i];
		seg_hash(pc, &e->segs[i]);
	}
out:
	x->depth--;
	return e;
}

static struct expr *parse_cond(struct xp *x)
{
	struct pc *pc = x->pc;
	const char *at = x->cur.p;
	struct expr *l = parse_primary(x), *e;

	if (!l)
		return NULL;
	if (x->cur.type == X_OP || xis(x, "contains")) {
		e = new_expr(pc, X_CMP, at);
		e->op = (uint8_t)(x->cur.type == X_OP ? x->cur.op : OP_CONTAINS);
		xadv(x);
		e->l = l;
		if (!(e->r = parse_primary(x)))
			return NULL;
		l = e;
	}
	if (xis(x, "and") || xis(x, "or")) {
		e = new_expr(pc, xis(x, "and") ? X_AND : X_OR, at);
		if (++x->depth > pc->max_depth * 4) {
			perr(pc, x->cur.p, "condition too long");
			return NULL;
		}
		xadv(x);
		e->l = l;
		if (!(e->r = parse_cond(x)))
			return NULL;
		x->depth--;
		l = e;
	}
	return l;
}

/* Parses `expr | filter: args ...`; allow_empty accepts nothing at all. */
static int parse_fexpr(struct xp *x, struct fexpr *fe, bool allow_empty)
{
	struct pc *pc = x->pc;
	struct vec calls = {0};

	memset(fe, 0, sizeof(*fe));
	if (x->cur.type == X_EOF && allow_empty)
		return 0;
	if (!(fe->e = parse_primary(x)))
		return -1;
	while (x->cur.type == X_PIPE) {
		xadv(x);
		if (x->cur.type != X_IDENT)
			return xunexpected(x);
		struct fcall *fc = palloc(pc, sizeof(*fc));
		struct vec args = {0}, kwn = {0}, kwv = {0};
		const char *name = x->cur.p;
		size_t nlen = x->cur.len;
		fc->at = name;
		fc->def = tmpl_filter_find(name, nlen);
		if (!fc->def && pc->strict)
			return perr(pc, name, "unknown filter '%.*s'", (int)nlen, name);
		xadv(x);
		if (x->cur.type == X_COLON) {
			xadv(x);
			for (;;) {
				if (x->cur.type == X_IDENT && xpeek(x).type == X_COLON) {
					const char *kp = x->cur.p;
					size_t kl = x->cur.len;
					xadv(x);
					xadv(x);
					struct expr *v = parse_primary(x);
					if (!v)
						return -1;
					if (fc->def &&
					    (!fc->def->kw || strlen(fc->def->kw) != kl ||
					     memcmp(fc->def->kw, kp, kl))) {
						if (pc->strict)
							return perr(pc, kp,
								    "filter '%.*s' has "
								    "no argument '%.*s'",
								    (int)nlen, name,
								    (int)kl, kp);
					} else {
						vpush(pc, &kwn, pstr(pc, kp, kl));
						vpush(pc, &kwv, v);
					}
				} else {
					struct expr *v = parse_primary(x);
					if (!v)
						return -1;
					vpush(pc, &args, v);
				}
				if (x->cur.type != X_COMMA)
					break;
				xadv(x);
				if (x->cur.type == X_PIPE || x->cur.type == X_EOF)
					break;
			}
		}
		if (fc->def && (args.n < fc->def->min || args.n > fc->def->max)) {
			if (fc->def->min == fc->def->max)
				return perr(pc, name,
					    "filter '%.*s' takes %d argument%s, not %zu",
					    (int)nlen, name, fc->def->min,
					    fc->def->min == 1 ? "" : "s", args.n);
			return perr(pc, name,
				    "filter '%.*s' takes %d to %d arguments, not %zu",
				    (int)nlen, name, fc->def->min, fc->def->max, args.n);
		}
		fc->args = (struct expr **)args.v;
		fc->nargs = args.n;
		fc->kwnames = (const char **)kwn.v;
		fc->kwvals = (struct expr **)kwv.v;
		fc->nkw = kwn.n;
		vpush(pc, &calls, fc);
	}
	fe->nf = calls.n;
	fe->f = palloc(pc, (calls.n ? calls.n : 1) * sizeof(struct fcall));
	for (size_t i = 0; i < calls.n; i++)
		fe->f[i] = *(struct fcall *)calls.v[i];
	return 0;
}

static int xend(struct xp *x)
{
	if (x->cur.type != X_EOF)
		return xunexpected(x);
	return 0;
}

/* ---- tags ---- */

static const char *const STOP_NONE[] = {NULL};

static int parse_body(struct pc *pc, struct lex *lx, struct body *b,
		      const char *const *stops, struct tok *stop, size_t depth);

static bool tok_is(const struct tok *t, const char *name)
{
	size_t n = strlen(name);
	return t->nlen == n && memcmp(t->name, name, n) == 0;
}

static struct node *new_node(struct pc *pc, int kind, const char *at)
{
	struct node *n = palloc(pc, sizeof(*n));
	n->kind = (uint8_t)kind;
	n->at = at;
	return n;
}

static bool body_blank(const struct body *b)
{
	for (size_t i = 0; i < b->n; i++) {
		const struct node *n = b->nodes[i];
		if (n->kind == N_TEXT) {
			for (size_t k = 0; k < n->text.len; k++)
				if (!is_ws(n->text.p[k]))
					return false;
		} else if (!n->blank) {
			return false;
		}
	}
	return true;
}

static void body_strip(struct body *b)
{
	size_t o = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->nodes[i]->kind != N_TEXT)
			b->nodes[o++] = b->nodes[i];
	b->n = o;
}

/* A name assign and capture may set: word characters and hyphens (Ruby's
 * VariableSignature), so "foo-a" and even "123" but not "foo?". */
static bool is_var_name(const struct xt *t)
{
	if (t->type == X_INT && t->p[0] != '-')
		return true;
	return t->type == X_IDENT && t->p[t->len - 1] != '?';
}

static char *ident_arg(struct pc *pc, const struct tok *t, bool allow_str)
{
	struct xp x;
	char *name;

	xinit(&x, pc, t->p, t->len);
	if (!is_var_name(&x.cur) && !(allow_str && x.cur.type == X_STR)) {
		xunexpected(&x);
		return NULL;
	}
	name = pstr(pc, x.cur.p, x.cur.len);
	xadv(&x);
	if (xend(&x))
		return NULL;
	return name;
}

static int parse_if(struct pc *pc, struct lex *lx, struct tok *t, struct node *n,
		    size_t depth)
{
	static const char *const if_stops[] = {"elsif", "else", "endif", NULL};
	static const char *const unless_stops[] = {"elsif", "else", "endunless", NULL};
	bool unless = tok_is(t, "unless");
	const char *const *stops = unless ? unless_stops : if_stops;
	struct vec br = {0};
	struct tok cur = *t, stop;

	for (;;) {
		struct branch *b = palloc(pc, sizeof(*b));
		if (!tok_is(&cur, "else")) {
			struct xp x;
			xinit(&x, pc, cur.p, cur.len);
			if (!(b->cond = parse_cond(&x)) || xend(&x))
				return -1;
			b->negate = unless && br.n == 0;
		}
		if (parse_body(pc, lx, &b->body, stops, &stop, depth + 1))
			return -1;
		vpush(pc, &br, b);
		if (tok_is(&stop, stops[2]))
			break;
		cur = stop;
	}
	n->cond.n = br.n;
	n->cond.br = palloc(pc, br.n * sizeof(struct branch));
	n->blank = true;
	for (size_t i = 0; i < br.n; i++) {
		n->cond.br[i] = *(struct branch *)br.v[i];
		n->blank = n->blank && body_blank(&n->cond.br[i].body);
	}
	if (n->blank)
		for (size_t i = 0; i < br.n; i++)
			body_strip(&n->cond.br[i].body);
	return 0;
}

static int parse_case(struct pc *pc, struct lex *lx, struct tok *t, struct node *n,
		      size_t depth)
{
	static const char *const stops[] = {"when", "else", "endcase", NULL};
	struct vec br = {0};
	struct tok stop;
	struct body skip;
	struct xp x;

	xinit(&x, pc, t->p, t->len);
	if (!(n->cond.subject = parse_primary(&x)) || xend(&x))
		return -1;
	if (parse_body(pc, lx, &skip, stops, &stop, depth + 1))
		return -1;
	n->blank = true;
	while (!tok_is(&stop, "endcase")) {
		struct vec vals = {0};
		struct tok cur = stop;
		struct body body;
		if (tok_is(&cur, "when")) {
			xinit(&x, pc, cur.p, cur.len);
			for (;;) {
				struct expr *v = parse_primary(&x);
				if (!v)
					return -1;
				vpush(pc, &vals, v);
				if (x.cur.type == X_COMMA || xis(&x, "or")) {
					xadv(&x);
					continue;
				}
				if (x.cur.type != X_EOF && pc->strict)
					return xunexpected(&x);
				break;
			}
		}
		if (parse_body(pc, lx, &body, stops, &stop, depth + 1))
			return -1;
		n->blank = n->blank && body_blank(&body);
		if (!vals.n) {
			struct branch *b = palloc(pc, sizeof(*b));
			b->body = body;
			vpush(pc, &br, b);
		}
		for (size_t i = 0; i < vals.n; i++) {
			struct branch *b = palloc(pc, sizeof(*b));
			b->cond = vals.v[i];
			b->body = body;
			vpush(pc, &br, b);
		}
	}
	n->cond.n = br.n;
	n->cond.br = palloc(pc, (br.n ? br.n : 1) * sizeof(struct branch));
	for (size_t i = 0; i < br.n; i++) {
		n->cond.br[i] = *(struct branch *)br.v[i];
		if (n->blank)
			body_strip(&n->cond.br[i].body);
	}
	return 0;
}

static int parse_for(struct pc *pc, struct lex *lx, struct tok *t, struct node *n,
		     size_t depth)
{
	static const char *const for_stops[] = {"else", "endfor", NULL};
	static const char *const for_end[] = {"endfor", NULL};
	static const char *const tr_stops[] = {"endtablerow", NULL};
	bool tr = n->kind == N_TABLEROW;
	struct xp x;
	struct tok stop;

	xinit(&x, pc, t->p, t->len);
	if (x.cur.type != X_IDENT)
		return xunexpected(&x);
	n->loop.var = pstr(pc, x.cur.p, x.cur.len);
	xadv(&x);
	if (!xis(&x, "in"))
		return perr(pc, x.cur.p, "expected 'in' in '%.*s'", (int)t->nlen,
			    t->name);
	xadv(&x);
	const char *cs = x.cur.p;
	if (!(n->loop.coll = parse_primary(&x)))
		return -1;
	size_t vl = strlen(n->loop.var), cl = (size_t)(x.prev_end - cs);
	char *name = palloc(pc, vl + cl + 2);
	memcpy(name, n->loop.var, vl);
	name[vl] = '-';
	memcpy(name + vl + 1, cs, cl);
	n->loop.name = name;
	for (;;) {
		if (x.cur.type == X_COMMA) {
			xadv(&x);
			continue;
		}
		if (xis(&x, "reversed")) {
			n->loop.reversed = true;
			xadv(&x);
			continue;
		}
		if (xis(&x, "limit") || xis(&x, "offset") || (tr && xis(&x, "cols"))) {
			struct expr **slot = xis(&x, "limit")	 ? &n->loop.limit
					     : xis(&x, "offset") ? &n->loop.offset
								 : &n->loop.cols;
			bool off = slot == &n->loop.offset;
			xadv(&x);
			if (xexpect(&x, X_COLON))
				return -1;
			if (off && xis(&x, "continue")) {
				n->loop.offset_continue = true;
				xadv(&x);
				continue;
			}
			if (!(*slot = parse_primary(&x)))
				return -1;
			continue;
		}
		break;
	}
	if (xend(&x))
		return -1;
	if (parse_body(pc, lx, &n->loop.body, tr ? tr_stops : for_stops, &stop,
		       depth + 1))
		return -1;
	if (!tr && tok_is(&stop, "else") &&
	    parse_body(pc, lx, &n->loop.els, for_end, &stop, depth + 1))
		return -1;
	n->blank = body_blank(&n->loop.body) && body_blank(&n->loop.els);
	if (n->blank) {
		body_strip(&n->loop.body);
		body_strip(&n->loop.els);
	}
	if (tr)
		n->blank = false;
	return 0;
}

static int parse_cycle(struct pc *pc, struct tok *t, struct node *n)
{
	struct xp x;
	struct vec vals = {0};
	struct buf key;

	xinit(&x, pc, t->p, t->len);
	buf_init(&key, 0);
	for (;;) {
		const char *s = x.cur.p;
		struct expr *v = parse_primary(&x);
		if (!v)
			goto fail;
		if (x.cur.type == X_COLON && !n->cycle.group && vals.n == 0) {
			n->cycle.group = v;
			xadv(&x);
			continue;
		}
		vpush(pc, &vals, v);
		buf_append(&key, s, (size_t)(x.prev_end - s));
		buf_putc(&key, ',');
		if (x.cur.type != X_COMMA)
			break;
		xadv(&x);
	}
	if (xend(&x))
		goto fail;
	n->cycle.vals = (struct expr **)vals.v;
	n->cycle.n = vals.n;
	n->cycle.key = pstr(pc, buf_str(&key), key.len);
	buf_fini(&key);
	return 0;
fail:
	buf_fini(&key);
	return -1;
}

static int parse_include(struct pc *pc, struct tok *t, struct node *n)
{
	struct xp x;
	struct vec kwn = {0}, kwv = {0};
	bool render = n->kind == N_RENDER;

	xinit(&x, pc, t->p, t->len);
	if (render && x.cur.type != X_STR &&
	    !(x.cur.type == X_IDENT && xpeek(&x).type != X_DOT &&
	      xpeek(&x).type != X_LBR))
		return perr(pc, x.cur.p,
			    "render takes a quoted snippet name or a {%% snippet %%}");
	if (!(n->incl.name = parse_primary(&x)))
		return -1;
	if (xis(&x, "with") || xis(&x, "for")) {
		n->incl.is_for = xis(&x, "for");
		xadv(&x);
		if (!(n->incl.with = parse_primary(&x)))
			return -1;
		if (xis(&x, "as")) {
			xadv(&x);
			if (x.cur.type != X_IDENT)
				return xunexpected(&x);
			n->incl.alias = pstr(pc, x.cur.p, x.cur.len);
			xadv(&x);
		}
	}
	for (;;) {
		if (x.cur.type == X_COMMA)
			xadv(&x);
		if (x.cur.type == X_EOF)
			break;
		if (x.cur.type != X_IDENT || xpeek(&x).type != X_COLON)
			return xunexpected(&x);
		vpush(pc, &kwn, pstr(pc, x.cur.p, x.cur.len));
		xadv(&x);
		xadv(&x);
		struct expr *v = parse_primary(&x);
		if (!v)
			return -1;
		vpush(pc, &kwv, v);
	}
	n->incl.kwnames = (const char **)kwn.v;
	n->incl.kwvals = (struct expr **)kwv.v;
	n->incl.nkw = kwn.n;
	return 0;
}

/* Skips a {% comment %} block (nested comments balance; raw hides its body). */
static int skip_comment(struct pc *pc, struct lex *lx, const struct tok *open)
{
	int depth = 1;
	struct tok t;
	bool was = lx->in_comment;

	lx->in_comment = true;
	while (depth > 0) {
		if (lex_next(pc, lx, &t))
			return -1;
		if (t.type == T_EOF) {
			lx->in_comment = was;
			return perr(pc, open->at, "'comment' was never closed");
		}
		if (t.type != T_TAG)
			continue;
		if (tok_is(&t, "comment"))
			depth++;
		else if (tok_is(&t, "endcomment"))
			depth--;
		else if (tok_is(&t, "raw") && !lx->lines) {
			const char *bp;
			size_t bl;
			if (lex_raw(pc, lx, "endraw", t.at, &bp, &bl))
				return -1;
		}
	}
	lx->in_comment = was;
	return 0;
}

static int skip_doc_lines(struct pc *pc, struct lex *lx, const struct tok *open)
{
	struct tok t;
	for (;;) {
		lex_next(pc, lx, &t);
		if (t.type == T_EOF)
			return perr(pc, open->at, "'doc' was never closed");
		if (tok_is(&t, "enddoc"))
			return 0;
	}
}

static int parse_tag(struct pc *pc, struct lex *lx, struct tok *t, struct vec *nodes,
		     size_t depth)
{
	struct node *n = NULL;
	struct xp x;

	if (depth > pc->max_depth)
		return perr(pc, t->at, "blocks nested too deeply");
	if (tok_is(t, "#")) {
		for (const char *p = t->p; p < t->p + t->len; p++)
			if (*p == '\n') {
				const char *q = p + 1;
				while (q < t->p + t->len &&
				       (*q == ' ' || *q == '\t' || *q == '\r'))
					q++;
				if (q < t->p + t->len && *q != '#' && *q != '\n')
					return perr(pc, q,
						    "every line of a '#' comment starts "
						    "with '#'");
			}
		return 0;
	}
	if (tok_is(t, "if") || tok_is(t, "unless")) {
		n = new_node(pc, N_IF, t->at);
		if (parse_if(pc, lx, t, n, depth))
			return -1;
	} else if (tok_is(t, "case")) {
		n = new_node(pc, N_CASE, t->at);
		if (parse_case(pc, lx, t, n, depth))
			return -1;
	} else if (tok_is(t, "for") || tok_is(t, "tablerow")) {
		n = new_node(pc, tok_is(t, "for") ? N_FOR : N_TABLEROW, t->at);
		if (parse_for(pc, lx, t, n, depth))
			return -1;
	} else if (tok_is(t, "assign")) {
		n = new_node(pc, N_ASSIGN, t->at);
		xinit(&x, pc, t->p, t->len);
		if (!is_var_name(&x.cur))
			return xunexpected(&x);
		n->assign.name = pstr(pc, x.cur.p, x.cur.len);
		xadv(&x);
		if (xexpect(&x, X_ASSIGN) || parse_fexpr(&x, &n->assign.v, false) ||
		    xend(&x))
			return -1;
		n->blank = true;
	} else if (tok_is(t, "capture")) {
		static const char *const stops[] = {"endcapture", NULL};
		struct tok stop;
		n = new_node(pc, N_CAPTURE, t->at);
		if (!(n->capture.name = ident_arg(pc, t, true)))
			return -1;
		if (parse_body(pc, lx, &n->capture.body, stops, &stop, depth + 1))
			return -1;
		n->blank = true;
	} else if (tok_is(t, "snippet")) {
		static const char *const stops[] = {"endsnippet", NULL};
		struct tok stop;
		n = new_node(pc, N_SNIPPET, t->at);
		if (!(n->snippet.name = ident_arg(pc, t, false)))
			return -1;
		if (parse_body(pc, lx, &n->snippet.body, stops, &stop, depth + 1))
			return -1;
		n->blank = true;
	} else if (tok_is(t, "ifchanged")) {
		static const char *const stops[] = {"endifchanged", NULL};
		struct tok stop;
		n = new_node(pc, N_IFCHANGED, t->at);
		if (parse_body(pc, lx, &n->ifchanged, stops, &stop, depth + 1))
			return -1;
	} else if (tok_is(t, "cycle")) {
		n = new_node(pc, N_CYCLE, t->at);
		if (parse_cycle(pc, t, n))
			return -1;
	} else if (tok_is(t, "increment") || tok_is(t, "decrement")) {
		n = new_node(pc, tok_is(t, "increment") ? N_INCREMENT : N_DECREMENT,
			     t->at);
		if (!(n->counter.name = ident_arg(pc, t, false)))
			return -1;
	} else if (tok_is(t, "echo")) {
		n = new_node(pc, N_OUTPUT, t->at);
		xinit(&x, pc, t->p, t->len);
		if (parse_fexpr(&x, &n->out, true) || xend(&x))
			return -1;
	} else if (tok_is(t, "break") || tok_is(t, "continue")) {
		n = new_node(pc, tok_is(t, "break") ? N_BREAK : N_CONTINUE, t->at);
	} else if (tok_is(t, "include") || tok_is(t, "render")) {
		n = new_node(pc, tok_is(t, "include") ? N_INCLUDE : N_RENDER, t->at);
		if (parse_include(pc, t, n))
			return -1;
	} else if (tok_is(t, "raw")) {
		const char *bp;
		size_t bl;
		if (lx->lines)
			return perr(pc, t->at, "'raw' cannot be used inside 'liquid'");
		if (lex_raw(pc, lx, "endraw", t->at, &bp, &bl))
			return -1;
		n = new_node(pc, N_TEXT, t->at);
		n->text.p = bp;
		n->text.len = bl;
		n->blank = bl == 0;
	} else if (tok_is(t, "doc")) {
		const char *bp;
		size_t bl;
		if (t->len)
			return perr(pc, t->p, "'doc' takes no arguments");
		if (lx->lines)
			return skip_doc_lines(pc, lx, t);
		return lex_raw(pc, lx, "enddoc", t->at, &bp, &bl);
	} else if (tok_is(t, "comment")) {
		return skip_comment(pc, lx, t);
	} else if (tok_is(t, "liquid")) {
		struct lex sub = {.p = t->p, .end = t->p + t->len, .lines = true};
		struct body b;
		if (parse_body(pc, &sub, &b, STOP_NONE, NULL, depth + 1))
			return -1;
		for (size_t i = 0; i < b.n; i++)
			vpush(pc, nodes, b.nodes[i]);
		return 0;
	} else if (t->nlen == 0) {
		return perr(pc, t->at, "tag has no name");
	} else {
		return perr(pc, t->at, "unknown tag '%.*s'", (int)t->nlen, t->name);
	}
	vpush(pc, nodes, n);
	return 0;
}

/*
 * Parses nodes until EOF (stops empty) or until a tag named in stops, which is
 * returned in *stop. Any other end-like tag is an error.
 */
static int parse_body(struct pc *pc, struct lex *lx, struct body *b,
		      const char *const *stops, struct tok *stop, size_t depth)
{
	struct vec nodes = {0};
	struct tok t;

	memset(b, 0, sizeof(*b));
	for (;;) {
		if (lex_next(pc, lx, &t))
			return -1;
		if (t.type == T_EOF) {
			if (stops[0]) {
				const char *want = stops[0];
				for (size_t i = 0; stops[i]; i++)
					if (strncmp(stops[i], "end", 3) == 0)
						want = stops[i];
				return perr(pc, t.at, "'%s' was never found", want);
			}
			break;
		}
		if (t.type == T_TEXT) {
			if (!t.len)
				continue;
			struct node *n = new_node(pc, N_TEXT, t.at);
			n->text.p = t.p;
			n->text.len = t.len;
			vpush(pc, &nodes, n);
			continue;
		}
		if (t.type == T_OUT) {
			struct node *n = new_node(pc, N_OUTPUT, t.at);
			struct xp x;
			xinit(&x, pc, t.p, t.len);
			if (parse_fexpr(&x, &n->out, true) || xend(&x))
				return -1;
			vpush(pc, &nodes, n);
			continue;
		}
		bool is_stop = false;
		for (size_t i = 0; stops[i]; i++)
			if (tok_is(&t, stops[i]))
				is_stop = true;
		if (is_stop) {
			*stop = t;
			break;
		}
		if (t.nlen > 3 && memcmp(t.name, "end", 3) == 0)
			return perr(pc, t.at, "unexpected '%.*s'", (int)t.nlen, t.name);
		if (tok_is(&t, "else") || tok_is(&t, "elsif") || tok_is(&t, "when"))
			return perr(pc, t.at, "unexpected '%.*s'", (int)t.nlen, t.name);
		if (parse_tag(pc, lx, &t, &nodes, depth))
			return -1;
	}
	b->nodes = (struct node **)nodes.v;
	b->n = nodes.n;
	return 0;
}

static size_t lim(size_t v, size_t def)
{
	return v ? v : def;
}

enum nerr tmpl_compile(const char *src, size_t len, const struct tmpl_options *opt,
		       struct tmpl **out, struct nerr_msg *msg)
{
	struct tmpl_options o = {0};
	struct tmpl *t;
	struct pc pc = {0};
	struct lex lx = {0};
	char *copy;

	*out = NULL;
	if (opt)
		o = *opt;
	if (len > lim(o.limits.template_bytes, 1 << 20))
		return nerr_set(msg, NERR_TOOBIG, "template",
				"1:1: template is %zu bytes, over the limit of %zu", len,
				lim(o.limits.template_bytes, 1 << 20));
	t = xcalloc(1, sizeof(*t));
	arena_init(&t->arena, len < (256u << 10) ? len * 4 + 4096 : (1u << 20));
	copy = arena_alloc(&t->arena, len + 1);
	ASSERT(copy);
	if (len)
		memcpy(copy, src, len);
	copy[len] = 0;
	t->src = copy;
	t->len = len;
	t->opt = o;
	pc.t = t;
	pc.a = &t->arena;
	pc.src = copy;
	pc.end = copy + len;
	pc.strict = o.strict;
	pc.max_depth = lim(o.limits.nesting_depth, 64);
	pc.msg = msg;
	lx.p = copy;
	lx.end = copy + len;
	if (parse_body(&pc, &lx, &t->body, STOP_NONE, NULL, 0)) {
		tmpl_free(t);
		return NERR_PARSE;
	}
	*out = t;
	return NERR_OK;
}

void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	arena_fini(&t->arena);
	free(t);
}
