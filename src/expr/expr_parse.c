/*
 * expr_parse.c -- CEL lexer, parser and resolver: source text to a compiled tree.
 *
 * Design: a hand-written recursive-descent parser over the cel-spec grammar
 * (langdef.md): ternary, ||, &&, relations (including `in`), + -, * / %, unary
 * ! and -, member selection, indexing, calls, list and map literals and every
 * literal form. It builds raw nodes (R_IDENT, R_CALL) in the program's arena; a
 * second pass (resolve) turns identifiers into variable slots or comprehension
 * locals and calls into function pointers or macros, so evaluation never looks a
 * name up.
 * Invariants: (1) no input recurses deeper than EXPR_MAX_DEPTH, in the parser or
 * in the tree it builds (&& and || chains are built balanced); (2) every
 * allocation is bounded by EXPR_MAX_SOURCE_BYTES (literals are capped too);
 * (3) a parse error names the line and column (1-based, in code points) of the
 * offending token.
 * References: cel-spec langdef.md "Syntax", "Macros"; cel-go parser/unescape.go.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "expr/expr_int.h"

/* Raw node ops used only between parsing and resolving. */
enum {
	R_IDENT = 100, /* name */
	R_CALL,	       /* name(a...) or a[0].name(a[1]...) when kind == 1 */
};

enum tok_type {
	T_EOF,
	T_IDENT,
	T_INT,
	T_UINT,
	T_DOUBLE,
	T_STRING,
	T_BYTES,
	T_PUNCT,  /* text in p: one of . , : ? ( ) [ ] { } + - * / % ! < > etc. */
	T_QIDENT, /* `quoted field` */
};

struct token {
	enum tok_type type;
	const char *start; /* in the source */
	size_t len;
	char p[3]; /* punctuation, NUL-terminated */
};

struct parser {
	const char *src;
	size_t src_len;
	const char *pos;  /* lexer position */
	struct token tok; /* current token */
	struct arena *arena;
	const struct expr_env *env;
	struct expr_program *prog;
	int depth;
	enum nerr rc;
	struct nerr_msg *msg;
	/* resolver scope: comprehension variable names, innermost last */
	const char *scope_name[EXPR_MAX_LOCALS];
	size_t scope_len[EXPR_MAX_LOCALS];
	int nscope;
	/* select paths over variables ("0.traits.email"), for memo slots */
	struct path {
		char *key;
		struct node *n;
	} * paths;
	size_t npaths, cappaths;
};

static const char *reserved[] = {"as",	 "break",    "const",	  "continue", "else",
				 "for",	 "function", "if",	  "import",   "let",
				 "loop", "package",  "namespace", "return",   "var",
				 "void", "while",    "in",	  NULL};

/* Records the first error at position at and returns NULL for chaining. */
static void *fail_at(struct parser *p, const char *at, enum nerr rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void *fail_at(struct parser *p, const char *at, enum nerr rc, const char *fmt, ...)
{
	char reason[200];
	va_list ap;
	int line = 1;
	const char *ls = p->src;

	if (p->rc != NERR_OK)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (!at || at < p->src || at > p->src + p->src_len)
		at = p->src + p->src_len;
	for (const char *q = p->src; q < at; q++) {
		if (*q == '\n') {
			line++;
			ls = q + 1;
		}
	}
	p->rc = nerr_set(p->msg, rc, "", "line %d, column %zu: %s", line,
			 expr_utf8_count(ls, (size_t)(at - ls)) + 1, reason);
	return NULL;
}

static struct node *new_node(struct parser *p, int op, size_t na)
{
	struct node *n = arena_calloc(p->arena, 1, sizeof(*n));

	n->op = (uint8_t)op;
	n->na = (uint16_t)na;
	if (na)
		n->a = arena_calloc(p->arena, na, sizeof(*n->a));
	return n;
}

/* ---- lexer ---- */

static bool is_ident_start(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static bool is_hex(int ch)
{
	return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static void skip_space(struct parser *p)
{
	const char *end = p->src + p->src_len;

	while (p->pos < end) {
		char ch = *p->pos;

		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f') {
			p->pos++;
		} else if (ch == '/' && p->pos + 1 < end && p->pos[1] == '/') {
			while (p->pos < end && *p->pos != '\n')
				p->pos++;
		} else {
			break;
		}
	}
}

/* Scans a quoted literal starting at q (the first quote); returns its end or NULL. */
static const char *scan_quoted(struct parser *p, const char *q, bool raw)
{
	const char *end = p->src + p->src_len;
	char quote = *q;
	bool triple = q + 2 < end && q[1] == quote && q[2] == quote;
	const char *s = q + (triple ? 3 : 1);

	while (s < end) {
		if (*s == '\\' && !raw) {
			s += 2;
			continue;
		}
		if (triple) {
			if (s + 2 < end && s[0] == quote && s[1] == quote &&
			    s[2] == quote)
				return s + 3;
		} else {
			if (*s == quote)
				return s + 1;
			if (*s == '\n' || *s == '\r')
				return fail_at(p, s, NERR_PARSE,
					       "newline in string literal");
		}
		s++;
	}
	return fail_at(p, q, NERR_PARSE, "unterminated string literal");
}

static void next(struct parser *p)
{
	const char *end = p->src + p->src_len;
	const char *s;
	struct token *t = &p->tok;

	skip_space(p);
	s = p->pos;
	memset(t, 0, sizeof(*t));
	t->start = s;
	if (s >= end) {
		t->type = T_EOF;
		return;
	}
	if (is_ident_start(*s)) {
		/* String prefixes: r, b and their combinations, any case. */
		const char *q = s;
		bool raw = false, bytes = false;

		for (int i = 0; i < 2 && q < end; i++) {
			if ((*q == 'r' || *q == 'R') && !raw)
				raw = true;
			else if ((*q == 'b' || *q == 'B') && !bytes)
				bytes = true;
			else
				break;
			q++;
		}
		if (q > s && q < end && (*q == '"' || *q == '\'')) {
			const char *e = scan_quoted(p, q, raw);

			if (!e) {
				t->type = T_EOF;
				p->pos = end;
				return;
			}
			t->type = bytes ? T_BYTES : T_STRING;
			t->len = (size_t)(e - s);
			p->pos = e;
			return;
		}
		while (s < end && (is_ident_start(*s) || is_digit(*s)))
			s++;
		t->type = T_IDENT;
		t->len = (size_t)(s - t->start);
		p->pos = s;
		return;
	}
	if (*s == '"' || *s == '\'') {
		const char *e = scan_quoted(p, s, false);

		if (!e) {
			t->type = T_EOF;
			p->pos = end;
			return;
		}
		t->type = T_STRING;
		t->len = (size_t)(e - s);
		p->pos = e;
		return;
	}
	if (is_digit(*s) || (*s == '.' && s + 1 < end && is_digit(s[1]))) {
		bool dbl = false;

		if (*s == '0' && s + 1 < end && (s[1] == 'x' || s[1] == 'X')) {
			s += 2;
			while (s < end && is_hex(*s))
				s++;
		} else {
			while (s < end && is_digit(*s))
				s++;
			if (s + 1 < end && *s == '.' && is_digit(s[1])) {
				dbl = true;
				s++;
				while (s < end && is_digit(*s))
					s++;
			}
			if (s < end && (*s == 'e' || *s == 'E')) {
				const char *e = s + 1;

				if (e < end && (*e == '+' || *e == '-'))
					e++;
				if (e < end && is_digit(*e)) {
					dbl = true;
					s = e;
					while (s < end && is_digit(*s))
						s++;
				}
			}
		}
		t->type = dbl ? T_DOUBLE : T_INT;
		if (!dbl && s < end && (*s == 'u' || *s == 'U')) {
			t->type = T_UINT;
			s++;
		}
		t->len = (size_t)(s - t->start);
		p->pos = s;
		return;
	}
	if (*s == '`') {
		const char *e = s + 1;

		while (e < end && *e != '`' && *e != '\n')
			e++;
		if (e >= end || *e != '`') {
			fail_at(p, s, NERR_PARSE, "unterminated quoted identifier");
			t->type = T_EOF;
			p->pos = end;
			return;
		}
		t->type = T_QIDENT;
		t->len = (size_t)(e + 1 - s);
		p->pos = e + 1;
		return;
	}
	static const char *two[] = {"==", "!=", "<=", ">=", "&&", "||", NULL};
	for (int i = 0; two[i]; i++) {
		if (s + 1 < end && s[0] == two[i][0] && s[1] == two[i][1]) {
			t->type = T_PUNCT;
			memcpy(t->p, two[i], 2);
			t->len = 2;
			p->pos = s + 2;
			return;
		}
	}
	if (strchr(".,:?()[]{}+-*/%!<>", *s) && *s) {
		t->type = T_PUNCT;
		t->p[0] = *s;
		t->len = 1;
		p->pos = s + 1;
		return;
	}
	fail_at(p, s, NERR_PARSE, "unexpected character '%c'",
		(*s >= 32 && *s < 127) ? *s : '?');
	t->type = T_EOF;
	p->pos = end;
}

static bool is_punct(const struct parser *p, const char *s)
{
	return p->tok.type == T_PUNCT && strcmp(p->tok.p, s) == 0;
}

static bool accept(struct parser *p, const char *s)
{
	if (!is_punct(p, s))
		return false;
	next(p);
	return true;
}

static bool expect(struct parser *p, const char *s)
{
	if (accept(p, s))
		return true;
	fail_at(p, p->tok.start, NERR_PARSE, "expected '%s'", s);
	return false;
}

static bool is_ident_tok(const struct parser *p, const char *s)
{
	return p->tok.type == T_IDENT && p->tok.len == strlen(s) &&
	       memcmp(p->tok.start, s, p->tok.len) == 0;
}

static bool is_reserved(const char *s, size_t len)
{
	for (int i = 0; reserved[i]; i++)
		if (strlen(reserved[i]) == len && memcmp(reserved[i], s, len) == 0)
			return true;
	return false;
}

/* ---- literals ---- */

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return ch - 'A' + 10;
}

/*
 * Decodes the string or bytes token t into arena memory. Escapes follow
 * cel-spec: \\ \? \" \' \` \a \b \f \n \r \t \v, \xHH, \XHH, octal \ooo, \uHHHH,
 * \UHHHHHHHH. In a string, \x and octal escapes name code points; in bytes they
 * name octets. Newlines in triple-quoted text are kept; \r\n is kept as is.
 */
static struct node *string_literal(struct parser *p)
{
	const struct token *t = &p->tok;
	const char *s = t->start, *end = t->start + t->len;
	bool raw = false, bytes = false, triple;
	char quote, *out;
	size_t n = 0, cap;
	struct node *nd;

	while (*s != '"' && *s != '\'') {
		if (*s == 'r' || *s == 'R')
			raw = true;
		else
			bytes = true;
		s++;
	}
	quote = *s;
	triple = end - s >= 6 && s[1] == quote && s[2] == quote;
	s += triple ? 3 : 1;
	end -= triple ? 3 : 1;
	if ((size_t)(end - s) > EXPR_MAX_LITERAL_BYTES)
		return fail_at(p, t->start, NERR_TOOBIG, "literal longer than %d bytes",
			       EXPR_MAX_LITERAL_BYTES);
	cap = (size_t)(end - s) * 2 + 1;
	out = arena_alloc(p->arena, cap);
	while (s < end) {
		uint32_t cp;
		const char *at = s;

		if (*s != '\\' || raw) {
			out[n++] = *s++;
			continue;
		}
		s++;
		if (s >= end)
			return fail_at(p, at, NERR_PARSE, "bad escape at end of literal");
		switch (*s) {
		case '\\':
		case '?':
		case '"':
		case '\'':
		case '`':
			out[n++] = *s++;
			continue;
		case 'a':
			out[n++] = '\a';
			s++;
			continue;
		case 'b':
			out[n++] = '\b';
			s++;
			continue;
		case 'f':
			out[n++] = '\f';
			s++;
			continue;
		case 'n':
			out[n++] = '\n';
			s++;
			continue;
		case 'r':
			out[n++] = '\r';
			s++;
			continue;
		case 't':
			out[n++] = '\t';
			s++;
			continue;
		case 'v':
			out[n++] = '\v';
			s++;
			continue;
		case 'x':
		case 'X':
			if (end - s < 3 || !is_hex(s[1]) || !is_hex(s[2]))
				return fail_at(p, at, NERR_PARSE, "bad \\x escape");
			cp = (uint32_t)(hexval(s[1]) * 16 + hexval(s[2]));
			s += 3;
			break;
		case 'u':
		case 'U': {
			int nd_ = *s == 'u' ? 4 : 8;

			if (end - s < nd_ + 1)
				return fail_at(p, at, NERR_PARSE, "bad \\%c escape", *s);
			cp = 0;
			for (int i = 1; i <= nd_; i++) {
				if (!is_hex(s[i]))
					return fail_at(p, at, NERR_PARSE,
						       "bad \\%c escape", *s);
				cp = cp * 16 + (uint32_t)hexval(s[i]);
			}
			if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
				return fail_at(p, at, NERR_PARSE,
					       "invalid code point in escape");
			s += nd_ + 1;
			n += expr_utf8_encode(cp, out + n);
			continue;
		}
		default:
			if (*s >= '0' && *s <= '3') {
				if (end - s < 3 || s[1] < '0' || s[1] > '7' ||
				    s[2] < '0' || s[2] > '7')
					return fail_at(p, at, NERR_PARSE,
						       "bad octal escape");
				cp = (uint32_t)((s[0] - '0') * 64 + (s[1] - '0') * 8 +
						(s[2] - '0'));
				s += 3;
				break;
			}
			return fail_at(p, at, NERR_PARSE, "invalid escape '\\%c'",
				       (*s >= 32 && *s < 127) ? *s : '?');
		}
		/* \x and octal: an octet in bytes, a code point in strings */
		if (bytes)
			out[n++] = (char)cp;
		else
			n += expr_utf8_encode(cp, out + n);
	}
	out[n] = '\0';
	if (!bytes && !expr_utf8_valid(out, n))
		return fail_at(p, t->start, NERR_PARSE,
			       "invalid UTF-8 in string literal");
	nd = new_node(p, N_LIT, 0);
	nd->u.lit = bytes ? mk_bytes(out, n) : mk_str(out, n);
	return nd;
}

/* Parses the number token; neg folds a preceding '-' into an int or double. */
static struct node *number_literal(struct parser *p, bool neg, const char *at)
{
	const struct token *t = &p->tok;
	char text[400];
	struct node *n;
	size_t len = t->len;

	if (len >= sizeof(text) - 2)
		return fail_at(p, at, NERR_TOOBIG, "number literal too long");
	text[0] = '-';
	memcpy(text + 1, t->start, len);
	text[len + 1] = '\0';
	n = new_node(p, N_LIT, 0);
	if (t->type == T_DOUBLE) {
		n->u.lit = mk_double(strtod(neg ? text : text + 1, NULL));
		return n;
	}
	bool hex = len > 2 && (t->start[1] == 'x' || t->start[1] == 'X');
	const char *digits = text + 1 + (hex ? 2 : 0);
	size_t dlen = len - (hex ? 2 : 0) - (t->type == T_UINT ? 1 : 0);
	unsigned __int128 v = 0;

	if (dlen == 0)
		return fail_at(p, at, NERR_PARSE, "malformed number");
	for (size_t i = 0; i < dlen; i++) {
		v = v * (hex ? 16 : 10) + (unsigned)hexval(digits[i]);
		if (v > (unsigned __int128)UINT64_MAX)
			return fail_at(p, at, NERR_PARSE, "integer literal out of range");
	}
	if (t->type == T_UINT) {
		n->u.lit = mk_uint((uint64_t)v);
	} else if (neg) {
		if (v > (unsigned __int128)INT64_MAX + 1)
			return fail_at(p, at, NERR_PARSE, "integer literal out of range");
		n->u.lit = mk_int((int64_t)(0 - (uint64_t)v));
	} else {
		if (v > (unsigned __int128)INT64_MAX)
			return fail_at(p, at, NERR_PARSE, "integer literal out of range");
		n->u.lit = mk_int((int64_t)v);
	}
	return n;
}

/* ---- grammar ---- */

static struct node *parse_expr(struct parser *p);

static bool enter(struct parser *p)
{
	if (++p->depth > EXPR_MAX_DEPTH) {
		fail_at(p, p->tok.start, NERR_LIMIT, "expression nested deeper than %d",
			EXPR_MAX_DEPTH);
		return false;
	}
	return true;
}

/* Parses `a, b, c` up to close; returns the count, items in an arena array. */
static struct node **parse_list(struct parser *p, const char *close, size_t *count,
				bool map)
{
	struct node **items = NULL;
	size_t n = 0, cap = 0;

	while (!is_punct(p, close)) {
		int per = map ? 2 : 1;

		if (n + per > cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct node **ni = arena_alloc(p->arena, ncap * sizeof(*ni));

			if (n)
				memcpy(ni, items, n * sizeof(*ni));
			items = ni;
			cap = ncap;
		}
		if ((n + per) / per > EXPR_MAX_LITERAL_ITEMS) {
			fail_at(p, p->tok.start, NERR_LIMIT, "more than %d items",
				EXPR_MAX_LITERAL_ITEMS);
			return NULL;
		}
		if (!(items[n++] = parse_expr(p)))
			return NULL;
		if (map) {
			if (!expect(p, ":"))
				return NULL;
			if (!(items[n++] = parse_expr(p)))
				return NULL;
		}
		if (!accept(p, ","))
			break;
	}
	if (!expect(p, close))
		return NULL;
	*count = n;
	return items;
}

static struct node *make_call(struct parser *p, const char *name, size_t len,
			      struct node *recv, struct node **args, size_t nargs)
{
	size_t na = nargs + (recv ? 1 : 0);
	struct node *n;

	if (na > 0xFFFF)
		return fail_at(p, name, NERR_LIMIT, "too many arguments");
	n = new_node(p, R_CALL, na);
	n->name = name;
	n->len = (uint32_t)len;
	n->kind = recv ? 1 : 0;
	if (recv)
		n->a[0] = recv;
	for (size_t i = 0; i < nargs; i++)
		n->a[i + (recv ? 1 : 0)] = args[i];
	return n;
}

static struct node *parse_primary(struct parser *p)
{
	struct token t = p->tok;
	struct node *n;

	if (t.type == T_PUNCT && t.p[0] == '.' && !t.p[1]) {
		/* A leading dot names the root scope: `.x` is `x`. */
		next(p);
		if (p->tok.type != T_IDENT)
			return fail_at(p, p->tok.start, NERR_PARSE,
				       "expected identifier");
		t = p->tok;
	}
	switch (t.type) {
	case T_IDENT:
		if (t.len == 4 && memcmp(t.start, "true", 4) == 0) {
			n = new_node(p, N_LIT, 0);
			n->u.lit = mk_bool(true);
		} else if (t.len == 5 && memcmp(t.start, "false", 5) == 0) {
			n = new_node(p, N_LIT, 0);
			n->u.lit = mk_bool(false);
		} else if (t.len == 4 && memcmp(t.start, "null", 4) == 0) {
			n = new_node(p, N_LIT, 0);
			n->u.lit = mk_null();
		} else {
			if (is_reserved(t.start, t.len))
				return fail_at(p, t.start, NERR_PARSE,
					       "reserved identifier '%.*s'", (int)t.len,
					       t.start);
			next(p);
			if (accept(p, "(")) {
				size_t na;
				struct node **args = parse_list(p, ")", &na, false);

				if (!args && p->rc)
					return NULL;
				return make_call(p, t.start, t.len, NULL, args, na);
			}
			n = new_node(p, R_IDENT, 0);
			n->name = t.start;
			n->len = (uint32_t)t.len;
			return n;
		}
		next(p);
		return n;
	case T_INT:
	case T_UINT:
	case T_DOUBLE:
		n = number_literal(p, false, t.start);
		next(p);
		return n;
	case T_STRING:
	case T_BYTES:
		n = string_literal(p);
		next(p);
		return n;
	case T_PUNCT:
		if (t.p[0] == '(' && !t.p[1]) {
			next(p);
			n = parse_expr(p);
			if (!n || !expect(p, ")"))
				return NULL;
			return n;
		}
		if ((t.p[0] == '[' || t.p[0] == '{') && !t.p[1]) {
			bool map = t.p[0] == '{';
			size_t cnt = 0;
			struct node **items;

			next(p);
			items = parse_list(p, map ? "}" : "]", &cnt, map);
			if (!items && p->rc)
				return NULL;
			n = new_node(p, map ? N_MAP : N_LIST, 0);
			n->a = items;
			n->na = (uint16_t)cnt;
			return n;
		}
		break;
	default:
		break;
	}
	if (t.type == T_EOF)
		return fail_at(p, t.start, NERR_PARSE, "unexpected end of expression");
	return fail_at(p, t.start, NERR_PARSE, "unexpected '%.*s'",
		       (int)(t.len > 20 ? 20 : t.len), t.start);
}

static struct node *parse_member(struct parser *p, struct node *n)
{
	while (n) {
		if (accept(p, ".")) {
			struct token t = p->tok;
			const char *name = t.start;
			size_t len = t.len;

			if (t.type == T_QIDENT) {
				name++;
				len -= 2;
			} else if (t.type != T_IDENT) {
				return fail_at(p, t.start, NERR_PARSE,
					       "expected field name");
			}
			next(p);
			if (t.type == T_IDENT && accept(p, "(")) {
				size_t na;
				struct node **args = parse_list(p, ")", &na, false);

				if (!args && p->rc)
					return NULL;
				n = make_call(p, name, len, n, args, na);
				continue;
			}
			struct node *s = new_node(p, N_SELECT, 1);

			s->a[0] = n;
			s->name = arena_strndup(p->arena, name, len); /* NUL-terminated */
			s->len = (uint32_t)len;
			n = s;
		} else if (accept(p, "[")) {
			struct node *ix = new_node(p, N_INDEX, 2);

			ix->a[0] = n;
			if (!(ix->a[1] = parse_expr(p)) || !expect(p, "]"))
				return NULL;
			n = ix;
		} else {
			break;
		}
	}
	return n;
}

static struct node *parse_unary(struct parser *p)
{
	struct node *n;

	if (!enter(p))
		return NULL;
	if (is_punct(p, "!") || is_punct(p, "-")) {
		bool neg = p->tok.p[0] == '-';
		const char *at = p->tok.start;

		next(p);
		if (neg && (p->tok.type == T_INT || p->tok.type == T_DOUBLE)) {
			/* cel-spec: a literal carries its own sign, which is how
			 * -9223372036854775808 is written. */
			n = number_literal(p, true, at);
			if (n) {
				next(p);
				n = parse_member(p, n);
			}
		} else {
			struct node *x = parse_unary(p);

			if (!x) {
				p->depth--;
				return NULL;
			}
			n = new_node(p, neg ? N_NEG : N_NOT, 1);
			n->a[0] = x;
		}
	} else {
		n = parse_member(p, parse_primary(p));
	}
	p->depth--;
	return n;
}

static struct node *binary(struct parser *p, int op, struct node *l, struct node *r)
{
	struct node *n;

	if (!l || !r)
		return NULL;
	n = new_node(p, op, 2);
	n->a[0] = l;
	n->a[1] = r;
	return n;
}

static struct node *parse_mul(struct parser *p)
{
	struct node *n = parse_unary(p);

	while (n) {
		int op = is_punct(p, "*")   ? N_MUL
			 : is_punct(p, "/") ? N_DIV
			 : is_punct(p, "%") ? N_MOD
					    : -1;
		if (op < 0)
			break;
		next(p);
		n = binary(p, op, n, parse_unary(p));
	}
	return n;
}

static struct node *parse_add(struct parser *p)
{
	struct node *n = parse_mul(p);

	while (n) {
		int op = is_punct(p, "+") ? N_ADD : is_punct(p, "-") ? N_SUB : -1;

		if (op < 0)
			break;
		next(p);
		n = binary(p, op, n, parse_mul(p));
	}
	return n;
}

static struct node *parse_rel(struct parser *p)
{
	struct node *n = parse_add(p);

	while (n) {
		int op = -1;

		if (is_punct(p, "=="))
			op = N_EQ;
		else if (is_punct(p, "!="))
			op = N_NE;
		else if (is_punct(p, "<"))
			op = N_LT;
		else if (is_punct(p, "<="))
			op = N_LE;
		else if (is_punct(p, ">"))
			op = N_GT;
		else if (is_punct(p, ">="))
			op = N_GE;
		else if (is_ident_tok(p, "in"))
			op = N_IN;
		if (op < 0)
			break;
		next(p);
		n = binary(p, op, n, parse_add(p));
	}
	return n;
}

/* Builds a balanced tree of op over items[lo, hi) so long chains stay shallow. */
static struct node *balance(struct parser *p, int op, struct node **items, size_t lo,
			    size_t hi)
{
	if (hi - lo == 1)
		return items[lo];
	size_t mid = lo + (hi - lo) / 2;

	return binary(p, op, balance(p, op, items, lo, mid),
		      balance(p, op, items, mid, hi));
}

static struct node *parse_chain(struct parser *p, bool is_or)
{
	struct node *first = is_or ? parse_chain(p, false) : parse_rel(p);
	struct node **items;
	size_t n = 1, cap = 8;

	if (!first || !is_punct(p, is_or ? "||" : "&&"))
		return first;
	items = arena_alloc(p->arena, cap * sizeof(*items));
	items[0] = first;
	while (accept(p, is_or ? "||" : "&&")) {
		struct node *x = is_or ? parse_chain(p, false) : parse_rel(p);

		if (!x)
			return NULL;
		if (n == cap) {
			struct node **ni = arena_alloc(p->arena, cap * 2 * sizeof(*ni));

			memcpy(ni, items, n * sizeof(*ni));
			items = ni;
			cap *= 2;
		}
		items[n++] = x;
	}
	return balance(p, is_or ? N_OR : N_AND, items, 0, n);
}

static struct node *parse_expr(struct parser *p)
{
	struct node *c, *n;

	if (!enter(p))
		return NULL;
	c = parse_chain(p, true);
	if (c && accept(p, "?")) {
		n = new_node(p, N_COND, 3);
		n->a[0] = c;
		if (!(n->a[1] = parse_chain(p, true)) || !expect(p, ":") ||
		    !(n->a[2] = parse_expr(p)))
			n = NULL;
		c = n;
	}
	p->depth--;
	return c;
}

/* ---- resolver ---- */

static const char *type_names[] = {"int",  "uint", "double",	"bool", "string", "bytes",
				   "list", "map",  "null_type", "type", NULL};

static struct node *resolve(struct parser *p, struct node *n, int depth);

static int find_local(const struct parser *p, const char *name, size_t len)
{
	for (int i = p->nscope - 1; i >= 0; i--)
		if (p->scope_len[i] == len && memcmp(p->scope_name[i], name, len) == 0)
			return i;
	return -1;
}

/* Writes "a.b.c" for a select chain over a plain identifier (not a comprehension
 * variable); returns false for anything else or when it does not fit. */
static bool qualified_name(const struct parser *p, const struct node *n, char *out,
			   size_t cap)
{
	size_t len;

	if (n->op == R_IDENT) {
		if (find_local(p, n->name, n->len) >= 0 || n->len >= cap)
			return false;
		memcpy(out, n->name, n->len);
		out[n->len] = '\0';
		return true;
	}
	if (n->op != N_SELECT || !qualified_name(p, n->a[0], out, cap))
		return false;
	len = strlen(out);
	if (len + 1 + n->len >= cap)
		return false;
	out[len] = '.';
	memcpy(out + len + 1, n->name, n->len);
	out[len + 1 + n->len] = '\0';
	return true;
}

static bool name_is(const struct node *n, const char *s)
{
	return n->len == strlen(s) && memcmp(n->name, s, n->len) == 0;
}

/* Writes the key of a select path over a variable ("<slot>.a.b"); false when the
 * chain does not start at a variable or does not fit. */
static bool path_key(const struct node *n, char *out, size_t cap)
{
	size_t len;

	if (n->op == N_VAR)
		return (size_t)snprintf(out, cap, "%zu", n->u.slot) < cap;
	if (n->op != N_SELECT || !path_key(n->a[0], out, cap))
		return false;
	len = strlen(out);
	if (len + 1 + n->len >= cap || memchr(n->name, '.', n->len))
		return false;
	out[len] = '.';
	memcpy(out + len + 1, n->name, n->len);
	out[len + 1 + n->len] = '\0';
	return true;
}

static void record_path(struct parser *p, struct node *n)
{
	char key[256];

	if (!path_key(n, key, sizeof(key)))
		return;
	if (p->npaths == p->cappaths) {
		size_t cap = p->cappaths ? p->cappaths * 2 : 16;
		struct path *np = arena_alloc(p->arena, cap * sizeof(*np));

		if (p->npaths)
			memcpy(np, p->paths, p->npaths * sizeof(*np));
		p->paths = np;
		p->cappaths = cap;
	}
	p->paths[p->npaths].key = arena_strdup(p->arena, key);
	p->paths[p->npaths].n = n;
	p->npaths++;
}

/*
 * Gives every select path that occurs more than once a memo slot, so
 * `has(profile.traits.a) && profile.traits.b == 1` looks `traits` up once.
 * Quadratic in the number of paths, which the source size bounds.
 */
static void assign_memo(struct parser *p)
{
	uint32_t next = 0;

	for (size_t i = 0; i < p->npaths && next < EXPR_MAX_MEMO; i++) {
		uint32_t slot = 0;

		if (p->paths[i].n->memo)
			continue;
		for (size_t j = i + 1; j < p->npaths; j++) {
			if (strcmp(p->paths[i].key, p->paths[j].key) != 0)
				continue;
			if (!slot) {
				slot = ++next;
				p->paths[i].n->memo = slot;
			}
			p->paths[j].n->memo = slot;
		}
	}
}

/* Rewrites a macro call n (receiver in a[0]) into a comprehension node. */
static struct node *resolve_macro(struct parser *p, struct node *n, int kind, int nvars,
				  bool has_pred, int depth)
{
	struct node *c;
	int base = p->nscope;

	for (int i = 1; i <= nvars; i++) {
		if (n->a[i]->op != R_IDENT)
			return fail_at(p, n->name, NERR_PARSE,
				       "%.*s() variable must be a simple name",
				       (int)n->len, n->name);
	}
	if (p->nscope + nvars > EXPR_MAX_LOCALS)
		return fail_at(p, n->name, NERR_LIMIT,
			       "comprehensions nested too deeply");
	c = new_node(p, N_COMPREH, (size_t)(n->na - nvars));
	c->kind = (uint8_t)kind;
	c->name = n->name;
	c->len = n->len;
	c->a[0] = resolve(p, n->a[0], depth + 1);
	if (!c->a[0])
		return NULL;
	for (int i = 0; i < nvars; i++) {
		p->scope_name[p->nscope] = n->a[1 + i]->name;
		p->scope_len[p->nscope] = n->a[1 + i]->len;
		p->nscope++;
	}
	c->u.comp.v1 = base;
	c->u.comp.v2 = nvars == 2 ? base + 1 : -1;
	c->u.comp.has_pred = has_pred;
	for (size_t i = 1 + (size_t)nvars; i < n->na; i++) {
		c->a[i - (size_t)nvars] = resolve(p, n->a[i], depth + 1);
		if (!c->a[i - (size_t)nvars]) {
			p->nscope = base;
			return NULL;
		}
	}
	p->nscope = base;
	return c;
}

static struct node *resolve_call(struct parser *p, struct node *n, int depth)
{
	bool recv = n->kind == 1;
	size_t nargs = n->na - (recv ? 1 : 0);
	char qname[128];
	const char *name = n->name;
	size_t len = n->len;
	expr_function_fn ufn;
	void *ud;

	if (!recv && name_is(n, "has")) {
		if (n->na != 1 || n->a[0]->op != N_SELECT)
			return fail_at(p, n->name, NERR_PARSE,
				       "has() takes one field selection, as in has(a.b)");
		struct node *h = new_node(p, N_HAS, 1);

		h->name = n->a[0]->name;
		h->len = n->a[0]->len;
		expr_field_hash(h);
		h->a[0] = resolve(p, n->a[0]->a[0], depth + 1);
		return h->a[0] ? h : NULL;
	}
	if (recv) {
		static const struct {
			const char *name;
			int kind, nvars, nargs;
			bool pred;
		} macros[] = {
			{"all", C_ALL, 1, 2, true},
			{"all", C_ALL, 2, 3, true},
			{"exists", C_EXISTS, 1, 2, true},
			{"exists", C_EXISTS, 2, 3, true},
			{"exists_one", C_EXISTS_ONE, 1, 2, true},
			{"existsOne", C_EXISTS_ONE, 1, 2, true},
			{"exists_one", C_EXISTS_ONE, 2, 3, true},
			{"existsOne", C_EXISTS_ONE, 2, 3, true},
			{"map", C_MAP, 1, 2, false},
			{"map", C_MAP, 1, 3, true},
			{"filter", C_FILTER, 1, 2, true},
			{"transformList", C_MAP, 2, 3, false},
			{"transformList", C_MAP, 2, 4, true},
			{"transformMap", C_TMAP, 2, 3, false},
			{"transformMap", C_TMAP, 2, 4, true},
		};
		for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
			if (name_is(n, macros[i].name) && (int)nargs == macros[i].nargs) {
				bool pred = macros[i].pred;

				/* map(x, t) has no predicate; filter's is its body. */
				if (macros[i].kind == C_MAP &&
				    macros[i].nargs - macros[i].nvars == 1)
					pred = false;
				if (macros[i].kind == C_TMAP && macros[i].nargs == 3)
					pred = false;
				return resolve_macro(p, n, macros[i].kind,
						     macros[i].nvars, pred, depth);
			}
		}
		/* math.greatest(...) and the like: a qualified global function name. */
		struct node *t = n->a[0];

		if (t->op == R_IDENT && find_local(p, t->name, t->len) < 0 &&
		    !expr_env_find_var(p->env, t->name, t->len, NULL) &&
		    t->len + 1 + n->len < sizeof(qname)) {
			size_t ql = (size_t)snprintf(qname, sizeof(qname), "%.*s.%.*s",
						     (int)t->len, t->name, (int)n->len,
						     n->name);

			if (expr_env_find_function(p->env, qname, ql, nargs, &ufn, &ud) ||
			    expr_builtin_lookup(qname, ql, nargs, false)) {
				const char *keep = arena_strndup(p->arena, qname, ql);
				struct node *g =
					make_call(p, keep, ql, NULL, n->a + 1, nargs);

				return g ? resolve_call(p, g, depth) : NULL;
			}
		}
	}
	struct node *c = new_node(p, N_CALL, n->na);

	c->name = arena_strndup(p->arena, name, len); /* NUL-terminated for messages */
	c->len = (uint32_t)len;
	for (size_t i = 0; i < n->na; i++)
		if (!(c->a[i] = resolve(p, n->a[i], depth + 1)))
			return NULL;
	if (!recv && expr_env_find_function(p->env, name, len, nargs, &ufn, &ud)) {
		c->op = N_USER;
		c->u.user.fn = ufn;
		c->u.user.userdata = ud;
		return c;
	}
	c->u.fn = expr_builtin_lookup(name, len, n->na, recv);
	if (!c->u.fn) {
		c->op = N_NOFUNC;
		return c;
	}
	if (recv && n->na == 2 && c->a[1]->op == N_LIT &&
	    c->a[1]->u.lit.kind == EXPR_STRING && c->u.fn == expr_time_getter(c->name, 2))
		c->zone = expr_zone_register(p->prog, c->a[1]->u.lit.as.s,
					     c->a[1]->u.lit.len);
	if (recv && name_is(n, "matches") && n->na == 2 && c->a[1]->op == N_LIT &&
	    c->a[1]->u.lit.kind == EXPR_STRING) {
		/* A constant pattern is compiled (and JIT-compiled) once, here. */
		char err[160];
		const struct expr_value *pat = &c->a[1]->u.lit;
		pcre2_code *re =
			expr_regex_compile(pat->as.s, pat->len, NULL, err, sizeof(err));

		if (!re)
			return fail_at(p, n->name, NERR_PARSE, "bad pattern: %s", err);
		struct expr_program *prog = p->prog;

		prog->regexes = xrealloc(prog->regexes, (prog->nregex + 1) * sizeof(re));
		prog->regexes[prog->nregex++] = re;
		c->op = N_MATCHES_CONST;
		c->u.re = re;
	}
	return c;
}

/*
 * Turns a list or map literal whose items are all constants into one constant,
 * built once in the program's arena, so evaluating `x in ['a', 'b']` allocates
 * nothing. A map literal that would fail (a bad or repeated key) is left for
 * evaluation to report.
 */
static void fold_literal(struct parser *p, struct node *n)
{
	struct expr_value *items, v = {.kind = n->op == N_LIST ? EXPR_LIST : EXPR_MAP};

	for (size_t i = 0; i < n->na; i++)
		if (n->a[i]->op != N_LIT)
			return;
	items = arena_alloc(p->arena, (n->na ? n->na : 1) * sizeof(*items));
	v.as.items = items;
	for (size_t i = 0; i < n->na; i++) {
		const struct expr_value *x = &n->a[i]->u.lit;

		if (n->op == N_MAP && i % 2 == 0) {
			if (x->kind != EXPR_INT && x->kind != EXPR_UINT &&
			    x->kind != EXPR_BOOL && x->kind != EXPR_STRING)
				return;
			v.len = (uint32_t)(i / 2);
			if (expr_map_find(&v, x, NULL))
				return;
		}
		items[i] = *x;
	}
	v.len = n->op == N_LIST ? n->na : n->na / 2;
	n->op = N_LIT;
	n->na = 0;
	n->u.lit = v;
}

static struct node *resolve(struct parser *p, struct node *n, int depth)
{
	if (!n)
		return NULL;
	if (depth > EXPR_MAX_DEPTH)
		return fail_at(p, n->name, NERR_LIMIT, "expression nested deeper than %d",
			       EXPR_MAX_DEPTH);
	switch (n->op) {
	case R_IDENT: {
		int li = find_local(p, n->name, n->len);
		size_t slot;

		if (li >= 0) {
			n->op = N_LOCAL;
			n->u.slot = (size_t)li;
		} else if (expr_env_find_var(p->env, n->name, n->len, &slot)) {
			n->op = N_VAR;
			n->u.slot = slot;
		} else {
			n->op = N_UNDECL;
			for (int i = 0; type_names[i]; i++) {
				if (name_is(n, type_names[i])) {
					n->op = N_LIT;
					n->u.lit.kind = EXPR_TYPE;
					n->u.lit.as.s = type_names[i];
					n->u.lit.len = (uint32_t)strlen(type_names[i]);
				}
			}
		}
		return n;
	}
	case R_CALL:
		return resolve_call(p, n, depth);
	case N_SELECT: {
		/* A declared variable may have a dotted name ("a.b"): the longest
		 * declared prefix of a select chain wins, as cel-spec resolves
		 * qualified identifiers. Inner selects try shorter prefixes. */
		char qn[256];
		size_t slot;

		if (qualified_name(p, n, qn, sizeof(qn)) &&
		    expr_env_find_var(p->env, qn, strlen(qn), &slot)) {
			n->op = N_VAR;
			n->u.slot = slot;
			n->na = 0;
			return n;
		}
		expr_field_hash(n);
		if (!(n->a[0] = resolve(p, n->a[0], depth + 1)))
			return NULL;
		record_path(p, n);
		return n;
	}
	default:
		for (size_t i = 0; i < n->na; i++)
			if (!(n->a[i] = resolve(p, n->a[i], depth + 1)))
				return NULL;
		if (n->op == N_LIST || n->op == N_MAP)
			fold_literal(p, n);
		return n;
	}
}

enum nerr expr_compile(const char *src, const struct expr_env *env,
		       struct expr_program **out, struct nerr_msg *msg)
{
	return expr_compile_n(src, strlen(src), env, out, msg);
}

enum nerr expr_compile_n(const char *src, size_t len, const struct expr_env *env,
			 struct expr_program **out, struct nerr_msg *msg)
{
	struct parser p = {0};
	struct expr_program *prog;
	struct node *root;

	*out = NULL;
	nerr_clear(msg);
	if (len > EXPR_MAX_SOURCE_BYTES)
		return nerr_set(msg, NERR_TOOBIG, "", "expression longer than %d bytes",
				EXPR_MAX_SOURCE_BYTES);
	prog = xcalloc(1, sizeof(*prog));
	arena_init(&prog->arena, 4096);
	prog->env = env;
	p.src = src;
	p.src_len = len;
	p.pos = src;
	p.arena = &prog->arena;
	p.env = env;
	p.prog = prog;
	p.msg = msg;
	next(&p);
	root = parse_expr(&p);
	if (root && p.tok.type != T_EOF)
		fail_at(&p, p.tok.start, NERR_PARSE, "unexpected '%.*s' after expression",
			(int)(p.tok.len > 20 ? 20 : p.tok.len), p.tok.start);
	if (p.rc == NERR_OK)
		root = resolve(&p, root, 0);
	if (p.rc == NERR_OK && root)
		assign_memo(&p);
	if (p.rc != NERR_OK || !root) {
		enum nerr rc = p.rc ? p.rc : NERR_PARSE;

		expr_program_free(prog);
		return rc;
	}
	prog->root = root;
	prog->mctx = pcre2_match_context_create(NULL);
	pcre2_set_match_limit(prog->mctx, 100000);
	pcre2_set_depth_limit(prog->mctx, 20000);
	pcre2_set_heap_limit(prog->mctx, 4096); /* KiB, from the scratch arena */
	*out = prog;
	return NERR_OK;
}

void expr_program_free(struct expr_program *prog)
{
	if (!prog)
		return;
	if (prog->view_of) {
		arena_fini(&prog->arena);
		free(prog);
		return;
	}
	for (size_t i = 0; i < prog->nregex; i++)
		pcre2_code_free(prog->regexes[i]);
	free(prog->regexes);
	pcre2_match_context_free(prog->mctx);
	expr_zones_free(prog);
	arena_fini(&prog->arena);
	free(prog);
}
