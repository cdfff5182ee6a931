/*
 * profile.h -- the profile store and identity graph (DESIGN.md §6).
 *
 * Design: the engine thread calls profile_apply_event() for every normalized
 * Segment event, inside the store_batch of its engine batch; everything the call
 * changes (profiles, identities, recent-event history, the id counter) goes into
 * that batch, and later calls in the same batch see it (read-your-writes). HTTP
 * threads read committed state with b == NULL. The identity rules users rely on
 * are written down in docs/profiles.md; the on-disk format in profile.c.
 */
#ifndef NUDGE_PROFILE_PROFILE_H
#define NUDGE_PROFILE_PROFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "store/store.h"

struct json_object;

struct profile_config {
	unsigned max_identities;     /* identities per profile (default 50) */
	unsigned history_max_events; /* recent events kept per profile (default 100) */
	int64_t history_max_age_ms;  /* older events are dropped (default 90 days; 0 =
					none) */
	const char *const *identity_traits; /* NULL-terminated trait names that are
					       identities (namespace = trait name);
					       borrowed, may be NULL */
	unsigned max_traits; /* trait names per profile (default 1000; 0 = default) */
};

/* Fills cfg with the defaults above (no identity traits). */
void profile_config_default(struct profile_config *cfg);

/* Profiles one event merges at most; further ones stay apart until a later
 * event links them (so callers always learn every merged id). */
#define PROFILE_MERGE_MAX 16

/* What one profile_apply_event() did; the engine sums these for /metrics. */
struct profile_result {
	uint64_t profile_id; /* the profile the event was applied to */
	bool created;	     /* that profile was created by this event */
	unsigned merged;     /* profiles merged into it by this event */
	uint64_t merged_ids[PROFILE_MERGE_MAX]; /* their ids (now deleted): move
						   journey instances etc. */
	unsigned identities_rejected;		/* not attached (or dropped) by the cap */
	unsigned identities_conflicting; /* left where they were: a merge would have
					    put two user_ids on one profile */
};

/* Running totals for /metrics. */
struct profile_stats {
	uint64_t profiles_created;
	uint64_t merges;
	uint64_t identities_rejected;
	uint64_t identities_conflicting;
};

/* Adds one event's result to the totals. */
void profile_stats_add(struct profile_stats *st, const struct profile_result *res);

/*
 * Applies one normalized event inside batch b. seq is the inbox sequence (unique,
 * increasing); ts_ms the event's effective time (trait/consent timestamps, history
 * order); now_ms the engine's clock (created/updated times, history age cap).
 * NERR_INVAL if the event carries no usable identity; NERR_CORRUPT if a stored
 * record it needs cannot be read; NERR_IO from the store. NERR_INVAL and
 * NERR_CORRUPT leave the batch untouched; after NERR_IO the batch may hold part
 * of the event's writes and must be discarded.
 */
enum nerr profile_apply_event(struct store_batch *b, const struct profile_config *cfg,
			      struct json_object *event, uint64_t seq, int64_t ts_ms,
			      int64_t now_ms, struct profile_result *res,
			      struct nerr_msg *msg);
/*
 * The same, for a caller that holds the event's JSON text (text_len bytes):
 * the history record stores that text instead of printing the event again.
 * The engine has it from the inbox record. event may then be a view of the
 * text holding only the top-level members profile_event_members names and,
 * of "context", those profile_context_members names (segment_event_view):
 * they are all this function reads.
 */
extern const char *const profile_event_members[];
extern const char *const profile_context_members[];
enum nerr profile_apply_event_text(struct store_batch *b,
				   const struct profile_config *cfg,
				   struct json_object *event, const char *text,
				   size_t text_len, uint64_t seq, int64_t ts_ms,
				   int64_t now_ms, struct profile_result *res,
				   struct nerr_msg *msg);

/*
 * Looks up by identity in committed state (b == NULL) or through a batch.
 * ns is "user_id", "anonymous_id", "email", "phone" or a custom namespace; value
 * is normalized as the namespace requires (email lower-cased and trimmed, phone
 * to E.164). NERR_NOTFOUND if no profile has it; NERR_INVAL if ns or value can
 * never be an identity (bad namespace name, invalid email or phone).
 */
enum nerr profile_lookup(struct store *s, struct store_batch *b, const char *ns,
			 const char *value, uint64_t *profile_id);

/* Full JSON for the admin API (caller json_object_put()s it). NERR_NOTFOUND. */
enum nerr profile_get_json(struct store *s, struct store_batch *b, uint64_t profile_id,
			   struct json_object **out);

/* The §6 view for CEL/Liquid (caller json_object_put()s it). NERR_NOTFOUND. */
enum nerr profile_view_json(struct store *s, struct store_batch *b, uint64_t profile_id,
			    struct json_object **out);

/* The recent-event history with event time >= since_ms (INT64_MIN: all), newest
 * first, each the event as received: for CEL event_count(). Caller puts *out. */
enum nerr profile_history_json(struct store *s, struct store_batch *b,
			       uint64_t profile_id, int64_t since_ms,
			       struct json_object **out);

/* A history record's key: event time and inbox sequence. */
struct profile_hkey {
	int64_t t;
	uint64_t seq;
};

/* The keys of the profile's history, ascending by (t, seq), without reading the
 * records (one profile read). *out (caller frees) holds *n keys. */
enum nerr profile_history_keys(struct store *s, struct store_batch *b,
			       uint64_t profile_id, struct profile_hkey **out, size_t *n);
/* One history record, the event as received (caller puts *out), whichever key
 * form the profile's records have (the new one is tried first). NERR_NOTFOUND. */
enum nerr profile_history_event(struct store *s, struct store_batch *b,
				uint64_t profile_id, const struct profile_hkey *key,
				struct json_object **out);

/* Erases everything about the person in batch b: profile, identities, history.
 * NERR_NOTFOUND if there is no such profile. */
enum nerr profile_erase(struct store_batch *b, uint64_t profile_id);

/*
 * Offline consistency check for `nudge check`: every identity points at an
 * existing profile that lists it, every profile's identities point back, every
 * history record belongs to an existing profile that lists it (and the other way
 * round), no profile holds two user_ids. Appends one line per problem to
 * problems; returns NERR_OK if clean, NERR_CORRUPT otherwise (NERR_IO on store
 * errors). *profiles_seen counts the profile records read.
 */
enum nerr profile_check(struct store *s, struct buf *problems, uint64_t *profiles_seen);

#endif
