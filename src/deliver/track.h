/*
 * track.h -- signed tracking tokens, HTML link rewriting, and the bytes the
 * public tracking endpoints answer with (DESIGN.md §5, §9; docs/tracking.md).
 *
 * Design: everything here is a pure function of its arguments, so the HTTP
 * layer (src/app/api.c) and the engine call it without locks. A token names
 * one envelope and one action (open, click, unsubscribe), and for a click the
 * destination URL; it is signed with HMAC-SHA256 under a key derived from the
 * configured secret, so the click endpoint only ever redirects to a URL nudge
 * itself put into an email (never an open redirect). Old secrets may be kept
 * for parsing, so a secret can be rotated without breaking emails already sent.
 */
#ifndef NUDGE_DELIVER_TRACK_H
#define NUDGE_DELIVER_TRACK_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"

enum track_kind {
	TRACK_OPEN = 1,	       /* GET /t/o/{token}: the open pixel */
	TRACK_CLICK = 2,       /* GET /t/c/{token}: redirect to the signed URL */
	TRACK_UNSUBSCRIBE = 3, /* GET|POST /t/u/{token} */
};

/* Returns "open", "click", "unsubscribe" (or "?" for anything else). */
const char *track_kind_str(enum track_kind kind);

#define TRACK_ID_MAX	 128  /* envelope id bytes */
#define TRACK_URL_MAX	 2048 /* destination URL bytes */
#define TRACK_SECRET_MIN 16   /* shortest accepted secret */
#define TRACK_MAX_KEYS	 8    /* the current key and up to 7 old ones */
/* Longest token text, excluding the NUL (base64url of the largest payload). */
#define TRACK_TOKEN_MAX 3000

/*
 * The signing keys. Key 0 signs; every key is tried when parsing. Each is
 * held as two SHA-256 states, after the HMAC inner and outer pad blocks, so a
 * tag costs two short hashes rather than a full HMAC set-up. Caller-provided
 * storage, read-only after set-up (threads may share it);
 * track_key_fini() frees and wipes it.
 */
struct track_key {
	void *ctx[TRACK_MAX_KEYS][2]; /* EVP_MD_CTX *: inner, outer */
	unsigned nkeys;
};

/* Sets the current secret (at least TRACK_SECRET_MIN bytes). NERR_INVAL if too
 * short; the key is then unusable (nkeys == 0) but still needs no fini. */
enum nerr track_key_init(struct track_key *k, const char *secret);
/* Adds a retired secret that still verifies tokens. NERR_LIMIT when full,
 * NERR_INVAL when too short. */
enum nerr track_key_add_old(struct track_key *k, const char *old_secret);
void track_key_fini(struct track_key *k);

/* What a valid token says. */
struct track_claim {
	enum track_kind kind;
	char envelope_id[TRACK_ID_MAX + 1];
	char url[TRACK_URL_MAX + 1]; /* the destination for a click, else "" */
	unsigned key_index;	     /* 0 = signed with the current key */
};

/*
 * Writes the token for (kind, envelope id[, url]) into out (NUL-terminated).
 * envelope_id: 1..TRACK_ID_MAX bytes of [A-Za-z0-9._:-]. url: required for
 * TRACK_CLICK, NULL otherwise; an absolute http:// or https:// URL of
 * printable ASCII without spaces, at most TRACK_URL_MAX bytes (the rewriter
 * percent-encodes what needs it). NERR_INVAL for bad arguments, NERR_TOOBIG if
 * outsz is too small (TRACK_TOKEN_MAX + 1 always suffices).
 */
enum nerr track_token_make(const struct track_key *k, enum track_kind kind,
			   const char *envelope_id, const char *url_or_null, char *out,
			   size_t outsz);

/*
 * Checks a token and fills out. NERR_AUTH for anything not made by
 * track_token_make() under one of k's keys: forged, altered, truncated,
 * extended, non-canonical base64, unknown version. out is zeroed on error.
 * The kind is not checked: endpoints use track_token_verify().
 */
enum nerr track_token_parse(const struct track_key *k, const char *token,
			    struct track_claim *out);
/* track_token_parse() that also refuses (NERR_AUTH) a token of another kind,
 * so an open token cannot unsubscribe or a click token pose as an open. */
enum nerr track_token_verify(const struct track_key *k, enum track_kind expect,
			     const char *token, struct track_claim *out);

/*
 * Splits a request path "/t/o/TOKEN", "/t/c/TOKEN" or "/t/u/TOKEN" (query
 * string ignored) into its kind and token. NERR_NOTFOUND for any other path.
 * *token points into path; *token_len excludes the query.
 */
enum nerr track_path_parse(const char *path, enum track_kind *kind, const char **token,
			   size_t *token_len);

/*
 * Checks a configured public base URL: absolute http(s), a host, at most 512
 * bytes, printable ASCII without spaces, quotes, <, >, &, ?, # or backslash
 * (a path prefix is fine; trailing slashes are ignored). NERR_INVAL
 * otherwise. Call it at startup: the functions below refuse such a base.
 */
enum nerr track_base_check(const char *base_url);

struct track_rewrite_opts {
	const char *base_url;	     /* public base, e.g. "https://t.example.com" */
	const struct track_key *key; /* borrowed */
	const char *envelope_id;
	bool click; /* rewrite <a href> / <area href> to BASE/t/c/TOKEN */
	bool open;  /* add the open pixel BASE/t/o/TOKEN */
};

/*
 * Appends html with tracking applied to out (bounded by out's cap:
 * NERR_TOOBIG). Rewrites the href of every <a> and <area> start tag whose URL
 * is absolute http(s), except links marked data-nudge-track="off" and links
 * already pointing under BASE/t/ (the unsubscribe link); attribute entities
 * are decoded before signing. Comments, <script>/<style> and the other raw
 * text elements, and text between tags are copied byte for byte. The pixel
 * goes just before the last </body>, or at the end without one. Linear time;
 * any byte sequence is accepted. NERR_INVAL for a bad base_url or envelope id.
 */
enum nerr track_rewrite_html(const char *html, size_t len,
			     const struct track_rewrite_opts *o, struct buf *out);

/* Appends BASE/t/u/TOKEN (what the engine hands Liquid as
 * message.unsubscribe_url and puts in List-Unsubscribe). */
enum nerr track_unsubscribe_url(const char *base_url, const struct track_key *k,
				const char *envelope_id, struct buf *out);

/* The 1x1 transparent GIF the open endpoint answers (image/gif). */
#define TRACK_PIXEL_GIF_LEN 43
extern const unsigned char track_pixel_gif[TRACK_PIXEL_GIF_LEN];

/* Headers the lead should send with the pages below: no external resource may
 * load, forms only post back to us, the token does not leak via Referer. */
#define TRACK_PAGE_CSP                                                                   \
	"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "            \
	"frame-ancestors 'none'; base-uri 'none'"
#define TRACK_PAGE_CONTENT_TYPE "text/html; charset=utf-8"

/*
 * Appends the page for GET /t/u/{token}: a short explanation and a form that
 * POSTs List-Unsubscribe=One-Click back to the same token (the GET itself
 * changes nothing, because link scanners fetch URLs). sender may be NULL (the
 * name shown, e.g. "Acme"); both are HTML-escaped.
 */
enum nerr track_page_confirm(const char *sender, const char *token, struct buf *out);
/* Appends the "you are unsubscribed" page (answer to the POST). */
enum nerr track_page_done(const char *sender, struct buf *out);

/* True if a form body (application/x-www-form-urlencoded) carries
 * List-Unsubscribe=One-Click, as RFC 8058 requires of the POST. */
bool track_one_click_body(const char *body, size_t len);

#endif
