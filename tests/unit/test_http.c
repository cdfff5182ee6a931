/*
 * test_http.c -- the HTTP server against real sockets on 127.0.0.1.
 *
 * Each test starts a server on port 0 on a libuv loop in a background thread
 * and talks to it with blocking sockets. The handler echoes (/echo), answers
 * later from a uv_timer (/delay?ms=N&id=X, the shape of ingest's answer after
 * group commit), or reports the connection count (/count). A few tests drive
 * the socketless connection (http_conn_feed) from the test thread.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/mem.h"
#include "ingest/http.h"

/* ---- the server under test ---- */

struct tsrv {
	uv_loop_t loop;
	uv_async_t stop;
	uv_thread_t thread;
	uv_sem_t ready;
	struct http_limits lim;
	struct http_server *srv;
	int port;
	atomic_int delayed_answers; /* /delay answers given (also to gone clients) */
	atomic_int handled;
	atomic_bool stopped;
};

struct delayed {
	uv_timer_t timer;
	struct http_req *req;
	struct tsrv *ts;
	char id[32];
};

static void on_delay_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_delay(uv_timer_t *t)
{
	struct delayed *d = t->data;
	char body[64];
	int n = snprintf(body, sizeof(body), "delayed:%s", d->id);

	http_respond(d->req, 200, "text/plain", body, (size_t)n, NULL);
	atomic_fetch_add(&d->ts->delayed_answers, 1);
	uv_close((uv_handle_t *)&d->timer, on_delay_closed);
}

/* Finds key=value in a raw query string; returns a pointer into a static buffer. */
static const char *query_get(const char *q, const char *key, char *out, size_t outsz)
{
	size_t klen = strlen(key);

	while (*q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);

		if (len > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
			snprintf(out, outsz, "%.*s", (int)(len - klen - 1), q + klen + 1);
			return out;
		}
		q += len;
		if (*q)
			q++;
	}
	return NULL;
}

static void handler(void *ud, struct http_req *r)
{
	struct tsrv *ts = ud;
	const char *path = http_req_path(r);

	atomic_fetch_add(&ts->handled, 1);
	if (strcmp(path, "/echo") == 0) {
		struct buf b;
		size_t blen;
		const char *body = http_req_body(r, &blen);
		const char *xt = http_req_header(r, "x-test");

		buf_init(&b, 0);
		buf_printf(&b, "%s %s ?%s x-test=[%s]\n", http_req_method(r), path,
			   http_req_query(r), xt ? xt : "(none)");
		buf_append(&b, body, blen);
		http_respond(r, 200, "text/plain", b.data, b.len, "X-Echo: 1\r\n");
		buf_fini(&b);
	} else if (strcmp(path, "/delay") == 0) {
		struct delayed *d = xcalloc(1, sizeof(*d));
		char ms[16];

		d->req = r;
		d->ts = ts;
		if (!query_get(http_req_query(r), "id", d->id, sizeof(d->id)))
			snprintf(d->id, sizeof(d->id), "?");
		if (!query_get(http_req_query(r), "ms", ms, sizeof(ms)))
			snprintf(ms, sizeof(ms), "10");
		uv_timer_init(&ts->loop, &d->timer);
		d->timer.data = d;
		uv_timer_start(&d->timer, on_delay, (uint64_t)atoi(ms), 0);
	} else if (strcmp(path, "/big") == 0) {
		static char big[1 << 20];

		memset(big, 'x', sizeof(big));
		http_respond(r, 200, "text/plain", big, sizeof(big), NULL);
	} else if (strcmp(path, "/count") == 0) {
		char body[32];
		int n = snprintf(body, sizeof(body), "%u",
				 http_server_connection_count(ts->srv));

		http_respond(r, 200, "text/plain", body, (size_t)n, NULL);
	} else {
		http_respond_error(r, 404, "not_found", NULL, "No such route.");
	}
}

static void on_shutdown_done(void *ud)
{
	struct tsrv *ts = ud;

	atomic_store(&ts->stopped, true);
}

static void on_stop(uv_async_t *a)
{
	struct tsrv *ts = a->data;

	http_server_shutdown(ts->srv, on_shutdown_done, ts);
	uv_close((uv_handle_t *)&ts->stop, NULL);
}

static void server_thread(void *arg)
{
	struct tsrv *ts = arg;
	struct nerr_msg msg;

	assert_int_equal(uv_loop_init(&ts->loop), 0);
	assert_int_equal(http_server_new(&ts->loop, &ts->lim, handler, ts, &ts->srv),
			 NERR_OK);
	assert_int_equal(http_server_listen(ts->srv, "127.0.0.1", 0, &msg), NERR_OK);
	ts->port = http_server_port(ts->srv);
	uv_async_init(&ts->loop, &ts->stop, on_stop);
	ts->stop.data = ts;
	uv_sem_post(&ts->ready);
	uv_run(&ts->loop, UV_RUN_DEFAULT);
	assert_true(atomic_load(&ts->stopped));
	http_server_free(ts->srv);
	assert_int_equal(uv_loop_close(&ts->loop), 0);
}

static struct tsrv *start_server(const struct http_limits *lim)
{
	struct tsrv *ts = xcalloc(1, sizeof(*ts));

	if (lim)
		ts->lim = *lim;
	else
		http_limits_default(&ts->lim);
	uv_sem_init(&ts->ready, 0);
	assert_int_equal(uv_thread_create(&ts->thread, server_thread, ts), 0);
	uv_sem_wait(&ts->ready);
	assert_true(ts->port > 0);
	return ts;
}

static void stop_server_async(struct tsrv *ts)
{
	uv_async_send(&ts->stop);
}

static void join_server(struct tsrv *ts)
{
	uv_thread_join(&ts->thread);
	uv_sem_destroy(&ts->ready);
	free(ts);
}

static void stop_server(struct tsrv *ts)
{
	stop_server_async(ts);
	join_server(ts);
}

static struct http_limits small_limits(void)
{
	struct http_limits lim;

	http_limits_default(&lim);
	lim.idle_timeout_ms = 5000;
	lim.read_timeout_ms = 5000;
	return lim;
}

/* ---- a tiny blocking client ---- */

struct cli {
	int fd;
	size_t len;
	char buf[1 << 16];
};

struct resp {
	int status;
	char head[4096];
	char body[1 << 15];
	size_t body_len;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct cli *cli_connect(int port)
{
	struct cli *c = xcalloc(1, sizeof(*c));
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 5};
	int one = 1;

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
}

static void cli_close(struct cli *c)
{
	close(c->fd);
	free(c);
}

/* Returns 0 if everything was sent, -1 if the server closed. */
static int cli_send_n(struct cli *c, const char *s, size_t n)
{
	while (n) {
		ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);

		if (k <= 0)
			return -1;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

static int cli_send(struct cli *c, const char *s)
{
	return cli_send_n(c, s, strlen(s));
}

static int cli_fill(struct cli *c)
{
	ssize_t n;

	if (c->len >= sizeof(c->buf) - 1)
		return -1;
	n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
	if (n <= 0)
		return -1;
	c->len += (size_t)n;
	return 0;
}

/* Reads one response (1xx included). Returns 0, or -1 on EOF/timeout. */
static int cli_read_resp(struct cli *c, struct resp *r)
{
	char *end, *cl;
	size_t hlen, blen = 0;

	memset(r, 0, sizeof(*r));
	while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
		if (cli_fill(c))
			return -1;
	}
	hlen = (size_t)(end - c->buf) + 4;
	assert_true(hlen < sizeof(r->head));
	memcpy(r->head, c->buf, hlen);
	r->head[hlen] = '\0';
	assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
	cl = strcasestr(r->head, "\r\ncontent-length:");
	if (cl)
		blen = (size_t)strtoul(cl + 17, NULL, 10);
	assert_true(blen < sizeof(r->body));
	while (c->len < hlen + blen) {
		if (cli_fill(c))
			return -1;
	}
	memcpy(r->body, c->buf + hlen, blen);
	r->body[blen] = '\0';
	r->body_len = blen;
	memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
	c->len -= hlen + blen;
	return 0;
}

static bool has_header(const struct resp *r, const char *line)
{
	return strcasestr(r->head, line) != NULL;
}

/* Waits up to ms for the server to close; returns the time it took, or -1. */
static long cli_wait_closed(struct cli *c, int ms)
{
	uint64_t t0 = now_ms();

	for (;;) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		long left = ms - (long)(now_ms() - t0);
		char tmp[4096];
		ssize_t n;

		if (left <= 0)
			return -1;
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		n = recv(c->fd, tmp, sizeof(tmp), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return (long)(now_ms() - t0);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return (long)(now_ms() - t0);
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* One request on a fresh connection; returns the status. */
static int one_shot(int port, const char *req, struct resp *r)
{
	struct cli *c = cli_connect(port);
	int st;

	assert_int_equal(cli_send(c, req), 0);
	st = cli_read_resp(c, r) ? -1 : r->status;
	cli_close(c);
	return st;
}

/* ---- tests ---- */

static void test_keepalive_reuses_connection(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c = cli_connect(ts->port);
	struct resp r;

	(void)state;
	assert_int_equal(cli_send(c, "GET /echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "GET /echo ?a=1 x-test=[(none)]\n");
	assert_true(has_header(&r, "\r\nX-Echo: 1\r\n"));
	assert_true(has_header(&r, "\r\nDate: "));
	assert_false(has_header(&r, "Connection: close"));
	assert_int_equal(cli_send(c, "GET /count HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "1");
	cli_close(c);
	stop_server(ts);
}

static void test_query_and_header_values(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct resp r;

	(void)state;
	assert_int_equal(one_shot(ts->port,
				  "GET /echo?x=%20y&z HTTP/1.1\r\nx-TEST:   padded  \r\n"
				  "X-Test: second\r\n\r\n",
				  &r),
			 200);
	assert_string_equal(r.body, "GET /echo ?x=%20y&z x-test=[padded]\n");
	assert_int_equal(one_shot(ts->port,
				  "GET http://example.com/echo?q=1 HTTP/1.1\r\n\r\n", &r),
			 200);
	assert_string_equal(r.body, "GET /echo ?q=1 x-test=[(none)]\n");
	assert_int_equal(one_shot(ts->port, "GET /nope HTTP/1.1\r\n\r\n", &r), 404);
	assert_string_equal(
		r.body,
		"{\"error\":{\"code\":\"not_found\",\"message\":\"No such route.\"}}");
	stop_server(ts);
}

static void test_pipelined_async_answers_go_out_in_order(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c = cli_connect(ts->port);
	struct resp r;

	(void)state;
	assert_int_equal(cli_send(c,
				  "GET /delay?ms=200&id=a HTTP/1.1\r\n\r\n"
				  "GET /delay?ms=20&id=b HTTP/1.1\r\n\r\n"
				  "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"),
			 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "delayed:a");
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "delayed:b");
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "POST /echo ? x-test=[(none)]\nxyz");
	cli_close(c);
	stop_server(ts);
}

static void test_pipeline_cap_pauses_then_resumes(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	struct resp r;
	char req[4096] = "";

	(void)state;
	lim.max_pipelined = 2;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	for (int i = 0; i < 7; i++) {
		char one[128];

		snprintf(one, sizeof(one), "GET /delay?ms=%d&id=%d HTTP/1.1\r\n\r\n",
			 70 - i * 10, i);
		strcat(req, one);
	}
	assert_int_equal(cli_send(c, req), 0);
	for (int i = 0; i < 7; i++) {
		char want[32];

		snprintf(want, sizeof(want), "delayed:%d", i);
		assert_int_equal(cli_read_resp(c, &r), 0);
		assert_string_equal(r.body, want);
	}
	cli_close(c);
	stop_server(ts);
}

static void test_queued_body_bytes_pause_reading(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	struct resp r;
	char body[701], one[1024], req[4096] = "";

	(void)state;
	lim.max_body_bytes = 1024;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	memset(body, 'b', 700);
	body[700] = '\0';
	for (int i = 0; i < 3; i++) {
		snprintf(one, sizeof(one),
			 "POST /delay?ms=%d&id=%d HTTP/1.1\r\nContent-Length: "
			 "700\r\n\r\n%s",
			 i == 0 ? 300 : 10, i, body);
		strcat(req, one);
	}
	assert_int_equal(cli_send(c, req), 0);
	sleep_ms(150);
	/* A 700-byte body held for its answer is close to the 1024-byte cap: the
	 * server takes no further request until it is answered. */
	assert_int_equal(atomic_load(&ts->handled), 1);
	for (int i = 0; i < 3; i++) {
		char want[32];

		snprintf(want, sizeof(want), "delayed:%d", i);
		assert_int_equal(cli_read_resp(c, &r), 0);
		assert_string_equal(r.body, want);
	}
	assert_int_equal(atomic_load(&ts->handled), 3);
	cli_close(c);
	stop_server(ts);
}

static void test_client_not_reading_answers_is_bounded_then_closed(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	char req[64 * 32] = "";
	size_t total = 0;
	ssize_t n;
	char tmp[65536];

	(void)state;
	lim.read_timeout_ms = 500;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	for (int i = 0; i < 32; i++)
		strcat(req, "GET /big HTTP/1.1\r\n\r\n");
	assert_int_equal(cli_send(c, req), 0);
	sleep_ms(300);
	/* 32 MiB of answers were asked for; the server stopped taking requests
	 * once the unsent ones passed its high-water mark. */
	assert_true(atomic_load(&ts->handled) < 32);
	sleep_ms(1200);
	/* No answer byte taken for read_timeout_ms: the server gave up. */
	while ((n = recv(c->fd, tmp, sizeof(tmp), 0)) > 0)
		total += (size_t)n;
	assert_true(n == 0 || errno == ECONNRESET);
	assert_true(total < (size_t)32 << 20);
	cli_close(c);
	stop_server(ts);
}

static void test_expect_100_continue(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c = cli_connect(ts->port);
	struct resp r;

	(void)state;
	assert_int_equal(cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n"
				     "Expect: 100-continue\r\n\r\n"),
			 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 100);
	assert_int_equal(cli_send(c, "hello"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "POST /echo ? x-test=[(none)]\nhello");
	/* An unknown expectation is refused. */
	assert_int_equal(cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n"
				     "Expect: something-else\r\n\r\n"),
			 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 417);
	cli_close(c);
	stop_server(ts);
}

static void test_too_big_content_length_refused_without_body(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	struct resp r;

	(void)state;
	lim.max_body_bytes = 1024;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	assert_int_equal(
		cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 413);
	assert_true(has_header(&r, "Connection: close"));
	assert_true(has_header(&r, "Content-Type: application/json"));
	assert_non_null(strstr(r.body, "\"code\":\"too_big\""));
	assert_non_null(strstr(r.body, "\"field\":\"body\""));
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	/* At the limit is fine. */
	{
		char req[2048];
		char body[1025];

		memset(body, 'x', 1024);
		body[1024] = '\0';
		snprintf(req, sizeof(req),
			 "POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n%s", body);
		assert_int_equal(one_shot(ts->port, req, &r), 200);
	}
	stop_server(ts);
}

static void test_too_large_headers_413(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct resp r;
	char req[8192];
	char big[3000];

	(void)state;
	lim.max_header_bytes = 1024;
	ts = start_server(&lim);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(req, sizeof(req), "GET /echo HTTP/1.1\r\nX-Big: %s\r\n\r\n", big);
	assert_int_equal(one_shot(ts->port, req, &r), 413);
	assert_non_null(strstr(r.body, "\"field\":\"headers\""));
	snprintf(req, sizeof(req), "GET /echo?%s HTTP/1.1\r\n\r\n", big);
	assert_int_equal(one_shot(ts->port, req, &r), 413);
	/* Many small headers add up too. */
	strcpy(req, "GET /echo HTTP/1.1\r\n");
	for (int i = 0; i < 200; i++)
		strcat(req, "A: b\r\n");
	strcat(req, "\r\n");
	assert_int_equal(one_shot(ts->port, req, &r), 413);
	stop_server(ts);
}

static void test_body_without_length_411(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c = cli_connect(ts->port);
	struct resp r;

	(void)state;
	assert_int_equal(cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\n\r\n{}"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 411);
	assert_non_null(strstr(r.body, "\"code\":\"length_required\""));
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	stop_server(ts);
}

static void test_garbage_is_400_and_closes(void **state)
{
	struct tsrv *ts = start_server(NULL);
	static const char *const bad[] = {
		"\x01\x02\x03garbage\r\n\r\n",
		"GET\r\n\r\n",
		"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
		"FOO / HTTP/1.1\r\n\r\n",
		"GET nopath HTTP/1.1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: "
		"6\r\n\r\nhello",
		"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		/* What the non-strict http-parser build lets through: */
		"POST /echo HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
		"GET /echo HTTP/1.1\r\nX-A: a\rX-B: b\r\n\r\n",
		"GET /echo HTTP/1.1\r\n\rX",
		"\r\rGET /echo HTTP/1.1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: "
		"chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: "
		"chunked\r\n\r\n2\rXab\r\n0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: "
		"x\r\n\rX",
		"GET /echo\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
	};
	struct resp r;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cli *c = cli_connect(ts->port);
		size_t n = strlen(bad[i]);

		if (i == sizeof(bad) / sizeof(bad[0]) - 1)
			n = 29; /* includes the NUL */
		assert_int_equal(cli_send_n(c, bad[i], n), 0);
		assert_int_equal(cli_read_resp(c, &r), 0);
		if (r.status != 400)
			fail_msg("case %zu: status %d", i, r.status);
		assert_non_null(strstr(r.body, "{\"error\":{\"code\":\"invalid\""));
		assert_true(cli_wait_closed(c, 3000) >= 0);
		cli_close(c);
	}
	/* Pipelined: the good request before the garbage is still answered. */
	{
		struct cli *c = cli_connect(ts->port);

		assert_int_equal(cli_send(c, "GET /delay?ms=50&id=g HTTP/1.1\r\n\r\n"
					     "\x7f\x7f\x7f\r\n\r\n"),
				 0);
		assert_int_equal(cli_read_resp(c, &r), 0);
		assert_string_equal(r.body, "delayed:g");
		assert_int_equal(cli_read_resp(c, &r), 0);
		assert_int_equal(r.status, 400);
		cli_close(c);
	}
	stop_server(ts);
}

static void test_past_max_connections_503(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c1, *c2, *c3;
	struct resp r;

	(void)state;
	lim.max_connections = 2;
	ts = start_server(&lim);
	c1 = cli_connect(ts->port);
	c2 = cli_connect(ts->port);
	assert_int_equal(cli_send(c1, "GET /echo HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c1, &r), 0);
	assert_int_equal(cli_send(c2, "GET /echo HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c2, &r), 0);
	c3 = cli_connect(ts->port);
	assert_int_equal(cli_read_resp(c3, &r), 0);
	assert_int_equal(r.status, 503);
	assert_true(has_header(&r, "\r\nRetry-After: 1\r\n"));
	assert_non_null(strstr(r.body, "\"code\":\"busy\""));
	assert_true(cli_wait_closed(c3, 3000) >= 0);
	cli_close(c3);
	/* The admitted connections are unaffected; a freed slot is usable again. */
	assert_int_equal(cli_send(c1, "GET /echo HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c1, &r), 0);
	assert_int_equal(r.status, 200);
	cli_close(c2);
	sleep_ms(100);
	c3 = cli_connect(ts->port);
	assert_int_equal(cli_send(c3, "GET /echo HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c3, &r), 0);
	assert_int_equal(r.status, 200);
	cli_close(c3);
	cli_close(c1);
	stop_server(ts);
}

static void test_idle_timeout_closes(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	struct resp r;
	long took;

	(void)state;
	lim.idle_timeout_ms = 200;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	assert_int_equal(cli_send(c, "GET /echo HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	took = cli_wait_closed(c, 3000);
	assert_true(took >= 150 && took < 1500);
	cli_close(c);
	/* A connection that never sends anything is closed too. */
	c = cli_connect(ts->port);
	took = cli_wait_closed(c, 3000);
	assert_true(took >= 150 && took < 1500);
	cli_close(c);
	stop_server(ts);
}

static void test_read_timeout_closes_trickling_client(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	uint64_t t0;
	bool closed = false;
	struct resp r;

	(void)state;
	lim.read_timeout_ms = 300;
	lim.idle_timeout_ms = 60000;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	t0 = now_ms();
	assert_int_equal(cli_send(c, "GET /echo HTTP/1.1\r\n"), 0);
	while (now_ms() - t0 < 3000) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

		if (poll(&pfd, 1, 50) > 0) {
			closed = true;
			break;
		}
		if (cli_send(c, "X") != 0) {
			closed = true;
			break;
		}
	}
	assert_true(closed);
	assert_true(now_ms() - t0 < 1500);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 408);
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	stop_server(ts);
}

static void test_chunked_body(void **state)
{
	struct http_limits lim = small_limits();
	struct tsrv *ts;
	struct cli *c;
	struct resp r;

	(void)state;
	lim.max_body_bytes = 16;
	ts = start_server(&lim);
	c = cli_connect(ts->port);
	assert_int_equal(
		cli_send(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"),
		0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "POST /echo ? x-test=[(none)]\nhello world");
	/* Chunks past the body limit. */
	assert_int_equal(
		cli_send(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
		0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 413);
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	stop_server(ts);
}

static void test_http10_and_connection_close(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c;
	struct resp r;

	(void)state;
	/* HTTP/1.0 closes after one answer. */
	c = cli_connect(ts->port);
	assert_int_equal(cli_send(c, "GET /echo HTTP/1.0\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "Connection: close"));
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	/* HTTP/1.0 with keep-alive stays open. */
	c = cli_connect(ts->port);
	assert_int_equal(
		cli_send(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_true(has_header(&r, "Connection: keep-alive"));
	assert_int_equal(
		cli_send(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_int_equal(r.status, 200);
	cli_close(c);
	/* HTTP/1.1 Connection: close: answered, later pipelined requests ignored. */
	c = cli_connect(ts->port);
	assert_int_equal(
		cli_send(c, "GET /delay?ms=30&id=c HTTP/1.1\r\nConnection: close\r\n\r\n"
			    "GET /echo HTTP/1.1\r\n\r\n"),
		0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "delayed:c");
	assert_true(has_header(&r, "Connection: close"));
	assert_int_equal(cli_read_resp(c, &r), -1);
	cli_close(c);
	/* HEAD: the length of the body, no body. */
	c = cli_connect(ts->port);
	assert_int_equal(
		cli_send(c, "HEAD /count HTTP/1.1\r\n\r\nGET /count HTTP/1.1\r\n\r\n"),
		0);
	assert_int_equal(cli_read_resp(c, &r), 0); /* reads 1 byte of the next answer */
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 1);
	assert_int_equal(r.body[0], 'H');
	cli_close(c);
	stop_server(ts);
}

static void test_client_gone_before_async_answer(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct resp r;

	(void)state;
	/* Reset: the request is orphaned and its answer dropped. */
	c = cli_connect(ts->port);
	assert_int_equal(cli_send(c, "GET /delay?ms=150&id=x HTTP/1.1\r\n\r\n"
				     "GET /delay?ms=10&id=y HTTP/1.1\r\n\r\n"),
			 0);
	sleep_ms(50);
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	cli_close(c);
	for (int i = 0; i < 100 && atomic_load(&ts->delayed_answers) < 2; i++)
		sleep_ms(10);
	assert_int_equal(atomic_load(&ts->delayed_answers), 2);
	/* Half-close: the client still gets what it is owed. */
	c = cli_connect(ts->port);
	assert_int_equal(cli_send(c, "GET /delay?ms=50&id=h HTTP/1.1\r\n\r\n"), 0);
	shutdown(c->fd, SHUT_WR);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "delayed:h");
	assert_true(cli_wait_closed(c, 3000) >= 0);
	cli_close(c);
	/* Every connection is gone. */
	c = cli_connect(ts->port);
	sleep_ms(50);
	assert_int_equal(cli_send(c, "GET /count HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "1");
	cli_close(c);
	/* Stopping the server with an answer still owed to a gone client. */
	c = cli_connect(ts->port);
	assert_int_equal(cli_send(c, "GET /delay?ms=100&id=z HTTP/1.1\r\n\r\n"), 0);
	sleep_ms(30);
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	cli_close(c);
	sleep_ms(20);
	stop_server(ts);
}

static void test_shutdown_answers_in_flight(void **state)
{
	struct tsrv *ts = start_server(NULL);
	struct cli *c = cli_connect(ts->port);
	struct cli *idle = cli_connect(ts->port);
	struct resp r;

	(void)state;
	assert_int_equal(cli_send(c, "GET /delay?ms=200&id=s HTTP/1.1\r\n\r\n"), 0);
	sleep_ms(50);
	stop_server_async(ts);
	assert_int_equal(cli_read_resp(c, &r), 0);
	assert_string_equal(r.body, "delayed:s");
	assert_true(has_header(&r, "Connection: close"));
	assert_true(cli_wait_closed(c, 3000) >= 0);
	assert_true(cli_wait_closed(idle, 3000) >= 0);
	cli_close(c);
	cli_close(idle);
	join_server(ts);
}

static void test_url_decode(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(http_url_decode("a%20b%2Fc", 9, out), 5);
	assert_string_equal(out, "a b/c");
	assert_int_equal(http_url_decode("plus+kept", 9, out), 9);
	assert_string_equal(out, "plus+kept");
	assert_int_equal(http_url_decode("%e2%82%AC", 9, out), 3);
	assert_string_equal(out, "\xe2\x82\xac");
	assert_int_equal(http_url_decode("", 0, out), 0);
	assert_string_equal(out, "");
	assert_int_equal(http_url_decode("bad%2", 5, out), -1);
	assert_int_equal(http_url_decode("bad%", 4, out), -1);
	assert_int_equal(http_url_decode("bad%zz", 6, out), -1);
	assert_int_equal(http_url_decode("nul%00", 6, out), -1);
	/* len bounds the input, not the NUL */
	assert_int_equal(http_url_decode("ab%41zz", 5, out), 3);
	assert_string_equal(out, "abA");
}

/* ---- socketless connections, driven from this thread ---- */

struct memrun {
	uv_loop_t loop;
	struct http_server *srv;
	struct buf out;
	struct http_req *held[8];
	int nheld;
	bool done;
};

static void mem_out(void *ud, const char *data, size_t len)
{
	struct memrun *m = ud;

	buf_append(&m->out, data, len);
}

/* Answers /later requests only when told to; everything else at once. */
static void mem_handler(void *ud, struct http_req *r)
{
	struct memrun *m = ud;
	size_t blen;
	const char *body = http_req_body(r, &blen);

	if (strcmp(http_req_path(r), "/later") == 0 && m->nheld < 8) {
		m->held[m->nheld++] = r;
		return;
	}
	http_respond(r, 200, NULL, body, blen, NULL);
}

static void mem_done(void *ud)
{
	((struct memrun *)ud)->done = true;
}

static void mem_start(struct memrun *m, const struct http_limits *lim)
{
	memset(m, 0, sizeof(*m));
	assert_int_equal(uv_loop_init(&m->loop), 0);
	assert_int_equal(http_server_new(&m->loop, lim, mem_handler, m, &m->srv),
			 NERR_OK);
	buf_init(&m->out, 0);
}

static void mem_stop(struct memrun *m)
{
	http_server_shutdown(m->srv, mem_done, m);
	while (!m->done)
		uv_run(&m->loop, UV_RUN_ONCE);
	http_server_free(m->srv);
	assert_int_equal(uv_loop_close(&m->loop), 0);
	buf_fini(&m->out);
}

/* Strips the Date lines so answers can be compared byte for byte. */
static void strip_dates(struct buf *b)
{
	char *d;

	while (b->data && (d = strstr(b->data, "Date: "))) {
		char *e = strstr(d, "\r\n");

		memmove(d, e + 2, strlen(e + 2) + 1);
		b->len -= (size_t)(e + 2 - d);
	}
}

static void test_mem_conn_byte_by_byte(void **state)
{
	static const char req[] =
		"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
		"POST /later HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		"2\r\nde\r\n0\r\n\r\n"
		"GET /b HTTP/1.1\r\n\r\n";
	static const char want[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
				   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nDE"
				   "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	struct memrun m;
	struct http_conn *c;

	(void)state;
	mem_start(&m, NULL);
	c = http_conn_attach(m.srv, mem_out, &m);
	for (size_t i = 0; i < sizeof(req) - 1; i++)
		assert_int_equal(http_conn_feed(c, req + i, 1), 1);
	/* The first answer is out; the third waits behind the held second. */
	assert_int_equal(m.nheld, 1);
	strip_dates(&m.out);
	assert_string_equal(m.out.data,
			    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
	http_respond(m.held[0], 200, NULL, "DE", 2, NULL);
	strip_dates(&m.out);
	assert_string_equal(m.out.data, want);
	http_conn_release(c);
	mem_stop(&m);
}

static void test_mem_conn_orphan_after_release(void **state)
{
	struct memrun m;
	struct http_conn *c;
	static const char req[] = "GET /later HTTP/1.1\r\n\r\nGET /later HTTP/1.1\r\n\r\n"
				  "GET /x HTTP/1.1\r\n\r\n";

	(void)state;
	mem_start(&m, NULL);
	c = http_conn_attach(m.srv, mem_out, &m);
	assert_int_equal(http_conn_feed(c, req, sizeof(req) - 1), 1);
	assert_int_equal(m.nheld, 2);
	assert_int_equal(m.out.len, 0);
	http_respond(m.held[1], 200, NULL, "2", 1, NULL); /* out of order: held */
	assert_int_equal(m.out.len, 0);
	http_conn_release(c);
	http_respond(m.held[0], 200, NULL, "1", 1, NULL); /* orphan: dropped */
	assert_int_equal(m.out.len, 0);
	mem_stop(&m);
}

static void test_mem_conn_cap_with_held_and_sync_answers(void **state)
{
	struct http_limits lim;
	struct memrun m;
	struct http_conn *c;
	static const char req[] = "POST /later HTTP/1.1\r\nContent-Length: 1\r\n\r\n1"
				  "POST /s HTTP/1.1\r\nContent-Length: 1\r\n\r\n2"
				  "POST /later HTTP/1.1\r\nContent-Length: 1\r\n\r\n3"
				  "POST /s HTTP/1.1\r\nContent-Length: 1\r\n\r\n4"
				  "POST /s HTTP/1.1\r\nContent-Length: 1\r\n\r\n5"
				  "POST /later HTTP/1.1\r\nContent-Length: 1\r\n\r\n6";
	const char *p;
	int seen = 0;

	(void)state;
	http_limits_default(&lim);
	lim.max_pipelined = 2;
	mem_start(&m, &lim);
	c = http_conn_attach(m.srv, mem_out, &m);
	assert_int_equal(http_conn_feed(c, req, sizeof(req) - 1), 1);
	/* Paused at the cap: the first held answer blocks everything. */
	assert_int_equal(m.nheld, 1);
	assert_int_equal(m.out.len, 0);
	for (int i = 0; i < 3 && i < m.nheld; i++) {
		char body[2] = {(char)('1' + (i == 0 ? 0 : i == 1 ? 2 : 5)), 0};

		http_respond(m.held[i], 200, NULL, body, 1, NULL);
	}
	assert_int_equal(m.nheld, 3);
	/* Every answer went out, in request order. */
	for (p = m.out.data; p && (p = strstr(p, "\r\n\r\n")); p += 5)
		assert_int_equal(p[4], '1' + seen++);
	assert_int_equal(seen, 6);
	http_conn_release(c);
	mem_stop(&m);
}

static void test_listen_failure_leaves_nothing_open(void **state)
{
	struct memrun m;
	struct http_server *other;
	struct nerr_msg msg;

	(void)state;
	mem_start(&m, NULL);
	assert_int_equal(http_server_listen(m.srv, "127.0.0.1", 0, &msg), NERR_OK);
	assert_int_equal(http_server_new(&m.loop, NULL, mem_handler, &m, &other),
			 NERR_OK);
	assert_int_equal(
		http_server_listen(other, "127.0.0.1", http_server_port(m.srv), &msg),
		NERR_IO);
	assert_non_null(strstr(msg.message, "in use"));
	http_server_free(other);
	assert_int_equal(http_server_new(&m.loop, NULL, mem_handler, &m, &other),
			 NERR_OK);
	assert_int_equal(http_server_listen(other, "no-such-host", 1, &msg), NERR_INVAL);
	http_server_free(other);
	mem_stop(&m); /* asserts the loop closes with no handle left */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keepalive_reuses_connection),
		cmocka_unit_test(test_query_and_header_values),
		cmocka_unit_test(test_pipelined_async_answers_go_out_in_order),
		cmocka_unit_test(test_pipeline_cap_pauses_then_resumes),
		cmocka_unit_test(test_queued_body_bytes_pause_reading),
		cmocka_unit_test(test_client_not_reading_answers_is_bounded_then_closed),
		cmocka_unit_test(test_expect_100_continue),
		cmocka_unit_test(test_too_big_content_length_refused_without_body),
		cmocka_unit_test(test_too_large_headers_413),
		cmocka_unit_test(test_body_without_length_411),
		cmocka_unit_test(test_garbage_is_400_and_closes),
		cmocka_unit_test(test_past_max_connections_503),
		cmocka_unit_test(test_idle_timeout_closes),
		cmocka_unit_test(test_read_timeout_closes_trickling_client),
		cmocka_unit_test(test_chunked_body),
		cmocka_unit_test(test_http10_and_connection_close),
		cmocka_unit_test(test_client_gone_before_async_answer),
		cmocka_unit_test(test_shutdown_answers_in_flight),
		cmocka_unit_test(test_url_decode),
		cmocka_unit_test(test_mem_conn_byte_by_byte),
		cmocka_unit_test(test_mem_conn_orphan_after_release),
		cmocka_unit_test(test_mem_conn_cap_with_held_and_sync_answers),
		cmocka_unit_test(test_listen_failure_leaves_nothing_open),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
