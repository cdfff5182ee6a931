/*
 * cmd_serve.c -- `nudge serve`: wire the store, the committer, the engine and
 * the HTTP server together, and take them down cleanly.
 *
 * Startup: defaults < config file < flags; the data directory is created; keys
 * come from the config, else from data_dir/keys, else are generated once
 * (printed once, stored 0600). The inbox continues after the engine's applied
 * position so sequence numbers never repeat.
 * Shutdown (SIGTERM/SIGINT): stop accepting; let in-flight requests finish
 * (their commits complete: the committer drains its queue before it stops);
 * stop the engine after its current batch; close the store; exit 0. A second
 * signal, or shutdown_timeout, forces the exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "app/api.h"
#include "app/cmd.h"
#include "app/config.h"
#include "app/engine.h"
#include "deliver/deliver.h"
#include "deliver/track.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/mem.h"
#include "ingest/http.h"
#include "ingest/inbox.h"
#include "store/store.h"

struct server {
	struct config cfg;
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	uv_timer_t force_timer;
	struct store *store;
	struct inbox *inbox;
	struct engine *engine;
	struct http_server *http;
	struct api *api;
	struct deliver *deliver;
	char *identity_traits[64];
	bool stopping;
	bool test_clock;
	struct track_key track_key;
};

/* Engine thread: links and the open pixel of an email (src/deliver/track.c). */
static void rewrite_html(void *ud, const char *envelope_id, const char *html, size_t len,
			 struct buf *out)
{
	struct server *srv = ud;
	struct track_rewrite_opts o = {srv->cfg.tracking_base_url, &srv->track_key,
				       envelope_id, srv->cfg.tracking_click != 0,
				       srv->cfg.tracking_open != 0};

	if (track_rewrite_html(html, len, &o, out) != NERR_OK) {
		buf_reset(out);
		buf_append(out, html, len);
	}
}

static void unsubscribe_url(void *ud, const char *envelope_id, struct buf *out)
{
	struct server *srv = ud;

	if (track_unsubscribe_url(srv->cfg.tracking_base_url, &srv->track_key,
				  envelope_id, out) != NERR_OK)
		buf_reset(out);
}

static void usage(void)
{
	fprintf(stderr, "usage: nudge serve [--config FILE] [--listen HOST:PORT] "
			"[--data-dir DIR]\n"
			"                   [--write-key K] [--admin-key K] [--log-level "
			"LEVEL]\n");
}

static int mkdir_p(const char *dir)
{
	char tmp[1024];

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST)
		return -1;
	return 0;
}

static void random_key(char *out, size_t hex_len)
{
	unsigned char raw[32];

	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		log_error("serve", "msg=\"getrandom failed\"");
		exit(1);
	}
	for (size_t i = 0; i < hex_len / 2 && i < sizeof(raw); i++)
		sprintf(out + 2 * i, "%02x", raw[i]);
}

/* Reads or creates data_dir/keys for keys not given in the config or flags. */
static int resolve_keys(struct config *cfg)
{
	char path[1100], line[256], wk[256] = "", ak[256] = "";
	FILE *f;

	if (cfg->write_key[0] && cfg->admin_key[0])
		return 0;
	snprintf(path, sizeof(path), "%s/keys", cfg->data_dir);
	f = fopen(path, "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			line[strcspn(line, "\r\n")] = '\0';
			if (strncmp(line, "write_key=", 10) == 0)
				snprintf(wk, sizeof(wk), "%s", line + 10);
			else if (strncmp(line, "admin_key=", 10) == 0)
				snprintf(ak, sizeof(ak), "%s", line + 10);
		}
		fclose(f);
	}
	if (!wk[0] || !ak[0]) {
		int fd;

		if (!wk[0])
			random_key(wk, 32);
		if (!ak[0])
			random_key(ak, 48);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dprintf(fd, "write_key=%s\nadmin_key=%s\n", wk, ak) < 0 ||
		    fsync(fd) < 0) {
			log_error(
				"serve",
				"msg=\"cannot store generated keys\" path=%s err=\"%s\"",
				path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		if (!cfg->write_key[0])
			printf("nudge: generated write key: %s\n", wk);
		if (!cfg->admin_key[0])
			printf("nudge: generated admin key: %s\n", ak);
		printf("nudge: keys stored in %s (shown only this once)\n", path);
		fflush(stdout);
	}
	if (!cfg->write_key[0])
		snprintf(cfg->write_key, sizeof(cfg->write_key), "%.127s", wk);
	if (!cfg->admin_key[0])
		snprintf(cfg->admin_key, sizeof(cfg->admin_key), "%.127s", ak);
	return 0;
}

/* The tracking secret: from the config, else DATA_DIR/tracking_secret (made once). */
static int resolve_tracking_secret(struct config *cfg)
{
	char path[1100], sec[256] = "";
	FILE *f;

	if (cfg->tracking_secret[0])
		return 0;
	snprintf(path, sizeof(path), "%s/tracking_secret", cfg->data_dir);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(sec, sizeof(sec), f))
			sec[0] = '\0';
		fclose(f);
		sec[strcspn(sec, "\r\n")] = '\0';
	}
	if (strlen(sec) < 16) {
		int fd;

		random_key(sec, 64);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dprintf(fd, "%s\n", sec) < 0 || fsync(fd) < 0) {
			log_error("serve",
				  "msg=\"cannot store the tracking secret\" path=%s",
				  path);
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
	}
	snprintf(cfg->tracking_secret, sizeof(cfg->tracking_secret), "%.255s", sec);
	return 0;
}

static int split_listen(const char *listen, char *host, size_t hsz, int *port)
{
	const char *colon = strrchr(listen, ':');
	char *end;
	long p;

	if (!colon || colon == listen)
		return -1;
	if ((size_t)(colon - listen) >= hsz)
		return -1;
	if (listen[0] == '[' && colon[-1] == ']') {
		memcpy(host, listen + 1, (size_t)(colon - listen - 2));
		host[colon - listen - 2] = '\0';
	} else {
		memcpy(host, listen, (size_t)(colon - listen));
		host[colon - listen] = '\0';
	}
	p = strtol(colon + 1, &end, 10);
	if (*end || p < 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

static void on_committed(void *ud, uint64_t seq)
{
	struct server *srv = ud;

	if (srv->engine)
		engine_notify(srv->engine, seq);
}

static void on_http_closed(void *ud)
{
	struct server *srv = ud;

	/* Every request is answered or dropped; the committer has nothing more. */
	/* In-flight webhooks are abandoned: their envelopes stay pending and go
	 * out again after the restart with the same Idempotency-Key. */
	if (srv->deliver)
		deliver_stop(srv->deliver);
	if (srv->inbox)
		inbox_close(srv->inbox);
	if (srv->engine)
		engine_stop(srv->engine);
	if (srv->api)
		api_cancel_waiters(srv->api);
	uv_close((uv_handle_t *)&srv->sigterm, NULL);
	uv_close((uv_handle_t *)&srv->sigint, NULL);
	uv_close((uv_handle_t *)&srv->force_timer, NULL);
}

static void on_force(uv_timer_t *t)
{
	log_warn("serve", "msg=\"shutdown timeout; exiting with work in flight\"");
	_exit(1);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct server *srv = h->data;

	if (srv->stopping) {
		log_warn("serve", "msg=\"second signal; exiting now\"");
		_exit(1);
	}
	srv->stopping = true;
	log_info("serve", "msg=\"shutting down\" signal=%d", signum);
	uv_timer_start(&srv->force_timer, on_force,
		       (uint64_t)srv->cfg.shutdown_timeout_ms, 0);
	uv_unref((uv_handle_t *)&srv->force_timer);
	http_server_shutdown(srv->http, on_http_closed, srv);
}

static void parse_identity_traits(struct server *srv, struct engine_config *ec)
{
	char *list = xstrdup(srv->cfg.identity_traits), *save = NULL, *tok;
	size_t n = 0;

	for (tok = strtok_r(list, ", ", &save); tok && n < 63;
	     tok = strtok_r(NULL, ", ", &save))
		srv->identity_traits[n++] = xstrdup(tok);
	srv->identity_traits[n] = NULL;
	free(list);
	ec->profile.identity_traits = (const char *const *)srv->identity_traits;
}

static const char *jget(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static char *jdup(struct json_object *o, const char *k)
{
	const char *v = jget(o, k);

	return v ? xstrdup(v) : NULL;
}

/* A message envelope's request (email, sms, push), or NULL when that channel is
 * not configured: the envelope then stays pending in the outbox. */
static struct deliver_request *message_request(struct server *srv,
					       struct json_object *env)
{
	struct json_object *m, *h, *v;
	const char *kind = jget(env, "kind");
	struct deliver_request *r;

	if (!kind || !json_object_object_get_ex(env, "message", &m))
		return NULL;
	r = xcalloc(1, sizeof(*r));
	if (!strcmp(kind, "email") && srv->cfg.smtp_host[0]) {
		r->kind = DELIVER_EMAIL;
		r->email = xcalloc(1, sizeof(*r->email));
		r->email->from = jdup(m, "from");
		r->email->reply_to = jdup(m, "reply_to");
		r->email->to = jdup(env, "to");
		r->email->subject = jdup(m, "subject");
		r->email->html = jdup(m, "html");
		r->email->text = jdup(m, "text");
		r->email->list_unsubscribe_url = jdup(m, "list_unsubscribe_url");
		r->email->one_click = json_object_object_get_ex(m, "one_click", &v) &&
				      json_object_get_boolean(v) &&
				      r->email->list_unsubscribe_url;
		if (json_object_object_get_ex(m, "headers", &h) &&
		    json_object_is_type(h, json_type_object)) {
			r->email->headers =
				xcalloc((size_t)json_object_object_length(h) + 1,
					sizeof(*r->email->headers));
			json_object_object_foreach(h, name, val)
			{
				r->email->headers[r->email->nheaders].name =
					xstrdup(name);
				r->email->headers[r->email->nheaders].value =
					xstrdup(json_object_get_string(val));
				r->email->nheaders++;
			}
		}
	} else if (!strcmp(kind, "sms") && srv->cfg.sms_base_url[0]) {
		r->kind = DELIVER_SMS;
		r->sms = xcalloc(1, sizeof(*r->sms));
		r->sms->to = jdup(env, "to");
		r->sms->body = jdup(m, "body");
	} else if (!strcmp(kind, "push") && srv->cfg.push_base_url[0]) {
		r->kind = DELIVER_PUSH;
		r->push = xcalloc(1, sizeof(*r->push));
		r->push->token = jdup(env, "to");
		r->push->title = jdup(m, "title");
		r->push->body = jdup(m, "body");
		r->push->image = jdup(m, "image");
		if (json_object_object_get_ex(m, "data", &v))
			r->push->data_json = xstrdup(json_object_to_json_string_ext(
				v, JSON_C_TO_STRING_PLAIN));
	} else {
		free(r);
		return NULL;
	}
	/* Temporary failures retry with backoff for a while (the relay's 4xx). */
	r->retries = 8;
	return r;
}

/* Engine thread: a committed envelope goes to the delivery thread. */
static void on_send(void *ud, const char *envelope_json)
{
	struct server *srv = ud;
	struct json_object *env = json_tokener_parse(envelope_json), *req, *h, *v;
	struct deliver_request *r;

	if (!env)
		return;
	if (!json_object_object_get_ex(env, "request", &req)) {
		r = message_request(srv, env);
		if (r)
			r->envelope_id = xstrdup(jget(env, "id") ? jget(env, "id") : "");
		json_object_put(env);
		if (r && deliver_submit(srv->deliver, r) != NERR_OK)
			deliver_request_free(r);
		return;
	}
	r = xcalloc(1, sizeof(*r));
	r->kind = DELIVER_WEBHOOK;
	r->envelope_id = xstrdup(jget(env, "id") ? jget(env, "id") : "");
	r->method = xstrdup(jget(req, "method") ? jget(req, "method") : "POST");
	r->url = xstrdup(jget(req, "url") ? jget(req, "url") : "");
	if (json_object_object_get_ex(req, "body", &v)) {
		r->body_len = (size_t)json_object_get_string_len(v);
		r->body = xstrndup(json_object_get_string(v), r->body_len);
	} else {
		r->body = xstrdup("");
	}
	if (json_object_object_get_ex(req, "headers", &h) &&
	    json_object_is_type(h, json_type_object)) {
		r->headers = xcalloc((size_t)json_object_object_length(h) + 1,
				     sizeof(*r->headers));
		json_object_object_foreach(h, name, val)
		{
			r->headers[r->nheaders].name = xstrdup(name);
			r->headers[r->nheaders].value =
				xstrdup(json_object_get_string(val));
			r->nheaders++;
		}
	}
	if (jget(req, "secret"))
		r->secret = xstrdup(jget(req, "secret"));
	else if (srv->cfg.webhook_secret[0])
		r->secret = xstrdup(srv->cfg.webhook_secret);
	r->timeout_ms = json_object_object_get_ex(req, "timeout_ms", &v)
				? json_object_get_int64(v)
				: 0;
	r->retries = json_object_object_get_ex(req, "retries", &v)
			     ? (unsigned)json_object_get_int(v)
			     : 0;
	r->capture = json_object_object_get_ex(req, "capture", &v) &&
		     json_object_get_boolean(v);
	json_object_put(env);
	if (deliver_submit(srv->deliver, r) != NERR_OK)
		deliver_request_free(r);
}

static void outcome_recorded(void *ud, enum nerr rc, uint64_t last_seq)
{
	(void)ud;
	(void)last_seq;
	if (rc)
		log_warn("deliver",
			 "msg=\"outcome not recorded; the envelope stays pending "
			 "and is resent after a restart\" rc=%s",
			 nerr_str(rc));
}

/* Delivery thread: the final outcome becomes an inbox record the engine applies. */
static void on_outcome(void *ud, const struct deliver_outcome *o)
{
	struct server *srv = ud;
	struct json_object *rec = json_object_new_object();
	static const char *const results[] = {"ok", "tempfail", "permfail"};
	struct inbox_job *job;
	const char *txt;
	size_t len;

	json_object_object_add(rec, "envelope", json_object_new_string(o->envelope_id));
	json_object_object_add(rec, "result", json_object_new_string(results[o->result]));
	json_object_object_add(rec, "status", json_object_new_int(o->http_status));
	json_object_object_add(rec, "attempts", json_object_new_int((int)o->attempts));
	if (o->reason)
		json_object_object_add(rec, "reason", json_object_new_string(o->reason));
	if (o->provider_id)
		json_object_object_add(rec, "provider_id",
				       json_object_new_string(o->provider_id));
	if (o->invalid_recipient)
		json_object_object_add(rec, "invalid_recipient", json_object_new_int(1));
	if (o->response)
		json_object_object_add(
			rec, "response",
			json_object_new_string_len(o->response, (int)o->response_len));
	txt = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &len);
	for (int tries = 0;; tries++) {
		enum nerr rc;

		job = inbox_job_new();
		inbox_job_add(job, INBOX_OUTCOME, clock_wall_ms(), txt, len);
		rc = inbox_submit(srv->inbox, job, outcome_recorded, srv);
		if (rc == NERR_OK)
			break;
		inbox_job_free(job);
		if (rc != NERR_BUSY || tries > 1000) {
			outcome_recorded(srv, rc, 0);
			break;
		}
		usleep(10000);
	}
	json_object_put(rec);
}

int cmd_serve(int argc, char **argv)
{
	struct server srv;
	struct nerr_msg msg = {"", ""};
	struct http_limits lim;
	struct engine_config ec;
	struct inbox_config ic;
	char host[256];
	int port, rc = 1;
	enum log_level lvl;
	const char *config_path = NULL;
	static const struct {
		const char *flag, *section, *name;
	} overrides[] = {
		{"--listen", "server", "listen"},
		{"--data-dir", "server", "data_dir"},
		{"--write-key", "server", "write_key"},
		{"--admin-key", "server", "admin_key"},
		{"--log-level", "server", "log_level"},
	};

	memset(&srv, 0, sizeof(srv));
	config_defaults(&srv.cfg);
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			config_path = argv[++i];
	if (config_path && config_load(&srv.cfg, config_path, &msg)) {
		fprintf(stderr, "nudge serve: %s\n", msg.message);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		bool known = false;

		if (strcmp(argv[i], "--config") == 0) {
			i++;
			continue;
		}
		if (strcmp(argv[i], "--test-clock") == 0) {
			srv.test_clock = true;
			continue;
		}
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage();
			return 0;
		}
		for (size_t j = 0; j < sizeof(overrides) / sizeof(overrides[0]); j++) {
			if (strcmp(argv[i], overrides[j].flag) != 0)
				continue;
			known = true;
			if (i + 1 >= argc) {
				fprintf(stderr, "nudge serve: %s needs a value\n",
					argv[i]);
				return 2;
			}
			if (config_set(&srv.cfg, overrides[j].section, overrides[j].name,
				       argv[++i], &msg)) {
				fprintf(stderr, "nudge serve: %s: %s\n", argv[i - 1],
					msg.message);
				return 2;
			}
		}
		if (!known) {
			fprintf(stderr, "nudge serve: unknown argument '%s'\n", argv[i]);
			usage();
			return 2;
		}
	}
	if (log_parse_level(srv.cfg.log_level, &lvl)) {
		fprintf(stderr, "nudge serve: server.log_level: unknown level '%s'\n",
			srv.cfg.log_level);
		return 2;
	}
	log_set_level(lvl);
	if (split_listen(srv.cfg.listen, host, sizeof(host), &port)) {
		fprintf(stderr, "nudge serve: server.listen: '%s' is not HOST:PORT\n",
			srv.cfg.listen);
		return 2;
	}
	if (mkdir_p(srv.cfg.data_dir)) {
		fprintf(stderr, "nudge serve: cannot create %s: %s\n", srv.cfg.data_dir,
			strerror(errno));
		return 1;
	}
	if (resolve_keys(&srv.cfg) || resolve_tracking_secret(&srv.cfg))
		return 1;
	if (!srv.cfg.tracking_base_url[0])
		snprintf(srv.cfg.tracking_base_url, sizeof(srv.cfg.tracking_base_url),
			 "http://%.400s", srv.cfg.listen);
	/* A base URL links cannot be built on would turn link tracking off
	 * silently for every email: refuse it here instead. */
	if (track_base_check(srv.cfg.tracking_base_url) != NERR_OK) {
		fprintf(stderr,
			"nudge serve: tracking.base_url: an http:// or https:// URL "
			"without "
			"query, fragment, quotes or spaces (got '%s')\n",
			srv.cfg.tracking_base_url);
		return 2;
	}
	if (track_key_init(&srv.track_key, srv.cfg.tracking_secret) != NERR_OK) {
		fprintf(stderr, "nudge serve: tracking.secret: at least 16 bytes\n");
		return 2;
	}
	if (store_open(srv.cfg.data_dir, &srv.store, &msg)) {
		fprintf(stderr, "nudge serve: %s\n", msg.message);
		return 1;
	}

	uv_loop_init(&srv.loop);
	uv_signal_init(&srv.loop, &srv.sigterm);
	uv_signal_init(&srv.loop, &srv.sigint);
	uv_timer_init(&srv.loop, &srv.force_timer);
	ic.max_queue_bytes = (size_t)srv.cfg.commit_queue_bytes;
	ic.max_batch = (unsigned)srv.cfg.commit_batch_max;
	if (inbox_open(srv.store, &srv.loop, &ic, on_committed, &srv, &srv.inbox))
		goto fail;
	inbox_set_min_seq(srv.inbox, engine_stored_applied_seq(srv.store));
	srv.api = api_new(&srv.cfg, srv.store, srv.inbox);
	api_set_test_clock(srv.api, srv.test_clock);
	api_set_track_key(srv.api, &srv.track_key);
	{
		struct deliver_config dc;

		deliver_config_default(&dc);
		dc.allow = srv.cfg.webhook_allow;
		dc.per_host_concurrency = (unsigned)srv.cfg.webhook_per_host_concurrency;
		dc.max_concurrency = (unsigned)srv.cfg.webhook_max_concurrency;
		dc.max_response_bytes = (size_t)srv.cfg.webhook_max_response_bytes;
		dc.smtp.host = srv.cfg.smtp_host[0] ? srv.cfg.smtp_host : NULL;
		dc.smtp.port = (int)srv.cfg.smtp_port;
		dc.smtp.tls = srv.cfg.smtp_tls;
		dc.smtp.username =
			srv.cfg.smtp_username[0] ? srv.cfg.smtp_username : NULL;
		dc.smtp.password =
			srv.cfg.smtp_password[0] ? srv.cfg.smtp_password : NULL;
		dc.smtp.connections = (unsigned)srv.cfg.smtp_connections;
		dc.smtp.helo = srv.cfg.smtp_helo;
		dc.smtp.timeout_ms = srv.cfg.smtp_timeout_ms;
		dc.sms.base_url = srv.cfg.sms_base_url[0] ? srv.cfg.sms_base_url : NULL;
		dc.sms.account_sid = srv.cfg.sms_account_sid;
		dc.sms.auth_token = srv.cfg.sms_auth_token;
		dc.sms.from = srv.cfg.sms_from;
		dc.sms.status_callback = srv.cfg.sms_status_callback[0]
						 ? srv.cfg.sms_status_callback
						 : NULL;
		dc.push.base_url =
			srv.cfg.push_base_url[0] ? srv.cfg.push_base_url : NULL;
		dc.push.project_id = srv.cfg.push_project_id;
		dc.push.bearer_token = srv.cfg.push_token;
		if (deliver_start(&dc, on_outcome, &srv, &srv.deliver, &msg) != NERR_OK) {
			fprintf(stderr, "nudge serve: webhook.allow: %s\n", msg.message);
			goto fail;
		}
	}

	memset(&ec, 0, sizeof(ec));
	ec.batch_max = (unsigned)srv.cfg.engine_batch_max;
	ec.cache_bytes = (size_t)srv.cfg.engine_cache_bytes;
	ec.dedup_window_ms = srv.cfg.dedup_window_ms;
	profile_config_default(&ec.profile);
	ec.profile.max_identities = (unsigned)srv.cfg.max_identities;
	ec.profile.history_max_events = (unsigned)srv.cfg.history_max_events;
	ec.profile.history_max_age_ms = srv.cfg.history_max_age_ms;
	parse_identity_traits(&srv, &ec);
	journey_rt_config_default(&ec.journey);
	ec.journey.limits.max_steps = (unsigned)srv.cfg.journey_max_steps;
	ec.journey.limits.max_wait_ms = srv.cfg.journey_max_wait_ms;
	ec.journey.max_steps_per_event = (unsigned)srv.cfg.journey_max_steps_per_event;
	ec.journey.max_instance_bytes = (size_t)srv.cfg.journey_max_instance_bytes;
	ec.journey.timers_per_batch = (unsigned)srv.cfg.journey_timers_per_batch;
	ec.journey.webhook_secret =
		srv.cfg.webhook_secret[0] ? srv.cfg.webhook_secret : NULL;
	ec.journey.default_from = srv.cfg.smtp_from;
	ec.journey.rewrite_html = rewrite_html;
	ec.journey.unsubscribe_url = unsubscribe_url;
	ec.journey.track_ud = &srv;
	govern_config_default(&ec.govern);
	ec.govern.soft_bounce_limit = (unsigned)srv.cfg.soft_bounce_limit;
	{
		const char *v[4] = {
			srv.cfg.consent_email_marketing, srv.cfg.consent_sms_marketing,
			srv.cfg.consent_push_marketing, srv.cfg.consent_transactional};
		const char *names[4] = {"consent_email_marketing",
					"consent_sms_marketing", "consent_push_marketing",
					"consent_transactional"};

		for (int i = 0; i < 4; i++) {
			if (strcmp(v[i], "granted") && strcmp(v[i], "denied")) {
				fprintf(stderr,
					"nudge serve: governance.%s: granted or denied\n",
					names[i]);
				goto fail;
			}
		}
		for (int ch = 0; ch < 3; ch++) {
			ec.govern.consent_default[ch][0] = strcmp(v[ch], "granted") == 0;
			ec.govern.consent_default[ch][1] = strcmp(v[3], "granted") == 0;
			ec.govern.consent_default[ch][2] =
				ec.govern.consent_default[ch][0];
		}
	}
	aud_config_default(&ec.aud);
	ec.aud.job_batch = (unsigned)srv.cfg.aud_job_batch;
	ec.aud.scan_batch = (unsigned)srv.cfg.aud_scan_batch;
	ec.aud.scan_interval_ms = srv.cfg.aud_scan_interval_ms;
	ec.aud.max_audiences = (unsigned)srv.cfg.aud_max_audiences;
	ec.aud.max_computed = (unsigned)srv.cfg.aud_max_computed;
	ec.on_send = on_send;
	ec.send_ud = &srv;
	if (engine_start(srv.store, &ec, &srv.loop, api_on_applied, srv.api, &srv.engine))
		goto fail;
	api_set_engine(srv.api, srv.engine);
	engine_notify(srv.engine, inbox_committed_seq(srv.inbox));

	http_limits_default(&lim);
	lim.max_header_bytes = (size_t)srv.cfg.max_header_bytes;
	lim.max_body_bytes = (size_t)srv.cfg.max_body_bytes;
	lim.max_connections = (unsigned)srv.cfg.max_connections;
	lim.max_pipelined = (unsigned)srv.cfg.max_pipelined;
	lim.idle_timeout_ms = (uint64_t)srv.cfg.idle_timeout_ms;
	lim.read_timeout_ms = (uint64_t)srv.cfg.read_timeout_ms;
	if (http_server_new(&srv.loop, &lim, api_handle, srv.api, &srv.http) ||
	    http_server_listen(srv.http, host, port, &msg)) {
		fprintf(stderr, "nudge serve: cannot listen on %s: %s\n", srv.cfg.listen,
			msg.message);
		goto fail;
	}
	srv.sigterm.data = srv.sigint.data = &srv;
	uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
	uv_signal_start(&srv.sigint, on_signal, SIGINT);
	signal(SIGPIPE, SIG_IGN);
	log_info("serve", "msg=listening addr=%s:%d data_dir=%s", host,
		 http_server_port(srv.http), srv.cfg.data_dir);
	uv_run(&srv.loop, UV_RUN_DEFAULT);
	rc = 0;
	log_info("serve", "msg=stopped");
	goto out;
fail:
	on_http_closed(&srv);
out:
	uv_run(&srv.loop, UV_RUN_DEFAULT); /* let close callbacks run */
	if (srv.http)
		http_server_free(srv.http);
	if (uv_loop_close(&srv.loop) != 0)
		log_warn("serve", "msg=\"loop closed with handles open\"");
	engine_free(srv.engine);
	deliver_free(srv.deliver);
	inbox_free(srv.inbox);
	api_free(srv.api);
	store_close(srv.store);
	for (int i = 0; srv.identity_traits[i]; i++)
		free(srv.identity_traits[i]);
	track_key_fini(&srv.track_key);
	return rc;
}
