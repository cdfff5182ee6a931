/*
 * track.c -- signed tracking tokens, HTML link rewriting, the pixel and the
 * unsubscribe pages.
 *
 * Design: the engine calls track_rewrite_html() on a rendered email body and
 * track_unsubscribe_url() for message.unsubscribe_url / List-Unsubscribe; the
 * HTTP layer calls track_path_parse() and track_token_verify() on a request
 * to /t/{o,c,u}/TOKEN and answers with track_pixel_gif, a redirect to
 * claim.url, or the pages. Nothing here keeps state or allocates beyond the
 * caller's buffers and a few stack arrays.
 *
 * Token format (version 1), the base64url text (RFC 4648 §5, no padding) of:
 *
 *   byte 0      version (1)
 *   byte 1      kind (1 open, 2 click, 3 unsubscribe) | 0x80 if the id is packed
 *   byte 2      n, the number of id bytes that follow
 *   n bytes     the envelope id; packed = an even-length lower-case hex id
 *               stored as its n raw bytes (engine ids are 32 hex digits, so
 *               this halves them), else the id's own characters
 *   rest        the destination URL (clicks only; empty otherwise)
 *   16 bytes    HMAC-SHA256(mac key, all of the above), first 128 bits
 *
 * The mac key is HMAC-SHA256(secret, "nudge/track/v1"), so the configured
 * secret is never used directly and could be shared with another purpose
 * without one signature passing for the other. The key keeps the SHA-256
 * states after the HMAC pad blocks (RFC 2104), so a tag costs two short
 * hashes; OpenSSL 3's one-shot HMAC() is several times slower, and a typical
 * email signs a dozen links.
 *
 * Invariants: (1) track_token_parse() accepts exactly the texts
 * track_token_make() produces under one of the keys: the tag is compared in
 * constant time (CRYPTO_memcmp) before the payload is looked at, base64 must
 * be canonical (no padding, zero trailing bits), and the decoded structure
 * must be exactly what make writes; (2) a parsed click URL is absolute http(s)
 * of printable ASCII with no spaces, so it can go into a Location header as is
 * even if a key leaked; (3) the rewriter's output differs from its input only
 * in the href values of <a>/<area> start tags outside comments and raw text
 * elements, plus the pixel; it reads each input byte a bounded number of times
 * (linear time) and never reads past len.
 *
 * HTML scanning follows the HTML5 tokenizer closely enough for email bodies:
 * comments (<!-- ... -->, also --!>), <!...> and <?...> up to '>', raw text
 * elements (script, style, textarea, title, xmp, iframe, noembed, noframes)
 * skipped to their end tag, plaintext to the end, attributes quoted with " or
 * ' or unquoted, the first of duplicate attributes wins. Hrefs are
 * entity-decoded (numeric references and amp/lt/gt/quot/apos, with HTML5's
 * attribute rule for a missing ';'), stripped of surrounding spaces and of
 * tabs and newlines as browsers do, and bytes a browser would percent-encode
 * are percent-encoded, so the signed URL is the one the browser would have
 * requested. A URL with a non-ASCII host is left alone (IDNA is the browser's
 * business), as are relative, protocol-relative, mailto:, tel:, #fragment
 * and javascript: links.
 *
 * References: RFC 4648 (base64url), RFC 2104 (HMAC), RFC 8058 (one-click
 * unsubscribe), WHATWG HTML §13.2.5 (tokenization), WHATWG URL.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/mem.h"
#include "deliver/track.h"

#define TOKEN_VERSION 1
#define TAG_BYTES     16
#define PACKED_FLAG   0x80
#define PAYLOAD_MAX   (3 + TRACK_ID_MAX + TRACK_URL_MAX)
#define RAW_MAX	      (PAYLOAD_MAX + TAG_BYTES)

const char *track_kind_str(enum track_kind kind)
{
	switch (kind) {
	case TRACK_OPEN:
		return "open";
	case TRACK_CLICK:
		return "click";
	case TRACK_UNSUBSCRIBE:
		return "unsubscribe";
	}
	return "?";
}

/* ------------------------------------------------------------------ keys */

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Fetched once: EVP_sha256() inside HMAC() costs a provider look-up per call. */
static void sha256_fetch(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	ASSERT(sha256 != NULL);
}

/* Derives the mac key of a secret and stores its HMAC pad states in slot i. */
static enum nerr derive(struct track_key *k, unsigned i, const char *secret)
{
	static const char label[] = "nudge/track/v1";
	unsigned char mac[64] = {0}, pad[64];
	unsigned int n = 0;

	if (!secret || strlen(secret) < TRACK_SECRET_MIN)
		return NERR_INVAL;
	pthread_once(&sha256_once, sha256_fetch);
	ASSERT(HMAC(EVP_sha256(), secret, (int)strlen(secret),
		    (const unsigned char *)label, sizeof(label) - 1, mac, &n) &&
	       n == 32);
	for (int j = 0; j < 2; j++) {
		EVP_MD_CTX *c = EVP_MD_CTX_new();
		ASSERT(c != NULL);
		for (size_t b = 0; b < sizeof(pad); b++)
			pad[b] = mac[b] ^ (j == 0 ? 0x36 : 0x5c);
		ASSERT(EVP_DigestInit_ex(c, sha256, NULL) == 1 &&
		       EVP_DigestUpdate(c, pad, sizeof(pad)) == 1);
		k->ctx[i][j] = c;
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	OPENSSL_cleanse(pad, sizeof(pad));
	return NERR_OK;
}

enum nerr track_key_init(struct track_key *k, const char *secret)
{
	enum nerr rc;

	memset(k, 0, sizeof(*k));
	rc = derive(k, 0, secret);
	if (rc == NERR_OK)
		k->nkeys = 1;
	return rc;
}

enum nerr track_key_add_old(struct track_key *k, const char *old_secret)
{
	enum nerr rc;

	if (k->nkeys == 0)
		return NERR_INVAL;
	if (k->nkeys >= TRACK_MAX_KEYS)
		return NERR_LIMIT;
	rc = derive(k, k->nkeys, old_secret);
	if (rc == NERR_OK)
		k->nkeys++;
	return rc;
}

void track_key_fini(struct track_key *k)
{
	for (unsigned i = 0; i < TRACK_MAX_KEYS; i++)
		for (int j = 0; j < 2; j++)
			EVP_MD_CTX_free(k->ctx[i][j]); /* wipes the state */
	memset(k, 0, sizeof(*k));
}

/* --------------------------------------------------------------- base64url */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/* Writes the unpadded base64url of p[0..n) plus a NUL; out has b64_len(n)+1. */
static void b64_encode(const unsigned char *p, size_t n, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
	}
	out[o] = '\0';
}

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict decoding: only the alphabet, no padding, zero trailing bits (so each
 * byte string has exactly one text). Returns the length or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *out, size_t outsz)
{
	size_t o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;

	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)s[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= outsz)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits && (acc & ((1u << bits) - 1)))
		return -1;
	return (long)o;
}

/* ------------------------------------------------------------------ tokens */

static bool id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

static bool valid_id(const char *id, size_t n)
{
	if (n == 0 || n > TRACK_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!id_char((unsigned char)id[i]))
			return false;
	return true;
}

static bool lower_hex(const char *s, size_t n)
{
	if (n == 0 || n % 2)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool http_scheme(const char *u, size_t n, size_t *rest)
{
	if (n >= 7 && strncasecmp(u, "http://", 7) == 0) {
		*rest = 7;
		return true;
	}
	if (n >= 8 && strncasecmp(u, "https://", 8) == 0) {
		*rest = 8;
		return true;
	}
	return false;
}

/* Invariant 2: absolute http(s), a host, printable ASCII, no space. */
static bool valid_url(const char *u, size_t n)
{
	size_t r;

	if (n == 0 || n > TRACK_URL_MAX || !http_scheme(u, n, &r) || r >= n)
		return false;
	if (u[r] == '/' || u[r] == '?' || u[r] == '#')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f)
			return false;
	return true;
}

/* HMAC-SHA256 of p[0..n) under key slot i, from the precomputed pad states. */
static void tag_of(const struct track_key *k, unsigned i, const unsigned char *p,
		   size_t n, unsigned char tag[32])
{
	unsigned char inner[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	ASSERT(c != NULL);
	ASSERT(EVP_MD_CTX_copy_ex(c, k->ctx[i][0]) == 1 &&
	       EVP_DigestUpdate(c, p, n) == 1 && EVP_DigestFinal_ex(c, inner, NULL) == 1);
	ASSERT(EVP_MD_CTX_copy_ex(c, k->ctx[i][1]) == 1 &&
	       EVP_DigestUpdate(c, inner, sizeof(inner)) == 1 &&
	       EVP_DigestFinal_ex(c, tag, NULL) == 1);
	EVP_MD_CTX_free(c);
}

static int hexval(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

enum nerr track_token_make(const struct track_key *k, enum track_kind kind,
			   const char *envelope_id, const char *url_or_null, char *out,
			   size_t outsz)
{
	unsigned char raw[RAW_MAX + 32];
	size_t idn, urln = 0, n = 0;
	bool packed;

	if (outsz)
		out[0] = '\0';
	if (!k || k->nkeys == 0 || !envelope_id)
		return NERR_INVAL;
	if (kind != TRACK_OPEN && kind != TRACK_CLICK && kind != TRACK_UNSUBSCRIBE)
		return NERR_INVAL;
	idn = strlen(envelope_id);
	if (!valid_id(envelope_id, idn))
		return NERR_INVAL;
	if (kind == TRACK_CLICK) {
		if (!url_or_null)
			return NERR_INVAL;
		urln = strlen(url_or_null);
		if (!valid_url(url_or_null, urln))
			return NERR_INVAL;
	} else if (url_or_null) {
		return NERR_INVAL;
	}
	packed = lower_hex(envelope_id, idn);
	raw[n++] = TOKEN_VERSION;
	raw[n++] = (unsigned char)(kind | (packed ? PACKED_FLAG : 0));
	if (packed) {
		raw[n++] = (unsigned char)(idn / 2);
		for (size_t i = 0; i < idn; i += 2)
			raw[n++] = (unsigned char)(hexval(envelope_id[i]) << 4 |
						   hexval(envelope_id[i + 1]));
	} else {
		raw[n++] = (unsigned char)idn;
		memcpy(raw + n, envelope_id, idn);
		n += idn;
	}
	memcpy(raw + n, url_or_null ? url_or_null : "", urln);
	n += urln;
	tag_of(k, 0, raw, n, raw + n);
	n += TAG_BYTES;
	if (b64_len(n) + 1 > outsz)
		return NERR_TOOBIG;
	b64_encode(raw, n, out);
	return NERR_OK;
}

enum nerr track_token_parse(const struct track_key *k, const char *token,
			    struct track_claim *out)
{
	unsigned char raw[RAW_MAX], tag[32];
	size_t tl, n, pn, pos = 3, idn;
	long dl;
	unsigned kind;
	int hit = -1;

	memset(out, 0, sizeof(*out));
	if (!k || k->nkeys == 0 || !token)
		return NERR_AUTH;
	tl = strnlen(token, TRACK_TOKEN_MAX + 1);
	if (tl > TRACK_TOKEN_MAX)
		return NERR_AUTH;
	dl = b64_decode(token, tl, raw, sizeof(raw));
	if (dl < 3 + 1 + TAG_BYTES)
		return NERR_AUTH;
	n = (size_t)dl;
	pn = n - TAG_BYTES;
	/* Every key is tried so the time taken does not say which one matched. */
	for (unsigned i = 0; i < k->nkeys; i++) {
		tag_of(k, i, raw, pn, tag);
		if (CRYPTO_memcmp(tag, raw + pn, TAG_BYTES) == 0 && hit < 0)
			hit = (int)i;
	}
	if (hit < 0)
		return NERR_AUTH;

	/* Authentic; still check the structure is exactly what make writes. */
	kind = raw[1] & ~PACKED_FLAG;
	if (raw[0] != TOKEN_VERSION ||
	    (kind != TRACK_OPEN && kind != TRACK_CLICK && kind != TRACK_UNSUBSCRIBE))
		goto bad;
	idn = raw[2];
	if (idn == 0 || pos + idn > pn)
		goto bad;
	if (raw[1] & PACKED_FLAG) {
		static const char hex[] = "0123456789abcdef";
		if (idn * 2 > TRACK_ID_MAX)
			goto bad;
		for (size_t i = 0; i < idn; i++) {
			out->envelope_id[2 * i] = hex[raw[pos + i] >> 4];
			out->envelope_id[2 * i + 1] = hex[raw[pos + i] & 15];
		}
	} else {
		if (idn > TRACK_ID_MAX)
			goto bad;
		memcpy(out->envelope_id, raw + pos, idn);
		if (!valid_id(out->envelope_id, idn) || lower_hex(out->envelope_id, idn))
			goto bad;
	}
	pos += idn;
	if (kind == TRACK_CLICK) {
		if (!valid_url((const char *)raw + pos, pn - pos))
			goto bad;
		memcpy(out->url, raw + pos, pn - pos);
	} else if (pos != pn) {
		goto bad;
	}
	out->kind = (enum track_kind)kind;
	out->key_index = (unsigned)hit;
	return NERR_OK;
bad:
	memset(out, 0, sizeof(*out));
	return NERR_AUTH;
}

enum nerr track_token_verify(const struct track_key *k, enum track_kind expect,
			     const char *token, struct track_claim *out)
{
	enum nerr rc = track_token_parse(k, token, out);

	if (rc == NERR_OK && out->kind != expect) {
		memset(out, 0, sizeof(*out));
		rc = NERR_AUTH;
	}
	return rc;
}

enum nerr track_path_parse(const char *path, enum track_kind *kind, const char **token,
			   size_t *token_len)
{
	size_t n;

	if (!path || strncmp(path, "/t/", 3) != 0 || !path[3] || path[4] != '/')
		return NERR_NOTFOUND;
	switch (path[3]) {
	case 'o':
		*kind = TRACK_OPEN;
		break;
	case 'c':
		*kind = TRACK_CLICK;
		break;
	case 'u':
		*kind = TRACK_UNSUBSCRIBE;
		break;
	default:
		return NERR_NOTFOUND;
	}
	n = strcspn(path + 5, "?#");
	if (n == 0 || n > TRACK_TOKEN_MAX || memchr(path + 5, '/', n))
		return NERR_NOTFOUND;
	*token = path + 5;
	*token_len = n;
	return NERR_OK;
}

/* ----------------------------------------------------------- HTML helpers */

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(unsigned char c)
{
	return is_alpha(c) || (c >= '0' && c <= '9');
}

static bool name_is(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Appends s HTML-escaped (text and double-quoted attribute safe). */
static enum nerr put_escaped(struct buf *out, const char *s)
{
	enum nerr rc = NERR_OK;

	for (; *s && rc == NERR_OK; s++) {
		switch (*s) {
		case '&':
			rc = buf_puts(out, "&amp;");
			break;
		case '<':
			rc = buf_puts(out, "&lt;");
			break;
		case '>':
			rc = buf_puts(out, "&gt;");
			break;
		case '"':
			rc = buf_puts(out, "&quot;");
			break;
		case '\'':
			rc = buf_puts(out, "&#39;");
			break;
		default:
			rc = buf_putc(out, *s);
		}
	}
	return rc;
}

/* A fixed-size byte sink that remembers overflowing instead of failing. */
struct sink {
	char *p;
	size_t n, cap;
	bool over;
};

static void sink_put(struct sink *s, const void *p, size_t n)
{
	if (s->over || n > s->cap - s->n) {
		s->over = true;
		return;
	}
	memcpy(s->p + s->n, p, n);
	s->n += n;
}

static void sink_utf8(struct sink *s, uint32_t cp)
{
	unsigned char u[4];
	size_t n;

	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		cp = 0xfffd;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 63));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 63));
		u[2] = (unsigned char)(0x80 | (cp & 63));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | cp >> 18);
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 63));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 63));
		u[3] = (unsigned char)(0x80 | (cp & 63));
		n = 4;
	}
	sink_put(s, u, n);
}

/*
 * Decodes character references in an attribute value. Numeric references
 * (with or without ';') and the named ones a URL can meet: amp, lt, gt, quot
 * (also without ';' unless followed by '=' or an alphanumeric, HTML5's rule
 * for attributes) and apos (only with ';'). Others stay as written.
 */
static void decode_entities(const char *v, size_t n, struct sink *s)
{
	static const struct {
		const char *name;
		char ch;
		bool legacy;
	} named[] = {{"amp", '&', true},
		     {"lt", '<', true},
		     {"gt", '>', true},
		     {"quot", '"', true},
		     {"apos", '\'', false}};

	for (size_t i = 0; i < n && !s->over;) {
		if (v[i] != '&') {
			const char *amp = memchr(v + i, '&', n - i);
			size_t run = amp ? (size_t)(amp - (v + i)) : n - i;
			sink_put(s, v + i, run);
			i += run;
			continue;
		}
		if (i + 1 < n && v[i + 1] == '#') {
			size_t j = i + 2, digits = 0;
			bool hex = j < n && (v[j] == 'x' || v[j] == 'X');
			uint32_t cp = 0;

			if (hex)
				j++;
			for (; j < n; j++, digits++) {
				int d;
				unsigned char c = (unsigned char)v[j];
				if (c >= '0' && c <= '9')
					d = c - '0';
				else if (hex && c >= 'a' && c <= 'f')
					d = c - 'a' + 10;
				else if (hex && c >= 'A' && c <= 'F')
					d = c - 'A' + 10;
				else
					break;
				if (cp <= 0x10ffff)
					cp = cp * (hex ? 16 : 10) + (uint32_t)d;
			}
			if (digits == 0) {
				sink_put(s, "&", 1);
				i++;
				continue;
			}
			if (j < n && v[j] == ';')
				j++;
			sink_utf8(s, cp);
			i = j;
			continue;
		}
		bool done = false;
		for (size_t e = 0; e < sizeof(named) / sizeof(named[0]) && !done; e++) {
			size_t nl = strlen(named[e].name), end = i + 1 + nl;
			if (end > n || memcmp(v + i + 1, named[e].name, nl) != 0)
				continue;
			if (end < n && v[end] == ';') {
				end++;
			} else if (!named[e].legacy ||
				   (end < n &&
				    (v[end] == '=' || is_alnum((unsigned char)v[end])))) {
				continue;
			}
			sink_put(s, &named[e].ch, 1);
			i = end;
			done = true;
		}
		if (!done) {
			sink_put(s, "&", 1);
			i++;
		}
	}
}

/*
 * Turns a decoded href into the URL to sign, as a browser would request it:
 * leading/trailing C0 controls and spaces dropped, tabs and newlines removed,
 * other controls, space, '"', '<', '>', '`', DEL and non-ASCII bytes
 * percent-encoded. Returns false (leave the link alone) if it is not an
 * absolute http(s) URL with an ASCII host, or does not fit.
 */
static bool normalize_url(const char *d, size_t n, char *out, size_t *outn)
{
	static const char hex[] = "0123456789ABCDEF";
	struct sink s = {out, 0, TRACK_URL_MAX, false};
	size_t a = 0, b = n, r;
	bool in_host = true;

	while (a < b && (unsigned char)d[a] <= 0x20)
		a++;
	while (b > a && (unsigned char)d[b - 1] <= 0x20)
		b--;
	for (size_t i = a; i < b; i++) {
		unsigned char c = (unsigned char)d[i];
		if (c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>' ||
		    c == '`') {
			char pct[3] = {'%', hex[c >> 4], hex[c & 15]};
			sink_put(&s, pct, 3);
		} else {
			sink_put(&s, &d[i], 1);
		}
	}
	if (s.over || !http_scheme(out, s.n, &r) || r >= s.n)
		return false;
	/* The host (up to the first / ? # or backslash) must have been ASCII,
	 * without spaces: otherwise it is not a URL a browser would follow. */
	for (size_t i = r; i < s.n && in_host; i++) {
		char c = out[i];
		if (c == '/' || c == '?' || c == '#' || c == '\\')
			in_host = false;
		else if (c == '%' && i + 2 < s.n && out[i + 1] >= '8' &&
			 out[i + 1] <= 'F')
			return false;
		else if (c == '%' && i + 2 < s.n && out[i + 1] == '2' &&
			 out[i + 2] == '0')
			return false;
	}
	if (!valid_url(out, s.n))
		return false;
	out[s.n] = '\0';
	*outn = s.n;
	return true;
}

/* ---------------------------------------------------------- the rewriter */

struct attr {
	const char *name;
	size_t name_len;
	size_t val_start, val_end;   /* value bytes [start, end) in html */
	size_t repl_start, repl_end; /* span to replace: with quotes if quoted */
	bool has_val;
};

struct rw {
	const char *html;
	size_t len;
	const struct track_rewrite_opts *o;
	const char *base;
	size_t base_len;
	struct buf *out;
	size_t copied;	/* html[0..copied) has been written to out */
	size_t body_at; /* out offset of the last </body>, or SIZE_MAX */
	enum nerr rc;
};

static void flush_to(struct rw *w, size_t upto)
{
	if (w->rc == NERR_OK && upto > w->copied)
		w->rc = buf_append(w->out, w->html + w->copied, upto - w->copied);
	if (upto > w->copied)
		w->copied = upto;
}

/*
 * Parses the attributes of a tag whose name ends at i. Calls on_attr for each
 * (if not NULL). Returns the index just past the closing '>', or len if the
 * tag is not closed (the browser would drop it; we copy it unchanged), and
 * sets *closed accordingly.
 */
static size_t scan_attrs(struct rw *w, size_t i, void (*on_attr)(void *, struct attr *),
			 void *ctx, bool *closed)
{
	const char *h = w->html;
	size_t len = w->len;

	*closed = false;

	for (;;) {
		struct attr a = {0};

		while (i < len && (is_ws((unsigned char)h[i]) || h[i] == '/'))
			i++;
		if (i >= len)
			return len;
		if (h[i] == '>') {
			*closed = true;
			return i + 1;
		}
		a.name = h + i;
		i++; /* the first character may be '=' */
		while (i < len && !is_ws((unsigned char)h[i]) && h[i] != '/' &&
		       h[i] != '>' && h[i] != '=')
			i++;
		a.name_len = (size_t)(h + i - a.name);
		while (i < len && is_ws((unsigned char)h[i]))
			i++;
		if (i < len && h[i] == '=') {
			i++;
			while (i < len && is_ws((unsigned char)h[i]))
				i++;
			if (i >= len)
				return len;
			a.has_val = true;
			if (h[i] == '"' || h[i] == '\'') {
				const char *q = memchr(h + i + 1, h[i], len - i - 1);
				if (!q)
					return len;
				a.repl_start = i;
				a.val_start = i + 1;
				a.val_end = (size_t)(q - h);
				i = a.val_end + 1;
				a.repl_end = i;
			} else {
				a.repl_start = a.val_start = i;
				while (i < len && !is_ws((unsigned char)h[i]) &&
				       h[i] != '>')
					i++;
				a.repl_end = a.val_end = i;
			}
		}
		if (on_attr)
			on_attr(ctx, &a);
	}
}

struct link {
	struct attr href;
	bool have_href;
	bool off; /* data-nudge-track="off" */
	const char *html;
};

static void link_attr(void *ctx, struct attr *a)
{
	struct link *l = ctx;

	if (name_is(a->name, a->name_len, "href")) {
		if (!l->have_href) {
			l->href = *a;
			l->have_href = a->has_val;
		}
	} else if (name_is(a->name, a->name_len, "data-nudge-track") && a->has_val) {
		char v[8];
		struct sink s = {v, 0, sizeof(v) - 1, false};
		decode_entities(l->html + a->val_start, a->val_end - a->val_start, &s);
		v[s.n] = '\0';
		if (!s.over && strcasecmp(v, "off") == 0)
			l->off = true;
	}
}

/* Appends pre BASE path tok post (no printf: this runs once per link). */
static void put_link(struct rw *w, const char *pre, const char *path, const char *tok,
		     const char *post)
{
	if (w->rc == NERR_OK)
		w->rc = buf_puts(w->out, pre);
	if (w->rc == NERR_OK)
		w->rc = buf_append(w->out, w->base, w->base_len);
	if (w->rc == NERR_OK)
		w->rc = buf_puts(w->out, path);
	if (w->rc == NERR_OK)
		w->rc = buf_puts(w->out, tok);
	if (w->rc == NERR_OK)
		w->rc = buf_puts(w->out, post);
}

/* Replaces the href of a link tag if it should be tracked. */
static void rewrite_link(struct rw *w, const struct link *l)
{
	char dec[TRACK_URL_MAX + 1], url[TRACK_URL_MAX + 1], tok[TRACK_TOKEN_MAX + 1];
	struct sink s = {dec, 0, TRACK_URL_MAX, false};
	size_t un;

	if (l->off || !l->have_href)
		return;
	/* A value far longer than any URL we sign is left alone without decoding. */
	if (l->href.val_end - l->href.val_start > 4 * TRACK_URL_MAX)
		return;
	decode_entities(w->html + l->href.val_start, l->href.val_end - l->href.val_start,
			&s);
	if (s.over || !normalize_url(dec, s.n, url, &un))
		return;
	/* Our own endpoints (the unsubscribe link) are not wrapped again. */
	if (un > w->base_len && strncmp(url, w->base, w->base_len) == 0 &&
	    strncmp(url + w->base_len, "/t/", 3) == 0)
		return;
	if (track_token_make(w->o->key, TRACK_CLICK, w->o->envelope_id, url, tok,
			     sizeof(tok)) != NERR_OK)
		return;
	flush_to(w, l->href.repl_start);
	put_link(w, "\"", "/t/c/", tok, "\"");
	w->copied = l->href.repl_end;
}

static const char *const raw_text[] = {"script", "style",  "textarea", "title",
				       "xmp",	 "iframe", "noembed",  "noframes"};

/* Index of the end tag "</name" (followed by space, '/' or '>') at or after i,
 * or len. */
static size_t find_end_tag(const struct rw *w, size_t i, const char *name)
{
	size_t nl = strlen(name);

	while (i < w->len) {
		const char *lt = memchr(w->html + i, '<', w->len - i);
		size_t at, after;

		if (!lt)
			return w->len;
		at = (size_t)(lt - w->html);
		after = at + 2 + nl;
		if (after <= w->len && w->html[at + 1] == '/' &&
		    strncasecmp(w->html + at + 2, name, nl) == 0 &&
		    (after == w->len || is_ws((unsigned char)w->html[after]) ||
		     w->html[after] == '/' || w->html[after] == '>'))
			return at;
		i = at + 1;
	}
	return w->len;
}

/* Index just past the end of a comment whose "<!--" starts at i. */
static size_t skip_comment(const struct rw *w, size_t i)
{
	const char *h = w->html;
	size_t len = w->len, j = i + 4;

	/* "<!-->" and "<!--->" are (empty) comments that end at once. */
	if (j < len && h[j] == '>')
		return j + 1;
	if (j + 1 < len && h[j] == '-' && h[j + 1] == '>')
		return j + 2;
	while (j < len) {
		const char *d = memchr(h + j, '-', len - j);
		if (!d)
			return len;
		j = (size_t)(d - h);
		if (j + 2 < len && h[j + 1] == '-' && h[j + 2] == '>')
			return j + 3;
		if (j + 3 < len && h[j + 1] == '-' && h[j + 2] == '!' && h[j + 3] == '>')
			return j + 4;
		j++;
	}
	return len;
}

static enum nerr check_base(const char *base, size_t *n)
{
	size_t r, l;

	if (!base)
		return NERR_INVAL;
	l = strlen(base);
	while (l > 0 && base[l - 1] == '/')
		l--;
	if (l == 0 || l > 512 || !http_scheme(base, l, &r) || r >= l)
		return NERR_INVAL;
	for (size_t i = 0; i < l; i++) {
		unsigned char c = (unsigned char)base[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\'' || c == '<' ||
		    c == '>' || c == '&' || c == '?' || c == '#' || c == '\\')
			return NERR_INVAL;
	}
	*n = l;
	return NERR_OK;
}

enum nerr track_base_check(const char *base_url)
{
	size_t n;

	return check_base(base_url, &n);
}

static enum nerr put_pixel(struct rw *w)
{
	char tok[TRACK_TOKEN_MAX + 1];
	enum nerr rc;

	rc = track_token_make(w->o->key, TRACK_OPEN, w->o->envelope_id, NULL, tok,
			      sizeof(tok));
	if (rc != NERR_OK)
		return rc;
	put_link(w, "<img src=\"", "/t/o/", tok,
		 "\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">");
	return w->rc;
}

enum nerr track_rewrite_html(const char *html, size_t len,
			     const struct track_rewrite_opts *o, struct buf *out)
{
	struct rw w = {html, len, o, NULL, 0, out, 0, SIZE_MAX, NERR_OK};
	size_t start_len = out->len, i = 0;
	char *tail = NULL;

	if (!o || !o->key || o->key->nkeys == 0 || !o->envelope_id ||
	    !valid_id(o->envelope_id, strlen(o->envelope_id)))
		return NERR_INVAL;
	if (check_base(o->base_url, &w.base_len) != NERR_OK)
		return NERR_INVAL;
	w.base = o->base_url;
	if (!html)
		len = w.len = 0;

	while (i < len && w.rc == NERR_OK) {
		const char *lt = memchr(html + i, '<', len - i);
		size_t n, name_end;
		bool closed;

		if (!lt)
			break;
		i = (size_t)(lt - html);
		n = len - i;
		if (n >= 4 && memcmp(html + i, "<!--", 4) == 0) {
			i = skip_comment(&w, i);
		} else if (n >= 2 && (html[i + 1] == '!' || html[i + 1] == '?')) {
			const char *gt = memchr(html + i + 2, '>', n - 2);
			i = gt ? (size_t)(gt - html) + 1 : len;
		} else if (n >= 3 && html[i + 1] == '/' &&
			   is_alpha((unsigned char)html[i + 2])) {
			size_t tag_at = i;
			name_end = i + 3;
			while (name_end < len && !is_ws((unsigned char)html[name_end]) &&
			       html[name_end] != '/' && html[name_end] != '>')
				name_end++;
			if (name_is(html + i + 2, name_end - i - 2, "body")) {
				flush_to(&w, tag_at);
				w.body_at = out->len;
			}
			i = scan_attrs(&w, name_end, NULL, NULL, &closed);
		} else if (n >= 2 && is_alpha((unsigned char)html[i + 1])) {
			const char *name = html + i + 1;
			size_t nl;
			name_end = i + 2;
			while (name_end < len && !is_ws((unsigned char)html[name_end]) &&
			       html[name_end] != '/' && html[name_end] != '>')
				name_end++;
			nl = (size_t)(html + name_end - name);
			if (o->click &&
			    (name_is(name, nl, "a") || name_is(name, nl, "area"))) {
				struct link l = {.html = html};
				i = scan_attrs(&w, name_end, link_attr, &l, &closed);
				if (closed)
					rewrite_link(&w, &l);
			} else {
				i = scan_attrs(&w, name_end, NULL, NULL, &closed);
			}
			if (name_is(name, nl, "plaintext")) {
				i = len;
			} else {
				for (size_t r = 0;
				     r < sizeof(raw_text) / sizeof(raw_text[0]); r++)
					if (name_is(name, nl, raw_text[r])) {
						i = find_end_tag(&w, i, raw_text[r]);
						break;
					}
			}
		} else {
			i++;
		}
	}
	flush_to(&w, len);
	if (w.rc == NERR_OK && o->open) {
		if (w.body_at == SIZE_MAX) {
			w.rc = put_pixel(&w);
		} else {
			size_t tl = out->len - w.body_at;
			tail = xmalloc(tl + 1);
			memcpy(tail, out->data + w.body_at, tl);
			out->len = w.body_at;
			out->data[out->len] = '\0';
			w.rc = put_pixel(&w);
			if (w.rc == NERR_OK)
				w.rc = buf_append(out, tail, tl);
		}
	}
	free(tail);
	if (w.rc != NERR_OK) {
		out->len = start_len;
		if (out->data)
			out->data[out->len] = '\0';
	}
	return w.rc;
}

enum nerr track_unsubscribe_url(const char *base_url, const struct track_key *k,
				const char *envelope_id, struct buf *out)
{
	char tok[TRACK_TOKEN_MAX + 1];
	size_t bl;
	enum nerr rc;

	if (check_base(base_url, &bl) != NERR_OK)
		return NERR_INVAL;
	rc = track_token_make(k, TRACK_UNSUBSCRIBE, envelope_id, NULL, tok, sizeof(tok));
	if (rc != NERR_OK)
		return rc;
	return buf_printf(out, "%.*s/t/u/%s", (int)bl, base_url, tok);
}

/* ------------------------------------------------------ pixel and pages */

/* GIF89a, 1x1, a two-colour table, colour 0 transparent (Graphic Control
 * Extension), one LZW-coded pixel of colour 0. */
const unsigned char track_pixel_gif[TRACK_PIXEL_GIF_LEN] = {
	'G',  'I',  'F',  '8',	'9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80,
	0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
	0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

static const char page_head[] =
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	"<meta name=\"robots\" content=\"noindex, nofollow\">"
	"<meta name=\"referrer\" content=\"no-referrer\">"
	"<title>%s</title><style>body{font-family:system-ui,sans-serif;max-width:32em;"
	"margin:3em auto;padding:0 1em;color:#222;line-height:1.5}"
	"button{font-size:1em;padding:.5em 1.2em;cursor:pointer}</style></head><body>\n";

static enum nerr put_sender_phrase(struct buf *out, const char *sender)
{
	if (sender && *sender) {
		enum nerr rc = buf_puts(out, "from <strong>");
		if (rc == NERR_OK)
			rc = put_escaped(out, sender);
		if (rc == NERR_OK)
			rc = buf_puts(out, "</strong>");
		return rc;
	}
	return buf_puts(out, "from this sender");
}

enum nerr track_page_confirm(const char *sender, const char *token, struct buf *out)
{
	size_t start = out->len;
	enum nerr rc;

	rc = buf_printf(out, page_head, "Unsubscribe");
	if (rc == NERR_OK)
		rc = buf_puts(out,
			      "<h1>Unsubscribe</h1>\n<p>Stop receiving these emails ");
	if (rc == NERR_OK)
		rc = put_sender_phrase(out, sender);
	if (rc == NERR_OK)
		rc = buf_puts(out, "?</p>\n<form method=\"post\" action=\"");
	if (rc == NERR_OK)
		rc = put_escaped(out, token ? token : "");
	if (rc == NERR_OK)
		rc = buf_puts(out,
			      "\"><input type=\"hidden\" name=\"List-Unsubscribe\" "
			      "value=\"One-Click\"><button type=\"submit\">Unsubscribe"
			      "</button></form>\n</body></html>\n");
	if (rc != NERR_OK) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}

enum nerr track_page_done(const char *sender, struct buf *out)
{
	size_t start = out->len;
	enum nerr rc;

	rc = buf_printf(out, page_head, "Unsubscribed");
	if (rc == NERR_OK)
		rc = buf_puts(out, "<h1>You are unsubscribed</h1>\n<p>You will no longer "
				   "receive these emails ");
	if (rc == NERR_OK)
		rc = put_sender_phrase(out, sender);
	if (rc == NERR_OK)
		rc = buf_puts(out, ".</p>\n</body></html>\n");
	if (rc != NERR_OK) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}

static int hexdig(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes one form component (percent escapes, '+' as space) into s. */
static void form_decode(const char *p, size_t n, struct sink *s)
{
	for (size_t i = 0; i < n && !s->over; i++) {
		char c = p[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && i + 2 < n && hexdig(p[i + 1]) >= 0 &&
			   hexdig(p[i + 2]) >= 0) {
			c = (char)(hexdig(p[i + 1]) << 4 | hexdig(p[i + 2]));
			i += 2;
		}
		sink_put(s, &c, 1);
	}
}

bool track_one_click_body(const char *body, size_t len)
{
	size_t i = 0;

	if (!body)
		return false;
	while (i < len) {
		const char *amp = memchr(body + i, '&', len - i);
		size_t end = amp ? (size_t)(amp - body) : len;
		const char *eq = memchr(body + i, '=', end - i);

		if (eq) {
			char k[32], v[32];
			struct sink ks = {k, 0, sizeof(k) - 1, false};
			struct sink vs = {v, 0, sizeof(v) - 1, false};
			form_decode(body + i, (size_t)(eq - body) - i, &ks);
			form_decode(eq + 1, end - (size_t)(eq - body) - 1, &vs);
			k[ks.n] = v[vs.n] = '\0';
			if (!ks.over && !vs.over && strcmp(k, "List-Unsubscribe") == 0 &&
			    strcmp(v, "One-Click") == 0)
				return true;
		}
		i = end + 1;
	}
	return false;
}
