/*
 * value.c -- Liquid runtime values: truthiness, equality, ordering, sequences, and
 * numbers with the reference implementation's semantics.
 *
 * Design: a struct val is a small tagged union passed by value. Values of the
 * context are not converted up front: arrays and objects stay json-c objects
 * (V_JARR, V_JOBJ) read in place, so a render costs nothing per unused field
 * and never writes the context (only read-only json-c calls are made here).
 * Numbers follow Ruby Liquid: integers stay integers (overflow turns into a
 * float), and as soon as a float takes part the reference computes in BigDecimal
 * on the float's shortest decimal form, then converts back. num_arith does the
 * same with a 128-bit decimal mantissa, so 19.99 | times: 100 is 1999.0 here as
 * there, not 1998.9999999999998.
 * Invariants: (1) V_STR data is NUL-terminated; (2) nothing here allocates.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmpl/tmpl_int.h"

/* Writes v in decimal; returns the length (at most 20). */
size_t tmpl_val_fmt_int(int64_t v, char *out)
{
	char rev[24];
	uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
	size_t n = 0, o = 0;

	do {
		rev[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		out[o++] = '-';
	while (n)
		out[o++] = rev[--n];
	out[o] = 0;
	return o;
}

struct val tmpl_val_nil(void)
{
	struct val v = {.type = V_NIL};
	return v;
}

struct val tmpl_val_bool(bool b)
{
	struct val v = {.type = V_BOOL, .b = b};
	return v;
}

struct val tmpl_val_int(int64_t i)
{
	struct val v = {.type = V_INT, .i = i};
	return v;
}

struct val tmpl_val_float(double f)
{
	struct val v = {.type = V_FLOAT, .f = f};
	return v;
}

struct val tmpl_val_str(const char *p, size_t len)
{
	struct val v = {.type = V_STR};
	v.s.p = p;
	v.s.len = len;
	return v;
}

size_t tmpl_utf8_len(const char *p, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)p[i] & 0xC0) != 0x80;
	return c;
}

/* Shortest digits that round-trip: fills digits (no dot) and the decimal
 * exponent of the first digit (value = 0.d1d2... * 10^decpt). */
static int shortest(double d, char *digits, int *decpt)
{
	char tmp[40];
	int prec, nd = 0, e;
	char *p;

	/* Integral values below 2^53: the digits of the integer. */
	if (d > -9007199254740992.0 && d < 9007199254740992.0 && d != 0 &&
	    d == (double)(int64_t)d) {
		int64_t v = (int64_t)d;
		uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
		char rev[24];
		int n = 0;
		while (u) {
			rev[n++] = (char)('0' + u % 10);
			u /= 10;
		}
		*decpt = n;
		while (n > 1 && rev[0] == '0') {
			memmove(rev, rev + 1, (size_t)--n);
		}
		for (int i = 0; i < n; i++)
			digits[i] = rev[n - 1 - i];
		digits[n] = 0;
		return n;
	}
	/* Short decimals (money): the first k with round(d * 10^k) / 10^k == d gives
	 * the fewest digits; both operations are exact or correctly rounded. */
	{
		static const double p10[] = {1e0,  1e1,	 1e2,  1e3, 1e4,  1e5,
					     1e6,  1e7,	 1e8,  1e9, 1e10, 1e11,
					     1e12, 1e13, 1e14, 1e15};
		double a = d < 0 ? -d : d;
		for (int k = 1; k < 16 && a * p10[k] < 9007199254740992.0; k++) {
			double r = nearbyint(a * p10[k]);
			if (r / p10[k] == a && r >= 1) {
				uint64_t u = (uint64_t)r;
				char rev[24];
				int n = 0;
				while (u) {
					rev[n++] = (char)('0' + u % 10);
					u /= 10;
				}
				for (int i = 0; i < n; i++)
					digits[i] = rev[n - 1 - i];
				digits[n] = 0;
				*decpt = n - k;
				return n;
			}
		}
	}
	/* 15 significant digits round-trip whenever any shorter form does, and then
	 * they are that form padded with zeros (15 = DBL_DIG), so start there. */
	for (prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	p = tmp;
	if (*p == '-')
		p++;
	for (; *p && *p != 'e'; p++)
		if (isdigit((unsigned char)*p))
			digits[nd++] = *p;
	digits[nd] = 0;
	e = *p == 'e' ? atoi(p + 1) : 0;
	while (nd > 1 && digits[nd - 1] == '0')
		digits[--nd] = 0;
	*decpt = e + 1;
	return nd;
}

/* Formats like Ruby's Float#to_s: "1.5", "2.0", "1.0e+16", "1.0e-05". */
void tmpl_val_fmt_float(double d, char *out, size_t n)
{
	char digits[24];
	int decpt, nd, o = 0;
	char tmp[64];

	if (isnan(d)) {
		snprintf(out, n, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(out, n, d < 0 ? "-Infinity" : "Infinity");
		return;
	}
	if (d == 0) {
		snprintf(out, n, signbit(d) ? "-0.0" : "0.0");
		return;
	}
	nd = shortest(d, digits, &decpt);
	if (d < 0)
		tmp[o++] = '-';
	if (decpt > 0 && decpt <= 16) {
		for (int i = 0; i < decpt; i++)
			tmp[o++] = i < nd ? digits[i] : '0';
		tmp[o++] = '.';
		if (nd > decpt)
			for (int i = decpt; i < nd; i++)
				tmp[o++] = digits[i];
		else
			tmp[o++] = '0';
		tmp[o] = 0;
	} else if (decpt <= 0 && decpt > -4) {
		tmp[o++] = '0';
		tmp[o++] = '.';
		for (int i = 0; i < -decpt; i++)
			tmp[o++] = '0';
		for (int i = 0; i < nd; i++)
			tmp[o++] = digits[i];
		tmp[o] = 0;
	} else {
		tmp[o++] = digits[0];
		tmp[o++] = '.';
		if (nd > 1)
			for (int i = 1; i < nd; i++)
				tmp[o++] = digits[i];
		else
			tmp[o++] = '0';
		snprintf(tmp + o, sizeof(tmp) - o, "e%+03d", decpt - 1);
	}
	snprintf(out, n, "%s", tmp);
}

bool tmpl_val_truthy(const struct val *v)
{
	if (v->type == V_NIL)
		return false;
	if (v->type == V_BOOL)
		return v->b;
	return true;
}

bool tmpl_val_is_seq(const struct val *v)
{
	return v->type == V_ARR || v->type == V_JARR || v->type == V_RANGE;
}

size_t tmpl_val_seq_len(const struct val *v)
{
	switch (v->type) {
	case V_ARR:
		return v->a.n;
	case V_JARR:
		return json_object_array_length(v->j);
	case V_RANGE: {
		if (v->r.hi < v->r.lo)
			return 0;
		uint64_t n = (uint64_t)v->r.hi - (uint64_t)v->r.lo;
		return n >= SIZE_MAX ? SIZE_MAX : (size_t)n + 1;
	}
	default:
		return 0;
	}
}

struct val tmpl_val_from_json(struct json_object *j)
{
	struct val v = {.type = V_NIL};

	if (!j)
		return v;
	switch (json_object_get_type(j)) {
	case json_type_boolean:
		return tmpl_val_bool(json_object_get_boolean(j));
	case json_type_int:
		return tmpl_val_int(json_object_get_int64(j));
	case json_type_double:
		return tmpl_val_float(json_object_get_double(j));
	case json_type_string:
		return tmpl_val_str(json_object_get_string(j),
				    (size_t)json_object_get_string_len(j));
	case json_type_array:
		v.type = V_JARR;
		v.j = j;
		return v;
	case json_type_object:
		v.type = V_JOBJ;
		v.j = j;
		return v;
	default:
		return v;
	}
}

struct val tmpl_val_seq_at(const struct val *v, size_t i)
{
	switch (v->type) {
	case V_ARR:
		return i < v->a.n ? v->a.items[i] : tmpl_val_nil();
	case V_JARR:
		return tmpl_val_from_json(json_object_array_get_idx(v->j, i));
	case V_RANGE:
		return tmpl_val_int((int64_t)((uint64_t)v->r.lo + i));
	default:
		return tmpl_val_nil();
	}
}

size_t tmpl_val_obj_len(const struct val *v)
{
	return v->type == V_JOBJ ? (size_t)json_object_object_length(v->j) : 0;
}

bool tmpl_val_obj_get(const struct val *v, const char *key, struct val *out)
{
	struct json_object *j = NULL;

	if (v->type != V_JOBJ || !json_object_object_get_ex(v->j, key, &j))
		return false;
	*out = tmpl_val_from_json(j);
	return true;
}

static bool is_num(const struct val *v)
{
	return v->type == V_INT || v->type == V_FLOAT;
}

static double as_double(const struct val *v)
{
	return v->type == V_INT ? (double)v->i : v->f;
}

static bool json_eq(struct json_object *a, struct json_object *b, int depth);

bool tmpl_val_eq(const struct val *a, const struct val *b)
{
	if (is_num(a) && is_num(b)) {
		if (a->type == V_INT && b->type == V_INT)
			return a->i == b->i;
		return as_double(a) == as_double(b);
	}
	if (tmpl_val_is_seq(a) && tmpl_val_is_seq(b)) {
		size_t n = tmpl_val_seq_len(a);

		if (n != tmpl_val_seq_len(b))
			return false;
		if (a->type == V_RANGE && b->type == V_RANGE)
			return a->r.lo == b->r.lo && a->r.hi == b->r.hi;
		if (a->type == V_JARR && b->type == V_JARR)
			return json_eq(a->j, b->j, 0);
		for (size_t i = 0; i < n && i < 100000; i++) {
			struct val x = tmpl_val_seq_at(a, i), y = tmpl_val_seq_at(b, i);
			if (!tmpl_val_eq(&x, &y))
				return false;
		}
		return true;
	}
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case V_NIL:
	case V_BLANK:
	case V_EMPTY:
		return true;
	case V_BOOL:
		return a->b == b->b;
	case V_STR:
		return a->s.len == b->s.len && memcmp(a->s.p, b->s.p, a->s.len) == 0;
	case V_JOBJ:
		return json_eq(a->j, b->j, 0);
	case V_LOOP:
		return a->loop == b->loop;
	default:
		return false;
	}
}

static bool json_eq(struct json_object *a, struct json_object *b, int depth)
{
	struct val x, y;

	if (a == b)
		return true;
	if (depth > 64)
		return false;
	x = tmpl_val_from_json(a);
	y = tmpl_val_from_json(b);
	if (x.type == V_JARR && y.type == V_JARR) {
		size_t n = json_object_array_length(a);
		if (n != json_object_array_length(b))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!json_eq(json_object_array_get_idx(a, i),
				     json_object_array_get_idx(b, i), depth + 1))
				return false;
		return true;
	}
	if (x.type == V_JOBJ && y.type == V_JOBJ) {
		if (json_object_object_length(a) != json_object_object_length(b))
			return false;
		json_object_object_foreach(a, k, va)
		{
			struct json_object *vb;
			if (!json_object_object_get_ex(b, k, &vb) ||
			    !json_eq(va, vb, depth + 1))
				return false;
		}
		return true;
	}
	if (x.type == V_JARR || x.type == V_JOBJ || y.type == V_JARR || y.type == V_JOBJ)
		return false;
	return tmpl_val_eq(&x, &y);
}

/* Orders two numbers or two strings; *ok is false for other pairs. */
int tmpl_val_cmp(const struct val *a, const struct val *b, bool *ok)
{
	*ok = true;
	if (is_num(a) && is_num(b)) {
		if (a->type == V_INT && b->type == V_INT)
			return (a->i > b->i) - (a->i < b->i);
		double x = as_double(a), y = as_double(b);
		return (x > y) - (x < y);
	}
	if (a->type == V_STR && b->type == V_STR) {
		size_t n = a->s.len < b->s.len ? a->s.len : b->s.len;
		int c = memcmp(a->s.p, b->s.p, n);
		if (c)
			return c < 0 ? -1 : 1;
		return (a->s.len > b->s.len) - (a->s.len < b->s.len);
	}
	*ok = false;
	return 0;
}

/* Ruby's String#to_i: optional blanks, sign, digits with single underscores. */
static struct val str_to_i(const char *p, size_t n)
{
	size_t i = 0;
	bool neg = false, any = false;
	int64_t v = 0;
	double dv = 0;
	bool big = false;

	while (i < n && isspace((unsigned char)p[i]))
		i++;
	if (i < n && (p[i] == '-' || p[i] == '+'))
		neg = p[i++] == '-';
	for (; i < n; i++) {
		if (p[i] == '_' && any && i + 1 < n && isdigit((unsigned char)p[i + 1]))
			continue;
		if (!isdigit((unsigned char)p[i]))
			break;
		any = true;
		int d = p[i] - '0';
		if (!big && (__builtin_mul_overflow(v, 10, &v) ||
			     __builtin_add_overflow(v, d, &v))) {
			big = true;
			dv = (double)INT64_MAX;
		}
		if (big)
			dv = dv * 10 + d;
	}
	if (big)
		return tmpl_val_float(neg ? -dv : dv);
	return tmpl_val_int(neg ? -v : v);
}

/* Liquid's Utils.to_number: numbers as they are, "1.5" as a float, other strings
 * by to_i, anything else 0. */
struct val tmpl_num_from(const struct val *v)
{
	if (is_num(v))
		return *v;
	if (v->type == V_STR) {
		const char *p = v->s.p, *e = p + v->s.len;
		while (p < e && isspace((unsigned char)*p))
			p++;
		while (e > p && isspace((unsigned char)e[-1]))
			e--;
		const char *q = p;
		if (q < e && *q == '-')
			q++;
		const char *d0 = q;
		while (q < e && isdigit((unsigned char)*q))
			q++;
		if (q > d0 && q < e && *q == '.') {
			const char *d1 = ++q;
			while (q < e && isdigit((unsigned char)*q))
				q++;
			if (q > d1 && q == e) {
				char tmp[64];
				size_t n = (size_t)(e - p);
				if (n < sizeof(tmp)) {
					memcpy(tmp, p, n);
					tmp[n] = 0;
					return tmpl_val_float(strtod(tmp, NULL));
				}
			}
		}
		return str_to_i(v->s.p, v->s.len);
	}
	return tmpl_val_int(0);
}

/* ---- exact decimal arithmetic on shortest representations ---- */

struct dec {
	__int128 m;
	int e; /* value = m * 10^e */
};

static void dec_of(const struct val *v, struct dec *d)
{
	char digits[24];
	int decpt, nd;

	if (v->type == V_INT) {
		d->m = v->i;
		d->e = 0;
		return;
	}
	if (v->f == 0) {
		d->m = 0;
		d->e = 0;
		return;
	}
	nd = shortest(v->f, digits, &decpt);
	d->m = 0;
	for (int i = 0; i < nd; i++)
		d->m = d->m * 10 + (digits[i] - '0');
	if (v->f < 0)
		d->m = -d->m;
	d->e = decpt - nd;
}

static double dec_to_double(const struct dec *d)
{
	static const double p10[] = {1e0,  1e1,	 1e2,  1e3,  1e4,  1e5,	 1e6,  1e7,
				     1e8,  1e9,	 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
				     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
	char tmp[80], rev[50];

	/* Exact operands, one correctly rounded operation (Clinger's fast path). */
	if (d->m > -((__int128)1 << 53) && d->m < ((__int128)1 << 53) && d->e >= -22 &&
	    d->e <= 22)
		return d->e >= 0 ? (double)(int64_t)d->m * p10[d->e]
				 : (double)(int64_t)d->m / p10[-d->e];
	int n = 0, o = 0;
	unsigned __int128 m =
		d->m < 0 ? -(unsigned __int128)d->m : (unsigned __int128)d->m;

	do {
		rev[n++] = (char)('0' + (int)(m % 10));
		m /= 10;
	} while (m);
	if (d->m < 0)
		tmp[o++] = '-';
	while (n)
		tmp[o++] = rev[--n];
	snprintf(tmp + o, sizeof(tmp) - o, "e%d", d->e);
	return strtod(tmp, NULL);
}

static __int128 pow10i(int k)
{
	__int128 p = 1;
	while (k-- > 0)
		p *= 10;
	return p;
}

/* Brings both to the smaller exponent; false when the gap is too wide. */
static bool dec_align(struct dec *a, struct dec *b)
{
	int diff = a->e - b->e;

	if (diff > 18 || diff < -18)
		return false;
	if (diff > 0) {
		a->m *= pow10i(diff);
		a->e = b->e;
	} else if (diff < 0) {
		b->m *= pow10i(-diff);
		b->e = a->e;
	}
	return true;
}

/* a op b for op in + - * / %; both operands are numbers (num_from). Returns 0,
 * or -1 for division by zero. */
int tmpl_num_arith(char op, const struct val *a, const struct val *b, struct val *out)
{
	if (a->type == V_INT && b->type == V_INT) {
		int64_t r;
		switch (op) {
		case '+':
			if (!__builtin_add_overflow(a->i, b->i, &r))
				return *out = tmpl_val_int(r), 0;
			break;
		case '-':
			if (!__builtin_sub_overflow(a->i, b->i, &r))
				return *out = tmpl_val_int(r), 0;
			break;
		case '*':
			if (!__builtin_mul_overflow(a->i, b->i, &r))
				return *out = tmpl_val_int(r), 0;
			break;
		case '/':
			if (b->i == 0)
				return -1;
			if (b->i == -1) {
				if (a->i == INT64_MIN)
					break;
				return *out = tmpl_val_int(-a->i), 0;
			}
			r = a->i / b->i;
			if (a->i % b->i != 0 && ((a->i < 0) != (b->i < 0)))
				r--;
			return *out = tmpl_val_int(r), 0;
		case '%':
			if (b->i == 0)
				return -1;
			if (b->i == -1)
				return *out = tmpl_val_int(0), 0;
			r = a->i % b->i;
			if (r != 0 && ((r < 0) != (b->i < 0)))
				r += b->i;
			return *out = tmpl_val_int(r), 0;
		}
		/* Integer overflow: Ruby goes to Bignum; we go to a float. */
		double x = (double)a->i, y = (double)b->i;
		*out = tmpl_val_float(op == '+'	  ? x + y
				      : op == '-' ? x - y
				      : op == '*' ? x * y
						  : x / y);
		return 0;
	}
	double x = as_double(a), y = as_double(b);
	if ((op == '/' || op == '%') && y == 0)
		return -1;
	if (op == '/' || !isfinite(x) || !isfinite(y)) {
		*out = tmpl_val_float(op == '+'	  ? x + y
				      : op == '-' ? x - y
				      : op == '*' ? x * y
				      : op == '/' ? x / y
						  : fmod(x, y));
		return 0;
	}
	struct dec da, db, dr;
	dec_of(a, &da);
	dec_of(b, &db);
	if (op == '*') {
		dr.m = da.m * db.m;
		dr.e = da.e + db.e;
		*out = tmpl_val_float(dec_to_double(&dr));
		return 0;
	}
	if (!dec_align(&da, &db)) {
		double r = op == '+' ? x + y : op == '-' ? x - y : fmod(x, y);
		if (op == '%' && r != 0 && ((r < 0) != (y < 0)))
			r += y;
		*out = tmpl_val_float(r);
		return 0;
	}
	dr.e = da.e;
	if (op == '+')
		dr.m = da.m + db.m;
	else if (op == '-')
		dr.m = da.m - db.m;
	else {
		dr.m = da.m % db.m;
		if (dr.m != 0 && ((dr.m < 0) != (db.m < 0)))
			dr.m += db.m;
	}
	*out = tmpl_val_float(dec_to_double(&dr));
	return 0;
}

/* Rounds half away from zero at nd decimals, on the decimal form like
 * BigDecimal#round. nd <= 0 gives an integer, as Liquid's round does. */
int tmpl_num_round(const struct val *v, int64_t nd, struct val *out)
{
	struct dec d;

	if (v->type == V_INT) {
		*out = *v;
		return 0;
	}
	if (!isfinite(v->f)) {
		*out = *v;
		return 0;
	}
	dec_of(v, &d);
	if (nd > 300)
		nd = 300;
	if (nd < -300)
		nd = -300;
	if (-(int64_t)d.e > nd) {
		int64_t k = -(int64_t)d.e - nd;
		if (k > 36) {
			d.m = 0;
		} else {
			__int128 p = pow10i((int)k), q = d.m / p, rem = d.m % p;
			if (rem < 0)
				rem = -rem;
			if (rem * 2 >= p)
				q += d.m < 0 ? -1 : 1;
			d.m = q;
		}
		d.e = (int)-nd;
	}
	double r = dec_to_double(&d);
	if (nd <= 0) {
		if (r >= -9.2e18 && r <= 9.2e18)
			*out = tmpl_val_int((int64_t)r);
		else
			*out = tmpl_val_float(r);
	} else {
		*out = tmpl_val_float(r);
	}
	return 0;
}
