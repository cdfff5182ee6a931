/*
 * store.h -- nudge's one narrow layer over RocksDB.
 *
 * Design: every byte nudge keeps lives in one RocksDB database under data_dir,
 * split into column families by concern (DESIGN.md §4). All reads and writes go
 * through this interface so crashes and I/O errors can be simulated in one place.
 * Writes are grouped in a `store_batch`, nudge's own write-back batch: a hash
 * table of each key's last write, so reads through the batch see its pending
 * writes (the engine needs that: one batch may create a profile and update it
 * again before committing) and a key written many times is sent to RocksDB
 * once, in key order, at commit. A batch commits atomically; `sync` commits
 * are durable when they return (invariants 1 and 2). Keys that are numbers
 * are big-endian so iteration order is numeric.
 * STORE_CF_INBOX is kept in a database of its own (own WAL, data_dir/inbox): its
 * writes in a batch are blind, and are applied after the batch's other writes,
 * not atomically with them (store_batch_commit says how).
 * Threading: a store is shared; a batch or an iterator belongs to one thread.
 */
#ifndef NUDGE_STORE_STORE_H
#define NUDGE_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"

enum store_cf {
	STORE_CF_DEFAULT,
	STORE_CF_INBOX,	      /* seq (u64) -> inbox record */
	STORE_CF_PROFILES,    /* profile id (u64) -> profile JSON */
	STORE_CF_IDENTITIES,  /* "namespace:value" -> profile id (u64) */
	STORE_CF_EVENTS,      /* inbox seq, profile id -> event JSON (profiles
				 not yet moved: profile id, time ms, seq) */
	STORE_CF_DEDUP,	      /* messageId -> first-seen time ms (expires, below) */
	STORE_CF_DEDUP_TIME,  /* unused since 2026-11 (was an expiry index) */
	STORE_CF_JOURNEYS,    /* definitions, all versions */
	STORE_CF_INSTANCES,   /* journey instances */
	STORE_CF_WAITS,	      /* (profile, event name) -> instance */
	STORE_CF_TIMERS,      /* (due ms, instance) -> step */
	STORE_CF_OUTBOX,      /* envelope id -> envelope */
	STORE_CF_SUPPRESSION, /* channel address -> reason */
	STORE_CF_CAPS,	      /* frequency cap counters */
	STORE_CF_COUNTERS,    /* report counters */
	STORE_CF_META,	      /* applied seq, schema version, keys, ids */
	STORE_CF_TEMPLATES,   /* template id -> versions */
	STORE_CF_INDEX,	      /* secondary indexes (journey -> instances, ...) */
	STORE_CF_AUDIENCES,   /* audiences, computed attributes, trait index, jobs */
	STORE_CF_HISTORY,     /* profile id (u64) -> update time + history keys */
	STORE_CF__COUNT
};

struct store;
struct store_batch;
struct store_iter;

/* Returns the column family's on-disk name. */
const char *store_cf_name(enum store_cf cf);

/* Opens (creating if missing) the database in dir. */
enum nerr store_open(const char *dir, struct store **out, struct nerr_msg *msg);
/* Opens an existing database read-only (for `nudge check`). */
enum nerr store_open_readonly(const char *dir, struct store **out, struct nerr_msg *msg);
void store_close(struct store *s);

/*
 * Point read from the committed state. On NERR_OK *val is a malloc'd copy
 * (NUL-terminated, not counted in *len) the caller frees; NERR_NOTFOUND if absent.
 */
enum nerr store_get(struct store *s, enum store_cf cf, const void *key, size_t klen,
		    char **val, size_t *len);

/* A write batch whose reads see its own (indexed) writes. The count is the
 * number of distinct keys written indexed plus the number of blind writes. */
struct store_batch *store_batch_new(struct store *s);
void store_batch_free(struct store_batch *b);
void store_batch_clear(struct store_batch *b);
unsigned store_batch_count(const struct store_batch *b);
void store_batch_put(struct store_batch *b, enum store_cf cf, const void *key,
		     size_t klen, const void *val, size_t vlen);
void store_batch_delete(struct store_batch *b, enum store_cf cf, const void *key,
			size_t klen);
/*
 * Blind writes: recorded without indexing, so they cost a copy instead of a
 * hash lookup and a place in the sort at commit, and they are invisible to
 * store_batch_get() and to iterators over the batch. They commit atomically
 * with the batch, applied after its indexed writes (a key written both ways
 * ends with the blind write). For writes the batch never reads back: consumed
 * inbox records, dedup entries the engine tracks itself, the committer's
 * records.
 */
void store_batch_put_blind(struct store_batch *b, enum store_cf cf, const void *key,
			   size_t klen, const void *val, size_t vlen);
void store_batch_delete_blind(struct store_batch *b, enum store_cf cf, const void *key,
			      size_t klen);
/* Deletes the keys in [start, end), blind. One entry whatever the range holds. */
void store_batch_delete_range_blind(struct store_batch *b, enum store_cf cf,
				    const void *start, size_t slen, const void *end,
				    size_t elen);
/*
 * Gives the batch a read cache for family cf: committed values it read or
 * wrote stay in memory (max_bytes over all its cached families, the last call
 * sets it; least recently used first out), and its later reads of them, in
 * this or a later batch, skip RocksDB. Correct only while no other batch,
 * thread or process writes cf: the engine's profiles and identities.
 */
void store_batch_cache(struct store_batch *b, enum store_cf cf, size_t max_bytes);

/* Like store_get, but sees the batch's pending writes first. */
enum nerr store_batch_get(struct store_batch *b, enum store_cf cf, const void *key,
			  size_t klen, char **val, size_t *len);
/* Writes the batch atomically; with sync, durable on return. Clears it on success.
 * NERR_IO means the durability promise may be broken: callers stop accepting. */
enum nerr store_batch_commit(struct store_batch *b, bool sync, struct nerr_msg *msg);

/*
 * Ordered iteration over one column family; with a batch, merged with its
 * writes (the batch wins on equal keys; its deletes hide keys). Writing to the
 * batch while iterating is safe: the current key and value stay valid until
 * the next move, and a later write to a key ahead is seen when the iterator
 * gets there, except that a key new to both the batch and the database shows
 * only after a seek. Free the iterator before the batch commits or clears.
 */
struct store_iter *store_iter_new(struct store *s, struct store_batch *b,
				  enum store_cf cf);
void store_iter_free(struct store_iter *it);
void store_iter_seek(struct store_iter *it, const void *key, size_t klen);
void store_iter_seek_first(struct store_iter *it);
void store_iter_seek_last(struct store_iter *it);
bool store_iter_valid(const struct store_iter *it);
void store_iter_next(struct store_iter *it);
const char *store_iter_key(const struct store_iter *it, size_t *klen);
const char *store_iter_value(const struct store_iter *it, size_t *vlen);

/*
 * STORE_CF_DEDUP values begin with a big-endian time in ms; compaction drops
 * entries older than window_ms (0, the default: never) by the wall clock plus
 * the offset below.
 */
void store_set_dedup_window(struct store *s, int64_t window_ms);
/* Where the clock that stamps dedup entries stands against the wall clock
 * (ms; the engine's test clock); compaction judges expiry by it. */
void store_set_dedup_clock_offset(struct store *s, int64_t offset_ms);
/* Compacts the whole family now, down to the last level (tests, operations). */
void store_compact(struct store *s, enum store_cf cf);

/* Turns RocksDB's per-thread performance counters off for the calling thread
 * (nudge never reads them; counting them costs thread-local lookups on every
 * read and write). Call once at the start of each thread that uses the store
 * heavily. */
void store_thread_init(void);

/* Big-endian integer key parts. Inline: the engine encodes and decodes
 * a profile's whole history index per event (a call each was 4 % of its
 * instructions). */
static inline void store_put_u64(void *dst, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
	memcpy(dst, &v, 8);
#else
	unsigned char *p = dst;

	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
#endif
}

static inline uint64_t store_get_u64(const void *src)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t v;

	memcpy(&v, src, 8);
	return __builtin_bswap64(v);
#else
	const unsigned char *p = src;
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
#endif
}

#endif
