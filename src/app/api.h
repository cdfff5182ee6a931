/*
 * api.h -- the HTTP routes of `nudge serve`: ingest, admin, ops.
 *
 * Design: one handler receives every request from the HTTP layer (loop
 * thread), matches the route, checks the key, and either answers at once
 * (reads, errors) or hands records to the inbox and answers when they are
 * durable (invariant 1), or, for erasure, when the engine has applied them.
 */
#ifndef NUDGE_APP_API_H
#define NUDGE_APP_API_H

#include <stdbool.h>
#include <stdint.h>

#include "app/config.h"
#include "ingest/http.h"
#include "ingest/inbox.h"
#include "store/store.h"

struct engine;
struct api;

struct api *api_new(const struct config *cfg, struct store *s, struct inbox *ib);
void api_set_engine(struct api *a, struct engine *e);
struct track_key;
/* The key that verifies tracking tokens (/t/o, /t/c, /t/u); borrowed. */
void api_set_track_key(struct api *a, const struct track_key *k);
/* Enables POST /v1/debug/clock (nudge serve --test-clock). */
void api_set_test_clock(struct api *a, bool on);
void api_free(struct api *a);
/* The http_handler_fn to give the HTTP server (userdata = the api). */
void api_handle(void *ud, struct http_req *req);
/* Engine progress (loop thread): answers requests waiting for it. */
void api_on_applied(void *ud, uint64_t applied_seq);
/* Answers every request still waiting for the engine with 503 (shutdown). */
void api_cancel_waiters(struct api *a);

#endif
