/*
 * audience.c -- audiences, computed attributes, the trait index and business-event
 * fan-out (see audience.h for the key layout and the threading rules).
 *
 * Design: every change a profile's event can cause here happens in one
 * "round" for that profile: computed attributes of the event's name are folded
 * (computed.c keeps the aggregate state), indexed traits are re-indexed when the
 * event carries traits, and every audience predicate is evaluated. A round
 * parses the profile view and the event history at most once, lazily, and
 * notes the earliest moment a windowed count or windowed aggregate can change
 * by itself (an event leaving its window); the profile's one re-evaluation
 * timer is moved to that moment. A timer round is a full round with no event.
 *
 * Membership is a pair of records (by audience for paging, by profile for
 * reads) plus a counter; an audience's predicate is evaluated with the same CEL
 * environment as journeys (event, profile, journey = null, now), and with
 * event_count() over the profile's recent-event history, consent() and
 * in_audience(). Evaluation errors count as false, as in journeys.
 *
 * Background jobs are JSON records ordered by id; the oldest runs one bounded
 * step per engine batch (aud_background). Fan-out over an indexed trait walks
 * the "X" records of one value, others walk all profiles at a throttled pace.
 */
#include "audience/audience.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audience/computed.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/id.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "expr/expr.h"
#include "journey/def.h"
#include "journey/run.h"
#include "profile/profile.h"
#include "report/metrics.h"

#define CANON_MAX	512 /* longest indexed value (canonical JSON bytes) */
#define NAME_MAX_BYTES	200
#define MEMBER_SCAN_MAX 4096 /* audiences of one profile read per round */
static const char TIMER_SUFFIX[] = "\0~aud";
#define TIMER_SUFFIX_LEN 5
static const char META_PROFILES[] = "profiles_count";

struct audience {
	char *id;
	struct expr_program *prog;
	int64_t version;
	bool reads_audiences; /* `when` calls in_audience() */
	bool reads_decor;     /* `when` may read profile.computed or .audiences */
};

struct cattr {
	char *id;
	struct computed_def *def;
	int64_t version;
	/* While a back-fill job runs: profiles above the cursor get the event
	 * from the back-fill (it reads their history), not from streaming. */
	bool backfilling;
	uint64_t bf_cursor;
};

struct aud {
	struct store *s;
	struct aud_config cfg;
	struct expr_env *env;
	struct journey_rt *rt;
	struct audience **auds; /* sorted by id */
	unsigned naud;
	/* Derived from auds by recount() whenever the definitions change. */
	bool reads_audiences; /* some `when` calls in_audience() */
	bool reads_decor;     /* some `when` may read the decoration */
	struct cattr **comps; /* sorted by id */
	unsigned ncomp;
	char **indexed; /* indexed trait names */
	unsigned nindexed;
	struct json_object *settings; /* "S" record */
	unsigned jobs;		      /* pending background jobs */
	uint64_t next_job;
	int64_t next_scan_ms;
	uint64_t reindex_pid; /* merged into: re-index on its next round */
	bool only_throttled;  /* every pending job is a scan waiting its interval */
	uint64_t *changed;    /* profiles whose traits journey steps changed */
	unsigned nchanged, changed_alloc;
	struct map predicates; /* event_count predicate source -> program */
	struct map purging;    /* audience ids whose purge job is pending */
	struct arena scratch, scratch2;
};

static struct metric m_entered = {.name = "nudge_audience_changes_total",
				  .help = "Audience membership changes.",
				  .labels = "change=\"entered\"",
				  .type = METRIC_COUNTER};
static struct metric m_exited = {.name = "nudge_audience_changes_total",
				 .help = "Audience membership changes.",
				 .labels = "change=\"exited\"",
				 .type = METRIC_COUNTER};
static struct metric m_evals = {.name = "nudge_audience_evaluations_total",
				.help = "Audience predicates evaluated.",
				.type = METRIC_COUNTER};
static struct metric m_fanout = {.name = "nudge_business_event_profiles_total",
				 .help = "Profiles a business-event fan-out evaluated.",
				 .type = METRIC_COUNTER};
static struct metric m_jobs = {.name = "nudge_audience_jobs",
			       .help = "Pending background jobs (back-fills, fan-outs).",
			       .type = METRIC_GAUGE};

void aud_config_default(struct aud_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->job_batch = 1000;
	cfg->scan_batch = 250;
	cfg->scan_interval_ms = 10;
	cfg->max_audiences = 1000;
	cfg->max_computed = 1000;
	cfg->max_indexed_traits = 50;
}

/* ------------------------------------------------------------------ keys */

static void key_tag(struct buf *k, char tag, const char *id)
{
	buf_reset(k);
	buf_putc(k, tag);
	if (id)
		buf_puts(k, id);
}

static void key_pid(struct buf *k, char tag, uint64_t pid, const char *id)
{
	unsigned char p[8];

	buf_reset(k);
	buf_putc(k, tag);
	store_put_u64(p, pid);
	buf_append(k, p, 8);
	if (id)
		buf_puts(k, id);
}

/* "M" <aid> 0 pid(8) */
static void key_member(struct buf *k, const char *aid, uint64_t pid)
{
	unsigned char p[8];

	key_tag(k, 'M', aid);
	buf_putc(k, '\0');
	store_put_u64(p, pid);
	buf_append(k, p, 8);
}

/* "X" <trait> 0 <canon> 0 [pid(8)] */
static void key_index(struct buf *k, const char *trait, const char *canon, uint64_t pid,
		      bool with_pid)
{
	unsigned char p[8];

	key_tag(k, 'X', trait);
	buf_putc(k, '\0');
	buf_puts(k, canon);
	buf_putc(k, '\0');
	if (with_pid) {
		store_put_u64(p, pid);
		buf_append(k, p, 8);
	}
}

static void timer_key(struct buf *k, int64_t due, uint64_t pid)
{
	unsigned char p[8];

	buf_reset(k);
	store_put_u64(p, (uint64_t)due);
	buf_append(k, p, 8);
	store_put_u64(p, pid);
	buf_append(k, p, 8);
	buf_append(k, TIMER_SUFFIX, TIMER_SUFFIX_LEN);
}

static struct json_object *parse(const char *v, size_t vl)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *o = json_tokener_parse_ex(tok, v, (int)vl);

	json_tokener_free(tok);
	return o;
}

static struct json_object *get_json(struct store *s, struct store_batch *b,
				    const struct buf *k)
{
	char *v = NULL;
	size_t vl = 0;
	struct json_object *o = NULL;
	enum nerr rc =
		b ? store_batch_get(b, STORE_CF_AUDIENCES, k->data, k->len, &v, &vl)
		  : store_get(s, STORE_CF_AUDIENCES, k->data, k->len, &v, &vl);

	if (rc == NERR_OK)
		o = parse(v, vl);
	free(v);
	return o;
}

static void put_json(struct store_batch *b, const struct buf *k, struct json_object *o)
{
	size_t len;
	const char *t =
		json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

	store_batch_put(b, STORE_CF_AUDIENCES, k->data, k->len, t, len);
}

static bool get_u64(struct store *s, struct store_batch *b, const struct buf *k,
		    uint64_t *out)
{
	char *v = NULL;
	size_t vl = 0;
	enum nerr rc =
		b ? store_batch_get(b, STORE_CF_AUDIENCES, k->data, k->len, &v, &vl)
		  : store_get(s, STORE_CF_AUDIENCES, k->data, k->len, &v, &vl);
	bool ok = rc == NERR_OK && vl == 8;

	if (ok)
		*out = store_get_u64(v);
	free(v);
	return ok;
}

static void put_u64(struct store_batch *b, const struct buf *k, uint64_t v)
{
	unsigned char t[8];

	store_put_u64(t, v);
	store_batch_put(b, STORE_CF_AUDIENCES, k->data, k->len, t, 8);
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

	if (o && json_object_object_get_ex(o, k, &v) &&
	    (json_object_is_type(v, json_type_int) ||
	     json_object_is_type(v, json_type_double)))
		return json_object_get_int64(v);
	return dflt;
}

/* Canonical text of an indexable scalar (strings as JSON, integral numbers as
 * integers so 5 and 5.0 meet); false for anything else. */
static bool canon(struct json_object *v, struct buf *out)
{
	char t[40];

	buf_reset(out);
	switch (json_object_get_type(v)) {
	case json_type_string:
		buf_puts(out, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
		break;
	case json_type_int:
		snprintf(t, sizeof(t), "%lld", (long long)json_object_get_int64(v));
		buf_puts(out, t);
		break;
	case json_type_double: {
		double d = json_object_get_double(v);

		if (!isfinite(d))
			return false;
		/* Integral doubles in int64 range read like the integer they
		 * equal in CEL (5.0 and 5, 1e18 and 1000000000000000000). */
		if (d == floor(d) && fabs(d) < 9.2e18)
			snprintf(t, sizeof(t), "%lld", (long long)d);
		else
			snprintf(t, sizeof(t), "%.17g", d);
		buf_puts(out, t);
		break;
	}
	case json_type_boolean:
		buf_puts(out, json_object_get_boolean(v) ? "true" : "false");
		break;
	default:
		return false;
	}
	return out->len > 0 && out->len <= CANON_MAX &&
	       !memchr(out->data, '\0', out->len);
}

static void ms_string(int64_t ms, char out[40])
{
	clock_format_rfc3339(ms, out);
}

/* ------------------------------------------------------------ definitions */

/*
 * Definitions are kept in arrays of pointers sorted by id, and each struct's
 * first member is its id, so one binary search and one insert/remove serve
 * audiences and computed attributes alike.
 */
static unsigned sorted_find(void *const *v, unsigned n, const char *id, bool *found)
{
	unsigned lo = 0, hi = n;

	*found = false;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		int c = strcmp(*(char *const *)v[mid], id);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void sorted_insert(void ***v, unsigned *n, unsigned pos, void *item)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	memmove(*v + pos + 1, *v + pos, (*n - pos) * sizeof(**v));
	(*v)[pos] = item;
	(*n)++;
}

static void sorted_remove(void **v, unsigned *n, unsigned pos)
{
	memmove(v + pos, v + pos + 1, (*n - pos - 1) * sizeof(*v));
	(*n)--;
}

static struct audience *find_aud(struct aud *a, const char *id, unsigned *pos)
{
	bool found;
	unsigned p = sorted_find((void *const *)a->auds, a->naud, id, &found);

	if (pos)
		*pos = p;
	return found ? a->auds[p] : NULL;
}

static struct cattr *find_comp(struct aud *a, const char *id, unsigned *pos)
{
	bool found;
	unsigned p = sorted_find((void *const *)a->comps, a->ncomp, id, &found);

	if (pos)
		*pos = p;
	return found ? a->comps[p] : NULL;
}

static void aud_def_free(struct audience *au)
{
	if (!au)
		return;
	expr_program_free(au->prog);
	free(au->id);
	free(au);
}

static void cattr_free(struct cattr *c)
{
	if (!c)
		return;
	computed_def_free(c->def);
	free(c->id);
	free(c);
}

/* What the audience definitions as a whole read (admin changes only). */
static void recount(struct aud *a)
{
	a->reads_audiences = a->reads_decor = false;
	for (unsigned i = 0; i < a->naud; i++) {
		a->reads_audiences |= a->auds[i]->reads_audiences;
		a->reads_decor |= a->auds[i]->reads_decor;
	}
}

/* Installs (or replaces) a compiled audience. */
static void set_aud(struct aud *a, struct audience *au)
{
	unsigned pos;
	struct audience *old = find_aud(a, au->id, &pos);

	if (old) {
		aud_def_free(old);
		a->auds[pos] = au;
	} else {
		sorted_insert((void ***)&a->auds, &a->naud, pos, au);
	}
	recount(a);
}

static void del_aud(struct aud *a, const char *id)
{
	unsigned pos;
	struct audience *old = find_aud(a, id, &pos);

	if (!old)
		return;
	aud_def_free(old);
	sorted_remove((void **)a->auds, &a->naud, pos);
	recount(a);
}

static void set_comp(struct aud *a, struct cattr *c)
{
	unsigned pos;
	struct cattr *old = find_comp(a, c->id, &pos);

	if (old) {
		cattr_free(old);
		a->comps[pos] = c;
		return;
	}
	sorted_insert((void ***)&a->comps, &a->ncomp, pos, c);
}

static void del_comp(struct aud *a, const char *id)
{
	unsigned pos;
	struct cattr *old = find_comp(a, id, &pos);

	if (!old)
		return;
	cattr_free(old);
	sorted_remove((void **)a->comps, &a->ncomp, pos);
}

static enum nerr compile_audience(const char *id, struct json_object *doc,
				  const struct expr_env *env, struct audience **out,
				  struct nerr_msg *msg)
{
	const char *when = jstr(doc, "when");
	struct expr_program *prog = NULL;
	struct nerr_msg em = {"", ""};

	if (!when || !*when) {
		nerr_set(msg, NERR_INVAL, "when",
			 "when: a CEL condition (string) is required");
		return NERR_INVAL;
	}
	if (expr_compile(when, env, &prog, &em) != NERR_OK) {
		nerr_set(msg, NERR_INVAL, "when", "invalid CEL: %s", em.message);
		return NERR_INVAL;
	}
	*out = xcalloc(1, sizeof(**out));
	(*out)->id = xstrdup(id);
	(*out)->prog = prog;
	(*out)->version = jint(doc, "version", 1);
	(*out)->reads_audiences = strstr(when, "in_audience") != NULL;
	/* Any reference to them names them (a textual test: false positives
	 * only cost a decoration). */
	(*out)->reads_decor = strstr(when, "computed") || strstr(when, "audiences");
	return NERR_OK;
}

enum nerr aud_check_audience(struct json_object *doc, const struct expr_env *env,
			     struct nerr_msg *msg)
{
	struct audience *au = NULL;
	enum nerr rc;

	json_object_object_foreach(doc, key, val)
	{
		if (strcmp(key, "when") && strcmp(key, "name") &&
		    strcmp(key, "description")) {
			nerr_set(msg, NERR_INVAL, key,
				 "%s: unknown field (use name, description, when)", key);
			return NERR_INVAL;
		}
		if (!json_object_is_type(val, json_type_string)) {
			nerr_set(msg, NERR_INVAL, key, "%s: must be a string", key);
			return NERR_INVAL;
		}
		if (strlen(json_object_get_string(val)) > 4096) {
			nerr_set(msg, NERR_INVAL, key, "%s: longer than 4096 bytes", key);
			return NERR_INVAL;
		}
	}
	rc = compile_audience("check", doc, env, &au, msg);
	aud_def_free(au);
	return rc;
}

enum nerr aud_check_computed(const char *id, struct json_object *doc,
			     const struct expr_env *env, struct nerr_msg *msg)
{
	struct computed_def *d = NULL;
	enum nerr rc = computed_def_compile(id, doc, env, &d, msg);

	computed_def_free(d);
	return rc;
}

enum nerr aud_check_indexed(struct json_object *doc, struct nerr_msg *msg)
{
	struct json_object *t;

	if (!json_object_object_get_ex(doc, "traits", &t) ||
	    !json_object_is_type(t, json_type_array)) {
		nerr_set(msg, NERR_INVAL, "traits",
			 "traits: a list of trait names is required");
		return NERR_INVAL;
	}
	if (json_object_array_length(t) > 50) {
		nerr_set(msg, NERR_INVAL, "traits", "traits: at most 50 indexed traits");
		return NERR_INVAL;
	}
	for (size_t i = 0; i < json_object_array_length(t); i++) {
		struct json_object *n = json_object_array_get_idx(t, i);
		const char *s = json_object_get_string(n);

		if (!json_object_is_type(n, json_type_string) || !*s ||
		    strlen(s) > NAME_MAX_BYTES) {
			nerr_set(msg, NERR_INVAL, "traits",
				 "traits[%zu]: a trait name of 1 to %d bytes", i,
				 NAME_MAX_BYTES);
			return NERR_INVAL;
		}
	}
	json_object_object_foreach(doc, key, val)
	{
		(void)val;
		if (strcmp(key, "traits")) {
			nerr_set(msg, NERR_INVAL, key, "%s: unknown field (use traits)",
				 key);
			return NERR_INVAL;
		}
	}
	return NERR_OK;
}

enum nerr aud_check_business(struct json_object *doc, int64_t now_ms,
			     struct nerr_msg *msg)
{
	struct json_object *v;
	const char *ev = jstr(doc, "event");
	char ts[40];

	if (!ev || !*ev || strlen(ev) > NAME_MAX_BYTES) {
		nerr_set(msg, NERR_INVAL, "event",
			 "event: a name of 1 to %d bytes is required", NAME_MAX_BYTES);
		return NERR_INVAL;
	}
	if (json_object_object_get_ex(doc, "properties", &v) &&
	    !json_object_is_type(v, json_type_object)) {
		nerr_set(msg, NERR_INVAL, "properties", "properties: must be an object");
		return NERR_INVAL;
	}
	if (json_object_object_get_ex(doc, "messageId", &v)) {
		const char *m = json_object_get_string(v);

		if (!json_object_is_type(v, json_type_string) || !*m || strlen(m) > 200) {
			nerr_set(msg, NERR_INVAL, "messageId",
				 "messageId: a string of 1 to 200 bytes");
			return NERR_INVAL;
		}
	} else {
		unsigned char r[16];
		char hex[33];
		FILE *f = fopen("/dev/urandom", "rb");

		if (!f || fread(r, 1, 16, f) != 16) {
			if (f)
				fclose(f);
			nerr_set(msg, NERR_INVAL, "", "cannot generate an id");
			return NERR_IO;
		}
		fclose(f);
		for (int i = 0; i < 16; i++)
			snprintf(hex + 2 * i, 3, "%02x", r[i]);
		json_object_object_add(doc, "messageId", json_object_new_string(hex));
	}
	if (json_object_object_get_ex(doc, "timestamp", &v)) {
		int64_t t;

		if (!json_object_is_type(v, json_type_string) ||
		    clock_parse_rfc3339(json_object_get_string(v), &t) != 0) {
			nerr_set(msg, NERR_INVAL, "timestamp",
				 "timestamp: an ISO 8601 date-time");
			return NERR_INVAL;
		}
	}
	json_object_object_foreach(doc, key, val)
	{
		(void)val;
		if (strcmp(key, "event") && strcmp(key, "properties") &&
		    strcmp(key, "messageId") && strcmp(key, "timestamp") &&
		    strcmp(key, "writeKey")) {
			nerr_set(msg, NERR_INVAL, key,
				 "%s: unknown field (use event, properties, messageId, "
				 "timestamp)",
				 key);
			return NERR_INVAL;
		}
	}
	json_object_object_del(doc, "writeKey");
	if (!json_object_object_get_ex(doc, "properties", NULL))
		json_object_object_add(doc, "properties", json_object_new_object());
	ms_string(now_ms, ts);
	json_object_object_add(doc, "receivedAt", json_object_new_string(ts));
	if (!json_object_object_get_ex(doc, "timestamp", NULL))
		json_object_object_add(doc, "timestamp", json_object_new_string(ts));
	json_object_object_add(doc, "type", json_object_new_string("track"));
	return NERR_OK;
}

/* ---------------------------------------------------------------- rounds */

/* A history entry's key and the FNV-1a hash of its event name (0: none). */
struct tl_ent {
	int64_t t;
	uint64_t seq;
	uint64_t h;
};

/* One profile's evaluation: lazily loaded view and history, the earliest
 * boundary found. */
struct round {
	struct aud *a;
	struct journey_batch *jb;
	uint64_t pid;
	struct json_object *event; /* borrowed, may be NULL */
	struct json_object *view;  /* owned, lazily loaded */
	struct tl_ent *tl;	   /* the history's names, ascending; lazily loaded */
	size_t ntl;
	struct json_object **tl_ev; /* events of tl read so far (owned), or NULL */
	bool tl_loaded;
	bool view_failed;
	int64_t boundary;
};

static void round_init(struct round *r, struct aud *a, struct journey_batch *jb,
		       uint64_t pid, struct json_object *event)
{
	memset(r, 0, sizeof(*r));
	r->a = a;
	r->jb = jb;
	r->pid = pid;
	r->event = event;
	r->boundary = INT64_MAX;
}

static void round_fini(struct round *r)
{
	json_object_put(r->view);
	r->view = NULL;
	for (size_t i = 0; r->tl_ev && i < r->ntl; i++)
		json_object_put(r->tl_ev[i]);
	free(r->tl_ev);
	r->tl_ev = NULL;
	free(r->tl);
	r->tl = NULL;
}

static void decorate_mem(struct aud *a, struct store_batch *b, uint64_t pid,
			 struct json_object *view);

static struct json_object *round_view(struct round *r)
{
	if (!r->view && !r->view_failed) {
		if (profile_view_json(r->a->s, r->jb->b, r->pid, &r->view) != NERR_OK) {
			r->view = NULL;
			r->view_failed = true;
		} else if (r->a->reads_decor) {
			/* Only when some audience reads profile.computed or
			 * profile.audiences: the decoration costs two seeks. */
			decorate_mem(r->a, r->jb->b, r->pid, r->view);
		}
	}
	return r->view;
}

static int64_t event_ms(struct json_object *e)
{
	int64_t t;
	const char *ts = jstr(e, "timestamp");

	if (!ts)
		ts = jstr(e, "receivedAt");
	if (ts && clock_parse_rfc3339(ts, &t) == 0)
		return t;
	return INT64_MIN;
}

static void set_now(struct expr_value *v, int64_t now_ms)
{
	v->kind = EXPR_TIMESTAMP;
	v->flags = 0;
	v->len = 0;
	v->as.sec = now_ms / 1000;
	v->nsec = (int32_t)(now_ms % 1000) * 1000000;
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h ? h : 1;
}

/*
 * The round's timeline: the profile's history keys with their event names'
 * hashes, from the "E" record kept in step with the history. Keys the record
 * lacks (events applied since, merged history) are read once and added, keys
 * the history dropped are dropped, so event_count() without a predicate reads
 * one profile record and one small binary record instead of every event.
 */
static void round_timeline(struct round *r)
{
	struct aud *a = r->a;
	struct profile_hkey *keys = NULL;
	size_t nkeys = 0, nold = 0, j = 0;
	struct buf k;
	char *v = NULL;
	size_t vl = 0;
	bool changed = false;

	if (r->tl_loaded)
		return;
	r->tl_loaded = true;
	if (profile_history_keys(a->s, r->jb->b, r->pid, &keys, &nkeys) != NERR_OK)
		return;
	buf_init(&k, 0);
	key_pid(&k, 'E', r->pid, NULL);
	if (store_batch_get(r->jb->b, STORE_CF_AUDIENCES, k.data, k.len, &v, &vl) ==
	    NERR_OK)
		nold = vl / 24;
	r->tl = xmalloc((nkeys ? nkeys : 1) * sizeof(*r->tl));
	r->ntl = nkeys;
	for (size_t i = 0; i < nkeys; i++) {
		struct tl_ent *e = &r->tl[i];

		e->t = keys[i].t;
		e->seq = keys[i].seq;
		e->h = 0;
		/* Both lists ascend by (t, seq). */
		while (j < nold && ((int64_t)store_get_u64(v + 24 * j) < e->t ||
				    ((int64_t)store_get_u64(v + 24 * j) == e->t &&
				     store_get_u64(v + 24 * j + 8) < e->seq)))
			j++;
		if (j < nold && (int64_t)store_get_u64(v + 24 * j) == e->t &&
		    store_get_u64(v + 24 * j + 8) == e->seq) {
			e->h = store_get_u64(v + 24 * j + 16);
		} else {
			struct json_object *ev = NULL;

			if (profile_history_event(a->s, r->jb->b, r->pid, &keys[i],
						  &ev) == NERR_OK &&
			    jstr(ev, "event"))
				e->h = name_hash(jstr(ev, "event"));
			json_object_put(ev);
			changed = true;
		}
	}
	if (changed || nkeys != nold) {
		unsigned char *out = xmalloc(24 * (nkeys ? nkeys : 1));

		for (size_t i = 0; i < nkeys; i++) {
			store_put_u64(out + 24 * i, (uint64_t)r->tl[i].t);
			store_put_u64(out + 24 * i + 8, r->tl[i].seq);
			store_put_u64(out + 24 * i + 16, r->tl[i].h);
		}
		store_batch_put(r->jb->b, STORE_CF_AUDIENCES, k.data, k.len, out,
				24 * nkeys);
		free(out);
	}
	free(v);
	free(keys);
	buf_fini(&k);
}

static int64_t r_event_count(void *ud, const char *name, int64_t window_ms,
			     const char *predicate)
{
	struct round *r = ud;
	struct aud *a = r->a;
	struct expr_program *prog = NULL;
	int64_t now = r->jb->now_ms, since = now - window_ms, n = 0;
	uint64_t h = name_hash(name);

	if (predicate) {
		prog = map_get(&a->predicates, predicate);
		if (!prog) {
			if (expr_compile(predicate, a->env, &prog, NULL) != NERR_OK)
				return -1;
			map_put(&a->predicates, predicate, prog);
		}
	}
	/* The timeline finds the events of that name inside the window; only
	 * those are read, and only when a predicate needs their content. */
	round_timeline(r);
	for (size_t i = r->ntl; i-- > 0 && r->tl[i].t >= since;) {
		if (r->tl[i].h != h)
			continue;
		if (prog) {
			struct expr_value vars[JOURNEY_VAR__COUNT], out;
			struct profile_hkey key = {r->tl[i].t, r->tl[i].seq};
			const char *en;

			if (!r->tl_ev)
				r->tl_ev = xcalloc(r->ntl, sizeof(*r->tl_ev));
			if (!r->tl_ev[i] &&
			    profile_history_event(a->s, r->jb->b, r->pid, &key,
						  &r->tl_ev[i]) != NERR_OK)
				r->tl_ev[i] = NULL;
			en = jstr(r->tl_ev[i], "event");
			if (!en || strcmp(en, name) != 0) /* a hash collision */
				continue;
			vars[JOURNEY_VAR_EVENT] = expr_value_from_json(r->tl_ev[i]);
			vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(round_view(r));
			vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
			set_now(&vars[JOURNEY_VAR_NOW], now);
			arena_reset(&a->scratch2);
			if (expr_eval(prog, vars, JOURNEY_VAR__COUNT, &a->scratch2, &out,
				      NULL) != NERR_OK ||
			    !expr_value_is_true(&out))
				continue;
		}
		n++;
		/* The count drops when this event leaves the window. */
		if (r->tl[i].t + window_ms + 1 < r->boundary)
			r->boundary = r->tl[i].t + window_ms + 1;
	}
	return n;
}

static int r_consent(void *ud, const char *channel, const char *purpose)
{
	struct round *r = ud;
	struct json_object *c, *ch, *p, *view = round_view(r);

	if (!purpose)
		purpose = "marketing";
	if (view && json_object_object_get_ex(view, "consent", &c) &&
	    json_object_object_get_ex(c, channel, &ch) &&
	    json_object_object_get_ex(ch, purpose, &p))
		return strcmp(json_object_get_string(p), "granted") == 0;
	if (strcmp(purpose, "transactional") == 0)
		return 1;
	return strcmp(channel, "email") == 0;
}

static int r_in_audience(void *ud, const char *aid)
{
	struct round *r = ud;

	if (!find_aud(r->a, aid, NULL))
		return 0;
	return aud_is_member(r->a->s, r->jb->b, r->pid, aid);
}

/* Evaluates audience au for the round's profile; errors count as false. */
static bool eval_audience(struct round *r, const struct audience *au)
{
	struct aud *a = r->a;
	struct expr_value vars[JOURNEY_VAR__COUNT], out;
	struct journey_eval_ctx ctx = {.ud = r,
				       .event_count = r_event_count,
				       .consent = r_consent,
				       .in_audience = r_in_audience};
	struct json_object *view = round_view(r);
	enum nerr rc;

	if (!view)
		return false;
	vars[JOURNEY_VAR_EVENT] = expr_value_from_json(r->event);
	vars[JOURNEY_VAR_PROFILE] = expr_value_from_json(view);
	vars[JOURNEY_VAR_JOURNEY] = expr_value_from_json(NULL);
	set_now(&vars[JOURNEY_VAR_NOW], r->jb->now_ms);
	journey_eval_ctx_set(&ctx);
	arena_reset(&a->scratch);
	rc = expr_eval(au->prog, vars, JOURNEY_VAR__COUNT, &a->scratch, &out, NULL);
	journey_eval_ctx_set(NULL);
	metrics_add(&m_evals, 1);
	return rc == NERR_OK && expr_value_is_true(&out);
}

static void count_add(struct aud *a, struct store_batch *b, const char *aid, int64_t d)
{
	struct buf k;
	uint64_t n = 0;

	buf_init(&k, 0);
	key_tag(&k, 'N', aid);
	get_u64(a->s, b, &k, &n);
	n = (int64_t)n + d < 0 ? 0 : (uint64_t)((int64_t)n + d);
	put_u64(b, &k, n);
	buf_fini(&k);
}

/* Records a membership change and enters the journeys that start from it. */
static void set_member(struct round *r, const char *aid, bool in)
{
	struct store_batch *b = r->jb->b;
	struct buf k;

	buf_init(&k, 0);
	key_pid(&k, 'P', r->pid, aid);
	if (in) {
		put_u64(b, &k, (uint64_t)r->jb->now_ms);
		key_member(&k, aid, r->pid);
		put_u64(b, &k, (uint64_t)r->jb->now_ms);
		metrics_add(&m_entered, 1);
	} else {
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		key_member(&k, aid, r->pid);
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		metrics_add(&m_exited, 1);
	}
	buf_fini(&k);
	count_add(r->a, b, aid, in ? 1 : -1);
	log_debug("audience", "msg=%s audience=%s profile=%llu",
		  in ? "entered" : "exited", aid, (unsigned long long)r->pid);
	/* The view is stale when it lists audiences, or when a journey ran
	 * (its steps may have changed traits): reload it on next use. */
	if ((r->a->rt && journey_rt_on_audience(r->a->rt, r->jb, r->pid, aid, in)) ||
	    r->a->reads_decor) {
		json_object_put(r->view);
		r->view = NULL;
	}
}

/* The audience ids pid is a member of (through the batch), as a map. */
static void load_members(struct aud *a, struct store_batch *b, uint64_t pid,
			 struct map *out)
{
	struct store_iter *it = store_iter_new(a->s, b, STORE_CF_AUDIENCES);
	struct buf k;
	unsigned n = 0;

	buf_init(&k, 0);
	key_pid(&k, 'P', pid, NULL);
	for (store_iter_seek(it, k.data, k.len);
	     store_iter_valid(it) && n < MEMBER_SCAN_MAX; store_iter_next(it), n++) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);
		char id[JOURNEY_MAX_ID_BYTES + 1];

		if (kl <= 9 || memcmp(key, k.data, 9) != 0)
			break;
		snprintf(id, sizeof(id), "%.*s", (int)(kl - 9), key + 9);
		map_put(out, id, (void *)1);
	}
	store_iter_free(it);
	buf_fini(&k);
}

/* Evaluates every audience (or only `only`) for the round's profile. */
static void eval_memberships(struct round *r, const struct audience *only)
{
	struct aud *a = r->a;
	struct map cur;

	if (!a->naud || !round_view(r))
		return;
	map_init(&cur);
	load_members(a, r->jb->b, r->pid, &cur);
	/* Audiences that read other audiences (in_audience) see this round's
	 * changes: evaluate again until nothing changes (bounded). */
	for (unsigned pass = 0; pass < 8; pass++) {
		bool changed = false;

		for (unsigned i = 0; i < a->naud; i++) {
			const struct audience *au = a->auds[i];

			if (only && au != only)
				continue;
			if (pass > 0 && !au->reads_audiences)
				continue;
			bool was = map_get(&cur, au->id) != NULL,
			     now = eval_audience(r, au);

			if (was == now)
				continue;
			set_member(r, au->id, now);
			if (now)
				map_put(&cur, au->id, (void *)1);
			else
				map_del(&cur, au->id);
			changed = true;
		}
		if (!changed || !a->reads_audiences)
			break;
	}
	map_fini(&cur);
}

/* --------------------------------------------------------------- computed */

static struct json_object *load_state(struct aud *a, struct store_batch *b, uint64_t pid,
				      const struct cattr *c)
{
	struct buf k;
	struct json_object *o, *s = NULL;

	buf_init(&k, 0);
	key_pid(&k, 'W', pid, c->id);
	o = get_json(a->s, b, &k);
	buf_fini(&k);
	if (o && jint(o, "ver", 0) == c->version && json_object_object_get_ex(o, "s", &s))
		json_object_get(s);
	else
		s = NULL;
	json_object_put(o);
	return s;
}

static void save_state(struct aud *a, struct store_batch *b, uint64_t pid,
		       const struct cattr *c, struct json_object *state)
{
	struct buf k;
	struct json_object *o;

	/* The value ("V", read by every profile view) apart from the state
	 * ("W", read only when the attribute changes): views never parse states. */
	buf_init(&k, 0);
	key_pid(&k, 'V', pid, c->id);
	if (!state) {
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		key_pid(&k, 'W', pid, c->id);
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		buf_fini(&k);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "value", computed_value(c->def, state));
	json_object_object_add(o, "ver", json_object_new_int64(c->version));
	put_json(b, &k, o);
	json_object_put(o);
	key_pid(&k, 'W', pid, c->id);
	o = json_object_new_object();
	json_object_object_add(o, "ver", json_object_new_int64(c->version));
	json_object_object_add(o, "s", json_object_get(state));
	put_json(b, &k, o);
	json_object_put(o);
	buf_fini(&k);
	(void)a;
}

static void note_boundary(struct round *r, const struct cattr *c, struct json_object *st)
{
	int64_t t = st ? computed_next_boundary(c->def, st) : INT64_MAX;

	if (t < r->boundary)
		r->boundary = t;
}

/* Folds the round's event into the computed attributes of its name. */
static void computed_event(struct round *r, int64_t ev_ms)
{
	struct aud *a = r->a;
	const char *name = jstr(r->event, "event");

	if (!name)
		return;
	for (unsigned i = 0; i < a->ncomp; i++) {
		struct cattr *c = a->comps[i];
		struct json_object *st;

		if (strcmp(computed_def_event(c->def), name) != 0)
			continue;
		if (c->backfilling && r->pid > c->bf_cursor)
			continue; /* the back-fill reads this event from history */
		st = load_state(a, r->jb->b, r->pid, c);
		arena_reset(&a->scratch);
		if (computed_apply(c->def, &st, r->event, ev_ms, r->jb->now_ms,
				   &a->scratch)) {
			save_state(a, r->jb->b, r->pid, c, st);
			json_object_put(r->view);
			r->view = NULL;
		}
		note_boundary(r, c, st);
		json_object_put(st);
	}
}

/* Timer round: drops what left the windows, notes every windowed boundary. */
static void computed_expire_all(struct round *r)
{
	struct aud *a = r->a;

	for (unsigned i = 0; i < a->ncomp; i++) {
		struct cattr *c = a->comps[i];
		struct json_object *st;

		if (!computed_def_window_ms(c->def))
			continue;
		st = load_state(a, r->jb->b, r->pid, c);
		if (!st)
			continue;
		if (computed_expire(c->def, st, r->jb->now_ms)) {
			save_state(a, r->jb->b, r->pid, c, st);
			json_object_put(r->view);
			r->view = NULL;
		}
		note_boundary(r, c, st);
		json_object_put(st);
	}
}

/* ------------------------------------------------------------------ index */

static bool is_indexed(const struct aud *a, const char *trait)
{
	for (unsigned i = 0; i < a->nindexed; i++)
		if (strcmp(a->indexed[i], trait) == 0)
			return true;
	return false;
}

static bool list_has(struct json_object *arr, const char *s)
{
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(arr, i)),
			   s) == 0)
			return true;
	return false;
}

/* Brings pid's "X" records in line with its indexed traits now. */
static void index_add(struct json_object *set, struct json_object *v, struct buf *c)
{
	if (canon(v, c))
		json_object_object_add(set, buf_str(c), NULL);
}

/* force: a trait whose index records are rewritten even where the profile's
 * "Y" record says they exist (a trait indexed again after a purge). */
static void reindex(struct round *r, const char *force)
{
	struct aud *a = r->a;
	struct store_batch *b = r->jb->b;
	struct json_object *view = round_view(r), *traits = NULL, *old, *now;
	struct buf k, c;

	buf_init(&k, 0);
	buf_init(&c, 0);
	key_pid(&k, 'Y', r->pid, NULL);
	old = get_json(a->s, b, &k);
	if (!old && !a->nindexed) {
		buf_fini(&k);
		buf_fini(&c);
		return;
	}
	/* now: {trait: {canon: null, ...}} -- objects as sets. */
	now = json_object_new_object();
	if (view)
		json_object_object_get_ex(view, "traits", &traits);
	for (unsigned i = 0; traits && i < a->nindexed; i++) {
		struct json_object *v, *set;

		if (!json_object_object_get_ex(traits, a->indexed[i], &v) || !v)
			continue;
		set = json_object_new_object();
		if (json_object_is_type(v, json_type_array)) {
			for (size_t j = 0; j < json_object_array_length(v); j++)
				index_add(set, json_object_array_get_idx(v, j), &c);
		} else if (json_object_is_type(v, json_type_object)) {
			/* `E in map` and exists() over a map test its keys. */
			json_object_object_foreach(v, mk, mv)
			{
				struct json_object *ks = json_object_new_string(mk);

				(void)mv;
				index_add(set, ks, &c);
				json_object_put(ks);
			}
		} else {
			index_add(set, v, &c);
		}
		if (json_object_object_length(set))
			json_object_object_add(now, a->indexed[i], set);
		else
			json_object_put(set);
	}
	if (old && json_object_is_type(old, json_type_object)) {
		json_object_object_foreach(old, t, vals)
		{
			struct json_object *nv = NULL;

			if (!json_object_is_type(vals, json_type_object))
				continue;
			json_object_object_get_ex(now, t, &nv);
			json_object_object_foreach(vals, cv, unused)
			{
				(void)unused;
				if (nv && json_object_object_get_ex(nv, cv, NULL))
					continue;
				key_index(&k, t, cv, r->pid, true);
				store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
			}
		}
	}
	json_object_object_foreach(now, t, vals)
	{
		struct json_object *ov = NULL;

		if (old)
			json_object_object_get_ex(old, t, &ov);
		json_object_object_foreach(vals, cv, unused)
		{
			(void)unused;
			if (ov && json_object_is_type(ov, json_type_object) &&
			    json_object_object_get_ex(ov, cv, NULL) &&
			    !(force && strcmp(force, t) == 0))
				continue;
			key_index(&k, t, cv, r->pid, true);
			store_batch_put(b, STORE_CF_AUDIENCES, k.data, k.len, "", 0);
		}
	}
	key_pid(&k, 'Y', r->pid, NULL);
	if (json_object_object_length(now))
		put_json(b, &k, now);
	else if (old)
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
	json_object_put(now);
	json_object_put(old);
	buf_fini(&k);
	buf_fini(&c);
}

/* ----------------------------------------------------------------- timers */

/*
 * Moves pid's re-evaluation timer to the round's boundary. A partial round (an
 * event, a back-fill) only brings the timer earlier: the boundaries it did not
 * look at may be earlier still, and a timer round recomputes all of them.
 */
static void schedule(struct round *r, bool full)
{
	struct store_batch *b = r->jb->b;
	struct buf k;
	uint64_t old = 0;
	bool has_old;
	int64_t due = r->boundary;

	buf_init(&k, 0);
	key_pid(&k, 'Q', r->pid, NULL);
	has_old = get_u64(r->a->s, b, &k, &old);
	if (has_old && ((int64_t)old == due || (!full && (int64_t)old <= due))) {
		buf_fini(&k);
		return;
	}
	if (!has_old && due == INT64_MAX) {
		buf_fini(&k);
		return;
	}
	if (due == INT64_MAX)
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
	else
		put_u64(b, &k, (uint64_t)due);
	if (has_old) {
		timer_key(&k, (int64_t)old, r->pid);
		store_batch_delete(b, STORE_CF_TIMERS, k.data, k.len);
	}
	if (due != INT64_MAX) {
		timer_key(&k, due, r->pid);
		store_batch_put(b, STORE_CF_TIMERS, k.data, k.len, "A", 1);
		if (due < r->jb->min_due)
			r->jb->min_due = due;
	}
	buf_fini(&k);
}

/* --------------------------------------------------------------- streaming */

static bool carries_traits(struct json_object *ev)
{
	struct json_object *v, *ctx;
	const char *type = jstr(ev, "type");

	if (type && (strcmp(type, "identify") == 0 || strcmp(type, "group") == 0))
		return true;
	if (json_object_object_get_ex(ev, "traits", &v))
		return true;
	return json_object_object_get_ex(ev, "context", &ctx) &&
	       json_object_object_get_ex(ctx, "traits", &v);
}

bool aud_wants_event(const struct aud *a, uint64_t pid)
{
	return a->naud || a->ncomp || a->nindexed || (pid && a->reindex_pid == pid);
}

void aud_on_event(struct aud *a, struct journey_batch *jb, uint64_t pid,
		  struct json_object *event, int64_t ev_ms)
{
	struct round r;
	bool merged = a->reindex_pid == pid;

	if (!aud_wants_event(a, pid))
		return;
	round_init(&r, a, jb, pid, event);
	if (a->ncomp)
		computed_event(&r, ev_ms);

	if (merged || (a->nindexed && carries_traits(event))) {
		reindex(&r, NULL);
		a->reindex_pid = 0;
	}
	/* After a merge the survivor holds states and windows it had no timer
	 * for: a full round notes every boundary. */
	if (merged)
		computed_expire_all(&r);
	eval_memberships(&r, NULL);
	if (a->naud || a->ncomp)
		schedule(&r, merged);
	round_fini(&r);
}

static void hook_traits_changed(void *ud, uint64_t pid)
{
	struct aud *a = ud;

	if (!a->naud && !a->nindexed)
		return;
	for (unsigned i = 0; i < a->nchanged; i++)
		if (a->changed[i] == pid)
			return;
	if (a->nchanged == a->changed_alloc) {
		a->changed_alloc = a->changed_alloc ? 2 * a->changed_alloc : 8;
		a->changed = xrealloc(a->changed, a->changed_alloc * sizeof(*a->changed));
	}
	a->changed[a->nchanged++] = pid;
}

void aud_flush_changed(struct aud *a, struct journey_batch *jb)
{
	unsigned n = a->nchanged;
	uint64_t *pids;

	if (!n)
		return;
	/* Changes made by the journeys these rounds start wait for the next
	 * call: take the list first. */
	pids = a->changed;
	a->changed = NULL;
	a->nchanged = a->changed_alloc = 0;
	for (unsigned i = 0; i < n; i++) {
		struct round r;

		round_init(&r, a, jb, pids[i], NULL);
		if (round_view(&r)) {
			reindex(&r, NULL);
			eval_memberships(&r, NULL);
			schedule(&r, false);
		}
		round_fini(&r);
	}
	free(pids);
}

void aud_on_timer(void *ud, struct journey_batch *jb, const char *key, size_t kl)
{
	struct aud *a = ud;
	struct round r;
	struct buf k;
	uint64_t pid, q = 0;

	if (kl < 8)
		return;
	pid = store_get_u64(key);
	buf_init(&k, 0);
	key_pid(&k, 'Q', pid, NULL);
	/* The timer fired: it is gone; forget it so schedule() sets a fresh one. */
	if (get_u64(a->s, jb->b, &k, &q) && (int64_t)q <= jb->now_ms)
		store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
	buf_fini(&k);
	round_init(&r, a, jb, pid, NULL);
	if (!round_view(&r)) {
		round_fini(&r);
		return; /* erased or merged away meanwhile */
	}
	computed_expire_all(&r);
	eval_memberships(&r, NULL);
	schedule(&r, true);
	round_fini(&r);
}

/* Folds pid's retained history events of c's event into dest's state (a
 * computed back-fill). Returns whether the state changed. */
static bool replay_history(struct aud *a, struct journey_batch *jb, struct cattr *c,
			   uint64_t pid, uint64_t dest)
{
	struct json_object *hist = NULL, *st = load_state(a, jb->b, dest, c);
	bool changed = false;

	if (profile_history_json(a->s, jb->b, pid, INT64_MIN, &hist) == NERR_OK) {
		/* Oldest first, so first/last see event order. */
		for (size_t j = json_object_array_length(hist); j-- > 0;) {
			struct json_object *e = json_object_array_get_idx(hist, j);
			const char *en = jstr(e, "event");

			if (!en || strcmp(en, computed_def_event(c->def)) != 0)
				continue;
			arena_reset(&a->scratch);
			changed |= computed_apply(c->def, &st, e, event_ms(e), jb->now_ms,
						  &a->scratch);
		}
	}
	json_object_put(hist);
	if (changed && st)
		save_state(a, jb->b, dest, c, st);
	json_object_put(st);
	return changed;
}

/* Deletes every record of pid here (merge source or erasure); into, when set,
 * receives its computed states and memberships. */
static void drop_profile(struct aud *a, struct journey_batch *jb, uint64_t pid,
			 uint64_t into)
{
	struct store_batch *b = jb->b;
	struct store_iter *it;
	struct buf k, keys;
	struct json_object *y;
	uint64_t q;

	buf_init(&k, 0);
	buf_init(&keys, 0);
	/* Collect P and V keys first: the batch must not change under an iterator. */
	for (char tag = 'P'; tag; tag = tag == 'P' ? 'V' : 0) {
		it = store_iter_new(a->s, b, STORE_CF_AUDIENCES);
		key_pid(&k, tag, pid, NULL);
		for (store_iter_seek(it, k.data, k.len); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl;
			const char *key = store_iter_key(it, &kl);
			uint32_t l32;

			if (kl <= 9 || memcmp(key, k.data, 9) != 0)
				break;
			l32 = (uint32_t)kl;
			buf_append(&keys, &l32, 4);
			buf_append(&keys, key, kl);
		}
		store_iter_free(it);
	}
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		const char *key;
		char id[JOURNEY_MAX_ID_BYTES + 1];

		memcpy(&kl, keys.data + off, 4);
		key = keys.data + off + 4;
		off += 4 + kl;
		snprintf(id, sizeof(id), "%.*s", (int)(kl - 9), key + 9);
		if (key[0] == 'P') {
			struct buf mk;

			buf_init(&mk, 0);
			key_member(&mk, id, pid);
			store_batch_delete(b, STORE_CF_AUDIENCES, mk.data, mk.len);
			if (into && find_aud(a, id, NULL) &&
			    aud_is_member(a->s, b, into, id) == 0) {
				/* The person stays a member: the surviving profile
				 * takes the membership over, with its time, so the
				 * merge itself starts no `on: enter` journey. */
				char *v = NULL;
				size_t vl = 0;
				uint64_t since = (uint64_t)jb->now_ms;

				if (store_batch_get(b, STORE_CF_AUDIENCES, key, kl, &v,
						    &vl) == NERR_OK &&
				    vl == 8)
					since = store_get_u64(v);
				free(v);
				key_member(&mk, id, into);
				put_u64(b, &mk, since);
				key_pid(&mk, 'P', into, id);
				put_u64(b, &mk, since);
			} else {
				count_add(a, b, id, -1);
			}
			buf_fini(&mk);
		} else if (into) {
			struct cattr *c = find_comp(a, id, NULL);

			if (c) {
				struct json_object *from = load_state(a, b, pid, c),
						   *st = load_state(a, b, into, c);

				if (from) {
					computed_merge(c->def, &st, from);
					save_state(a, b, into, c, st);
				}
				json_object_put(from);
				json_object_put(st);
			}
		}
		store_batch_delete(b, STORE_CF_AUDIENCES, key, kl);
		if (key[0] == 'V') {
			struct buf wk;

			buf_init(&wk, 0);
			key_pid(&wk, 'W', pid, id);
			store_batch_delete(b, STORE_CF_AUDIENCES, wk.data, wk.len);
			buf_fini(&wk);
		}
	}
	/* A computed back-fill that has passed `into` but not `pid` would never
	 * count pid's history: fold it into `into` now. */
	for (unsigned i = 0; into && i < a->ncomp; i++) {
		struct cattr *c = a->comps[i];

		if (c->backfilling && pid > c->bf_cursor && into <= c->bf_cursor)
			replay_history(a, jb, c, pid, into);
	}
	/* Trait index. */
	key_pid(&k, 'Y', pid, NULL);
	y = get_json(a->s, b, &k);
	if (y) {
		struct buf xk;

		buf_init(&xk, 0);
		json_object_object_foreach(y, t, vals)
		{
			if (!json_object_is_type(vals, json_type_object))
				continue;
			json_object_object_foreach(vals, cv, unused)
			{
				(void)unused;
				key_index(&xk, t, cv, pid, true);
				store_batch_delete(b, STORE_CF_AUDIENCES, xk.data,
						   xk.len);
			}
		}
		buf_fini(&xk);
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		json_object_put(y);
	}
	/* Timeline (the survivor's heals itself from its merged history). */
	key_pid(&k, 'E', pid, NULL);
	store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
	/* Re-evaluation timer. */
	key_pid(&k, 'Q', pid, NULL);
	if (get_u64(a->s, b, &k, &q)) {
		store_batch_delete(b, STORE_CF_AUDIENCES, k.data, k.len);
		timer_key(&k, (int64_t)q, pid);
		store_batch_delete(b, STORE_CF_TIMERS, k.data, k.len);
	}
	buf_fini(&keys);
	buf_fini(&k);
}

void aud_on_merge(struct aud *a, struct journey_batch *jb, const uint64_t *from,
		  unsigned n, uint64_t into)
{
	for (unsigned i = 0; i < n; i++)
		drop_profile(a, jb, from[i], into);
	/* into's traits changed; its memberships are evaluated by the event's
	 * round, which follows. */
	a->reindex_pid = into;
}

void aud_on_erase(struct aud *a, struct journey_batch *jb, uint64_t pid)
{
	drop_profile(a, jb, pid, 0);
}

/* -------------------------------------------------------------- decorating */

static void decorate_from(struct store *s, struct store_batch *b, uint64_t pid,
			  struct json_object *view, struct aud *a, bool api)
{
	struct store_iter *it = store_iter_new(s, b, STORE_CF_AUDIENCES);
	struct json_object *auds = json_object_new_array(),
			   *comp = json_object_new_object();
	struct json_object *versions = NULL, *live = NULL;
	unsigned char k[9];

	if (!a) {
		/* Audiences that exist ("D"): a deleted one's members are purged
		 * in the background and must not show meanwhile. */
		live = json_object_new_object();
		k[0] = 'D';
		for (store_iter_seek(it, k, 1); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl;
			const char *key = store_iter_key(it, &kl);
			char id[JOURNEY_MAX_ID_BYTES + 1];

			if (kl < 2 || key[0] != 'D')
				break;
			if (kl - 1 > JOURNEY_MAX_ID_BYTES)
				continue;
			snprintf(id, sizeof(id), "%.*s", (int)(kl - 1), key + 1);
			json_object_object_add(live, id, NULL);
		}
		/* Committed state: current definitions' versions from "c". */
		versions = json_object_new_object();
		k[0] = 'c';
		for (store_iter_seek(it, k, 1); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl, vl;
			const char *key = store_iter_key(it, &kl),
				   *v = store_iter_value(it, &vl);
			char id[JOURNEY_MAX_ID_BYTES + 1];

			if (kl < 2 || key[0] != 'c')
				break;
			if (vl != 8 || kl - 1 > JOURNEY_MAX_ID_BYTES)
				continue;
			snprintf(id, sizeof(id), "%.*s", (int)(kl - 1), key + 1);
			json_object_object_add(
				versions, id,
				json_object_new_int64((int64_t)store_get_u64(v)));
		}
	}
	k[0] = 'P';
	store_put_u64(k + 1, pid);
	for (store_iter_seek(it, k, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char id[JOURNEY_MAX_ID_BYTES + 1];

		if (kl <= 9 || memcmp(key, k, 9) != 0)
			break;
		snprintf(id, sizeof(id), "%.*s", (int)(kl - 9), key + 9);
		if (a ? !find_aud(a, id, NULL)
		      : !json_object_object_get_ex(live, id, NULL))
			continue;
		if (api) {
			struct json_object *m = json_object_new_object();
			char ts[40];

			ms_string(vl == 8 ? (int64_t)store_get_u64(v) : 0, ts);
			json_object_object_add(m, "id", json_object_new_string(id));
			json_object_object_add(m, "since", json_object_new_string(ts));
			json_object_array_add(auds, m);
		} else {
			json_object_array_add(auds, json_object_new_string(id));
		}
	}
	k[0] = 'V';
	for (store_iter_seek(it, k, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char id[JOURNEY_MAX_ID_BYTES + 1];
		struct json_object *o, *val;
		int64_t want;

		if (kl <= 9 || memcmp(key, k, 9) != 0)
			break;
		if (kl - 9 > JOURNEY_MAX_ID_BYTES)
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(kl - 9), key + 9);
		if (a) {
			struct cattr *c = find_comp(a, id, NULL);

			want = c ? c->version : -1;
		} else {
			want = jint(versions, id, -1);
		}
		o = parse(v, vl);
		if (o && jint(o, "ver", -2) == want &&
		    json_object_object_get_ex(o, "value", &val))
			json_object_object_add(comp, id, json_object_get(val));
		json_object_put(o);
	}
	/* Attributes with no state yet read as their empty value. */
	if (a) {
		for (unsigned i = 0; i < a->ncomp; i++)
			if (!json_object_object_get_ex(comp, a->comps[i]->id, NULL))
				json_object_object_add(
					comp, a->comps[i]->id,
					computed_value(a->comps[i]->def, NULL));
	}
	store_iter_free(it);
	json_object_put(versions);
	json_object_put(live);
	json_object_object_add(view, "audiences", auds);
	json_object_object_add(view, "computed", comp);
}

static void decorate_mem(struct aud *a, struct store_batch *b, uint64_t pid,
			 struct json_object *view)
{
	decorate_from(a->s, b, pid, view, a, false);
}

/* The journey runtime's hook (engine thread): in-memory definitions. */
static void hook_decorate(void *ud, struct store_batch *b, uint64_t pid,
			  struct json_object *view)
{
	struct aud *a = ud;

	/* With nothing defined the view's empty "audiences" and "computed" are
	 * already right: journeys pay no seeks for a feature they don't use. */
	if (a->naud || a->ncomp)
		decorate_mem(a, b, pid, view);
}

static int hook_in_audience(void *ud, struct store_batch *b, uint64_t pid,
			    const char *aid)
{
	struct aud *a = ud;

	if (!find_aud(a, aid, NULL))
		return 0; /* deleted: its records are being purged */
	return aud_is_member(a->s, b, pid, aid);
}

void aud_decorate(struct store *s, struct store_batch *b, uint64_t pid,
		  struct json_object *view)
{
	decorate_from(s, b, pid, view, NULL, false);
}

void aud_decorate_api(struct store *s, uint64_t pid, struct json_object *profile)
{
	decorate_from(s, NULL, pid, profile, NULL, true);
}

int aud_is_member(struct store *s, struct store_batch *b, uint64_t pid, const char *aid)
{
	struct buf k;
	char *v = NULL;
	size_t vl = 0;
	enum nerr rc;

	buf_init(&k, 0);
	key_pid(&k, 'P', pid, aid);
	rc = b ? store_batch_get(b, STORE_CF_AUDIENCES, k.data, k.len, &v, &vl)
	       : store_get(s, STORE_CF_AUDIENCES, k.data, k.len, &v, &vl);
	free(v);
	buf_fini(&k);
	if (rc == NERR_OK)
		return 1;
	return rc == NERR_NOTFOUND ? 0 : -1;
}

/* ------------------------------------------------------------------- jobs */

static void job_key(struct buf *k, uint64_t id)
{
	key_pid(k, 'J', id, NULL);
}

static uint64_t job_add(struct aud *a, struct journey_batch *jb, struct json_object *job)
{
	struct buf k;
	uint64_t id = a->next_job++;

	buf_init(&k, 0);
	job_key(&k, id);
	put_json(jb->b, &k, job);
	key_tag(&k, 'n', NULL);
	put_u64(jb->b, &k, a->next_job);
	buf_fini(&k);
	a->jobs++;
	a->only_throttled = false;
	metrics_set(&m_jobs, a->jobs);
	return id;
}

static void job_done(struct aud *a, struct journey_batch *jb, uint64_t id)
{
	struct buf k;

	buf_init(&k, 0);
	job_key(&k, id);
	store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
	buf_fini(&k);
	if (a->jobs)
		a->jobs--;
	metrics_set(&m_jobs, a->jobs);
}

static void job_save(struct journey_batch *jb, uint64_t id, struct json_object *job)
{
	struct buf k;

	buf_init(&k, 0);
	job_key(&k, id);
	put_json(jb->b, &k, job);
	buf_fini(&k);
}

/* Collects up to max profile ids after `after`. Returns how many; *end set when
 * the profiles ran out. */
static unsigned next_profiles(struct aud *a, struct store_batch *b, uint64_t after,
			      uint64_t *out, unsigned max, bool *end)
{
	struct store_iter *it = store_iter_new(a->s, b, STORE_CF_PROFILES);
	unsigned char k[8];
	unsigned n = 0;

	store_put_u64(k, after + 1);
	*end = true;
	for (store_iter_seek(it, k, 8); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);

		if (kl != 8)
			continue;
		if (n == max) {
			*end = false;
			break;
		}
		out[n++] = store_get_u64(key);
	}
	store_iter_free(it);
	return n;
}

static int64_t profiles_total(struct store *s)
{
	char *v = NULL;
	size_t vl = 0;
	int64_t n = 0;

	if (store_get(s, STORE_CF_META, META_PROFILES, sizeof(META_PROFILES) - 1, &v,
		      &vl) == NERR_OK &&
	    vl == 8)
		n = (int64_t)store_get_u64(v);
	free(v);
	return n;
}

/* Updates a definition record's "backfill" progress. */
static void progress(struct aud *a, struct journey_batch *jb, char tag, const char *id,
		     const char *state, int64_t evaluated, int64_t version)
{
	struct buf k;
	struct json_object *d, *bf;

	buf_init(&k, 0);
	key_tag(&k, tag, id);
	d = get_json(a->s, jb->b, &k);
	if (d && jint(d, "version", 0) == version) {
		bf = json_object_new_object();
		json_object_object_add(bf, "state", json_object_new_string(state));
		json_object_object_add(bf, "evaluated", json_object_new_int64(evaluated));
		json_object_object_add(bf, "total",
				       json_object_new_int64(profiles_total(a->s)));
		json_object_object_add(d, "backfill", bf);
		put_json(jb->b, &k, d);
	}
	json_object_put(d);
	buf_fini(&k);
}

static void job_backfill(struct aud *a, struct journey_batch *jb, uint64_t id,
			 struct json_object *job)
{
	const char *aid = jstr(job, "audience");
	struct audience *au = aid ? find_aud(a, aid, NULL) : NULL;
	uint64_t cursor = (uint64_t)jint(job, "cursor", 0);
	int64_t done = jint(job, "evaluated", 0);
	uint64_t *pids;
	unsigned n;
	bool end;

	if (!au || au->version != jint(job, "version", -1)) {
		job_done(a, jb, id); /* superseded or deleted */
		return;
	}
	pids = xmalloc(a->cfg.job_batch * sizeof(*pids));
	n = next_profiles(a, jb->b, cursor, pids, a->cfg.job_batch, &end);
	for (unsigned i = 0; i < n; i++) {
		struct round r;

		round_init(&r, a, jb, pids[i], NULL);
		eval_memberships(&r, au);
		schedule(&r, false);
		round_fini(&r);
		cursor = pids[i];
	}
	done += n;
	free(pids);
	if (end) {
		progress(a, jb, 'D', aid, "done", done, au->version);
		job_done(a, jb, id);
		log_info("audience", "msg=\"back-fill done\" audience=%s evaluated=%lld",
			 aid, (long long)done);
		return;
	}
	progress(a, jb, 'D', aid, "running", done, au->version);
	json_object_object_add(job, "cursor", json_object_new_int64((int64_t)cursor));
	json_object_object_add(job, "evaluated", json_object_new_int64(done));
	job_save(jb, id, job);
}

/* Computed back-fill: folds each profile's retained history into the state. */
static void job_cbackfill(struct aud *a, struct journey_batch *jb, uint64_t id,
			  struct json_object *job)
{
	const char *cid = jstr(job, "computed");
	struct cattr *c = cid ? find_comp(a, cid, NULL) : NULL;
	uint64_t cursor = (uint64_t)jint(job, "cursor", 0);
	int64_t done = jint(job, "evaluated", 0);
	uint64_t *pids;
	unsigned n;
	bool end;

	if (!c || c->version != jint(job, "version", -1)) {
		job_done(a, jb, id);
		return;
	}
	pids = xmalloc(a->cfg.job_batch * sizeof(*pids));
	n = next_profiles(a, jb->b, cursor, pids, a->cfg.job_batch, &end);
	for (unsigned i = 0; i < n; i++) {
		if (replay_history(a, jb, c, pids[i], pids[i])) {
			struct json_object *st = load_state(a, jb->b, pids[i], c);
			struct round r;

			round_init(&r, a, jb, pids[i], NULL);
			note_boundary(&r, c, st);
			schedule(&r, false);
			round_fini(&r);
			json_object_put(st);
		}
		cursor = pids[i];
		c->bf_cursor = cursor;
	}
	done += n;
	free(pids);
	if (end) {
		c->backfilling = false;
		progress(a, jb, 'C', cid, "done", done, c->version);
		job_done(a, jb, id);
		return;
	}
	progress(a, jb, 'C', cid, "running", done, c->version);
	json_object_object_add(job, "cursor", json_object_new_int64((int64_t)cursor));
	json_object_object_add(job, "evaluated", json_object_new_int64(done));
	job_save(jb, id, job);
}

static void save_settings(struct aud *a, struct journey_batch *jb)
{
	struct buf k;

	buf_init(&k, 0);
	key_tag(&k, 'S', NULL);
	put_json(jb->b, &k, a->settings);
	buf_fini(&k);
}

static bool trait_ready(struct aud *a, const char *trait)
{
	struct json_object *r, *v;

	return is_indexed(a, trait) &&
	       json_object_object_get_ex(a->settings, "ready", &r) &&
	       json_object_object_get_ex(r, trait, &v) && json_object_get_boolean(v);
}

static void job_index(struct aud *a, struct journey_batch *jb, uint64_t id,
		      struct json_object *job)
{
	const char *trait = jstr(job, "trait");
	uint64_t cursor = (uint64_t)jint(job, "cursor", 0);
	uint64_t *pids;
	unsigned n;
	bool end;

	if (!trait || !is_indexed(a, trait)) {
		job_done(a, jb, id);
		return;
	}
	pids = xmalloc(a->cfg.job_batch * sizeof(*pids));
	n = next_profiles(a, jb->b, cursor, pids, a->cfg.job_batch, &end);
	for (unsigned i = 0; i < n; i++) {
		struct round r;

		round_init(&r, a, jb, pids[i], NULL);
		reindex(&r, trait);
		round_fini(&r);
		cursor = pids[i];
	}
	free(pids);
	if (end) {
		struct json_object *ready;

		if (!json_object_object_get_ex(a->settings, "ready", &ready)) {
			ready = json_object_new_object();
			json_object_object_add(a->settings, "ready", ready);
		}
		json_object_object_add(ready, trait, json_object_new_boolean(1));
		save_settings(a, jb);
		job_done(a, jb, id);
		log_info("audience", "msg=\"trait index built\" trait=%s", trait);
		return;
	}
	json_object_object_add(job, "cursor", json_object_new_int64((int64_t)cursor));
	job_save(jb, id, job);
}

/* Deletes up to job_batch records under a key prefix; true when none remain. */
static bool purge_prefix(struct aud *a, struct journey_batch *jb,
			 const struct buf *prefix, bool member_records)
{
	struct store_iter *it = store_iter_new(a->s, jb->b, STORE_CF_AUDIENCES);
	struct buf keys;
	unsigned n = 0;
	bool end = true;

	buf_init(&keys, 0);
	for (store_iter_seek(it, prefix->data, prefix->len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);
		uint32_t l32 = (uint32_t)kl;

		if (kl < prefix->len || memcmp(key, prefix->data, prefix->len) != 0)
			break;
		if (n++ == a->cfg.job_batch) {
			end = false;
			break;
		}
		buf_append(&keys, &l32, 4);
		buf_append(&keys, key, kl);
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		const char *key;

		memcpy(&kl, keys.data + off, 4);
		key = keys.data + off + 4;
		off += 4 + kl;
		store_batch_delete(jb->b, STORE_CF_AUDIENCES, key, kl);
		if (member_records && kl == prefix->len + 8) {
			/* "M" aid 0 pid: also the profile's "P" record. */
			struct buf pk;
			char aid[JOURNEY_MAX_ID_BYTES + 1];

			snprintf(aid, sizeof(aid), "%.*s", (int)(prefix->len - 2),
				 prefix->data + 1);
			buf_init(&pk, 0);
			key_pid(&pk, 'P', store_get_u64(key + prefix->len), aid);
			store_batch_delete(jb->b, STORE_CF_AUDIENCES, pk.data, pk.len);
			buf_fini(&pk);
		}
	}
	buf_fini(&keys);
	return end;
}

static void job_purge(struct aud *a, struct journey_batch *jb, uint64_t id,
		      struct json_object *job)
{
	const char *aid = jstr(job, "audience"), *trait = jstr(job, "trait");
	struct buf k;

	buf_init(&k, 0);
	if (aid) {
		if (find_aud(a, aid, NULL)) {
			/* Re-created meanwhile: its back-fill owns the records. */
			job_done(a, jb, id);
			buf_fini(&k);
			return;
		}
		key_tag(&k, 'M', aid);
		buf_putc(&k, '\0');
		if (purge_prefix(a, jb, &k, true)) {
			key_tag(&k, 'N', aid);
			store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
			job_done(a, jb, id);
			map_del(&a->purging, aid);
		}
	} else if (trait) {
		if (is_indexed(a, trait)) {
			job_done(a, jb, id);
			buf_fini(&k);
			return;
		}
		key_tag(&k, 'X', trait);
		buf_putc(&k, '\0');
		if (purge_prefix(a, jb, &k, false))
			job_done(a, jb, id);
	} else {
		job_done(a, jb, id);
	}
	buf_fini(&k);
}

static void add_cpurge(struct aud *a, struct journey_batch *jb, const char *cid)
{
	struct json_object *job = json_object_new_object();

	json_object_object_add(job, "kind", json_object_new_string("cpurge"));
	json_object_object_add(job, "computed", json_object_new_string(cid));
	job_add(a, jb, job);
	json_object_put(job);
}

/* Deletes the states of computed attribute cid that its current definition
 * (if any) does not own, walking all "V" records from the job's cursor. */
static void job_cpurge(struct aud *a, struct journey_batch *jb, uint64_t id,
		       struct json_object *job)
{
	const char *cid = jstr(job, "computed");
	struct cattr *c = cid ? find_comp(a, cid, NULL) : NULL;
	uint64_t cursor = (uint64_t)jint(job, "cursor", 0), start = cursor;
	struct store_iter *it = store_iter_new(a->s, jb->b, STORE_CF_AUDIENCES);
	struct buf keys;
	unsigned char k[9];
	unsigned n = 0;
	bool end = true;
	size_t clen = cid ? strlen(cid) : 0;

	if (!cid) {
		store_iter_free(it);
		job_done(a, jb, id);
		return;
	}
	buf_init(&keys, 0);
	k[0] = 'V';
	store_put_u64(k + 1, cursor);
	for (store_iter_seek(it, k, 9); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		uint32_t l32 = (uint32_t)kl;

		if (kl < 9 || key[0] != 'V')
			break;
		/* Stop after the bound, but never inside the cursor's own profile
		 * (the next step starts there again). */
		if (n++ >= 10 * a->cfg.job_batch && store_get_u64(key + 1) != start) {
			end = false;
			cursor = store_get_u64(key + 1);
			break;
		}
		if (kl != 9 + clen || memcmp(key + 9, cid, clen) != 0)
			continue;
		if (c) {
			struct json_object *o = parse(v, vl);
			bool keep = o && jint(o, "ver", -1) == c->version;

			json_object_put(o);
			if (keep)
				continue;
		}
		buf_append(&keys, &l32, 4);
		buf_append(&keys, key, kl);
	}
	store_iter_free(it);
	for (size_t off = 0; off < keys.len;) {
		uint32_t kl;
		char wk[9 + JOURNEY_MAX_ID_BYTES];

		memcpy(&kl, keys.data + off, 4);
		store_batch_delete(jb->b, STORE_CF_AUDIENCES, keys.data + off + 4, kl);
		if (kl <= sizeof(wk)) { /* its state */
			memcpy(wk, keys.data + off + 4, kl);
			wk[0] = 'W';
			store_batch_delete(jb->b, STORE_CF_AUDIENCES, wk, kl);
		}
		off += 4 + kl;
	}
	buf_fini(&keys);
	if (end) {
		job_done(a, jb, id);
		return;
	}
	json_object_object_add(job, "cursor", json_object_new_int64((int64_t)cursor));
	job_save(jb, id, job);
}

/* Business-event progress record "B" <id>: {journeys: {jid: {...}}}. */
static void fanout_progress(struct aud *a, struct journey_batch *jb, const char *bid,
			    const char *jid, struct json_object *job, const char *state)
{
	struct buf k;
	struct json_object *b, *js, *p;

	buf_init(&k, 0);
	key_tag(&k, 'B', bid);
	b = get_json(a->s, jb->b, &k);
	if (!b || !json_object_object_get_ex(b, "journeys", &js)) {
		json_object_put(b);
		buf_fini(&k);
		return;
	}
	p = json_object_new_object();
	json_object_object_add(p, "state", json_object_new_string(state));
	json_object_object_add(p, "mode", json_object_new_string(jstr(job, "mode")));
	if (jstr(job, "trait"))
		json_object_object_add(p, "trait",
				       json_object_new_string(jstr(job, "trait")));
	json_object_object_add(p, "evaluated",
			       json_object_new_int64(jint(job, "evaluated", 0)));
	json_object_object_add(p, "entered",
			       json_object_new_int64(jint(job, "entered", 0)));
	json_object_object_add(js, jid, p);
	put_json(jb->b, &k, b);
	json_object_put(b);
	buf_fini(&k);
}

/* Collects up to max pids of the index records of (trait, canon) after `after`. */
static unsigned next_indexed(struct aud *a, struct store_batch *b, const char *trait,
			     const char *cv, uint64_t after, uint64_t *out, unsigned max,
			     bool *end)
{
	struct store_iter *it = store_iter_new(a->s, b, STORE_CF_AUDIENCES);
	struct buf k;
	size_t plen;
	unsigned n = 0;
	unsigned char p[8];

	buf_init(&k, 0);
	key_index(&k, trait, cv, 0, false);
	plen = k.len;
	store_put_u64(p, after + 1);
	buf_append(&k, p, 8);
	*end = true;
	for (store_iter_seek(it, k.data, k.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);

		if (kl != plen + 8 || memcmp(key, k.data, plen) != 0)
			break;
		if (n == max) {
			*end = false;
			break;
		}
		out[n++] = store_get_u64(key + plen);
	}
	store_iter_free(it);
	buf_fini(&k);
	return n;
}

static void job_fanout(struct aud *a, struct journey_batch *jb, uint64_t id,
		       struct json_object *job)
{
	const char *jid = jstr(job, "journey"), *bid = jstr(job, "business"),
		   *mode = jstr(job, "mode"), *trait = jstr(job, "trait"),
		   *cv = jstr(job, "value");
	struct json_object *ev = NULL;
	uint64_t cursor = (uint64_t)jint(job, "cursor", 0);
	int64_t evaluated = jint(job, "evaluated", 0), entered = jint(job, "entered", 0);
	bool scan = !mode || strcmp(mode, "index") != 0, end, cancelled = false;
	unsigned max = scan ? a->cfg.scan_batch : a->cfg.job_batch, n;
	uint64_t *pids;

	if (!jid || !bid || !json_object_object_get_ex(job, "event", &ev) || !a->rt ||
	    (!scan && (!trait || !cv))) {
		job_done(a, jb, id);
		return;
	}
	if (!scan && !trait_ready(a, trait)) {
		/* The trait stopped being indexed mid-way. Every profile the
		 * index held up to the cursor was evaluated and `who` needs the
		 * value in the trait, so a scan from the cursor on misses nobody. */
		scan = true;
		max = a->cfg.scan_batch;
		json_object_object_add(job, "mode", json_object_new_string("scan"));
	}
	if (scan) {
		if (jb->now_ms < a->next_scan_ms) {
			job_save(jb, id, job);
			return;
		}
		a->next_scan_ms = jb->now_ms + a->cfg.scan_interval_ms;
	}
	pids = xmalloc(max * sizeof(*pids));
	n = scan ? next_profiles(a, jb->b, cursor, pids, max, &end)
		 : next_indexed(a, jb->b, trait, cv, cursor, pids, max, &end);
	for (unsigned i = 0; i < n; i++) {
		int rc = journey_rt_enter_business(a->rt, jb, jid, pids[i], ev);

		if (rc < 0) {
			cancelled = true;
			break;
		}
		entered += rc;
		evaluated++;
		cursor = pids[i];
		metrics_add(&m_fanout, 1);
	}
	free(pids);
	json_object_object_add(job, "cursor", json_object_new_int64((int64_t)cursor));
	json_object_object_add(job, "evaluated", json_object_new_int64(evaluated));
	json_object_object_add(job, "entered", json_object_new_int64(entered));
	if (cancelled || end) {
		fanout_progress(a, jb, bid, jid, job, cancelled ? "cancelled" : "done");
		job_done(a, jb, id);
		log_info("audience",
			 "msg=\"fan-out %s\" business_event=%s journey=%s evaluated=%lld "
			 "entered=%lld",
			 cancelled ? "cancelled" : "done", bid, jid, (long long)evaluated,
			 (long long)entered);
		return;
	}
	fanout_progress(a, jb, bid, jid, job, "running");
	job_save(jb, id, job);
}

static bool is_scan(struct json_object *job)
{
	const char *kind = jstr(job, "kind"), *mode = jstr(job, "mode");

	return kind && strcmp(kind, "fanout") == 0 &&
	       (!mode || strcmp(mode, "index") != 0);
}

bool aud_background(struct aud *a, struct journey_batch *jb)
{
	struct store_iter *it;
	struct json_object *job = NULL;
	uint64_t id = 0;
	const char *kind;
	unsigned char k = 'J';
	unsigned seen = 0;
	bool throttled = jb->now_ms < a->next_scan_ms;

	if (!a->jobs)
		return false;
	/* The oldest job that may run now: a scanning fan-out waiting out its
	 * interval does not hold up the others. */
	it = store_iter_new(a->s, jb->b, STORE_CF_AUDIENCES);
	for (store_iter_seek(it, &k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		if (kl != 9 || key[0] != 'J')
			break;
		seen++;
		job = parse(v, vl);
		if (throttled && is_scan(job)) {
			json_object_put(job);
			job = NULL;
			continue;
		}
		id = store_get_u64(key + 1);
		break;
	}
	store_iter_free(it);
	a->only_throttled = !id && seen > 0;
	if (!seen) {
		a->jobs = 0;
		metrics_set(&m_jobs, 0);
	}
	if (!id)
		return false;
	kind = jstr(job, "kind");
	if (!kind) {
		job_done(a, jb, id);
	} else if (strcmp(kind, "backfill") == 0) {
		job_backfill(a, jb, id, job);
	} else if (strcmp(kind, "cbackfill") == 0) {
		job_cbackfill(a, jb, id, job);
	} else if (strcmp(kind, "index") == 0) {
		job_index(a, jb, id, job);
	} else if (strcmp(kind, "purge") == 0) {
		job_purge(a, jb, id, job);
	} else if (strcmp(kind, "cpurge") == 0) {
		job_cpurge(a, jb, id, job);
	} else if (strcmp(kind, "fanout") == 0) {
		job_fanout(a, jb, id, job);
	} else {
		job_done(a, jb, id);
	}
	json_object_put(job);
	return true;
}

int64_t aud_next_work(struct aud *a, int64_t now_ms)
{
	if (!a || !a->jobs)
		return INT64_MAX;
	if (a->only_throttled && a->next_scan_ms > now_ms)
		return a->next_scan_ms;
	return now_ms;
}

/* ------------------------------------------------------------------ admin */

bool aud_admin_op(const char *op)
{
	return op &&
	       (strncmp(op, "audience_", 9) == 0 || strncmp(op, "computed_", 9) == 0 ||
		strcmp(op, "indexed_put") == 0 || strcmp(op, "business_event") == 0);
}

static void answer(struct journey_result *res, int status, struct json_object *body)
{
	res->status = status;
	res->body = xstrdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
	json_object_put(body);
}

static void answer_error(struct journey_result *res, int status, const char *code,
			 const char *field, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "field", json_object_new_string(field));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_object_add(o, "error", e);
	answer(res, status, o);
}

/* The last version a deleted definition had ("d"/"t" tombstones): versions
 * never repeat, so states and jobs of an older incarnation are never taken
 * for the new one's. */
static int64_t tombstone(struct aud *a, struct journey_batch *jb, char tag,
			 const char *id)
{
	struct buf k;
	uint64_t v = 0;

	buf_init(&k, 0);
	key_tag(&k, tag, id);
	get_u64(a->s, jb->b, &k, &v);
	buf_fini(&k);
	return (int64_t)v;
}

static void set_tombstone(struct journey_batch *jb, char tag, const char *id, int64_t v)
{
	struct buf k;

	buf_init(&k, 0);
	key_tag(&k, tag, id);
	put_u64(jb->b, &k, (uint64_t)v);
	buf_fini(&k);
}

static void admin_audience_put(struct aud *a, struct journey_batch *jb, const char *id,
			       struct json_object *doc, struct journey_result *res)
{
	struct buf k;
	struct json_object *old, *rec, *job;
	struct audience *au = NULL;
	struct nerr_msg msg = {"", ""};
	int64_t version = 1;
	bool same = false;

	buf_init(&k, 0);
	key_tag(&k, 'D', id);
	old = get_json(a->s, jb->b, &k);
	if (!old && map_get(&a->purging, id)) {
		answer_error(res, 409, "conflict", "id",
			     "the audience is still being deleted; retry in a moment");
		goto out;
	}
	if (!old && a->naud >= a->cfg.max_audiences) {
		answer_error(res, 409, "limit", "id", "too many audiences");
		goto out;
	}
	if (!old)
		version = tombstone(a, jb, 'd', id) + 1;
	if (old) {
		version = jint(old, "version", 0) + 1;
		same = jstr(old, "when") &&
		       strcmp(jstr(old, "when"), jstr(doc, "when")) == 0;
		if (same)
			version--;
	}
	rec = json_object_new_object();
	json_object_object_add(rec, "id", json_object_new_string(id));
	json_object_object_foreach(doc, key, val)
	{
		json_object_object_add(rec, key, json_object_get(val));
	}
	json_object_object_add(rec, "version", json_object_new_int64(version));
	json_object_object_add(
		rec, "created_ms",
		json_object_new_int64(old ? jint(old, "created_ms", 0) : jb->now_ms));
	json_object_object_add(rec, "updated_ms", json_object_new_int64(jb->now_ms));
	if (compile_audience(id, rec, a->env, &au, &msg) != NERR_OK) {
		json_object_put(rec);
		answer_error(res, 400, "invalid", msg.field, msg.message);
		goto out;
	}
	if (same) {
		struct json_object *bf;

		if (json_object_object_get_ex(old, "backfill", &bf))
			json_object_object_add(rec, "backfill", json_object_get(bf));
	} else {
		struct json_object *bf = json_object_new_object();

		json_object_object_add(bf, "state", json_object_new_string("running"));
		json_object_object_add(bf, "evaluated", json_object_new_int64(0));
		json_object_object_add(bf, "total",
				       json_object_new_int64(profiles_total(a->s)));
		json_object_object_add(rec, "backfill", bf);
		job = json_object_new_object();
		json_object_object_add(job, "kind", json_object_new_string("backfill"));
		json_object_object_add(job, "audience", json_object_new_string(id));
		json_object_object_add(job, "version", json_object_new_int64(version));
		job_add(a, jb, job);
		json_object_put(job);
	}
	put_json(jb->b, &k, rec);
	set_aud(a, au);
	log_info("audience", "msg=\"audience saved\" audience=%s version=%lld", id,
		 (long long)version);
	answer(res, old ? 200 : 201, rec);
out:
	json_object_put(old);
	buf_fini(&k);
}

static void admin_audience_delete(struct aud *a, struct journey_batch *jb, const char *id,
				  struct journey_result *res)
{
	struct buf k;
	struct json_object *job;

	buf_init(&k, 0);
	key_tag(&k, 'D', id);
	if (!find_aud(a, id, NULL)) {
		answer_error(res, 404, "not_found", "id", "no such audience");
		buf_fini(&k);
		return;
	}
	store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
	set_tombstone(jb, 'd', id, find_aud(a, id, NULL)->version);
	del_aud(a, id);
	map_put(&a->purging, id, (void *)1);
	job = json_object_new_object();
	json_object_object_add(job, "kind", json_object_new_string("purge"));
	json_object_object_add(job, "audience", json_object_new_string(id));
	job_add(a, jb, job);
	json_object_put(job);
	buf_fini(&k);
	job = json_object_new_object();
	json_object_object_add(job, "deleted", json_object_new_boolean(1));
	json_object_object_add(job, "id", json_object_new_string(id));
	answer(res, 200, job);
}

static void admin_computed_put(struct aud *a, struct journey_batch *jb, const char *id,
			       struct json_object *doc, struct journey_result *res)
{
	struct buf k;
	struct json_object *old, *rec, *job, *bf;
	struct cattr *c;
	struct computed_def *d = NULL;
	struct nerr_msg msg = {"", ""};
	int64_t version = 1;
	bool same = false;

	if (computed_def_compile(id, doc, a->env, &d, &msg) != NERR_OK) {
		answer_error(res, 400, "invalid", msg.field, msg.message);
		return;
	}
	buf_init(&k, 0);
	key_tag(&k, 'C', id);
	old = get_json(a->s, jb->b, &k);
	if (!old && a->ncomp >= a->cfg.max_computed) {
		computed_def_free(d);
		answer_error(res, 409, "limit", "id", "too many computed attributes");
		goto out;
	}
	if (!old)
		version = tombstone(a, jb, 't', id) + 1;
	if (old) {
		struct json_object *od;

		version = jint(old, "version", 0) + 1;
		if (json_object_object_get_ex(old, "definition", &od) &&
		    json_object_equal(od, doc)) {
			same = true;
			version--;
		}
	}
	rec = json_object_new_object();
	json_object_object_add(rec, "id", json_object_new_string(id));
	json_object_object_add(rec, "definition", json_object_get(doc));
	json_object_object_add(rec, "version", json_object_new_int64(version));
	json_object_object_add(
		rec, "created_ms",
		json_object_new_int64(old ? jint(old, "created_ms", 0) : jb->now_ms));
	json_object_object_add(rec, "updated_ms", json_object_new_int64(jb->now_ms));
	c = xcalloc(1, sizeof(*c));
	c->id = xstrdup(id);
	c->def = d;
	c->version = version;
	if (same && json_object_object_get_ex(old, "backfill", &bf)) {
		json_object_object_add(rec, "backfill", json_object_get(bf));
		struct cattr *prev = find_comp(a, id, NULL);

		if (prev) {
			c->backfilling = prev->backfilling;
			c->bf_cursor = prev->bf_cursor;
		}
	} else {
		bf = json_object_new_object();
		json_object_object_add(bf, "state", json_object_new_string("running"));
		json_object_object_add(bf, "evaluated", json_object_new_int64(0));
		json_object_object_add(bf, "total",
				       json_object_new_int64(profiles_total(a->s)));
		json_object_object_add(rec, "backfill", bf);
		job = json_object_new_object();
		if (old)
			add_cpurge(a, jb, id); /* the states of the old version */
		json_object_object_add(job, "kind", json_object_new_string("cbackfill"));
		json_object_object_add(job, "computed", json_object_new_string(id));
		json_object_object_add(job, "version", json_object_new_int64(version));
		job_add(a, jb, job);
		json_object_put(job);
		c->backfilling = true;
		c->bf_cursor = 0;
	}
	put_json(jb->b, &k, rec);
	key_tag(&k, 'c', id);
	put_u64(jb->b, &k, (uint64_t)version);
	set_comp(a, c);
	answer(res, old ? 200 : 201, rec);
out:
	json_object_put(old);
	buf_fini(&k);
}

static void admin_computed_delete(struct aud *a, struct journey_batch *jb, const char *id,
				  struct journey_result *res)
{
	struct buf k;
	struct json_object *o;

	if (!find_comp(a, id, NULL)) {
		answer_error(res, 404, "not_found", "id", "no such computed attribute");
		return;
	}
	buf_init(&k, 0);
	key_tag(&k, 'C', id);
	store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
	key_tag(&k, 'c', id);
	store_batch_delete(jb->b, STORE_CF_AUDIENCES, k.data, k.len);
	buf_fini(&k);
	set_tombstone(jb, 't', id, find_comp(a, id, NULL)->version);
	/* Readers skip its states at once (no current definition); a job
	 * deletes them. */
	del_comp(a, id);
	add_cpurge(a, jb, id);
	o = json_object_new_object();
	json_object_object_add(o, "deleted", json_object_new_boolean(1));
	json_object_object_add(o, "id", json_object_new_string(id));
	answer(res, 200, o);
}

static void load_indexed(struct aud *a)
{
	struct json_object *t;

	for (unsigned i = 0; i < a->nindexed; i++)
		free(a->indexed[i]);
	free(a->indexed);
	a->indexed = NULL;
	a->nindexed = 0;
	if (!json_object_object_get_ex(a->settings, "indexed_traits", &t))
		return;
	a->indexed = xcalloc(json_object_array_length(t) + 1, sizeof(*a->indexed));
	for (size_t i = 0; i < json_object_array_length(t); i++)
		a->indexed[a->nindexed++] =
			xstrdup(json_object_get_string(json_object_array_get_idx(t, i)));
}

static void admin_indexed_put(struct aud *a, struct journey_batch *jb,
			      struct json_object *doc, struct journey_result *res)
{
	struct json_object *traits, *old_list = NULL, *list = json_object_new_array(),
				    *ready, *nready = json_object_new_object(), *job;

	json_object_object_get_ex(doc, "traits", &traits);
	json_object_object_get_ex(a->settings, "indexed_traits", &old_list);
	if (!json_object_object_get_ex(a->settings, "ready", &ready))
		ready = NULL;
	for (size_t i = 0; traits && i < json_object_array_length(traits); i++) {
		const char *t =
			json_object_get_string(json_object_array_get_idx(traits, i));
		struct json_object *rv;

		if (list_has(list, t))
			continue;
		json_object_array_add(list, json_object_new_string(t));
		if (old_list && list_has(old_list, t) && ready &&
		    json_object_object_get_ex(ready, t, &rv)) {
			json_object_object_add(nready, t, json_object_get(rv));
			continue;
		}
		json_object_object_add(nready, t, json_object_new_boolean(0));
		job = json_object_new_object();
		json_object_object_add(job, "kind", json_object_new_string("index"));
		json_object_object_add(job, "trait", json_object_new_string(t));
		job_add(a, jb, job);
		json_object_put(job);
	}
	for (size_t i = 0; old_list && i < json_object_array_length(old_list); i++) {
		const char *t =
			json_object_get_string(json_object_array_get_idx(old_list, i));

		if (list_has(list, t))
			continue;
		job = json_object_new_object();
		json_object_object_add(job, "kind", json_object_new_string("purge"));
		json_object_object_add(job, "trait", json_object_new_string(t));
		job_add(a, jb, job);
		json_object_put(job);
	}
	json_object_object_add(a->settings, "indexed_traits", list);
	json_object_object_add(a->settings, "ready", nready);
	load_indexed(a);
	save_settings(a, jb);
	answer(res, 200, json_object_get(a->settings));
}

struct fan_ctx {
	struct aud *a;
	struct journey_batch *jb;
	struct json_object *event;
	struct json_object *journeys; /* progress record's map */
	const char *bid;
};

static void start_fanout(void *ud, const char *jid, const char *trait,
			 struct json_object *value)
{
	struct fan_ctx *fc = ud;
	struct json_object *job = json_object_new_object(), *p;
	struct buf c;
	bool index = false;

	buf_init(&c, 0);
	json_object_object_add(job, "kind", json_object_new_string("fanout"));
	json_object_object_add(job, "business", json_object_new_string(fc->bid));
	json_object_object_add(job, "journey", json_object_new_string(jid));
	json_object_object_add(job, "event", json_object_get(fc->event));
	if (trait && value && trait_ready(fc->a, trait) && canon(value, &c)) {
		index = true;
		json_object_object_add(job, "trait", json_object_new_string(trait));
		json_object_object_add(job, "value", json_object_new_string(buf_str(&c)));
	}
	json_object_object_add(job, "mode",
			       json_object_new_string(index ? "index" : "scan"));
	job_add(fc->a, fc->jb, job);
	p = json_object_new_object();
	json_object_object_add(p, "state", json_object_new_string("running"));
	json_object_object_add(p, "mode",
			       json_object_new_string(index ? "index" : "scan"));
	if (index)
		json_object_object_add(p, "trait", json_object_new_string(trait));
	json_object_object_add(p, "evaluated", json_object_new_int64(0));
	json_object_object_add(p, "entered", json_object_new_int64(0));
	json_object_object_add(fc->journeys, jid, p);
	json_object_put(job);
	buf_fini(&c);
}

static void admin_business(struct aud *a, struct journey_batch *jb,
			   struct json_object *ev, struct journey_result *res)
{
	const char *bid = jstr(ev, "messageId");
	struct buf k;
	struct json_object *old, *rec;
	struct fan_ctx fc;

	res->status = 0; /* the API's answer stands */
	if (!bid || !a->rt)
		return;
	buf_init(&k, 0);
	key_tag(&k, 'B', bid);
	old = get_json(a->s, jb->b, &k);
	if (old) {
		/* The same messageId again: applied once. */
		json_object_put(old);
		buf_fini(&k);
		return;
	}
	rec = json_object_new_object();
	json_object_object_add(rec, "id", json_object_new_string(bid));
	json_object_object_add(rec, "event", json_object_new_string(jstr(ev, "event")));
	json_object_object_add(rec, "received_ms", json_object_new_int64(jb->now_ms));
	fc.a = a;
	fc.jb = jb;
	fc.event = ev;
	fc.bid = bid;
	fc.journeys = json_object_new_object();
	json_object_object_add(rec, "journeys", fc.journeys);
	journey_rt_business_targets(a->rt, ev, start_fanout, &fc);
	put_json(jb->b, &k, rec);
	log_info("audience", "msg=\"business event\" id=%s event=\"%s\" journeys=%d", bid,
		 jstr(ev, "event"), json_object_object_length(fc.journeys));
	json_object_put(rec);
	buf_fini(&k);
}

void aud_admin(struct aud *a, struct journey_batch *jb, struct json_object *op,
	       struct journey_result *res)
{
	const char *name = jstr(op, "op"), *id = jstr(op, "id");
	struct json_object *doc = NULL;

	json_object_object_get_ex(op, "doc", &doc);
	if (!name) {
		answer_error(res, 400, "invalid", "op", "unknown operation");
	} else if (strcmp(name, "business_event") == 0 && doc) {
		admin_business(a, jb, doc, res);
	} else if (strcmp(name, "indexed_put") == 0 && doc) {
		admin_indexed_put(a, jb, doc, res);
	} else if (!id_valid(id, JOURNEY_MAX_ID_BYTES)) {
		answer_error(res, 400, "invalid", "id",
			     "an id is 1 to 64 of [A-Za-z0-9_-]");
	} else if (strcmp(name, "audience_put") == 0 && doc) {
		admin_audience_put(a, jb, id, doc, res);
	} else if (strcmp(name, "audience_delete") == 0) {
		admin_audience_delete(a, jb, id, res);
	} else if (strcmp(name, "computed_put") == 0 && doc) {
		admin_computed_put(a, jb, id, doc, res);
	} else if (strcmp(name, "computed_delete") == 0) {
		admin_computed_delete(a, jb, id, res);
	} else {
		answer_error(res, 400, "invalid", "op", "unknown operation");
	}
}

/* ------------------------------------------------------------------- reads */

static struct json_object *store_rec(struct store *s, char tag, const char *id)
{
	struct buf k;
	struct json_object *o;

	buf_init(&k, 0);
	key_tag(&k, tag, id);
	o = get_json(s, NULL, &k);
	buf_fini(&k);
	return o;
}

static void add_times(struct json_object *o)
{
	char ts[40];

	if (json_object_object_get_ex(o, "created_ms", NULL)) {
		ms_string(jint(o, "created_ms", 0), ts);
		json_object_object_add(o, "created_at", json_object_new_string(ts));
		json_object_object_del(o, "created_ms");
	}
	if (json_object_object_get_ex(o, "updated_ms", NULL)) {
		ms_string(jint(o, "updated_ms", 0), ts);
		json_object_object_add(o, "updated_at", json_object_new_string(ts));
		json_object_object_del(o, "updated_ms");
	}
}

struct json_object *aud_get_audience(struct store *s, const char *aid)
{
	struct json_object *o = store_rec(s, 'D', aid);
	struct buf k;
	uint64_t n = 0;

	if (!o)
		return NULL;
	buf_init(&k, 0);
	key_tag(&k, 'N', aid);
	get_u64(s, NULL, &k, &n);
	buf_fini(&k);
	json_object_object_add(o, "size", json_object_new_int64((int64_t)n));
	add_times(o);
	return o;
}

static struct json_object *list_prefix(struct store *s, char tag,
				       struct json_object *(*get)(struct store *,
								  const char *))
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_AUDIENCES);
	struct json_object *arr = json_object_new_array();
	char(*ids)[JOURNEY_MAX_ID_BYTES + 1] = NULL;
	unsigned n = 0, alloc = 0;
	char k = tag;

	/* Collected first (get() reads the store while no iterator is open). */
	for (store_iter_seek(it, &k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);

		if (kl < 2 || key[0] != tag)
			break;
		if (kl - 1 > JOURNEY_MAX_ID_BYTES)
			continue;
		if (n == alloc) {
			alloc = alloc ? 2 * alloc : 64;
			ids = xrealloc(ids, alloc * sizeof(*ids));
		}
		snprintf(ids[n++], sizeof(ids[0]), "%.*s", (int)(kl - 1), key + 1);
	}
	store_iter_free(it);
	for (unsigned i = 0; i < n; i++) {
		struct json_object *o = get(s, ids[i]);

		if (o)
			json_object_array_add(arr, o);
	}
	free(ids);
	return arr;
}

struct json_object *aud_list_audiences(struct store *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "audiences", list_prefix(s, 'D', aud_get_audience));
	return o;
}

struct json_object *aud_members(struct store *s, const char *aid, uint64_t after,
				unsigned limit)
{
	struct store_iter *it;
	struct json_object *d = store_rec(s, 'D', aid), *o, *arr;
	struct buf k;
	size_t plen;
	unsigned char p[8];
	uint64_t pids[1000];
	int64_t since[1000];
	unsigned n = 0;
	bool more = false;

	if (!d)
		return NULL;
	json_object_put(d);
	if (limit == 0 || limit > 1000)
		limit = 1000;
	buf_init(&k, 0);
	key_tag(&k, 'M', aid);
	buf_putc(&k, '\0');
	plen = k.len;
	store_put_u64(p, after + 1);
	buf_append(&k, p, 8);
	it = store_iter_new(s, NULL, STORE_CF_AUDIENCES);
	for (store_iter_seek(it, k.data, k.len); store_iter_valid(it);
	     store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		if (kl != plen + 8 || memcmp(key, k.data, plen) != 0)
			break;
		if (n == limit) {
			more = true;
			break;
		}
		pids[n] = store_get_u64(key + plen);
		since[n++] = vl == 8 ? (int64_t)store_get_u64(v) : 0;
	}
	store_iter_free(it);
	buf_fini(&k);
	o = json_object_new_object();
	arr = json_object_new_array();
	for (unsigned i = 0; i < n; i++) {
		struct json_object *m = json_object_new_object(), *view = NULL, *ids;
		char t[40];

		snprintf(t, sizeof(t), "%llu", (unsigned long long)pids[i]);
		json_object_object_add(m, "profile", json_object_new_string(t));
		ms_string(since[i], t);
		json_object_object_add(m, "since", json_object_new_string(t));
		if (profile_view_json(s, NULL, pids[i], &view) == NERR_OK &&
		    json_object_object_get_ex(view, "identities", &ids))
			json_object_object_add(m, "identities", json_object_get(ids));
		json_object_put(view);
		json_object_array_add(arr, m);
	}
	json_object_object_add(o, "members", arr);
	if (more) {
		char t[24];

		snprintf(t, sizeof(t), "%llu", (unsigned long long)pids[n - 1]);
		json_object_object_add(o, "next", json_object_new_string(t));
	} else {
		json_object_object_add(o, "next", NULL);
	}
	return o;
}

struct json_object *aud_get_computed(struct store *s, const char *cid)
{
	struct json_object *o = store_rec(s, 'C', cid);

	if (o)
		add_times(o);
	return o;
}

struct json_object *aud_list_computed(struct store *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "computed", list_prefix(s, 'C', aud_get_computed));
	return o;
}

struct json_object *aud_get_settings(struct store *s)
{
	struct json_object *o = store_rec(s, 'S', NULL);

	if (!o) {
		o = json_object_new_object();
		json_object_object_add(o, "indexed_traits", json_object_new_array());
		json_object_object_add(o, "ready", json_object_new_object());
	}
	return o;
}

struct json_object *aud_get_business(struct store *s, const char *id)
{
	struct json_object *o = store_rec(s, 'B', id);
	char ts[40];

	if (o) {
		ms_string(jint(o, "received_ms", 0), ts);
		json_object_object_add(o, "received_at", json_object_new_string(ts));
		json_object_object_del(o, "received_ms");
	}
	return o;
}

/* ------------------------------------------------------------------- open */

static void load_defs(struct aud *a)
{
	struct store_iter *it = store_iter_new(a->s, NULL, STORE_CF_AUDIENCES);
	char k;

	for (k = 'C'; k; k = k == 'C' ? 'D' : 0) {
		for (store_iter_seek(it, &k, 1); store_iter_valid(it);
		     store_iter_next(it)) {
			size_t kl, vl;
			const char *key = store_iter_key(it, &kl),
				   *v = store_iter_value(it, &vl);
			struct json_object *o;
			char id[JOURNEY_MAX_ID_BYTES + 1];
			struct nerr_msg msg = {"", ""};

			if (kl < 2 || key[0] != k)
				break;
			if (kl - 1 > JOURNEY_MAX_ID_BYTES)
				continue;
			snprintf(id, sizeof(id), "%.*s", (int)(kl - 1), key + 1);
			o = parse(v, vl);
			if (k == 'D') {
				struct audience *au = NULL;

				if (o &&
				    compile_audience(id, o, a->env, &au, &msg) == NERR_OK)
					set_aud(a, au);
				else
					log_error("audience",
						  "msg=\"stored audience does not "
						  "compile\" "
						  "audience=%s",
						  id);
			} else {
				struct json_object *def;
				struct computed_def *d = NULL;

				if (o &&
				    json_object_object_get_ex(o, "definition", &def) &&
				    computed_def_compile(id, def, a->env, &d, &msg) ==
					    NERR_OK) {
					struct cattr *c = xcalloc(1, sizeof(*c));
					struct json_object *bf;

					c->id = xstrdup(id);
					c->def = d;
					c->version = jint(o, "version", 1);
					c->backfilling =
						json_object_object_get_ex(o, "backfill",
									  &bf) &&
						jstr(bf, "state") &&
						strcmp(jstr(bf, "state"), "running") == 0;
					set_comp(a, c);
				} else {
					log_error("audience",
						  "msg=\"stored computed attribute does "
						  "not "
						  "compile\" computed=%s",
						  id);
				}
			}
			json_object_put(o);
		}
	}
	/* Jobs, and back-fill cursors of computed attributes. */
	k = 'J';
	for (store_iter_seek(it, &k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct json_object *o;

		if (kl < 1 || key[0] != 'J')
			break;
		a->jobs++;
		o = parse(v, vl);
		if (jstr(o, "kind") && strcmp(jstr(o, "kind"), "purge") == 0 &&
		    jstr(o, "audience"))
			map_put(&a->purging, jstr(o, "audience"), (void *)1);
		if (jstr(o, "kind") && strcmp(jstr(o, "kind"), "cbackfill") == 0 &&
		    jstr(o, "computed")) {
			struct cattr *c = find_comp(a, jstr(o, "computed"), NULL);

			if (c && c->version == jint(o, "version", -1))
				c->bf_cursor = (uint64_t)jint(o, "cursor", 0);
		}
		json_object_put(o);
	}
	store_iter_free(it);
}

enum nerr aud_open(struct store *s, const struct aud_config *cfg, struct aud **out)
{
	struct aud *a = xcalloc(1, sizeof(*a));
	struct buf k;
	uint64_t n = 1;

	metrics_register(&m_entered);
	metrics_register(&m_exited);
	metrics_register(&m_evals);
	metrics_register(&m_fanout);
	metrics_register(&m_jobs);
	a->s = s;
	a->cfg = *cfg;
	if (!a->cfg.job_batch)
		a->cfg.job_batch = 1000;
	if (!a->cfg.scan_batch)
		a->cfg.scan_batch = 250;
	if (!a->cfg.max_audiences)
		a->cfg.max_audiences = 1000;
	if (!a->cfg.max_computed)
		a->cfg.max_computed = 1000;
	a->env = journey_env_new();
	map_init(&a->predicates);
	map_init(&a->purging);
	arena_init(&a->scratch, 64 * 1024);
	arena_init(&a->scratch2, 16 * 1024);
	buf_init(&k, 0);
	key_tag(&k, 'n', NULL);
	get_u64(s, NULL, &k, &n);
	a->next_job = n ? n : 1;
	key_tag(&k, 'S', NULL);
	a->settings = get_json(s, NULL, &k);
	buf_fini(&k);
	if (!a->settings || !json_object_is_type(a->settings, json_type_object)) {
		json_object_put(a->settings);
		a->settings = json_object_new_object();
	}
	load_indexed(a);
	load_defs(a);
	metrics_set(&m_jobs, a->jobs);
	*out = a;
	return NERR_OK;
}

void aud_set_runtime(struct aud *a, struct journey_rt *rt)
{
	a->rt = rt;
}

void aud_hooks(struct aud *a, struct journey_rt_config *cfg)
{
	cfg->decorate_profile = hook_decorate;
	cfg->in_audience = hook_in_audience;
	cfg->on_timer = aud_on_timer;
	cfg->on_traits_changed = hook_traits_changed;
	cfg->hook_ud = a;
}

void aud_free(struct aud *a)
{
	size_t it = 0;
	const char *k;
	void *v;

	if (!a)
		return;
	for (unsigned i = 0; i < a->naud; i++)
		aud_def_free(a->auds[i]);
	free(a->auds);
	for (unsigned i = 0; i < a->ncomp; i++)
		cattr_free(a->comps[i]);
	free(a->comps);
	for (unsigned i = 0; i < a->nindexed; i++)
		free(a->indexed[i]);
	free(a->indexed);
	json_object_put(a->settings);
	free(a->changed);
	while (map_next(&a->predicates, &it, &k, &v))
		expr_program_free(v);
	map_fini(&a->predicates);
	map_fini(&a->purging);
	arena_fini(&a->scratch);
	arena_fini(&a->scratch2);
	expr_env_free(a->env);
	free(a);
}

/* ------------------------------------------------------------------ check */

/* A record's key after its tag, as text (ids are [A-Za-z0-9_-]). */
static void key_id(const char *key, size_t kl, size_t off, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)(kl > off ? kl - off : 0), key + off);
}

static bool has_key(struct store *s, enum store_cf cf, const void *k, size_t kl)
{
	char *v = NULL;
	size_t vl = 0;
	enum nerr rc = store_get(s, cf, k, kl, &v, &vl);

	free(v);
	return rc == NERR_OK;
}

enum nerr aud_check(struct store *s, struct buf *problems, uint64_t *members)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_AUDIENCES);
	struct json_object *purging = json_object_new_object(),
			   *counts = json_object_new_object();
	unsigned bad = 0;
	unsigned char k[32];

	*members = 0;
	/* Audiences and traits whose purge is pending may be half-deleted. */
	k[0] = 'J';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct json_object *o;

		if (kl < 1 || key[0] != 'J')
			break;
		o = parse(v, vl);
		if (jstr(o, "kind") && strcmp(jstr(o, "kind"), "purge") == 0 &&
		    jstr(o, "audience"))
			json_object_object_add(purging, jstr(o, "audience"), NULL);
		json_object_put(o);
	}
	/* M <-> P, members of existing profiles, counts. */
	k[0] = 'M';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char aid[JOURNEY_MAX_ID_BYTES + 1];
		struct buf pk;
		uint64_t pid;
		char *pv = NULL;
		size_t pvl = 0;
		unsigned char pidk[8];

		if (kl < 1 || key[0] != 'M')
			break;
		if (kl < 11 || key[kl - 9] != '\0') {
			buf_printf(problems, "audiences: malformed member key\n");
			bad++;
			continue;
		}
		key_id(key, kl - 9, 1, aid, sizeof(aid));
		pid = store_get_u64(key + kl - 8);
		buf_init(&pk, 0);
		key_pid(&pk, 'P', pid, aid);
		if (store_get(s, STORE_CF_AUDIENCES, pk.data, pk.len, &pv, &pvl) !=
			    NERR_OK ||
		    pvl != 8 || vl != 8 || memcmp(pv, v, 8) != 0) {
			buf_printf(problems,
				   "audiences: member %llu of %s has no matching profile "
				   "record\n",
				   (unsigned long long)pid, aid);
			bad++;
		}
		free(pv);
		buf_fini(&pk);
		store_put_u64(pidk, pid);
		if (!has_key(s, STORE_CF_PROFILES, pidk, 8)) {
			buf_printf(problems,
				   "audiences: member %llu of %s is no profile\n",
				   (unsigned long long)pid, aid);
			bad++;
		}
		json_object_object_add(counts, aid,
				       json_object_new_int64(jint(counts, aid, 0) + 1));
		(*members)++;
	}
	k[0] = 'P';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);
		char aid[JOURNEY_MAX_ID_BYTES + 1];
		struct buf mk;

		if (kl < 1 || key[0] != 'P')
			break;
		if (kl <= 9)
			continue;
		key_id(key, kl, 9, aid, sizeof(aid));
		buf_init(&mk, 0);
		key_member(&mk, aid, store_get_u64(key + 1));
		if (!has_key(s, STORE_CF_AUDIENCES, mk.data, mk.len)) {
			buf_printf(problems,
				   "audiences: profile %llu lists %s without a member "
				   "record\n",
				   (unsigned long long)store_get_u64(key + 1), aid);
			bad++;
		}
		buf_fini(&mk);
	}
	/* Counters of live audiences. */
	k[0] = 'D';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);
		char aid[JOURNEY_MAX_ID_BYTES + 1];
		struct buf nk;
		uint64_t n = 0;

		if (kl < 1 || key[0] != 'D')
			break;
		key_id(key, kl, 1, aid, sizeof(aid));
		if (json_object_object_get_ex(purging, aid, NULL))
			continue;
		buf_init(&nk, 0);
		key_tag(&nk, 'N', aid);
		get_u64(s, NULL, &nk, &n);
		buf_fini(&nk);
		if ((int64_t)n != jint(counts, aid, 0)) {
			buf_printf(problems,
				   "audiences: %s counts %llu members, has %lld\n", aid,
				   (unsigned long long)n,
				   (long long)jint(counts, aid, 0));
			bad++;
		}
	}
	/* Trait index: every X entry is in its profile's Y record. */
	k[0] = 'X';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *key = store_iter_key(it, &kl);
		const char *trait = key + 1, *z, *cv;
		struct json_object *y, *set;
		struct buf yk;
		char t[NAME_MAX_BYTES + 1], c[CANON_MAX + 1];
		uint64_t pid;

		if (kl < 1 || key[0] != 'X')
			break;
		z = kl > 10 ? memchr(trait, '\0', kl - 9) : NULL;
		if (!z || key[kl - 9] != '\0' || z == key + kl - 9) {
			buf_printf(problems, "audiences: malformed index key\n");
			bad++;
			continue;
		}
		cv = z + 1;
		snprintf(t, sizeof(t), "%.*s", (int)(z - trait), trait);
		snprintf(c, sizeof(c), "%.*s", (int)(key + kl - 9 - cv), cv);
		pid = store_get_u64(key + kl - 8);
		buf_init(&yk, 0);
		key_pid(&yk, 'Y', pid, NULL);
		y = get_json(s, NULL, &yk);
		buf_fini(&yk);
		if (!y || !json_object_object_get_ex(y, t, &set) ||
		    !json_object_object_get_ex(set, c, NULL)) {
			buf_printf(
				problems,
				"audiences: index entry %s=%s of profile %llu not in its "
				"record\n",
				t, c, (unsigned long long)pid);
			bad++;
		}
		json_object_put(y);
	}
	/* Re-evaluation timers: each Q has its timer. */
	k[0] = 'Q';
	for (store_iter_seek(it, k, 1); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		struct buf tk;

		if (kl < 1 || key[0] != 'Q')
			break;
		if (kl != 9 || vl != 8)
			continue;
		buf_init(&tk, 0);
		timer_key(&tk, (int64_t)store_get_u64(v), store_get_u64(key + 1));
		if (!has_key(s, STORE_CF_TIMERS, tk.data, tk.len)) {
			buf_printf(problems,
				   "audiences: profile %llu has no re-evaluation timer\n",
				   (unsigned long long)store_get_u64(key + 1));
			bad++;
		}
		buf_fini(&tk);
	}
	store_iter_free(it);
	json_object_put(purging);
	json_object_put(counts);
	return bad ? NERR_CORRUPT : NERR_OK;
}
