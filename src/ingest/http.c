/*
 * http.c -- the HTTP/1.1 server: connections, limits, timeouts, ordered answers.
 *
 * Design: libuv owns the sockets, http-parser (2.9) tokenises the bytes, and this
 * file owns everything between: one `struct http_conn` per connection with one
 * http_parser, the request being received (`cur`), and a FIFO of requests handed
 * to the application but not yet written back (`q_head`..`q_tail`). A request
 * enters the FIFO when it is complete and leaves it only from the head, once
 * answered, so answers given out of order (ingest answers after group commit)
 * still go out in request order. The parser is paused at the end of every
 * message, so the connection decides between messages whether to take the next
 * one: it stops (and stops reading the socket) while max_pipelined answers are
 * outstanding or too many answer bytes wait for the client, and resumes from the
 * saved input when they drain. Reads land in one buffer per server (the loop is
 * single-threaded); only bytes left over at a pause are copied into the
 * connection.
 *
 * Byte handling is independent of sockets: http_conn_feed() drives the same
 * state machine from memory, which is what the fuzz target does.
 *
 * States (conn_set_state is the only writer):
 *   OPEN      reading and parsing requests.
 *   DRAINING  no more requests will be read (Connection: close, HTTP/1.0, a
 *             refused request, peer EOF, server shutdown); waits until every
 *             queued request is answered and written.
 *   LINGER    the last answer is written and our side shut down; input is read
 *             and dropped until the peer closes or LINGER_MS passes, so a client
 *             still sending (a refused 4 MiB body) reads our answer instead of
 *             a TCP reset.
 *   CLOSING   handles are closing; the struct is freed when the last one is.
 *
 * Invariants:
 *   (1) Answers on a connection are written in the order the requests arrived;
 *       a refusal (4xx/503) is queued behind the answers still owed.
 *   (2) Memory per connection is bounded: header bytes by max_header_bytes (plus
 *       http-parser's own 80 KiB for bytes it does not report), each body by
 *       max_body_bytes, unanswered requests by max_pipelined and their bytes
 *       by max_body_bytes, answer bytes not yet written (queued here or in
 *       libuv) by WRITE_HIGH_WATER_BYTES (beyond them reads pause).
 *   (3) Every connection ends: idle (idle_timeout_ms with nothing owed), a
 *       request not complete read_timeout_ms after its first byte (408), a
 *       client that takes no answer bytes for read_timeout_ms, and LINGER_MS.
 *       While the application owes an answer no timer runs: the application
 *       promised to answer.
 *   (4) A request handed to the application stays valid until http_respond(),
 *       even if its connection closes first (it is then an orphan, r->conn ==
 *       NULL, and the answer is dropped).
 *   (5) Any refusal closes the connection after its answer: after a framing
 *       error the rest of the byte stream cannot be trusted. The last answer
 *       on a closing connection, and only it, says "Connection: close".
 *   (6) Framing is strict even though Debian's http-parser is built non-strict
 *       (HTTP_PARSER_STRICT=0: spaces in header names, any byte taken for the
 *       LF after a CR, any two bytes after chunk data): header names must be
 *       tokens, a CR must be followed by LF, chunk data by CRLF
 *       (conn_check_framing), all checked before a request is handed over. A proxy in
 * front and nudge must never disagree on where a request ends.
 *
 * References: RFC 9110 (semantics), RFC 9112 (HTTP/1.1 message syntax,
 * persistence, pipelining), RFC 7231 §5.1.1 (Expect: 100-continue).
 */
#include "ingest/http.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/mem.h"

#define SUB			"http"
#define MAX_HEADER_FIELDS	256
#define READ_BUF_BYTES		65536
#define WRITE_HIGH_WATER_BYTES	(256u * 1024u)
#define WRITE_BATCH		64
#define LINGER_MS		1000
#define MAX_OVERFLOW_CONNS	64
#define BODY_PREALLOC_MAX_BYTES (64u * 1024u)

enum conn_kind { CONN_TCP, CONN_MEM };

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_LINGER, CONN_CLOSING };
static const char *const conn_state_names[] = {"open", "draining", "linger", "closing"};

/* What the last header callback delivered, to tell a new token from a split one. */
enum hdr_state { HS_URL, HS_FIELD, HS_VALUE, HS_TRAILER };

struct hdr {
	uint32_t name_off; /* into raw */
	uint32_t value_off;
};

/* One request. Owner: its connection until dispatched, then the application
 * until http_respond(), then the connection again until written. */
struct http_req {
	struct http_req *next;	/* FIFO of the connection, request order */
	struct http_conn *conn; /* NULL once the connection is gone (orphan) */
	const char *method;	/* static string */
	struct buf raw;		/* url \0 name \0 value \0 ... path \0 query \0 */
	struct hdr *hdrs;	/* owned */
	unsigned nhdrs, ahdrs;
	size_t path_off, query_off;
	struct buf body; /* capped at max_body_bytes */
	uint64_t start_ns;
	void *data;
	char *resp; /* formatted answer, owned, once responded */
	size_t resp_len;
	size_t conn_off, conn_len; /* where the Connection line goes / is in resp */
	size_t held_bytes;	   /* counted in conn->q_bytes while queued */
	bool dispatched;
	bool responded;
	bool keep_alive; /* the client allows more requests after this one */
	bool http10;
	bool head;
};

/* One connection. Owner: the server (srv->conns); for CONN_MEM also the caller
 * of http_conn_attach() until http_conn_release(). Freed when refs drops to 0. */
struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next; /* srv->conns */
	enum conn_kind kind;
	enum conn_state state;
	unsigned refs; /* open handles + (CONN_MEM) the attaching caller */
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shut;
	http_out_fn out_fn; /* CONN_MEM */
	void *out_ud;
	http_parser parser;
	struct http_req *cur;	   /* being received */
	struct http_req *complete; /* received, dispatched once its framing checked */
	enum hdr_state hstate;
	size_t hdr_bytes; /* request line + headers (+ trailers) so far */
	struct http_req *q_head, *q_tail;
	unsigned q_len;
	size_t q_bytes;	     /* request bytes held by the queue */
	size_t q_resp_bytes; /* answer bytes in the queue, not yet handed to libuv */
	unsigned writes_pending;
	size_t wq_bytes;       /* answer bytes handed to libuv, not yet written */
	struct buf in;	       /* unparsed input saved at a pause */
	bool reading;	       /* uv_read_start in effect (CONN_MEM: would be) */
	bool parsing;	       /* inside conn_parse, guards re-entry */
	bool flush_pending;    /* answered while parsing: written in one go after */
	bool continue_pending; /* 100 Continue owed once earlier answers are out */
	bool overflow;	       /* accepted past max_connections, being refused */
	bool peer_eof;
	/* Line-ending checks http-parser leaves out when built non-strict (see
	 * conn_check_framing). */
	bool in_lines;	 /* inside request line/headers, a chunk-size line or trailers */
	bool cr_pending; /* the last byte seen was a CR: the next must be LF */
	bool section_ends;    /* a callback paused the parser at a section end */
	bool next_in_lines;   /* in_lines for the section after it */
	bool check_crlf_tail; /* the section must have ended with CRLF */
	bool last_chunk;      /* the 0-size chunk was seen: trailers follow */
	uint16_t tail;	      /* the last two bytes consumed */
	uint64_t msg_start_ms, idle_since_ms, write_progress_ms, linger_until_ms;
	/* A refusal decided inside a parser callback, acted on after execute. */
	int reject_status;
	const char *reject_code, *reject_field, *reject_msg;
	char peer[48];
};

struct wreq {
	uv_write_t req;
	struct http_conn *c;
	size_t bytes;
	unsigned n;
	char *owned[WRITE_BATCH];
};

/* Owner: the application (http_server_new/http_server_free). */
struct http_server {
	uv_loop_t *loop;
	struct http_limits lim;
	http_handler_fn fn;
	void *ud;
	uv_tcp_t listener;
	bool listener_open;
	uv_timer_t kick; /* closed by shutdown, so done_fn always runs from a callback */
	unsigned open_handles; /* listener + kick, initialised and not yet closed */
	struct http_conn *conns;
	unsigned nconns;    /* every connection not yet freed */
	unsigned nactive;   /* connections counted against max_connections */
	unsigned noverflow; /* connections being refused with 503 */
	int port;
	bool shutting_down, done_called;
	void (*done_fn)(void *ud);
	void *done_ud;
	time_t date_sec;
	char date[40];
	uint64_t overflow_logged_ms;
	char rbuf[READ_BUF_BYTES];
};

static void conn_close(struct http_conn *c);
static void conn_flush(struct http_conn *c);
static void conn_after_io(struct http_conn *c);
static void conn_reject(struct http_conn *c, int status, const char *code,
			const char *field, const char *message, const char *extra);
static void respond_ex(struct http_req *r, int status, const char *content_type,
		       const char *body, size_t len, const char *extra_headers);

void http_limits_default(struct http_limits *lim)
{
	lim->max_header_bytes = 16384;
	lim->max_body_bytes = 4u * 1024u * 1024u;
	lim->max_connections = 4096;
	lim->max_pipelined = 32;
	lim->idle_timeout_ms = 60000;
	lim->read_timeout_ms = 30000;
}

/* ---- requests ---- */

static struct http_req *req_new(struct http_conn *c)
{
	struct http_req *r = xcalloc(1, sizeof(*r));

	r->conn = c;
	r->method = "";
	buf_init(&r->raw, 0);
	buf_init(&r->body, c->srv->lim.max_body_bytes);
	return r;
}

static void req_free(struct http_req *r)
{
	buf_fini(&r->raw);
	buf_fini(&r->body);
	free(r->hdrs);
	free(r->resp);
	free(r);
}

static void req_tok_end(struct http_req *r)
{
	buf_putc(&r->raw, '\0');
}

const char *http_req_method(const struct http_req *r)
{
	return r->method;
}

const char *http_req_path(const struct http_req *r)
{
	return r->raw.data ? r->raw.data + r->path_off : "";
}

const char *http_req_query(const struct http_req *r)
{
	return r->raw.data ? r->raw.data + r->query_off : "";
}

const char *http_req_header(const struct http_req *r, const char *name)
{
	for (unsigned i = 0; i < r->nhdrs; i++) {
		if (strcasecmp(r->raw.data + r->hdrs[i].name_off, name) == 0)
			return r->raw.data + r->hdrs[i].value_off;
	}
	return NULL;
}

const char *http_req_body(const struct http_req *r, size_t *len_out)
{
	if (len_out)
		*len_out = r->body.len;
	return buf_str(&r->body);
}

uint64_t http_req_start_ns(const struct http_req *r)
{
	return r->start_ns;
}

void http_req_set_data(struct http_req *r, void *p)
{
	r->data = p;
}

void *http_req_data(const struct http_req *r)
{
	return r->data;
}

const char *http_req_peer(const struct http_req *r)
{
	return r->conn ? r->conn->peer : "";
}

/* ---- connection bookkeeping ---- */

static uint64_t conn_now(const struct http_conn *c)
{
	return uv_now(c->srv->loop);
}

static void conn_set_state(struct http_conn *c, enum conn_state st)
{
	if (c->state == st)
		return;
	log_debug(SUB, "conn=%p peer=%s state=%s->%s queued=%u", (void *)c, c->peer,
		  conn_state_names[c->state], conn_state_names[st], c->q_len);
	c->state = st;
}

/* True while the connection may take one more request off the wire. */
static bool conn_can_take(const struct http_conn *c)
{
	return c->q_len < c->srv->lim.max_pipelined &&
	       c->q_bytes < c->srv->lim.max_body_bytes &&
	       c->wq_bytes + c->q_resp_bytes < WRITE_HIGH_WATER_BYTES;
}

static void server_check_done(struct http_server *s)
{
	if (!s->shutting_down || s->done_called || s->open_handles || s->nconns)
		return;
	s->done_called = true;
	log_info(SUB, "msg=\"server stopped\" port=%d", s->port);
	if (s->done_fn)
		s->done_fn(s->done_ud);
}

static void conn_unref(struct http_conn *c)
{
	struct http_server *s = c->srv;

	ASSERT(c->refs > 0);
	if (--c->refs)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	if (c->overflow)
		s->noverflow--;
	else
		s->nactive--;
	buf_fini(&c->in);
	free(c);
	server_check_done(s);
}

static void on_handle_closed(uv_handle_t *h)
{
	conn_unref(h->data);
}

/* Closes at once. Requests the application still holds become orphans. */
static void conn_close(struct http_conn *c)
{
	struct http_req *r, *next;

	if (c->state == CONN_CLOSING)
		return;
	conn_set_state(c, CONN_CLOSING);
	if (c->cur) {
		req_free(c->cur);
		c->cur = NULL;
	}
	if (c->complete) {
		req_free(c->complete);
		c->complete = NULL;
	}
	for (r = c->q_head; r; r = next) {
		next = r->next;
		r->next = NULL;
		if (r->responded)
			req_free(r);
		else
			r->conn = NULL;
	}
	c->q_head = c->q_tail = NULL;
	c->q_len = 0;
	c->q_bytes = 0;
	c->q_resp_bytes = 0;
	c->continue_pending = false;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	if (c->kind == CONN_TCP)
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct http_conn *c = h->data;

	(void)suggested;
	b->base = c->srv->rbuf;
	b->len = sizeof(c->srv->rbuf);
}

static void conn_input(struct http_conn *c, const char *data, size_t len);
static void conn_peer_eof(struct http_conn *c);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct http_conn *c = st->data;

	if (nread > 0) {
		conn_input(c, b->base, (size_t)nread);
	} else if (nread == UV_EOF) {
		conn_peer_eof(c);
	} else if (nread < 0) {
		log_debug(SUB, "conn=%p peer=%s read error: %s", (void *)c, c->peer,
			  uv_strerror((int)nread));
		conn_close(c);
	}
}

/* Starts or stops reading to match the state: invariant (2) is kept by not
 * reading, never by buffering. */
static void conn_update_reading(struct http_conn *c)
{
	bool want =
		(c->state == CONN_OPEN && conn_can_take(c)) || c->state == CONN_LINGER;

	if (want == c->reading)
		return;
	c->reading = want;
	if (c->kind != CONN_TCP)
		return;
	if (want) {
		int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
		if (rc) {
			log_debug(SUB, "conn=%p read_start: %s", (void *)c,
				  uv_strerror(rc));
			conn_close(c);
		}
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
	}
}

static void on_timer(uv_timer_t *t);

/* Arms the one timer of the connection for the earliest deadline that applies
 * in its state (invariant 3). */
static void conn_arm_timer(struct http_conn *c)
{
	const struct http_limits *lim = &c->srv->lim;
	uint64_t now = conn_now(c), deadline = UINT64_MAX;

	if (c->state == CONN_CLOSING)
		return;
	if (c->state == CONN_LINGER) {
		deadline = c->linger_until_ms;
	} else {
		if (c->cur)
			deadline = c->msg_start_ms + lim->read_timeout_ms;
		if (c->writes_pending &&
		    c->write_progress_ms + lim->read_timeout_ms < deadline)
			deadline = c->write_progress_ms + lim->read_timeout_ms;
		if (!c->cur && !c->q_head && !c->writes_pending)
			deadline = c->idle_since_ms + lim->idle_timeout_ms;
	}
	if (deadline == UINT64_MAX) {
		uv_timer_stop(&c->timer);
		return;
	}
	uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	const struct http_limits *lim = &c->srv->lim;
	uint64_t now = conn_now(c);

	switch (c->state) {
	case CONN_CLOSING:
		return;
	case CONN_LINGER:
		if (now >= c->linger_until_ms) {
			conn_close(c);
			return;
		}
		break;
	case CONN_OPEN:
	case CONN_DRAINING:
		if (c->writes_pending &&
		    now >= c->write_progress_ms + lim->read_timeout_ms) {
			log_debug(SUB, "conn=%p peer=%s msg=\"client takes no answer\"",
				  (void *)c, c->peer);
			conn_close(c);
			return;
		}
		if (c->cur && now >= c->msg_start_ms + lim->read_timeout_ms) {
			log_debug(SUB, "conn=%p peer=%s msg=\"read timeout\"", (void *)c,
				  c->peer);
			if (c->q_head || c->writes_pending)
				conn_close(c);
			else
				conn_reject(c, 408, "timeout", NULL,
					    "The request was not received in time.",
					    NULL);
			return;
		}
		if (!c->cur && !c->q_head && !c->writes_pending &&
		    now >= c->idle_since_ms + lim->idle_timeout_ms) {
			log_debug(SUB, "conn=%p peer=%s msg=\"idle timeout\"", (void *)c,
				  c->peer);
			conn_close(c);
			return;
		}
		break;
	}
	conn_arm_timer(c);
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct http_conn *c = w->c;

	c->writes_pending--;
	c->wq_bytes -= w->bytes;
	for (unsigned i = 0; i < w->n; i++)
		free(w->owned[i]);
	free(w);
	if (c->state == CONN_CLOSING)
		return;
	if (status < 0) {
		log_debug(SUB, "conn=%p peer=%s write error: %s", (void *)c, c->peer,
			  uv_strerror(status));
		conn_close(c);
		return;
	}
	c->write_progress_ms = c->idle_since_ms = conn_now(c);
	conn_flush(c);
}

/* Takes ownership of the n buffers (malloc'd). */
static void conn_write(struct http_conn *c, char **owned, size_t *lens, unsigned n)
{
	struct wreq *w;
	uv_buf_t bufs[WRITE_BATCH];
	int rc;

	if (c->kind == CONN_MEM) {
		for (unsigned i = 0; i < n; i++) {
			if (c->out_fn)
				c->out_fn(c->out_ud, owned[i], lens[i]);
			free(owned[i]);
		}
		return;
	}
	for (unsigned i = 0; i < n; i++)
		bufs[i] = uv_buf_init(owned[i], (unsigned)lens[i]);
	if (!c->writes_pending) {
		/* Most answers fit the socket buffer: written here, with no
		 * request, no callback and no pass through the loop's queues.
		 * libuv refuses (EAGAIN) while earlier writes wait, so the order
		 * holds. What is left, if anything, goes the queued way. */
		unsigned first = 0;

		rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
		if (rc < 0 && rc != UV_EAGAIN) {
			for (unsigned i = 0; i < n; i++)
				free(owned[i]);
			log_debug(SUB, "conn=%p write: %s", (void *)c, uv_strerror(rc));
			conn_close(c);
			return;
		}
		for (size_t done = rc > 0 ? (size_t)rc : 0; first < n && done;) {
			if (done < bufs[first].len) {
				bufs[first].base += done;
				bufs[first].len -= (unsigned)done;
				break;
			}
			done -= bufs[first].len;
			free(owned[first++]);
		}
		if (first == n) {
			c->write_progress_ms = conn_now(c);
			return;
		}
		owned += first;
		memmove(bufs, bufs + first, (n - first) * sizeof(bufs[0]));
		n -= first;
	}
	w = xcalloc(1, sizeof(*w));
	w->c = c;
	w->n = n;
	for (unsigned i = 0; i < n; i++) {
		w->owned[i] = owned[i];
		w->bytes += bufs[i].len;
	}
	rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
	if (rc) {
		for (unsigned i = 0; i < n; i++)
			free(owned[i]);
		free(w);
		log_debug(SUB, "conn=%p write: %s", (void *)c, uv_strerror(rc));
		conn_close(c);
		return;
	}
	if (!c->writes_pending)
		c->write_progress_ms = conn_now(c);
	c->writes_pending++;
	c->wq_bytes += w->bytes;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct http_conn *c = req->data;

	if (status < 0 && c->state != CONN_CLOSING)
		conn_close(c);
}

/* DRAINING and nothing left to write: linger, or close outright. */
static void conn_maybe_finish(struct http_conn *c)
{
	int rc;

	if (c->state != CONN_DRAINING || c->q_head || c->writes_pending)
		return;
	if (c->srv->shutting_down || c->peer_eof) {
		conn_close(c);
		return;
	}
	conn_set_state(c, CONN_LINGER);
	c->linger_until_ms = conn_now(c) + (c->srv->lim.read_timeout_ms < LINGER_MS
						    ? c->srv->lim.read_timeout_ms
						    : LINGER_MS);
	if (c->kind == CONN_TCP) {
		c->shut.data = c;
		rc = uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown);
		if (rc) {
			conn_close(c);
			return;
		}
	}
}

/* Returns a copy of r's answer with "Connection: close" in place of its
 * Connection line (if any); *len_out gets its length. */
static char *resp_with_close(const struct http_req *r, size_t *len_out)
{
	static const char hdr[] = "Connection: close\r\n";
	size_t hlen = sizeof(hdr) - 1;
	size_t tail = r->resp_len - r->conn_off - r->conn_len;
	char *p = xmalloc(r->conn_off + hlen + tail);

	memcpy(p, r->resp, r->conn_off);
	memcpy(p + r->conn_off, hdr, hlen);
	memcpy(p + r->conn_off + hlen, r->resp + r->conn_off + r->conn_len, tail);
	*len_out = r->conn_off + hlen + tail;
	return p;
}

/* Sends the 100 Continue owed to the request being received once no earlier
 * answer is still owed (an interim answer must not overtake final ones). */
static void conn_send_continue(struct http_conn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	char *p;
	size_t len = sizeof(cont) - 1;

	if (!c->continue_pending || c->q_head || !c->cur || c->state != CONN_OPEN)
		return;
	c->continue_pending = false;
	p = xstrdup(cont);
	conn_write(c, &p, &len, 1);
}

/* Writes every answer at the head of the FIFO that is ready (invariant 1),
 * then re-evaluates reading, finishing and the timer. */
static void conn_flush(struct http_conn *c)
{
	char *owned[WRITE_BATCH];
	size_t lens[WRITE_BATCH];
	unsigned n = 0;
	bool popped = false;

	c->flush_pending = false;
	if (c->state != CONN_OPEN && c->state != CONN_DRAINING)
		return;
	while (c->q_head && c->q_head->responded && c->state != CONN_CLOSING) {
		struct http_req *r = c->q_head;

		c->q_head = r->next;
		if (!c->q_head)
			c->q_tail = NULL;
		c->q_len--;
		c->q_bytes -= r->held_bytes;
		c->q_resp_bytes -= r->resp_len;
		if (c->state != CONN_OPEN && !c->q_head) {
			/* The last answer on this connection says so (RFC 9112 §9.6):
			 * nothing may follow an answer carrying "close". */
			owned[n] = resp_with_close(r, &lens[n]);
		} else {
			owned[n] = r->resp;
			lens[n] = r->resp_len;
			r->resp = NULL;
		}
		req_free(r);
		popped = true;
		if (++n == WRITE_BATCH) {
			conn_write(c, owned, lens, n);
			n = 0;
		}
	}
	if (n)
		conn_write(c, owned, lens, n);
	if (c->state == CONN_CLOSING)
		return;
	if (popped)
		c->idle_since_ms = conn_now(c);
	conn_maybe_finish(c);
	conn_after_io(c);
}

/* ---- parsing ---- */

static struct http_conn *pconn(http_parser *p)
{
	return p->data;
}

static int reject_in_cb(struct http_conn *c, int status, const char *code,
			const char *field, const char *message)
{
	c->reject_status = status;
	c->reject_code = code;
	c->reject_field = field;
	c->reject_msg = message;
	return -1;
}

static int count_header_bytes(struct http_conn *c, size_t n)
{
	c->hdr_bytes += n;
	if (c->hdr_bytes > c->srv->lim.max_header_bytes)
		return reject_in_cb(c, 413, "too_big", "headers",
				    "The request line and headers are too large.");
	return 0;
}

/* RFC 9110 §5.6.2 token characters. The non-strict http-parser build also lets
 * spaces into names, and then still honours "Content-Length : 5", which a
 * proxy in front would drop as invalid: a request smuggling shape. */
static bool is_tchar(unsigned char ch)
{
	if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
	    (ch >= 'A' && ch <= 'Z'))
		return true;
	return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Marks the end of a section of the message and pauses the parser there, so
 * conn_check_framing sees exactly the bytes of the section that ended. */
static void section_end(struct http_conn *c, bool next_in_lines, bool check_crlf_tail)
{
	c->section_ends = true;
	c->next_in_lines = next_in_lines;
	c->check_crlf_tail = check_crlf_tail;
	http_parser_pause(&c->parser, 1);
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *c = pconn(p);

	ASSERT(!c->cur);
	c->cur = req_new(c);
	c->hstate = HS_URL;
	c->hdr_bytes = 0;
	c->continue_pending = false;
	c->msg_start_ms = conn_now(c);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);

	if (count_header_bytes(c, len))
		return -1;
	buf_append(&c->cur->raw, at, len);
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	struct http_req *r = c->cur;

	if (count_header_bytes(c, len))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!is_tchar((unsigned char)at[i]))
			return reject_in_cb(c, 400, "invalid", NULL,
					    "A header name is not a token.");
	}
	if (c->hstate == HS_TRAILER)
		return 0;
	if (c->hstate != HS_FIELD) {
		if (r->nhdrs == MAX_HEADER_FIELDS)
			return reject_in_cb(c, 413, "too_big", "headers",
					    "The request has too many header fields.");
		if (count_header_bytes(c, 4)) /* ": " and CRLF */
			return -1;
		req_tok_end(r);
		if (r->nhdrs == r->ahdrs) {
			r->ahdrs = r->ahdrs ? r->ahdrs * 2 : 16;
			r->hdrs = xrealloc(r->hdrs, r->ahdrs * sizeof(*r->hdrs));
		}
		r->hdrs[r->nhdrs].name_off = (uint32_t)r->raw.len;
		r->hdrs[r->nhdrs].value_off = 0;
		r->nhdrs++;
		c->hstate = HS_FIELD;
	}
	buf_append(&r->raw, at, len);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	struct http_req *r = c->cur;

	if (count_header_bytes(c, len))
		return -1;
	if (c->hstate == HS_TRAILER)
		return 0;
	if (c->hstate == HS_URL)
		return reject_in_cb(c, 400, "invalid", NULL,
				    "A header value without a name.");
	if (c->hstate == HS_FIELD) {
		req_tok_end(r);
		r->hdrs[r->nhdrs - 1].value_off = (uint32_t)r->raw.len;
		c->hstate = HS_VALUE;
	}
	buf_append(&r->raw, at, len);
	return 0;
}

/* Closes the last token; trims trailing blanks off header values. */
static void req_finish_headers(struct http_conn *c, struct http_req *r)
{
	if (c->hstate == HS_FIELD) {
		req_tok_end(r);
		r->hdrs[r->nhdrs - 1].value_off = (uint32_t)r->raw.len;
	}
	req_tok_end(r);
	for (unsigned i = 0; i < r->nhdrs; i++) {
		char *v = r->raw.data + r->hdrs[i].value_off;
		size_t n = strlen(v);

		while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			v[--n] = '\0';
	}
	c->hstate = HS_TRAILER;
}

/* Splits the request target into path and query, appended to raw. */
static int req_split_target(struct http_req *r)
{
	struct http_parser_url u;
	const char *url = r->raw.data;
	size_t ulen = strlen(url);
	uint16_t plen, qlen = 0, poff, qoff = 0;

	http_parser_url_init(&u);
	if (ulen == 0 || ulen > UINT16_MAX || http_parser_parse_url(url, ulen, 0, &u))
		return -1;
	if (!(u.field_set & (1 << UF_PATH)))
		return -1;
	poff = u.field_data[UF_PATH].off;
	plen = u.field_data[UF_PATH].len;
	if (url[poff] != '/')
		return -1;
	if (u.field_set & (1 << UF_QUERY)) {
		qoff = u.field_data[UF_QUERY].off;
		qlen = u.field_data[UF_QUERY].len;
	}
	/* raw may move while appending: copy through offsets. */
	r->path_off = r->raw.len;
	buf_reserve(&r->raw, (size_t)plen + qlen + 2);
	url = r->raw.data;
	buf_append(&r->raw, url + poff, plen);
	req_tok_end(r);
	r->query_off = r->raw.len;
	buf_append(&r->raw, r->raw.data + qoff, qlen);
	req_tok_end(r);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *c = pconn(p);
	struct http_req *r = c->cur;
	const struct http_limits *lim = &c->srv->lim;
	const char *expect;
	bool has_body;

	req_finish_headers(c, r);
	r->method = http_method_str((enum http_method)p->method);
	r->http10 = p->http_major == 1 && p->http_minor == 0;
	r->head = p->method == HTTP_HEAD;
	if (p->http_major == 0)
		return reject_in_cb(c, 400, "invalid", NULL,
				    "HTTP/0.9 is not supported.");
	if (p->http_major != 1)
		return reject_in_cb(c, 505, "unsupported", NULL,
				    "Only HTTP/1.0 and HTTP/1.1 are supported.");
	if (p->method == HTTP_CONNECT)
		return reject_in_cb(c, 405, "unsupported", NULL,
				    "CONNECT is not supported.");
	if (req_split_target(r))
		return reject_in_cb(c, 400, "invalid", NULL,
				    "The request target is invalid.");
	/* http-parser 2.9 lets a request through with a Transfer-Encoding that
	 * does not end in chunked; its body length would be unknowable. */
	if (p->uses_transfer_encoding && !(p->flags & F_CHUNKED))
		return reject_in_cb(c, 400, "invalid", "Transfer-Encoding",
				    "Invalid Transfer-Encoding.");
	has_body = (p->flags & F_CHUNKED) ||
		   ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
	if ((p->method == HTTP_POST || p->method == HTTP_PUT ||
	     p->method == HTTP_PATCH) &&
	    !(p->flags & (F_CONTENTLENGTH | F_CHUNKED)))
		return reject_in_cb(c, 411, "length_required", "Content-Length",
				    "A request body needs Content-Length or chunked "
				    "Transfer-Encoding.");
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > lim->max_body_bytes)
		return reject_in_cb(c, 413, "too_big", "body",
				    "The request body is too large.");
	expect = http_req_header(r, "expect");
	if (expect) {
		if (strcasecmp(expect, "100-continue") != 0)
			return reject_in_cb(c, 417, "unsupported", "Expect",
					    "Only Expect: 100-continue is supported.");
		if (has_body && !r->http10)
			c->continue_pending = true; /* sent by conn_flush, in order */
	}
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)
		buf_reserve(&r->body, p->content_length < BODY_PREALLOC_MAX_BYTES
					      ? (size_t)p->content_length
					      : BODY_PREALLOC_MAX_BYTES);
	/* The head ends before its final LF; chunk-size lines follow if chunked. */
	section_end(c, (p->flags & F_CHUNKED) != 0, false);
	return 0;
}

static int on_chunk_header(http_parser *p)
{
	struct http_conn *c = pconn(p);

	/* The size line ended; data follows, or trailers after the last chunk. */
	c->last_chunk = p->content_length == 0;
	section_end(c, c->last_chunk, true);
	return 0;
}

static int on_chunk_complete(http_parser *p)
{
	struct http_conn *c = pconn(p);

	/* The chunk data and its CRLF ended and the next size line follows; or,
	 * after the last chunk, the trailers ended (before their final LF). */
	section_end(c, true, !c->last_chunk);
	c->last_chunk = false;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);

	c->continue_pending = false;
	if (buf_append(&c->cur->body, at, len))
		return reject_in_cb(c, 413, "too_big", "body",
				    "The request body is too large.");
	return 0;
}

/* The request is complete. It is dispatched by conn_parse once the bytes of
 * this execute call passed conn_check_framing. */
static int on_message_complete(http_parser *p)
{
	struct http_conn *c = pconn(p);
	struct http_req *r = c->cur;

	c->cur = NULL;
	c->continue_pending = false;
	r->keep_alive = http_should_keep_alive(p) != 0;
	c->complete = r;
	section_end(c, true, false);
	return 0;
}

/* Queues the complete request and hands it to the application; the parser is
 * paused here, so the connection decides about the next one (conn_parse). */
static void conn_dispatch(struct http_conn *c)
{
	struct http_server *s = c->srv;
	struct http_req *r = c->complete;

	c->complete = NULL;
	r->start_ns = clock_mono_ns();
	r->dispatched = true;
	r->held_bytes = r->body.alloc + r->raw.alloc;
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
	c->q_len++;
	c->q_bytes += r->held_bytes;
	if (!r->keep_alive)
		conn_set_state(c, CONN_DRAINING);
	s->fn(s->ud, r);
}

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_header = on_chunk_header,
	.on_chunk_complete = on_chunk_complete,
};

/*
 * The line-ending rules the non-strict http-parser build skips: in the request
 * line, headers, chunk-size lines and trailers every CR must be followed by LF
 * (it takes any byte after a CR as the LF), and chunk data must be followed by
 * CRLF (it takes any two bytes). seg is what one http_parser_execute() call
 * consumed; callbacks pause at every section end, so seg never spans two
 * sections. Returns -1 on a violation.
 */
static int conn_check_framing(struct http_conn *c, const char *seg, size_t n)
{
	size_t i = 0;

	if (c->cr_pending && n) {
		if (seg[0] != '\n')
			return -1;
		c->cr_pending = false;
		i = 1;
	}
	if (c->in_lines) {
		for (; i < n; i++) {
			if (c->cr_pending) {
				if (seg[i] != '\n')
					return -1;
				c->cr_pending = false;
			} else if (seg[i] == '\r') {
				c->cr_pending = true;
			}
		}
	}
	if (n >= 2)
		c->tail = (uint16_t)((unsigned char)seg[n - 2] << 8 |
				     (unsigned char)seg[n - 1]);
	else if (n == 1)
		c->tail = (uint16_t)(c->tail << 8 | (unsigned char)seg[0]);
	if (c->section_ends) {
		c->section_ends = false;
		c->in_lines = c->next_in_lines;
		if (c->check_crlf_tail && c->tail != ('\r' << 8 | '\n'))
			return -1;
	}
	return 0;
}

static void conn_reject_parse_error(struct http_conn *c)
{
	enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

	if (c->reject_status) {
		conn_reject(c, c->reject_status, c->reject_code, c->reject_field,
			    c->reject_msg, NULL);
		return;
	}
	log_debug(SUB, "conn=%p peer=%s parse error=%s", (void *)c, c->peer,
		  http_errno_name(err));
	switch (err) {
	case HPE_HEADER_OVERFLOW:
		conn_reject(c, 413, "too_big", "headers",
			    "The request line and headers are too large.", NULL);
		break;
	case HPE_INVALID_METHOD:
		conn_reject(c, 400, "invalid", NULL, "Unknown request method.", NULL);
		break;
	case HPE_INVALID_CHUNK_SIZE:
		conn_reject(c, 400, "invalid", NULL, "Invalid chunk size.", NULL);
		break;
	case HPE_INVALID_CONTENT_LENGTH:
	case HPE_UNEXPECTED_CONTENT_LENGTH:
		conn_reject(c, 400, "invalid", NULL, "Invalid Content-Length.", NULL);
		break;
	case HPE_INVALID_TRANSFER_ENCODING:
		conn_reject(c, 400, "invalid", NULL, "Invalid Transfer-Encoding.", NULL);
		break;
	default:
		conn_reject(c, 400, "invalid", NULL, "Malformed HTTP request.", NULL);
		break;
	}
}

/* Parses data until it is used up, the connection stops taking requests, or a
 * refusal. Returns the bytes consumed. Not re-entrant (handlers may answer
 * synchronously, which flushes, which may want to parse saved input). */
static size_t conn_parse(struct http_conn *c, const char *data, size_t len)
{
	size_t off = 0;

	ASSERT(!c->parsing);
	c->parsing = true;
	while (off < len && c->state == CONN_OPEN) {
		size_t n;
		enum http_errno err;

		if (!conn_can_take(c)) {
			if (!c->flush_pending)
				break;
			conn_flush(c); /* answers given meanwhile make room */
			continue;
		}
		http_parser_pause(&c->parser, 0);
		n = http_parser_execute(&c->parser, &parser_settings, data + off,
					len - off);
		err = HTTP_PARSER_ERRNO(&c->parser);
		if ((err == HPE_OK || err == HPE_PAUSED) &&
		    conn_check_framing(c, data + off, n)) {
			off += n;
			if (c->complete) {
				req_free(c->complete);
				c->complete = NULL;
			}
			if (c->state == CONN_OPEN)
				conn_reject(c, 400, "invalid", NULL,
					    "Malformed line ending or chunk framing.",
					    NULL);
			break;
		}
		off += n;
		if (c->complete)
			conn_dispatch(c);
		if (err == HPE_PAUSED)
			continue;
		if (err != HPE_OK || n == 0) {
			if (c->state == CONN_OPEN)
				conn_reject_parse_error(c);
			break;
		}
	}
	/* Still flagged as parsing: the flush must not parse saved input while
	 * our caller may be parsing from it. Nothing is lost: the loop only ends
	 * with answers pending once its input is used up or the state changed. */
	if (c->flush_pending)
		conn_flush(c);
	c->parsing = false;
	return off;
}

/* Parses input saved at a pause, if the connection takes requests again. */
static void conn_parse_saved(struct http_conn *c)
{
	size_t n;

	if (c->parsing || !c->in.len || c->state != CONN_OPEN || !conn_can_take(c))
		return;
	n = conn_parse(c, c->in.data, c->in.len);
	if (c->state != CONN_OPEN || n == c->in.len) {
		buf_reset(&c->in);
		return;
	}
	memmove(c->in.data, c->in.data + n, c->in.len - n);
	c->in.len -= n;
	c->in.data[c->in.len] = '\0';
}

/* After any change: resume saved input, match reading and the timer. */
static void conn_after_io(struct http_conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	conn_parse_saved(c);
	conn_send_continue(c);
	if (c->state == CONN_CLOSING)
		return;
	conn_update_reading(c);
	if (c->state == CONN_CLOSING)
		return;
	conn_arm_timer(c);
}

static void conn_input(struct http_conn *c, const char *data, size_t len)
{
	size_t n;

	if (c->state != CONN_OPEN)
		return; /* LINGER drops input; DRAINING/CLOSING read nothing more */
	if (c->parsing || c->in.len || !conn_can_take(c)) {
		buf_append(&c->in, data, len);
	} else {
		n = conn_parse(c, data, len);
		if (n < len && c->state == CONN_OPEN)
			buf_append(&c->in, data + n, len - n);
	}
	conn_after_io(c);
}

static void conn_peer_eof(struct http_conn *c)
{
	c->peer_eof = true;
	switch (c->state) {
	case CONN_OPEN:
		/* A half-closed client still gets the answers it is owed. */
		if (c->cur) {
			req_free(c->cur);
			c->cur = NULL;
		}
		conn_set_state(c, CONN_DRAINING);
		conn_maybe_finish(c);
		conn_after_io(c);
		break;
	case CONN_DRAINING:
		conn_maybe_finish(c);
		break;
	case CONN_LINGER:
		conn_close(c);
		break;
	case CONN_CLOSING:
		break;
	}
}

/* Appends s as a JSON string body (without quotes); invalid UTF-8 becomes
 * U+FFFD so the answer is always valid JSON whatever a message quotes. */
static void json_escape(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		unsigned char ch = *p;
		int n = 0;

		if (ch == '"' || ch == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)ch);
			p++;
			continue;
		}
		if (ch < 0x20) {
			buf_printf(b, "\\u%04x", ch);
			p++;
			continue;
		}
		if (ch < 0x80) {
			buf_putc(b, (char)ch);
			p++;
			continue;
		}
		if (ch >= 0xc2 && ch <= 0xdf)
			n = 1;
		else if (ch >= 0xe0 && ch <= 0xef)
			n = 2;
		else if (ch >= 0xf0 && ch <= 0xf4)
			n = 3;
		for (int i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80) {
				n = 0;
				break;
			}
		}
		/* overlongs and surrogates */
		if (n == 2 &&
		    ((ch == 0xe0 && p[1] < 0xa0) || (ch == 0xed && p[1] >= 0xa0)))
			n = 0;
		if (n == 3 &&
		    ((ch == 0xf0 && p[1] < 0x90) || (ch == 0xf4 && p[1] >= 0x90)))
			n = 0;
		if (!n) {
			buf_puts(b, "\\ufffd");
			p++;
			continue;
		}
		buf_append(b, p, (size_t)n + 1);
		p += n + 1;
	}
}

/* The body of every error answer (DESIGN.md §5). */
static void error_body(struct buf *b, const char *code, const char *field,
		       const char *message)
{
	buf_puts(b, "{\"error\":{\"code\":\"");
	json_escape(b, code ? code : "error");
	if (field && field[0]) {
		buf_puts(b, "\",\"field\":\"");
		json_escape(b, field);
	}
	buf_puts(b, "\",\"message\":\"");
	json_escape(b, message ? message : "");
	buf_puts(b, "\"}}");
}

/* Refuses: drops the request being received, queues the error answer behind
 * the ones owed (invariant 1) and stops taking requests (invariant 5). */
static void conn_reject(struct http_conn *c, int status, const char *code,
			const char *field, const char *message, const char *extra)
{
	struct http_req *r;
	struct buf b;

	if (c->state != CONN_OPEN)
		return;
	log_debug(SUB, "conn=%p peer=%s refused status=%d msg=\"%s\"", (void *)c, c->peer,
		  status, message);
	if (c->cur) {
		req_free(c->cur);
		c->cur = NULL;
	}
	c->continue_pending = false;
	r = req_new(c);
	r->dispatched = true;
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
	c->q_len++;
	conn_set_state(c, CONN_DRAINING);
	buf_init(&b, 0);
	error_body(&b, code, field, message);
	respond_ex(r, status, "application/json", b.data, b.len, extra);
	buf_fini(&b);
}

/* ---- answering ---- */

static const char *status_reason(int status)
{
	const char *s = http_status_str((enum http_status)status);

	return (s && s[0] != '<') ? s : "Unknown";
}

static const char *server_date(struct http_server *s)
{
	time_t now = time(NULL);
	struct tm tm;

	if (now != s->date_sec) {
		gmtime_r(&now, &tm);
		strftime(s->date, sizeof(s->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		s->date_sec = now;
	}
	return s->date;
}

static void respond_ex(struct http_req *r, int status, const char *content_type,
		       const char *body, size_t len, const char *extra_headers)
{
	struct http_conn *c = r->conn;
	struct buf b;
	bool no_body;
	size_t extra_len = extra_headers ? strlen(extra_headers) : 0;

	ASSERT(!r->responded);
	ASSERT(r->dispatched);
	ASSERT(status >= 200 && status <= 999);
	ASSERT(extra_len == 0 ||
	       (extra_len >= 2 && extra_headers[extra_len - 2] == '\r' &&
		extra_headers[extra_len - 1] == '\n'));
	if (!c) { /* orphan: the client is gone (invariant 4) */
		req_free(r);
		return;
	}
	no_body = status == 204 || status == 304;
	buf_init(&b, 0);
	buf_reserve(&b,
		    160 + (content_type ? strlen(content_type) : 0) + extra_len + len);
	/* Put together by hand: the printf calls were about 3 % of the
	 * loop thread's time under single-event load. */
	{
		char num[24] = {(char)('0' + status / 100),
				(char)('0' + status / 10 % 10), (char)('0' + status % 10),
				' '};

		buf_puts(&b, "HTTP/1.1 ");
		buf_append(&b, num, 4);
		buf_puts(&b, status_reason(status));
		buf_puts(&b, "\r\nDate: ");
		buf_puts(&b, server_date(c->srv));
		buf_puts(&b, "\r\n");
		if (content_type) {
			buf_puts(&b, "Content-Type: ");
			buf_puts(&b, content_type);
			buf_puts(&b, "\r\n");
		}
		if (!no_body) {
			char *e = num + sizeof(num), *d = e;
			size_t v = len;

			do
				*--d = (char)('0' + v % 10);
			while ((v /= 10) != 0);
			buf_puts(&b, "Content-Length: ");
			buf_append(&b, d, (size_t)(e - d));
			buf_puts(&b, "\r\n");
		}
	}
	/* Formatted for a connection that stays open; conn_flush puts in
	 * "Connection: close" if this turns out to be the last answer. */
	r->conn_off = b.len;
	if (r->http10)
		buf_puts(&b, "Connection: keep-alive\r\n");
	r->conn_len = b.len - r->conn_off;
	if (extra_len)
		buf_append(&b, extra_headers, extra_len);
	buf_puts(&b, "\r\n");
	if (!no_body && !r->head && len)
		buf_append(&b, body, len);
	r->resp_len = b.len;
	r->resp = buf_take(&b);
	r->responded = true;
	c->q_resp_bytes += r->resp_len;
	if (c->parsing)
		c->flush_pending = true; /* pipelined answers leave in one write */
	else
		conn_flush(c);
}

void http_respond(struct http_req *r, int status, const char *content_type,
		  const char *body, size_t len, const char *extra_headers)
{
	respond_ex(r, status, content_type, body ? body : "", body ? len : 0,
		   extra_headers);
}

void http_respond_error(struct http_req *r, int status, const char *code,
			const char *field, const char *message)
{
	struct buf b;

	buf_init(&b, 0);
	error_body(&b, code, field, message);
	respond_ex(r, status, "application/json", b.data, b.len, NULL);
	buf_fini(&b);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int http_url_decode(const char *src, size_t len, char *dst)
{
	size_t o = 0;

	ASSERT(len < (size_t)INT32_MAX);
	for (size_t i = 0; i < len; i++) {
		char ch = src[i];

		if (ch == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return -1;
			hi = hexval(src[i + 1]);
			lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			dst[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (ch == '\0') {
			return -1;
		} else {
			dst[o++] = ch;
		}
	}
	dst[o] = '\0';
	return (int)o;
}

/* ---- connections and the server ---- */

static struct http_conn *conn_new(struct http_server *s, enum conn_kind kind)
{
	struct http_conn *c = xcalloc(1, sizeof(*c));

	c->srv = s;
	c->kind = kind;
	c->state = CONN_OPEN;
	c->in_lines = true;
	buf_init(&c->in, 0);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	ASSERT(uv_timer_init(s->loop, &c->timer) == 0);
	c->timer.data = c;
	c->refs = 1;
	if (kind == CONN_TCP) {
		ASSERT(uv_tcp_init(s->loop, &c->tcp) == 0);
		c->tcp.data = c;
		c->refs++;
	} else {
		c->refs++; /* the attaching caller */
	}
	c->idle_since_ms = c->write_progress_ms = conn_now(c);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	s->nactive++;
	return c;
}

/* A new connection past max_connections is answered 503 and closed. Returns
 * false if the connection was closed outright (too many being refused). */
static bool conn_admit(struct http_conn *c)
{
	struct http_server *s = c->srv;
	uint64_t now;

	if (s->nactive <= s->lim.max_connections)
		return true;
	s->nactive--;
	s->noverflow++;
	c->overflow = true;
	now = conn_now(c);
	if (now >= s->overflow_logged_ms + 1000) {
		log_warn(SUB, "msg=\"too many connections, refusing\" max=%u",
			 s->lim.max_connections);
		s->overflow_logged_ms = now;
	}
	if (s->noverflow > MAX_OVERFLOW_CONNS) {
		conn_close(c);
		return false;
	}
	conn_reject(c, 503, "busy", NULL, "Too many connections; retry later.",
		    "Retry-After: 1\r\n");
	return false;
}

static void on_connection(uv_stream_t *ls, int status)
{
	struct http_server *s = ls->data;
	struct http_conn *c;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (status < 0) {
		log_warn(SUB, "msg=\"accept failed\" err=\"%s\"", uv_strerror(status));
		return;
	}
	c = conn_new(s, CONN_TCP);
	if (uv_accept(ls, (uv_stream_t *)&c->tcp)) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
		else
			uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
	}
	if (s->shutting_down) {
		conn_close(c);
		return;
	}
	conn_admit(c);
	conn_after_io(c);
}

enum nerr http_server_new(uv_loop_t *loop, const struct http_limits *lim,
			  http_handler_fn fn, void *userdata, struct http_server **out)
{
	struct http_server *s = xcalloc(1, sizeof(*s));
	struct http_limits d;

	/* A client that resets must never kill the process: writes to a dead
	 * socket return EPIPE instead of raising SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	http_limits_default(&d);
	s->lim = d;
	if (lim) {
		s->lim = *lim;
		if (!s->lim.max_header_bytes)
			s->lim.max_header_bytes = d.max_header_bytes;
		if (!s->lim.max_body_bytes)
			s->lim.max_body_bytes = d.max_body_bytes;
		if (!s->lim.max_connections)
			s->lim.max_connections = d.max_connections;
		if (!s->lim.max_pipelined)
			s->lim.max_pipelined = d.max_pipelined;
		if (!s->lim.idle_timeout_ms)
			s->lim.idle_timeout_ms = d.idle_timeout_ms;
		if (!s->lim.read_timeout_ms)
			s->lim.read_timeout_ms = d.read_timeout_ms;
	}
	s->loop = loop;
	s->fn = fn;
	s->ud = userdata;
	*out = s;
	return NERR_OK;
}

enum nerr http_server_listen(struct http_server *s, const char *host, int port,
			     struct nerr_msg *msg)
{
	struct sockaddr_storage ss;
	int rc, fd, one = 1, len = sizeof(ss);
	socklen_t salen;

	ASSERT(!s->listener_open && !s->shutting_down);
	if (port < 0 || port > 65535)
		return nerr_set(msg, NERR_INVAL, "listen", "port %d is out of range",
				port);
	if (strchr(host, ':'))
		rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
	else
		rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
	if (rc)
		return nerr_set(msg, NERR_INVAL, "listen", "bad listen address %s", host);
	/* Bind with plain calls so that the usual failures (address in use, no
	 * permission) leave no libuv handle behind to close asynchronously. */
	salen = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					 : sizeof(struct sockaddr_in);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return nerr_set(msg, NERR_IO, "listen", "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, salen) || listen(fd, 511)) {
		rc = errno;
		close(fd);
		return nerr_set(msg, NERR_IO, "listen", "%s", strerror(rc));
	}
	ASSERT(uv_tcp_init(s->loop, &s->listener) == 0);
	s->listener.data = s;
	s->listener_open = true;
	s->open_handles++;
	rc = uv_tcp_open(&s->listener, fd);
	if (rc)
		close(fd);
	else
		rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
	if (rc) {
		/* Rare: the handle closes asynchronously (run the loop before
		 * http_server_free). */
		http_server_stop_accepting(s);
		return nerr_set(msg, NERR_IO, "listen", "%s", uv_strerror(rc));
	}
	if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6
					? ((struct sockaddr_in6 *)&ss)->sin6_port
					: ((struct sockaddr_in *)&ss)->sin_port);
	log_info(SUB, "msg=\"listening\" host=%s port=%d", host, s->port);
	return NERR_OK;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

static void on_server_handle_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;

	s->open_handles--;
	server_check_done(s);
}

void http_server_stop_accepting(struct http_server *s)
{
	if (!s->listener_open)
		return;
	s->listener_open = false;
	uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
}

void http_server_shutdown(struct http_server *s, void (*done_fn)(void *ud), void *ud)
{
	ASSERT(!s->shutting_down);
	s->shutting_down = true;
	s->done_fn = done_fn;
	s->done_ud = ud;
	http_server_stop_accepting(s);
	for (struct http_conn *c = s->conns; c; c = c->next) {
		switch (c->state) {
		case CONN_OPEN:
			if (c->cur) {
				req_free(c->cur);
				c->cur = NULL;
			}
			c->continue_pending = false;
			conn_set_state(c, CONN_DRAINING);
			conn_maybe_finish(c);
			conn_after_io(c);
			break;
		case CONN_DRAINING:
			conn_maybe_finish(c);
			break;
		case CONN_LINGER:
			conn_close(c);
			break;
		case CONN_CLOSING:
			break;
		}
	}
	ASSERT(uv_timer_init(s->loop, &s->kick) == 0);
	s->kick.data = s;
	s->open_handles++;
	uv_close((uv_handle_t *)&s->kick, on_server_handle_closed);
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	ASSERT(s->open_handles == 0 && s->nconns == 0);
	free(s);
}

unsigned http_server_connection_count(const struct http_server *s)
{
	return s->nconns;
}

/* ---- socketless connections ---- */

struct http_conn *http_conn_attach(struct http_server *s, http_out_fn out_fn, void *ud)
{
	struct http_conn *c = conn_new(s, CONN_MEM);

	c->out_fn = out_fn;
	c->out_ud = ud;
	snprintf(c->peer, sizeof(c->peer), "mem");
	if (s->shutting_down)
		conn_close(c);
	else
		conn_admit(c);
	conn_after_io(c);
	return c;
}

int http_conn_feed(struct http_conn *c, const void *data, size_t len)
{
	if (len && (c->state == CONN_OPEN || c->state == CONN_LINGER))
		conn_input(c, data, len);
	return c->state == CONN_OPEN;
}

void http_conn_eof(struct http_conn *c)
{
	conn_peer_eof(c);
}

void http_conn_release(struct http_conn *c)
{
	ASSERT(c->kind == CONN_MEM);
	conn_close(c);
	conn_unref(c);
}
