/*
 * test_track.c -- tracking tokens, HTML link rewriting, the pixel and pages.
 *
 * Tokens: every kind round-trips; every single-character change, truncation,
 * extension, foreign key, wrong kind and non-canonical encoding is refused
 * (track.c invariant 1); tokens built by hand to the documented format with a
 * valid tag but a bad structure are refused too. Rewriting: one test per rule
 * of track_rewrite_html() (quoting, case, entities, exclusions, raw text,
 * comments, the pixel's place), each checking the signed URL by parsing the
 * token back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/buf.h"
#include "deliver/track.h"

#define SECRET	   "0123456789abcdef-test-secret"
#define OLD_SECRET "fedcba9876543210-old-secret"
#define ENV_ID	   "3f2a9c0d11e84b7c9a5d6e7f80112233"
#define BASE	   "https://t.example.com"

static struct track_key key;

static int setup(void **state)
{
	assert_int_equal(track_key_init(&key, SECRET), NERR_OK);
	return 0;
}

static int teardown(void **state)
{
	track_key_fini(&key);
	return 0;
}

/* ---- tokens ---- */

static void round_trips_every_kind(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;

	assert_int_equal(
		track_token_make(&key, TRACK_OPEN, ENV_ID, NULL, tok, sizeof(tok)),
		NERR_OK);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_int_equal(c.kind, TRACK_OPEN);
	assert_string_equal(c.envelope_id, ENV_ID);
	assert_string_equal(c.url, "");
	assert_int_equal(c.key_index, 0);
	/* Packed hex id: 3 + 16 + 16 bytes -> 47 characters. */
	assert_int_equal(strlen(tok), 47);

	assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID,
					  "https://shop.example/cart?a=1&b=%C3%A9#top",
					  tok, sizeof(tok)),
			 NERR_OK);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_int_equal(c.kind, TRACK_CLICK);
	assert_string_equal(c.url, "https://shop.example/cart?a=1&b=%C3%A9#top");
	assert_string_equal(c.envelope_id, ENV_ID);

	assert_int_equal(track_token_make(&key, TRACK_UNSUBSCRIBE, "env-42:A.b_c", NULL,
					  tok, sizeof(tok)),
			 NERR_OK);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_int_equal(c.kind, TRACK_UNSUBSCRIBE);
	assert_string_equal(c.envelope_id, "env-42:A.b_c");
	for (const char *p = tok; *p; p++)
		assert_non_null(
			strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			       "0123456789-_",
			       *p));
}

static void longest_url_fits_token_max(void **state)
{
	char url[TRACK_URL_MAX + 2], id[TRACK_ID_MAX + 1], tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;

	memset(id, 'Z', TRACK_ID_MAX);
	id[TRACK_ID_MAX] = '\0';
	strcpy(url, "http://x.example/");
	memset(url + 17, 'q', TRACK_URL_MAX - 17);
	url[TRACK_URL_MAX] = '\0';
	assert_int_equal(track_token_make(&key, TRACK_CLICK, id, url, tok, sizeof(tok)),
			 NERR_OK);
	assert_true(strlen(tok) <= TRACK_TOKEN_MAX);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_string_equal(c.url, url);
	assert_string_equal(c.envelope_id, id);
	url[TRACK_URL_MAX] = 'q';
	url[TRACK_URL_MAX + 1] = '\0';
	assert_int_equal(track_token_make(&key, TRACK_CLICK, id, url, tok, sizeof(tok)),
			 NERR_INVAL);
}

static void changing_any_character_is_refused(void **state)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. ";
	const char *urls[] = {NULL, "https://example.com/a?b=c", NULL};
	enum track_kind kinds[] = {TRACK_OPEN, TRACK_CLICK, TRACK_UNSUBSCRIBE};
	char tok[TRACK_TOKEN_MAX + 1], bad[TRACK_TOKEN_MAX + 1];
	struct track_claim c;

	for (int k = 0; k < 3; k++) {
		assert_int_equal(track_token_make(&key, kinds[k], ENV_ID, urls[k], tok,
						  sizeof(tok)),
				 NERR_OK);
		size_t n = strlen(tok);
		for (size_t i = 0; i < n; i++) {
			for (const char *a = alpha; *a; a++) {
				if (*a == tok[i])
					continue;
				strcpy(bad, tok);
				bad[i] = *a;
				assert_int_equal(track_token_parse(&key, bad, &c),
						 NERR_AUTH);
				assert_int_equal(c.kind, 0);
				assert_string_equal(c.url, "");
			}
			/* Each bit of the byte, too (may leave the alphabet). */
			for (int bit = 0; bit < 8; bit++) {
				strcpy(bad, tok);
				bad[i] ^= (char)(1 << bit);
				if (bad[i] == '\0')
					continue;
				assert_int_equal(track_token_parse(&key, bad, &c),
						 NERR_AUTH);
			}
		}
	}
}

static void truncated_or_extended_is_refused(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1], bad[TRACK_TOKEN_MAX + 8];
	struct track_claim c;
	size_t n;

	assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID, "http://a.example/x",
					  tok, sizeof(tok)),
			 NERR_OK);
	n = strlen(tok);
	for (size_t i = 0; i < n; i++) {
		memcpy(bad, tok, i);
		bad[i] = '\0';
		assert_int_equal(track_token_parse(&key, bad, &c), NERR_AUTH);
		/* Dropping one inner character as well. */
		memcpy(bad, tok, i);
		strcpy(bad + i, tok + i + 1);
		assert_int_equal(track_token_parse(&key, bad, &c), NERR_AUTH);
	}
	for (const char *ext = "AQ_-"; *ext; ext++) {
		snprintf(bad, sizeof(bad), "%s%c", tok, *ext);
		assert_int_equal(track_token_parse(&key, bad, &c), NERR_AUTH);
		snprintf(bad, sizeof(bad), "%s%c%c", tok, *ext, *ext);
		assert_int_equal(track_token_parse(&key, bad, &c), NERR_AUTH);
	}
	snprintf(bad, sizeof(bad), "%s=", tok);
	assert_int_equal(track_token_parse(&key, bad, &c), NERR_AUTH);
	assert_int_equal(track_token_parse(&key, "", &c), NERR_AUTH);
	assert_int_equal(track_token_parse(&key, NULL, &c), NERR_AUTH);
}

static void non_canonical_base64_is_refused(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;
	size_t n;
	int found = 0;

	/* Find a token whose length leaves unused trailing bits, then set them. */
	for (int len = 1; len < 8 && !found; len++) {
		char url[64];
		snprintf(url, sizeof(url), "http://a.example/%.*s", len, "abcdefgh");
		assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID, url, tok,
						  sizeof(tok)),
				 NERR_OK);
		n = strlen(tok);
		if (n % 4 == 0)
			continue;
		found = 1;
		const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				    "0123456789-_";
		int v = (int)(strchr(alpha, tok[n - 1]) - alpha);
		tok[n - 1] = alpha[v | 1]; /* the lowest bit is always unused */
		assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	}
	assert_true(found);
}

static void wrong_key_refused_and_rotation_accepted(void **state)
{
	struct track_key old, rotated, other;
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;

	assert_int_equal(track_key_init(&old, OLD_SECRET), NERR_OK);
	assert_int_equal(track_key_init(&other, "another-secret-of-enough-length"),
			 NERR_OK);
	assert_int_equal(track_key_init(&rotated, SECRET), NERR_OK);
	assert_int_equal(track_key_add_old(&rotated, OLD_SECRET), NERR_OK);

	assert_int_equal(track_token_make(&old, TRACK_CLICK, ENV_ID, "https://x.example/",
					  tok, sizeof(tok)),
			 NERR_OK);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	assert_int_equal(track_token_parse(&other, tok, &c), NERR_AUTH);
	assert_int_equal(track_token_parse(&rotated, tok, &c), NERR_OK);
	assert_int_equal(c.key_index, 1);
	assert_string_equal(c.url, "https://x.example/");

	/* New tokens are signed with the current secret. */
	assert_int_equal(
		track_token_make(&rotated, TRACK_OPEN, ENV_ID, NULL, tok, sizeof(tok)),
		NERR_OK);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_int_equal(track_token_parse(&old, tok, &c), NERR_AUTH);
	assert_int_equal(track_token_parse(&rotated, tok, &c), NERR_OK);
	assert_int_equal(c.key_index, 0);

	/* Full key ring. */
	for (unsigned i = 2; i < TRACK_MAX_KEYS; i++)
		assert_int_equal(track_key_add_old(&rotated, "yet-another-old-secret!"),
				 NERR_OK);
	assert_int_equal(track_key_add_old(&rotated, "yet-another-old-secret!"),
			 NERR_LIMIT);
	track_key_fini(&old);
	track_key_fini(&other);
	track_key_fini(&rotated);
	assert_int_equal(rotated.nkeys, 0);
	assert_int_equal(track_token_parse(&rotated, tok, &c), NERR_AUTH);
}

static void short_secret_refused(void **state)
{
	struct track_key k;
	char tok[TRACK_TOKEN_MAX + 1];

	assert_int_equal(track_key_init(&k, "short"), NERR_INVAL);
	assert_int_equal(track_key_init(&k, NULL), NERR_INVAL);
	assert_int_equal(track_token_make(&k, TRACK_OPEN, ENV_ID, NULL, tok, sizeof(tok)),
			 NERR_INVAL);
	assert_int_equal(track_key_init(&k, SECRET), NERR_OK);
	assert_int_equal(track_key_add_old(&k, "short"), NERR_INVAL);
	assert_int_equal(k.nkeys, 1);
	track_key_fini(&k);
}

static void wrong_kind_refused_by_verify(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;

	assert_int_equal(
		track_token_make(&key, TRACK_OPEN, ENV_ID, NULL, tok, sizeof(tok)),
		NERR_OK);
	assert_int_equal(track_token_verify(&key, TRACK_OPEN, tok, &c), NERR_OK);
	assert_int_equal(track_token_verify(&key, TRACK_UNSUBSCRIBE, tok, &c), NERR_AUTH);
	assert_string_equal(c.envelope_id, "");
	assert_int_equal(track_token_verify(&key, TRACK_CLICK, tok, &c), NERR_AUTH);
	assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID, "http://e.example/",
					  tok, sizeof(tok)),
			 NERR_OK);
	assert_int_equal(track_token_verify(&key, TRACK_OPEN, tok, &c), NERR_AUTH);
	assert_int_equal(track_token_verify(&key, TRACK_CLICK, tok, &c), NERR_OK);
}

static void make_refuses_bad_arguments(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1], small[20];
	const char *bad_urls[] = {"",
				  "ftp://x.example/",
				  "javascript:alert(1)",
				  "//x.example/",
				  "http://",
				  "http:///path",
				  "https://x.example/a b",
				  "https://x.example/\r\nSet-Cookie: a=b",
				  "https://x.example/\xc3\xa9",
				  "/relative"};

	for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++)
		assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID, bad_urls[i],
						  tok, sizeof(tok)),
				 NERR_INVAL);
	assert_int_equal(
		track_token_make(&key, TRACK_CLICK, ENV_ID, NULL, tok, sizeof(tok)),
		NERR_INVAL);
	assert_int_equal(track_token_make(&key, TRACK_OPEN, ENV_ID, "http://x.example/",
					  tok, sizeof(tok)),
			 NERR_INVAL);
	assert_int_equal(track_token_make(&key, TRACK_OPEN, "", NULL, tok, sizeof(tok)),
			 NERR_INVAL);
	assert_int_equal(
		track_token_make(&key, TRACK_OPEN, "a b", NULL, tok, sizeof(tok)),
		NERR_INVAL);
	assert_int_equal(
		track_token_make(&key, TRACK_OPEN, "a/b", NULL, tok, sizeof(tok)),
		NERR_INVAL);
	assert_int_equal(track_token_make(&key, (enum track_kind)7, ENV_ID, NULL, tok,
					  sizeof(tok)),
			 NERR_INVAL);
	assert_int_equal(
		track_token_make(&key, TRACK_OPEN, ENV_ID, NULL, small, sizeof(small)),
		NERR_TOOBIG);
	assert_string_equal(small, "");
	/* HTTPS in capitals is still http(s). */
	assert_int_equal(track_token_make(&key, TRACK_CLICK, ENV_ID, "HTTPS://X.example/",
					  tok, sizeof(tok)),
			 NERR_OK);
}

/* Builds a token by hand per the documented format, with a valid tag. */
static void handmade(const unsigned char *payload, size_t n, char *out)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char mk[32], tag[32], raw[4096];
	unsigned int ml = 0, tl = 0;
	size_t o = 0, rn;

	HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
	     (const unsigned char *)"nudge/track/v1", 14, mk, &ml);
	HMAC(EVP_sha256(), mk, 32, payload, n, tag, &tl);
	memcpy(raw, payload, n);
	memcpy(raw + n, tag, 16);
	rn = n + 16;
	for (size_t i = 0; i < rn; i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16;
		if (i + 1 < rn)
			v |= (uint32_t)raw[i + 1] << 8;
		if (i + 2 < rn)
			v |= raw[i + 2];
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		if (i + 1 < rn)
			out[o++] = alpha[(v >> 6) & 63];
		if (i + 2 < rn)
			out[o++] = alpha[v & 63];
	}
	out[o] = '\0';
}

static void authentic_but_malformed_payload_is_refused(void **state)
{
	char tok[8192];
	struct track_claim c;
	/* A well-formed one first, to show the hand-made format is right. */
	unsigned char ok[] = {1,   2,	3,   'a', 'b', 'c', 'h',
			      't', 't', 'p', ':', '/', '/', 'x'};
	unsigned char v2[] = {2, 1, 3, 'a', 'b', 'c'};
	unsigned char kind0[] = {1, 0, 3, 'a', 'b', 'c'};
	unsigned char kind9[] = {1, 9, 3, 'a', 'b', 'c'};
	unsigned char noid[] = {1, 1, 0};
	unsigned char longid[] = {1, 1, 9, 'a', 'b', 'c'};
	unsigned char badid[] = {1, 1, 3, 'a', ' ', 'c'};
	unsigned char open_url[] = {1,	 1,   3,   'a', 'b', 'c', 'h',
				    't', 't', 'p', ':', '/', '/', 'x'};
	unsigned char click_nourl[] = {1, 2, 3, 'a', 'b', 'c'};
	unsigned char click_js[] = {1, 2, 3, 'a', 'b', 'c', 'j', 's', ':', 'x'};
	unsigned char click_crlf[] = {1,   2,	1,   'a', 'h', 't',  't',
				      'p', ':', '/', '/', 'x', '\r', '\n'};
	unsigned char unpacked_hex[] = {1, 1, 2, 'a', 'b'}; /* make would pack it */
	unsigned char long_id[3 + 200];
	unsigned char long_packed[3 + 100];
	struct {
		const unsigned char *p;
		size_t n;
	} bad[] = {{v2, sizeof(v2)},
		   {kind0, sizeof(kind0)},
		   {kind9, sizeof(kind9)},
		   {noid, sizeof(noid)},
		   {longid, sizeof(longid)},
		   {badid, sizeof(badid)},
		   {open_url, sizeof(open_url)},
		   {click_nourl, sizeof(click_nourl)},
		   {click_js, sizeof(click_js)},
		   {click_crlf, sizeof(click_crlf)},
		   {unpacked_hex, sizeof(unpacked_hex)}};

	/* Ids longer than TRACK_ID_MAX, plain (200 'z') and packed (200 hex
	 * digits): authentic, but make never writes them. */
	long_id[0] = 1, long_id[1] = 1, long_id[2] = 200;
	memset(long_id + 3, 'z', 200);
	long_packed[0] = 1, long_packed[1] = 1 | 0x80, long_packed[2] = 100;
	memset(long_packed + 3, 0xab, 100);
	handmade(long_id, sizeof(long_id), tok);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	handmade(long_packed, sizeof(long_packed), tok);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	handmade(ok, sizeof(ok), tok);
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_OK);
	assert_string_equal(c.url, "http://x");
	assert_string_equal(c.envelope_id, "abc");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		handmade(bad[i].p, bad[i].n, tok);
		assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	}
}

static void forged_tokens_are_refused(void **state)
{
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;
	unsigned seed = 12345;

	/* Random texts of plausible lengths. */
	for (int t = 0; t < 2000; t++) {
		size_t n = 20 + (size_t)(rand_r(&seed) % 120);
		for (size_t i = 0; i < n; i++)
			tok[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012"
				 "3456789-_"[rand_r(&seed) % 64];
		tok[n] = '\0';
		assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
	}
	/* Too long. */
	memset(tok, 'A', TRACK_TOKEN_MAX);
	tok[TRACK_TOKEN_MAX] = '\0';
	assert_int_equal(track_token_parse(&key, tok, &c), NERR_AUTH);
}

static void path_parse(void **state)
{
	enum track_kind k;
	const char *t;
	size_t n;

	assert_int_equal(track_path_parse("/t/o/abc", &k, &t, &n), NERR_OK);
	assert_int_equal(k, TRACK_OPEN);
	assert_int_equal(n, 3);
	assert_memory_equal(t, "abc", 3);
	assert_int_equal(track_path_parse("/t/c/abc?x=1", &k, &t, &n), NERR_OK);
	assert_int_equal(k, TRACK_CLICK);
	assert_int_equal(n, 3);
	assert_int_equal(track_path_parse("/t/u/Zz-_", &k, &t, &n), NERR_OK);
	assert_int_equal(k, TRACK_UNSUBSCRIBE);
	assert_int_equal(track_path_parse("/t/x/abc", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/t/o/", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/t/o", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/t/", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/t/o/a/b", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/v1/track", &k, &t, &n), NERR_NOTFOUND);
	assert_int_equal(track_path_parse("/t/oo/abc", &k, &t, &n), NERR_NOTFOUND);
	assert_string_equal(track_kind_str(TRACK_CLICK), "click");
}

/* ---- rewriting ---- */

static char *rewrite_opts(const char *html, bool click, bool open)
{
	struct track_rewrite_opts o = {BASE, &key, ENV_ID, click, open};
	struct buf out;

	buf_init(&out, 0);
	assert_int_equal(track_rewrite_html(html, strlen(html), &o, &out), NERR_OK);
	return buf_take(&out);
}

static char *rewrite(const char *html)
{
	return rewrite_opts(html, true, false);
}

/* The URL signed in the n-th click link of out (0-based), or asserts. */
static void nth_click(const char *out, int n, char *url)
{
	const char *p = out;
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;
	size_t tl;

	for (int i = 0; i <= n; i++) {
		p = strstr(p, BASE "/t/c/");
		assert_non_null(p);
		p += strlen(BASE "/t/c/");
	}
	tl = strcspn(p, "\"");
	assert_true(tl < sizeof(tok));
	memcpy(tok, p, tl);
	tok[tl] = '\0';
	assert_int_equal(track_token_verify(&key, TRACK_CLICK, tok, &c), NERR_OK);
	assert_string_equal(c.envelope_id, ENV_ID);
	strcpy(url, c.url);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/*
 * Checks that out is html with only href values replaced: the text before
 * the first rewritten link is identical, and rewriting out again changes
 * nothing (links under BASE/t/ are not wrapped twice, everything else in out
 * is copied through).
 */
static void assert_only_hrefs_changed(const char *html, const char *out)
{
	const char *first = strstr(out, "\"" BASE "/t/c/");
	size_t pre = first ? (size_t)(first - out) : strlen(out);
	char *again;

	assert_memory_equal(html, out, pre);
	again = rewrite(out);
	assert_string_equal(again, out);
	free(again);
}

static void rewrites_double_single_and_unquoted(void **state)
{
	const char *html = "<p><a href=\"https://a.example/1\">one</a> "
			   "<a class=x href='http://b.example/2?q=1'>two</a> "
			   "<a href=https://c.example/3 title=t>three</a></p>";
	char *out = rewrite(html), url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 3);
	nth_click(out, 0, url);
	assert_string_equal(url, "https://a.example/1");
	nth_click(out, 1, url);
	assert_string_equal(url, "http://b.example/2?q=1");
	nth_click(out, 2, url);
	assert_string_equal(url, "https://c.example/3");
	assert_non_null(strstr(out, "<a class=x href=\"" BASE "/t/c/"));
	assert_non_null(strstr(out, "\" title=t>three</a></p>"));
	assert_non_null(strstr(out, ">one</a> "));
	assert_null(strstr(out, "a.example"));
	assert_only_hrefs_changed(html, out);
	free(out);
}

static void uppercase_tags_and_attributes(void **state)
{
	char *out = rewrite(
		"<A HREF=\"HTTPS://Up.Example/X\">x</A><AREA Href='http://m.example/'>");
	char url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 2);
	nth_click(out, 0, url);
	assert_string_equal(url, "HTTPS://Up.Example/X");
	nth_click(out, 1, url);
	assert_string_equal(url, "http://m.example/");
	free(out);
}

static void entities_decoded_before_signing(void **state)
{
	char *out =
		rewrite("<a href=\"https://e.example/p?a=1&amp;b=2&#38;c=3&#x26;d=&quot;"
			"&lt;&gt;&copy=4&amp\">x</a>");
	char url[TRACK_URL_MAX + 1];

	nth_click(out, 0, url);
	/* &copy=4 stays (not decoded in attributes before '='); the final "&amp"
	 * without ';' is decoded (legacy rule); '"<>' get percent-encoded. */
	assert_string_equal(url, "https://e.example/p?a=1&b=2&c=3&d=%22%3C%3E&copy=4&");
	free(out);

	out = rewrite("<a href='https://e.example/?x=&ampy&amp=1&#0;&#x110000;'>x</a>");
	nth_click(out, 0, url);
	/* "&ampy" is not decoded (followed by alnum), "&amp=" neither, and bad
	 * numeric references become U+FFFD, percent-encoded as UTF-8. */
	assert_string_equal(url, "https://e.example/?x=&ampy&amp=1%EF%BF%BD%EF%BF%BD");
	free(out);
}

static void spaces_and_non_ascii_handled_like_a_browser(void **state)
{
	char *out =
		rewrite("<a href=\"  \n https://s.example/a b/\xc3\xa9?\tq=1\n \">x</a>");
	char url[TRACK_URL_MAX + 1];

	nth_click(out, 0, url);
	assert_string_equal(url, "https://s.example/a%20b/%C3%A9?q=1");
	free(out);
	/* A non-ASCII host is left to the browser (IDNA). */
	const char *idn = "<a href=\"https://b\xc3\xbc"
			  "cher.example/\">x</a>";
	out = rewrite(idn);
	assert_string_equal(out, idn);
	free(out);
}

static void leaves_non_http_links_alone(void **state)
{
	const char *html =
		"<a href=\"mailto:a@b.example\">m</a><a href=\"tel:+15551234\">t</a>"
		"<a href=\"#top\">h</a><a href=\"/relative\">r</a>"
		"<a href=\"//proto.example/\">p</a><a href=\"javascript:alert(1)\">j</a>"
		"<a href=\"ftp://f.example/\">f</a><a name=\"anchor\">n</a><a href>e</a>"
		"<a href=\"\">e2</a><a href=\"http:no-slashes.example\">s</a>"
		"<abbr href=\"https://not-a-link.example/\">a</abbr>"
		"<link href=\"https://style.example/x.css\">";
	char *out = rewrite(html);

	assert_string_equal(out, html);
	free(out);
}

static void opt_out_attribute(void **state)
{
	const char *html =
		"<a data-nudge-track=\"off\" href=\"https://o.example/\">o</a>"
		"<a href='https://o2.example/' DATA-NUDGE-TRACK=OFF>o2</a>"
		"<a href=\"https://t.example2/\" data-nudge-track=\"on\">t</a>";
	char *out = rewrite(html), url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 1);
	assert_non_null(
		strstr(out, "<a data-nudge-track=\"off\" href=\"https://o.example/\">"));
	assert_non_null(
		strstr(out, "<a href='https://o2.example/' DATA-NUDGE-TRACK=OFF>"));
	nth_click(out, 0, url);
	assert_string_equal(url, "https://t.example2/");
	free(out);
}

static void comments_scripts_styles_and_text_untouched(void **state)
{
	const char *html =
		"<!-- <a href=\"https://c1.example/\"> -->"
		"<!--[if mso]><a href=\"https://c2.example/\">v</a><![endif]-->"
		"<script>var s = '<a href=\"https://s.example/\">';</script>"
		"<SCRIPT type=x>document.write(\"<a href=https://s2.example/>\")</SCRIPT "
		">"
		"<style>a[href=\"https://st.example/\"]{}</style>"
		"<textarea><a href=\"https://ta.example/\"></textarea>"
		"<title><a href=\"https://ti.example/\"></title>"
		"text href=\"https://text.example/\" &amp; a < b > c"
		"<!DOCTYPE html><?xml version=\"1.0\"?>"
		"<a href=\"https://real.example/\">real</a>";
	char *out = rewrite(html), url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 1);
	nth_click(out, 0, url);
	assert_string_equal(url, "https://real.example/");
	assert_only_hrefs_changed(html, out);
	free(out);
}

static void scripts_end_only_at_their_end_tag(void **state)
{
	/* "</scriptx" does not end a script; "</script/" does. */
	const char *html = "<script></scriptx><a href=\"https://in.example/\"></script/>"
			   "<a href=\"https://out.example/\">o</a>";
	char *out = rewrite(html), url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 1);
	nth_click(out, 0, url);
	assert_string_equal(url, "https://out.example/");
	free(out);
}

static void odd_comments(void **state)
{
	char url[TRACK_URL_MAX + 1];
	/* "<!-->" ends at once; "--!>" ends a comment. */
	char *out = rewrite("<!--><a href=\"https://a.example/\">a</a>"
			    "<!-- x --!><a href=\"https://b.example/\">b</a>"
			    "<!-- unterminated <a href=\"https://c.example/\">");

	assert_int_equal(count(out, BASE "/t/c/"), 2);
	nth_click(out, 0, url);
	assert_string_equal(url, "https://a.example/");
	nth_click(out, 1, url);
	assert_string_equal(url, "https://b.example/");
	free(out);
}

static void quoted_gt_inside_attribute_and_duplicate_href(void **state)
{
	char *out = rewrite("<a title=\"a > b\" href=\"https://first.example/\" "
			    "href=\"https://second.example/\">x</a>");
	char url[TRACK_URL_MAX + 1];

	assert_int_equal(count(out, BASE "/t/c/"), 1);
	nth_click(out, 0, url);
	assert_string_equal(url, "https://first.example/");
	assert_non_null(strstr(out, "href=\"https://second.example/\">x</a>"));
	free(out);
}

static void unterminated_tags_copied_unchanged(void **state)
{
	const char *cases[] = {"<a href=\"https://u.example/",
			       "<a href='https://u.example/'",
			       "<a href=",
			       "<a href = ",
			       "<a",
			       "<",
			       "</",
			       "</a",
			       "<!",
			       "<!-",
			       "<?"};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = rewrite(cases[i]);
		assert_string_equal(out, cases[i]);
		free(out);
	}
}

static void own_unsubscribe_link_not_wrapped(void **state)
{
	struct buf u, html;
	char *out;

	buf_init(&u, 0);
	buf_init(&html, 0);
	assert_int_equal(track_unsubscribe_url(BASE "/", &key, ENV_ID, &u), NERR_OK);
	assert_true(strncmp(buf_str(&u), BASE "/t/u/", strlen(BASE "/t/u/")) == 0);
	buf_printf(&html, "<a href=\"%s\">unsubscribe</a><a href=\"%s\">other</a>",
		   buf_str(&u), BASE "/shop");
	out = rewrite(buf_str(&html));
	assert_non_null(strstr(out, buf_str(&u)));
	assert_int_equal(count(out, BASE "/t/c/"), 1);

	{
		struct track_claim c;
		const char *tok = buf_str(&u) + strlen(BASE "/t/u/");
		assert_int_equal(track_token_verify(&key, TRACK_UNSUBSCRIBE, tok, &c),
				 NERR_OK);
		assert_string_equal(c.envelope_id, ENV_ID);
	}
	free(out);
	buf_fini(&u);
	buf_fini(&html);
}

static void pixel_before_last_body_end_tag(void **state)
{
	char *out = rewrite_opts("<html><body><p>hi</p></BODY ></html>", false, true);
	const char *img, *end;
	char tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;
	size_t tl;

	img = strstr(out, "<img src=\"" BASE "/t/o/");
	end = strstr(out, "</BODY >");
	assert_non_null(img);
	assert_non_null(end);
	assert_true(img < end);
	assert_non_null(strstr(out, "\" width=\"1\" height=\"1\" alt=\"\" "
				    "style=\"display:none\"></BODY ></html>"));
	assert_true(strncmp(out, "<html><body><p>hi</p><img", 25) == 0);
	img += strlen("<img src=\"" BASE "/t/o/");
	tl = strcspn(img, "\"");
	memcpy(tok, img, tl);
	tok[tl] = '\0';
	assert_int_equal(track_token_verify(&key, TRACK_OPEN, tok, &c), NERR_OK);
	assert_string_equal(c.envelope_id, ENV_ID);
	free(out);

	/* A </body> inside a comment or script does not count. */
	out = rewrite_opts("<body>x<!-- </body> --><script>'</body>'</script>", false,
			   true);
	assert_true(strncmp(out, "<body>x<!-- </body> --><script>'</body>'</script><img ",
			    54) == 0);
	free(out);
}

static void pixel_at_end_without_body(void **state)
{
	char *out = rewrite_opts("<p>fragment</p>", true, true);

	assert_true(strncmp(out, "<p>fragment</p><img src=\"" BASE "/t/o/", 25) == 0);
	assert_int_equal(count(out, "<img"), 1);
	free(out);
	out = rewrite_opts("", true, true);
	assert_int_equal(count(out, "/t/o/"), 1);
	free(out);
}

static void switches_off(void **state)
{
	const char *html = "<body><a href=\"https://a.example/\">a</a></body>";
	char *out = rewrite_opts(html, false, false);

	assert_string_equal(out, html);
	free(out);
	out = rewrite_opts(html, true, false);
	assert_int_equal(count(out, "/t/c/"), 1);
	assert_int_equal(count(out, "/t/o/"), 0);
	free(out);
	out = rewrite_opts(html, false, true);
	assert_int_equal(count(out, "/t/c/"), 0);
	assert_int_equal(count(out, "/t/o/"), 1);
	free(out);
}

static void bad_options_and_output_cap(void **state)
{
	const char *html = "<a href=\"https://a.example/\">a</a>";
	struct track_rewrite_opts o = {BASE, &key, ENV_ID, true, true};
	struct buf out;

	buf_init(&out, 40);
	buf_puts(&out, "kept");
	assert_int_equal(track_rewrite_html(html, strlen(html), &o, &out), NERR_TOOBIG);
	assert_string_equal(buf_str(&out), "kept");
	buf_fini(&out);

	buf_init(&out, 0);
	const char *bad_bases[] = {
		"",	      "ftp://x",      "https://", "https://x\"y",
		"http://a b", "https://x/?q", NULL};
	for (size_t i = 0; i < sizeof(bad_bases) / sizeof(bad_bases[0]); i++) {
		o.base_url = bad_bases[i];
		assert_int_equal(track_rewrite_html(html, strlen(html), &o, &out),
				 NERR_INVAL);
	}
	for (size_t i = 0; i < sizeof(bad_bases) / sizeof(bad_bases[0]); i++)
		assert_int_equal(track_base_check(bad_bases[i]), NERR_INVAL);
	assert_int_equal(track_base_check("https://example.com/nudge/"), NERR_OK);
	assert_int_equal(track_base_check("http://127.0.0.1:8080"), NERR_OK);
	o.base_url = BASE;
	o.envelope_id = "bad id";
	assert_int_equal(track_rewrite_html(html, strlen(html), &o, &out), NERR_INVAL);
	assert_int_equal(out.len, 0);
	buf_fini(&out);
}

static void embedded_nul_and_binary_bytes(void **state)
{
	const char html[] =
		"<a href=\"https://n.example/\0x\">\0<a href=https://m.example/>";
	struct track_rewrite_opts o = {BASE, &key, ENV_ID, true, false};
	struct buf out;
	char url[TRACK_URL_MAX + 1];

	buf_init(&out, 0);
	assert_int_equal(track_rewrite_html(html, sizeof(html) - 1, &o, &out), NERR_OK);
	/* The NUL inside the first href is percent-encoded. */
	nth_click(out.data, 0, url);
	assert_string_equal(url, "https://n.example/%00x");
	buf_fini(&out);
}

static void linear_on_pathological_input(void **state)
{
	const char *pats[] = {
		"<a href=\"", "<!--",	    "<script>",
		"<a ",	      "<a href=x ", "&amp;",
		"<",	      "</body>",    "<a href=\"https://x.example/\">"};
	size_t n = 1 << 20;
	char *html = malloc(n + 1);
	struct track_rewrite_opts o = {BASE, &key, ENV_ID, true, true};

	for (size_t p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		size_t pl = strlen(pats[p]);
		struct buf out;
		struct timespec a, b;

		for (size_t i = 0; i < n; i++)
			html[i] = pats[p][i % pl];
		buf_init(&out, 0);
		clock_gettime(CLOCK_MONOTONIC, &a);
		assert_int_equal(track_rewrite_html(html, n, &o, &out), NERR_OK);
		clock_gettime(CLOCK_MONOTONIC, &b);
		/* 1 MiB; quadratic behaviour would take minutes. Generous for ASan. */
		assert_true((b.tv_sec - a.tv_sec) < 10);
		buf_fini(&out);
	}
	free(html);
}

/* ---- pixel, pages, one-click ---- */

static void pixel_is_a_1x1_gif(void **state)
{
	assert_memory_equal(track_pixel_gif, "GIF89a", 6);
	assert_int_equal(track_pixel_gif[6] | track_pixel_gif[7] << 8, 1);
	assert_int_equal(track_pixel_gif[8] | track_pixel_gif[9] << 8, 1);
	assert_int_equal(track_pixel_gif[TRACK_PIXEL_GIF_LEN - 1], 0x3b);
	/* Graphic control extension with the transparency flag. */
	assert_int_equal(track_pixel_gif[19], 0x21);
	assert_int_equal(track_pixel_gif[20], 0xf9);
	assert_int_equal(track_pixel_gif[21], 4);
	assert_int_equal(track_pixel_gif[22] & 1, 1);
}

static void pages_escape_and_load_nothing(void **state)
{
	struct buf out;
	const char *s;

	buf_init(&out, 0);
	assert_int_equal(track_page_confirm("<Acme & \"Co\">", "tok\"en<", &out),
			 NERR_OK);
	s = buf_str(&out);
	assert_non_null(strstr(s, "&lt;Acme &amp; &quot;Co&quot;&gt;"));
	assert_null(strstr(s, "<Acme"));
	assert_non_null(strstr(s, "action=\"tok&quot;en&lt;\""));
	assert_non_null(strstr(s, "method=\"post\""));
	assert_non_null(strstr(s, "name=\"List-Unsubscribe\" value=\"One-Click\""));
	assert_null(strstr(s, "src="));
	assert_null(strstr(s, "http"));
	assert_null(strstr(s, "<link"));
	buf_reset(&out);
	assert_int_equal(track_page_done(NULL, &out), NERR_OK);
	s = buf_str(&out);
	assert_non_null(strstr(s, "unsubscribed"));
	assert_null(strstr(s, "src="));
	assert_null(strstr(s, "<form"));
	buf_fini(&out);

	buf_init(&out, 100);
	assert_int_equal(track_page_done("Acme", &out), NERR_TOOBIG);
	assert_int_equal(out.len, 0);
	buf_fini(&out);
}

static void one_click_body(void **state)
{
	const char *yes[] = {
		"List-Unsubscribe=One-Click", "a=b&List-Unsubscribe=One-Click",
		"List-Unsubscribe=One-Click&x=", "List%2DUnsubscribe=One%2dClick"};
	const char *no[] = {"",
			    "List-Unsubscribe=One-Clicks",
			    "List-Unsubscribe",
			    "list-unsubscribe=one-click",
			    "List-Unsubscribe=One+Click",
			    "XList-Unsubscribe=One-Click",
			    "List-Unsubscribe=One-Click%"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(track_one_click_body(yes[i], strlen(yes[i])));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(track_one_click_body(no[i], strlen(no[i])));
	assert_false(track_one_click_body(NULL, 0));
	/* Only len bytes count. */
	assert_false(track_one_click_body("List-Unsubscribe=One-Click", 20));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trips_every_kind),
		cmocka_unit_test(longest_url_fits_token_max),
		cmocka_unit_test(changing_any_character_is_refused),
		cmocka_unit_test(truncated_or_extended_is_refused),
		cmocka_unit_test(non_canonical_base64_is_refused),
		cmocka_unit_test(wrong_key_refused_and_rotation_accepted),
		cmocka_unit_test(short_secret_refused),
		cmocka_unit_test(wrong_kind_refused_by_verify),
		cmocka_unit_test(make_refuses_bad_arguments),
		cmocka_unit_test(authentic_but_malformed_payload_is_refused),
		cmocka_unit_test(forged_tokens_are_refused),
		cmocka_unit_test(path_parse),
		cmocka_unit_test(rewrites_double_single_and_unquoted),
		cmocka_unit_test(uppercase_tags_and_attributes),
		cmocka_unit_test(entities_decoded_before_signing),
		cmocka_unit_test(spaces_and_non_ascii_handled_like_a_browser),
		cmocka_unit_test(leaves_non_http_links_alone),
		cmocka_unit_test(opt_out_attribute),
		cmocka_unit_test(comments_scripts_styles_and_text_untouched),
		cmocka_unit_test(scripts_end_only_at_their_end_tag),
		cmocka_unit_test(odd_comments),
		cmocka_unit_test(quoted_gt_inside_attribute_and_duplicate_href),
		cmocka_unit_test(unterminated_tags_copied_unchanged),
		cmocka_unit_test(own_unsubscribe_link_not_wrapped),
		cmocka_unit_test(pixel_before_last_body_end_tag),
		cmocka_unit_test(pixel_at_end_without_body),
		cmocka_unit_test(switches_off),
		cmocka_unit_test(bad_options_and_output_cap),
		cmocka_unit_test(embedded_nul_and_binary_bytes),
		cmocka_unit_test(linear_on_pathological_input),
		cmocka_unit_test(pixel_is_a_1x1_gif),
		cmocka_unit_test(pages_escape_and_load_nothing),
		cmocka_unit_test(one_click_body),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
