/*
 * engine.c -- the engine thread (see engine.h).
 *
 * Loop: wait until the inbox's committed sequence passes the applied position;
 * read up to batch_max records in order; apply each inside one store_batch;
 * append the deletions of the consumed records and the new applied position;
 * commit with sync; publish the applied position to the loop thread.
 *
 * Dedup (DESIGN.md §5): STORE_CF_DEDUP maps messageId -> first-seen time, one
 * record per id; a read compares that time with the window, and expired
 * entries are dropped by RocksDB's compaction (store_set_dedup_window), so
 * the engine neither keeps a time index nor prunes. Because dedup state
 * commits in the same batch as the profile changes, a repeated messageId is
 * applied exactly once even across crashes (invariant 2).
 *
 * A record that cannot be applied (corrupt, or rejected by a module) is logged,
 * counted, and consumed: one poison record must never stall the inbox.
 */
#include "app/engine.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "audience/audience.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "ingest/inbox.h"
#include "ingest/segment.h"
#include "report/metrics.h"
#include "report/report.h"

static const char META_APPLIED[] = "applied_seq";
static const char META_PROFILES[] = "profiles_count";

/* An admin record's answer, waiting for the loop thread. */
struct result {
	struct result *next;
	uint64_t seq;
	int status;
	char *body;
};

struct engine {
	struct store *s;
	struct journey_rt *rt;	/* engine thread only */
	struct govern *govern;	/* engine thread only */
	struct report *report;	/* engine thread only */
	struct aud *aud;	/* engine thread only */
	struct result *results; /* guarded by mu */
	struct engine_config cfg;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t committed_seq; /* guarded by mu */
	bool stopping;		/* guarded by mu */
	bool started;
	_Atomic uint64_t applied_seq;
	_Atomic bool broken;
	bool batch_failed;	/* engine thread: a store read failed mid-batch */
	struct map dedup_batch; /* engine thread: messageIds recorded this batch */
	int64_t profiles;	/* live profiles; engine thread (stored in meta) */
	int64_t batch_profiles; /* change within the current batch */
	uv_async_t async;
	engine_applied_fn on_applied;
	void *ud;
	struct json_tokener *tok; /* engine thread: parses event records */
	const char **view_keep;	  /* members of an event the engine reads */
	char *view;		  /* engine thread: an event's view */
	size_t view_cap;
};

static struct metric m_applied = {
	.name = "nudge_engine_records_total",
	.help = "Inbox records applied by the engine, by outcome.",
	.labels = "outcome=\"applied\"",
	.type = METRIC_COUNTER};
static struct metric m_dup = {.name = "nudge_engine_records_total",
			      .help = "Inbox records applied by the engine, by outcome.",
			      .labels = "outcome=\"duplicate\"",
			      .type = METRIC_COUNTER};
static struct metric m_err = {.name = "nudge_engine_records_total",
			      .help = "Inbox records applied by the engine, by outcome.",
			      .labels = "outcome=\"error\"",
			      .type = METRIC_COUNTER};
static struct metric m_batch = {.name = "nudge_engine_batch_seconds",
				.help = "Time to apply and commit one engine batch.",
				.type = METRIC_HISTOGRAM,
				.bounds = metrics_latency_seconds_bounds};
static struct metric m_lag = {.name = "nudge_inbox_lag_records",
			      .help = "Committed inbox records not yet applied.",
			      .type = METRIC_GAUGE};
static struct metric m_profiles = {.name = "nudge_profiles_created_total",
				   .help = "Profiles created.",
				   .type = METRIC_COUNTER};
static struct metric m_merges = {.name = "nudge_profile_merges_total",
				 .help = "Profiles merged into another.",
				 .type = METRIC_COUNTER};
static struct metric m_idrej = {
	.name = "nudge_identities_rejected_total",
	.help = "Identities not attached because of the per-profile cap.",
	.type = METRIC_COUNTER};
static struct metric m_profiles_live = {
	.name = "nudge_profiles", .help = "Profiles stored now.", .type = METRIC_GAUGE};
static struct metric m_erased = {.name = "nudge_profiles_erased_total",
				 .help = "Profiles erased through the admin API.",
				 .type = METRIC_COUNTER};

uint64_t engine_stored_applied_seq(struct store *s)
{
	char *v = NULL;
	size_t len = 0;
	uint64_t seq = 0;

	if (store_get(s, STORE_CF_META, META_APPLIED, sizeof(META_APPLIED) - 1, &v,
		      &len) == NERR_OK &&
	    len == 8)
		seq = store_get_u64(v);
	free(v);
	return seq;
}

/*
 * Returns true if messageId was seen within the window; records it otherwise.
 * The entries go into the batch as blind writes (nothing reads them back
 * through it); the ids recorded in this batch are kept in e->dedup_batch
 * instead, so a repeat within one batch is still caught. Reads therefore go to
 * committed state plus that set, which is what the batch would have shown:
 * the engine makes no indexed dedup write.
 */
static bool dedup_seen(struct engine *e, struct store_batch *b, const char *mid,
		       int64_t now_ms)
{
	size_t mlen = strlen(mid);
	char *v = NULL;
	size_t vl = 0;
	bool seen = false;

	if (map_get(&e->dedup_batch, mid))
		return true; /* recorded at now_ms by this very batch */
	if (store_get(e->s, STORE_CF_DEDUP, mid, mlen, &v, &vl) == NERR_OK && vl >= 8) {
		int64_t t = (int64_t)store_get_u64(v);

		seen = now_ms - t < e->cfg.dedup_window_ms;
	}
	free(v);
	if (seen)
		return true;
	if (e->cfg.dedup_window_ms <= 0)
		return false;
	unsigned char tv[8];

	store_put_u64(tv, (uint64_t)now_ms);
	store_batch_put_blind(b, STORE_CF_DEDUP, mid, mlen, tv, 8);
	map_put(&e->dedup_batch, mid, e);
	return false;
}

/* Forgets the ids recorded by the batch just committed (or abandoned). */
static void dedup_batch_reset(struct engine *e)
{
	if (e->dedup_batch.len) {
		map_fini(&e->dedup_batch);
		map_init(&e->dedup_batch);
	}
}

/* Parses an event record (or its view) to a JSON object, or NULL. */
static struct json_object *parse_event(struct engine *e, const char *text, size_t len)
{
	struct json_object *o;

	json_tokener_reset(e->tok);
	o = json_tokener_parse_ex(e->tok, text, (int)len);
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

/*
 * Most events interest only the profile: no audience is defined and no
 * journey enters on, waits for or exits on their name. For those the engine
 * parses a view of the record with the members the profile, dedup and the
 * journeys' name check read (segment_event_view), not the properties and
 * context an SDK sends: json-c's tree of a whole event was a fifth of the
 * engine's time. The whole record is parsed, before anything is applied, when
 * a module wants it (so a record damaged outside the view's members is still
 * refused as corrupt there) or when the view cannot be cut or parsed; after
 * the profile, when a merge makes the audiences re-index the survivor.
 */
static void apply_event(struct engine *e, struct journey_batch *jb, uint64_t seq,
			const char *payload, size_t len, int64_t now_ms)
{
	struct store_batch *b = jb->b;
	struct json_object *ev = NULL, *v, *whole = NULL;
	struct profile_result res = {0};
	struct nerr_msg msg = {"", ""};
	int64_t ts_ms = now_ms;
	size_t vlen = 0;
	enum nerr rc;

	if (!aud_wants_event(e->aud, 0)) {
		if (e->view_cap < len) {
			e->view_cap = len;
			e->view = xrealloc(e->view, e->view_cap);
		}
		vlen = segment_event_view(payload, len, e->view_keep,
					  profile_context_members, e->view);
		if (vlen)
			ev = parse_event(e, e->view, vlen);
		if (ev && journey_rt_wants_event(e->rt, ev)) {
			json_object_put(ev);
			ev = NULL;
		}
	}
	if (!ev)
		ev = whole = parse_event(e, payload, len);
	if (!ev) {
		log_error("engine", "msg=\"corrupt event record\" seq=%llu",
			  (unsigned long long)seq);
		metrics_add(&m_err, 1);
		goto out;
	}
	if (json_object_object_get_ex(ev, "messageId", &v) &&
	    dedup_seen(e, b, json_object_get_string(v), now_ms)) {
		metrics_add(&m_dup, 1);
		goto out;
	}
	if (json_object_object_get_ex(ev, "timestamp", &v))
		clock_parse_rfc3339(json_object_get_string(v), &ts_ms);
	rc = profile_apply_event_text(b, &e->cfg.profile, ev, payload, len, seq, ts_ms,
				      now_ms, &res, &msg);
	if (rc == NERR_IO) {
		/* The batch may hold part of this event's writes: it must not
		 * commit. The engine stops; a restart re-runs the records. */
		e->batch_failed = true;
		goto out;
	}
	if (rc) {
		log_warn(
			"engine",
			"msg=\"event not applied\" seq=%llu rc=%s field=%s reason=\"%s\"",
			(unsigned long long)seq, nerr_str(rc), msg.field, msg.message);
		metrics_add(&m_err, 1);
		goto out;
	}
	jb->seq = seq;
	if (res.merged) {
		aud_on_merge(e->aud, jb, res.merged_ids, res.merged, res.profile_id);
		journey_rt_on_merge(e->rt, jb, res.merged_ids, res.merged,
				    res.profile_id);
	}
	if (aud_wants_event(e->aud, res.profile_id) ||
	    journey_rt_wants_event(e->rt, ev)) {
		if (!whole)
			whole = parse_event(e, payload, len);
		if (whole) {
			aud_on_event(e->aud, jb, res.profile_id, whole, ts_ms);
			journey_rt_on_event(e->rt, jb, res.profile_id, whole);
		} else {
			/* Only a merge's re-index gets here without the whole
			 * record: the view parsed, the record does not. */
			log_error("engine",
				  "msg=\"corrupt event record; applied to the profile, "
				  "not to audiences\" seq=%llu",
				  (unsigned long long)seq);
			metrics_add(&m_err, 1);
		}
	}
	metrics_add(&m_applied, 1);
	if (res.created) {
		metrics_add(&m_profiles, 1);
		e->batch_profiles++;
	}
	e->batch_profiles -= res.merged;
	metrics_add(&m_merges, res.merged);
	metrics_add(&m_idrej, res.identities_rejected);
out:
	if (ev != whole)
		json_object_put(ev);
	json_object_put(whole);
}

/* Keeps an answer for the request that submitted record seq (loop thread takes it). */
static void put_result(struct engine *e, uint64_t seq, int status, char *body)
{
	struct result *r = xcalloc(1, sizeof(*r));

	r->seq = seq;
	r->status = status;
	r->body = body;
	pthread_mutex_lock(&e->mu);
	r->next = e->results;
	e->results = r;
	pthread_mutex_unlock(&e->mu);
}

static void apply_erase(struct engine *e, struct journey_batch *jb, uint64_t seq,
			const char *payload, size_t len)
{
	struct store_batch *b = jb->b;
	struct json_object *req = json_tokener_parse(payload), *ns, *val;
	uint64_t pid;

	(void)len;
	if (!req || !json_object_object_get_ex(req, "namespace", &ns) ||
	    !json_object_object_get_ex(req, "value", &val)) {
		metrics_add(&m_err, 1);
		goto out;
	}
	if (profile_lookup(e->s, b, json_object_get_string(ns),
			   json_object_get_string(val), &pid) == NERR_OK &&
	    (journey_rt_on_erase(e->rt, jb, pid), aud_on_erase(e->aud, jb, pid),
	     profile_erase(b, pid) == NERR_OK)) {
		char body[96];

		metrics_add(&m_erased, 1);
		e->batch_profiles--;
		log_info("engine", "msg=\"profile erased\" seq=%llu profile=%llu",
			 (unsigned long long)seq, (unsigned long long)pid);
		snprintf(body, sizeof(body), "{\"erased\":true,\"id\":\"%llu\"}",
			 (unsigned long long)pid);
		put_result(e, seq, 200, xstrdup(body));
	} else {
		put_result(
			e, seq, 404,
			xstrdup("{\"error\":{\"code\":\"not_found\",\"field\":\"value\","
				"\"message\":\"no profile has this identity\"}}"));
	}
	metrics_add(&m_applied, 1);
out:
	json_object_put(req);
}

static struct json_object *parse_payload(const char *payload, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH * 2);
	struct json_object *o = json_tokener_parse_ex(tok, payload, (int)len);

	json_tokener_free(tok);
	return o;
}

static void apply_admin(struct engine *e, struct journey_batch *jb, uint64_t seq,
			const char *payload, size_t len)
{
	struct json_object *op = parse_payload(payload, len);
	struct journey_result res = {500, NULL};
	struct result *r;

	jb->seq = seq;
	struct json_object *opn = NULL;

	if (op && json_object_object_get_ex(op, "op", &opn) &&
	    aud_admin_op(json_object_get_string(opn)))
		aud_admin(e->aud, jb, op, &res);
	else if (op)
		journey_rt_admin(e->rt, jb, op, &res);
	json_object_put(op);
	if (res.status == 0) {
		/* The operation has no answer of its own: the request keeps the
		 * one the API prepared. */
		metrics_add(&m_applied, 1);
		return;
	}
	if (!res.body)
		res.body =
			xstrdup("{\"error\":{\"code\":\"internal\",\"field\":\"\","
				"\"message\":\"the operation could not be applied\"}}");
	r = xcalloc(1, sizeof(*r));
	r->seq = seq;
	r->status = res.status;
	r->body = res.body;
	pthread_mutex_lock(&e->mu);
	r->next = e->results;
	e->results = r;
	pthread_mutex_unlock(&e->mu);
	metrics_add(&m_applied, 1);
}

static void apply_outcome(struct engine *e, struct journey_batch *jb, uint64_t seq,
			  const char *payload, size_t len)
{
	struct json_object *o = parse_payload(payload, len);

	jb->seq = seq;
	if (o)
		journey_rt_on_outcome(e->rt, jb, o);
	json_object_put(o);
	metrics_add(&m_applied, 1);
}

char *engine_take_result(struct engine *e, uint64_t seq, int *status)
{
	struct result **pp, *r;
	char *body = NULL;

	pthread_mutex_lock(&e->mu);
	for (pp = &e->results; *pp; pp = &(*pp)->next) {
		if ((*pp)->seq != seq)
			continue;
		r = *pp;
		*pp = r->next;
		body = r->body;
		*status = r->status;
		free(r);
		break;
	}
	pthread_mutex_unlock(&e->mu);
	return body;
}

int64_t engine_now(const struct engine *e)
{
	return journey_rt_now(e->rt);
}

/*
 * Applies records (applied, upto], at most batch_max, then the due timers.
 * Returns the new applied position; *changed tells whether the batch holds
 * anything to commit.
 */
static uint64_t run_batch(struct engine *e, struct journey_batch *jb, uint64_t applied,
			  uint64_t upto, bool *changed)
{
	struct store_batch *b = jb->b;
	struct store_iter *it;
	unsigned char key[8];
	uint64_t last = applied;
	unsigned n = 0;
	int64_t now_ms = jb->now_ms;

	*changed = false;
	dedup_batch_reset(e);
	if (upto > applied) {
		it = store_iter_new(e->s, NULL, STORE_CF_INBOX);
		store_put_u64(key, applied + 1);
		for (store_iter_seek(it, key, 8);
		     store_iter_valid(it) && n < e->cfg.batch_max;
		     store_iter_next(it), n++) {
			size_t kl, vl, plen;
			const char *k = store_iter_key(it, &kl),
				   *v = store_iter_value(it, &vl);
			const char *payload;
			enum inbox_kind kind;
			int64_t received_ms;
			uint64_t seq;

			if (kl != 8)
				break;
			seq = store_get_u64(k);
			if (seq > upto)
				break;
			if (inbox_decode(v, vl, &kind, &received_ms, &payload, &plen) !=
			    NERR_OK) {
				log_error("engine",
					  "msg=\"corrupt inbox record\" seq=%llu",
					  (unsigned long long)seq);
				metrics_add(&m_err, 1);
			} else if (kind == INBOX_EVENT) {
				apply_event(e, jb, seq, payload, plen, now_ms);
			} else if (kind == INBOX_ERASE) {
				apply_erase(e, jb, seq, payload, plen);
			} else if (kind == INBOX_ADMIN) {
				apply_admin(e, jb, seq, payload, plen);
			} else if (kind == INBOX_OUTCOME) {
				apply_outcome(e, jb, seq, payload, plen);
			}
			/* Traits journey steps changed while applying it. */
			aud_flush_changed(e->aud, jb);
			inbox_consume(b, seq);
			last = seq;
		}
		store_iter_free(it);
	}
	/* An admin record may have moved the test clock. */
	jb->now_ms = journey_rt_now(e->rt);
	jb->seq = 0;
	journey_rt_fire_timers(e->rt, jb);
	/* Background jobs (back-fills, fan-outs) after the records: one bounded
	 * step per batch, so ingestion never waits behind them. */
	aud_background(e->aud, jb);
	aud_flush_changed(e->aud, jb);
	journey_rt_flush(e->rt, jb);
	if (last == applied && store_batch_count(b) == 0)
		return applied;
	*changed = true;
	unsigned char sv[8];
	store_put_u64(sv, last);
	store_batch_put(b, STORE_CF_META, META_APPLIED, sizeof(META_APPLIED) - 1, sv, 8);
	if (e->batch_profiles) {
		store_put_u64(sv, (uint64_t)(e->profiles + e->batch_profiles));
		store_batch_put(b, STORE_CF_META, META_PROFILES,
				sizeof(META_PROFILES) - 1, sv, 8);
	}
	return last;
}

/* Waits until records are committed, a timer is due, or stop. */
static void wait_for_work(struct engine *e, uint64_t applied)
{
	int64_t due = journey_rt_next_due(e->rt),
		work = aud_next_work(e->aud, journey_rt_now(e->rt));

	if (work < due)
		due = work;

	pthread_mutex_lock(&e->mu);
	while (e->committed_seq <= applied && !e->stopping) {
		int64_t now = journey_rt_now(e->rt);

		if (due <= now)
			break;
		if (due == INT64_MAX) {
			pthread_cond_wait(&e->cv, &e->mu);
		} else {
			struct timespec ts;
			int64_t wait_ms = due - now;

			if (wait_ms > 60000)
				wait_ms = 60000;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += wait_ms / 1000;
			ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&e->cv, &e->mu, &ts);
		}
	}
	pthread_mutex_unlock(&e->mu);
}

static void hand_over_sends(struct engine *e, struct journey_batch *jb)
{
	for (struct journey_send *s = jb->sends; s; s = s->next)
		if (e->cfg.on_send)
			e->cfg.on_send(e->cfg.send_ud, s->envelope_json);
	journey_batch_fini(jb);
}

static void *engine_main(void *arg)
{
	struct engine *e = arg;
	struct store_batch *b = store_batch_new(e->s);
	uint64_t applied = atomic_load(&e->applied_seq);
	struct journey_batch jb;

	pthread_setname_np(pthread_self(), "nudge-engine");
	store_thread_init();
	/* Profiles, their histories and identities are written by this batch
	 * alone. */
	if (e->cfg.cache_bytes) {
		store_batch_cache(b, STORE_CF_PROFILES, e->cfg.cache_bytes);
		store_batch_cache(b, STORE_CF_IDENTITIES, e->cfg.cache_bytes);
		store_batch_cache(b, STORE_CF_HISTORY, e->cfg.cache_bytes);
	}
	for (;;) {
		uint64_t upto;
		bool stop, changed;

		wait_for_work(e, applied);
		pthread_mutex_lock(&e->mu);
		upto = e->committed_seq;
		stop = e->stopping;
		pthread_mutex_unlock(&e->mu);
		if (stop && upto <= applied)
			break;

		uint64_t t0 = clock_mono_ns();
		e->batch_profiles = 0;
		journey_batch_init(&jb, b, journey_rt_now(e->rt));
		jb.report = e->report;
		uint64_t next = run_batch(e, &jb, applied, upto, &changed);
		if (!changed) {
			journey_batch_fini(&jb);
			if (upto > applied) {
				/* Committed records not visible cannot happen with a
				 * synced write; guard against a spin anyway. */
				log_error("engine",
					  "msg=\"inbox gap\" applied=%llu committed=%llu",
					  (unsigned long long)applied,
					  (unsigned long long)upto);
				atomic_store(&e->broken, true);
				break;
			}
			continue;
		}
		if (e->batch_failed || jb.io_failed) {
			log_error("engine",
				  "msg=\"store read failed mid-batch; engine stopped "
				  "without committing\"");
			store_batch_clear(b);
			report_discard(e->report);
			journey_batch_fini(&jb);
			atomic_store(&e->broken, true);
			break;
		}
		report_flush(e->report, b, jb.now_ms);
		if (store_batch_commit(b, true, NULL) != NERR_OK) {
			report_discard(e->report);
			log_error("engine",
				  "msg=\"state commit failed; engine stopped\"");
			journey_batch_fini(&jb);
			atomic_store(&e->broken, true);
			break;
		}
		journey_rt_batch_done(e->rt, &jb);
		/* The batch may have moved the test clock: dedup entries expire
		 * by the clock that stamped them. */
		store_set_dedup_clock_offset(e->s, journey_rt_clock_offset(e->rt));
		/* Invariant 3: envelopes leave only after their batch is durable. */
		hand_over_sends(e, &jb);
		metrics_observe(&m_batch, (double)(clock_mono_ns() - t0) / 1e9);
		e->profiles += e->batch_profiles;
		metrics_set(&m_profiles_live, e->profiles);
		applied = next;
		atomic_store(&e->applied_seq, applied);
		/* Against what is committed now, not when the batch began: records
		 * that arrived meanwhile are lag too. */
		pthread_mutex_lock(&e->mu);
		upto = e->committed_seq;
		pthread_mutex_unlock(&e->mu);
		metrics_set(&m_lag, upto > applied ? (int64_t)(upto - applied) : 0);
		uv_async_send(&e->async);
	}
	store_batch_free(b);
	return NULL;
}

static void send_pending(void *ud, const char *env_json)
{
	struct engine *e = ud;

	if (e->cfg.on_send)
		e->cfg.on_send(e->cfg.send_ud, env_json);
}

static void on_async(uv_async_t *h)
{
	struct engine *e = h->data;

	if (e->on_applied)
		e->on_applied(e->ud, atomic_load(&e->applied_seq));
}

/* Data directories from before dedup expired by compaction kept a time index
 * (STORE_CF_DEDUP_TIME): dropped once, in one range deletion. */
static void drop_dedup_time(struct store *s)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_DEDUP_TIME);
	bool any;

	store_iter_seek_first(it);
	any = store_iter_valid(it);
	store_iter_free(it);
	if (any) {
		struct store_batch *b = store_batch_new(s);
		unsigned char end[16];

		memset(end, 0xff, sizeof(end));
		store_batch_delete_range_blind(b, STORE_CF_DEDUP_TIME, "", 0, end,
					       sizeof(end));
		if (store_batch_commit(b, true, NULL) != NERR_OK)
			log_warn("engine", "msg=\"old dedup time index not dropped\"");
		store_batch_free(b);
	}
}

enum nerr engine_start(struct store *s, const struct engine_config *cfg, uv_loop_t *loop,
		       engine_applied_fn on_applied, void *ud, struct engine **out)
{
	struct engine *e = xcalloc(1, sizeof(*e));
	struct metric *ms[] = {&m_applied, &m_dup,	&m_err,		  &m_batch,
			       &m_lag,	   &m_profiles, &m_profiles_live, &m_merges,
			       &m_idrej,   &m_erased};
	char *v = NULL;
	size_t vl = 0;

	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		metrics_register(ms[i]);
	m_batch.nbounds = metrics_latency_seconds_nbounds;
	e->s = s;
	e->cfg = *cfg;
	e->cfg.journey.profile = &e->cfg.profile;
	if (govern_open(s, &e->cfg.govern, &e->govern, NULL) != NERR_OK) {
		free(e);
		return NERR_IO;
	}
	e->cfg.journey.govern = e->govern;
	e->cfg.aud.profile = &e->cfg.profile;
	if (aud_open(s, &e->cfg.aud, &e->aud) != NERR_OK) {
		free(e);
		return NERR_IO;
	}
	aud_hooks(e->aud, &e->cfg.journey);
	if (journey_rt_open(s, &e->cfg.journey, &e->rt, NULL) != NERR_OK) {
		aud_free(e->aud);
		free(e);
		return NERR_IO;
	}
	aud_set_runtime(e->aud, e->rt);
	store_set_dedup_clock_offset(s, journey_rt_clock_offset(e->rt));
	report_open(s, &e->report);
	/* Envelopes committed but never reported (crash, restart) go out again,
	 * with the same id (invariant 4). */
	journey_rt_pending(e->rt, send_pending, e);
	if (!e->cfg.batch_max)
		e->cfg.batch_max = 2000;
	e->on_applied = on_applied;
	e->ud = ud;
	map_init(&e->dedup_batch);
	store_set_dedup_window(s, e->cfg.dedup_window_ms);
	drop_dedup_time(s);
	/* Events are as deep as ingest lets them (up to SEGMENT_DEPTH_CAP; json-c's
	 * default of 32 cuts one level short of ingest's default limit). */
	e->tok = json_tokener_new_ex(SEGMENT_DEPTH_CAP * 2);
	{
		static const char *const engine_reads[] = {"messageId", "timestamp",
							   "event"};
		size_t n = 0, ne = sizeof(engine_reads) / sizeof(engine_reads[0]);

		while (profile_event_members[n])
			n++;
		e->view_keep = xcalloc(n + ne + 1, sizeof(*e->view_keep));
		memcpy(e->view_keep, profile_event_members, n * sizeof(*e->view_keep));
		memcpy(e->view_keep + n, engine_reads, sizeof(engine_reads));
	}
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	atomic_store(&e->applied_seq, engine_stored_applied_seq(s));
	inbox_trim(s, atomic_load(&e->applied_seq));
	if (store_get(s, STORE_CF_META, META_PROFILES, sizeof(META_PROFILES) - 1, &v,
		      &vl) == NERR_OK &&
	    vl == 8)
		e->profiles = (int64_t)store_get_u64(v);
	free(v);
	metrics_set(&m_profiles_live, e->profiles);
	e->committed_seq = inbox_last_stored_seq(s);
	uv_async_init(loop, &e->async, on_async);
	e->async.data = e;
	if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
		uv_close((uv_handle_t *)&e->async, NULL);
		return NERR_NOMEM;
	}
	e->started = true;
	log_info("engine", "msg=started applied=%llu pending=%llu",
		 (unsigned long long)atomic_load(&e->applied_seq),
		 (unsigned long long)(e->committed_seq > atomic_load(&e->applied_seq)
					      ? e->committed_seq -
							atomic_load(&e->applied_seq)
					      : 0));
	*out = e;
	return NERR_OK;
}

void engine_notify(struct engine *e, uint64_t committed_seq)
{
	pthread_mutex_lock(&e->mu);
	if (committed_seq > e->committed_seq)
		e->committed_seq = committed_seq;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

void engine_stop(struct engine *e)
{
	if (!e->started)
		return;
	pthread_mutex_lock(&e->mu);
	e->stopping = true;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	pthread_join(e->thread, NULL);
	e->started = false;
	uv_close((uv_handle_t *)&e->async, NULL);
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	while (e->results) {
		struct result *r = e->results;

		e->results = r->next;
		free(r->body);
		free(r);
	}
	journey_rt_free(e->rt);
	aud_free(e->aud);
	govern_free(e->govern);
	report_free(e->report);
	map_fini(&e->dedup_batch);
	json_tokener_free(e->tok);
	free(e->view_keep);
	free(e->view);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
}

uint64_t engine_applied_seq(const struct engine *e)
{
	return atomic_load(&((struct engine *)e)->applied_seq);
}

bool engine_broken(const struct engine *e)
{
	return atomic_load(&((struct engine *)e)->broken);
}
