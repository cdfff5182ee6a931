/*
 * computed.h -- computed attributes: an aggregate of a CEL value over a profile's
 * events of one name, all time or within a sliding window (profile enrichment).
 *
 * Design: a pure library. computed_def_compile() turns a definition document
 * ({"event", "aggregate", "value", "window"}) into an immutable struct computed_def;
 * the runtime (audience.c) keeps one JSON state object per (profile, attribute),
 * hands it to computed_apply() for every matching event, to computed_expire() at
 * the time computed_next_boundary() names, and reads computed_value() for
 * `profile.computed.<id>`. Nothing here touches the store, the clock or a thread:
 * the caller passes every time (event_ms, now_ms) and owns every state object.
 * The state's JSON shape is described in computed.c.
 *
 * Ownership: a computed_def owns its strings and program and borrows the expr_env
 * it was compiled with, which must outlive it. States are json-c objects owned by
 * the caller; functions that take `struct json_object **state` may replace the
 * object (releasing the old reference).
 */
#ifndef NUDGE_AUDIENCE_COMPUTED_H
#define NUDGE_AUDIENCE_COMPUTED_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

struct expr_env;
struct json_object;

/* Fixed caps (documented in docs/audiences.md, "Computed attributes"):
 * the event name; events kept in a window (the oldest dropped beyond); distinct
 * values kept by an all-time distinct_count; the canonical JSON of one kept value
 * (a larger value skips the event). */
#define COMPUTED_MAX_EVENT_BYTES 200
#define COMPUTED_MAX_ITEMS	 10000
#define COMPUTED_MAX_DISTINCT	 10000
#define COMPUTED_MAX_VALUE_BYTES 1024

enum computed_agg {
	COMPUTED_COUNT = 0,
	COMPUTED_SUM,
	COMPUTED_MIN,
	COMPUTED_MAX,
	COMPUTED_FIRST,
	COMPUTED_LAST,
	COMPUTED_DISTINCT_COUNT,
	COMPUTED__COUNT,
};

struct computed_def;

/* The JSON name of an aggregate ("distinct_count"), or "?" out of range. */
const char *computed_agg_name(enum computed_agg agg);

/*
 * Compiles a definition document (a json-c object) for attribute `id` (copied).
 * env: the CEL environment to compile `value` with, as made by journey_env_new()
 * (slots of enum journey_var); it must outlive the definition. `value` may only
 * read `event` and `now`. Fields: event (string, 1..200 bytes, required),
 * aggregate (count, sum, min, max, first, last, distinct_count; required), value
 * (CEL source; required except for count, which refuses one), window (a duration
 * "30d", "24h", "90m"; absent = all time). Unknown fields are an error. Returns
 * NERR_OK with *out, or NERR_INVAL with *out NULL, msg->field naming the field and
 * msg->message one sentence (CEL errors read "invalid CEL: line L, column C: ...").
 */
enum nerr computed_def_compile(const char *id, struct json_object *doc,
			       const struct expr_env *env, struct computed_def **out,
			       struct nerr_msg *msg);
void computed_def_free(struct computed_def *d);
const char *computed_def_id(const struct computed_def *d);
const char *computed_def_event(const struct computed_def *d);
enum computed_agg computed_def_aggregate(const struct computed_def *d);
/* The CEL source of `value`, or NULL for count. */
const char *computed_def_value_src(const struct computed_def *d);
/* The window in milliseconds; 0 = all time. */
int64_t computed_def_window_ms(const struct computed_def *d);

/*
 * Folds one event (the Segment JSON as stored; event_ms its effective time) into
 * *state (NULL = no state yet: one is created). The value is evaluated with
 * `event` bound to the event and `now` to now_ms (profile and journey are null);
 * a CEL error, a null result, a value of the wrong kind (sum/min/max need a finite
 * number) or a value whose canonical JSON exceeds COMPUTED_MAX_VALUE_BYTES skips
 * the event. A windowed aggregate ignores an event with now_ms - event_ms >= window
 * and first drops the items that left the window. A state that does not belong to
 * this definition (another aggregate or window, or damaged) is started afresh.
 * Returns true when *state changed. scratch: the evaluation allocates from it and
 * leaves its allocations there; the caller resets it between calls.
 */
bool computed_apply(const struct computed_def *d, struct json_object **state,
		    struct json_object *event, int64_t event_ms, int64_t now_ms,
		    struct arena *scratch);

/* Drops the window items with now_ms - time >= window (state may be NULL).
 * Returns true when the state changed; always false for all-time aggregates. */
bool computed_expire(const struct computed_def *d, struct json_object *state,
		     int64_t now_ms);

/*
 * The attribute's current value as a new json-c reference (NULL is JSON null):
 * count and distinct_count an int (0 when empty); sum an int while every input
 * was an int and no overflow happened, else a double (0 when empty); min, max,
 * first and last the value, or NULL when empty. state may be NULL.
 */
struct json_object *computed_value(const struct computed_def *d,
				   const struct json_object *state);

/* The next time (ms) the value can change with no new event: the oldest window
 * item's time + window; INT64_MAX for all-time aggregates and empty windows. */
int64_t computed_next_boundary(const struct computed_def *d,
			       const struct json_object *state);

/*
 * Profile merge: folds state `from` (borrowed) into *into; either may be NULL.
 * The result is what applying every event of both would have given: first is the
 * earliest by event time (a tie keeps *into's), last the latest (a tie takes
 * from's), windows are merged in time order and capped again.
 */
void computed_merge(const struct computed_def *d, struct json_object **into,
		    const struct json_object *from);

#endif
