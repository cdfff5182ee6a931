/*
 * inbox.h -- the durable inbox: group commit of accepted records, in sequence.
 *
 * Design (DESIGN.md §2, invariant 1): HTTP handlers on the loop thread hand
 * accepted records to the inbox as one job per request. A committer thread takes
 * everything queued while the previous sync ran, assigns consecutive sequence
 * numbers, writes them with one synced RocksDB batch, and then reports each job
 * back on the loop thread, which only then answers 2xx. The engine reads records
 * by sequence from the store (inbox_read) and deletes them with its state batch
 * (inbox_consume), so the inbox is the narrow interface DESIGN.md §13 asks for:
 * append, read from a sequence number, remember the applied position inside the
 * state batch. A NATS JetStream stream can later stand behind the same calls.
 * The store keeps the inbox in a database of its own (data_dir/inbox, its own
 * WAL), so the committer's synced writes never queue behind an engine batch's
 * write; what is consumed is the applied position in the state batch, and the
 * records are deleted after it in chunks (inbox_consume; inbox_trim at start
 * deletes what is left).
 *
 * Record format (value in STORE_CF_INBOX, key = seq as big-endian u64):
 *   byte 0      kind (enum inbox_kind)
 *   bytes 1..8  received time, ms since epoch, big-endian
 *   bytes 9..   payload (JSON text for events and admin records)
 *
 * Overload: queued bytes are capped; past the cap inbox_submit answers
 * NERR_BUSY and the handler replies 503 with Retry-After. A failed sync marks the
 * inbox broken: every later submit fails with NERR_IO (never acknowledge what
 * is not durable).
 */
#ifndef NUDGE_INGEST_INBOX_H
#define NUDGE_INGEST_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "store/store.h"

enum inbox_kind {
	INBOX_EVENT = 1,   /* a normalized Segment event */
	INBOX_ERASE = 2,   /* {"namespace": …, "value": …}: erase a person */
	INBOX_ADMIN = 3,   /* {"op": …}: journeys, templates, test clock */
	INBOX_OUTCOME = 4, /* a delivery outcome from the delivery thread */
};

#define INBOX_HEADER_BYTES 9

struct inbox;

struct inbox_config {
	size_t max_queue_bytes; /* queued, not yet committed */
	unsigned max_batch;	/* records per group commit */
};

/* Called on the loop thread once the job is durable (rc NERR_OK) or failed.
 * last_seq is the sequence of the job's last record. */
typedef void (*inbox_done_fn)(void *ud, enum nerr rc, uint64_t last_seq);
/* Called on the committer thread after each durable commit. */
typedef void (*inbox_committed_fn)(void *ud, uint64_t last_seq);

enum nerr inbox_open(struct store *s, uv_loop_t *loop, const struct inbox_config *cfg,
		     inbox_committed_fn on_committed, void *committed_ud,
		     struct inbox **out);
/* Stops the committer after it has committed and reported every queued job. The
 * loop must keep running until this returns (call it from the loop's shutdown
 * path; it waits for the thread and then closes the async handle). */
void inbox_close(struct inbox *ib);
void inbox_free(struct inbox *ib);

/*
 * A job under construction: records are appended, then the job is submitted.
 * The job owns copies of the records.
 */
struct inbox_job;
struct inbox_job *inbox_job_new(void);
void inbox_job_free(struct inbox_job *job);
void inbox_job_add(struct inbox_job *job, enum inbox_kind kind, int64_t received_ms,
		   const char *payload, size_t len);
unsigned inbox_job_count(const struct inbox_job *job);
/* Queues the job (ownership moves in on NERR_OK; on error the caller still owns
 * it). NERR_BUSY: queue full; NERR_IO: the store failed earlier. */
enum nerr inbox_submit(struct inbox *ib, struct inbox_job *job, inbox_done_fn fn,
		       void *ud);

/* Raises the next sequence to follow seq: the engine's applied position may be
 * ahead of an empty inbox after a restart. Call before the first submit. */
void inbox_set_min_seq(struct inbox *ib, uint64_t seq);
/* The last sequence committed so far (any thread). */
uint64_t inbox_committed_seq(const struct inbox *ib);
/* True once a sync write failed. */
bool inbox_broken(const struct inbox *ib);
size_t inbox_queued_bytes(const struct inbox *ib);

/* Highest sequence present in the store's inbox, or 0 (used at startup). */
uint64_t inbox_last_stored_seq(struct store *s);

/* Decodes a record. Returns NERR_CORRUPT for a record too short or of unknown kind. */
enum nerr inbox_decode(const char *rec, size_t len, enum inbox_kind *kind,
		       int64_t *received_ms, const char **payload, size_t *payload_len);

/* Called for each record the engine's state batch consumes; deletes consumed
 * records in chunks, after the state batch (see inbox.c). */
void inbox_consume(struct store_batch *b, uint64_t seq);
/* Deletes the records up to applied_seq still present (a crash lost their
 * deletion); the engine calls it at start. Returns how many. */
unsigned inbox_trim(struct store *s, uint64_t applied_seq);

#endif
