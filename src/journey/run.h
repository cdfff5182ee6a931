/*
 * run.h -- the journey runtime: published journeys, instances, timers, waits.
 *
 * Design (DESIGN.md §2, §7; invariants 2-6): the runtime lives inside the engine
 * thread and changes state only through the engine's store_batch, so every step
 * an instance takes commits atomically with the inbox records or timers that
 * caused it. It keeps in memory only what is cheap to rebuild at startup: the
 * journeys (every published version compiled), the entry index (event name ->
 * active journeys) and the set of event names any step listens to. Everything
 * else is in the store:
 *
 *   STORE_CF_JOURNEYS   "s/<id>" status, "d/<id>" draft, "v/<id>/<ver u32>" versions
 *   STORE_CF_TEMPLATES  "<id>" current template, "v/<id>/<ver u32>" history
 *   STORE_CF_INSTANCES  pid(8) <jid> 0 <key> -> instance JSON
 *   STORE_CF_WAITS      pid(8) <event> 0 <jid> 0 <key> -> "" (wait_for event)
 *   STORE_CF_TIMERS     due_ms(8) <instance key> -> iid(8) visit(8)
 *   STORE_CF_OUTBOX     <envelope id> -> envelope JSON
 *   STORE_CF_INDEX      "r" pid(8) <jid> 0 <key> -> last entry ms (re-entry rules)
 *                       "j" <jid> 0 pid(8) <key> -> "" (instances of a journey)
 *                       "p" <jid> 0 <instance key> -> "" (parked while paused)
 *   STORE_CF_META       "clock_offset_ms", "next_instance_id"
 *
 * Timers are data (invariant 5): firing walks the ordered timers family from its
 * first key; nothing scans instances. An envelope id is derived from (instance
 * id, step, visit) (invariant 4), so re-running a batch after a crash recreates
 * the same envelope, never a second one. Webhook envelopes are handed to the
 * delivery thread only after the batch that created them commits (invariant 3):
 * they are collected in the batch context and submitted by the engine after the
 * commit.
 */
#ifndef NUDGE_JOURNEY_RUN_H
#define NUDGE_JOURNEY_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "journey/def.h"
#include "profile/profile.h"
#include "store/store.h"

struct json_object;
struct journey_rt;
struct govern;
struct journey_batch;

struct journey_rt_config {
	struct journey_limits limits;
	unsigned max_steps_per_event; /* steps run without a wait; beyond: error */
	size_t max_instance_bytes;    /* serialized instance state; beyond: error */
	unsigned timers_per_batch;    /* timers fired per engine batch */
	const char *webhook_secret;   /* global signing secret or NULL */
	const struct profile_config *profile;
	const char *default_from; /* email sender when the template has none */
	/*
	 * Link tracking (the app wires src/deliver/track.c here; NULL = off):
	 * rewrite_html appends html with links and the open pixel rewritten for
	 * envelope_id; unsubscribe_url appends the one-click unsubscribe URL.
	 */
	void (*rewrite_html)(void *ud, const char *envelope_id, const char *html,
			     size_t len, struct buf *out);
	void (*unsubscribe_url)(void *ud, const char *envelope_id, struct buf *out);
	void *track_ud;
	struct govern *govern; /* the send-decision rules (borrowed; may be NULL) */
	/*
	 * Audiences and computed attributes (src/audience wires these; NULL = none):
	 * decorate_profile adds "computed" and "audiences" to a profile view;
	 * in_audience answers CEL's in_audience() (1, 0, negative = error);
	 * on_timer handles a due timer whose value is "A" (key after the due time).
	 */
	void (*decorate_profile)(void *ud, struct store_batch *b, uint64_t pid,
				 struct json_object *view);
	int (*in_audience)(void *ud, struct store_batch *b, uint64_t pid,
			   const char *audience);
	void (*on_timer)(void *ud, struct journey_batch *jb, const char *key, size_t kl);
	/* A journey step (update_profile) changed pid's traits. */
	void (*on_traits_changed)(void *ud, uint64_t pid);
	void *hook_ud;
};

void journey_rt_config_default(struct journey_rt_config *cfg);

/* An envelope (webhook, email, sms, push) ready to send after the batch commits. */
struct journey_send {
	struct journey_send *next;
	char *envelope_json; /* the stored envelope; owned */
};

/* An admin operation's answer. */
struct journey_result {
	int status; /* HTTP status */
	char *body; /* JSON; owned */
};

/* What one engine batch carries through the runtime. */
struct report;
struct journey_batch {
	struct store_batch *b;
	struct report *report;	    /* counters (NULL = not counted) */
	int64_t now_ms;		    /* the engine clock for this batch */
	uint64_t seq;		    /* the inbox record being applied (0 for timers) */
	struct journey_send *sends; /* envelopes to hand to delivery after commit */
	struct journey_send **sends_tail;
	int64_t min_due; /* earliest timer set in this batch (INT64_MAX: none) */
	bool io_failed;	 /* a store read failed after writes: do not commit */
};

void journey_batch_init(struct journey_batch *jb, struct store_batch *b, int64_t now_ms);
/* Frees the collected sends (after the engine handed them over). */
void journey_batch_fini(struct journey_batch *jb);

enum nerr journey_rt_open(struct store *s, const struct journey_rt_config *cfg,
			  struct journey_rt **out, struct nerr_msg *msg);
void journey_rt_free(struct journey_rt *rt);

/* The engine clock: wall clock plus the test-clock offset stored in meta. */
int64_t journey_rt_now(const struct journey_rt *rt);
int64_t journey_rt_clock_offset(const struct journey_rt *rt);

/* False when journey_rt_on_event would do nothing with event: it reads only
 * its "type" and "event" (no journey enters on, waits for or exits on it). */
bool journey_rt_wants_event(const struct journey_rt *rt, struct json_object *event);
/* An event was applied to profile pid (after the profile update). */
void journey_rt_on_event(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid,
			 struct json_object *event);
/* Profile pid entered (or left) an audience: enters the active journeys whose
 * entry is that change; each instance sees a synthetic "Audience Entered" /
 * "Audience Exited" track event with properties.audience. Returns whether any
 * journey was entered. */
bool journey_rt_on_audience(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid,
			    const char *audience, bool entered);
/* A journey a business event starts: its id and, when its `who` names an indexed
 * candidate set, the trait and the value (computed from the event) to look up;
 * else NULL, NULL. value is borrowed for the call. */
typedef void (*journey_business_fn)(void *ud, const char *journey, const char *trait,
				    struct json_object *value);
/* Calls fn for every active journey whose entry is the business event `event`. */
void journey_rt_business_targets(struct journey_rt *rt, struct json_object *event,
				 journey_business_fn fn, void *ud);
/* Enters pid into journey for business event `event` if `who` and `when` hold
 * (and the re-entry rules allow). 1 entered, 0 not, -1 the journey is not active
 * (or no longer starts from a business event). */
int journey_rt_enter_business(struct journey_rt *rt, struct journey_batch *jb,
			      const char *journey, uint64_t pid,
			      struct json_object *event);
/* Profiles `from` were merged into `into`: their instances move over. */
void journey_rt_on_merge(struct journey_rt *rt, struct journey_batch *jb,
			 const uint64_t *from, unsigned n, uint64_t into);
/* Profile pid is being erased: its instances, waits and timers go too. */
void journey_rt_on_erase(struct journey_rt *rt, struct journey_batch *jb, uint64_t pid);
/* Fires up to cfg.timers_per_batch timers due at or before jb->now_ms; returns
 * how many fired. */
unsigned journey_rt_fire_timers(struct journey_rt *rt, struct journey_batch *jb);
/* The earliest pending timer (kept in memory; may be early, never late), or
 * INT64_MAX. */
int64_t journey_rt_next_due(struct journey_rt *rt);
/* Before the engine commits a batch: writes the runtime's counters once. */
void journey_rt_flush(struct journey_rt *rt, struct journey_batch *jb);
/* After a batch committed: folds the timers it set into the next deadline. */
void journey_rt_batch_done(struct journey_rt *rt, const struct journey_batch *jb);
/* A delivery outcome record (JSON from the delivery thread). */
void journey_rt_on_outcome(struct journey_rt *rt, struct journey_batch *jb,
			   struct json_object *outcome);
/* An admin operation record ({"op": ...}); *res receives the answer. */
void journey_rt_admin(struct journey_rt *rt, struct journey_batch *jb,
		      struct json_object *op, struct journey_result *res);
/* Calls fn for every envelope (webhook, email, sms, push) still pending in the
 * outbox (startup). */
void journey_rt_pending(struct journey_rt *rt, void (*fn)(void *ud, const char *env_json),
			void *ud);

/* Compiles a journey document against committed templates, for the admin API's
 * validate route (loop thread). *errors_json receives a JSON array (caller puts). */
bool journey_rt_validate(struct store *s, const struct expr_env *env, const char *json,
			 size_t len, struct json_object **errors_json);
/* Checks a template document {"channel": ..., fields}; msg names the field. */
enum nerr journey_template_check(struct json_object *doc, struct nerr_msg *msg);

#endif
