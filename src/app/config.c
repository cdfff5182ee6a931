/*
 * config.c -- the option table and its parsing (see config.h).
 *
 * Design: the table below is the single source of truth for names, types,
 * defaults and bounds; docs/configuration.md and nudge.conf describe the same
 * rows in prose. Durations are stored in milliseconds and sizes in bytes, and
 * the field names say so. Unknown sections or keys are errors, because a typo
 * that silently falls back to a default is worse than a refusal to start.
 */
#include "app/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OFF(f) offsetof(struct config, f)
#define STR(f) OFF(f), sizeof(((struct config *)0)->f)
#define NUM(f) OFF(f), 0
#define DAY_MS (86400LL * 1000)

static const struct config_option options[] = {
	{"server", "listen", CONFIG_STR, "127.0.0.1:8080", 0, 0, STR(listen),
	 "HOST:PORT to listen on"},
	{"server", "data_dir", CONFIG_STR, "./data", 0, 0, STR(data_dir),
	 "directory of the RocksDB store and generated keys"},
	{"server", "write_key", CONFIG_STR, "", 0, 0, STR(write_key),
	 "ingest key (HTTP Basic user); generated on first start when empty"},
	{"server", "admin_key", CONFIG_STR, "", 0, 0, STR(admin_key),
	 "admin API key (Bearer); generated on first start when empty"},
	{"server", "log_level", CONFIG_STR, "info", 0, 0, STR(log_level),
	 "debug, info, warn or error"},
	{"server", "max_connections", CONFIG_INT, "4096", 1, 1000000,
	 NUM(max_connections), "open connections beyond which new ones get 503"},
	{"server", "max_header_bytes", CONFIG_SIZE, "16k", 1024, 1 << 20,
	 NUM(max_header_bytes), "request line plus headers"},
	{"server", "max_body_bytes", CONFIG_SIZE, "4MiB", 1024, 64 << 20,
	 NUM(max_body_bytes), "request body"},
	{"server", "max_pipelined", CONFIG_INT, "32", 1, 1024, NUM(max_pipelined),
	 "unanswered requests per connection before reading pauses"},
	{"server", "idle_timeout", CONFIG_DURATION, "60s", 100, DAY_MS,
	 NUM(idle_timeout_ms), "keep-alive connection idle time"},
	{"server", "read_timeout", CONFIG_DURATION, "30s", 100, DAY_MS,
	 NUM(read_timeout_ms), "time to receive a whole request once it started"},
	{"server", "shutdown_timeout", CONFIG_DURATION, "10s", 0, DAY_MS,
	 NUM(shutdown_timeout_ms), "how long SIGTERM waits for in-flight requests"},
	{"ingest", "max_event_bytes", CONFIG_SIZE, "32k", 256, 1 << 20,
	 NUM(max_event_bytes), "one event, serialized"},
	{"ingest", "max_batch_items", CONFIG_INT, "1000", 1, 100000, NUM(max_batch_items),
	 "items in one /v1/batch call"},
	{"ingest", "max_json_depth", CONFIG_INT, "32", 2, 256, NUM(max_json_depth),
	 "JSON nesting depth"},
	{"ingest", "dedup_window", CONFIG_DURATION, "7d", 0, 365 * DAY_MS,
	 NUM(dedup_window_ms), "how long a messageId is remembered"},
	{"ingest", "commit_queue_bytes", CONFIG_SIZE, "64MiB", 1 << 20, 1LL << 34,
	 NUM(commit_queue_bytes), "records waiting for the committer; beyond: 503"},
	{"ingest", "commit_batch_max", CONFIG_INT, "20000", 1, 1000000,
	 NUM(commit_batch_max), "records per group commit"},
	{"engine", "batch_max", CONFIG_INT, "2000", 1, 1000000, NUM(engine_batch_max),
	 "inbox records per engine batch"},
	{"engine", "cache_size", CONFIG_SIZE, "64MiB", 0, (int64_t)64 << 30,
	 NUM(engine_cache_bytes),
	 "profiles, histories and identities kept in memory; 0: none"},
	{"profiles", "max_identities", CONFIG_INT, "50", 1, 10000, NUM(max_identities),
	 "identities attached to one profile"},
	{"profiles", "history_max_events", CONFIG_INT, "100", 0, 100000,
	 NUM(history_max_events), "recent events kept per profile"},
	{"profiles", "history_max_age", CONFIG_DURATION, "90d", 0, 3650 * DAY_MS,
	 NUM(history_max_age_ms), "age beyond which history events are dropped"},
	{"profiles", "identity_traits", CONFIG_STR, "", 0, 0, STR(identity_traits),
	 "comma-separated trait names that are identity namespaces"},
	{"journeys", "max_steps", CONFIG_INT, "500", 1, 100000, NUM(journey_max_steps),
	 "steps in one journey"},
	{"journeys", "max_wait", CONFIG_DURATION, "400d", 1000, 3650 * DAY_MS,
	 NUM(journey_max_wait_ms), "longest wait, wait_for timeout or goal window"},
	{"journeys", "max_steps_per_event", CONFIG_INT, "100", 1, 100000,
	 NUM(journey_max_steps_per_event), "steps one instance runs without waiting"},
	{"journeys", "max_instance_bytes", CONFIG_SIZE, "64k", 1024, 16 << 20,
	 NUM(journey_max_instance_bytes), "state of one journey instance"},
	{"journeys", "timers_per_batch", CONFIG_INT, "1000", 1, 1000000,
	 NUM(journey_timers_per_batch), "timers fired per engine batch"},
	{"webhook", "allow", CONFIG_STR, "", 0, 0, STR(webhook_allow),
	 "hosts or CIDR ranges webhooks may reach although internal"},
	{"webhook", "secret", CONFIG_STR, "", 0, 0, STR(webhook_secret),
	 "global signing secret for X-Nudge-Signature"},
	{"webhook", "per_host_concurrency", CONFIG_INT, "16", 1, 10000,
	 NUM(webhook_per_host_concurrency), "requests in flight per host"},
	{"webhook", "max_concurrency", CONFIG_INT, "256", 1, 100000,
	 NUM(webhook_max_concurrency), "requests in flight in all"},
	{"webhook", "max_response_bytes", CONFIG_SIZE, "64k", 0, 16 << 20,
	 NUM(webhook_max_response_bytes), "captured response body"},
	{"tracking", "base_url", CONFIG_STR, "", 0, 0, STR(tracking_base_url),
	 "public base URL of the tracking links; empty: http://LISTEN"},
	{"tracking", "secret", CONFIG_STR, "", 0, 0, STR(tracking_secret),
	 "HMAC secret of tracking tokens; generated and kept in DATA_DIR/keys when "
	 "empty"},
	{"tracking", "open", CONFIG_BOOL, "true", 0, 1, NUM(tracking_open),
	 "add the open pixel to HTML email"},
	{"tracking", "click", CONFIG_BOOL, "true", 0, 1, NUM(tracking_click),
	 "rewrite HTML email links to signed click URLs"},
	{"tracking", "feedback_key", CONFIG_STR, "", 0, 0, STR(feedback_key),
	 "key providers send as ?key= on /v1/feedback/*; empty: admin key only"},
	{"smtp", "host", CONFIG_STR, "", 0, 0, STR(smtp_host),
	 "SMTP relay; empty: email is not sent (envelopes wait)"},
	{"smtp", "port", CONFIG_INT, "587", 1, 65535, NUM(smtp_port), "relay port"},
	{"smtp", "tls", CONFIG_STR, "starttls", 0, 0, STR(smtp_tls),
	 "none, starttls or tls"},
	{"smtp", "username", CONFIG_STR, "", 0, 0, STR(smtp_username), "AUTH user"},
	{"smtp", "password", CONFIG_STR, "", 0, 0, STR(smtp_password), "AUTH password"},
	{"smtp", "connections", CONFIG_INT, "4", 1, 1000, NUM(smtp_connections),
	 "pooled connections to the relay"},
	{"smtp", "helo", CONFIG_STR, "localhost", 0, 0, STR(smtp_helo),
	 "EHLO name; also the Message-ID domain"},
	{"smtp", "from", CONFIG_STR, "nudge@localhost", 0, 0, STR(smtp_from),
	 "sender when a template has no from"},
	{"smtp", "timeout", CONFIG_DURATION, "30s", 100, DAY_MS, NUM(smtp_timeout_ms),
	 "per message"},
	{"sms", "base_url", CONFIG_STR, "", 0, 0, STR(sms_base_url),
	 "Twilio-compatible API base URL; empty: SMS is not sent"},
	{"sms", "account_sid", CONFIG_STR, "", 0, 0, STR(sms_account_sid), "account SID"},
	{"sms", "auth_token", CONFIG_STR, "", 0, 0, STR(sms_auth_token), "auth token"},
	{"sms", "from", CONFIG_STR, "", 0, 0, STR(sms_from), "sender number (E.164)"},
	{"sms", "status_callback", CONFIG_STR, "", 0, 0, STR(sms_status_callback),
	 "URL of /v1/feedback/sms for delivery receipts"},
	{"push", "base_url", CONFIG_STR, "", 0, 0, STR(push_base_url),
	 "FCM-compatible API base URL; empty: push is not sent"},
	{"push", "project_id", CONFIG_STR, "", 0, 0, STR(push_project_id), "project id"},
	{"push", "token", CONFIG_STR, "", 0, 0, STR(push_token), "bearer token"},
	{"governance", "soft_bounce_limit", CONFIG_INT, "3", 1, 1000,
	 NUM(soft_bounce_limit), "consecutive soft bounces that suppress an address"},
	{"governance", "consent_email_marketing", CONFIG_STR, "granted", 0, 0,
	 STR(consent_email_marketing),
	 "default when a profile has no email marketing consent"},
	{"governance", "consent_sms_marketing", CONFIG_STR, "denied", 0, 0,
	 STR(consent_sms_marketing),
	 "default when a profile has no sms marketing consent"},
	{"governance", "consent_push_marketing", CONFIG_STR, "denied", 0, 0,
	 STR(consent_push_marketing),
	 "default when a profile has no push marketing consent"},
	{"governance", "consent_transactional", CONFIG_STR, "granted", 0, 0,
	 STR(consent_transactional),
	 "default for transactional messages on every channel"},
	{"audiences", "job_batch", CONFIG_INT, "1000", 1, 1000000, NUM(aud_job_batch),
	 "profiles a back-fill or indexed fan-out covers per engine batch"},
	{"audiences", "scan_batch", CONFIG_INT, "250", 1, 1000000, NUM(aud_scan_batch),
	 "profiles a scanning fan-out covers per step"},
	{"audiences", "scan_interval", CONFIG_DURATION, "10ms", 0, DAY_MS,
	 NUM(aud_scan_interval_ms), "pause between the steps of a scanning fan-out"},
	{"audiences", "max_audiences", CONFIG_INT, "1000", 1, 100000,
	 NUM(aud_max_audiences), "audience definitions"},
	{"audiences", "max_computed", CONFIG_INT, "1000", 1, 100000,
	 NUM(aud_max_computed), "computed-attribute definitions"},
};

const struct config_option *config_options(size_t *n)
{
	*n = sizeof(options) / sizeof(options[0]);
	return options;
}

/* A unit suffix and its multiplier. */
struct unit {
	const char *name;
	int64_t mult;
};

/*
 * Parses "NUMBER [UNIT]" (spaces allowed around) with the units of table (names
 * compared with cmp; the empty name is the bare number). Returns -1 on a bad
 * number, an unknown unit, a negative value or more than 9e15.
 */
static int64_t parse_scaled(const char *s, const struct unit *table,
			    int (*cmp)(const char *, const char *))
{
	char *end;
	double v;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s)
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	for (const struct unit *u = table; u->name; u++) {
		if (cmp(end, u->name) != 0)
			continue;
		if (v * (double)u->mult > 9.0e15)
			return -1;
		return (int64_t)(v * (double)u->mult);
	}
	return -1;
}

int64_t config_parse_duration_ms(const char *s)
{
	static const struct unit units[] = {
		{"", 1},	   {"ms", 1},	       {"s", 1000},
		{"m", 60 * 1000},  {"h", 3600 * 1000}, {"d", DAY_MS},
		{"w", 7 * DAY_MS}, {NULL, 0},
	};

	return parse_scaled(s, units, strcmp);
}

int64_t config_parse_size(const char *s)
{
	static const struct unit units[] = {
		{"", 1},
		{"b", 1},
		{"k", 1024},
		{"kb", 1024},
		{"kib", 1024},
		{"m", 1024 * 1024},
		{"mb", 1024 * 1024},
		{"mib", 1024 * 1024},
		{"g", 1024LL * 1024 * 1024},
		{"gb", 1024LL * 1024 * 1024},
		{"gib", 1024LL * 1024 * 1024},
		{NULL, 0},
	};

	return parse_scaled(s, units, strcasecmp);
}

static enum nerr set_option(struct config *cfg, const struct config_option *o,
			    const char *value, struct nerr_msg *msg)
{
	char path[96];
	int64_t v = 0;
	char *end;

	snprintf(path, sizeof(path), "%s.%s", o->section, o->name);
	switch (o->type) {
	case CONFIG_STR:
		if (strlen(value) >= o->str_bytes)
			return nerr_set(msg, NERR_INVAL, path,
					"value longer than %zu bytes", o->str_bytes - 1);
		snprintf((char *)cfg + o->offset, o->str_bytes, "%s", value);
		return NERR_OK;
	case CONFIG_INT:
		errno = 0;
		v = strtoll(value, &end, 10);
		if (errno || end == value || *end != '\0')
			return nerr_set(msg, NERR_INVAL, path, "'%s' is not an integer",
					value);
		break;
	case CONFIG_SIZE:
		v = config_parse_size(value);
		if (v < 0)
			return nerr_set(msg, NERR_INVAL, path,
					"'%s' is not a size (e.g. 512, 32k, 4MiB)",
					value);
		break;
	case CONFIG_BOOL:
		if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
		    !strcasecmp(value, "on") || !strcmp(value, "1"))
			v = 1;
		else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") ||
			 !strcasecmp(value, "off") || !strcmp(value, "0"))
			v = 0;
		else
			return nerr_set(msg, NERR_INVAL, path,
					"'%s' is not true or false", value);
		break;
	case CONFIG_DURATION:
		v = config_parse_duration_ms(value);
		if (v < 0)
			return nerr_set(
				msg, NERR_INVAL, path,
				"'%s' is not a duration (e.g. 500ms, 30s, 5m, 24h, 7d)",
				value);
		break;
	}
	if (v < o->min || v > o->max)
		return nerr_set(msg, NERR_INVAL, path, "%lld is outside [%lld, %lld]",
				(long long)v, (long long)o->min, (long long)o->max);
	*(int64_t *)((char *)cfg + o->offset) = v;
	return NERR_OK;
}

enum nerr config_set(struct config *cfg, const char *section, const char *name,
		     const char *value, struct nerr_msg *msg)
{
	bool section_known = false;

	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		if (strcmp(options[i].section, section) != 0)
			continue;
		section_known = true;
		if (strcmp(options[i].name, name) == 0)
			return set_option(cfg, &options[i], value, msg);
	}
	if (!section_known)
		return nerr_set(msg, NERR_INVAL, section, "unknown section [%s]",
				section);
	return nerr_set(msg, NERR_INVAL, name, "unknown option '%s' in [%s]", name,
			section);
}

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		enum nerr rc =
			set_option(cfg, &options[i], options[i].default_value, NULL);

		(void)rc;
	}
}

struct load_ctx {
	struct config *cfg;
	struct nerr_msg *msg;
	enum nerr rc;
};

static int on_ini_line(void *user, const char *section, const char *name,
		       const char *value)
{
	struct load_ctx *lc = user;

	lc->rc = config_set(lc->cfg, section, name, value, lc->msg);
	return lc->rc == NERR_OK;
}

enum nerr config_load(struct config *cfg, const char *path, struct nerr_msg *msg)
{
	struct nerr_msg inner = {"", ""};
	struct load_ctx lc = {cfg, &inner, NERR_OK};
	int line = ini_parse(path, on_ini_line, &lc);

	if (line == -1)
		return nerr_set(msg, NERR_IO, "config", "cannot open %s", path);
	if (line == -2)
		return nerr_set(msg, NERR_NOMEM, "config", "out of memory reading %s",
				path);
	if (line > 0) {
		if (lc.rc == NERR_OK)
			return nerr_set(msg, NERR_INVAL, "config", "%s:%d: syntax error",
					path, line);
		return nerr_set(msg, lc.rc, inner.field, "%s:%d: %s: %s", path, line,
				inner.field, inner.message);
	}
	return NERR_OK;
}
