/*
 * audience.h -- audiences, computed attributes, indexed traits and business-event
 * fan-out: the real-time CDP part of nudge (docs/audiences.md).
 *
 * Design: like the journey runtime, this module lives in the engine thread and
 * changes state only through the engine's store_batch, so a membership change,
 * a computed value, an index entry or a step of a background job commits
 * atomically with the inbox record or timer that caused it (invariant 2). In
 * memory it keeps only what is cheap to rebuild at startup: the compiled
 * audience and computed-attribute definitions, the indexed trait names and the
 * number of pending background jobs. Everything else is in STORE_CF_AUDIENCES:
 *
 *   "D" <aid>                 audience definition JSON (+ version, backfill state)
 *   "C" <cid>                 computed-attribute definition JSON
 *   "S"                       settings: {"indexed_traits": [...], "ready": {T: bool}}
 *   "N" <aid>                 member count (u64)
 *   "M" <aid> 0 pid(8)        member since (ms, u64)         (members, paged by pid)
 *   "P" pid(8) <aid>          member since (ms, u64)         (a profile's audiences)
 *   "V" pid(8) <cid>          {"value": v, "ver": n}          (what views read)
 *   "W" pid(8) <cid>          {"ver": n, "s": state}          (computed.c's state)
 *   "X" <trait> 0 <canon> 0 pid(8)  ""                       (trait element index)
 *   "Y" pid(8)                {trait: {canon: null}}         (what X holds for pid)
 *   "Q" pid(8)                due ms (u64) of the profile's re-evaluation timer
 *   "E" pid(8)                n x {t, seq, FNV-1a of the name} (u64 each): the
 *                             event names of the profile's history, for event_count
 *   "J" id(8)                 a background job (backfill, fanout, index, purge)
 *   "B" <business event id>   fan-out progress per journey
 *   "n"                       next job id (u64)
 *
 * Re-evaluation timers are ordinary durable timers in STORE_CF_TIMERS (key
 * due(8) pid(8) "\0~aud", value "A"); the journey runtime fires them and calls
 * aud_on_timer(). A profile has at most one pending: the earliest moment a
 * windowed count or a windowed computed value can change with no new event.
 *
 * Background jobs (back-fill of a new definition, business-event fan-out,
 * building a trait index, purging a deleted audience) advance a bounded number
 * of profiles per engine batch, after the batch's inbox records: ingestion never
 * waits for them. A job's cursor commits in the same batch as the changes of
 * the profiles it covered, so a restart resumes exactly where the last commit
 * ended: nobody is evaluated, entered or counted twice.
 */
#ifndef NUDGE_AUDIENCE_AUDIENCE_H
#define NUDGE_AUDIENCE_AUDIENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "store/store.h"

struct json_object;
struct journey_batch;
struct journey_rt;
struct journey_result;
struct expr_env;
struct profile_config;

struct aud_config {
	unsigned job_batch;	  /* profiles a job covers per engine batch (1000) */
	unsigned scan_batch;	  /* profiles a scanning fan-out covers per batch (250) */
	int64_t scan_interval_ms; /* pause between scan steps (10) */
	unsigned max_audiences;	  /* definitions (1000) */
	unsigned max_computed;	  /* definitions (1000) */
	unsigned max_indexed_traits; /* (50) */
	const struct profile_config *profile;
};

void aud_config_default(struct aud_config *cfg);

struct aud;

/* Opens the module over committed state (engine startup). */
enum nerr aud_open(struct store *s, const struct aud_config *cfg, struct aud **out);
void aud_free(struct aud *a);
/* The journey runtime it enters profiles into (set once, before events). */
void aud_set_runtime(struct aud *a, struct journey_rt *rt);
/* Points the journey runtime's profile, in_audience and timer hooks at a. */
struct journey_rt_config;
void aud_hooks(struct aud *a, struct journey_rt_config *cfg);

/* False when aud_on_event(a, .., pid, ..) would do nothing: no audience,
 * computed attribute or trait index, and no merge into pid to re-index. With
 * pid 0, before the event's profile is known: the first three alone. */
bool aud_wants_event(const struct aud *a, uint64_t pid);
/*
 * An event was applied to profile pid (after profile_apply_event and any merge,
 * before the journeys see it): updates computed attributes, the trait index
 * and audience memberships; membership changes enter audience journeys.
 */
void aud_on_event(struct aud *a, struct journey_batch *jb, uint64_t pid,
		  struct json_object *event, int64_t event_ms);
/* Profiles `from` were merged into `into` (before aud_on_event for into). */
void aud_on_merge(struct aud *a, struct journey_batch *jb, const uint64_t *from,
		  unsigned n, uint64_t into);
/* Re-indexes and re-evaluates the profiles whose traits journey steps changed
 * since the last call (the engine calls it after each record and after
 * timers): once per profile and call, so journeys that change traits cannot
 * chain without bound. */
void aud_flush_changed(struct aud *a, struct journey_batch *jb);
/* Profile pid is being erased (before profile_erase). */
void aud_on_erase(struct aud *a, struct journey_batch *jb, uint64_t pid);
/* The journey runtime found an audience timer (value "A") due: key is the
 * timer key after its due time. */
void aud_on_timer(void *ud, struct journey_batch *jb, const char *key, size_t kl);

/* True for the admin operations this module applies ("audience_put", ...). */
bool aud_admin_op(const char *op);
/* Applies an admin operation (engine thread). */
void aud_admin(struct aud *a, struct journey_batch *jb, struct json_object *op,
	       struct journey_result *res);

/* Runs one bounded step of the oldest background job; returns true if it did
 * anything. */
bool aud_background(struct aud *a, struct journey_batch *jb);
/* When background work is next possible: now_ms if a job can run now, a later
 * time for a throttled scan, INT64_MAX when there is none. */
int64_t aud_next_work(struct aud *a, int64_t now_ms);

/*
 * Adds "computed" ({id: value}) and "audiences" ([id, ...]) to a profile view
 * (the journey runtime's profile for CEL and Liquid). b may be NULL (committed
 * state). Usable from any thread: reads only the store.
 */
void aud_decorate(struct store *s, struct store_batch *b, uint64_t pid,
		  struct json_object *view);
/* The profile API's form: "computed" as above, "audiences":
 * [{"id": ..., "since": RFC 3339}]. */
void aud_decorate_api(struct store *s, uint64_t pid, struct json_object *profile);
/* 1 if pid is a member of aid, 0 if not (any thread; b may be NULL). */
int aud_is_member(struct store *s, struct store_batch *b, uint64_t pid, const char *aid);

/*
 * Offline consistency check (`nudge check`): member records by audience and by
 * profile agree and belong to existing profiles, live audiences' counters match
 * their members, every trait-index entry is in its profile's record, every
 * pending re-evaluation has its timer. One line per problem; NERR_CORRUPT if
 * any. *members counts the member records.
 */
struct buf;
enum nerr aud_check(struct store *s, struct buf *problems, uint64_t *members);

/* ----------------------------------------------- loop-thread API helpers */

/* Checks an audience document {"name"?, "when", "description"?}; msg names the
 * field. env: journey_env_new(). */
enum nerr aud_check_audience(struct json_object *doc, const struct expr_env *env,
			     struct nerr_msg *msg);
/* Checks a computed-attribute document (computed.c rules). */
enum nerr aud_check_computed(const char *id, struct json_object *doc,
			     const struct expr_env *env, struct nerr_msg *msg);
/* Checks {"traits": [names]}. */
enum nerr aud_check_indexed(struct json_object *doc, struct nerr_msg *msg);
/* Checks a business event body {"event", "properties"?, "messageId"?,
 * "timestamp"?} and normalizes it in place (messageId and receivedAt set). */
enum nerr aud_check_business(struct json_object *doc, int64_t now_ms,
			     struct nerr_msg *msg);

/* GET helpers over committed state: each returns a new JSON object or NULL when
 * there is no such thing. */
struct json_object *aud_get_audience(struct store *s, const char *aid);
struct json_object *aud_list_audiences(struct store *s);
/* Members of aid after pid `after` (0: from the start), at most limit. */
struct json_object *aud_members(struct store *s, const char *aid, uint64_t after,
				unsigned limit);
struct json_object *aud_get_computed(struct store *s, const char *cid);
struct json_object *aud_list_computed(struct store *s);
struct json_object *aud_get_settings(struct store *s);
struct json_object *aud_get_business(struct store *s, const char *id);

#endif
