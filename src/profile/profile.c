/*
 * profile.c -- profiles, the identity graph, consents and recent-event history.
 *
 * Design: the engine thread hands every normalized Segment event to
 * profile_apply_event() inside its engine batch. The event's identities
 * (user_id, anonymous_id, email, phone, context.externalIds, configured identity
 * traits) are looked up through the batch; the profiles they point at are merged
 * into the oldest (lowest id) unless that would put two user_ids on one profile;
 * new identities are attached; then traits, consents, addresses, time zone and
 * history are updated. Every read goes through the batch, every write into it, so
 * later events of the same engine batch see earlier ones and everything commits
 * atomically (DESIGN.md invariant 2). The rules are in docs/profiles.md; the
 * numbered invariants below are what profile_check() verifies.
 *
 * A profile's history index keeps its update time and the keys of its history
 * records, so apply, merge and erase need only point reads and writes (the engine
 * hands us a batch, not an iterator), and the caps are enforced without
 * scanning. It is binary and apart from the profile record (the head), so the
 * common event, which only adds to the history, neither parses nor rewrites the
 * head (struct prof).
 *
 * Invariants:
 *   (1) an identity key maps to exactly one profile, and that profile lists it;
 *   (2) every identity a profile lists maps back to that profile;
 *   (3) every history record belongs to an existing profile that lists its key,
 *       and every key a profile lists has a record;
 *   (3a) every profile has one history index (or is a legacy record holding
 *       its history), and every history index has its profile;
 *   (6) an event that needs no head (see profile_apply_event_text) does not
 *       read it: a damaged head goes unnoticed by such events (their history
 *       is kept) and is reported by everything that reads it, nudge check
 *       included.
 *   (4) a profile holds at most one user_id (two user_ids never merge);
 *   (5) every profile id is below the id counter.
 *
 * On-disk format (all in the store's column families, see store.h):
 *   meta       "profile.next_id" -> u64 BE, the next id to hand out (from 1).
 *   profiles   u64 BE id -> JSON object:
 *     {"v":1, "id":<int>, "created_ms":<int>,
 *      "identities":["ns:value", ...]            (attach order; ≤ 1 user_id),
 *      "traits":{"name":{"v":<json or null>,"t":<ms>}}  (null = removed; the
 *                                              tombstone keeps its timestamp),
 *      "consent":{"email":{"marketing":{"s":"granted"|"denied","t":<ms>}}},
 *      "timezone":{"v":"Europe/Paris","t":<ms>}              (optional),
 *      "addresses":{"email":{"v":<str|null>,"t":<ms>}, "phone":{...},
 *                   "push":[{"token":..,"type":..,"t":<ms>}]}  (optional),
 *      "merged_from":[{"id":<int>,"at_ms":<ms>}]}
 *     Times "t" are event times (newest wins); created/at are the engine's
 *     clock. Legacy records (before 2026-11-27) also hold "updated_ms" and
 *     "history":[[<event ms>,<seq>], ...] and have no history index; they load
 *     as before and their next event moves both into a history index.
 *   history    u64 BE id -> 'E', i64 BE updated_ms (the engine's clock at the
 *              last event), then per kept event i64 BE event ms (negative
 *              clamped to 0) and u64 BE inbox seq, strictly ascending: its
 *              history. Before 2026-11-28 the magic was 'H' (see events).
 *   identities "ns:value" (bytes, no NUL) -> u64 BE profile id.
 *   events     u64 BE inbox seq, u64 BE profile id -> the event JSON as
 *              received, for a profile with an 'E' index. The engine applies
 *              events in inbox order, so its inserts ascend (RocksDB reuses
 *              the memtable position; a third of the engine's time was spent
 *              finding it). Profiles with an 'H' index, or legacy records
 *              holding their history, key theirs by u64 BE profile id, u64 BE
 *              event ms, u64 BE inbox seq (24 bytes): every reader and deleter
 *              uses the profile's form (struct prof old_keys); the first event
 *              applied to such a profile moves its records to the new keys in
 *              the same batch (prof_migrate), a merge moves a merged-away
 *              profile's records from its form to the survivor's new keys.
 *              profile_history_event, given no form, tries the new key first.
 * Threading: only the engine thread writes; readers use committed state.
 * References: Segment spec (identify, alias, externalIds); ITU-T E.164.
 */
#include "profile/profile.h"

#include <ctype.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#include "base/clock.h"
#include "base/jtok.h"
#include "base/log.h"
#include "base/mem.h"

#define FORMAT_VERSION	   1
#define NS_MAX_BYTES	   64
#define VALUE_MAX_BYTES	   1024
#define EMAIL_MAX_BYTES	   254
#define TZ_MAX_BYTES	   64
#define PUSH_TOKENS_MAX	   10
#define MAX_TRAITS_DEFAULT 1000
/* Events are at most 128 deep (SEGMENT_DEPTH_CAP); records add a few levels. */
#define PARSE_DEPTH 256
/* Event record keys: seq then id for profiles with an 'E' history index; id,
 * event time, seq for older ones (see the header comment). */
#define EVENT_KEY_NEW 16
#define EVENT_KEY_OLD 24
#define EVENT_KEY_MAX 24

static const char next_id_key[] = "profile.next_id";

/* What profile_apply_event_text reads of an event; keep in step with
 * collect_identities, event_traits, has_content and apply_content (test_profile
 * applies events both whole and as views and compares the profiles). */
const char *const profile_event_members[] = {
	"type", "userId", "anonymousId", "previousId", "traits", "context", NULL};
const char *const profile_context_members[] = {"traits", "externalIds", "timezone",
					       "device", NULL};

void profile_config_default(struct profile_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_identities = 50;
	cfg->history_max_events = 100;
	cfg->history_max_age_ms = 90LL * 24 * 3600 * 1000;
	cfg->identity_traits = NULL;
	cfg->max_traits = MAX_TRAITS_DEFAULT;
}

void profile_stats_add(struct profile_stats *st, const struct profile_result *res)
{
	st->profiles_created += res->created ? 1 : 0;
	st->merges += res->merged;
	st->identities_rejected += res->identities_rejected;
	st->identities_conflicting += res->identities_conflicting;
}

/* ------------------------------------------------------------------ store */

static enum nerr kv_get(struct store *s, struct store_batch *b, enum store_cf cf,
			const void *key, size_t klen, char **val, size_t *len)
{
	if (b)
		return store_batch_get(b, cf, key, klen, val, len);
	if (!s)
		return NERR_INVAL; /* a bug: neither a batch nor a store */
	return store_get(s, cf, key, klen, val, len);
}

/* Writes the key of profile pid's event record (t, seq) into k (at least
 * EVENT_KEY_MAX bytes) in the old or the new form; returns its length. */
static size_t event_key(unsigned char *k, bool old, uint64_t pid, int64_t t, uint64_t seq)
{
	if (!old) {
		store_put_u64(k, seq);
		store_put_u64(k + 8, pid);
		return EVENT_KEY_NEW;
	}
	store_put_u64(k, pid);
	store_put_u64(k + 8, t < 0 ? 0 : (uint64_t)t);
	store_put_u64(k + 16, seq);
	return EVENT_KEY_OLD;
}

/* Parses a stored JSON value; NULL if it is not a JSON object. */

static struct json_object *parse_record(const char *data, size_t len)
{
	/* The thread's tokener: allocating one per load was a third of the
	 * parse. */
	struct json_tokener *tok = jtok_thread(PARSE_DEPTH);
	struct json_object *o;

	o = json_tokener_parse_ex(tok, data, (int)len);
	if (o && (json_tokener_get_error(tok) != json_tokener_success ||
		  !json_object_is_type(o, json_type_object))) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

static void put_json(struct store_batch *b, enum store_cf cf, const void *key,
		     size_t klen, struct json_object *o)
{
	size_t len = 0;
	const char *s =
		json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

	store_batch_put(b, cf, key, klen, s, len);
}

/* ------------------------------------------------------------ json helpers */

static struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object))
		return NULL;
	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
							     : NULL;
}

static int64_t jint(struct json_object *o, const char *key, int64_t dflt)
{
	struct json_object *v = jget(o, key);

	return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v)
							  : dflt;
}

/* Returns o[key] as an object, creating it (or replacing a non-object). */
static struct json_object *jobj(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	if (v && json_object_is_type(v, json_type_object))
		return v;
	v = json_object_new_object();
	json_object_object_add(o, key, v);
	return v;
}

static struct json_object *jarr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	if (v && json_object_is_type(v, json_type_array))
		return v;
	v = json_object_new_array();
	json_object_object_add(o, key, v);
	return v;
}

/* An entry {"v":..,"t":..}: its time, or INT64_MIN when absent. */
static int64_t entry_time(struct json_object *e)
{
	return jint(e, "t", INT64_MIN);
}

static struct json_object *new_entry(const char *vkey, struct json_object *v, int64_t t)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, vkey, v);
	json_object_object_add(e, "t", json_object_new_int64(t));
	return e;
}

static void format_time(int64_t ms, char *out)
{
	clock_format_rfc3339(ms, out);
}

static struct json_object *new_time(int64_t ms)
{
	char t[40];

	format_time(ms, t);
	return json_object_new_string(t);
}

static struct json_object *new_id_string(uint64_t id)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRIu64, id);
	return json_object_new_string(s);
}

/* ---------------------------------------------------------- normalization */

static bool is_sep(char c)
{
	return c == ' ' || c == '\t' || c == '-' || c == '.' || c == '(' || c == ')';
}

/* E.164: separators removed, '+' then 8 to 15 digits, not starting with 0.
 * Returns a malloc'd "+digits" or NULL. */
static char *norm_phone(const char *s)
{
	char out[17];
	size_t n = 0;
	bool plus = false;

	for (; *s; s++) {
		char c = *s;

		if (is_sep(c))
			continue;
		if (c == '+' && !plus && n == 0) {
			plus = true;
			continue;
		}
		if (!plus || c < '0' || c > '9' || n == 15)
			return NULL;
		out[n++] = c;
	}
	if (!plus || n < 8 || out[0] == '0')
		return NULL;
	memmove(out + 1, out, n);
	out[0] = '+';
	return xstrndup(out, n + 1);
}

/* Trimmed, lower-cased (Unicode, root locale); must have a non-empty local part
 * and domain around the last '@' and no whitespace or control characters.
 * Returns a malloc'd address or NULL. */
static char *norm_email(const char *in)
{
	UChar u[EMAIL_MAX_BYTES + 1], l[2 * EMAIL_MAX_BYTES + 2];
	char out[3 * (2 * EMAIL_MAX_BYTES + 2) + 1];
	UErrorCode st = U_ZERO_ERROR;
	int32_t ulen = 0, llen, olen = 0;
	const char *s = in, *at;
	size_t n;

	while (*s && isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	if (n < 3 || n > EMAIL_MAX_BYTES)
		return NULL;
	u_strFromUTF8(u, EMAIL_MAX_BYTES + 1, &ulen, s, (int32_t)n, &st);
	if (U_FAILURE(st))
		return NULL;
	llen = u_strToLower(l, 2 * EMAIL_MAX_BYTES + 2, u, ulen, "", &st);
	if (U_FAILURE(st))
		return NULL;
	u_strToUTF8(out, sizeof(out) - 1, &olen, l, llen, &st);
	if (U_FAILURE(st) || olen <= 0 || olen > EMAIL_MAX_BYTES)
		return NULL;
	out[olen] = '\0';
	for (int32_t i = 0; i < olen; i++)
		if ((unsigned char)out[i] <= ' ' || out[i] == 0x7f)
			return NULL;
	at = strrchr(out, '@');
	if (!at || at == out || at[1] == '\0')
		return NULL;
	return xstrdup(out);
}

/* Namespace names: ASCII letters (lower-cased), digits, '_', '.', '-'; 1-64
 * bytes. Writes into out (NS_MAX_BYTES + 1); false if invalid. */
static bool norm_namespace(const char *ns, char *out)
{
	size_t n = strlen(ns);

	if (n == 0 || n > NS_MAX_BYTES)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = (char)tolower((unsigned char)ns[i]);

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == '-'))
			return false;
		out[i] = c;
	}
	out[n] = '\0';
	return true;
}

/* Normalizes value for namespace ns (already normalized). Returns malloc'd or
 * NULL when it cannot be an identity. Other namespaces keep the value exactly
 * (no trimming); it must be 1-1024 bytes without control characters. */
static char *norm_value(const char *ns, const char *value)
{
	size_t n;

	if (strcmp(ns, "email") == 0)
		return norm_email(value);
	if (strcmp(ns, "phone") == 0)
		return norm_phone(value);
	n = strlen(value);
	if (n == 0 || n > VALUE_MAX_BYTES)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)value[i] < ' ' || value[i] == 0x7f)
			return NULL;
	return xstrndup(value, n);
}

/* A JSON identity value: strings as they are, integers printed; else NULL. */
static const char *json_ident_string(struct json_object *v, char *tmp, size_t cap)
{
	if (!v)
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	if (json_object_is_type(v, json_type_int)) {
		snprintf(tmp, cap, "%" PRId64, json_object_get_int64(v));
		return tmp;
	}
	return NULL;
}

/* True if name is a time zone ICU knows as a system (IANA) zone. */
static bool tz_valid(const char *name)
{
	UChar u[TZ_MAX_BYTES + 1], canon[TZ_MAX_BYTES * 2];
	UErrorCode st = U_ZERO_ERROR;
	UBool system = 0;
	int32_t ulen = 0;
	size_t n = strlen(name);

	if (n == 0 || n > TZ_MAX_BYTES)
		return false;
	u_strFromUTF8(u, TZ_MAX_BYTES + 1, &ulen, name, (int32_t)n, &st);
	if (U_FAILURE(st))
		return false;
	ucal_getCanonicalTimeZoneID(u, ulen, canon, TZ_MAX_BYTES * 2, &system, &st);
	return U_SUCCESS(st) && system;
}

/* --------------------------------------------------------------- identities */

struct ident {
	char *key;     /* "ns:value", owned */
	size_t ns_len; /* bytes before ':' */
	uint64_t pid;  /* profile it maps to, when mapped */
	bool mapped;   /* the identity key exists */
	bool conflict; /* stays where it is (user_id rule) */
	bool deferred; /* stays where it is (PROFILE_MERGE_MAX reached) */
};

struct ident_list {
	struct ident *v;
	size_t n, cap;
};

static bool ident_is_ns(const struct ident *id, const char *ns)
{
	return id->ns_len == strlen(ns) && memcmp(id->key, ns, id->ns_len) == 0;
}

static const char *ident_value(const struct ident *id)
{
	return id->key + id->ns_len + 1;
}

/* Builds the "ns:value" key from raw inputs; NULL if not an identity. */
static char *make_key(const char *ns_raw, const char *value_raw, size_t *ns_len)
{
	char ns[NS_MAX_BYTES + 1], *val, *key;
	size_t nl, vl;

	if (!ns_raw || !value_raw || !norm_namespace(ns_raw, ns))
		return NULL;
	val = norm_value(ns, value_raw);
	if (!val)
		return NULL;
	nl = strlen(ns);
	vl = strlen(val);
	key = xmalloc(nl + 1 + vl + 1);
	memcpy(key, ns, nl);
	key[nl] = ':';
	memcpy(key + nl + 1, val, vl + 1);
	free(val);
	*ns_len = nl;
	return key;
}

static void ident_add(struct ident_list *l, const char *ns, const char *value)
{
	size_t ns_len = 0;
	char *key = make_key(ns, value, &ns_len);

	if (!key)
		return;
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0) {
			free(key);
			return;
		}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 8;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = (struct ident){.key = key, .ns_len = ns_len};
}

static void ident_list_fini(struct ident_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].key);
	free(l->v);
}

static enum nerr ident_get(struct store *s, struct store_batch *b, const char *key,
			   uint64_t *pid)
{
	char *val = NULL;
	size_t len = 0;
	enum nerr rc = kv_get(s, b, STORE_CF_IDENTITIES, key, strlen(key), &val, &len);

	if (rc != NERR_OK)
		return rc;
	if (len != 8) {
		log_error("profile", "msg=\"bad identity record\" len=%zu", len);
		free(val);
		return NERR_CORRUPT;
	}
	*pid = store_get_u64(val);
	free(val);
	return NERR_OK;
}

static void ident_put(struct store_batch *b, const char *key, uint64_t pid)
{
	unsigned char v[8];

	store_put_u64(v, pid);
	store_batch_put(b, STORE_CF_IDENTITIES, key, strlen(key), v, 8);
}

enum nerr profile_lookup(struct store *s, struct store_batch *b, const char *ns,
			 const char *value, uint64_t *profile_id)
{
	size_t ns_len = 0;
	char *key = make_key(ns, value, &ns_len);
	enum nerr rc;

	if (!key)
		return NERR_INVAL;
	rc = ident_get(s, b, key, profile_id);
	free(key);
	return rc;
}

/* ----------------------------------------------------------------- profiles */

struct hent {
	int64_t t;
	uint64_t seq;
};

/*
 * A loaded profile: the head (the profiles record: everything but the update
 * time and the history), the update time and the history keys as a C array
 * (the history index). The head is either parsed (j) or, when loaded for an
 * event that may not need it, kept as the stored text (raw, j NULL) and then
 * not written back: most events change only the history index (prof_head
 * parses on demand).
 */
struct prof {
	uint64_t id;
	struct json_object *j; /* owned; NULL while the head is only raw */
	char *raw;	       /* owned stored head, while j is NULL */
	size_t raw_len;
	int64_t updated_ms;
	bool legacy;	   /* read from a record that held its history */
	bool old_keys;	   /* its event records have the old 24-byte keys */
	struct hent *hist; /* ascending (t, seq) */
	size_t nhist, hcap;
};

static void prof_fini(struct prof *p)
{
	json_object_put(p->j);
	free(p->raw);
	free(p->hist);
	memset(p, 0, sizeof(*p));
}

static int hent_cmp(const struct hent *a, const struct hent *b)
{
	if (a->t != b->t)
		return a->t < b->t ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return 0;
}

/* Inserts e in order; a key already there is not added again (the history
 * index holds each once: hist_decode refuses repeats). */
static void hist_insert(struct prof *p, struct hent e)
{
	size_t i = p->nhist;

	while (i > 0 && hent_cmp(&p->hist[i - 1], &e) > 0)
		i--;
	if (i > 0 && hent_cmp(&p->hist[i - 1], &e) == 0)
		return;
	if (p->nhist == p->hcap) {
		p->hcap = p->hcap ? 2 * p->hcap : 16;
		p->hist = xrealloc(p->hist, p->hcap * sizeof(*p->hist));
	}
	memmove(p->hist + i + 1, p->hist + i, (p->nhist - i) * sizeof(*p->hist));
	p->hist[i] = e;
	p->nhist++;
}

static bool is_opt(struct json_object *o, const char *key, enum json_type t)
{
	struct json_object *v = jget(o, key);

	return !v || json_object_is_type(v, t);
}

static bool all_of(struct json_object *container, enum json_type t)
{
	if (json_object_is_type(container, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(container); i++)
			if (!json_object_is_type(json_object_array_get_idx(container, i),
						 t))
				return false;
		return true;
	}
	json_object_object_foreach(container, name, v)
	{
		(void)name;
		if (!json_object_is_type(v, t))
			return false;
	}
	return true;
}

/* True if the record has the shape profile.c writes, so the code reading it
 * never meets an array where it expects an object. */
static bool record_shape_ok(struct json_object *j)
{
	struct json_object *ids = jget(j, "identities"), *c, *a, *h;

	if (!ids || !json_object_is_type(ids, json_type_array) ||
	    !all_of(ids, json_type_string))
		return false;
	for (size_t i = 0; i < json_object_array_length(ids); i++)
		if (!strchr(json_object_get_string(json_object_array_get_idx(ids, i)),
			    ':'))
			return false;
	if (!is_opt(j, "traits", json_type_object) ||
	    !is_opt(j, "consent", json_type_object) ||
	    !is_opt(j, "timezone", json_type_object) ||
	    !is_opt(j, "addresses", json_type_object) ||
	    !is_opt(j, "history", json_type_array) ||
	    !is_opt(j, "merged_from", json_type_array))
		return false;
	if (jget(j, "traits") && !all_of(jget(j, "traits"), json_type_object))
		return false;
	if ((c = jget(j, "consent"))) {
		if (!all_of(c, json_type_object))
			return false;
		json_object_object_foreach(c, ch, purposes)
		{
			(void)ch;
			if (!all_of(purposes, json_type_object))
				return false;
		}
	}
	if ((a = jget(j, "addresses")) &&
	    (!is_opt(a, "email", json_type_object) ||
	     !is_opt(a, "phone", json_type_object) ||
	     !is_opt(a, "push", json_type_array) ||
	     (jget(a, "push") && !all_of(jget(a, "push"), json_type_object))))
		return false;
	if (jget(j, "merged_from") && !all_of(jget(j, "merged_from"), json_type_object))
		return false;
	if ((h = jget(j, "history"))) {
		if (!all_of(h, json_type_array))
			return false;
		for (size_t i = 0; i < json_object_array_length(h); i++) {
			struct json_object *e = json_object_array_get_idx(h, i);

			if (json_object_array_length(e) != 2 || !all_of(e, json_type_int))
				return false;
		}
	}
	return true;
}

/*
 * The history index: 'E' (or 'H'), the update time (i64 BE), then per history
 * entry the event time (i64 BE) and the inbox seq (u64 BE), ascending. Binary,
 * so a busy profile's 100 entries cost two copies instead of printing and
 * reading back 200 decimal numbers (a fifth of the engine's time per event).
 * The magic says how the profile's event records are keyed: 'E' by (seq, id),
 * 'H' (written before 2026-11-28) by (id, time, seq).
 */
#define HIST_MAGIC     'E'
#define HIST_MAGIC_OLD 'H'
#define HIST_HEAD      9
#define HIST_ENTRY     16

static bool hist_decode(struct prof *p, const char *val, size_t len)
{
	const unsigned char *v = (const unsigned char *)val;
	size_t n;

	if (len < HIST_HEAD || (v[0] != HIST_MAGIC && v[0] != HIST_MAGIC_OLD) ||
	    (len - HIST_HEAD) % HIST_ENTRY)
		return false;
	p->old_keys = v[0] == HIST_MAGIC_OLD;
	n = (len - HIST_HEAD) / HIST_ENTRY;
	p->updated_ms = (int64_t)store_get_u64(v + 1);
	p->hist = xmalloc((n ? n : 1) * sizeof(*p->hist));
	p->hcap = n ? n : 1;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *e = v + HIST_HEAD + i * HIST_ENTRY;

		p->hist[i].t = (int64_t)store_get_u64(e);
		p->hist[i].seq = store_get_u64(e + 8);
		if (i && hent_cmp(&p->hist[i - 1], &p->hist[i]) >= 0)
			return false; /* prof_fini frees hist */
	}
	p->nhist = n;
	return true;
}

static void hist_save(struct store_batch *b, const struct prof *p)
{
	size_t len = HIST_HEAD + p->nhist * HIST_ENTRY;
	unsigned char k[8], *v = xmalloc(len);

	v[0] = p->old_keys ? HIST_MAGIC_OLD : HIST_MAGIC;
	store_put_u64(v + 1, (uint64_t)p->updated_ms);
	for (size_t i = 0; i < p->nhist; i++) {
		unsigned char *e = v + HIST_HEAD + i * HIST_ENTRY;

		store_put_u64(e, (uint64_t)p->hist[i].t);
		store_put_u64(e + 8, p->hist[i].seq);
	}
	store_put_u64(k, p->id);
	store_batch_put(b, STORE_CF_HISTORY, k, 8, v, len);
	free(v);
}

/* Parses the head of a profile from its stored text (record, len bytes): with
 * legacy, the history and update time it held are taken out of it. */
static bool head_parse(struct prof *p, const char *record, size_t len, bool legacy)
{
	struct json_object *h;

	p->j = parse_record(record, len);
	if (p->j && (!record_shape_ok(p->j) ||
		     (!legacy && (jget(p->j, "history") || jget(p->j, "updated_ms"))))) {
		json_object_put(p->j);
		p->j = NULL;
	}
	if (!p->j)
		return false;
	if (!legacy)
		return true;
	h = jget(p->j, "history");
	for (size_t i = 0; h && i < json_object_array_length(h); i++) {
		struct json_object *e = json_object_array_get_idx(h, i);

		hist_insert(
			p, (struct hent){
				   json_object_get_int64(json_object_array_get_idx(e, 0)),
				   (uint64_t)json_object_get_int64(
					   json_object_array_get_idx(e, 1)),
			   });
	}
	p->updated_ms = jint(p->j, "updated_ms", 0);
	json_object_object_del(p->j, "history");
	json_object_object_del(p->j, "updated_ms");
	p->legacy = true;
	p->old_keys = true;
	return true;
}

/* Parses p's raw head if it is not parsed yet. NERR_CORRUPT (logged). */
static enum nerr prof_head(struct prof *p)
{
	if (p->j)
		return NERR_OK;
	if (!head_parse(p, p->raw, p->raw_len, false)) {
		log_error("profile", "msg=\"unreadable profile record\" profile=%" PRIu64,
			  p->id);
		return NERR_CORRUPT;
	}
	free(p->raw);
	p->raw = NULL;
	return NERR_OK;
}

/*
 * Reads profile pid; lazy leaves the head raw (prof_head parses it). A profile
 * without a history index is one written before it existed: its head holds
 * the history, and is parsed at once. NERR_NOTFOUND, NERR_CORRUPT (logged),
 * NERR_IO.
 */
static enum nerr prof_load_as(struct store *s, struct store_batch *b, uint64_t pid,
			      struct prof *p, bool lazy)
{
	unsigned char k[8];
	char *head = NULL, *hist = NULL;
	size_t hlen = 0, len = 0;
	enum nerr rc;

	memset(p, 0, sizeof(*p));
	p->id = pid;
	store_put_u64(k, pid);
	rc = kv_get(s, b, STORE_CF_PROFILES, k, 8, &head, &hlen);
	if (rc != NERR_OK)
		return rc;
	rc = kv_get(s, b, STORE_CF_HISTORY, k, 8, &hist, &len);
	if (rc == NERR_OK) {
		bool ok = hist_decode(p, hist, len);

		free(hist);
		if (!ok) {
			free(head);
			prof_fini(p);
			log_error("profile",
				  "msg=\"unreadable history index\" profile=%" PRIu64,
				  pid);
			return NERR_CORRUPT;
		}
		p->raw = head;
		p->raw_len = hlen;
		rc = lazy ? NERR_OK : prof_head(p);
		if (rc != NERR_OK)
			prof_fini(p);
		return rc;
	}
	if (rc != NERR_NOTFOUND) {
		free(head);
		return rc;
	}
	if (!head_parse(p, head, hlen, true)) {
		free(head);
		prof_fini(p);
		log_error("profile", "msg=\"unreadable profile record\" profile=%" PRIu64,
			  pid);
		return NERR_CORRUPT;
	}
	free(head);
	return NERR_OK;
}

static enum nerr prof_load(struct store *s, struct store_batch *b, uint64_t pid,
			   struct prof *p)
{
	return prof_load_as(s, b, pid, p, false);
}

/* Writes the history index, and the head if it was parsed (and so may have
 * changed); a raw head is as stored. */
static void prof_save(struct store_batch *b, struct prof *p)
{
	if (p->j) {
		unsigned char k[8];

		store_put_u64(k, p->id);
		put_json(b, STORE_CF_PROFILES, k, 8, p->j);
	}
	hist_save(b, p);
}

static void prof_new(struct prof *p, uint64_t pid, int64_t now_ms)
{
	memset(p, 0, sizeof(*p));
	p->id = pid;
	p->j = json_object_new_object();
	json_object_object_add(p->j, "v", json_object_new_int(FORMAT_VERSION));
	json_object_object_add(p->j, "id", json_object_new_int64((int64_t)pid));
	json_object_object_add(p->j, "created_ms", json_object_new_int64(now_ms));
	p->updated_ms = now_ms;

	json_object_object_add(p->j, "identities", json_object_new_array());
	json_object_object_add(p->j, "traits", json_object_new_object());
}

/* The profile's user_id value (borrowed from its record) or NULL. */
static const char *prof_user_id(struct prof *p)
{
	struct json_object *ids = jget(p->j, "identities");
	size_t n = ids ? json_object_array_length(ids) : 0;

	for (size_t i = 0; i < n; i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(ids, i));

		if (s && strncmp(s, "user_id:", 8) == 0)
			return s + 8;
	}
	return NULL;
}

static size_t prof_ident_count(struct prof *p)
{
	struct json_object *ids = jget(p->j, "identities");

	return ids ? json_object_array_length(ids) : 0;
}

/*
 * Attaches identity key to p unless the cap is reached (a user_id is always
 * attached: a profile holds at most one and losing it would split the person).
 * Returns true if attached; otherwise logs, counts and deletes nothing.
 */
static bool prof_attach(struct store_batch *b, const struct profile_config *cfg,
			struct prof *p, const char *key, struct profile_result *res)
{
	bool is_user = strncmp(key, "user_id:", 8) == 0;

	if (!is_user && prof_ident_count(p) >= cfg->max_identities) {
		const char *colon = strchr(key, ':');

		log_warn("profile",
			 "msg=\"identity cap reached, identity not attached\" "
			 "profile=%" PRIu64 " ns=%.*s cap=%u",
			 p->id, (int)(colon ? colon - key : 0), key, cfg->max_identities);
		res->identities_rejected++;
		return false;
	}
	json_object_array_add(jarr(p->j, "identities"), json_object_new_string(key));
	ident_put(b, key, p->id);
	return true;
}

static enum nerr next_profile_id(struct store_batch *b, uint64_t *pid)
{
	char *val = NULL;
	size_t len = 0;
	unsigned char v[8];
	uint64_t id = 1;
	enum nerr rc = store_batch_get(b, STORE_CF_META, next_id_key,
				       sizeof(next_id_key) - 1, &val, &len);

	if (rc == NERR_OK) {
		if (len != 8) {
			free(val);
			log_error("profile", "msg=\"bad id counter\" len=%zu", len);
			return NERR_CORRUPT;
		}
		id = store_get_u64(val);
		free(val);
	} else if (rc != NERR_NOTFOUND) {
		return rc;
	}
	store_put_u64(v, id + 1);
	store_batch_put(b, STORE_CF_META, next_id_key, sizeof(next_id_key) - 1, v, 8);
	*pid = id;
	return NERR_OK;
}

/* ------------------------------------------------------------------ history */

static bool too_old(const struct profile_config *cfg, int64_t t, int64_t now_ms)
{
	return cfg->history_max_age_ms > 0 && t < now_ms - cfg->history_max_age_ms;
}

/* Drops the oldest records beyond the count cap or older than the age cap. */
static void hist_enforce(struct store_batch *b, const struct profile_config *cfg,
			 struct prof *p, int64_t now_ms)
{
	size_t drop = 0;

	while (drop < p->nhist && (p->nhist - drop > cfg->history_max_events ||
				   too_old(cfg, p->hist[drop].t, now_ms))) {
		unsigned char k[EVENT_KEY_MAX];
		size_t klen = event_key(k, p->old_keys, p->id, p->hist[drop].t,
					p->hist[drop].seq);

		store_batch_delete(b, STORE_CF_EVENTS, k, klen);
		drop++;
	}
	if (drop) {
		memmove(p->hist, p->hist + drop, (p->nhist - drop) * sizeof(*p->hist));
		p->nhist -= drop;
	}
}

/* Records the event in p's history; text (may be NULL) is ev already
 * serialized, stored as it is instead of printing ev again. */
static void hist_add_event(struct store_batch *b, const struct profile_config *cfg,
			   struct prof *p, struct json_object *ev, const char *text,
			   size_t text_len, int64_t ts_ms, uint64_t seq, int64_t now_ms)
{
	unsigned char k[EVENT_KEY_MAX];
	size_t klen;
	struct hent e = {ts_ms < 0 ? 0 : ts_ms, seq};

	if (cfg->history_max_events == 0 || too_old(cfg, e.t, now_ms))
		return;
	/* At the count cap, an event older than all kept ones would be dropped
	 * at once: do not write it at all. */
	if (p->nhist >= cfg->history_max_events && hent_cmp(&e, &p->hist[0]) < 0)
		return;
	klen = event_key(k, p->old_keys, p->id, e.t, e.seq);
	if (text)
		store_batch_put(b, STORE_CF_EVENTS, k, klen, text, text_len);
	else
		put_json(b, STORE_CF_EVENTS, k, klen, ev);
	hist_insert(p, e);
	hist_enforce(b, cfg, p, now_ms);
}

/* Moves the event record e of profile from (keyed in its form) to profile
 * to's key in to's form. NERR_NOTFOUND (logged: the record stays listed, as
 * it was) or NERR_IO from the store. */
static enum nerr move_record(struct store_batch *b, const struct prof *from,
			     const struct prof *to, const struct hent *e)
{
	unsigned char fk[EVENT_KEY_MAX], tk[EVENT_KEY_MAX];
	size_t flen = event_key(fk, from->old_keys, from->id, e->t, e->seq);
	size_t tlen = event_key(tk, to->old_keys, to->id, e->t, e->seq);
	char *val = NULL;
	size_t len = 0;
	enum nerr rc = store_batch_get(b, STORE_CF_EVENTS, fk, flen, &val, &len);

	if (rc == NERR_NOTFOUND)
		log_warn("profile", "msg=\"history record missing\" profile=%" PRIu64,
			 from->id);
	if (rc != NERR_OK)
		return rc;
	store_batch_put(b, STORE_CF_EVENTS, tk, tlen, val, len);
	store_batch_delete(b, STORE_CF_EVENTS, fk, flen);
	free(val);
	return NERR_OK;
}

/*
 * Moves the event records of a profile with old keys to new keys (all in b)
 * and marks it new: its history index is written with the new magic by the
 * prof_save that must follow. A record already missing stays listed, as it
 * was (profile_check reports it). NERR_IO from the store.
 */
static enum nerr prof_migrate(struct store_batch *b, struct prof *p)
{
	struct prof to = {.id = p->id}; /* the same profile, new keys */

	if (!p->old_keys)
		return NERR_OK;

	for (size_t i = 0; i < p->nhist; i++) {
		enum nerr rc = move_record(b, p, &to, &p->hist[i]);

		if (rc != NERR_OK && rc != NERR_NOTFOUND)
			return rc;
	}
	p->old_keys = false;
	return NERR_OK;
}

/* ------------------------------------------------------------------- merging */

/* Newest-wins union of two {name: {.., "t"}} maps: src entries replace dst ones
 * only when strictly newer (ties keep the survivor's). */
static void merge_entries(struct json_object *dst, struct json_object *src)
{
	if (!src || !json_object_is_type(src, json_type_object))
		return;
	json_object_object_foreach(src, name, e)
	{
		struct json_object *d = jget(dst, name);

		if (!d || entry_time(e) > entry_time(d))
			json_object_object_add(dst, name, json_object_get(e));
	}
}

static void push_cap(struct json_object *push)
{
	while (json_object_array_length(push) > PUSH_TOKENS_MAX) {
		size_t n = json_object_array_length(push), oldest = 0;

		for (size_t i = 1; i < n; i++)
			if (entry_time(json_object_array_get_idx(push, i)) <
			    entry_time(json_object_array_get_idx(push, oldest)))
				oldest = i;
		json_object_array_del_idx(push, oldest, 1);
	}
}

/* Adds or refreshes a push token entry (newest wins on the same token). */
static void push_upsert(struct json_object *push, struct json_object *entry)
{
	const char *tok = jstr(entry, "token");
	size_t n = json_object_array_length(push);

	if (!tok)
		return;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(push, i);
		const char *t = jstr(e, "token");

		if (t && strcmp(t, tok) == 0) {
			if (entry_time(entry) > entry_time(e))
				json_object_array_put_idx(push, i,
							  json_object_get(entry));
			return;
		}
	}
	json_object_array_add(push, json_object_get(entry));
	push_cap(push);
}

/*
 * Moves everything of src into dst and deletes src's records: identities
 * (re-pointed; beyond the cap deleted and counted), traits, consents, time zone
 * and addresses (newest wins), history records (re-keyed), merge log.
 */
static enum nerr merge_into(struct store_batch *b, const struct profile_config *cfg,
			    struct prof *dst, struct prof *src, int64_t now_ms,
			    struct profile_result *res)
{
	struct json_object *ids = jget(src->j, "identities");
	size_t n = ids ? json_object_array_length(ids) : 0;
	unsigned char k[8];

	for (int pass = 0; pass < 2;
	     pass++) /* user_id first, so the cap never drops it */
		for (size_t i = 0; i < n; i++) {
			const char *key =
				json_object_get_string(json_object_array_get_idx(ids, i));
			bool is_user = key && strncmp(key, "user_id:", 8) == 0;

			if (!key || is_user != (pass == 0))
				continue;
			if (!prof_attach(b, cfg, dst, key, res))
				store_batch_delete(b, STORE_CF_IDENTITIES, key,
						   strlen(key));
		}

	merge_entries(jobj(dst->j, "traits"), jget(src->j, "traits"));

	struct json_object *sc = jget(src->j, "consent");

	if (sc && json_object_is_type(sc, json_type_object)) {
		struct json_object *dc = jobj(dst->j, "consent");

		json_object_object_foreach(sc, ch, purposes)
		{
			merge_entries(jobj(dc, ch), purposes);
		}
	}

	struct json_object *stz = jget(src->j, "timezone");

	if (stz && entry_time(stz) > entry_time(jget(dst->j, "timezone")))
		json_object_object_add(dst->j, "timezone", json_object_get(stz));

	struct json_object *sa = jget(src->j, "addresses");

	if (sa && json_object_is_type(sa, json_type_object)) {
		struct json_object *da = jobj(dst->j, "addresses");
		struct json_object *spush = jget(sa, "push");

		for (int i = 0; i < 2; i++) {
			const char *f = i ? "phone" : "email";
			struct json_object *e = jget(sa, f);

			if (e && entry_time(e) > entry_time(jget(da, f)))
				json_object_object_add(da, f, json_object_get(e));
		}
		if (spush && json_object_is_type(spush, json_type_array)) {
			struct json_object *dpush = jarr(da, "push");
			size_t pn = json_object_array_length(spush);

			for (size_t i = 0; i < pn; i++)
				push_upsert(dpush, json_object_array_get_idx(spush, i));
		}
	}

	for (size_t i = 0; i < src->nhist; i++) {
		enum nerr rc = move_record(b, src, dst, &src->hist[i]);

		if (rc == NERR_NOTFOUND)
			continue;
		if (rc != NERR_OK)
			return rc;
		hist_insert(dst, src->hist[i]);
	}
	hist_enforce(b, cfg, dst, now_ms);

	struct json_object *mf = jarr(dst->j, "merged_from");
	struct json_object *smf = jget(src->j, "merged_from");
	struct json_object *rec = json_object_new_object();

	if (smf && json_object_is_type(smf, json_type_array))
		for (size_t i = 0; i < json_object_array_length(smf); i++)
			json_object_array_add(
				mf, json_object_get(json_object_array_get_idx(smf, i)));
	json_object_object_add(rec, "id", json_object_new_int64((int64_t)src->id));
	json_object_object_add(rec, "at_ms", json_object_new_int64(now_ms));
	json_object_array_add(mf, rec);

	int64_t sc_ms = jint(src->j, "created_ms", now_ms);

	if (sc_ms < jint(dst->j, "created_ms", now_ms))
		json_object_object_add(dst->j, "created_ms",
				       json_object_new_int64(sc_ms));

	store_put_u64(k, src->id);
	store_batch_delete(b, STORE_CF_PROFILES, k, 8);
	store_batch_delete(b, STORE_CF_HISTORY, k, 8);
	log_info("profile", "msg=merged from=%" PRIu64 " into=%" PRIu64, src->id,
		 dst->id);
	ASSERT(res->merged < PROFILE_MERGE_MAX);
	res->merged_ids[res->merged++] = src->id;
	return NERR_OK;
}

/* ------------------------------------------------------------ event content */

static void set_trait(const struct profile_config *cfg, struct prof *p, const char *name,
		      struct json_object *v, int64_t ts_ms)
{
	struct json_object *traits = jobj(p->j, "traits");
	struct json_object *cur = jget(traits, name);

	if (cur && entry_time(cur) > ts_ms)
		return; /* a newer event already set (or removed) it */
	if (!cur &&
	    json_object_object_length(traits) >=
		    (int)(cfg->max_traits ? cfg->max_traits : MAX_TRAITS_DEFAULT)) {
		log_warn("profile",
			 "msg=\"trait cap reached, trait not kept\" profile=%" PRIu64
			 " cap=%u",
			 p->id, cfg->max_traits);
		return;
	}
	json_object_object_add(traits, name, new_entry("v", json_object_get(v), ts_ms));
}

static bool consent_status(struct json_object *v, const char **out)
{
	const char *s = v && json_object_is_type(v, json_type_string)
				? json_object_get_string(v)
				: NULL;

	if (s && (strcmp(s, "granted") == 0 || strcmp(s, "denied") == 0)) {
		*out = s;
		return true;
	}
	return false;
}

static void set_consent(struct json_object *chobj, const char *purpose,
			const char *status, int64_t ts_ms)
{
	struct json_object *cur = jget(chobj, purpose);

	if (cur && entry_time(cur) > ts_ms)
		return;
	json_object_object_add(chobj, purpose,
			       new_entry("s", json_object_new_string(status), ts_ms));
}

/* traits.consent: {"email": "granted"} or {"email": {"marketing": "denied"}}. */
static void apply_consent(struct prof *p, struct json_object *c, int64_t ts_ms)
{
	static const char *const channels[] = {"email", "sms", "push", NULL};

	if (!json_object_is_type(c, json_type_object)) {
		log_warn("profile",
			 "msg=\"consent ignored: not an object\" profile=%" PRIu64,
			 p->id);
		return;
	}
	json_object_object_foreach(c, ch, v)
	{
		const char *status;
		char purpose[NS_MAX_BYTES + 1];
		bool known = false;

		for (int i = 0; channels[i]; i++)
			known |= strcmp(ch, channels[i]) == 0;
		if (!known) {
			log_warn("profile",
				 "msg=\"consent for unknown channel ignored\" "
				 "profile=%" PRIu64,
				 p->id);
			continue;
		}
		struct json_object *chobj = jobj(jobj(p->j, "consent"), ch);

		if (consent_status(v, &status)) {
			/* Channel-wide: marketing, transactional and every purpose
			 * already recorded for the channel. */
			set_consent(chobj, "marketing", status, ts_ms);
			set_consent(chobj, "transactional", status, ts_ms);
			json_object_object_foreach(chobj, pname, pv)
			{
				(void)pv;
				if (strcmp(pname, "marketing") &&
				    strcmp(pname, "transactional"))
					set_consent(chobj, pname, status, ts_ms);
			}
			continue;
		}
		if (!v || !json_object_is_type(v, json_type_object)) {
			log_warn("profile",
				 "msg=\"consent value ignored\" profile=%" PRIu64, p->id);
			continue;
		}
		json_object_object_foreach(v, pn, ps)
		{
			if (!norm_namespace(pn, purpose) ||
			    !consent_status(ps, &status)) {
				log_warn("profile",
					 "msg=\"consent purpose ignored\" "
					 "profile=%" PRIu64,
					 p->id);
				continue;
			}
			set_consent(chobj, purpose, status, ts_ms);
		}
	}
}

static void set_address(struct prof *p, const char *field, const char *value,
			int64_t ts_ms)
{
	struct json_object *a = jobj(p->j, "addresses");
	struct json_object *cur = jget(a, field);

	if (cur && entry_time(cur) > ts_ms)
		return;
	json_object_object_add(
		a, field,
		new_entry("v", value ? json_object_new_string(value) : NULL, ts_ms));
}

/* Traits, consent, addresses, time zone; traits is the merged trait object. */
static void apply_content(const struct profile_config *cfg, struct prof *p,
			  struct json_object *ev, struct json_object *traits,
			  int64_t ts_ms)
{
	struct json_object *ctx = jget(ev, "context");
	struct json_object *dev = jget(ctx, "device");
	const char *tz = jstr(ctx, "timezone");
	const char *token = jstr(dev, "token");

	json_object_object_foreach(traits, name, v)
	{
		if (strcmp(name, "consent") == 0) {
			if (v)
				apply_consent(p, v, ts_ms);
			continue;
		}
		set_trait(cfg, p, name, v, ts_ms);
		if (strcmp(name, "email") == 0 || strcmp(name, "phone") == 0) {
			char *norm = NULL;

			if (v && json_object_is_type(v, json_type_string))
				norm = name[0] == 'e'
					       ? norm_email(json_object_get_string(v))
					       : norm_phone(json_object_get_string(v));
			if (norm || !v)
				set_address(p, name, norm, ts_ms);
			free(norm);
		}
	}
	if (tz) {
		struct json_object *cur = jget(p->j, "timezone");
		const char *cur_tz = jstr(cur, "v");

		if (cur_tz && strcmp(cur_tz, tz) == 0) {
			/* Same zone as stored: already validated; refresh its time. */
			if (entry_time(cur) < ts_ms)
				json_object_object_add(cur, "t",
						       json_object_new_int64(ts_ms));
		} else if (!tz_valid(tz))
			log_warn("profile",
				 "msg=\"invalid time zone ignored\" profile=%" PRIu64
				 " tz=\"%.64s\"",
				 p->id, tz);
		else if (!cur || entry_time(cur) <= ts_ms)
			json_object_object_add(
				p->j, "timezone",
				new_entry("v", json_object_new_string(tz), ts_ms));
	}
	if (token && *token && strlen(token) <= VALUE_MAX_BYTES) {
		struct json_object *e = json_object_new_object();
		const char *type = jstr(dev, "type");

		json_object_object_add(e, "token", json_object_new_string(token));
		json_object_object_add(e, "type",
				       type ? json_object_new_string(type) : NULL);
		json_object_object_add(e, "t", json_object_new_int64(ts_ms));
		push_upsert(jarr(jobj(p->j, "addresses"), "push"), e);
		json_object_put(e);
	}
}

/* context.traits, overlaid with traits for identify (group traits describe the
 * group, not the person). Returns a new object sharing the values. */
static struct json_object *event_traits(struct json_object *ev, const char *type)
{
	struct json_object *out = json_object_new_object();
	struct json_object *src[2] = {jget(jget(ev, "context"), "traits"),
				      strcmp(type, "identify") == 0 ? jget(ev, "traits")
								    : NULL};

	for (int i = 0; i < 2; i++) {
		if (!src[i] || !json_object_is_type(src[i], json_type_object))
			continue;
		json_object_object_foreach(src[i], name, v)
		{
			json_object_object_add(out, name, json_object_get(v));
		}
	}
	return out;
}

/* The event's identities in priority order (see docs/profiles.md). */
static enum nerr collect_identities(struct store_batch *b,
				    const struct profile_config *cfg,
				    struct json_object *ev, const char *type,
				    struct json_object *traits, struct ident_list *l)
{
	char tmp[32];
	const char *uid = json_ident_string(jget(ev, "userId"), tmp, sizeof(tmp));
	struct json_object *ext = jget(jget(ev, "context"), "externalIds");

	ident_add(l, "user_id", uid);
	if (strcmp(type, "alias") == 0) {
		char tmp2[32];
		const char *prev =
			json_ident_string(jget(ev, "previousId"), tmp2, sizeof(tmp2));
		const char *ns = "anonymous_id";
		size_t ns_len;
		char *key = prev ? make_key("user_id", prev, &ns_len) : NULL;
		uint64_t pid;
		enum nerr rc = key ? ident_get(NULL, b, key, &pid) : NERR_NOTFOUND;

		free(key);
		if (rc == NERR_OK)
			ns = "user_id";
		else if (rc != NERR_NOTFOUND)
			return rc;
		ident_add(l, ns, prev);
	}
	ident_add(l, "anonymous_id",
		  json_ident_string(jget(ev, "anonymousId"), tmp, sizeof(tmp)));
	ident_add(l, "email", jstr(traits, "email"));
	ident_add(l, "phone", jstr(traits, "phone"));
	if (ext && json_object_is_type(ext, json_type_array))
		for (size_t i = 0; i < json_object_array_length(ext); i++) {
			struct json_object *x = json_object_array_get_idx(ext, i);

			ident_add(l, jstr(x, "type"),
				  json_ident_string(jget(x, "id"), tmp, sizeof(tmp)));
		}
	for (size_t i = 0; cfg->identity_traits && cfg->identity_traits[i]; i++)
		ident_add(l, cfg->identity_traits[i],
			  json_ident_string(jget(traits, cfg->identity_traits[i]), tmp,
					    sizeof(tmp)));
	return NERR_OK;
}

/* ------------------------------------------------------------------- apply */

static bool is_history_type(const char *type)
{
	return strcmp(type, "track") == 0 || strcmp(type, "page") == 0 ||
	       strcmp(type, "screen") == 0 || strcmp(type, "group") == 0;
}

/* True if some identity of the event is to be attached to the profile. */
static bool needs_attach(const struct ident_list *ids)
{
	for (size_t i = 0; i < ids->n; i++)
		if (!ids->v[i].mapped && !ids->v[i].deferred && !ids->v[i].conflict)
			return true;
	return false;
}

/* True if apply_content may change the head: the tests it makes, in short. */
static bool has_content(struct json_object *ev, struct json_object *traits)
{
	struct json_object *ctx = jget(ev, "context");
	const char *token = jstr(jget(ctx, "device"), "token");

	return json_object_object_length(traits) > 0 || jstr(ctx, "timezone") ||
	       (token && *token);
}

enum nerr profile_apply_event(struct store_batch *b, const struct profile_config *cfg,
			      struct json_object *event, uint64_t seq, int64_t ts_ms,
			      int64_t now_ms, struct profile_result *res,
			      struct nerr_msg *msg)
{
	return profile_apply_event_text(b, cfg, event, NULL, 0, seq, ts_ms, now_ms, res,
					msg);
}

enum nerr profile_apply_event_text(struct store_batch *b,
				   const struct profile_config *cfg,
				   struct json_object *event, const char *text,
				   size_t text_len, uint64_t seq, int64_t ts_ms,
				   int64_t now_ms, struct profile_result *res,
				   struct nerr_msg *msg)
{
	struct ident_list ids = {0};
	struct prof *members = NULL;
	size_t nmembers = 0, surv = 0;
	char *set_uid = NULL;
	const char *type = jstr(event, "type");
	struct json_object *traits = NULL;
	enum nerr rc = NERR_OK;

	memset(res, 0, sizeof(*res));
	if (!type)
		return nerr_set(msg, NERR_INVAL, "type", "event has no type");
	traits = event_traits(event, type);
	rc = collect_identities(b, cfg, event, type, traits, &ids);
	if (rc != NERR_OK)
		goto out;
	if (ids.n == 0) {
		rc = nerr_set(msg, NERR_INVAL, "userId",
			      "event carries no usable identity");
		goto out;
	}
	members = xcalloc(ids.n, sizeof(*members));

	/* Resolve: the event's user_id (if any) claims the set first; then each
	 * mapped identity in priority order brings its profile in unless that
	 * profile holds a different user_id. */
	for (size_t i = 0; i < ids.n; i++) {
		struct ident *id = &ids.v[i];
		struct prof p;
		const char *puid;
		bool have = false;

		if (ident_is_ns(id, "user_id")) {
			if (set_uid && strcmp(ident_value(id), set_uid) != 0) {
				id->conflict = true;
				continue;
			}
			if (!set_uid)
				set_uid = xstrdup(ident_value(id));
		}
		rc = ident_get(NULL, b, id->key, &id->pid);
		if (rc == NERR_NOTFOUND) {
			rc = NERR_OK;
			continue;
		}
		if (rc != NERR_OK)
			goto out;
		id->mapped = true;
		for (size_t m = 0; m < nmembers; m++)
			have |= members[m].id == id->pid;
		if (have)
			continue;
		rc = prof_load_as(NULL, b, id->pid, &p, true);
		if (rc == NERR_NOTFOUND) {
			/* A dangling identity (profile_check reports these):
			 * re-attach it like a new one. */
			log_warn("profile", "msg=\"identity points at missing profile\"");
			id->mapped = false;
			rc = NERR_OK;
			continue;
		}
		if (rc != NERR_OK)
			goto out;
		if (ident_is_ns(id, "user_id")) {
			/* The profile a user_id maps to holds that user_id
			 * (invariants 1 and 4): no need to read its head. */
			puid = ident_value(id);
		} else if (ids.n == 1) {
			puid = NULL; /* nothing left for it to decide */
		} else {
			rc = prof_head(&p);
			if (rc != NERR_OK) {
				prof_fini(&p);
				goto out;
			}
			puid = prof_user_id(&p);
		}
		if (set_uid && puid && strcmp(set_uid, puid) != 0) {
			id->conflict = true;
			prof_fini(&p);
			continue;
		}
		if (nmembers == PROFILE_MERGE_MAX + 1) {
			/* More merges in one event are deferred: the identity
			 * stays, and a later event carrying it links them. */
			log_warn("profile",
				 "msg=\"too many profiles to merge in one event, "
				 "identity left\" max=%d",
				 PROFILE_MERGE_MAX);
			id->deferred = true;
			prof_fini(&p);
			continue;
		}
		if (!set_uid && puid)
			set_uid = xstrdup(puid);
		members[nmembers++] = p;
	}

	if (nmembers == 0) {
		uint64_t pid;

		rc = next_profile_id(b, &pid);
		if (rc != NERR_OK)
			goto out;
		prof_new(&members[0], pid, now_ms);
		nmembers = 1;
		res->created = true;
		log_debug("profile", "msg=created profile=%" PRIu64, pid);
	}
	for (size_t m = 1; m < nmembers; m++)
		if (members[m].id < members[surv].id)
			surv = m;
	/* Most events change only the history and the update time: the heads
	 * are parsed only for a merge, a new identity or new content. */
	if (nmembers > 1 || needs_attach(&ids) || has_content(event, traits)) {
		for (size_t m = 0; m < nmembers; m++) {
			rc = prof_head(&members[m]);
			if (rc != NERR_OK)
				goto out;
		}
	}

	/* The profile written here ends with new event keys: if it has old ones,
	 * its records move now, before a merge adds any. The merged profiles'
	 * records move straight from their keys, old or new, to new ones. */
	rc = prof_migrate(b, &members[surv]);
	if (rc != NERR_OK)
		goto out;
	for (size_t m = 0; m < nmembers; m++) {
		if (m == surv)
			continue;
		rc = merge_into(b, cfg, &members[surv], &members[m], now_ms, res);
		if (rc != NERR_OK)
			goto out;
	}
	for (size_t i = 0; i < ids.n; i++) {
		if (ids.v[i].conflict) {
			const struct ident *id = &ids.v[i];

			log_info("profile",
				 "msg=\"identity left on its profile: would join two "
				 "user_ids\" profile=%" PRIu64 " ns=%.*s",
				 members[surv].id, (int)id->ns_len, id->key);
			res->identities_conflicting++;
			continue;
		}
		if (!ids.v[i].mapped && !ids.v[i].deferred)
			prof_attach(b, cfg, &members[surv], ids.v[i].key, res);
	}

	apply_content(cfg, &members[surv], event, traits, ts_ms);
	if (is_history_type(type))
		hist_add_event(b, cfg, &members[surv], event, text, text_len, ts_ms, seq,
			       now_ms);
	members[surv].updated_ms = now_ms;
	prof_save(b, &members[surv]);
	res->profile_id = members[surv].id;
out:
	for (size_t m = 0; m < nmembers; m++)
		prof_fini(&members[m]);
	free(members);
	free(set_uid);
	ident_list_fini(&ids);
	json_object_put(traits);
	if (rc != NERR_OK && rc != NERR_INVAL)
		nerr_set(msg, rc, NULL, "profile update failed: %s", nerr_str(rc));
	return rc;
}

/* ------------------------------------------------------------------ output */

static struct json_object *identities_map(struct prof *p)
{
	struct json_object *out = json_object_new_object();
	struct json_object *ids = jget(p->j, "identities");
	size_t n = ids ? json_object_array_length(ids) : 0;

	for (size_t i = 0; i < n; i++) {
		const char *key =
			json_object_get_string(json_object_array_get_idx(ids, i));
		const char *colon = key ? strchr(key, ':') : NULL;
		char ns[NS_MAX_BYTES + 1];

		if (!colon || colon - key > NS_MAX_BYTES)
			continue;
		memcpy(ns, key, (size_t)(colon - key));
		ns[colon - key] = '\0';
		json_object_array_add(jarr(out, ns), json_object_new_string(colon + 1));
	}
	return out;
}

static struct json_object *traits_map(struct prof *p)
{
	struct json_object *out = json_object_new_object();
	struct json_object *traits = jget(p->j, "traits");

	if (traits && json_object_is_type(traits, json_type_object)) {
		json_object_object_foreach(traits, name, e)
		{
			struct json_object *v = jget(e, "v");

			if (v)
				json_object_object_add(out, name, json_object_get(v));
		}
	}
	return out;
}

/* {channel: {purpose: status}} or, with times, {channel: {purpose: rfc3339}}. */
static struct json_object *consent_map(struct prof *p, bool times)
{
	struct json_object *out = json_object_new_object();
	struct json_object *c = jget(p->j, "consent");

	if (!c || !json_object_is_type(c, json_type_object))
		return out;
	json_object_object_foreach(c, ch, purposes)
	{
		struct json_object *o = json_object_new_object();

		if (json_object_is_type(purposes, json_type_object)) {
			json_object_object_foreach(purposes, pn, e)
			{
				const char *s = jstr(e, "s");

				if (!s)
					continue;
				json_object_object_add(o, pn,
						       times ? new_time(entry_time(e))
							     : json_object_new_string(s));
			}
		}
		json_object_object_add(out, ch, o);
	}
	return out;
}

static struct json_object *timezone_value(struct prof *p)
{
	const char *tz = jstr(jget(p->j, "timezone"), "v");

	return tz ? json_object_new_string(tz) : NULL;
}

static struct json_object *addresses_map(struct prof *p)
{
	struct json_object *out = json_object_new_object();
	struct json_object *a = jget(p->j, "addresses");
	struct json_object *push = jget(a, "push");

	for (int i = 0; i < 2; i++) {
		const char *f = i ? "phone" : "email";
		const char *v = jstr(jget(a, f), "v");

		if (v)
			json_object_object_add(out, f, json_object_new_string(v));
	}
	if (push && json_object_is_type(push, json_type_array)) {
		struct json_object *arr = json_object_new_array();

		for (size_t i = 0; i < json_object_array_length(push); i++) {
			struct json_object *e = json_object_array_get_idx(push, i);
			struct json_object *o = json_object_new_object();
			const char *type = jstr(e, "type");

			json_object_object_add(
				o, "token",
				json_object_new_string(jstr(e, "token") ? jstr(e, "token")
									: ""));
			json_object_object_add(
				o, "type", type ? json_object_new_string(type) : NULL);
			json_object_object_add(o, "updated_at", new_time(entry_time(e)));
			json_object_array_add(arr, o);
		}
		json_object_object_add(out, "push", arr);
	}
	return out;
}

/* The profile's history records with event time >= since_ms, newest first. */
static enum nerr history_array(struct store *s, struct store_batch *b, struct prof *p,
			       int64_t since_ms, struct json_object **out)
{
	struct json_object *events = json_object_new_array();

	for (size_t i = p->nhist; i-- > 0 && p->hist[i].t >= since_ms;) {
		unsigned char k[EVENT_KEY_MAX];
		char *val = NULL;
		size_t len = 0, klen = event_key(k, p->old_keys, p->id, p->hist[i].t,
						 p->hist[i].seq);
		struct json_object *e;
		enum nerr rc;

		rc = kv_get(s, b, STORE_CF_EVENTS, k, klen, &val, &len);
		if (rc == NERR_NOTFOUND)
			continue; /* profile_check reports it */
		if (rc != NERR_OK) {
			json_object_put(events);
			return rc;
		}
		e = parse_record(val, len);
		free(val);
		if (e)
			json_object_array_add(events, e);
	}
	*out = events;
	return NERR_OK;
}

enum nerr profile_history_json(struct store *s, struct store_batch *b,
			       uint64_t profile_id, int64_t since_ms,
			       struct json_object **out)
{
	struct prof p;
	enum nerr rc = prof_load_as(s, b, profile_id, &p, true);

	if (rc != NERR_OK)
		return rc;
	rc = history_array(s, b, &p, since_ms, out);
	prof_fini(&p);
	return rc;
}

enum nerr profile_history_keys(struct store *s, struct store_batch *b,
			       uint64_t profile_id, struct profile_hkey **out, size_t *n)
{
	struct prof p;
	/* Lazy: the keys are in the history index, the head is not needed. */
	enum nerr rc = prof_load_as(s, b, profile_id, &p, true);

	if (rc != NERR_OK)
		return rc;
	*n = p.nhist;
	*out = xmalloc((p.nhist ? p.nhist : 1) * sizeof(**out));
	for (size_t i = 0; i < p.nhist; i++) {
		(*out)[i].t = p.hist[i].t;
		(*out)[i].seq = p.hist[i].seq;
	}
	prof_fini(&p);
	return NERR_OK;
}

enum nerr profile_history_event(struct store *s, struct store_batch *b,
				uint64_t profile_id, const struct profile_hkey *key,
				struct json_object **out)
{
	unsigned char k[EVENT_KEY_MAX];
	char *val = NULL;
	size_t len = 0;
	enum nerr rc;

	/* The key does not say the profile's form: the new key first (every
	 * profile the engine wrote since has it), then the old one. A (seq, id)
	 * record exists only if that profile holds that event. */
	rc = kv_get(s, b, STORE_CF_EVENTS, k,
		    event_key(k, false, profile_id, key->t, key->seq), &val, &len);
	if (rc == NERR_NOTFOUND)
		rc = kv_get(s, b, STORE_CF_EVENTS, k,
			    event_key(k, true, profile_id, key->t, key->seq), &val, &len);
	if (rc != NERR_OK)
		return rc;
	*out = parse_record(val, len);
	free(val);
	return *out ? NERR_OK : NERR_CORRUPT;
}

enum nerr profile_get_json(struct store *s, struct store_batch *b, uint64_t profile_id,
			   struct json_object **out)
{
	struct prof p;
	struct json_object *o, *events, *mf, *smf;
	enum nerr rc = prof_load(s, b, profile_id, &p);

	if (rc != NERR_OK)
		return rc;
	o = json_object_new_object();
	json_object_object_add(o, "id", new_id_string(profile_id));
	json_object_object_add(o, "created_at", new_time(jint(p.j, "created_ms", 0)));
	json_object_object_add(o, "updated_at", new_time(p.updated_ms));
	json_object_object_add(o, "identities", identities_map(&p));
	json_object_object_add(o, "traits", traits_map(&p));
	json_object_object_add(o, "consent", consent_map(&p, false));
	json_object_object_add(o, "consent_updated_at", consent_map(&p, true));
	json_object_object_add(o, "timezone", timezone_value(&p));
	json_object_object_add(o, "addresses", addresses_map(&p));
	rc = history_array(s, b, &p, INT64_MIN, &events);
	if (rc != NERR_OK) {
		json_object_put(o);
		prof_fini(&p);
		return rc;
	}
	json_object_object_add(o, "events", events);
	mf = json_object_new_array();
	smf = jget(p.j, "merged_from");
	for (size_t i = 0; smf && json_object_is_type(smf, json_type_array) &&
			   i < json_object_array_length(smf);
	     i++) {
		struct json_object *e = json_object_array_get_idx(smf, i);
		struct json_object *r = json_object_new_object();

		json_object_object_add(r, "id",
				       new_id_string((uint64_t)jint(e, "id", 0)));
		json_object_object_add(r, "at", new_time(jint(e, "at_ms", 0)));
		json_object_array_add(mf, r);
	}
	json_object_object_add(o, "merged_from", mf);
	prof_fini(&p);
	*out = o;
	return NERR_OK;
}

enum nerr profile_view_json(struct store *s, struct store_batch *b, uint64_t profile_id,
			    struct json_object **out)
{
	struct prof p;
	struct json_object *o;
	enum nerr rc = prof_load(s, b, profile_id, &p);

	if (rc != NERR_OK)
		return rc;
	o = json_object_new_object();
	json_object_object_add(o, "id", new_id_string(profile_id));
	json_object_object_add(o, "identities", identities_map(&p));
	json_object_object_add(o, "traits", traits_map(&p));
	json_object_object_add(o, "consent", consent_map(&p, false));
	json_object_object_add(o, "timezone", timezone_value(&p));
	json_object_object_add(o, "audiences", json_object_new_array());
	json_object_object_add(o, "computed", json_object_new_object());
	prof_fini(&p);
	*out = o;
	return NERR_OK;
}

/* ------------------------------------------------------------------- erase */

enum nerr profile_erase(struct store_batch *b, uint64_t profile_id)
{
	struct prof p;
	struct json_object *ids;
	unsigned char k[8];
	enum nerr rc = prof_load(NULL, b, profile_id, &p);

	if (rc != NERR_OK)
		return rc;
	ids = jget(p.j, "identities");
	for (size_t i = 0; ids && i < json_object_array_length(ids); i++) {
		const char *key =
			json_object_get_string(json_object_array_get_idx(ids, i));
		uint64_t pid;

		if (!key)
			continue;
		rc = ident_get(NULL, b, key, &pid);
		if (rc == NERR_OK && pid == profile_id)
			store_batch_delete(b, STORE_CF_IDENTITIES, key, strlen(key));
		else if (rc != NERR_OK && rc != NERR_NOTFOUND && rc != NERR_CORRUPT)
			goto out;
	}
	for (size_t i = 0; i < p.nhist; i++) {
		unsigned char ek[EVENT_KEY_MAX];

		store_batch_delete(b, STORE_CF_EVENTS, ek,
				   event_key(ek, p.old_keys, profile_id, p.hist[i].t,
					     p.hist[i].seq));
	}
	store_put_u64(k, profile_id);
	store_batch_delete(b, STORE_CF_PROFILES, k, 8);
	store_batch_delete(b, STORE_CF_HISTORY, k, 8);
	log_info("profile", "msg=erased profile=%" PRIu64, profile_id);
	rc = NERR_OK;
out:
	prof_fini(&p);
	return rc;
}

/* ------------------------------------------------------------------- check */

/* The last profile loaded by the check, so ordered scans do not reload it. */
struct check_cache {
	uint64_t id;
	enum nerr rc; /* of the load; NERR_OK means p is valid */
	bool valid;
	struct prof p;
};

static enum nerr cache_get(struct store *s, struct check_cache *c, uint64_t pid)
{
	if (c->valid && c->id == pid)
		return c->rc;
	if (c->valid && c->rc == NERR_OK)
		prof_fini(&c->p);
	c->rc = prof_load(s, NULL, pid, &c->p);
	c->id = pid;
	c->valid = true;
	return c->rc;
}

static void cache_fini(struct check_cache *c)
{
	if (c->valid && c->rc == NERR_OK)
		prof_fini(&c->p);
}

static bool prof_lists(struct prof *p, const char *key, size_t klen)
{
	struct json_object *ids = jget(p->j, "identities");

	for (size_t i = 0; ids && i < json_object_array_length(ids); i++) {
		struct json_object *e = json_object_array_get_idx(ids, i);

		if ((size_t)json_object_get_string_len(e) == klen &&
		    memcmp(json_object_get_string(e), key, klen) == 0)
			return true;
	}
	return false;
}

static void check_profile(struct store *s, struct prof *p, uint64_t next_id,
			  struct buf *problems, unsigned *nproblems)
{
	struct json_object *ids = jget(p->j, "identities");
	unsigned users = 0;

	if ((uint64_t)jint(p->j, "id", -1) != p->id) {
		buf_printf(problems,
			   "profile %" PRIu64 ": record id %" PRId64
			   " differs from its key\n",
			   p->id, jint(p->j, "id", -1));
		(*nproblems)++;
	}
	if (next_id && p->id >= next_id) {
		buf_printf(problems,
			   "profile %" PRIu64 ": id not below the id counter %" PRIu64
			   "\n",
			   p->id, next_id);
		(*nproblems)++;
	}
	for (size_t i = 0; ids && i < json_object_array_length(ids); i++) {
		const char *key =
			json_object_get_string(json_object_array_get_idx(ids, i));
		uint64_t pid = 0;
		enum nerr rc;

		if (!key)
			continue;
		users += strncmp(key, "user_id:", 8) == 0;
		rc = ident_get(s, NULL, key, &pid);
		if (rc == NERR_NOTFOUND) {
			buf_printf(problems,
				   "profile %" PRIu64
				   ": identity %s has no identity record\n",
				   p->id, key);
			(*nproblems)++;
		} else if (rc == NERR_OK && pid != p->id) {
			buf_printf(problems,
				   "profile %" PRIu64
				   ": identity %s points at profile %" PRIu64 "\n",
				   p->id, key, pid);
			(*nproblems)++;
		}
	}
	if (users > 1) {
		buf_printf(problems, "profile %" PRIu64 ": holds %u user_ids\n", p->id,
			   users);
		(*nproblems)++;
	}
	if (p->legacy && p->updated_ms == 0) {
		/* Not one of the records that held their history: lost. */
		buf_printf(problems, "profile %" PRIu64 ": history index missing\n",
			   p->id);
		(*nproblems)++;
	}
	for (size_t i = 0; i < p->nhist; i++) {
		unsigned char k[EVENT_KEY_MAX];
		char *val = NULL;
		size_t klen =
			event_key(k, p->old_keys, p->id, p->hist[i].t, p->hist[i].seq);

		if (store_get(s, STORE_CF_EVENTS, k, klen, &val, NULL) == NERR_OK) {
			free(val);
			continue;
		}
		buf_printf(problems,
			   "profile %" PRIu64 ": history record (%" PRId64 ", %" PRIu64
			   ") is missing\n",
			   p->id, p->hist[i].t, p->hist[i].seq);
		(*nproblems)++;
	}
}

/*
 * The history indexes the events pass reads, by profile id: under new keys a
 * profile's records are not adjacent, so the last-profile cache would miss;
 * the head is not parsed (a damaged one is reported by the profiles pass).
 * Direct-mapped, one slot per profile up to 2^16 of them (at 100 kept events
 * about 100 MB at worst): a miss costs one point read (the history index),
 * and a store of 10000 active profiles took 1.7 times as long to check with
 * 4096 slots.
 */
#define HCACHE_MIN_BITS 12
#define HCACHE_MAX_BITS 16

struct hcache {
	unsigned bits;
	struct hcache_slot *slot;
};

struct hcache_slot {
	uint64_t id;
	bool valid;
	enum nerr rc; /* of the load; NERR_OK means the rest is valid */
	bool old_keys;
	struct hent *hist;
	size_t nhist;
};

/* A cache with about one slot per profile (nprofiles), within the bounds. */
static void hcache_init(struct hcache *hc, uint64_t nprofiles)
{
	hc->bits = HCACHE_MIN_BITS;
	while (hc->bits < HCACHE_MAX_BITS && (1ULL << hc->bits) < nprofiles)
		hc->bits++;
	hc->slot = xcalloc((size_t)1 << hc->bits, sizeof(*hc->slot));
}

static struct hcache_slot *hcache_get(struct store *s, struct hcache *hc, uint64_t pid)
{
	struct hcache_slot *e =
		&hc->slot[(pid * 0x9E3779B97F4A7C15ULL) >> (64 - hc->bits)];
	struct prof p = {0};
	unsigned char k[8];
	char *v = NULL;
	size_t len = 0;

	if (e->valid && e->id == pid)
		return e;
	free(e->hist);
	memset(e, 0, sizeof(*e));
	e->id = pid;
	e->valid = true;
	/* The history index alone (one read): that its profile exists is the
	 * profiles pass's to report. A legacy profile has none: load it. */
	store_put_u64(k, pid);
	e->rc = store_get(s, STORE_CF_HISTORY, k, 8, &v, &len);
	if (e->rc == NERR_OK) {
		if (!hist_decode(&p, v, len)) {
			e->rc = NERR_CORRUPT;
			prof_fini(&p);
		}
		free(v);
	} else if (e->rc == NERR_NOTFOUND) {
		e->rc = prof_load_as(s, NULL, pid, &p, true);
	}
	if (e->rc == NERR_OK) {
		e->old_keys = p.old_keys;
		e->hist = p.hist;
		e->nhist = p.nhist;
		p.hist = NULL;
		prof_fini(&p);
	}
	return e;
}

/* Whether the cached profile lists the record: by seq under new keys, by
 * (time, seq) under old ones (whose key holds the time clamped at 0). */
static bool hcache_lists(const struct hcache_slot *e, int64_t t, uint64_t seq)
{
	for (size_t i = 0; i < e->nhist; i++)
		if (e->hist[i].seq == seq &&
		    (!e->old_keys || (e->hist[i].t < 0 ? 0 : e->hist[i].t) == t))
			return true;
	return false;
}

static void hcache_fini(struct hcache *hc)
{
	for (size_t i = 0; i < (size_t)1 << hc->bits; i++)
		free(hc->slot[i].hist);
	free(hc->slot);
}

enum nerr profile_check(struct store *s, struct buf *problems, uint64_t *profiles_seen)
{
	struct check_cache cache = {0};
	struct hcache hc;
	struct store_iter *it;
	unsigned nproblems = 0;
	uint64_t next_id = 0;
	char *val = NULL;
	size_t len = 0;

	*profiles_seen = 0;
	if (store_get(s, STORE_CF_META, next_id_key, sizeof(next_id_key) - 1, &val,
		      &len) == NERR_OK) {
		if (len == 8)
			next_id = store_get_u64(val);
		free(val);
	}

	it = store_iter_new(s, NULL, STORE_CF_PROFILES);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t klen = 0;
		const char *k = store_iter_key(it, &klen);
		uint64_t pid;

		(*profiles_seen)++;
		if (klen != 8) {
			buf_printf(problems, "profiles: key of %zu bytes (want 8)\n",
				   klen);
			nproblems++;
			continue;
		}
		pid = store_get_u64(k);
		if (cache_get(s, &cache, pid) != NERR_OK) {
			buf_printf(problems, "profile %" PRIu64 ": unreadable record\n",
				   pid);
			nproblems++;
			continue;
		}
		check_profile(s, &cache.p, next_id, problems, &nproblems);
	}
	store_iter_free(it);

	it = store_iter_new(s, NULL, STORE_CF_IDENTITIES);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t klen = 0, vlen = 0;
		const char *k = store_iter_key(it, &klen);
		const char *v = store_iter_value(it, &vlen);
		uint64_t pid;
		enum nerr rc;

		if (vlen != 8) {
			buf_printf(problems,
				   "identity %.*s: value of %zu bytes (want 8)\n",
				   (int)klen, k, vlen);
			nproblems++;
			continue;
		}
		pid = store_get_u64(v);
		rc = cache_get(s, &cache, pid);
		if (rc == NERR_NOTFOUND) {
			buf_printf(problems,
				   "identity %.*s: points at missing profile %" PRIu64
				   "\n",
				   (int)klen, k, pid);
			nproblems++;
		} else if (rc == NERR_OK && !prof_lists(&cache.p, k, klen)) {
			buf_printf(problems,
				   "identity %.*s: profile %" PRIu64
				   " does not list it\n",
				   (int)klen, k, pid);
			nproblems++;
		}
	}
	store_iter_free(it);

	it = store_iter_new(s, NULL, STORE_CF_HISTORY);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t klen = 0;
		const char *k = store_iter_key(it, &klen);

		if (klen != 8) {
			buf_printf(problems, "history: key of %zu bytes (want 8)\n",
				   klen);
			nproblems++;
		} else if (store_get(s, STORE_CF_PROFILES, k, 8, &val, NULL) != NERR_OK) {
			buf_printf(problems,
				   "history index %" PRIu64 ": profile does not exist\n",
				   store_get_u64(k));
			nproblems++;
		} else {
			free(val);
		}
	}
	store_iter_free(it);

	hcache_init(&hc, *profiles_seen);
	it = store_iter_new(s, NULL, STORE_CF_EVENTS);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t klen = 0;
		const char *k = store_iter_key(it, &klen);
		struct hcache_slot *e;
		uint64_t pid, seq;
		int64_t t = 0;
		bool old = klen == EVENT_KEY_OLD;
		char what[80];

		if (klen != EVENT_KEY_NEW && klen != EVENT_KEY_OLD) {
			buf_printf(problems, "events: key of %zu bytes (want %d or %d)\n",
				   klen, EVENT_KEY_NEW, EVENT_KEY_OLD);
			nproblems++;
			continue;
		}
		if (old) {
			pid = store_get_u64(k);
			t = (int64_t)store_get_u64(k + 8);
			seq = store_get_u64(k + 16);
			snprintf(what, sizeof(what),
				 "event (%" PRIu64 ", %" PRId64 ", %" PRIu64 ")", pid, t,
				 seq);
		} else {
			seq = store_get_u64(k);
			pid = store_get_u64(k + 8);
			snprintf(what, sizeof(what),
				 "event (seq %" PRIu64 ", profile %" PRIu64 ")", seq,
				 pid);
		}
		e = hcache_get(s, &hc, pid);
		if (e->rc == NERR_NOTFOUND) {
			buf_printf(problems, "%s: profile does not exist\n", what);
			nproblems++;
		} else if (e->rc == NERR_OK && e->old_keys != old) {
			buf_printf(problems,
				   "%s: profile keys its events with %d bytes\n", what,
				   old ? EVENT_KEY_NEW : EVENT_KEY_OLD);
			nproblems++;
		} else if (e->rc == NERR_OK && !hcache_lists(e, t, seq)) {
			buf_printf(problems, "%s: profile does not list it\n", what);
			nproblems++;
		}
	}
	store_iter_free(it);
	hcache_fini(&hc);
	cache_fini(&cache);
	return nproblems ? NERR_CORRUPT : NERR_OK;
}
