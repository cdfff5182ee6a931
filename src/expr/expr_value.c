/*
 * expr_value.c -- CEL values: lists and maps (native or json-c views), equality,
 * ordering, UTF-8, and printing as CEL literals or as string() text.
 *
 * Design: a list or map is either an arena array (items, len) or a view of a json-c
 * array/object (EXPR_F_JSON); every reader goes through expr_list_get,
 * expr_map_find and expr_map_next so the evaluator never copies a variable. Scalars read
 * out of json are converted on access without allocation (a string points into the json
 * object). Invariants: (1) numeric equality and ordering across int, uint and double
 * follow cel-go exactly (a double outside the int range compares beyond every int; inside
 * it the int is converted to double); (2) NaN is unordered and equal to nothing;
 * (3) values of different non-numeric kinds are unequal, never an error; (4) a
 * field lookup in a json object uses the hash computed at compile time when the
 * object's table hashes with the same function, else a plain lookup.
 * References: cel-spec langdef.md "Equality", "Numeric values"; Go strconv 'g'
 * formatting, which string(double) reproduces.
 */
#include <inttypes.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "expr/expr_int.h"

const char *expr_kind_name(const struct expr_value *v)
{
	static const char *names[] = {"null_type", "bool",  "int",  "uint", "double",
				      "string",	   "bytes", "list", "map",  "timestamp",
				      "duration",  "type",  "error"};
	return v->kind <= EXPR_ERROR ? names[v->kind] : "?";
}

struct expr_value expr_value_from_json(struct json_object *j)
{
	struct expr_value v = {.kind = EXPR_NULL};

	switch (json_object_get_type(j)) {
	case json_type_null:
		break;
	case json_type_boolean:
		v = mk_bool(json_object_get_boolean(j));
		break;
	case json_type_int:
		v = mk_int(json_object_get_int64(j));
		/* json-c keeps integers above INT64_MAX as uint64: do not clamp them */
		if (v.as.i == INT64_MAX &&
		    json_object_get_uint64(j) > (uint64_t)INT64_MAX)
			v = mk_uint(json_object_get_uint64(j));
		break;
	case json_type_double:
		v = mk_double(json_object_get_double(j));
		break;
	case json_type_string:
		v = mk_str(json_object_get_string(j),
			   (size_t)json_object_get_string_len(j));
		break;
	case json_type_object:
		v.kind = EXPR_MAP;
		v.flags = EXPR_F_JSON;
		v.len = (uint32_t)json_object_object_length(j);
		v.as.json = j;
		break;
	case json_type_array:
		v.kind = EXPR_LIST;
		v.flags = EXPR_F_JSON;
		v.len = (uint32_t)json_object_array_length(j);
		v.as.json = j;
		break;
	}
	return v;
}

struct expr_value expr_list_get(const struct expr_value *v, size_t i)
{
	if (v->flags & EXPR_F_JSON)
		return expr_value_from_json(json_object_array_get_idx(v->as.json, i));
	return v->as.items[i];
}

void expr_map_iter_init(struct map_iter *it, const struct expr_value *m)
{
	it->m = m;
	it->i = 0;
	it->entry = (m->flags & EXPR_F_JSON) ? json_object_get_object(m->as.json)->head
					     : NULL;
}

bool expr_map_next(struct map_iter *it, struct expr_value *k, struct expr_value *val)
{
	if (it->m->flags & EXPR_F_JSON) {
		struct lh_entry *e = it->entry;

		if (!e)
			return false;
		const char *key = lh_entry_k(e);

		*k = mk_str(key, strlen(key));
		if (val)
			*val = expr_value_from_json((struct json_object *)lh_entry_v(e));
		it->entry = e->next;
		return true;
	}
	if (it->i >= it->m->len)
		return false;
	*k = it->m->as.items[2 * it->i];
	if (val)
		*val = it->m->as.items[2 * it->i + 1];
	it->i++;
	return true;
}

bool expr_map_find_str(const struct expr_value *m, const char *s, size_t len,
		       struct expr_value *out)
{
	if (m->flags & EXPR_F_JSON) {
		struct json_object *child;
		char tmp[256];

		if (s[len] != '\0') {
			/* json-c wants a NUL-terminated key */
			if (len >= sizeof(tmp) || memchr(s, '\0', len))
				goto slow;
			memcpy(tmp, s, len);
			tmp[len] = '\0';
			s = tmp;
		}
		if (!json_object_object_get_ex(m->as.json, s, &child))
			return false;
		if (out)
			*out = expr_value_from_json(child);
		return true;
	slow : {
		json_object_object_foreach(m->as.json, key, val)
		{
			if (strlen(key) == len && memcmp(key, s, len) == 0) {
				if (out)
					*out = expr_value_from_json(val);
				return true;
			}
		}
		return false;
	}
	}
	for (size_t i = 0; i < m->len; i++) {
		const struct expr_value *k = &m->as.items[2 * i];

		if (k->kind == EXPR_STRING && k->len == len &&
		    memcmp(k->as.s, s, len) == 0) {
			if (out)
				*out = m->as.items[2 * i + 1];
			return true;
		}
	}
	return false;
}

static lh_hash_fn *key_hash_fn;
static pthread_once_t key_hash_once = PTHREAD_ONCE_INIT;

/* json-c objects all hash string keys with one global function; ask a throwaway
 * object which one, once. */
static void key_hash_init(void)
{
	struct json_object *o = json_object_new_object();

	key_hash_fn = json_object_get_object(o)->hash_fn;
	json_object_put(o);
}

void expr_field_hash(struct node *n)
{
	pthread_once(&key_hash_once, key_hash_init);
	n->hash_fn = (const void *)key_hash_fn;
	n->hash = key_hash_fn(n->name);
}

bool expr_map_find_field(const struct expr_value *m, const struct node *n,
			 struct expr_value *out)
{
	if (m->flags & EXPR_F_JSON) {
		struct lh_table *t = json_object_get_object(m->as.json);

		if ((const void *)t->hash_fn == n->hash_fn) {
			struct lh_entry *e =
				lh_table_lookup_entry_w_hash(t, n->name, n->hash);

			if (!e)
				return false;
			if (out)
				*out = expr_value_from_json(
					(struct json_object *)lh_entry_v(e));
			return true;
		}
	}
	return expr_map_find_str(m, n->name, n->len, out);
}

static bool is_num(const struct expr_value *v)
{
	return v->kind == EXPR_INT || v->kind == EXPR_UINT || v->kind == EXPR_DOUBLE;
}

bool expr_map_find(const struct expr_value *m, const struct expr_value *key,
		   struct expr_value *out)
{
	if (key->kind == EXPR_STRING)
		return expr_map_find_str(m, key->as.s, key->len, out);
	if (m->flags & EXPR_F_JSON)
		return false;
	if (!is_num(key) && key->kind != EXPR_BOOL)
		return false;
	for (size_t i = 0; i < m->len; i++) {
		const struct expr_value *k = &m->as.items[2 * i];

		if ((k->kind == key->kind || (is_num(k) && is_num(key))) &&
		    expr_val_equal(k, key)) {
			if (out)
				*out = m->as.items[2 * i + 1];
			return true;
		}
	}
	return false;
}

static int cmp3(double a, double b)
{
	if (a < b)
		return -1;
	if (a > b)
		return 1;
	if (a == b)
		return 0;
	return 2;
}

/* int vs double the way cel-go does it (see the header, invariant 1). */
static int cmp_int_double(int64_t i, double d)
{
	if (isnan(d))
		return 2;
	if (d < -9223372036854775808.0)
		return 1;
	if (d > 9223372036854775807.0)
		return -1;
	return cmp3((double)i, d);
}

static int cmp_uint_double(uint64_t u, double d)
{
	if (isnan(d))
		return 2;
	if (d < 0)
		return 1;
	if (d > 18446744073709551615.0)
		return -1;
	return cmp3((double)u, d);
}

static int cmp_num(const struct expr_value *a, const struct expr_value *b)
{
	switch (a->kind * 16 + b->kind) {
	case EXPR_INT * 16 + EXPR_INT:
		return a->as.i < b->as.i ? -1 : a->as.i > b->as.i;
	case EXPR_UINT * 16 + EXPR_UINT:
		return a->as.u < b->as.u ? -1 : a->as.u > b->as.u;
	case EXPR_DOUBLE * 16 + EXPR_DOUBLE:
		return cmp3(a->as.d, b->as.d);
	case EXPR_INT * 16 + EXPR_UINT:
		if (a->as.i < 0)
			return -1;
		return (uint64_t)a->as.i < b->as.u ? -1 : (uint64_t)a->as.i > b->as.u;
	case EXPR_UINT * 16 + EXPR_INT:
		if (b->as.i < 0)
			return 1;
		return a->as.u < (uint64_t)b->as.i ? -1 : a->as.u > (uint64_t)b->as.i;
	case EXPR_INT * 16 + EXPR_DOUBLE:
		return cmp_int_double(a->as.i, b->as.d);
	case EXPR_DOUBLE * 16 + EXPR_INT: {
		int r = cmp_int_double(b->as.i, a->as.d);
		return r == 2 ? 2 : -r;
	}
	case EXPR_UINT * 16 + EXPR_DOUBLE:
		return cmp_uint_double(a->as.u, b->as.d);
	case EXPR_DOUBLE * 16 + EXPR_UINT: {
		int r = cmp_uint_double(b->as.u, a->as.d);
		return r == 2 ? 2 : -r;
	}
	}
	return 3;
}

static int cmp_mem(const char *a, size_t al, const char *b, size_t bl)
{
	int r = memcmp(a, b, al < bl ? al : bl);

	if (r)
		return r < 0 ? -1 : 1;
	return al < bl ? -1 : al > bl;
}

int expr_val_compare(const struct expr_value *a, const struct expr_value *b)
{
	if (is_num(a) && is_num(b))
		return cmp_num(a, b);
	if (a->kind != b->kind)
		return 3;
	switch (a->kind) {
	case EXPR_STRING:
	case EXPR_BYTES:
		return cmp_mem(a->as.s, a->len, b->as.s, b->len);
	case EXPR_BOOL:
		return (int)a->as.b - (int)b->as.b;
	case EXPR_TIMESTAMP:
	case EXPR_DURATION:
		if (a->as.sec != b->as.sec)
			return a->as.sec < b->as.sec ? -1 : 1;
		return a->nsec < b->nsec ? -1 : a->nsec > b->nsec;
	default:
		return 3;
	}
}

bool expr_val_equal(const struct expr_value *a, const struct expr_value *b)
{
	if (is_num(a) && is_num(b))
		return cmp_num(a, b) == 0;
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case EXPR_NULL:
		return true;
	case EXPR_BOOL:
		return a->as.b == b->as.b;
	case EXPR_STRING:
	case EXPR_BYTES:
	case EXPR_TYPE:
		return a->len == b->len && memcmp(a->as.s, b->as.s, a->len) == 0;
	case EXPR_TIMESTAMP:
	case EXPR_DURATION:
		return a->as.sec == b->as.sec && a->nsec == b->nsec;
	case EXPR_LIST:
		if (a->len != b->len)
			return false;
		for (size_t i = 0; i < a->len; i++) {
			struct expr_value x = expr_list_get(a, i),
					  y = expr_list_get(b, i);

			if (!expr_val_equal(&x, &y))
				return false;
		}
		return true;
	case EXPR_MAP: {
		struct map_iter it;
		struct expr_value k, v, w;

		if (a->len != b->len)
			return false;
		expr_map_iter_init(&it, a);
		while (expr_map_next(&it, &k, &v)) {
			if (!expr_map_find(b, &k, &w) || !expr_val_equal(&v, &w))
				return false;
		}
		return true;
	}
	default:
		return false;
	}
}

/* ---- UTF-8 ---- */

size_t expr_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t c = s[0];
	size_t n;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		c &= 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		c &= 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		c &= 0x07;
	} else {
		*cp = 0xFFFD;
		return 1;
	}
	if (n > len)
		goto bad;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			goto bad;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
	    c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		goto bad;
	*cp = c;
	return n;
bad:
	*cp = 0xFFFD;
	return 1;
}

bool expr_utf8_valid(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n;

		if ((unsigned char)s[i] < 0x80) {
			i++;
			continue;
		}
		n = expr_utf8_decode((const unsigned char *)s + i, len - i, &cp);
		if (cp == 0xFFFD && n == 1)
			return false;
		i += n;
	}
	return true;
}

size_t expr_utf8_count(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

size_t expr_utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* ---- printing ---- */

/*
 * Appends d the way Go's strconv.FormatFloat(d, 'g', -1, 64) does (cel-go's
 * string(double)): the shortest digits that read back as d, in exponent form when
 * the decimal exponent is < -4 or >= 6. With literal, NaN and infinities become
 * double("...") and a '.0' is added to integral values so the text reads back as a
 * double.
 */
void expr_print_double(double d, struct buf *out, bool literal)
{
	char tmp[40], digits[24];
	int prec, exp, nd = 0;

	if (isnan(d) || isinf(d)) {
		const char *s = isnan(d) ? "NaN"
				: d > 0	 ? (literal ? "+Infinity" : "+Inf")
					 : (literal ? "-Infinity" : "-Inf");
		if (literal)
			buf_printf(out, "double(\"%s\")", s);
		else
			buf_puts(out, s);
		return;
	}
	if (d == 0) {
		buf_puts(out, signbit(d) ? (literal ? "-0.0" : "-0")
					 : (literal ? "0.0" : "0"));
		return;
	}
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	/* tmp is "-d.ddde+XX": collect the digits and the exponent */
	const char *s = tmp;
	bool neg = *s == '-';

	if (neg)
		s++;
	for (; *s && *s != 'e'; s++)
		if (*s >= '0' && *s <= '9')
			digits[nd++] = *s;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';
	exp = atoi(s + 1);
	if (neg)
		buf_putc(out, '-');
	/* Go: "if precision was the shortest possible, use precision 6 for this
	 * decision", so 1e+06 but 123456. */
	int eprec = 6;

	if (exp < -4 || exp >= eprec) {
		buf_putc(out, digits[0]);
		if (nd > 1) {
			buf_putc(out, '.');
			buf_append(out, digits + 1, (size_t)nd - 1);
		}
		buf_printf(out, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
		return;
	}
	if (exp < 0) {
		buf_puts(out, "0.");
		for (int i = 0; i < -exp - 1; i++)
			buf_putc(out, '0');
		buf_append(out, digits, (size_t)nd);
		return;
	}
	for (int i = 0; i <= exp; i++)
		buf_putc(out, i < nd ? digits[i] : '0');
	if (nd > exp + 1) {
		buf_putc(out, '.');
		buf_append(out, digits + exp + 1, (size_t)(nd - exp - 1));
	} else if (literal) {
		buf_puts(out, ".0");
	}
}

static void print_quoted(const char *s, size_t len, struct buf *out, bool bytes)
{
	if (bytes)
		buf_putc(out, 'b');
	buf_putc(out, '"');
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)s[i];
		uint32_t cp;
		size_t n;

		switch (ch) {
		case '"':
			buf_puts(out, "\\\"");
			i++;
			continue;
		case '\\':
			buf_puts(out, "\\\\");
			i++;
			continue;
		case '\n':
			buf_puts(out, "\\n");
			i++;
			continue;
		case '\r':
			buf_puts(out, "\\r");
			i++;
			continue;
		case '\t':
			buf_puts(out, "\\t");
			i++;
			continue;
		case '\a':
			buf_puts(out, "\\a");
			i++;
			continue;
		case '\b':
			buf_puts(out, "\\b");
			i++;
			continue;
		case '\f':
			buf_puts(out, "\\f");
			i++;
			continue;
		case '\v':
			buf_puts(out, "\\v");
			i++;
			continue;
		default:
			break;
		}
		if (ch < 0x20 || ch == 0x7F) {
			buf_printf(out, "\\x%02x", ch);
			i++;
			continue;
		}
		if (ch < 0x80) {
			buf_putc(out, (char)ch);
			i++;
			continue;
		}
		n = expr_utf8_decode((const unsigned char *)s + i, len - i, &cp);
		if (bytes || (cp == 0xFFFD && n == 1)) {
			/* bytes print octet by octet; a bad UTF-8 octet likewise */
			buf_printf(out, "\\x%02x", ch);
			i++;
			continue;
		}
		buf_append(out, s + i, n);
		i += n;
	}
	buf_putc(out, '"');
}

struct sorted_entry {
	char *key; /* printed key, owned */
	struct expr_value val;
};

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct sorted_entry *)a)->key,
		      ((const struct sorted_entry *)b)->key);
}

/* A map in format("%s") form: entries sorted by their printed key, as cel-go. */
static enum nerr print_sorted_map(const struct expr_value *v, struct buf *out)
{
	struct sorted_entry *e = calloc(v->len ? v->len : 1, sizeof(*e));
	struct map_iter it;
	struct expr_value k;
	size_t n = 0;
	enum nerr rc = NERR_OK;

	if (!e)
		return NERR_NOMEM;
	expr_map_iter_init(&it, v);
	while (n < v->len && expr_map_next(&it, &k, &e[n].val)) {
		struct buf kb;

		buf_init(&kb, 0);
		expr_val_print(&k, &kb, PRINT_FORMAT);
		e[n++].key = buf_take(&kb);
	}
	qsort(e, n, sizeof(*e), cmp_entry);
	rc = buf_putc(out, '{');
	for (size_t i = 0; i < n && rc == NERR_OK; i++) {
		if (i)
			rc = buf_puts(out, ", ");
		if (rc == NERR_OK)
			rc = buf_puts(out, e[i].key);
		if (rc == NERR_OK)
			rc = buf_puts(out, ": ");
		if (rc == NERR_OK)
			rc = expr_val_print(&e[i].val, out, PRINT_FORMAT);
	}
	for (size_t i = 0; i < n; i++)
		free(e[i].key);
	free(e);
	return rc == NERR_OK ? buf_putc(out, '}') : rc;
}

enum nerr expr_val_print(const struct expr_value *v, struct buf *out,
			 enum print_mode mode)
{
	char tmp[48];
	bool literal = mode == PRINT_LITERAL;
	enum nerr rc = NERR_OK;

	switch (v->kind) {
	case EXPR_NULL:
		return buf_puts(out, "null");
	case EXPR_BOOL:
		return buf_puts(out, v->as.b ? "true" : "false");
	case EXPR_INT:
		return buf_printf(out, "%" PRId64, v->as.i);
	case EXPR_UINT:
		return buf_printf(out, "%" PRIu64 "%s", v->as.u, literal ? "u" : "");
	case EXPR_DOUBLE:
		if (mode == PRINT_FORMAT && (isnan(v->as.d) || isinf(v->as.d)))
			return buf_puts(out, isnan(v->as.d) ? "NaN"
					     : v->as.d > 0  ? "Infinity"
							    : "-Infinity");
		expr_print_double(v->as.d, out, literal);
		return NERR_OK;
	case EXPR_STRING:
	case EXPR_BYTES:
		if (literal)
			print_quoted(v->as.s, v->len, out, v->kind == EXPR_BYTES);
		else
			buf_append(out, v->as.s, v->len);
		return NERR_OK;
	case EXPR_TIMESTAMP:
		expr_ts_format(v->as.sec, v->nsec, tmp);
		return literal ? buf_printf(out, "timestamp(\"%s\")", tmp)
			       : buf_puts(out, tmp);
	case EXPR_DURATION:
		expr_dur_format(v->as.sec, v->nsec, tmp);
		return literal ? buf_printf(out, "duration(\"%s\")", tmp)
			       : buf_puts(out, tmp);
	case EXPR_TYPE:
		return buf_append(out, v->as.s, v->len);
	case EXPR_ERROR:
		return buf_printf(out, "error(%.*s)", (int)v->len, v->as.s);
	case EXPR_LIST:
		rc = buf_putc(out, '[');
		for (size_t i = 0; i < v->len && rc == NERR_OK; i++) {
			struct expr_value x = expr_list_get(v, i);

			if (i)
				rc = buf_puts(out, ", ");
			if (rc == NERR_OK)
				rc = expr_val_print(&x, out, mode);
		}
		return rc == NERR_OK ? buf_putc(out, ']') : rc;
	case EXPR_MAP: {
		struct map_iter it;
		struct expr_value k, x;
		bool first = true;

		if (mode == PRINT_FORMAT)
			return print_sorted_map(v, out);
		rc = buf_putc(out, '{');
		expr_map_iter_init(&it, v);
		while (rc == NERR_OK && expr_map_next(&it, &k, &x)) {
			if (!first)
				rc = buf_puts(out, ", ");
			first = false;
			if (rc == NERR_OK)
				rc = expr_val_print(&k, out, mode);
			if (rc == NERR_OK)
				rc = buf_puts(out, ": ");
			if (rc == NERR_OK)
				rc = expr_val_print(&x, out, mode);
		}
		return rc == NERR_OK ? buf_putc(out, '}') : rc;
	}
	}
	return NERR_INVAL;
}

enum nerr expr_value_format(const struct expr_value *v, struct buf *out)
{
	size_t before = out->len;
	enum nerr rc = expr_val_print(v, out, PRINT_LITERAL);

	/* A capped buffer that overflowed mid-way is left as it was. */
	if (rc != NERR_OK && out->data) {
		out->len = before;
		out->data[before] = '\0';
	}
	return rc;
}

struct json_object *expr_value_to_json(const struct expr_value *v)
{
	char tmp[48];

	switch (v->kind) {
	case EXPR_NULL:
	case EXPR_ERROR:
		return NULL;
	case EXPR_BOOL:
		return json_object_new_boolean(v->as.b);
	case EXPR_INT:
		return json_object_new_int64(v->as.i);
	case EXPR_UINT:
		return json_object_new_uint64(v->as.u);
	case EXPR_DOUBLE:
		/* JSON has no NaN or infinities: spell them as strings */
		if (isnan(v->as.d) || isinf(v->as.d))
			return json_object_new_string(isnan(v->as.d) ? "NaN"
						      : v->as.d > 0  ? "Infinity"
								     : "-Infinity");
		return json_object_new_double(v->as.d);
	case EXPR_STRING:
	case EXPR_TYPE:
		return json_object_new_string_len(v->as.s, (int)v->len);
	case EXPR_BYTES: {
		/* bytes as an array of octets: JSON has no binary type */
		struct json_object *a = json_object_new_array();

		for (size_t i = 0; i < v->len; i++)
			json_object_array_add(
				a, json_object_new_int((unsigned char)v->as.s[i]));
		return a;
	}
	case EXPR_TIMESTAMP:
		expr_ts_format(v->as.sec, v->nsec, tmp);
		return json_object_new_string(tmp);
	case EXPR_DURATION:
		expr_dur_format(v->as.sec, v->nsec, tmp);
		return json_object_new_string(tmp);
	case EXPR_LIST: {
		struct json_object *a = json_object_new_array();

		for (size_t i = 0; i < v->len; i++) {
			struct expr_value x = expr_list_get(v, i);

			json_object_array_add(a, expr_value_to_json(&x));
		}
		return a;
	}
	case EXPR_MAP: {
		struct json_object *o = json_object_new_object();
		struct map_iter it;
		struct expr_value k, x;
		struct buf kb;

		buf_init(&kb, 0);
		expr_map_iter_init(&it, v);
		while (expr_map_next(&it, &k, &x)) {
			buf_reset(&kb);
			expr_val_print(&k, &kb, PRINT_STRING);
			json_object_object_add(o, buf_str(&kb), expr_value_to_json(&x));
		}
		buf_fini(&kb);
		return o;
	}
	}
	return NULL;
}
