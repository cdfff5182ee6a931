/*
 * http.h -- the HTTP/1.1 server every API of nudge is served by.
 *
 * Design: one server per libuv loop, used only from that loop's thread. The
 * application gets one callback per complete request and answers it with
 * http_respond(), either at once or later (ingest answers only once the event
 * is durable); answers on one connection always go out in request order. The
 * server caps everything a client controls (header bytes, body bytes,
 * connections, unanswered pipelined requests, time to send a request) and
 * refuses what is over a cap with a JSON error (DESIGN.md §5). See http.c for
 * the connection state machine.
 */
#ifndef NUDGE_INGEST_HTTP_H
#define NUDGE_INGEST_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/err.h"

struct http_server;
struct http_req; /* one request; valid until http_respond() is called on it */

struct http_limits {
	size_t max_header_bytes;  /* total request line + headers; default 16384 */
	size_t max_body_bytes;	  /* default 4 MiB */
	unsigned max_connections; /* default 4096; beyond: answer 503 + close */
	unsigned max_pipelined;	  /* unanswered requests per connection before reads
				     pause; default 32 */
	uint64_t idle_timeout_ms; /* keep-alive idle; default 60000 */
	uint64_t read_timeout_ms; /* a started request must be fully received within;
				     default 30000 (also the longest a response may
				     wait for the client to take it) */
};

void http_limits_default(struct http_limits *lim);

/* Called on the loop thread for every complete request. The handler owns the
 * request until it calls http_respond() on it (exactly once, now or later). */
typedef void (*http_handler_fn)(void *userdata, struct http_req *req);

/* Zero fields of lim take their defaults; lim may be NULL. */
enum nerr http_server_new(uv_loop_t *loop, const struct http_limits *lim,
			  http_handler_fn fn, void *userdata, struct http_server **out);
/* host "127.0.0.1" or "::1" or "0.0.0.0"; port 0 picks a free port,
 * http_server_port() tells which. On failure (address in use, ...) the server
 * holds no handle and may be freed at once. */
enum nerr http_server_listen(struct http_server *s, const char *host, int port,
			     struct nerr_msg *msg);
int http_server_port(const struct http_server *s);
void http_server_stop_accepting(struct http_server *s);
/* Graceful: stop accepting, stop reading new requests (a partly received one is
 * dropped), let in-flight requests be answered, flush, close all; done_fn(ud)
 * runs from a loop callback once every handle of the server is closed. */
void http_server_shutdown(struct http_server *s, void (*done_fn)(void *ud), void *ud);
/* After shutdown completed, or after http_server_listen() failed (or was never
 * called) with no connection attached. Requests still held by the application
 * stay valid and must still be answered (the answer is dropped). */
void http_server_free(struct http_server *s);
/* Connections open now (including ones being refused with 503). */
unsigned http_server_connection_count(const struct http_server *s);

const char *http_req_method(const struct http_req *r); /* "GET", "POST", ... */
/* Raw path, without query string, NUL-terminated. */
const char *http_req_path(const struct http_req *r);
/* Raw query string without '?', or "". */
const char *http_req_query(const struct http_req *r);
/* Case-insensitive; first value; NULL if absent. */
const char *http_req_header(const struct http_req *r, const char *name);
/* Never NULL ("" when empty); a NUL-terminated copy of the body. */
const char *http_req_body(const struct http_req *r, size_t *len_out);
/* Monotonic time the request was complete, for latency metrics. */
uint64_t http_req_start_ns(const struct http_req *r);
void http_req_set_data(struct http_req *r, void *p);
void *http_req_data(const struct http_req *r);
/* Peer address as text ("127.0.0.1"), or "" when unknown. */
const char *http_req_peer(const struct http_req *r);

/* Exactly once per request, loop thread only; frees the request. extra_headers
 * is NULL or "Name: value\r\n" lines. Adds Content-Length, Date and Connection
 * as needed; content_type may be NULL (no Content-Type header). If the client
 * is gone the answer is dropped. */
void http_respond(struct http_req *r, int status, const char *content_type,
		  const char *body, size_t len, const char *extra_headers);
/* Convenience: JSON error body per DESIGN.md §5,
 * {"error":{"code":"...","field":"...","message":"..."}}; "field" is left out
 * when field is NULL or "". */
void http_respond_error(struct http_req *r, int status, const char *code,
			const char *field, const char *message);

/* Percent-decodes src[0..len) into dst (dst size >= len + 1), NUL-terminated.
 * '+' is kept as is. Returns the decoded length, or -1 on a bad escape or a
 * decoded NUL. */
int http_url_decode(const char *src, size_t len, char *dst);

/*
 * Socketless connections, for the fuzz target and tests: the same parser and
 * connection state machine, with reads replaced by http_conn_feed() and writes
 * by out_fn. Timers and closing still run on the server's loop, so run it (e.g.
 * UV_RUN_NOWAIT) after http_conn_release() until the connection count drops.
 */
struct http_conn;
typedef void (*http_out_fn)(void *ud, const char *data, size_t len);
struct http_conn *http_conn_attach(struct http_server *s, http_out_fn out_fn, void *ud);
/* Stands for one read. Returns 1 while the connection still reads, 0 once it
 * has stopped for good (closed, or closing after a final answer). */
int http_conn_feed(struct http_conn *c, const void *data, size_t len);
/* The peer closed its side (EOF). */
void http_conn_eof(struct http_conn *c);
/* The caller is done with c (it may still be closing); c is invalid after. */
void http_conn_release(struct http_conn *c);

#endif
