/*
 * feedback.c -- parsing bounce/complaint notifications and SMS delivery
 * receipts.
 *
 * Design: the HTTP layer hands us a request body; we answer a flat list of
 * (address, kind, reason) or one SMS receipt, and never act ourselves. Three
 * email shapes are recognised by their top level:
 *
 *   [ ... ] or {"type": ...}         nudge's own JSON (docs/tracking.md)
 *   {"Type": "Notification", ...}    an SNS message; its Message is a JSON
 *                                    string holding an SES notification
 *   {"notificationType"|"eventType"} an SES notification (raw delivery)
 *
 * SES Bounce: bounce.bounceType Permanent -> hard bounce, Transient and
 * Undetermined -> soft bounce, one item per bounce.bouncedRecipients[]
 * .emailAddress, reason "<bounceType>/<bounceSubType>: <diagnosticCode>".
 * SES Complaint: one complaint per complaint.complainedRecipients[]
 * .emailAddress, reason "complaint: <complaintFeedbackType>". Any other SES
 * type is accepted with no items. An SNS SubscriptionConfirmation yields its
 * SubscribeURL, which the caller GETs to confirm; it must be
 * https://sns.<region>.amazonaws.com[.cn]/ so answering it cannot be turned
 * into a request to an arbitrary host.
 *
 * Invariants: (1) on NERR_OK every item has a lower-cased address of 3..254
 * bytes with one '@' splitting a non-empty local part and domain, printable
 * ASCII or valid UTF-8, no spaces or <>(),;:"[]\ outside the local part's
 * rules we accept; the reason is valid UTF-8 of at most FEEDBACK_REASON_MAX
 * bytes without control characters; (2) on error the list is empty.
 *
 * Not done here: verifying SNS message signatures (that needs the signing
 * certificate fetched from AWS); the endpoint is authenticated by the caller
 * (see docs/tracking.md).
 *
 * References: Amazon SES Developer Guide, "Amazon SNS notification contents
 * for Amazon SES"; Amazon SNS "HTTP/S notification JSON format"; Twilio
 * Messaging "status callback" parameters; WHATWG URL
 * (application/x-www-form-urlencoded).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "base/mem.h"
#include "deliver/feedback.h"

const char *feedback_kind_str(enum feedback_kind kind)
{
	switch (kind) {
	case FEEDBACK_HARD_BOUNCE:
		return "hard_bounce";
	case FEEDBACK_SOFT_BOUNCE:
		return "soft_bounce";
	case FEEDBACK_COMPLAINT:
		return "complaint";
	}
	return "?";
}

void feedback_list_init(struct feedback_list *l)
{
	memset(l, 0, sizeof(*l));
}

void feedback_list_fini(struct feedback_list *l)
{
	free(l->items);
	memset(l, 0, sizeof(*l));
}

/* ------------------------------------------------------------- helpers */

/* snprintf for field paths; a path longer than the buffer is cut, which is
 * fine for a message (struct nerr_msg cuts it anyway). */
static void pathf(char *dst, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pathf(char *dst, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, cap, fmt, ap);
	va_end(ap);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t need;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((need == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return need;
}

static bool valid_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq((const unsigned char *)s + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* Copies src into dst (cap bytes + NUL) with control characters turned into
 * spaces, cut at a character boundary; src must be valid UTF-8. */
static void copy_reason(char *dst, size_t cap, const char *src, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq((const unsigned char *)src + i, n - i);
		if (k == 0 || o + k > cap)
			break;
		if (k == 1 && ((unsigned char)src[i] < 0x20 || src[i] == 0x7f))
			dst[o++] = ' ';
		else
			memcpy(dst + o, src + i, k), o += k;
		i += k;
	}
	dst[o] = '\0';
}

/*
 * Checks and normalises an address into out (lower-cased ASCII letters).
 * Accepts "local@domain" or "Display Name <local@domain>" (as DSNs sometimes
 * give it). Returns false if it is not a plausible address.
 */
static bool norm_address(const char *s, size_t n, char out[FEEDBACK_ADDRESS_MAX + 1])
{
	const char *lt = memchr(s, '<', n);
	size_t at = SIZE_MAX, o = 0;

	if (lt) {
		const char *gt = memchr(lt, '>', n - (size_t)(lt - s));
		if (!gt)
			return false;
		n = (size_t)(gt - lt) - 1;
		s = lt + 1;
	}
	while (n && (s[0] == ' ' || s[0] == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n < 3 || n > FEEDBACK_ADDRESS_MAX || !valid_utf8(s, n))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || strchr("<>()[]\\,;:\"", c))
			return false;
		if (c == '@') {
			if (at != SIZE_MAX)
				return false;
			at = i;
		}
		out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	out[o] = '\0';
	if (at == SIZE_MAX || at == 0 || at == n - 1 || out[at + 1] == '.' ||
	    out[n - 1] == '.')
		return false;
	return true;
}

static enum nerr add_item(struct feedback_list *l, size_t *alloc, const char *field,
			  const char *addr, size_t addr_len, enum feedback_kind kind,
			  const char *reason, size_t reason_len, struct nerr_msg *msg)
{
	struct feedback_item *it;

	if (l->n >= FEEDBACK_ITEMS_MAX)
		return nerr_set(msg, NERR_LIMIT, field, "more than %d recipients",
				FEEDBACK_ITEMS_MAX);
	if (l->n == *alloc) {
		*alloc = *alloc ? *alloc * 2 : 4;
		l->items = xrealloc(l->items, *alloc * sizeof(*l->items));
	}
	it = &l->items[l->n];
	if (!norm_address(addr, addr_len, it->address))
		return nerr_set(msg, NERR_INVAL, field, "not a valid email address");
	it->kind = kind;
	copy_reason(it->reason, FEEDBACK_REASON_MAX, reason ? reason : "",
		    reason ? reason_len : 0);
	l->n++;
	return NERR_OK;
}

/* Parses JSON text strictly (no trailing bytes, depth capped). */
static enum nerr parse_json(const char *text, size_t len, const char *field,
			    struct json_object **out, struct nerr_msg *msg)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	struct json_object *o;

	*out = NULL;
	if (len > FEEDBACK_BODY_MAX)
		return nerr_set(msg, NERR_TOOBIG, field, "larger than %d bytes",
				FEEDBACK_BODY_MAX);
	if (len == 0 || memchr(text, '\0', len) || !valid_utf8(text, len))
		return nerr_set(msg, NERR_PARSE, field, "not JSON text in UTF-8");
	tok = json_tokener_new_ex(FEEDBACK_DEPTH_MAX);
	ASSERT(tok);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	if (jerr == json_tokener_success) {
		size_t end = json_tokener_get_parse_end(tok);
		while (end < len && strchr(" \t\r\n", text[end]))
			end++;
		if (end != len)
			jerr = json_tokener_error_parse_unexpected;
	} else if (jerr == json_tokener_continue) {
		jerr = json_tokener_error_parse_eof;
	}
	json_tokener_free(tok);
	if (jerr != json_tokener_success || !o) {
		json_object_put(o);
		return nerr_set(msg, NERR_PARSE, field, "invalid JSON: %s",
				json_tokener_error_desc(jerr));
	}
	*out = o;
	return NERR_OK;
}

/* A string member: NERR_OK with s and n set, NERR_NOTFOUND if absent or null
 * and !required, else NERR_INVAL. */
static enum nerr get_str(struct json_object *obj, const char *name, const char *path,
			 bool required, const char **s, size_t *n, struct nerr_msg *msg)
{
	struct json_object *v;
	char field[128];

	pathf(field, sizeof(field), "%s%s%s", path, *path ? "." : "", name);
	if (!json_object_object_get_ex(obj, name, &v) || v == NULL) {
		if (!required)
			return NERR_NOTFOUND;
		return nerr_set(msg, NERR_INVAL, field, "required");
	}
	if (!json_object_is_type(v, json_type_string))
		return nerr_set(msg, NERR_INVAL, field, "must be a string");
	*s = json_object_get_string(v);
	*n = (size_t)json_object_get_string_len(v);
	if (strlen(*s) != *n)
		return nerr_set(msg, NERR_INVAL, field, "contains U+0000");
	return NERR_OK;
}

/* ----------------------------------------------------- nudge's own JSON */

static enum nerr nudge_item(struct json_object *o, const char *path,
			    struct feedback_list *l, size_t *alloc, struct nerr_msg *msg)
{
	struct json_object *perm = NULL;
	const char *type, *email, *reason = NULL;
	size_t tn, en, rn = 0;
	char field[128];
	enum feedback_kind kind;
	enum nerr rc;

	if (!json_object_is_type(o, json_type_object))
		return nerr_set(msg, NERR_INVAL, path, "must be an object");
	json_object_object_foreach(o, k, v)
	{
		(void)v;
		if (strcmp(k, "type") && strcmp(k, "email") && strcmp(k, "permanent") &&
		    strcmp(k, "reason")) {
			pathf(field, sizeof(field), "%s%s%.64s", path, *path ? "." : "",
			      k);
			return nerr_set(msg, NERR_INVAL, field, "unknown field");
		}
	}
	rc = get_str(o, "type", path, true, &type, &tn, msg);
	if (rc != NERR_OK)
		return rc;
	pathf(field, sizeof(field), "%s%spermanent", path, *path ? "." : "");
	json_object_object_get_ex(o, "permanent", &perm);
	if (perm && !json_object_is_type(perm, json_type_boolean))
		return nerr_set(msg, NERR_INVAL, field, "must be true or false");
	if (strcmp(type, "bounce") == 0) {
		if (!perm)
			return nerr_set(msg, NERR_INVAL, field, "required for a bounce");
		kind = json_object_get_boolean(perm) ? FEEDBACK_HARD_BOUNCE
						     : FEEDBACK_SOFT_BOUNCE;
	} else if (strcmp(type, "complaint") == 0) {
		kind = FEEDBACK_COMPLAINT;
	} else {
		pathf(field, sizeof(field), "%s%stype", path, *path ? "." : "");
		return nerr_set(msg, NERR_INVAL, field,
				"must be \"bounce\" or \"complaint\"");
	}
	rc = get_str(o, "reason", path, false, &reason, &rn, msg);
	if (rc == NERR_NOTFOUND)
		reason = NULL, rn = 0;
	else if (rc != NERR_OK)
		return rc;
	if (rn > FEEDBACK_REASON_MAX) {
		pathf(field, sizeof(field), "%s%sreason", path, *path ? "." : "");
		return nerr_set(msg, NERR_INVAL, field, "longer than %d bytes",
				FEEDBACK_REASON_MAX);
	}
	rc = get_str(o, "email", path, true, &email, &en, msg);
	if (rc != NERR_OK)
		return rc;
	pathf(field, sizeof(field), "%s%semail", path, *path ? "." : "");
	if (memchr(email, '<', en))
		return nerr_set(msg, NERR_INVAL, field, "not a valid email address");
	return add_item(l, alloc, field, email, en, kind, reason, rn, msg);
}

static enum nerr parse_nudge(struct json_object *root, struct feedback_list *l,
			     struct nerr_msg *msg)
{
	size_t alloc = 0;

	l->source = FEEDBACK_SRC_NUDGE;
	if (json_object_is_type(root, json_type_array)) {
		size_t n = json_object_array_length(root);
		if (n > FEEDBACK_ITEMS_MAX)
			return nerr_set(msg, NERR_LIMIT, "", "more than %d items",
					FEEDBACK_ITEMS_MAX);
		for (size_t i = 0; i < n; i++) {
			char path[32];
			enum nerr rc;
			pathf(path, sizeof(path), "[%zu]", i);
			rc = nudge_item(json_object_array_get_idx(root, i), path, l,
					&alloc, msg);
			if (rc != NERR_OK)
				return rc;
		}
		return NERR_OK;
	}
	return nudge_item(root, "", l, &alloc, msg);
}

/* ------------------------------------------------------------------ SES */

static enum nerr ses_recipients(struct json_object *parent, const char *ppath,
				const char *name, enum feedback_kind kind,
				const char *reason, struct feedback_list *l,
				size_t *alloc, struct nerr_msg *msg)
{
	struct json_object *arr;
	char field[128];
	size_t n;

	pathf(field, sizeof(field), "%s.%s", ppath, name);
	if (!json_object_object_get_ex(parent, name, &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return nerr_set(msg, NERR_INVAL, field, "must be an array");
	n = json_object_array_length(arr);
	if (n == 0)
		return nerr_set(msg, NERR_INVAL, field, "has no recipients");
	if (n > FEEDBACK_ITEMS_MAX)
		return nerr_set(msg, NERR_LIMIT, field, "more than %d recipients",
				FEEDBACK_ITEMS_MAX);
	for (size_t i = 0; i < n; i++) {
		struct json_object *r = json_object_array_get_idx(arr, i);
		const char *addr, *diag = NULL;
		size_t an, dn = 0;
		char rpath[128], why[FEEDBACK_REASON_MAX + 1];
		enum nerr rc;

		pathf(rpath, sizeof(rpath), "%s[%zu]", field, i);
		if (!json_object_is_type(r, json_type_object))
			return nerr_set(msg, NERR_INVAL, rpath, "must be an object");
		rc = get_str(r, "emailAddress", rpath, true, &addr, &an, msg);
		if (rc != NERR_OK)
			return rc;
		rc = get_str(r, "diagnosticCode", rpath, false, &diag, &dn, msg);
		if (rc != NERR_OK && rc != NERR_NOTFOUND)
			return rc;
		if (rc == NERR_OK && dn)
			snprintf(why, sizeof(why), "%s: %.*s", reason,
				 (int)(dn > FEEDBACK_REASON_MAX ? FEEDBACK_REASON_MAX
								: dn),
				 diag);
		else
			snprintf(why, sizeof(why), "%s", reason);
		pathf(rpath + strlen(rpath), sizeof(rpath) - strlen(rpath),
		      ".emailAddress");
		rc = add_item(l, alloc, rpath, addr, an, kind, why, strlen(why), msg);
		if (rc != NERR_OK)
			return rc;
	}
	return NERR_OK;
}

static enum nerr parse_ses(struct json_object *n, const char *path,
			   struct feedback_list *l, struct nerr_msg *msg)
{
	struct json_object *sub;
	const char *type, *s;
	size_t tn, sn, alloc = 0;
	char field[128], reason[FEEDBACK_REASON_MAX + 1];
	enum nerr rc;

	l->source = FEEDBACK_SRC_SES;
	if (!json_object_is_type(n, json_type_object))
		return nerr_set(msg, NERR_INVAL, path, "must be an object");
	rc = get_str(n, "notificationType", path, false, &type, &tn, msg);
	if (rc == NERR_NOTFOUND)
		rc = get_str(n, "eventType", path, true, &type, &tn, msg);
	if (rc != NERR_OK)
		return rc;

	if (strcmp(type, "Bounce") == 0) {
		const char *bt, *bst = "";
		size_t btn, bstn = 0;
		enum feedback_kind kind;

		pathf(field, sizeof(field), "%s%sbounce", path, *path ? "." : "");
		if (!json_object_object_get_ex(n, "bounce", &sub) ||
		    !json_object_is_type(sub, json_type_object))
			return nerr_set(msg, NERR_INVAL, field, "must be an object");
		rc = get_str(sub, "bounceType", field, true, &bt, &btn, msg);
		if (rc != NERR_OK)
			return rc;
		if (strcmp(bt, "Permanent") == 0) {
			kind = FEEDBACK_HARD_BOUNCE;
		} else if (strcmp(bt, "Transient") == 0 ||
			   strcmp(bt, "Undetermined") == 0) {
			kind = FEEDBACK_SOFT_BOUNCE;
		} else {
			pathf(field + strlen(field), sizeof(field) - strlen(field),
			      ".bounceType");
			return nerr_set(msg, NERR_INVAL, field,
					"must be Permanent, Transient or Undetermined");
		}
		rc = get_str(sub, "bounceSubType", field, false, &bst, &bstn, msg);
		if (rc == NERR_NOTFOUND)
			bst = "", bstn = 0;
		else if (rc != NERR_OK)
			return rc;
		snprintf(reason, sizeof(reason), "%s%s%.64s", bt, bstn ? "/" : "", bst);
		return ses_recipients(sub, field, "bouncedRecipients", kind, reason, l,
				      &alloc, msg);
	}
	if (strcmp(type, "Complaint") == 0) {
		pathf(field, sizeof(field), "%s%scomplaint", path, *path ? "." : "");
		if (!json_object_object_get_ex(n, "complaint", &sub) ||
		    !json_object_is_type(sub, json_type_object))
			return nerr_set(msg, NERR_INVAL, field, "must be an object");
		rc = get_str(sub, "complaintFeedbackType", field, false, &s, &sn, msg);
		if (rc == NERR_OK && sn)
			snprintf(reason, sizeof(reason), "complaint: %.64s", s);
		else if (rc == NERR_OK || rc == NERR_NOTFOUND)
			snprintf(reason, sizeof(reason), "complaint");
		else
			return rc;
		return ses_recipients(sub, field, "complainedRecipients",
				      FEEDBACK_COMPLAINT, reason, l, &alloc, msg);
	}
	/* Delivery, Send, Reject, Open, Click, DeliveryDelay,
	 * AmazonSnsSubscriptionSucceeded, ...: nothing to suppress. */
	return NERR_OK;
}

/* ------------------------------------------------------------------ SNS */

/* https://sns.<region>.amazonaws.com[.cn]/..., nothing else: no port, no
 * user info, region of [a-z0-9-]. */
static bool sns_url_ok(const char *u, size_t n)
{
	static const char *const suffixes[] = {".amazonaws.com", ".amazonaws.com.cn"};
	const char *region, *end;

	if (n > FEEDBACK_URL_MAX || strncmp(u, "https://sns.", 12) != 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f)
			return false;
	region = u + 12;
	end = region + strcspn(region, "/?#:@");
	if (*end != '/' && *end != '?')
		return false;
	for (size_t k = 0; k < 2; k++) {
		size_t sl = strlen(suffixes[k]), rl;
		if ((size_t)(end - region) <= sl ||
		    memcmp(end - sl, suffixes[k], sl) != 0)
			continue;
		rl = (size_t)(end - region) - sl;
		for (size_t i = 0; i < rl; i++)
			if (!((region[i] >= 'a' && region[i] <= 'z') ||
			      (region[i] >= '0' && region[i] <= '9') || region[i] == '-'))
				return false;
		return true;
	}
	return false;
}

static enum nerr parse_sns(struct json_object *root, struct feedback_list *l,
			   struct nerr_msg *msg)
{
	const char *type, *s;
	size_t tn, sn;
	struct json_object *inner = NULL;
	enum nerr rc;

	rc = get_str(root, "Type", "", true, &type, &tn, msg);
	if (rc != NERR_OK)
		return rc;
	rc = get_str(root, "TopicArn", "", false, &s, &sn, msg);
	if (rc == NERR_OK) {
		if (sn > FEEDBACK_ARN_MAX || !valid_utf8(s, sn))
			return nerr_set(msg, NERR_INVAL, "TopicArn", "too long");
		memcpy(l->topic_arn, s, sn);
		l->topic_arn[sn] = '\0';
	} else if (rc != NERR_NOTFOUND) {
		return rc;
	}
	if (strcmp(type, "SubscriptionConfirmation") == 0) {
		l->source = FEEDBACK_SRC_SNS_SUBSCRIBE;
		rc = get_str(root, "SubscribeURL", "", true, &s, &sn, msg);
		if (rc != NERR_OK)
			return rc;
		if (!sns_url_ok(s, sn))
			return nerr_set(msg, NERR_INVAL, "SubscribeURL",
					"must be https://sns.<region>.amazonaws.com/...");
		memcpy(l->subscribe_url, s, sn);
		l->subscribe_url[sn] = '\0';
		return NERR_OK;
	}
	if (strcmp(type, "UnsubscribeConfirmation") == 0) {
		l->source = FEEDBACK_SRC_SNS_OTHER;
		return NERR_OK;
	}
	if (strcmp(type, "Notification") != 0)
		return nerr_set(msg, NERR_INVAL, "Type",
				"must be Notification, SubscriptionConfirmation or "
				"UnsubscribeConfirmation");
	rc = get_str(root, "Message", "", true, &s, &sn, msg);
	if (rc != NERR_OK)
		return rc;
	rc = parse_json(s, sn, "Message", &inner, msg);
	if (rc == NERR_OK)
		rc = parse_ses(inner, "Message", l, msg);
	json_object_put(inner);
	return rc;
}

enum nerr feedback_parse_email(const char *body, size_t len, struct feedback_list *out,
			       struct nerr_msg *msg)
{
	struct json_object *root = NULL, *v;
	enum nerr rc;

	nerr_clear(msg);
	feedback_list_fini(out);
	if (!body)
		len = 0;
	rc = parse_json(body, len, "", &root, msg);
	if (rc != NERR_OK)
		goto out;
	if (json_object_is_type(root, json_type_array) ||
	    (json_object_is_type(root, json_type_object) &&
	     json_object_object_get_ex(root, "type", &v)))
		rc = parse_nudge(root, out, msg);
	else if (json_object_is_type(root, json_type_object) &&
		 json_object_object_get_ex(root, "Type", &v))
		rc = parse_sns(root, out, msg);
	else if (json_object_is_type(root, json_type_object) &&
		 (json_object_object_get_ex(root, "notificationType", &v) ||
		  json_object_object_get_ex(root, "eventType", &v)))
		rc = parse_ses(root, "", out, msg);
	else
		rc = nerr_set(msg, NERR_INVAL, "",
			      "not nudge feedback JSON, an SNS message or an SES "
			      "notification");
out:
	json_object_put(root);
	if (rc != NERR_OK)
		feedback_list_fini(out);
	return rc;
}

/* ------------------------------------------------------------------ SMS */

static const char *const sms_names[] = {
	[FEEDBACK_SMS_ACCEPTED] = "accepted",
	[FEEDBACK_SMS_SCHEDULED] = "scheduled",
	[FEEDBACK_SMS_QUEUED] = "queued",
	[FEEDBACK_SMS_SENDING] = "sending",
	[FEEDBACK_SMS_SENT] = "sent",
	[FEEDBACK_SMS_DELIVERED] = "delivered",
	[FEEDBACK_SMS_UNDELIVERED] = "undelivered",
	[FEEDBACK_SMS_FAILED] = "failed",
	[FEEDBACK_SMS_READ] = "read",
	[FEEDBACK_SMS_CANCELED] = "canceled",
	[FEEDBACK_SMS_PARTIALLY_DELIVERED] = "partially_delivered",
};
#define SMS_NAMES (sizeof(sms_names) / sizeof(sms_names[0]))

const char *feedback_sms_status_str(enum feedback_sms_status s)
{
	if ((size_t)s < SMS_NAMES && sms_names[s])
		return sms_names[s];
	return "?";
}

enum feedback_sms_outcome feedback_sms_outcome_of(enum feedback_sms_status s)
{
	switch (s) {
	case FEEDBACK_SMS_DELIVERED:
	case FEEDBACK_SMS_READ:
		return FEEDBACK_SMS_OK;
	case FEEDBACK_SMS_UNDELIVERED:
	case FEEDBACK_SMS_FAILED:
	case FEEDBACK_SMS_CANCELED:
	case FEEDBACK_SMS_PARTIALLY_DELIVERED:
		return FEEDBACK_SMS_FAIL;
	default:
		return FEEDBACK_SMS_PENDING;
	}
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

/* Decodes a form component into out (cap bytes + NUL). Returns the length,
 * -1 for a malformed escape, -2 if too long. */
static long form_decode(const char *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (i + 2 >= n || hexdig(p[i + 1]) < 0 || hexdig(p[i + 2]) < 0)
				return -1;
			c = (char)(hexdig(p[i + 1]) << 4 | hexdig(p[i + 2]));
			i += 2;
		}
		if (o >= cap)
			return -2;
		out[o++] = c;
	}
	out[o] = '\0';
	return (long)o;
}

enum nerr feedback_parse_sms(const char *form_body, size_t len, struct feedback_sms *out,
			     struct nerr_msg *msg)
{
	enum { F_SID, F_STATUS, F_ERROR, F_TO, F_N };
	static const char *const names[F_N] = {"MessageSid", "MessageStatus", "ErrorCode",
					       "To"};
	static const size_t caps[F_N] = {FEEDBACK_SID_MAX, 32, 16, FEEDBACK_PHONE_MAX};
	char val[F_N][FEEDBACK_PHONE_MAX + 1];
	bool seen[F_N] = {false};
	size_t i = 0;

	nerr_clear(msg);
	memset(out, 0, sizeof(*out));
	if (!form_body)
		len = 0;
	if (len > FEEDBACK_SMS_BODY_MAX)
		return nerr_set(msg, NERR_TOOBIG, "", "larger than %d bytes",
				FEEDBACK_SMS_BODY_MAX);
	while (i < len) {
		const char *amp = memchr(form_body + i, '&', len - i);
		size_t end = amp ? (size_t)(amp - form_body) : len;
		const char *eq = memchr(form_body + i, '=', end - i);
		size_t kn = eq ? (size_t)(eq - form_body) - i : end - i;
		char key[32];
		long kl, vl;
		int f = -1;

		if (end == i) {
			i = end + 1;
			continue;
		}
		kl = form_decode(form_body + i, kn, key, sizeof(key) - 1);
		if (kl == -1)
			return nerr_set(msg, NERR_INVAL, "",
					"malformed %%-escape in a name");
		for (int k = 0; kl >= 0 && k < F_N; k++)
			if ((size_t)kl == strlen(names[k]) &&
			    memcmp(key, names[k], (size_t)kl) == 0)
				f = k;
		if (f >= 0) {
			if (seen[f])
				return nerr_set(msg, NERR_INVAL, names[f], "given twice");
			seen[f] = true;
			vl = eq ? form_decode(eq + 1, end - (size_t)(eq - form_body) - 1,
					      val[f], caps[f])
				: 0;
			if (!eq)
				val[f][0] = '\0';
			if (vl == -1)
				return nerr_set(msg, NERR_INVAL, names[f],
						"malformed %%-escape");
			if (vl == -2)
				return nerr_set(msg, NERR_INVAL, names[f],
						"longer than %zu bytes", caps[f]);
			for (long c = 0; c < vl; c++)
				if ((unsigned char)val[f][c] < 0x20 || val[f][c] == 0x7f)
					return nerr_set(msg, NERR_INVAL, names[f],
							"contains a control character");
		}
		i = end + 1;
	}

	if (!seen[F_SID] || !val[F_SID][0])
		return nerr_set(msg, NERR_INVAL, "MessageSid", "required");
	for (const char *p = val[F_SID]; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return nerr_set(msg, NERR_INVAL, "MessageSid",
					"must be letters, digits, '-' or '_'");
	if (!seen[F_STATUS] || !val[F_STATUS][0])
		return nerr_set(msg, NERR_INVAL, "MessageStatus", "required");
	for (size_t s = 1; s < SMS_NAMES; s++)
		if (sms_names[s] && strcmp(val[F_STATUS], sms_names[s]) == 0)
			out->status = (enum feedback_sms_status)s;
	if (!out->status)
		return nerr_set(msg, NERR_INVAL, "MessageStatus",
				"unknown status \"%.32s\"", val[F_STATUS]);
	if (seen[F_ERROR] && val[F_ERROR][0]) {
		long code = 0;
		for (const char *p = val[F_ERROR]; *p; p++) {
			if (*p < '0' || *p > '9' || p - val[F_ERROR] >= 9) {
				out->status = 0;
				return nerr_set(msg, NERR_INVAL, "ErrorCode",
						"must be a number of at most 9 digits");
			}
			code = code * 10 + (*p - '0');
		}
		out->error_code = (int)code;
	}
	snprintf(out->provider_id, sizeof(out->provider_id), "%s", val[F_SID]);
	if (seen[F_TO])
		snprintf(out->to, sizeof(out->to), "%s", val[F_TO]);
	return NERR_OK;
}
