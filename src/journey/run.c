/*
 * run.c -- the journey runtime (see run.h for the design and the key layout).
 *
 * Instance lifecycle: entered (an entry event qualifies and re-entry rules
 * allow it) -> steps run one after another inside the engine batch until one
 * waits (wait, wait_for, webhook, parked) or the instance ends -> a timer, an
 * event, a delivery outcome or a resume wakes it -> ... -> ended (completed,
 * exit, stopped, error, erased, merged). An instance's state field has one
 * setter, inst_set_state(), which logs old -> new at debug level.
 *
 * Every function here runs on the engine thread and writes only through the
 * batch in struct journey_batch (invariants 2 and 6).
 */
#include "journey/run.h"

#include <json-c/json.h>
#include <stdatomic.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#include "base/arena.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "govern/govern.h"
#include "report/metrics.h"
#include "report/report.h"
#include "tmpl/tmpl.h"

enum jstatus { JS_DRAFT, JS_ACTIVE, JS_PAUSED, JS_STOPPED };
static const char *const jstatus_names[] = {"draft", "active", "paused", "stopped"};

/* A journey: its status and every published version (index = version - 1). */
struct jrec {
	char *id;
	enum jstatus status;
	unsigned current; /* 0 = never published */
	struct journey_def **versions;
	unsigned nversions;
};

/* Journeys whose entry listens to one event name. */
struct jlist {
	struct jrec **items;
	unsigned n, alloc;
};

/* A compiled template body (webhook channel), cached by id. */
struct tpl {
	int64_t version;
	struct tmpl *body;
};

struct journey_rt {
	struct store *s;
	struct journey_rt_config cfg;
	struct expr_env *env;
	struct map journeys;   /* id -> struct jrec */
	struct map entry;      /* event name -> struct jlist (active journeys) */
	struct map aud_entry;  /* "<audience>\x1f(enter|exit)" -> struct jlist */
	struct map biz_entry;  /* business event name -> struct jlist */
	struct map waiting;    /* event names of exit/goal criteria -> (void *)1 */
	struct map waits_for;  /* event names of any version's wait_for steps */
	struct map templates;  /* id -> struct tpl */
	struct map predicates; /* CEL source -> expr_program (event_count) */
	struct map fields;     /* "template\x1ffield" -> struct tfield */
	_Atomic int64_t clock_offset_ms; /* read by the loop thread (test clock) */

	uint64_t next_iid;
	/* Timers (invariant 5) without rescanning fired ones: every pending timer
	 * is at or after timer_lwm, and none is earlier than next_due (which may be
	 * early, never late: a spurious wake-up only rescans). */
	bool iid_dirty;
	int64_t timer_lwm;
	int64_t next_due;
	int64_t last_fire_now;
	struct arena scratch;
	struct arena scratch2; /* for nested evaluations (event_count predicates) */
};

/* An instance loaded for processing. */
struct inst {
	struct buf key; /* pid(8) jid 0 key */
	uint64_t pid;
	struct json_object *o; /* owned */
	struct jrec *jr;
	struct journey_def *def;
	bool ended;
};

/* Per-event evaluation data: the event and a lazily loaded profile view. */
struct evctx {
	struct journey_rt *rt;
	struct journey_batch *jb;
	uint64_t pid;
	struct json_object *event;   /* borrowed, may be NULL */
	struct json_object *profile; /* owned, lazily loaded */
	struct json_object *jv_hold; /* the `journey` variable of the last evaluation */
};

static const char META_CLOCK[] = "clock_offset_ms";
static const char META_IID[] = "next_instance_id";

/* ------------------------------------------------------------------ metrics */

#define M(var, nm, hlp, lbl, ty)                                                         \
	static struct metric var = {.name = nm, .help = hlp, .labels = lbl, .type = ty}
M(m_entered, "nudge_journey_entries_total", "Journey instances started.", "",
  METRIC_COUNTER);
M(m_end_completed, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"completed\"", METRIC_COUNTER);
M(m_end_exit, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"exit\"", METRIC_COUNTER);
M(m_end_stopped, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"stopped\"", METRIC_COUNTER);
M(m_end_error, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"error\"", METRIC_COUNTER);
M(m_end_erased, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"erased\"", METRIC_COUNTER);
M(m_end_merged, "nudge_journey_exits_total", "Journey instances ended, by reason.",
  "reason=\"merged\"", METRIC_COUNTER);
M(m_conversions, "nudge_journey_conversions_total", "Goal events reached by instances.",
  "", METRIC_COUNTER);
M(m_envelopes, "nudge_envelopes_created_total", "Envelopes created, by channel.",
  "channel=\"webhook\"", METRIC_COUNTER);
M(m_envelopes_msg, "nudge_envelopes_created_total", "Envelopes created, by channel.",
  "channel=\"message\"", METRIC_COUNTER);
M(m_timers, "nudge_timers_fired_total", "Journey timers fired.", "", METRIC_COUNTER);
M(m_cel_errors, "nudge_journey_cel_errors_total",
  "CEL evaluations that failed (the condition counts as false).", "", METRIC_COUNTER);
static struct metric m_decision = {
	.name = "nudge_event_to_envelope_seconds",
	.help = "From an event's arrival to the envelope it caused.",
	.type = METRIC_HISTOGRAM,
	.bounds = metrics_latency_seconds_bounds};
M(m_track_open, "nudge_tracking_total", "Opens, clicks and unsubscribes recorded.",
  "kind=\"open\"", METRIC_COUNTER);
M(m_track_click, "nudge_tracking_total", "Opens, clicks and unsubscribes recorded.",
  "kind=\"click\"", METRIC_COUNTER);
M(m_track_unsub, "nudge_tracking_total", "Opens, clicks and unsubscribes recorded.",
  "kind=\"unsubscribe\"", METRIC_COUNTER);
M(m_track_open_u, "nudge_tracking_unique_total",
  "Envelopes opened or clicked at least once.", "kind=\"open\"", METRIC_COUNTER);
M(m_track_click_u, "nudge_tracking_unique_total",
  "Envelopes opened or clicked at least once.", "kind=\"click\"", METRIC_COUNTER);
M(m_suppressed_added, "nudge_suppressions_added_total",
  "Addresses put on the suppression list (bounces, complaints, invalid recipients).", "",
  METRIC_COUNTER);
static struct metric m_lateness = {.name = "nudge_timer_lateness_seconds",
				   .help = "How late timers fire.",
				   .type = METRIC_HISTOGRAM,
				   .bounds = metrics_latency_seconds_bounds};

/* ------------------------------------------------------------------ helpers */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static struct json_object *parse_json(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH * 2);
	struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);

	json_tokener_free(tok);
	return o;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (o && json_object_object_get_ex(o, k, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static int64_t jint(struct json_object *o, const char *k, int64_t dflt)
{
	struct json_object *v;

	if (o && json_object_object_get_ex(o, k, &v))
		return json_object_get_int64(v);
	return dflt;
}

static void hexify(const unsigned char *p, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[p[i] >> 4];
		out[2 * i + 1] = hx[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int unhex(const char *s, struct buf *out)
{
	size_t n = strlen(s);

	if (n % 2)
		return -1;
	for (size_t i = 0; i < n; i += 2) {
		int hi, lo;
		char c;

		c = s[i];
		hi = c >= '0' && c <= '9'   ? c - '0'
		     : c >= 'a' && c <= 'f' ? c - 'a' + 10
					    : -1;
		c = s[i + 1];
		lo = c >= '0' && c <= '9'   ? c - '0'
		     : c >= 'a' && c <= 'f' ? c - 'a' + 10
					    : -1;
		if (hi < 0 || lo < 0)
			return -1;
		buf_putc(out, (char)(hi * 16 + lo));
	}
	return 0;
}

static void jb_put_json(struct journey_batch *jb, enum store_cf cf, const void *k,
			size_t kl, struct json_object *o)
{
	size_t len;
	const char *txt =
		json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

	store_batch_put(jb->b, cf, k, kl, txt, len);
}

static struct json_object *jb_get_json(struct journey_batch *jb, enum store_cf cf,
				       const void *k, size_t kl)
{
	char *v = NULL;
	size_t vl = 0;
	struct json_object *o = NULL;

	if (store_batch_get(jb->b, cf, k, kl, &v, &vl) == NERR_OK)
		o = parse_json(v, vl);
	free(v);
	return o;
}

void journey_batch_init(struct journey_batch *jb, struct store_batch *b, int64_t now_ms)
{
	jb->b = b;
	jb->now_ms = now_ms;
	jb->seq = 0;
	jb->sends = NULL;
	jb->sends_tail = &jb->sends;
	jb->min_due = INT64_MAX;
	jb->io_failed = false;
}

void journey_batch_fini(struct journey_batch *jb)
{
	struct journey_send *s = jb->sends, *n;

	for (; s; s = n) {
		n = s->next;
		free(s->envelope_json);
		free(s);
	}
	jb->sends = NULL;
	jb->sends_tail = &jb->sends;
}

void journey_rt_config_default(struct journey_rt_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	journey_limits_default(&cfg->limits);
	cfg->max_steps_per_event = 100;
	cfg->max_instance_bytes = 64 * 1024;
	cfg->timers_per_batch = 1000;
}

int64_t journey_rt_now(const struct journey_rt *rt)
{
	return clock_wall_ms() + rt->clock_offset_ms;
}

int64_t journey_rt_clock_offset(const struct journey_rt *rt)
{
	return rt->clock_offset_ms;
}

/* ---------------------------------------------------------------- registry */

static struct jrec *jrec_get(struct journey_rt *rt, const char *id, bool create)
{
	struct jrec *jr = map_get(&rt->journeys, id);

	if (!jr && create) {
		jr = xcalloc(1, sizeof(*jr));
		jr->id = xstrdup(id);
		map_put(&rt->journeys, id, jr);
	}
	return jr;
}

static void jrec_free(struct jrec *jr)
{
	for (unsigned i = 0; i < jr->nversions; i++)
		journey_def_free(jr->versions[i]);
	free(jr->versions);
	free(jr->id);
	free(jr);
}

static void jrec_add_version(struct jrec *jr, unsigned ver, struct journey_def *d)
{
	if (ver > jr->nversions) {
		jr->versions = xrealloc(jr->versions, ver * sizeof(*jr->versions));
		for (unsigned i = jr->nversions; i < ver; i++)
			jr->versions[i] = NULL;
		jr->nversions = ver;
	}
	if (jr->versions[ver - 1])
		journey_def_free(jr->versions[ver - 1]);
	jr->versions[ver - 1] = d;
}

static struct journey_def *jrec_version(struct jrec *jr, unsigned ver)
{
	if (!jr || ver == 0 || ver > jr->nversions)
		return NULL;
	return jr->versions[ver - 1];
}

static void free_lists(struct map *m)
{
	size_t it = 0;
	const char *k;
	void *v;

	while (map_next(m, &it, &k, &v)) {
		struct jlist *l = v;

		if (l && l != (void *)1) {
			free(l->items);
			free(l);
		}
	}
	map_fini(m);
	map_init(m);
}

/* Rebuilds the entry index and the set of exit/goal event names. */
static void reindex(struct journey_rt *rt)
{
	size_t it = 0;
	const char *k;
	void *v;

	free_lists(&rt->entry);
	free_lists(&rt->aud_entry);
	free_lists(&rt->biz_entry);
	map_fini(&rt->waiting);
	map_init(&rt->waiting);
	map_fini(&rt->waits_for);
	map_init(&rt->waits_for);
	while (map_next(&rt->journeys, &it, &k, &v)) {
		struct jrec *jr = v;
		struct journey_def *d = jrec_version(jr, jr->current);

		for (unsigned i = 0; i < jr->nversions; i++) {
			struct journey_def *dv = jr->versions[i];

			if (!dv)
				continue;
			for (unsigned e = 0; e < dv->nexits; e++)
				map_put(&rt->waiting, dv->exits[e].event, (void *)1);
			if (dv->has_goal)
				map_put(&rt->waiting, dv->goal.event, (void *)1);
			for (unsigned st = 0; st < dv->nsteps; st++)
				if (dv->steps[st].kind == JOURNEY_STEP_WAIT_FOR &&
				    dv->steps[st].u.wait_for.mode ==
					    JOURNEY_WAIT_FOR_EVENT)
					map_put(&rt->waits_for,
						dv->steps[st].u.wait_for.event,
						(void *)1);
		}
		if (!d || jr->status != JS_ACTIVE)
			continue;
		struct map *m = &rt->entry;
		char akey[JOURNEY_MAX_ID_BYTES + 8];
		const char *ek = d->entry.event;

		if (d->entry.kind == JOURNEY_ENTRY_AUDIENCE) {
			snprintf(akey, sizeof(akey), "%s\x1f%s", d->entry.audience,
				 d->entry.on_exit ? "exit" : "enter");
			m = &rt->aud_entry;
			ek = akey;
		} else if (d->entry.kind == JOURNEY_ENTRY_BUSINESS) {
			m = &rt->biz_entry;
		}
		struct jlist *l = map_get(m, ek);
		if (!l) {
			l = xcalloc(1, sizeof(*l));
			map_put(m, ek, l);
		}
		if (l->n == l->alloc) {
			l->alloc = l->alloc ? l->alloc * 2 : 4;
			l->items = xrealloc(l->items, l->alloc * sizeof(*l->items));
		}
		l->items[l->n++] = jr;
	}
}

static void status_key(struct buf *k, const char *id)
{
	buf_reset(k);
	buf_printf(k, "s/%s", id);
}

static void version_key(struct buf *k, const char *id, unsigned ver)
{
	unsigned char v[4];

	buf_reset(k);
	buf_printf(k, "v/%s/", id);
	put_u32(v, ver);
	buf_append(k, v, 4);
}

static void save_status(struct journey_batch *jb, struct jrec *jr)
{
	struct json_object *o = json_object_new_object();
	struct buf k;

	json_object_object_add(o, "id", json_object_new_string(jr->id));
	json_object_object_add(o, "status",
			       json_object_new_string(jstatus_names[jr->status]));
	json_object_object_add(o, "version", json_object_new_int64(jr->current));
	json_object_object_add(o, "updated_ms", json_object_new_int64(jb->now_ms));
	buf_init(&k, 0);
	status_key(&k, jr->id);
	jb_put_json(jb, STORE_CF_JOURNEYS, k.data, k.len, o);
	buf_fini(&k);
	json_object_put(o);
}

static enum jstatus parse_status(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s && strcmp(s, jstatus_names[i]) == 0)
			return (enum jstatus)i;
	return JS_DRAFT;
}

/* Loads every journey status and published version (startup). */
static enum nerr load_journeys(struct journey_rt *rt, struct nerr_msg *msg)
{
	struct store_iter *it = store_iter_new(rt->s, NULL, STORE_CF_JOURNEYS);

	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		if (kl > 2 && k[0] == 's' && k[1] == '/') {
			char id[80];
			struct json_object *o = parse_json(v, vl);
			struct jrec *jr;

			snprintf(id, sizeof(id), "%.*s", (int)(kl - 2), k + 2);
			jr = jrec_get(rt, id, true);
			jr->status = parse_status(jstr(o, "status"));
			jr->current = (unsigned)jint(o, "version", 0);
			json_object_put(o);
		} else if (kl > 6 && k[0] == 'v' && k[1] == '/') {
			char id[80];
			const unsigned char *vb = (const unsigned char *)k + kl - 4;
			unsigned ver =
				(unsigned)vb[0] << 24 | vb[1] << 16 | vb[2] << 8 | vb[3];
			struct journey_def *d = NULL;
			struct journey_errors errs = {0};

			snprintf(id, sizeof(id), "%.*s", (int)(kl - 7), k + 2);
			if (journey_def_compile(v, vl, &rt->cfg.limits, rt->env, NULL,
						NULL, &d, &errs) != NERR_OK) {
				log_error("journey",
					  "msg=\"stored version does not compile\" "
					  "journey=%s version=%u",
					  id, ver);
				journey_errors_fini(&errs);
				continue;
			}
			journey_errors_fini(&errs);
			jrec_add_version(jrec_get(rt, id, true), ver, d);
		}
	}
	store_iter_free(it);
	reindex(rt);
	(void)msg;
	return NERR_OK;
}

/* ---------------------------------------------------------------- templates */

static bool template_exists_batch(void *ud, const char *id, const char *channel)
{
	struct journey_batch *jb = ud;
	struct json_object *o = jb_get_json(jb, STORE_CF_TEMPLATES, id, strlen(id));
	bool ok = o && (!channel ||
			(jstr(o, "channel") && strcmp(jstr(o, "channel"), channel) == 0));

	json_object_put(o);
	return ok;
}

static bool template_exists_store(void *ud, const char *id, const char *channel)
{
	struct store *s = ud;
	char *v = NULL;
	size_t vl = 0;
	bool ok = false;

	if (store_get(s, STORE_CF_TEMPLATES, id, strlen(id), &v, &vl) == NERR_OK) {
		struct json_object *o = parse_json(v, vl);

		ok = o && (!channel || (jstr(o, "channel") &&
					strcmp(jstr(o, "channel"), channel) == 0));
		json_object_put(o);
	}
	free(v);
	return ok;
}

/* The compiled body of a webhook template, or NULL. */
static struct tmpl *template_body(struct journey_rt *rt, struct journey_batch *jb,
				  const char *id)
{
	struct json_object *o = jb_get_json(jb, STORE_CF_TEMPLATES, id, strlen(id));
	struct tpl *t = map_get(&rt->templates, id);
	int64_t ver = jint(o, "version", 0);
	const char *src = jstr(o, "body");

	if (!o || !src) {
		json_object_put(o);
		return NULL;
	}
	if (!t || t->version != ver) {
		struct tmpl_options opt = {0};
		struct tmpl *c = NULL;

		if (tmpl_compile(src, strlen(src), &opt, &c, NULL) != NERR_OK) {
			json_object_put(o);
			return NULL;
		}
		if (!t) {
			t = xcalloc(1, sizeof(*t));
			map_put(&rt->templates, id, t);
		}
		tmpl_free(t->body);
		t->body = c;
		t->version = ver;
	}
	json_object_put(o);
	return t->body;
}

/* --------------------------------------------------------------------- CEL */

static struct json_object *ev_profile(struct evctx *ec)
{
	if (ec->profile)
		return ec->profile;
	if (profile_view_json(ec->rt->s, ec->jb->b, ec->pid, &ec->profile) != NERR_OK)
		ec->profile = json_object_new_object();
	else if (ec->rt->cfg.decorate_profile)
		ec->rt->cfg.decorate_profile(ec->rt->cfg.hook_ud, ec->jb->b, ec->pid,
					     ec->profile);
	return ec->profile;
}

static int64_t cb_event_count(void *ud, const char *name, int64_t window_ms,
			      const char *predicate)
{
	struct evctx *ec = ud;
	struct json_object *hist = NULL;
	struct expr_program *prog = NULL;
	int64_t n = 0;

	if (predicate) {
		prog = map_get(&ec->rt->predicates, predicate);
		if (!prog) {
			if (expr_compile(predicate, ec->rt->env, &prog, NULL) != NERR_OK)
				return -1;
			map_put(&ec->rt->predicates, predicate, prog);
		}
	}
	if (profile_history_json(ec->rt->s, ec->jb->b, ec->pid,
				 ec->jb->now_ms - window_ms, &hist) != NERR_OK)
		return 0;
	for (size_t i = 0; i < json_object_array_length(hist); i++) {
		struct json_object *e = json_object_array_get_idx(hist, i);
		const char *en = jstr(e, "event");

		if (!en || strcmp(en, name) != 0)
			continue;
		if (prog) {
			struct expr_value vars[JOURNEY_VAR__COUNT], out;

			vars[JOURNEY_VAR_EVENT] = expr_value_from_json(e);
			vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(ev_profile(ec));
			vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
			vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
			vars[JOURNEY_VAR_NOW].flags = 0;
			vars[JOURNEY_VAR_NOW].as.sec = ec->jb->now_ms / 1000;
			vars[JOURNEY_VAR_NOW].nsec =
				(int32_t)(ec->jb->now_ms % 1000) * 1000000;
			arena_reset(&ec->rt->scratch2);
			if (expr_eval(prog, vars, JOURNEY_VAR__COUNT, &ec->rt->scratch2,
				      &out, NULL) != NERR_OK ||
			    !expr_value_is_true(&out))
				continue;
		}
		n++;
	}
	json_object_put(hist);
	return n;
}

static int cb_in_audience(void *ud, const char *audience)
{
	struct evctx *ec = ud;

	if (!ec->rt->cfg.in_audience)
		return -1;
	return ec->rt->cfg.in_audience(ec->rt->cfg.hook_ud, ec->jb->b, ec->pid, audience);
}

static int cb_consent(void *ud, const char *channel, const char *purpose)
{
	struct evctx *ec = ud;
	struct json_object *c, *ch, *p;

	if (!purpose)
		purpose = "marketing";
	if (ec->rt->cfg.govern)
		return govern_consent(ec->rt->cfg.govern, ev_profile(ec), channel,
				      purpose);
	if (json_object_object_get_ex(ev_profile(ec), "consent", &c) &&
	    json_object_object_get_ex(c, channel, &ch) &&
	    json_object_object_get_ex(ch, purpose, &p))
		return strcmp(json_object_get_string(p), "granted") == 0;
	/* Defaults (DESIGN.md §10, AJO's): transactional granted; marketing granted
	 * for email, denied for sms and push. */
	if (strcmp(purpose, "transactional") == 0)
		return 1;
	return strcmp(channel, "email") == 0;
}

/*
 * Evaluates a program with the instance's variables. Returns NERR_OK with *out in
 * rt->scratch (valid until the next evaluation).
 */
static enum nerr eval(struct evctx *ec, struct inst *in, const struct expr_program *prog,
		      struct expr_value *out)
{
	struct journey_rt *rt = ec->rt;
	struct expr_value vars[JOURNEY_VAR__COUNT];
	struct journey_eval_ctx ctx = {.ud = ec,
				       .event_count = cb_event_count,
				       .consent = cb_consent,
				       .in_audience = cb_in_audience};
	struct json_object *jv = NULL, *v;
	struct nerr_msg msg;
	enum nerr rc;

	if (in) {
		jv = json_object_new_object();
		json_object_object_add(jv, "id", json_object_new_string(in->jr->id));
		if (json_object_object_get_ex(in->o, "entry", &v))
			json_object_object_add(jv, "entry", json_object_get(v));
		if (json_object_object_get_ex(in->o, "steps", &v))
			json_object_object_add(jv, "steps", json_object_get(v));
	}
	vars[JOURNEY_VAR_EVENT] = expr_value_from_json(ec->event);
	vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(ev_profile(ec));
	vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(jv);
	vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
	vars[JOURNEY_VAR_NOW].flags = 0;
	vars[JOURNEY_VAR_NOW].len = 0;
	vars[JOURNEY_VAR_NOW].as.sec = ec->jb->now_ms / 1000;
	vars[JOURNEY_VAR_NOW].nsec = (int32_t)(ec->jb->now_ms % 1000) * 1000000;
	journey_eval_ctx_set(&ctx);
	arena_reset(&rt->scratch);
	rc = expr_eval(prog, vars, JOURNEY_VAR__COUNT, &rt->scratch, out, &msg);
	journey_eval_ctx_set(NULL);
	if (rc) {
		metrics_add(&m_cel_errors, 1);
		log_debug("journey",
			  "msg=\"CEL evaluation failed\" journey=%s reason=\"%s\"",
			  in ? in->jr->id : "-", msg.message);
	}
	/* *out may view into jv: keep it alive until the next evaluation. */
	json_object_put(ec->jv_hold);
	ec->jv_hold = jv;
	return rc;
}

/* True if prog (NULL = no condition) holds; errors count as false. */
static bool holds(struct evctx *ec, struct inst *in, const struct journey_cel *c)
{
	struct expr_value out;

	if (!c->prog)
		return true;
	return eval(ec, in, c->prog, &out) == NERR_OK && expr_value_is_true(&out);
}

static void evctx_init(struct evctx *ec, struct journey_rt *rt, struct journey_batch *jb,
		       uint64_t pid, struct json_object *event)
{
	memset(ec, 0, sizeof(*ec));
	ec->rt = rt;
	ec->jb = jb;
	ec->pid = pid;
	ec->event = event;
}

static void evctx_fini(struct evctx *ec)
{
	json_object_put(ec->profile);
	json_object_put(ec->jv_hold);
	ec->profile = ec->jv_hold = NULL;
}

/* --------------------------------------------------------------- instances */

static void inst_key(struct buf *k, uint64_t pid, const char *jid, const char *key)
{
	unsigned char p[8];

	buf_reset(k);
	store_put_u64(p, pid);
	buf_append(k, p, 8);
	buf_puts(k, jid);
	buf_putc(k, '\0');
	buf_puts(k, key);
}

static void inst_free(struct inst *in)
{
	buf_fini(&in->key);
	json_object_put(in->o);
	in->o = NULL;
}

/* Splits an instance key into its parts (jid and key point into k). */
static bool inst_key_parts(const char *k, size_t kl, uint64_t *pid, const char **jid,
			   const char **key, size_t *keylen)
{
	const char *z;

	if (kl < 9)
		return false;
	*pid = store_get_u64(k);
	z = memchr(k + 8, '\0', kl - 8);
	if (!z)
		return false;
	*jid = k + 8;
	*key = z + 1;
	*keylen = kl - (size_t)(z + 1 - k);
	return true;
}

/* Loads the instance stored under key k (batch view). */
static bool inst_load(struct journey_rt *rt, struct journey_batch *jb, const char *k,
		      size_t kl, struct inst *in)
{
	const char *jid, *key;
	size_t keylen;
	char idbuf[80];

	memset(in, 0, sizeof(*in));
	buf_init(&in->key, 0);
	buf_append(&in->key, k, kl);
	if (!inst_key_parts(k, kl, &in->pid, &jid, &key, &keylen))
		goto bad;
	snprintf(idbuf, sizeof(idbuf), "%s", jid);
	in->o = jb_get_json(jb, STORE_CF_INSTANCES, k, kl);
	if (!in->o)
		goto bad;
	in->jr = jrec_get(rt, idbuf, false);
	in->def = jrec_version(in->jr, (unsigned)jint(in->o, "v", 0));
	if (!in->def)
		goto bad;
	return true;
bad:
	inst_free(in);
	return false;
}

static const char *inst_state(struct inst *in)
{
	const char *s = jstr(in->o, "state");

	return s ? s : "run";
}

/* The one setter of an instance's state (STYLE.md: state machines). */
static void inst_set_state(struct inst *in, const char *state)
{
	log_debug("journey", "msg=state journey=%s profile=%llu old=%s new=%s",
		  in->jr->id, (unsigned long long)in->pid, inst_state(in), state);
	json_object_object_add(in->o, "state", json_object_new_string(state));
}

static void index_j_key(struct buf *k, struct inst *in)
{
	const char *jid = "", *key = "";
	size_t keylen = 0;
	uint64_t pid = 0;
	unsigned char p[8];

	inst_key_parts(in->key.data, in->key.len, &pid, &jid, &key, &keylen);
	buf_reset(k);
	buf_putc(k, 'j');
	buf_puts(k, jid);
	buf_putc(k, '\0');
	store_put_u64(p, pid);
	buf_append(k, p, 8);
	buf_append(k, key, keylen);
}

static void index_p_key(struct buf *k, struct inst *in)
{
	buf_reset(k);
	buf_putc(k, 'p');
	buf_puts(k, in->jr->id);
	buf_putc(k, '\0');
	buf_append(k, in->key.data, in->key.len);
}

static void reentry_key(struct buf *k, struct inst *in)
{
	buf_reset(k);
	buf_putc(k, 'r');
	buf_append(k, in->key.data, in->key.len);
}

static void timer_key(struct buf *k, int64_t due_ms, struct inst *in)
{
	unsigned char d[8];

	buf_reset(k);
	store_put_u64(d, (uint64_t)due_ms);
	buf_append(k, d, 8);
	buf_append(k, in->key.data, in->key.len);
}

static void wait_key(struct buf *k, uint64_t pid, const char *event, struct inst *in)
{
	unsigned char p[8];

	buf_reset(k);
	store_put_u64(p, pid);
	buf_append(k, p, 8);
	buf_puts(k, event);
	buf_putc(k, '\0');
	buf_append(k, in->key.data + 8, in->key.len - 8);
}

static void set_timer(struct journey_batch *jb, struct inst *in, int64_t due_ms)
{
	struct buf k;
	unsigned char v[16];

	buf_init(&k, 0);
	timer_key(&k, due_ms, in);
	store_put_u64(v, (uint64_t)jint(in->o, "iid", 0));
	store_put_u64(v + 8, (uint64_t)jint(in->o, "visit", 0));
	store_batch_put(jb->b, STORE_CF_TIMERS, k.data, k.len, v, 16);
	json_object_object_add(in->o, "timer", json_object_new_int64(due_ms));
	if (due_ms < jb->min_due)
		jb->min_due = due_ms;
	buf_fini(&k);
}

static void clear_timer(struct journey_batch *jb, struct inst *in)
{
	struct json_object *t;
	struct buf k;

	if (!json_object_object_get_ex(in->o, "timer", &t))
		return;
	buf_init(&k, 0);
	timer_key(&k, json_object_get_int64(t), in);
	store_batch_delete(jb->b, STORE_CF_TIMERS, k.data, k.len);
	json_object_object_del(in->o, "timer");
	buf_fini(&k);
}

static void set_wait(struct journey_batch *jb, struct inst *in, const char *event)
{
	struct buf k;

	buf_init(&k, 0);
	wait_key(&k, in->pid, event, in);
	store_batch_put(jb->b, STORE_CF_WAITS, k.data, k.len, "", 0);
	json_object_object_add(in->o, "wait_event", json_object_new_string(event));
	buf_fini(&k);
}

static void clear_wait(struct journey_batch *jb, struct inst *in)
{
	const char *ev = jstr(in->o, "wait_event");
	struct buf k;

	if (!ev)
		return;
	buf_init(&k, 0);
	wait_key(&k, in->pid, ev, in);
	store_batch_delete(jb->b, STORE_CF_WAITS, k.data, k.len);
	json_object_object_del(in->o, "wait_event");
	buf_fini(&k);
}

static void clear_parked(struct journey_batch *jb, struct inst *in)
{
	struct buf k;

	buf_init(&k, 0);
	index_p_key(&k, in);
	store_batch_delete(jb->b, STORE_CF_INDEX, k.data, k.len);
	buf_fini(&k);
}

static void inst_save(struct journey_rt *rt, struct journey_batch *jb, struct inst *in);
static void goal_watch(struct journey_batch *jb, struct inst *in);

/* ------------------------------------------------------------- reporting */

/* Counts c for the instance at step (NULL = journey level) with the message
 * dims of st when it is a message step. */
static void rcount(struct journey_batch *jb, struct inst *in,
		   const struct journey_step *st, const char *arm, enum report_counter c,
		   double n)
{
	struct report_dims d = {.journey = in->jr->id,
				.version = (unsigned)jint(in->o, "v", 0),
				.step = st ? st->id : "",
				.arm = arm};

	if (!jb->report)
		return;
	if (st && st->kind == JOURNEY_STEP_MESSAGE) {
		d.template_id = st->u.message.template_id;
		d.channel = journey_channel_name(st->u.message.channel);
	}
	report_count(jb->report, &d, c, n);
}

/* The step an instance counts as being in ("ws"), or NULL. */
static const struct journey_step *waiting_step(struct inst *in)
{
	int ws = (int)jint(in->o, "ws", -1);

	return ws >= 0 && (unsigned)ws < in->def->nsteps ? &in->def->steps[ws] : NULL;
}

/* The instance leaves the step it waited in: in_step -1 there. */
static void leave_wait(struct journey_batch *jb, struct inst *in, bool completed)
{
	const struct journey_step *st = waiting_step(in);

	if (!st)
		return;
	rcount(jb, in, st, NULL, REPORT_IN_STEP, -1);
	if (completed)
		rcount(jb, in, st, NULL, REPORT_COMPLETED, 1);
	json_object_object_del(in->o, "ws");
}

/* Ends an instance: every key it holds goes, the re-entry record stays. */
static void inst_end(struct journey_rt *rt, struct journey_batch *jb, struct inst *in,
		     const char *reason)
{
	struct buf k;

	if (in->ended)
		return;
	clear_timer(jb, in);
	clear_wait(jb, in);
	if (strcmp(inst_state(in), "parked") == 0)
		clear_parked(jb, in);
	buf_init(&k, 0);
	index_j_key(&k, in);
	store_batch_delete(jb->b, STORE_CF_INDEX, k.data, k.len);
	buf_fini(&k);
	store_batch_delete(jb->b, STORE_CF_INSTANCES, in->key.data, in->key.len);
	if (!strcmp(reason, "completed") || !strcmp(reason, "exit") ||
	    !strcmp(reason, "error"))
		goal_watch(jb, in);
	in->ended = true;
	{
		enum report_counter c = REPORT_EXITED_ERROR;
		int si = (int)jint(in->o, "step", -1);
		const struct journey_step *at = waiting_step(in);

		report_exit_counter(reason, &c);
		if (!at && si >= 0 && (unsigned)si < in->def->nsteps)
			at = &in->def->steps[si];
		leave_wait(jb, in, false);
		rcount(jb, in, at, NULL, c, 1);
	}
	if (strcmp(reason, "completed") == 0)
		metrics_add(&m_end_completed, 1);
	else if (strcmp(reason, "exit") == 0)
		metrics_add(&m_end_exit, 1);
	else if (strcmp(reason, "stopped") == 0)
		metrics_add(&m_end_stopped, 1);
	else if (strcmp(reason, "erased") == 0)
		metrics_add(&m_end_erased, 1);
	else if (strcmp(reason, "merged") == 0)
		metrics_add(&m_end_merged, 1);
	else
		metrics_add(&m_end_error, 1);
	log_debug("journey", "msg=ended journey=%s profile=%llu reason=%s", in->jr->id,
		  (unsigned long long)in->pid, reason);
}

static void inst_save(struct journey_rt *rt, struct journey_batch *jb, struct inst *in)
{
	size_t len;
	const char *txt;

	if (in->ended)
		return;
	txt = json_object_to_json_string_length(in->o, JSON_C_TO_STRING_PLAIN, &len);
	if (len > rt->cfg.max_instance_bytes) {
		log_warn("journey",
			 "msg=\"instance state too large; ended\" journey=%s "
			 "profile=%llu bytes=%zu",
			 in->jr->id, (unsigned long long)in->pid, len);
		inst_end(rt, jb, in, "error");
		return;
	}
	store_batch_put(jb->b, STORE_CF_INSTANCES, in->key.data, in->key.len, txt, len);
}

/* ------------------------------------------------------------- step machine */

/* Invariant 4: the envelope id is a function of (instance id, step, visit). */
static void envelope_id(struct inst *in, int step, int64_t visit, char out[33])
{
	unsigned char in_bytes[20], md[SHA256_DIGEST_LENGTH];

	store_put_u64(in_bytes, (uint64_t)jint(in->o, "iid", 0));
	put_u32(in_bytes + 8, (uint32_t)step);
	store_put_u64(in_bytes + 12, (uint64_t)visit);
	SHA256(in_bytes, sizeof(in_bytes), md);
	hexify(md, 16, out);
}

/* The next instant after now_ms at local minute_of_day on an allowed weekday in
 * zone. Returns INT64_MIN if the zone is unusable. */
static int64_t next_local_time(int64_t now_ms, const char *zone, int minute_of_day,
			       uint8_t days_mask)
{
	UChar uz[128];
	UErrorCode st = U_ZERO_ERROR;
	UCalendar *cal;
	int64_t best = INT64_MIN;

	u_strFromUTF8(uz, 128, NULL, zone, -1, &st);
	if (U_FAILURE(st))
		return INT64_MIN;
	cal = ucal_open(uz, -1, "en_US", UCAL_GREGORIAN, &st);
	if (U_FAILURE(st))
		return INT64_MIN;
	for (int d = 0; d <= 7; d++) {
		ucal_setMillis(cal, (UDate)now_ms, &st);
		ucal_add(cal, UCAL_DATE, d, &st);
		ucal_set(cal, UCAL_HOUR_OF_DAY, minute_of_day / 60);
		ucal_set(cal, UCAL_MINUTE, minute_of_day % 60);
		ucal_set(cal, UCAL_SECOND, 0);
		ucal_set(cal, UCAL_MILLISECOND, 0);
		int64_t t = (int64_t)ucal_getMillis(cal, &st);
		int dow = ucal_get(cal, UCAL_DAY_OF_WEEK, &st); /* 1 = Sunday */
		int bit = dow == UCAL_SUNDAY ? 6 : dow - UCAL_MONDAY;

		if (U_FAILURE(st))
			break;
		if (t > now_ms && (days_mask & (1u << bit))) {
			best = t;
			break;
		}
	}
	ucal_close(cal);
	return best;
}

static void observe_decision(struct evctx *ec);
static void index_envelope(struct journey_batch *jb, uint64_t pid, const char *id);

/* The fields every envelope carries about where it comes from: journey, version,
 * step, visit, instance id and key (hex), so outcomes find their way back. */
static void envelope_origin(struct json_object *env, struct inst *in,
			    const struct journey_step *st, int64_t visit)
{
	char kh[2 * 300 + 1];

	json_object_object_add(env, "journey", json_object_new_string(in->jr->id));
	json_object_object_add(env, "version",
			       json_object_new_int64(jint(in->o, "v", 0)));
	json_object_object_add(env, "step", json_object_new_string(st->id));
	json_object_object_add(env, "visit", json_object_new_int64(visit));
	json_object_object_add(env, "iid", json_object_new_int64(jint(in->o, "iid", 0)));
	if (in->key.len <= 300) {
		hexify((const unsigned char *)in->key.data, in->key.len, kh);
		json_object_object_add(env, "instance", json_object_new_string(kh));
	}
}

/* Hands the stored envelope to delivery once the batch commits (invariant 3). */
static void queue_send(struct journey_batch *jb, struct json_object *env)
{
	struct journey_send *s = xcalloc(1, sizeof(*s));

	s->envelope_json =
		xstrdup(json_object_to_json_string_ext(env, JSON_C_TO_STRING_PLAIN));
	*jb->sends_tail = s;
	jb->sends_tail = &s->next;
}

/* Builds the Liquid context {profile, event, journey, message}. */
static struct json_object *render_ctx(struct evctx *ec, struct inst *in,
				      const char *env_id)
{
	struct json_object *ctx = json_object_new_object(), *j = json_object_new_object(),
			   *m = json_object_new_object(), *v;

	json_object_object_add(ctx, "profile", json_object_get(ev_profile(ec)));
	json_object_object_add(ctx, "event", json_object_get(ec->event));
	json_object_object_add(j, "id", json_object_new_string(in->jr->id));
	json_object_object_add(j, "version", json_object_new_int64(jint(in->o, "v", 0)));
	if (json_object_object_get_ex(in->o, "entry", &v))
		json_object_object_add(j, "entry", json_object_get(v));
	if (json_object_object_get_ex(in->o, "steps", &v))
		json_object_object_add(j, "steps", json_object_get(v));
	json_object_object_add(ctx, "journey", j);
	json_object_object_add(m, "id", json_object_new_string(env_id));
	json_object_object_add(ctx, "message", m);
	return ctx;
}

static enum nerr render(struct journey_rt *rt, const struct tmpl *t,
			struct json_object *ctx, int64_t now_ms, struct buf *out,
			struct nerr_msg *msg)
{
	struct tmpl_render_options ro;

	memset(&ro, 0, sizeof(ro));
	ro.now_ms = now_ms;
	arena_reset(&rt->scratch);
	return tmpl_render(t, ctx, &ro, &rt->scratch, out, msg);
}

static struct json_object *step_results(struct inst *in, const char *step_id)
{
	struct json_object *steps, *r;

	if (!json_object_object_get_ex(in->o, "steps", &steps)) {
		steps = json_object_new_object();
		json_object_object_add(in->o, "steps", steps);
	}
	if (!json_object_object_get_ex(steps, step_id, &r)) {
		r = json_object_new_object();
		json_object_object_add(steps, step_id, r);
	}
	return r;
}

/*
 * Creates the webhook envelope of the current visit. Returns true when the
 * instance now waits for the outcome, false when rendering failed (recorded in
 * the step's results; the caller routes to on_failure/next).
 */
static bool step_webhook(struct journey_rt *rt, struct journey_batch *jb,
			 struct evctx *ec, struct inst *in, int idx, int64_t visit)
{
	const struct journey_step *st = &in->def->steps[idx];
	const struct journey_webhook *w = &st->u.webhook;
	struct json_object *ctx, *env, *req, *hdrs;
	struct buf url, body, hv;
	struct nerr_msg msg = {"", ""};
	char id[33];
	enum nerr rc;
	const struct tmpl *bt = w->body;

	envelope_id(in, idx, visit, id);
	ctx = render_ctx(ec, in, id);
	buf_init(&url, 8192);
	buf_init(&body, 1 << 20);
	buf_init(&hv, 8192);
	if (w->template_id)
		bt = template_body(rt, jb, w->template_id);
	rc = render(rt, w->url, ctx, jb->now_ms, &url, &msg);
	if (!rc && !bt)
		rc = nerr_set(&msg, NERR_NOTFOUND, "template", "template %s has no body",
			      w->template_id ? w->template_id : "?");
	if (!rc)
		rc = render(rt, bt, ctx, jb->now_ms, &body, &msg);
	hdrs = json_object_new_object();
	for (unsigned i = 0; !rc && i < w->nheaders; i++) {
		buf_reset(&hv);
		rc = render(rt, w->headers[i].value, ctx, jb->now_ms, &hv, &msg);
		if (!rc && strpbrk(buf_str(&hv), "\r\n"))
			rc = nerr_set(&msg, NERR_INVAL, w->headers[i].name,
				      "header value contains a line break");
		if (!rc)
			json_object_object_add(hdrs, w->headers[i].name,
					       json_object_new_string(buf_str(&hv)));
	}
	json_object_put(ctx);
	if (rc) {
		struct json_object *r = step_results(in, st->id);

		json_object_object_add(r, "ok", json_object_new_boolean(0));
		json_object_object_add(r, "error", json_object_new_string(msg.message));
		log_warn("journey",
			 "msg=\"webhook not rendered\" journey=%s step=%s reason=\"%s\"",
			 in->jr->id, st->id, msg.message);
		json_object_put(hdrs);
		buf_fini(&url);
		buf_fini(&body);
		buf_fini(&hv);
		return false;
	}
	env = json_object_new_object();
	req = json_object_new_object();
	json_object_object_add(env, "id", json_object_new_string(id));
	json_object_object_add(env, "kind", json_object_new_string("webhook"));
	json_object_object_add(env, "state", json_object_new_string("pending"));
	envelope_origin(env, in, st, visit);
	json_object_object_add(env, "profile", json_object_new_int64((int64_t)in->pid));
	json_object_object_add(env, "created_ms", json_object_new_int64(jb->now_ms));
	json_object_object_add(
		req, "method",
		json_object_new_string(w->method == JOURNEY_HTTP_PUT ? "PUT" : "POST"));
	json_object_object_add(req, "url", json_object_new_string(buf_str(&url)));
	json_object_object_add(req, "headers", hdrs);
	json_object_object_add(req, "body",
			       json_object_new_string_len(buf_str(&body), (int)body.len));
	json_object_object_add(req, "timeout_ms", json_object_new_int64(w->timeout_ms));
	json_object_object_add(req, "retries", json_object_new_int64(w->retries));
	json_object_object_add(req, "capture", json_object_new_boolean(w->capture));
	if (in->def->webhook_secret)
		json_object_object_add(req, "secret",
				       json_object_new_string(in->def->webhook_secret));
	json_object_object_add(env, "request", req);
	jb_put_json(jb, STORE_CF_OUTBOX, id, 32, env);
	queue_send(jb, env);
	json_object_put(env);
	json_object_object_add(in->o, "env", json_object_new_string(id));
	index_envelope(jb, in->pid, id);
	metrics_add(&m_envelopes, 1);
	observe_decision(ec);
	buf_fini(&url);
	buf_fini(&body);
	buf_fini(&hv);
	return true;
}

/* Event -> send decision latency, for envelopes caused directly by an event. */
static void observe_decision(struct evctx *ec)
{
	const char *ra = ec->event ? jstr(ec->event, "receivedAt") : NULL;
	int64_t t;

	if (ra && clock_parse_rfc3339(ra, &t) == 0)
		metrics_observe(&m_decision, (double)(clock_wall_ms() - t) / 1000.0);
}

/* Lists the envelope under its profile ("m" pid(8) created_ms(8) id), for the
 * profile's message history and for erasure. */
static void index_envelope(struct journey_batch *jb, uint64_t pid, const char *id)
{
	unsigned char k[1 + 8 + 8 + 32];

	k[0] = 'm';
	store_put_u64(k + 1, pid);
	store_put_u64(k + 9, (uint64_t)jb->now_ms);
	memcpy(k + 17, id, 32);
	store_batch_put(jb->b, STORE_CF_INDEX, k, sizeof(k), "", 0);
}

/* Exclusion reasons, counted (DESIGN.md §10: every exclusion is counted). */
#define EXCLUSIONS(X)                                                                    \
	X(no_template)                                                                   \
	X(no_address)                                                                    \
	X(suppressed)                                                                    \
	X(no_consent)                                                                    \
	X(render_error) X(invalid_header) X(capped) X(quiet_hours_dropped) X(entry_capped)
#define X(r)                                                                             \
	static struct metric m_ex_##r = {.name = "nudge_messages_excluded_total",        \
					 .help = "Messages not sent, by reason.",        \
					 .labels = "reason=\"" #r "\"",                  \
					 .type = METRIC_COUNTER};
EXCLUSIONS(X)
#undef X

static struct metric *exclusion_metric(const char *reason)
{
#define X(r)                                                                             \
	if (strcmp(reason, #r) == 0)                                                     \
		return &m_ex_##r;
	EXCLUSIONS(X)
#undef X
	return &m_ex_render_error;
}

/* A compiled template field, cached by template id and version. */
struct tfield {
	int64_t version;
	char *field;
	struct tmpl *t; /* NULL when the field is absent */
};

/* Renders field `name` of template doc (id) into out; absent -> *present false. */
static enum nerr render_field(struct journey_rt *rt, struct json_object *doc,
			      const char *id, const char *name, bool html,
			      struct json_object *ctx, int64_t now_ms, struct buf *out,
			      bool *present, struct nerr_msg *msg)
{
	char key[160];
	struct tfield *f;
	int64_t ver = jint(doc, "version", 0);
	const char *src = jstr(doc, name);

	*present = src != NULL;
	if (!src)
		return NERR_OK;
	snprintf(key, sizeof(key), "%s\x1f%s", id, name);
	f = map_get(&rt->fields, key);
	if (!f || f->version != ver) {
		struct tmpl_options opt = {0};
		struct tmpl *c = NULL;
		enum nerr rc;

		opt.html_escape = html;
		rc = tmpl_compile(src, strlen(src), &opt, &c, msg);
		if (rc)
			return rc;
		if (!f) {
			f = xcalloc(1, sizeof(*f));
			map_put(&rt->fields, key, f);
		}
		tmpl_free(f->t);
		f->t = c;
		f->version = ver;
	}
	return render(rt, f->t, ctx, now_ms, out, msg);
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* The address a message goes to, or NULL; *owned receives what to free. */
static const char *recipient(struct evctx *ec, enum journey_channel ch, char **owned)
{
	struct json_object *traits, *v, *full = NULL, *addr, *push;

	*owned = NULL;
	if (ch == JOURNEY_CHANNEL_EMAIL || ch == JOURNEY_CHANNEL_SMS) {
		const char *want = ch == JOURNEY_CHANNEL_EMAIL ? "email" : "phone";

		if (json_object_object_get_ex(ev_profile(ec), "traits", &traits) &&
		    json_object_object_get_ex(traits, want, &v) &&
		    json_object_is_type(v, json_type_string) &&
		    json_object_get_string_len(v)) {
			char *a = xstrdup(json_object_get_string(v)), *p;

			if (ch == JOURNEY_CHANNEL_EMAIL) {
				for (p = a; *p; p++)
					if (*p >= 'A' && *p <= 'Z')
						*p = (char)(*p - 'A' + 'a');
			} else {
				/* E.164: keep + and digits. */
				char *w = a;

				for (p = a; *p; p++)
					if ((*p >= '0' && *p <= '9') ||
					    (*p == '+' && w == a))
						*w++ = *p;
				*w = '\0';
				if (a[0] != '+' || strlen(a) < 9 || strlen(a) > 16) {
					free(a);
					return NULL;
				}
			}
			*owned = a;
			return a;
		}
		return NULL;
	}
	/* push: the most recently seen device token */
	if (profile_get_json(ec->rt->s, ec->jb->b, ec->pid, &full) != NERR_OK)
		return NULL;
	if (json_object_object_get_ex(full, "addresses", &addr) &&
	    json_object_object_get_ex(addr, "push", &push)) {
		const char *best = NULL, *best_seen = "";

		for (size_t i = 0; json_object_is_type(push, json_type_array) &&
				   i < json_object_array_length(push);
		     i++) {
			struct json_object *d = json_object_array_get_idx(push, i);
			const char *tok = jstr(d, "token"), *seen = jstr(d, "updated_at");

			if (!seen)
				seen = "";
			if (tok && (!best || strcmp(seen, best_seen) > 0)) {
				best = tok;
				best_seen = seen;
			}
		}
		if (best)
			*owned = xstrdup(best);
	}
	json_object_put(full);
	return *owned;
}

static bool suppressed(struct journey_batch *jb, const char *channel, const char *addr)
{
	struct buf k;
	char *v = NULL;
	size_t vl;
	bool hit;

	buf_init(&k, 0);
	buf_printf(&k, "%s:%s", channel, addr);
	hit = store_batch_get(jb->b, STORE_CF_SUPPRESSION, k.data, k.len, &v, &vl) ==
	      NERR_OK;
	free(v);
	buf_fini(&k);
	return hit;
}

/* Records why a message was not sent; the instance goes on. */
static void exclude(struct journey_batch *jb, struct inst *in,
		    const struct journey_step *st, const char *reason, const char *detail)
{
	struct json_object *r = step_results(in, st->id);
	enum report_counter c = REPORT_EXCLUDED_RENDER_ERROR;

	report_exclusion_counter(reason, &c);
	rcount(jb, in, st, NULL, c, 1);

	json_object_object_add(r, "excluded", json_object_new_string(reason));
	if (detail)
		json_object_object_add(r, "error", json_object_new_string(detail));
	metrics_add(exclusion_metric(reason), 1);
	log_debug("journey", "msg=\"message excluded\" journey=%s step=%s reason=%s",
		  in->jr->id, st->id, reason);
}

/*
 * A message step: picks the address, applies suppression and consent, renders
 * the channel's template, and stores the envelope (sent after commit).
 */
static void step_message(struct journey_rt *rt, struct journey_batch *jb,
			 struct evctx *ec, struct inst *in, int idx, int64_t visit,
			 int64_t *delayed_until)
{
	const struct journey_step *st = &in->def->steps[idx];
	const struct journey_message *m = &st->u.message;
	const char *chname = journey_channel_name(m->channel);
	struct json_object *doc, *env = NULL, *ctx, *msgo, *body = NULL;
	struct nerr_msg msg = {"", ""};
	struct buf b, unsub;
	char id[33], *owned = NULL;
	const char *to;
	bool present;
	enum nerr rc = NERR_OK;

	envelope_id(in, idx, visit, id);
	if (!json_object_object_get_ex(in->o, "delay_first_ms", NULL)) /* not a retry */
		rcount(jb, in, st, NULL, REPORT_TARGETED, 1);
	doc = jb_get_json(jb, STORE_CF_TEMPLATES, m->template_id, strlen(m->template_id));
	if (!doc || !jstr(doc, "channel") || strcmp(jstr(doc, "channel"), chname) != 0) {
		exclude(jb, in, st, "no_template", m->template_id);
		json_object_put(doc);
		return;
	}
	to = recipient(ec, m->channel, &owned);
	if (!to) {
		exclude(jb, in, st, "no_address", NULL);
		json_object_put(doc);
		return;
	}
	/* Order of DESIGN.md §10: suppression, then consent. */
	if (suppressed(jb, chname, to)) {
		exclude(jb, in, st, "suppressed", NULL);
		goto out;
	}
	if (!cb_consent(ec, chname, m->category)) {
		exclude(jb, in, st, "no_consent", NULL);
		goto out;
	}
	/* Caps, quiet hours and throttles (src/govern). */
	if (rt->cfg.govern) {
		struct govern_msg gm = {0};
		struct govern_decision gd;
		struct json_object *tz;

		gm.channel = chname;
		gm.category = m->category;
		gm.profile_id = ec->pid;
		gm.timezone =
			json_object_object_get_ex(ev_profile(ec), "timezone", &tz) &&
					json_object_is_type(tz, json_type_string)
				? json_object_get_string(tz)
				: NULL;
		gm.journey_id = in->jr->id;
		gm.step_id = st->id;
		gm.now_ms = jb->now_ms;
		gm.first_try_ms = jint(in->o, "delay_first_ms", jb->now_ms);
		gm.throttle_slot_ms = jint(in->o, "throttle_slot_ms", 0);
		govern_decide(rt->cfg.govern, jb->b, &gm, &gd);
		json_object_object_del(in->o, "throttle_slot_ms");
		if (gd.verdict == GOVERN_EXCLUDE) {
			json_object_object_del(in->o, "delay_first_ms");
			exclude(jb, in, st, gd.reason, gd.rule_id);
			goto out;
		}
		if (gd.verdict == GOVERN_DELAY) {
			/* Park on this step; the timer brings it back to decide again. */
			if (!json_object_object_get_ex(in->o, "delay_first_ms", NULL))
				json_object_object_add(in->o, "delay_first_ms",
						       json_object_new_int64(jb->now_ms));
			if (strcmp(gd.reason, GOVERN_REASON_THROTTLED) == 0)
				json_object_object_add(
					in->o, "throttle_slot_ms",
					json_object_new_int64(gd.until_ms));
			json_object_object_add(step_results(in, st->id), "delayed",
					       json_object_new_string(gd.reason));
			*delayed_until = gd.until_ms;
			goto out;
		}
		json_object_object_del(in->o, "delay_first_ms");
	}
	buf_init(&unsub, 2048);
	if (rt->cfg.unsubscribe_url)
		rt->cfg.unsubscribe_url(rt->cfg.track_ud, id, &unsub);
	ctx = render_ctx(ec, in, id);
	json_object_object_get_ex(ctx, "message", &msgo);
	json_object_object_add(msgo, "unsubscribe_url",
			       json_object_new_string(buf_str(&unsub)));
	json_object_object_add(msgo, "channel", json_object_new_string(chname));
	body = json_object_new_object();
	buf_init(&b, 4 << 20);
	static const struct {
		enum journey_channel ch;
		const char *field;
		bool html, header;
	} fields[] = {
		{JOURNEY_CHANNEL_EMAIL, "from", false, true},
		{JOURNEY_CHANNEL_EMAIL, "reply_to", false, true},
		{JOURNEY_CHANNEL_EMAIL, "subject", false, true},
		{JOURNEY_CHANNEL_EMAIL, "html", true, false},
		{JOURNEY_CHANNEL_EMAIL, "text", false, false},
		{JOURNEY_CHANNEL_SMS, "body", false, false},
		{JOURNEY_CHANNEL_PUSH, "title", false, false},
		{JOURNEY_CHANNEL_PUSH, "body", false, false},
		{JOURNEY_CHANNEL_PUSH, "image", false, true},
	};
	for (size_t f = 0; !rc && f < sizeof(fields) / sizeof(fields[0]); f++) {
		if (fields[f].ch != m->channel)
			continue;
		buf_reset(&b);
		rc = render_field(rt, doc, m->template_id, fields[f].field,
				  fields[f].html, ctx, jb->now_ms, &b, &present, &msg);
		if (rc || !present)
			continue;
		if (fields[f].header && has_ctl(buf_str(&b))) {
			rc = nerr_set(&msg, NERR_INVAL, fields[f].field,
				      "%s contains a line break or control character",
				      fields[f].field);
			break;
		}
		if (fields[f].html && rt->cfg.rewrite_html &&
		    jint(doc, "tracking", 1) != 0) {
			struct buf rw;

			buf_init(&rw, 8 << 20);
			rt->cfg.rewrite_html(rt->cfg.track_ud, id, buf_str(&b), b.len,
					     &rw);
			json_object_object_add(
				body, fields[f].field,
				json_object_new_string_len(buf_str(&rw), (int)rw.len));
			buf_fini(&rw);
		} else {
			json_object_object_add(
				body, fields[f].field,
				json_object_new_string_len(buf_str(&b), (int)b.len));
		}
	}
	/* Extra email headers and push data: objects of Liquid strings. */
	{
		struct json_object *obj;
		const char *okey = m->channel == JOURNEY_CHANNEL_EMAIL	? "headers"
				   : m->channel == JOURNEY_CHANNEL_PUSH ? "data"
									: NULL;

		if (!rc && okey && json_object_object_get_ex(doc, okey, &obj) &&
		    json_object_is_type(obj, json_type_object)) {
			struct json_object *outo = json_object_new_object();

			json_object_object_foreach(obj, hk, hv)
			{
				struct tmpl *t = NULL;
				struct tmpl_options opt = {0};
				const char *src = json_object_get_string(hv);

				if (rc)
					break;
				buf_reset(&b);
				rc = tmpl_compile(src, strlen(src), &opt, &t, &msg);
				if (!rc)
					rc = render(rt, t, ctx, jb->now_ms, &b, &msg);
				tmpl_free(t);
				if (!rc && m->channel == JOURNEY_CHANNEL_EMAIL &&
				    (has_ctl(buf_str(&b)) || has_ctl(hk)))
					rc = nerr_set(&msg, NERR_INVAL, hk,
						      "header %s contains a line break",
						      hk);
				if (!rc)
					json_object_object_add(
						outo, hk,
						json_object_new_string(buf_str(&b)));
			}
			json_object_object_add(body, okey, outo);
		}
	}
	buf_fini(&b);
	json_object_put(ctx);
	if (m->channel == JOURNEY_CHANNEL_EMAIL && !rc && has_ctl(to))
		rc = nerr_set(&msg, NERR_INVAL, "to",
			      "the address contains a control character");
	if (rc) {
		exclude(jb, in, st, rc == NERR_INVAL ? "invalid_header" : "render_error",
			msg.message);
		buf_fini(&unsub);
		goto out;
	}
	if (m->channel == JOURNEY_CHANNEL_EMAIL) {
		if (!json_object_object_get_ex(body, "from", NULL) &&
		    rt->cfg.default_from)
			json_object_object_add(
				body, "from",
				json_object_new_string(rt->cfg.default_from));
		if (unsub.len)
			json_object_object_add(body, "list_unsubscribe_url",
					       json_object_new_string(buf_str(&unsub)));
		json_object_object_add(
			body, "one_click",
			json_object_new_boolean(strcmp(m->category, "transactional") !=
						0));
	}
	buf_fini(&unsub);

	env = json_object_new_object();
	json_object_object_add(env, "id", json_object_new_string(id));
	json_object_object_add(env, "kind", json_object_new_string(chname));
	json_object_object_add(env, "state", json_object_new_string("pending"));
	json_object_object_add(env, "channel", json_object_new_string(chname));
	json_object_object_add(env, "template", json_object_new_string(m->template_id));
	json_object_object_add(env, "template_version",
			       json_object_new_int64(jint(doc, "version", 0)));
	json_object_object_add(env, "category", json_object_new_string(m->category));
	json_object_object_add(env, "to", json_object_new_string(to));
	json_object_object_add(env, "message", body);
	body = NULL;
	envelope_origin(env, in, st, visit);
	json_object_object_add(env, "profile", json_object_new_int64((int64_t)ec->pid));
	json_object_object_add(env, "created_ms", json_object_new_int64(jb->now_ms));
	jb_put_json(jb, STORE_CF_OUTBOX, id, 32, env);
	queue_send(jb, env);
	json_object_object_add(step_results(in, st->id), "envelope",
			       json_object_new_string(id));
	index_envelope(jb, ec->pid, id);
	metrics_add(&m_envelopes_msg, 1);
	observe_decision(ec);
	rcount(jb, in, st, NULL, REPORT_SENT, 1);
	json_object_object_add(in->o, "lt", json_object_new_int(idx)); /* last touch */
	if (jb->report && ec->event && jstr(ec->event, "receivedAt")) {
		int64_t t;
		struct report_dims d = {.journey = in->jr->id,
					.version = (unsigned)jint(in->o, "v", 0),
					.step = st->id,
					.template_id = m->template_id,
					.channel = chname};

		if (clock_parse_rfc3339(jstr(ec->event, "receivedAt"), &t) == 0)
			report_latency(jb->report, &d, REPORT_LAT_EVENT_TO_DECISION,
				       (double)(clock_wall_ms() - t) / 1000.0);
	}
out:
	json_object_put(body);
	json_object_put(env);
	json_object_put(doc);
	free(owned);
}

/* Deterministic split: the same profile always takes the same arm of a journey. */
static int split_pick(struct inst *in, const struct journey_step *st,
		      const char **arm_name)
{
	char seed[128];
	unsigned char md[SHA256_DIGEST_LENGTH];
	uint64_t h, pick;

	snprintf(seed, sizeof(seed), "%s:%s:%llu", in->jr->id, st->id,
		 (unsigned long long)in->pid);
	SHA256((const unsigned char *)seed, strlen(seed), md);
	h = store_get_u64(md);
	pick = h % st->u.split.total_weight;
	for (unsigned i = 0; i < st->u.split.narms; i++) {
		if (pick < st->u.split.arms[i].weight) {
			*arm_name = st->u.split.arms[i].name;
			return st->u.split.arms[i].next;
		}
		pick -= st->u.split.arms[i].weight;
	}
	*arm_name = st->u.split.arms[st->u.split.narms - 1].name;
	return st->u.split.arms[st->u.split.narms - 1].next;
}

static bool enter_journey(struct journey_rt *rt, struct journey_batch *jb,
			  struct evctx *ec, struct jrec *jr,
			  struct json_object *entry_event, bool check_when);

/*
 * Applies traits to the profile through a synthetic identify on one of its
 * identities, so trait timestamps, consent and history follow the usual rules.
 * Takes ownership of traits.
 */
static void apply_traits(struct journey_rt *rt, struct journey_batch *jb,
			 struct evctx *ec, struct json_object *traits, const char *mid)
{
	struct json_object *ev, *ids, *arr;
	const char *ns_field = NULL, *value = NULL;
	struct profile_result res;
	struct nerr_msg msg;
	char ts[32];
	enum nerr rc;

	if (json_object_object_get_ex(ev_profile(ec), "identities", &ids)) {
		if (json_object_object_get_ex(ids, "user_id", &arr) &&
		    json_object_array_length(arr)) {
			ns_field = "userId";
			value = json_object_get_string(json_object_array_get_idx(arr, 0));
		} else if (json_object_object_get_ex(ids, "anonymous_id", &arr) &&
			   json_object_array_length(arr)) {
			ns_field = "anonymousId";
			value = json_object_get_string(json_object_array_get_idx(arr, 0));
		}
	}
	if (!ns_field || !rt->cfg.profile) {
		json_object_put(traits);
		return;
	}
	ev = json_object_new_object();
	json_object_object_add(ev, "type", json_object_new_string("identify"));
	json_object_object_add(ev, ns_field, json_object_new_string(value));
	json_object_object_add(ev, "traits", traits);
	clock_format_rfc3339(jb->now_ms, ts);
	json_object_object_add(ev, "timestamp", json_object_new_string(ts));
	json_object_object_add(ev, "messageId", json_object_new_string(mid));
	rc = profile_apply_event(jb->b, rt->cfg.profile, ev, jb->seq, jb->now_ms,
				 jb->now_ms, &res, &msg);
	if (rc == NERR_IO)
		jb->io_failed = true; /* part of the update may be in the batch */
	if (rc != NERR_OK)
		log_warn("journey", "msg=\"profile update failed\" reason=\"%s\"",
			 msg.message);
	else if (rt->cfg.on_traits_changed)
		rt->cfg.on_traits_changed(rt->cfg.hook_ud, res.profile_id);
	json_object_put(ev);
	/* Later conditions see the new traits. */
	json_object_put(ec->profile);
	ec->profile = NULL;
}

static void step_update_profile(struct journey_rt *rt, struct journey_batch *jb,
				struct evctx *ec, struct inst *in,
				const struct journey_step *st)
{
	struct json_object *traits = json_object_new_object();
	const struct journey_update_profile *u = &st->u.update_profile;
	char mid[96];

	for (unsigned i = 0; i < u->nset; i++) {
		struct expr_value out;

		if (eval(ec, in, u->set[i].value.prog, &out) == NERR_OK)
			json_object_object_add(traits, u->set[i].trait,
					       expr_value_to_json(&out));
	}
	for (unsigned i = 0; i < u->nunset; i++)
		json_object_object_add(traits, u->unset[i], NULL);
	snprintf(mid, sizeof(mid), "journey-%lld-%s", (long long)jint(in->o, "iid", 0),
		 st->id);
	apply_traits(rt, jb, ec, traits, mid);
}

/* Runs the instance from its current step until it waits or ends, then saves. */
static void run(struct journey_rt *rt, struct journey_batch *jb, struct evctx *ec,
		struct inst *in)
{
	int idx = (int)jint(in->o, "step", 0);
	const struct journey_step *prev = NULL;
	bool again = jint(in->o, "wd", 0) != 0; /* a delayed message step runs again */

	json_object_object_del(in->o, "wd");
	leave_wait(jb, in, !again);
	for (unsigned n = 0;; n++) {
		const struct journey_step *st;
		int64_t visit;

		if (prev)
			rcount(jb, in, prev, NULL, REPORT_COMPLETED, 1);
		prev = NULL;

		if (in->jr->status == JS_STOPPED) {
			inst_end(rt, jb, in, "stopped");
			break;
		}
		if (idx < 0) {
			inst_end(rt, jb, in, "completed");
			break;
		}
		if (n >= rt->cfg.max_steps_per_event ||
		    (unsigned)idx >= in->def->nsteps) {
			log_warn("journey",
				 "msg=\"too many steps without a wait; ended\" "
				 "journey=%s profile=%llu",
				 in->jr->id, (unsigned long long)in->pid);
			inst_end(rt, jb, in, "error");
			break;
		}
		st = &in->def->steps[idx];
		if ((st->kind == JOURNEY_STEP_MESSAGE ||
		     st->kind == JOURNEY_STEP_WEBHOOK) &&
		    in->jr->status == JS_PAUSED) {
			struct buf k;

			json_object_object_add(in->o, "step", json_object_new_int(idx));
			inst_set_state(in, "parked");
			buf_init(&k, 0);
			index_p_key(&k, in);
			store_batch_put(jb->b, STORE_CF_INDEX, k.data, k.len, "", 0);
			buf_fini(&k);
			break;
		}
		visit = jint(in->o, "visit", 0) + 1;
		json_object_object_add(in->o, "visit", json_object_new_int64(visit));
		json_object_object_add(in->o, "step", json_object_new_int(idx));
		inst_set_state(in, "run");
		if (st->kind != JOURNEY_STEP_SPLIT && !(n == 0 && again))
			rcount(jb, in, st, NULL, REPORT_ENTERED, 1);
		prev = st;
		switch (st->kind) {
		case JOURNEY_STEP_BRANCH: {
			int next = st->else_next;

			for (unsigned i = 0; i < st->u.branch.narms; i++)
				if (holds(ec, in, &st->u.branch.arms[i].when)) {
					next = st->u.branch.arms[i].next;
					break;
				}
			idx = next;
			continue;
		}
		case JOURNEY_STEP_WAIT: {
			const struct journey_wait *w = &st->u.wait;
			int64_t due = INT64_MIN;

			if (w->mode == JOURNEY_WAIT_DURATION) {
				due = jb->now_ms + w->duration_ms;
			} else if (w->mode == JOURNEY_WAIT_UNTIL) {
				struct expr_value out;

				if (eval(ec, in, w->until.prog, &out) == NERR_OK &&
				    out.kind == EXPR_TIMESTAMP)
					due = out.as.sec * 1000 + out.nsec / 1000000;
				else {
					inst_end(rt, jb, in, "error");
					goto out;
				}
			} else {
				const char *zone = w->zone;
				struct json_object *tz;

				if (!zone &&
				    json_object_object_get_ex(ev_profile(ec), "timezone",
							      &tz) &&
				    json_object_is_type(tz, json_type_string))
					zone = json_object_get_string(tz);
				if (!zone)
					zone = in->def->timezone ? in->def->timezone
								 : "UTC";
				due = next_local_time(jb->now_ms, zone, w->minute_of_day,
						      w->days_mask);
				if (due == INT64_MIN)
					due = next_local_time(jb->now_ms, "UTC",
							      w->minute_of_day,
							      w->days_mask);
			}
			if (due <= jb->now_ms) {
				idx = st->next;
				continue;
			}
			set_timer(jb, in, due);
			inst_set_state(in, "wait");
			rcount(jb, in, st, NULL, REPORT_IN_STEP, 1);
			json_object_object_add(in->o, "ws", json_object_new_int(idx));
			goto out;
		}
		case JOURNEY_STEP_WAIT_FOR: {
			const struct journey_wait_for *w = &st->u.wait_for;

			set_timer(jb, in, jb->now_ms + w->timeout_ms);
			if (w->mode == JOURNEY_WAIT_FOR_EVENT)
				set_wait(jb, in, w->event);
			inst_set_state(in, "wait_for");
			rcount(jb, in, st, NULL, REPORT_IN_STEP, 1);
			json_object_object_add(in->o, "ws", json_object_new_int(idx));
			goto out;
		}
		case JOURNEY_STEP_SPLIT: {
			const char *arm = NULL;

			idx = split_pick(in, st, &arm);
			json_object_object_add(step_results(in, st->id), "arm",
					       json_object_new_string(arm));
			json_object_object_add(in->o, "arm", json_object_new_string(arm));
			rcount(jb, in, st, arm, REPORT_ENTERED, 1);
			continue;
		}
		case JOURNEY_STEP_MESSAGE: {
			int64_t until = 0;

			step_message(rt, jb, ec, in, idx, visit, &until);
			if (until) {
				set_timer(jb, in, until);
				inst_set_state(in, "delayed");
				/* Waits in this step; the timer runs the step again. */
				rcount(jb, in, st, NULL, REPORT_IN_STEP, 1);
				json_object_object_add(in->o, "ws",
						       json_object_new_int(idx));
				json_object_object_add(in->o, "wd",
						       json_object_new_int(1));
				goto out;
			}
			idx = st->next;
			continue;
		}
		case JOURNEY_STEP_WEBHOOK:
			if (step_webhook(rt, jb, ec, in, idx, visit)) {
				inst_set_state(in, "webhook");
				rcount(jb, in, st, NULL, REPORT_IN_STEP, 1);
				json_object_object_add(in->o, "ws",
						       json_object_new_int(idx));
				goto out;
			}
			idx = st->on_failure >= 0 ? st->on_failure : st->next;
			continue;
		case JOURNEY_STEP_UPDATE_PROFILE:
			step_update_profile(rt, jb, ec, in, st);
			idx = st->next;
			continue;
		case JOURNEY_STEP_JUMP: {
			struct jrec *target = jrec_get(rt, st->u.jump.journey_id, false);
			struct json_object *entry = NULL;

			json_object_object_get_ex(in->o, "entry", &entry);
			if (target && target->status == JS_ACTIVE)
				enter_journey(rt, jb, ec, target, entry, false);
			idx = st->next;
			continue;
		}
		case JOURNEY_STEP_END:
		default:
			inst_end(rt, jb, in, "completed");
			goto out;
		}
	}
out:
	inst_save(rt, jb, in);
}

/* ------------------------------------------------------------------ entry */

static bool enter_journey(struct journey_rt *rt, struct journey_batch *jb,
			  struct evctx *ec, struct jrec *jr,
			  struct json_object *entry_event, bool check_when)
{
	struct journey_def *d = jrec_version(jr, jr->current);
	struct inst in;
	struct buf key, rk, jk;
	char *v = NULL;
	size_t vl = 0;
	struct expr_value out;
	unsigned char tv[8];

	if (!d)
		return false;
	memset(&in, 0, sizeof(in));
	in.jr = jr;
	in.def = d;
	in.pid = ec->pid;
	if (check_when && !holds(ec, NULL, &d->entry.when))
		return false;
	buf_init(&key, 1024);
	if (d->entry.key.prog) {
		if (eval(ec, NULL, d->entry.key.prog, &out) != NERR_OK) {
			buf_fini(&key);
			return false;
		}
		if (out.kind == EXPR_STRING)
			buf_append(&key, out.as.s, out.len);
		else
			expr_value_format(&out, &key);
	}
	buf_init(&in.key, 0);
	inst_key(&in.key, ec->pid, jr->id, buf_str(&key));
	buf_fini(&key);
	/* One active instance per (journey, profile[, key]). */
	if (store_batch_get(jb->b, STORE_CF_INSTANCES, in.key.data, in.key.len, &v,
			    &vl) == NERR_OK) {
		free(v);
		buf_fini(&in.key);
		return false;
	}
	buf_init(&rk, 0);
	reentry_key(&rk, &in);
	if (store_batch_get(jb->b, STORE_CF_INDEX, rk.data, rk.len, &v, &vl) == NERR_OK) {
		int64_t last = vl == 8 ? (int64_t)store_get_u64(v) : 0;

		free(v);
		if (!d->reentry.allow || (d->reentry.after_ms > 0 &&
					  jb->now_ms - last < d->reentry.after_ms)) {
			buf_fini(&rk);
			buf_fini(&in.key);
			return false;
		}
	}
	if (rt->cfg.govern) {
		const char *rule = NULL;

		if (!govern_entry_allowed(rt->cfg.govern, jb->b, jr->id, ec->pid,
					  jb->now_ms, &rule)) {
			metrics_add(&m_ex_entry_capped, 1);
			buf_fini(&rk);
			buf_fini(&in.key);
			return false;
		}
	}
	store_put_u64(tv, (uint64_t)jb->now_ms);
	store_batch_put(jb->b, STORE_CF_INDEX, rk.data, rk.len, tv, 8);
	buf_fini(&rk);

	in.o = json_object_new_object();
	json_object_object_add(in.o, "j", json_object_new_string(jr->id));
	json_object_object_add(in.o, "v", json_object_new_int64(jr->current));
	json_object_object_add(in.o, "iid",
			       json_object_new_int64((int64_t)rt->next_iid++));
	json_object_object_add(in.o, "visit", json_object_new_int64(0));
	json_object_object_add(in.o, "step", json_object_new_int((int)d->start));
	json_object_object_add(in.o, "entered", json_object_new_int64(jb->now_ms));
	json_object_object_add(in.o, "entry", json_object_get(entry_event));
	json_object_object_add(in.o, "steps", json_object_new_object());
	rt->iid_dirty = true; /* written once per batch by journey_rt_flush() */
	buf_init(&jk, 0);
	index_j_key(&jk, &in);
	store_batch_put(jb->b, STORE_CF_INDEX, jk.data, jk.len, "", 0);
	buf_fini(&jk);
	metrics_add(&m_entered, 1);
	rcount(jb, &in, NULL, NULL, REPORT_ENTERED, 1);
	if (jb->report && ec->event && jstr(ec->event, "receivedAt")) {
		int64_t t;
		struct report_dims rd = {.journey = jr->id,
					 .version = (unsigned)jint(in.o, "v", 0)};

		if (clock_parse_rfc3339(jstr(ec->event, "receivedAt"), &t) == 0)
			report_latency(jb->report, &rd, REPORT_LAT_EVENT_TO_ENTRY,
				       (double)(clock_wall_ms() - t) / 1000.0);
	}
	log_debug("journey", "msg=entered journey=%s profile=%llu", jr->id,
		  (unsigned long long)ec->pid);
	run(rt, jb, ec, &in);
	inst_free(&in);
	return true;
}

/* ------------------------------------------------------------------ events */

/*
 * The goal of in's journey for event `name`: when it matches within the window
 * and the instance has not converted yet, records the conversion (value, last
 * touch, split arm) on the instance and in the report. Returns true if so.
 */
static bool goal_reached(struct journey_rt *rt, struct journey_batch *jb,
			 struct evctx *ec, struct inst *in, const char *name)
{
	int64_t entered = jint(in->o, "entered", 0);
	struct expr_value out;
	struct json_object *val = NULL;

	if (!in->def->has_goal || strcmp(in->def->goal.event, name) != 0 ||
	    jint(in->o, "converted", 0))
		return false;
	if (in->def->goal.within_ms != 0 &&
	    jb->now_ms - entered > in->def->goal.within_ms)
		return false;
	if (!holds(ec, in, &in->def->goal.when))
		return false;
	if (in->def->goal.value.prog &&
	    eval(ec, in, in->def->goal.value.prog, &out) == NERR_OK)
		val = expr_value_to_json(&out);
	json_object_object_add(in->o, "converted", json_object_new_int(1));
	json_object_object_add(in->o, "conversion_value", val);
	json_object_object_add(in->o, "converted_ms", json_object_new_int64(jb->now_ms));
	metrics_add(&m_conversions, 1);
	{
		int lt = (int)jint(in->o, "lt", -1);
		const struct journey_step *touch =
			lt >= 0 && (unsigned)lt < in->def->nsteps ? &in->def->steps[lt]
								  : NULL;
		const char *arm = jstr(in->o, "arm");

		rcount(jb, in, touch, arm, REPORT_CONVERSIONS, 1);
		if (val && (json_object_is_type(val, json_type_int) ||
			    json_object_is_type(val, json_type_double)))
			rcount(jb, in, touch, arm, REPORT_CONVERSION_VALUE,
			       json_object_get_double(val));
	}
	return true;
}

/*
 * Goals outlive their instance: an instance that ends before converting leaves a
 * watch record ("g" + instance key -> instance JSON) until its goal window
 * closes, so an order placed after the last message still counts (last touch).
 */
static void goal_watch(struct journey_batch *jb, struct inst *in)
{
	struct buf k;
	size_t len;
	const char *txt;

	if (!in->def->has_goal || in->def->goal.within_ms == 0 ||
	    jint(in->o, "converted", 0) ||
	    jb->now_ms - jint(in->o, "entered", 0) > in->def->goal.within_ms)
		return;
	buf_init(&k, 0);
	buf_putc(&k, 'g');
	buf_append(&k, in->key.data, in->key.len);
	txt = json_object_to_json_string_length(in->o, JSON_C_TO_STRING_PLAIN, &len);
	store_batch_put(jb->b, STORE_CF_INDEX, k.data, k.len, txt, len);
	buf_fini(&k);
}

/* Conversions of ended instances still within their goal window. */
static void check_goal_watches(struct journey_rt *rt, struct journey_batch *jb,
			       struct evctx *ec, const char *name)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_INDEX);
	unsigned char p[9];
	struct buf keys;

	p[0] = 'g';
	store_put_u64(p + 1, ec->pid);
	buf_init(&keys, 0);
	for (store_iter_seek(it, p, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		uint32_t l32 = (uint32_t)kl;

		if (kl < 9 || memcmp(k, p, 9) != 0)
			break;
		buf_append(&keys, &l32, 4);
		buf_append(&keys, k, kl);
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		const char *k;
		struct inst in;
		char idbuf[80];
		const char *jid, *key;
		size_t keylen;

		memcpy(&kl, keys.data + off, 4);
		k = keys.data + off + 4;
		off += 4 + kl;
		memset(&in, 0, sizeof(in));
		buf_init(&in.key, 0);
		buf_append(&in.key, k + 1, kl - 1);
		in.o = jb_get_json(jb, STORE_CF_INDEX, k, kl);
		if (!in.o || !inst_key_parts(in.key.data, in.key.len, &in.pid, &jid, &key,
					     &keylen)) {
			store_batch_delete(jb->b, STORE_CF_INDEX, k, kl);
			inst_free(&in);
			continue;
		}
		snprintf(idbuf, sizeof(idbuf), "%s", jid);
		in.jr = jrec_get(rt, idbuf, false);
		in.def = jrec_version(in.jr, (unsigned)jint(in.o, "v", 0));
		in.ended = true; /* nothing may save it back as a live instance */
		if (!in.def || !in.def->has_goal ||
		    jb->now_ms - jint(in.o, "entered", 0) > in.def->goal.within_ms) {
			store_batch_delete(jb->b, STORE_CF_INDEX, k,
					   kl); /* window closed */
		} else if (goal_reached(rt, jb, ec, &in, name)) {
			store_batch_delete(jb->b, STORE_CF_INDEX, k, kl);
		}
		inst_free(&in);
	}
	buf_fini(&keys);
}

/* Exit criteria and goals on every instance of the profile. */
static void profile_instances(struct journey_rt *rt, struct journey_batch *jb,
			      uint64_t pid, struct buf *keys);

static void check_exits_goals(struct journey_rt *rt, struct journey_batch *jb,
			      struct evctx *ec, const char *name)
{
	struct buf keys;

	/* Collect keys first: ending instances writes to the batch we iterate. */
	buf_init(&keys, 0);
	profile_instances(rt, jb, ec->pid, &keys);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		struct inst in;

		memcpy(&kl, keys.data + off, 4);
		off += 4;
		if (!inst_load(rt, jb, keys.data + off, kl, &in)) {
			off += kl;
			continue;
		}
		off += kl;
		bool dirty = false;
		for (unsigned e = 0; e < in.def->nexits && !in.ended; e++)
			if (strcmp(in.def->exits[e].event, name) == 0 &&
			    holds(ec, &in, &in.def->exits[e].when))
				inst_end(rt, jb, &in, "exit");
		if (!in.ended && goal_reached(rt, jb, ec, &in, name))
			dirty = true;
		if (dirty)
			inst_save(rt, jb, &in);
		inst_free(&in);
	}
	buf_fini(&keys);
}

/* wait_for steps waiting for this event name. */
static void check_waits(struct journey_rt *rt, struct journey_batch *jb, struct evctx *ec,
			const char *name)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_WAITS);
	struct buf prefix, keys;

	buf_init(&prefix, 0);
	buf_init(&keys, 0);
	{
		unsigned char p[8];

		store_put_u64(p, ec->pid);
		buf_append(&prefix, p, 8);
		buf_puts(&prefix, name);
		buf_putc(&prefix, '\0');
	}
	for (store_iter_seek(it, prefix.data, prefix.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		uint32_t l32;

		if (kl < prefix.len || memcmp(k, prefix.data, prefix.len) != 0)
			break;
		/* instance key = pid + rest after the event name */
		l32 = (uint32_t)(8 + kl - prefix.len);
		buf_append(&keys, &l32, 4);
		buf_append(&keys, k, 8);
		buf_append(&keys, k + prefix.len, kl - prefix.len);
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		struct inst in;

		memcpy(&kl, keys.data + off, 4);
		off += 4;
		if (!inst_load(rt, jb, keys.data + off, kl, &in)) {
			off += kl;
			continue;
		}
		off += kl;
		int idx = (int)jint(in.o, "step", -1);
		const struct journey_step *st = idx >= 0 && (unsigned)idx < in.def->nsteps
							? &in.def->steps[idx]
							: NULL;

		if (st && st->kind == JOURNEY_STEP_WAIT_FOR &&
		    strcmp(inst_state(&in), "wait_for") == 0 &&
		    holds(ec, &in, &st->u.wait_for.when)) {
			clear_timer(jb, &in);
			clear_wait(jb, &in);
			json_object_object_add(in.o, "step",
					       json_object_new_int(st->on_event));
			run(rt, jb, ec, &in);
		}
		inst_free(&in);
	}
	buf_fini(&keys);
	buf_fini(&prefix);
}

bool journey_rt_wants_event(const struct journey_rt *rt, struct json_object *event)
{
	const char *type = jstr(event, "type"), *name = jstr(event, "event");

	return type && strcmp(type, "track") == 0 && name &&
	       (map_get(&rt->waiting, name) || map_get(&rt->waits_for, name) ||
		map_get(&rt->entry, name));
}

void journey_rt_on_event(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid,
			 struct json_object *event)
{
	const char *name = jstr(event, "event");
	struct evctx ec;
	struct jlist *l;

	if (!journey_rt_wants_event(rt, event))
		return;
	evctx_init(&ec, rt, jb, pid, event);
	if (map_get(&rt->waiting, name)) {
		check_exits_goals(rt, jb, &ec, name);
		check_goal_watches(rt, jb, &ec, name);
	}
	/* Only a version's wait_for step writes a wait record (a merge copies
	 * one): no version waits for this name, no record can match, and the
	 * iterator (the largest cost of an event no journey uses) is skipped. */
	if (map_get(&rt->waits_for, name))
		check_waits(rt, jb, &ec, name);
	l = map_get(&rt->entry, name);
	for (unsigned i = 0; l && i < l->n; i++)
		enter_journey(rt, jb, &ec, l->items[i], event, true);
	evctx_fini(&ec);
}

bool journey_rt_on_audience(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid,
			    const char *audience, bool entered)
{
	char key[JOURNEY_MAX_ID_BYTES + 8];
	struct jlist *l;
	struct json_object *ev, *props;
	struct evctx ec;
	char ts[40];
	bool any = false;

	snprintf(key, sizeof(key), "%s\x1f%s", audience, entered ? "enter" : "exit");
	l = map_get(&rt->aud_entry, key);
	if (!l)
		return false;
	/* The instance sees a synthetic track event (docs/journeys.md). */
	ev = json_object_new_object();
	props = json_object_new_object();
	clock_format_rfc3339(jb->now_ms, ts);
	json_object_object_add(ev, "type", json_object_new_string("track"));
	json_object_object_add(
		ev, "event",
		json_object_new_string(entered ? "Audience Entered" : "Audience Exited"));
	json_object_object_add(props, "audience", json_object_new_string(audience));
	json_object_object_add(ev, "properties", props);
	json_object_object_add(ev, "timestamp", json_object_new_string(ts));
	evctx_init(&ec, rt, jb, pid, ev);
	for (unsigned i = 0; i < l->n; i++)
		any |= enter_journey(rt, jb, &ec, l->items[i], ev, true);
	evctx_fini(&ec);
	json_object_put(ev);
	return any;
}

void journey_rt_business_targets(struct journey_rt *rt, struct json_object *event,
				 journey_business_fn fn, void *ud)
{
	struct jlist *l =
		map_get(&rt->biz_entry, jstr(event, "event") ? jstr(event, "event") : "");

	for (unsigned i = 0; l && i < l->n; i++) {
		struct journey_def *d = jrec_version(l->items[i], l->items[i]->current);
		struct json_object *value = NULL;

		if (!d)
			continue;
		if (d->entry.index_trait && d->entry.index_value) {
			struct expr_value vars[JOURNEY_VAR__COUNT], out;

			vars[JOURNEY_VAR_EVENT] = expr_value_from_json(event);
			vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(NULL);
			vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
			vars[JOURNEY_VAR_NOW].kind = EXPR_TIMESTAMP;
			vars[JOURNEY_VAR_NOW].flags = 0;
			vars[JOURNEY_VAR_NOW].len = 0;
			vars[JOURNEY_VAR_NOW].as.sec = journey_rt_now(rt) / 1000;
			vars[JOURNEY_VAR_NOW].nsec =
				(int32_t)(journey_rt_now(rt) % 1000) * 1000000;
			arena_reset(&rt->scratch2);
			if (expr_eval(d->entry.index_value, vars, JOURNEY_VAR__COUNT,
				      &rt->scratch2, &out, NULL) == NERR_OK)
				value = expr_value_to_json(&out);
		}
		fn(ud, l->items[i]->id, value ? d->entry.index_trait : NULL, value);
		json_object_put(value);
	}
}

int journey_rt_enter_business(struct journey_rt *rt, struct journey_batch *jb,
			      const char *journey, uint64_t pid,
			      struct json_object *event)
{
	struct jrec *jr = jrec_get(rt, journey, false);
	struct journey_def *d = jr ? jrec_version(jr, jr->current) : NULL;
	struct evctx ec;
	bool entered = false;

	if (!d || jr->status != JS_ACTIVE || d->entry.kind != JOURNEY_ENTRY_BUSINESS)
		return -1;
	evctx_init(&ec, rt, jb, pid, event);
	if (holds(&ec, NULL, &d->entry.who))
		entered = enter_journey(rt, jb, &ec, jr, event, true);
	evctx_fini(&ec);
	return entered ? 1 : 0;
}

/* ------------------------------------------------------------------ timers */

unsigned journey_rt_fire_timers(struct journey_rt *rt, struct journey_batch *jb)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_TIMERS);
	struct buf due;
	unsigned n = 0;

	int64_t first_unfired = INT64_MAX;
	unsigned char lwm[8];

	/* A clock moved backwards (test clock) may put new timers below the mark. */
	if (jb->now_ms < rt->last_fire_now)
		rt->timer_lwm = 0;
	rt->last_fire_now = jb->now_ms;
	/* Collect the due timers first, then process them. Seeking from the low
	 * water mark skips the deletions left by timers already fired. */
	buf_init(&due, 0);
	store_put_u64(lwm, (uint64_t)(rt->timer_lwm > 0 ? rt->timer_lwm : 0));
	for (store_iter_seek(it, lwm, 8); store_iter_valid(it);
	     store_iter_next(it), n++) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		uint32_t l32 = (uint32_t)kl;

		if (kl < 17 || (vl != 16 && !(vl == 1 && v[0] == 'A')))
			continue;
		if ((int64_t)store_get_u64(k) > jb->now_ms ||
		    n >= rt->cfg.timers_per_batch) {
			first_unfired = (int64_t)store_get_u64(k);
			break;
		}
		buf_append(&due, &l32, 4);
		buf_append(&due, k, kl);
		buf_append(&due, vl == 16 ? v : "A\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	}
	store_iter_free(it);
	/* Everything before first_unfired is fired now; timers set from here on
	 * are later than now. */
	rt->timer_lwm = first_unfired <= jb->now_ms ? first_unfired : jb->now_ms + 1;
	rt->next_due = first_unfired;
	n = 0;
	for (size_t off = 0; off < due.len;) {
		uint32_t kl;
		const char *k, *v;
		struct inst in;
		struct evctx ec;

		memcpy(&kl, due.data + off, 4);
		k = due.data + off + 4;
		v = k + kl;
		off += 4 + kl + 16;
		store_batch_delete(jb->b, STORE_CF_TIMERS, k, kl);
		n++;
		metrics_add(&m_timers, 1);
		metrics_observe(&m_lateness,
				(double)(jb->now_ms - (int64_t)store_get_u64(k)) /
					1000.0);
		if (v[0] == 'A' && memcmp(v + 1, "\0\0\0\0\0\0\0", 7) == 0 && kl > 9 &&
		    k[16] == '\0') {
			/* A profile's audience/computed re-evaluation (audience.h). */
			if (rt->cfg.on_timer)
				rt->cfg.on_timer(rt->cfg.hook_ud, jb, k + 8, kl - 8);
			continue;
		}
		if (!inst_load(rt, jb, k + 8, kl - 8, &in))
			continue; /* the instance ended meanwhile */
		/* A stale timer (the instance moved on) is ignored. */
		if ((uint64_t)jint(in.o, "iid", 0) != store_get_u64(v) ||
		    (uint64_t)jint(in.o, "visit", 0) != store_get_u64(v + 8) ||
		    jint(in.o, "timer", INT64_MIN) != (int64_t)store_get_u64(k)) {
			inst_free(&in);
			continue;
		}
		json_object_object_del(in.o, "timer");
		int idx = (int)jint(in.o, "step", -1);
		const struct journey_step *st = idx >= 0 && (unsigned)idx < in.def->nsteps
							? &in.def->steps[idx]
							: NULL;
		evctx_init(&ec, rt, jb, in.pid, NULL);
		if (st && st->kind == JOURNEY_STEP_MESSAGE &&
		    strcmp(inst_state(&in), "delayed") == 0) {
			/* A queued message: decide again from the top (suppression
			 * and consent too); the visit counter keeps the id fresh. */
			run(rt, jb, &ec, &in);
		} else if (st && st->kind == JOURNEY_STEP_WAIT) {
			json_object_object_add(in.o, "step",
					       json_object_new_int(st->next));
			run(rt, jb, &ec, &in);
		} else if (st && st->kind == JOURNEY_STEP_WAIT_FOR) {
			clear_wait(jb, &in);
			json_object_object_add(in.o, "step",
					       json_object_new_int(st->on_timeout));
			run(rt, jb, &ec, &in);
		}
		evctx_fini(&ec);
		inst_free(&in);
	}
	buf_fini(&due);
	return n;
}

/* The first pending deadline from the store (startup). */
static int64_t scan_next_due(struct store *s)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_TIMERS);
	int64_t due = INT64_MAX;
	size_t kl;

	store_iter_seek_first(it);
	if (store_iter_valid(it) && (store_iter_key(it, &kl), kl >= 8))
		due = (int64_t)store_get_u64(store_iter_key(it, &kl));
	store_iter_free(it);
	return due;
}

int64_t journey_rt_next_due(struct journey_rt *rt)
{
	return rt->next_due;
}

void journey_rt_flush(struct journey_rt *rt, struct journey_batch *jb)
{
	unsigned char tv[8];

	if (!rt->iid_dirty)
		return;
	store_put_u64(tv, rt->next_iid);
	store_batch_put(jb->b, STORE_CF_META, META_IID, sizeof(META_IID) - 1, tv, 8);
	rt->iid_dirty = false;
}

void journey_rt_batch_done(struct journey_rt *rt, const struct journey_batch *jb)
{
	if (jb->min_due < rt->next_due)
		rt->next_due = jb->min_due;
}

/* ---------------------------------------------------------------- outcomes */

/* Puts channel:address on the suppression list with a reason. */
static void suppress(struct journey_batch *jb, const char *channel, const char *addr,
		     const char *reason)
{
	struct json_object *o = json_object_new_object();
	struct buf k;

	json_object_object_add(o, "reason", json_object_new_string(reason));
	json_object_object_add(o, "at_ms", json_object_new_int64(jb->now_ms));
	buf_init(&k, 0);
	buf_printf(&k, "%s:%s", channel, addr);
	jb_put_json(jb, STORE_CF_SUPPRESSION, k.data, k.len, o);
	buf_fini(&k);
	json_object_put(o);
	metrics_add(&m_suppressed_added, 1);
	log_info("journey", "msg=suppressed channel=%s reason=%s", channel, reason);
}

void journey_rt_on_outcome(struct journey_rt *rt, struct journey_batch *jb,
			   struct json_object *outcome)
{
	const char *id = jstr(outcome, "envelope"), *result = jstr(outcome, "result");
	const char *ikey = NULL, *step_id;
	struct json_object *env;
	struct buf kb;
	struct inst in;
	struct evctx ec;
	bool ok;

	if (!id || !result || strlen(id) != 32)
		return;
	env = jb_get_json(jb, STORE_CF_OUTBOX, id, 32);
	if (!env)
		return;
	if (strcmp(jstr(env, "state") ? jstr(env, "state") : "", "pending") != 0) {
		json_object_put(env); /* a repeated outcome (resend after a crash) */
		return;
	}
	ok = strcmp(result, "ok") == 0;
	if (jb->report && jstr(env, "journey")) {
		bool msg = jstr(env, "kind") && strcmp(jstr(env, "kind"), "webhook") != 0;
		struct report_dims d = {.journey = jstr(env, "journey"),
					.version = (unsigned)jint(env, "version", 0),
					.step = jstr(env, "step"),
					.template_id = msg ? jstr(env, "template") : NULL,
					.channel = msg ? jstr(env, "channel") : NULL};

		if (msg) {
			report_count(jb->report, &d,
				     ok ? REPORT_DELIVERED
				     : strcmp(result, "permfail") == 0 &&
						     jint(outcome, "invalid_recipient", 0)
					     ? REPORT_BOUNCED_HARD
				     : strcmp(result, "permfail") == 0
					     ? REPORT_FAILED
					     : REPORT_BOUNCED_SOFT,
				     1);
			if (ok)
				report_latency(
					jb->report, &d, REPORT_LAT_DECISION_TO_DELIVERED,
					(double)(jb->now_ms -
						 jint(env, "created_ms", jb->now_ms)) /
						1000.0);
		}
	}
	json_object_object_add(env, "state",
			       json_object_new_string(ok ? "delivered" : "failed"));
	json_object_object_add(env, "status",
			       json_object_new_int64(jint(outcome, "status", 0)));
	json_object_object_add(env, "attempts",
			       json_object_new_int64(jint(outcome, "attempts", 0)));
	json_object_object_add(env, "done_ms", json_object_new_int64(jb->now_ms));
	if (jstr(outcome, "reason"))
		json_object_object_add(env, "reason",
				       json_object_new_string(jstr(outcome, "reason")));
	jb_put_json(jb, STORE_CF_OUTBOX, id, 32, env);

	if (jstr(outcome, "provider_id") && jstr(env, "kind") &&
	    strcmp(jstr(env, "kind"), "sms") == 0) {
		struct buf sk;

		buf_init(&sk, 0);
		buf_printf(&sk, "s%s", jstr(outcome, "provider_id"));
		store_batch_put(jb->b, STORE_CF_INDEX, sk.data, sk.len, id, 32);
		json_object_object_add(
			env, "provider_id",
			json_object_new_string(jstr(outcome, "provider_id")));
		jb_put_json(jb, STORE_CF_OUTBOX, id, 32, env);
		buf_fini(&sk);
	}
	if (jstr(env, "kind") && strcmp(jstr(env, "kind"), "webhook") != 0) {
		/* Messages do not hold their instance. A bad recipient (SMTP 5xx at
		 * RCPT/DATA, invalid number, unregistered token) suppresses at once; an
		 * email that still fails temporarily after its retries counts as a
		 * soft bounce; a delivery resets the count. */
		const char *kind = jstr(env, "kind"), *to = jstr(env, "to");
		struct govern *g = rt->cfg.govern;

		if (to && ok && g)
			govern_delivered(g, jb->b, kind, to);
		else if (to && strcmp(result, "permfail") == 0 &&
			 jint(outcome, "invalid_recipient", 0))
			suppress(jb, kind, to,
				 strcmp(kind, "email") == 0 ? "hard_bounce"
							    : "invalid_recipient");
		else if (to && g && strcmp(result, "tempfail") == 0 &&
			 strcmp(kind, "email") == 0 &&
			 govern_bounce(g, jb->b, kind, to, false))
			suppress(jb, kind, to, "soft_bounce");
		json_object_put(env);
		return;
	}
	ikey = jstr(env, "instance");
	step_id = jstr(env, "step");
	buf_init(&kb, 0);
	if (!ikey || !step_id || unhex(ikey, &kb) ||
	    !inst_load(rt, jb, kb.data, kb.len, &in)) {
		buf_fini(&kb);
		json_object_put(env);
		return;
	}
	buf_fini(&kb);
	if (jint(in.o, "iid", -1) != jint(env, "iid", -2) ||
	    strcmp(inst_state(&in), "webhook") != 0 || !jstr(in.o, "env") ||
	    strcmp(jstr(in.o, "env"), id) != 0) {
		inst_free(&in);
		json_object_put(env);
		return;
	}
	int idx = journey_def_step_index(in.def, step_id);
	const struct journey_step *st = idx >= 0 ? &in.def->steps[idx] : NULL;
	struct json_object *r = step_results(&in, step_id), *resp;

	json_object_object_add(r, "ok", json_object_new_boolean(ok));
	json_object_object_add(r, "status",
			       json_object_new_int64(jint(outcome, "status", 0)));
	if (!ok && jstr(outcome, "reason"))
		json_object_object_add(r, "error",
				       json_object_new_string(jstr(outcome, "reason")));
	if (st && st->u.webhook.capture && jstr(outcome, "response")) {
		const char *body = jstr(outcome, "response");

		resp = parse_json(body, strlen(body));
		json_object_object_add(r, "response",
				       resp ? resp : json_object_new_string(body));
	}
	json_object_object_del(in.o, "env");
	json_object_object_add(in.o, "step",
			       json_object_new_int(!st ? -1
						   : ok || st->on_failure < 0
							   ? st->next
							   : st->on_failure));
	evctx_init(&ec, rt, jb, in.pid, NULL);
	run(rt, jb, &ec, &in);
	evctx_fini(&ec);
	inst_free(&in);
	json_object_put(env);
}

/* ------------------------------------------------------- merge and erasure */

/* Collects the instance keys of profile pid. */
static void profile_instances(struct journey_rt *rt, struct journey_batch *jb,
			      uint64_t pid, struct buf *keys)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_INSTANCES);
	unsigned char p[8];

	store_put_u64(p, pid);
	for (store_iter_seek(it, p, 8); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		uint32_t l32 = (uint32_t)kl;

		if (kl < 8 || memcmp(k, p, 8) != 0)
			break;
		buf_append(keys, &l32, 4);
		buf_append(keys, k, kl);
	}
	store_iter_free(it);
}

/* Deletes the re-entry records of pid (prefix "r" pid). */
static void drop_reentry(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid,
			 uint64_t move_to)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_INDEX);
	unsigned char p[9];

	p[0] = 'r';
	store_put_u64(p + 1, pid);
	for (store_iter_seek(it, p, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		if (kl < 9 || memcmp(k, p, 9) != 0)
			break;
		if (move_to) {
			char *nk = xmalloc(kl);

			memcpy(nk, k, kl);
			store_put_u64(nk + 1, move_to);
			store_batch_put(jb->b, STORE_CF_INDEX, nk, kl, v, vl);
			free(nk);
		}
		store_batch_delete(jb->b, STORE_CF_INDEX, k, kl);
	}
	store_iter_free(it);
}

void journey_rt_on_merge(struct journey_rt *rt, struct journey_batch *jb,
			 const uint64_t *from, unsigned n, uint64_t into)
{
	for (unsigned f = 0; f < n; f++) {
		struct buf keys;

		buf_init(&keys, 0);
		profile_instances(rt, jb, from[f], &keys);
		for (size_t off = 0; off < keys.len;) {
			uint32_t kl;
			struct inst in;
			const char *jid = "", *key = "";
			size_t keylen = 0;
			uint64_t pid = 0;
			char *v = NULL;
			size_t vl;

			memcpy(&kl, keys.data + off, 4);
			off += 4;
			if (!inst_load(rt, jb, keys.data + off, kl, &in)) {
				off += kl;
				continue;
			}
			off += kl;
			/* Detach every key of the old identity, then re-attach. */
			int64_t timer = jint(in.o, "timer", INT64_MIN);
			char *wait_ev = jstr(in.o, "wait_event")
						? xstrdup(jstr(in.o, "wait_event"))
						: NULL;
			bool parked = strcmp(inst_state(&in), "parked") == 0;
			struct buf nk, jk;

			clear_timer(jb, &in);
			clear_wait(jb, &in);
			if (parked)
				clear_parked(jb, &in);
			buf_init(&jk, 0);
			index_j_key(&jk, &in);
			store_batch_delete(jb->b, STORE_CF_INDEX, jk.data, jk.len);
			store_batch_delete(jb->b, STORE_CF_INSTANCES, in.key.data,
					   in.key.len);
			inst_key_parts(in.key.data, in.key.len, &pid, &jid, &key,
				       &keylen);
			buf_init(&nk, 0);
			{
				char kcopy[1024];

				snprintf(kcopy, sizeof(kcopy), "%.*s", (int)keylen, key);
				inst_key(&nk, into, in.jr->id, kcopy);
			}
			if (store_batch_get(jb->b, STORE_CF_INSTANCES, nk.data, nk.len,
					    &v, &vl) == NERR_OK) {
				/* The survivor already runs this journey: keep its
				 * instance. */
				free(v);
				metrics_add(&m_end_merged, 1);
			} else {
				buf_reset(&in.key);
				buf_append(&in.key, nk.data, nk.len);
				in.pid = into;
				if (timer != INT64_MIN)
					set_timer(jb, &in, timer);
				if (wait_ev)
					set_wait(jb, &in, wait_ev);
				if (parked) {
					buf_reset(&jk);
					index_p_key(&jk, &in);
					store_batch_put(jb->b, STORE_CF_INDEX, jk.data,
							jk.len, "", 0);
				}
				buf_reset(&jk);
				index_j_key(&jk, &in);
				store_batch_put(jb->b, STORE_CF_INDEX, jk.data, jk.len,
						"", 0);
				inst_save(rt, jb, &in);
			}
			free(wait_ev);
			buf_fini(&nk);
			buf_fini(&jk);
			inst_free(&in);
		}
		buf_fini(&keys);
		drop_reentry(rt, jb, from[f], into);
	}
}

void journey_rt_on_erase(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid)
{
	struct buf keys;

	buf_init(&keys, 0);
	profile_instances(rt, jb, pid, &keys);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		struct inst in;

		memcpy(&kl, keys.data + off, 4);
		off += 4;
		if (inst_load(rt, jb, keys.data + off, kl, &in)) {
			inst_end(rt, jb, &in, "erased");
			inst_free(&in);
		} else {
			store_batch_delete(jb->b, STORE_CF_INSTANCES, keys.data + off,
					   kl);
		}
		off += kl;
	}
	buf_fini(&keys);
	drop_reentry(rt, jb, pid, 0);
	/* The messages rendered for the person hold their data: they go too. */
	{
		struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_INDEX);
		unsigned char p[9];

		p[0] = 'm';
		store_put_u64(p + 1, pid);
		for (store_iter_seek(it, p, 9); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl;
			const char *k = store_iter_key(it, &kl);

			if (kl != 49 || memcmp(k, p, 9) != 0)
				break;
			store_batch_delete(jb->b, STORE_CF_OUTBOX, k + 17, 32);
			store_batch_delete(jb->b, STORE_CF_INDEX, k, kl);
		}
		store_iter_free(it);
	}
}

/* ------------------------------------------------------------------- admin */

static void result_set(struct journey_result *res, int status, struct json_object *body)
{
	res->status = status;
	res->body = xstrdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
	json_object_put(body);
}

static void result_error(struct journey_result *res, int status, const char *code,
			 const char *field, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "field", json_object_new_string(field ? field : ""));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_object_add(o, "error", e);
	result_set(res, status, o);
}

static struct json_object *status_json(struct jrec *jr)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(jr->id));
	json_object_object_add(o, "status",
			       json_object_new_string(jstatus_names[jr->status]));
	json_object_object_add(o, "version", json_object_new_int64(jr->current));
	return o;
}

/* Ends or resumes every instance of a journey listed in the index under prefix. */
static void sweep(struct journey_rt *rt, struct journey_batch *jb, struct jrec *jr,
		  char tag)
{
	struct store_iter *it = store_iter_new(rt->s, jb->b, STORE_CF_INDEX);
	struct buf prefix, keys;

	buf_init(&prefix, 0);
	buf_init(&keys, 0);
	buf_putc(&prefix, tag);
	buf_puts(&prefix, jr->id);
	buf_putc(&prefix, '\0');
	for (store_iter_seek(it, prefix.data, prefix.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);
		uint32_t l32;

		if (kl < prefix.len || memcmp(k, prefix.data, prefix.len) != 0)
			break;
		if (tag == 'j') {
			/* "j" jid 0 pid key -> instance key pid jid 0 key */
			struct buf ik;

			buf_init(&ik, 0);
			buf_append(&ik, k + prefix.len, 8);
			buf_puts(&ik, jr->id);
			buf_putc(&ik, '\0');
			buf_append(&ik, k + prefix.len + 8, kl - prefix.len - 8);
			l32 = (uint32_t)ik.len;
			buf_append(&keys, &l32, 4);
			buf_append(&keys, ik.data, ik.len);
			buf_fini(&ik);
		} else {
			l32 = (uint32_t)(kl - prefix.len);
			buf_append(&keys, &l32, 4);
			buf_append(&keys, k + prefix.len, kl - prefix.len);
		}
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		struct inst in;
		struct evctx ec;

		memcpy(&kl, keys.data + off, 4);
		off += 4;
		if (!inst_load(rt, jb, keys.data + off, kl, &in)) {
			off += kl;
			continue;
		}
		off += kl;
		if (tag == 'j') {
			inst_end(rt, jb, &in, "stopped");
		} else if (strcmp(inst_state(&in), "parked") == 0) {
			clear_parked(jb, &in);
			evctx_init(&ec, rt, jb, in.pid, NULL);
			run(rt, jb, &ec, &in);
			evctx_fini(&ec);
		}
		inst_free(&in);
	}
	buf_fini(&keys);
	buf_fini(&prefix);
}

static void admin_publish(struct journey_rt *rt, struct journey_batch *jb, const char *id,
			  struct journey_result *res)
{
	struct buf k;
	char *doc = NULL;
	size_t dl = 0;
	struct journey_def *d = NULL;
	struct journey_errors errs = {0};
	struct jrec *jr;

	buf_init(&k, 0);
	buf_printf(&k, "d/%s", id);
	if (store_batch_get(jb->b, STORE_CF_JOURNEYS, k.data, k.len, &doc, &dl) !=
	    NERR_OK) {
		buf_fini(&k);
		result_error(res, 404, "not_found", "id", "no draft for this journey");
		return;
	}
	if (journey_def_compile(doc, dl, &rt->cfg.limits, rt->env, template_exists_batch,
				jb, &d, &errs) != NERR_OK) {
		struct json_object *o = json_object_new_object(),
				   *e = json_object_new_object();

		json_object_object_add(e, "code", json_object_new_string("invalid"));
		json_object_object_add(e, "field", json_object_new_string(""));
		json_object_object_add(
			e, "message",
			json_object_new_string("the journey does not validate"));
		json_object_object_add(o, "error", e);
		json_object_object_add(o, "errors", journey_errors_to_json(&errs));
		result_set(res, 422, o);
		journey_errors_fini(&errs);
		free(doc);
		buf_fini(&k);
		return;
	}
	journey_errors_fini(&errs);
	jr = jrec_get(rt, id, true);
	jr->current = jr->nversions + 1;
	if (jr->status != JS_PAUSED)
		jr->status = JS_ACTIVE;
	version_key(&k, id, jr->current);
	store_batch_put(jb->b, STORE_CF_JOURNEYS, k.data, k.len, doc, dl);
	jrec_add_version(jr, jr->current, d);
	save_status(jb, jr);
	reindex(rt);
	log_info("journey", "msg=published journey=%s version=%u", id, jr->current);
	result_set(res, 200, status_json(jr));
	free(doc);
	buf_fini(&k);
}

/*
 * An open, click or unsubscribe of envelope id: counters on the envelope, the
 * wait_for engagement steps waiting for it, and consent for an unsubscribe.
 */
static void engagement(struct journey_rt *rt, struct journey_batch *jb, const char *kind,
		       const char *id)
{
	struct json_object *env =
		id && strlen(id) == 32 ? jb_get_json(jb, STORE_CF_OUTBOX, id, 32) : NULL;
	bool click = strcmp(kind, "click") == 0, open = strcmp(kind, "open") == 0;
	bool unsub = strcmp(kind, "unsubscribe") == 0;
	const char *counter = click ? "clicks" : open ? "opens" : "unsubscribes";
	int64_t n;
	struct buf kb;
	struct inst in;
	struct evctx ec;

	if (!env)
		return;
	n = jint(env, counter, 0) + 1;
	json_object_object_add(env, counter, json_object_new_int64(n));
	if (jb->report && jstr(env, "journey")) {
		struct report_dims d = {.journey = jstr(env, "journey"),
					.version = (unsigned)jint(env, "version", 0),
					.step = jstr(env, "step"),
					.template_id = jstr(env, "template"),
					.channel = jstr(env, "channel")};

		if (unsub)
			report_count(jb->report, &d, REPORT_UNSUBSCRIBED, 1);
		if (click) {
			report_count(jb->report, &d, REPORT_CLICKED, 1);
			if (n == 1)
				report_count(jb->report, &d, REPORT_CLICKED_UNIQUE, 1);
		}
		if (open)
			report_count(jb->report, &d, REPORT_OPENED, 1);
		if ((open || click) && !jint(env, "opened", 0))
			report_count(jb->report, &d, REPORT_OPENED_UNIQUE, 1);
	}
	metrics_add(click ? &m_track_click : open ? &m_track_open : &m_track_unsub, 1);
	if (n == 1 && click)
		metrics_add(&m_track_click_u, 1);
	/* A click proves an open even when images were blocked. */
	if ((open || click) && !jint(env, "opened", 0)) {
		json_object_object_add(env, "opened", json_object_new_int(1));
		metrics_add(&m_track_open_u, 1);
	}
	jb_put_json(jb, STORE_CF_OUTBOX, id, 32, env);
	evctx_init(&ec, rt, jb, (uint64_t)jint(env, "profile", 0), NULL);
	if (unsub && jstr(env, "channel")) {
		struct json_object *traits = json_object_new_object(),
				   *c = json_object_new_object(),
				   *p = json_object_new_object();
		char mid[64];

		json_object_object_add(p, "marketing", json_object_new_string("denied"));
		json_object_object_add(c, jstr(env, "channel"), p);
		json_object_object_add(traits, "consent", c);
		snprintf(mid, sizeof(mid), "unsubscribe-%s", id);
		apply_traits(rt, jb, &ec, traits, mid);
	}
	buf_init(&kb, 0);
	if ((open || click) && jstr(env, "instance") &&
	    !unhex(jstr(env, "instance"), &kb) &&
	    inst_load(rt, jb, kb.data, kb.len, &in)) {
		int idx = (int)jint(in.o, "step", -1);
		const struct journey_step *st = idx >= 0 && (unsigned)idx < in.def->nsteps
							? &in.def->steps[idx]
							: NULL;
		int msg_idx = jstr(env, "step")
				      ? journey_def_step_index(in.def, jstr(env, "step"))
				      : -1;

		if (st && st->kind == JOURNEY_STEP_WAIT_FOR &&
		    st->u.wait_for.mode == JOURNEY_WAIT_FOR_ENGAGEMENT &&
		    strcmp(inst_state(&in), "wait_for") == 0 &&
		    st->u.wait_for.message_step == msg_idx &&
		    jint(in.o, "iid", -1) == jint(env, "iid", -2) &&
		    (click || st->u.wait_for.engagement == JOURNEY_ENGAGEMENT_OPENED)) {
			clear_timer(jb, &in);
			json_object_object_add(in.o, "step",
					       json_object_new_int(st->on_event));
			run(rt, jb, &ec, &in);
		}
		inst_free(&in);
	}
	buf_fini(&kb);
	evctx_fini(&ec);
	json_object_put(env);
}

void journey_rt_admin(struct journey_rt *rt, struct journey_batch *jb,
		      struct json_object *op, struct journey_result *res)
{
	const char *what = jstr(op, "op"), *id = jstr(op, "id");
	struct json_object *doc = NULL;
	struct jrec *jr;
	struct buf k;

	res->status = 200;
	res->body = NULL;
	json_object_object_get_ex(op, "doc", &doc);
	buf_init(&k, 0);
	if (!what) {
		result_error(res, 400, "invalid", "op", "unknown operation");
	} else if (strcmp(what, "consent") == 0 && jstr(op, "namespace") &&
		   jstr(op, "value") && json_object_object_get_ex(op, "consent", &doc)) {
		uint64_t pid;
		struct evctx ec;
		char mid[64];

		if (profile_lookup(rt->s, jb->b, jstr(op, "namespace"), jstr(op, "value"),
				   &pid) != NERR_OK) {
			result_error(res, 404, "not_found", "value",
				     "no profile has this identity");
		} else {
			struct json_object *traits = json_object_new_object(), *o;

			json_object_object_add(traits, "consent", json_object_get(doc));
			evctx_init(&ec, rt, jb, pid, NULL);
			snprintf(mid, sizeof(mid), "consent-%llu",
				 (unsigned long long)jb->seq);
			apply_traits(rt, jb, &ec, traits, mid);
			o = json_object_new_object();
			if (json_object_object_get_ex(ev_profile(&ec), "consent", &doc))
				json_object_object_add(o, "consent",
						       json_object_get(doc));
			evctx_fini(&ec);
			result_set(res, 200, o);
		}
	} else if ((strcmp(what, "rule_put") == 0 || strcmp(what, "rule_delete") == 0) &&
		   rt->cfg.govern && jstr(op, "kind")) {
		bool put = strcmp(what, "rule_put") == 0;
		enum nerr rc = put ? govern_rule_put(rt->cfg.govern, jb->b,
						     jstr(op, "kind"), id, doc)
				   : govern_rule_delete(rt->cfg.govern, jb->b,
							jstr(op, "kind"), id);

		if (rc == NERR_NOTFOUND)
			result_error(res, 404, "not_found", "id", "no such rule");
		else if (rc == NERR_LIMIT)
			result_error(res, 409, "limit", "id",
				     "too many rules of this kind");
		else if (rc)
			result_error(res, 400, "invalid", "", nerr_str(rc));
		else if (put)
			result_set(res, 200, json_object_get(doc));
		else
			result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "suppress_many") == 0 &&
		   json_object_object_get_ex(op, "items", &doc)) {
		for (size_t i = 0; i < json_object_array_length(doc); i++) {
			struct json_object *it = json_object_array_get_idx(doc, i);

			if (jstr(it, "channel") && jstr(it, "address"))
				suppress(jb, jstr(it, "channel"), jstr(it, "address"),
					 jstr(it, "reason") ? jstr(it, "reason")
							    : "manual");
		}
		res->status = 0; /* the API answers with its parse summary */
	} else if (strcmp(what, "engagement") == 0) {
		engagement(rt, jb, jstr(op, "kind") ? jstr(op, "kind") : "",
			   jstr(op, "envelope"));
		result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "bounce") == 0 && jstr(op, "channel") &&
		   jstr(op, "address")) {
		/* Provider feedback: hard bounces and complaints suppress at once; soft
		 * bounces are counted on the address. */
		const char *kind = jstr(op, "kind") ? jstr(op, "kind") : "hard_bounce";

		bool soft = strcmp(kind, "soft_bounce") == 0;

		if (!rt->cfg.govern) {
			if (!soft)
				suppress(jb, jstr(op, "channel"), jstr(op, "address"),
					 kind);
		} else if (govern_bounce(rt->cfg.govern, jb->b, jstr(op, "channel"),
					 jstr(op, "address"), !soft)) {
			suppress(jb, jstr(op, "channel"), jstr(op, "address"), kind);
		}
		result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "suppress") == 0 && jstr(op, "channel") &&
		   jstr(op, "address")) {
		suppress(jb, jstr(op, "channel"), jstr(op, "address"),
			 jstr(op, "reason") ? jstr(op, "reason") : "manual");
		result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "unsuppress") == 0 && jstr(op, "channel") &&
		   jstr(op, "address")) {
		buf_printf(&k, "%s:%s", jstr(op, "channel"), jstr(op, "address"));
		store_batch_delete(jb->b, STORE_CF_SUPPRESSION, k.data, k.len);
		result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "sms_status") == 0 && jstr(op, "sid")) {
		char *eid = NULL;
		size_t el = 0;

		buf_printf(&k, "s%s", jstr(op, "sid"));
		if (store_batch_get(jb->b, STORE_CF_INDEX, k.data, k.len, &eid, &el) ==
			    NERR_OK &&
		    el == 32) {
			struct json_object *env =
				jb_get_json(jb, STORE_CF_OUTBOX, eid, 32);
			const char *st = jstr(op, "status") ? jstr(op, "status") : "";

			if (env) {
				json_object_object_add(env, "receipt",
						       json_object_new_string(st));
				if (strcmp(st, "delivered") == 0 ||
				    strcmp(st, "undelivered") == 0 ||
				    strcmp(st, "failed") == 0)
					json_object_object_add(
						env, "state",
						json_object_new_string(
							strcmp(st, "delivered") == 0
								? "delivered"
								: "failed"));
				jb_put_json(jb, STORE_CF_OUTBOX, eid, 32, env);
				/* 21211/21614: not a valid mobile number. */
				if (jstr(env, "to") &&
				    (jint(op, "error_code", 0) == 21211 ||
				     jint(op, "error_code", 0) == 21614))
					suppress(jb, "sms", jstr(env, "to"),
						 "invalid_recipient");
				json_object_put(env);
			}
		}
		free(eid);
		result_set(res, 200, json_object_new_object());
	} else if (strcmp(what, "clock") == 0) {
		int64_t now = jb->now_ms;
		char ts[32];
		unsigned char v[8];
		struct json_object *o = json_object_new_object();

		if (jint(op, "now_ms", INT64_MIN) != INT64_MIN)
			now = jint(op, "now_ms", 0);
		now += jint(op, "advance_ms", 0);
		rt->clock_offset_ms += now - jb->now_ms;
		jb->now_ms = now;
		store_put_u64(v, (uint64_t)rt->clock_offset_ms);
		store_batch_put(jb->b, STORE_CF_META, META_CLOCK, sizeof(META_CLOCK) - 1,
				v, 8);
		clock_format_rfc3339(now, ts);
		json_object_object_add(o, "now", json_object_new_string(ts));
		result_set(res, 200, o);
	} else if (!id) {
		result_error(res, 400, "invalid", "id", "missing id");
	} else if (strcmp(what, "journey_put") == 0 && doc) {
		jr = jrec_get(rt, id, true);
		buf_printf(&k, "d/%s", id);
		jb_put_json(jb, STORE_CF_JOURNEYS, k.data, k.len, doc);
		save_status(jb, jr);
		struct json_object *o = status_json(jr);
		json_object_object_add(o, "draft", json_object_new_boolean(1));
		result_set(res, 200, o);
	} else if (strcmp(what, "journey_publish") == 0) {
		admin_publish(rt, jb, id, res);
	} else if (strcmp(what, "template_put") == 0 && doc) {
		struct json_object *old =
			jb_get_json(jb, STORE_CF_TEMPLATES, id, strlen(id));
		int64_t ver = jint(old, "version", 0) + 1;
		unsigned char vb[4];

		json_object_put(old);
		json_object_object_add(doc, "id", json_object_new_string(id));
		json_object_object_add(doc, "version", json_object_new_int64(ver));
		json_object_object_add(doc, "updated_ms",
				       json_object_new_int64(jb->now_ms));
		jb_put_json(jb, STORE_CF_TEMPLATES, id, strlen(id), doc);
		buf_printf(&k, "v/%s/", id);
		put_u32(vb, (uint32_t)ver);
		buf_append(&k, vb, 4);
		jb_put_json(jb, STORE_CF_TEMPLATES, k.data, k.len, doc);
		result_set(res, 200, json_object_get(doc));
	} else if (!(jr = jrec_get(rt, id, false)) || jr->current == 0) {
		result_error(res, 404, "not_found", "id",
			     "no published journey with this id");
	} else if (strcmp(what, "journey_pause") == 0) {
		if (jr->status == JS_STOPPED) {
			result_error(res, 409, "conflict", "status",
				     "the journey is stopped");
		} else {
			jr->status = JS_PAUSED;
			save_status(jb, jr);
			reindex(rt);
			result_set(res, 200, status_json(jr));
		}
	} else if (strcmp(what, "journey_resume") == 0) {
		if (jr->status == JS_STOPPED) {
			result_error(res, 409, "conflict", "status",
				     "the journey is stopped");
		} else {
			jr->status = JS_ACTIVE;
			save_status(jb, jr);
			reindex(rt);
			sweep(rt, jb, jr, 'p');
			result_set(res, 200, status_json(jr));
		}
	} else if (strcmp(what, "journey_stop") == 0) {
		jr->status = JS_STOPPED;
		save_status(jb, jr);
		reindex(rt);
		sweep(rt, jb, jr, 'j');
		result_set(res, 200, status_json(jr));
	} else {
		result_error(res, 400, "invalid", "op", "unknown operation");
	}
	buf_fini(&k);
}

void journey_rt_pending(struct journey_rt *rt, void (*fn)(void *ud, const char *env_json),
			void *ud)
{
	struct store_iter *it = store_iter_new(rt->s, NULL, STORE_CF_OUTBOX);

	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t vl;
		const char *v = store_iter_value(it, &vl);
		struct json_object *o = parse_json(v, vl);

		/* Every channel: an email committed before a crash but never
		 * handed over (or never confirmed) goes out after the restart. */
		if (o && jstr(o, "kind") && jstr(o, "state") &&
		    strcmp(jstr(o, "state"), "pending") == 0)
			fn(ud, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	}
	store_iter_free(it);
}

bool journey_rt_validate(struct store *s, const struct expr_env *env, const char *json,
			 size_t len, struct json_object **errors_json)
{
	struct journey_def *d = NULL;
	struct journey_errors errs = {0};
	bool ok = journey_def_compile(json, len, NULL, env, template_exists_store, s, &d,
				      &errs) == NERR_OK;

	*errors_json = journey_errors_to_json(&errs);
	journey_errors_fini(&errs);
	journey_def_free(d);
	return ok;
}

enum nerr journey_template_check(struct json_object *doc, struct nerr_msg *msg)
{
	static const struct {
		const char *channel;
		const char *fields[8];
		const char *required;
	} channels[] = {
		{"email",
		 {"from", "reply_to", "subject", "html", "text", "headers", "tracking",
		  NULL},
		 "subject"},
		{"sms", {"body", NULL}, "body"},
		{"push", {"title", "body", "data", "image", NULL}, "body"},
		{"webhook", {"body", NULL}, "body"},
	};
	const char *ch = jstr(doc, "channel");
	unsigned c;

	if (!json_object_is_type(doc, json_type_object))
		return nerr_set(msg, NERR_INVAL, "", "a template is a JSON object");
	for (c = 0; c < 4; c++)
		if (ch && strcmp(ch, channels[c].channel) == 0)
			break;
	if (c == 4)
		return nerr_set(msg, NERR_INVAL, "channel",
				"channel must be email, sms, push or webhook");
	if (!jstr(doc, channels[c].required))
		return nerr_set(msg, NERR_INVAL, channels[c].required, "%s is required",
				channels[c].required);
	json_object_object_foreach(doc, key, val)
	{
		bool known = strcmp(key, "channel") == 0 || strcmp(key, "name") == 0 ||
			     strcmp(key, "description") == 0;

		for (unsigned f = 0; !known && channels[c].fields[f]; f++)
			known = strcmp(key, channels[c].fields[f]) == 0;
		if (!known)
			return nerr_set(msg, NERR_INVAL, key,
					"unknown field for a %s template",
					channels[c].channel);
		if (json_object_is_type(val, json_type_string) &&
		    strcmp(key, "channel") && strcmp(key, "name") &&
		    strcmp(key, "description")) {
			struct tmpl_options opt = {0};
			struct tmpl *t = NULL;
			struct nerr_msg tm = {"", ""};

			opt.html_escape = strcmp(key, "html") == 0;
			if (tmpl_compile(json_object_get_string(val),
					 (size_t)json_object_get_string_len(val), &opt,
					 &t, &tm) != NERR_OK)
				return nerr_set(msg, NERR_INVAL, key,
						"invalid Liquid: %s", tm.message);
			tmpl_free(t);
		}
	}
	return NERR_OK;
}

/* -------------------------------------------------------------- lifecycle */

enum nerr journey_rt_open(struct store *s, const struct journey_rt_config *cfg,
			  struct journey_rt **out, struct nerr_msg *msg)
{
	struct journey_rt *rt = xcalloc(1, sizeof(*rt));
	struct metric *ms[] = {&m_entered,	 &m_end_completed, &m_end_exit,
			       &m_end_stopped,	 &m_end_error,	   &m_end_erased,
			       &m_end_merged,	 &m_conversions,   &m_envelopes,
			       &m_envelopes_msg, &m_timers,	   &m_cel_errors,
			       &m_lateness,	 &m_decision};
	char *v = NULL;
	size_t vl = 0;

	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		metrics_register(ms[i]);
	m_lateness.nbounds = metrics_latency_seconds_nbounds;
	m_decision.nbounds = metrics_latency_seconds_nbounds;
#define X(r) metrics_register(&m_ex_##r);
	EXCLUSIONS(X)
#undef X
	metrics_register(&m_track_open);
	metrics_register(&m_track_click);
	metrics_register(&m_track_unsub);
	metrics_register(&m_track_open_u);
	metrics_register(&m_track_click_u);
	metrics_register(&m_suppressed_added);
	rt->s = s;
	rt->cfg = *cfg;
	rt->env = journey_env_new();
	map_init(&rt->journeys);
	map_init(&rt->entry);
	map_init(&rt->aud_entry);
	map_init(&rt->biz_entry);
	map_init(&rt->waiting);
	map_init(&rt->waits_for);
	map_init(&rt->templates);
	map_init(&rt->predicates);
	map_init(&rt->fields);
	arena_init(&rt->scratch, 64 * 1024);
	arena_init(&rt->scratch2, 16 * 1024);
	if (store_get(s, STORE_CF_META, META_CLOCK, sizeof(META_CLOCK) - 1, &v, &vl) ==
		    NERR_OK &&
	    vl == 8)
		rt->clock_offset_ms = (int64_t)store_get_u64(v);
	free(v);
	v = NULL;
	rt->next_iid = 1;
	if (store_get(s, STORE_CF_META, META_IID, sizeof(META_IID) - 1, &v, &vl) ==
		    NERR_OK &&
	    vl == 8)
		rt->next_iid = store_get_u64(v);
	free(v);
	load_journeys(rt, msg);
	rt->next_due = scan_next_due(s);
	rt->timer_lwm = rt->next_due == INT64_MAX ? 0 : rt->next_due;
	*out = rt;
	return NERR_OK;
}

void journey_rt_free(struct journey_rt *rt)
{
	size_t it = 0;
	const char *k;
	void *v;

	if (!rt)
		return;
	free_lists(&rt->entry);
	map_fini(&rt->entry);
	free_lists(&rt->aud_entry);
	map_fini(&rt->aud_entry);
	free_lists(&rt->biz_entry);
	map_fini(&rt->biz_entry);
	map_fini(&rt->waiting);
	map_fini(&rt->waits_for);
	while (map_next(&rt->journeys, &it, &k, &v))
		jrec_free(v);
	map_fini(&rt->journeys);
	it = 0;
	while (map_next(&rt->templates, &it, &k, &v)) {
		struct tpl *t = v;

		tmpl_free(t->body);
		free(t);
	}
	map_fini(&rt->templates);
	it = 0;
	while (map_next(&rt->predicates, &it, &k, &v))
		expr_program_free(v);
	map_fini(&rt->predicates);
	it = 0;
	while (map_next(&rt->fields, &it, &k, &v)) {
		struct tfield *f = v;

		tmpl_free(f->t);
		free(f);
	}
	map_fini(&rt->fields);
	arena_fini(&rt->scratch);
	arena_fini(&rt->scratch2);
	expr_env_free(rt->env);
	free(rt);
}
