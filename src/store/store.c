/*
 * store.c -- RocksDB behind the store.h interface.
 *
 * Design: one rocksdb_t with a fixed list of column families (created when
 * missing, so older data directories gain new families). Batches are
 * WriteBatchWithIndex so the engine can read its own uncommitted writes.
 * Keeping that index costs a search per write, so writes nobody reads back
 * (blind writes) are kept beside it as plain records and appended, after the
 * indexed ones, to one plain WriteBatch at commit: still one atomic write.
 * The inbox family lives in a second rocksdb_t under dir/inbox (departing from
 * DESIGN.md §4's one database, for one reason): with one database, every
 * synced inbox write of the committer queued behind the engine's batch write
 * in RocksDB's single write path and WAL, so an ack waited for two syncs and
 * an engine batch's memtable inserts. Its own WAL makes the inbox sync alone.
 * Inbox writes are always blind (the index cannot span two databases); a
 * batch that writes both commits the main part first, atomically, then the
 * inbox part (see store_batch_commit). Opening moves inbox records an older
 * data directory kept in the main database.
 * Options favour small synced batches: WAL on, sync per commit, a modest block
 * cache. Failure of a synced write is reported as NERR_IO and logged once here
 * with the RocksDB message; upper layers decide to stop accepting.
 * On-disk format: the column families of store.h; values are owned by the
 * modules that write them (profile JSON, inbox records, ...).
 */
#include "store/store.h"

#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mem.h"

static const char *const cf_names[STORE_CF__COUNT] = {
	[STORE_CF_DEFAULT] = "default",		[STORE_CF_INBOX] = "inbox",
	[STORE_CF_PROFILES] = "profiles",	[STORE_CF_IDENTITIES] = "identities",
	[STORE_CF_EVENTS] = "events",		[STORE_CF_DEDUP] = "dedup",
	[STORE_CF_DEDUP_TIME] = "dedup_time",	[STORE_CF_JOURNEYS] = "journeys",
	[STORE_CF_INSTANCES] = "instances",	[STORE_CF_WAITS] = "waits",
	[STORE_CF_TIMERS] = "timers",		[STORE_CF_OUTBOX] = "outbox",
	[STORE_CF_SUPPRESSION] = "suppression", [STORE_CF_CAPS] = "caps",
	[STORE_CF_COUNTERS] = "counters",	[STORE_CF_META] = "meta",
	[STORE_CF_TEMPLATES] = "templates",	[STORE_CF_INDEX] = "index",
	[STORE_CF_AUDIENCES] = "audiences",
};

struct store {
	rocksdb_t *db;
	rocksdb_t *idb; /* the inbox's own database; NULL: the inbox family of db */
	rocksdb_column_family_handle_t *icf[2]; /* idb's default and inbox */
	rocksdb_options_t *opts;
	rocksdb_readoptions_t *ropts;
	rocksdb_writeoptions_t *wopts_sync;
	rocksdb_writeoptions_t *wopts_nosync;
	rocksdb_column_family_handle_t *cf[STORE_CF__COUNT];
	rocksdb_cache_t *cache;
	rocksdb_block_based_table_options_t *bbto;
	/* STORE_CF_DEDUP expires by compaction (see store_set_dedup_window). */
	rocksdb_options_t *dedup_opts;
	rocksdb_compactionfilter_t *dedup_filter;
	_Atomic int64_t dedup_window_ms; /* 0: keep everything */
};

/* One blind write in store_batch.blind: header, then key, then value. */
struct blind_op {
	uint32_t klen, vlen;
	unsigned char cf;
	unsigned char kind; /* BLIND_PUT, BLIND_DELETE, BLIND_DELETE_RANGE (val = end) */
};

enum { BLIND_PUT, BLIND_DELETE, BLIND_DELETE_RANGE };

struct store_batch {
	struct store *s;
	rocksdb_writebatch_wi_t *wb;
	char *blind; /* blind_op records back to back, not indexed */
	size_t blind_len, blind_cap;
	unsigned nblind;
	unsigned nblind_inbox; /* of them, to the inbox database */
};

struct store_iter {
	rocksdb_iterator_t *it;
};

const char *store_cf_name(enum store_cf cf)
{
	return (unsigned)cf < STORE_CF__COUNT ? cf_names[cf] : "?";
}

static rocksdb_t *db_for(const struct store *s, enum store_cf cf);
static rocksdb_column_family_handle_t *cf_for(const struct store *s, enum store_cf cf);

void store_thread_init(void)
{
	rocksdb_set_perf_level(1); /* rocksdb::kDisable */
}

void store_set_dedup_window(struct store *s, int64_t window_ms)
{
	atomic_store(&s->dedup_window_ms, window_ms > 0 ? window_ms : 0);
}

/*
 * The dedup family's compaction filter (RocksDB's compaction threads): an
 * entry whose first-seen time (the value's first 8 bytes, big-endian ms) is
 * older than the window by the wall clock is dropped. Reads check the time
 * themselves, so an expired entry that no compaction has reached yet is
 * harmless; this only reclaims the space, with no work on the engine thread
 * and no second (time-ordered) record per messageId.
 */
static unsigned char dedup_filter(void *state, int level, const char *key, size_t klen,
				  const char *val, size_t vlen, char **new_val,
				  size_t *new_vlen, unsigned char *changed)
{
	struct store *s = state;
	int64_t window = atomic_load(&s->dedup_window_ms);
	struct timespec ts;

	(void)level, (void)key, (void)klen, (void)new_val, (void)new_vlen;
	*changed = 0;
	if (window <= 0 || vlen < 8)
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)store_get_u64(val) <
	       (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - window;
}

void store_compact(struct store *s, enum store_cf cf)
{
	rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();

	/* Rewrite the bottom level too (kForce), so a compaction filter sees
	 * every entry. RocksDB's C API reports no error here. */
	rocksdb_compactoptions_set_bottommost_level_compaction(co, 2);
	rocksdb_compact_range_cf_opt(db_for(s, cf), cf_for(s, cf), co, NULL, 0, NULL, 0);
	rocksdb_compactoptions_destroy(co);
}

/* The filter's state is the store itself, freed by store_close. */
static void dedup_filter_state_free(void *state)
{
	(void)state;
}

static const char *dedup_filter_name(void *state)
{
	(void)state;
	return "nudge.dedup_expiry";
}

void store_put_u64(void *dst, uint64_t v)
{
	unsigned char *p = dst;

	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

uint64_t store_get_u64(const void *src)
{
	const unsigned char *p = src;
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Where a column family lives: the inbox in its own database when there is one. */
static bool in_idb(const struct store *s, enum store_cf cf)
{
	return cf == STORE_CF_INBOX && s->idb;
}

static rocksdb_t *db_for(const struct store *s, enum store_cf cf)
{
	return in_idb(s, cf) ? s->idb : s->db;
}

static rocksdb_column_family_handle_t *cf_for(const struct store *s, enum store_cf cf)
{
	return in_idb(s, cf) ? s->icf[1] : s->cf[cf];
}

static const char *const inbox_cf_names[2] = {"default", "inbox"};

/*
 * Opens the inbox database in dir/inbox. Read-only, a data directory from
 * before it existed has none: the inbox family of the main database is used.
 */
static enum nerr open_inbox_db(struct store *s, const char *dir, bool readonly,
			       struct nerr_msg *msg)
{
	const rocksdb_options_t *o[2] = {s->opts, s->opts};
	char *idir = xmalloc(strlen(dir) + sizeof("/inbox/CURRENT"));
	char *err = NULL;

	sprintf(idir, "%s/inbox/CURRENT", dir);
	if (readonly && access(idir, F_OK) != 0) {
		free(idir);
		return NERR_OK;
	}
	idir[strlen(idir) - sizeof("/CURRENT") + 1] = '\0';
	if (readonly)
		s->idb = rocksdb_open_for_read_only_column_families(
			s->opts, idir, 2, inbox_cf_names, o, s->icf, 0, &err);
	else
		s->idb = rocksdb_open_column_families(s->opts, idir, 2, inbox_cf_names, o,
						      s->icf, &err);
	if (err) {
		nerr_set(msg, NERR_IO, "data_dir", "cannot open the inbox in %s: %s",
			 idir, err);
		log_error("store", "msg=\"inbox open failed\" dir=%s err=\"%s\"", idir,
			  err);
		free(err);
		s->idb = NULL;
		free(idir);
		return NERR_IO;
	}
	free(idir);
	return NERR_OK;
}

/*
 * Moves inbox records a data directory written before the inbox had its own
 * database still holds into it: copied with sync first, then deleted, so a
 * crash in between only copies them again.
 */
static enum nerr migrate_inbox(struct store *s)
{
	rocksdb_iterator_t *it =
		rocksdb_create_iterator_cf(s->db, s->ropts, s->cf[STORE_CF_INBOX]);
	rocksdb_writebatch_t *to = rocksdb_writebatch_create(),
			     *from = rocksdb_writebatch_create();
	char *err = NULL;
	int n = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it), n++) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl),
			   *v = rocksdb_iter_value(it, &vl);

		rocksdb_writebatch_put_cf(to, s->icf[1], k, kl, v, vl);
		rocksdb_writebatch_delete_cf(from, s->cf[STORE_CF_INBOX], k, kl);
	}
	rocksdb_iter_destroy(it);
	if (n) {
		rocksdb_write(s->idb, s->wopts_sync, to, &err);
		if (!err)
			rocksdb_write(s->db, s->wopts_sync, from, &err);
		if (!err)
			log_info("store",
				 "msg=\"inbox records moved to the inbox database\" "
				 "records=%d",
				 n);
	}
	rocksdb_writebatch_destroy(to);
	rocksdb_writebatch_destroy(from);
	if (err) {
		log_error("store", "msg=\"inbox move failed\" err=\"%s\"", err);
		free(err);
		return NERR_IO;
	}
	return NERR_OK;
}

static enum nerr open_common(const char *dir, bool readonly, struct store **out,
			     struct nerr_msg *msg)
{
	struct store *s = xcalloc(1, sizeof(*s));
	const rocksdb_options_t *cf_opts[STORE_CF__COUNT];
	char *err = NULL;

	s->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(s->opts, !readonly);
	rocksdb_options_set_create_missing_column_families(s->opts, !readonly);
	rocksdb_options_increase_parallelism(s->opts, 2);
	rocksdb_options_set_max_open_files(s->opts, 512);
	rocksdb_options_set_info_log_level(s->opts, 2); /* warn */
	rocksdb_options_set_keep_log_file_num(s->opts, 3);
	s->cache = rocksdb_cache_create_lru(64 << 20);
	s->bbto = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(s->bbto, s->cache);
	/* Point reads that miss are the common case for some families (a new
	 * messageId, a new identity): a whole-key bloom filter in every table
	 * file and in every memtable answers most of them without a search. The
	 * table options own the filter policy. */
	rocksdb_block_based_options_set_filter_policy(
		s->bbto, rocksdb_filterpolicy_create_bloom_full(10));
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->opts, 0.02);
	rocksdb_options_set_memtable_whole_key_filtering(s->opts, 1);
	rocksdb_options_set_block_based_table_factory(s->opts, s->bbto);
	for (int i = 0; i < STORE_CF__COUNT; i++)
		cf_opts[i] = s->opts;
	s->dedup_opts = rocksdb_options_create_copy(s->opts);
	s->dedup_filter = rocksdb_compactionfilter_create(
		s, dedup_filter_state_free, dedup_filter, dedup_filter_name);
	rocksdb_options_set_compaction_filter(s->dedup_opts, s->dedup_filter);
	cf_opts[STORE_CF_DEDUP] = s->dedup_opts;

	if (readonly)
		s->db = rocksdb_open_for_read_only_column_families(
			s->opts, dir, STORE_CF__COUNT, cf_names, cf_opts, s->cf, 0, &err);
	else
		s->db = rocksdb_open_column_families(s->opts, dir, STORE_CF__COUNT,
						     cf_names, cf_opts, s->cf, &err);
	if (err) {
		nerr_set(msg, NERR_IO, "data_dir", "cannot open store in %s: %s", dir,
			 err);
		log_error("store", "msg=\"open failed\" dir=%s err=\"%s\"", dir, err);
		free(err);
		s->db = NULL;
		store_close(s);
		return NERR_IO;
	}
	s->ropts = rocksdb_readoptions_create();
	s->wopts_sync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(s->wopts_sync, 1);
	s->wopts_nosync = rocksdb_writeoptions_create();
	if (open_inbox_db(s, dir, readonly, msg) != NERR_OK ||
	    (!readonly && migrate_inbox(s) != NERR_OK)) {
		nerr_set(msg, NERR_IO, "data_dir", "cannot open the inbox in %s", dir);
		store_close(s);
		return NERR_IO;
	}
	*out = s;
	return NERR_OK;
}

enum nerr store_open(const char *dir, struct store **out, struct nerr_msg *msg)
{
	return open_common(dir, false, out, msg);
}

enum nerr store_open_readonly(const char *dir, struct store **out, struct nerr_msg *msg)
{
	return open_common(dir, true, out, msg);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->idb) {
		for (int i = 0; i < 2; i++)
			rocksdb_column_family_handle_destroy(s->icf[i]);
		rocksdb_close(s->idb);
	}
	if (s->db) {
		for (int i = 0; i < STORE_CF__COUNT; i++)
			if (s->cf[i])
				rocksdb_column_family_handle_destroy(s->cf[i]);
		rocksdb_close(s->db);
	}
	if (s->ropts)
		rocksdb_readoptions_destroy(s->ropts);
	if (s->wopts_sync)
		rocksdb_writeoptions_destroy(s->wopts_sync);
	if (s->wopts_nosync)
		rocksdb_writeoptions_destroy(s->wopts_nosync);
	rocksdb_options_destroy(s->opts);
	if (s->dedup_opts)
		rocksdb_options_destroy(s->dedup_opts);
	if (s->dedup_filter)
		rocksdb_compactionfilter_destroy(s->dedup_filter);
	rocksdb_block_based_options_destroy(s->bbto);
	rocksdb_cache_destroy(s->cache);
	free(s);
}

/* RocksDB values are not NUL-terminated; hand out a terminated copy. */
static char *terminated_copy(char *v, size_t len)
{
	char *p = xmalloc(len + 1);

	memcpy(p, v, len);
	p[len] = '\0';
	free(v);
	return p;
}

enum nerr store_get(struct store *s, enum store_cf cf, const void *key, size_t klen,
		    char **val, size_t *len)
{
	char *err = NULL;
	size_t vl = 0;
	char *v = rocksdb_get_cf(db_for(s, cf), s->ropts, cf_for(s, cf), key, klen, &vl,
				 &err);

	if (err) {
		log_error("store", "msg=\"get failed\" cf=%s err=\"%s\"", cf_names[cf],
			  err);
		free(err);
		return NERR_IO;
	}
	if (!v)
		return NERR_NOTFOUND;
	*val = terminated_copy(v, vl);
	if (len)
		*len = vl;
	return NERR_OK;
}

struct store_batch *store_batch_new(struct store *s)
{
	struct store_batch *b = xcalloc(1, sizeof(*b));

	b->s = s;
	b->wb = rocksdb_writebatch_wi_create(0, 1);
	return b;
}

void store_batch_free(struct store_batch *b)
{
	if (!b)
		return;
	rocksdb_writebatch_wi_destroy(b->wb);
	free(b->blind);
	free(b);
}

void store_batch_clear(struct store_batch *b)
{
	rocksdb_writebatch_wi_clear(b->wb);
	b->blind_len = 0;
	b->nblind = 0;
	b->nblind_inbox = 0;
}

unsigned store_batch_count(const struct store_batch *b)
{
	return (unsigned)rocksdb_writebatch_wi_count(b->wb) + b->nblind;
}

static void blind_add(struct store_batch *b, enum store_cf cf, int kind, const void *key,
		      size_t klen, const void *val, size_t vlen)
{
	struct blind_op op = {(uint32_t)klen, (uint32_t)vlen, (unsigned char)cf,
			      (unsigned char)kind};
	size_t need = sizeof(op) + klen + vlen;

	ASSERT(klen <= UINT32_MAX && vlen <= UINT32_MAX);
	if (b->blind_len + need > b->blind_cap) {
		size_t cap = b->blind_cap ? b->blind_cap : 4096;

		while (cap < b->blind_len + need)
			cap *= 2;
		b->blind = xrealloc(b->blind, cap);
		b->blind_cap = cap;
	}
	memcpy(b->blind + b->blind_len, &op, sizeof(op));
	memcpy(b->blind + b->blind_len + sizeof(op), key, klen);
	if (vlen)
		memcpy(b->blind + b->blind_len + sizeof(op) + klen, val, vlen);
	b->blind_len += need;
	b->nblind++;
	b->nblind_inbox += in_idb(b->s, cf);
}

void store_batch_put_blind(struct store_batch *b, enum store_cf cf, const void *key,
			   size_t klen, const void *val, size_t vlen)
{
	blind_add(b, cf, BLIND_PUT, key, klen, val, vlen);
}

void store_batch_delete_blind(struct store_batch *b, enum store_cf cf, const void *key,
			      size_t klen)
{
	blind_add(b, cf, BLIND_DELETE, key, klen, NULL, 0);
}

void store_batch_delete_range_blind(struct store_batch *b, enum store_cf cf,
				    const void *start, size_t slen, const void *end,
				    size_t elen)
{
	blind_add(b, cf, BLIND_DELETE_RANGE, start, slen, end, elen);
}

/* Appends the blind writes to the main database (inbox false) or to the
 * inbox database (true) to a plain write batch. */
static void blind_replay(const struct store_batch *b, rocksdb_writebatch_t *wb,
			 bool inbox)
{
	for (size_t off = 0; off < b->blind_len;) {
		struct blind_op op;
		const char *k = b->blind + off + sizeof(op);

		memcpy(&op, b->blind + off, sizeof(op));
		off += sizeof(op) + op.klen + op.vlen;
		if (in_idb(b->s, op.cf) != inbox)
			continue;
		if (op.kind == BLIND_DELETE)
			rocksdb_writebatch_delete_cf(wb, cf_for(b->s, op.cf), k, op.klen);
		else if (op.kind == BLIND_DELETE_RANGE)
			rocksdb_writebatch_delete_range_cf(wb, cf_for(b->s, op.cf), k,
							   op.klen, k + op.klen, op.vlen);
		else
			rocksdb_writebatch_put_cf(wb, cf_for(b->s, op.cf), k, op.klen,
						  k + op.klen, op.vlen);
	}
}

void store_batch_put(struct store_batch *b, enum store_cf cf, const void *key,
		     size_t klen, const void *val, size_t vlen)
{
	if (in_idb(b->s, cf)) /* another database: the index cannot hold it */
		return blind_add(b, cf, BLIND_PUT, key, klen, val, vlen);
	rocksdb_writebatch_wi_put_cf(b->wb, b->s->cf[cf], key, klen, val, vlen);
}

void store_batch_delete(struct store_batch *b, enum store_cf cf, const void *key,
			size_t klen)
{
	if (in_idb(b->s, cf))
		return blind_add(b, cf, BLIND_DELETE, key, klen, NULL, 0);
	rocksdb_writebatch_wi_delete_cf(b->wb, b->s->cf[cf], key, klen);
}

enum nerr store_batch_get(struct store_batch *b, enum store_cf cf, const void *key,
			  size_t klen, char **val, size_t *len)
{
	char *err = NULL;
	size_t vl = 0;
	char *v;

	if (in_idb(b->s, cf)) /* its writes are blind: committed state only */
		return store_get(b->s, cf, key, klen, val, len);
	v = rocksdb_writebatch_wi_get_from_batch_and_db_cf(
		b->wb, b->s->db, b->s->ropts, b->s->cf[cf], key, klen, &vl, &err);

	if (err) {
		log_error("store", "msg=\"batch get failed\" cf=%s err=\"%s\"",
			  cf_names[cf], err);
		free(err);
		return NERR_IO;
	}
	if (!v)
		return NERR_NOTFOUND;
	*val = terminated_copy(v, vl);
	if (len)
		*len = vl;
	return NERR_OK;
}

/*
 * Writes the main database's part (indexed writes, then blind ones) in one
 * atomic write, then the inbox database's part. When a batch has both (the
 * engine consuming inbox records beside its state), the inbox part follows
 * without a sync of its own: what the engine consumed is its applied position,
 * committed in the main part; consumed records left by a crash are deleted
 * at start (inbox_trim). The inbox database's writes are synced by the next committer
 * write anyway, since they share its WAL.
 */
enum nerr store_batch_commit(struct store_batch *b, bool sync, struct nerr_msg *msg)
{
	rocksdb_writeoptions_t *wo = sync ? b->s->wopts_sync : b->s->wopts_nosync;
	unsigned nwi = (unsigned)rocksdb_writebatch_wi_count(b->wb);
	bool main_part = nwi || b->nblind > b->nblind_inbox;
	char *err = NULL;

	if (b->nblind == 0) {
		rocksdb_write_writebatch_wi(b->s->db, wo, b->wb, &err);
	} else if (main_part) {
		/* One plain batch: the indexed writes' bytes as they are, then
		 * the blind ones, so all of it still commits atomically. */
		size_t size = 0;
		const char *rep = nwi ? rocksdb_writebatch_wi_data(b->wb, &size) : NULL;
		rocksdb_writebatch_t *wb = rep ? rocksdb_writebatch_create_from(rep, size)
					       : rocksdb_writebatch_create();

		blind_replay(b, wb, false);
		rocksdb_write(b->s->db, wo, wb, &err);
		rocksdb_writebatch_destroy(wb);
	}
	if (!err && b->nblind_inbox) {
		rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

		blind_replay(b, wb, true);
		rocksdb_write(b->s->idb, main_part ? b->s->wopts_nosync : wo, wb, &err);
		rocksdb_writebatch_destroy(wb);
	}
	if (err) {
		nerr_set(msg, NERR_IO, NULL, "write failed: %s", err);
		log_error("store", "msg=\"commit failed\" sync=%d err=\"%s\"", sync, err);
		free(err);
		return NERR_IO;
	}
	store_batch_clear(b);
	return NERR_OK;
}

struct store_iter *store_iter_new(struct store *s, struct store_batch *b,
				  enum store_cf cf)
{
	struct store_iter *it = xcalloc(1, sizeof(*it));
	rocksdb_iterator_t *base =
		rocksdb_create_iterator_cf(db_for(s, cf), s->ropts, cf_for(s, cf));

	if (b && !in_idb(s, cf)) /* the inbox's pending writes are blind */
		it->it = rocksdb_writebatch_wi_create_iterator_with_base_cf(b->wb, base,
									    s->cf[cf]);
	else
		it->it = base;
	return it;
}

void store_iter_free(struct store_iter *it)
{
	if (!it)
		return;
	rocksdb_iter_destroy(it->it);
	free(it);
}

void store_iter_seek(struct store_iter *it, const void *key, size_t klen)
{
	rocksdb_iter_seek(it->it, key, klen);
}

void store_iter_seek_first(struct store_iter *it)
{
	rocksdb_iter_seek_to_first(it->it);
}

void store_iter_seek_last(struct store_iter *it)
{
	rocksdb_iter_seek_to_last(it->it);
}

bool store_iter_valid(const struct store_iter *it)
{
	return rocksdb_iter_valid(it->it) != 0;
}

void store_iter_next(struct store_iter *it)
{
	rocksdb_iter_next(it->it);
}

const char *store_iter_key(const struct store_iter *it, size_t *klen)
{
	return rocksdb_iter_key(it->it, klen);
}

const char *store_iter_value(const struct store_iter *it, size_t *vlen)
{
	return rocksdb_iter_value(it->it, vlen);
}
