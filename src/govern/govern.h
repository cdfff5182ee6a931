/*
 * govern.h -- the rules every send decision passes: consent defaults, frequency
 * caps, quiet hours, throttles, journey entry caps, bounce bookkeeping and
 * suppression import parsing (DESIGN.md §10, docs/governance.md).
 *
 * Design: the engine thread owns a `struct govern`. Rules live in STORE_CF_CAPS
 * and in memory (loaded by govern_open, changed by govern_rule_put/delete inside
 * the engine's batch), so a decision never reads rules from disk. Counters
 * (rolling windows, throttle slots, soft bounces) live in STORE_CF_CAPS and are
 * read and written through the engine's batch, so they commit atomically with the
 * envelope they count and two decisions in one batch see each other's counts.
 * Suppression and consent are checked by the caller (it has the profile and the
 * address) with govern_suppressed() and govern_consent(), before govern_decide().
 * Threading: govern_rule_check, govern_rule_get, govern_rule_list and
 * govern_import_parse are pure or read committed state and may run on any
 * thread; every other function belongs to the engine thread.
 */
#ifndef NUDGE_GOVERN_GOVERN_H
#define NUDGE_GOVERN_GOVERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct store;
struct store_batch;
struct json_object;

/* Exclusion and delay reasons (stable strings: counters and the API use them). */
#define GOVERN_REASON_SUPPRESSED	  "suppressed"
#define GOVERN_REASON_NO_CONSENT	  "no_consent"
#define GOVERN_REASON_CAPPED		  "capped"
#define GOVERN_REASON_QUIET_HOURS_DROPPED "quiet_hours_dropped"
#define GOVERN_REASON_ENTRY_CAPPED	  "entry_capped"
#define GOVERN_REASON_NO_ADDRESS	  "no_address"
#define GOVERN_REASON_QUIET_HOURS	  "quiet_hours" /* DELAY */
#define GOVERN_REASON_THROTTLED		  "throttled"	/* DELAY */

/* Rule kinds (the {kind} of /v1/rules/{kind}/{id}). */
#define GOVERN_KIND_CAPS	"caps"
#define GOVERN_KIND_QUIET_HOURS "quiet-hours"
#define GOVERN_KIND_ENTRY_CAPS	"entry-caps"
#define GOVERN_KIND_THROTTLES	"throttles"

/* Fixed bounds (documented in docs/governance.md). */
#define GOVERN_MAX_ID_BYTES	 64	  /* rule ids: [A-Za-z0-9_-]{1,64} */
#define GOVERN_MAX_RULES	 256	  /* per kind */
#define GOVERN_MAX_COUNT	 1000	  /* caps and entry caps: "max" */
#define GOVERN_MAX_WINDOWS	 50	  /* quiet-hours "windows" */
#define GOVERN_MAX_JOURNEYS	 100	  /* entry caps: journeys in a group */
#define GOVERN_MAX_RATE		 100000.0 /* throttles: messages per second */
#define GOVERN_MAX_WINDOW_MS	 (400LL * 86400 * 1000)
#define GOVERN_DEFAULT_DELAY_MS	 (24LL * 3600 * 1000) /* quiet hours max_delay */
#define GOVERN_IMPORT_MAX_ROWS	 100000u
#define GOVERN_IMPORT_MAX_ERRORS 100u
#define GOVERN_MAX_ADDRESS_BYTES 512 /* push tokens; email at most 320 */

struct govern_config {
	/* Consent default when the profile has no entry for (channel, purpose):
	 * [channel: 0 email, 1 sms, 2 push][purpose: 0 marketing, 1 transactional,
	 * 2 other]; 1 granted, 0 denied. Defaults: transactional granted everywhere;
	 * marketing granted for email, denied for sms and push; other like marketing. */
	int consent_default[3][3];
	unsigned soft_bounce_limit; /* consecutive soft bounces that suppress (3) */
};

void govern_config_default(struct govern_config *cfg);

/* Owned by the engine; holds the rules in memory and a time-zone cache. */
struct govern;

/* Loads every stored rule. On failure *out is NULL and msg says which rule. */
enum nerr govern_open(struct store *s, const struct govern_config *cfg,
		      struct govern **out, struct nerr_msg *msg);
void govern_free(struct govern *g);

/*
 * Validates a rule document of kind ("caps", "quiet-hours", "entry-caps",
 * "throttles") for id. Pure. NERR_INVAL with msg->field naming the field ("max",
 * "windows[1].from", "id", "kind"); NERR_NOTFOUND for an unknown kind.
 */
enum nerr govern_rule_check(const char *kind, const char *id, struct json_object *doc,
			    struct nerr_msg *msg);
/*
 * Stores the rule in b and applies it at once to later decisions (the document
 * must have passed govern_rule_check; it is stored as given plus "id"). Replaces
 * a rule with the same kind and id. NERR_INVAL if the document does not check.
 */
enum nerr govern_rule_put(struct govern *g, struct store_batch *b, const char *kind,
			  const char *id, struct json_object *doc);
/* Removes the rule from b and memory; NERR_NOTFOUND if there is none. */
enum nerr govern_rule_delete(struct govern *g, struct store_batch *b, const char *kind,
			     const char *id);
/* Committed state (any thread): *out is a new reference to the rule document. */
enum nerr govern_rule_get(struct store *s, const char *kind, const char *id,
			  struct json_object **out);
/* Committed state: *out is a new {"rules": [doc, ...]} ordered by id. */
enum nerr govern_rule_list(struct store *s, const char *kind, struct json_object **out);

/* The configured default for a profile without a consent entry. purpose NULL
 * means "marketing"; unknown channels are denied. */
bool govern_consent_default(const struct govern *g, const char *channel,
			    const char *purpose);

/*
 * Consent for (channel, purpose) given the profile JSON (its "consent" object:
 * {"email": {"marketing": "granted"|"denied"}}): the profile's entry when it has
 * one, else the configured default. profile may be NULL.
 */
bool govern_consent(const struct govern *g, struct json_object *profile,
		    const char *channel, const char *purpose);

/*
 * The suppression list (STORE_CF_SUPPRESSION, key "channel:address", value
 * {"reason", "at_ms"}), read and written through the engine's batch. The address
 * must already be normalized (govern_address_normalize). govern_unsuppress also
 * clears the address's soft-bounce count.
 */
bool govern_suppressed(struct store_batch *b, const char *channel, const char *address);
void govern_suppress(struct store_batch *b, const char *channel, const char *address,
		     const char *reason, int64_t now_ms);
void govern_unsuppress(struct store_batch *b, const char *channel, const char *address);

struct govern_msg {
	const char *channel;  /* "email" | "sms" | "push" */
	const char *category; /* "marketing" | "transactional" | custom */
	uint64_t profile_id;
	const char *timezone; /* the profile's IANA zone or NULL */
	const char *journey_id;
	const char *step_id;
	int64_t now_ms;	      /* engine clock */
	int64_t first_try_ms; /* when this message was first considered */
	/* When the message comes back after a "throttled" DELAY: the until_ms it was
	 * given (its slot was reserved then, so it is not throttled again); else 0. */
	int64_t throttle_slot_ms;
};

enum govern_verdict { GOVERN_SEND = 0, GOVERN_EXCLUDE, GOVERN_DELAY };

struct govern_decision {
	enum govern_verdict verdict;
	const char *reason;  /* EXCLUDE: "capped" | "quiet_hours_dropped";
				DELAY: "quiet_hours" | "throttled"; SEND: NULL */
	const char *rule_id; /* the rule that decided, or NULL; valid until the next
				rule change */
	int64_t until_ms;    /* DELAY: try again at */
};

/*
 * Caps, quiet hours and throttles for one message, in that order (suppression
 * and consent come first, in the caller). Transactional messages skip caps and
 * quiet hours; throttles apply to every category. On SEND the send is recorded
 * in the matching caps' rolling windows and the throttles' slots inside b.
 */
void govern_decide(struct govern *g, struct store_batch *b, const struct govern_msg *m,
		   struct govern_decision *out);

/*
 * Journey entry caps: false when some entry-caps rule naming journey_id already
 * counts max entries of the profile in its window across the rule's journeys
 * (*rule_id, if not NULL, names it); true records the entry in b for every
 * matching rule.
 */
bool govern_entry_allowed(struct govern *g, struct store_batch *b, const char *journey_id,
			  uint64_t profile_id, int64_t now_ms, const char **rule_id);

/*
 * Bounce bookkeeping per (channel, address): returns true when the address must
 * now be suppressed (a hard bounce or complaint at once, a soft bounce when it is
 * the soft_bounce_limit-th in a row). govern_delivered resets the count.
 */
bool govern_bounce(struct govern *g, struct store_batch *b, const char *channel,
		   const char *address, bool hard);
void govern_delivered(struct govern *g, struct store_batch *b, const char *channel,
		      const char *address);

/*
 * Normalizes an address the way the engine keys the suppression list: email is
 * trimmed and lower-cased; sms keeps a leading '+' and digits (E.164, 8 to 15
 * digits); push is trimmed. Writes into out (size >= GOVERN_MAX_ADDRESS_BYTES + 1);
 * false (with *why set) when the address is not valid for the channel.
 */
bool govern_address_normalize(const char *channel, const char *addr, size_t len,
			      char *out, const char **why);

/*
 * Suppression import. CSV: a header line naming the columns (address, and
 * optionally channel and reason, in any order; RFC 4180 quoting within a line),
 * then one row per line. NDJSON: one {"channel","address","reason"} object per
 * line. channel defaults to default_channel (may be NULL), reason to "manual".
 * Calls fn for each valid row with normalized values. *accepted counts them;
 * *errors is a new array of the first GOVERN_IMPORT_MAX_ERRORS errors
 * [{"line": n, "message": "..."}] (lines count from 1). NERR_TOOBIG (fn never
 * called) for more than GOVERN_IMPORT_MAX_ROWS rows; NERR_INVAL (fn never called)
 * for a CSV header without an address column or an invalid default_channel.
 */
enum nerr govern_import_parse(const char *body, size_t len, bool ndjson,
			      const char *default_channel,
			      void (*fn)(void *ud, const char *channel,
					 const char *address, const char *reason),
			      void *ud, unsigned *accepted, struct json_object **errors);

#endif
