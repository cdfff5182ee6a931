/*
 * test_deliver.c -- the delivery thread against real peers.
 *
 * Webhooks, SMS and push: the peer is nudge's own HTTP server (ingest/http.h)
 * on 127.0.0.1, run on a thread of its own; the delivery thread reaches it
 * through the allow list (loopback is refused by default for webhooks; SMS and
 * push endpoints come from the configuration and are not guarded). The peer
 * records what it receives and can fail the first N requests, answer a fixed
 * status, hold answers back (for timeouts and for counting concurrent
 * requests) and return a chosen body. Backoff is shortened through the config
 * so retries take milliseconds.
 *
 * Email: the peer is Debian's aiosmtpd, started once as a child process
 * (tests/unit/smtp_peer.py); it writes every message it accepts to a
 * directory and takes failures to inject from a plan file, and the messages
 * are read back with Python's email parser (the same script), so the MIME
 * structure is judged by a real parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/mem.h"
#include "deliver/deliver.h"
#include "ingest/http.h"
#include "report/metrics.h"

/* ---- the peer ---- */

#define MAX_RECS 64

struct rec {
	char method[8];
	char path[64];
	char idem[128];
	char sig[128];
	char ctype[64];
	char ua[64];
	char custom[64];
	char auth[128];
	char body[1024];
	unsigned conns; /* connections open at the peer when it arrived */
};

struct held {
	uv_timer_t timer;
	struct http_req *req;
	struct peer *p;
	struct held *next;
	bool done;
};

struct peer {
	uv_loop_t loop;
	uv_async_t stop;
	struct http_server *srv;
	pthread_t thread;
	int port;

	pthread_mutex_t mu; /* guards everything below */
	unsigned fail_first;
	int fail_status;
	int status; /* answer when not failing; 0 = 200 */
	const char *retry_after;
	unsigned hold_ms;
	const char *answer; /* body; NULL = {"ok":true} */
	unsigned total;
	unsigned concurrent, max_concurrent;
	struct rec recs[MAX_RECS];
	struct held *held;
};

static void copy(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

static void answer(struct peer *p, struct http_req *req, int status)
{
	char extra[64] = "";
	const char *body;
	pthread_mutex_lock(&p->mu);
	if ((status == 429 || status == 503) && p->retry_after)
		snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", p->retry_after);
	body = p->answer ? p->answer : "{\"ok\":true}";
	p->concurrent--;
	pthread_mutex_unlock(&p->mu);
	http_respond(req, status, "application/json", body, strlen(body),
		     extra[0] ? extra : NULL);
}

static void held_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_held(uv_timer_t *t)
{
	struct held *h = t->data;
	int status = (int)(intptr_t)http_req_data(h->req);
	h->done = true;
	answer(h->p, h->req, status);
}

static void on_request(void *ud, struct http_req *req)
{
	struct peer *p = ud;
	size_t len;
	int status;
	unsigned hold;

	pthread_mutex_lock(&p->mu);
	if (p->total < MAX_RECS) {
		struct rec *r = &p->recs[p->total];
		copy(r->method, sizeof(r->method), http_req_method(req));
		copy(r->path, sizeof(r->path), http_req_path(req));
		copy(r->idem, sizeof(r->idem), http_req_header(req, "Idempotency-Key"));
		copy(r->sig, sizeof(r->sig), http_req_header(req, "X-Nudge-Signature"));
		copy(r->ctype, sizeof(r->ctype), http_req_header(req, "Content-Type"));
		copy(r->ua, sizeof(r->ua), http_req_header(req, "User-Agent"));
		copy(r->custom, sizeof(r->custom), http_req_header(req, "X-Custom"));
		copy(r->auth, sizeof(r->auth), http_req_header(req, "Authorization"));
		copy(r->body, sizeof(r->body), http_req_body(req, &len));
		r->conns = http_server_connection_count(p->srv);
	}
	p->total++;
	p->concurrent++;
	if (p->concurrent > p->max_concurrent)
		p->max_concurrent = p->concurrent;
	if (p->fail_first > 0) {
		p->fail_first--;
		status = p->fail_status;
	} else {
		status = p->status ? p->status : 200;
	}
	hold = p->hold_ms;
	pthread_mutex_unlock(&p->mu);

	if (hold == 0) {
		answer(p, req, status);
		return;
	}
	struct held *h = xcalloc(1, sizeof(*h));
	h->req = req;
	h->p = p;
	http_req_set_data(req, (void *)(intptr_t)status);
	uv_timer_init(&p->loop, &h->timer);
	h->timer.data = h;
	uv_timer_start(&h->timer, on_held, hold, 0);
	h->next = p->held;
	p->held = h;
}

static void server_down(void *ud)
{
	struct peer *p = ud;
	uv_close((uv_handle_t *)&p->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
	struct peer *p = a->data;
	for (struct held *h = p->held, *next; h; h = next) {
		next = h->next;
		if (!h->done)
			answer(p, h->req, 503);
		uv_close((uv_handle_t *)&h->timer, held_closed);
	}
	p->held = NULL;
	http_server_shutdown(p->srv, server_down, p);
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	uv_run(&p->loop, UV_RUN_DEFAULT);
	return NULL;
}

static struct peer *peer_start(void)
{
	struct peer *p = xcalloc(1, sizeof(*p));
	struct nerr_msg msg;
	pthread_mutex_init(&p->mu, NULL);
	uv_loop_init(&p->loop);
	uv_async_init(&p->loop, &p->stop, on_stop);
	p->stop.data = p;
	assert_int_equal(http_server_new(&p->loop, NULL, on_request, p, &p->srv),
			 NERR_OK);
	assert_int_equal(http_server_listen(p->srv, "127.0.0.1", 0, &msg), NERR_OK);
	p->port = http_server_port(p->srv);
	assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
	return p;
}

static void peer_free(struct peer *p)
{
	uv_async_send(&p->stop);
	pthread_join(p->thread, NULL);
	http_server_free(p->srv);
	uv_loop_close(&p->loop);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static unsigned peer_total(struct peer *p)
{
	pthread_mutex_lock(&p->mu);
	unsigned n = p->total;
	pthread_mutex_unlock(&p->mu);
	return n;
}

/* ---- outcomes ---- */

struct got {
	char id[64];
	enum deliver_result result;
	int status;
	char reason[128];
	char response[256];
	size_t response_len;
	bool has_response;
	bool truncated;
	unsigned attempts;
	unsigned connections;
	int64_t duration_ms;
	void *ud;
	enum deliver_kind kind;
	char provider_id[128];
	bool invalid_recipient;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct got got[64];
	unsigned n;
} sink = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void on_outcome(void *cb_ud, const struct deliver_outcome *o)
{
	assert_ptr_equal(cb_ud, &sink);
	pthread_mutex_lock(&sink.mu);
	if (sink.n < 64) {
		struct got *g = &sink.got[sink.n];
		copy(g->id, sizeof(g->id), o->envelope_id);
		g->result = o->result;
		g->status = o->http_status;
		copy(g->reason, sizeof(g->reason), o->reason);
		g->has_response = o->response != NULL;
		g->response_len = o->response_len;
		if (o->response)
			memcpy(g->response, o->response,
			       o->response_len < sizeof(g->response) - 1
				       ? o->response_len
				       : sizeof(g->response) - 1);
		g->truncated = o->response_truncated;
		g->attempts = o->attempts;
		g->connections = o->connections;
		g->duration_ms = o->duration_ms;
		g->ud = o->ud;
		g->kind = o->kind;
		copy(g->provider_id, sizeof(g->provider_id), o->provider_id);
		g->invalid_recipient = o->invalid_recipient;
	}
	sink.n++;
	pthread_cond_broadcast(&sink.cv);
	pthread_mutex_unlock(&sink.mu);
}

static int reset_sink(void **state)
{
	pthread_mutex_lock(&sink.mu);
	memset(sink.got, 0, sizeof(sink.got));
	sink.n = 0;
	pthread_mutex_unlock(&sink.mu);
	return 0;
}

/* Waits until n outcomes arrived (fails the test after 10 s). */
static void wait_outcomes(unsigned n)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&sink.mu);
	while (sink.n < n) {
		if (pthread_cond_timedwait(&sink.cv, &sink.mu, &until) != 0)
			break;
	}
	unsigned got = sink.n;
	pthread_mutex_unlock(&sink.mu);
	assert_int_equal(got, n);
}

static struct deliver *start(const char *allow, unsigned per_host, unsigned max)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.allow = allow;
	cfg.backoff_base_ms = 5;
	cfg.backoff_cap_ms = 2000;
	if (per_host)
		cfg.per_host_concurrency = per_host;
	if (max)
		cfg.max_concurrency = max;
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	return d;
}

static struct deliver_request *request(const char *id, const char *url, const char *body)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	r->envelope_id = xstrdup(id);
	r->method = xstrdup("POST");
	r->url = xstrdup(url);
	r->body = xstrdup(body);
	r->body_len = strlen(body);
	r->timeout_ms = 5000;
	return r;
}

static char *peer_url(struct peer *p, const char *path)
{
	char *u = xmalloc(128);
	snprintf(u, 128, "http://127.0.0.1:%d%s", p->port, path);
	return u;
}

static void hmac_hex(const char *secret, const char *text, char *out)
{
	unsigned char mac[32];
	unsigned int len = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)text,
	     strlen(text), mac, &len);
	for (unsigned i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", mac[i]);
}

/* The value of one series in the /metrics text, or -1 when absent. */
static double metric_value(const char *series)
{
	struct buf out;
	double v = -1;
	buf_init(&out, 0);
	metrics_render(&out);
	size_t n = strlen(series);
	for (const char *p = buf_str(&out); (p = strstr(p, series)); p += n) {
		if ((p == buf_str(&out) || p[-1] == '\n') && p[n] == ' ') {
			v = strtod(p + n + 1, NULL);
			break;
		}
	}
	buf_fini(&out);
	return v;
}

/* ---- tests ---- */

static void post_carries_body_headers_and_a_verifiable_signature(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/hook");
	struct deliver_request *r = request("env-1", url, "{\"a\":1}");
	int marker;
	r->secret = xstrdup("s3cret");
	r->headers = xcalloc(2, sizeof(*r->headers));
	r->nheaders = 2;
	r->headers[0].name = xstrdup("X-Custom");
	r->headers[0].value = xstrdup("yes");
	r->headers[1].name = xstrdup("Idempotency-Key"); /* ours wins */
	r->headers[1].value = xstrdup("forged");
	r->ud = &marker;
	double ok_before = metric_value("nudge_webhook_outcomes_total{result=\"ok\"}");
	int64_t before = clock_wall_ms() / 1000;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	int64_t after = clock_wall_ms() / 1000;

	struct got *g = &sink.got[0];
	assert_int_equal(g->result, DELIVER_OK);
	assert_int_equal(g->status, 200);
	assert_int_equal(g->attempts, 1);
	assert_string_equal(g->id, "env-1");
	assert_ptr_equal(g->ud, &marker);
	assert_false(g->has_response);
	assert_int_equal(peer_total(p), 1);
	assert_true(ok_before >= 0);
	assert_true(metric_value("nudge_webhook_outcomes_total{result=\"ok\"}") ==
		    ok_before + 1);

	struct rec *rec = &p->recs[0];
	assert_string_equal(rec->method, "POST");
	assert_string_equal(rec->path, "/hook");
	assert_string_equal(rec->body, "{\"a\":1}");
	assert_string_equal(rec->ctype, "application/json");
	assert_string_equal(rec->idem, "env-1");
	assert_string_equal(rec->custom, "yes");
	assert_true(strncmp(rec->ua, "nudge/", 6) == 0);

	/* t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>, checked the way a
	 * receiver would */
	long long t = 0;
	char v1[80] = "", expect[80] = "", text[1100];
	assert_int_equal(sscanf(rec->sig, "t=%lld,v1=%79s", &t, v1), 2);
	assert_true(t >= before && t <= after);
	snprintf(text, sizeof(text), "%lld.%s", t, rec->body);
	hmac_hex("s3cret", text, expect);
	assert_string_equal(v1, expect);
	hmac_hex("other", text, expect);
	assert_string_not_equal(v1, expect);

	deliver_free(d);
	free(url);
	peer_free(p);
}

static void put_without_secret_sends_no_signature(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1", 0, 0);
	char *url = peer_url(p, "/put");
	struct deliver_request *r = request("env-put", url, "{}");
	free(r->method);
	r->method = xstrdup("PUT");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_string_equal(p->recs[0].method, "PUT");
	assert_string_equal(p->recs[0].sig, "");
	assert_string_equal(p->recs[0].idem, "env-put");
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void tempfail_503_is_retried_until_success(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->fail_first = 2;
	p->fail_status = 503;
	struct deliver_request *r = request("env-retry", url, "{}");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(sink.got[0].attempts, 3);
	assert_int_equal(peer_total(p), 3);
	for (int i = 0; i < 3; i++) /* the same key on every attempt */
		assert_string_equal(p->recs[i].idem, "env-retry");
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void last_tempfail_is_reported_final(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->status = 500;
	struct deliver_request *r = request("env-500", url, "{}");
	r->retries = 2;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_TEMPFAIL);
	assert_int_equal(sink.got[0].status, 500);
	assert_string_equal(sink.got[0].reason, "HTTP 500");
	assert_int_equal(sink.got[0].attempts, 3);
	assert_int_equal(peer_total(p), 3);
	assert_true(metric_value("nudge_webhook_outcomes_total{result=\"tempfail\"}") >=
		    1);
	assert_true(metric_value("nudge_webhook_retries_total") >= 2);
	usleep(50 * 1000); /* and nothing more follows */
	assert_int_equal(peer_total(p), 3);
	assert_int_equal(sink.n, 1);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void retry_after_is_honoured(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->fail_first = 1;
	p->fail_status = 429;
	p->retry_after = "1";
	struct deliver_request *r = request("env-429", url, "{}");
	r->retries = 1;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(sink.got[0].attempts, 2);
	/* base backoff is 5 ms: only Retry-After explains a second's wait */
	assert_true(sink.got[0].duration_ms >= 1000);
	assert_true(sink.got[0].duration_ms < 5000);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void status_400_is_permfail_without_retry(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->status = 400;
	struct deliver_request *r = request("env-400", url, "{}");
	r->retries = 5;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_PERMFAIL);
	assert_int_equal(sink.got[0].status, 400);
	assert_string_equal(sink.got[0].reason, "HTTP 400");
	assert_int_equal(sink.got[0].attempts, 1);
	usleep(50 * 1000);
	assert_int_equal(peer_total(p), 1);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void timeout_is_tempfail_after_retries(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->hold_ms = 2000;
	struct deliver_request *r = request("env-slow", url, "{}");
	r->timeout_ms = 100;
	r->retries = 2;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_TEMPFAIL);
	assert_string_equal(sink.got[0].reason, "timeout");
	assert_int_equal(sink.got[0].status, 0);
	assert_int_equal(sink.got[0].attempts, 3);
	assert_int_equal(peer_total(p), 3);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void connection_refused_is_tempfail(void **state)
{
	/* a port that was free a moment ago: bind, learn it, close */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));

	struct deliver *d = start("127.0.0.1/32", 0, 0);
	struct deliver_request *r = request("env-refused", url, "{}");
	r->retries = 1;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_TEMPFAIL);
	assert_int_equal(sink.got[0].status, 0);
	assert_int_equal(sink.got[0].attempts, 2);
	deliver_free(d);
}

static void guard_refuses_internal_addresses_by_default(void **state)
{
	static const char *refused[] = {
		"127.0.0.1",
		"127.1.2.3",
		"10.0.0.1",
		"10.255.255.255",
		"172.16.0.1",
		"172.31.255.1",
		"192.168.1.10",
		"169.254.169.254",
		"0.0.0.0",
		"100.64.0.1",
		"224.0.0.1",
		"255.255.255.255",
		"::1",
		"::",
		"fe80::1",
		"fc00::1",
		"fd12:3456::1",
		"ff02::1",
		"::ffff:127.0.0.1",
		"::ffff:10.1.1.1",
		"64:ff9b::a00:1",
		"2002:c0a8:0101::1",
	};
	static const char *public[] = {"8.8.8.8",
				       "1.1.1.1",
				       "172.32.0.1",
				       "192.169.0.1",
				       "2001:4860:4860::8888",
				       "::ffff:8.8.8.8",
				       "11.0.0.1"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		if (deliver_address_allowed(NULL, "example.com", refused[i]))
			fail_msg("%s was allowed", refused[i]);
	}
	for (size_t i = 0; i < sizeof(public) / sizeof(public[0]); i++) {
		if (!deliver_address_allowed(NULL, "example.com", public[i]))
			fail_msg("%s was refused", public[i]);
	}
	assert_false(deliver_address_allowed(NULL, NULL, "not an address"));
}

static void allow_list_opens_ranges_and_hosts(void **state)
{
	struct deliver *d =
		start("127.0.0.1/32, 10.0.0.0/8 192.168.1.0/24,169.254.169.254,"
		      "::1, fe80::/10, fc00::/7, hooks.internal, *.corp.example",
		      0, 0);
	static const char *allowed[] = {
		"127.0.0.1", "10.1.2.3",   "192.168.1.77", "169.254.169.254",
		"::1",	     "fe80::abcd", "fd00::5",	   "::ffff:10.9.9.9"};
	static const char *still_refused[] = {"127.0.0.2", "192.168.2.1", "169.254.1.1",
					      "172.16.0.1", "ff02::1"};
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
		if (!deliver_address_allowed(d, "x.example", allowed[i]))
			fail_msg("%s was refused", allowed[i]);
	}
	for (size_t i = 0; i < sizeof(still_refused) / sizeof(still_refused[0]); i++) {
		if (deliver_address_allowed(d, "x.example", still_refused[i]))
			fail_msg("%s was allowed", still_refused[i]);
	}
	/* host entries vouch for whatever the name resolves to */
	assert_true(deliver_address_allowed(d, "hooks.internal", "172.16.0.1"));
	assert_true(deliver_address_allowed(d, "HOOKS.INTERNAL", "172.16.0.1"));
	assert_true(deliver_address_allowed(d, "a.corp.example", "172.16.0.1"));
	assert_false(deliver_address_allowed(d, "corp.example", "172.16.0.1"));
	assert_false(deliver_address_allowed(d, "evilhooks.internal", "172.16.0.1"));
	deliver_free(d);
}

static void bad_allow_entry_is_named(void **state)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	static const char *bad[] = {"10.0.0.0/33", "::1/129",	    "bad-host!",
				    "10.0.0.0/",   "example.com/8", "*."};
	deliver_config_default(&cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[64];
		snprintf(text, sizeof(text), "127.0.0.1, %s", bad[i]);
		cfg.allow = text;
		nerr_clear(&msg);
		assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg),
				 NERR_INVAL);
		assert_null(d);
		if (!strstr(msg.message, bad[i]))
			fail_msg("message '%s' does not name '%s'", msg.message, bad[i]);
	}
}

static void guard_refuses_loopback_in_flight(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start(NULL, 0, 0);
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", p->port);
	assert_int_equal(deliver_submit(d, request("e1", url, "{}")), NERR_OK);
	snprintf(url, sizeof(url), "http://localhost:%d/", p->port);
	assert_int_equal(deliver_submit(d, request("e2", url, "{}")), NERR_OK);
	snprintf(url, sizeof(url), "http://[::1]:%d/", p->port);
	assert_int_equal(deliver_submit(d, request("e3", url, "{}")), NERR_OK);
	snprintf(url, sizeof(url), "http://2130706433:%d/", p->port); /* 127.0.0.1 */
	assert_int_equal(deliver_submit(d, request("e4", url, "{}")), NERR_OK);
	snprintf(url, sizeof(url), "http://[::ffff:127.0.0.1]:%d/", p->port);
	assert_int_equal(deliver_submit(d, request("e5", url, "{}")), NERR_OK);
	wait_outcomes(5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_PERMFAIL);
		assert_string_equal(sink.got[i].reason, "destination not allowed");
	}
	assert_int_equal(peer_total(p), 0);
	deliver_free(d);
	peer_free(p);
}

static void bad_requests_are_permfail(void **state)
{
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	struct deliver_request *r;
	assert_int_equal(deliver_submit(d, request("b1", "ftp://127.0.0.1/x", "{}")),
			 NERR_OK);
	assert_int_equal(deliver_submit(d, request("b2", "http://u:p@127.0.0.1/", "{}")),
			 NERR_OK);
	assert_int_equal(deliver_submit(d, request("b3", "not a url", "{}")), NERR_OK);
	r = request("b4", "http://127.0.0.1/", "{}");
	free(r->method);
	r->method = xstrdup("GET");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = request("b5", "http://127.0.0.1/", "{}");
	r->headers = xcalloc(1, sizeof(*r->headers));
	r->nheaders = 1;
	r->headers[0].name = xstrdup("X-Evil");
	r->headers[0].value = xstrdup("a\r\nHost: other");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(5);
	static const char *reasons[] = {
		"url scheme must be http or https", "url must not carry user info",
		"invalid url", "method must be POST or PUT", "invalid header value"};
	for (int i = 0; i < 5; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_PERMFAIL);
		assert_int_equal(sink.got[i].attempts, 0);
		assert_string_equal(sink.got[i].reason, reasons[i]);
	}
	deliver_free(d);
}

static void connections_are_reused(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(deliver_submit(d, request("r", url, "{}")), NERR_OK);
		wait_outcomes(i + 1);
		assert_int_equal(sink.got[i].result, DELIVER_OK);
	}
	/* one connection, opened by the first request; a new connection per
	 * request would also find the previous idle one still open at the peer */
	assert_int_equal(sink.got[0].connections, 1);
	assert_int_equal(sink.got[1].connections, 0);
	assert_int_equal(sink.got[2].connections, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(p->recs[i].conns, 1);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void a_slow_receiver_does_not_hold_up_others(void **state)
{
	struct peer *slow = peer_start(), *fast = peer_start();
	struct deliver *d = start("127.0.0.1/32", 2, 3);
	char *slow_url = peer_url(slow, "/"), *fast_url = peer_url(fast, "/");
	slow->hold_ms = 400;
	for (int i = 0; i < 6; i++)
		assert_int_equal(deliver_submit(d, request("slow", slow_url, "{}")),
				 NERR_OK);
	for (int i = 0; i < 200 && peer_total(slow) < 2; i++)
		usleep(2000);
	assert_int_equal(deliver_submit(d, request("fast", fast_url, "{}")), NERR_OK);
	wait_outcomes(1);
	/* the slow host has its 2 slots; the third global slot serves the other */
	assert_string_equal(sink.got[0].id, "fast");
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	wait_outcomes(7);
	assert_int_equal(slow->max_concurrent, 2);
	deliver_free(d);
	free(slow_url);
	free(fast_url);
	peer_free(slow);
	peer_free(fast);
}

static void allowed_host_name_may_resolve_to_loopback(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("LocalHost", 0, 0);
	char url[128];
	snprintf(url, sizeof(url), "http://localhost:%d/named", p->port);
	assert_int_equal(deliver_submit(d, request("named", url, "{}")), NERR_OK);
	/* the entry names a host, not an address */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/numeric", p->port);
	assert_int_equal(deliver_submit(d, request("numeric", url, "{}")), NERR_OK);
	wait_outcomes(2);
	for (int i = 0; i < 2; i++) {
		if (strcmp(sink.got[i].id, "named") == 0)
			assert_int_equal(sink.got[i].result, DELIVER_OK);
		else
			assert_string_equal(sink.got[i].reason,
					    "destination not allowed");
	}
	assert_int_equal(peer_total(p), 1);
	assert_string_equal(p->recs[0].path, "/named");
	deliver_free(d);
	peer_free(p);
}

static void per_host_cap_limits_concurrent_requests(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 2, 0);
	char *url = peer_url(p, "/");
	p->hold_ms = 100;
	for (int i = 0; i < 8; i++) {
		char id[32];
		snprintf(id, sizeof(id), "c%d", i);
		assert_int_equal(deliver_submit(d, request(id, url, "{}")), NERR_OK);
	}
	wait_outcomes(8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(sink.got[i].result, DELIVER_OK);
	assert_int_equal(p->max_concurrent, 2);
	assert_int_equal(deliver_pending(d), 0);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void global_cap_limits_concurrent_requests(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 16, 3);
	char *url = peer_url(p, "/");
	p->hold_ms = 100;
	for (int i = 0; i < 9; i++) {
		char id[32];
		snprintf(id, sizeof(id), "g%d", i);
		assert_int_equal(deliver_submit(d, request(id, url, "{}")), NERR_OK);
	}
	wait_outcomes(9);
	assert_int_equal(p->max_concurrent, 3);
	deliver_free(d);
	free(url);
	peer_free(p);
}

static void response_is_captured_up_to_the_cap(void **state)
{
	struct peer *p = peer_start();
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.allow = "127.0.0.1/32";
	cfg.max_response_bytes = 16;
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	char *url = peer_url(p, "/");

	p->answer = "{\"id\":42}";
	struct deliver_request *r = request("cap1", url, "{}");
	r->capture = true;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_true(sink.got[0].has_response);
	assert_string_equal(sink.got[0].response, "{\"id\":42}");
	assert_int_equal(sink.got[0].response_len, 9);
	assert_false(sink.got[0].truncated);

	p->answer = "{\"long\":\"0123456789abcdefghijklmnopqrstuvwxyz\"}";
	r = request("cap2", url, "{}");
	r->capture = true;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(2);
	assert_int_equal(sink.got[1].result, DELIVER_OK);
	assert_int_equal(sink.got[1].status, 200);
	assert_int_equal(sink.got[1].response_len, 16);
	assert_true(sink.got[1].truncated);
	assert_memory_equal(sink.got[1].response, "{\"long\":\"0123456", 16);

	deliver_free(d);
	free(url);
	peer_free(p);
}

static void stop_abandons_in_flight_without_reporting(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start("127.0.0.1/32", 0, 0);
	char *url = peer_url(p, "/");
	p->hold_ms = 3000;
	for (int i = 0; i < 4; i++)
		assert_int_equal(deliver_submit(d, request("s", url, "{}")), NERR_OK);
	struct deliver_request *r = request("s-retry", "http://127.0.0.1:1/", "{}");
	r->retries = 1000; /* sits in backoff */
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	for (int i = 0; i < 200 && peer_total(p) < 4; i++)
		usleep(5000);
	assert_int_equal(peer_total(p), 4);
	deliver_stop(d);
	assert_int_equal(sink.n, 0);
	r = request("late", url, "{}");
	assert_int_equal(deliver_submit(d, r), NERR_BUSY); /* not taken */
	deliver_request_free(r);
	deliver_free(d);
	free(url);
	peer_free(p);
}

/* ---- email: aiosmtpd as a child process ---- */

struct smtp_peer {
	pid_t pid;
	char dir[64];
	int port;
	unsigned base; /* messages accepted before the current test */
	unsigned rejected_base;
};

/* the plain peer, started for the whole email group; sp is the one the
 * helpers below look at */
static struct smtp_peer plain_peer, *sp = &plain_peer;

static const char *python(void)
{
	return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

static void peer_script(char *out, size_t n)
{
	const char *here = __FILE__;
	const char *slash = strrchr(here, '/');
	snprintf(out, n, "%.*s/smtp_peer.py", slash ? (int)(slash - here) : 1,
		 slash ? here : ".");
}

static unsigned count_files(const char *prefix)
{
	char path[128];
	unsigned n = 0;
	for (;; n++) {
		snprintf(path, sizeof(path), "%s/%s-%u.eml", sp->dir, prefix, n + 1);
		if (access(path, F_OK) != 0)
			return n;
	}
}

/* Starts aiosmtpd into p; extra is NULL or the TLS/AUTH options of
 * smtp_peer.py. */
static int peer_up(struct smtp_peer *p, const char *const *extra)
{
	char script[256], path[128];
	const char *argv[12];
	int n = 0;
	memset(p, 0, sizeof(*p));
	snprintf(p->dir, sizeof(p->dir), "/tmp/nudge-smtp-XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	peer_script(script, sizeof(script));
	argv[n++] = python();
	argv[n++] = script;
	argv[n++] = "serve";
	argv[n++] = p->dir;
	for (; extra && *extra && n < 11; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	p->pid = fork();
	if (p->pid == 0) {
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	snprintf(path, sizeof(path), "%s/port", p->dir);
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(path, "r");
		if (f) {
			int ok = fscanf(f, "%d", &p->port);
			fclose(f);
			if (ok == 1)
				return 0;
		}
		usleep(10 * 1000);
	}
	fprintf(stderr, "smtp peer did not start (is python3-aiosmtpd installed?)\n");
	return -1;
}

static int peer_down(struct smtp_peer *p)
{
	char cmd[128];
	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		waitpid(p->pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int smtp_up(void **state)
{
	return peer_up(&plain_peer, NULL);
}

static int smtp_down(void **state)
{
	return peer_down(&plain_peer);
}

static int smtp_reset(void **state)
{
	char path[128];
	reset_sink(state);
	snprintf(path, sizeof(path), "%s/plan", sp->dir);
	unlink(path);
	sp->base = count_files("msg");
	sp->rejected_base = count_files("rejected");
	return 0;
}

static void smtp_plan(const char *lines)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/plan", sp->dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(lines, f);
	fclose(f);
}

/* What Python's email parser reads in message i (1-based) of this test, or
 * of the refused ones. The caller puts it. */
static struct json_object *smtp_parsed(const char *prefix, unsigned i)
{
	char cmd[512], script[256];
	struct buf out;
	peer_script(script, sizeof(script));
	snprintf(cmd, sizeof(cmd), "%s %s parse %s/%s-%u.eml", python(), script, sp->dir,
		 prefix, i + (strcmp(prefix, "msg") == 0 ? sp->base : sp->rejected_base));
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	buf_init(&out, 0);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&out, chunk, n);
	assert_int_equal(pclose(f), 0);
	struct json_object *o = json_tokener_parse(buf_str(&out));
	buf_fini(&out);
	assert_non_null(o);
	return o;
}

/* The envelope aiosmtpd saw for message i. */
static struct json_object *smtp_envelope(unsigned i)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/msg-%u.json", sp->dir, i + sp->base);
	struct json_object *o = json_object_from_file(path);
	assert_non_null(o);
	return o;
}

static const char *jstr(struct json_object *o, const char *path)
{
	char key[64];
	const char *dot;
	while ((dot = strchr(path, '.'))) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		if (!json_object_object_get_ex(o, key, &o))
			return NULL;
		path = dot + 1;
	}
	if (!json_object_object_get_ex(o, path, &o) ||
	    !json_object_is_type(o, json_type_string))
		return NULL;
	return json_object_get_string(o);
}

static struct json_object *jpart(struct json_object *msg, size_t i)
{
	struct json_object *parts;
	assert_true(json_object_object_get_ex(msg, "parts", &parts));
	assert_true(i < json_object_array_length(parts));
	return json_object_array_get_idx(parts, i);
}

static struct deliver *start_smtp(unsigned connections)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.backoff_base_ms = 5;
	cfg.backoff_cap_ms = 100;
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.port = sp->port;
	cfg.smtp.connections = connections;
	cfg.smtp.helo = "nudge.test";
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	return d;
}

static struct deliver_request *email_req(const char *id, const char *to,
					 const char *subject, const char *html,
					 const char *text)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	struct deliver_email *e = xcalloc(1, sizeof(*e));
	r->kind = DELIVER_EMAIL;
	r->email = e;
	r->envelope_id = xstrdup(id);
	r->timeout_ms = 5000;
	e->from = xstrdup("Zoë's Shop <shop@example.com>");
	e->to = xstrdup(to);
	e->subject = xstrdup(subject);
	e->html = html ? xstrdup(html) : NULL;
	e->text = text ? xstrdup(text) : NULL;
	return r;
}

static void add_email_header(struct deliver_request *r, const char *name,
			     const char *value)
{
	struct deliver_email *e = r->email;
	e->headers = xrealloc(e->headers, (e->nheaders + 1) * sizeof(*e->headers));
	e->headers[e->nheaders].name = xstrdup(name);
	e->headers[e->nheaders].value = xstrdup(value);
	e->nheaders++;
}

static unsigned smtp_wait_msgs(unsigned n)
{
	for (int i = 0; i < 500 && count_files("msg") < sp->base + n; i++)
		usleep(10 * 1000);
	return count_files("msg") - sp->base;
}

static void email_is_multipart_utf8_with_list_unsubscribe(void **state)
{
	struct deliver *d = start_smtp(1);
	const char *html =
		"<html><head><title>x</title><style>p{color:red}</style></head><body>"
		"<p>Hallo Zoë,</p><p>your cart &amp; you: <a "
		"href=\"https://shop.example/cart?id=1&amp;x=2\">finish checkout</a>"
		"</p><ul><li>Tea</li><li>Cups</li></ul></body></html>";
	struct deliver_request *r = email_req("env-mime-1", "Ann Ô <ann@example.org>",
					      "Grüße — 50% off 🎉 for you", html, NULL);
	r->email->reply_to = xstrdup("help@example.com");
	r->email->list_unsubscribe_url = xstrdup("https://t.example/t/u/tok123");
	r->email->list_unsubscribe_mailto = xstrdup("mailto:unsub@example.com?subject=u");
	r->email->one_click = true;
	add_email_header(r, "X-Campaign", "spring ☀");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	struct got *g = &sink.got[0];
	assert_int_equal(g->result, DELIVER_OK);
	assert_int_equal(g->kind, DELIVER_EMAIL);
	assert_int_equal(g->status, 250);
	assert_int_equal(g->attempts, 1);
	assert_false(g->invalid_recipient);
	char qid[16];
	snprintf(qid, sizeof(qid), "Q%u", sp->base + 1);
	assert_string_equal(g->provider_id, qid);
	assert_int_equal(smtp_wait_msgs(1), 1);

	struct json_object *env = smtp_envelope(1);
	assert_string_equal(jstr(env, "mail_from"), "shop@example.com");
	assert_string_equal(
		json_object_to_json_string(json_object_object_get(env, "rcpt_tos")),
		"[ \"ann@example.org\" ]");
	json_object_put(env);

	struct json_object *m = smtp_parsed("msg", 1);
	assert_string_equal(
		json_object_to_json_string(json_object_object_get(m, "defects")), "[ ]");
	assert_string_equal(jstr(m, "content_type"), "multipart/alternative");
	assert_string_equal(jstr(m, "headers.Subject"), "Grüße — 50% off 🎉 for you");
	assert_string_equal(jstr(m, "from_name"), "Zoë's Shop");
	assert_string_equal(jstr(m, "from_addr"), "shop@example.com");
	assert_string_equal(jstr(m, "to_name"), "Ann Ô");
	assert_string_equal(jstr(m, "to_addr"), "ann@example.org");
	assert_string_equal(jstr(m, "headers.Reply-To"), "help@example.com");
	assert_string_equal(jstr(m, "headers.Message-ID"), "<env-mime-1@nudge.test>");
	assert_string_equal(jstr(m, "headers.MIME-Version"), "1.0");
	assert_non_null(jstr(m, "headers.Date"));
	assert_string_equal(jstr(m, "headers.List-Unsubscribe"),
			    "<https://t.example/t/u/tok123>, "
			    "<mailto:unsub@example.com?subject=u>");
	assert_string_equal(jstr(m, "headers.List-Unsubscribe-Post"),
			    "List-Unsubscribe=One-Click");
	assert_string_equal(jstr(m, "headers.X-Campaign"), "spring ☀");
	assert_false(json_object_get_boolean(json_object_object_get(m, "eight_bit")));
	assert_false(json_object_get_boolean(json_object_object_get(m, "bare_lf")));
	assert_true(json_object_get_int(json_object_object_get(m, "max_line")) <= 78);

	struct json_object *text = jpart(m, 0), *htmlp = jpart(m, 1);
	assert_string_equal(jstr(text, "type"), "text/plain");
	assert_string_equal(jstr(text, "charset"), "utf-8");
	assert_string_equal(jstr(text, "cte"), "quoted-printable");
	assert_string_equal(jstr(text, "content"),
			    "Hallo Zoë,\n\nyour cart & you: finish checkout "
			    "(https://shop.example/cart?id=1&x=2)\n\n- Tea\n- Cups\n");
	assert_string_equal(jstr(htmlp, "type"), "text/html");
	assert_string_equal(jstr(htmlp, "charset"), "utf-8");
	assert_string_equal(jstr(htmlp, "content"), html);
	json_object_put(m);
	deliver_free(d);
}

static void text_only_email_round_trips_exactly(void **state)
{
	struct deliver *d = start_smtp(1);
	/* a long line, a line of one dot, "From " at a line start, trailing
	 * blanks, '=' signs and non-ASCII: all must come back as they went */
	const char *text =
		"Hi,\n.\n.hidden\nFrom here on  \nx=1 and y=2, "
		"ääääääääääääääääääääääääääääääääääääääääääääääääääääääää long line "
		"goes on and on and on and on and on and on and on past 76 columns\n"
		"tab\tend\t\n";
	struct deliver_request *r = email_req("env-text", "bob@example.org",
					      "plain ascii subject", NULL, text);
	r->email->list_unsubscribe_mailto = xstrdup("mailto:u@example.com");
	r->email->one_click = true; /* ignored without an https URL */
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(smtp_wait_msgs(1), 1);
	struct json_object *m = smtp_parsed("msg", 1);
	assert_string_equal(jstr(m, "content_type"), "text/plain");
	assert_string_equal(jstr(m, "headers.Subject"), "plain ascii subject");
	assert_string_equal(jstr(m, "headers.List-Unsubscribe"),
			    "<mailto:u@example.com>");
	assert_null(jstr(m, "headers.List-Unsubscribe-Post"));
	assert_null(jstr(m, "headers.Reply-To"));
	assert_string_equal(jstr(jpart(m, 0), "content"), text);
	assert_true(json_object_get_int(json_object_object_get(m, "max_line")) <= 78);
	json_object_put(m);
	deliver_free(d);
}

static void smtp_451_is_retried_with_the_same_message_id(void **state)
{
	struct deliver *d = start_smtp(2);
	smtp_plan("DATA 451 4.3.0 try again later\n");
	struct deliver_request *r = email_req("env-retry-1", "carol@example.org",
					      "Retry me", "<p>hi</p>", NULL);
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(sink.got[0].attempts, 2);
	assert_int_equal(smtp_wait_msgs(1), 1);
	assert_int_equal(count_files("rejected") - sp->rejected_base, 1);
	struct json_object *sent = smtp_parsed("msg", 1);
	struct json_object *refused = smtp_parsed("rejected", 1);
	assert_string_equal(jstr(sent, "headers.Message-ID"), "<env-retry-1@nudge.test>");
	assert_string_equal(jstr(refused, "headers.Message-ID"),
			    jstr(sent, "headers.Message-ID"));
	assert_string_equal(jstr(refused, "headers.Date"), jstr(sent, "headers.Date"));
	json_object_put(sent);
	json_object_put(refused);
	deliver_free(d);
}

static void smtp_4xx_at_rcpt_is_tempfail_after_retries(void **state)
{
	struct deliver *d = start_smtp(1);
	smtp_plan("RCPT 450 4.2.1 mailbox busy\nRCPT 450 4.2.1 mailbox busy\n"
		  "RCPT 450 4.2.1 mailbox busy\n");
	struct deliver_request *r =
		email_req("env-busy", "dave@example.org", "x", NULL, "body");
	r->retries = 2;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_TEMPFAIL);
	assert_int_equal(sink.got[0].attempts, 3);
	assert_int_equal(sink.got[0].status, 450);
	assert_string_equal(sink.got[0].reason, "SMTP 450 at RCPT: 4.2.1 mailbox busy");
	assert_false(sink.got[0].invalid_recipient);
	assert_int_equal(smtp_wait_msgs(0), 0);
	deliver_free(d);
}

static void smtp_5xx_at_rcpt_or_data_is_a_hard_bounce(void **state)
{
	struct deliver *d = start_smtp(1);
	smtp_plan("RCPT 550 5.1.1 no such user\n");
	struct deliver_request *r =
		email_req("env-550", "nobody@example.org", "x", NULL, "body");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_PERMFAIL);
	assert_int_equal(sink.got[0].attempts, 1);
	assert_int_equal(sink.got[0].status, 550);
	assert_true(sink.got[0].invalid_recipient);
	assert_string_equal(sink.got[0].reason, "SMTP 550 at RCPT: 5.1.1 no such user");

	smtp_plan("DATA 554 5.7.1 rejected\n");
	r = email_req("env-554", "erin@example.org", "x", NULL, "body");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(2);
	assert_int_equal(sink.got[1].result, DELIVER_PERMFAIL);
	assert_int_equal(sink.got[1].attempts, 1);
	assert_true(sink.got[1].invalid_recipient);
	assert_string_equal(sink.got[1].reason, "SMTP 554 at DATA: 5.7.1 rejected");

	/* the sender refused: permanent, but not the recipient's fault */
	smtp_plan("MAIL 553 5.7.1 sender not allowed\n");
	r = email_req("env-553", "frank@example.org", "x", NULL, "body");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(3);
	assert_int_equal(sink.got[2].result, DELIVER_PERMFAIL);
	assert_false(sink.got[2].invalid_recipient);
	assert_int_equal(sink.got[2].status, 553);

	/* and the relay still takes the next one on a reused connection */
	assert_int_equal(deliver_submit(d, email_req("env-after", "gina@example.org", "x",
						     NULL, "body")),
			 NERR_OK);
	wait_outcomes(4);
	assert_int_equal(sink.got[3].result, DELIVER_OK);
	assert_int_equal(smtp_wait_msgs(1), 1);
	deliver_free(d);
}

static void header_injection_is_refused_before_sending(void **state)
{
	struct deliver *d = start_smtp(1);
	struct deliver_request *r;
	r = email_req("inj-1", "a@example.org", "Hi\r\nBcc: victim@example.net", NULL,
		      "x");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-2", "a@example.org\r\nBcc: victim@example.net", "Hi", NULL,
		      "x");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-3", "a@example.org", "Hi", NULL, "x");
	free(r->email->from);
	r->email->from = xstrdup("Shop\n<shop@example.com>");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-4", "a@example.org", "Hi", NULL, "x");
	add_email_header(r, "X-Tag", "a\rb");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-5", "a@example.org", "Hi", NULL, "x");
	r->email->list_unsubscribe_url = xstrdup("https://x.example/\r\nBcc: v@x");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-6", "a@example.org", "Hi", NULL, "x");
	add_email_header(r, "Bcc", "victim@example.net");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-7", "not an address", "Hi", NULL, "x");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	r = email_req("inj-8", "a@example.org", "Hi", NULL, "x");
	add_email_header(r, "X Bad: name", "v");
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(8);
	static const char *reasons[] = {"invalid header",
					"invalid header",
					"invalid header",
					"invalid header",
					"invalid header",
					"header not allowed",
					"invalid recipient address",
					"invalid header"};
	for (int i = 0; i < 8; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_PERMFAIL);
		assert_int_equal(sink.got[i].attempts, 0);
		assert_string_equal(sink.got[i].reason, reasons[i]);
		assert_int_equal(sink.got[i].invalid_recipient, i == 6);
	}
	usleep(50 * 1000);
	assert_int_equal(count_files("msg"), sp->base);
	deliver_free(d);
}

static void smtp_connections_are_pooled_and_reused(void **state)
{
	struct deliver *d = start_smtp(1);
	unsigned conns = 0;
	for (int i = 0; i < 5; i++) {
		char id[32];
		snprintf(id, sizeof(id), "pool1-%d", i);
		assert_int_equal(
			deliver_submit(d, email_req(id, "h@example.org", "s", NULL, "b")),
			NERR_OK);
	}
	wait_outcomes(5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_OK);
		conns += sink.got[i].connections;
	}
	assert_int_equal(conns, 1);
	assert_int_equal(smtp_wait_msgs(5), 5);
	int port0 = 0;
	for (unsigned i = 1; i <= 5; i++) { /* one client port: one connection */
		struct json_object *env = smtp_envelope(i);
		int port = json_object_get_int(json_object_object_get(env, "peer"));
		if (i == 1)
			port0 = port;
		assert_int_equal(port, port0);
		json_object_put(env);
	}
	deliver_free(d);

	/* four connections, twenty messages at once: never more than four */
	smtp_reset(state);
	d = start_smtp(4);
	for (int i = 0; i < 20; i++) {
		char id[32];
		snprintf(id, sizeof(id), "pool4-%d", i);
		assert_int_equal(
			deliver_submit(d, email_req(id, "h@example.org", "s", NULL, "b")),
			NERR_OK);
	}
	wait_outcomes(20);
	conns = 0;
	for (int i = 0; i < 20; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_OK);
		conns += sink.got[i].connections;
	}
	assert_true(conns >= 1 && conns <= 4);
	assert_int_equal(smtp_wait_msgs(20), 20);
	deliver_free(d);
}

static void smtp_relay_down_is_tempfail(void **state)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.backoff_base_ms = 5;
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.port = ntohs(sa.sin_port);
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	struct deliver_request *r =
		email_req("env-down", "i@example.org", "s", NULL, "b");
	r->retries = 1;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	/* and email with no relay configured at all */
	struct deliver *d2 = start(NULL, 0, 0);
	assert_int_equal(deliver_submit(d2, email_req("env-none", "i@example.org", "s",
						      NULL, "b")),
			 NERR_OK);
	wait_outcomes(2);
	for (int i = 0; i < 2; i++) {
		if (strcmp(sink.got[i].id, "env-down") == 0) {
			assert_int_equal(sink.got[i].result, DELIVER_TEMPFAIL);
			assert_int_equal(sink.got[i].attempts, 2);
			assert_int_equal(sink.got[i].status, 0);
		} else {
			assert_int_equal(sink.got[i].result, DELIVER_PERMFAIL);
			assert_string_equal(sink.got[i].reason, "email not configured");
		}
	}
	deliver_free(d);
	deliver_free(d2);
}

static void smtp_config_is_checked(void **state)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.tls = "sometimes";
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_INVAL);
	assert_string_equal(msg.field, "smtp.tls");
	cfg.smtp.tls = "starttls";
	cfg.smtp.helo = "bad helo";
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_INVAL);
	assert_string_equal(msg.field, "smtp.helo");
	cfg.smtp.helo = NULL;
	cfg.sms.base_url = "ftp://x";
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_INVAL);
	assert_string_equal(msg.field, "sms.base_url");
	assert_null(d);
}

static struct deliver *start_tls(struct smtp_peer *p, const char *tls,
				 const char *password, bool trust)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	char ca[128];
	snprintf(ca, sizeof(ca), "%s/cert.pem", p->dir);
	deliver_config_default(&cfg);
	cfg.backoff_base_ms = 5;
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.port = p->port;
	cfg.smtp.tls = tls;
	cfg.smtp.username = "nudge";
	cfg.smtp.password = password;
	cfg.smtp.connections = 1;
	cfg.smtp.helo = "nudge.test";
	cfg.smtp.ca_file = trust ? ca : NULL;
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	return d;
}

static struct smtp_peer tls_peer;

static int tls_down(void **state)
{
	sp = &plain_peer;
	return tls_peer.pid > 0 ? peer_down(&tls_peer) : 0;
}

static void smtp_starttls_and_auth(void **state)
{
	struct smtp_peer *tp = &tls_peer;
	const char *extra[] = {"--tls", "starttls", "--auth", "nudge:s3cret", NULL};
	assert_int_equal(peer_up(tp, extra), 0);
	sp = tp;

	struct deliver *d = start_tls(tp, "starttls", "s3cret", true);
	for (int i = 0; i < 3; i++)
		assert_int_equal(
			deliver_submit(d, email_req(i ? "tls-2" : "tls-1",
						    "ann@example.org", "s", NULL, "b")),
			NERR_OK);
	wait_outcomes(3);
	unsigned conns = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_OK);
		conns += sink.got[i].connections;
	}
	assert_int_equal(conns, 1); /* one TLS session, authenticated once */
	assert_int_equal(smtp_wait_msgs(3), 3);
	struct json_object *env = smtp_envelope(1);
	assert_true(json_object_get_boolean(json_object_object_get(env, "tls")));
	assert_string_equal(jstr(env, "auth"), "nudge");
	json_object_put(env);
	deliver_free(d);

	/* a wrong password, an unverifiable certificate, no TLS at all: the
	 * configuration is wrong, not the message -- temporary, never a bounce */
	reset_sink(state);
	d = start_tls(tp, "starttls", "wrong", true);
	assert_int_equal(
		deliver_submit(d, email_req("tls-pw", "ann@example.org", "s", NULL, "b")),
		NERR_OK);
	struct deliver *d2 = start_tls(tp, "starttls", "s3cret", false);
	assert_int_equal(deliver_submit(d2, email_req("tls-ca", "ann@example.org", "s",
						      NULL, "b")),
			 NERR_OK);
	struct deliver *d3 = start_tls(tp, "none", NULL, false);
	assert_int_equal(deliver_submit(d3, email_req("tls-no", "ann@example.org", "s",
						      NULL, "b")),
			 NERR_OK);
	wait_outcomes(3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_TEMPFAIL);
		assert_false(sink.got[i].invalid_recipient);
		if (strcmp(sink.got[i].id, "tls-pw") == 0)
			assert_int_equal(sink.got[i].status, 535);
		if (strcmp(sink.got[i].id, "tls-no") == 0)
			assert_int_equal(sink.got[i].status, 530);
	}
	assert_int_equal(count_files("msg") - sp->base, 3);
	deliver_free(d);
	deliver_free(d2);
	deliver_free(d3);
}

static void smtp_implicit_tls(void **state)
{
	struct smtp_peer *tp = &tls_peer;
	const char *extra[] = {"--tls", "tls", "--auth", "nudge:s3cret", NULL};
	assert_int_equal(peer_up(tp, extra), 0);
	sp = tp;
	struct deliver *d = start_tls(tp, "tls", "s3cret", true);
	assert_int_equal(deliver_submit(d, email_req("smtps-1", "ann@example.org",
						     "Grüße", "<p>x</p>", NULL)),
			 NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(smtp_wait_msgs(1), 1);
	struct json_object *env = smtp_envelope(1);
	assert_true(json_object_get_boolean(json_object_object_get(env, "tls")));
	assert_string_equal(jstr(env, "auth"), "nudge");
	json_object_put(env);
	struct json_object *m = smtp_parsed("msg", 1);
	assert_string_equal(jstr(m, "headers.Subject"), "Grüße");
	json_object_put(m);
	deliver_free(d);
}

static void smtp_session_closed_by_the_relay_is_replaced(void **state)
{
	struct smtp_peer *tp = &tls_peer;
	const char *extra[] = {"--timeout", "0.3", NULL};
	assert_int_equal(peer_up(tp, extra), 0);
	sp = tp;
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	deliver_config_default(&cfg);
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.port = tp->port;
	cfg.smtp.connections = 1;
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	assert_int_equal(
		deliver_submit(d, email_req("idle-1", "a@example.org", "s", NULL, "b")),
		NERR_OK);
	wait_outcomes(1);
	usleep(800 * 1000); /* the relay drops the idle session meanwhile */
	/* no retries: the dead session must not cost the message an attempt */
	assert_int_equal(
		deliver_submit(d, email_req("idle-2", "a@example.org", "s", NULL, "b")),
		NERR_OK);
	wait_outcomes(2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_OK);
		assert_int_equal(sink.got[i].attempts, 1);
		assert_int_equal(sink.got[i].connections, 1);
	}
	assert_int_equal(smtp_wait_msgs(2), 2);
	deliver_free(d);
}

/* ---- sms and push: the HTTP peer stands for the provider ---- */

static struct deliver *start_providers(struct peer *p)
{
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d/", p->port);
	deliver_config_default(&cfg);
	cfg.backoff_base_ms = 5;
	cfg.backoff_cap_ms = 2000;
	/* no allow list: configured endpoints are not guarded */
	cfg.sms.base_url = base;
	cfg.sms.account_sid = "AC123";
	cfg.sms.auth_token = "tok";
	cfg.sms.from = "+15005550006";
	cfg.sms.status_callback = "https://cb.example/s?x=1";
	cfg.push.base_url = base;
	cfg.push.project_id = "my-proj";
	cfg.push.bearer_token = "ya29.token";
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	return d;
}

static struct deliver_request *sms_req(const char *id, const char *to, const char *body)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	r->kind = DELIVER_SMS;
	r->sms = xcalloc(1, sizeof(*r->sms));
	r->envelope_id = xstrdup(id);
	r->sms->to = xstrdup(to);
	r->sms->body = xstrdup(body);
	r->timeout_ms = 5000;
	return r;
}

static struct deliver_request *push_req(const char *id, const char *token,
					const char *title, const char *data)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	r->kind = DELIVER_PUSH;
	r->push = xcalloc(1, sizeof(*r->push));
	r->envelope_id = xstrdup(id);
	r->push->token = xstrdup(token);
	r->push->title = title ? xstrdup(title) : NULL;
	r->push->body = xstrdup("We miss you — come back");
	r->push->image = xstrdup("https://img.example/a.png");
	r->push->data_json = data ? xstrdup(data) : NULL;
	r->timeout_ms = 5000;
	return r;
}

static void sms_request_has_the_twilio_shape(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	p->status = 201;
	p->answer = "{\"sid\":\"SM0123\",\"status\":\"queued\"}";
	assert_int_equal(
		deliver_submit(d, sms_req("sms-1", "+14155550100", "Hi é&x=1 +")),
		NERR_OK);
	wait_outcomes(1);
	struct got *g = &sink.got[0];
	assert_int_equal(g->result, DELIVER_OK);
	assert_int_equal(g->kind, DELIVER_SMS);
	assert_int_equal(g->status, 201);
	assert_string_equal(g->provider_id, "SM0123");
	assert_string_equal(g->reason, "HTTP 201 (queued)");
	struct rec *rec = &p->recs[0];
	assert_string_equal(rec->method, "POST");
	assert_string_equal(rec->path, "/2010-04-01/Accounts/AC123/Messages.json");
	assert_string_equal(rec->ctype, "application/x-www-form-urlencoded");
	assert_string_equal(rec->auth, "Basic QUMxMjM6dG9r"); /* AC123:tok */
	assert_string_equal(rec->idem, "sms-1");
	assert_string_equal(rec->body,
			    "To=%2B14155550100&From=%2B15005550006"
			    "&Body=Hi%20%C3%A9%26x%3D1%20%2B"
			    "&StatusCallback=https%3A%2F%2Fcb.example%2Fs%3Fx%3D1");
	deliver_free(d);
	peer_free(p);
}

static void sms_invalid_number_is_permfail_invalid_recipient(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	p->status = 400;
	p->answer = "{\"code\":21211,\"message\":\"The 'To' number +15551234567 is not "
		    "a valid phone number.\",\"status\":400}";
	struct deliver_request *r = sms_req("sms-bad", "+15551234567", "x");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_PERMFAIL);
	assert_true(sink.got[0].invalid_recipient);
	assert_int_equal(sink.got[0].attempts, 1);
	assert_string_equal(
		sink.got[0].reason,
		"HTTP 400 (Twilio 21211: The 'To' number +15551234567 is not a "
		"valid phone number.)");

	/* another 400 is permanent, but says nothing about the number */
	p->answer = "{\"code\":21606,\"message\":\"The From phone number is not a valid, "
		    "SMS-capable number\",\"status\":400}";
	assert_int_equal(deliver_submit(d, sms_req("sms-from", "+15551234567", "x")),
			 NERR_OK);
	wait_outcomes(2);
	assert_int_equal(sink.got[1].result, DELIVER_PERMFAIL);
	assert_false(sink.got[1].invalid_recipient);

	/* a number that is not E.164 never leaves */
	assert_int_equal(deliver_submit(d, sms_req("sms-local", "0155 1234", "x")),
			 NERR_OK);
	wait_outcomes(3);
	assert_int_equal(sink.got[2].result, DELIVER_PERMFAIL);
	assert_true(sink.got[2].invalid_recipient);
	assert_int_equal(sink.got[2].attempts, 0);
	assert_string_equal(sink.got[2].reason, "invalid phone number");
	assert_int_equal(peer_total(p), 2);
	deliver_free(d);
	peer_free(p);
}

static void sms_429_and_5xx_are_retried(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	p->fail_first = 2;
	p->fail_status = 429;
	p->status = 201;
	p->answer = "{\"sid\":\"SM9\",\"status\":\"accepted\"}";
	struct deliver_request *r = sms_req("sms-429", "+447700900123", "x");
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_OK);
	assert_int_equal(sink.got[0].attempts, 3);
	assert_string_equal(sink.got[0].provider_id, "SM9");
	p->status = 503;
	r = sms_req("sms-503", "+447700900123", "x");
	r->retries = 1;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(2);
	assert_int_equal(sink.got[1].result, DELIVER_TEMPFAIL);
	assert_int_equal(sink.got[1].attempts, 2);
	deliver_free(d);
	peer_free(p);
}

static void sms_rate_limit_spaces_requests(void **state)
{
	struct peer *p = peer_start();
	struct deliver_config cfg;
	struct deliver *d = NULL;
	struct nerr_msg msg;
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", p->port);
	deliver_config_default(&cfg);
	cfg.sms.base_url = base;
	cfg.sms.account_sid = "AC1";
	cfg.sms.auth_token = "t";
	cfg.sms.from = "+15005550006";
	cfg.sms.rate_per_s = 40;
	assert_int_equal(deliver_start(&cfg, on_outcome, &sink, &d, &msg), NERR_OK);
	p->status = 201;
	p->answer = "{\"sid\":\"SM1\"}";
	/* a second's worth (40) goes at once, the other 20 at 40/s: >= 0.5 s */
	for (int i = 0; i < 60; i++)
		assert_int_equal(deliver_submit(d, sms_req("rate", "+14155550100", "x")),
				 NERR_OK);
	wait_outcomes(60);
	int64_t longest = 0;
	for (int i = 0; i < 60; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_OK);
		if (sink.got[i].duration_ms > longest)
			longest = sink.got[i].duration_ms;
	}
	assert_true(longest >= 450);
	assert_true(longest < 5000);
	assert_int_equal(peer_total(p), 60);
	deliver_free(d);
	peer_free(p);
}

static void e164_numbers(void **state)
{
	static const char *good[] = {"+14155550100", "+447700900123", "+4930123456",
				     "+861012345678901"};
	static const char *bad[] = {"14155550100",
				    "+04155550100",
				    "+1 415 555 0100",
				    "+1415555010a",
				    "+123456",
				    "+1234567890123456",
				    "",
				    "+",
				    "+1-415-555-0100"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!deliver_e164_valid(good[i]))
			fail_msg("%s refused", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (deliver_e164_valid(bad[i]))
			fail_msg("%s accepted", bad[i]);
	assert_false(deliver_e164_valid(NULL));
}

static void push_request_has_the_fcm_shape(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	p->answer =
		"{\"name\":\"projects/my-proj/messages/0:1500415314455276%31bd1c96\"}";
	assert_int_equal(
		deliver_submit(d, push_req("push-1", "fcm-token-abc", "Hej 👋",
					   "{\"cart\":\"42\",\"deep\":\"app://c\"}")),
		NERR_OK);
	wait_outcomes(1);
	struct got *g = &sink.got[0];
	assert_int_equal(g->result, DELIVER_OK);
	assert_int_equal(g->kind, DELIVER_PUSH);
	assert_string_equal(g->provider_id,
			    "projects/my-proj/messages/0:1500415314455276%31bd1c96");
	struct rec *rec = &p->recs[0];
	assert_string_equal(rec->path, "/v1/projects/my-proj/messages:send");
	assert_string_equal(rec->auth, "Bearer ya29.token");
	assert_string_equal(rec->ctype, "application/json; charset=utf-8");
	struct json_object *o = json_tokener_parse(rec->body);
	assert_non_null(o);
	assert_string_equal(jstr(o, "message.token"), "fcm-token-abc");
	assert_string_equal(jstr(o, "message.notification.title"), "Hej 👋");
	assert_string_equal(jstr(o, "message.notification.body"),
			    "We miss you — come back");
	assert_string_equal(jstr(o, "message.notification.image"),
			    "https://img.example/a.png");
	assert_string_equal(jstr(o, "message.data.cart"), "42");
	assert_string_equal(jstr(o, "message.data.deep"), "app://c");
	json_object_put(o);
	deliver_free(d);
	peer_free(p);
}

static void push_unregistered_token_is_invalid_recipient(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	p->status = 404;
	p->answer = "{\"error\":{\"code\":404,\"message\":\"Requested entity was not "
		    "found.\",\"status\":\"NOT_FOUND\",\"details\":[{\"@type\":\"type."
		    "googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":"
		    "\"UNREGISTERED\"}]}}";
	struct deliver_request *r = push_req("push-gone", "old-token", "t", NULL);
	r->retries = 3;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(1);
	assert_int_equal(sink.got[0].result, DELIVER_PERMFAIL);
	assert_true(sink.got[0].invalid_recipient);
	assert_int_equal(sink.got[0].attempts, 1);
	assert_string_equal(sink.got[0].reason, "HTTP 404 (UNREGISTERED)");

	p->status = 400;
	p->answer =
		"{\"error\":{\"code\":400,\"message\":\"The registration token is not a "
		"valid FCM registration token\",\"status\":\"INVALID_ARGUMENT\","
		"\"details\":[{\"@type\":\"type.googleapis.com/google.firebase.fcm."
		"v1.FcmError\",\"errorCode\":\"INVALID_ARGUMENT\"}]}}";
	assert_int_equal(deliver_submit(d, push_req("push-bad", "garbage", "t", NULL)),
			 NERR_OK);
	wait_outcomes(2);
	assert_int_equal(sink.got[1].result, DELIVER_PERMFAIL);
	assert_true(sink.got[1].invalid_recipient);

	/* an invalid argument elsewhere is not the token's fault */
	p->answer =
		"{\"error\":{\"code\":400,\"message\":\"Invalid value at "
		"'message.notification.image'\",\"status\":\"INVALID_ARGUMENT\","
		"\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
		"\"fieldViolations\":[{\"field\":\"message.notification.image\"}]}]}}";
	assert_int_equal(deliver_submit(d, push_req("push-img", "tok", "t", NULL)),
			 NERR_OK);
	wait_outcomes(3);
	assert_int_equal(sink.got[2].result, DELIVER_PERMFAIL);
	assert_false(sink.got[2].invalid_recipient);

	/* 503 is temporary */
	p->status = 503;
	p->answer = "{\"error\":{\"code\":503,\"status\":\"UNAVAILABLE\"}}";
	r = push_req("push-503", "tok", "t", NULL);
	r->retries = 1;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(4);
	assert_int_equal(sink.got[3].result, DELIVER_TEMPFAIL);
	assert_int_equal(sink.got[3].attempts, 2);
	assert_false(sink.got[3].invalid_recipient);
	deliver_free(d);
	peer_free(p);
}

static void push_data_must_be_an_object_of_strings(void **state)
{
	struct peer *p = peer_start();
	struct deliver *d = start_providers(p);
	assert_int_equal(deliver_submit(d, push_req("pd-1", "tok", "t", "{\"n\":1}")),
			 NERR_OK);
	assert_int_equal(deliver_submit(d, push_req("pd-2", "tok", "t", "[\"a\"]")),
			 NERR_OK);
	assert_int_equal(
		deliver_submit(d, push_req("pd-3", "tok", "t", "{\"a\":\"b\"} x")),
		NERR_OK);
	assert_int_equal(deliver_submit(d, push_req("pd-4", "to ken", "t", NULL)),
			 NERR_OK);
	wait_outcomes(4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(sink.got[i].result, DELIVER_PERMFAIL);
		assert_int_equal(sink.got[i].attempts, 0);
		assert_int_equal(sink.got[i].invalid_recipient, i == 3);
	}
	/* and without notification fields: a data-only message */
	struct deliver_request *r = push_req("pd-5", "tok", NULL, "{\"a\":\"b\"}");
	free(r->push->body);
	free(r->push->image);
	r->push->body = r->push->image = NULL;
	assert_int_equal(deliver_submit(d, r), NERR_OK);
	wait_outcomes(5);
	assert_int_equal(sink.got[4].result, DELIVER_OK);
	assert_string_equal(p->recs[0].body,
			    "{\"message\":{\"token\":\"tok\",\"data\":{\"a\":\"b\"}}}");
	assert_int_equal(peer_total(p), 1);
	deliver_free(d);
	peer_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(
			post_carries_body_headers_and_a_verifiable_signature, reset_sink),
		cmocka_unit_test_setup(put_without_secret_sends_no_signature, reset_sink),
		cmocka_unit_test_setup(tempfail_503_is_retried_until_success, reset_sink),
		cmocka_unit_test_setup(last_tempfail_is_reported_final, reset_sink),
		cmocka_unit_test_setup(retry_after_is_honoured, reset_sink),
		cmocka_unit_test_setup(status_400_is_permfail_without_retry, reset_sink),
		cmocka_unit_test_setup(timeout_is_tempfail_after_retries, reset_sink),
		cmocka_unit_test_setup(connection_refused_is_tempfail, reset_sink),
		cmocka_unit_test(guard_refuses_internal_addresses_by_default),
		cmocka_unit_test(allow_list_opens_ranges_and_hosts),
		cmocka_unit_test(bad_allow_entry_is_named),
		cmocka_unit_test_setup(guard_refuses_loopback_in_flight, reset_sink),
		cmocka_unit_test_setup(bad_requests_are_permfail, reset_sink),
		cmocka_unit_test_setup(connections_are_reused, reset_sink),
		cmocka_unit_test_setup(a_slow_receiver_does_not_hold_up_others,
				       reset_sink),
		cmocka_unit_test_setup(allowed_host_name_may_resolve_to_loopback,
				       reset_sink),
		cmocka_unit_test_setup(per_host_cap_limits_concurrent_requests,
				       reset_sink),
		cmocka_unit_test_setup(global_cap_limits_concurrent_requests, reset_sink),
		cmocka_unit_test_setup(response_is_captured_up_to_the_cap, reset_sink),
		cmocka_unit_test_setup(stop_abandons_in_flight_without_reporting,
				       reset_sink),
		cmocka_unit_test_setup(sms_request_has_the_twilio_shape, reset_sink),
		cmocka_unit_test_setup(sms_invalid_number_is_permfail_invalid_recipient,
				       reset_sink),
		cmocka_unit_test_setup(sms_429_and_5xx_are_retried, reset_sink),
		cmocka_unit_test_setup(sms_rate_limit_spaces_requests, reset_sink),
		cmocka_unit_test(e164_numbers),
		cmocka_unit_test_setup(push_request_has_the_fcm_shape, reset_sink),
		cmocka_unit_test_setup(push_unregistered_token_is_invalid_recipient,
				       reset_sink),
		cmocka_unit_test_setup(push_data_must_be_an_object_of_strings,
				       reset_sink),
	};
	const struct CMUnitTest email[] = {
		cmocka_unit_test_setup(email_is_multipart_utf8_with_list_unsubscribe,
				       smtp_reset),
		cmocka_unit_test_setup(text_only_email_round_trips_exactly, smtp_reset),
		cmocka_unit_test_setup(smtp_451_is_retried_with_the_same_message_id,
				       smtp_reset),
		cmocka_unit_test_setup(smtp_4xx_at_rcpt_is_tempfail_after_retries,
				       smtp_reset),
		cmocka_unit_test_setup(smtp_5xx_at_rcpt_or_data_is_a_hard_bounce,
				       smtp_reset),
		cmocka_unit_test_setup(header_injection_is_refused_before_sending,
				       smtp_reset),
		cmocka_unit_test_setup(smtp_connections_are_pooled_and_reused,
				       smtp_reset),
		cmocka_unit_test_setup(smtp_relay_down_is_tempfail, smtp_reset),
		cmocka_unit_test_setup(smtp_config_is_checked, smtp_reset),
		cmocka_unit_test_setup_teardown(smtp_starttls_and_auth, reset_sink,
						tls_down),
		cmocka_unit_test_setup_teardown(smtp_implicit_tls, reset_sink, tls_down),
		cmocka_unit_test_setup_teardown(
			smtp_session_closed_by_the_relay_is_replaced, reset_sink,
			tls_down),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	failed += cmocka_run_group_tests(email, smtp_up, smtp_down);
	return failed;
}
