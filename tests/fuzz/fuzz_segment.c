/*
 * fuzz_segment.c -- arbitrary bytes through segment_parse_json(), then every
 * call type and the batch path through segment_normalize().
 *
 * Design: besides crashes, leaks and UB (ASan/UBSan/LSan), it checks segment.c
 * invariants (1) and (2): an accepted event has its required string fields and
 * serializes to JSON our own strict parser accepts, within the size cap; and
 * that the single-event fast path (segment_fast_event) takes only what the
 * general path accepts and stores an equal event; and that the engine's view
 * of an event (segment_event_view) reads as the whole event does.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/segment.h"
#include "profile/profile.h"
#include "../segment_check.h"

#define NOW_MS 1767323045678LL

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

/* Checks invariant (2) on an event segment_normalize() accepted. */
static void check_event(struct json_object *ev, const struct segment_limits *lim)
{
	static const char *const required[] = {"type", "messageId", "timestamp",
					       "receivedAt"};
	struct json_object *v, *again = NULL;
	struct nerr_msg msg;
	const char *s;
	size_t len;

	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
		must(json_object_object_get_ex(ev, required[i], &v) &&
			     json_object_is_type(v, json_type_string),
		     required[i]);
	must(!json_object_object_get_ex(ev, "writeKey", NULL), "writeKey removed");
	s = json_object_to_json_string_length(
		ev, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	must(len <= lim->max_event_bytes, "size cap");
	must(segment_parse_json(s, len, lim, &again, &msg) == NERR_OK, "round trip");
	json_object_put(again);
}

static struct json_object *copy_of(struct json_object *o);

/*
 * segment_fast_event() on the raw bytes: when it takes them, the general path
 * must have accepted the body (rc) and stored an equal event (ev), but for a
 * messageId each generated.
 */
static void check_fast(const uint8_t *data, size_t size, int type, enum nerr rc,
		       struct json_object *ev, struct json_object *body,
		       const struct segment_limits *lim, int64_t ts)
{
	char *out = NULL;
	size_t len = 0;
	int64_t fts = 0;
	struct json_object *fev, *copy, *mid;
	struct json_tokener *tok;

	if (segment_fast_event((const char *)data, size, type, NOW_MS, lim, &out, &len,
			       &fts) != NERR_OK) {
		must(out == NULL, "no text when declined");
		return;
	}
	must(rc == NERR_OK, "fast path took a body the general path rejects");
	must(fts == ts, "same event time");
	must(len <= lim->max_event_bytes, "fast size cap");
	tok = json_tokener_new();
	fev = json_tokener_parse_ex(tok, out, (int)len);
	json_tokener_free(tok);
	must(fev != NULL, "fast output parses");
	must(top_members(out, len) == (size_t)json_object_object_length(fev),
	     "no repeated top-level key");
	copy = copy_of(ev);
	if (!json_object_object_get_ex(body, "messageId", &mid) ||
	    !json_object_is_type(mid, json_type_string) ||
	    json_object_get_string_len(mid) == 0) {
		json_object_object_del(fev, "messageId");
		json_object_object_del(copy, "messageId");
	}
	must(json_object_equal(fev, copy), "fast path stores what the general path does");
	json_object_put(fev);
	json_object_put(copy);
	free(out);
}

static struct json_object *copy_of(struct json_object *o)
{
	struct json_object *c = NULL;

	must(json_object_deep_copy(o, &c, NULL) == 0, "deep copy");
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct segment_limits lim;
	struct json_object *body = NULL, *items = NULL;
	struct nerr_msg msg;
	int64_t ts;

	segment_limits_default(&lim);
	{
		/* Any bytes, as a damaged stored record: the view stays in its
		 * buffer of size bytes (ASan) whether or not it cuts one. */
		char *v = malloc(size ? size : 1);

		must(segment_event_view((const char *)data, size, profile_event_members,
					profile_context_members, v) <= size,
		     "view within its buffer");
		free(v);
	}
	if (segment_parse_json((const char *)data, size, &lim, &body, &msg) != NERR_OK) {
		char *out = NULL;
		size_t len;

		must(body == NULL, "no tree on error");
		for (int t = 0; t < SEGMENT__COUNT; t++)
			must(segment_fast_event((const char *)data, size, t, NOW_MS, &lim,
						&out, &len, &ts) == NERR_NOTFOUND,
			     "fast path declines what does not parse");
		return 0;
	}
	must(json_object_is_type(body, json_type_object), "object body");
	must(view_matches((const char *)data, size, body), "view of the body");

	(void)segment_body_write_key(body);
	for (int t = 0; t < SEGMENT__COUNT; t++) {
		struct json_object *ev = copy_of(body);
		enum nerr rc = segment_normalize(ev, t, "", NOW_MS, &lim, &ts, &msg);

		if (rc == NERR_OK) {
			size_t sl;
			const char *st = json_object_to_json_string_length(
				ev, JSON_C_TO_STRING_PLAIN, &sl);

			check_event(ev, &lim);
			must(view_matches(st, sl, ev), "view of a stored event");
		}
		check_fast(data, size, t, rc, ev, body, &lim, ts);
		json_object_put(ev);
	}
	if (segment_batch_items(body, &lim, &items, &msg) == NERR_OK) {
		size_t n = json_object_array_length(items);

		for (size_t i = 0; i < n; i++) {
			struct json_object *it = json_object_array_get_idx(items, i);
			char path[32];

			snprintf(path, sizeof(path), "batch[%zu]", i);
			segment_batch_merge_context(body, it);
			if (segment_normalize(it, -1, path, NOW_MS, &lim, &ts, &msg) ==
			    NERR_OK)
				check_event(it, &lim);
		}
	}
	json_object_put(body);
	return 0;
}
