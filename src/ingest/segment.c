/*
 * segment.c -- strict JSON for request bodies, and the Segment spec's rules for
 * the six calls and the batch envelope.
 *
 * Design: the HTTP loop thread calls this for every ingest request, so it is
 * allocation-light and single-pass. Parsing is two passes over the body: our
 * own RFC 8259 validator first, then json-c to build the tree. json-c 0.16's
 * "strict" mode still accepts NaN, Infinity, 1e400, single-quoted strings, raw
 * control characters, overlong UTF-8 and surrogates, stops at a NUL byte, and
 * silently clamps integers beyond 64 bits (99999999999999999999 becomes
 * UINT64_MAX), so it cannot be the gatekeeper. The validator is iterative (no
 * recursion a client could exhaust), knows the path of the value it is reading
 * so errors name a field, and reports byte offset, line and column. json-c then
 * runs with STRICT | VALIDATE_UTF8 and the same depth as a second line.
 * Normalization edits the json-c tree in place; the caller serializes it.
 *
 * Invariants: (1) a tree returned by segment_parse_json() came from a body that
 *   passed the validator: every integer fits in int64, every double is finite,
 *   no string or key contains U+0000, all text is valid UTF-8 without
 *   surrogates, nesting <= max_depth. (2) After segment_normalize() returns
 *   NERR_OK the event has "type", "messageId", "timestamp", "receivedAt" as
 *   strings, at least one of non-empty string "userId"/"anonymousId", no
 *   "writeKey", every known field has its spec type, and it serializes to at
 *   most max_event_bytes. (3) Duplicate object keys: the last one wins (what
 *   JSON.parse and Segment's Go API do); the key keeps its first position.
 *
 * References: RFC 8259 (JSON), RFC 3629 (UTF-8), RFC 4122 (UUID v4), Segment
 * HTTP Tracking API and Spec (common fields, timestamps, batch).
 */
#include "ingest/segment.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/clock.h"
#include "base/jtok.h"
#include "base/mem.h"

#define EVENT_NAME_MAX_CHARS 200
#define MESSAGE_ID_MAX_CHARS 100
#define NUMBER_MAX_CHARS     128
/* 9999-12-31T23:59:59.999Z, the last instant clock_parse_rfc3339 can read. */
#define WALL_MS_MAX 253402300799999LL

static const char *const type_names[SEGMENT__COUNT] = {
	[SEGMENT_TRACK] = "track", [SEGMENT_IDENTIFY] = "identify",
	[SEGMENT_PAGE] = "page",   [SEGMENT_SCREEN] = "screen",
	[SEGMENT_ALIAS] = "alias", [SEGMENT_GROUP] = "group",
};

void segment_limits_default(struct segment_limits *lim)
{
	lim->max_depth = 32;
	lim->max_event_bytes = 32 * 1024;
	lim->max_batch_items = 1000;
}

const char *segment_type_name(enum segment_type t)
{
	return (unsigned)t < SEGMENT__COUNT ? type_names[t] : "?";
}

int segment_type_from_name(const char *name)
{
	if (!name)
		return -1;
	for (int i = 0; i < SEGMENT__COUNT; i++)
		if (strcmp(name, type_names[i]) == 0)
			return i;
	return -1;
}

/* ---- the validator ---------------------------------------------------- */

/* One open container. For objects, key is the raw text of the member being
 * read (NULL while the key itself is read); for arrays, index is the element. */
struct frame {
	bool in_obj;
	unsigned index;
	const unsigned char *key;
	size_t key_len;
};

struct scan {
	const unsigned char *start, *p, *end;
	int depth, max_depth;
	const char *err; /* static sentence, set on failure */
	char err_buf[64];
	struct frame st[SEGMENT_DEPTH_CAP];
};

static int scan_fail(struct scan *s, const char *err)
{
	s->err = err;
	return -1;
}

static void skip_ws(struct scan *s)
{
	while (s->p < s->end &&
	       (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *cp)
{
	unsigned v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*cp = v;
	return 0;
}

/* Returns the length of the well-formed UTF-8 sequence at p (RFC 3629 table:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p), n;
	unsigned char lo = 0x80, hi = 0xBF, c = p[0];

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/* Reads a string token; s->p is at the opening quote. */
static int scan_string(struct scan *s)
{
	s->p++;
	for (;;) {
		if (s->p >= s->end)
			return scan_fail(s, "unterminated string");
		unsigned char c = *s->p;

		if (c == '"') {
			s->p++;
			return 0;
		}
		if (c == '\\') {
			unsigned cp, lo;

			if (s->end - s->p < 2)
				return scan_fail(s, "unterminated string");
			switch (s->p[1]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				s->p += 2;
				continue;
			case 'u':
				break;
			default:
				return scan_fail(s, "invalid escape sequence in string");
			}
			if (hex4(s->p + 2, s->end, &cp))
				return scan_fail(s, "invalid \\u escape in string");
			if (cp == 0)
				return scan_fail(s, "\\u0000 is not allowed in strings");
			if (cp >= 0xDC00 && cp <= 0xDFFF)
				return scan_fail(s, "unpaired surrogate in \\u escape");
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (s->end - s->p < 12 || s->p[6] != '\\' ||
				    s->p[7] != 'u' || hex4(s->p + 8, s->end, &lo) ||
				    lo < 0xDC00 || lo > 0xDFFF)
					return scan_fail(
						s, "unpaired surrogate in \\u escape");
				s->p += 6;
			}
			s->p += 6;
			continue;
		}
		if (c == 0)
			return scan_fail(s, "NUL byte in string");
		if (c < 0x20)
			return scan_fail(s, "unescaped control character in string");
		if (c < 0x80) {
			s->p++;
			continue;
		}
		size_t n = utf8_seq(s->p, s->end);

		if (n == 0)
			return scan_fail(s, "invalid UTF-8 in string");
		s->p += n;
	}
}

static bool is_digit(const struct scan *s)
{
	return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* Reads a number token. Integers must fit in int64 (json-c would clamp them);
 * other numbers must be finite doubles (underflow to zero is accepted). */
static int scan_number(struct scan *s)
{
	const unsigned char *b = s->p;
	bool neg = false, is_int = true;

	if (*s->p == '-') {
		neg = true;
		s->p++;
	}
	if (!is_digit(s))
		return scan_fail(s, "invalid number");
	if (*s->p == '0') {
		s->p++;
		if (is_digit(s))
			return scan_fail(s, "leading zeros are not allowed in numbers");
	} else {
		while (is_digit(s))
			s->p++;
	}
	if (s->p < s->end && *s->p == '.') {
		is_int = false;
		s->p++;
		if (!is_digit(s))
			return scan_fail(s, "a digit must follow the decimal point");
		while (is_digit(s))
			s->p++;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		is_int = false;
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!is_digit(s))
			return scan_fail(s, "a digit must follow the exponent");
		while (is_digit(s))
			s->p++;
	}
	if (is_int) {
		uint64_t v = 0,
			 limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;

		for (const unsigned char *q = b + neg; q < s->p; q++) {
			unsigned d = *q - '0';

			if (v > (limit - d) / 10) {
				s->p = b;
				return scan_fail(s, "integer out of the 64-bit range");
			}
			v = v * 10 + d;
		}
		return 0;
	}
	size_t len = (size_t)(s->p - b);
	char tmp[NUMBER_MAX_CHARS + 1];

	if (len > NUMBER_MAX_CHARS) {
		s->p = b;
		return scan_fail(s, "number longer than 128 characters");
	}
	memcpy(tmp, b, len);
	tmp[len] = '\0';
	if (!isfinite(strtod(tmp, NULL))) {
		s->p = b;
		return scan_fail(s, "number out of the double range");
	}
	return 0;
}

static int scan_literal(struct scan *s)
{
	static const char *const lits[] = {"true", "false", "null"};

	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(lits[i]);

		if ((size_t)(s->end - s->p) >= n && memcmp(s->p, lits[i], n) == 0) {
			s->p += n;
			return 0;
		}
	}
	return scan_fail(s, "invalid literal (expected true, false or null)");
}

static int scan_unexpected(struct scan *s)
{
	unsigned char c;

	if (s->p >= s->end)
		return scan_fail(s, "unexpected end of input");
	c = *s->p;
	if (c == 0)
		return scan_fail(s, "NUL byte");
	if (c > 0x20 && c < 0x7F)
		snprintf(s->err_buf, sizeof(s->err_buf), "unexpected character '%c'", c);
	else
		snprintf(s->err_buf, sizeof(s->err_buf), "unexpected byte 0x%02X", c);
	return scan_fail(s, s->err_buf);
}

enum scan_state { SCAN_VALUE, SCAN_KEY, SCAN_AFTER };

/*
 * Validates one JSON value followed only by whitespace. Returns 0 and sets
 * *value_end, or -1 with s->err and s->p at the offending byte.
 */
static int scan_document(struct scan *s, const unsigned char **value_end)
{
	enum scan_state st = SCAN_VALUE;

	for (;;) {
		struct frame *top = s->depth ? &s->st[s->depth - 1] : NULL;

		if (st == SCAN_AFTER && !top)
			break;
		skip_ws(s);
		if (s->p >= s->end)
			return scan_unexpected(s);
		if (st == SCAN_KEY) {
			const unsigned char *k = s->p;

			top->key = NULL;
			if (*s->p != '"')
				return scan_fail(s, "expected a string key");
			if (scan_string(s))
				return -1;
			top->key = k + 1;
			top->key_len = (size_t)(s->p - k - 2);
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return s->p >= s->end
					       ? scan_unexpected(s)
					       : scan_fail(s, "expected ':' after key");
			s->p++;
			st = SCAN_VALUE;
			continue;
		}
		if (st == SCAN_AFTER) {
			unsigned char close = top->in_obj ? '}' : ']';

			if (*s->p == ',') {
				s->p++;
				top->index++;
				st = top->in_obj ? SCAN_KEY : SCAN_VALUE;
			} else if (*s->p == close) {
				s->p++;
				s->depth--;
			} else {
				return scan_fail(s, top->in_obj ? "expected ',' or '}'"
								: "expected ',' or ']'");
			}
			continue;
		}
		/* SCAN_VALUE */
		unsigned char c = *s->p;

		if (c == '{' || c == '[') {
			if (s->depth >= s->max_depth) {
				snprintf(s->err_buf, sizeof(s->err_buf),
					 "nesting deeper than %d levels", s->max_depth);
				return scan_fail(s, s->err_buf);
			}
			top = &s->st[s->depth++];
			*top = (struct frame){.in_obj = c == '{'};
			s->p++;
			skip_ws(s);
			if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
				s->p++;
				s->depth--;
				st = SCAN_AFTER;
			} else {
				st = c == '{' ? SCAN_KEY : SCAN_VALUE;
			}
			continue;
		}
		if (c == '"') {
			if (scan_string(s))
				return -1;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			if (scan_number(s))
				return -1;
		} else if (c == 't' || c == 'f' || c == 'n') {
			if (scan_literal(s))
				return -1;
		} else {
			return scan_unexpected(s);
		}
		st = SCAN_AFTER;
	}
	*value_end = s->p;
	skip_ws(s);
	if (s->p < s->end) {
		if (*s->p == 0)
			return scan_fail(s, "NUL byte after the JSON value");
		return scan_fail(s, "unexpected bytes after the JSON value");
	}
	return 0;
}

/* Cuts a trailing incomplete UTF-8 sequence left by truncation, so an error
 * field built from raw keys is always valid UTF-8. */
static void trim_utf8(char *s)
{
	size_t len = strlen(s), i = len, need;
	unsigned char lead;

	while (i > 0 && len - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
		i--;
	if (i == 0)
		return;
	lead = (unsigned char)s[i - 1];
	if (lead < 0x80)
		return;
	need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
	if (len - (i - 1) < need)
		s[i - 1] = '\0';
}

/* Writes the path of the value the validator was reading ("a.b[2]"). */
static void scan_path(const struct scan *s, char *out, size_t cap)
{
	size_t n = 0;

	out[0] = '\0';
	for (int i = 0; i < s->depth && n < cap; i++) {
		const struct frame *f = &s->st[i];
		int w;

		if (f->in_obj) {
			if (!f->key)
				break;
			w = snprintf(out + n, cap - n, "%s%.*s", n ? "." : "",
				     (int)f->key_len, (const char *)f->key);
		} else {
			w = snprintf(out + n, cap - n, "[%u]", f->index);
		}
		if (w < 0)
			break;
		n += (size_t)w;
	}
	trim_utf8(out);
}

static void where(const char *body, size_t off, unsigned *line, unsigned *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (body[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

enum nerr segment_parse_json(const char *body, size_t len,
			     const struct segment_limits *lim, struct json_object **out,
			     struct nerr_msg *msg)
{
	struct scan scan, *s = &scan; /* frames are set when pushed, not zeroed */
	struct json_tokener *tok = NULL;
	struct json_object *obj = NULL;
	const unsigned char *value_end = NULL;
	char path[sizeof(msg->field)];
	unsigned line, col;
	enum nerr rc = NERR_OK;
	int depth = lim ? lim->max_depth : 32;

	*out = NULL;
	nerr_clear(msg);
	if (depth < 1)
		depth = 1;
	if (depth > SEGMENT_DEPTH_CAP)
		depth = SEGMENT_DEPTH_CAP;
	if (len > INT_MAX) {
		rc = nerr_set(msg, NERR_TOOBIG, "", "The body is larger than 2 GiB.");
		goto out;
	}
	s->start = s->p = (const unsigned char *)body;
	s->depth = 0;
	s->err = NULL;
	s->end = s->start + len;
	s->max_depth = depth;
	skip_ws(s);
	if (s->p == s->end) {
		rc = nerr_set(msg, NERR_PARSE, "",
			      "The body is empty; expected a JSON object.");
		goto out;
	}
	if (scan_document(s, &value_end)) {
		size_t off = (size_t)(s->p - s->start);

		where(body, off, &line, &col);
		scan_path(s, path, sizeof(path));
		rc = nerr_set(msg, NERR_PARSE, path,
			      "Invalid JSON at line %u, column %u (byte %zu): %s.", line,
			      col, off, s->err);
		goto out;
	}
	s->p = s->start;
	skip_ws(s);
	if (*s->p != '{') {
		rc = nerr_set(msg, NERR_INVAL, "", "The body must be a JSON object.");
		goto out;
	}
	tok = jtok_thread(depth);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, body, (int)(value_end - s->start));
	if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(obj, json_type_object)) {
		/* Not expected after our validator; kept as a second line. */
		size_t off = json_tokener_get_parse_end(tok);

		where(body, off, &line, &col);
		rc = nerr_set(msg, NERR_PARSE, "",
			      "Invalid JSON at line %u, column %u (byte %zu): %s.", line,
			      col, off,
			      json_tokener_error_desc(json_tokener_get_error(tok)));
		json_object_put(obj);
		goto out;
	}
	*out = obj;
out:
	return rc;
}

/* ---- normalization ---------------------------------------------------- */

/* Fills msg with field = path joined with name, and returns rc. */
static enum nerr field_err(struct nerr_msg *msg, enum nerr rc, const char *path,
			   const char *name, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static enum nerr field_err(struct nerr_msg *msg, enum nerr rc, const char *path,
			   const char *name, const char *fmt, ...)
{
	char field[sizeof(msg->field)], text[sizeof(msg->message)];
	va_list ap;

	if (!msg)
		return rc;
	if (!path[0])
		snprintf(field, sizeof(field), "%s", name);
	else if (!name[0])
		snprintf(field, sizeof(field), "%s", path);
	else
		snprintf(field, sizeof(field), "%s.%s", path, name);
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	return nerr_set(msg, rc, field, "%s", text);
}

/* Returns the number of code points in valid UTF-8 text. */
static size_t utf8_chars(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xC0) != 0x80;
	return n;
}

/* Returns the field's value and whether it is there; a JSON null is removed
 * and counts as absent (SDKs send "userId": null for anonymous users). */
static bool get_field(struct json_object *ev, const char *key, struct json_object **v)
{
	if (!json_object_object_get_ex(ev, key, v))
		return false;
	if (*v == NULL) {
		json_object_object_del(ev, key);
		return false;
	}
	return true;
}

static void set_string(struct json_object *ev, const char *key, const char *val)
{
	json_object_object_add(ev, key, json_object_new_string(val));
}

/* Writes a double the way JavaScript's String() would for the common cases:
 * integral values without a fraction, others in the shortest form that reads
 * back to the same double. */
static void format_double(double d, char *out, size_t cap)
{
	if (d == floor(d) && fabs(d) < 1e15) {
		snprintf(out, cap, "%.0f", d == 0 ? 0.0 : d);
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, cap, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

/*
 * Normalizes an identifier (userId, anonymousId, previousId, groupId): a
 * number becomes its string form, an empty string is removed. *present says
 * whether a non-empty string remains.
 */
static enum nerr norm_id(struct json_object *ev, const char *key, const char *path,
			 bool *present, struct nerr_msg *msg)
{
	struct json_object *v;
	char buf[64];

	*present = false;
	if (!get_field(ev, key, &v))
		return NERR_OK;
	switch (json_object_get_type(v)) {
	case json_type_string:
		if (json_object_get_string_len(v) == 0) {
			json_object_object_del(ev, key);
			return NERR_OK;
		}
		break;
	case json_type_int:
		snprintf(buf, sizeof(buf), "%" PRId64, json_object_get_int64(v));
		set_string(ev, key, buf);
		break;
	case json_type_double: {
		double d = json_object_get_double(v);

		if (!isfinite(d))
			return field_err(msg, NERR_INVAL, path, key,
					 "%s must be a finite number.", key);
		format_double(d, buf, sizeof(buf));
		set_string(ev, key, buf);
		break;
	}
	default:
		return field_err(msg, NERR_INVAL, path, key,
				 "%s must be a string or a number.", key);
	}
	*present = true;
	return NERR_OK;
}

/* Checks an optional field of the given json type; null is removed. */
static enum nerr check_type(struct json_object *ev, const char *key, enum json_type want,
			    const char *path, struct nerr_msg *msg)
{
	struct json_object *v;

	if (!get_field(ev, key, &v) || json_object_is_type(v, want))
		return NERR_OK;
	return field_err(msg, NERR_INVAL, path, key, "%s must be %s.", key,
			 want == json_type_object ? "an object" : "a string");
}

/* Reads an optional date-time field. On success *raw is the client's string
 * (borrowed from ev) or NULL when absent, and *ms its instant. */
static enum nerr get_time(struct json_object *ev, const char *key, const char *path,
			  const char **raw, int64_t *ms, struct nerr_msg *msg)
{
	struct json_object *v;

	*raw = NULL;
	if (!get_field(ev, key, &v))
		return NERR_OK;
	if (!json_object_is_type(v, json_type_string) ||
	    clock_parse_rfc3339(json_object_get_string(v), ms) != 0)
		return field_err(msg, NERR_INVAL, path, key,
				 "%s must be an ISO-8601 date-time string with a time "
				 "zone, such as 2026-01-02T03:04:05.678Z.",
				 key);
	*raw = json_object_get_string(v);
	return NERR_OK;
}

/* Writes a random (version 4) UUID in lower-case 8-4-4-4-12 form. */
static enum nerr uuid_v4(char out[37])
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NERR_IO;
		}
		got += (size_t)n;
	}
	b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
		 b[12], b[13], b[14], b[15]);
	return NERR_OK;
}

/*
 * Checks context.externalIds, Segment's list of extra identities
 * ([{"id","type","collection","encoding"}]): an array of objects, each with a
 * non-empty id (a number becomes its string) and a non-empty string type.
 */
static enum nerr check_external_ids(struct json_object *ctx, const char *path,
				    struct nerr_msg *msg)
{
	struct json_object *arr, *v;
	char prefix[sizeof(msg->field)];
	bool present;
	enum nerr rc;

	if (!json_object_object_get_ex(ctx, "externalIds", &arr) || !arr)
		return NERR_OK;
	if (!json_object_is_type(arr, json_type_array))
		return field_err(msg, NERR_INVAL, path, "context.externalIds",
				 "context.externalIds must be an array.");
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *it = json_object_array_get_idx(arr, i);

		snprintf(prefix, sizeof(prefix), "%s%scontext.externalIds[%zu]", path,
			 path[0] ? "." : "", i);
		if (!json_object_is_type(it, json_type_object))
			return field_err(msg, NERR_INVAL, prefix, "",
					 "Each external id must be an object.");
		if ((rc = norm_id(it, "id", prefix, &present, msg)))
			return rc;
		if (!present)
			return field_err(msg, NERR_INVAL, prefix, "id",
					 "An external id needs a non-empty id.");
		if (!get_field(it, "type", &v) ||
		    !json_object_is_type(v, json_type_string) ||
		    json_object_get_string_len(v) == 0)
			return field_err(msg, NERR_INVAL, prefix, "type",
					 "An external id needs a non-empty string type.");
		if ((rc = check_type(it, "collection", json_type_string, prefix, msg)) ||
		    (rc = check_type(it, "encoding", json_type_string, prefix, msg)))
			return rc;
	}
	return NERR_OK;
}

/* Reads or sets the event's type (see segment_normalize). */
static enum nerr norm_type(struct json_object *ev, int type, const char *path, int *out,
			   struct nerr_msg *msg)
{
	struct json_object *v;

	if (type >= 0) {
		ASSERT(type < SEGMENT__COUNT);
		set_string(ev, "type", type_names[type]);
		*out = type;
		return NERR_OK;
	}
	if (!get_field(ev, "type", &v))
		return field_err(msg, NERR_INVAL, path, "type", "type is required.");
	if (!json_object_is_type(v, json_type_string) ||
	    (*out = segment_type_from_name(json_object_get_string(v))) < 0)
		return field_err(msg, NERR_INVAL, path, "type",
				 "type must be one of track, identify, page, screen, "
				 "alias, group.");
	return NERR_OK;
}

/* Applies the rules of one call type to its specific fields. */
static enum nerr norm_specific(struct json_object *ev, int type, const char *path,
			       struct nerr_msg *msg)
{
	struct json_object *v;
	enum nerr rc = NERR_OK;
	bool present;

	switch (type) {
	case SEGMENT_TRACK:
		if (!get_field(ev, "event", &v))
			return field_err(msg, NERR_INVAL, path, "event",
					 "event is required for track.");
		if (!json_object_is_type(v, json_type_string) ||
		    json_object_get_string_len(v) == 0)
			return field_err(msg, NERR_INVAL, path, "event",
					 "event must be a non-empty string.");
		if (utf8_chars(json_object_get_string(v),
			       (size_t)json_object_get_string_len(v)) >
		    EVENT_NAME_MAX_CHARS)
			return field_err(msg, NERR_INVAL, path, "event",
					 "event must be at most %d characters.",
					 EVENT_NAME_MAX_CHARS);
		break;
	case SEGMENT_PAGE:
		rc = check_type(ev, "category", json_type_string, path, msg);
		if (rc == NERR_OK)
			rc = check_type(ev, "name", json_type_string, path, msg);
		break;
	case SEGMENT_SCREEN:
		rc = check_type(ev, "name", json_type_string, path, msg);
		break;
	case SEGMENT_ALIAS:
		rc = norm_id(ev, "previousId", path, &present, msg);
		if (rc == NERR_OK && !present)
			rc = field_err(msg, NERR_INVAL, path, "previousId",
				       "previousId is required for alias.");
		break;
	case SEGMENT_GROUP:
		rc = norm_id(ev, "groupId", path, &present, msg);
		if (rc == NERR_OK && !present)
			rc = field_err(msg, NERR_INVAL, path, "groupId",
				       "groupId is required for group.");
		break;
	default:
		break;
	}
	return rc;
}

/*
 * Settles the timestamps (Segment's rules): receivedAt is now; the client's
 * time is timestamp, else originalTimestamp; with sentAt it is corrected for
 * the device's clock skew, timestamp = receivedAt - (sentAt - client time);
 * originalTimestamp keeps what the client said; without any client time the
 * event happened when it was received.
 */
static enum nerr norm_times(struct json_object *ev, const char *path, int64_t now_ms,
			    int64_t *ts_ms, struct nerr_msg *msg)
{
	const char *ts_raw, *orig_raw, *sent_raw;
	int64_t ts = 0, orig = 0, sent = 0, eff = now_ms;
	char buf[32];
	enum nerr rc;

	if ((rc = get_time(ev, "timestamp", path, &ts_raw, &ts, msg)) ||
	    (rc = get_time(ev, "originalTimestamp", path, &orig_raw, &orig, msg)) ||
	    (rc = get_time(ev, "sentAt", path, &sent_raw, &sent, msg)))
		return rc;
	if (ts_raw || orig_raw) {
		int64_t client = ts_raw ? ts : orig;

		if (!orig_raw)
			set_string(ev, "originalTimestamp", ts_raw);
		eff = sent_raw ? now_ms - (sent - client) : client;
		if (eff < 0 || eff > WALL_MS_MAX)
			return field_err(
				msg, NERR_INVAL, path, "sentAt",
				"sentAt is so far from the event's timestamp that "
				"the corrected time is out of range.");
	}
	clock_format_rfc3339(now_ms, buf);
	set_string(ev, "receivedAt", buf);
	clock_format_rfc3339(eff, buf);
	set_string(ev, "timestamp", buf);
	*ts_ms = eff;
	return NERR_OK;
}

enum nerr segment_normalize(struct json_object *ev, int type, const char *path,
			    int64_t now_ms, const struct segment_limits *lim,
			    int64_t *ts_ms, struct nerr_msg *msg)
{
	return segment_normalize_json(ev, type, path, now_ms, lim, ts_ms, NULL, NULL,
				      msg);
}

enum nerr segment_normalize_json(struct json_object *ev, int type, const char *path,
				 int64_t now_ms, const struct segment_limits *lim,
				 int64_t *ts_ms, const char **json, size_t *json_len,
				 struct nerr_msg *msg)
{
	static const char *const objects[] = {"properties", "traits", "context",
					      "integrations"};
	struct segment_limits defaults;
	struct json_object *v, *ctx;
	int64_t eff = 0;
	bool has_user, has_anon;
	size_t size_bytes;
	const char *text;
	enum nerr rc;
	char id[37];

	nerr_clear(msg);
	if (!lim) {
		segment_limits_default(&defaults);
		lim = &defaults;
	}
	if (!path)
		path = "";
	if (!json_object_is_type(ev, json_type_object))
		return field_err(msg, NERR_INVAL, path, "",
				 "The event must be a JSON object.");
	if ((rc = norm_type(ev, type, path, &type, msg)))
		return rc;
	json_object_object_del(ev, "writeKey");
	if ((rc = norm_id(ev, "userId", path, &has_user, msg)) ||
	    (rc = norm_id(ev, "anonymousId", path, &has_anon, msg)))
		return rc;
	if (type == SEGMENT_ALIAS && !has_user)
		return field_err(msg, NERR_INVAL, path, "userId",
				 "userId is required for alias.");
	if (!has_user && !has_anon)
		return field_err(msg, NERR_INVAL, path, "userId",
				 "userId or anonymousId is required.");
	if ((rc = norm_specific(ev, type, path, msg)))
		return rc;
	for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++)
		if ((rc = check_type(ev, objects[i], json_type_object, path, msg)))
			return rc;
	if (json_object_object_get_ex(ev, "context", &ctx) && ctx) {
		if (json_object_object_get_ex(ctx, "traits", &v) && v &&
		    !json_object_is_type(v, json_type_object))
			return field_err(msg, NERR_INVAL, path, "context.traits",
					 "context.traits must be an object.");
		if ((rc = check_external_ids(ctx, path, msg)))
			return rc;
	}
	if (get_field(ev, "messageId", &v)) {
		if (!json_object_is_type(v, json_type_string))
			return field_err(msg, NERR_INVAL, path, "messageId",
					 "messageId must be a string.");
		if (utf8_chars(json_object_get_string(v),
			       (size_t)json_object_get_string_len(v)) >
		    MESSAGE_ID_MAX_CHARS)
			return field_err(msg, NERR_INVAL, path, "messageId",
					 "messageId must be at most %d characters.",
					 MESSAGE_ID_MAX_CHARS);
		if (json_object_get_string_len(v) == 0)
			json_object_object_del(ev, "messageId");
	}
	if (!json_object_object_get_ex(ev, "messageId", NULL)) {
		if (uuid_v4(id) != NERR_OK)
			return field_err(
				msg, NERR_IO, path, "messageId",
				"No randomness available to generate a messageId.");
		set_string(ev, "messageId", id);
	}
	if ((rc = norm_times(ev, path, now_ms, &eff, msg)))
		return rc;
	text = json_object_to_json_string_length(ev, SEGMENT_JSON_FLAGS, &size_bytes);
	if (size_bytes > lim->max_event_bytes)
		return field_err(msg, NERR_TOOBIG, path, "",
				 "The event is %zu bytes as JSON; the limit is %zu.",
				 size_bytes, lim->max_event_bytes);
	if (ts_ms)
		*ts_ms = eff;
	if (json)
		*json = text;
	if (json_len)
		*json_len = size_bytes;
	return NERR_OK;
}

/* ---- the single-event fast path ---------------------------------------- */

/*
 * segment_fast_event() works on the body's text, already validated by
 * scan_document(), so the walkers below trust its syntax: they only find where
 * tokens end. It copies every member it does not rewrite as it was received
 * and declines (NERR_NOTFOUND) whenever a rule would need more than a look at
 * a plain string: the general path then decides, with its error messages.
 */
#define FAST_MEMBERS_MAX 64

struct span {
	const char *p;
	size_t n;
};

struct member {
	struct span key;   /* without quotes; no escapes */
	const char *start; /* the key's opening quote */
	struct span val;   /* the value's text */
};

static const char *fast_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at an opening quote: returns the byte after the closing one (a quote
 * after an odd run of backslashes is escaped). */
static const char *fast_string_end(const char *p, const char *end)
{
	for (p++; p < end;) {
		const char *q = memchr(p, '"', (size_t)(end - p)), *b;

		if (!q)
			return end; /* unterminated: not in validated text */
		for (b = q; b > p && b[-1] == '\\'; b--)
			;
		if ((q - b) % 2 == 0)
			return q + 1;
		p = q + 1;
	}
	return end;
}

/* p at a value: returns the byte after it. */
static const char *fast_value_end(const char *p, const char *end)
{
	int depth = 0;

	if (*p == '"')
		return fast_string_end(p, end);
	if (*p != '{' && *p != '[') {
		while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
		       *p != '\t' && *p != '\n' && *p != '\r')
			p++;
		return p;
	}
	for (; p < end; p++) {
		if (*p == '"') {
			p = fast_string_end(p, end) - 1;
		} else if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			if (--depth == 0)
				return p + 1;
		}
	}
	return p;
}

/* Splits the object at p (its '{') into members; false if there are too
 * many, a key has an escape (the general path compares keys after
 * unescaping), or the text is not an object's shape: the engine's view reads
 * stored records, which a damaged disk may have cut, so nothing here reads or
 * points past end, and only a closing brace makes a complete object. */
static bool fast_members(const char *p, const char *end, struct member *m, size_t *n)
{
	*n = 0;
	p = fast_ws(p + 1, end);
	if (p < end && *p == '}')
		return true;
	while (p < end && *p == '"') {
		const char *k = p, *ke = fast_string_end(p, end), *c;

		if (ke >= end || *n == FAST_MEMBERS_MAX ||
		    memchr(k, '\\', (size_t)(ke - k)))
			return false;
		c = fast_ws(ke, end);
		if (c >= end || *c != ':')
			return false;
		m[*n].start = k;
		m[*n].key = (struct span){k + 1, (size_t)(ke - k - 2)};
		p = fast_ws(c + 1, end);
		if (p >= end)
			return false;
		m[*n].val.p = p;
		p = fast_value_end(p, end);
		m[*n].val.n = (size_t)(p - m[*n].val.p);
		(*n)++;
		p = fast_ws(p, end);
		if (p >= end)
			return false;
		if (*p == '}')
			return true;
		if (*p != ',')
			return false;
		p = fast_ws(p + 1, end);
	}
	return false;
}

static bool key_is(const struct member *m, const char *name)
{
	return m->key.n == strlen(name) && memcmp(m->key.p, name, m->key.n) == 0;
}

/* The member named name, or NULL. */
static const struct member *fast_find(const struct member *m, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (key_is(&m[i], name))
			return &m[i];
	return NULL;
}

/* A string value without escapes, as its content; false otherwise. */
static bool plain_string(const struct member *m, struct span *out)
{
	if (m->val.n < 2 || m->val.p[0] != '"' || memchr(m->val.p, '\\', m->val.n))
		return false;
	*out = (struct span){m->val.p + 1, m->val.n - 2};
	return true;
}

/* An optional non-empty plain string of at most max_chars characters
 * (0: no cap): true if absent (*present false) or such a string. */
static bool fast_id(const struct member *m, size_t max_chars, bool *present)
{
	struct span v;

	*present = false;
	if (!m)
		return true;
	if (!plain_string(m, &v) || v.n == 0 ||
	    (max_chars && utf8_chars(v.p, v.n) > max_chars))
		return false;
	*present = true;
	return true;
}

/* An optional date-time member: true if absent or readable (into *ms). */
static bool fast_time(const struct member *m, int64_t *ms, bool *present)
{
	struct span v;
	char buf[64];

	*present = false;
	if (!m)
		return true;
	if (!plain_string(m, &v) || v.n >= sizeof(buf))
		return false;
	memcpy(buf, v.p, v.n);
	buf[v.n] = '\0';
	if (clock_parse_rfc3339(buf, ms) != 0)
		return false;
	*present = true;
	return true;
}

/* True for the fields segment_normalize reads for type, whose null it
 * removes (get_field); a null elsewhere is kept. */
static bool null_dropped(const struct member *m, enum segment_type type)
{
	static const char *const always[] = {
		"userId", "anonymousId", "messageId", "timestamp", "originalTimestamp",
		"sentAt", "properties",	 "traits",    "context",   "integrations"};

	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		if (key_is(m, always[i]))
			return true;
	switch (type) {
	case SEGMENT_TRACK:
		return key_is(m, "event");
	case SEGMENT_PAGE:
		return key_is(m, "category") || key_is(m, "name");
	case SEGMENT_SCREEN:
		return key_is(m, "name");
	case SEGMENT_ALIAS:
		return key_is(m, "previousId");
	case SEGMENT_GROUP:
		return key_is(m, "groupId");
	default:
		return false;
	}
}

/* True if a key repeats among the members (the general path takes the last
 * one, the lookups here the first). */
static bool fast_repeats(const struct member *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (m[j].key.n == m[i].key.n &&
			    memcmp(m[j].key.p, m[i].key.p, m[i].key.n) == 0)
				return true;
	return false;
}

/* Drops the members whose null the general path removes; false if a
 * top-level key repeats. */
static bool fast_prune(struct member *m, size_t *n, enum segment_type type)
{
	size_t k = 0;

	if (fast_repeats(m, *n))
		return false;
	for (size_t i = 0; i < *n; i++) {
		if (m[i].val.p[0] == 'n' && null_dropped(&m[i], type))
			continue;
		m[k++] = m[i];
	}
	*n = k;
	return true;
}

/* Applies segment_normalize's rules to the top-level members; false where
 * the general path must decide. */
static bool fast_rules(const struct member *m, size_t n, enum segment_type type)
{
	static const char *const objects[] = {"properties", "traits", "context",
					      "integrations"};
	const struct member *v;
	bool user, anon, ok;

	if (!fast_id(fast_find(m, n, "userId"), 0, &user) ||
	    !fast_id(fast_find(m, n, "anonymousId"), 0, &anon) || !(user || anon))
		return false;
	if (!fast_id(fast_find(m, n, "messageId"), MESSAGE_ID_MAX_CHARS, &ok))
		return false;
	for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++)
		if ((v = fast_find(m, n, objects[i])) && v->val.p[0] != '{')
			return false;
	if ((v = fast_find(m, n, "context"))) {
		struct member c[FAST_MEMBERS_MAX];
		const struct member *t;
		size_t nc;

		if (!fast_members(v->val.p, v->val.p + v->val.n, c, &nc) ||
		    fast_repeats(c, nc) || fast_find(c, nc, "externalIds") ||
		    ((t = fast_find(c, nc, "traits")) && t->val.p[0] != '{'))
			return false;
	}
	switch (type) {
	case SEGMENT_TRACK:
		return fast_id(fast_find(m, n, "event"), EVENT_NAME_MAX_CHARS, &ok) && ok;
	case SEGMENT_PAGE:
		if ((v = fast_find(m, n, "category")) && v->val.p[0] != '"')
			return false;
		/* fall through */
	case SEGMENT_SCREEN:
		return !(v = fast_find(m, n, "name")) || v->val.p[0] == '"';
	case SEGMENT_ALIAS:
		return user && fast_id(fast_find(m, n, "previousId"), 0, &ok) && ok;
	case SEGMENT_GROUP:
		return fast_id(fast_find(m, n, "groupId"), 0, &ok) && ok;
	default:
		return true;
	}
}

/* The members the stored event does not take as received. */
static bool fast_skipped(const struct member *m)
{
	return key_is(m, "type") || key_is(m, "writeKey") || key_is(m, "receivedAt") ||
	       key_is(m, "timestamp");
}

static char *put_bytes(char *o, const void *p, size_t n)
{
	memcpy(o, p, n);
	return o + n;
}

static char *put_field(char *o, const char *name, const char *p, size_t n)
{
	o = put_bytes(o, ",\"", 2);
	o = put_bytes(o, name, strlen(name));
	o = put_bytes(o, "\":\"", 3);
	o = put_bytes(o, p, n);
	return put_bytes(o, "\"", 1);
}

static bool named(const struct member *m, const char *const *names)
{
	for (; *names; names++)
		if (m->key.n && m->key.p[0] == (*names)[0] && key_is(m, *names))
			return true;
	return false;
}

/* Copies to o the object at p..end with only the members named in keep;
 * returns the byte after what it wrote, or NULL if the object cannot be cut
 * without parsing (see fast_members). Member text is copied as it was. */
static char *view_object(const char *p, const char *end, const char *const *keep,
			 const char *const *keep_context, char *o)
{
	struct member m[FAST_MEMBERS_MAX];
	size_t n;
	bool first = true;

	p = fast_ws(p, end);
	if (p >= end || *p != '{' || !fast_members(p, end, m, &n))
		return NULL;
	*o++ = '{';
	for (size_t i = 0; i < n; i++) {
		if (!named(&m[i], keep))
			continue;
		if (!first)
			*o++ = ',';
		first = false;
		if (keep_context && key_is(&m[i], "context") && m[i].val.n &&
		    m[i].val.p[0] == '{') {
			o = put_bytes(o, m[i].start, (size_t)(m[i].val.p - m[i].start));
			o = view_object(m[i].val.p, m[i].val.p + m[i].val.n, keep_context,
					NULL, o);
			if (!o)
				return NULL;
		} else {
			o = put_bytes(o, m[i].start,
				      (size_t)(m[i].val.p + m[i].val.n - m[i].start));
		}
	}
	*o++ = '}';
	return o;
}

size_t segment_event_view(const char *rec, size_t len, const char *const *keep,
			  const char *const *keep_context, char *out)
{
	char *o = view_object(rec, rec + len, keep, keep_context, out);

	return o ? (size_t)(o - out) : 0;
}

enum nerr segment_fast_event(const char *body, size_t len, enum segment_type type,
			     int64_t now_ms, const struct segment_limits *lim, char **out,
			     size_t *out_len, int64_t *ts_ms)
{
	struct segment_limits defaults;
	struct scan scan, *s = &scan;
	const unsigned char *value_end;
	struct member m[FAST_MEMBERS_MAX];
	const struct member *ts_m, *orig_m;
	int64_t ts = 0, orig = 0, sent = 0, eff = now_ms;
	bool has_ts, has_orig, has_sent, has_mid;
	char buf[32], id[37], *o;
	size_t n;

	*out = NULL;
	if (!lim) {
		segment_limits_default(&defaults);
		lim = &defaults;
	}
	if ((unsigned)type >= SEGMENT__COUNT || len > INT_MAX)
		return NERR_NOTFOUND;
	s->start = s->p = (const unsigned char *)body;
	s->end = s->start + len;
	s->depth = 0;
	s->err = NULL;
	s->max_depth = lim->max_depth < 1		    ? 1
		       : lim->max_depth > SEGMENT_DEPTH_CAP ? SEGMENT_DEPTH_CAP
							    : lim->max_depth;
	skip_ws(s);
	if (s->p == s->end || *s->p != '{' || scan_document(s, &value_end))
		return NERR_NOTFOUND;
	if (!fast_members(fast_ws(body, body + len), (const char *)value_end, m, &n) ||
	    !fast_prune(m, &n, type) || !fast_rules(m, n, type))
		return NERR_NOTFOUND;
	ts_m = fast_find(m, n, "timestamp");
	orig_m = fast_find(m, n, "originalTimestamp");
	if (!fast_time(ts_m, &ts, &has_ts) || !fast_time(orig_m, &orig, &has_orig) ||
	    !fast_time(fast_find(m, n, "sentAt"), &sent, &has_sent))
		return NERR_NOTFOUND;
	if (has_ts || has_orig) { /* as norm_times */
		int64_t client = has_ts ? ts : orig;

		eff = has_sent ? now_ms - (sent - client) : client;
		if (eff < 0 || eff > WALL_MS_MAX)
			return NERR_NOTFOUND;
	}
	has_mid = fast_find(m, n, "messageId") != NULL;
	if (!has_mid && uuid_v4(id) != NERR_OK)
		return NERR_NOTFOUND;

	/* The members kept, each with its comma: over the cap already, nothing
	 * is copied (a huge body costs no copy). What is added takes at most
	 * 240 bytes. */
	size_t kept = 0;

	for (size_t i = 0; i < n; i++)
		if (!fast_skipped(&m[i]))
			kept += (size_t)(m[i].val.p + m[i].val.n - m[i].start) + 1;
	if (kept > lim->max_event_bytes)
		return NERR_NOTFOUND;
	/* {"type":..., the members as received, then what normalizing adds. */
	o = *out = xmalloc(kept + 256);
	o = put_bytes(o, "{\"type\":\"", 9);
	o = put_bytes(o, type_names[type], strlen(type_names[type]));
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (fast_skipped(&m[i]))
			continue;
		*o++ = ',';
		o = put_bytes(o, m[i].start,
			      (size_t)(m[i].val.p + m[i].val.n - m[i].start));
	}
	if (!has_mid)
		o = put_field(o, "messageId", id, 36);
	if (has_ts && !has_orig)
		o = put_bytes(o, ",\"originalTimestamp\":", 21),
		o = put_bytes(o, ts_m->val.p, ts_m->val.n);
	clock_format_rfc3339(now_ms, buf);
	o = put_field(o, "receivedAt", buf, strlen(buf));
	clock_format_rfc3339(eff, buf);
	o = put_field(o, "timestamp", buf, strlen(buf));
	*o++ = '}';
	*out_len = (size_t)(o - *out);
	if (*out_len > lim->max_event_bytes) {
		free(*out);
		*out = NULL;
		return NERR_NOTFOUND;
	}
	if (ts_ms)
		*ts_ms = eff;
	return NERR_OK;
}

const char *segment_body_write_key(struct json_object *body)
{
	struct json_object *v;

	if (!json_object_object_get_ex(body, "writeKey", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    json_object_get_string_len(v) == 0)
		return NULL;
	return json_object_get_string(v);
}

enum nerr segment_batch_items(struct json_object *body, const struct segment_limits *lim,
			      struct json_object **items, struct nerr_msg *msg)
{
	struct json_object *v;
	const char *raw;
	int64_t ms;
	enum nerr rc;
	size_t n;

	*items = NULL;
	nerr_clear(msg);
	if (!json_object_is_type(body, json_type_object))
		return nerr_set(msg, NERR_INVAL, "", "The body must be a JSON object.");
	if (!json_object_object_get_ex(body, "batch", &v) || !v)
		return nerr_set(msg, NERR_INVAL, "batch", "batch is required.");
	if (!json_object_is_type(v, json_type_array))
		return nerr_set(msg, NERR_INVAL, "batch", "batch must be an array.");
	n = json_object_array_length(v);
	if (n > (lim ? lim->max_batch_items : 1000))
		return nerr_set(msg, NERR_TOOBIG, "batch",
				"batch has %zu items; the limit is %u.", n,
				lim ? lim->max_batch_items : 1000);
	if ((rc = check_type(body, "context", json_type_object, "", msg)) ||
	    (rc = check_type(body, "integrations", json_type_object, "", msg)) ||
	    (rc = get_time(body, "sentAt", "", &raw, &ms, msg)))
		return rc;
	*items = v;
	return NERR_OK;
}

static struct json_object *dup_value(struct json_object *v)
{
	struct json_object *copy = NULL;

	if (!v)
		return NULL;
	if (json_object_deep_copy(v, &copy, NULL) != 0)
		mem_assert_fail("json_object_deep_copy", __FILE__, __LINE__);
	return copy;
}

/* Merges the envelope's object field key into the item's, the item winning. */
static void merge_object(struct json_object *body, struct json_object *item,
			 const char *key)
{
	struct json_object *src, *dst;

	if (!json_object_object_get_ex(body, key, &src) ||
	    !json_object_is_type(src, json_type_object))
		return;
	if (!json_object_object_get_ex(item, key, &dst) || !dst) {
		json_object_object_add(item, key, dup_value(src));
		return;
	}
	if (!json_object_is_type(dst, json_type_object))
		return;
	json_object_object_foreach(src, k, val)
	{
		if (!json_object_object_get_ex(dst, k, NULL))
			json_object_object_add(dst, k, dup_value(val));
	}
}

void segment_batch_merge_context(struct json_object *body, struct json_object *item)
{
	struct json_object *sent, *have;

	if (!json_object_is_type(body, json_type_object) ||
	    !json_object_is_type(item, json_type_object))
		return;
	merge_object(body, item, "context");
	merge_object(body, item, "integrations");
	if (json_object_object_get_ex(body, "sentAt", &sent) &&
	    json_object_is_type(sent, json_type_string) &&
	    (!json_object_object_get_ex(item, "sentAt", &have) || !have))
		set_string(item, "sentAt", json_object_get_string(sent));
}
