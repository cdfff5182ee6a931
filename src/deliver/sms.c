/*
 * sms.c -- SMS through a Twilio-compatible REST API.
 *
 * Design: one form POST per message,
 *   POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json
 *   Authorization: Basic base64(sid:token)
 *   To=+14155550100&From=...&Body=...[&StatusCallback=...]
 * built once when the request is accepted (the number is checked to be E.164
 * first: a bad one ends PERMFAIL with invalid_recipient, nothing sent). The
 * envelope id goes along as Idempotency-Key for providers that dedupe on it.
 *
 * Outcomes: 2xx OK, the answer's "sid" the provider id (its "status" is in
 * the reason); 400 with Twilio error 21211 (invalid 'To' number) or 21614
 * (not a mobile number) PERMFAIL with invalid_recipient; 429 and 5xx
 * TEMPFAIL (Retry-After honoured by the delivery thread); any other status
 * PERMFAIL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

static void form_field(struct buf *b, const char *name, const char *value)
{
	char *e = curl_easy_escape(NULL, value, 0);
	if (!e)
		abort();
	buf_printf(b, "%s%s=%s", b->len ? "&" : "", name, e);
	curl_free(e);
}

bool deliver_sms_prepare(const struct deliver_channels *ch,
			 const struct deliver_request *req, struct deliver_prep *p,
			 const char **reason, bool *bad_rcpt)
{
	*bad_rcpt = false;
	if (!ch->sms_url) {
		*reason = "sms not configured";
		return false;
	}
	if (!req->sms || !req->sms->to || !req->sms->body) {
		*reason = "missing sms";
		return false;
	}
	if (!deliver_e164_valid(req->sms->to)) {
		*reason = "invalid phone number";
		*bad_rcpt = true;
		return false;
	}
	if (!deliver_utf8_valid(req->sms->body, true)) {
		*reason = "invalid UTF-8";
		return false;
	}
	form_field(&p->body, "To", req->sms->to);
	form_field(&p->body, "From", ch->sms_from);
	form_field(&p->body, "Body", req->sms->body);
	if (ch->sms_callback)
		form_field(&p->body, "StatusCallback", ch->sms_callback);
	p->envelope_id = req->envelope_id;
	p->url = ch->sms_url;
	p->origin = ch->sms_origin;
	return true;
}

static struct curl_slist *append(struct curl_slist *l, const char *line)
{
	struct curl_slist *n = curl_slist_append(l, line);
	if (!n)
		abort();
	return n;
}

struct curl_slist *deliver_sms_setup(const struct deliver_channels *ch, CURL *e,
				     struct deliver_prep *p, const char *user_agent)
{
	struct curl_slist *l = NULL;
	struct buf line;
	buf_init(&line, 0);
	l = append(l, "Content-Type: application/x-www-form-urlencoded");
	l = append(l, "Accept: application/json");
	l = append(l, "Expect:");
	buf_printf(&line, "User-Agent: %s", user_agent);
	l = append(l, buf_str(&line));
	buf_reset(&line);
	buf_printf(&line, "Idempotency-Key: %s", p->envelope_id);
	l = append(l, buf_str(&line));
	buf_fini(&line);

	curl_easy_setopt(e, CURLOPT_URL, ch->sms_url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERNAME, ch->sms_sid);
	curl_easy_setopt(e, CURLOPT_PASSWORD, ch->sms_token);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body.len);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, buf_str(&p->body));
	return l;
}

/* Parses body as a JSON object; NULL when it is not one. */
static struct json_object *parse_object(const char *body, size_t len)
{
	if (!body || len == 0)
		return NULL;
	struct json_tokener *tok = json_tokener_new_ex(32);
	struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
	if (json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (o && json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

void deliver_sms_verdict(long status, const char *body, size_t len,
			 struct deliver_verdict *v)
{
	struct json_object *o = parse_object(body, len), *c;
	memset(v, 0, sizeof(*v));
	if (status >= 200 && status <= 299) {
		const char *sid = get_str(o, "sid"), *st = get_str(o, "status");
		v->result = DELIVER_OK;
		if (sid)
			snprintf(v->provider_id, sizeof(v->provider_id), "%s", sid);
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld (%s)", status,
			 st ? st : "no status");
		json_object_put(o);
		return;
	}
	long code = 0;
	if (o && json_object_object_get_ex(o, "code", &c) &&
	    json_object_is_type(c, json_type_int))
		code = (long)json_object_get_int64(c);
	const char *message = get_str(o, "message");
	if (code)
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld (Twilio %ld: %.180s)",
			 status, code, message ? message : "");
	else
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld", status);
	if (status == 429 || status >= 500) {
		v->result = DELIVER_TEMPFAIL;
	} else {
		v->result = DELIVER_PERMFAIL;
		v->invalid_recipient = status == 400 && (code == 21211 || code == 21614);
	}
	json_object_put(o);
}
