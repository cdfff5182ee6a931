/*
 * report.h -- journey funnels, message metrics, conversions and latency.
 *
 * Design (DESIGN.md §11, invariant 2): the engine counts what happens while it
 * builds a batch (report_count / report_latency add to an in-memory table, no
 * store access) and calls report_flush(r, b, now) just before it commits b:
 * every touched counter is read, added to and written back once per batch, into
 * an all-time total and into the current minute's bucket, in the same atomic
 * write as the state change it counts. A batch that is abandoned calls
 * report_discard(). Minute buckets older than 24 h are deleted a bounded number
 * per flush. Reads work on committed state only (any thread, through the store):
 * they never see half a batch.
 *
 * A counter is identified by its dimensions (journey, version, step, template,
 * channel, split arm; "" when not applicable) and its stable name (see
 * report_counter_name); docs/reporting.md says what increments each one.
 *
 * Threading: a struct report belongs to the engine thread. The read functions
 * take the store and may run on any thread.
 */
#ifndef NUDGE_REPORT_REPORT_H
#define NUDGE_REPORT_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "store/store.h"

/* Counters. The names (report_counter_name) are stored in keys and never change;
 * the enum order may. */
#define REPORT_COUNTERS(X)                                                               \
	X(ENTERED, "entered")                                                            \
	X(IN_STEP, "in_step")                                                            \
	X(COMPLETED, "completed")                                                        \
	X(EXITED_COMPLETED, "exited_completed")                                          \
	X(EXITED_EXIT, "exited_exit")                                                    \
	X(EXITED_GOAL, "exited_goal")                                                    \
	X(EXITED_STOPPED, "exited_stopped")                                              \
	X(EXITED_ERROR, "exited_error")                                                  \
	X(EXITED_TIMEOUT, "exited_timeout")                                              \
	X(EXITED_ERASED, "exited_erased")                                                \
	X(EXITED_MERGED, "exited_merged")                                                \
	X(ERRORS, "errors")                                                              \
	X(TARGETED, "targeted")                                                          \
	X(EXCLUDED_SUPPRESSED, "excluded_suppressed")                                    \
	X(EXCLUDED_NO_CONSENT, "excluded_no_consent")                                    \
	X(EXCLUDED_CAPPED, "excluded_capped")                                            \
	X(EXCLUDED_QUIET_HOURS_DROPPED, "excluded_quiet_hours_dropped")                  \
	X(EXCLUDED_ENTRY_CAPPED, "excluded_entry_capped")                                \
	X(EXCLUDED_NO_ADDRESS, "excluded_no_address")                                    \
	X(EXCLUDED_NO_TEMPLATE, "excluded_no_template")                                  \
	X(EXCLUDED_INVALID_HEADER, "excluded_invalid_header")                            \
	X(EXCLUDED_RENDER_ERROR, "excluded_render_error")                                \
	X(SENT, "sent")                                                                  \
	X(DELIVERED, "delivered")                                                        \
	X(BOUNCED_HARD, "bounced_hard")                                                  \
	X(BOUNCED_SOFT, "bounced_soft")                                                  \
	X(FAILED, "failed")                                                              \
	X(OPENED, "opened")                                                              \
	X(OPENED_UNIQUE, "opened_unique")                                                \
	X(CLICKED, "clicked")                                                            \
	X(CLICKED_UNIQUE, "clicked_unique")                                              \
	X(UNSUBSCRIBED, "unsubscribed")                                                  \
	X(COMPLAINTS, "complaints")                                                      \
	X(CONVERSIONS, "conversions")                                                    \
	X(CONVERSION_VALUE, "conversion_value")

enum report_counter {
#define X(e, n) REPORT_##e,
	REPORT_COUNTERS(X)
#undef X
		REPORT_C__COUNT
};

/* Latency histograms (log-scale buckets, report_latency_bounds). */
enum report_latency {
	REPORT_LAT_EVENT_TO_ENTRY,	  /* event received -> instance entered */
	REPORT_LAT_EVENT_TO_DECISION,	  /* event received -> envelope created */
	REPORT_LAT_DECISION_TO_DELIVERED, /* envelope created -> delivered */
	REPORT_LAT__COUNT
};

#define REPORT_LAT_NBOUNDS 21
extern const double report_latency_bounds[REPORT_LAT_NBOUNDS]; /* seconds, ascending */

/* The stable names: "entered", "exited_goal", ...; "event_to_entry", ... */
const char *report_counter_name(enum report_counter c);
const char *report_latency_name(enum report_latency l);
/* Maps an exit reason ("completed", "exit", ...) or an exclusion reason
 * ("suppressed", ...) to its counter; returns false for an unknown reason. */
bool report_exit_counter(const char *reason, enum report_counter *out);
bool report_exclusion_counter(const char *reason, enum report_counter *out);

/* The dimensions of a count. NULL strings count as "". */
struct report_dims {
	const char *journey;
	unsigned version;
	const char *step;	 /* "" = journey level */
	const char *template_id; /* message steps */
	const char *channel;	 /* message steps */
	const char *arm;	 /* split branch; see docs/reporting.md */
};

struct report;

/* Creates the engine's accumulator over s (borrowed; must outlive r). */
enum nerr report_open(struct store *s, struct report **out);
void report_free(struct report *r);

/* Adds n to counter c (engine thread; in memory until report_flush). For
 * REPORT_CONVERSION_VALUE n is the value (stored to 1e-6); for REPORT_IN_STEP
 * it is +1 or -1. */
void report_count(struct report *r, const struct report_dims *d, enum report_counter c,
		  double n);
/* Observes one latency of `seconds` (negative clamps to 0). */
void report_latency(struct report *r, const struct report_dims *d,
		    enum report_latency which, double seconds);
/* Writes the pending deltas into b (totals and now_ms's minute bucket) and prunes
 * a bounded number of minute buckets older than 24 h. Call just before b is
 * committed; the pending deltas are cleared. */
void report_flush(struct report *r, struct store_batch *b, int64_t now_ms);
/* Drops the pending deltas and what r remembers of stored values. Call it when
 * the batch is abandoned, and also when its commit fails after report_flush. */
void report_discard(struct report *r);
/* How many minute buckets a flush deletes at most. */
#define REPORT_PRUNE_PER_FLUSH 256
#define REPORT_MINUTES_KEPT    (24 * 60)

/* A read's options. version 0 = all versions; from_ms/to_ms 0 = the last 24 h
 * (the series only); bucket NULL = no series, else "minute", "hour" or "day". */
struct report_query {
	unsigned version;
	int64_t from_ms, to_ms;
	const char *bucket;
	bool csv;
	int64_t now_ms; /* 0 = the wall clock (tests set it) */
};

/*
 * Reads (committed state; any thread). Each appends JSON (or CSV when q->csv)
 * to out. NERR_NOTFOUND when nothing was ever counted for the journey, step or
 * template; NERR_INVAL for a bad bucket or range (msg names the field).
 */
enum nerr report_journey(struct store *s, const char *journey,
			 const struct report_query *q, struct buf *out,
			 struct nerr_msg *msg);
enum nerr report_step(struct store *s, const char *journey, const char *step,
		      const struct report_query *q, struct buf *out,
		      struct nerr_msg *msg);
enum nerr report_template(struct store *s, const char *template_id,
			  const struct report_query *q, struct buf *out,
			  struct nerr_msg *msg);
enum nerr report_overview(struct store *s, const struct report_query *q, struct buf *out,
			  struct nerr_msg *msg);

/* Sets one query parameter from its (percent-decoded) value: "version" (a
 * positive integer), "from" / "to" (RFC 3339 or epoch milliseconds), "bucket"
 * (minute, hour, day). Unknown names are ignored. NERR_INVAL names the field. */
enum nerr report_query_set(struct report_query *q, const char *name, const char *value,
			   struct nerr_msg *msg);

/*
 * Answers GET /v1/reports/<rest>[?query] in one call: rest is
 * "journeys/ID", "journeys/ID/steps/STEP", "templates/ID" or "overview"; query
 * is the raw query string ("" or NULL for none); accept is the request's Accept
 * header (CSV when it names text/csv). Returns the HTTP status (200, 400, 404)
 * with the body in out and its media type in *content_type; errors are
 * {"error":{"code","field","message"}}.
 */
int report_http(struct store *s, const char *rest, const char *query, const char *accept,
		struct buf *out, const char **content_type);

/* Appends the per-journey and per-channel series in Prometheus text format
 * (labels: journey, channel, reason, stage; never a profile). */
void report_render_metrics(struct store *s, struct buf *out);
/* Makes /metrics (metrics_render) append report_render_metrics(s); a later
 * call replaces s, and NULL stops it (call that before closing the store). */
void report_register_metrics(struct store *s);

#endif
