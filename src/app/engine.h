/*
 * engine.h -- the engine thread: applies inbox records to state, in order.
 *
 * Design (DESIGN.md §2, invariants 2 and 6): one thread owns all engine state.
 * It reads committed inbox records after its applied position, applies them
 * (dedup on messageId, identity resolution and profile updates; journeys join
 * later), and commits every state change together with the deletion of the
 * consumed records and the new applied position in one synced batch. After a
 * crash it re-runs exactly the records not yet consumed.
 */
#ifndef NUDGE_APP_ENGINE_H
#define NUDGE_APP_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "audience/audience.h"
#include "base/err.h"
#include "govern/govern.h"
#include "journey/run.h"
#include "profile/profile.h"
#include "store/store.h"

/* Hands a committed webhook envelope (JSON) to the delivery thread. */
typedef void (*engine_send_fn)(void *ud, const char *envelope_json);

struct engine_config {
	unsigned batch_max;
	size_t cache_bytes; /* the engine batch's read cache (store_batch_cache); 0: none
			     */
	int64_t dedup_window_ms;
	struct profile_config profile;
	struct journey_rt_config journey;
	struct govern_config govern;
	struct aud_config aud;
	engine_send_fn on_send; /* may be NULL */
	void *send_ud;
};

struct engine;

/* Called on the loop thread after a batch commits, with the applied position. */
typedef void (*engine_applied_fn)(void *ud, uint64_t applied_seq);

enum nerr engine_start(struct store *s, const struct engine_config *cfg, uv_loop_t *loop,
		       engine_applied_fn on_applied, void *ud, struct engine **out);
/* Any thread: records up to seq are durable in the inbox. */
void engine_notify(struct engine *e, uint64_t committed_seq);
/* Finishes the batch in progress and joins the thread; call on the loop thread. */
void engine_stop(struct engine *e);
void engine_free(struct engine *e);

/* The answer the engine computed for the admin record at seq (NULL if none);
 * the caller frees it. Loop thread. */
char *engine_take_result(struct engine *e, uint64_t seq, int *status);
/* The engine clock (test clock aware). */
int64_t engine_now(const struct engine *e);

/* The applied position stored in meta (0 if none). */
uint64_t engine_stored_applied_seq(struct store *s);
uint64_t engine_applied_seq(const struct engine *e);
/* True when a state commit failed; the engine has stopped. */
bool engine_broken(const struct engine *e);

#endif
