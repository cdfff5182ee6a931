/*
 * deliver.c -- the delivery thread: libcurl multi on its own libuv loop.
 *
 * Design: the thread owns a uv loop, a curl multi handle and every job; other
 * threads only touch the incoming queue (mutex) and wake the loop with a
 * uv_async. curl is driven by the multi-socket API: curl tells us which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll per socket) and
 * when to call it back (CURLMOPT_TIMERFUNCTION -> one uv_timer), and we call
 * curl_multi_socket_action() when either fires. Connections stay in the
 * multi's pool between transfers, so consecutive requests to one receiver
 * reuse a kept-alive connection.
 *
 * Scheduling: jobs wait in a FIFO per destination ("host", keyed by
 * scheme://host:port for webhooks, and one key per channel for email, SMS
 * and push). A host with waiting jobs and fewer than its limit of transfers
 * running (per_host_concurrency; smtp.connections for the relay) sits in a
 * round-robin list of runnable hosts; pump() starts jobs from that list while
 * fewer than max_concurrency transfers run. So a slow receiver fills only its
 * own slots and every other receiver keeps its turn. A channel with a rate
 * limit takes a token per start from a bucket holding one second's worth;
 * when it is empty the host waits on the throttled list until rate_timer
 * says a token is due.
 *
 * Life of a job: submitted (incoming queue) -> accepted on the thread
 * (checked; a malformed request ends here as PERMFAIL) -> queued on its host
 * -> attempt running -> on a temporary failure with retries left, a uv_timer
 * holds it for the backoff delay and it queues again; otherwise its one final
 * outcome is reported and it is freed. Backoff is exponential with full
 * jitter: attempt n waits a uniform random time in [0, min(cap, base*2^(n-1))],
 * at least the receiver's Retry-After (429, 503) up to the cap.
 *
 * Outcomes (webhooks): 2xx OK; 429 and 5xx, timeouts and network errors
 * TEMPFAIL; other statuses (4xx, and 3xx since redirects are not followed)
 * PERMFAIL; a destination refused by the SSRF guard (ssrf.c), checked in
 * curl's open-socket callback on the address about to be connected, PERMFAIL
 * "destination not allowed". Email, SMS and push are judged by their
 * transports (smtp.c, sms.c, push.c: deliver_*_verdict), which also say when
 * the recipient itself is bad; their messages are built once when accepted
 * (deliver_*_prepare) and their endpoints, from the configuration, are not
 * guarded.
 *
 * Stopping abandons queued, running and waiting jobs without reporting them:
 * the engine still has them pending in its outbox and resends them after a
 * restart with the same Idempotency-Key (invariant 4, at-least-once).
 *
 * Threading: everything below the incoming queue is delivery-thread only.
 */
#include "deliver/deliver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"
#include "report/metrics.h"

#ifndef NUDGE_VERSION
#define NUDGE_VERSION "0.1.0"
#endif

struct host;

struct job {
	struct job *next;	    /* incoming queue, then its host's queue */
	struct job *lnext, **lprev; /* every live job, for stopping */
	struct deliver *d;
	struct deliver_request *req; /* owned */
	struct deliver_url url;
	struct host *host; /* holds a reference while the job lives */
	CURL *easy;	   /* during an attempt */
	struct curl_slist *hdrs;
	struct buf resp;
	bool truncated;
	unsigned attempts;
	unsigned connections;	     /* new ones, over all attempts */
	unsigned nrefused, nallowed; /* connect addresses judged this attempt */
	uint64_t submit_ns;
	uint64_t attempt_ns;	  /* when the current attempt started */
	uv_timer_t timer;	  /* backoff */
	struct deliver_prep prep; /* email, sms, push: the bytes every attempt sends */
	char errbuf[CURL_ERROR_SIZE];
};

/* One destination. Owned by the hash table; freed when no job refers to it. */
struct host {
	struct host *hnext; /* hash chain */
	struct host *rnext; /* runnable list */
	char *origin;
	unsigned refs;
	unsigned active;
	unsigned limit; /* transfers at once: smtp.connections for the relay,
			   per_host_concurrency for the rest */
	struct job *qhead, **qtail;
	bool runnable;
	/* rate limit (email, sms, push): a token bucket holding up to one
	 * second's worth; a host out of tokens waits on the throttled list */
	double rate_per_s; /* 0: none */
	double tokens;
	uint64_t refill_ns;
	bool throttled;
	struct host *tnext;
};

/* Owned by the caller of deliver_start(). */
struct deliver {
	struct deliver_config cfg;
	char *user_agent;
	struct deliver_allow allow;
	struct deliver_channels ch;
	deliver_outcome_fn fn;
	void *cb_ud;

	pthread_t thread;
	bool thread_started;
	bool joined;
	pthread_mutex_t mu;
	struct job *in_head, **in_tail; /* guarded by mu */
	bool stopping;			/* guarded by mu */
	_Atomic unsigned pending;

	/* delivery thread only */
	uv_loop_t loop;
	uv_async_t async;
	uv_timer_t curl_timer;
	uv_timer_t rate_timer; /* wakes the throttled hosts */
	struct host *throttled;
	CURLM *multi;
	struct host **buckets;
	unsigned nbuckets, nhosts;
	struct host *rhead, **rtail;
	unsigned active;
	struct job *live;
	uint64_t rng;
};

struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct deliver *d;
};

static void pump(struct deliver *d);

static struct metric m_outcome[3] = {
	{.name = "nudge_webhook_outcomes_total",
	 .help = "Final webhook outcomes, by result.",
	 .labels = "result=\"ok\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_webhook_outcomes_total",
	 .help = "Final webhook outcomes, by result.",
	 .labels = "result=\"tempfail\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_webhook_outcomes_total",
	 .help = "Final webhook outcomes, by result.",
	 .labels = "result=\"permfail\"",
	 .type = METRIC_COUNTER},
};
static struct metric m_attempts = {
	.name = "nudge_webhook_attempts_total",
	.help = "HTTP attempts made, retries included.",
	.labels = "",
	.type = METRIC_COUNTER,
};
static struct metric m_retries = {
	.name = "nudge_webhook_retries_total",
	.help = "Temporary failures scheduled for another attempt.",
	.labels = "",
	.type = METRIC_COUNTER,
};
static struct metric m_refused = {
	.name = "nudge_webhook_destinations_refused_total",
	.help = "Connect addresses refused by the SSRF guard.",
	.labels = "",
	.type = METRIC_COUNTER,
};
static struct metric m_connects = {
	.name = "nudge_webhook_connections_total",
	.help = "New connections opened (the rest of the attempts reused one).",
	.labels = "",
	.type = METRIC_COUNTER,
};
static struct metric m_in_flight = {
	.name = "nudge_webhook_in_flight",
	.help = "Webhook attempts running now.",
	.labels = "",
	.type = METRIC_GAUGE,
};
static struct metric m_pending = {
	.name = "nudge_webhook_pending",
	.help = "Webhooks submitted and not yet finally reported.",
	.labels = "",
	.type = METRIC_GAUGE,
};
static struct metric m_latency = {
	.name = "nudge_webhook_attempt_seconds",
	.help = "Duration of one webhook attempt.",
	.labels = "",
	.type = METRIC_HISTOGRAM,
	.bounds = metrics_latency_seconds_bounds,
};

/* email, sms, push outcomes: [kind - 1][result] */
#define CHANNEL_METRIC(ch, res)                                                          \
	{                                                                                \
		.name = "nudge_channel_outcomes_total",                                  \
		.help = "Final email, SMS and push outcomes, by channel and result.",    \
		.labels = "channel=\"" ch "\",result=\"" res "\"",                       \
		.type = METRIC_COUNTER                                                   \
	}
static struct metric m_channel[3][3] = {
	{CHANNEL_METRIC("email", "ok"), CHANNEL_METRIC("email", "tempfail"),
	 CHANNEL_METRIC("email", "permfail")},
	{CHANNEL_METRIC("sms", "ok"), CHANNEL_METRIC("sms", "tempfail"),
	 CHANNEL_METRIC("sms", "permfail")},
	{CHANNEL_METRIC("push", "ok"), CHANNEL_METRIC("push", "tempfail"),
	 CHANNEL_METRIC("push", "permfail")},
};
static struct metric m_channel_attempts[3] = {
	{.name = "nudge_channel_attempts_total",
	 .help = "Email, SMS and push attempts made, retries included.",
	 .labels = "channel=\"email\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_channel_attempts_total",
	 .help = "Email, SMS and push attempts made, retries included.",
	 .labels = "channel=\"sms\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_channel_attempts_total",
	 .help = "Email, SMS and push attempts made, retries included.",
	 .labels = "channel=\"push\"",
	 .type = METRIC_COUNTER},
};
static struct metric m_channel_connects[3] = {
	{.name = "nudge_channel_connections_total",
	 .help = "New connections opened to the relay or provider.",
	 .labels = "channel=\"email\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_channel_connections_total",
	 .help = "New connections opened to the relay or provider.",
	 .labels = "channel=\"sms\"",
	 .type = METRIC_COUNTER},
	{.name = "nudge_channel_connections_total",
	 .help = "New connections opened to the relay or provider.",
	 .labels = "channel=\"push\"",
	 .type = METRIC_COUNTER},
};

static void metrics_setup(void)
{
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < 3; i++)
			metrics_register(&m_channel[k][i]);
		metrics_register(&m_channel_attempts[k]);
		metrics_register(&m_channel_connects[k]);
	}
	for (int i = 0; i < 3; i++)
		metrics_register(&m_outcome[i]);
	metrics_register(&m_attempts);
	metrics_register(&m_retries);
	metrics_register(&m_refused);
	metrics_register(&m_connects);
	metrics_register(&m_in_flight);
	metrics_register(&m_pending);
	m_latency.nbounds = metrics_latency_seconds_nbounds;
	metrics_register(&m_latency);
}

const char *deliver_result_str(enum deliver_result r)
{
	switch (r) {
	case DELIVER_OK:
		return "ok";
	case DELIVER_TEMPFAIL:
		return "tempfail";
	case DELIVER_PERMFAIL:
		return "permfail";
	}
	return "?";
}

const char *deliver_kind_str(enum deliver_kind k)
{
	switch (k) {
	case DELIVER_WEBHOOK:
		return "webhook";
	case DELIVER_EMAIL:
		return "email";
	case DELIVER_SMS:
		return "sms";
	case DELIVER_PUSH:
		return "push";
	}
	return "?";
}

void deliver_config_default(struct deliver_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->per_host_concurrency = 16;
	cfg->max_concurrency = 256;
	cfg->max_response_bytes = 64 * 1024;
	cfg->user_agent = "nudge/" NUDGE_VERSION;
	cfg->backoff_base_ms = 500;
	cfg->backoff_cap_ms = 60000;
	cfg->default_timeout_ms = 10000;
}

void deliver_request_free(struct deliver_request *req)
{
	if (!req)
		return;
	free(req->envelope_id);
	free(req->method);
	free(req->url);
	for (unsigned i = 0; req->headers && i < req->nheaders; i++) {
		free(req->headers[i].name);
		free(req->headers[i].value);
	}
	free(req->headers);
	free(req->body);
	free(req->secret);
	if (req->email) {
		struct deliver_email *e = req->email;
		free(e->from);
		free(e->reply_to);
		free(e->to);
		free(e->subject);
		free(e->html);
		free(e->text);
		for (unsigned i = 0; e->headers && i < e->nheaders; i++) {
			free(e->headers[i].name);
			free(e->headers[i].value);
		}
		free(e->headers);
		free(e->list_unsubscribe_url);
		free(e->list_unsubscribe_mailto);
		free(e);
	}
	if (req->sms) {
		free(req->sms->to);
		free(req->sms->body);
		free(req->sms);
	}
	if (req->push) {
		free(req->push->token);
		free(req->push->title);
		free(req->push->body);
		free(req->push->image);
		free(req->push->data_json);
		free(req->push);
	}
	free(req);
}

bool deliver_address_allowed(const struct deliver *d, const char *host, const char *addr)
{
	return deliver_allow_check_text(d ? &d->allow : NULL, host, addr);
}

/* ---- hosts ---- */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static void hosts_grow(struct deliver *d)
{
	unsigned n = d->nbuckets ? d->nbuckets * 2 : 64;
	struct host **b = xcalloc(n, sizeof(*b));
	for (unsigned i = 0; i < d->nbuckets; i++) {
		struct host *h = d->buckets[i], *next;
		for (; h; h = next) {
			next = h->hnext;
			unsigned j = (unsigned)(hash_str(h->origin) & (n - 1));
			h->hnext = b[j];
			b[j] = h;
		}
	}
	free(d->buckets);
	d->buckets = b;
	d->nbuckets = n;
}

/* Returns the host for origin, creating it, with one more reference. */
static struct host *host_ref(struct deliver *d, const char *origin, unsigned limit,
			     unsigned rate_per_s)
{
	if (d->nhosts >= d->nbuckets)
		hosts_grow(d);
	unsigned i = (unsigned)(hash_str(origin) & (d->nbuckets - 1));
	struct host *h = d->buckets[i];
	while (h && strcmp(h->origin, origin) != 0)
		h = h->hnext;
	if (!h) {
		h = xcalloc(1, sizeof(*h));
		h->origin = xstrdup(origin);
		h->limit = limit;
		h->rate_per_s = rate_per_s;
		h->tokens = rate_per_s;
		h->refill_ns = clock_mono_ns();
		h->qtail = &h->qhead;
		h->hnext = d->buckets[i];
		d->buckets[i] = h;
		d->nhosts++;
	}
	h->refs++;
	return h;
}

static void host_unref(struct deliver *d, struct host *h)
{
	ASSERT(h->refs > 0);
	if (--h->refs > 0)
		return;
	ASSERT(h->active == 0 && !h->qhead && !h->runnable);
	unsigned i = (unsigned)(hash_str(h->origin) & (d->nbuckets - 1));
	struct host **pp = &d->buckets[i];
	while (*pp != h)
		pp = &(*pp)->hnext;
	*pp = h->hnext;
	d->nhosts--;
	free(h->origin);
	free(h);
}

static void host_maybe_runnable(struct deliver *d, struct host *h)
{
	if (h->runnable || h->throttled || !h->qhead || h->active >= h->limit)
		return;
	h->runnable = true;
	h->rnext = NULL;
	*d->rtail = h;
	d->rtail = &h->rnext;
}

static void host_enqueue(struct deliver *d, struct job *job)
{
	struct host *h = job->host;
	job->next = NULL;
	*h->qtail = job;
	h->qtail = &job->next;
	host_maybe_runnable(d, h);
}

/* ---- jobs ---- */

static void job_timer_closed(uv_handle_t *handle)
{
	struct job *job = handle->data;
	deliver_url_fini(&job->url);
	deliver_prep_fini(&job->prep);
	buf_fini(&job->resp);
	deliver_request_free(job->req);
	free(job);
}

/* Frees a job that is not running; its memory goes once the timer closes. */
static void job_free(struct job *job)
{
	struct deliver *d = job->d;
	ASSERT(!job->easy);
	if (job->lprev) {
		*job->lprev = job->lnext;
		if (job->lnext)
			job->lnext->lprev = job->lprev;
		job->lprev = NULL;
	}
	if (job->host) {
		host_unref(d, job->host);
		job->host = NULL;
	}
	uv_close((uv_handle_t *)&job->timer, job_timer_closed);
}

static void report(struct job *job, enum deliver_result result, int status,
		   const char *reason, const char *provider_id, bool invalid_recipient)
{
	struct deliver *d = job->d;
	enum deliver_kind kind = job->req->kind;
	const char *origin = kind == DELIVER_WEBHOOK ? job->url.origin : job->prep.origin;
	struct deliver_outcome o = {
		.envelope_id = job->req->envelope_id,
		.result = result,
		.kind = kind,
		.http_status = status,
		.reason = reason,
		.provider_id = provider_id && provider_id[0] ? provider_id : NULL,
		.invalid_recipient = invalid_recipient,
		.response = job->req->capture ? buf_str(&job->resp) : NULL,
		.response_len = job->req->capture ? job->resp.len : 0,
		.response_truncated = job->truncated,
		.attempts = job->attempts,
		.connections = job->connections,
		.duration_ms = (int64_t)((clock_mono_ns() - job->submit_ns) / 1000000),
		.ud = job->req->ud,
	};
	if (result == DELIVER_OK)
		log_debug("deliver",
			  "envelope=%s channel=%s state=ok status=%d attempts=%u "
			  "duration_ms=%lld",
			  o.envelope_id, deliver_kind_str(kind), status, o.attempts,
			  (long long)o.duration_ms);
	else
		log_info("deliver",
			 "envelope=%s channel=%s state=%s status=%d attempts=%u "
			 "reason=\"%s\" url=%s",
			 o.envelope_id, deliver_kind_str(kind),
			 deliver_result_str(result), status, o.attempts, reason,
			 origin ? origin : "-");
	atomic_fetch_sub(&d->pending, 1);
	metrics_add(&m_pending, -1);
	if (kind == DELIVER_WEBHOOK)
		metrics_add(&m_outcome[result], 1);
	else if (kind <= DELIVER_PUSH)
		metrics_add(&m_channel[kind - 1][result], 1);
	d->fn(d->cb_ud, &o);
	job_free(job);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct job *job = ud;
	size_t len = size * n;
	/* sms and push answers are always read: they carry the outcome */
	if (!job->req->capture && job->req->kind == DELIVER_WEBHOOK)
		return len;
	size_t cap = job->d->cfg.max_response_bytes;
	size_t room = cap > job->resp.len ? cap - job->resp.len : 0;
	if (len > room) {
		/* keep what fits and end the transfer: the status is already known */
		buf_append(&job->resp, p, room);
		job->truncated = true;
		return 0;
	}
	buf_append(&job->resp, p, len);
	return len;
}

/* The SSRF guard's hook: curl asks us for each address it is about to
 * connect to, after name resolution. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose,
				 struct curl_sockaddr *a)
{
	struct job *job = clientp;
	uint8_t bytes[16];
	char text[INET6_ADDRSTRLEN] = "?";
	bool ok = false;

	if (purpose == CURLSOCKTYPE_IPCXN && a->family == AF_INET) {
		const struct sockaddr_in *sin =
			(const struct sockaddr_in *)(void *)&a->addr;
		memcpy(bytes, &sin->sin_addr, 4);
		ok = deliver_allow_check(&job->d->allow, job->url.host, AF_INET, bytes);
	} else if (purpose == CURLSOCKTYPE_IPCXN && a->family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
			(const struct sockaddr_in6 *)(void *)&a->addr;
		memcpy(bytes, &sin6->sin6_addr, 16);
		ok = deliver_allow_check(&job->d->allow, job->url.host, AF_INET6, bytes);
	}
	if (!ok) {
		if (a->family == AF_INET || a->family == AF_INET6)
			inet_ntop(a->family, bytes, text, sizeof(text));
		log_warn("deliver",
			 "envelope=%s msg=\"destination not allowed\" host=%s addr=%s",
			 job->req->envelope_id, job->url.host, text);
		job->nrefused++;
		metrics_add(&m_refused, 1);
		return CURL_SOCKET_BAD;
	}
	job->nallowed++;
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static void attempt_start(struct deliver *d, struct job *job)
{
	struct deliver_request *req = job->req;
	int64_t timeout_ms =
		req->timeout_ms > 0 ? req->timeout_ms : d->cfg.default_timeout_ms;
	if (req->kind == DELIVER_EMAIL && req->timeout_ms <= 0 &&
	    d->ch.smtp_timeout_ms > 0)
		timeout_ms = d->ch.smtp_timeout_ms;
	CURL *e = curl_easy_init();
	if (!e)
		abort();
	job->easy = e;
	job->attempts++;
	job->attempt_ns = clock_mono_ns();
	if (req->kind == DELIVER_WEBHOOK) {
		metrics_add(&m_attempts, 1);
		metrics_add(&m_in_flight, 1);
	} else {
		metrics_add(&m_channel_attempts[req->kind - 1], 1);
	}
	job->nrefused = job->nallowed = 0;
	job->truncated = false;
	job->errbuf[0] = '\0';
	buf_reset(&job->resp);

	curl_easy_setopt(e, CURLOPT_PRIVATE, job);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* never through a proxy from the environment: the guard judges the
	 * address we connect to, which must be the receiver's; and the relay
	 * and providers are reached as configured */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	switch (req->kind) {
	case DELIVER_EMAIL:
		job->hdrs = deliver_email_setup(&d->ch, e, &job->prep);
		break;
	case DELIVER_SMS:
		job->hdrs = deliver_sms_setup(&d->ch, e, &job->prep, d->user_agent);
		break;
	case DELIVER_PUSH:
		job->hdrs = deliver_push_setup(&d->ch, e, &job->prep, d->user_agent);
		break;
	case DELIVER_WEBHOOK:
		job->hdrs =
			deliver_build_headers(req, d->user_agent, clock_wall_ms() / 1000);
		curl_easy_setopt(e, CURLOPT_URL, req->url);
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
		curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, job);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, job->hdrs);
		if (strcmp(req->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)req->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		break;
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->errbuf);
	CURLMcode mc = curl_multi_add_handle(d->multi, e);
	ASSERT(mc == CURLM_OK);
}

static uint64_t rng_next(struct deliver *d)
{
	uint64_t x = d->rng; /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	d->rng = x;
	return x * 2685821657736338717ull;
}

/* The delay before retry number `attempt` (1 = first retry). */
static int64_t backoff_ms(struct deliver *d, unsigned attempt, int status,
			  int64_t retry_after_ms)
{
	int64_t cap = d->cfg.backoff_cap_ms, ceil = d->cfg.backoff_base_ms;
	for (unsigned i = 1; i < attempt && ceil < cap; i++)
		ceil *= 2;
	if (ceil > cap)
		ceil = cap;
	int64_t delay = ceil > 0 ? (int64_t)(rng_next(d) % (uint64_t)(ceil + 1)) : 0;
	if ((status == 429 || status == 503) && retry_after_ms > 0) {
		int64_t ra = retry_after_ms < cap ? retry_after_ms : cap;
		if (ra > delay)
			delay = ra;
	}
	return delay;
}

static void on_backoff(uv_timer_t *t)
{
	struct job *job = t->data;
	host_enqueue(job->d, job);
	pump(job->d);
}

static void attempt_done(struct deliver *d, struct job *job, CURLcode res)
{
	long status = 0;
	curl_off_t retry_after_s = 0;
	long connects = 0;
	char reason[CURL_ERROR_SIZE + 32];
	enum deliver_result result;

	curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(job->easy, CURLINFO_RETRY_AFTER, &retry_after_s);
	curl_easy_getinfo(job->easy, CURLINFO_NUM_CONNECTS, &connects);
	job->connections += (unsigned)connects;
	enum deliver_kind kind = job->req->kind;
	if (kind == DELIVER_WEBHOOK) {
		metrics_add(&m_connects, connects);
		metrics_add(&m_in_flight, -1);
		metrics_observe(&m_latency,
				(double)(clock_mono_ns() - job->attempt_ns) / 1e9);
	} else {
		metrics_add(&m_channel_connects[kind - 1], connects);
	}
	struct deliver_verdict v = {.result = DELIVER_OK};
	if (kind == DELIVER_EMAIL)
		deliver_email_verdict(res, status, &job->prep, job->errbuf, &v);
	curl_multi_remove_handle(d->multi, job->easy);
	curl_easy_cleanup(job->easy);
	job->easy = NULL;
	curl_slist_free_all(job->hdrs);
	job->hdrs = NULL;
	job->host->active--;
	d->active--;
	host_maybe_runnable(d, job->host);

	if (kind == DELIVER_EMAIL) {
		result = v.result;
		snprintf(reason, sizeof(reason), "%s", v.reason);
	} else if (kind != DELIVER_WEBHOOK &&
		   (res == CURLE_OK || (res == CURLE_WRITE_ERROR && job->truncated))) {
		if (kind == DELIVER_SMS)
			deliver_sms_verdict(status, buf_str(&job->resp), job->resp.len,
					    &v);
		else
			deliver_push_verdict(status, buf_str(&job->resp), job->resp.len,
					     &v);
		result = v.result;
		snprintf(reason, sizeof(reason), "%s", v.reason);
	} else if (res != CURLE_OK && job->nrefused > 0 && job->nallowed == 0) {
		result = DELIVER_PERMFAIL;
		snprintf(reason, sizeof(reason), "destination not allowed");
	} else if (res == CURLE_OK || (res == CURLE_WRITE_ERROR && job->truncated)) {
		snprintf(reason, sizeof(reason), "HTTP %ld", status);
		if (status >= 200 && status <= 299)
			result = DELIVER_OK;
		else if (status == 429 || status >= 500)
			result = DELIVER_TEMPFAIL;
		else
			result = DELIVER_PERMFAIL;
	} else if (res == CURLE_OPERATION_TIMEDOUT) {
		result = DELIVER_TEMPFAIL;
		snprintf(reason, sizeof(reason), "timeout");
	} else if (res == CURLE_URL_MALFORMAT || res == CURLE_UNSUPPORTED_PROTOCOL) {
		result = DELIVER_PERMFAIL;
		snprintf(reason, sizeof(reason), "%s", curl_easy_strerror(res));
	} else {
		result = DELIVER_TEMPFAIL;
		snprintf(reason, sizeof(reason), "%s",
			 job->errbuf[0] ? job->errbuf : curl_easy_strerror(res));
	}

	if (result == DELIVER_TEMPFAIL && job->attempts <= job->req->retries) {
		int64_t delay = backoff_ms(d, job->attempts, (int)status,
					   (int64_t)retry_after_s * 1000);
		log_info("deliver",
			 "envelope=%s state=tempfail status=%ld reason=\"%s\" retry=%u "
			 "delay_ms=%lld",
			 job->req->envelope_id, status, reason, job->attempts,
			 (long long)delay);
		metrics_add(&m_retries, 1);
		uv_timer_start(&job->timer, on_backoff, (uint64_t)delay, 0);
		return;
	}
	report(job, result, (int)status, reason, v.provider_id, v.invalid_recipient);
}

static void on_rate_timer(uv_timer_t *t)
{
	struct deliver *d = t->data;
	struct host *h = d->throttled;
	d->throttled = NULL;
	for (struct host *next; h; h = next) {
		next = h->tnext;
		h->throttled = false;
		host_maybe_runnable(d, h);
	}
	pump(d);
}

/* Takes a token from h's bucket; false (and h throttled until a token is
 * due) when it is empty. Hosts without a rate always pass. */
static bool take_token(struct deliver *d, struct host *h)
{
	if (h->rate_per_s <= 0)
		return true;
	uint64_t now = clock_mono_ns();
	h->tokens += (double)(now - h->refill_ns) / 1e9 * h->rate_per_s;
	if (h->tokens > h->rate_per_s)
		h->tokens = h->rate_per_s;
	h->refill_ns = now;
	if (h->tokens >= 1) {
		h->tokens -= 1;
		return true;
	}
	/* a host on the throttled list has queued jobs, which keep it alive */
	h->throttled = true;
	h->tnext = d->throttled;
	d->throttled = h;
	uint64_t wait_ms = (uint64_t)((1 - h->tokens) / h->rate_per_s * 1000) + 1;
	uint64_t due = uv_timer_get_due_in(&d->rate_timer);
	if (!uv_is_active((uv_handle_t *)&d->rate_timer) || wait_ms < due)
		uv_timer_start(&d->rate_timer, on_rate_timer, wait_ms, 0);
	return false;
}

static void pump(struct deliver *d)
{
	while (d->active < d->cfg.max_concurrency && d->rhead) {
		struct host *h = d->rhead;
		d->rhead = h->rnext;
		if (!d->rhead)
			d->rtail = &d->rhead;
		h->runnable = false;
		if (!take_token(d, h))
			continue;
		struct job *job = h->qhead;
		h->qhead = job->next;
		if (!h->qhead)
			h->qtail = &h->qhead;
		job->next = NULL;
		h->active++;
		d->active++;
		attempt_start(d, job);
		host_maybe_runnable(d, h);
	}
}

static void check_multi(struct deliver *d)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(d->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct job *job = NULL;
		CURLcode res = m->data.result;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&job);
		attempt_done(d, job, res);
	}
	pump(d);
}

/* ---- curl <-> libuv ---- */

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = p->data;
	int flags = 0, running;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(s->d->multi, s->fd, flags, &running);
	check_multi(s->d);
}

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct deliver *d = userp;
	struct sock *s = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, sock_closed);
			curl_multi_assign(d->multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		s->d = d;
		s->poll.data = s;
		if (uv_poll_init_socket(&d->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		curl_multi_assign(d->multi, fd, s);
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
	struct deliver *d = t->data;
	int running;
	curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi(d);
}

static int on_timer_change(CURLM *m, long timeout_ms, void *userp)
{
	struct deliver *d = userp;
	if (timeout_ms < 0)
		uv_timer_stop(&d->curl_timer);
	else /* 0 too: curl must not be re-entered from this callback */
		uv_timer_start(&d->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- the thread ---- */

static bool envelope_id_ok(const char *id)
{
	if (!id || !id[0] || strlen(id) > 200)
		return false;
	for (const char *p = id; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static void accept_job(struct deliver *d, struct job *job)
{
	const char *reason = NULL;
	job->d = d;
	job->lnext = d->live;
	if (d->live)
		d->live->lprev = &job->lnext;
	job->lprev = &d->live;
	d->live = job;
	buf_init(&job->resp, 0);
	uv_timer_init(&d->loop, &job->timer);
	job->timer.data = job;

	deliver_prep_init(&job->prep);

	struct deliver_request *req = job->req;
	bool ok = false, bad_rcpt = false;
	const char *origin = NULL;
	unsigned limit = d->cfg.per_host_concurrency, rate = 0;
	if (req->kind != DELIVER_WEBHOOK && !envelope_id_ok(req->envelope_id)) {
		reason = "invalid envelope id";
	} else {
		switch (req->kind) {
		case DELIVER_WEBHOOK:
			ok = deliver_request_check(req, &reason) &&
			     deliver_url_parse(req->url, &job->url, &reason);
			origin = job->url.origin;
			break;
		case DELIVER_EMAIL:
			ok = deliver_email_prepare(&d->ch, req, clock_wall_ms(),
						   &job->prep, &reason, &bad_rcpt);
			limit = d->ch.smtp_connections;
			rate = d->ch.smtp_rate_per_s;
			break;
		case DELIVER_SMS:
			ok = deliver_sms_prepare(&d->ch, req, &job->prep, &reason,
						 &bad_rcpt);
			rate = d->ch.sms_rate_per_s;
			break;
		case DELIVER_PUSH:
			ok = deliver_push_prepare(&d->ch, req, &job->prep, &reason,
						  &bad_rcpt);
			rate = d->ch.push_rate_per_s;
			break;
		default:
			reason = "unknown channel";
			break;
		}
	}
	if (!ok) {
		report(job, DELIVER_PERMFAIL, 0, reason, NULL, bad_rcpt);
		return;
	}
	if (req->kind != DELIVER_WEBHOOK)
		origin = job->prep.origin;
	job->host = host_ref(d, origin, limit, rate);
	host_enqueue(d, job);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, h->type == UV_POLL ? sock_closed : NULL);
}

/* Abandons every job (unreported) and closes every handle. */
static void teardown(struct deliver *d)
{
	while (d->live) {
		struct job *job = d->live;
		if (job->easy) {
			curl_multi_remove_handle(d->multi, job->easy);
			curl_easy_cleanup(job->easy);
			job->easy = NULL;
			curl_slist_free_all(job->hdrs);
			job->hdrs = NULL;
			job->host->active--;
			d->active--;
			if (job->req->kind == DELIVER_WEBHOOK)
				metrics_add(&m_in_flight, -1);
		}
		if (job->host) {
			/* drop it from its host's queue wholesale: every job goes */
			job->host->qhead = NULL;
			job->host->qtail = &job->host->qhead;
			job->host->runnable = false;
			job->host->throttled = false;
		}
		atomic_fetch_sub(&d->pending, 1);
		metrics_add(&m_pending, -1);
		job_free(job);
	}
	d->rhead = NULL;
	d->rtail = &d->rhead;
	d->throttled = NULL;
	curl_multi_cleanup(d->multi);
	d->multi = NULL;
	uv_walk(&d->loop, close_walk, NULL);
}

static void on_async(uv_async_t *a)
{
	struct deliver *d = a->data;
	pthread_mutex_lock(&d->mu);
	struct job *list = d->in_head;
	bool stopping = d->stopping;
	d->in_head = NULL;
	d->in_tail = &d->in_head;
	pthread_mutex_unlock(&d->mu);

	while (list) {
		struct job *job = list;
		list = job->next;
		job->next = NULL;
		if (stopping) {
			deliver_request_free(job->req);
			free(job);
			atomic_fetch_sub(&d->pending, 1);
			metrics_add(&m_pending, -1);
		} else {
			accept_job(d, job);
		}
	}
	if (stopping)
		teardown(d);
	else
		pump(d);
}

static void *thread_main(void *arg)
{
	struct deliver *d = arg;
	uv_run(&d->loop, UV_RUN_DEFAULT);
	return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

enum nerr deliver_start(const struct deliver_config *cfg, deliver_outcome_fn fn,
			void *cb_ud, struct deliver **out, struct nerr_msg *msg)
{
	enum nerr rc;
	struct deliver_config def;
	struct deliver *d = xcalloc(1, sizeof(*d));

	*out = NULL;
	pthread_once(&curl_once, curl_init_once);
	metrics_setup();
	deliver_config_default(&def);
	d->cfg = *cfg;
	if (!d->cfg.per_host_concurrency)
		d->cfg.per_host_concurrency = def.per_host_concurrency;
	if (!d->cfg.max_concurrency)
		d->cfg.max_concurrency = def.max_concurrency;
	if (!d->cfg.max_response_bytes)
		d->cfg.max_response_bytes = def.max_response_bytes;
	if (d->cfg.backoff_base_ms < 0)
		d->cfg.backoff_base_ms = 0;
	if (d->cfg.backoff_cap_ms <= 0)
		d->cfg.backoff_cap_ms = def.backoff_cap_ms;
	if (d->cfg.default_timeout_ms <= 0)
		d->cfg.default_timeout_ms = def.default_timeout_ms;
	d->user_agent = xstrdup(cfg->user_agent ? cfg->user_agent : def.user_agent);
	d->cfg.user_agent = d->user_agent;
	d->cfg.allow = NULL;
	/* the channels' settings are copied into d->ch; drop the borrowed ones */
	memset(&d->cfg.smtp, 0, sizeof(d->cfg.smtp));
	memset(&d->cfg.sms, 0, sizeof(d->cfg.sms));
	memset(&d->cfg.push, 0, sizeof(d->cfg.push));
	d->fn = fn;
	d->cb_ud = cb_ud;
	d->in_tail = &d->in_head;
	d->rtail = &d->rhead;
	if (getrandom(&d->rng, sizeof(d->rng), 0) != sizeof(d->rng) || d->rng == 0)
		d->rng = clock_mono_ns() | 1;

	rc = deliver_allow_parse(cfg->allow, &d->allow, msg);
	if (rc != NERR_OK) {
		free(d->user_agent);
		free(d);
		return rc;
	}
	rc = deliver_channels_init(&d->ch, cfg, msg);
	if (rc != NERR_OK) {
		deliver_allow_fini(&d->allow);
		free(d->user_agent);
		free(d);
		return rc;
	}
	pthread_mutex_init(&d->mu, NULL);
	uv_loop_init(&d->loop);
	uv_async_init(&d->loop, &d->async, on_async);
	d->async.data = d;
	uv_timer_init(&d->loop, &d->curl_timer);
	d->curl_timer.data = d;
	uv_timer_init(&d->loop, &d->rate_timer);
	d->rate_timer.data = d;
	d->multi = curl_multi_init();
	if (!d->multi)
		abort();
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
	/* keep enough idle connections for every running transfer to be reused */
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->cfg.max_concurrency);

	/* The thread takes no asynchronous signals (they belong to the main
	 * thread's handlers), and a peer closing a TLS connection under us must
	 * give EPIPE, not kill the process with SIGPIPE. Faults stay deliverable. */
	sigset_t block, old;
	sigfillset(&block);
	sigdelset(&block, SIGSEGV);
	sigdelset(&block, SIGBUS);
	sigdelset(&block, SIGFPE);
	sigdelset(&block, SIGILL);
	sigdelset(&block, SIGABRT);
	sigdelset(&block, SIGTRAP);
	pthread_sigmask(SIG_SETMASK, &block, &old);
	int prc = pthread_create(&d->thread, NULL, thread_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (prc != 0) {
		rc = nerr_set(msg, NERR_IO, "", "cannot start the delivery thread");
		teardown(d);
		uv_run(&d->loop, UV_RUN_DEFAULT);
		uv_loop_close(&d->loop);
		deliver_allow_fini(&d->allow);
		deliver_channels_fini(&d->ch);
		pthread_mutex_destroy(&d->mu);
		free(d->user_agent);
		free(d);
		return rc;
	}
	d->thread_started = true;
	*out = d;
	return NERR_OK;
}

enum nerr deliver_submit(struct deliver *d, struct deliver_request *req)
{
	struct job *job = xcalloc(1, sizeof(*job));
	job->req = req;
	job->submit_ns = clock_mono_ns();
	pthread_mutex_lock(&d->mu);
	if (d->stopping) {
		pthread_mutex_unlock(&d->mu);
		free(job);
		return NERR_BUSY;
	}
	*d->in_tail = job;
	d->in_tail = &job->next;
	atomic_fetch_add(&d->pending, 1);
	metrics_add(&m_pending, 1);
	/* under the lock, so the thread cannot close the handle meanwhile */
	uv_async_send(&d->async);
	pthread_mutex_unlock(&d->mu);
	return NERR_OK;
}

unsigned deliver_pending(struct deliver *d)
{
	return atomic_load(&d->pending);
}

void deliver_stop(struct deliver *d)
{
	if (!d || d->joined)
		return;
	pthread_mutex_lock(&d->mu);
	d->stopping = true;
	uv_async_send(&d->async);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	d->joined = true;
	uv_loop_close(&d->loop);
}

void deliver_free(struct deliver *d)
{
	if (!d)
		return;
	deliver_stop(d);
	free(d->buckets);
	deliver_allow_fini(&d->allow);
	deliver_channels_fini(&d->ch);
	pthread_mutex_destroy(&d->mu);
	free(d->user_agent);
	free(d);
}
