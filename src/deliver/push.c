/*
 * push.c -- push notifications through an FCM HTTP v1-shaped API.
 *
 * Design: one JSON POST per message,
 *   POST {base_url}/v1/projects/{project}/messages:send
 *   Authorization: Bearer {token}
 *   {"message":{"token":"...","notification":{"title":..,"body":..,"image":..},
 *               "data":{"k":"v",...}}}
 * built once when the request is accepted (notification fields that are NULL
 * are left out, and the notification itself when all are; data must be an
 * object of string values, as FCM requires).
 *
 * Outcomes: 2xx OK, the answer's "name" (projects/p/messages/id) the provider
 * id; 404, or an error whose FCM errorCode is UNREGISTERED or
 * SENDER_ID_MISMATCH, or an INVALID_ARGUMENT about the token, PERMFAIL with
 * invalid_recipient (the engine removes the token from the profile); 429 and
 * 5xx TEMPFAIL; any other status PERMFAIL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

static bool token_ok(const char *t)
{
	size_t n = t ? strlen(t) : 0;
	if (n == 0 || n > 4096)
		return false;
	for (const unsigned char *p = (const unsigned char *)t; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return false;
	return true;
}

/* data_json as a JSON object of strings; NULL when it is not one. */
static struct json_object *parse_data(const char *text)
{
	struct json_tokener *tok = json_tokener_new_ex(8);
	size_t len = strlen(text);
	struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
	bool ok = json_tokener_get_error(tok) == json_tokener_success &&
		  json_tokener_get_parse_end(tok) == len &&
		  json_object_is_type(o, json_type_object);
	json_tokener_free(tok);
	if (ok) {
		json_object_object_foreach(o, k, v)
		{
			(void)k;
			if (!json_object_is_type(v, json_type_string))
				ok = false;
		}
	}
	if (!ok) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

bool deliver_push_prepare(const struct deliver_channels *ch,
			  const struct deliver_request *req, struct deliver_prep *p,
			  const char **reason, bool *bad_rcpt)
{
	const struct deliver_push *m = req->push;
	*bad_rcpt = false;
	if (!ch->push_url) {
		*reason = "push not configured";
		return false;
	}
	if (!m) {
		*reason = "missing push";
		return false;
	}
	if (!token_ok(m->token)) {
		*reason = "invalid device token";
		*bad_rcpt = true;
		return false;
	}
	const char *texts[] = {m->title, m->body, m->image};
	for (size_t i = 0; i < 3; i++) {
		if (texts[i] && !deliver_utf8_valid(texts[i], true)) {
			*reason = "invalid UTF-8";
			return false;
		}
	}
	struct json_object *data = NULL;
	if (m->data_json && !(data = parse_data(m->data_json))) {
		*reason = "push data must be a JSON object of strings";
		return false;
	}
	struct json_object *root = json_object_new_object();
	struct json_object *msg = json_object_new_object();
	json_object_object_add(root, "message", msg);
	json_object_object_add(msg, "token", json_object_new_string(m->token));
	if (m->title || m->body || m->image) {
		struct json_object *n = json_object_new_object();
		if (m->title)
			json_object_object_add(n, "title",
					       json_object_new_string(m->title));
		if (m->body)
			json_object_object_add(n, "body",
					       json_object_new_string(m->body));
		if (m->image)
			json_object_object_add(n, "image",
					       json_object_new_string(m->image));
		json_object_object_add(msg, "notification", n);
	}
	if (data)
		json_object_object_add(msg, "data", data);
	buf_puts(&p->body,
		 json_object_to_json_string_ext(
			 root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	p->envelope_id = req->envelope_id;
	p->url = ch->push_url;
	p->origin = ch->push_origin;
	return true;
}

static struct curl_slist *append(struct curl_slist *l, const char *line)
{
	struct curl_slist *n = curl_slist_append(l, line);
	if (!n)
		abort();
	return n;
}

struct curl_slist *deliver_push_setup(const struct deliver_channels *ch, CURL *e,
				      struct deliver_prep *p, const char *user_agent)
{
	struct curl_slist *l = NULL;
	struct buf line;
	buf_init(&line, 0);
	l = append(l, "Content-Type: application/json; charset=utf-8");
	l = append(l, ch->push_auth);
	l = append(l, "Expect:");
	buf_printf(&line, "User-Agent: %s", user_agent);
	l = append(l, buf_str(&line));
	buf_reset(&line);
	buf_printf(&line, "Idempotency-Key: %s", p->envelope_id);
	l = append(l, buf_str(&line));
	buf_fini(&line);

	curl_easy_setopt(e, CURLOPT_URL, ch->push_url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body.len);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, buf_str(&p->body));
	return l;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (o && json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

/* Does the error say the token is what is wrong? */
static bool token_error(struct json_object *err, const char **code_out)
{
	struct json_object *details, *fv;
	const char *status = get_str(err, "status"), *message = get_str(err, "message");
	bool about_token = message && strcasestr(message, "token");
	*code_out = status;
	if (json_object_object_get_ex(err, "details", &details) &&
	    json_object_is_type(details, json_type_array)) {
		size_t n = json_object_array_length(details);
		for (size_t i = 0; i < n; i++) {
			struct json_object *d = json_object_array_get_idx(details, i);
			const char *ec = get_str(d, "errorCode");
			if (ec) {
				*code_out = ec;
				if (strcmp(ec, "UNREGISTERED") == 0 ||
				    strcmp(ec, "SENDER_ID_MISMATCH") == 0)
					return true;
			}
			if (json_object_object_get_ex(d, "fieldViolations", &fv) &&
			    json_object_is_type(fv, json_type_array)) {
				for (size_t k = 0; k < json_object_array_length(fv);
				     k++) {
					const char *f =
						get_str(json_object_array_get_idx(fv, k),
							"field");
					if (f && strcmp(f, "message.token") == 0)
						about_token = true;
				}
			}
		}
	}
	if (status && strcmp(status, "UNREGISTERED") == 0)
		return true;
	return about_token && *code_out && strcmp(*code_out, "INVALID_ARGUMENT") == 0;
}

void deliver_push_verdict(long status, const char *body, size_t len,
			  struct deliver_verdict *v)
{
	struct json_object *o = NULL, *err = NULL;
	memset(v, 0, sizeof(*v));
	if (body && len) {
		struct json_tokener *tok = json_tokener_new_ex(32);
		o = json_tokener_parse_ex(tok, body, (int)len);
		if (json_tokener_get_error(tok) != json_tokener_success ||
		    !json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			o = NULL;
		}
		json_tokener_free(tok);
	}
	if (status >= 200 && status <= 299) {
		const char *name = get_str(o, "name");
		v->result = DELIVER_OK;
		if (name)
			snprintf(v->provider_id, sizeof(v->provider_id), "%s", name);
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld", status);
		json_object_put(o);
		return;
	}
	const char *code = NULL;
	bool bad_token = false;
	if (o && json_object_object_get_ex(o, "error", &err) &&
	    json_object_is_type(err, json_type_object))
		bad_token = token_error(err, &code);
	if (code)
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld (%s)", status, code);
	else
		snprintf(v->reason, sizeof(v->reason), "HTTP %ld", status);
	if (status == 429 || status >= 500) {
		v->result = DELIVER_TEMPFAIL;
	} else {
		v->result = DELIVER_PERMFAIL;
		v->invalid_recipient = status == 404 || bad_token;
	}
	json_object_put(o);
}
