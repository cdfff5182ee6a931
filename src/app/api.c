/*
 * api.c -- routing and handlers for the HTTP API (DESIGN.md §5).
 *
 * Routes:
 *   POST /v1/{track,identify,page,screen,alias,group,batch}  write key (Basic user
 *        or body writeKey) -- answered 200 only after the records are durable
 *   GET|DELETE /v1/profiles/{namespace}/{value}              admin key (Bearer)
 *   GET /metrics                                             admin key
 *   GET /healthz                                             public
 * Order of checks: route (404), method (405 with Allow), key (401), content type
 * (415), body (400 with the field path, 413 for an oversized event).
 * Threading: everything here runs on the loop thread; reads of committed state
 * go straight to the store, writes go through the inbox and the engine
 * (invariant 6).
 */
#include "app/api.h"

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/engine.h"
#include "audience/audience.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/id.h"
#include "base/log.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "ingest/segment.h"
#include "journey/def.h"
#include "journey/run.h"
#include "deliver/feedback.h"
#include "govern/govern.h"
#include "deliver/track.h"
#include "profile/profile.h"
#include "report/metrics.h"
#include "report/report.h"

enum route {
	ROUTE_TRACK,
	ROUTE_IDENTIFY,
	ROUTE_PAGE,
	ROUTE_SCREEN,
	ROUTE_ALIAS,
	ROUTE_GROUP,
	ROUTE_BATCH,
	ROUTE_PROFILES,
	ROUTE_HEALTHZ,
	ROUTE_METRICS,
	ROUTE_JOURNEYS,
	ROUTE_TEMPLATES,
	ROUTE_DEBUG,
	ROUTE_TRACKING,
	ROUTE_SUPPRESSION,
	ROUTE_FEEDBACK,
	ROUTE_RULES,
	ROUTE_REPORTS,
	ROUTE_AUDIENCES,
	ROUTE_BUSINESS,
	ROUTE_OTHER,
	ROUTE__COUNT
};

/* The single-event routes are the segment types, in order: handle_ingest
 * casts one to the other. */
_Static_assert(ROUTE_TRACK == (int)SEGMENT_TRACK &&
		       ROUTE_IDENTIFY == (int)SEGMENT_IDENTIFY &&
		       ROUTE_PAGE == (int)SEGMENT_PAGE &&
		       ROUTE_SCREEN == (int)SEGMENT_SCREEN &&
		       ROUTE_ALIAS == (int)SEGMENT_ALIAS &&
		       ROUTE_GROUP == (int)SEGMENT_GROUP,
	       "single-event routes follow enum segment_type");

static const char *const route_names[ROUTE__COUNT] = {
	"track",    "identify",	 "page",     "screen",	  "alias",
	"group",    "batch",	 "profiles", "healthz",	  "metrics",
	"journeys", "templates", "debug",    "tracking",  "suppression",
	"feedback", "rules",	 "reports",  "audiences", "business_events",
	"other",
};

static const int counted_status[] = {302, 200, 400, 401, 404, 405,
				     411, 413, 415, 500, 503};
#define NSTATUS (sizeof(counted_status) / sizeof(counted_status[0]))

struct waiter {
	struct waiter *next;
	enum route route;
	uint64_t seq;
	struct http_req *req;
	struct api *a;
	char *body; /* answer to send once applied; owned */
};

struct api {
	const struct config *cfg;
	struct store *s;
	struct inbox *ib;
	struct engine *e;
	struct segment_limits lim;
	struct waiter *waiters; /* waiting for the engine, in seq order */
	struct metric req_metrics[ROUTE__COUNT][NSTATUS + 1];
	char *req_labels[ROUTE__COUNT][NSTATUS + 1];
	struct metric m_events;
	struct metric m_rejected;
	struct metric m_latency;
	bool test_clock;
	struct expr_env *journey_env;	   /* for the validate route (loop thread) */
	const struct track_key *track_key; /* borrowed */
};

/* A request waiting for its records to become durable. */
struct pending {
	struct api *a;
	struct http_req *req;
	enum route route;
	char *body; /* answer; owned */
	bool wait_applied;
};

static void count(struct api *a, enum route r, int status)
{
	unsigned i = 0;

	while (i < NSTATUS && counted_status[i] != status)
		i++;
	metrics_add(&a->req_metrics[r][i], 1);
}

static void reply(struct api *a, struct http_req *req, enum route r, int status,
		  const char *ctype, const char *body, size_t len, const char *extra)
{
	count(a, r, status);
	metrics_observe(&a->m_latency,
			(double)(clock_mono_ns() - http_req_start_ns(req)) / 1e9);
	http_respond(req, status, ctype, body, len, extra);
}

static void reply_json(struct api *a, struct http_req *req, enum route r, int status,
		       const char *json)
{
	reply(a, req, r, status, "application/json", json, strlen(json), NULL);
}

static void reply_error(struct api *a, struct http_req *req, enum route r, int status,
			const char *code, const char *field, const char *message)
{
	count(a, r, status);
	http_respond_error(req, status, code, field, message);
}

static const char *status_code_name(enum nerr rc)
{
	switch (rc) {
	case NERR_TOOBIG:
		return "too_large";
	case NERR_AUTH:
		return "unauthorized";
	case NERR_NOTFOUND:
		return "not_found";
	default:
		return "invalid";
	}
}

/* Constant-time comparison of a presented key with the configured one. */
static bool key_equal(const char *given, size_t glen, const char *want)
{
	size_t wlen = strlen(want);

	if (wlen == 0 || glen != wlen)
		return false;
	return CRYPTO_memcmp(given, want, wlen) == 0;
}

/* 1 = valid Basic write key, 0 = header present but wrong, -1 = no header. */
static int check_basic(const struct http_req *req, const char *want)
{
	const char *h = http_req_header(req, "Authorization");
	unsigned char dec[512];
	size_t n, user_len;
	int len;

	if (!h)
		return -1;
	if (strncasecmp(h, "Basic ", 6) != 0)
		return 0;
	h += 6;
	while (*h == ' ')
		h++;
	n = strlen(h);
	if (n == 0 || n > 680 || n % 4)
		return 0;
	len = EVP_DecodeBlock(dec, (const unsigned char *)h, (int)n);
	if (len < 0)
		return 0;
	/* EVP_DecodeBlock counts padding bytes as zeros; drop them. */
	if (n >= 1 && h[n - 1] == '=')
		len--;
	if (n >= 2 && h[n - 2] == '=')
		len--;
	dec[len] = '\0';
	char *colon = memchr(dec, ':', (size_t)len);
	user_len = colon ? (size_t)(colon - (char *)dec) : (size_t)len;
	return key_equal((const char *)dec, user_len, want) ? 1 : 0;
}

static bool check_bearer(const struct http_req *req, const char *want)
{
	const char *h = http_req_header(req, "Authorization");

	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ')
		h++;
	return key_equal(h, strlen(h), want);
}

static bool json_content_type(const struct http_req *req)
{
	const char *ct = http_req_header(req, "Content-Type");

	if (!ct)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", 16) == 0 ||
	       strncasecmp(ct, "text/plain", 10) == 0;
}

/* Answers a request whose records the engine has applied: with the engine's
 * result for that record if it computed one, else with fallback. */
static void answer_applied(struct api *a, struct http_req *req, enum route r,
			   uint64_t seq, const char *fallback)
{
	int status = 200;
	char *body = a->e ? engine_take_result(a->e, seq, &status) : NULL;

	if (body) {
		reply_json(a, req, r, status, body);
		free(body);
	} else {
		reply_json(a, req, r, 200, fallback ? fallback : "{}");
	}
}

static void on_durable(void *ud, enum nerr rc, uint64_t last_seq)
{
	struct pending *p = ud;
	struct api *a = p->a;

	if (rc) {
		reply_error(a, p->req, p->route, 503, "unavailable", NULL,
			    "the event store is not accepting writes");
	} else if (p->wait_applied && a->e && engine_applied_seq(a->e) < last_seq) {
		struct waiter *w = xcalloc(1, sizeof(*w)), **pp = &a->waiters;

		w->seq = last_seq;
		w->req = p->req;
		w->a = a;
		w->route = p->route;
		w->body = p->body;
		p->body = NULL;
		while (*pp)
			pp = &(*pp)->next;
		*pp = w;
	} else if (p->wait_applied) {
		answer_applied(a, p->req, p->route, last_seq, p->body);
	} else {
		reply_json(a, p->req, p->route, 200, p->body);
	}
	free(p->body);
	free(p);
}

void api_on_applied(void *ud, uint64_t applied_seq)
{
	struct api *a = ud;

	while (a->waiters && a->waiters->seq <= applied_seq) {
		struct waiter *w = a->waiters;

		a->waiters = w->next;
		answer_applied(a, w->req, w->route, w->seq, w->body);
		free(w->body);
		free(w);
	}
}

void api_cancel_waiters(struct api *a)
{
	while (a->waiters) {
		struct waiter *w = a->waiters;

		a->waiters = w->next;
		reply_error(a, w->req, w->route, 503, "unavailable", NULL,
			    "shutting down before the change was applied");
		free(w->body);
		free(w);
	}
}

/* Queues job; answers 503 itself on refusal. Takes ownership of job and body. */
static void submit(struct api *a, struct http_req *req, enum route r,
		   struct inbox_job *job, char *body, bool wait_applied)
{
	struct pending *p = xcalloc(1, sizeof(*p));
	enum nerr rc;

	p->a = a;
	p->req = req;
	p->route = r;
	p->body = body;
	p->wait_applied = wait_applied;
	rc = inbox_submit(a->ib, job, on_durable, p);
	if (rc) {
		inbox_job_free(job);
		free(p->body);
		free(p);
		count(a, r, 503);
		http_respond(req, 503, "application/json",
			     "{\"error\":{\"code\":\"unavailable\",\"field\":\"\","
			     "\"message\":\"overloaded, retry later\"}}",
			     strlen("{\"error\":{\"code\":\"unavailable\",\"field\":\"\","
				    "\"message\":\"overloaded, retry later\"}}"),
			     "Retry-After: 1\r\n");
	}
}

/* Now for stamping events: the engine clock when the test clock is on, so
 * events and windows agree however far a test moved time. */
static int64_t api_now(struct api *a)
{
	return a->test_clock && a->e ? engine_now(a->e) : clock_wall_ms();
}

static void handle_ingest(struct api *a, struct http_req *req, enum route r)
{
	struct nerr_msg msg = {"", ""};
	struct json_object *body = NULL;
	size_t len;
	const char *text = http_req_body(req, &len);
	int auth = check_basic(req, a->cfg->write_key);
	int64_t now_ms = api_now(a), ts_ms;
	enum nerr rc;

	if (auth == 0) {
		reply_error(a, req, r, 401, "unauthorized", "Authorization",
			    "the write key is not valid");
		return;
	}
	if (!json_content_type(req)) {
		reply_error(a, req, r, 415, "unsupported_media_type", "Content-Type",
			    "send JSON with Content-Type: application/json");
		return;
	}
	if (r != ROUTE_BATCH && auth > 0) {
		/* One pass over the text, no tree, for the common event; anything
		 * else (and every error) goes the general way below. */
		char *ev;
		size_t evl;

		if (segment_fast_event(text, len, (enum segment_type)r, now_ms, &a->lim,
				       &ev, &evl, &ts_ms) == NERR_OK) {
			struct inbox_job *job = inbox_job_new();

			inbox_job_add(job, INBOX_EVENT, now_ms, ev, evl);
			free(ev);
			metrics_add(&a->m_events, 1);
			submit(a, req, r, job, xstrdup("{\"success\":true}"), false);
			return;
		}
	}
	rc = segment_parse_json(text, len, &a->lim, &body, &msg);
	if (rc) {
		if (auth < 0)
			reply_error(
				a, req, r, 401, "unauthorized", "Authorization",
				"a write key is required (HTTP Basic user or writeKey)");
		else
			reply_error(a, req, r, rc == NERR_TOOBIG ? 413 : 400,
				    status_code_name(rc), msg.field, msg.message);
		return;
	}
	if (auth < 0) {
		const char *wk = segment_body_write_key(body);

		if (!wk || !key_equal(wk, strlen(wk), a->cfg->write_key)) {
			reply_error(a, req, r, 401, "unauthorized",
				    wk ? "writeKey" : "Authorization",
				    wk ? "the write key is not valid"
				       : "a write key is required (HTTP Basic user or "
					 "writeKey)");
			json_object_put(body);
			return;
		}
	}

	struct inbox_job *job = inbox_job_new();
	if (r != ROUTE_BATCH) {
		const char *ej;
		size_t ejl;

		rc = segment_normalize_json(body, (int)r, "", now_ms, &a->lim, &ts_ms,
					    &ej, &ejl, &msg);
		if (rc) {
			reply_error(a, req, r, rc == NERR_TOOBIG ? 413 : 400,
				    status_code_name(rc), msg.field, msg.message);
			inbox_job_free(job);
			json_object_put(body);
			metrics_add(&a->m_rejected, 1);
			return;
		}
		/* The normalizer serialized the event for its size cap already. */
		inbox_job_add(job, INBOX_EVENT, now_ms, ej, ejl);
		json_object_put(body);
		metrics_add(&a->m_events, 1);
		submit(a, req, r, job, xstrdup("{\"success\":true}"), false);
		return;
	}

	struct json_object *items = NULL, *errors = json_object_new_array();
	rc = segment_batch_items(body, &a->lim, &items, &msg);
	if (rc) {
		reply_error(a, req, r, rc == NERR_TOOBIG ? 413 : 400,
			    status_code_name(rc), msg.field, msg.message);
		goto batch_out;
	}
	size_t n = json_object_array_length(items);
	for (size_t i = 0; i < n; i++) {
		struct json_object *item = json_object_array_get_idx(items, i);
		char path[32];

		snprintf(path, sizeof(path), "batch[%zu]", i);
		nerr_clear(&msg);
		if (json_object_is_type(item, json_type_object))
			segment_batch_merge_context(body, item);
		const char *ej;
		size_t ejl;

		rc = segment_normalize_json(item, -1, path, now_ms, &a->lim, &ts_ms, &ej,
					    &ejl, &msg);
		if (rc) {
			struct json_object *e = json_object_new_object();

			json_object_object_add(e, "index",
					       json_object_new_int64((int64_t)i));
			json_object_object_add(
				e, "code", json_object_new_string(status_code_name(rc)));
			json_object_object_add(e, "field",
					       json_object_new_string(msg.field));
			json_object_object_add(e, "message",
					       json_object_new_string(msg.message));
			json_object_array_add(errors, e);
			metrics_add(&a->m_rejected, 1);
			continue;
		}
		inbox_job_add(job, INBOX_EVENT, now_ms, ej, ejl);
		metrics_add(&a->m_events, 1);
	}
	if (inbox_job_count(job) == 0) {
		struct json_object *resp = json_object_new_object(), *err;

		err = json_object_new_object();
		json_object_object_add(err, "code", json_object_new_string("invalid"));
		json_object_object_add(err, "field",
				       json_object_new_string(n ? "batch" : "batch"));
		json_object_object_add(
			err, "message",
			json_object_new_string(n ? "no valid item in the batch"
						 : "the batch is empty"));
		json_object_object_add(resp, "error", err);
		json_object_object_add(resp, "errors", json_object_get(errors));
		reply_json(a, req, r, 400,
			   json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN));
		json_object_put(resp);
		goto batch_out;
	}
	{
		struct json_object *resp = json_object_new_object();
		char *out;

		json_object_object_add(resp, "success", json_object_new_boolean(1));
		json_object_object_add(resp, "accepted",
				       json_object_new_int64(inbox_job_count(job)));
		json_object_object_add(resp, "errors", json_object_get(errors));
		out = xstrdup(
			json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN));
		json_object_put(resp);
		submit(a, req, r, job, out, false);
		job = NULL;
	}
batch_out:
	inbox_job_free(job);
	json_object_put(errors);
	json_object_put(body);
}

/* Splits "/v1/profiles/{ns}/{value}" into decoded parts. */
static void method_not_allowed(struct api *a, struct http_req *req, enum route r,
			       const char *allow);

static bool profile_path(const char *path, char *ns, size_t nsz, char *val, size_t vsz,
			 bool *messages, bool *consent)
{
	const char *p = path + strlen("/v1/profiles/"), *slash = strchr(p, '/'), *tail;
	size_t nl, vl;

	*messages = false;
	*consent = false;
	if (!slash)
		return false;
	nl = (size_t)(slash - p);
	vl = strlen(slash + 1);
	tail = strchr(slash + 1, '/');
	if (tail && strcmp(tail, "/messages") == 0) {
		*messages = true;
		vl = (size_t)(tail - slash - 1);
	} else if (tail && strcmp(tail, "/consent") == 0) {
		*consent = true;
		vl = (size_t)(tail - slash - 1);
	} else if (tail) {
		return false;
	}
	if (nl == 0 || vl == 0 || nl >= nsz || vl >= vsz)
		return false;
	if (http_url_decode(p, nl, ns) < 0 || http_url_decode(slash + 1, vl, val) < 0)
		return false;
	return ns[0] && val[0];
}

/* GET /v1/profiles/{ns}/{value}/messages: the envelopes made for the person,
 * newest first (at most 100). */
static void profile_messages(struct api *a, struct http_req *req, uint64_t pid)
{
	struct store_iter *it;
	struct json_object *items = json_object_new_array(),
			   *out = json_object_new_object();
	unsigned char p[9];
	unsigned n = 0;

	p[0] = 'm';
	store_put_u64(p + 1, pid);
	/* Forward scan, then reverse: one profile's index is small. */
	it = store_iter_new(a->s, NULL, STORE_CF_INDEX);
	for (store_iter_seek(it, p, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		char *v = NULL;
		size_t vl = 0;

		if (kl != 49 || memcmp(k, p, 9) != 0)
			break;
		if (store_get(a->s, STORE_CF_OUTBOX, k + 17, 32, &v, &vl) == NERR_OK) {
			struct json_object *e = json_tokener_parse(v);

			if (e) {
				struct json_object *req_o;

				/* Secrets stay inside. */
				if (json_object_object_get_ex(e, "request", &req_o))
					json_object_object_del(req_o, "secret");
				json_object_array_add(items, e);
			}
		}
		free(v);
	}
	store_iter_free(it);
	/* newest first, capped */
	size_t len = json_object_array_length(items);
	struct json_object *rev = json_object_new_array();
	for (size_t i = len; i > 0 && n < 100; i--, n++)
		json_object_array_add(
			rev, json_object_get(json_object_array_get_idx(items, i - 1)));
	json_object_put(items);
	json_object_object_add(out, "messages", rev);
	reply_json(a, req, ROUTE_PROFILES, 200,
		   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	json_object_put(out);
}

static struct json_object *admin_body(struct api *a, struct http_req *req, enum route r);
static void submit_admin(struct api *a, struct http_req *req, enum route r,
			 struct json_object *op);

/* PUT /v1/profiles/{ns}/{value}/consent with {"email": "granted"} or
 * {"sms": {"marketing": "denied"}}: applied through the engine, answered with the
 * profile's consent once applied. */
static void profile_consent(struct api *a, struct http_req *req, const char *method,
			    const char *ns, const char *val)
{
	struct json_object *body, *op;

	if (strcmp(method, "PUT"))
		return method_not_allowed(a, req, ROUTE_PROFILES, "PUT");
	body = admin_body(a, req, ROUTE_PROFILES);
	if (!body)
		return;
	json_object_object_foreach(body, ch, cv)
	{
		bool ok_ch =
			!strcmp(ch, "email") || !strcmp(ch, "sms") || !strcmp(ch, "push");
		bool ok_val = false;

		if (json_object_is_type(cv, json_type_string)) {
			ok_val = !strcmp(json_object_get_string(cv), "granted") ||
				 !strcmp(json_object_get_string(cv), "denied");
		} else if (json_object_is_type(cv, json_type_object)) {
			ok_val = json_object_object_length(cv) > 0;
			json_object_object_foreach(cv, pk, pv)
			{
				(void)pk;
				if (!json_object_is_type(pv, json_type_string) ||
				    (strcmp(json_object_get_string(pv), "granted") &&
				     strcmp(json_object_get_string(pv), "denied")))
					ok_val = false;
			}
		}
		if (!ok_ch || !ok_val) {
			char field[96];

			snprintf(field, sizeof(field), "%.80s", ch);
			json_object_put(body);
			return reply_error(
				a, req, ROUTE_PROFILES, 400, "invalid", field,
				ok_ch ? "use \"granted\", \"denied\" or {purpose: "
					"\"granted\"|\"denied\"}"
				      : "channel must be email, sms or push");
		}
	}
	if (json_object_object_length(body) == 0) {
		json_object_put(body);
		return reply_error(a, req, ROUTE_PROFILES, 400, "invalid", "",
				   "give at least one channel");
	}
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("consent"));
	json_object_object_add(op, "namespace", json_object_new_string(ns));
	json_object_object_add(op, "value", json_object_new_string(val));
	json_object_object_add(op, "consent", body);
	submit_admin(a, req, ROUTE_PROFILES, op);
}

/* DELETE /v1/profiles/{ns}/{value}: through the inbox and the engine, which looks
 * the person up in order with earlier events; answered once applied (404 when no
 * profile has the identity). */
static void profile_delete(struct api *a, struct http_req *req, const char *ns,
			   const char *val)
{
	struct json_object *rec = json_object_new_object();
	struct inbox_job *job = inbox_job_new();
	size_t len;
	const char *txt;

	json_object_object_add(rec, "namespace", json_object_new_string(ns));
	json_object_object_add(rec, "value", json_object_new_string(val));
	txt = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &len);
	inbox_job_add(job, INBOX_ERASE, clock_wall_ms(), txt, len);
	json_object_put(rec);
	submit(a, req, ROUTE_PROFILES, job, NULL, true);
}

static void handle_profile(struct api *a, struct http_req *req, const char *method)
{
	char ns[128], val[1024];
	uint64_t pid;
	enum nerr rc;
	bool messages, consent;

	if (!profile_path(http_req_path(req), ns, sizeof(ns), val, sizeof(val), &messages,
			  &consent)) {
		reply_error(a, req, ROUTE_PROFILES, 404, "not_found", "path",
			    "use /v1/profiles/{namespace}/{value}");
		return;
	}
	/* Consent changes go to the engine, which looks the person up in order
	 * with the events before them. */
	if (consent)
		return profile_consent(a, req, method, ns, val);
	if (!messages && strcmp(method, "DELETE") == 0)
		return profile_delete(a, req, ns, val);
	if (strcmp(method, "GET"))
		return method_not_allowed(a, req, ROUTE_PROFILES,
					  messages ? "GET" : "GET, DELETE");
	rc = profile_lookup(a->s, NULL, ns, val, &pid);
	if (rc == NERR_NOTFOUND) {
		reply_error(a, req, ROUTE_PROFILES, 404, "not_found", "value",
			    "no profile has this identity");
		return;
	}
	if (rc) {
		reply_error(a, req, ROUTE_PROFILES, rc == NERR_INVAL ? 400 : 500,
			    rc == NERR_INVAL ? "invalid" : "internal", "namespace",
			    "cannot look up this identity");
		return;
	}
	if (messages) {
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_PROFILES, "GET");
		return profile_messages(a, req, pid);
	}
	if (strcmp(method, "GET") && strcmp(method, "DELETE"))
		return method_not_allowed(a, req, ROUTE_PROFILES, "GET, DELETE");
	if (strcmp(method, "GET") == 0) {
		struct json_object *obj = NULL;

		rc = profile_get_json(a->s, NULL, pid, &obj);
		if (rc == NERR_OK)
			aud_decorate_api(a->s, pid, obj);
		if (rc) {
			reply_error(a, req, ROUTE_PROFILES,
				    rc == NERR_NOTFOUND ? 404 : 500,
				    rc == NERR_NOTFOUND ? "not_found" : "internal", NULL,
				    "cannot read the profile");
			return;
		}
		reply_json(a, req, ROUTE_PROFILES, 200,
			   json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
		json_object_put(obj);
		return;
	}
}

/* ------------------------------------------------------ journeys, templates */

/* Submits an admin operation; the engine's result is the answer. */
static void submit_admin(struct api *a, struct http_req *req, enum route r,
			 struct json_object *op)
{
	struct inbox_job *job = inbox_job_new();
	size_t len;
	const char *txt =
		json_object_to_json_string_length(op, JSON_C_TO_STRING_PLAIN, &len);

	inbox_job_add(job, INBOX_ADMIN, clock_wall_ms(), txt, len);
	json_object_put(op);
	submit(a, req, r, job, NULL, true);
}

/* Parses an admin request body as a JSON object; answers 400/415 itself. */
static struct json_object *admin_body(struct api *a, struct http_req *req, enum route r)
{
	struct nerr_msg msg = {"", ""};
	struct json_object *body = NULL;
	struct segment_limits lim = a->lim;
	size_t len;
	const char *text = http_req_body(req, &len);

	if (!json_content_type(req)) {
		reply_error(a, req, r, 415, "unsupported_media_type", "Content-Type",
			    "send JSON with Content-Type: application/json");
		return NULL;
	}
	lim.max_depth = 64;
	if (segment_parse_json(text, len, &lim, &body, &msg) != NERR_OK) {
		reply_error(a, req, r, 400, "invalid", msg.field, msg.message);
		return NULL;
	}
	if (!json_object_is_type(body, json_type_object)) {
		json_object_put(body);
		reply_error(a, req, r, 400, "invalid", "",
			    "the body must be a JSON object");
		return NULL;
	}
	return body;
}

static struct json_object *store_json(struct store *s, enum store_cf cf, const char *k,
				      size_t kl)
{
	char *v = NULL;
	size_t vl = 0;
	struct json_object *o = NULL;

	if (store_get(s, cf, k, kl, &v, &vl) == NERR_OK)
		o = json_tokener_parse(v);
	free(v);
	return o;
}

/* A journey's signing secret never leaves the server through the API. */
static struct json_object *redact_secret(struct json_object *doc)
{
	if (doc && json_object_object_get_ex(doc, "webhook_secret", NULL))
		json_object_object_add(doc, "webhook_secret",
				       json_object_new_string("(set)"));
	return doc;
}

static void journey_get(struct api *a, struct http_req *req, const char *id)
{
	char k[96];
	struct json_object *st, *draft, *out, *versions = json_object_new_array();
	struct store_iter *it;
	size_t pl;

	snprintf(k, sizeof(k), "s/%s", id);
	st = store_json(a->s, STORE_CF_JOURNEYS, k, strlen(k));
	if (!st) {
		json_object_put(versions);
		reply_error(a, req, ROUTE_JOURNEYS, 404, "not_found", "id",
			    "no such journey");
		return;
	}
	out = st;
	json_object_object_del(out, "updated_ms");
	snprintf(k, sizeof(k), "d/%s", id);
	draft = store_json(a->s, STORE_CF_JOURNEYS, k, strlen(k));
	if (draft)
		json_object_object_add(out, "draft", redact_secret(draft));
	snprintf(k, sizeof(k), "v/%s/", id);
	pl = strlen(k);
	it = store_iter_new(a->s, NULL, STORE_CF_JOURNEYS);
	for (store_iter_seek(it, k, pl); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		const unsigned char *vb = (const unsigned char *)key + kl - 4;
		struct json_object *ver, *def;
		char *copy;

		if (kl != pl + 4 || memcmp(key, k, pl) != 0)
			break;
		ver = json_object_new_object();
		json_object_object_add(
			ver, "version",
			json_object_new_int64((int64_t)((unsigned)vb[0] << 24 |
							vb[1] << 16 | vb[2] << 8 |
							vb[3])));
		copy = xstrndup(v, vl);
		def = json_tokener_parse(copy);
		free(copy);
		json_object_object_add(ver, "definition", redact_secret(def));
		json_object_array_add(versions, ver);
	}
	store_iter_free(it);
	json_object_object_add(out, "versions", versions);
	reply_json(a, req, ROUTE_JOURNEYS, 200,
		   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	json_object_put(out);
}

static void journey_list(struct api *a, struct http_req *req)
{
	struct json_object *list = json_object_new_array(),
			   *out = json_object_new_object();
	struct store_iter *it = store_iter_new(a->s, NULL, STORE_CF_JOURNEYS);

	for (store_iter_seek(it, "s/", 2); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char *copy;
		struct json_object *o;

		if (kl < 2 || memcmp(k, "s/", 2) != 0)
			break;
		copy = xstrndup(v, vl);
		o = json_tokener_parse(copy);
		free(copy);
		if (o) {
			json_object_object_del(o, "updated_ms");
			json_object_array_add(list, o);
		}
	}
	store_iter_free(it);
	json_object_object_add(out, "journeys", list);
	reply_json(a, req, ROUTE_JOURNEYS, 200,
		   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	json_object_put(out);
}

static void journey_validate(struct api *a, struct http_req *req, const char *id)
{
	char k[96];
	char *v = NULL;
	size_t vl = 0;
	struct json_object *errors = NULL, *out;
	bool ok;

	snprintf(k, sizeof(k), "d/%s", id);
	if (store_get(a->s, STORE_CF_JOURNEYS, k, strlen(k), &v, &vl) != NERR_OK) {
		reply_error(a, req, ROUTE_JOURNEYS, 404, "not_found", "id",
			    "no draft for this journey (PUT it first)");
		return;
	}
	ok = journey_rt_validate(a->s, a->journey_env, v, vl, &errors);
	free(v);
	out = json_object_new_object();
	json_object_object_add(out, "valid", json_object_new_boolean(ok));
	json_object_object_add(out, "errors", errors);
	reply_json(a, req, ROUTE_JOURNEYS, ok ? 200 : 422,
		   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	json_object_put(out);
}

/* /v1/journeys[/{id}[/{action}]] */
static void handle_journeys(struct api *a, struct http_req *req, const char *method)
{
	const char *rest = http_req_path(req) + strlen("/v1/journeys");
	char id[80] = "", action[16] = "";
	const char *slash;
	struct json_object *op, *body;

	if (*rest == '\0' || strcmp(rest, "/") == 0) {
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_JOURNEYS, "GET");
		return journey_list(a, req);
	}
	rest++;
	slash = strchr(rest, '/');
	if ((slash ? (size_t)(slash - rest) : strlen(rest)) >= sizeof(id) ||
	    (slash && strlen(slash + 1) >= sizeof(action)))
		return reply_error(a, req, ROUTE_JOURNEYS, 404, "not_found", "path",
				   "no such route");
	snprintf(id, sizeof(id), "%.*s",
		 (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (slash)
		snprintf(action, sizeof(action), "%s", slash + 1);
	if (!id_valid(id, 64))
		return reply_error(a, req, ROUTE_JOURNEYS, 400, "invalid", "id",
				   "a journey id is 1 to 64 of [A-Za-z0-9_-]");
	if (!slash) {
		if (strcmp(method, "GET") == 0)
			return journey_get(a, req, id);
		if (strcmp(method, "PUT"))
			return method_not_allowed(a, req, ROUTE_JOURNEYS, "GET, PUT");
		body = admin_body(a, req, ROUTE_JOURNEYS);
		if (!body)
			return;
		struct json_object *jid;
		if (json_object_object_get_ex(body, "id", &jid) &&
		    (!json_object_is_type(jid, json_type_string) ||
		     strcmp(json_object_get_string(jid), id) != 0)) {
			json_object_put(body);
			return reply_error(
				a, req, ROUTE_JOURNEYS, 400, "invalid", "id",
				"the document's id differs from the one in the path");
		}
		json_object_object_add(body, "id", json_object_new_string(id));
		op = json_object_new_object();
		json_object_object_add(op, "op", json_object_new_string("journey_put"));
		json_object_object_add(op, "id", json_object_new_string(id));
		json_object_object_add(op, "doc", body);
		return submit_admin(a, req, ROUTE_JOURNEYS, op);
	}
	static const char *const actions[] = {"validate", "publish", "pause", "resume",
					      "stop"};
	unsigned i;
	for (i = 0; i < 5; i++)
		if (strcmp(action, actions[i]) == 0)
			break;
	if (i == 5)
		return reply_error(a, req, ROUTE_JOURNEYS, 404, "not_found", "path",
				   "no such route");
	if (strcmp(method, "POST"))
		return method_not_allowed(a, req, ROUTE_JOURNEYS, "POST");
	if (i == 0)
		return journey_validate(a, req, id);
	op = json_object_new_object();
	char opname[32];
	snprintf(opname, sizeof(opname), "journey_%s", action);
	json_object_object_add(op, "op", json_object_new_string(opname));
	json_object_object_add(op, "id", json_object_new_string(id));
	submit_admin(a, req, ROUTE_JOURNEYS, op);
}

/* /v1/templates/{id} */
static void handle_templates(struct api *a, struct http_req *req, const char *method)
{
	const char *id = http_req_path(req) + strlen("/v1/templates/");
	struct nerr_msg msg = {"", ""};
	struct json_object *body, *op;

	if (!id_valid(id, 64))
		return reply_error(a, req, ROUTE_TEMPLATES, 404, "not_found", "id",
				   "a template id is 1 to 64 of [A-Za-z0-9_-]");
	if (strcmp(method, "GET") == 0) {
		struct json_object *o =
			store_json(a->s, STORE_CF_TEMPLATES, id, strlen(id));

		if (!o)
			return reply_error(a, req, ROUTE_TEMPLATES, 404, "not_found",
					   "id", "no such template");
		json_object_object_del(o, "updated_ms");
		reply_json(a, req, ROUTE_TEMPLATES, 200,
			   json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		return;
	}
	if (strcmp(method, "PUT"))
		return method_not_allowed(a, req, ROUTE_TEMPLATES, "GET, PUT");
	body = admin_body(a, req, ROUTE_TEMPLATES);
	if (!body)
		return;
	json_object_object_del(body, "id");
	json_object_object_del(body, "version");
	if (journey_template_check(body, &msg) != NERR_OK) {
		json_object_put(body);
		return reply_error(a, req, ROUTE_TEMPLATES, 400, "invalid", msg.field,
				   msg.message);
	}
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("template_put"));
	json_object_object_add(op, "id", json_object_new_string(id));
	json_object_object_add(op, "doc", body);
	submit_admin(a, req, ROUTE_TEMPLATES, op);
}

/* POST /v1/debug/clock {"now": RFC 3339} | {"advance": duration} (--test-clock). */
static void handle_clock(struct api *a, struct http_req *req)
{
	struct json_object *body = admin_body(a, req, ROUTE_DEBUG), *v, *op;
	int64_t ms;

	if (!body)
		return;
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("clock"));
	if (json_object_object_get_ex(body, "now", &v)) {
		if (!json_object_is_type(v, json_type_string) ||
		    clock_parse_rfc3339(json_object_get_string(v), &ms)) {
			json_object_put(op);
			json_object_put(body);
			return reply_error(a, req, ROUTE_DEBUG, 400, "invalid", "now",
					   "now must be an RFC 3339 date-time");
		}
		json_object_object_add(op, "now_ms", json_object_new_int64(ms));
	} else if (json_object_object_get_ex(body, "advance", &v)) {
		if (!json_object_is_type(v, json_type_string) ||
		    journey_duration_parse(json_object_get_string(v), &ms) != NERR_OK) {
			json_object_put(op);
			json_object_put(body);
			return reply_error(
				a, req, ROUTE_DEBUG, 400, "invalid", "advance",
				"advance must be a duration such as 90s, 1h or 3d");
		}
		json_object_object_add(op, "advance_ms", json_object_new_int64(ms));
	}
	json_object_put(body);
	submit_admin(a, req, ROUTE_DEBUG, op);
}

void api_set_test_clock(struct api *a, bool on)
{
	a->test_clock = on;
}

/* ------------------------------------------------------ tracking (public) */

static void no_op_done(void *ud, enum nerr rc, uint64_t last_seq)
{
	(void)ud;
	(void)last_seq;
	if (rc)
		log_warn("api", "msg=\"tracking record not stored\" rc=%s", nerr_str(rc));
}

/* Queues an engagement record; the visitor is answered at once. */
static void record_engagement(struct api *a, const char *kind, const char *envelope_id)
{
	struct json_object *op = json_object_new_object();
	struct inbox_job *job = inbox_job_new();
	size_t len;
	const char *txt;

	json_object_object_add(op, "op", json_object_new_string("engagement"));
	json_object_object_add(op, "kind", json_object_new_string(kind));
	json_object_object_add(op, "envelope", json_object_new_string(envelope_id));
	txt = json_object_to_json_string_length(op, JSON_C_TO_STRING_PLAIN, &len);
	inbox_job_add(job, INBOX_ADMIN, clock_wall_ms(), txt, len);
	json_object_put(op);
	if (inbox_submit(a->ib, job, no_op_done, NULL) != NERR_OK)
		inbox_job_free(job);
}

/* GET /t/o/{token}, GET /t/c/{token}, GET|POST /t/u/{token}. A token that does not
 * verify gets 404: never a redirect to a URL we did not sign. */
static void handle_tracking(struct api *a, struct http_req *req, const char *method)
{
	enum track_kind kind;
	const char *tok;
	size_t tlen;
	char token[TRACK_TOKEN_MAX + 1];
	struct track_claim claim;
	static const char page_headers[] = "Content-Security-Policy: " TRACK_PAGE_CSP
					   "\r\nReferrer-Policy: no-referrer\r\n"
					   "Cache-Control: no-store\r\n";

	if (!a->track_key || track_path_parse(http_req_path(req), &kind, &tok, &tlen) ||
	    tlen > TRACK_TOKEN_MAX)
		return reply_error(a, req, ROUTE_TRACKING, 404, "not_found", "path",
				   "no such link");
	memcpy(token, tok, tlen);
	token[tlen] = '\0';
	if (track_token_verify(a->track_key, kind, token, &claim) != NERR_OK)
		return reply_error(a, req, ROUTE_TRACKING, 404, "not_found", "token",
				   "this link is not valid");
	if (kind == TRACK_OPEN || kind == TRACK_CLICK) {
		if (strcmp(method, "GET") && strcmp(method, "HEAD"))
			return method_not_allowed(a, req, ROUTE_TRACKING, "GET");
		record_engagement(a, kind == TRACK_OPEN ? "open" : "click",
				  claim.envelope_id);
		if (kind == TRACK_OPEN)
			return reply(a, req, ROUTE_TRACKING, 200, "image/gif",
				     (const char *)track_pixel_gif, TRACK_PIXEL_GIF_LEN,
				     "Cache-Control: no-store\r\n");
		struct buf h;
		buf_init(&h, 0);
		buf_printf(&h,
			   "Location: %s\r\nCache-Control: no-store\r\nReferrer-Policy: "
			   "no-referrer\r\n",
			   claim.url);
		reply(a, req, ROUTE_TRACKING, 302, "text/plain", "", 0, buf_str(&h));
		buf_fini(&h);
		return;
	}
	/* Unsubscribe: GET shows a confirmation (link scanners fetch URLs); the
	 * POST, RFC 8058 one-click or our page's form, unsubscribes. */
	struct buf page;
	buf_init(&page, 0);
	if (strcmp(method, "GET") == 0) {
		track_page_confirm(NULL, token, &page);
	} else if (strcmp(method, "POST") == 0) {
		size_t blen;
		const char *body = http_req_body(req, &blen);

		if (!track_one_click_body(body, blen)) {
			buf_fini(&page);
			return reply_error(a, req, ROUTE_TRACKING, 400, "invalid", "body",
					   "expected List-Unsubscribe=One-Click");
		}
		record_engagement(a, "unsubscribe", claim.envelope_id);
		track_page_done(NULL, &page);
	} else {
		buf_fini(&page);
		return method_not_allowed(a, req, ROUTE_TRACKING, "GET, POST");
	}
	reply(a, req, ROUTE_TRACKING, 200, TRACK_PAGE_CONTENT_TYPE, buf_str(&page),
	      page.len, page_headers);
	buf_fini(&page);
}

void api_set_track_key(struct api *a, const struct track_key *k)
{
	a->track_key = k;
}

/* ---------------------------------------------------- suppression (admin) */

static void suppression_import(struct api *a, struct http_req *req);

static bool valid_channel(const char *c)
{
	return !strcmp(c, "email") || !strcmp(c, "sms") || !strcmp(c, "push");
}

/* PUT|DELETE /v1/suppression/{channel}/{address}, GET /v1/suppression?channel=&cursor= */
static void handle_suppression(struct api *a, struct http_req *req, const char *method)
{
	const char *rest = http_req_path(req) + strlen("/v1/suppression");
	char ch[16] = "", addr[512];
	struct json_object *op;

	if (*rest == '\0' || strcmp(rest, "/") == 0) {
		/* List, paged by key. */
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_SUPPRESSION, "GET");
		char q[1024], want[16] = "", cursor[600] = "";
		const char *query = http_req_query(req);
		struct json_object *items = json_object_new_array(),
				   *out = json_object_new_object();
		struct store_iter *it;
		unsigned n = 0;

		snprintf(q, sizeof(q), "%s", query);
		for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv;
		     kv = strtok_r(NULL, "&", &save)) {
			char *eq = strchr(kv, '=');

			if (!eq)
				continue;
			*eq = '\0';
			if (!strcmp(kv, "channel"))
				http_url_decode(eq + 1,
						strlen(eq + 1) < 15 ? strlen(eq + 1) : 15,
						want);
			else if (!strcmp(kv, "cursor") && strlen(eq + 1) < sizeof(cursor))
				http_url_decode(eq + 1, strlen(eq + 1), cursor);
		}
		if (want[0] && !valid_channel(want)) {
			json_object_put(items);
			json_object_put(out);
			return reply_error(a, req, ROUTE_SUPPRESSION, 400, "invalid",
					   "channel",
					   "channel must be email, sms or push");
		}
		it = store_iter_new(a->s, NULL, STORE_CF_SUPPRESSION);
		if (cursor[0])
			store_iter_seek(it, cursor, strlen(cursor));
		else if (want[0])
			store_iter_seek(it, want, strlen(want));
		else
			store_iter_seek_first(it);
		if (cursor[0] && store_iter_valid(it)) {
			size_t kl;
			const char *k = store_iter_key(it, &kl);

			if (kl == strlen(cursor) && !memcmp(k, cursor, kl))
				store_iter_next(it);
		}
		for (; store_iter_valid(it); store_iter_next(it)) {
			size_t kl, vl;
			const char *k = store_iter_key(it, &kl),
				   *v = store_iter_value(it, &vl);
			const char *colon = memchr(k, ':', kl);
			struct json_object *e;
			char *copy;

			if (!colon ||
			    (colon - k != 5 && colon - k != 3 && colon - k != 4) ||
			    (memcmp(k, "email", 5) && memcmp(k, "sms:", 4) &&
			     memcmp(k, "push", 4)))
				continue;
			if (want[0] && ((size_t)(colon - k) != strlen(want) ||
					memcmp(k, want, strlen(want))))
				break;
			if (n == 100) {
				char *c = xstrndup(k, kl);

				json_object_object_add(out, "next_cursor",
						       json_object_new_string(c));
				free(c);
				break;
			}
			copy = xstrndup(v, vl);
			e = json_tokener_parse(copy);
			free(copy);
			if (!e)
				e = json_object_new_object();
			json_object_object_add(
				e, "channel",
				json_object_new_string_len(k, (int)(colon - k)));
			json_object_object_add(
				e, "address",
				json_object_new_string_len(
					colon + 1, (int)(kl - (size_t)(colon - k) - 1)));
			json_object_array_add(items, e);
			n++;
		}
		store_iter_free(it);
		json_object_object_add(out, "items", items);
		reply_json(a, req, ROUTE_SUPPRESSION, 200,
			   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
		json_object_put(out);
		return;
	}
	if (strcmp(rest, "/import") == 0) {
		if (strcmp(method, "POST"))
			return method_not_allowed(a, req, ROUTE_SUPPRESSION, "POST");
		return suppression_import(a, req);
	}
	const char *slash = strchr(rest + 1, '/');
	if (!slash || (size_t)(slash - rest - 1) >= sizeof(ch) ||
	    strlen(slash + 1) >= sizeof(addr) || strlen(slash + 1) == 0)
		return reply_error(a, req, ROUTE_SUPPRESSION, 404, "not_found", "path",
				   "use /v1/suppression/{channel}/{address}");
	snprintf(ch, sizeof(ch), "%.*s", (int)(slash - rest - 1), rest + 1);
	if (!valid_channel(ch))
		return reply_error(a, req, ROUTE_SUPPRESSION, 400, "invalid", "channel",
				   "channel must be email, sms or push");
	if (http_url_decode(slash + 1, strlen(slash + 1), addr) < 0 || !addr[0])
		return reply_error(a, req, ROUTE_SUPPRESSION, 400, "invalid", "address",
				   "bad percent-encoding");
	if (!strcmp(ch, "email"))
		for (char *p = addr; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	if (strcmp(method, "GET") == 0) {
		char key[600];
		struct json_object *e;

		snprintf(key, sizeof(key), "%s:%s", ch, addr);
		e = store_json(a->s, STORE_CF_SUPPRESSION, key, strlen(key));
		if (!e)
			return reply_error(a, req, ROUTE_SUPPRESSION, 404, "not_found",
					   "address", "this address is not suppressed");
		json_object_object_add(e, "channel", json_object_new_string(ch));
		json_object_object_add(e, "address", json_object_new_string(addr));
		reply_json(a, req, ROUTE_SUPPRESSION, 200,
			   json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
		json_object_put(e);
		return;
	}
	if (strcmp(method, "PUT") && strcmp(method, "DELETE"))
		return method_not_allowed(a, req, ROUTE_SUPPRESSION, "GET, PUT, DELETE");
	op = json_object_new_object();
	json_object_object_add(op, "op",
			       json_object_new_string(strcmp(method, "PUT")
							      ? "unsuppress"
							      : "suppress"));
	json_object_object_add(op, "channel", json_object_new_string(ch));
	json_object_object_add(op, "address", json_object_new_string(addr));
	json_object_object_add(op, "reason", json_object_new_string("manual"));
	submit_admin(a, req, ROUTE_SUPPRESSION, op);
}

/* ------------------------------------------------- provider feedback (public) */

/* Providers (SNS, Twilio) cannot send a bearer token: they may use ?key=. */
static bool feedback_authorized(struct api *a, struct http_req *req)
{
	const char *q = http_req_query(req), *k;
	char given[300];

	if (check_bearer(req, a->cfg->admin_key))
		return true;
	if (!a->cfg->feedback_key[0])
		return false;
	for (k = q; k && *k; k = strchr(k, '&') ? strchr(k, '&') + 1 : NULL) {
		if (strncmp(k, "key=", 4) == 0) {
			size_t n = strcspn(k + 4, "&");

			if (n >= sizeof(given) || http_url_decode(k + 4, n, given) < 0)
				return false;
			return key_equal(given, strlen(given), a->cfg->feedback_key);
		}
	}
	return false;
}

static void submit_quiet_op(struct api *a, struct json_object *op)
{
	struct inbox_job *job = inbox_job_new();
	size_t len;
	const char *txt =
		json_object_to_json_string_length(op, JSON_C_TO_STRING_PLAIN, &len);

	inbox_job_add(job, INBOX_ADMIN, clock_wall_ms(), txt, len);
	json_object_put(op);
	if (inbox_submit(a->ib, job, no_op_done, NULL) != NERR_OK)
		inbox_job_free(job);
}

/* POST /v1/feedback/email: nudge's bounce/complaint JSON or SES via SNS.
 * Hard bounces and complaints suppress the address; soft bounces count. */
static void feedback_email(struct api *a, struct http_req *req)
{
	struct feedback_list l;
	struct nerr_msg msg = {"", ""};
	size_t len, suppressed = 0;
	const char *body = http_req_body(req, &len);
	enum nerr rc;
	char out[160];

	feedback_list_init(&l);
	rc = feedback_parse_email(body, len, &l, &msg);
	if (rc) {
		feedback_list_fini(&l);
		return reply_error(a, req, ROUTE_FEEDBACK, rc == NERR_TOOBIG ? 413 : 400,
				   rc == NERR_TOOBIG ? "too_large" : "invalid", msg.field,
				   msg.message);
	}
	if (l.source == FEEDBACK_SRC_SNS_SUBSCRIBE)
		log_warn("api",
			 "msg=\"SNS subscription needs confirming: open the URL\" url=%s "
			 "topic=%s",
			 l.subscribe_url, l.topic_arn);
	for (size_t i = 0; i < l.n; i++) {
		struct json_object *op = json_object_new_object();

		json_object_object_add(op, "op", json_object_new_string("bounce"));
		json_object_object_add(op, "channel", json_object_new_string("email"));
		json_object_object_add(op, "address",
				       json_object_new_string(l.items[i].address));
		json_object_object_add(
			op, "kind",
			json_object_new_string(feedback_kind_str(l.items[i].kind)));
		submit_quiet_op(a, op);
		suppressed += l.items[i].kind != FEEDBACK_SOFT_BOUNCE;
	}
	snprintf(out, sizeof(out), "{\"accepted\":%zu,\"suppressing\":%zu}", l.n,
		 suppressed);
	feedback_list_fini(&l);
	reply_json(a, req, ROUTE_FEEDBACK, 200, out);
}

/* POST /v1/feedback/sms: a Twilio status callback form. */
static void feedback_sms(struct api *a, struct http_req *req)
{
	struct feedback_sms fb;
	struct nerr_msg msg = {"", ""};
	size_t len;
	const char *body = http_req_body(req, &len);
	struct json_object *op;
	enum nerr rc = feedback_parse_sms(body, len, &fb, &msg);

	if (rc)
		return reply_error(a, req, ROUTE_FEEDBACK, rc == NERR_TOOBIG ? 413 : 400,
				   rc == NERR_TOOBIG ? "too_large" : "invalid", msg.field,
				   msg.message);
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("sms_status"));
	json_object_object_add(op, "sid", json_object_new_string(fb.provider_id));
	json_object_object_add(
		op, "status", json_object_new_string(feedback_sms_status_str(fb.status)));
	json_object_object_add(op, "error_code", json_object_new_int(fb.error_code));
	submit_quiet_op(a, op);
	reply_json(a, req, ROUTE_FEEDBACK, 200, "{\"accepted\":1}");
}

static void handle_feedback(struct api *a, struct http_req *req, const char *method)
{
	const char *path = http_req_path(req);

	if (strcmp(path, "/v1/feedback/email") && strcmp(path, "/v1/feedback/sms"))
		return reply_error(a, req, ROUTE_FEEDBACK, 404, "not_found", "path",
				   "no such route");
	if (strcmp(method, "POST"))
		return method_not_allowed(a, req, ROUTE_FEEDBACK, "POST");
	if (!feedback_authorized(a, req))
		return reply_error(
			a, req, ROUTE_FEEDBACK, 401, "unauthorized", "key",
			"the feedback key (?key=) or the admin key is required");
	if (strcmp(path, "/v1/feedback/email") == 0)
		return feedback_email(a, req);
	feedback_sms(a, req);
}

/* ---------------------------------------------------------- rules (admin) */

/* /v1/rules/{kind}[/{id}]: caps, quiet-hours, entry-caps, throttles. */
static void handle_rules(struct api *a, struct http_req *req, const char *method)
{
	const char *rest = http_req_path(req) + strlen("/v1/rules/");
	const char *slash = strchr(rest, '/');
	char kind[32], id[80];
	struct json_object *out = NULL, *op, *body;
	struct nerr_msg msg = {"", ""};
	enum nerr rc;

	if ((slash ? (size_t)(slash - rest) : strlen(rest)) >= sizeof(kind))
		return reply_error(a, req, ROUTE_RULES, 404, "not_found", "kind",
				   "no such rule kind");
	snprintf(kind, sizeof(kind), "%.*s",
		 (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (strcmp(kind, GOVERN_KIND_CAPS) && strcmp(kind, GOVERN_KIND_QUIET_HOURS) &&
	    strcmp(kind, GOVERN_KIND_ENTRY_CAPS) && strcmp(kind, GOVERN_KIND_THROTTLES))
		return reply_error(a, req, ROUTE_RULES, 404, "not_found", "kind",
				   "kinds: caps, quiet-hours, entry-caps, throttles");
	if (!slash || !slash[1]) {
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_RULES, "GET");
		rc = govern_rule_list(a->s, kind, &out);
		if (rc)
			return reply_error(a, req, ROUTE_RULES, 500, "internal", NULL,
					   "cannot list rules");
		reply_json(a, req, ROUTE_RULES, 200,
			   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
		json_object_put(out);
		return;
	}
	snprintf(id, sizeof(id), "%.79s", slash + 1);
	if (!id_valid(id, 64))
		return reply_error(a, req, ROUTE_RULES, 400, "invalid", "id",
				   "a rule id is 1 to 64 of [A-Za-z0-9_-]");
	if (strcmp(method, "GET") == 0) {
		rc = govern_rule_get(a->s, kind, id, &out);
		if (rc)
			return reply_error(a, req, ROUTE_RULES, 404, "not_found", "id",
					   "no such rule");
		reply_json(a, req, ROUTE_RULES, 200,
			   json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
		json_object_put(out);
		return;
	}
	op = json_object_new_object();
	json_object_object_add(op, "kind", json_object_new_string(kind));
	json_object_object_add(op, "id", json_object_new_string(id));
	if (strcmp(method, "DELETE") == 0) {
		json_object_object_add(op, "op", json_object_new_string("rule_delete"));
		return submit_admin(a, req, ROUTE_RULES, op);
	}
	if (strcmp(method, "PUT")) {
		json_object_put(op);
		return method_not_allowed(a, req, ROUTE_RULES, "GET, PUT, DELETE");
	}
	body = admin_body(a, req, ROUTE_RULES);
	if (!body) {
		json_object_put(op);
		return;
	}
	if (govern_rule_check(kind, id, body, &msg) != NERR_OK) {
		json_object_put(body);
		json_object_put(op);
		return reply_error(a, req, ROUTE_RULES, 400, "invalid", msg.field,
				   msg.message);
	}
	json_object_object_add(op, "op", json_object_new_string("rule_put"));
	json_object_object_add(op, "doc", body);
	submit_admin(a, req, ROUTE_RULES, op);
}

struct import_ctx {
	struct json_object *items;
};

static void import_row(void *ud, const char *channel, const char *address,
		       const char *reason)
{
	struct import_ctx *ic = ud;
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "channel", json_object_new_string(channel));
	json_object_object_add(o, "address", json_object_new_string(address));
	json_object_object_add(o, "reason", json_object_new_string(reason));
	json_object_array_add(ic->items, o);
}

/* POST /v1/suppression/import: CSV (text/csv) or NDJSON (application/x-ndjson);
 * ?channel= gives the default channel. Applied in one engine batch. */
static void suppression_import(struct api *a, struct http_req *req)
{
	const char *ct = http_req_header(req, "Content-Type");
	char q[256], channel[16] = "";
	const char *query = http_req_query(req);
	size_t len;
	const char *body = http_req_body(req, &len);
	struct import_ctx ic = {json_object_new_array()};
	struct json_object *errors = NULL, *op;
	unsigned accepted = 0;
	bool ndjson;
	enum nerr rc;

	if (!ct || (strncasecmp(ct, "text/csv", 8) &&
		    strncasecmp(ct, "application/x-ndjson", 20))) {
		json_object_put(ic.items);
		return reply_error(a, req, ROUTE_SUPPRESSION, 415,
				   "unsupported_media_type", "Content-Type",
				   "send text/csv or application/x-ndjson");
	}
	ndjson = strncasecmp(ct, "application/x-ndjson", 20) == 0;
	snprintf(q, sizeof(q), "%s", query);
	if (strncmp(q, "channel=", 8) == 0)
		snprintf(channel, sizeof(channel), "%.*s", (int)strcspn(q + 8, "&"),
			 q + 8);
	rc = govern_import_parse(body, len, ndjson, channel[0] ? channel : NULL,
				 import_row, &ic, &accepted, &errors);
	if (rc) {
		json_object_put(ic.items);
		json_object_put(errors);
		return reply_error(
			a, req, ROUTE_SUPPRESSION, rc == NERR_TOOBIG ? 413 : 400,
			rc == NERR_TOOBIG ? "too_large" : "invalid", "body",
			rc == NERR_TOOBIG
				? "too many rows in one import"
				: "the header needs an address column (and a valid "
				  "channel)");
	}
	{
		struct json_object *res = json_object_new_object();

		json_object_object_add(res, "accepted", json_object_new_int64(accepted));
		json_object_object_add(res, "errors",
				       errors ? errors : json_object_new_array());
		op = json_object_new_object();
		json_object_object_add(op, "op", json_object_new_string("suppress_many"));
		json_object_object_add(op, "items", ic.items);
		/* Answer with the parse summary once the batch is applied. */
		struct inbox_job *job = inbox_job_new();
		size_t ol;
		const char *txt = json_object_to_json_string_length(
			op, JSON_C_TO_STRING_PLAIN, &ol);

		inbox_job_add(job, INBOX_ADMIN, clock_wall_ms(), txt, ol);
		json_object_put(op);
		submit(a, req, ROUTE_SUPPRESSION, job,
		       xstrdup(json_object_to_json_string_ext(res,
							      JSON_C_TO_STRING_PLAIN)),
		       true);
		json_object_put(res);
	}
}

static void handle_metrics(struct api *a, struct http_req *req)
{
	struct buf out;

	buf_init(&out, 0);
	metrics_render(&out);
	reply(a, req, ROUTE_METRICS, 200, "text/plain; version=0.0.4", buf_str(&out),
	      out.len, NULL);
	buf_fini(&out);
}

static void handle_healthz(struct api *a, struct http_req *req)
{
	bool ok = !inbox_broken(a->ib) && !(a->e && engine_broken(a->e));

	if (ok)
		reply_json(a, req, ROUTE_HEALTHZ, 200, "{\"status\":\"ok\"}");
	else
		reply_json(
			a, req, ROUTE_HEALTHZ, 503,
			"{\"status\":\"failing\",\"reason\":\"storage write failed\"}");
}

static void method_not_allowed(struct api *a, struct http_req *req, enum route r,
			       const char *allow)
{
	char hdr[64], msg[96];

	snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
	snprintf(msg, sizeof(msg),
		 "{\"error\":{\"code\":\"method_not_allowed\",\"field\":"
		 "\"method\",\"message\":\"allowed: %s\"}}",
		 allow);
	reply(a, req, r, 405, "application/json", msg, strlen(msg), hdr);
}

/* ------------------------------------ audiences, computed, business events */

static void reply_obj(struct api *a, struct http_req *req, enum route r, int status,
		      struct json_object *o)
{
	reply_json(a, req, r, status,
		   json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

/* Reads ?after=&limit= (members paging). */
static void paging(struct http_req *req, uint64_t *after, unsigned *limit)
{
	char q[256];

	*after = 0;
	*limit = 100;
	snprintf(q, sizeof(q), "%s", http_req_query(req));
	for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv;
	     kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');

		if (!eq)
			continue;
		*eq = '\0';
		if (!strcmp(kv, "after"))
			*after = strtoull(eq + 1, NULL, 10);
		else if (!strcmp(kv, "limit"))
			*limit = (unsigned)strtoul(eq + 1, NULL, 10);
	}
	if (*limit == 0 || *limit > 1000)
		*limit = 100;
}

/*
 * /v1/audiences[/{id}[/members]], /v1/computed[/{id}],
 * /v1/settings/indexed-traits: reads from committed state, changes through the
 * engine (like journeys).
 */
static void handle_audiences(struct api *a, struct http_req *req, const char *method,
			     bool computed)
{
	const char *path = http_req_path(req);
	const char *rest =
		path + (computed ? strlen("/v1/computed") : strlen("/v1/audiences"));
	char id[80];
	bool members = false;
	struct json_object *o, *body, *op;
	struct nerr_msg msg = {"", ""};
	const char *slash;

	if (*rest == '\0' || strcmp(rest, "/") == 0) {
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_AUDIENCES, "GET");
		return reply_obj(a, req, ROUTE_AUDIENCES, 200,
				 computed ? aud_list_computed(a->s)
					  : aud_list_audiences(a->s));
	}
	rest++;
	slash = strchr(rest, '/');
	if (slash && !computed && strcmp(slash, "/members") == 0)
		members = true;
	else if (slash)
		return reply_error(a, req, ROUTE_AUDIENCES, 404, "not_found", "path",
				   "no such route");
	snprintf(id, sizeof(id), "%.*s",
		 (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (!id_valid(id, 64))
		return reply_error(a, req, ROUTE_AUDIENCES, 400, "invalid", "id",
				   "an id is 1 to 64 of [A-Za-z0-9_-]");
	if (members) {
		uint64_t after;
		unsigned limit;

		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_AUDIENCES, "GET");
		paging(req, &after, &limit);
		o = aud_members(a->s, id, after, limit);
		if (!o)
			return reply_error(a, req, ROUTE_AUDIENCES, 404, "not_found",
					   "id", "no such audience");
		return reply_obj(a, req, ROUTE_AUDIENCES, 200, o);
	}
	if (strcmp(method, "GET") == 0) {
		o = computed ? aud_get_computed(a->s, id) : aud_get_audience(a->s, id);
		if (!o)
			return reply_error(a, req, ROUTE_AUDIENCES, 404, "not_found",
					   "id",
					   computed ? "no such computed attribute"
						    : "no such audience");
		return reply_obj(a, req, ROUTE_AUDIENCES, 200, o);
	}
	op = json_object_new_object();
	json_object_object_add(op, "id", json_object_new_string(id));
	if (strcmp(method, "DELETE") == 0) {
		json_object_object_add(
			op, "op",
			json_object_new_string(computed ? "computed_delete"
							: "audience_delete"));
		return submit_admin(a, req, ROUTE_AUDIENCES, op);
	}
	if (strcmp(method, "PUT")) {
		json_object_put(op);
		return method_not_allowed(a, req, ROUTE_AUDIENCES, "GET, PUT, DELETE");
	}
	body = admin_body(a, req, ROUTE_AUDIENCES);
	if (!body) {
		json_object_put(op);
		return;
	}
	if ((computed ? aud_check_computed(id, body, a->journey_env, &msg)
		      : aud_check_audience(body, a->journey_env, &msg)) != NERR_OK) {
		json_object_put(body);
		json_object_put(op);
		return reply_error(a, req, ROUTE_AUDIENCES, 400, "invalid", msg.field,
				   msg.message);
	}
	json_object_object_add(
		op, "op",
		json_object_new_string(computed ? "computed_put" : "audience_put"));
	json_object_object_add(op, "doc", body);
	submit_admin(a, req, ROUTE_AUDIENCES, op);
}

static void handle_indexed(struct api *a, struct http_req *req, const char *method)
{
	struct json_object *body, *op;
	struct nerr_msg msg = {"", ""};

	if (strcmp(method, "GET") == 0)
		return reply_obj(a, req, ROUTE_AUDIENCES, 200, aud_get_settings(a->s));
	if (strcmp(method, "PUT"))
		return method_not_allowed(a, req, ROUTE_AUDIENCES, "GET, PUT");
	body = admin_body(a, req, ROUTE_AUDIENCES);
	if (!body)
		return;
	if (aud_check_indexed(body, &msg) != NERR_OK) {
		json_object_put(body);
		return reply_error(a, req, ROUTE_AUDIENCES, 400, "invalid", msg.field,
				   msg.message);
	}
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("indexed_put"));
	json_object_object_add(op, "doc", body);
	submit_admin(a, req, ROUTE_AUDIENCES, op);
}

/* POST /v1/business-events (write key); GET /v1/business-events/{id} (admin). */
static void handle_business(struct api *a, struct http_req *req, const char *method)
{
	const char *path = http_req_path(req),
		   *rest = path + strlen("/v1/business-events");
	struct nerr_msg msg = {"", ""};
	struct json_object *body = NULL, *op, *resp;
	size_t len;
	const char *text;
	int auth;
	enum nerr rc;

	if (*rest == '/' && rest[1]) {
		char id[256];

		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_BUSINESS, "GET");
		if (!check_bearer(req, a->cfg->admin_key))
			return reply_error(a, req, ROUTE_BUSINESS, 401, "unauthorized",
					   "Authorization",
					   "the admin key is required (Bearer)");
		if (strlen(rest + 1) >= sizeof(id))
			return reply_error(a, req, ROUTE_BUSINESS, 404, "not_found", "id",
					   "no such business event");
		http_url_decode(rest + 1, strlen(rest + 1), id);
		resp = aud_get_business(a->s, id);
		if (!resp)
			return reply_error(a, req, ROUTE_BUSINESS, 404, "not_found", "id",
					   "no such business event");
		return reply_obj(a, req, ROUTE_BUSINESS, 200, resp);
	}
	if (*rest && strcmp(rest, "/"))
		return reply_error(a, req, ROUTE_BUSINESS, 404, "not_found", "path",
				   "no such route");
	if (strcmp(method, "POST"))
		return method_not_allowed(a, req, ROUTE_BUSINESS, "POST");
	auth = check_basic(req, a->cfg->write_key);
	if (auth == 0)
		return reply_error(a, req, ROUTE_BUSINESS, 401, "unauthorized",
				   "Authorization", "the write key is not valid");
	if (!json_content_type(req))
		return reply_error(a, req, ROUTE_BUSINESS, 415, "unsupported_media_type",
				   "Content-Type",
				   "send JSON with Content-Type: application/json");
	text = http_req_body(req, &len);
	rc = segment_parse_json(text, len, &a->lim, &body, &msg);
	if (rc == NERR_OK && !json_object_is_type(body, json_type_object)) {
		rc = NERR_INVAL;
		nerr_set(&msg, NERR_INVAL, "", "the body must be a JSON object");
	}
	if (rc == NERR_OK && auth < 0) {
		const char *wk = segment_body_write_key(body);

		if (!wk || !key_equal(wk, strlen(wk), a->cfg->write_key)) {
			json_object_put(body);
			return reply_error(a, req, ROUTE_BUSINESS, 401, "unauthorized",
					   wk ? "writeKey" : "Authorization",
					   "a valid write key is required");
		}
	}
	if (rc == NERR_OK)
		rc = aud_check_business(body, api_now(a), &msg);
	if (rc) {
		json_object_put(body);
		if (auth < 0)
			return reply_error(a, req, ROUTE_BUSINESS, 401, "unauthorized",
					   "Authorization", "a write key is required");
		return reply_error(a, req, ROUTE_BUSINESS, rc == NERR_TOOBIG ? 413 : 400,
				   status_code_name(rc), msg.field, msg.message);
	}
	resp = json_object_new_object();
	json_object_object_add(resp, "success", json_object_new_boolean(1));
	json_object_object_add(resp, "id",
			       json_object_new_string(json_object_get_string(
				       json_object_object_get(body, "messageId"))));
	op = json_object_new_object();
	json_object_object_add(op, "op", json_object_new_string("business_event"));
	json_object_object_add(op, "doc", body);
	{
		struct inbox_job *job = inbox_job_new();
		size_t ol;
		const char *txt = json_object_to_json_string_length(
			op, JSON_C_TO_STRING_PLAIN, &ol);

		inbox_job_add(job, INBOX_ADMIN, clock_wall_ms(), txt, ol);
		submit(a, req, ROUTE_BUSINESS, job,
		       xstrdup(json_object_to_json_string_ext(resp,
							      JSON_C_TO_STRING_PLAIN)),
		       false);
	}
	json_object_put(op);
	json_object_put(resp);
}

void api_handle(void *ud, struct http_req *req)
{
	static const char *const ingest[] = {"track", "identify", "page", "screen",
					     "alias", "group",	  "batch"};
	struct api *a = ud;
	const char *path = http_req_path(req), *method = http_req_method(req);

	if (strcmp(path, "/healthz") == 0) {
		if (strcmp(method, "GET") && strcmp(method, "HEAD"))
			return method_not_allowed(a, req, ROUTE_HEALTHZ, "GET, HEAD");
		return handle_healthz(a, req);
	}
	if (strcmp(path, "/metrics") == 0) {
		if (strcmp(method, "GET"))
			return method_not_allowed(a, req, ROUTE_METRICS, "GET");
		if (!check_bearer(req, a->cfg->admin_key))
			return reply_error(a, req, ROUTE_METRICS, 401, "unauthorized",
					   "Authorization",
					   "the admin key is required (Bearer)");
		return handle_metrics(a, req);
	}
	if (strncmp(path, "/t/", 3) == 0)
		return handle_tracking(a, req, method);
	if (strncmp(path, "/v1/", 4) == 0) {
		for (unsigned i = 0; i < sizeof(ingest) / sizeof(ingest[0]); i++) {
			if (strcmp(path + 4, ingest[i]) != 0)
				continue;
			if (strcmp(method, "POST"))
				return method_not_allowed(a, req, (enum route)i, "POST");
			return handle_ingest(a, req, (enum route)i);
		}
		bool journeys = strncmp(path, "/v1/journeys", 12) == 0 &&
				(path[12] == '\0' || path[12] == '/');
		bool templates = strncmp(path, "/v1/templates/", 14) == 0;
		bool clock = a->test_clock && strcmp(path, "/v1/debug/clock") == 0;

		if (strncmp(path, "/v1/feedback/", 13) == 0)
			return handle_feedback(a, req, method);
		if (strncmp(path, "/v1/business-events", 19) == 0 &&
		    (path[19] == '\0' || path[19] == '/'))
			return handle_business(a, req, method);
		bool auds = strncmp(path, "/v1/audiences", 13) == 0 &&
			    (path[13] == '\0' || path[13] == '/');
		bool comp = strncmp(path, "/v1/computed", 12) == 0 &&
			    (path[12] == '\0' || path[12] == '/');
		bool idx = strcmp(path, "/v1/settings/indexed-traits") == 0;
		if (auds || comp || idx) {
			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, ROUTE_AUDIENCES, 401,
						   "unauthorized", "Authorization",
						   "the admin key is required (Bearer)");
			if (idx)
				return handle_indexed(a, req, method);
			return handle_audiences(a, req, method, comp);
		}
		if (strncmp(path, "/v1/rules/", 10) == 0) {
			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, ROUTE_RULES, 401,
						   "unauthorized", "Authorization",
						   "the admin key is required (Bearer)");
			return handle_rules(a, req, method);
		}
		if (strncmp(path, "/v1/reports/", 12) == 0) {
			struct buf out;
			const char *ct;
			int st;

			if (strcmp(method, "GET"))
				return method_not_allowed(a, req, ROUTE_REPORTS, "GET");
			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, ROUTE_REPORTS, 401,
						   "unauthorized", "Authorization",
						   "the admin key is required (Bearer)");
			buf_init(&out, 0);
			st = report_http(a->s, path + 12, http_req_query(req),
					 http_req_header(req, "Accept"), &out, &ct);
			reply(a, req, ROUTE_REPORTS, st, ct, buf_str(&out), out.len,
			      NULL);
			buf_fini(&out);
			return;
		}
		if (strncmp(path, "/v1/suppression", 15) == 0 &&
		    (path[15] == '\0' || path[15] == '/')) {
			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, ROUTE_SUPPRESSION, 401,
						   "unauthorized", "Authorization",
						   "the admin key is required (Bearer)");
			return handle_suppression(a, req, method);
		}

		if (journeys || templates || clock) {
			enum route r = journeys	   ? ROUTE_JOURNEYS
				       : templates ? ROUTE_TEMPLATES
						   : ROUTE_DEBUG;

			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, r, 401, "unauthorized",
						   "Authorization",
						   "the admin key is required (Bearer)");
			if (journeys)
				return handle_journeys(a, req, method);
			if (templates)
				return handle_templates(a, req, method);
			if (strcmp(method, "POST"))
				return method_not_allowed(a, req, ROUTE_DEBUG, "POST");
			return handle_clock(a, req);
		}
		if (strncmp(path, "/v1/profiles/", 13) == 0) {
			if (strcmp(method, "GET") && strcmp(method, "DELETE") &&
			    strcmp(method, "PUT"))
				return method_not_allowed(a, req, ROUTE_PROFILES,
							  "GET, PUT, DELETE");
			if (!check_bearer(req, a->cfg->admin_key))
				return reply_error(a, req, ROUTE_PROFILES, 401,
						   "unauthorized", "Authorization",
						   "the admin key is required (Bearer)");
			return handle_profile(a, req, method);
		}
	}
	reply_error(a, req, ROUTE_OTHER, 404, "not_found", "path", "no such route");
}

struct api *api_new(const struct config *cfg, struct store *s, struct inbox *ib)
{
	struct api *a = xcalloc(1, sizeof(*a));

	a->cfg = cfg;
	a->s = s;
	a->ib = ib;
	a->journey_env = journey_env_new();
	segment_limits_default(&a->lim);
	a->lim.max_depth = (int)cfg->max_json_depth;
	a->lim.max_event_bytes = (size_t)cfg->max_event_bytes;
	a->lim.max_batch_items = (unsigned)cfg->max_batch_items;
	for (int r = 0; r < ROUTE__COUNT; r++) {
		for (unsigned i = 0; i <= NSTATUS; i++) {
			struct buf l;

			buf_init(&l, 0);
			if (i < NSTATUS)
				buf_printf(&l, "route=\"%s\",status=\"%d\"",
					   route_names[r], counted_status[i]);
			else
				buf_printf(&l, "route=\"%s\",status=\"other\"",
					   route_names[r]);
			a->req_labels[r][i] = buf_take(&l);
			a->req_metrics[r][i] = (struct metric){
				.name = "nudge_http_requests_total",
				.help = "HTTP requests answered by the API, by route and "
					"status.",
				.labels = a->req_labels[r][i],
				.type = METRIC_COUNTER,
			};
			metrics_register(&a->req_metrics[r][i]);
		}
	}
	a->m_events = (struct metric){.name = "nudge_events_accepted_total",
				      .help = "Events accepted for ingestion.",
				      .type = METRIC_COUNTER};
	a->m_rejected = (struct metric){.name = "nudge_events_rejected_total",
					.help = "Events rejected by validation.",
					.type = METRIC_COUNTER};
	a->m_latency =
		(struct metric){.name = "nudge_http_request_seconds",
				.help = "Time from a complete request to its answer.",
				.type = METRIC_HISTOGRAM,
				.bounds = metrics_latency_seconds_bounds,
				.nbounds = metrics_latency_seconds_nbounds};
	metrics_register(&a->m_events);
	metrics_register(&a->m_rejected);
	metrics_register(&a->m_latency);
	report_register_metrics(s);
	return a;
}

void api_set_engine(struct api *a, struct engine *e)
{
	a->e = e;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	expr_env_free(a->journey_env);
	for (int r = 0; r < ROUTE__COUNT; r++)
		for (unsigned i = 0; i <= NSTATUS; i++)
			free(a->req_labels[r][i]);
	free(a);
}
