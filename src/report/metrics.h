/*
 * metrics.h -- process-wide counters, gauges and histograms for /metrics.
 *
 * Design: metrics are static objects owned by the module that updates them and
 * registered once at startup; updates are relaxed atomics so any thread may bump
 * them without locks. Rendering walks the registry and writes Prometheus text
 * format 0.0.4, grouping series of the same name under one HELP/TYPE. Labels are
 * fixed strings chosen at registration (bounded cardinality by construction: no
 * label is ever built from client data).
 */
#ifndef NUDGE_REPORT_METRICS_H
#define NUDGE_REPORT_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "base/buf.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

#define METRIC_MAX_BUCKETS 24

struct metric {
	const char *name; /* e.g. "nudge_events_accepted_total" */
	const char *help;
	const char *labels; /* "" or `route="track",status="200"` */
	enum metric_type type;
	/* histogram: upper bounds (ascending), count of them */
	const double *bounds;
	unsigned nbounds;
	/* value: counter/gauge in `value`, histogram in buckets/sum/count */
	_Atomic int64_t value;
	_Atomic uint64_t buckets[METRIC_MAX_BUCKETS + 1];
	_Atomic uint64_t count;
	_Atomic uint64_t sum_micro; /* sum * 1e6, so sums of seconds stay integral */
	struct metric *next;	    /* registry link; owned by the registry */
};

/* Adds m to the registry (idempotent per object). Not thread-safe: call at startup. */
void metrics_register(struct metric *m);
void metrics_add(struct metric *m, int64_t n);
void metrics_set(struct metric *m, int64_t v);
void metrics_observe(struct metric *m, double v);
/* Appends the whole registry in Prometheus text format, then the output of
 * every renderer added with metrics_add_renderer (in the order added). */
void metrics_render(struct buf *out);
/* Adds a function that appends whole metric families (HELP, TYPE, series) at
 * render time, for series whose labels come from stored data (the reports).
 * Not thread-safe: call at startup; fn runs on the thread that renders. */
#define METRICS_MAX_RENDERERS 8
void metrics_add_renderer(void (*fn)(void *ud, struct buf *out), void *ud);

/* Shared bucket layouts. */
extern const double metrics_latency_seconds_bounds[];
extern const unsigned metrics_latency_seconds_nbounds;
extern const double metrics_size_bounds[];
extern const unsigned metrics_size_nbounds;

#endif
