/*
 * segment_check.h -- checks test_segment and fuzz_segment share: the count
 * of an object text's top-level members (json-c folds repeated keys, so this
 * is how a test sees one), and the property of the engine's view of an event
 * (segment_event_view): a view parses to exactly the members of the whole
 * event that profile_event_members and profile_context_members name.
 * Header-only (static), so each program has its own copy and the fuzz target
 * needs no test library.
 */
#ifndef NUDGE_TESTS_SEGMENT_CHECK_H
#define NUDGE_TESTS_SEGMENT_CHECK_H

#include <json-c/json.h>
#include <stdbool.h>

#include <stdlib.h>
#include <string.h>

#include "ingest/segment.h"
#include "profile/profile.h"

/* Top-level members of the JSON object text (json-c would fold repeats). */
static size_t top_members(const char *p, size_t n)
{
	size_t count = 0;
	int depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < n; i++) {
		if (in_str) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_str = false;
		} else if (p[i] == '"') {
			in_str = true;
		} else if (p[i] == '{' || p[i] == '[') {
			depth++;
		} else if (p[i] == '}' || p[i] == ']') {
			depth--;
		} else if (p[i] == ':' && depth == 1) {
			count++;
		}
	}
	return count;
}

/*
 * Checks segment_event_view() on text, a JSON object whose parse is full:
 * when it cuts a view, the view parses to full's members named in
 * profile_event_members (of "context", if an object, only those
 * profile_context_members names), equal, and to nothing else.
 */
static int view_matches(const char *text, size_t len, struct json_object *full)
{
	const char *const *keep = profile_event_members, *const *keep_ctx =
								 profile_context_members;
	char *out = malloc(len ? len : 1);
	size_t n = segment_event_view(text, len, keep, keep_ctx, out);
	struct json_tokener *tok;
	struct json_object *view;
	int ok = 1;

	if (n == 0 || n > len) {
		free(out);
		return n == 0;
	}
	tok = json_tokener_new_ex(SEGMENT_DEPTH_CAP * 2);
	view = json_tokener_parse_ex(tok, out, (int)n);
	json_tokener_free(tok);
	free(out);
	if (!view || !json_object_is_type(view, json_type_object)) {
		json_object_put(view);
		return 0;
	}

	for (const char *const *k = keep; *k; k++) {
		struct json_object *fv = NULL, *vv = NULL;
		int fin = json_object_object_get_ex(full, *k, &fv);
		int vin = json_object_object_get_ex(view, *k, &vv);

		if (fin != vin)
			ok = 0;
		else if (!fin)
			continue;
		else if (strcmp(*k, "context") == 0 &&
			 json_object_is_type(fv, json_type_object)) {
			if (!json_object_is_type(vv, json_type_object))
				ok = 0;
			json_object_object_foreach(vv, ck, cv)
			{
				struct json_object *x = NULL;
				int named = 0;

				for (const char *const *c = keep_ctx; *c; c++)
					named |= strcmp(*c, ck) == 0;
				if (!named || !json_object_object_get_ex(fv, ck, &x) ||
				    !json_object_equal(x, cv))
					ok = 0;
			}
			for (const char *const *c = keep_ctx; *c; c++) {
				struct json_object *x = NULL;

				if (json_object_object_get_ex(fv, *c, &x) &&
				    !json_object_object_get_ex(vv, *c, NULL))
					ok = 0;
			}
		} else if (!json_object_equal(fv, vv)) {
			ok = 0;
		}
	}
	json_object_object_foreach(view, vk, vval)
	{
		int named = 0;

		(void)vval;
		for (const char *const *k = keep; *k; k++)
			named |= strcmp(*k, vk) == 0;
		if (!named)
			ok = 0;
	}
	json_object_put(view);
	return ok;
}

#endif
