/*
 * mime.c -- the bytes of an email: headers, MIME structure, encodings.
 *
 * Design: the engine hands the delivery thread a rendered email (addresses,
 * subject, HTML and/or text, extra headers, unsubscribe URLs); this file turns
 * it into one RFC 5322 message once, when the request is accepted, and every
 * attempt sends the same bytes. So the Message-ID (<envelope id@domain>,
 * invariant 4) and the Date stay identical across retries, and a receiver or
 * a relay can drop duplicates.
 *
 * Shape: a text-only email is one text/plain part; with HTML it is
 * multipart/alternative with the text part first (the text derived from the
 * HTML when none was given). Every part is UTF-8 in quoted-printable, so the
 * message is 7-bit clean and passes any relay. The boundary starts with "=_",
 * which quoted-printable can never produce ('=' is always written "=3D" in
 * content), so no body can contain it.
 *
 * Headers: a value that is not plain printable ASCII (or that contains "=?",
 * which a reader would take for an encoded-word) is written as RFC 2047
 * encoded-words (UTF-8, base64, at most 75 characters each, cut on character
 * boundaries); long lines are folded. Header injection is impossible by
 * construction: any control character (CR and LF included) in an address, the
 * subject, a header value or an unsubscribe URL refuses the whole email
 * ("invalid header") before anything is sent, and header names must be RFC
 * 5322 field names. Headers this file writes itself cannot be given as extra
 * headers ("header not allowed").
 *
 * References: RFC 5322 (message format), RFC 2045-2047 (MIME, quoted-printable,
 * encoded-words), RFC 2369 and RFC 8058 (List-Unsubscribe, one-click).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

#define LINE_SOFT 78

/* ---- checks ---- */

/* Returns the length of the UTF-8 sequence at s (1-4) or 0 when invalid. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && s[1] < 0xa0)
			return 0; /* overlong */
		if (c == 0xed && s[1] >= 0xa0)
			return 0; /* surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
		    (s[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

bool deliver_utf8_valid(const char *s, bool multiline)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		if (*p < 0x20 || *p == 0x7f) {
			if (!multiline || (*p != '\t' && *p != '\r' && *p != '\n'))
				return false;
			p++;
			continue;
		}
		size_t n = utf8_len(p);
		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

static bool has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

static bool plain_ascii(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			return false;
	return strstr(s, "=?") == NULL;
}

/* RFC 5321 addr-spec as relays take it: a dot-atom local part (no quoted
 * strings), '@', a domain of letters, digits, '-' and '.' (or a literal). */
static bool addr_spec_valid(const char *a)
{
	const char *at = strrchr(a, '@');
	if (!at || at == a || !at[1] || strlen(a) > 254 || at - a > 64)
		return false;
	for (const char *p = a; p < at; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 0x20 || c >= 0x7f || strchr("()<>[]:;@\\,\"", c))
			return false;
		if (c == '.' && (p == a || p + 1 == at || p[1] == '.'))
			return false;
	}
	const char *dom = at + 1;
	if (dom[0] == '[') /* address literal */
		return strlen(dom) > 2 && dom[strlen(dom) - 1] == ']' &&
		       strspn(dom + 1, "0123456789abcdefABCDEF.:IPv") == strlen(dom) - 2;
	for (const char *p = dom; *p; p++) {
		unsigned char c = (unsigned char)*p;
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');
		if (!alnum && c != '-' && c != '.')
			return false;
		if (c == '.' && (p == dom || !p[1] || p[1] == '.'))
			return false;
	}
	return true;
}

bool deliver_addr_parse(const char *s, struct deliver_addr *out)
{
	out->name[0] = out->addr[0] = '\0';
	if (!s || has_control(s) || !deliver_utf8_valid(s, false))
		return false;
	const char *lt = strrchr(s, '<');
	if (!lt) {
		while (*s == ' ')
			s++;
		size_t n = strlen(s);
		while (n > 0 && s[n - 1] == ' ')
			n--;
		if (n == 0 || n >= sizeof(out->addr))
			return false;
		memcpy(out->addr, s, n);
		out->addr[n] = '\0';
		return addr_spec_valid(out->addr);
	}
	const char *gt = strchr(lt, '>');
	if (!gt || gt[1 + strspn(gt + 1, " ")] != '\0')
		return false;
	size_t n = (size_t)(gt - lt - 1);
	if (n == 0 || n >= sizeof(out->addr))
		return false;
	memcpy(out->addr, lt + 1, n);
	out->addr[n] = '\0';
	if (!addr_spec_valid(out->addr))
		return false;

	/* the display name: trimmed; one pair of surrounding quotes removed
	 * with its backslash escapes */
	const char *b = s, *e = lt;
	while (b < e && *b == ' ')
		b++;
	while (e > b && e[-1] == ' ')
		e--;
	size_t o = 0;
	if (e - b >= 2 && *b == '"' && e[-1] == '"') {
		for (const char *p = b + 1; p < e - 1; p++) {
			if (*p == '\\' && p + 1 < e - 1)
				p++;
			if (o + 1 >= sizeof(out->name))
				return false;
			out->name[o++] = *p;
		}
	} else {
		if ((size_t)(e - b) >= sizeof(out->name) ||
		    memchr(b, '<', (size_t)(e - b)))
			return false;
		memcpy(out->name, b, (size_t)(e - b));
		o = (size_t)(e - b);
	}
	out->name[o] = '\0';
	return true;
}

/* ---- header encodings ---- */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64_append(struct buf *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		buf_putc(out, b64[(v >> 18) & 63]);
		buf_putc(out, b64[(v >> 12) & 63]);
		buf_putc(out, i + 1 < n ? b64[(v >> 6) & 63] : '=');
		buf_putc(out, i + 2 < n ? b64[v & 63] : '=');
	}
}

/* Appends value as encoded-words separated by folding white space; col is
 * the column the first word starts at. 45 bytes of UTF-8 make 60 base64
 * characters, so each word is at most 72 characters. */
static void encoded_words(struct buf *out, const char *value)
{
	const unsigned char *p = (const unsigned char *)value;
	size_t len = strlen(value);
	bool first = true;
	if (len == 0)
		return;
	while (len > 0) {
		size_t take = 0;
		while (take < len) {
			size_t n = utf8_len(p + take);
			if (n == 0)
				n = 1; /* checked before; never split a byte */
			if (take + n > 45)
				break;
			take += n;
		}
		if (!first)
			buf_puts(out, "\r\n ");
		buf_puts(out, "=?UTF-8?B?");
		base64_append(out, p, take);
		buf_puts(out, "?=");
		p += take;
		len -= take;
		first = false;
	}
}

/* Appends ASCII text folded at spaces so lines stay near LINE_SOFT columns. */
static void folded_ascii(struct buf *out, const char *value, size_t col)
{
	const char *p = value;
	while (*p) {
		const char *next = strchr(p + 1, ' ');
		size_t word = next ? (size_t)(next - p) : strlen(p);
		if (*p == ' ' && col + word > LINE_SOFT && col > 1) {
			buf_puts(out, "\r\n");
			col = 0;
		}
		buf_append(out, p, word);
		col += word;
		p += word;
	}
}

void deliver_header_text(struct buf *out, const char *name, const char *value)
{
	size_t col = strlen(name) + 2;
	buf_printf(out, "%s: ", name);
	bool long_word = false;
	for (const char *p = value; *p;) {
		size_t w = strcspn(p, " ");
		if (w > 900)
			long_word = true;
		p += w;
		p += strspn(p, " ");
	}
	if (plain_ascii(value) && !long_word)
		folded_ascii(out, value, col);
	else
		encoded_words(out, value);
	buf_puts(out, "\r\n");
}

/* An address header: "Name: phrase <addr>" or "Name: addr". */
static void header_addr(struct buf *out, const char *name, const struct deliver_addr *a)
{
	buf_printf(out, "%s: ", name);
	if (!a->name[0]) {
		buf_printf(out, "%s\r\n", a->addr);
		return;
	}
	if (!plain_ascii(a->name) || strlen(a->name) > 200) {
		encoded_words(out, a->name);
	} else if (strpbrk(a->name, "()<>[]:;@\\,.\"")) {
		buf_putc(out, '"');
		for (const char *p = a->name; *p; p++) {
			if (*p == '"' || *p == '\\')
				buf_putc(out, '\\');
			buf_putc(out, *p);
		}
		buf_putc(out, '"');
	} else {
		buf_puts(out, a->name);
	}
	buf_printf(out, " <%s>\r\n", a->addr);
}

/* ---- bodies ---- */

void deliver_qp_encode(const char *s, size_t len, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n' || (c == '\r' && i + 1 < len && s[i + 1] == '\n')) {
			if (c == '\r')
				i++;
			buf_puts(out, "\r\n");
			col = 0;
			continue;
		}
		bool at_eol = i + 1 == len || s[i + 1] == '\n' ||
			      (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n');
		bool literal = (c >= 33 && c <= 126 && c != '=') ||
			       ((c == ' ' || c == '\t') && !at_eol);
		/* a line starting with '.' is dot-stuffed by curl; "From " at a line
		 * start is mangled by some mailbox formats: encode the first char */
		if (col == 0 && (c == '.' || (c == 'F' && len - i >= 5 &&
					      memcmp(s + i, "From ", 5) == 0)))
			literal = false;
		size_t w = literal ? 1 : 3;
		if (col + w > 75) {
			buf_puts(out, "=\r\n");
			col = 0;
		}
		if (literal) {
			buf_putc(out, (char)c);
		} else {
			char e[3] = {'=', hex[c >> 4], hex[c & 15]};
			buf_append(out, e, 3);
		}
		col += w;
	}
}

/* ---- HTML to text ---- */

struct entity {
	const char *name;
	unsigned cp;
};

static const struct entity entities[] = {
	{"amp", '&'},	   {"lt", '<'},	      {"gt", '>'},	 {"quot", '"'},
	{"apos", '\''},	   {"nbsp", 0xa0},    {"copy", 0xa9},	 {"reg", 0xae},
	{"trade", 0x2122}, {"mdash", 0x2014}, {"ndash", 0x2013}, {"hellip", 0x2026},
	{"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201c}, {"rdquo", 0x201d},
	{"euro", 0x20ac},  {"pound", 0xa3},   {"yen", 0xa5},	 {"cent", 0xa2},
	{"laquo", 0xab},   {"raquo", 0xbb},   {"middot", 0xb7},	 {"bull", 0x2022},
	{"times", 0xd7},   {"deg", 0xb0},     {"shy", 0xad},	 {"zwnj", 0x200c},
	{"eacute", 0xe9},  {"egrave", 0xe8},  {"agrave", 0xe0},	 {"uuml", 0xfc},
	{"ouml", 0xf6},	   {"auml", 0xe4},    {"szlig", 0xdf},	 {"ccedil", 0xe7},
};

static void put_utf8(struct buf *out, unsigned cp)
{
	char b[4];
	if (cp < 0x80) {
		buf_putc(out, (char)cp);
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 63));
		buf_append(out, b, 2);
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 63));
		b[2] = (char)(0x80 | (cp & 63));
		buf_append(out, b, 3);
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 63));
		b[2] = (char)(0x80 | ((cp >> 6) & 63));
		b[3] = (char)(0x80 | (cp & 63));
		buf_append(out, b, 4);
	}
}

/* Decodes the entity at s ('&'); returns the bytes consumed (0: not an
 * entity) and the code point in *cp. */
static size_t entity_at(const char *s, size_t len, unsigned *cp)
{
	size_t i = 1;
	if (len > 2 && s[1] == '#') {
		unsigned long v = 0;
		bool hexa = s[2] == 'x' || s[2] == 'X';
		i = hexa ? 3 : 2;
		size_t start = i;
		while (i < len && i < start + 8) {
			char c = s[i];
			int d = c >= '0' && c <= '9'	       ? c - '0'
				: hexa && c >= 'a' && c <= 'f' ? c - 'a' + 10
				: hexa && c >= 'A' && c <= 'F' ? c - 'A' + 10
							       : -1;
			if (d < 0)
				break;
			v = v * (hexa ? 16 : 10) + (unsigned long)d;
			i++;
		}
		if (i == start)
			return 0;
		if (i < len && s[i] == ';')
			i++;
		if (v == 0 || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) ||
		    (v < 0x20 && v != '\t' && v != '\n') || (v >= 0x7f && v < 0xa0))
			v = 0xfffd;
		*cp = (unsigned)v;
		return i;
	}
	while (i < len && i < 12 &&
	       ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
		i++;
	size_t n = i - 1;
	for (size_t k = 0; k < sizeof(entities) / sizeof(entities[0]); k++) {
		if (strlen(entities[k].name) == n &&
		    memcmp(entities[k].name, s + 1, n) == 0) {
			*cp = entities[k].cp;
			return i < len && s[i] == ';' ? i + 1 : i;
		}
	}
	return 0;
}

/* Appends s decoded (entities) to out. */
static void decode_entities(const char *s, size_t len, struct buf *out)
{
	for (size_t i = 0; i < len;) {
		unsigned cp;
		size_t n = s[i] == '&' ? entity_at(s + i, len - i, &cp) : 0;
		if (n) {
			put_utf8(out, cp);
			i += n;
		} else {
			buf_putc(out, s[i++]);
		}
	}
}

struct text_state {
	struct buf *out;
	size_t base;	 /* where our text starts in out */
	bool space;	 /* white space pending */
	unsigned breaks; /* line breaks pending (0-2) */
	char *href;	 /* of the open <a>, or NULL */
	size_t a_start;	 /* out->len when it opened */
};

static void text_break(struct text_state *t, unsigned n)
{
	if (n > t->breaks)
		t->breaks = n;
	t->space = false;
}

static void text_char(struct text_state *t, const char *p, size_t n)
{
	if (t->out->len > t->base) {
		if (t->breaks)
			buf_puts(t->out, t->breaks > 1 ? "\n\n" : "\n");
		else if (t->space)
			buf_putc(t->out, ' ');
	}
	t->breaks = 0;
	t->space = false;
	buf_append(t->out, p, n);
}

static void text_str(struct text_state *t, const char *s)
{
	text_char(t, s, strlen(s));
}

/* The value of attribute name in a tag's attribute text, decoded; NULL when
 * absent. The caller frees it. */
static char *tag_attr(const char *a, size_t len, const char *name)
{
	size_t nl = strlen(name);
	size_t i = 0;
	while (i < len) {
		while (i < len && (a[i] == ' ' || a[i] == '\t' || a[i] == '\n' ||
				   a[i] == '\r' || a[i] == '/'))
			i++;
		size_t ns = i;
		while (i < len && a[i] != '=' && a[i] != ' ' && a[i] != '\t' &&
		       a[i] != '\n' && a[i] != '\r' && a[i] != '/')
			i++;
		size_t ne = i;
		while (i < len &&
		       (a[i] == ' ' || a[i] == '\t' || a[i] == '\n' || a[i] == '\r'))
			i++;
		size_t vs = i, ve = i;
		if (i < len && a[i] == '=') {
			i++;
			while (i < len && (a[i] == ' ' || a[i] == '\t' || a[i] == '\n' ||
					   a[i] == '\r'))
				i++;
			if (i < len && (a[i] == '"' || a[i] == '\'')) {
				char q = a[i++];
				vs = i;
				while (i < len && a[i] != q)
					i++;
				ve = i;
				if (i < len)
					i++;
			} else {
				vs = i;
				while (i < len && a[i] != ' ' && a[i] != '\t' &&
				       a[i] != '\n' && a[i] != '\r')
					i++;
				ve = i;
			}
		}
		if (ne - ns == nl && strncasecmp(a + ns, name, nl) == 0) {
			struct buf v;
			buf_init(&v, 0);
			decode_entities(a + vs, ve - vs, &v);
			/* URLs: white space inside is noise */
			char *s = buf_take(&v);
			if (!s)
				s = xstrdup("");
			size_t o = 0;
			for (size_t k = 0; s[k]; k++)
				if (s[k] != '\n' && s[k] != '\r' && s[k] != '\t')
					s[o++] = s[k];
			s[o] = '\0';
			return s;
		}
		if (ne == ns && i < len && ne == i)
			i++; /* stray character: move on */
	}
	return NULL;
}

static bool name_is(const char *n, size_t nl, const char *const *list)
{
	for (; *list; list++)
		if (strlen(*list) == nl && strncasecmp(n, *list, nl) == 0)
			return true;
	return false;
}

void deliver_html_to_text(const char *html, size_t len, struct buf *out)
{
	static const char *const para[] = {"p",		 "h1", "h2",	"h3", "h4",
					   "h5",	 "h6", "table", "ul", "ol",
					   "blockquote", "hr", "pre",	NULL};
	static const char *const line[] = {"br",      "div",	 "tr",	   "li",
					   "section", "article", "header", "footer",
					   "center",  "dt",	 "dd",	   "address",
					   "nav",     "main",	 "form",   NULL};
	static const char *const skip[] = {"script", "style",	 "head",
					   "title",  "template", NULL};
	struct text_state t = {.out = out, .base = out->len};
	size_t i = 0;

	while (i < len) {
		char c = html[i];
		if (c == '<') {
			if (len - i >= 4 && memcmp(html + i, "<!--", 4) == 0) {
				const char *end =
					memmem(html + i + 4, len - i - 4, "-->", 3);
				i = end ? (size_t)(end - html) + 3 : len;
				continue;
			}
			size_t j = i + 1;
			bool closing = j < len && html[j] == '/';
			if (closing)
				j++;
			size_t ns = j;
			while (j < len && ((html[j] >= 'a' && html[j] <= 'z') ||
					   (html[j] >= 'A' && html[j] <= 'Z') ||
					   (html[j] >= '0' && html[j] <= '9')))
				j++;
			size_t nl = j - ns;
			if (nl == 0 && !(j < len && (html[j] == '!' || html[j] == '?'))) {
				text_char(&t, "<", 1); /* a lone '<' is text */
				i++;
				continue;
			}
			/* the end of the tag, past quoted attribute values */
			size_t as = j;
			char q = 0;
			while (j < len && (q || html[j] != '>')) {
				if (q && html[j] == q)
					q = 0;
				else if (!q && (html[j] == '"' || html[j] == '\''))
					q = html[j];
				j++;
			}
			size_t ae = j;
			i = j < len ? j + 1 : len;
			const char *name = html + ns;
			if (nl == 0)
				continue; /* <!DOCTYPE>, <?xml?> */
			if (!closing && name_is(name, nl, skip)) {
				/* drop everything up to the matching close tag */
				char close[16];
				snprintf(close, sizeof(close), "</%.*s", (int)nl, name);
				size_t cl = strlen(close), k = i;
				while (k + cl <= len &&
				       strncasecmp(html + k, close, cl) != 0)
					k++;
				if (k + cl > len) {
					i = len;
				} else {
					const char *gt = memchr(html + k, '>', len - k);
					i = gt ? (size_t)(gt - html) + 1 : len;
				}
				continue;
			}
			if (nl == 1 && (name[0] == 'a' || name[0] == 'A')) {
				if (!closing) {
					free(t.href);
					t.href = tag_attr(html + as, ae - as, "href");
					t.a_start = out->len;
				} else if (t.href) {
					const char *h = t.href;
					size_t as0 = t.a_start;
					while (as0 < out->len && (out->data[as0] == ' ' ||
								  out->data[as0] == '\n'))
						as0++;
					size_t tl = out->len - as0;
					bool same = strlen(h) == tl &&
						    (tl == 0 ||
						     memcmp(out->data + as0, h, tl) == 0);
					bool useful =
						h[0] && h[0] != '#' &&
						strncasecmp(h, "javascript:", 11) != 0;
					if (useful && !same) {
						if (tl > 0 || t.out->len > t.base)
							t.space = true;
						text_str(&t, "(");
						buf_puts(out, h);
						buf_putc(out, ')');
					}
					free(t.href);
					t.href = NULL;
				}
				continue;
			}
			if (name_is(name, nl, para)) {
				text_break(&t, 2);
			} else if (name_is(name, nl, line)) {
				text_break(&t, 1);
				if (!closing && nl == 2 &&
				    strncasecmp(name, "li", 2) == 0)
					text_str(&t, "- ");
			} else if (name_is(name, nl,
					   (const char *const[]){"td", "th", NULL})) {
				if (!t.breaks)
					t.space = true;
			} else if (!closing && nl == 3 &&
				   strncasecmp(name, "img", 3) == 0) {
				char *alt = tag_attr(html + as, ae - as, "alt");
				if (alt && alt[0]) {
					t.space = t.space || out->len > t.base;
					text_str(&t, alt);
				}
				free(alt);
			}
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
			t.space = true;
			i++;
			continue;
		}
		if (c == '&') {
			unsigned cp;
			size_t n = entity_at(html + i, len - i, &cp);
			if (n) {
				struct buf e;
				buf_init(&e, 0);
				put_utf8(&e, cp == 0xa0 ? ' ' : cp);
				if (cp != 0xad && cp != 0x200c)
					text_char(&t, e.data, e.len);
				buf_fini(&e);
				i += n;
				continue;
			}
		}
		size_t n = utf8_len((const unsigned char *)html + i);
		if (n == 0 || i + n > len)
			n = 1;
		text_char(&t, html + i, n);
		i += n;
	}
	free(t.href);
	if (out->len > t.base)
		buf_putc(out, '\n');
}

/* ---- the message ---- */

static void format_date(int64_t now_ms, char *out, size_t n)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
					   "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t t = (time_t)(now_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, n, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
		 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

static bool atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c && strchr("!#$&'*+-/=?^_`{|}~", c));
}

/* <id@domain>: characters of the envelope id outside dot-atom text are
 * written %XX, so distinct ids stay distinct. */
static void message_id(struct buf *out, const char *id, const char *domain)
{
	buf_puts(out, "Message-ID: <");
	for (const char *p = id; *p; p++) {
		unsigned char c = (unsigned char)*p;
		bool dot_ok = c == '.' && p != id && p[1] && p[1] != '.';
		if (atext(c) || dot_ok)
			buf_putc(out, (char)c);
		else
			buf_printf(out, "%%%02X", c);
	}
	buf_printf(out, "@%s>\r\n", domain);
}

static bool url_ok(const char *u, const char *prefix, const char *prefix2)
{
	if (strncasecmp(u, prefix, strlen(prefix)) != 0 &&
	    (!prefix2 || strncasecmp(u, prefix2, strlen(prefix2)) != 0))
		return false;
	for (const unsigned char *p = (const unsigned char *)u; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '<' || *p == '>')
			return false;
	return strlen(u) < 2000;
}

static bool field_name_ok(const char *n)
{
	if (!n || !n[0] || strlen(n) > 76)
		return false;
	for (const unsigned char *p = (const unsigned char *)n; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == ':')
			return false;
	return true;
}

static const char *const reserved[] = {"From",
				       "To",
				       "Cc",
				       "Bcc",
				       "Subject",
				       "Date",
				       "Message-ID",
				       "MIME-Version",
				       "Reply-To",
				       "Sender",
				       "Return-Path",
				       "Received",
				       "Content-Type",
				       "Content-Transfer-Encoding",
				       "List-Unsubscribe",
				       "List-Unsubscribe-Post",
				       NULL};

static void part_header(struct buf *out, const char *type)
{
	buf_printf(out,
		   "Content-Type: %s; charset=utf-8\r\n"
		   "Content-Transfer-Encoding: quoted-printable\r\n",
		   type);
}

bool deliver_mime_build(const struct deliver_email *e, const char *envelope_id,
			const char *domain, int64_t now_ms, struct buf *out,
			const char **reason, bool *bad_rcpt)
{
	struct deliver_addr from, to, reply;
	*bad_rcpt = false;

	/* control characters anywhere a header is made from: refuse first */
	const char *hvals[] = {e->from,
			       e->to,
			       e->reply_to,
			       e->subject,
			       e->list_unsubscribe_url,
			       e->list_unsubscribe_mailto};
	for (size_t i = 0; i < sizeof(hvals) / sizeof(hvals[0]); i++) {
		if (hvals[i] && has_control(hvals[i])) {
			*reason = "invalid header";
			return false;
		}
	}
	if (e->nheaders && !e->headers) {
		*reason = "invalid header";
		return false;
	}
	for (unsigned i = 0; i < e->nheaders; i++) {
		const struct deliver_header *h = &e->headers[i];
		if (!field_name_ok(h->name) || !h->value || has_control(h->value) ||
		    !deliver_utf8_valid(h->value, false)) {
			*reason = "invalid header";
			return false;
		}
		for (const char *const *r = reserved; *r; r++) {
			if (strcasecmp(h->name, *r) == 0) {
				*reason = "header not allowed";
				return false;
			}
		}
	}
	if (!e->to || !deliver_addr_parse(e->to, &to)) {
		*reason = "invalid recipient address";
		*bad_rcpt = true;
		return false;
	}
	if (!e->from || !deliver_addr_parse(e->from, &from)) {
		*reason = "invalid from address";
		return false;
	}
	if (e->reply_to && !deliver_addr_parse(e->reply_to, &reply)) {
		*reason = "invalid reply-to address";
		return false;
	}
	if ((e->subject && !deliver_utf8_valid(e->subject, false)) ||
	    (e->html && !deliver_utf8_valid(e->html, true)) ||
	    (e->text && !deliver_utf8_valid(e->text, true))) {
		*reason = "invalid UTF-8";
		return false;
	}
	if (!e->html && !e->text) {
		*reason = "email has no body";
		return false;
	}
	if ((e->list_unsubscribe_url &&
	     !url_ok(e->list_unsubscribe_url, "https://", "http://")) ||
	    (e->list_unsubscribe_mailto &&
	     !url_ok(e->list_unsubscribe_mailto, "mailto:", NULL))) {
		*reason = "invalid unsubscribe url";
		return false;
	}

	char date[64];
	format_date(now_ms, date, sizeof(date));
	buf_printf(out, "Date: %s\r\n", date);
	header_addr(out, "From", &from);
	if (e->reply_to)
		header_addr(out, "Reply-To", &reply);
	header_addr(out, "To", &to);
	deliver_header_text(out, "Subject", e->subject ? e->subject : "");
	message_id(out, envelope_id, domain);
	buf_puts(out, "MIME-Version: 1.0\r\n");
	if (e->list_unsubscribe_url || e->list_unsubscribe_mailto) {
		buf_puts(out, "List-Unsubscribe: ");
		if (e->list_unsubscribe_url)
			buf_printf(out, "<%s>", e->list_unsubscribe_url);
		if (e->list_unsubscribe_url && e->list_unsubscribe_mailto)
			buf_puts(out, ",\r\n ");
		if (e->list_unsubscribe_mailto)
			buf_printf(out, "<%s>", e->list_unsubscribe_mailto);
		buf_puts(out, "\r\n");
		if (e->one_click && e->list_unsubscribe_url)
			buf_puts(out,
				 "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
	}
	for (unsigned i = 0; i < e->nheaders; i++)
		deliver_header_text(out, e->headers[i].name, e->headers[i].value);

	if (!e->html) {
		part_header(out, "text/plain");
		buf_puts(out, "\r\n");
		deliver_qp_encode(e->text, strlen(e->text), out);
		if (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
			buf_puts(out, "\r\n");
		return true;
	}

	/* "=_" cannot occur in quoted-printable content */
	uint64_t h = 1469598103934665603ull;
	for (const char *p = envelope_id; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	char boundary[40];
	snprintf(boundary, sizeof(boundary), "=_nudge_%016llx", (unsigned long long)h);
	buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n",
		   boundary);
	buf_printf(out, "--%s\r\n", boundary);
	part_header(out, "text/plain");
	buf_puts(out, "\r\n");
	if (e->text) {
		deliver_qp_encode(e->text, strlen(e->text), out);
	} else {
		struct buf text;
		buf_init(&text, 0);
		deliver_html_to_text(e->html, strlen(e->html), &text);
		deliver_qp_encode(buf_str(&text), text.len, out);
		buf_fini(&text);
	}
	buf_printf(out, "\r\n--%s\r\n", boundary);
	part_header(out, "text/html");
	buf_puts(out, "\r\n");
	deliver_qp_encode(e->html, strlen(e->html), out);
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	return true;
}
