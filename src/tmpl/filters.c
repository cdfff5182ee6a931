/*
 * filters.c -- every standard Liquid filter, plus nudge's `json` and `raw`.
 *
 * Design: a filter gets the input value and its evaluated arguments and returns
 * a new value; strings and arrays it makes come from the scratch arena. The
 * table at the bottom gives each filter its arity, checked at compile time, so
 * a call with the wrong number of arguments never renders. Semantics follow Ruby
 * Liquid 5 (standardfilters.rb), including its quirks: array filters flatten
 * their input (InputIterator), numbers go through Utils.to_number, strings are
 * measured in characters, and an object's property test on a string item is a
 * substring test.
 * Unicode: upcase, downcase and capitalize use ICU's full case mapping (ß -> SS).
 * Dates: `date` works in UTC; it takes epoch seconds, "now"/"today", ISO 8601 and
 *   the usual "March 14, 2016 10:00" / "14 Mar 2016" forms, and formats with
 *   strftime (glibc, so %-d and friends work).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "base/clock.h"
#include "base/mem.h"
#include "tmpl/tmpl_int.h"

#define IN     const struct val *in
#define FA     const struct fargs *fa
#define OUT    struct val *out
#define ARG(i) (&fa->pos[i])

static int to_s(struct rs *st, const struct val *v, struct val *out)
{
	return tmpl_rs_to_str(st, v, out);
}

/* Filters build strings in one buffer per render (filters never nest): tb_get
 * lends it out, mk copies the result into the arena and takes it back. */
static void tb_get(struct rs *st, struct buf *b)
{
	*b = st->tb;
	buf_init(&st->tb, 0);
	buf_reset(b);
}

static void tb_put(struct rs *st, struct buf *b)
{
	if (!st->tb.data)
		st->tb = *b;
	else
		buf_fini(b);
}

static int mk(struct rs *st, struct buf *b, struct val *out)
{
	char *s = tmpl_rs_alloc(st, b->len + 1);

	if (s) {
		memcpy(s, buf_str(b), b->len + 1);
		*out = tmpl_val_str(s, b->len);
	}
	tb_put(st, b);
	return s ? 0 : -1;
}

static int mkarr(struct rs *st, const struct val *items, size_t n, struct val *out)
{
	struct val *v = tmpl_rs_alloc(st, (n ? n : 1) * sizeof(*v));
	if (!v)
		return -1;
	if (n)
		memcpy(v, items, n * sizeof(*v));
	out->type = V_ARR;
	out->safe = 0;
	out->a.items = v;
	out->a.n = n;
	return 0;
}

static int to_integer(struct rs *st, const struct val *v, const char *what, int64_t *out)
{
	if (v->type == V_INT) {
		*out = v->i;
		return 0;
	}
	if (v->type == V_STR) {
		const char *p = v->s.p;
		char *end;
		while (isspace((unsigned char)*p))
			p++;
		long long x = strtoll(p, &end, 10);
		while (isspace((unsigned char)*end))
			end++;
		if (end != p && !*end) {
			*out = x;
			return 0;
		}
	}
	return tmpl_rs_fail(st, NERR_EVAL, NULL, "%s: expected an integer", what);
}

/* ---- strings ---- */

static int f_append(struct rs *st, IN, FA, OUT)
{
	struct val a, b;
	struct buf r;

	if (to_s(st, in, &a) || to_s(st, ARG(0), &b))
		return -1;
	tb_get(st, &r);
	buf_append(&r, a.s.p, a.s.len);
	buf_append(&r, b.s.p, b.s.len);
	return mk(st, &r, out);
}

static int f_prepend(struct rs *st, IN, FA, OUT)
{
	struct val a, b;
	struct buf r;

	if (to_s(st, in, &a) || to_s(st, ARG(0), &b))
		return -1;
	tb_get(st, &r);
	buf_append(&r, b.s.p, b.s.len);
	buf_append(&r, a.s.p, a.s.len);
	return mk(st, &r, out);
}

static bool ascii_only(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] >= 0x80)
			return false;
	return true;
}

enum { CASE_UP, CASE_DOWN, CASE_CAP };

/* Case mapping with ICU (root locale), ASCII fast path. */
static int casemap(struct rs *st, const struct val *s, int mode, struct val *out)
{
	if (ascii_only(s->s.p, s->s.len)) {
		char *r = tmpl_rs_alloc(st, s->s.len + 1);
		if (!r)
			return -1;
		for (size_t i = 0; i < s->s.len; i++) {
			char c = s->s.p[i];
			bool up = mode == CASE_UP || (mode == CASE_CAP && i == 0);
			r[i] = (char)(up ? toupper((unsigned char)c)
					 : tolower((unsigned char)c));
		}
		r[s->s.len] = 0;
		*out = tmpl_val_str(r, s->s.len);
		return 0;
	}
	UErrorCode err = U_ZERO_ERROR;
	int32_t ulen = 0;
	if (s->s.len > INT32_MAX / 4)
		return tmpl_rs_fail(st, NERR_LIMIT, NULL, "string too long");
	u_strFromUTF8Lenient(NULL, 0, &ulen, s->s.p, (int32_t)s->s.len, &err);
	err = U_ZERO_ERROR;
	UChar *u = tmpl_rs_alloc(st, ((size_t)ulen + 1) * sizeof(UChar));
	UChar *m = tmpl_rs_alloc(st, ((size_t)ulen * 3 + 4) * sizeof(UChar));
	if (!u || !m)
		return -1;
	/* The lenient preflight may overestimate; take the real length. */
	u_strFromUTF8Lenient(u, ulen + 1, &ulen, s->s.p, (int32_t)s->s.len, &err);
	int32_t mlen = 0, cap = ulen * 3 + 4;
	err = U_ZERO_ERROR;
	if (mode == CASE_UP) {
		mlen = u_strToUpper(m, cap, u, ulen, "", &err);
	} else if (mode == CASE_DOWN) {
		mlen = u_strToLower(m, cap, u, ulen, "", &err);
	} else {
		int32_t i = 0;
		UChar32 c = 0;
		if (ulen) {
			U16_NEXT(u, i, ulen, c);
			c = u_totitle(c);
			U16_APPEND_UNSAFE(m, mlen, c);
			mlen += u_strToLower(m + mlen, cap - mlen, u + i, ulen - i, "",
					     &err);
		}
	}
	if (U_FAILURE(err))
		return tmpl_rs_fail(st, NERR_EVAL, NULL, "case mapping failed: %s",
				    u_errorName(err));
	int32_t blen = 0;
	err = U_ZERO_ERROR;
	u_strToUTF8(NULL, 0, &blen, m, mlen, &err);
	err = U_ZERO_ERROR;
	char *r = tmpl_rs_alloc(st, (size_t)blen + 1);
	if (!r)
		return -1;
	u_strToUTF8(r, blen + 1, &blen, m, mlen, &err);
	r[blen] = 0;
	*out = tmpl_val_str(r, (size_t)blen);
	return 0;
}

static int f_upcase(struct rs *st, IN, FA, OUT)
{
	struct val s;
	return to_s(st, in, &s) || casemap(st, &s, CASE_UP, out);
}

static int f_downcase(struct rs *st, IN, FA, OUT)
{
	struct val s;
	return to_s(st, in, &s) || casemap(st, &s, CASE_DOWN, out);
}

static int f_capitalize(struct rs *st, IN, FA, OUT)
{
	struct val s;
	return to_s(st, in, &s) || casemap(st, &s, CASE_CAP, out);
}

static void esc_char(struct buf *b, char c)
{
	switch (c) {
	case '&':
		buf_puts(b, "&amp;");
		break;
	case '<':
		buf_puts(b, "&lt;");
		break;
	case '>':
		buf_puts(b, "&gt;");
		break;
	case '"':
		buf_puts(b, "&quot;");
		break;
	case '\'':
		buf_puts(b, "&#39;");
		break;
	default:
		buf_putc(b, c);
	}
}

static int f_escape(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;

	if (in->type == V_NIL) {
		*out = *in;
		return 0;
	}
	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++)
		esc_char(&b, s.s.p[i]);
	if (mk(st, &b, out))
		return -1;
	out->safe = 1;
	return 0;
}

/* &name; or &#123; or &#x1F; */
static bool is_entity(const char *p, size_t n)
{
	size_t i = 1;
	if (i < n && p[i] == '#') {
		i++;
		size_t d = i;
		while (i < n && isdigit((unsigned char)p[i]))
			i++;
		return i > d && i < n && p[i] == ';';
	}
	size_t d = i;
	while (i < n && isalpha((unsigned char)p[i]))
		i++;
	return i > d && i < n && p[i] == ';';
}

static int f_escape_once(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;

	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++) {
		if (s.s.p[i] == '&' && is_entity(s.s.p + i, s.s.len - i))
			buf_putc(&b, '&');
		else
			esc_char(&b, s.s.p[i]);
	}
	if (mk(st, &b, out))
		return -1;
	out->safe = 1;
	return 0;
}

static bool ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v' || c == 0;
}

static int strip_impl(struct rs *st, IN, bool l, bool r, OUT)
{
	struct val s;

	if (to_s(st, in, &s))
		return -1;
	const char *p = s.s.p, *e = p + s.s.len;
	if (l)
		while (p < e && ws(*p))
			p++;
	if (r)
		while (e > p && ws(e[-1]))
			e--;
	if (e == s.s.p + s.s.len) {
		*out = tmpl_val_str(p, (size_t)(e - p));
		return 0;
	}
	char *c = tmpl_rs_alloc(st, (size_t)(e - p) + 1);
	if (!c)
		return -1;
	memcpy(c, p, (size_t)(e - p));
	c[e - p] = 0;
	*out = tmpl_val_str(c, (size_t)(e - p));
	return 0;
}

static int f_strip(struct rs *st, IN, FA, OUT)
{
	return strip_impl(st, in, true, true, out);
}

static int f_lstrip(struct rs *st, IN, FA, OUT)
{
	return strip_impl(st, in, true, false, out);
}

static int f_rstrip(struct rs *st, IN, FA, OUT)
{
	return strip_impl(st, in, false, true, out);
}

/* squish: strip, and every run of whitespace inside becomes one space. */
static int f_squish(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;
	bool gap = false;

	if (in->type == V_NIL) {
		*out = *in;
		return 0;
	}
	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++) {
		if (ws(s.s.p[i]) && s.s.p[i]) {
			gap = b.len > 0;
			continue;
		}
		if (gap)
			buf_putc(&b, ' ');
		gap = false;
		buf_putc(&b, s.s.p[i]);
	}
	return mk(st, &b, out);
}

static int nl_impl(struct rs *st, IN, const char *rep, OUT)
{
	struct val s;
	struct buf b;

	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++) {
		if (s.s.p[i] == '\r' && i + 1 < s.s.len && s.s.p[i + 1] == '\n')
			continue;
		if (s.s.p[i] == '\n')
			buf_puts(&b, rep);
		else
			buf_putc(&b, s.s.p[i]);
	}
	return mk(st, &b, out);
}

static int f_newline_to_br(struct rs *st, IN, FA, OUT)
{
	return nl_impl(st, in, "<br />\n", out);
}

static int f_strip_newlines(struct rs *st, IN, FA, OUT)
{
	return nl_impl(st, in, "", out);
}

static const char *find_strn(const char *p, const char *e, const char *needle, size_t n)
{
	if (p > e || (size_t)(e - p) < n)
		return NULL;
	return memmem(p, (size_t)(e - p), needle, n);
}

static int f_strip_html(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;

	if (to_s(st, in, &s))
		return -1;
	const char *p = s.s.p, *e = p + s.s.len;
	tb_get(st, &b);
	while (p < e) {
		if (*p != '<') {
			buf_putc(&b, *p++);
			continue;
		}
		static const char *const blocks[][2] = {{"<script", "</script>"},
							{"<!--", "-->"},
							{"<style", "</style>"}};
		const char *skip = NULL;
		for (size_t k = 0; k < 3 && !skip; k++) {
			size_t ol = strlen(blocks[k][0]);
			if ((size_t)(e - p) >= ol && memcmp(p, blocks[k][0], ol) == 0) {
				const char *c = find_strn(p + ol, e, blocks[k][1],
							  strlen(blocks[k][1]));
				if (c)
					skip = c + strlen(blocks[k][1]);
			}
		}
		if (!skip) {
			const char *c = memchr(p, '>', (size_t)(e - p));
			if (c)
				skip = c + 1;
		}
		if (skip)
			p = skip;
		else
			buf_putc(&b, *p++);
	}
	return mk(st, &b, out);
}

/* Replaces occurrences of `from` in `s`: which = 0 all, 1 first, 2 last. */
static int replace_impl(struct rs *st, IN, const struct val *fromv, const struct val *tov,
			int which, OUT)
{
	struct val s, from, to = tmpl_val_str("", 0);
	struct buf b;

	if (to_s(st, in, &s) || to_s(st, fromv, &from) || (tov && to_s(st, tov, &to)))
		return -1;
	tb_get(st, &b);
	if (from.s.len == 0) {
		if (which == 1) {
			buf_append(&b, to.s.p, to.s.len);
			buf_append(&b, s.s.p, s.s.len);
		} else if (which == 2) {
			buf_append(&b, s.s.p, s.s.len);
			buf_append(&b, to.s.p, to.s.len);
		} else {
			/* Ruby's gsub("") inserts at every character boundary. */
			size_t i = 0;
			buf_append(&b, to.s.p, to.s.len);
			while (i < s.s.len) {
				size_t j = i + 1;
				while (j < s.s.len &&
				       ((unsigned char)s.s.p[j] & 0xC0) == 0x80)
					j++;
				buf_append(&b, s.s.p + i, j - i);
				buf_append(&b, to.s.p, to.s.len);
				if (b.len > st->lim.output_bytes) {
					tb_put(st, &b);
					return tmpl_rs_fail(
						st, NERR_LIMIT, NULL,
						"string longer than the output limit");
				}
				i = j;
			}
		}
		return mk(st, &b, out);
	}
	const char *p = s.s.p, *e = p + s.s.len, *hit;
	if (which == 2) {
		const char *last = NULL;
		for (const char *q = p; (hit = find_strn(q, e, from.s.p, from.s.len));
		     q = hit + 1)
			last = hit;
		if (!last) {
			tb_put(st, &b);
			*out = s;
			return 0;
		}
		buf_append(&b, p, (size_t)(last - p));
		buf_append(&b, to.s.p, to.s.len);
		buf_append(&b, last + from.s.len, (size_t)(e - last - from.s.len));
		return mk(st, &b, out);
	}
	while ((hit = find_strn(p, e, from.s.p, from.s.len))) {
		buf_append(&b, p, (size_t)(hit - p));
		buf_append(&b, to.s.p, to.s.len);
		p = hit + from.s.len;
		if (b.len > st->lim.output_bytes) {
			tb_put(st, &b);
			return tmpl_rs_fail(st, NERR_LIMIT, NULL,
					    "string longer than the output limit");
		}
		if (which == 1)
			break;
	}
	buf_append(&b, p, (size_t)(e - p));
	return mk(st, &b, out);
}

static int f_replace(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), fa->npos > 1 ? ARG(1) : NULL, 0, out);
}

static int f_replace_first(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), fa->npos > 1 ? ARG(1) : NULL, 1, out);
}

static int f_replace_last(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), fa->npos > 1 ? ARG(1) : NULL, 2, out);
}

static int f_remove(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), NULL, 0, out);
}

static int f_remove_first(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), NULL, 1, out);
}

static int f_remove_last(struct rs *st, IN, FA, OUT)
{
	return replace_impl(st, in, ARG(0), NULL, 2, out);
}

static int f_size(struct rs *st, IN, FA, OUT)
{
	if (in->type == V_STR)
		*out = tmpl_val_int((int64_t)tmpl_utf8_len(in->s.p, in->s.len));
	else if (tmpl_val_is_seq(in))
		*out = tmpl_val_int((int64_t)tmpl_val_seq_len(in));
	else if (in->type == V_JOBJ)
		*out = tmpl_val_int((int64_t)tmpl_val_obj_len(in));
	else
		*out = tmpl_val_int(0);
	return 0;
}

/* Byte offset of character index ci (clamped to the end). */
static size_t char_off(const char *p, size_t n, size_t ci)
{
	size_t i = 0;
	while (i < n && ci > 0) {
		i++;
		while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80)
			i++;
		ci--;
	}
	return i;
}

static int f_slice(struct rs *st, IN, FA, OUT)
{
	int64_t off, len = 1;
	struct val s;

	if (ARG(0)->type == V_FLOAT || to_integer(st, ARG(0), "slice", &off))
		return ARG(0)->type == V_FLOAT
			       ? tmpl_rs_fail(st, NERR_EVAL, fa->at,
					      "slice: expected an integer")
			       : -1;
	if (fa->npos > 1 && ARG(1)->type != V_NIL &&
	    (ARG(1)->type == V_FLOAT || to_integer(st, ARG(1), "slice", &len)))
		return ARG(1)->type == V_FLOAT
			       ? tmpl_rs_fail(st, NERR_EVAL, fa->at,
					      "slice: expected an integer")
			       : -1;
	/* Ruby slices Arrays; a range slices as its text ("1..5"). */
	if (in->type == V_ARR || in->type == V_JARR) {
		struct val flat;
		if (tmpl_rs_flatten(st, in, &flat))
			return -1;
		int64_t n = (int64_t)flat.a.n;
		if (off < 0)
			off += n;
		if (off < 0 || off > n || len < 0)
			return mkarr(st, NULL, 0, out);
		if (len > n - off)
			len = n - off;
		return mkarr(st, flat.a.items + off, (size_t)len, out);
	}
	if (to_s(st, in, &s))
		return -1;
	int64_t n = (int64_t)tmpl_utf8_len(s.s.p, s.s.len);
	if (off < 0)
		off += n;
	if (off < 0 || off > n || len < 0) {
		*out = tmpl_val_str("", 0);
		return 0;
	}
	if (len > n - off)
		len = n - off;
	size_t b0 = char_off(s.s.p, s.s.len, (size_t)off);
	size_t b1 = b0 + char_off(s.s.p + b0, s.s.len - b0, (size_t)len);
	char *r = tmpl_rs_alloc(st, b1 - b0 + 1);
	if (!r)
		return -1;
	memcpy(r, s.s.p + b0, b1 - b0);
	r[b1 - b0] = 0;
	*out = tmpl_val_str(r, b1 - b0);
	return 0;
}

struct avec {
	struct val *v;
	size_t n, cap;
};

static int apush(struct rs *st, struct avec *a, struct val x)
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
	a->v[a->n++] = x;
	return 0;
}

static int piece(struct rs *st, struct avec *a, const char *p, size_t n)
{
	char *s = tmpl_rs_alloc(st, n + 1);
	if (!s)
		return -1;
	memcpy(s, p, n);
	s[n] = 0;
	return apush(st, a, tmpl_val_str(s, n));
}

static int f_split(struct rs *st, IN, FA, OUT)
{
	struct val s, sep;
	struct avec a = {0};

	if (to_s(st, in, &s) || to_s(st, ARG(0), &sep))
		return -1;
	const char *p = s.s.p, *e = p + s.s.len;
	if (sep.s.len == 1 && sep.s.p[0] == ' ') {
		while (p < e) {
			while (p < e && ws(*p) && *p)
				p++;
			const char *w = p;
			while (p < e && !(ws(*p) && *p))
				p++;
			if (p > w && piece(st, &a, w, (size_t)(p - w)))
				return -1;
		}
	} else if (sep.s.len == 0) {
		while (p < e) {
			const char *c = p++;
			while (p < e && ((unsigned char)*p & 0xC0) == 0x80)
				p++;
			if (piece(st, &a, c, (size_t)(p - c)))
				return -1;
		}
	} else {
		const char *hit;
		while ((hit = find_strn(p, e, sep.s.p, sep.s.len))) {
			if (piece(st, &a, p, (size_t)(hit - p)))
				return -1;
			p = hit + sep.s.len;
		}
		if (piece(st, &a, p, (size_t)(e - p)))
			return -1;
		while (a.n && a.v[a.n - 1].s.len == 0)
			a.n--;
	}
	out->type = V_ARR;
	out->a.items = a.v;
	out->a.n = a.n;
	return 0;
}

static int f_truncate(struct rs *st, IN, FA, OUT)
{
	int64_t len = 50;
	struct val s, ell = tmpl_val_str("...", 3);
	struct buf b;

	if (fa->npos > 0 && to_integer(st, ARG(0), "truncate", &len))
		return -1;
	if (fa->npos > 1 && to_s(st, ARG(1), &ell))
		return -1;
	if (to_s(st, in, &s))
		return -1;
	int64_t n = (int64_t)tmpl_utf8_len(s.s.p, s.s.len);
	if (n <= len) {
		*out = s;
		return 0;
	}
	int64_t l = len - (int64_t)tmpl_utf8_len(ell.s.p, ell.s.len);
	if (l < 0)
		l = 0;
	tb_get(st, &b);
	buf_append(&b, s.s.p, char_off(s.s.p, s.s.len, (size_t)l));
	buf_append(&b, ell.s.p, ell.s.len);
	return mk(st, &b, out);
}

static int f_truncatewords(struct rs *st, IN, FA, OUT)
{
	int64_t words = 15;
	struct val s, ell = tmpl_val_str("...", 3);
	struct buf b;

	if (fa->npos > 0 && to_integer(st, ARG(0), "truncatewords", &words))
		return -1;
	if (fa->npos > 1 && to_s(st, ARG(1), &ell))
		return -1;
	if (to_s(st, in, &s))
		return -1;
	if (words <= 0)
		words = 1;
	const char *p = s.s.p, *e = p + s.s.len;
	int64_t count = 0;
	tb_get(st, &b);
	while (p < e) {
		while (p < e && ws(*p) && *p)
			p++;
		if (p >= e)
			break;
		const char *w = p;
		while (p < e && !(ws(*p) && *p))
			p++;
		if (count == words) {
			buf_append(&b, ell.s.p, ell.s.len);
			return mk(st, &b, out);
		}
		if (count)
			buf_putc(&b, ' ');
		buf_append(&b, w, (size_t)(p - w));
		count++;
	}
	tb_put(st, &b);
	*out = s;
	return 0;
}

static int f_url_encode(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;

	if (in->type == V_NIL) {
		*out = *in;
		return 0;
	}
	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++) {
		unsigned char c = (unsigned char)s.s.p[i];
		if (isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~')
			buf_putc(&b, (char)c);
		else if (c == ' ')
			buf_putc(&b, '+');
		else
			buf_printf(&b, "%%%02X", c);
	}
	return mk(st, &b, out);
}

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int f_url_decode(struct rs *st, IN, FA, OUT)
{
	struct val s;
	struct buf b;

	if (in->type == V_NIL) {
		*out = *in;
		return 0;
	}
	if (to_s(st, in, &s))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < s.s.len; i++) {
		char c = s.s.p[i];
		if (c == '+')
			buf_putc(&b, ' ');
		else if (c == '%' && i + 2 < s.s.len && hexv(s.s.p[i + 1]) >= 0 &&
			 hexv(s.s.p[i + 2]) >= 0) {
			buf_putc(&b,
				 (char)(hexv(s.s.p[i + 1]) * 16 + hexv(s.s.p[i + 2])));
			i += 2;
		} else
			buf_putc(&b, c);
	}
	return mk(st, &b, out);
}

static const char B64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64U[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64enc(struct rs *st, IN, const char *alpha, OUT)
{
	struct val s;
	struct buf b;

	if (to_s(st, in, &s))
		return -1;
	const unsigned char *p = (const unsigned char *)s.s.p;
	size_t n = s.s.len;
	tb_get(st, &b);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		buf_putc(&b, alpha[(v >> 18) & 63]);
		buf_putc(&b, alpha[(v >> 12) & 63]);
		buf_putc(&b, i + 1 < n ? alpha[(v >> 6) & 63] : '=');
		buf_putc(&b, i + 2 < n ? alpha[v & 63] : '=');
	}
	return mk(st, &b, out);
}

static int b64dec(struct rs *st, IN, const char *alpha, FA, OUT)
{
	struct val s;
	struct buf b;
	int8_t map[256];

	if (to_s(st, in, &s))
		return -1;
	memset(map, -1, sizeof(map));
	for (int i = 0; i < 64; i++)
		map[(unsigned char)alpha[i]] = (int8_t)i;
	const char *p = s.s.p;
	size_t n = s.s.len;
	if (n % 4)
		return tmpl_rs_fail(st, NERR_EVAL, fa->at, "invalid base64");
	tb_get(st, &b);
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)p[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad || map[c] < 0) {
				tb_put(st, &b);
				return tmpl_rs_fail(st, NERR_EVAL, fa->at,
						    "invalid base64");
			} else {
				v[k] = map[c];
			}
		}
		uint32_t x = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		buf_putc(&b, (char)(x >> 16));
		if (pad < 2)
			buf_putc(&b, (char)(x >> 8));
		if (pad < 1)
			buf_putc(&b, (char)x);
	}
	return mk(st, &b, out);
}

static int f_base64_encode(struct rs *st, IN, FA, OUT)
{
	return b64enc(st, in, B64, out);
}

static int f_base64_decode(struct rs *st, IN, FA, OUT)
{
	return b64dec(st, in, B64, fa, out);
}

static int f_base64_url_safe_encode(struct rs *st, IN, FA, OUT)
{
	return b64enc(st, in, B64U, out);
}

static int f_base64_url_safe_decode(struct rs *st, IN, FA, OUT)
{
	return b64dec(st, in, B64U, fa, out);
}

/* ---- dates ---- */

static int month_of(const char *w, size_t n)
{
	static const char *const m[] = {"jan", "feb", "mar", "apr", "may", "jun",
					"jul", "aug", "sep", "oct", "nov", "dec"};
	if (n < 3)
		return 0;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(w, m[i], 3) == 0)
			return i + 1;
	return 0;
}

/* Parses the common date forms; returns false when it cannot. */
static bool parse_date(const char *s, size_t n, int64_t *secs)
{
	int64_t ms;
	char tmp[128];
	int y = -1, mo = 0, d = 0, hh = 0, mi = 0, ss = 0, off = 0;
	bool pm = false, am = false;

	if (n >= sizeof(tmp))
		return false;
	for (size_t i = 0, run = 0; i < n; i++) {
		run = isdigit((unsigned char)s[i]) ? run + 1 : 0;
		if (run > 9)
			return false;
	}
	memcpy(tmp, s, n);
	tmp[n] = 0;
	if (n >= 10 && isdigit((unsigned char)tmp[0]) && tmp[4] == '-') {
		if (n > 10 && tmp[10] == ' ')
			tmp[10] = 'T';
		if (clock_parse_rfc3339(tmp, &ms) == 0) {
			*secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
			return true;
		}
		if (sscanf(tmp, "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &hh, &mi, &ss) < 3)
			return false;
		goto done;
	}
	for (const char *p = tmp; *p;) {
		if (isalpha((unsigned char)*p)) {
			const char *w = p;
			while (isalpha((unsigned char)*p))
				p++;
			size_t wl = (size_t)(p - w);
			int m = month_of(w, wl);
			if (m && !mo)
				mo = m;
			else if (wl == 2 && strncasecmp(w, "pm", 2) == 0)
				pm = true;
			else if (wl == 2 && strncasecmp(w, "am", 2) == 0)
				am = true;
		} else if (isdigit((unsigned char)*p)) {
			int a = 0, b = 0, c = 0, k = 0;
			if (sscanf(p, "%d:%d:%d%n", &a, &b, &c, &k) == 3 ||
			    (c = 0, sscanf(p, "%d:%d%n", &a, &b, &k) == 2)) {
				hh = a;
				mi = b;
				ss = c;
				p += k;
				continue;
			}
			const char *q = p;
			long v = strtol(p, (char **)&p, 10);
			if (p - q == 4 && y < 0)
				y = (int)v;
			else if (!d && v >= 1 && v <= 31)
				d = (int)v;
			else if (y < 0)
				y = (int)v;
		} else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
			   hh + mi) {
			int sign = *p == '-' ? -1 : 1, a = 0;
			p++;
			const char *q = p;
			while (isdigit((unsigned char)*p))
				a = a * 10 + (*p++ - '0');
			if (p - q == 4)
				off = sign * ((a / 100) * 3600 + (a % 100) * 60);
			else if (p - q <= 2) {
				off = sign * a * 3600;
				if (*p == ':' && isdigit((unsigned char)p[1])) {
					off += sign *
					       (int)strtol(p + 1, (char **)&p, 10) * 60;
				}
			}
		} else {
			p++;
		}
	}
	if (pm && hh < 12)
		hh += 12;
	if (am && hh == 12)
		hh = 0;
done:
	if (y < 0 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 ||
	    mi > 59 || ss > 60)
		return false;
	struct tm tm = {0};
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = hh;
	tm.tm_min = mi;
	tm.tm_sec = ss;
	*secs = (int64_t)timegm(&tm) - off;
	return true;
}

static int f_date(struct rs *st, IN, FA, OUT)
{
	struct val fmt;
	int64_t secs;

	if (to_s(st, ARG(0), &fmt))
		return -1;
	if (in->type == V_NIL) {
		*out = *in;
		return 0;
	}
	if (fmt.s.len == 0) {
		*out = *in;
		return 0;
	}
	if (in->type == V_INT) {
		secs = in->i;
	} else if (in->type == V_FLOAT && in->f > -1e15 && in->f < 1e15) {
		secs = (int64_t)in->f;
	} else if (in->type == V_STR) {
		const char *p = in->s.p;
		size_t n = in->s.len, i = 0;
		while (i < n && isdigit((unsigned char)p[i]))
			i++;
		if (n && i == n && n < 16) {
			secs = strtoll(p, NULL, 10);
		} else if ((n == 3 && strcasecmp(p, "now") == 0) ||
			   (n == 5 && strcasecmp(p, "today") == 0)) {
			secs = st->now_ms / 1000;
		} else if (!parse_date(p, n, &secs)) {
			*out = *in;
			return 0;
		}
	} else {
		*out = *in;
		return 0;
	}
	if (secs < -62135596800LL || secs > 253402300799LL) {
		*out = *in;
		return 0;
	}
	time_t t = (time_t)secs;
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t cap = fmt.s.len * 16 + 64;
	char *buf = tmpl_rs_alloc(st, cap);
	if (!buf)
		return -1;
	/* strftime cannot tell "empty" from "too small"; a sentinel byte can. */
	struct buf f;
	buf_init(&f, 0);
	buf_append(&f, fmt.s.p, fmt.s.len);
	buf_putc(&f, '\x01');
	size_t w = strftime(buf, cap, buf_str(&f), &tm);
	buf_fini(&f);
	if (w == 0)
		return tmpl_rs_fail(st, NERR_EVAL, fa->at, "date format too long");
	buf[w - 1] = 0;
	*out = tmpl_val_str(buf, w - 1);
	return 0;
}

/* ---- numbers ---- */

static int f_abs(struct rs *st, IN, FA, OUT)
{
	struct val n = tmpl_num_from(in);
	if (n.type == V_INT)
		*out = n.i == INT64_MIN ? tmpl_val_float(-(double)n.i)
					: tmpl_val_int(n.i < 0 ? -n.i : n.i);
	else
		*out = tmpl_val_float(fabs(n.f));
	return 0;
}

static struct val f_to_int(double d)
{
	if (d > -9.2e18 && d < 9.2e18)
		return tmpl_val_int((int64_t)d);
	return tmpl_val_float(d);
}

static int f_ceil(struct rs *st, IN, FA, OUT)
{
	struct val n = tmpl_num_from(in);
	*out = n.type == V_INT ? n : f_to_int(ceil(n.f));
	return 0;
}

static int f_floor(struct rs *st, IN, FA, OUT)
{
	struct val n = tmpl_num_from(in);
	*out = n.type == V_INT ? n : f_to_int(floor(n.f));
	return 0;
}

static int f_round(struct rs *st, IN, FA, OUT)
{
	struct val n = tmpl_num_from(in), d = tmpl_val_int(0);
	if (fa->npos)
		d = tmpl_num_from(ARG(0));
	int64_t nd = d.type == V_INT ? d.i : (d.f > -1e6 && d.f < 1e6) ? (int64_t)d.f : 0;
	return tmpl_num_round(&n, nd, out);
}

static int arith(struct rs *st, IN, FA, char op, OUT)
{
	struct val a = tmpl_num_from(in), b = tmpl_num_from(ARG(0));
	if (tmpl_num_arith(op, &a, &b, out))
		return tmpl_rs_fail(st, NERR_EVAL, fa->at, "divided by 0");
	return 0;
}

static int f_plus(struct rs *st, IN, FA, OUT)
{
	return arith(st, in, fa, '+', out);
}

static int f_minus(struct rs *st, IN, FA, OUT)
{
	return arith(st, in, fa, '-', out);
}

static int f_times(struct rs *st, IN, FA, OUT)
{
	return arith(st, in, fa, '*', out);
}

static int f_divided_by(struct rs *st, IN, FA, OUT)
{
	return arith(st, in, fa, '/', out);
}

static int f_modulo(struct rs *st, IN, FA, OUT)
{
	return arith(st, in, fa, '%', out);
}

static int f_at_least(struct rs *st, IN, FA, OUT)
{
	struct val a = tmpl_num_from(in), b = tmpl_num_from(ARG(0));
	bool ok;
	*out = tmpl_val_cmp(&a, &b, &ok) < 0 ? b : a;
	return 0;
}

static int f_at_most(struct rs *st, IN, FA, OUT)
{
	struct val a = tmpl_num_from(in), b = tmpl_num_from(ARG(0));
	bool ok;
	*out = tmpl_val_cmp(&a, &b, &ok) > 0 ? b : a;
	return 0;
}

/* ---- arrays ---- */

static int f_first(struct rs *st, IN, FA, OUT)
{
	struct val k = tmpl_val_str("first", 5);
	*out = tmpl_val_nil();
	if (tmpl_val_is_seq(in) || in->type == V_JOBJ)
		return tmpl_rs_lookup(st, in, &k, true, out);
	return 0;
}

static int f_last(struct rs *st, IN, FA, OUT)
{
	struct val k = tmpl_val_str("last", 4);
	*out = tmpl_val_nil();
	if (tmpl_val_is_seq(in))
		return tmpl_rs_lookup(st, in, &k, true, out);
	return 0;
}

static int f_reverse(struct rs *st, IN, FA, OUT)
{
	struct val f;
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	struct val *v = (struct val *)f.a.items;
	for (size_t i = 0; i < f.a.n / 2; i++) {
		struct val t = v[i];
		v[i] = v[f.a.n - 1 - i];
		v[f.a.n - 1 - i] = t;
	}
	*out = f;
	return 0;
}

/* The property test of where/reject/map on one item: an object's field, or for a
 * string the property itself when it is a substring (Ruby's String#[]), for a
 * number the number when it equals the property. */
static int item_prop(struct rs *st, const struct val *item, const struct val *prop,
		     struct val *out)
{
	struct val ps;
	*out = tmpl_val_nil();
	if (item->type == V_JOBJ) {
		if (prop->type == V_NIL)
			return 0;
		if (to_s(st, prop, &ps))
			return -1;
		tmpl_val_obj_get(item, ps.s.p, out);
		return 0;
	}
	if (item->type == V_INT || item->type == V_FLOAT) {
		/* Ruby: 5['title'] raises; 5[2] is a bit test. */
		if (prop->type == V_STR)
			return tmpl_rs_fail(st, NERR_EVAL, NULL,
					    "cannot read property '%s' of a number",
					    prop->s.p);
		if (tmpl_val_eq(item, prop))
			*out = *item;
		return 0;
	}
	if (item->type == V_STR && prop->type != V_NIL) {
		if (to_s(st, prop, &ps))
			return -1;
		if (memmem(item->s.p, item->s.len, ps.s.p, ps.s.len))
			*out = ps;
	}
	return 0;
}

static int f_compact(struct rs *st, IN, FA, OUT)
{
	struct val f, p;
	size_t o = 0;
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	struct val *v = (struct val *)f.a.items;
	for (size_t i = 0; i < f.a.n; i++) {
		if (fa->npos) {
			if (item_prop(st, &v[i], ARG(0), &p))
				return -1;
		} else {
			p = v[i];
		}
		if (p.type != V_NIL)
			v[o++] = v[i];
	}
	f.a.n = o;
	*out = f;
	return 0;
}

static int f_concat(struct rs *st, IN, FA, OUT)
{
	struct val f;
	struct avec a = {0};
	if (!tmpl_val_is_seq(ARG(0)))
		return tmpl_rs_fail(st, NERR_EVAL, fa->at,
				    "concat: expected an array argument");
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	size_t n = tmpl_val_seq_len(ARG(0));
	if (n > st->lim.loop_iterations)
		return tmpl_rs_fail(st, NERR_LIMIT, fa->at, "array too long");
	for (size_t i = 0; i < f.a.n; i++)
		if (apush(st, &a, f.a.items[i]))
			return -1;
	for (size_t i = 0; i < n; i++)
		if (apush(st, &a, tmpl_val_seq_at(ARG(0), i)))
			return -1;
	out->type = V_ARR;
	out->a.items = a.v;
	out->a.n = a.n;
	return 0;
}

static int f_join(struct rs *st, IN, FA, OUT)
{
	struct val f, sep = tmpl_val_str(" ", 1), s;
	struct buf b;

	if (fa->npos && to_s(st, ARG(0), &sep))
		return -1;
	if (in->type == V_STR) {
		*out = *in;
		return 0;
	}
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	tb_get(st, &b);
	for (size_t i = 0; i < f.a.n; i++) {
		if (i)
			buf_append(&b, sep.s.p, sep.s.len);
		if (to_s(st, &f.a.items[i], &s)) {
			tb_put(st, &b);
			return -1;
		}
		buf_append(&b, s.s.p, s.s.len);
		if (b.len > st->lim.output_bytes) {
			tb_put(st, &b);
			return tmpl_rs_fail(st, NERR_LIMIT, fa->at,
					    "string longer than the output limit");
		}
	}
	return mk(st, &b, out);
}

static int f_map(struct rs *st, IN, FA, OUT)
{
	struct val f, p;
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	struct val *v = (struct val *)f.a.items;
	for (size_t i = 0; i < f.a.n; i++) {
		if (v[i].type == V_INT || v[i].type == V_FLOAT || tmpl_val_is_seq(&v[i]))
			return tmpl_rs_fail(st, NERR_EVAL, fa->at,
					    "map: item %zu has no properties", i);
		if (item_prop(st, &v[i], ARG(0), &p))
			return -1;
		v[i] = p;
	}
	*out = f;
	return 0;
}

/* Stable merge sort with a comparator that may fail. */
struct sortctx {
	struct rs *st;
	const struct val *prop; /* NULL: the items themselves */
	bool natural;
	bool bad;
};

static int sort_key(struct sortctx *c, const struct val *item, struct val *k)
{
	if (!c->prop) {
		*k = *item;
	} else if (item_prop(c->st, item, c->prop, k)) {
		return -1;
	}
	if (c->natural && k->type != V_NIL)
		return to_s(c->st, k, k);
	return 0;
}

static int cmp_items(struct sortctx *c, const struct val *a, const struct val *b)
{
	struct val ka, kb;
	bool ok;

	if (sort_key(c, a, &ka) || sort_key(c, b, &kb)) {
		c->bad = true;
		return 0;
	}
	if (ka.type == V_NIL || kb.type == V_NIL)
		return (ka.type == V_NIL) - (kb.type == V_NIL);
	if (c->natural) {
		size_t n = ka.s.len < kb.s.len ? ka.s.len : kb.s.len;
		for (size_t i = 0; i < n; i++) {
			int x = tolower((unsigned char)ka.s.p[i]),
			    y = tolower((unsigned char)kb.s.p[i]);
			if (x != y)
				return x < y ? -1 : 1;
		}
		return (ka.s.len > kb.s.len) - (ka.s.len < kb.s.len);
	}
	int r = tmpl_val_cmp(&ka, &kb, &ok);
	if (!ok)
		c->bad = true;
	return r;
}

static void msort(struct sortctx *c, struct val *v, struct val *tmp, size_t n)
{
	if (n < 2 || c->bad)
		return;
	size_t h = n / 2;
	msort(c, v, tmp, h);
	msort(c, v + h, tmp, n - h);
	size_t i = 0, j = h, o = 0;
	while (i < h && j < n)
		tmp[o++] = cmp_items(c, &v[j], &v[i]) < 0 ? v[j++] : v[i++];
	while (i < h)
		tmp[o++] = v[i++];
	while (j < n)
		tmp[o++] = v[j++];
	memcpy(v, tmp, n * sizeof(*v));
}

static int sort_impl(struct rs *st, IN, FA, bool natural, OUT)
{
	struct val f;
	struct sortctx c = {.st = st, .natural = natural};

	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	if (fa->npos && ARG(0)->type != V_NIL)
		c.prop = ARG(0);
	if (tmpl_rs_charge(st, f.a.n * 20))
		return -1;
	struct val *tmp = tmpl_rs_alloc(st, (f.a.n + 1) * sizeof(*tmp));
	if (!tmp)
		return -1;
	msort(&c, (struct val *)f.a.items, tmp, f.a.n);
	if (st->failed)
		return -1;
	if (c.bad)
		return tmpl_rs_fail(st, NERR_EVAL, fa->at,
				    "cannot sort values of different types");
	*out = f;
	return 0;
}

static int f_sort(struct rs *st, IN, FA, OUT)
{
	return sort_impl(st, in, fa, false, out);
}

static int f_sort_natural(struct rs *st, IN, FA, OUT)
{
	return sort_impl(st, in, fa, true, out);
}

static int f_uniq(struct rs *st, IN, FA, OUT)
{
	struct val f, *keys;
	size_t o = 0;

	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	if (tmpl_rs_charge(st, f.a.n * f.a.n / 8))
		return -1;
	if (!(keys = tmpl_rs_alloc(st, (f.a.n + 1) * sizeof(*keys))))
		return -1;
	struct val *v = (struct val *)f.a.items;
	for (size_t i = 0; i < f.a.n; i++) {
		struct val k = v[i];
		if (fa->npos && item_prop(st, &v[i], ARG(0), &k))
			return -1;
		bool dup = false;
		for (size_t j = 0; j < o && !dup; j++)
			dup = tmpl_val_eq(&keys[j], &k);
		if (!dup) {
			keys[o] = k;
			v[o++] = v[i];
		}
	}
	f.a.n = o;
	*out = f;
	return 0;
}

/* The predicate of where/reject/has/find: item[prop] == value, or truthy. */
static int match_item(struct rs *st, const struct val *item, FA, bool *yes)
{
	struct val p;

	if (item_prop(st, item, ARG(0), &p))
		return -1;
	if (fa->npos > 1 && ARG(1)->type != V_NIL)
		*yes = tmpl_val_eq(&p, ARG(1));
	else
		*yes = tmpl_val_truthy(&p);
	return 0;
}

static int select_impl(struct rs *st, IN, FA, bool keep, OUT)
{
	struct val f;
	size_t o = 0;

	*out = tmpl_val_nil();
	if (ARG(0)->type == V_NIL)
		return 0;
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	struct val *v = (struct val *)f.a.items;
	for (size_t i = 0; i < f.a.n; i++) {
		bool yes;
		if (v[i].type == V_NIL || v[i].type == V_BOOL)
			return 0;
		if (match_item(st, &v[i], fa, &yes))
			return -1;
		if (yes == keep)
			v[o++] = v[i];
	}
	f.a.n = o;
	*out = f;
	return 0;
}

static int f_where(struct rs *st, IN, FA, OUT)
{
	return select_impl(st, in, fa, true, out);
}

static int f_reject(struct rs *st, IN, FA, OUT)
{
	return select_impl(st, in, fa, false, out);
}

/* mode 0: has, 1: find, 2: find_index */
static int find_impl(struct rs *st, IN, FA, int mode, OUT)
{
	struct val f;

	*out = mode == 0 ? tmpl_val_bool(false) : tmpl_val_nil();
	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	for (size_t i = 0; i < f.a.n; i++) {
		bool yes;
		/* Ruby gives up (no result) on an item with no properties. */
		if (f.a.items[i].type == V_NIL || f.a.items[i].type == V_BOOL) {
			*out = tmpl_val_nil();
			return 0;
		}
		if (match_item(st, &f.a.items[i], fa, &yes))
			return -1;
		if (yes) {
			*out = mode == 0   ? tmpl_val_bool(true)
			       : mode == 1 ? f.a.items[i]
					   : tmpl_val_int((int64_t)i);
			return 0;
		}
	}
	return 0;
}

static int f_has(struct rs *st, IN, FA, OUT)
{
	return find_impl(st, in, fa, 0, out);
}

static int f_find(struct rs *st, IN, FA, OUT)
{
	return find_impl(st, in, fa, 1, out);
}

static int f_find_index(struct rs *st, IN, FA, OUT)
{
	return find_impl(st, in, fa, 2, out);
}

static int f_sum(struct rs *st, IN, FA, OUT)
{
	struct val f, acc = tmpl_val_int(0), x;

	if (tmpl_rs_flatten(st, in, &f))
		return -1;
	for (size_t i = 0; i < f.a.n; i++) {
		x = f.a.items[i];
		if (fa->npos && ARG(0)->type != V_NIL &&
		    item_prop(st, &f.a.items[i], ARG(0), &x))
			return -1;
		x = tmpl_num_from(&x);
		if (tmpl_num_arith('+', &acc, &x, &acc))
			return -1;
	}
	*out = acc;
	return 0;
}

/* ---- other ---- */

static int f_default(struct rs *st, IN, FA, OUT)
{
	bool allow_false = false, use;

	for (size_t i = 0; i < fa->nkw; i++)
		if (strcmp(fa->kwnames[i], "allow_false") == 0)
			allow_false = tmpl_val_truthy(&fa->kwvals[i]);
	use = in->type == V_NIL || (in->type == V_BOOL && !in->b && !allow_false) ||
	      (in->type == V_STR && in->s.len == 0) ||
	      (tmpl_val_is_seq(in) && tmpl_val_seq_len(in) == 0) ||
	      (in->type == V_JOBJ && tmpl_val_obj_len(in) == 0);
	if (!use)
		*out = *in;
	else if (fa->npos)
		*out = *ARG(0);
	else
		*out = tmpl_val_str("", 0);
	return 0;
}

static int f_json(struct rs *st, IN, FA, OUT)
{
	struct buf b;

	tb_get(st, &b);
	if (tmpl_rs_json(st, &b, in, 0)) {
		tb_put(st, &b);
		return -1;
	}
	return mk(st, &b, out);
}

static int f_raw(struct rs *st, IN, FA, OUT)
{
	if (to_s(st, in, out))
		return -1;
	out->safe = 1;
	return 0;
}

static const struct filter_def FILTERS[] = {
	{"abs", 0, 0, NULL, f_abs},
	{"append", 1, 1, NULL, f_append},
	{"at_least", 1, 1, NULL, f_at_least},
	{"at_most", 1, 1, NULL, f_at_most},
	{"base64_decode", 0, 0, NULL, f_base64_decode},
	{"base64_encode", 0, 0, NULL, f_base64_encode},
	{"base64_url_safe_decode", 0, 0, NULL, f_base64_url_safe_decode},
	{"base64_url_safe_encode", 0, 0, NULL, f_base64_url_safe_encode},
	{"capitalize", 0, 0, NULL, f_capitalize},
	{"ceil", 0, 0, NULL, f_ceil},
	{"compact", 0, 1, NULL, f_compact},
	{"concat", 1, 1, NULL, f_concat},
	{"date", 1, 1, NULL, f_date},
	{"default", 0, 1, "allow_false", f_default},
	{"divided_by", 1, 1, NULL, f_divided_by},
	{"downcase", 0, 0, NULL, f_downcase},
	{"escape", 0, 0, NULL, f_escape},
	{"escape_once", 0, 0, NULL, f_escape_once},
	{"find", 1, 2, NULL, f_find},
	{"find_index", 1, 2, NULL, f_find_index},
	{"first", 0, 0, NULL, f_first},
	{"floor", 0, 0, NULL, f_floor},
	{"h", 0, 0, NULL, f_escape},
	{"has", 1, 2, NULL, f_has},
	{"join", 0, 1, NULL, f_join},
	{"json", 0, 0, NULL, f_json},
	{"last", 0, 0, NULL, f_last},
	{"lstrip", 0, 0, NULL, f_lstrip},
	{"map", 1, 1, NULL, f_map},
	{"minus", 1, 1, NULL, f_minus},
	{"modulo", 1, 1, NULL, f_modulo},
	{"newline_to_br", 0, 0, NULL, f_newline_to_br},
	{"plus", 1, 1, NULL, f_plus},
	{"prepend", 1, 1, NULL, f_prepend},
	{"raw", 0, 0, NULL, f_raw},
	{"reject", 1, 2, NULL, f_reject},
	{"remove", 1, 1, NULL, f_remove},
	{"remove_first", 1, 1, NULL, f_remove_first},
	{"remove_last", 1, 1, NULL, f_remove_last},
	{"replace", 1, 2, NULL, f_replace},
	{"replace_first", 1, 2, NULL, f_replace_first},
	{"replace_last", 1, 2, NULL, f_replace_last},
	{"reverse", 0, 0, NULL, f_reverse},
	{"round", 0, 1, NULL, f_round},
	{"rstrip", 0, 0, NULL, f_rstrip},
	{"size", 0, 0, NULL, f_size},
	{"slice", 1, 2, NULL, f_slice},
	{"sort", 0, 1, NULL, f_sort},
	{"sort_natural", 0, 1, NULL, f_sort_natural},
	{"split", 1, 1, NULL, f_split},
	{"squish", 0, 0, NULL, f_squish},
	{"strip", 0, 0, NULL, f_strip},
	{"strip_html", 0, 0, NULL, f_strip_html},
	{"strip_newlines", 0, 0, NULL, f_strip_newlines},
	{"sum", 0, 1, NULL, f_sum},
	{"times", 1, 1, NULL, f_times},
	{"truncate", 0, 2, NULL, f_truncate},
	{"truncatewords", 0, 2, NULL, f_truncatewords},
	{"uniq", 0, 1, NULL, f_uniq},
	{"upcase", 0, 0, NULL, f_upcase},
	{"url_decode", 0, 0, NULL, f_url_decode},
	{"url_encode", 0, 0, NULL, f_url_encode},
	{"where", 1, 2, NULL, f_where},
};

const struct filter_def *tmpl_filter_find(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(FILTERS) / sizeof(FILTERS[0]); i++)
		if (strlen(FILTERS[i].name) == len &&
		    memcmp(FILTERS[i].name, name, len) == 0)
			return &FILTERS[i];
	return NULL;
}
