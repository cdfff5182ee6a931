/*
 * test_profile.c -- the profile store and identity graph on a real RocksDB.
 *
 * Each test opens a fresh store in a mkdtemp() directory, applies Segment-shaped
 * events through profile_apply_event() inside store batches (committed as the
 * engine would), and checks lookups, the admin JSON, the §6 view, and what is
 * (not) left in the column families. docs/profiles.md states the rules tested.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "ingest/segment.h"
#include "profile/profile.h"

#include "store/store.h"

#define DAY_MS (24LL * 3600 * 1000)
#define T0     1767225600000LL /* 2026-01-01T00:00:00Z */

struct fx {
	char dir[64];
	struct store *s;
	struct store_batch *b;
	struct profile_config cfg;
	uint64_t seq;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path); /* keep walking: remove what can be removed */
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct nerr_msg msg;

	log_set_level(LOG_ERROR);
	strcpy(f->dir, "/tmp/nudge-test-profile-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(store_open(f->dir, &f->s, &msg), NERR_OK);
	f->b = store_batch_new(f->s);
	profile_config_default(&f->cfg);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	store_batch_free(f->b);
	store_close(f->s);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void commit(struct fx *f)
{
	struct nerr_msg msg;

	assert_int_equal(store_batch_commit(f->b, false, &msg),
			 NERR_OK); /* durability is not under test */
}

/* Applies one event (JSON text) in the open batch at event time ts, engine
 * clock now; returns the result. */
static struct profile_result apply_at(struct fx *f, const char *json, int64_t ts,
				      int64_t now)
{
	struct json_object *ev = json_tokener_parse(json);
	struct profile_result res;
	struct nerr_msg msg;

	assert_non_null(ev);
	assert_int_equal(
		profile_apply_event(f->b, &f->cfg, ev, ++f->seq, ts, now, &res, &msg),
		NERR_OK);
	json_object_put(ev);
	return res;
}

/* Applies and commits at event time ts with the clock one second later. */
static struct profile_result apply(struct fx *f, const char *json, int64_t ts)
{
	struct profile_result res = apply_at(f, json, ts, ts + 1000);

	commit(f);
	return res;
}

static uint64_t lookup(struct fx *f, const char *ns, const char *value)
{
	uint64_t pid = 0;

	assert_int_equal(profile_lookup(f->s, NULL, ns, value, &pid), NERR_OK);
	return pid;
}

static void assert_no_identity(struct fx *f, const char *ns, const char *value)
{
	uint64_t pid = 0;

	assert_int_equal(profile_lookup(f->s, NULL, ns, value, &pid), NERR_NOTFOUND);
}

static struct json_object *get(struct fx *f, uint64_t pid)
{
	struct json_object *o = NULL;

	assert_int_equal(profile_get_json(f->s, NULL, pid, &o), NERR_OK);
	return o;
}

/* o at a dotted path ("traits.plan"); NULL if absent. */
static struct json_object *at(struct json_object *o, const char *path)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = strtok_r(buf, ".", &save); p && o; p = strtok_r(NULL, ".", &save))
		if (!json_object_object_get_ex(o, p, &o))
			return NULL;
	return o;
}

static const char *str_at(struct json_object *o, const char *path)
{
	struct json_object *v = at(o, path);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
							     : NULL;
}

static size_t len_at(struct json_object *o, const char *path)
{
	struct json_object *v = at(o, path);

	return v && json_object_is_type(v, json_type_array) ? json_object_array_length(v)
							    : 0;
}

static size_t count_cf(struct fx *f, enum store_cf cf)
{
	struct store_iter *it = store_iter_new(f->s, NULL, cf);
	size_t n = 0;

	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
		n++;
	store_iter_free(it);
	return n;
}

/* Event records whose key is len bytes long. */
static size_t keys_of_len(struct fx *f, size_t len)
{
	struct store_iter *it = store_iter_new(f->s, NULL, STORE_CF_EVENTS);
	size_t n = 0, klen = 0;

	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		store_iter_key(it, &klen);
		n += klen == len;
	}
	store_iter_free(it);
	return n;
}

/* The event record of profile pid under the new key (seq, pid) or, with
 * old, under (pid, t, seq); its text (caller frees) or NULL. */
static char *event_at(struct fx *f, bool old, uint64_t pid, int64_t t, uint64_t seq)
{
	unsigned char k[24];
	char *v = NULL;
	size_t len = 0;
	enum nerr rc;

	if (old) {
		store_put_u64(k, pid);
		store_put_u64(k + 8, (uint64_t)t);
		store_put_u64(k + 16, seq);
	} else {
		store_put_u64(k, seq);
		store_put_u64(k + 8, pid);
	}
	rc = store_get(f->s, STORE_CF_EVENTS, k, old ? 24 : 16, &v, &len);
	if (rc == NERR_NOTFOUND)
		return NULL;
	assert_int_equal(rc, NERR_OK);
	return v;
}

static void test_track_then_identify_builds_profile(void **state)
{
	struct fx *f = *state;
	struct profile_result r1, r2;
	struct json_object *o;
	uint64_t pid;

	r1 = apply(f,
		   "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"Viewed\","
		   "\"properties\":{\"sku\":\"x\"}}",
		   T0);
	assert_true(r1.created);
	r2 = apply(f,
		   "{\"type\":\"identify\",\"anonymousId\":\"a1\",\"userId\":\"u1\","
		   "\"traits\":{\"name\":\"Ada\",\"email\":\" Ada@Example.COM \"},"
		   "\"context\":{\"traits\":{\"plan\":\"pro\"},\"timezone\":\"Europe/"
		   "Paris\"}}",
		   T0 + 1000);
	assert_false(r2.created);
	assert_int_equal(r2.profile_id, r1.profile_id);
	pid = lookup(f, "user_id", "u1");
	assert_int_equal(pid, r1.profile_id);
	assert_int_equal(lookup(f, "anonymous_id", "a1"), pid);
	assert_int_equal(lookup(f, "email", "ada@example.com"), pid);

	o = get(f, pid);
	assert_string_equal(str_at(o, "traits.name"), "Ada");
	assert_string_equal(str_at(o, "traits.plan"), "pro");
	assert_string_equal(str_at(o, "timezone"), "Europe/Paris");
	assert_string_equal(str_at(o, "addresses.email"), "ada@example.com");
	assert_int_equal(len_at(o, "identities.user_id"), 1);
	assert_int_equal(len_at(o, "identities.anonymous_id"), 1);
	assert_int_equal(len_at(o, "identities.email"), 1);
	assert_int_equal(len_at(o, "events"), 1);
	assert_string_equal(
		str_at(json_object_array_get_idx(at(o, "events"), 0), "event"), "Viewed");
	assert_non_null(str_at(o, "created_at"));
	assert_non_null(str_at(o, "updated_at"));
	json_object_put(o);
}

static void test_identify_merges_anonymous_into_known(void **state)
{
	struct fx *f = *state;
	struct profile_result known, anon, r;
	struct json_object *o;
	uint64_t pid;

	known = apply(f,
		      "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a0\","
		      "\"traits\":{\"plan\":\"pro\"}}",
		      T0);
	apply(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Login\"}", T0 + 10);
	anon = apply(f,
		     "{\"type\":\"track\",\"anonymousId\":\"a2\",\"event\":\"Browse\","
		     "\"context\":{\"traits\":{\"color\":\"red\"}}}",
		     T0 + 20);
	assert_true(anon.created);
	assert_int_not_equal(anon.profile_id, known.profile_id);

	r = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a2\"}",
		  T0 + 30);
	assert_int_equal(r.profile_id, known.profile_id);
	assert_int_equal(r.merged, 1);
	assert_int_equal(r.merged_ids[0], anon.profile_id);

	pid = known.profile_id;
	assert_int_equal(lookup(f, "user_id", "u1"), pid);
	assert_int_equal(lookup(f, "anonymous_id", "a0"), pid);
	assert_int_equal(lookup(f, "anonymous_id", "a2"), pid);
	o = NULL;
	assert_int_equal(profile_get_json(f->s, NULL, anon.profile_id, &o),
			 NERR_NOTFOUND);

	o = get(f, pid);
	assert_string_equal(str_at(o, "traits.plan"), "pro");
	assert_string_equal(str_at(o, "traits.color"), "red");
	assert_int_equal(len_at(o, "events"), 2);
	/* newest first */
	assert_string_equal(
		str_at(json_object_array_get_idx(at(o, "events"), 0), "event"), "Browse");
	assert_int_equal(len_at(o, "merged_from"), 1);
	assert_non_null(str_at(json_object_array_get_idx(at(o, "merged_from"), 0), "at"));
	json_object_put(o);

	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 2);
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 3);
}

static void test_merge_goes_into_oldest_profile(void **state)
{
	struct fx *f = *state;
	struct profile_result anon, known, r;

	anon = apply(f, "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"E\"}",
		     T0);
	known = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\"}", T0 + 1);
	assert_true(anon.profile_id < known.profile_id);
	r = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a1\"}",
		  T0 + 2);
	assert_int_equal(r.profile_id, anon.profile_id);
	assert_int_equal(r.merged, 1);
	assert_int_equal(lookup(f, "user_id", "u1"), anon.profile_id);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
}

static void test_one_event_merges_several_profiles(void **state)
{
	struct fx *f = *state;
	struct profile_result a, b, c, r;
	struct json_object *o;

	a = apply(f, "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"A\"}", T0);
	b = apply(f,
		  "{\"type\":\"identify\",\"anonymousId\":\"a2\","
		  "\"traits\":{\"email\":\"m@x.io\"}}",
		  T0 + 1);
	c = apply(f,
		  "{\"type\":\"track\",\"anonymousId\":\"a3\",\"event\":\"C\","
		  "\"context\":{\"externalIds\":[{\"id\":\"7\",\"type\":\"crm\"}]}}",
		  T0 + 2);
	r = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a3\","
		  "\"traits\":{\"email\":\"M@X.IO\"},\"context\":{\"externalIds\":"
		  "[{\"id\":\"a1\",\"type\":\"anonymous_id\"}]}}",
		  T0 + 3);
	assert_false(r.created);
	assert_int_equal(r.profile_id, a.profile_id);
	assert_int_equal(r.merged, 2);
	assert_true(
		(r.merged_ids[0] == b.profile_id && r.merged_ids[1] == c.profile_id) ||
		(r.merged_ids[0] == c.profile_id && r.merged_ids[1] == b.profile_id));
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 6);
	assert_int_equal(lookup(f, "crm", "7"), a.profile_id);
	o = get(f, a.profile_id);
	assert_int_equal(len_at(o, "merged_from"), 2);
	assert_int_equal(len_at(o, "events"), 2);
	json_object_put(o);
}

static void test_track_with_user_and_anonymous_links_them(void **state)
{
	struct fx *f = *state;
	struct profile_result r;

	apply(f, "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"E\"}", T0);
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\"}", T0 + 1);
	r = apply(f,
		  "{\"type\":\"track\",\"userId\":\"u1\",\"anonymousId\":\"a1\","
		  "\"event\":\"F\"}",
		  T0 + 2);
	assert_int_equal(r.merged, 1);
	assert_int_equal(lookup(f, "user_id", "u1"), lookup(f, "anonymous_id", "a1"));
}

static void test_alias_merges(void **state)
{
	struct fx *f = *state;
	struct profile_result anon, known, r;
	uint64_t pid;

	anon = apply(f, "{\"type\":\"page\",\"anonymousId\":\"a9\",\"name\":\"Home\"}",
		     T0);
	known = apply(f,
		      "{\"type\":\"identify\",\"userId\":\"u9\","
		      "\"traits\":{\"email\":\"u9@example.com\"}}",
		      T0 + 1);
	r = apply(f, "{\"type\":\"alias\",\"previousId\":\"a9\",\"userId\":\"u9\"}",
		  T0 + 2);
	assert_int_equal(r.merged, 1);
	pid = lookup(f, "user_id", "u9");
	assert_int_equal(pid, anon.profile_id < known.profile_id ? anon.profile_id
								 : known.profile_id);
	assert_int_equal(lookup(f, "anonymous_id", "a9"), pid);
	assert_int_equal(lookup(f, "email", "U9@example.com"), pid);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);

	/* previousId never seen: attached as an anonymous_id */
	apply(f, "{\"type\":\"alias\",\"previousId\":\"new-anon\",\"userId\":\"u9\"}",
	      T0 + 3);
	assert_int_equal(lookup(f, "anonymous_id", "new-anon"), pid);
}

static void test_two_user_ids_never_merge(void **state)
{
	struct fx *f = *state;
	struct profile_result p1, p2, r;
	struct json_object *o;

	p1 = apply(f,
		   "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"shared\","
		   "\"traits\":{\"email\":\"one@example.com\"}}",
		   T0);
	p2 = apply(f, "{\"type\":\"identify\",\"userId\":\"u2\",\"traits\":{\"k\":1}}",
		   T0 + 1);
	assert_int_not_equal(p1.profile_id, p2.profile_id);

	/* u2 logs in on u1's device: the anonymous id stays with u1 and the
	 * event goes to u2's profile. */
	r = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u2\",\"anonymousId\":\"shared\","
		  "\"traits\":{\"seen\":true}}",
		  T0 + 2);
	assert_int_equal(r.profile_id, p2.profile_id);
	assert_int_equal(r.merged, 0);
	assert_int_equal(r.identities_conflicting, 1);
	assert_int_equal(lookup(f, "anonymous_id", "shared"), p1.profile_id);
	o = get(f, p2.profile_id);
	assert_true(json_object_get_boolean(at(o, "traits.seen")));
	assert_null(at(o, "identities.anonymous_id"));
	json_object_put(o);

	/* an event without user_id whose identities point at both: no merge; the
	 * first identity's profile (anonymous_id before email) gets the event and
	 * the email stays with u2. */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u2\","
	      "\"traits\":{\"email\":\"two@example.com\"}}",
	      T0 + 4);
	r = apply(f,
		  "{\"type\":\"identify\",\"anonymousId\":\"shared\","
		  "\"traits\":{\"email\":\"Two@example.com\",\"x\":1}}",
		  T0 + 5);
	assert_int_equal(r.profile_id, p1.profile_id);
	assert_int_equal(r.merged, 0);
	assert_int_equal(r.identities_conflicting, 1);
	assert_int_equal(lookup(f, "email", "two@example.com"), p2.profile_id);
	assert_int_equal(lookup(f, "user_id", "u1"), p1.profile_id);
	assert_int_equal(lookup(f, "user_id", "u2"), p2.profile_id);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 2);

	/* alias from one user id to another does not merge either */
	r = apply(f, "{\"type\":\"alias\",\"previousId\":\"u1\",\"userId\":\"u2\"}",
		  T0 + 6);
	assert_int_equal(r.profile_id, p2.profile_id);
	assert_int_equal(r.merged, 0);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 2);

	/* a second, different user_id in externalIds is not attached */
	r = apply(f,
		  "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E\",\"context\":"
		  "{\"externalIds\":[{\"id\":\"u3\",\"type\":\"user_id\"}]}}",
		  T0 + 7);
	assert_int_equal(r.identities_conflicting, 1);
	assert_no_identity(f, "user_id", "u3");
}

static void test_newest_timestamp_wins(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *o;

	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"b\"}}",
		  T0 + 2000);
	/* an older event arriving later does not overwrite */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"a\","
	      "\"first\":1}}",
	      T0 + 1000);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "traits.plan"), "b");
	assert_int_equal(json_object_get_int(at(o, "traits.first")), 1);
	json_object_put(o);
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"c\"}}",
	      T0 + 3000);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "traits.plan"), "c");
	json_object_put(o);
	/* equal timestamps: the event applied later wins */
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"d\"}}",
	      T0 + 3000);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "traits.plan"), "d");
	json_object_put(o);
}

static void test_newest_timestamp_wins_across_merge(void **state)
{
	struct fx *f = *state;
	struct profile_result known, anon, r;
	struct json_object *o;

	known = apply(
		f,
		"{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"old\","
		"\"city\":\"Paris\"}}",
		T0 + 1000);
	anon = apply(f,
		     "{\"type\":\"identify\",\"anonymousId\":\"a1\",\"traits\":{\"plan\":"
		     "\"new\","
		     "\"city\":\"Lyon\"}}",
		     T0 + 5000);
	/* the merged-away profile has a newer plan; the survivor a newer city */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"city\":\"Nice\"}}",
	      T0 + 9000);
	/* equal timestamps on both sides: the survivor's value stays */
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"tie\":\"s\"}}",
	      T0 + 7000);
	apply(f,
	      "{\"type\":\"identify\",\"anonymousId\":\"a1\",\"traits\":{\"tie\":\"m\"}}",
	      T0 + 7000);
	r = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a1\"}",
		  T0 + 3000);
	assert_int_equal(r.profile_id, known.profile_id);
	assert_int_equal(r.merged, 1);
	(void)anon;
	o = get(f, known.profile_id);
	assert_string_equal(str_at(o, "traits.plan"), "new");
	assert_string_equal(str_at(o, "traits.city"), "Nice");
	assert_string_equal(str_at(o, "traits.tie"), "s");
	json_object_put(o);
}

static void test_null_removes_trait(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *o;

	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"pro\","
		  "\"keep\":1}}",
		  T0);
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":null}}",
	      T0 + 10);
	o = get(f, p.profile_id);
	assert_null(at(o, "traits.plan"));
	assert_non_null(at(o, "traits.keep"));
	json_object_put(o);
	/* an older event cannot bring it back */
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"x\"}}",
	      T0 + 5);
	o = get(f, p.profile_id);
	assert_null(at(o, "traits.plan"));
	json_object_put(o);
	/* a newer one can */
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"y\"}}",
	      T0 + 20);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "traits.plan"), "y");
	json_object_put(o);
}

static void test_consent_both_forms(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *o, *v = NULL;

	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"consent\":"
		  "{\"email\":\"granted\",\"sms\":{\"marketing\":\"denied\","
		  "\"transactional\":\"granted\"},\"fax\":\"granted\","
		  "\"push\":{\"marketing\":\"maybe\"}}}}",
		  T0);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "consent.email.marketing"), "granted");
	assert_string_equal(str_at(o, "consent.email.transactional"), "granted");
	assert_string_equal(str_at(o, "consent.sms.marketing"), "denied");
	assert_string_equal(str_at(o, "consent.sms.transactional"), "granted");
	assert_null(at(o, "consent.fax"));
	assert_null(at(o, "consent.push.marketing"));
	assert_null(at(o, "traits.consent"));
	assert_string_equal(str_at(o, "consent_updated_at.email.marketing"),
			    "2026-01-01T00:00:00.000Z");
	json_object_put(o);

	/* per purpose, custom purpose, then a channel-wide value covering it */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"consent\":"
	      "{\"email\":{\"Newsletter\":\"granted\",\"marketing\":\"denied\"}}}}",
	      T0 + 1000);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "consent.email.marketing"), "denied");
	assert_string_equal(str_at(o, "consent.email.transactional"), "granted");
	assert_string_equal(str_at(o, "consent.email.newsletter"), "granted");
	json_object_put(o);
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"consent\":"
	      "{\"email\":\"denied\"}}}",
	      T0 + 2000);
	assert_int_equal(profile_view_json(f->s, NULL, p.profile_id, &v), NERR_OK);
	assert_string_equal(str_at(v, "consent.email.marketing"), "denied");
	assert_string_equal(str_at(v, "consent.email.transactional"), "denied");
	assert_string_equal(str_at(v, "consent.email.newsletter"), "denied");
	assert_string_equal(str_at(v, "consent.sms.transactional"), "granted");
	json_object_put(v);
	/* an older call does not override */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"consent\":"
	      "{\"email\":\"granted\"}}}",
	      T0 + 1500);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "consent.email.marketing"), "denied");
	json_object_put(o);
}

static void test_email_and_phone_normalization(void **state)
{
	struct fx *f = *state;
	struct profile_result p, q;
	uint64_t pid = 0;
	struct json_object *o;

	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":"
		  "\"\\tMiXed.Case@Example.Org  \",\"phone\":\"+1 (415) 555-26.71\"}}",
		  T0);
	assert_int_equal(lookup(f, "email", "mixed.case@example.org"), p.profile_id);
	assert_int_equal(lookup(f, "email", "  MIXED.case@EXAMPLE.org"), p.profile_id);
	assert_int_equal(lookup(f, "phone", "+14155552671"), p.profile_id);
	assert_int_equal(lookup(f, "phone", "+1-415-555-2671"), p.profile_id);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "addresses.phone"), "+14155552671");
	assert_string_equal(json_object_get_string(json_object_array_get_idx(
				    at(o, "identities.phone"), 0)),
			    "+14155552671");
	json_object_put(o);

	/* invalid phones and emails are not identities (they stay traits) */
	q = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u2\",\"traits\":{\"email\":"
		  "\"nobody\","
		  "\"phone\":\"415 555 2671\"}}",
		  T0);
	o = get(f, q.profile_id);
	assert_null(at(o, "identities.phone"));
	assert_null(at(o, "identities.email"));
	assert_string_equal(str_at(o, "traits.phone"), "415 555 2671");
	json_object_put(o);
	assert_int_equal(profile_lookup(f->s, NULL, "phone", "415 555 2671", &pid),
			 NERR_INVAL);
	assert_int_equal(profile_lookup(f->s, NULL, "phone", "+1234567", &pid),
			 NERR_INVAL); /* 7 digits */
	assert_int_equal(profile_lookup(f->s, NULL, "phone", "+1234567890123456", &pid),
			 NERR_INVAL); /* 16 digits */
	assert_int_equal(profile_lookup(f->s, NULL, "phone", "+44 20 7946 0958x", &pid),
			 NERR_INVAL);
	assert_int_equal(profile_lookup(f->s, NULL, "phone", "+12345678", &pid),
			 NERR_NOTFOUND); /* 8 digits: valid, absent */
	assert_int_equal(profile_lookup(f->s, NULL, "email", "a@", &pid), NERR_INVAL);
	assert_int_equal(profile_lookup(f->s, NULL, "email", "a b@c.d", &pid),
			 NERR_INVAL);
	assert_int_equal(profile_lookup(f->s, NULL, "bad ns", "x", &pid), NERR_INVAL);
}

static void test_custom_namespaces(void **state)
{
	struct fx *f = *state;
	static const char *const id_traits[] = {"crm_id", NULL};
	struct profile_result p, r;
	struct json_object *o;

	f->cfg.identity_traits = id_traits;
	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"crm_id\":4711},"
		  "\"context\":{\"externalIds\":[{\"id\":\"abc\",\"type\":\"Shopify_Id\","
		  "\"collection\":\"users\"},{\"id\":\"X@Y.COM\",\"type\":\"email\"}]}}",
		  T0);
	assert_int_equal(lookup(f, "crm_id", "4711"), p.profile_id);
	assert_int_equal(lookup(f, "shopify_id", "abc"), p.profile_id);
	assert_int_equal(lookup(f, "email", "x@y.com"), p.profile_id);
	o = get(f, p.profile_id);
	assert_int_equal(len_at(o, "identities.shopify_id"), 1);
	assert_int_equal(len_at(o, "identities.crm_id"), 1);
	json_object_put(o);

	/* a later anonymous event carrying only the custom id finds the profile */
	r = apply(
		f,
		"{\"type\":\"track\",\"anonymousId\":\"a5\",\"event\":\"E\",\"context\":"
		"{\"externalIds\":[{\"id\":\"abc\",\"type\":\"shopify_id\"}]}}",
		T0 + 1);
	assert_int_equal(r.profile_id, p.profile_id);
	assert_false(r.created);
	assert_int_equal(lookup(f, "anonymous_id", "a5"), p.profile_id);
}

static void test_identity_cap(void **state)
{
	struct fx *f = *state;
	struct profile_result p, r, q;
	char ev[256];
	uint64_t pid;

	f->cfg.max_identities = 3;
	p = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a1\"}",
		  T0);
	r = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a2\","
		  "\"traits\":{\"email\":\"e@x.io\"}}",
		  T0 + 1);
	assert_int_equal(r.identities_rejected, 1); /* email after a2 */
	assert_int_equal(lookup(f, "anonymous_id", "a2"), p.profile_id);
	assert_int_equal(profile_lookup(f->s, NULL, "email", "e@x.io", &pid),
			 NERR_NOTFOUND);
	for (int i = 0; i < 5; i++) {
		snprintf(ev, sizeof(ev),
			 "{\"type\":\"track\",\"userId\":\"u1\",\"anonymousId\":\"z%d\","
			 "\"event\":\"E\"}",
			 i);
		r = apply(f, ev, T0 + 10 + i);
		assert_int_equal(r.profile_id, p.profile_id);
		assert_int_equal(r.identities_rejected, 1);
	}
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 3);

	/* a merge that would exceed the cap drops the extra identities */
	q = apply(f,
		  "{\"type\":\"identify\",\"anonymousId\":\"b1\",\"traits\":"
		  "{\"email\":\"b@x.io\"}}",
		  T0 + 20);
	assert_int_not_equal(q.profile_id, p.profile_id);
	r = apply(f, "{\"type\":\"alias\",\"previousId\":\"b1\",\"userId\":\"u1\"}",
		  T0 + 21);
	assert_int_equal(r.merged, 1);
	assert_int_equal(r.identities_rejected, 2);
	{
		struct profile_stats st = {0};

		profile_stats_add(&st, &q);
		profile_stats_add(&st, &r);
		assert_int_equal(st.profiles_created, 1);
		assert_int_equal(st.merges, 1);
		assert_int_equal(st.identities_rejected, 2);
	}
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 3);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	assert_int_equal(profile_lookup(f->s, NULL, "anonymous_id", "b1", &pid),
			 NERR_NOTFOUND);
}

static void test_history_count_cap(void **state)
{
	struct fx *f = *state;
	struct profile_result r = {0};
	struct json_object *o, *first, *last;
	char ev[128];

	f->cfg.history_max_events = 5;
	for (int i = 0; i < 8; i++) {
		snprintf(ev, sizeof(ev),
			 "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E%d\"}", i);
		r = apply(f, ev, T0 + i * 1000);
	}
	/* an out-of-order event older than all kept ones is not kept */
	apply(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Old\"}", T0 - 5000);
	/* identify is not history */
	apply(f, "{\"type\":\"identify\",\"userId\":\"u1\"}", T0 + 99000);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 5);
	o = get(f, r.profile_id);
	assert_int_equal(len_at(o, "events"), 5);
	first = json_object_array_get_idx(at(o, "events"), 0);
	last = json_object_array_get_idx(at(o, "events"), 4);
	assert_string_equal(str_at(first, "event"), "E7");
	assert_string_equal(str_at(last, "event"), "E3");
	json_object_put(o);
}

static void test_history_age_cap(void **state)
{
	struct fx *f = *state;
	struct profile_result r;
	struct json_object *o;

	f->cfg.history_max_age_ms = 10 * DAY_MS;
	apply_at(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"A\"}", T0, T0);
	apply_at(f, "{\"type\":\"screen\",\"userId\":\"u1\",\"name\":\"B\"}",
		 T0 + 5 * DAY_MS, T0 + 5 * DAY_MS);
	commit(f);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 2);
	/* 12 days later: A is older than 10 days and dropped on insert */
	r = apply_at(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"C\"}",
		     T0 + 12 * DAY_MS, T0 + 12 * DAY_MS);
	/* an event already too old on arrival is not stored */
	apply_at(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Stale\"}",
		 T0 + DAY_MS, T0 + 12 * DAY_MS);
	commit(f);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 2);
	o = get(f, r.profile_id);
	assert_string_equal(
		str_at(json_object_array_get_idx(at(o, "events"), 0), "event"), "C");
	assert_string_equal(str_at(json_object_array_get_idx(at(o, "events"), 1), "name"),
			    "B");
	json_object_put(o);
	/* the window CEL's event_count() reads */
	assert_int_equal(
		profile_history_json(f->s, NULL, r.profile_id, T0 + 6 * DAY_MS, &o),
		NERR_OK);
	assert_int_equal(json_object_array_length(o), 1);
	assert_string_equal(str_at(json_object_array_get_idx(o, 0), "event"), "C");
	json_object_put(o);
	assert_int_equal(profile_history_json(f->s, NULL, r.profile_id, INT64_MIN, &o),
			 NERR_OK);
	assert_int_equal(json_object_array_length(o), 2);
	json_object_put(o);
}

static void test_erase_removes_everything(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *o = NULL;
	uint64_t pid;

	apply(f, "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"E\"}", T0);
	p = apply(f,
		  "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"a1\","
		  "\"traits\":{\"email\":\"a@b.co\",\"phone\":\"+33 6 12 34 56 78\"}}",
		  T0 + 1);
	apply(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"F\"}", T0 + 2);
	/* someone else stays */
	apply(f, "{\"type\":\"track\",\"userId\":\"other\",\"event\":\"G\"}", T0 + 3);
	assert_int_equal(profile_erase(f->b, p.profile_id), NERR_OK);
	commit(f);

	assert_no_identity(f, "user_id", "u1");
	assert_no_identity(f, "anonymous_id", "a1");
	assert_no_identity(f, "email", "a@b.co");
	assert_no_identity(f, "phone", "+33612345678");
	assert_int_equal(profile_get_json(f->s, NULL, p.profile_id, &o), NERR_NOTFOUND);
	assert_int_equal(profile_view_json(f->s, NULL, p.profile_id, &o), NERR_NOTFOUND);
	assert_int_equal(profile_erase(f->b, p.profile_id), NERR_NOTFOUND);

	/* only the other person's records are left */
	pid = lookup(f, "user_id", "other");
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 1);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 1);
	{
		struct store_iter *it = store_iter_new(f->s, NULL, STORE_CF_EVENTS);
		size_t klen = 0;
		const char *k;

		store_iter_seek_first(it);
		assert_true(store_iter_valid(it));
		k = store_iter_key(it, &klen);
		assert_int_equal(klen, 16);
		assert_int_equal(store_get_u64(k), 4); /* G's seq */
		assert_int_equal(store_get_u64(k + 8), pid);
		store_iter_free(it);
	}
}

static void test_read_your_writes_in_one_batch(void **state)
{
	struct fx *f = *state;
	struct profile_result r1, r2, r3;
	uint64_t pid = 0;
	struct json_object *o = NULL;

	r1 = apply_at(f, "{\"type\":\"track\",\"anonymousId\":\"n1\",\"event\":\"A\"}",
		      T0, T0);
	r2 = apply_at(f,
		      "{\"type\":\"identify\",\"anonymousId\":\"n1\",\"userId\":\"nu\","
		      "\"traits\":{\"k\":\"v\"}}",
		      T0 + 1, T0 + 1);
	r3 = apply_at(f, "{\"type\":\"track\",\"userId\":\"nu\",\"event\":\"B\"}", T0 + 2,
		      T0 + 2);
	assert_true(r1.created);
	assert_false(r2.created);
	assert_int_equal(r2.profile_id, r1.profile_id);
	assert_int_equal(r3.profile_id, r1.profile_id);
	/* visible through the batch, not yet committed */
	assert_int_equal(profile_lookup(f->s, f->b, "user_id", "nu", &pid), NERR_OK);
	assert_int_equal(pid, r1.profile_id);
	assert_int_equal(profile_lookup(f->s, NULL, "user_id", "nu", &pid),
			 NERR_NOTFOUND);
	assert_int_equal(profile_get_json(f->s, f->b, pid, &o), NERR_OK);
	assert_int_equal(len_at(o, "events"), 2);
	json_object_put(o);
	commit(f);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	/* ids keep counting from the committed counter */
	r1 = apply(f, "{\"type\":\"track\",\"anonymousId\":\"n2\",\"event\":\"A\"}", T0);
	assert_int_equal(r1.profile_id, pid + 1);

	/* merge, erase and re-create within one uncommitted batch */
	r2 = apply_at(f, "{\"type\":\"alias\",\"previousId\":\"n2\",\"userId\":\"nu\"}",
		      T0 + 3, T0 + 3);
	assert_int_equal(r2.merged, 1);
	assert_int_equal(profile_get_json(f->s, f->b, r1.profile_id, &o), NERR_NOTFOUND);
	assert_int_equal(profile_erase(f->b, pid), NERR_OK);
	assert_int_equal(profile_lookup(f->s, f->b, "anonymous_id", "n2", &pid),
			 NERR_NOTFOUND);
	r3 = apply_at(f, "{\"type\":\"track\",\"userId\":\"nu\",\"event\":\"Z\"}", T0 + 4,
		      T0 + 4);
	assert_true(r3.created);
	assert_int_equal(r3.profile_id, r1.profile_id + 1);
	commit(f);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 1);
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 1);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 1);
}

static void test_view_shape(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *v = NULL;

	p = apply(
		f,
		"{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"name\":\"Ada\"},"
		"\"context\":{\"timezone\":\"Not/AZone\",\"device\":{\"token\":\"tok1\","
		"\"type\":\"ios\"}}}",
		T0);
	assert_int_equal(profile_view_json(f->s, NULL, p.profile_id, &v), NERR_OK);
	assert_true(json_object_is_type(at(v, "id"), json_type_string));
	assert_string_equal(str_at(v, "traits.name"), "Ada");
	assert_int_equal(len_at(v, "identities.user_id"), 1);
	assert_true(json_object_is_type(at(v, "audiences"), json_type_array));
	assert_true(json_object_is_type(at(v, "computed"), json_type_object));
	assert_true(json_object_is_type(at(v, "consent"), json_type_object));
	assert_true(json_object_object_get_ex(v, "timezone", NULL));
	assert_null(at(v, "timezone")); /* invalid zone ignored */
	json_object_put(v);

	v = get(f, p.profile_id);
	assert_int_equal(len_at(v, "addresses.push"), 1);
	assert_string_equal(
		str_at(json_object_array_get_idx(at(v, "addresses.push"), 0), "token"),
		"tok1");
	assert_string_equal(
		str_at(json_object_array_get_idx(at(v, "addresses.push"), 0), "type"),
		"ios");
	json_object_put(v);
}

static struct profile_result apply_tz(struct fx *f, const char *tz, int64_t ts)
{
	char ev[160];

	snprintf(ev, sizeof(ev),
		 "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E\","
		 "\"context\":{\"timezone\":\"%s\"}}",
		 tz);
	return apply(f, ev, ts);
}

static void test_timezone_valid_newest_wins(void **state)
{
	struct fx *f = *state;
	struct profile_result p = apply_tz(f, "Europe/Paris", T0);
	struct json_object *o;

	apply_tz(f, "America/New_York", T0 - 1000); /* older */
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "timezone"), "Europe/Paris");
	json_object_put(o);
	apply_tz(f, "Asia/Tokyo", T0 + 1000);
	apply_tz(f, "Mars/Olympus_Mons", T0 + 2000); /* not IANA: ignored */
	apply_tz(f, "GMT+05:00", T0 + 3000);	     /* custom, not a zone name */
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "timezone"), "Asia/Tokyo");
	json_object_put(o);
	/* the same zone again refreshes its time: an older change no longer wins */
	apply_tz(f, "Asia/Tokyo", T0 + 5000);
	apply_tz(f, "Europe/Paris", T0 + 4000);
	o = get(f, p.profile_id);
	assert_string_equal(str_at(o, "timezone"), "Asia/Tokyo");
	json_object_put(o);
}

static void test_check_clean_store(void **state)
{
	struct fx *f = *state;
	struct buf problems;
	uint64_t seen = 0;

	apply(f, "{\"type\":\"track\",\"anonymousId\":\"a1\",\"event\":\"E\"}", T0);
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"x@y.z\"}"
	      "}",
	      T0 + 1);
	apply(f, "{\"type\":\"alias\",\"previousId\":\"a1\",\"userId\":\"u1\"}", T0 + 2);
	apply(f, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"E\"}", T0 + 3);
	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_OK);
	assert_int_equal(seen, 2);
	assert_int_equal(problems.len, 0);
	buf_fini(&problems);
}

static void test_check_finds_corruption(void **state)
{
	struct fx *f = *state;
	struct profile_result p, q;
	struct buf problems;
	uint64_t seen = 0;
	unsigned char v[8], ek[24], pk[8];

	p = apply(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E\"}", T0);
	q = apply(f, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"E\"}", T0);
	/* an identity pointing at a missing profile */
	store_put_u64(v, 999);
	store_batch_put(f->b, STORE_CF_IDENTITIES, "email:ghost@x.io", 16, v, 8);
	/* an identity pointing at a profile that does not list it */
	store_put_u64(v, q.profile_id);
	store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u1", 10, v, 8);
	/* a history record of no profile */
	store_put_u64(ek, 777);
	store_put_u64(ek + 8, 1);
	store_put_u64(ek + 16, 1);
	store_batch_put(f->b, STORE_CF_EVENTS, ek, 24, "{}", 2);
	/* an unreadable profile record */
	store_put_u64(pk, 555);
	store_batch_put(f->b, STORE_CF_PROFILES, pk, 8, "{not json", 9);
	/* a record of the wrong shape, reached through an identity */
	store_put_u64(pk, 556);
	store_batch_put(f->b, STORE_CF_PROFILES, pk, 8, "{\"identities\":\"x\"}", 18);
	store_put_u64(v, 556);
	store_batch_put(f->b, STORE_CF_IDENTITIES, "anonymous_id:bad", 16, v, 8);
	/* a history index of no profile, and a profile with none */
	store_put_u64(pk, 888);
	store_batch_put(f->b, STORE_CF_HISTORY, pk, 8, "H00000000", 9);
	store_put_u64(pk, 557);
	store_batch_put(f->b, STORE_CF_PROFILES, pk, 8,
			"{\"v\":1,\"id\":557,\"identities\":[]}", 32);
	/* u2's profile loses its identity record and its history record */
	store_batch_delete(f->b, STORE_CF_IDENTITIES, "user_id:u2", 10);
	store_put_u64(ek, 2);
	store_put_u64(ek + 8, q.profile_id);
	store_batch_delete(f->b, STORE_CF_EVENTS, ek, 16);
	commit(f);
	{
		struct json_object *ev = json_tokener_parse(
			"{\"type\":\"track\",\"anonymousId\":\"bad\"}");
		struct profile_result res;
		struct nerr_msg msg;

		assert_int_equal(
			profile_apply_event(f->b, &f->cfg, ev, 99, T0, T0, &res, &msg),
			NERR_CORRUPT);
		json_object_put(ev);
		store_batch_clear(f->b);
	}

	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_CORRUPT);
	assert_int_equal(seen, 5);
	assert_non_null(strstr(buf_str(&problems), "email:ghost@x.io"));
	assert_non_null(strstr(buf_str(&problems), "profile 556: unreadable"));
	assert_non_null(
		strstr(buf_str(&problems), "identity user_id:u2 has no identity"));
	assert_non_null(strstr(buf_str(&problems), "history record"));
	assert_non_null(strstr(buf_str(&problems), "identity user_id:u1: profile"));
	assert_non_null(strstr(buf_str(&problems), "identity user_id:u1 points at"));
	assert_non_null(strstr(buf_str(&problems), "event (777"));
	assert_non_null(strstr(buf_str(&problems), "profile 555: unreadable"));
	assert_non_null(
		strstr(buf_str(&problems), "history index 888: profile does not exist"));
	assert_non_null(strstr(buf_str(&problems), "profile 557: history index missing"));
	(void)p;
	buf_fini(&problems);
}

/* The stored record, as text (caller frees). */
static char *raw_record(struct fx *f, uint64_t pid)
{
	unsigned char k[8];
	char *v = NULL;
	size_t len = 0;

	store_put_u64(k, pid);
	assert_int_equal(store_get(f->s, STORE_CF_PROFILES, k, 8, &v, &len), NERR_OK);
	return v;
}

/* A profile's history index, decoded: its magic ('E': events under (seq, id)
 * keys; 'H': under (id, time, seq) keys), update time and up to 8 entries. */
struct hrec {
	char magic;
	int64_t updated_ms;
	size_t n;
	int64_t t[8];
	uint64_t seq[8];
};

static struct hrec raw_history(struct fx *f, uint64_t pid)
{
	unsigned char k[8];
	char *v = NULL;
	size_t len = 0;
	struct hrec h = {0};

	store_put_u64(k, pid);
	assert_int_equal(store_get(f->s, STORE_CF_HISTORY, k, 8, &v, &len), NERR_OK);
	assert_true(len >= 9 && (len - 9) % 16 == 0 && (v[0] == 'E' || v[0] == 'H'));
	h.magic = v[0];
	h.updated_ms = (int64_t)store_get_u64(v + 1);
	h.n = (len - 9) / 16;
	assert_true(h.n <= 8);
	for (size_t i = 0; i < h.n; i++) {
		h.t[i] = (int64_t)store_get_u64(v + 9 + 16 * i);
		h.seq[i] = store_get_u64(v + 9 + 16 * i + 8);
	}
	free(v);
	return h;
}

/* Stores a history index for pid by hand (magic and entries as given). */
static void put_history(struct fx *f, uint64_t pid, char magic, int64_t updated_ms,
			size_t n, const int64_t *t, const uint64_t *seq)
{
	unsigned char k[8], v[9 + 16 * 8];

	assert_true(n <= 8);
	v[0] = magic;
	store_put_u64(v + 1, (uint64_t)updated_ms);
	for (size_t i = 0; i < n; i++) {
		store_put_u64(v + 9 + 16 * i, (uint64_t)t[i]);
		store_put_u64(v + 9 + 16 * i + 8, seq[i]);
	}
	store_put_u64(k, pid);
	store_batch_put(f->b, STORE_CF_HISTORY, k, 8, v, 9 + 16 * n);
}

/*
 * The profile record is json-c's own print of the head, without the update
 * time and the history: those are the history index's, in binary. Events
 * that change only the history leave the profile record as it was.
 */
static void test_records_as_stored(void **state)
{
	struct fx *f = *state;
	struct profile_result r = {0};
	struct json_object *o;
	struct hrec h;
	char *rec, *rec2;

	f->cfg.history_max_age_ms = 0; /* keep every event time below */
	apply(f,
	      "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":"
	      "\"A@x.io\",\"n\":[1,{\"history\":[[1,2]]}]}}",
	      T0);
	rec = raw_record(f, lookup(f, "user_id", "u1"));
	o = json_tokener_parse(rec);
	assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			    rec);
	assert_null(at(o, "history"));
	assert_null(at(o, "updated_ms"));
	json_object_put(o);
	h = raw_history(f, lookup(f, "user_id", "u1"));
	assert_int_equal(h.magic, 'E');
	assert_int_equal(h.n, 0);
	assert_int_equal(h.updated_ms, T0 + 1000);
	for (int i = 0; i < 3; i++)
		r = apply(f, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E\"}",
			  i == 1 ? -5 : T0 * 1000 * (i + 1));
	rec2 = raw_record(f, r.profile_id);
	assert_string_equal(rec2, rec);
	free(rec);
	free(rec2);
	h = raw_history(f, r.profile_id);
	assert_int_equal(h.n, 3);
	assert_int_equal(h.t[0], 0); /* a negative event time is kept as 0 */
	assert_int_equal(h.t[1], T0 * 1000);
	assert_int_equal(h.t[2], T0 * 3000);
	assert_int_equal(h.updated_ms, T0 * 3000 + 1000);
	o = get(f, r.profile_id);
	assert_int_equal(len_at(o, "events"), 3);
	assert_string_equal(str_at(o, "traits.email"), "A@x.io");
	json_object_put(o);
}

/*
 * An event that adds only to the history does not parse the head, nor write
 * it back (the spaces below are not json-c's); one that changes the head (a
 * trait, a new identity, a time zone) prints it again. Either way the profile
 * reads back the same, with the new update time.
 */
static void test_history_only_event_keeps_the_stored_head(void **state)
{
	struct fx *f = *state;
	static const char head[] =
		"{\"v\":1, \"id\":7, \"created_ms\":1, \"identities\":[\"user_id:u9\", "
		"\"anonymous_id:a9\"], \"traits\":{\"plan\":{\"v\":\"pro\",\"t\":1}}}";
	static const char *const changing[] = {
		"{\"type\":\"identify\",\"userId\":\"u9\",\"traits\":{\"n\":1}}",
		"{\"type\":\"track\",\"userId\":\"u9\",\"anonymousId\":\"a10\","
		"\"event\":\"E\"}",
		"{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\",\"context\":"
		"{\"timezone\":\"Europe/Paris\"}}",
		"{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\",\"context\":"
		"{\"traits\":{\"email\":\"a@b.io\"}}}",
	};
	unsigned char k[8], v[8];
	char *got;
	struct json_object *o;
	struct hrec h;

	f->cfg.history_max_age_ms = 0;
	store_put_u64(k, 7);
	store_put_u64(v, 7);
	for (size_t i = 0; i <= sizeof(changing) / sizeof(changing[0]); i++) {
		store_batch_put(f->b, STORE_CF_PROFILES, k, 8, head, strlen(head));
		put_history(f, 7, i % 2 ? 'H' : 'E', 5, 0, NULL, NULL);
		store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u9", 10, v, 8);
		store_batch_put(f->b, STORE_CF_IDENTITIES, "anonymous_id:a9", 15, v, 8);
		commit(f);
		/* Both of its identities, one anonymous: still no head needed. */
		apply_at(f,
			 i == 0 ? "{\"type\":\"track\",\"userId\":\"u9\",\"anonymousId\":"
				  "\"a9\",\"event\":\"E\"}"
				: changing[i - 1],
			 T0, T0 + 7);
		commit(f);
		got = raw_record(f, 7);
		if (i == 0)
			assert_string_equal(got, head);
		else
			assert_null(strstr(got, ", ")); /* printed by json-c */
		free(got);
		h = raw_history(f, 7);
		assert_int_equal(h.magic, 'E'); /* written: new keys from now on */
		assert_int_equal(h.updated_ms, T0 + 7);
		assert_int_equal(h.n, i == 1 ? 0 : 1); /* an identify has none */
		o = get(f, 7);
		assert_string_equal(str_at(o, "traits.plan"), "pro");
		assert_string_equal(str_at(o, "updated_at"), "2026-01-01T00:00:00.007Z");
		assert_string_equal(str_at(o, "created_at"), "1970-01-01T00:00:00.001Z");
		assert_int_equal(len_at(o, "identities.user_id"), 1);
		json_object_put(o);
		assert_int_equal(profile_erase(f->b, 7), NERR_OK);
		commit(f);
		assert_int_equal(count_cf(f, STORE_CF_HISTORY), 0);
	}
}

/* Records written before the history index existed hold the history and
 * the update time themselves, in any member order: they load like the others,
 * and their next event moves both to a history index. */
static void test_record_layouts_load_alike(void **state)
{
	struct fx *f = *state;
	static const char *const recs[] = {
		"{\"history\":[[1767225600000,1],[1767225601000,2]],\"v\":1,\"id\":7,"
		"\"created_ms\":1,\"updated_ms\":1,\"identities\":[\"user_id:u9\"],"
		"\"traits\":{}}",
		"{\"v\":1,\"id\":7,\"created_ms\":1,\"updated_ms\":1,"
		"\"identities\":[\"user_id:u9\"],\"traits\":{\"x\":{\"v\":{\"history\":"
		"[[5,5]]},\"t\":1}},\"history\":[ [1767225600000,1], "
		"[1767225601000,2] ] }",
		"{\"v\":1,\"id\":7,\"created_ms\":1,\"updated_ms\":1,"
		"\"identities\":[\"user_id:u9\"],\"traits\":{},\"history\":"
		"[[1767225601000,2],[1767225600000,1]]}",
		"{\"v\":1,\"id\":7,\"created_ms\":1,\"updated_ms\":1,"
		"\"identities\":[\"user_id:u9\"],\"traits\":{},\"history\":"
		"[[1767225600000,1],[1767225601000,2]],\"merged_from\":[]}",
	};

	for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
		unsigned char k[8], v[8], ek[24];
		struct profile_result r;
		struct json_object *o;
		struct hrec h;
		char *rec;

		store_put_u64(k, 7);
		store_batch_put(f->b, STORE_CF_PROFILES, k, 8, recs[i], strlen(recs[i]));
		store_put_u64(v, 7);
		store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u9", 10, v, 8);
		for (uint64_t s = 1; s <= 2; s++) {
			store_put_u64(ek, 7);
			store_put_u64(ek + 8, (uint64_t)(T0 + (int64_t)(s - 1) * 1000));
			store_put_u64(ek + 16, s);
			store_batch_put(f->b, STORE_CF_EVENTS, ek, 24, "{}", 2);
		}
		commit(f);
		o = get(f, 7);
		assert_int_equal(len_at(o, "events"), 2);
		assert_string_equal(str_at(o, "updated_at"), "1970-01-01T00:00:00.001Z");
		json_object_put(o);
		f->seq = 2;
		r = apply(f, "{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\"}",
			  T0 + 500);
		assert_int_equal(r.profile_id, 7);
		rec = raw_record(f, 7);
		o = json_tokener_parse(rec);
		assert_string_equal(
			json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), rec);
		assert_null(at(o, "history"));
		assert_null(at(o, "updated_ms"));
		json_object_put(o);
		free(rec);
		h = raw_history(f, 7);
		assert_int_equal(h.magic, 'E');
		assert_int_equal(keys_of_len(f, 24), 0); /* all moved */
		assert_int_equal(keys_of_len(f, 16), 3);
		assert_int_equal(h.n, 3);
		assert_int_equal(h.updated_ms, T0 + 1500);
		assert_int_equal(h.seq[0], 1);
		assert_int_equal(h.seq[1], 3);
		assert_int_equal(h.seq[2], 2);
		o = get(f, 7);
		assert_int_equal(len_at(o, "events"), 3);
		json_object_put(o);
		/* the next layout starts over */
		assert_int_equal(profile_erase(f->b, 7), NERR_OK);
		commit(f);
		assert_int_equal(count_cf(f, STORE_CF_EVENTS), 0);
	}
}

/* A legacy profile merged with a new one, beyond the count cap: one history
 * index remains, ascending, the oldest entries dropped. */
static void test_merge_of_a_legacy_profile_keeps_the_caps(void **state)
{
	struct fx *f = *state;
	struct buf problems;
	uint64_t seen = 0;
	struct hrec h;
	unsigned char k[8], v[8], ek[24];
	/* profile 1: legacy (lower id -> survivor when merged) */
	static const char legacy[] =
		"{\"v\":1,\"id\":1,\"created_ms\":1,\"updated_ms\":1,"
		"\"identities\":[\"anonymous_id:a1\"],\"traits\":{},\"history\":"
		"[[1767225600004,4],[1767225600002,2]]}";

	f->cfg.history_max_age_ms = 0;
	f->cfg.history_max_events = 5;
	store_put_u64(k, 1);
	store_batch_put(f->b, STORE_CF_PROFILES, k, 8, legacy, strlen(legacy));
	store_put_u64(v, 1);
	store_batch_put(f->b, STORE_CF_IDENTITIES, "anonymous_id:a1", 15, v, 8);
	for (uint64_t s = 2; s <= 4; s += 2) {
		store_put_u64(ek, 1);
		store_put_u64(ek + 8, (uint64_t)(T0 + (int64_t)s));
		store_put_u64(ek + 16, s);
		store_batch_put(f->b, STORE_CF_EVENTS, ek, 24, "{}", 2);
	}
	store_put_u64(v, 2);
	store_batch_put(f->b, STORE_CF_META, "profile.next_id", 15, v, 8);
	commit(f);
	f->seq = 10;
	/* profile 2: new format, events at T0+1, T0+3, T0+5 */
	apply(f, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"E\"}", T0 + 1);
	apply(f, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"E\"}", T0 + 3);
	apply(f, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"E\"}", T0 + 5);
	assert_int_equal(lookup(f, "user_id", "u2"), 2);
	/* links them: merge 2 into legacy 1, plus the event: 2+3+1 = 6 > cap 5 */
	apply(f,
	      "{\"type\":\"track\",\"userId\":\"u2\",\"anonymousId\":\"a1\","
	      "\"event\":\"E\"}",
	      T0 + 6);
	assert_int_equal(lookup(f, "user_id", "u2"), 1);
	h = raw_history(f, 1);
	assert_int_equal(h.n, 5);
	for (size_t i = 1; i < h.n; i++)
		assert_true(h.t[i - 1] < h.t[i]);
	assert_int_equal(h.t[0], T0 + 2); /* T0+1 dropped */
	assert_int_equal(h.magic, 'E');
	assert_int_equal(count_cf(f, STORE_CF_HISTORY), 1);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 5);
	assert_int_equal(keys_of_len(f, 16), 5);
	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_OK);
	buf_fini(&problems);
}

/* A legacy record that lists one event twice is read, and rewritten, with
 * it once (an index with a repeat would be unreadable). */
static void test_legacy_repeated_history_key_is_kept_once(void **state)
{
	struct fx *f = *state;
	static const char rec[] = "{\"v\":1,\"id\":7,\"created_ms\":1,\"updated_ms\":1,"
				  "\"identities\":[\"user_id:u9\"],\"traits\":{},"
				  "\"history\":[[1767225600000,1],[1767225600000,1]]}";
	unsigned char k[8], v[8], ek[24];
	struct json_object *o;
	struct hrec h;

	f->cfg.history_max_age_ms = 0;
	store_put_u64(k, 7);
	store_batch_put(f->b, STORE_CF_PROFILES, k, 8, rec, strlen(rec));
	store_put_u64(v, 7);
	store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u9", 10, v, 8);
	store_put_u64(ek, 7);
	store_put_u64(ek + 8, (uint64_t)T0);
	store_put_u64(ek + 16, 1);
	store_batch_put(f->b, STORE_CF_EVENTS, ek, 24, "{}", 2);
	commit(f);
	f->seq = 5;
	apply(f, "{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\"}", T0 + 5);
	h = raw_history(f, 7);
	assert_int_equal(h.n, 2);
	o = get(f, 7);
	assert_int_equal(len_at(o, "events"), 2);
	json_object_put(o);
}

/*
 * Stores by hand a profile as written before (seq, id) keys: head, user_id
 * identity, an 'H' history index and its n records under (id, time, seq)
 * keys, the event named names[i]; the id counter past pid. Committed.
 */
static void put_old_profile(struct fx *f, uint64_t pid, const char *uid, size_t n,
			    const int64_t *t, const uint64_t *seq,
			    const char *const *names)
{
	unsigned char k[8], v[8], ek[24];
	char head[256], ikey[64], ev[128];
	int hl, il, el;

	hl = snprintf(head, sizeof(head),
		      "{\"v\":1, \"id\":%" PRIu64 ",\"created_ms\":1,\"identities\":"
		      "[\"user_id:%s\"],\"traits\":{}}",
		      pid, uid);
	store_put_u64(k, pid);
	store_batch_put(f->b, STORE_CF_PROFILES, k, 8, head, (size_t)hl);
	il = snprintf(ikey, sizeof(ikey), "user_id:%s", uid);
	store_put_u64(v, pid);
	store_batch_put(f->b, STORE_CF_IDENTITIES, ikey, (size_t)il, v, 8);
	put_history(f, pid, 'H', 1, n, t, seq);
	for (size_t i = 0; i < n; i++) {
		store_put_u64(ek, pid);
		store_put_u64(ek + 8, (uint64_t)t[i]);
		store_put_u64(ek + 16, seq[i]);
		el = snprintf(ev, sizeof(ev),
			      "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\"}",
			      uid, names[i]);
		store_batch_put(f->b, STORE_CF_EVENTS, ek, 24, ev, (size_t)el);
	}
	store_put_u64(v, pid + 1);
	store_batch_put(f->b, STORE_CF_META, "profile.next_id", 15, v, 8);
	commit(f);
}

/* The names of the profile's events, newest first, comma-separated. */
static void event_names(struct fx *f, uint64_t pid, char *out, size_t cap)
{
	struct json_object *o = get(f, pid), *evs = at(o, "events");
	size_t used = 0;

	out[0] = 0;
	for (size_t i = 0; evs && i < json_object_array_length(evs); i++) {
		const char *n = str_at(json_object_array_get_idx(evs, i), "event");

		used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "",
					 n ? n : "?");
		assert_true(used < cap);
	}
	json_object_put(o);
}

static void assert_check_clean(struct fx *f)
{
	struct buf problems;
	uint64_t seen = 0;

	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_OK);
	assert_string_equal(buf_str(&problems), "");
	buf_fini(&problems);
}

/* New events are stored under (seq, id): ascending in the order applied,
 * whichever profile they belong to, and read back through the history. */
static void test_new_events_are_keyed_by_seq(void **state)
{
	struct fx *f = *state;
	struct profile_result a, b;
	struct profile_hkey *keys = NULL;
	struct json_object *ev = NULL;
	struct store_iter *it;
	uint64_t want = 1;
	size_t n = 0, klen = 0;
	char *v;

	f->cfg.history_max_age_ms = 0;
	a = apply(f, "{\"type\":\"track\",\"userId\":\"ua\",\"event\":\"A1\"}", T0 + 9);
	b = apply(f, "{\"type\":\"track\",\"userId\":\"ub\",\"event\":\"B1\"}", T0);
	apply(f, "{\"type\":\"track\",\"userId\":\"ua\",\"event\":\"A2\"}", T0 + 5);
	apply(f, "{\"type\":\"track\",\"userId\":\"ub\",\"event\":\"B2\"}", T0 + 1);
	assert_int_not_equal(a.profile_id, b.profile_id);
	assert_int_equal(raw_history(f, a.profile_id).magic, 'E');
	it = store_iter_new(f->s, NULL, STORE_CF_EVENTS);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		const char *k = store_iter_key(it, &klen);

		assert_int_equal(klen, 16);
		assert_int_equal(store_get_u64(k), want);
		assert_int_equal(store_get_u64(k + 8),
				 want % 2 ? a.profile_id : b.profile_id);
		want++;
	}
	store_iter_free(it);
	assert_int_equal(want, 5);
	v = event_at(f, false, a.profile_id, 0, 3);
	assert_non_null(strstr(v, "A2"));
	free(v);
	/* the history, ascending by event time: A2 (seq 3) then A1 (seq 1) */
	assert_int_equal(profile_history_keys(f->s, NULL, a.profile_id, &keys, &n),
			 NERR_OK);
	assert_int_equal(n, 2);
	assert_int_equal(keys[0].seq, 3);
	assert_int_equal(profile_history_event(f->s, NULL, a.profile_id, &keys[1], &ev),
			 NERR_OK);
	assert_string_equal(str_at(ev, "event"), "A1");
	json_object_put(ev);
	/* not another profile's event */
	assert_int_equal(profile_history_event(f->s, NULL, b.profile_id, &keys[1], &ev),
			 NERR_NOTFOUND);
	free(keys);
	assert_check_clean(f);
}

/* A profile with an 'H' index keeps its records under (id, time, seq) keys:
 * it reads as before, and its next event moves them all to (seq, id). */
static void test_old_key_profile_reads_then_migrates(void **state)
{
	struct fx *f = *state;
	const int64_t t[2] = {T0, T0 + 10};
	const uint64_t seq[2] = {4, 2};
	static const char *const names[] = {"Old4", "Old2"};
	struct profile_hkey *keys = NULL;
	struct json_object *ev = NULL;
	struct hrec h;
	char got[128], *v, *head, *head2;
	size_t n = 0;

	f->cfg.history_max_age_ms = 0;
	put_old_profile(f, 7, "u7", 2, t, seq, names);
	event_names(f, 7, got, sizeof(got));
	assert_string_equal(got, "Old2,Old4");
	assert_int_equal(profile_history_keys(f->s, NULL, 7, &keys, &n), NERR_OK);
	assert_int_equal(n, 2);
	assert_int_equal(profile_history_event(f->s, NULL, 7, &keys[0], &ev), NERR_OK);
	assert_string_equal(str_at(ev, "event"), "Old4");
	json_object_put(ev);
	free(keys);
	assert_check_clean(f);

	/* A history-only event: the head stays as stored (json-c would not print
	 * its ", "), the records move anyway. */
	f->seq = 10;
	head = raw_record(f, 7);
	assert_non_null(strstr(head, ", "));
	apply(f, "{\"type\":\"track\",\"userId\":\"u7\",\"event\":\"New11\"}", T0 + 5);
	head2 = raw_record(f, 7);
	assert_string_equal(head2, head);
	free(head);
	free(head2);
	h = raw_history(f, 7);
	assert_int_equal(h.magic, 'E');
	assert_int_equal(h.n, 3);
	assert_int_equal(keys_of_len(f, 24), 0);
	assert_int_equal(keys_of_len(f, 16), 3);
	for (size_t i = 0; i < 2; i++) {
		assert_null(event_at(f, true, 7, t[i], seq[i]));
		v = event_at(f, false, 7, 0, seq[i]);
		assert_non_null(v);
		assert_non_null(strstr(v, names[i]));
		free(v);
	}
	event_names(f, 7, got, sizeof(got));
	assert_string_equal(got, "Old2,New11,Old4");
	assert_check_clean(f);
}

/* Merges between old-key and new-key profiles, both ways round (and two old
 * ones): the survivor ends with new keys and every record moved to it. */
static void test_merge_across_key_forms(void **state)
{
	struct fx *f = *state;

	f->cfg.history_max_age_ms = 0;
	for (int round = 0; round < 3; round++) {
		const int64_t t[2] = {T0 + 1, T0 + 2};
		const uint64_t seq[2] = {1, 2};
		static const char *const names[] = {"O1", "O2"};
		const int64_t t2[1] = {T0 + 3};
		const uint64_t seq2[1] = {3};
		static const char *const names2[] = {"P3"};
		static const char head2[] =
			"{\"v\":1,\"id\":2,\"created_ms\":1,\"identities\":"
			"[\"anonymous_id:x\"],\"traits\":{}}";
		struct profile_result r;
		char got[128];

		f->seq = 0;
		if (round == 0) {
			/* old profile 1 survives new profile 2 */
			put_old_profile(f, 1, "u1", 2, t, seq, names);
			f->seq = 2;
			r = apply(f,
				  "{\"type\":\"track\",\"anonymousId\":\"x\","
				  "\"event\":\"N3\"}",
				  T0 + 3);
			assert_int_equal(r.profile_id, 2);
			assert_int_equal(raw_history(f, 2).magic, 'E');
		} else if (round == 1) {
			/* new profile 1 survives old profile 2 */
			f->seq = 2;
			store_batch_put(f->b, STORE_CF_META, "profile.next_id", 15,
					"\0\0\0\0\0\0\0\1", 8);
			commit(f);
			r = apply(f,
				  "{\"type\":\"track\",\"anonymousId\":\"x\","
				  "\"event\":\"N3\"}",
				  T0 + 3);
			assert_int_equal(r.profile_id, 1);
			put_old_profile(f, 2, "u1", 2, t, seq, names);
		} else {
			/* two old profiles */
			put_old_profile(f, 1, "u1", 2, t, seq, names);
			put_old_profile(f, 2, "u2", 1, t2, seq2, names2);
			store_batch_delete(f->b, STORE_CF_IDENTITIES, "user_id:u2", 10);
			store_batch_put(f->b, STORE_CF_IDENTITIES, "anonymous_id:x", 14,
					"\0\0\0\0\0\0\0\2", 8);
			store_batch_put(f->b, STORE_CF_PROFILES, "\0\0\0\0\0\0\0\2", 8,
					head2, strlen(head2));
			commit(f);
			f->seq = 3;
		}
		assert_int_equal(keys_of_len(f, 24), round == 2 ? 3 : 2);
		r = apply(f,
			  "{\"type\":\"track\",\"userId\":\"u1\",\"anonymousId\":\"x\","
			  "\"event\":\"L4\"}",
			  T0 + 4);
		assert_int_equal(r.merged, 1);
		assert_int_equal(r.profile_id, 1); /* the oldest survives */
		assert_int_equal(raw_history(f, 1).magic, 'E');
		assert_int_equal(keys_of_len(f, 24), 0);
		assert_int_equal(keys_of_len(f, 16), 4);
		assert_int_equal(count_cf(f, STORE_CF_HISTORY), 1);
		event_names(f, 1, got, sizeof(got));
		assert_string_equal(got, round == 2 ? "L4,P3,O2,O1" : "L4,N3,O2,O1");
		assert_check_clean(f);
		assert_int_equal(profile_erase(f->b, 1), NERR_OK);
		store_batch_delete(f->b, STORE_CF_META, "profile.next_id", 15);
		commit(f);
		assert_int_equal(count_cf(f, STORE_CF_EVENTS), 0);
	}
}

/* Erasing a profile that still has old keys leaves nothing of it. */
static void test_erase_of_an_old_key_profile(void **state)
{
	struct fx *f = *state;
	const int64_t t[2] = {T0, T0 + 1};
	const uint64_t seq[2] = {1, 2};
	static const char *const names[] = {"A", "B"};

	put_old_profile(f, 3, "u3", 2, t, seq, names);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 2);
	assert_int_equal(profile_erase(f->b, 3), NERR_OK);
	commit(f);
	assert_int_equal(count_cf(f, STORE_CF_EVENTS), 0);
	assert_int_equal(count_cf(f, STORE_CF_HISTORY), 0);
	assert_int_equal(count_cf(f, STORE_CF_PROFILES), 0);
	assert_int_equal(count_cf(f, STORE_CF_IDENTITIES), 0);
}

/* The check knows both key forms and reports records that do not fit. */
static void test_check_event_key_forms(void **state)
{
	struct fx *f = *state;
	const int64_t t[1] = {T0};
	const uint64_t seq[1] = {50};
	static const char *const names[] = {"Old"};
	unsigned char k[24];
	struct profile_result r;
	struct buf problems;
	uint64_t seen = 0;
	const char *p;

	f->cfg.history_max_age_ms = 0;
	put_old_profile(f, 9, "u9", 1, t, seq, names);
	r = apply(f, "{\"type\":\"track\",\"userId\":\"n\",\"event\":\"E\"}", T0);
	assert_int_equal(r.profile_id, 10);
	assert_check_clean(f);
	/* (seq 77, 10): a new-form profile that does not list it */
	store_put_u64(k, 77);
	store_put_u64(k + 8, 10);
	store_batch_put(f->b, STORE_CF_EVENTS, k, 16, "{}", 2);
	/* (seq 50, 9): profile 9 has old keys */
	store_put_u64(k, 50);
	store_put_u64(k + 8, 9);
	store_batch_put(f->b, STORE_CF_EVENTS, k, 16, "{}", 2);
	/* (10, T0, 1): profile 10's own event under an old key */
	store_put_u64(k, 10);
	store_put_u64(k + 8, (uint64_t)T0);
	store_put_u64(k + 16, 1);
	store_batch_put(f->b, STORE_CF_EVENTS, k, 24, "{}", 2);
	/* (seq 78, 404): no such profile */
	store_put_u64(k, 78);
	store_put_u64(k + 8, 404);
	store_batch_put(f->b, STORE_CF_EVENTS, k, 16, "{}", 2);
	/* neither length */
	store_batch_put(f->b, STORE_CF_EVENTS, k, 20, "{}", 2);
	commit(f);

	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_CORRUPT);
	p = buf_str(&problems);
	assert_non_null(
		strstr(p, "event (seq 77, profile 10): profile does not list it\n"));
	assert_non_null(
		strstr(p, "event (seq 50, profile 9): profile keys its events with 24 "
			  "bytes\n"));
	assert_non_null(strstr(p, "event (10, "
				  "1767225600000"
				  ", 1): profile keys its events with 16 bytes\n"));
	assert_non_null(
		strstr(p, "event (seq 78, profile 404): profile does not exist\n"));
	assert_non_null(strstr(p, "events: key of 20 bytes (want 16 or 24)\n"));
	/* five problems, one line each */
	{
		size_t lines = 0;

		for (const char *c = p; *c; c++)
			lines += *c == '\n';
		assert_int_equal(lines, 5);
	}
	buf_fini(&problems);

	/* An old-form profile whose record sits only under the new key: the
	 * profile's record is missing. */
	store_put_u64(k, 9);
	store_put_u64(k + 8, (uint64_t)T0);
	store_put_u64(k + 16, 50);
	store_batch_delete(f->b, STORE_CF_EVENTS, k, 24);
	commit(f);
	buf_init(&problems, 0);
	assert_int_equal(profile_check(f->s, &problems, &seen), NERR_CORRUPT);
	assert_non_null(
		strstr(buf_str(&problems),
		       "profile 9: history record (1767225600000, 50) is missing\n"));
	buf_fini(&problems);
}

/* A push token on a profile whose head was not otherwise needed. */
static void test_device_token_reaches_an_unparsed_head(void **state)
{
	struct fx *f = *state;
	struct profile_result p;
	struct json_object *o;

	p = apply(f, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"a\":1}}",
		  T0);
	apply(f,
	      "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"E\",\"context\":"
	      "{\"device\":{\"token\":\"tok9\",\"type\":\"ios\"}}}",
	      T0 + 10);
	o = get(f, p.profile_id);
	assert_int_equal(len_at(o, "addresses.push"), 1);
	json_object_put(o);
}

/* A history index that is not 'H', a time and whole ascending entries makes
 * the profile unreadable. */
static void test_bad_history_record_is_corrupt(void **state)
{
	struct fx *f = *state;
	static const char head[] = "{\"v\":1,\"id\":7,\"identities\":[\"user_id:u9\"]}";
	const int64_t t[2] = {T0, T0};
	const uint64_t seq[2] = {2, 1};

	for (int i = 0; i < 4; i++) {
		unsigned char k[8], v[8];
		struct json_object *ev = json_tokener_parse(
			"{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\"}");
		struct json_object *o = NULL;
		struct profile_result res;
		struct nerr_msg msg;

		store_put_u64(k, 7);
		store_batch_put(f->b, STORE_CF_PROFILES, k, 8, head, strlen(head));
		store_put_u64(v, 7);
		store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u9", 10, v, 8);
		if (i == 0)
			put_history(f, 7, 'E', 1, 2, t, seq); /* descending */
		else if (i == 1)
			store_batch_put(f->b, STORE_CF_HISTORY, k, 8, "H1234567", 8);
		else if (i == 2)
			store_batch_put(f->b, STORE_CF_HISTORY, k, 8, "X12345678",
					9); /* not 'H' */
		else
			store_batch_put(f->b, STORE_CF_HISTORY, k, 8,
					"H12345678abcdefgh1234567", 24);
		commit(f);
		assert_int_equal(
			profile_apply_event(f->b, &f->cfg, ev, 99, T0, T0, &res, &msg),
			NERR_CORRUPT);
		assert_int_equal(profile_get_json(f->s, NULL, 7, &o), NERR_CORRUPT);
		json_object_put(ev);
		store_batch_clear(f->b);
	}
}

/* A history entry that is not a pair of integers makes the record unreadable,
 * whichever way it is read. */
static void test_bad_history_tail_is_corrupt(void **state)
{
	struct fx *f = *state;
	static const char *const recs[] = {
		"{\"v\":1,\"identities\":[\"user_id:u9\"],\"history\":[[1,2,3]]}",
		"{\"v\":1,\"identities\":[\"user_id:u9\"],\"history\":[[1,\"2\"]]}",
		"{\"v\":1,\"identities\":[\"user_id:u9\"],,\"history\":[[1,2]]}",
		"{,\"history\":[[1,2]]}",
	};

	for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
		unsigned char k[8], v[8];
		struct json_object *ev = json_tokener_parse(
			"{\"type\":\"track\",\"userId\":\"u9\",\"event\":\"E\"}");
		struct profile_result res;
		struct nerr_msg msg;

		store_put_u64(k, 7);
		store_batch_put(f->b, STORE_CF_PROFILES, k, 8, recs[i], strlen(recs[i]));
		store_put_u64(v, 7);
		store_batch_put(f->b, STORE_CF_IDENTITIES, "user_id:u9", 10, v, 8);
		commit(f);
		assert_int_equal(
			profile_apply_event(f->b, &f->cfg, ev, 99, T0, T0, &res, &msg),
			NERR_CORRUPT);
		json_object_put(ev);
		store_batch_clear(f->b);
	}
}

/* The engine hands over the event's text: the history record is that text. */
static void test_history_record_is_the_given_text(void **state)
{
	struct fx *f = *state;
	const char *text =
		"{ \"type\": \"track\", \"userId\": \"u1\", \"event\": \"a/b\" }";
	struct json_object *ev = json_tokener_parse(text), *o;
	struct profile_result r;
	struct nerr_msg msg;
	unsigned char k[16];
	char *v = NULL;
	size_t len = 0;

	assert_int_equal(profile_apply_event_text(f->b, &f->cfg, ev, text, strlen(text),
						  7, T0, T0, &r, &msg),
			 NERR_OK);
	commit(f);
	store_put_u64(k, 7);
	store_put_u64(k + 8, r.profile_id);
	assert_int_equal(store_get(f->s, STORE_CF_EVENTS, k, 16, &v, &len), NERR_OK);
	assert_int_equal(len, strlen(text));
	assert_memory_equal(v, text, len);
	free(v);
	o = get(f, r.profile_id);
	assert_string_equal(
		str_at(json_object_array_get_idx(at(o, "events"), 0), "event"), "a/b");
	json_object_put(o);
	json_object_put(ev);
}

static void test_deep_values_survive_storage(void **state)
{
	struct fx *f = *state;
	struct json_object *ev = json_object_new_object(),
			   *traits = json_object_new_object();
	struct json_object *deep = json_object_new_string("bottom"), *o, *v;
	struct profile_result res;
	struct nerr_msg msg;
	int depth = 0;

	/* ingest allows events up to 128 levels deep */
	for (int i = 0; i < 125; i++) {
		struct json_object *a = json_object_new_array();

		json_object_array_add(a, deep);
		deep = a;
	}
	json_object_object_add(traits, "deep", deep);
	json_object_object_add(ev, "type", json_object_new_string("identify"));
	json_object_object_add(ev, "userId", json_object_new_string("u1"));
	json_object_object_add(ev, "traits", traits);
	assert_int_equal(profile_apply_event(f->b, &f->cfg, ev, 1, T0, T0, &res, &msg),
			 NERR_OK);
	json_object_put(ev);
	commit(f);
	o = get(f, res.profile_id);
	for (v = at(o, "traits.deep"); v && json_object_is_type(v, json_type_array);
	     v = json_object_array_get_idx(v, 0))
		depth++;
	assert_int_equal(depth, 125);
	assert_string_equal(json_object_get_string(v), "bottom");
	json_object_put(o);
}

static void test_event_without_identity_is_invalid(void **state)
{
	struct fx *f = *state;
	struct json_object *ev =
		json_tokener_parse("{\"type\":\"track\",\"event\":\"E\"}");
	struct profile_result res;
	struct nerr_msg msg;

	assert_int_equal(profile_apply_event(f->b, &f->cfg, ev, 1, T0, T0, &res, &msg),
			 NERR_INVAL);
	json_object_put(ev);
	assert_int_equal(store_batch_count(f->b), 0);
}

/*
 * The engine applies most events as a view of their record
 * (segment_event_view with profile_event_members and profile_context_members):
 * events carrying every kind of content, with members the view drops around
 * them, build the same profiles whole and as views. A member the profile
 * reads that the lists forget fails here.
 */
static void test_a_view_of_each_event_applies_like_the_whole_event(void **state)
{
	struct fx *f = *state, *g;
	void *gs = NULL;
	static const char *const id_traits[] = {"loyalty_id", NULL};
	static const char *const events[] = {
		"{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Viewed\","
		"\"properties\":{\"userId\":\"x\"},\"context\":{\"ip\":\"1.2.3.4\","
		"\"library\":{\"name\":\"analytics.js\"},\"timezone\":\"Europe/Paris\","
		"\"device\":{\"token\":\"tok-1\",\"type\":\"ios\"}}}",
		"{\"type\":\"identify\",\"userId\":\"u-1\",\"anonymousId\":\"anon-1\","
		"\"traits\":{\"email\":\"A@B.com\",\"name\":\"Ann\",\"consent\":{"
		"\"email\":"
		"\"granted\"}},\"context\":{\"traits\":{\"phone\":\"+33 6 12 34 56 78\"},"
		"\"externalIds\":[{\"id\":\"c-9\",\"type\":\"crm_id\",\"collection\":"
		"\"users\",\"encoding\":\"none\"}],\"locale\":\"fr-FR\"},"
		"\"integrations\":{}}",
		"{\"type\":\"alias\",\"userId\":\"u-1\",\"previousId\":\"anon-2\","
		"\"context\":{\"page\":{\"url\":\"https://x/\"}}}",
		"{\"type\":\"track\",\"anonymousId\":\"anon-3\",\"event\":\"E\","
		"\"properties\":"
		"{\"loyalty_id\":\"L1\"},\"context\":{\"traits\":{\"loyalty_id\":\"L-7\"}"
		"}}",
		"{\"type\":\"identify\",\"anonymousId\":\"anon-3\",\"traits\":{\"loyalty_"
		"id\":"
		"\"L-7\",\"email\":\"a@b.com\",\"plan\":null}}",
		"{\"type\":\"page\",\"userId\":\"u-1\",\"name\":\"Home\",\"properties\":{"
		"},"
		"\"context\":{\"timezone\":\"America/New_York\",\"device\":{\"token\":"
		"\"tok-2\",\"type\":\"android\"}}}",
	};
	size_t n = sizeof(events) / sizeof(events[0]), cut = 0;
	struct json_tokener *tok = json_tokener_new();

	setup(&gs);
	g = gs;
	f->cfg.identity_traits = id_traits;
	g->cfg.identity_traits = id_traits;
	for (size_t i = 0; i < n; i++) {
		const char *text = events[i];
		size_t len = strlen(text), vlen;
		char *view = malloc(len);
		struct json_object *whole = json_tokener_parse(text), *part;
		struct profile_result rw, rv;
		struct nerr_msg msg;

		vlen = segment_event_view(text, len, profile_event_members,
					  profile_context_members, view);
		assert_true(vlen > 0 && vlen <= len);
		cut += vlen < len;
		json_tokener_reset(tok);
		part = json_tokener_parse_ex(tok, view, (int)vlen);
		assert_non_null(part);
		assert_int_equal(profile_apply_event_text(f->b, &f->cfg, whole, text, len,
							  i + 1, T0 + (int64_t)i,
							  T0 + 1000, &rw, &msg),
				 NERR_OK);
		assert_int_equal(profile_apply_event_text(g->b, &g->cfg, part, text, len,
							  i + 1, T0 + (int64_t)i,
							  T0 + 1000, &rv, &msg),
				 NERR_OK);
		assert_int_equal(rw.profile_id, rv.profile_id);
		assert_int_equal(rw.merged, rv.merged);
		commit(f);
		commit(g);
		json_object_put(whole);
		json_object_put(part);
		free(view);
	}
	for (uint64_t pid = 1; pid <= n; pid++) {
		struct json_object *a = NULL, *b = NULL;
		enum nerr ra = profile_get_json(f->s, NULL, pid, &a);

		assert_int_equal(profile_get_json(g->s, NULL, pid, &b), ra);
		if (ra == NERR_OK && !json_object_equal(a, b))
			fail_msg("profile %llu whole %s\nview %s",
				 (unsigned long long)pid, json_object_to_json_string(a),
				 json_object_to_json_string(b));
		json_object_put(a);
		json_object_put(b);
	}
	assert_true(cut >= n - 1);
	json_tokener_free(tok);
	teardown(&gs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_track_then_identify_builds_profile),
		T(test_identify_merges_anonymous_into_known),
		T(test_merge_goes_into_oldest_profile),
		T(test_one_event_merges_several_profiles),
		T(test_track_with_user_and_anonymous_links_them),
		T(test_alias_merges),
		T(test_two_user_ids_never_merge),
		T(test_newest_timestamp_wins),
		T(test_newest_timestamp_wins_across_merge),
		T(test_null_removes_trait),
		T(test_consent_both_forms),
		T(test_email_and_phone_normalization),
		T(test_custom_namespaces),
		T(test_a_view_of_each_event_applies_like_the_whole_event),
		T(test_identity_cap),
		T(test_history_count_cap),
		T(test_records_as_stored),
		T(test_merge_of_a_legacy_profile_keeps_the_caps),
		T(test_legacy_repeated_history_key_is_kept_once),
		T(test_device_token_reaches_an_unparsed_head),
		T(test_bad_history_record_is_corrupt),
		T(test_history_record_is_the_given_text),
		T(test_record_layouts_load_alike),
		T(test_history_only_event_keeps_the_stored_head),
		T(test_bad_history_tail_is_corrupt),
		T(test_history_age_cap),
		T(test_erase_removes_everything),
		T(test_read_your_writes_in_one_batch),
		T(test_view_shape),
		T(test_timezone_valid_newest_wins),
		T(test_check_clean_store),
		T(test_check_finds_corruption),
		T(test_deep_values_survive_storage),
		T(test_event_without_identity_is_invalid),
		T(test_new_events_are_keyed_by_seq),
		T(test_old_key_profile_reads_then_migrates),
		T(test_merge_across_key_forms),
		T(test_erase_of_an_old_key_profile),
		T(test_check_event_key_forms),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
