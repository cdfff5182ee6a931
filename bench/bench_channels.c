/*
 * bench_channels.c -- emails/s through the SMTP pool, SMS and webhook
 * requests/s, through the real delivery thread.
 *
 * Design: the delivery thread (src/deliver) sends to local peers over real
 * loopback sockets:
 *   - email: `nudge sink --smtp 0` (our own libuv SMTP catcher, its output
 *     drained and discarded), with smtp.connections = 1 and then 4; the
 *     figure includes building each message (MIME, quoted-printable, derived
 *     text part) on the delivery thread, and the number of SMTP connections
 *     opened shows the pool's reuse;
 *   - SMS and webhooks: nudge's own HTTP server on a thread of its own,
 *     answering a Twilio-shaped 201 (SMS) or 200 (webhook) at once.
 * Each run submits all messages at once and times submission to the last
 * outcome. Every outcome must be OK (exit 1 otherwise). The nudge binary is
 * found next to this program's folder (build/nudge) or in $NUDGE_BIN.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/mem.h"
#include "deliver/deliver.h"
#include "ingest/http.h"

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned done, ok, connections, target;
	char first_failure[256];
} out = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void on_outcome(void *ud, const struct deliver_outcome *o)
{
	pthread_mutex_lock(&out.mu);
	out.done++;
	out.connections += o->connections;
	if (o->result == DELIVER_OK)
		out.ok++;
	else if (!out.first_failure[0])
		snprintf(out.first_failure, sizeof(out.first_failure), "%s: %s",
			 deliver_result_str(o->result), o->reason);
	if (out.done >= out.target)
		pthread_cond_broadcast(&out.cv);
	pthread_mutex_unlock(&out.mu);
}

static void wait_done(unsigned n)
{
	pthread_mutex_lock(&out.mu);
	out.target = n;
	while (out.done < n)
		pthread_cond_wait(&out.cv, &out.mu);
	pthread_mutex_unlock(&out.mu);
}

static void reset_out(void)
{
	pthread_mutex_lock(&out.mu);
	out.done = out.ok = out.connections = 0;
	out.target = UINT_MAX;
	out.first_failure[0] = '\0';
	pthread_mutex_unlock(&out.mu);
}

/* ---- the SMTP peer: nudge sink --smtp 0 ---- */

static pid_t sink_pid;

/* A loopback port that was free a moment ago. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
		return -1;
	close(fd);
	return ntohs(sa.sin_port);
}

/* Starts the sink with its output discarded (a pipe to drain would cost the
 * bench more than the sink) and waits until it takes connections. */
static int sink_start(const char *bin)
{
	char arg[16];
	int port = free_port();
	if (port <= 0)
		return -1;
	snprintf(arg, sizeof(arg), "%d", port);
	sink_pid = fork();
	if (sink_pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		execl(bin, bin, "sink", "--smtp", arg, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_port = htons((uint16_t)port),
					 .sin_addr.s_addr = htonl(0x7f000001)};
		int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok)
			return port;
		usleep(10 * 1000);
	}
	return -1;
}

static void sink_stop(void)
{
	if (sink_pid > 0) {
		kill(sink_pid, SIGTERM);
		waitpid(sink_pid, NULL, 0);
	}
}

/* ---- the HTTP peer ---- */

struct peer {
	uv_loop_t loop;
	uv_async_t stop;
	struct http_server *srv;
	pthread_t thread;
	int port;
};

static void on_request(void *ud, struct http_req *req)
{
	static const char sms[] = "{\"sid\":\"SM1\",\"status\":\"queued\"}";
	bool is_sms = strstr(http_req_path(req), "/Messages.json") != NULL;
	http_respond(req, is_sms ? 201 : 200, "application/json", is_sms ? sms : "{}",
		     is_sms ? sizeof(sms) - 1 : 2, NULL);
}

static void server_down(void *ud)
{
	struct peer *p = ud;
	uv_close((uv_handle_t *)&p->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
	struct peer *p = a->data;
	http_server_shutdown(p->srv, server_down, p);
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	uv_run(&p->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int peer_start(struct peer *p)
{
	struct nerr_msg msg;
	uv_loop_init(&p->loop);
	uv_async_init(&p->loop, &p->stop, on_stop);
	p->stop.data = p;
	if (http_server_new(&p->loop, NULL, on_request, p, &p->srv) != NERR_OK ||
	    http_server_listen(p->srv, "127.0.0.1", 0, &msg) != NERR_OK)
		return -1;
	p->port = http_server_port(p->srv);
	return pthread_create(&p->thread, NULL, peer_main, p);
}

static void peer_stop(struct peer *p)
{
	uv_async_send(&p->stop);
	pthread_join(p->thread, NULL);
	http_server_free(p->srv);
	uv_loop_close(&p->loop);
}

/* ---- runs ---- */

static const char html[] =
	"<html><body><p>Hi Ann,</p><p>You left <b>3 items</b> in your cart &mdash; "
	"<a href=\"https://shop.example/cart?u=42&amp;utm=email\">finish checkout</a>."
	"</p><ul><li>Green tea</li><li>Two cups</li><li>A kettle</li></ul>"
	"<p><a href=\"https://t.example/t/u/abc\">unsubscribe</a></p></body></html>";

static struct deliver_request *email(unsigned i)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	struct deliver_email *e = xcalloc(1, sizeof(*e));
	char id[32];
	snprintf(id, sizeof(id), "bench-%u", i);
	r->kind = DELIVER_EMAIL;
	r->email = e;
	r->envelope_id = xstrdup(id);
	e->from = xstrdup("Shop <shop@example.com>");
	e->to = xstrdup("ann@example.org");
	e->subject = xstrdup("Your cart is waiting — 10% off");
	e->html = xstrdup(html);
	e->list_unsubscribe_url = xstrdup("https://t.example/t/u/abc");
	e->list_unsubscribe_mailto = xstrdup("mailto:unsub@example.com");
	e->one_click = true;
	return r;
}

static struct deliver_request *sms(unsigned i)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	char id[32];
	snprintf(id, sizeof(id), "bench-sms-%u", i);
	r->kind = DELIVER_SMS;
	r->sms = xcalloc(1, sizeof(*r->sms));
	r->envelope_id = xstrdup(id);
	r->sms->to = xstrdup("+14155550100");
	r->sms->body =
		xstrdup("Your payment failed. Update your card: https://x.example/p");
	return r;
}

static struct deliver_request *webhook(unsigned i, const char *url)
{
	struct deliver_request *r = xcalloc(1, sizeof(*r));
	char id[32];
	snprintf(id, sizeof(id), "bench-wh-%u", i);
	r->envelope_id = xstrdup(id);
	r->method = xstrdup("POST");
	r->url = xstrdup(url);
	r->body = xstrdup("{\"event\":\"cart_abandoned\",\"user\":\"u42\"}");
	r->body_len = strlen(r->body);
	r->secret = xstrdup("whsec");
	return r;
}

static int run(const char *label, struct deliver_config *cfg, unsigned n,
	       struct deliver_request *(*make)(unsigned, const char *), const char *url)
{
	struct deliver *d = NULL;
	struct nerr_msg msg;
	reset_out();
	if (deliver_start(cfg, on_outcome, NULL, &d, &msg) != NERR_OK) {
		fprintf(stderr, "deliver_start: %s\n", msg.message);
		return 1;
	}
	/* warm up: the first connection(s) */
	for (unsigned i = 0; i < 8; i++)
		deliver_submit(d, make(i, url));
	wait_done(8);
	unsigned warm_conns = out.connections;
	reset_out();
	uint64_t t0 = clock_mono_ns();
	for (unsigned i = 0; i < n; i++)
		deliver_submit(d, make(i, url));
	wait_done(n);
	double s = (double)(clock_mono_ns() - t0) / 1e9;
	deliver_free(d);
	printf("%-34s %8.0f /s   (%u in %.2f s; %u connections opened in all)\n", label,
	       n / s, n, s, warm_conns + out.connections);
	if (out.ok != n) {
		fprintf(stderr, "%u of %u failed, first: %s\n", n - out.ok, n,
			out.first_failure);
		return 1;
	}
	return 0;
}

static struct deliver_request *email_at(unsigned i, const char *url)
{
	return email(i);
}

static struct deliver_request *sms_at(unsigned i, const char *url)
{
	return sms(i);
}

int main(int argc, char **argv)
{
	char bin[PATH_MAX], self[PATH_MAX];
	struct deliver_config cfg;
	struct peer peer = {0};
	int rc = 0;
	unsigned n_email = 20000, n_http = 20000;
	const char *env = getenv("NUDGE_BIN");

	log_set_level(LOG_WARN);
	if (env) {
		snprintf(bin, sizeof(bin), "%s", env);
	} else {
		snprintf(self, sizeof(self), "%s", argv[0]);
		snprintf(bin, sizeof(bin), "%s/../nudge", dirname(self));
	}
	signal(SIGPIPE, SIG_IGN);
	int port = sink_start(bin);
	if (port <= 0) {
		fprintf(stderr, "cannot start %s sink --smtp 0\n", bin);
		return 1;
	}
	if (peer_start(&peer) != 0) {
		fprintf(stderr, "cannot start the HTTP peer\n");
		sink_stop();
		return 1;
	}

	printf("channels: delivery thread to local peers over loopback\n");
	deliver_config_default(&cfg);
	cfg.smtp.host = "127.0.0.1";
	cfg.smtp.port = port;
	cfg.smtp.helo = "bench.test";
	cfg.smtp.connections = 1;
	rc |= run("email, 1 SMTP connection", &cfg, n_email, email_at, NULL);
	cfg.smtp.connections = 4;
	rc |= run("email, 4 SMTP connections", &cfg, n_email, email_at, NULL);

	char base[64], url[80];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", peer.port);
	snprintf(url, sizeof(url), "%s/hook", base);
	deliver_config_default(&cfg);
	cfg.sms.base_url = base;
	cfg.sms.account_sid = "ACbench";
	cfg.sms.auth_token = "token";
	cfg.sms.from = "+15005550006";
	rc |= run("sms (Twilio-shaped), 16 connections", &cfg, n_http, sms_at, NULL);
	deliver_config_default(&cfg);
	cfg.allow = "127.0.0.1/32";
	rc |= run("webhook (signed), 16 connections", &cfg, n_http, webhook, url);

	peer_stop(&peer);
	sink_stop();
	return rc;
}
