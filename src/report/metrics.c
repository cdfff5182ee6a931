/*
 * metrics.c -- the metric registry and the Prometheus text renderer.
 *
 * The registry is a singly linked list kept in registration order; series with
 * the same name must be registered next to each other's first occurrence for
 * HELP/TYPE grouping, which metrics_render() handles by emitting every series of
 * a name when it meets that name first.
 */
#include "report/metrics.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "base/mem.h"

static struct metric *head, **tail = &head;
static struct {
	void (*fn)(void *ud, struct buf *out);
	void *ud;
} renderers[METRICS_MAX_RENDERERS];
static unsigned nrenderers;

const double metrics_latency_seconds_bounds[] = {
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05,	 0.1,	 0.25,	  0.5,	  1,	 2.5,	 5,	10,
};
const unsigned metrics_latency_seconds_nbounds =
	sizeof(metrics_latency_seconds_bounds) /
	sizeof(metrics_latency_seconds_bounds[0]);
const double metrics_size_bounds[] = {1,   2,	 5,    10,   20,    50,	   100,	 200,
				      500, 1000, 2000, 5000, 10000, 20000, 50000};
const unsigned metrics_size_nbounds =
	sizeof(metrics_size_bounds) / sizeof(metrics_size_bounds[0]);

void metrics_register(struct metric *m)
{
	for (struct metric *p = head; p; p = p->next)
		if (p == m)
			return;
	if (m->nbounds > METRIC_MAX_BUCKETS)
		m->nbounds = METRIC_MAX_BUCKETS;
	m->next = NULL;
	*tail = m;
	tail = &m->next;
}

void metrics_add_renderer(void (*fn)(void *ud, struct buf *out), void *ud)
{
	for (unsigned i = 0; i < nrenderers; i++)
		if (renderers[i].fn == fn && renderers[i].ud == ud)
			return;
	ASSERT(nrenderers < METRICS_MAX_RENDERERS);
	renderers[nrenderers].fn = fn;
	renderers[nrenderers].ud = ud;
	nrenderers++;
}

void metrics_add(struct metric *m, int64_t n)
{
	atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}

void metrics_set(struct metric *m, int64_t v)
{
	atomic_store_explicit(&m->value, v, memory_order_relaxed);
}

void metrics_observe(struct metric *m, double v)
{
	unsigned i = 0;

	while (i < m->nbounds && v > m->bounds[i])
		i++;
	atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
	if (v > 0 && isfinite(v))
		atomic_fetch_add_explicit(&m->sum_micro, (uint64_t)(v * 1e6),
					  memory_order_relaxed);
}

static const char *type_name(enum metric_type t)
{
	return t == METRIC_COUNTER ? "counter"
	       : t == METRIC_GAUGE ? "gauge"
				   : "histogram";
}

static void render_series(struct buf *out, struct metric *m)
{
	const char *l = m->labels ? m->labels : "";

	if (m->type != METRIC_HISTOGRAM) {
		buf_printf(out, "%s%s%s%s %lld\n", m->name, *l ? "{" : "", l,
			   *l ? "}" : "", (long long)atomic_load(&m->value));
		return;
	}
	uint64_t cum = 0;
	for (unsigned i = 0; i <= m->nbounds; i++) {
		cum += atomic_load(&m->buckets[i]);
		if (i < m->nbounds)
			buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", m->name, l,
				   *l ? "," : "", m->bounds[i], (unsigned long long)cum);
		else
			buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name, l,
				   *l ? "," : "", (unsigned long long)cum);
	}
	buf_printf(out, "%s_sum%s%s%s %.6f\n", m->name, *l ? "{" : "", l, *l ? "}" : "",
		   (double)atomic_load(&m->sum_micro) / 1e6);
	buf_printf(out, "%s_count%s%s%s %llu\n", m->name, *l ? "{" : "", l, *l ? "}" : "",
		   (unsigned long long)cum);
}

void metrics_render(struct buf *out)
{
	for (struct metric *m = head; m; m = m->next) {
		bool first = true;

		for (struct metric *p = head; p != m; p = p->next)
			if (strcmp(p->name, m->name) == 0) {
				first = false;
				break;
			}
		if (!first)
			continue;
		buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
			   type_name(m->type));
		for (struct metric *p = m; p; p = p->next)
			if (strcmp(p->name, m->name) == 0)
				render_series(out, p);
	}
	for (unsigned i = 0; i < nrenderers; i++)
		renderers[i].fn(renderers[i].ud, out);
}
