/*
 * fuzz_track.c -- arbitrary bytes through the tracking and feedback parsers:
 * track_rewrite_html(), track_token_parse(), track_token_make() (the input as
 * a URL), track_path_parse(), track_one_click_body(), feedback_parse_email()
 * and feedback_parse_sms().
 *
 * Design: besides crashes, leaks and UB (ASan/UBSan/LSan), it checks track.c
 * invariants: (1) no input parses as a token unless it is exactly what make
 * would write for the claim; a URL that make accepts round-trips through
 * parse; (3) with tracking off the rewriter copies its input byte for byte,
 * every click link it writes carries a valid click token, and rewriting its
 * (click-only) output again changes nothing. For feedback.c: every item has
 * a lower-cased address with one '@' and a bounded reason (invariant 1), and
 * an error leaves the list empty (invariant 2).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "deliver/feedback.h"
#include "deliver/track.h"

#define BASE "https://t.example.com"

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static struct track_key key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	must(track_key_init(&key, "fuzzing-secret-0123456789") == NERR_OK, "key");
	must(track_key_add_old(&key, "fuzzing-old-secret-012345") == NERR_OK, "old key");
	return 0;
}

static void check_click_links(const char *out, size_t len)
{
	const char *p = out, *end = out + len;
	static const char pre[] = "\"" BASE "/t/c/";

	while ((p = memmem(p, (size_t)(end - p), pre, sizeof(pre) - 1)) != NULL) {
		char tok[TRACK_TOKEN_MAX + 1];
		struct track_claim c;
		const char *q;
		size_t tl;

		p += sizeof(pre) - 1;
		q = memchr(p, '"', (size_t)(end - p));
		tl = q ? (size_t)(q - p) : SIZE_MAX;
		if (tl > TRACK_TOKEN_MAX ||
		    memchr(p, '\0', tl)) /* input text, not ours */
			continue;
		memcpy(tok, p, tl);
		tok[tl] = '\0';
		if (track_token_verify(&key, TRACK_CLICK, tok, &c) == NERR_OK)
			must(strcmp(c.envelope_id, "env-1") == 0, "click envelope");
	}
}

static void fuzz_rewrite(const char *data, size_t size)
{
	struct track_rewrite_opts o = {BASE, &key, "env-1", false, false};
	struct buf out, again;

	buf_init(&out, 0);
	must(track_rewrite_html(data, size, &o, &out) == NERR_OK, "plain rewrite");
	must(out.len == size && (size == 0 || memcmp(out.data, data, size) == 0),
	     "tracking off copies input");
	buf_reset(&out);

	o.click = true;
	must(track_rewrite_html(data, size, &o, &out) == NERR_OK, "click rewrite");
	check_click_links(buf_str(&out), out.len);
	buf_init(&again, 0);
	must(track_rewrite_html(out.data ? out.data : "", out.len, &o, &again) == NERR_OK,
	     "second rewrite");
	must(again.len == out.len &&
		     (out.len == 0 || memcmp(again.data, out.data, out.len) == 0),
	     "rewrite is idempotent");
	buf_fini(&again);
	buf_reset(&out);

	o.open = true;
	must(track_rewrite_html(data, size, &o, &out) == NERR_OK, "open rewrite");
	must(memmem(buf_str(&out), out.len, "<img src=\"" BASE "/t/o/",
		    sizeof("<img src=\"" BASE "/t/o/") - 1) != NULL,
	     "pixel present");
	buf_fini(&out);

	/* A small cap fails cleanly and leaves the buffer as it was. */
	buf_init(&out, size / 2 + 1);
	buf_puts(&out, "x");
	enum nerr rc = track_rewrite_html(data, size, &o, &out);
	must(rc == NERR_OK || (rc == NERR_TOOBIG && out.len == 1), "capped output");
	buf_fini(&out);
}

static void fuzz_tokens(const char *data, size_t size)
{
	char s[TRACK_TOKEN_MAX + 1], tok[TRACK_TOKEN_MAX + 1];
	struct track_claim c;
	size_t n = size < TRACK_TOKEN_MAX ? size : TRACK_TOKEN_MAX;

	memcpy(s, data, n);
	s[n] = '\0';
	if (track_token_parse(&key, s, &c) == NERR_OK) {
		/* Only a token we made parses: re-making it gives the same text. */
		must(c.key_index == 0, "fuzzer forged an old-key token?");
		must(track_token_make(&key, c.kind, c.envelope_id,
				      c.kind == TRACK_CLICK ? c.url : NULL, tok,
				      sizeof(tok)) == NERR_OK,
		     "re-make");
		must(strcmp(tok, s) == 0, "canonical token");
	} else {
		must(c.kind == 0 && c.url[0] == '\0', "claim cleared");
	}
	if (n <= TRACK_URL_MAX &&
	    track_token_make(&key, TRACK_CLICK, "0a1b", s, tok, sizeof(tok)) == NERR_OK) {
		must(track_token_verify(&key, TRACK_CLICK, tok, &c) == NERR_OK,
		     "round trip");
		must(strcmp(c.url, s) == 0 && strcmp(c.envelope_id, "0a1b") == 0,
		     "round trip claim");
		/* One changed character is always refused. */
		tok[size % strlen(tok)] ^= 1;
		must(track_token_parse(&key, tok, &c) != NERR_OK, "tamper refused");
	}
	{
		enum track_kind k;
		const char *t;
		size_t tl;
		if (track_path_parse(s, &k, &t, &tl) == NERR_OK)
			must(tl > 0 && t >= s && t + tl <= s + n, "path token in range");
	}
	(void)track_one_click_body(data, size);
}

static void fuzz_feedback(const char *data, size_t size)
{
	struct feedback_list l;
	struct feedback_sms sms;
	struct nerr_msg msg;

	feedback_list_init(&l);
	if (feedback_parse_email(data, size, &l, &msg) == NERR_OK) {
		must(l.n <= FEEDBACK_ITEMS_MAX, "item cap");
		for (size_t i = 0; i < l.n; i++) {
			const char *a = l.items[i].address;
			const char *at = strchr(a, '@');
			must(at && at != a && at[1] && !strchr(at + 1, '@'), "address");
			for (const char *p = a; *p; p++)
				must(!(*p >= 'A' && *p <= 'Z'), "lower-cased");
			must(strlen(l.items[i].reason) <= FEEDBACK_REASON_MAX,
			     "reason cap");
			must(l.items[i].kind >= FEEDBACK_HARD_BOUNCE &&
				     l.items[i].kind <= FEEDBACK_COMPLAINT,
			     "kind");
		}
		if (l.source == FEEDBACK_SRC_SNS_SUBSCRIBE)
			must(strncmp(l.subscribe_url, "https://sns.", 12) == 0,
			     "sns url");
	} else {
		must(l.n == 0 && l.items == NULL, "empty on error");
	}
	feedback_list_fini(&l);

	if (feedback_parse_sms(data, size, &sms, &msg) == NERR_OK) {
		must(sms.provider_id[0] != '\0', "sid");
		must(strcmp(feedback_sms_status_str(sms.status), "?") != 0, "status");
		must(sms.error_code >= 0, "error code");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_rewrite((const char *)data, size);
	fuzz_tokens((const char *)data, size);
	fuzz_feedback((const char *)data, size);
	return 0;
}
