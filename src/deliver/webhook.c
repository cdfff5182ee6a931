/*
 * webhook.c -- what a webhook request looks like on the wire.
 *
 * Design: the engine renders the JSON body; this file checks the request's
 * method and headers once at submission and builds the header list of every
 * attempt. Each attempt is signed afresh (the timestamp is part of the signed
 * text, so a receiver can refuse replays older than a few minutes):
 *
 *   X-Nudge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *
 * the scheme Stripe made familiar; docs/webhooks.md shows a receiver checking
 * it. Idempotency-Key carries the envelope id (invariant 4) on every attempt.
 * Headers we set (Content-Type, User-Agent, Idempotency-Key,
 * X-Nudge-Signature) win over a caller's header of the same name, and headers
 * that belong to the transport (Host, Content-Length, Transfer-Encoding,
 * Connection, Expect) cannot be given at all; a name or value that could split
 * the header block (CR, LF, NUL, a colon in a name) is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

void deliver_sign(const char *secret, int64_t t_sec, const char *body, size_t body_len,
		  char *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char ts[24];
	int tl = snprintf(ts, sizeof(ts), "%lld.", (long long)t_sec);
	struct buf msg;
	buf_init(&msg, 0);
	buf_append(&msg, ts, (size_t)tl);
	buf_append(&msg, body ? body : "", body ? body_len : 0);
	HMAC(EVP_sha256(), secret, (int)strlen(secret),
	     (const unsigned char *)buf_str(&msg), msg.len, mac, &mac_len);
	buf_fini(&msg);

	int n = snprintf(out, DELIVER_SIGNATURE_MAX, "t=%lld,v1=", (long long)t_sec);
	static const char hex[] = "0123456789abcdef";
	for (unsigned i = 0; i < mac_len && (size_t)n + 2 < DELIVER_SIGNATURE_MAX; i++) {
		out[n++] = hex[mac[i] >> 4];
		out[n++] = hex[mac[i] & 15];
	}
	out[n] = '\0';
}

static const char *const ours[] = {"Content-Type", "User-Agent", "Idempotency-Key",
				   "X-Nudge-Signature"};
static const char *const forbidden[] = {"Host", "Content-Length", "Transfer-Encoding",
					"Connection", "Expect"};

static bool in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(name, list[i]) == 0)
			return true;
	return false;
}

/* RFC 9110 token characters. */
static bool token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool deliver_request_check(const struct deliver_request *req, const char **reason)
{
	if (!req->envelope_id || !req->envelope_id[0]) {
		*reason = "missing envelope id";
		return false;
	}
	for (const char *p = req->envelope_id; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*reason = "envelope id has control characters";
			return false;
		}
	}
	if (!req->method ||
	    (strcmp(req->method, "POST") != 0 && strcmp(req->method, "PUT") != 0)) {
		*reason = "method must be POST or PUT";
		return false;
	}
	if (req->nheaders && !req->headers) {
		*reason = "invalid header";
		return false;
	}
	for (unsigned i = 0; i < req->nheaders; i++) {
		const struct deliver_header *h = &req->headers[i];
		if (!h->name || !h->name[0] || !h->value) {
			*reason = "invalid header";
			return false;
		}
		for (const char *p = h->name; *p; p++) {
			if (!token_char((unsigned char)*p)) {
				*reason = "invalid header name";
				return false;
			}
		}
		for (const char *p = h->value; *p; p++) {
			unsigned char c = (unsigned char)*p;
			if ((c < 0x20 && c != '\t') || c == 0x7f) {
				*reason = "invalid header value";
				return false;
			}
		}
		if (in_list(h->name, forbidden,
			    sizeof(forbidden) / sizeof(forbidden[0]))) {
			*reason = "header not allowed";
			return false;
		}
	}
	return true;
}

static struct curl_slist *append(struct curl_slist *l, const char *line)
{
	struct curl_slist *n = curl_slist_append(l, line);
	if (!n)
		abort(); /* out of memory */
	return n;
}

struct curl_slist *deliver_build_headers(const struct deliver_request *req,
					 const char *user_agent, int64_t now_sec)
{
	struct curl_slist *l = NULL;
	struct buf line;
	buf_init(&line, 0);

	l = append(l, "Content-Type: application/json");
	buf_printf(&line, "User-Agent: %s", user_agent);
	l = append(l, buf_str(&line));
	buf_reset(&line);
	buf_printf(&line, "Idempotency-Key: %s", req->envelope_id);
	l = append(l, buf_str(&line));
	if (req->secret) {
		char sig[DELIVER_SIGNATURE_MAX];
		deliver_sign(req->secret, now_sec, req->body, req->body_len, sig);
		buf_reset(&line);
		buf_printf(&line, "X-Nudge-Signature: %s", sig);
		l = append(l, buf_str(&line));
	}
	/* curl would otherwise send "Expect: 100-continue" for bodies over 1 KiB
	 * and wait up to a second for the interim answer many servers never give */
	l = append(l, "Expect:");
	for (unsigned i = 0; i < req->nheaders; i++) {
		const struct deliver_header *h = &req->headers[i];
		if (in_list(h->name, ours, sizeof(ours) / sizeof(ours[0])))
			continue;
		buf_reset(&line);
		if (h->value[0])
			buf_printf(&line, "%s: %s", h->name, h->value);
		else /* curl's spelling of a header with an empty value */
			buf_printf(&line, "%s;", h->name);
		l = append(l, buf_str(&line));
	}
	buf_fini(&line);
	return l;
}
