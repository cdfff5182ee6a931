/*
 * bench_tmpl.c -- compile time and renders per second of the cart-reminder email.
 *
 * Design: renders ../shared/bench/cart-reminder.liquid with its .data.json, the
 * input LiquidJS was measured on (≈ 98 µs per render, ≈ 66 µs parse), checks the
 * output equals .expected.html byte for byte (exit 1 if not), then times compile
 * and render loops. A render reuses one scratch arena (reset per render) and
 * one output buffer, as the delivery path does. DESIGN.md §12 budget: < 20 µs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/clock.h"
#include "tmpl/tmpl.h"

#ifndef SHARED_DIR
#define SHARED_DIR "../shared"
#endif

/* CPU time of this thread: the figure that stays meaningful on a shared,
 * loaded machine (wall time is reported too). */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double median5(double *v)
{
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			if (v[j] < v[i]) {
				double x = v[i];
				v[i] = v[j];
				v[j] = x;
			}
	return v[2];
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char tmp[4096];
	size_t n;

	if (!f)
		return NULL;
	buf_init(&b, 0);
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	fclose(f);
	*len = b.len;
	return buf_take(&b);
}

int main(void)
{
	const char *dir = getenv("NUDGE_SHARED") ? getenv("NUDGE_SHARED") : SHARED_DIR;
	char path[1024];
	size_t slen, elen;
	char *src, *expected;
	struct json_object *data;
	struct tmpl *t;
	struct nerr_msg msg;
	struct arena a;
	struct buf out;
	int n;

	snprintf(path, sizeof(path), "%s/bench/cart-reminder.liquid", dir);
	src = slurp(path, &slen);
	snprintf(path, sizeof(path), "%s/bench/cart-reminder.expected.html", dir);
	expected = slurp(path, &elen);
	snprintf(path, sizeof(path), "%s/bench/cart-reminder.data.json", dir);
	data = json_object_from_file(path);
	if (!src || !expected || !data) {
		fprintf(stderr, "bench_tmpl: cannot read the inputs under %s/bench\n",
			dir);
		return 1;
	}
	if (tmpl_compile(src, slen, NULL, &t, &msg)) {
		fprintf(stderr, "bench_tmpl: compile: %s\n", msg.message);
		return 1;
	}
	arena_init(&a, 64 * 1024);
	buf_init(&out, 0);
	if (tmpl_render(t, data, NULL, &a, &out, &msg) || out.len != elen ||
	    memcmp(buf_str(&out), expected, elen) != 0) {
		fprintf(stderr,
			"bench_tmpl: output differs from cart-reminder.expected.html\n");
		return 1;
	}

	/* Each figure is the median of 5 rounds of ~200 ms of CPU time. */
	double comp[5], rend[5], wall[5];
	for (int r = 0; r < 5; r++) {
		uint64_t c0 = cpu_ns(), w0 = clock_mono_ns();
		n = 0;
		do {
			struct tmpl *c;
			for (int i = 0; i < 100; i++, n++) {
				tmpl_compile(src, slen, NULL, &c, &msg);
				tmpl_free(c);
			}
		} while (cpu_ns() - c0 < 200000000ULL);
		comp[r] = (double)(cpu_ns() - c0) / n / 1000.0;
		(void)w0;
	}
	for (int r = 0; r < 5; r++) {
		uint64_t c0 = cpu_ns(), w0 = clock_mono_ns();
		n = 0;
		do {
			for (int i = 0; i < 500; i++, n++) {
				arena_reset(&a);
				buf_reset(&out);
				tmpl_render(t, data, NULL, &a, &out, &msg);
			}
		} while (cpu_ns() - c0 < 200000000ULL);
		rend[r] = (double)(cpu_ns() - c0) / n / 1000.0;
		wall[r] = (double)(clock_mono_ns() - w0) / n / 1000.0;
	}
	double compile_us = median5(comp), render_us = median5(rend),
	       wall_us = median5(wall);
	printf("tmpl cart-reminder (%zu bytes in, %zu bytes out, output verified)\n",
	       slen, elen);
	printf("  compile: %.2f us (CPU time)\n", compile_us);
	printf("  render:  %.2f us/render (CPU time), %.0f renders/s per core; "
	       "wall %.2f us (machine load %s)\n",
	       render_us, 1e6 / render_us, wall_us,
	       wall_us > render_us * 1.3 ? "high" : "low");
	printf("  budget 20 us/render (DESIGN.md 12); LiquidJS ~98 us render, ~66 us "
	       "parse\n");
	buf_fini(&out);
	arena_fini(&a);
	tmpl_free(t);
	json_object_put(data);
	free(src);
	free(expected);
	return 0;
}
