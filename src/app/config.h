/*
 * config.h -- nudge's configuration: one declarative table of options.
 *
 * Design: every option is a row (section, name, type, default, bounds, help) in
 * config.c; the INI file (inih) and the command-line overrides both go through
 * config_set(), so a value is validated the same way wherever it comes from.
 * A bad option stops startup and names the file and line. The sample nudge.conf
 * at the repository root documents every row (a unit test checks it does).
 */
#ifndef NUDGE_APP_CONFIG_H
#define NUDGE_APP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct config {
	/* [server] */
	char listen[128];
	char data_dir[1024];
	char write_key[128];
	char admin_key[128];
	char log_level[16];
	int64_t max_connections;
	int64_t max_header_bytes;
	int64_t max_body_bytes;
	int64_t max_pipelined;
	int64_t idle_timeout_ms;
	int64_t read_timeout_ms;
	int64_t shutdown_timeout_ms;
	/* [ingest] */
	int64_t max_event_bytes;
	int64_t max_batch_items;
	int64_t max_json_depth;
	int64_t dedup_window_ms;
	int64_t commit_queue_bytes;
	int64_t commit_batch_max;
	/* [engine] */
	int64_t engine_batch_max;
	int64_t engine_cache_bytes;
	/* [profiles] */
	int64_t max_identities;
	int64_t history_max_events;
	int64_t history_max_age_ms;
	char identity_traits[512];
	/* [journeys] */
	int64_t journey_max_steps;
	int64_t journey_max_wait_ms;
	int64_t journey_max_steps_per_event;
	int64_t journey_max_instance_bytes;
	int64_t journey_timers_per_batch;
	/* [webhook] */
	char webhook_allow[1024];
	char webhook_secret[256];
	int64_t webhook_per_host_concurrency;
	int64_t webhook_max_concurrency;
	int64_t webhook_max_response_bytes;
	/* [tracking] */
	char tracking_base_url[512];
	char tracking_secret[256];
	int64_t tracking_open;
	int64_t tracking_click;
	char feedback_key[256];
	/* [smtp] */
	char smtp_host[256];
	int64_t smtp_port;
	char smtp_tls[16];
	char smtp_username[256];
	char smtp_password[256];
	int64_t smtp_connections;
	char smtp_helo[256];
	char smtp_from[512];
	int64_t smtp_timeout_ms;
	/* [sms] */
	char sms_base_url[512];
	char sms_account_sid[128];
	char sms_auth_token[256];
	char sms_from[64];
	char sms_status_callback[512];
	/* [push] */
	char push_base_url[512];
	char push_project_id[256];
	char push_token[2048];
	/* [governance] */
	int64_t soft_bounce_limit;
	char consent_email_marketing[16];
	char consent_sms_marketing[16];
	char consent_push_marketing[16];
	char consent_transactional[16];
	/* [audiences] */
	int64_t aud_job_batch;
	int64_t aud_scan_batch;
	int64_t aud_scan_interval_ms;
	int64_t aud_max_audiences;
	int64_t aud_max_computed;
};

enum config_type { CONFIG_STR, CONFIG_INT, CONFIG_SIZE, CONFIG_DURATION, CONFIG_BOOL };

struct config_option {
	const char *section;
	const char *name;
	enum config_type type;
	const char *default_value;
	int64_t min, max; /* for numbers, sizes and durations (in ms) */
	size_t offset;	  /* into struct config */
	size_t str_bytes; /* for strings: capacity */
	const char *help;
};

/* The table; *n receives its length. */
const struct config_option *config_options(size_t *n);

/* Fills cfg with every default. */
void config_defaults(struct config *cfg);
/* Sets section.name from text, validating type and bounds. */
enum nerr config_set(struct config *cfg, const char *section, const char *name,
		     const char *value, struct nerr_msg *msg);
/* Loads an INI file on top of cfg; msg names "file:line". */
enum nerr config_load(struct config *cfg, const char *path, struct nerr_msg *msg);

/* "250ms", "30s", "5m", "24h", "7d", "1w" or a bare number of ms. -1 on error. */
int64_t config_parse_duration_ms(const char *s);
/* "4096", "32k", "4MiB", "1g". -1 on error. */
int64_t config_parse_size(const char *s);

#endif
