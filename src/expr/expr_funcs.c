/*
 * expr_funcs.c -- the standard library: size, string predicates, matches,
 * conversions, the strings extension and the math extension.
 *
 * Design: one table maps (name, argument count, call style) to a C function; the
 * compiler looks calls up once (builtin_lookup) so evaluation is a direct call.
 * A function receives evaluated, non-error arguments (the receiver first) and
 * checks their kinds itself, answering "no such overload" for the rest. String
 * positions (charAt, indexOf, substring, ...) count Unicode code points, as
 * cel-spec requires; byte offsets never leak out.
 * Regular expressions use PCRE2 in UTF mode with match, depth and heap limits (so
 * no pattern can hang the engine); a constant pattern is compiled and JIT-compiled
 * at compile time, a computed one per call in the scratch arena.
 * References: cel-spec langdef.md "List of Standard Definitions"; cel-go
 * ext/strings.go and ext/math.go (the extensions' semantics and error texts).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr/expr_int.h"

#define FN(name)                                                                         \
	static struct expr_value name(struct ectx *c, const struct node *n,              \
				      const struct expr_value *a, size_t na)

#define NO_OVERLOAD() expr_no_overload(c, fname(n), a, na)

/* Call nodes carry their NUL-terminated function name (see resolve_call). */
static const char *fname(const struct node *n)
{
	return n && n->name ? n->name : "function";
}

/* ---- helpers ---- */

/* Byte offset of code point index cp in s (s has at least cp code points). */
static size_t cp_offset(const char *s, size_t len, size_t cp)
{
	size_t i = 0;

	while (cp > 0 && i < len) {
		i++;
		while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
			i++;
		cp--;
	}
	return i;
}

static char *sdup(struct ectx *c, const char *s, size_t len)
{
	char *p = expr_ealloc(c, len + 1);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/*
 * A string builder in the scratch arena, so string functions do not touch the
 * heap; growing copies into a block twice the size (the old one is simply left).
 */
struct sb {
	struct ectx *c;
	char *p; /* NUL-terminated */
	size_t len, cap;
};

static void sb_init(struct sb *b, struct ectx *c)
{
	b->c = c;
	b->cap = 64;
	b->len = 0;
	b->p = expr_ealloc(c, b->cap);
	b->p[0] = '\0';
}

static void sb_append(struct sb *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *p = expr_ealloc(b->c, cap);

		memcpy(p, b->p, b->len);
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(struct sb *b, const char *s)
{
	sb_append(b, s, strlen(s));
}

static void sb_putc(struct sb *b, char ch)
{
	sb_append(b, &ch, 1);
}

static void sb_printf(struct sb *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sb *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		sb_append(b, tmp, (size_t)n);
		return;
	}
	/* %.Nf of a huge double: print straight into the builder */
	char *big = expr_ealloc(b->c, (size_t)n + 1);

	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb_append(b, big, (size_t)n);
}

static struct expr_value make_list(struct ectx *c, size_t n, struct expr_value **items)
{
	struct expr_value l = {.kind = EXPR_LIST, .len = (uint32_t)n};

	*items = expr_ealloc(c, (n ? n : 1) * sizeof(**items));
	l.as.items = *items;
	return l;
}

/* ---- core ---- */

FN(f_size)
{
	switch (a[0].kind) {
	case EXPR_STRING:
		return mk_int((int64_t)expr_utf8_count(a[0].as.s, a[0].len));
	case EXPR_BYTES:
	case EXPR_LIST:
	case EXPR_MAP:
		return mk_int(a[0].len);
	default:
		return NO_OVERLOAD();
	}
}

static bool both_strings(const struct expr_value *a, size_t na)
{
	for (size_t i = 0; i < na; i++)
		if (a[i].kind != EXPR_STRING)
			return false;
	return true;
}

FN(f_contains)
{
	if (!both_strings(a, 2))
		return NO_OVERLOAD();
	return mk_bool(a[1].len == 0 || memmem(a[0].as.s, a[0].len, a[1].as.s, a[1].len));
}

FN(f_starts)
{
	if (!both_strings(a, 2))
		return NO_OVERLOAD();
	return mk_bool(a[1].len <= a[0].len &&
		       memcmp(a[0].as.s, a[1].as.s, a[1].len) == 0);
}

FN(f_ends)
{
	if (!both_strings(a, 2))
		return NO_OVERLOAD();
	return mk_bool(a[1].len <= a[0].len &&
		       memcmp(a[0].as.s + a[0].len - a[1].len, a[1].as.s, a[1].len) == 0);
}

/* ---- regular expressions ---- */

static void *re_malloc(PCRE2_SIZE size, void *data)
{
	return arena_alloc(data, size);
}

static void re_free(void *p, void *data)
{
	(void)p;
	(void)data;
}

pcre2_code *expr_regex_compile(const char *pat, size_t len, pcre2_general_context *g,
			       char *err, size_t errlen)
{
	pcre2_compile_context *cc;
	pcre2_code *re;
	int ec;
	PCRE2_SIZE off;

	if (len > EXPR_MAX_REGEX_BYTES) {
		snprintf(err, errlen, "pattern longer than %d bytes",
			 EXPR_MAX_REGEX_BYTES);
		return NULL;
	}
	cc = pcre2_compile_context_create(g);
	if (!cc) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pcre2_set_parens_nest_limit(cc, 64);
	re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec,
			   &off, cc);
	pcre2_compile_context_free(cc);
	if (!re) {
		PCRE2_UCHAR msg[120];

		pcre2_get_error_message(ec, msg, sizeof(msg));
		snprintf(err, errlen, "%s at offset %zu", (const char *)msg, (size_t)off);
		return NULL;
	}
	if (!g)
		pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort */
	return re;
}

static bool regex_context(struct ectx *c)
{
	if (!c->gctx)
		c->gctx = pcre2_general_context_create(re_malloc, re_free, c->scratch);
	if (c->gctx && !c->md)
		c->md = pcre2_match_data_create(1, c->gctx);
	return c->md != NULL;
}

struct expr_value expr_call_matches(struct ectx *c, const struct expr_value *s,
				    const pcre2_code *re)
{
	int rc;

	if (!regex_context(c))
		return expr_eerr_static("out of evaluation memory");
	charge(c, 100 + s->len / 16); /* a match may backtrack up to the match limit */
	rc = pcre2_match(re, (PCRE2_SPTR)s->as.s, s->len, 0, 0, c->md, c->prog->mctx);
	if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter has the heap limit */
		rc = pcre2_match(re, (PCRE2_SPTR)s->as.s, s->len, 0, PCRE2_NO_JIT, c->md,
				 c->prog->mctx);
	if (rc >= 0)
		return mk_bool(true);
	if (rc == PCRE2_ERROR_NOMATCH)
		return mk_bool(false);
	if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
	    rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
		return expr_eerr_static("matches: pattern exceeded the match limit");
	return expr_eerr(c, "matches: error %d", rc);
}

FN(f_matches)
{
	char err[160];
	pcre2_code *re;

	if (!both_strings(a, 2))
		return NO_OVERLOAD();
	if (!regex_context(c))
		return expr_eerr_static("out of evaluation memory");
	charge(c, 100); /* compiling a pattern costs far more than a step */
	re = expr_regex_compile(a[1].as.s, a[1].len, c->gctx, err, sizeof(err));
	if (!re)
		return expr_eerr(c, "invalid pattern: %s", err);
	return expr_call_matches(c, &a[0], re);
}

/* ---- conversions ---- */

FN(f_int)
{
	const struct expr_value *x = &a[0];
	char tmp[40], *end;

	switch (x->kind) {
	case EXPR_INT:
		return *x;
	case EXPR_UINT:
		if (x->as.u > INT64_MAX)
			return expr_eerr_static("int conversion out of range");
		return mk_int((int64_t)x->as.u);
	case EXPR_DOUBLE:
		if (!(x->as.d > -9223372036854775808.0 &&
		      x->as.d < 9223372036854775808.0))
			return expr_eerr_static("int conversion out of range");
		return mk_int((int64_t)x->as.d);
	case EXPR_STRING:
		if (x->len == 0 || x->len >= sizeof(tmp))
			return expr_eerr_static("int conversion error: bad string");
		memcpy(tmp, x->as.s, x->len);
		tmp[x->len] = '\0';
		errno = 0;
		long long v = strtoll(tmp, &end, 10);

		/* Go's ParseInt: an optional sign, decimal digits, nothing else */
		if (*end || errno ||
		    !(tmp[0] == '-' || tmp[0] == '+' || (tmp[0] >= '0' && tmp[0] <= '9')))
			return expr_eerr(c, "int conversion error: '%s'", tmp);
		return mk_int(v);
	case EXPR_TIMESTAMP:
		return mk_int(x->as.sec);
	default:
		return NO_OVERLOAD();
	}
}

FN(f_uint)
{
	const struct expr_value *x = &a[0];
	char tmp[40], *end;

	switch (x->kind) {
	case EXPR_UINT:
		return *x;
	case EXPR_INT:
		if (x->as.i < 0)
			return expr_eerr_static("uint conversion out of range");
		return mk_uint((uint64_t)x->as.i);
	case EXPR_DOUBLE:
		if (!(x->as.d > -1.0 && x->as.d < 18446744073709551616.0))
			return expr_eerr_static("uint conversion out of range");
		return mk_uint((uint64_t)x->as.d);
	case EXPR_STRING:
		if (x->len == 0 || x->len >= sizeof(tmp) || x->as.s[0] < '0' ||
		    x->as.s[0] > '9')
			return expr_eerr_static("uint conversion error: bad string");
		memcpy(tmp, x->as.s, x->len);
		tmp[x->len] = '\0';
		errno = 0;
		unsigned long long v = strtoull(tmp, &end, 10);

		if (*end || errno)
			return expr_eerr(c, "uint conversion error: '%s'", tmp);
		return mk_uint(v);
	default:
		return NO_OVERLOAD();
	}
}

FN(f_double)
{
	const struct expr_value *x = &a[0];
	char tmp[400], *end;

	switch (x->kind) {
	case EXPR_DOUBLE:
		return *x;
	case EXPR_INT:
		return mk_double((double)x->as.i);
	case EXPR_UINT:
		return mk_double((double)x->as.u);
	case EXPR_STRING:
		if (x->len == 0 || x->len >= sizeof(tmp) ||
		    strchr(" \t\n\r\f\v", x->as.s[0]))
			return expr_eerr_static("double conversion error: bad string");
		memcpy(tmp, x->as.s, x->len);
		tmp[x->len] = '\0';
		errno = 0;
		double d = strtod(tmp, &end);

		if (*end || (errno == ERANGE && isinf(d)))
			return expr_eerr(c, "double conversion error: '%s'", tmp);
		return mk_double(d);
	default:
		return NO_OVERLOAD();
	}
}

FN(f_string)
{
	const struct expr_value *x = &a[0];
	char tmp[48];
	struct buf b;
	char *s;
	size_t len;

	switch (x->kind) {
	case EXPR_STRING:
		return *x;
	case EXPR_BYTES:
		if (!expr_utf8_valid(x->as.s, x->len))
			return expr_eerr_static("string conversion error: invalid UTF-8");
		return mk_str(x->as.s, x->len);
	case EXPR_INT:
		len = (size_t)snprintf(tmp, sizeof(tmp), "%" PRId64, x->as.i);
		return mk_str(sdup(c, tmp, len), len);
	case EXPR_UINT:
		len = (size_t)snprintf(tmp, sizeof(tmp), "%" PRIu64, x->as.u);
		return mk_str(sdup(c, tmp, len), len);
	case EXPR_BOOL:
		return x->as.b ? mk_str("true", 4) : mk_str("false", 5);
	case EXPR_NULL:
		return mk_str("null", 4);
	case EXPR_TYPE:
		return mk_str(x->as.s, x->len);
	case EXPR_TIMESTAMP:
	case EXPR_DURATION:
		if (x->kind == EXPR_TIMESTAMP)
			expr_ts_format(x->as.sec, x->nsec, tmp);
		else
			expr_dur_format(x->as.sec, x->nsec, tmp);
		len = strlen(tmp);
		return mk_str(sdup(c, tmp, len), len);
	case EXPR_DOUBLE:
		buf_init(&b, 0);
		expr_print_double(x->as.d, &b, false);
		len = b.len;
		s = sdup(c, buf_str(&b), len);
		buf_fini(&b);
		return mk_str(s, len);
	default:
		return NO_OVERLOAD();
	}
}

FN(f_bytes)
{
	if (a[0].kind == EXPR_BYTES)
		return a[0];
	if (a[0].kind == EXPR_STRING)
		return mk_bytes(a[0].as.s, a[0].len);
	return NO_OVERLOAD();
}

FN(f_bool)
{
	static const char *t[] = {"1", "t", "T", "TRUE", "true", "True", NULL};
	static const char *f[] = {"0", "f", "F", "FALSE", "false", "False", NULL};

	if (a[0].kind == EXPR_BOOL)
		return a[0];
	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	for (int i = 0; t[i]; i++) {
		if (a[0].len == strlen(t[i]) && memcmp(a[0].as.s, t[i], a[0].len) == 0)
			return mk_bool(true);
		if (a[0].len == strlen(f[i]) && memcmp(a[0].as.s, f[i], a[0].len) == 0)
			return mk_bool(false);
	}
	return expr_eerr(c, "Type conversion error: bool('%.*s')",
			 (int)(a[0].len > 40 ? 40 : a[0].len), a[0].as.s);
}

FN(f_dyn)
{
	return a[0];
}

FN(f_type)
{
	struct expr_value t = {.kind = EXPR_TYPE};
	const char *s;

	switch (a[0].kind) {
	case EXPR_TIMESTAMP:
		s = "google.protobuf.Timestamp";
		break;
	case EXPR_DURATION:
		s = "google.protobuf.Duration";
		break;
	default:
		s = expr_kind_name(&a[0]);
		break;
	}
	t.as.s = s;
	t.len = (uint32_t)strlen(s);
	return t;
}

FN(f_timestamp)
{
	int64_t sec;
	int32_t ns;

	switch (a[0].kind) {
	case EXPR_TIMESTAMP:
		return a[0];
	case EXPR_INT:
		return expr_ts_make(c, a[0].as.i, 0);
	case EXPR_STRING:
		if (!expr_ts_parse(a[0].as.s, a[0].len, &sec, &ns))
			return expr_eerr(
				c,
				"timestamp conversion error: '%.*s' (want RFC 3339 "
				"in range)",
				(int)(a[0].len > 60 ? 60 : a[0].len), a[0].as.s);
		return expr_ts_make(c, sec, ns);
	default:
		return NO_OVERLOAD();
	}
}

FN(f_duration)
{
	int64_t sec;
	int32_t ns;

	switch (a[0].kind) {
	case EXPR_DURATION:
		return a[0];
	case EXPR_INT:
		return expr_dur_make(c, a[0].as.i, 0);
	case EXPR_STRING:
		if (!expr_dur_parse(a[0].as.s, a[0].len, &sec, &ns))
			return expr_eerr(
				c, "duration conversion error: '%.*s' (range or syntax)",
				(int)(a[0].len > 60 ? 60 : a[0].len), a[0].as.s);
		return expr_dur_make(c, sec, ns);
	default:
		return NO_OVERLOAD();
	}
}

/* ---- strings extension ---- */

static bool get_int(const struct expr_value *v, int64_t *out)
{
	if (v->kind != EXPR_INT)
		return false;
	*out = v->as.i;
	return true;
}

FN(f_char_at)
{
	int64_t i;
	size_t cps, off, end;

	if (a[0].kind != EXPR_STRING || !get_int(&a[1], &i))
		return NO_OVERLOAD();
	cps = expr_utf8_count(a[0].as.s, a[0].len);
	if (i < 0 || (uint64_t)i > cps)
		return expr_eerr(c, "index out of range: %" PRId64, i);
	off = cp_offset(a[0].as.s, a[0].len, (size_t)i);
	end = cp_offset(a[0].as.s + off, a[0].len - off, 1) + off;
	return mk_str(a[0].as.s + off, end - off);
}

FN(f_index_of)
{
	int64_t from = 0;
	size_t cps, off;
	const char *hit;

	if (!both_strings(a, 2) || (na == 3 && !get_int(&a[2], &from)))
		return NO_OVERLOAD();
	cps = expr_utf8_count(a[0].as.s, a[0].len);
	if (from < 0 || (uint64_t)from > cps)
		return expr_eerr(c, "index out of range: %" PRId64, from);
	off = cp_offset(a[0].as.s, a[0].len, (size_t)from);
	if (a[1].len == 0)
		return mk_int(from);
	hit = memmem(a[0].as.s + off, a[0].len - off, a[1].as.s, a[1].len);
	if (!hit)
		return mk_int(-1);
	return mk_int((int64_t)expr_utf8_count(a[0].as.s, (size_t)(hit - a[0].as.s)));
}

FN(f_last_index_of)
{
	int64_t from = 0;
	size_t cps, off;

	if (!both_strings(a, 2) || (na == 3 && !get_int(&a[2], &from)))
		return NO_OVERLOAD();
	cps = expr_utf8_count(a[0].as.s, a[0].len);
	if (na == 2)
		from = (int64_t)cps;
	if (from < 0 || (uint64_t)from > cps)
		return expr_eerr(c, "index out of range: %" PRId64, from);
	if (a[1].len == 0)
		return mk_int(from);
	/* the match must start at or before code point from */
	off = cp_offset(a[0].as.s, a[0].len, (size_t)from);
	for (size_t i = off + 1; i-- > 0;) {
		if (i < a[0].len && ((unsigned char)a[0].as.s[i] & 0xC0) == 0x80)
			continue;
		if (i + a[1].len <= a[0].len &&
		    memcmp(a[0].as.s + i, a[1].as.s, a[1].len) == 0)
			return mk_int((int64_t)expr_utf8_count(a[0].as.s, i));
	}
	return mk_int(-1);
}

static struct expr_value ascii_case(struct ectx *c, const struct expr_value *s, bool up)
{
	char *p = sdup(c, s->as.s, s->len);

	for (size_t i = 0; i < s->len; i++) {
		if (up && p[i] >= 'a' && p[i] <= 'z')
			p[i] = (char)(p[i] - 32);
		else if (!up && p[i] >= 'A' && p[i] <= 'Z')
			p[i] = (char)(p[i] + 32);
	}
	return mk_str(p, s->len);
}

FN(f_lower)
{
	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	return ascii_case(c, &a[0], false);
}

FN(f_upper)
{
	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	return ascii_case(c, &a[0], true);
}

FN(f_replace)
{
	int64_t limit = -1;
	struct sb b;
	const char *s = a[0].as.s, *end;
	size_t len = a[0].len;
	int64_t done = 0;
	char *out;

	if (!both_strings(a, 3) || (na == 4 && !get_int(&a[3], &limit)))
		return NO_OVERLOAD();
	end = s + len;
	sb_init(&b, c);
	if (a[1].len == 0) {
		/* Go: an empty old string matches before every code point and at the end.
		 */
		while (limit < 0 || done < limit) {
			sb_append(&b, a[2].as.s, a[2].len);
			done++;
			if (s >= end)
				break;
			size_t step = cp_offset(s, (size_t)(end - s), 1);

			sb_append(&b, s, step);
			s += step;
		}
		sb_append(&b, s, (size_t)(end - s));
	} else {
		while (limit < 0 || done < limit) {
			const char *hit =
				memmem(s, (size_t)(end - s), a[1].as.s, a[1].len);

			if (!hit)
				break;
			sb_append(&b, s, (size_t)(hit - s));
			sb_append(&b, a[2].as.s, a[2].len);
			s = hit + a[1].len;
			done++;
		}
		sb_append(&b, s, (size_t)(end - s));
	}
	len = b.len;
	out = b.p;
	return mk_str(out, len);
}

FN(f_split)
{
	int64_t limit = -1;
	const char *s = a[0].as.s, *end;
	struct expr_value *items, l;
	size_t cnt = 0, cap;

	if (!both_strings(a, 2) || (na == 3 && !get_int(&a[2], &limit)))
		return NO_OVERLOAD();
	if (limit == 0)
		return make_list(c, 0, &items);
	end = s + a[0].len;
	cap = a[1].len ? a[0].len / a[1].len + 1 : a[0].len + 1;
	l = make_list(c, cap, &items);
	while (s <= end) {
		const char *hit;
		size_t step;

		if (limit > 0 && (int64_t)cnt == limit - 1) {
			items[cnt++] = mk_str(s, (size_t)(end - s));
			break;
		}
		if (a[1].len == 0) {
			if (s == end)
				break;
			step = cp_offset(s, (size_t)(end - s), 1);
			items[cnt++] = mk_str(s, step);
			s += step;
			continue;
		}
		hit = memmem(s, (size_t)(end - s), a[1].as.s, a[1].len);
		if (!hit) {
			items[cnt++] = mk_str(s, (size_t)(end - s));
			break;
		}
		items[cnt++] = mk_str(s, (size_t)(hit - s));
		s = hit + a[1].len;
	}
	l.len = (uint32_t)cnt;
	return l;
}

FN(f_substring)
{
	int64_t start, stop = 0;
	size_t cps, o1, o2;

	if (a[0].kind != EXPR_STRING || !get_int(&a[1], &start) ||
	    (na == 3 && !get_int(&a[2], &stop)))
		return NO_OVERLOAD();
	cps = expr_utf8_count(a[0].as.s, a[0].len);
	if (na == 2)
		stop = (int64_t)cps;
	if (start < 0 || (uint64_t)start > cps)
		return expr_eerr(c, "index out of range: %" PRId64, start);
	if (stop < 0 || (uint64_t)stop > cps)
		return expr_eerr(c, "index out of range: %" PRId64, stop);
	if (stop < start)
		return expr_eerr(
			c, "invalid substring range. start: %" PRId64 ", end: %" PRId64,
			start, stop);
	o1 = cp_offset(a[0].as.s, a[0].len, (size_t)start);
	o2 = cp_offset(a[0].as.s, a[0].len, (size_t)stop);
	return mk_str(a[0].as.s + o1, o2 - o1);
}

/* Unicode White_Space, as Go's unicode.IsSpace. */
static bool is_space(uint32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

FN(f_trim)
{
	const unsigned char *s = (const unsigned char *)a[0].as.s;
	size_t b = 0, e, len = a[0].len;
	uint32_t cp;

	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	while (b < len) {
		size_t k = expr_utf8_decode(s + b, len - b, &cp);

		if (!is_space(cp))
			break;
		b += k;
	}
	e = len;
	while (e > b) {
		size_t st = e - 1;

		while (st > b && (s[st] & 0xC0) == 0x80)
			st--;
		expr_utf8_decode(s + st, e - st, &cp);
		if (!is_space(cp))
			break;
		e = st;
	}
	return mk_str(a[0].as.s + b, e - b);
}

FN(f_join)
{
	struct sb b;
	size_t len;
	char *out;

	if (a[0].kind != EXPR_LIST || (na == 2 && a[1].kind != EXPR_STRING))
		return NO_OVERLOAD();
	sb_init(&b, c);
	for (size_t i = 0; i < a[0].len; i++) {
		struct expr_value x = expr_list_get(&a[0], i);

		if (x.kind != EXPR_STRING) {
			return expr_eerr(c, "join: list item %zu is %s, not string", i,
					 expr_kind_name(&x));
		}
		if (i && na == 2)
			sb_append(&b, a[1].as.s, a[1].len);
		sb_append(&b, x.as.s, x.len);
	}
	len = b.len;
	out = b.p;
	return mk_str(out, len);
}

FN(f_reverse)
{
	const char *s = a[0].as.s;
	size_t len = a[0].len, i = 0;
	char *out;

	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	out = expr_ealloc(c, len + 1);
	while (i < len) {
		size_t k = cp_offset(s + i, len - i, 1);

		memcpy(out + len - i - k, s + i, k);
		i += k;
	}
	out[len] = '\0';
	return mk_str(out, len);
}

FN(f_quote)
{
	struct sb b;
	const unsigned char *s = (const unsigned char *)a[0].as.s;
	size_t len = a[0].len, i = 0;
	char *out;

	if (a[0].kind != EXPR_STRING)
		return NO_OVERLOAD();
	sb_init(&b, c);
	sb_putc(&b, '"');
	while (i < len) {
		uint32_t cp;
		size_t k = expr_utf8_decode(s + i, len - i, &cp);

		switch (cp) {
		case '\a':
			sb_puts(&b, "\\a");
			break;
		case '\b':
			sb_puts(&b, "\\b");
			break;
		case '\f':
			sb_puts(&b, "\\f");
			break;
		case '\n':
			sb_puts(&b, "\\n");
			break;
		case '\r':
			sb_puts(&b, "\\r");
			break;
		case '\t':
			sb_puts(&b, "\\t");
			break;
		case '\v':
			sb_puts(&b, "\\v");
			break;
		case '\\':
			sb_puts(&b, "\\\\");
			break;
		case '"':
			sb_puts(&b, "\\\"");
			break;
		default:
			if (cp == 0xFFFD && k == 1)
				sb_puts(&b, "\xef\xbf\xbd"); /* invalid UTF-8 becomes
								 U+FFFD */
			else
				sb_append(&b, s + i, k);
		}
		i += k;
	}
	sb_putc(&b, '"');
	len = b.len;
	out = b.p;
	return mk_str(out, len);
}

/* One %x/%o/%b clause for an integer: sign, then digits in base. */
static void put_int_base(struct sb *b, bool neg, uint64_t u, int base, bool upper)
{
	char tmp[70];
	int n = 0;
	const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	do {
		tmp[n++] = dig[u % (unsigned)base];
		u /= (unsigned)base;
	} while (u);
	if (neg)
		sb_putc(b, '-');
	while (n)
		sb_putc(b, tmp[--n]);
}

static bool special_double(struct sb *b, double d)
{
	if (isnan(d))
		sb_puts(b, "NaN");
	else if (isinf(d))
		sb_puts(b, d > 0 ? "Infinity" : "-Infinity");
	else
		return false;
	return true;
}

static struct expr_value format_one(struct ectx *c, struct sb *b, char verb, int prec,
				    const struct expr_value *x)
{
	double d;

	switch (verb) {
	case 's':
		if (x->kind == EXPR_STRING || x->kind == EXPR_BYTES) {
			sb_append(b, x->as.s, x->len);
		} else {
			struct buf tmp; /* lists, maps, doubles: the shared printer */

			buf_init(&tmp, 0);
			expr_val_print(x, &tmp, PRINT_FORMAT);
			sb_append(b, tmp.data ? tmp.data : "", tmp.len);
			buf_fini(&tmp);
		}
		return mk_null();
	case 'd':
		if (x->kind == EXPR_INT)
			sb_printf(b, "%" PRId64, x->as.i);
		else if (x->kind == EXPR_UINT)
			sb_printf(b, "%" PRIu64, x->as.u);
		else if (!(x->kind == EXPR_DOUBLE && special_double(b, x->as.d)))
			return expr_eerr(
				c,
				"error during formatting: decimal clause can only be "
				"used "
				"on integers, was given %s",
				expr_kind_name(x));
		return mk_null();
	case 'f':
	case 'e':
		if (x->kind == EXPR_DOUBLE)
			d = x->as.d;
		else if (x->kind == EXPR_INT)
			d = (double)x->as.i;
		else if (x->kind == EXPR_UINT)
			d = (double)x->as.u;
		else
			return expr_eerr(
				c,
				"error during formatting: %s clause can only be used on "
				"doubles, was given %s",
				verb == 'f' ? "fixed-point" : "scientific",
				expr_kind_name(x));
		if (!special_double(b, d))
			sb_printf(b, verb == 'f' ? "%.*f" : "%.*e", prec < 0 ? 6 : prec,
				  d);
		return mk_null();
	case 'b':
		if (x->kind == EXPR_BOOL)
			sb_putc(b, x->as.b ? '1' : '0');
		else if (x->kind == EXPR_INT)
			put_int_base(b, x->as.i < 0,
				     x->as.i < 0 ? 0 - (uint64_t)x->as.i
						 : (uint64_t)x->as.i,
				     2, false);
		else if (x->kind == EXPR_UINT)
			put_int_base(b, false, x->as.u, 2, false);
		else
			return expr_eerr(
				c,
				"error during formatting: only integers and bools can be "
				"formatted as binary, was given %s",
				expr_kind_name(x));
		return mk_null();
	case 'o':
		if (x->kind == EXPR_INT)
			put_int_base(b, x->as.i < 0,
				     x->as.i < 0 ? 0 - (uint64_t)x->as.i
						 : (uint64_t)x->as.i,
				     8, false);
		else if (x->kind == EXPR_UINT)
			put_int_base(b, false, x->as.u, 8, false);
		else
			return expr_eerr(
				c,
				"error during formatting: octal clause can only be "
				"used on "
				"integers, was given %s",
				expr_kind_name(x));
		return mk_null();
	case 'x':
	case 'X':
		if (x->kind == EXPR_INT) {
			put_int_base(b, x->as.i < 0,
				     x->as.i < 0 ? 0 - (uint64_t)x->as.i
						 : (uint64_t)x->as.i,
				     16, verb == 'X');
		} else if (x->kind == EXPR_UINT) {
			put_int_base(b, false, x->as.u, 16, verb == 'X');
		} else if (x->kind == EXPR_STRING || x->kind == EXPR_BYTES) {
			for (size_t i = 0; i < x->len; i++)
				sb_printf(b, verb == 'X' ? "%02X" : "%02x",
					  (unsigned char)x->as.s[i]);
		} else {
			return expr_eerr(c,
					 "error during formatting: only integers, byte "
					 "buffers, and "
					 "strings can be formatted as hex, was given %s",
					 expr_kind_name(x));
		}
		return mk_null();
	}
	return expr_eerr(
		c,
		"could not parse formatting clause: unrecognized formatting clause "
		"\"%c\"",
		verb);
}

FN(f_format)
{
	struct sb b;
	const char *s = a[0].as.s, *end;
	size_t argi = 0, len;
	char *out;
	struct expr_value r = mk_null();

	if (a[0].kind != EXPR_STRING || a[1].kind != EXPR_LIST)
		return NO_OVERLOAD();
	end = s + a[0].len;
	sb_init(&b, c);
	while (s < end) {
		int prec = -1;

		if (*s != '%') {
			sb_putc(&b, *s++);
			continue;
		}
		s++;
		if (s < end && *s == '%') {
			sb_putc(&b, '%');
			s++;
			continue;
		}
		if (s < end && *s == '.') {
			prec = 0;
			s++;
			while (s < end && *s >= '0' && *s <= '9' && prec < 1000)
				prec = prec * 10 + (*s++ - '0');
		}
		if (s >= end) {
			r = expr_eerr_static(
				"could not parse formatting clause: unexpected "
				"end of string");
			break;
		}
		if (!strchr("sdfebxXo", *s)) {
			r = expr_eerr(c,
				      "could not parse formatting clause: unrecognized "
				      "formatting "
				      "clause \"%c\"",
				      *s);
			break;
		}
		if (argi >= a[1].len) {
			r = expr_eerr(c, "index %zu out of range", argi);
			break;
		}
		struct expr_value x = expr_list_get(&a[1], argi++);

		r = format_one(c, &b, *s++, prec, &x);
		if (r.kind == EXPR_ERROR)
			break;
	}
	if (r.kind == EXPR_ERROR) {
		return r;
	}
	len = b.len;
	out = b.p;
	return mk_str(out, len);
}

/* ---- math extension ---- */

static bool is_num(const struct expr_value *v)
{
	return v->kind == EXPR_INT || v->kind == EXPR_UINT || v->kind == EXPR_DOUBLE;
}

static struct expr_value extreme(struct ectx *c, const struct node *n,
				 const struct expr_value *a, size_t na, bool greatest)
{
	struct expr_value best, x;
	const struct expr_value *list = NULL;
	size_t cnt = na;

	if (na == 1 && a[0].kind == EXPR_LIST) {
		list = &a[0];
		cnt = a[0].len;
		if (cnt == 0)
			return expr_eerr(c, "%s(): list is empty", fname(n));
	}
	for (size_t i = 0; i < cnt; i++) {
		x = list ? expr_list_get(list, i) : a[i];
		if (!is_num(&x))
			return expr_no_overload(c, fname(n), &x, 1);
		if (i == 0) {
			best = x;
			continue;
		}
		int r = expr_val_compare(&x, &best);

		if (r != 2 && (greatest ? r > 0 : r < 0))
			best = x;
	}
	return best;
}

FN(f_greatest)
{
	return extreme(c, n, a, na, true);
}

FN(f_least)
{
	return extreme(c, n, a, na, false);
}

#define DOUBLE_FN(name, expr)                                                            \
	FN(name)                                                                         \
	{                                                                                \
		if (a[0].kind != EXPR_DOUBLE)                                            \
			return NO_OVERLOAD();                                            \
		double x = a[0].as.d;                                                    \
		return expr;                                                             \
	}
DOUBLE_FN(f_ceil, mk_double(ceil(x)))
DOUBLE_FN(f_floor, mk_double(floor(x)))
DOUBLE_FN(f_round, mk_double(round(x)))
DOUBLE_FN(f_trunc, mk_double(trunc(x)))
DOUBLE_FN(f_is_nan, mk_bool(isnan(x)))
DOUBLE_FN(f_is_inf, mk_bool(isinf(x)))
DOUBLE_FN(f_is_finite, mk_bool(isfinite(x)))

FN(f_abs)
{
	switch (a[0].kind) {
	case EXPR_INT:
		if (a[0].as.i == INT64_MIN)
			return expr_eerr_static("integer overflow");
		return mk_int(a[0].as.i < 0 ? -a[0].as.i : a[0].as.i);
	case EXPR_UINT:
		return a[0];
	case EXPR_DOUBLE:
		return mk_double(fabs(a[0].as.d));
	default:
		return NO_OVERLOAD();
	}
}

FN(f_sign)
{
	switch (a[0].kind) {
	case EXPR_INT:
		return mk_int((a[0].as.i > 0) - (a[0].as.i < 0));
	case EXPR_UINT:
		return mk_uint(a[0].as.u > 0);
	case EXPR_DOUBLE:
		if (isnan(a[0].as.d))
			return a[0];
		return mk_double((a[0].as.d > 0) - (a[0].as.d < 0));
	default:
		return NO_OVERLOAD();
	}
}

static struct expr_value bitop(struct ectx *c, const struct node *n,
			       const struct expr_value *a, size_t na, char op)
{
	if (a[0].kind == EXPR_INT && a[1].kind == EXPR_INT) {
		int64_t x = a[0].as.i, y = a[1].as.i;

		return mk_int(op == '&' ? (x & y) : op == '|' ? (x | y) : (x ^ y));
	}
	if (a[0].kind == EXPR_UINT && a[1].kind == EXPR_UINT) {
		uint64_t x = a[0].as.u, y = a[1].as.u;

		return mk_uint(op == '&' ? (x & y) : op == '|' ? (x | y) : (x ^ y));
	}
	return NO_OVERLOAD();
}

FN(f_bit_and)
{
	return bitop(c, n, a, na, '&');
}

FN(f_bit_or)
{
	return bitop(c, n, a, na, '|');
}

FN(f_bit_xor)
{
	return bitop(c, n, a, na, '^');
}

FN(f_bit_not)
{
	if (a[0].kind == EXPR_INT)
		return mk_int(~a[0].as.i);
	if (a[0].kind == EXPR_UINT)
		return mk_uint(~a[0].as.u);
	return NO_OVERLOAD();
}

static struct expr_value shift(struct ectx *c, const struct node *n,
			       const struct expr_value *a, size_t na, bool left)
{
	int64_t k;

	if ((a[0].kind != EXPR_INT && a[0].kind != EXPR_UINT) || !get_int(&a[1], &k))
		return NO_OVERLOAD();
	if (k < 0)
		return expr_eerr(c, "%s(): negative shift %" PRId64, fname(n), k);
	uint64_t x = a[0].kind == EXPR_INT ? (uint64_t)a[0].as.i : a[0].as.u;

	x = k >= 64 ? 0 : left ? x << k : x >> k;
	return a[0].kind == EXPR_INT ? mk_int((int64_t)x) : mk_uint(x);
}

FN(f_shl)
{
	return shift(c, n, a, na, true);
}

FN(f_shr)
{
	return shift(c, n, a, na, false);
}

/* ---- the table ---- */

enum { GLOBAL = 1, RECV = 2, BOTH = 3 };

static const struct builtin {
	const char *name;
	uint8_t min_na, max_na; /* receiver included */
	uint8_t style;
	builtin_fn fn;
} builtins[] = {
	{"size", 1, 1, BOTH, f_size},
	{"contains", 2, 2, RECV, f_contains},
	{"startsWith", 2, 2, RECV, f_starts},
	{"endsWith", 2, 2, RECV, f_ends},
	{"matches", 2, 2, BOTH, f_matches},
	{"int", 1, 1, GLOBAL, f_int},
	{"uint", 1, 1, GLOBAL, f_uint},
	{"double", 1, 1, GLOBAL, f_double},
	{"string", 1, 1, GLOBAL, f_string},
	{"bytes", 1, 1, GLOBAL, f_bytes},
	{"bool", 1, 1, GLOBAL, f_bool},
	{"dyn", 1, 1, GLOBAL, f_dyn},
	{"type", 1, 1, GLOBAL, f_type},
	{"timestamp", 1, 1, GLOBAL, f_timestamp},
	{"duration", 1, 1, GLOBAL, f_duration},
	{"charAt", 2, 2, RECV, f_char_at},
	{"indexOf", 2, 3, RECV, f_index_of},
	{"lastIndexOf", 2, 3, RECV, f_last_index_of},
	{"lowerAscii", 1, 1, RECV, f_lower},
	{"upperAscii", 1, 1, RECV, f_upper},
	{"replace", 3, 4, RECV, f_replace},
	{"split", 2, 3, RECV, f_split},
	{"substring", 2, 3, RECV, f_substring},
	{"trim", 1, 1, RECV, f_trim},
	{"join", 1, 2, RECV, f_join},
	{"reverse", 1, 1, RECV, f_reverse},
	{"format", 2, 2, RECV, f_format},
	{"strings.quote", 1, 1, GLOBAL, f_quote},
	{"math.greatest", 1, 255, GLOBAL, f_greatest},
	{"math.least", 1, 255, GLOBAL, f_least},
	{"math.ceil", 1, 1, GLOBAL, f_ceil},
	{"math.floor", 1, 1, GLOBAL, f_floor},
	{"math.round", 1, 1, GLOBAL, f_round},
	{"math.trunc", 1, 1, GLOBAL, f_trunc},
	{"math.abs", 1, 1, GLOBAL, f_abs},
	{"math.sign", 1, 1, GLOBAL, f_sign},
	{"math.isNaN", 1, 1, GLOBAL, f_is_nan},
	{"math.isInf", 1, 1, GLOBAL, f_is_inf},
	{"math.isFinite", 1, 1, GLOBAL, f_is_finite},
	{"math.bitAnd", 2, 2, GLOBAL, f_bit_and},
	{"math.bitOr", 2, 2, GLOBAL, f_bit_or},
	{"math.bitXor", 2, 2, GLOBAL, f_bit_xor},
	{"math.bitNot", 1, 1, GLOBAL, f_bit_not},
	{"math.bitShiftLeft", 2, 2, GLOBAL, f_shl},
	{"math.bitShiftRight", 2, 2, GLOBAL, f_shr},
};

builtin_fn expr_builtin_lookup(const char *name, size_t len, size_t na, bool receiver)
{
	char tmp[64];

	if (len >= sizeof(tmp))
		return NULL;
	memcpy(tmp, name, len);
	tmp[len] = '\0';
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		const struct builtin *b = &builtins[i];

		if (strcmp(b->name, tmp) == 0 && na >= b->min_na && na <= b->max_na &&
		    (b->style & (receiver ? RECV : GLOBAL)))
			return b->fn;
	}
	if (receiver)
		return expr_time_getter(tmp, na);
	return NULL;
}
