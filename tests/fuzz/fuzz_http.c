/*
 * fuzz_http.c -- arbitrary bytes through the real HTTP connection state machine.
 *
 * Design: one server on a private loop, one socketless connection per input
 * (http_conn_attach). The first input byte seeds how the rest is cut into reads
 * and when held requests are answered; requests to /later are held and answered
 * later in reverse order (some only after the connection is released, as
 * orphans), the rest at once. Everything the server writes is parsed back with
 * http-parser in response mode: it must be a well-formed sequence of answers,
 * in request order (each answer carries the X-Seq the handler gave its request),
 * with nothing after an answer that says "Connection: close".
 * After each input the connection must be gone once the loop runs (no hang) and
 * nothing may leak (libFuzzer's leak check).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "base/mem.h"
#include "ingest/http.h"

#define MAX_HELD  64
#define CLOSE_HDR "\r\nConnection: close\r\n"
#define SEQ_HDR	  "\r\nX-Seq: "

static uv_loop_t loop;
static struct http_server *srv;
static struct http_req *held[MAX_HELD];
static int nheld;
static http_parser resp_parser;
static http_parser_settings resp_settings;
static uint32_t rng;
static unsigned next_seq, want_seq;
static int closed_seen;

static uint32_t next_rand(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 16;
}

static void out_fn(void *ud, const char *data, size_t len)
{
	size_t n;

	(void)ud;
	if (closed_seen) {
		fprintf(stderr, "bytes written after Connection: close\n");
		abort();
	}
	/* Each call carries one whole answer (or a 100 Continue); look at its
	 * head only, the body echoes what the client sent. */
	{
		const char *end = memmem(data, len, "\r\n\r\n", 4);
		size_t hlen = end ? (size_t)(end - data) + 2 : len;

		if (memmem(data, hlen, CLOSE_HDR, sizeof(CLOSE_HDR) - 1))
			closed_seen = 1;
	}
	{
		const char *end = memmem(data, len, "\r\n\r\n", 4);
		size_t hlen = end ? (size_t)(end - data) + 2 : len;
		const char *x = memmem(data, hlen, SEQ_HDR, sizeof(SEQ_HDR) - 1);

		if (x && strtoul(x + sizeof(SEQ_HDR) - 1, NULL, 10) != want_seq++) {
			fprintf(stderr, "answer out of order\n");
			abort();
		}
	}
	n = http_parser_execute(&resp_parser, &resp_settings, data, len);
	if (n != len || HTTP_PARSER_ERRNO(&resp_parser) != HPE_OK) {
		fprintf(stderr, "server wrote a malformed answer: %s\n",
			http_errno_name(HTTP_PARSER_ERRNO(&resp_parser)));
		abort();
	}
}

static void handler(void *ud, struct http_req *r)
{
	const char *path = http_req_path(r);
	size_t blen;
	const char *body = http_req_body(r, &blen);
	char seq[32];

	(void)ud;
	if (strncmp(path, "/err", 4) == 0 && strcmp(http_req_method(r), "HEAD") != 0) {
		/* no X-Seq: the order check skips it */
		http_respond_error(r, 422, "invalid", http_req_query(r), body);
		return;
	}
	snprintf(seq, sizeof(seq), "X-Seq: %u\r\n", next_seq);
	http_req_set_data(r, (void *)(uintptr_t)next_seq++);
	if (strncmp(path, "/later", 6) == 0 && nheld < MAX_HELD) {
		held[nheld++] = r;
		return;
	}
	if (strcmp(http_req_method(r), "HEAD") == 0) {
		http_respond(r, 200, NULL, "", 0, seq);
		return;
	}
	if (http_req_header(r, "x-a") && strlen(http_req_header(r, "x-a")) > 2048)
		abort(); /* header bytes are capped at 2048 */
	http_respond(r, 200, "text/plain", body, blen, seq);
}

static void answer_held(int keep)
{
	while (nheld > keep) {
		struct http_req *r = held[--nheld];
		/* The checker cannot know an answer is to HEAD: give it no body. */
		size_t n = strcmp(http_req_method(r), "HEAD") == 0 ? 0 : 5;
		char seq[32];

		snprintf(seq, sizeof(seq), "X-Seq: %u\r\n",
			 (unsigned)(uintptr_t)http_req_data(r));
		http_respond(r, 200, NULL, "later", n, seq);
	}
}

static void setup(void)
{
	struct http_limits lim;

	http_limits_default(&lim);
	lim.max_header_bytes = 2048;
	lim.max_body_bytes = 8192;
	lim.max_pipelined = 4;
	lim.max_connections = 8;
	if (uv_loop_init(&loop) || http_server_new(&loop, &lim, handler, NULL, &srv))
		abort();
	http_parser_settings_init(&resp_settings);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_conn *c;
	size_t pos = 1;
	int round = 0;

	if (!srv)
		setup();
	if (size < 1)
		return 0;
	rng = data[0];
	next_seq = want_seq = 0;
	closed_seen = 0;
	http_parser_init(&resp_parser, HTTP_RESPONSE);
	c = http_conn_attach(srv, out_fn, NULL);
	while (pos < size) {
		size_t chunk = 1 + next_rand() % (data[0] & 0x80 ? 7 : 200);

		if (chunk > size - pos)
			chunk = size - pos;
		http_conn_feed(c, data + pos, chunk);
		pos += chunk;
		if (++round % 3 == 0)
			answer_held((int)(next_rand() % 3));
	}
	if (data[0] & 1)
		http_conn_eof(c);
	answer_held(data[0] & 2 ? 1 : 0);
	http_conn_release(c);
	answer_held(0); /* orphans */
	for (int i = 0; http_server_connection_count(srv); i++) {
		if (i > 1000)
			abort(); /* the connection never finished closing */
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	return 0;
}
