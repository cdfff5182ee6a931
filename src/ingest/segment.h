/*
 * segment.h -- parsing and validation of Segment-spec calls (track, identify,
 * page, screen, alias, group, batch) as Segment's SDKs send them.
 *
 * Use: the HTTP handler parses the body with segment_parse_json(), reads the
 * body's write key with segment_body_write_key() (before normalizing: writeKey
 * is removed from stored events), then either normalizes the one event with
 * segment_normalize(body, SEGMENT_TRACK, "", ...) or, for /v1/batch, gets the
 * items with segment_batch_items() and for each item i calls
 * segment_batch_merge_context(body, item) then
 * segment_normalize(item, -1, "batch[i]", ...), keeping the valid items.
 *
 * Error codes: NERR_PARSE (not strict JSON: syntax, depth, UTF-8, NUL, NaN,
 * numbers out of range, trailing bytes), NERR_INVAL (a rule of the spec;
 * msg->field names the field), NERR_TOOBIG (event over max_event_bytes, batch
 * over max_batch_items), NERR_IO (no randomness for a generated messageId).
 * docs/segment.md lists what is accepted and how events are normalized.
 */
#ifndef NUDGE_INGEST_SEGMENT_H
#define NUDGE_INGEST_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct json_object;

enum segment_type {
	SEGMENT_TRACK,
	SEGMENT_IDENTIFY,
	SEGMENT_PAGE,
	SEGMENT_SCREEN,
	SEGMENT_ALIAS,
	SEGMENT_GROUP,
	SEGMENT__COUNT
};

/* The largest max_depth honoured; larger values are clamped to it. */
#define SEGMENT_DEPTH_CAP 128

/* Client-sized caps (DESIGN.md §5); each one is a config option. */
struct segment_limits {
	int max_depth;		/* nesting of objects/arrays, the body itself is 1 */
	size_t max_event_bytes; /* one normalized event, serialized */
	unsigned max_batch_items;
};

/* Fills the defaults: depth 32, event 32 KiB, batch 1,000. Every function
 * taking limits also accepts NULL for these defaults. */
void segment_limits_default(struct segment_limits *lim);

/* Returns "track", "identify", ... or "?" for an out-of-range value. */
const char *segment_type_name(enum segment_type t);

/* Returns the type named exactly (lower case) by name, or -1. */
int segment_type_from_name(const char *name);

/*
 * Parses a request body of len bytes (need not be NUL-terminated) as strict
 * RFC 8259 JSON whose top level is an object. On success *out is a new object
 * the caller releases with json_object_put(). On error *out is NULL, msg->field
 * is the path of the value being read when it broke ("" at the top level) and
 * msg->message says what and where (offset, line, column).
 */
enum nerr segment_parse_json(const char *body, size_t len,
			     const struct segment_limits *lim, struct json_object **out,
			     struct nerr_msg *msg);

/*
 * Validates and normalizes one event in place (see docs/segment.md). type < 0
 * reads the type from the event's "type" field (batch items); otherwise the
 * endpoint's type is written into the event. path is the prefix of field paths
 * in errors ("" or "batch[3]"). now_ms is the receive time. On success
 * *ts_ms (may be NULL) is the effective event time in ms since the epoch. On
 * error the event may be partly normalized and must not be stored.
 */
enum nerr segment_normalize(struct json_object *ev, int type, const char *path,
			    int64_t now_ms, const struct segment_limits *lim,
			    int64_t *ts_ms, struct nerr_msg *msg);

/* The json-c flags events are measured (and should be stored) with. */
#define SEGMENT_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/*
 * segment_normalize() that also hands back the event serialized with
 * SEGMENT_JSON_FLAGS (it is serialized anyway for the size cap), so the caller
 * need not serialize it again. *json (may be NULL) is borrowed from ev: valid
 * until ev is changed, serialized again or released.
 */
enum nerr segment_normalize_json(struct json_object *ev, int type, const char *path,
				 int64_t now_ms, const struct segment_limits *lim,
				 int64_t *ts_ms, const char **json, size_t *json_len,
				 struct nerr_msg *msg);

/*
 * The single-event endpoints' fast path: validates and normalizes the body of
 * one event of the given type in one pass over its text, without a json-c
 * tree. On NERR_OK *out (malloc'd, *out_len bytes, not NUL-terminated) is the
 * event to store: type, the members as received (but type, writeKey,
 * receivedAt and timestamp), then a generated messageId when there was none,
 * originalTimestamp, receivedAt and timestamp as segment_normalize() sets
 * them; it parses to what the general path stores. *ts_ms as there.
 * NERR_NOTFOUND: not taken (anything invalid or unusual: nulls, numbers as
 * ids, escapes in keys or ids, duplicate top-level keys, externalIds, over
 * the size cap...); the caller then uses the general path, which reports
 * errors. It never fails otherwise.
 */
enum nerr segment_fast_event(const char *body, size_t len, enum segment_type type,
			     int64_t now_ms, const struct segment_limits *lim, char **out,
			     size_t *out_len, int64_t *ts_ms);

/*
 * A view of a stored event for a reader that needs only some of its members:
 * writes to out (at least len bytes) the event record rec (a JSON object as
 * nudge stored it, so valid and without repeated keys) holding only the
 * top-level members named in keep (NULL-terminated) and, if "context" is one
 * of them and keep_context is not NULL, only its members named there. Members
 * are copied as they are. Returns the view's length, or 0 if the record cannot
 * be cut without parsing (not an object, an escaped key, over 64 members):
 * the caller then reads all of it. The engine uses it so that it does not
 * build a json-c tree of properties and context nobody reads.
 */
size_t segment_event_view(const char *rec, size_t len, const char *const *keep,
			  const char *const *keep_context, char *out);

/* Returns the body's non-empty string "writeKey" (borrowed from body), or NULL. */
const char *segment_body_write_key(struct json_object *body);

/*
 * Validates a batch envelope: "batch" is an array of at most max_batch_items,
 * and "context", "integrations" (objects) and "sentAt" (ISO-8601) are valid
 * when present. On success *items is the array, borrowed from body.
 */
enum nerr segment_batch_items(struct json_object *body, const struct segment_limits *lim,
			      struct json_object **items, struct nerr_msg *msg);

/*
 * Applies the batch envelope to one item, as Segment does: the envelope's
 * context and integrations are merged key by key into the item's (the item's
 * keys win), and the envelope's sentAt is copied when the item has none.
 * Values are deep copies, so items stay independent. Non-object items and
 * non-object item contexts are left alone for segment_normalize() to report.
 */
void segment_batch_merge_context(struct json_object *body, struct json_object *item);

#endif
