/*
 * report.c -- report counters: accumulated per engine batch, flushed into the
 * batch, read back as funnels, message metrics, conversions and latency.
 *
 * Design: the engine thread calls report_count()/report_latency() while it
 * builds a batch; they add to an in-memory table keyed by the encoded
 * dimensions (one struct acc per distinct dims, holding a delta per metric), so
 * the hot path touches no store. report_flush() walks the entries touched in
 * this batch and writes, per entry, two keys into the batch: the dims' all-time
 * totals and the dims' bucket of the current minute, each one packed value
 * holding every non-zero metric of the dims (one put per dims, not per metric,
 * keeps the engine's write batch small). The batch then commits with the state
 * change the counts describe (invariant 2), so after a crash the re-run batch
 * counts again exactly what it re-does. Entries stay in the table between
 * batches (no allocation in steady state) until it grows past ACC_TABLE_MAX,
 * when it is emptied. Because the engine is the only writer of these keys, an
 * entry also remembers the values it last wrote, so a dims is read from the
 * store once per process (and once per minute for its bucket), not once per
 * batch; report_discard() forgets them, since a flush whose commit failed left
 * them wrong. The caller's string pointers find a recently used dims in a small
 * direct-mapped cache, confirmed by comparing the strings, before anything is
 * encoded or hashed (the hot path: tens of ns per count).
 *
 * A "metric" is a counter (enum report_counter) or one cell of a latency
 * histogram: a bucket (non-cumulative count of observations <= its bound) or
 * the sum in microseconds. Each has a stable name stored with its value, so
 * adding a counter never reinterprets stored data (and names this build does
 * not know are kept as they are).
 *
 * On-disk format (STORE_CF_COUNTERS), US = 0x1f, dims = journey US version
 * (decimal) US step US template US channel US arm, control bytes in a dimension
 * replaced by '_':
 *   't' dims -> packed metrics
 *   'm' journey US minute(u64 BE) version US step US template US channel US arm
 *       -> packed metrics, minute = wall ms / 60000
 * packed metrics = repeated [u8 name length][name][int64 big-endian, two's
 * complement], zeros omitted. conversion_value is stored in millionths, latency
 * sums in microseconds. Minute keys sort by journey, then time, so a journey's
 * series reads only its own keys, and pruning reads only each journey's oldest
 * keys (one seek per journey to skip the rest).
 *
 * Reads (report_journey, ...) iterate committed keys and aggregate; label and
 * row cardinality is bounded by journeys x steps x templates x channels x arms,
 * never by profiles.
 *
 * Invariants: (1) a count reaches the store only through report_flush into the
 *   batch that carries its state change; (2) no minute bucket older than
 *   REPORT_MINUTES_KEPT survives more than (old buckets / REPORT_PRUNE_PER_FLUSH
 *   + journeys / PRUNE_SEEKS_PER_FLUSH + 1) flushes; (3) totals and buckets of
 *   a batch are written together.
 * Threading: struct report belongs to the engine thread; reads take the store.
 * References: DESIGN.md §11, docs/reporting.md.
 */
#include "report/report.h"

#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "report/metrics.h"

#define US		      '\x1f'
#define NB		      (REPORT_LAT_NBOUNDS + 1) /* buckets incl. +Inf */
#define LAT_CELLS	      (NB + 1)		       /* buckets + sum */
#define NM		      (REPORT_C__COUNT + REPORT_LAT__COUNT * LAT_CELLS) /* metrics */
#define NZ_WORDS	      ((NM + 63) / 64)
#define DIM_MAX_BYTES	      128  /* longer dimension strings are cut */
#define ACC_TABLE_MAX	      4096 /* distinct dims kept between batches */
#define MINUTE_MS	      60000
#define VALUE_SCALE	      1e6 /* conversion_value and latency sums */
#define PRUNE_SEEKS_PER_FLUSH 64  /* journeys a prune pass steps over per flush */

const double report_latency_bounds[REPORT_LAT_NBOUNDS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,	0.25,
	0.5,	1,	 2.5,	 5,	10,	30,    60,   300,   900,  3600,
};

static const char *const counter_names[] = {
#define X(e, n) n,
	REPORT_COUNTERS(X)
#undef X
};

static const char *const latency_names[] = {"event_to_entry", "event_to_decision",
					    "decision_to_delivered"};

static const char *const exit_reasons[] = {"completed", "exit",	   "goal",   "stopped",
					   "error",	"timeout", "erased", "merged"};
static const char *const exclusion_reasons[] = {
	"suppressed",	       "no_consent",	 "capped",
	"quiet_hours_dropped", "entry_capped",	 "no_address",
	"no_template",	       "invalid_header", "render_error"};

_Static_assert(sizeof(counter_names) / sizeof(counter_names[0]) == REPORT_C__COUNT,
	       "counter names");
_Static_assert(sizeof(latency_names) / sizeof(latency_names[0]) == REPORT_LAT__COUNT,
	       "latency names");
_Static_assert(REPORT_EXITED_MERGED - REPORT_EXITED_COMPLETED + 1 ==
		       sizeof(exit_reasons) / sizeof(exit_reasons[0]),
	       "exit reasons");
_Static_assert(REPORT_EXCLUDED_RENDER_ERROR - REPORT_EXCLUDED_SUPPRESSED + 1 ==
		       sizeof(exclusion_reasons) / sizeof(exclusion_reasons[0]),
	       "exclusion reasons");

/* The message counters, in the order reports list them. */
static const enum report_counter message_counters[] = {
	REPORT_TARGETED,       REPORT_SENT,	     REPORT_DELIVERED,
	REPORT_BOUNCED_HARD,   REPORT_BOUNCED_SOFT,  REPORT_FAILED,
	REPORT_OPENED,	       REPORT_OPENED_UNIQUE, REPORT_CLICKED,
	REPORT_CLICKED_UNIQUE, REPORT_UNSUBSCRIBED,  REPORT_COMPLAINTS,
};
#define N_MESSAGE_COUNTERS (sizeof(message_counters) / sizeof(message_counters[0]))

/* ------------------------------------------------------------------ names */

static char metric_names[NM][64];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static int lat_cell(enum report_latency l, unsigned i)
{
	return REPORT_C__COUNT + (int)l * LAT_CELLS + (int)i;
}

static void names_init(void)
{
	for (int c = 0; c < REPORT_C__COUNT; c++)
		snprintf(metric_names[c], sizeof(metric_names[c]), "%s",
			 counter_names[c]);
	for (int l = 0; l < REPORT_LAT__COUNT; l++) {
		for (unsigned i = 0; i < NB; i++) {
			char *dst = metric_names[lat_cell(l, i)];

			if (i < REPORT_LAT_NBOUNDS)
				snprintf(dst, 64, "lat_%s_le_%g", latency_names[l],
					 report_latency_bounds[i]);
			else
				snprintf(dst, 64, "lat_%s_le_inf", latency_names[l]);
		}
		snprintf(metric_names[lat_cell(l, NB)], 64, "lat_%s_sum_us",
			 latency_names[l]);
	}
}

static const char *metric_name(int idx)
{
	pthread_once(&names_once, names_init);
	return metric_names[idx];
}

/* Returns the metric index of a stored name, or -1 (a name from a newer build). */
static int metric_index(const char *name, size_t len)
{
	pthread_once(&names_once, names_init);
	for (int i = 0; i < NM; i++)
		if (strlen(metric_names[i]) == len &&
		    memcmp(metric_names[i], name, len) == 0)
			return i;
	return -1;
}

const char *report_counter_name(enum report_counter c)
{
	return c >= 0 && c < REPORT_C__COUNT ? counter_names[c] : "?";
}

const char *report_latency_name(enum report_latency l)
{
	return l >= 0 && l < REPORT_LAT__COUNT ? latency_names[l] : "?";
}

bool report_exit_counter(const char *reason, enum report_counter *out)
{
	for (unsigned i = 0; i < sizeof(exit_reasons) / sizeof(exit_reasons[0]); i++)
		if (strcmp(reason, exit_reasons[i]) == 0) {
			*out = (enum report_counter)(REPORT_EXITED_COMPLETED + (int)i);
			return true;
		}
	return false;
}

bool report_exclusion_counter(const char *reason, enum report_counter *out)
{
	for (unsigned i = 0; i < sizeof(exclusion_reasons) / sizeof(exclusion_reasons[0]);
	     i++)
		if (strcmp(reason, exclusion_reasons[i]) == 0) {
			*out = (enum report_counter)(REPORT_EXCLUDED_SUPPRESSED + (int)i);
			return true;
		}
	return false;
}

/* ---------------------------------------------------------- accumulation */

/* The deltas of one dims in the current batch. Owned by struct report. */
struct acc {
	char *dims; /* encoded, owned */
	struct acc *next_dirty;
	bool dirty;
	uint64_t nz[NZ_WORDS]; /* metrics with a pending delta */
	int64_t v[NM];
	/* The stored values as of the last flush (the engine is the only writer,
	 * so once read they need not be read again): totals, and the bucket of
	 * `minute`, valid when *known; entries with names this build does not
	 * know are kept as they were in *other and written back. */
	bool tknown, mknown;
	int64_t minute;
	int64_t total[NM];
	int64_t mval[NM];
	struct buf tother, mother;
};

/* A recently used dims and its entry, found by hashing the caller's string
 * pointers (the engine passes the same definition strings again and again) and
 * confirmed by comparing the strings with copies, so reused memory can never
 * alias another dims. Much cheaper than encoding and hashing the strings. */
#define DCACHE_SIZE 256 /* power of two */
struct dcache {
	const void
		*p[5]; /* the caller's pointers: journey, step, template, channel, arm */
	char *f[5];    /* copies of the strings; owned; NULL = unused */
	unsigned version;
	struct acc *a;
};

struct report {
	struct store *s;      /* borrowed */
	struct map accs;      /* encoded dims -> struct acc (owned) */
	struct acc *dirty;    /* entries touched since the last flush */
	int64_t pruned_below; /* minute: older buckets are known gone (0 = unknown) */
	struct dcache cache[DCACHE_SIZE];
	struct buf prune_from; /* where an unfinished prune pass goes on ("" = start) */
	struct buf key, val;   /* scratch */
};

#define DIMS_MAX_BYTES (6 * (DIM_MAX_BYTES + 1) + 16)

static void put_dim(struct buf *b, const char *s)
{
	size_t n = 0;

	for (const char *p = s ? s : ""; *p && n < DIM_MAX_BYTES; p++, n++)
		buf_putc(b, (unsigned char)*p < 0x20 ? '_' : *p);
}

/* Copies a dimension (cut, control bytes as '_') to p; returns the end. */
static char *copy_dim(char *p, const char *s)
{
	size_t n = 0;

	for (s = s ? s : ""; *s && n < DIM_MAX_BYTES; s++, n++)
		*p++ = (unsigned char)*s < 0x20 ? '_' : *s;
	return p;
}

/* Writes the encoded dims, NUL-terminated, into out (DIMS_MAX_BYTES). */
static void encode_dims(char *out, const struct report_dims *d)
{
	char *p = copy_dim(out, d->journey), num[16];
	int n = snprintf(num, sizeof(num), "%u", d->version);

	*p++ = US;
	memcpy(p, num, (size_t)n);
	p += n;
	*p++ = US;
	p = copy_dim(p, d->step);
	*p++ = US;
	p = copy_dim(p, d->template_id);
	*p++ = US;
	p = copy_dim(p, d->channel);
	*p++ = US;
	p = copy_dim(p, d->arm);
	*p = '\0';
}

enum nerr report_open(struct store *s, struct report **out)
{
	struct report *r = xcalloc(1, sizeof(*r));

	r->s = s;
	map_init(&r->accs);
	buf_init(&r->key, 0);
	buf_init(&r->val, 0);
	buf_init(&r->prune_from, 0);
	*out = r;
	return NERR_OK;
}

static void cache_clear(struct report *r)
{
	for (unsigned i = 0; i < DCACHE_SIZE; i++) {
		for (unsigned j = 0; j < 5; j++) {
			free(r->cache[i].f[j]);
			r->cache[i].f[j] = NULL;
		}
		r->cache[i].a = NULL;
	}
}

static void accs_clear(struct report *r)
{
	const char *k;
	void *v;

	cache_clear(r);
	for (size_t i = 0; map_next(&r->accs, &i, &k, &v);) {
		struct acc *a = v;

		free(a->dims);
		buf_fini(&a->tother);
		buf_fini(&a->mother);
		free(a);
	}
	map_fini(&r->accs);
	map_init(&r->accs);
	r->dirty = NULL;
}

void report_free(struct report *r)
{
	if (!r)
		return;
	accs_clear(r);
	map_fini(&r->accs);
	buf_fini(&r->key);
	buf_fini(&r->val);
	buf_fini(&r->prune_from);
	free(r);
}

static bool same(const char *cached, const char *s)
{
	return strcmp(cached, s ? s : "") == 0;
}

static size_t dims_hash(const void *const p[5], unsigned version)
{
	uint64_t h = version * 0x9E3779B97F4A7C15ull;

	for (int i = 0; i < 5; i++)
		h = (h ^ (uint64_t)(uintptr_t)p[i]) * 0x100000001B3ull;
	return (size_t)(h ^ (h >> 29)) & (DCACHE_SIZE - 1);
}

/* Returns the entry of d, creating it on first use. */
static struct acc *acc_get(struct report *r, const struct report_dims *d)
{
	const char *f[5] = {d->journey, d->step, d->template_id, d->channel, d->arm};
	const void *p[5] = {f[0], f[1], f[2], f[3], f[4]};
	struct dcache *c = &r->cache[dims_hash(p, d->version)];
	char enc[DIMS_MAX_BYTES];
	struct acc *a;

	if (c->a && c->version == d->version) {
		bool hit = true;

		for (int i = 0; i < 5 && hit; i++)
			hit = c->p[i] == p[i] && same(c->f[i], f[i]);
		if (hit)
			return c->a;
	}
	encode_dims(enc, d);
	a = map_get(&r->accs, enc);
	if (!a) {
		a = xcalloc(1, sizeof(*a));
		a->dims = xstrdup(enc);
		map_put(&r->accs, a->dims, a);
	}
	for (int i = 0; i < 5; i++) {
		free(c->f[i]);
		c->f[i] = xstrdup(f[i] ? f[i] : "");
		c->p[i] = p[i];
	}
	c->version = d->version;
	c->a = a;
	return a;
}

static void acc_add(struct report *r, const struct report_dims *d, int idx, int64_t n)
{
	struct acc *a;

	if (n == 0)
		return;
	a = acc_get(r, d);
	if (!a->dirty) {
		a->dirty = true;
		a->next_dirty = r->dirty;
		r->dirty = a;
	}
	a->v[idx] += n;
	a->nz[idx / 64] |= 1ull << (idx % 64);
}

void report_count(struct report *r, const struct report_dims *d, enum report_counter c,
		  double n)
{
	ASSERT(c >= 0 && c < REPORT_C__COUNT);
	if (!isfinite(n))
		return;
	acc_add(r, d, c,
		c == REPORT_CONVERSION_VALUE ? llround(n * VALUE_SCALE) : llround(n));
}

void report_latency(struct report *r, const struct report_dims *d,
		    enum report_latency which, double seconds)
{
	unsigned i = 0;

	ASSERT(which >= 0 && which < REPORT_LAT__COUNT);
	if (!(seconds > 0)) /* also NaN */
		seconds = 0;
	while (i < REPORT_LAT_NBOUNDS && seconds > report_latency_bounds[i])
		i++;
	acc_add(r, d, lat_cell(which, i), 1);
	if (seconds < 1e9) /* a clock jump must not overflow the sum */
		acc_add(r, d, lat_cell(which, NB), llround(seconds * VALUE_SCALE));
}

static int64_t get_i64(const void *p)
{
	return (int64_t)store_get_u64(p);
}

/*
 * Walks a packed value: entries of [u8 name length][name][int64 big-endian].
 * Calls fn for each (idx -1 for a name this build does not know); returns
 * false when the value is malformed.
 */
static bool
unpack(const char *v, size_t vl,
       void (*fn)(void *ud, int idx, const char *name, size_t nl, int64_t val), void *ud)
{
	size_t off = 0;

	while (off < vl) {
		size_t nl = (unsigned char)v[off];

		if (off + 1 + nl + 8 > vl)
			return false;
		fn(ud, metric_index(v + off + 1, nl), v + off + 1, nl,
		   get_i64(v + off + 1 + nl));
		off += 1 + nl + 8;
	}
	return true;
}

struct load_ctx {
	int64_t *vals;
	struct buf *other;
};

static void load_one(void *ud, int idx, const char *name, size_t nl, int64_t val)
{
	struct load_ctx *c = ud;
	unsigned char l = (unsigned char)nl, vb[8];

	if (idx >= 0) {
		c->vals[idx] = val;
		return;
	}
	store_put_u64(vb, (uint64_t)val);
	buf_putc(c->other, (char)l);
	buf_append(c->other, name, nl);
	buf_append(c->other, vb, 8);
}

/* Reads the packed value at key (through the batch) into vals and other. */
static void load_value(struct store_batch *b, const struct buf *key, int64_t *vals,
		       struct buf *other)
{
	struct load_ctx c = {vals, other};
	char *v = NULL;
	size_t len = 0;

	memset(vals, 0, NM * sizeof(*vals));
	buf_reset(other);
	if (store_batch_get(b, STORE_CF_COUNTERS, key->data, key->len, &v, &len) ==
		    NERR_OK &&
	    !unpack(v, len, load_one, &c)) {
		log_warn("report",
			 "msg=\"malformed counters value; restarted from 0\" bytes=%zu",
			 len);
		memset(vals, 0, NM * sizeof(*vals));
		buf_reset(other);
	}
	free(v);
}

/* Writes vals (non-zero entries) and other, packed, at key. */
static void store_value(struct store_batch *b, const struct buf *key, const int64_t *vals,
			const struct buf *other, struct buf *scratch)
{
	buf_reset(scratch);
	for (int i = 0; i < NM; i++) {
		const char *name;
		unsigned char vb[8];
		size_t nl;

		if (!vals[i])
			continue;
		name = metric_name(i);
		nl = strlen(name);
		store_put_u64(vb, (uint64_t)vals[i]);
		buf_putc(scratch, (char)nl);
		buf_append(scratch, name, nl);
		buf_append(scratch, vb, 8);
	}
	buf_append(scratch, other->data ? other->data : "", other->len);
	store_batch_put(b, STORE_CF_COUNTERS, key->data, key->len,
			scratch->data ? scratch->data : "", scratch->len);
}

/* Splits a minute key into the journey's length and the minute; false if
 * malformed. */
static bool minute_key(const char *k, size_t kl, size_t *jl, int64_t *minute)
{
	const char *us = kl > 1 ? memchr(k + 1, US, kl - 1) : NULL;

	if (!us || (size_t)(us - k) + 1 + 8 > kl)
		return false;
	*jl = (size_t)(us - k) - 1;
	*minute = (int64_t)store_get_u64(us + 1);
	return true;
}

/* Sets key to 'm' journey US (next = false) or to the first key after every
 * key of the journey (next = true: US + 1 sorts after them). */
static void journey_minutes_key(struct buf *key, const char *j, size_t jl, bool next)
{
	buf_reset(key);
	buf_putc(key, 'm');
	buf_append(key, j, jl);
	buf_putc(key, next ? US + 1 : US);
}

/*
 * Deletes minute buckets older than the window: up to REPORT_PRUNE_PER_FLUSH
 * keys and PRUNE_SEEKS_PER_FLUSH journeys per call; an unfinished pass goes on
 * at the next flush from r->prune_from.
 */
static void prune(struct report *r, struct store_batch *b, int64_t minute)
{
	int64_t cutoff = minute - REPORT_MINUTES_KEPT + 1; /* keep >= cutoff */
	struct store_iter *it;
	struct buf keys, seek;
	unsigned n = 0, seeks = 0;
	bool done = true;

	if (r->pruned_below >= cutoff)
		return;
	buf_init(&keys, 0);
	buf_init(&seek, 0);
	it = store_iter_new(r->s, b, STORE_CF_COUNTERS);
	if (r->prune_from.len)
		store_iter_seek(it, r->prune_from.data, r->prune_from.len);
	else
		store_iter_seek(it, "m", 1);
	while (store_iter_valid(it)) {
		size_t kl, jl;
		const char *k = store_iter_key(it, &kl);
		int64_t m;
		uint32_t l32 = (uint32_t)kl;

		if (k[0] != 'm')
			break;
		if (!minute_key(k, kl, &jl, &m)) {
			store_iter_next(it);
			continue;
		}
		if (m < cutoff) {
			if (n == REPORT_PRUNE_PER_FLUSH) {
				done = false;
				buf_reset(&r->prune_from);
				buf_append(&r->prune_from, k, kl);
				break;
			}
			buf_append(&keys, &l32, 4);
			buf_append(&keys, k, kl);
			n++;
			store_iter_next(it);
			continue;
		}
		/* This journey's remaining buckets are recent: on to the next one. */
		journey_minutes_key(&seek, k + 1, jl, true);
		if (++seeks > PRUNE_SEEKS_PER_FLUSH) {
			done = false;
			buf_reset(&r->prune_from);
			buf_append(&r->prune_from, seek.data, seek.len);
			break;
		}
		store_iter_seek(it, seek.data, seek.len);
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;

		memcpy(&kl, keys.data + off, 4);
		store_batch_delete(b, STORE_CF_COUNTERS, keys.data + off + 4, kl);
		off += 4 + kl;
	}
	buf_fini(&keys);
	buf_fini(&seek);
	if (done) {
		r->pruned_below = cutoff;
		buf_reset(&r->prune_from);
	}
}

/* Adds a's pending deltas to vals. */
static void add_pending(const struct acc *a, int64_t *vals)
{
	for (int w = 0; w < NZ_WORDS; w++)
		for (uint64_t bits = a->nz[w]; bits; bits &= bits - 1) {
			int idx = w * 64 + __builtin_ctzll(bits);

			vals[idx] += a->v[idx];
		}
}

void report_flush(struct report *r, struct store_batch *b, int64_t now_ms)
{
	int64_t minute = now_ms / MINUTE_MS;
	unsigned char mb[8];

	store_put_u64(mb, (uint64_t)minute);
	for (struct acc *a = r->dirty; a; a = a->next_dirty) {
		size_t jl = strcspn(a->dims, "\x1f"); /* the journey */
		struct buf *k = &r->key;

		if (a->minute != minute) {
			a->minute = minute;
			a->mknown = false;
		}
		buf_reset(k);
		buf_putc(k, 't');
		buf_puts(k, a->dims);
		if (!a->tknown) {
			load_value(b, k, a->total, &a->tother);
			a->tknown = true;
		}
		add_pending(a, a->total);
		store_value(b, k, a->total, &a->tother, &r->val);
		buf_reset(k);
		buf_putc(k, 'm');
		buf_append(k, a->dims, jl);
		buf_putc(k, US);
		buf_append(k, mb, 8);
		buf_puts(k, a->dims + jl + 1);
		if (!a->mknown) {
			load_value(b, k, a->mval, &a->mother);
			a->mknown = true;
		}
		add_pending(a, a->mval);
		store_value(b, k, a->mval, &a->mother, &r->val);
		for (int w = 0; w < NZ_WORDS; w++)
			for (uint64_t bits = a->nz[w]; bits; bits &= bits - 1)
				a->v[w * 64 + __builtin_ctzll(bits)] = 0;
		memset(a->nz, 0, sizeof(a->nz));
		a->dirty = false;
	}
	r->dirty = NULL;
	prune(r, b, minute);
	if (r->accs.len > ACC_TABLE_MAX)
		accs_clear(r);
}

void report_discard(struct report *r)
{
	/* The cached stored values may include a flush that never committed, and
	 * the prune deletes may not have happened: forget both. Rare (a failed
	 * commit stops the engine), so simply start over. */
	accs_clear(r);
	r->pruned_below = 0;
	buf_reset(&r->prune_from);
}

/* ------------------------------------------------------------------ reads */

/* One stored value with its parsed dims (strings point into `key`). */
struct row {
	char *key; /* owned copy of the dims part, NUL-separated */
	size_t keylen;
	const char *journey, *step, *template_id, *channel, *arm;
	unsigned version;
	int idx;
	int64_t minute; /* minute keys */
	int64_t value;
};

struct rows {
	struct row *v;
	size_t n, alloc;
};

static void rows_fini(struct rows *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		free(rs->v[i].key);
	free(rs->v);
}

/* Parses encoded dims (len bytes) into row (row->key owned); false when
 * malformed. */
static bool parse_dims(const char *p, size_t len, struct row *row)
{
	const char *f[6];
	size_t fl[6];
	unsigned nf = 0;
	const char *start = p;

	for (size_t i = 0; i <= len; i++)
		if (i == len || p[i] == US) {
			if (nf == 6)
				return false;
			f[nf] = start;
			fl[nf] = (size_t)(p + i - start);
			nf++;
			start = p + i + 1;
		}
	if (nf != 6)
		return false;
	row->key = xmalloc(len + 1);
	row->keylen = len;
	memcpy(row->key, p, len);
	row->key[len] = '\0';
	for (unsigned i = 0; i < 6; i++)
		row->key[f[i] - p + fl[i]] = '\0';
	row->journey = row->key + (f[0] - p);
	row->version = (unsigned)strtoul(row->key + (f[1] - p), NULL, 10);
	row->step = row->key + (f[2] - p);
	row->template_id = row->key + (f[3] - p);
	row->channel = row->key + (f[4] - p);
	row->arm = row->key + (f[5] - p);
	return true;
}

/* A copy of row with its own key. */
static struct row row_copy(const struct row *row)
{
	struct row c = *row;

	c.key = xmalloc(row->keylen + 1);
	memcpy(c.key, row->key, row->keylen + 1);
	c.journey = c.key + (row->journey - row->key);
	c.step = c.key + (row->step - row->key);
	c.template_id = c.key + (row->template_id - row->key);
	c.channel = c.key + (row->channel - row->key);
	c.arm = c.key + (row->arm - row->key);
	return c;
}

/* What a read selects. NULL / 0 = any. */
struct filter {
	const char *journey;
	unsigned version;
	const char *step;
	const char *template_id;
};

static bool row_matches(const struct row *row, const struct filter *f)
{
	return (!f->journey || strcmp(row->journey, f->journey) == 0) &&
	       (!f->version || row->version == f->version) &&
	       (!f->step || strcmp(row->step, f->step) == 0) &&
	       (!f->template_id || strcmp(row->template_id, f->template_id) == 0);
}

static void rows_push(struct rows *rs, const struct row *row)
{
	if (rs->n == rs->alloc) {
		rs->alloc = rs->alloc ? 2 * rs->alloc : 64;
		rs->v = xrealloc(rs->v, rs->alloc * sizeof(*rs->v));
	}
	rs->v[rs->n++] = *row;
}

struct push_ctx {
	struct rows *rs;
	const struct row *dims;
};

static void push_one(void *ud, int idx, const char *name, size_t nl, int64_t val)
{
	struct push_ctx *c = ud;
	struct row row;

	if (idx < 0)
		return;
	row = row_copy(c->dims);
	row.idx = idx;
	row.value = val;
	rows_push(c->rs, &row);
}

/* Adds one row per metric of the packed value v when the dims match f. */
static void push_packed(struct rows *rs, const struct filter *f, struct row *dims,
			const char *v, size_t vl)
{
	struct push_ctx c = {rs, dims};

	if (row_matches(dims, f))
		unpack(v, vl, push_one, &c);
	free(dims->key);
}

/* Loads the all-time totals matching f. */
static void load_totals(struct store *s, const struct filter *f, struct rows *rs)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_COUNTERS);
	struct buf prefix;

	buf_init(&prefix, 0);
	buf_putc(&prefix, 't');
	if (f->journey) {
		put_dim(&prefix, f->journey);
		buf_putc(&prefix, US);
	}
	for (store_iter_seek(it, prefix.data, prefix.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct row row = {0};

		if (kl < prefix.len || memcmp(k, prefix.data, prefix.len) != 0)
			break;
		if (parse_dims(k + 1, kl - 1, &row))
			push_packed(rs, f, &row, v, vl);
	}
	store_iter_free(it);
	buf_fini(&prefix);
}

/* Loads the minute buckets in [from_min, to_min) matching f: one journey's
 * keys, or every journey's (seeking over the minutes outside the range). */
static void load_minutes(struct store *s, const struct filter *f, int64_t from_min,
			 int64_t to_min, struct rows *rs)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_COUNTERS);
	struct buf seek, tmp;
	unsigned char mb[8];

	if (from_min < 0)
		from_min = 0;
	store_put_u64(mb, (uint64_t)from_min);
	buf_init(&seek, 0);
	buf_init(&tmp, 0);
	if (f->journey) {
		buf_putc(&seek, 'm');
		put_dim(&seek, f->journey);
		buf_putc(&seek, US);
		buf_append(&seek, mb, 8);
	} else {
		buf_putc(&seek, 'm');
	}
	store_iter_seek(it, seek.data, seek.len);
	while (store_iter_valid(it)) {
		size_t kl, vl, jl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct row row = {0};
		int64_t m;

		if (k[0] != 'm' || !minute_key(k, kl, &jl, &m))
			break;
		if (f->journey &&
		    (jl != strlen(f->journey) || memcmp(k + 1, f->journey, jl) != 0))
			break;
		if (m < from_min) { /* another journey's early minutes */
			journey_minutes_key(&seek, k + 1, jl, false);
			buf_append(&seek, mb, 8);
			store_iter_seek(it, seek.data, seek.len);
			continue;
		}
		if (m >= to_min) {
			if (f->journey)
				break;
			journey_minutes_key(&seek, k + 1, jl, true);
			store_iter_seek(it, seek.data, seek.len);
			continue;
		}
		buf_reset(&tmp);
		buf_append(&tmp, k + 1, jl + 1);
		buf_append(&tmp, k + 1 + jl + 1 + 8, kl - (jl + 2 + 8));
		row.minute = m;
		if (parse_dims(tmp.data, tmp.len, &row))
			push_packed(rs, f, &row, v, vl);
		store_iter_next(it);
	}
	store_iter_free(it);
	buf_fini(&seek);
	buf_fini(&tmp);
}

/* Sums of every metric over some rows. */
struct agg {
	int64_t v[NM];
	bool any;
};

/*
 * Adds a row. `journey_scope`: the row counts toward a whole journey (or more),
 * where "entered" means entries into the journey (step "") and arrivals at a
 * step do not add to it.
 */
static void agg_add(struct agg *a, const struct row *row, bool journey_scope)
{
	if (journey_scope && row->idx == REPORT_ENTERED && row->step[0])
		return;
	a->v[row->idx] += row->value;
	a->any = true;
}

static struct json_object *ratio(int64_t num, int64_t den)
{
	return den > 0 ? json_object_new_double((double)num / (double)den) : NULL;
}

static struct json_object *value_json(int idx, int64_t v)
{
	if (idx == REPORT_CONVERSION_VALUE)
		return json_object_new_double((double)v / VALUE_SCALE);
	return json_object_new_int64(v);
}

static void add_exited(struct json_object *o, const struct agg *a)
{
	struct json_object *ex = json_object_new_object();

	for (int c = REPORT_EXITED_COMPLETED; c <= REPORT_EXITED_MERGED; c++)
		json_object_object_add(ex, exit_reasons[c - REPORT_EXITED_COMPLETED],
				       json_object_new_int64(a->v[c]));
	json_object_object_add(o, "exited", ex);
}

/* The funnel fields of an aggregate. */
static void add_funnel(struct json_object *o, const struct agg *a, bool journey_scope)
{
	json_object_object_add(o, "entered", json_object_new_int64(a->v[REPORT_ENTERED]));
	json_object_object_add(o, journey_scope ? "in_progress" : "in_step",
			       json_object_new_int64(a->v[REPORT_IN_STEP]));
	json_object_object_add(
		o, "completed",
		json_object_new_int64(journey_scope ? a->v[REPORT_EXITED_COMPLETED]
						    : a->v[REPORT_COMPLETED]));
	add_exited(o, a);
	json_object_object_add(o, "errors", json_object_new_int64(a->v[REPORT_ERRORS]));
}

static void add_conversions(struct json_object *o, const struct agg *a, bool with_rate)
{
	json_object_object_add(o, "conversions",
			       json_object_new_int64(a->v[REPORT_CONVERSIONS]));
	json_object_object_add(
		o, "conversion_value",
		value_json(REPORT_CONVERSION_VALUE, a->v[REPORT_CONVERSION_VALUE]));
	if (with_rate)
		json_object_object_add(
			o, "conversion_rate",
			ratio(a->v[REPORT_CONVERSIONS], a->v[REPORT_ENTERED]));
}

/* The message counters and the derived rates of an aggregate. */
static void add_messages(struct json_object *o, const struct agg *a)
{
	struct json_object *ex = json_object_new_object();
	int64_t total_ex = 0;

	for (unsigned i = 0; i < N_MESSAGE_COUNTERS; i++) {
		enum report_counter c = message_counters[i];

		json_object_object_add(o, counter_names[c],
				       json_object_new_int64(a->v[c]));
		if (c == REPORT_TARGETED) {
			for (int e = REPORT_EXCLUDED_SUPPRESSED;
			     e <= REPORT_EXCLUDED_RENDER_ERROR; e++) {
				json_object_object_add(
					ex,
					exclusion_reasons[e - REPORT_EXCLUDED_SUPPRESSED],
					json_object_new_int64(a->v[e]));
				total_ex += a->v[e];
			}
			json_object_object_add(o, "excluded_total",
					       json_object_new_int64(total_ex));
			json_object_object_add(o, "excluded", ex);
		}
	}
	json_object_object_add(o, "delivery_rate",
			       ratio(a->v[REPORT_DELIVERED], a->v[REPORT_SENT]));
	json_object_object_add(o, "open_rate",
			       ratio(a->v[REPORT_OPENED_UNIQUE], a->v[REPORT_DELIVERED]));
	json_object_object_add(
		o, "click_rate",
		ratio(a->v[REPORT_CLICKED_UNIQUE], a->v[REPORT_DELIVERED]));
	json_object_object_add(
		o, "click_to_open_rate",
		ratio(a->v[REPORT_CLICKED_UNIQUE], a->v[REPORT_OPENED_UNIQUE]));
}

static bool has_messages(const struct agg *a)
{
	for (unsigned i = 0; i < N_MESSAGE_COUNTERS; i++)
		if (a->v[message_counters[i]])
			return true;
	for (int e = REPORT_EXCLUDED_SUPPRESSED; e <= REPORT_EXCLUDED_RENDER_ERROR; e++)
		if (a->v[e])
			return true;
	return false;
}

/* Upper bound of the bucket holding quantile q, or NULL (no data or +Inf). */
static struct json_object *quantile(const struct agg *a, int l, double q)
{
	int64_t count = 0, cum = 0;

	for (unsigned i = 0; i < NB; i++)
		count += a->v[lat_cell(l, i)];
	if (count == 0)
		return NULL;
	for (unsigned i = 0; i < NB; i++) {
		cum += a->v[lat_cell(l, i)];
		if ((double)cum >= q * (double)count)
			return i < REPORT_LAT_NBOUNDS
				       ? json_object_new_double(report_latency_bounds[i])
				       : NULL;
	}
	return NULL;
}

static struct json_object *latency_json(const struct agg *a)
{
	struct json_object *o = json_object_new_object();

	for (int l = 0; l < REPORT_LAT__COUNT; l++) {
		struct json_object *h = json_object_new_object(),
				   *bs = json_object_new_array();
		int64_t cum = 0;

		for (unsigned i = 0; i < NB; i++) {
			struct json_object *b = json_object_new_object();

			cum += a->v[lat_cell(l, i)];
			json_object_object_add(
				b, "le",
				i < REPORT_LAT_NBOUNDS
					? json_object_new_double(report_latency_bounds[i])
					: json_object_new_string("+Inf"));
			json_object_object_add(b, "count", json_object_new_int64(cum));
			json_object_array_add(bs, b);
		}
		json_object_object_add(h, "count", json_object_new_int64(cum));
		json_object_object_add(
			h, "sum_seconds",
			json_object_new_double((double)a->v[lat_cell(l, NB)] /
					       VALUE_SCALE));
		json_object_object_add(h, "p50", quantile(a, l, 0.5));
		json_object_object_add(h, "p90", quantile(a, l, 0.9));
		json_object_object_add(h, "p99", quantile(a, l, 0.99));
		json_object_object_add(h, "buckets", bs);
		json_object_object_add(o, latency_names[l], h);
	}
	return o;
}

/* A list of distinct strings in first-seen order, with an aggregate each. */
struct group {
	char *name;	/* owned */
	char *extra[3]; /* owned sub-keys (template, channel, ...) or NULL */
	char *label;	/* owned; not part of the key (an arm's split step) */
	struct agg a;
};

struct groups {
	struct group *v;
	size_t n, alloc;
};

static struct group *group_get(struct groups *g, const char *name, const char *x0,
			       const char *x1, const char *x2)
{
	const char *xs[3] = {x0, x1, x2};

	for (size_t i = 0; i < g->n; i++) {
		bool same = strcmp(g->v[i].name, name) == 0;

		for (int j = 0; j < 3 && same; j++)
			same = (!xs[j] && !g->v[i].extra[j]) ||
			       (xs[j] && g->v[i].extra[j] &&
				strcmp(xs[j], g->v[i].extra[j]) == 0);
		if (same)
			return &g->v[i];
	}
	if (g->n == g->alloc) {
		g->alloc = g->alloc ? 2 * g->alloc : 16;
		g->v = xrealloc(g->v, g->alloc * sizeof(*g->v));
	}
	struct group *n = &g->v[g->n++];

	memset(n, 0, sizeof(*n));
	n->name = xstrdup(name);
	for (int j = 0; j < 3; j++)
		n->extra[j] = xs[j] ? xstrdup(xs[j]) : NULL;
	return n;
}

static void groups_fini(struct groups *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->v[i].name);
		free(g->v[i].label);
		for (int j = 0; j < 3; j++)
			free(g->v[i].extra[j]);
	}
	free(g->v);
}

static int cmp_group_name(const void *x, const void *y)
{
	const struct group *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	for (int j = 0; j < 3 && c == 0; j++)
		c = strcmp(a->extra[j] ? a->extra[j] : "",
			   b->extra[j] ? b->extra[j] : "");
	return c;
}

/* Sorts groups by name (then sub-keys); v may be NULL when n is 0. */
static void sort_groups(struct group *v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_group_name);
}

/* The step ids of the journey's definition (version, or the latest), in document
 * order; NULL when unknown. Caller puts. */
static struct json_object *definition_steps(struct store *s, const char *journey,
					    unsigned version)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_JOURNEYS);
	struct buf prefix;
	struct json_object *doc = NULL, *steps = NULL, *ids = NULL;
	char *best = NULL;
	size_t best_len = 0;

	buf_init(&prefix, 0);
	buf_printf(&prefix, "v/%s/", journey);
	for (store_iter_seek(it, prefix.data, prefix.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		if (kl != prefix.len + 4 || memcmp(k, prefix.data, prefix.len) != 0)
			break;
		const unsigned char *vb = (const unsigned char *)k + prefix.len;
		unsigned ver = (unsigned)vb[0] << 24 | (unsigned)vb[1] << 16 |
			       (unsigned)vb[2] << 8 | vb[3];

		if (version && ver != version)
			continue;
		free(best);
		best = xmalloc(vl + 1);
		memcpy(best, v, vl);
		best[vl] = '\0';
		best_len = vl;
	}
	store_iter_free(it);
	buf_fini(&prefix);
	if (best) {
		struct json_tokener *tok = json_tokener_new_ex(64);

		doc = json_tokener_parse_ex(tok, best, (int)best_len);
		json_tokener_free(tok);
		free(best);
	}
	if (doc && json_object_object_get_ex(doc, "steps", &steps) &&
	    json_object_is_type(steps, json_type_object)) {
		ids = json_object_new_array();
		json_object_object_foreach(steps, k, v)
		{
			(void)v;
			json_object_array_add(ids, json_object_new_string(k));
		}
	}
	json_object_put(doc);
	return ids;
}

/* Orders step groups: definition order first, then the rest by name. */
static void order_steps(struct groups *steps, struct json_object *ids)
{
	size_t placed = 0;

	if (ids) {
		for (size_t i = 0; i < json_object_array_length(ids); i++) {
			const char *id =
				json_object_get_string(json_object_array_get_idx(ids, i));

			for (size_t j = placed; j < steps->n; j++)
				if (strcmp(steps->v[j].name, id) == 0) {
					struct group t = steps->v[placed];

					steps->v[placed] = steps->v[j];
					steps->v[j] = t;
					placed++;
					break;
				}
		}
	}
	if (steps->n > placed)
		sort_groups(steps->v + placed, steps->n - placed);
}

/* ------------------------------------------------------------ CSV helpers */

static void csv_field(struct buf *out, const char *s)
{
	bool quote = strpbrk(s, ",\"\r\n") != NULL;

	if (!quote) {
		buf_puts(out, s);
		return;
	}
	buf_putc(out, '"');
	for (const char *p = s; *p; p++) {
		if (*p == '"')
			buf_putc(out, '"');
		buf_putc(out, *p);
	}
	buf_putc(out, '"');
}

static void csv_value(struct buf *out, int idx, int64_t v)
{
	if (idx == REPORT_CONVERSION_VALUE) {
		char tmp[64];
		size_t n;

		snprintf(tmp, sizeof(tmp), "%.6f", (double)v / VALUE_SCALE);
		n = strlen(tmp);
		while (n > 0 && tmp[n - 1] == '0')
			tmp[--n] = '\0';
		if (n > 0 && tmp[n - 1] == '.')
			tmp[--n] = '\0';
		buf_puts(out, tmp);
	} else {
		buf_printf(out, "%lld", (long long)v);
	}
}

#define CSV_HEADER "journey,version,step,template,channel,arm,counter,value\r\n"

static void csv_rows(struct buf *out, const struct rows *rs)
{
	buf_puts(out, CSV_HEADER);
	for (size_t i = 0; i < rs->n; i++) {
		const struct row *row = &rs->v[i];

		csv_field(out, row->journey);
		buf_printf(out, ",%u,", row->version);
		csv_field(out, row->step);
		buf_putc(out, ',');
		csv_field(out, row->template_id);
		buf_putc(out, ',');
		csv_field(out, row->channel);
		buf_putc(out, ',');
		csv_field(out, row->arm);
		buf_printf(out, ",%s,", metric_name(row->idx));
		csv_value(out, row->idx, row->value);
		buf_puts(out, "\r\n");
	}
}

/* ----------------------------------------------------------------- series */

static int64_t bucket_ms(const char *bucket)
{
	if (strcmp(bucket, "minute") == 0)
		return MINUTE_MS;
	if (strcmp(bucket, "hour") == 0)
		return 3600000;
	if (strcmp(bucket, "day") == 0)
		return 86400000;
	return 0;
}

static bool wants_series(const struct report_query *q)
{
	return q->bucket || q->from_ms || q->to_ms;
}

/* Validates the query's series options. */
static enum nerr check_query(const struct report_query *q, struct nerr_msg *msg)
{
	if (q->bucket && !bucket_ms(q->bucket))
		return nerr_set(msg, NERR_INVAL, "bucket",
				"bucket must be minute, hour or day");
	if (q->from_ms < 0 || q->to_ms < 0)
		return nerr_set(msg, NERR_INVAL, q->from_ms < 0 ? "from" : "to",
				"a time must not be before 1970");
	if (q->from_ms && q->to_ms && q->from_ms >= q->to_ms)
		return nerr_set(msg, NERR_INVAL, "from", "from must be before to");
	return NERR_OK;
}

/*
 * Builds the series of f from the minute buckets (journey_scope as in agg_add)
 * and appends it as JSON to o, or as CSV (bucket_start,counter,value) to csv.
 */
static void series(struct store *s, const struct filter *f, const struct report_query *q,
		   bool journey_scope, struct json_object *o, struct buf *csv)
{
	int64_t now = q->now_ms ? q->now_ms : clock_wall_ms();
	int64_t to = q->to_ms ? q->to_ms : now + 1;
	int64_t from =
		q->from_ms ? q->from_ms : now - (int64_t)REPORT_MINUTES_KEPT * MINUTE_MS;
	const char *bucket = q->bucket ? q->bucket : "minute";
	int64_t width = bucket_ms(bucket);
	struct rows rs = {0};
	struct groups pts = {0};
	struct agg sums = {0};
	char ts[40];

	load_minutes(s, f, from / MINUTE_MS, (to + MINUTE_MS - 1) / MINUTE_MS, &rs);
	for (size_t i = 0; i < rs.n; i++) {
		int64_t start = rs.v[i].minute * MINUTE_MS / width * width;
		char name[24];

		if (rs.v[i].idx >= REPORT_C__COUNT)
			continue; /* latency: totals only */
		snprintf(name, sizeof(name), "%020lld", (long long)start);
		agg_add(&group_get(&pts, name, NULL, NULL, NULL)->a, &rs.v[i],
			journey_scope);
		agg_add(&sums, &rs.v[i], journey_scope);
	}
	sort_groups(pts.v, pts.n);
	if (csv)
		buf_puts(csv, "bucket_start,counter,value\r\n");
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < pts.n; i++) {
		int64_t start = strtoll(pts.v[i].name, NULL, 10);
		struct json_object *p = json_object_new_object(),
				   *c = json_object_new_object();

		clock_format_rfc3339(start, ts);
		for (int k = 0; k < REPORT_C__COUNT; k++) {
			if (!pts.v[i].a.v[k])
				continue;
			json_object_object_add(c, counter_names[k],
					       value_json(k, pts.v[i].a.v[k]));
			if (csv) {
				buf_printf(csv, "%s,%s,", ts, counter_names[k]);
				csv_value(csv, k, pts.v[i].a.v[k]);
				buf_puts(csv, "\r\n");
			}
		}
		json_object_object_add(p, "start", json_object_new_string(ts));
		json_object_object_add(p, "start_ms", json_object_new_int64(start));
		json_object_object_add(p, "counters", c);
		json_object_array_add(arr, p);
	}
	if (o) {
		struct json_object *sr = json_object_new_object(),
				   *sc = json_object_new_object();

		json_object_object_add(sr, "bucket", json_object_new_string(bucket));
		clock_format_rfc3339(from, ts);
		json_object_object_add(sr, "from", json_object_new_string(ts));
		clock_format_rfc3339(to, ts);
		json_object_object_add(sr, "to", json_object_new_string(ts));
		for (int k = 0; k < REPORT_C__COUNT; k++)
			if (sums.v[k])
				json_object_object_add(sc, counter_names[k],
						       value_json(k, sums.v[k]));
		json_object_object_add(sr, "sums", sc);
		json_object_object_add(sr, "points", arr);
		json_object_object_add(o, "series", sr);
	} else {
		json_object_put(arr);
	}
	groups_fini(&pts);
	rows_fini(&rs);
}

static void put_json(struct buf *out, struct json_object *o)
{
	size_t len;
	const char *t = json_object_to_json_string_length(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	buf_append(out, t, len);
}

/* -------------------------------------------------------------- journeys */

/* The message groups (step, template, channel) of rows, as a JSON array. */
static struct json_object *messages_json(const struct rows *rs, bool with_journey)
{
	struct groups g = {0};
	struct json_object *arr = json_object_new_array();

	for (size_t i = 0; i < rs->n; i++) {
		const struct row *row = &rs->v[i];

		if (!row->template_id[0] && !row->channel[0])
			continue;
		agg_add(&group_get(&g, with_journey ? row->journey : "", row->step,
				   row->template_id, row->channel)
				 ->a,
			row, false);
	}
	sort_groups(g.v, g.n);
	for (size_t i = 0; i < g.n; i++) {
		struct json_object *m = json_object_new_object();

		if (with_journey)
			json_object_object_add(m, "journey",
					       json_object_new_string(g.v[i].name));
		json_object_object_add(m, "step",
				       json_object_new_string(g.v[i].extra[0]));
		json_object_object_add(m, "template",
				       json_object_new_string(g.v[i].extra[1]));
		json_object_object_add(m, "channel",
				       json_object_new_string(g.v[i].extra[2]));
		add_messages(m, &g.v[i].a);
		add_conversions(m, &g.v[i].a, false);
		json_object_array_add(arr, m);
	}
	groups_fini(&g);
	return arr;
}

/* Split arms: entries at the split step (entered with an arm) and conversions
 * attributed to the arm. */
static struct json_object *arms_json(const struct rows *rs)
{
	struct groups g = {0};
	struct json_object *arr = json_object_new_array();

	for (size_t i = 0; i < rs->n; i++) {
		const struct row *row = &rs->v[i];
		struct group *gr;

		if (!row->arm[0])
			continue;
		gr = group_get(&g, row->arm, NULL, NULL, NULL);
		if (row->idx == REPORT_ENTERED && row->step[0] && !gr->label)
			gr->label = xstrdup(row->step);
		agg_add(&gr->a, row, false);
	}
	sort_groups(g.v, g.n);
	for (size_t i = 0; i < g.n; i++) {
		struct json_object *m = json_object_new_object();

		json_object_object_add(m, "arm", json_object_new_string(g.v[i].name));
		json_object_object_add(m, "step",
				       g.v[i].label ? json_object_new_string(g.v[i].label)
						    : NULL);
		json_object_object_add(m, "entered",
				       json_object_new_int64(g.v[i].a.v[REPORT_ENTERED]));
		add_conversions(m, &g.v[i].a, true);
		json_object_array_add(arr, m);
	}
	groups_fini(&g);
	return arr;
}

static struct json_object *versions_json(const struct rows *rs)
{
	struct json_object *arr = json_object_new_array();
	unsigned seen[64], n = 0;

	for (size_t i = 0; i < rs->n; i++) {
		bool dup = false;

		for (unsigned j = 0; j < n && !dup; j++)
			dup = seen[j] == rs->v[i].version;
		if (!dup && n < 64)
			seen[n++] = rs->v[i].version;
	}
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			if (seen[j] < seen[i]) {
				unsigned t = seen[i];

				seen[i] = seen[j];
				seen[j] = t;
			}
	for (unsigned i = 0; i < n; i++)
		json_object_array_add(arr, json_object_new_int64(seen[i]));
	return arr;
}

enum nerr report_journey(struct store *s, const char *journey,
			 const struct report_query *q, struct buf *out,
			 struct nerr_msg *msg)
{
	struct filter f = {.journey = journey, .version = q->version};
	struct rows rs = {0};
	struct agg total = {0};
	struct groups steps = {0};
	struct json_object *o = NULL, *arr, *ids;
	enum nerr rc;

	rc = check_query(q, msg);
	if (rc)
		return rc;
	load_totals(s, &f, &rs);
	if (rs.n == 0) {
		rc = nerr_set(msg, NERR_NOTFOUND, "journey",
			      "nothing was counted for journey '%s'%s", journey,
			      q->version ? " at that version" : "");
		goto out;
	}
	if (q->csv) {
		if (wants_series(q))
			series(s, &f, q, true, NULL, out);
		else
			csv_rows(out, &rs);
		goto out;
	}
	for (size_t i = 0; i < rs.n; i++) {
		agg_add(&total, &rs.v[i], true);
		if (rs.v[i].step[0])
			agg_add(&group_get(&steps, rs.v[i].step, NULL, NULL, NULL)->a,
				&rs.v[i], false);
	}
	ids = definition_steps(s, journey, q->version);
	order_steps(&steps, ids);
	json_object_put(ids);

	o = json_object_new_object();
	json_object_object_add(o, "journey", json_object_new_string(journey));
	json_object_object_add(o, "version", json_object_new_int64(q->version));
	json_object_object_add(o, "versions", versions_json(&rs));
	struct json_object *t = json_object_new_object();
	add_funnel(t, &total, true);
	add_conversions(t, &total, true);
	add_messages(t, &total);
	json_object_object_add(o, "totals", t);
	arr = json_object_new_array();
	for (size_t i = 0; i < steps.n; i++) {
		struct json_object *st = json_object_new_object();

		json_object_object_add(st, "step",
				       json_object_new_string(steps.v[i].name));
		add_funnel(st, &steps.v[i].a, false);
		add_conversions(st, &steps.v[i].a, false);
		json_object_object_add(
			st, "message",
			json_object_new_boolean(has_messages(&steps.v[i].a)));
		json_object_array_add(arr, st);
	}
	json_object_object_add(o, "steps", arr);
	json_object_object_add(o, "messages", messages_json(&rs, false));
	json_object_object_add(o, "arms", arms_json(&rs));
	json_object_object_add(o, "latency", latency_json(&total));
	if (wants_series(q))
		series(s, &f, q, true, o, NULL);
	put_json(out, o);
out:
	json_object_put(o);
	groups_fini(&steps);
	rows_fini(&rs);
	return rc;
}

enum nerr report_step(struct store *s, const char *journey, const char *step,
		      const struct report_query *q, struct buf *out, struct nerr_msg *msg)
{
	struct filter f = {.journey = journey, .version = q->version, .step = step};
	struct rows rs = {0};
	struct agg a = {0};
	struct json_object *o = NULL;
	enum nerr rc;

	rc = check_query(q, msg);
	if (rc)
		return rc;
	load_totals(s, &f, &rs);
	if (rs.n == 0) {
		rc = nerr_set(msg, NERR_NOTFOUND, "step",
			      "nothing was counted for step '%s' of journey '%s'", step,
			      journey);
		goto out;
	}
	if (q->csv) {
		if (wants_series(q))
			series(s, &f, q, false, NULL, out);
		else
			csv_rows(out, &rs);
		goto out;
	}
	for (size_t i = 0; i < rs.n; i++)
		agg_add(&a, &rs.v[i], false);
	o = json_object_new_object();
	json_object_object_add(o, "journey", json_object_new_string(journey));
	json_object_object_add(o, "step", json_object_new_string(step));
	json_object_object_add(o, "version", json_object_new_int64(q->version));
	json_object_object_add(o, "versions", versions_json(&rs));
	add_funnel(o, &a, false);
	add_conversions(o, &a, false);
	json_object_object_add(o, "messages", messages_json(&rs, false));
	json_object_object_add(o, "arms", arms_json(&rs));
	json_object_object_add(o, "latency", latency_json(&a));
	if (wants_series(q))
		series(s, &f, q, false, o, NULL);
	put_json(out, o);
out:
	json_object_put(o);
	rows_fini(&rs);
	return rc;
}

enum nerr report_template(struct store *s, const char *template_id,
			  const struct report_query *q, struct buf *out,
			  struct nerr_msg *msg)
{
	struct filter f = {.version = q->version, .template_id = template_id};
	struct rows rs = {0};
	struct agg a = {0};
	struct json_object *o = NULL;
	enum nerr rc;

	rc = check_query(q, msg);
	if (rc)
		return rc;
	load_totals(s, &f, &rs);
	if (rs.n == 0) {
		rc = nerr_set(msg, NERR_NOTFOUND, "template",
			      "nothing was counted for template '%s'", template_id);
		goto out;
	}
	if (q->csv) {
		if (wants_series(q))
			series(s, &f, q, false, NULL, out);
		else
			csv_rows(out, &rs);
		goto out;
	}
	for (size_t i = 0; i < rs.n; i++)
		agg_add(&a, &rs.v[i], false);
	o = json_object_new_object();
	json_object_object_add(o, "template", json_object_new_string(template_id));
	struct json_object *t = json_object_new_object();
	add_messages(t, &a);
	add_conversions(t, &a, false);
	json_object_object_add(o, "totals", t);
	json_object_object_add(o, "messages", messages_json(&rs, true));
	json_object_object_add(o, "latency", latency_json(&a));
	if (wants_series(q))
		series(s, &f, q, false, o, NULL);
	put_json(out, o);
out:
	json_object_put(o);
	rows_fini(&rs);
	return rc;
}

enum nerr report_overview(struct store *s, const struct report_query *q, struct buf *out,
			  struct nerr_msg *msg)
{
	struct filter f = {.version = q->version};
	struct rows rs = {0};
	struct agg total = {0};
	struct groups js = {0}, chs = {0};
	struct json_object *o, *arr;
	enum nerr rc;

	rc = check_query(q, msg);
	if (rc)
		return rc;
	load_totals(s, &f, &rs);
	if (q->csv) {
		if (wants_series(q))
			series(s, &f, q, true, NULL, out);
		else
			csv_rows(out, &rs);
		rows_fini(&rs);
		return NERR_OK;
	}
	for (size_t i = 0; i < rs.n; i++) {
		agg_add(&total, &rs.v[i], true);
		agg_add(&group_get(&js, rs.v[i].journey, NULL, NULL, NULL)->a, &rs.v[i],
			true);
		if (rs.v[i].channel[0])
			agg_add(&group_get(&chs, rs.v[i].channel, NULL, NULL, NULL)->a,
				&rs.v[i], false);
	}
	sort_groups(js.v, js.n);
	sort_groups(chs.v, chs.n);
	o = json_object_new_object();
	struct json_object *t = json_object_new_object();
	add_funnel(t, &total, true);
	add_conversions(t, &total, true);
	add_messages(t, &total);
	json_object_object_add(o, "totals", t);
	arr = json_object_new_array();
	for (size_t i = 0; i < js.n; i++) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "journey",
				       json_object_new_string(js.v[i].name));
		add_funnel(j, &js.v[i].a, true);
		add_conversions(j, &js.v[i].a, true);
		add_messages(j, &js.v[i].a);
		json_object_array_add(arr, j);
	}
	json_object_object_add(o, "journeys", arr);
	arr = json_object_new_array();
	for (size_t i = 0; i < chs.n; i++) {
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "channel",
				       json_object_new_string(chs.v[i].name));
		add_messages(c, &chs.v[i].a);
		json_object_array_add(arr, c);
	}
	json_object_object_add(o, "channels", arr);
	json_object_object_add(o, "latency", latency_json(&total));
	if (wants_series(q))
		series(s, &f, q, true, o, NULL);
	put_json(out, o);
	json_object_put(o);
	groups_fini(&js);
	groups_fini(&chs);
	rows_fini(&rs);
	return NERR_OK;
}

/* ----------------------------------------------------------------- /metrics */

static void label_value(struct buf *out, const char *s)
{
	for (const char *p = s; *p; p++) {
		if (*p == '\\' || *p == '"')
			buf_putc(out, '\\');
		if (*p == '\n')
			buf_puts(out, "\\n");
		else
			buf_putc(out, *p);
	}
}

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample: name{journey="j"[,channel="c"][,extra]} value. */
static void sample(struct buf *out, const char *name, const struct group *g,
		   const char *extra, int idx, int64_t v)
{
	buf_printf(out, "%s{journey=\"", name);
	label_value(out, g->name);
	buf_putc(out, '"');
	if (g->extra[0]) {
		buf_puts(out, ",channel=\"");
		label_value(out, g->extra[0]);
		buf_putc(out, '"');
	}
	if (extra)
		buf_printf(out, ",%s", extra);
	buf_puts(out, "} ");
	csv_value(out, idx, v);
	buf_putc(out, '\n');
}

struct mfam {
	const char *name, *help;
	enum report_counter c;
};

void report_render_metrics(struct store *s, struct buf *out)
{
	static const struct mfam jfams[] = {
		{"nudge_report_journey_entered_total",
		 "Instances that entered the journey.", REPORT_ENTERED},
		{"nudge_report_journey_errors_total", "Steps of the journey that failed.",
		 REPORT_ERRORS},
		{"nudge_report_journey_conversions_total",
		 "Goal events reached within the goal window.", REPORT_CONVERSIONS},
		{"nudge_report_journey_conversion_value_total",
		 "Sum of the goal values of the conversions.", REPORT_CONVERSION_VALUE},
	};
	static const struct mfam mfams[] = {
		{"nudge_report_messages_targeted_total", "Message steps reached.",
		 REPORT_TARGETED},
		{"nudge_report_messages_sent_total", "Envelopes created (send decided).",
		 REPORT_SENT},
		{"nudge_report_messages_delivered_total",
		 "Envelopes the provider accepted.", REPORT_DELIVERED},
		{"nudge_report_messages_failed_total", "Envelopes that failed for good.",
		 REPORT_FAILED},
		{"nudge_report_messages_opened_total", "Opens (every open).",
		 REPORT_OPENED},
		{"nudge_report_messages_opened_unique_total",
		 "Envelopes opened at least once.", REPORT_OPENED_UNIQUE},
		{"nudge_report_messages_clicked_total", "Clicks (every click).",
		 REPORT_CLICKED},
		{"nudge_report_messages_clicked_unique_total",
		 "Envelopes clicked at least once.", REPORT_CLICKED_UNIQUE},
		{"nudge_report_messages_unsubscribed_total",
		 "Unsubscribes from messages.", REPORT_UNSUBSCRIBED},
		{"nudge_report_messages_complaints_total",
		 "Spam complaints about messages.", REPORT_COMPLAINTS},
		{"nudge_report_messages_converted_total",
		 "Conversions attributed to the message (last touch).",
		 REPORT_CONVERSIONS},
	};
	struct filter f = {0};
	struct rows rs = {0};
	struct groups js = {0}, ms = {0};
	char extra[96];

	load_totals(s, &f, &rs);
	for (size_t i = 0; i < rs.n; i++) {
		agg_add(&group_get(&js, rs.v[i].journey, NULL, NULL, NULL)->a, &rs.v[i],
			true);
		if (rs.v[i].channel[0])
			agg_add(&group_get(&ms, rs.v[i].journey, rs.v[i].channel, NULL,
					   NULL)
					 ->a,
				&rs.v[i], false);
	}
	sort_groups(js.v, js.n);
	sort_groups(ms.v, ms.n);

	for (size_t k = 0; k < sizeof(jfams) / sizeof(jfams[0]); k++) {
		family(out, jfams[k].name, "counter", jfams[k].help);
		for (size_t i = 0; i < js.n; i++)
			sample(out, jfams[k].name, &js.v[i], NULL, jfams[k].c,
			       js.v[i].a.v[jfams[k].c]);
	}
	family(out, "nudge_report_journey_in_progress", "gauge",
	       "Instances currently inside the journey.");
	for (size_t i = 0; i < js.n; i++)
		sample(out, "nudge_report_journey_in_progress", &js.v[i], NULL,
		       REPORT_IN_STEP, js.v[i].a.v[REPORT_IN_STEP]);
	family(out, "nudge_report_journey_exited_total", "counter",
	       "Instances that ended, by reason.");
	for (size_t i = 0; i < js.n; i++)
		for (int c = REPORT_EXITED_COMPLETED; c <= REPORT_EXITED_MERGED; c++) {
			snprintf(extra, sizeof(extra), "reason=\"%s\"",
				 exit_reasons[c - REPORT_EXITED_COMPLETED]);
			sample(out, "nudge_report_journey_exited_total", &js.v[i], extra,
			       c, js.v[i].a.v[c]);
		}

	for (size_t k = 0; k < sizeof(mfams) / sizeof(mfams[0]); k++) {
		family(out, mfams[k].name, "counter", mfams[k].help);
		for (size_t i = 0; i < ms.n; i++)
			sample(out, mfams[k].name, &ms.v[i], NULL, mfams[k].c,
			       ms.v[i].a.v[mfams[k].c]);
	}
	family(out, "nudge_report_messages_bounced_total", "counter",
	       "Envelopes bounced, by kind (hard, soft).");
	for (size_t i = 0; i < ms.n; i++) {
		sample(out, "nudge_report_messages_bounced_total", &ms.v[i],
		       "kind=\"hard\"", REPORT_BOUNCED_HARD,
		       ms.v[i].a.v[REPORT_BOUNCED_HARD]);
		sample(out, "nudge_report_messages_bounced_total", &ms.v[i],
		       "kind=\"soft\"", REPORT_BOUNCED_SOFT,
		       ms.v[i].a.v[REPORT_BOUNCED_SOFT]);
	}
	family(out, "nudge_report_messages_excluded_total", "counter",
	       "Messages not sent, by reason.");
	for (size_t i = 0; i < ms.n; i++)
		for (int c = REPORT_EXCLUDED_SUPPRESSED;
		     c <= REPORT_EXCLUDED_RENDER_ERROR; c++) {
			snprintf(extra, sizeof(extra), "reason=\"%s\"",
				 exclusion_reasons[c - REPORT_EXCLUDED_SUPPRESSED]);
			sample(out, "nudge_report_messages_excluded_total", &ms.v[i],
			       extra, c, ms.v[i].a.v[c]);
		}

	family(out, "nudge_report_latency_seconds", "histogram",
	       "Latency by stage (event_to_entry, event_to_decision, "
	       "decision_to_delivered).");
	for (size_t i = 0; i < js.n; i++)
		for (int l = 0; l < REPORT_LAT__COUNT; l++) {
			const struct agg *a = &js.v[i].a;
			int64_t cum = 0;

			for (unsigned b = 0; b < NB; b++) {
				cum += a->v[lat_cell(l, b)];
				if (b < REPORT_LAT_NBOUNDS)
					snprintf(extra, sizeof(extra),
						 "stage=\"%s\",le=\"%g\"",
						 latency_names[l],
						 report_latency_bounds[b]);
				else
					snprintf(extra, sizeof(extra),
						 "stage=\"%s\",le=\"+Inf\"",
						 latency_names[l]);
				sample(out, "nudge_report_latency_seconds_bucket",
				       &js.v[i], extra, 0, cum);
			}
			snprintf(extra, sizeof(extra), "stage=\"%s\"", latency_names[l]);
			buf_puts(out, "nudge_report_latency_seconds_sum{journey=\"");
			label_value(out, js.v[i].name);
			buf_printf(out, "\",%s} %.6f\n", extra,
				   (double)a->v[lat_cell(l, NB)] / VALUE_SCALE);
			sample(out, "nudge_report_latency_seconds_count", &js.v[i], extra,
			       0, cum);
		}
	groups_fini(&js);
	groups_fini(&ms);
	rows_fini(&rs);
}

/* The store /metrics reads the report series from (one per process). */
static _Atomic(struct store *) metrics_store;

static void render_cb(void *ud, struct buf *out)
{
	struct store *s = atomic_load(&metrics_store);

	(void)ud;
	if (s)
		report_render_metrics(s, out);
}

void report_register_metrics(struct store *s)
{
	atomic_store(&metrics_store, s);
	metrics_add_renderer(render_cb, NULL);
}

/* ------------------------------------------------------------------- HTTP */

enum nerr report_query_set(struct report_query *q, const char *name, const char *value,
			   struct nerr_msg *msg)
{
	char *end;

	if (strcmp(name, "version") == 0) {
		unsigned long v = strtoul(value, &end, 10);

		if (!*value || *end || !isdigit((unsigned char)*value) || v == 0 ||
		    v > 0xffffffffUL)
			return nerr_set(msg, NERR_INVAL, "version",
					"version must be a positive integer");
		q->version = (unsigned)v;
	} else if (strcmp(name, "from") == 0 || strcmp(name, "to") == 0) {
		int64_t ms;
		long long v = strtoll(value, &end, 10);

		if (*value && !*end && isdigit((unsigned char)*value))
			ms = v;
		else if (clock_parse_rfc3339(value, &ms) != 0)
			return nerr_set(
				msg, NERR_INVAL, name,
				"%s must be an RFC 3339 time or epoch milliseconds",
				name);
		if (ms <= 0)
			return nerr_set(msg, NERR_INVAL, name, "%s must be after 1970",
					name);
		if (name[0] == 'f')
			q->from_ms = ms;
		else
			q->to_ms = ms;
	} else if (strcmp(name, "bucket") == 0) {
		static const char *const buckets[] = {"minute", "hour", "day"};

		for (unsigned i = 0; i < 3; i++)
			if (strcmp(value, buckets[i]) == 0) {
				q->bucket = buckets[i];
				return NERR_OK;
			}
		return nerr_set(msg, NERR_INVAL, "bucket",
				"bucket must be minute, hour or day");
	}
	return NERR_OK;
}

static int hexval(char c)
{
	return isdigit((unsigned char)c) ? c - '0'
	       : c >= 'a' && c <= 'f'	 ? c - 'a' + 10
	       : c >= 'A' && c <= 'F'	 ? c - 'A' + 10
					 : -1;
}

/* Percent-decodes s[0..n) into out ('+' is a space); false on a bad escape or NUL. */
static bool url_decode(const char *s, size_t n, struct buf *out)
{
	buf_reset(out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return false;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return false;
			buf_putc(out, (char)(hi * 16 + lo));
			i += 2;
		} else {
			buf_putc(out, s[i] == '+' ? ' ' : s[i]);
		}
	}
	return true;
}

static int http_error(struct buf *out, int status, const char *code,
		      const struct nerr_msg *msg)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	buf_reset(out);
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "field", json_object_new_string(msg->field));
	json_object_object_add(e, "message", json_object_new_string(msg->message));
	json_object_object_add(o, "error", e);
	put_json(out, o);
	json_object_put(o);
	return status;
}

/* Splits rest into up to 4 '/'-separated segments (copied, decoded). */
static unsigned split_path(const char *rest, char seg[4][160])
{
	unsigned n = 0;
	struct buf d;

	buf_init(&d, 0);
	while (*rest && n < 5) {
		size_t len = strcspn(rest, "/");

		if (n == 4 || len == 0 || len >= 160 || !url_decode(rest, len, &d) ||
		    d.len >= 160) {
			n = 5;
			break;
		}
		memcpy(seg[n], buf_str(&d), d.len + 1);
		n++;
		rest += len;
		if (*rest == '/')
			rest++;
	}
	buf_fini(&d);
	return n;
}

int report_http(struct store *s, const char *rest, const char *query, const char *accept,
		struct buf *out, const char **content_type)
{
	struct report_query q = {.csv = accept && strstr(accept, "text/csv") != NULL};
	struct nerr_msg msg;
	char seg[4][160];
	unsigned n = split_path(rest ? rest : "", seg);
	struct buf name, value;
	enum nerr rc = NERR_OK;

	nerr_clear(&msg);
	*content_type = "application/json";
	buf_init(&name, 0);
	buf_init(&value, 0);
	for (const char *p = query ? query : ""; *p && rc == NERR_OK;) {
		size_t len = strcspn(p, "&"), eq = strcspn(p, "=");

		if (eq > len)
			eq = len;
		if (!url_decode(p, eq, &name) ||
		    !url_decode(p + eq + (eq < len), len - eq - (eq < len), &value))
			rc = nerr_set(&msg, NERR_INVAL, "query",
				      "malformed query string");
		else if (name.len)
			rc = report_query_set(&q, buf_str(&name), buf_str(&value), &msg);
		p += len;
		if (*p == '&')
			p++;
	}
	buf_fini(&name);
	buf_fini(&value);
	if (rc)
		return http_error(out, 400, "invalid", &msg);

	if (n == 1 && strcmp(seg[0], "overview") == 0)
		rc = report_overview(s, &q, out, &msg);
	else if (n == 2 && strcmp(seg[0], "journeys") == 0)
		rc = report_journey(s, seg[1], &q, out, &msg);
	else if (n == 4 && strcmp(seg[0], "journeys") == 0 &&
		 strcmp(seg[2], "steps") == 0)
		rc = report_step(s, seg[1], seg[3], &q, out, &msg);
	else if (n == 2 && strcmp(seg[0], "templates") == 0)
		rc = report_template(s, seg[1], &q, out, &msg);
	else
		rc = nerr_set(&msg, NERR_NOTFOUND, "path",
			      "no such report (journeys/ID, journeys/ID/steps/STEP, "
			      "templates/ID, overview)");
	if (rc == NERR_NOTFOUND)
		return http_error(out, 404, "not_found", &msg);
	if (rc)
		return http_error(out, 400, "invalid", &msg);
	if (q.csv)
		*content_type = "text/csv; charset=utf-8";
	return 200;
}
