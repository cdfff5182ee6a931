/*
 * def.h -- journey definitions: parse, validate and compile a journey JSON document.
 *
 * Design: a journey is a JSON document (DESIGN.md §7, docs/journeys.md).
 * journey_def_compile() checks every rule at once and either returns an immutable
 * compiled definition (struct journey_def) or the list of everything wrong with the
 * document, each error naming the step, the field and the reason (CEL and Liquid
 * errors carry their line and column). The compiled form is what the runtime
 * walks: steps are an array, every reference to another step is already an index,
 * every condition a compiled CEL program, every webhook field a compiled Liquid
 * template. Nothing in it is written after compile, so any number of threads may
 * read it and evaluate its programs at once (each with its own scratch arena).
 *
 * CEL conditions are compiled against an environment made by journey_env_new()
 * (variables event, profile, journey, now; functions event_count, consent and
 * in_audience). Those functions read the data they need through a per-thread
 * evaluation context the runtime sets with journey_eval_ctx_set() before
 * evaluating.
 *
 * Ownership: a journey_def owns everything it points to (one arena for strings and
 * arrays, plus its programs and templates) and borrows the expr_env it was compiled
 * with, which must outlive it.
 */
#ifndef NUDGE_JOURNEY_DEF_H
#define NUDGE_JOURNEY_DEF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

struct expr_env;
struct expr_program;
struct json_object;
struct tmpl;

/* ------------------------------------------------------------------ limits */

/* Zero in a field means the default shown. */
struct journey_limits {
	unsigned max_steps;   /* steps per journey (500) */
	int64_t max_wait_ms;  /* longest wait duration, wait_for timeout, goal window
				 (400 days) */
	size_t max_def_bytes; /* size of the JSON document (1 MiB) */
	unsigned max_depth;   /* JSON nesting depth (32) */
};

#define JOURNEY_DEFAULT_MAX_STEPS     500u
#define JOURNEY_DEFAULT_MAX_WAIT_MS   (400LL * 86400 * 1000)
#define JOURNEY_DEFAULT_MAX_DEF_BYTES (1u << 20)
#define JOURNEY_DEFAULT_MAX_DEPTH     32u

/* Fixed caps (not configurable: they only bound pathological documents). */
#define JOURNEY_MAX_ID_BYTES	   64  /* journey and step ids: [A-Za-z0-9_-]{1,64} */
#define JOURNEY_MAX_ARMS	   100 /* branch arms, split arms */
#define JOURNEY_MAX_EXITS	   100 /* exit criteria */
#define JOURNEY_MAX_HEADERS	   50  /* webhook headers */
#define JOURNEY_MAX_TRAITS	   100 /* update_profile set + unset */
#define JOURNEY_MAX_ERRORS	   100 /* errors collected before giving up */
#define JOURNEY_MAX_SPLIT_WEIGHT   1000000u
#define JOURNEY_MAX_RETRIES	   10
#define JOURNEY_MAX_WEBHOOK_MS	   (300LL * 1000) /* webhook timeout */
#define JOURNEY_DEFAULT_WEBHOOK_MS (10LL * 1000)
#define JOURNEY_DEFAULT_RETRIES	   3

void journey_limits_default(struct journey_limits *lim);

/* ------------------------------------------------------------------ errors */

/*
 * One thing wrong with a document. step is the step id ("" for journey-level
 * fields); field is the path of the offending field, relative to the step when
 * step is set ("wait_for.timeout", "branch[1].when"), from the document root
 * otherwise ("entry.when", "steps"); message is one sentence. CEL errors read
 * "invalid CEL: line L, column C: reason", Liquid errors "invalid Liquid: line L,
 * column C: reason".
 */
struct journey_error {
	char step[72];
	char field[128];
	char message[256];
};

/* A list of errors; zero-initialize, fill with journey_def_compile(), then fini. */
struct journey_errors {
	struct journey_error *items; /* owned */
	unsigned n;
};

void journey_errors_fini(struct journey_errors *e);
/* Returns a new JSON array [{"step","field","message"}] (caller owns the reference;
 * "step" is omitted for journey-level errors). */
struct json_object *journey_errors_to_json(const struct journey_errors *e);
/* Formats err as "step X: FIELD: MESSAGE", "step X: MESSAGE" (no field),
 * "FIELD: MESSAGE" or "document: MESSAGE" into out. */
void journey_error_format(const struct journey_error *err, char *out, size_t size);

/* ----------------------------------------------------------------- the CEL env */

/* Variable slots of the environment journey_env_new() makes (the vars array the
 * runtime passes to expr_eval is indexed by these). */
enum journey_var {
	JOURNEY_VAR_EVENT = 0, /* the event being handled (Segment JSON), or null */
	JOURNEY_VAR_PROFILE,   /* the profile ({"traits": …, …}) */
	JOURNEY_VAR_JOURNEY,   /* {"entry": entry event, "steps": {id: {"response"}}} */
	JOURNEY_VAR_NOW,       /* a timestamp: the engine's wall clock */
	JOURNEY_VAR__COUNT,
};

/*
 * What nudge's CEL functions ask the runtime. The runtime fills one per
 * evaluation (or per instance) and points the thread at it with
 * journey_eval_ctx_set(). A NULL callback (or no context) makes the function
 * return a CEL error ("event_count is not available here").
 */
struct journey_eval_ctx {
	void *ud;
	/* How many events named name the profile sent within the last window_ms
	 * (predicate_or_null: CEL source evaluated with `event` bound to each
	 * candidate; NULL = all). Negative = error. */
	int64_t (*event_count)(void *ud, const char *name, int64_t window_ms,
			       const char *predicate_or_null);
	/* 1 granted, 0 denied, negative = error. purpose_or_null: e.g. "marketing". */
	int (*consent)(void *ud, const char *channel, const char *purpose_or_null);
	/* 1 the profile is a member of audience audience_id, 0 not, negative =
	 * error. Last, so positional initializers of the fields above still work. */
	int (*in_audience)(void *ud, const char *audience_id);
};

/*
 * Returns a new environment with the variables of enum journey_var (in that slot
 * order) and the functions event_count(string, duration|string[, string]) -> int,
 * consent(string[, string]) -> bool and in_audience(string) -> bool. Free with
 * expr_env_free().
 */
struct expr_env *journey_env_new(void);
/* Sets the calling thread's evaluation context (borrowed; NULL clears). */
void journey_eval_ctx_set(const struct journey_eval_ctx *ctx);
const struct journey_eval_ctx *journey_eval_ctx_get(void);

/*
 * Parses a duration: one or more NUMBER UNIT groups with units ms, s, m, h, d
 * (86400 s), w (7 d): "30s", "15m", "1h30m", "7d", "2w". Returns NERR_OK with the
 * milliseconds (> 0) in *ms, NERR_INVAL for anything else (including zero and more
 * than 100 years).
 */
enum nerr journey_duration_parse(const char *s, int64_t *ms);

/* ------------------------------------------------------------- compiled form */

enum journey_step_kind {
	JOURNEY_STEP_BRANCH = 0,
	JOURNEY_STEP_WAIT,
	JOURNEY_STEP_WAIT_FOR,
	JOURNEY_STEP_SPLIT,
	JOURNEY_STEP_MESSAGE,
	JOURNEY_STEP_WEBHOOK,
	JOURNEY_STEP_UPDATE_PROFILE,
	JOURNEY_STEP_JUMP,
	JOURNEY_STEP_END,
	JOURNEY_STEP__COUNT,
};

/* The JSON key of a kind ("wait_for"), or "?" out of range. */
const char *journey_step_kind_name(enum journey_step_kind kind);

/* A CEL condition or value: its source (for display) and compiled program. */
struct journey_cel {
	char *src;		   /* NULL when the field was absent */
	struct expr_program *prog; /* NULL when the field was absent */
};

/* branch: the first arm whose `when` is true wins; none: step.else_next. */
struct journey_branch_arm {
	struct journey_cel when; /* always set */
	int next;		 /* step index */
};

/* split: an arm is picked with probability weight / sum of weights,
 * deterministically per (journey, profile). */
struct journey_split_arm {
	char *name;	 /* unique within the step (reports use it) */
	unsigned weight; /* 1 .. JOURNEY_MAX_SPLIT_WEIGHT */
	int next;	 /* step index */
};

enum journey_wait_mode {
	JOURNEY_WAIT_DURATION = 0, /* duration_ms after the step is reached */
	JOURNEY_WAIT_UNTIL,	   /* until the timestamp `until` evaluates to (a past
				      time: no wait) */
	JOURNEY_WAIT_UNTIL_LOCAL,  /* the next local time of day on an allowed weekday */
};

struct journey_wait {
	enum journey_wait_mode mode;
	int64_t duration_ms;	  /* JOURNEY_WAIT_DURATION */
	struct journey_cel until; /* JOURNEY_WAIT_UNTIL: evaluates to a timestamp */
	/* JOURNEY_WAIT_UNTIL_LOCAL: */
	int minute_of_day; /* 0 .. 1439 ("HH:MM") */
	uint8_t days_mask; /* bit 0 = Monday … bit 6 = Sunday; 0x7f when absent */
	char *zone;	   /* IANA zone, or NULL: the profile's zone, else the
			      journey's timezone, else UTC */
};

enum journey_wait_for_mode {
	JOURNEY_WAIT_FOR_EVENT = 0,  /* an event named `event` whose `when` holds */
	JOURNEY_WAIT_FOR_ENGAGEMENT, /* opened/clicked of the message sent by an earlier
					step */
};

enum journey_engagement {
	JOURNEY_ENGAGEMENT_OPENED = 0,
	JOURNEY_ENGAGEMENT_CLICKED,
};

/* wait_for: on a match go to step.on_event; after timeout_ms to step.on_timeout. */
struct journey_wait_for {
	enum journey_wait_for_mode mode;
	char *event;		 /* JOURNEY_WAIT_FOR_EVENT */
	struct journey_cel when; /* JOURNEY_WAIT_FOR_EVENT, optional; `event` is the
				    candidate, `journey.entry` the entry event */
	int message_step;	 /* JOURNEY_WAIT_FOR_ENGAGEMENT: index of a message
				    step on every path to this one; else -1 */
	enum journey_engagement engagement; /* JOURNEY_WAIT_FOR_ENGAGEMENT */
	int64_t timeout_ms;		    /* always set, > 0 */
};

enum journey_channel {
	JOURNEY_CHANNEL_EMAIL = 0,
	JOURNEY_CHANNEL_SMS,
	JOURNEY_CHANNEL_PUSH,
};

/* "email", "sms", "push". */
const char *journey_channel_name(enum journey_channel ch);

struct journey_message {
	enum journey_channel channel;
	char *template_id; /* a template of that channel */
	char *category;	   /* "marketing" (default), "transactional" or a custom
			      [a-z0-9_-]{1,64} name */
};

/* A webhook header: name and Liquid value. */
struct journey_header {
	char *name;
	char *value_src;
	struct tmpl *value;
};

enum journey_http_method {
	JOURNEY_HTTP_POST = 0,
	JOURNEY_HTTP_PUT,
};

/*
 * webhook: render url, headers and body with Liquid (no HTML escaping), send.
 * Success (2xx) goes to step.next; a final failure to step.on_failure when set,
 * else to step.next (the failure is recorded either way).
 */
struct journey_webhook {
	char *url_src; /* starts with http:// or https:// */
	struct tmpl *url;
	enum journey_http_method method;
	struct journey_header *headers;
	unsigned nheaders;
	char *body_src; /* inline Liquid body, or NULL when template_id is set */
	struct tmpl *body;
	char *template_id;  /* a template of channel "webhook", or NULL */
	int64_t timeout_ms; /* per attempt; default 10 s, at most 300 s */
	unsigned retries;   /* retries after the first attempt; default 3, at most 10 */
	bool capture;	    /* keep the JSON response as journey.steps.<id>.response */
};

struct journey_trait_set {
	char *trait;		  /* trait name */
	struct journey_cel value; /* always set */
};

struct journey_update_profile {
	struct journey_trait_set *set;
	unsigned nset;
	char **unset; /* trait names */
	unsigned nunset;
};

struct journey_jump {
	char *journey_id; /* the journey the profile enters (its entry rules apply) */
};

/*
 * One step. Routing fields are step indexes, -1 = none:
 *   branch: arms[].next, else_next;  wait: next;  wait_for: on_event, on_timeout;
 *   split: arms[].next;  message: next;  webhook: next, on_failure (optional);
 *   update_profile: next;  jump: next (optional: -1 ends the instance);  end: none.
 */
struct journey_step {
	char *id;
	char *description; /* optional free text, or NULL */
	enum journey_step_kind kind;
	union {
		struct {
			struct journey_branch_arm *arms;
			unsigned narms;
		} branch;
		struct journey_wait wait;
		struct journey_wait_for wait_for;
		struct {
			struct journey_split_arm *arms;
			unsigned narms;
			unsigned total_weight;
		} split;
		struct journey_message message;
		struct journey_webhook webhook;
		struct journey_update_profile update_profile;
		struct journey_jump jump;
	} u;
	int next, else_next, on_event, on_timeout, on_failure;
};

/*
 * entry: what enters a profile. Three kinds:
 *   EVENT     the profile sends an event named `event` for which `when` holds;
 *   AUDIENCE  the profile enters (on_exit: leaves) audience `audience`;
 *   BUSINESS  a business event named `event` (one that belongs to no single person)
 *             arrives, and `who` holds for the profile with that event as `event`.
 * `when` and `key` apply to every kind (one active instance per (profile, key)).
 */
enum journey_entry_kind {
	JOURNEY_ENTRY_EVENT = 0, /* {"event": name, "when"?, "key"?} */
	JOURNEY_ENTRY_AUDIENCE,	 /* {"audience": id, "on": "enter"|"exit" (default
				    enter), "when"?, "key"?} */
	JOURNEY_ENTRY_BUSINESS,	 /* {"business_event": name, "who": CEL (required),
				    "when"?, "key"?} */
};

struct journey_entry {
	enum journey_entry_kind kind;
	char *event;	/* EVENT: the event name; BUSINESS: the business event name;
			   AUDIENCE: NULL */
	char *audience; /* AUDIENCE: the audience id ([A-Za-z0-9_-]{1,64}); else NULL */
	bool on_exit;	/* AUDIENCE: enter when the profile leaves the audience */
	struct journey_cel when; /* optional */
	struct journey_cel key;	 /* optional: one active instance per (profile, key) */
	struct journey_cel who;	 /* BUSINESS: required, a CEL bool over profile and
				    event */
	/* BUSINESS: when `who` can only hold if a value computed from the event alone
	 * is an element of (or equal to) profile.traits.<index_trait>, that trait name
	 * and the program computing the value (evaluated with only `event` and `now`
	 * bound; profile and journey null); else NULL/NULL. See
	 * expr_index_condition() for the exact contract. */
	char *index_trait;
	struct expr_program *index_value; /* owned by the def like every program */
};

/*
 * reentry: allow false = once ever per profile (per key); allow true with
 * after_ms > 0 = only when after_ms passed since the last entry; allow true,
 * after_ms 0 = whenever no instance is active. Default: allow true, after_ms 0.
 */
struct journey_reentry {
	bool allow;
	int64_t after_ms;
};

/* exit: an event named `event` (with `when` holding) ends the instance anywhere. */
struct journey_exit {
	char *event;
	struct journey_cel when; /* optional */
};

/* goal: an event named `event` (with `when`) within within_ms of entry (0 = while
 * the instance lives) is a conversion worth `value` (optional CEL). */
struct journey_goal {
	char *event;
	struct journey_cel when;
	int64_t within_ms;
	struct journey_cel value;
};

struct journey_def {
	char *id;	      /* [A-Za-z0-9_-]{1,64} */
	char *name;	      /* or NULL */
	char *description;    /* or NULL */
	char *timezone;	      /* IANA zone (default for until_local) or NULL */
	char *webhook_secret; /* per-journey signing secret, or NULL (global) */
	struct journey_entry entry;
	struct journey_reentry reentry;
	struct journey_exit *exits;
	unsigned nexits;
	bool has_goal;
	struct journey_goal goal;
	unsigned start; /* step index */
	struct journey_step *steps;
	unsigned nsteps;
	char *source_json; /* the document as given (NUL-terminated) */
	size_t source_len;
	/* Every event name the journey listens to (entry of kind EVENT, wait_for,
	 * exit, goal), deduplicated, in first-seen order. A business entry's name is
	 * not in it: business events are not a profile's events. */
	char **events;
	unsigned nevents;
	/* private */
	unsigned *by_id;    /* step indexes sorted by id, for journey_def_step_index */
	struct arena arena; /* strings and arrays above */
	struct expr_program **progs; /* every program above, owned (for free) */
	unsigned nprogs;
	struct tmpl **tmpls; /* every template above, owned (for free) */
	unsigned ntmpls;
};

/* Checks whether template `id` of `channel` ("email", "sms", "push", "webhook")
 * exists. */
typedef bool (*journey_template_exists_fn)(void *ud, const char *id, const char *channel);

/*
 * Compiles the journey document json (len bytes). lim NULL = defaults; env: an
 * environment from journey_env_new() that outlives the definition;
 * template_exists NULL skips the template check. Returns NERR_OK with *out, or
 * NERR_INVAL (the document is wrong), NERR_PARSE (not JSON), NERR_TOOBIG (larger
 * than the limit) with *out NULL and every error found appended to errs.
 */
enum nerr journey_def_compile(const char *json, size_t len,
			      const struct journey_limits *lim,
			      const struct expr_env *env,
			      journey_template_exists_fn template_exists, void *ud,
			      struct journey_def **out, struct journey_errors *errs);
void journey_def_free(struct journey_def *d);

/* Returns the index of step id, or -1. */
int journey_def_step_index(const struct journey_def *d, const char *id);
/* Returns the event names the journey listens to (d->events), count in *n. */
const char *const *journey_def_events(const struct journey_def *d, unsigned *n);

#endif
