/*
 * cmd_sink.c -- `nudge sink --http PORT`: a webhook catcher for development.
 *
 * Design: the smallest receiver that shows what nudge sends. It serves HTTP
 * with nudge's own server module (src/ingest/http.h) on 127.0.0.1 (or
 * --listen HOST:PORT) and prints every request to stdout -- time, method,
 * path, the Idempotency-Key and X-Nudge-Signature headers, the body
 * pretty-printed when it is JSON -- flushing after each, so it can be piped
 * or watched from a test. It answers 200 {"ok":true}; --fail-first N answers
 * the first N requests 503 (with Retry-After: 1) and --status CODE answers
 * every request CODE, to watch nudge retry or give up. With --secret S each
 * signature is checked and marked (valid) or (INVALID).
 *
 * The first line on stdout is "listening on http://HOST:PORT" (PORT 0 picks a
 * free port and this line names it). SIGINT/SIGTERM stop it; exit status 0,
 * or 2 on bad usage or when it cannot listen.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <uv.h>

#include "app/cmd.h"
#include "base/clock.h"
#include "deliver/deliver.h"
#include "ingest/http.h"

struct sink {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm;
	struct http_server *srv;
	unsigned fail_first;
	int status;
	const char *secret;
	unsigned long count;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: nudge sink --http PORT [--listen HOST:PORT] [--fail-first N] "
		"[--status CODE] [--secret S]\n");
}

/* Checks "t=<sec>,v1=<hex>" against the body the way a receiver would. */
static bool signature_valid(const char *secret, const char *header, const char *body,
			    size_t len)
{
	char expect[DELIVER_SIGNATURE_MAX];
	long long t;
	if (sscanf(header, "t=%lld,", &t) != 1)
		return false;
	deliver_sign(secret, t, body, len, expect);
	return strcmp(expect, header) == 0;
}

static void print_body(const char *body, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *obj = NULL;
	if (len > 0) {
		obj = json_tokener_parse_ex(tok, body, (int)len);
		if (json_tokener_get_error(tok) != json_tokener_success ||
		    json_tokener_get_parse_end(tok) != len) {
			json_object_put(obj);
			obj = NULL;
		}
	}
	json_tokener_free(tok);
	if (obj) {
		printf("%s\n",
		       json_object_to_json_string_ext(
			       obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(obj);
	} else if (len > 0) {
		fwrite(body, 1, len, stdout);
		if (body[len - 1] != '\n')
			putchar('\n');
	}
}

static void on_request(void *ud, struct http_req *req)
{
	struct sink *s = ud;
	char when[32];
	size_t len;
	const char *body = http_req_body(req, &len);
	const char *idem = http_req_header(req, "Idempotency-Key");
	const char *sig = http_req_header(req, "X-Nudge-Signature");
	const char *query = http_req_query(req);
	int status = s->status;

	s->count++;
	clock_format_rfc3339(clock_wall_ms(), when);
	printf("--- #%lu %s %s %s%s%s\n", s->count, when, http_req_method(req),
	       http_req_path(req), query[0] ? "?" : "", query);
	printf("Idempotency-Key: %s\n", idem ? idem : "(none)");
	if (sig && s->secret)
		printf("X-Nudge-Signature: %s (%s)\n", sig,
		       signature_valid(s->secret, sig, body, len) ? "valid" : "INVALID");
	else
		printf("X-Nudge-Signature: %s\n", sig ? sig : "(none)");
	print_body(body, len);

	if (s->fail_first > 0) {
		s->fail_first--;
		status = 503;
	}
	printf("=> %d\n", status);
	fflush(stdout);
	if (status == 503)
		http_respond(req, status, "application/json", "{\"ok\":false}", 12,
			     "Retry-After: 1\r\n");
	else if (status >= 200 && status <= 299)
		http_respond(req, status, "application/json", "{\"ok\":true}", 11, NULL);
	else
		http_respond(req, status, "application/json", "{\"ok\":false}", 12, NULL);
}

static void closed_all(void *ud)
{
	struct sink *s = ud;
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct sink *s = h->data;
	uv_signal_stop(&s->sigint);
	uv_signal_stop(&s->sigterm);
	http_server_shutdown(s->srv, closed_all, s);
}

static bool parse_uint(const char *text, unsigned long max, unsigned long *out)
{
	char *end;
	if (!text || !*text)
		return false;
	unsigned long v = strtoul(text, &end, 10);
	if (*end || v > max || text[0] == '-')
		return false;
	*out = v;
	return true;
}

int cmd_sink(int argc, char **argv)
{
	struct sink s = {.status = 200};
	char host[128] = "127.0.0.1";
	unsigned long port = 0, v;
	bool have_port = false;
	struct nerr_msg msg;

	nerr_clear(&msg);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--http") == 0 && parse_uint(val, 65535, &port)) {
			have_port = true;
			i++;
		} else if (strcmp(a, "--listen") == 0 && val) {
			const char *colon = strrchr(val, ':');
			size_t hl = colon ? (size_t)(colon - val) : 0;
			if (!colon || hl == 0 || hl >= sizeof(host) ||
			    !parse_uint(colon + 1, 65535, &port)) {
				usage();
				return 2;
			}
			if (val[0] == '[' && hl >= 2 && val[hl - 1] == ']')
				snprintf(host, sizeof(host), "%.*s", (int)(hl - 2),
					 val + 1);
			else
				snprintf(host, sizeof(host), "%.*s", (int)hl, val);
			have_port = true;
			i++;
		} else if (strcmp(a, "--fail-first") == 0 &&
			   parse_uint(val, 1u << 30, &v)) {
			s.fail_first = (unsigned)v;
			i++;
		} else if (strcmp(a, "--status") == 0 && parse_uint(val, 599, &v) &&
			   v >= 200) {
			s.status = (int)v;
			i++;
		} else if (strcmp(a, "--secret") == 0 && val && *val) {
			s.secret = val;
			i++;
		} else {
			usage();
			return 2;
		}
	}
	if (!have_port) {
		usage();
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&s.loop);
	if (http_server_new(&s.loop, NULL, on_request, &s, &s.srv) != NERR_OK ||
	    http_server_listen(s.srv, host, (int)port, &msg) != NERR_OK) {
		fprintf(stderr, "nudge sink: cannot listen on %s:%lu: %s\n", host, port,
			msg.message);
		if (s.srv) {
			http_server_shutdown(s.srv, NULL, NULL);
			uv_run(&s.loop, UV_RUN_DEFAULT);
			http_server_free(s.srv);
		}
		uv_loop_close(&s.loop);
		return 2;
	}
	printf("listening on http://%s%s%s:%d\n", strchr(host, ':') ? "[" : "", host,
	       strchr(host, ':') ? "]" : "", http_server_port(s.srv));
	fflush(stdout);

	uv_signal_init(&s.loop, &s.sigint);
	uv_signal_init(&s.loop, &s.sigterm);
	s.sigint.data = s.sigterm.data = &s;
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	http_server_free(s.srv);
	uv_loop_close(&s.loop);
	return 0;
}
