/*
 * store.c -- RocksDB behind the store.h interface.
 *
 * Design: one rocksdb_t with a fixed list of column families (created when
 * missing, so older data directories gain new families). A batch is our own
 * write-back buffer (see "The write-back batch" below): a hash table holding
 * each key's last indexed write, so the engine reads its own uncommitted
 * writes, and per-family sorted lists for iterators. At commit its keys go
 * into one plain WriteBatch sorted by family and key, each once however
 * often it was written. It replaced a WriteBatchWithIndex, whose skiplist index
 * cost a search per write and per read-back (about a seventh of the engine's
 * CPU) and whose commit inserted every version of every key: the engine's
 * catch-up went from about 29.9k to 34k events/s.
 * Writes nobody reads back (blind writes) are kept beside the table as plain
 * records and appended, after the indexed ones, to the same WriteBatch: still
 * one atomic write.
 * The inbox family lives in a second rocksdb_t under dir/inbox (departing from
 * DESIGN.md §4's one database, for one reason): with one database, every
 * synced inbox write of the committer queued behind the engine's batch write
 * in RocksDB's single write path and WAL, so an ack waited for two syncs and
 * an engine batch's memtable inserts. Its own WAL makes the inbox sync alone.
 * Inbox writes are always blind (one atomic write cannot span two databases); a
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

#include "base/arena.h"
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
	[STORE_CF_AUDIENCES] = "audiences",	[STORE_CF_HISTORY] = "history",
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
	/* Read-only, a family the directory does not have yet reads as the
	 * default family, which nudge never writes: empty (see open_read_only). */
	bool cf_alias[STORE_CF__COUNT];
	rocksdb_cache_t *cache;
	rocksdb_block_based_table_options_t *bbto;
	/* STORE_CF_DEDUP expires by compaction (see store_set_dedup_window). */
	rocksdb_options_t *dedup_opts;
	rocksdb_compactionfilter_t *dedup_filter;
	_Atomic int64_t dedup_window_ms;       /* 0: keep everything */
	_Atomic int64_t dedup_clock_offset_ms; /* the engine's clock - the wall clock */
};

/* One blind write in store_batch.blind: header, then key, then value. */
struct blind_op {
	uint32_t klen, vlen;
	unsigned char cf;
	unsigned char kind; /* BLIND_PUT, BLIND_DELETE, BLIND_DELETE_RANGE (val = end) */
};

enum { BLIND_PUT, BLIND_DELETE, BLIND_DELETE_RANGE };

/* One key's latest indexed write (see "The write-back batch" below). */
struct entry {
	uint64_t hash;
	const char *val; /* in the batch's arena; NULL: a delete */
	uint32_t klen, vlen;
	unsigned char cf;
	char key[];
};

/* A family's entries sorted by key; shared by the family and its iterators,
 * freed by whoever drops the last reference. */
struct snap {
	unsigned refs;
	size_t n, cap;
	struct entry *e[];
};

/* A column family's entries: sorted ones, then the keys written since. */
struct fam {
	struct snap *sorted;  /* a reference, or NULL */
	struct entry **added; /* not in sorted yet, in write order; owned */
	size_t nadded, added_cap;
	size_t nkeys; /* distinct keys: sorted's and added's */
};

/* A committed value kept by a batch's read cache (store_batch_cache). */
struct centry {
	struct centry *hnext;	    /* hash chain */
	struct centry *prev, *next; /* recency list, most recent first */
	uint64_t hash;
	char *val; /* malloc'd, vlen bytes */
	uint32_t klen, vlen;
	unsigned char cf;
	char key[];
};

struct rcache {
	struct centry **slots; /* chains; nslots a power of two */
	size_t nslots, n, bytes, max_bytes;
	struct centry *head, *tail;
	bool on[STORE_CF__COUNT];
};

/* Owned by its creator (the engine thread's loop, a test); one thread. */
struct store_batch {
	struct store *s;
	struct arena mem;     /* entries and values; reset at clear */
	struct entry **slots; /* hash table of entries, linear probing; owned */
	size_t nslots, nkeys; /* nslots: a power of two, or 0 */
	struct fam fam[STORE_CF__COUNT];
	char *blind; /* blind_op records back to back, not indexed */
	size_t blind_len, blind_cap;
	unsigned nblind;
	unsigned nblind_inbox; /* of them, to the inbox database */
	struct rcache *rc;     /* NULL: no read cache */
};

/* Where a merging iterator stands. */
enum { AT_END, AT_DB, AT_BATCH, AT_BOTH };

struct store_iter {
	rocksdb_iterator_t *it;
	struct store_batch *b; /* NULL: the committed state only */
	enum store_cf cf;
	/* With a batch: */
	struct snap *snap; /* b's keys of cf when created or last sought; a reference */
	size_t pos;	   /* the first entry of snap not passed yet */
	int at;		   /* AT_*: what the current pair comes from */
	const char *key, *val; /* the current pair */
	size_t klen, vlen;
	char *last; /* seek_last's key, copied */
	size_t last_cap;
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

void store_set_dedup_clock_offset(struct store *s, int64_t offset_ms)
{
	atomic_store(&s->dedup_clock_offset_ms, offset_ms);
}

/*
 * The dedup family's compaction filter (RocksDB's compaction threads): an
 * entry whose first-seen time (the value's first 8 bytes, big-endian ms) is
 * older than the window by the engine's clock (the wall clock moved by the
 * offset the engine publishes: a test clock set in the past must not expire
 * entries the engine still counts) is dropped. Reads check the time
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
	       (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
		       atomic_load(&s->dedup_clock_offset_ms) - window;
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
 * Opens dir read-only with the families it has: one written by an older nudge
 * lacks the newer ones, which only a writable open creates. Those read as the
 * default family (never written, so empty) through an alias handle.
 */
static rocksdb_t *open_read_only(struct store *s, const char *dir,
				 const rocksdb_options_t *const *cf_opts, char **err)
{
	size_t nhave = 0, n = 0;
	char **have = rocksdb_list_column_families(s->opts, dir, &nhave, err);
	bool present[STORE_CF__COUNT] = {[STORE_CF_DEFAULT] = true};
	const char *names[STORE_CF__COUNT];
	const rocksdb_options_t *opts[STORE_CF__COUNT];
	rocksdb_column_family_handle_t *h[STORE_CF__COUNT];
	rocksdb_t *db;

	if (*err)
		return NULL;
	for (size_t j = 0; j < nhave; j++)
		for (int i = 0; i < STORE_CF__COUNT; i++)
			present[i] |= strcmp(have[j], cf_names[i]) == 0;
	rocksdb_list_column_families_destroy(have, nhave);
	if (!present[STORE_CF_META]) { /* every nudge directory has had it */
		*err = strdup("not a nudge data directory (no meta family)");
		return NULL;
	}
	for (int i = 0; i < STORE_CF__COUNT; i++) {
		if (present[i]) {
			names[n] = cf_names[i];
			opts[n++] = cf_opts[i];
		}
	}
	db = rocksdb_open_for_read_only_column_families(s->opts, dir, (int)n, names, opts,
							h, 0, err);
	if (!db)
		return NULL;
	/* STORE_CF_DEFAULT, first and always present, is set before the
	 * families that alias it. */
	_Static_assert(STORE_CF_DEFAULT == 0, "the default family comes first");
	n = 0;
	for (int i = 0; i < STORE_CF__COUNT; i++) {
		s->cf_alias[i] = !present[i];
		s->cf[i] = present[i] ? h[n++] : s->cf[STORE_CF_DEFAULT];
	}
	return db;
}

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
		s->db = open_read_only(s, dir, cf_opts, &err);
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
			if (s->cf[i] && !s->cf_alias[i])
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

/*
 * The write-back batch.
 *
 * An indexed write lands in its key's `struct entry`, found by hashing
 * (family, key): a later write to the key replaces the entry's operation in
 * place, so the batch holds each key's final state once, and the commit
 * sends RocksDB one write per key. A put copies its value to fresh arena
 * bytes and leaves the old ones: an iterator, or a caller holding what
 * store_iter_value returned, may still point at them. Entries and values
 * are released at once when the batch clears.
 *
 * Each family also lists its entries for iterators and for the commit: a
 * sorted array (`struct snap`), plus the keys added since it was sorted,
 * which are sorted and merged in only when someone needs order. Iterators
 * hold a reference to the array they walk, so merging new keys while one is
 * open builds a new array instead of moving the one under it.
 */

/* A zero-length value still needs a non-NULL pointer: NULL marks a delete. */
static const char empty_val[1];

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = al && bl ? memcmp(a, b, al < bl ? al : bl) : 0;

	return c ? c : (al > bl) - (al < bl);
}

static int entry_cmp(const void *pa, const void *pb)
{
	const struct entry *a = *(struct entry *const *)pa;
	const struct entry *b = *(struct entry *const *)pb;

	return key_cmp(a->key, a->klen, b->key, b->klen);
}

static uint64_t key_hash(enum store_cf cf, const void *key, size_t klen)
{
	const unsigned char *p = key;
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)cf << 56) ^ klen, w;

	for (; klen >= 8; p += 8, klen -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ (w * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
		h ^= h >> 31;
	}
	w = 0;
	for (size_t i = 0; i < klen; i++)
		w |= (uint64_t)p[i] << (8 * i);
	h = (h ^ (w * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
	/* murmur3's finalizer: the slot comes from the low bits */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Whether a stored (hash, family, key) is the one looked for (batch entries
 * and read-cache entries alike). */
static bool same_key(uint64_t h1, unsigned cf1, const char *k1, size_t l1, uint64_t h2,
		     enum store_cf cf2, const void *k2, size_t l2)
{
	return h1 == h2 && cf1 == (unsigned)cf2 && l1 == l2 &&
	       (l1 == 0 || memcmp(k1, k2, l1) == 0);
}

/* Returns the slot holding (cf, key), or the empty slot where it would go. */
static struct entry **slot_find(const struct store_batch *b, uint64_t h, enum store_cf cf,
				const void *key, size_t klen)
{
	size_t mask = b->nslots - 1;

	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		struct entry *e = b->slots[i];

		if (!e || same_key(e->hash, e->cf, e->key, e->klen, h, cf, key, klen))
			return &b->slots[i];
	}
}

static struct entry *entry_get(const struct store_batch *b, enum store_cf cf,
			       const void *key, size_t klen)
{
	if (!b->nkeys)
		return NULL;
	return *slot_find(b, key_hash(cf, key, klen), cf, key, klen);
}

/* Doubles the table, keeping it at most half full. */
static void slots_grow(struct store_batch *b)
{
	size_t n = b->nslots ? b->nslots * 2 : 1024;
	struct entry **old = b->slots;
	size_t nold = b->nslots;

	b->slots = xcalloc(n, sizeof(*b->slots));
	b->nslots = n;
	for (size_t i = 0; i < nold; i++) {
		size_t j;

		if (!old[i])
			continue;
		for (j = (size_t)old[i]->hash & (n - 1); b->slots[j];
		     j = (j + 1) & (n - 1))
			;
		b->slots[j] = old[i];
	}
	free(old);
}

/* Returns the entry of (cf, key), creating it (as a delete) if missing. */
static struct entry *entry_upsert(struct store_batch *b, enum store_cf cf,
				  const void *key, size_t klen)
{
	uint64_t h = key_hash(cf, key, klen);
	struct entry **slot, *e;
	struct fam *f = &b->fam[cf];

	ASSERT(klen <= UINT32_MAX);
	if ((b->nkeys + 1) * 2 > b->nslots)
		slots_grow(b);
	slot = slot_find(b, h, cf, key, klen);
	e = *slot;
	if (e)
		return e;
	e = arena_alloc(&b->mem, sizeof(*e) + klen);
	e->hash = h;
	e->val = NULL;
	e->klen = (uint32_t)klen;
	e->vlen = 0;
	e->cf = (unsigned char)cf;
	if (klen)
		memcpy(e->key, key, klen);
	*slot = e;
	b->nkeys++;
	if (f->nadded == f->added_cap) {
		f->added_cap = f->added_cap ? f->added_cap * 2 : 64;
		f->added = xrealloc(f->added, f->added_cap * sizeof(*f->added));
	}
	f->added[f->nadded++] = e;
	f->nkeys++;
	return e;
}

static void snap_release(struct snap *sn)
{
	if (sn && --sn->refs == 0)
		free(sn);
}

/*
 * Returns the family's entries in key order (NULL when it has none): the
 * keys added since the last call are sorted and merged in, in place when
 * nobody else holds the array, else into a new one. The family keeps its
 * reference; take one to keep the array.
 */
static struct snap *fam_sorted(struct fam *f)
{
	struct snap *old = f->sorted, *sn;
	size_t nold = old ? old->n : 0, n = nold + f->nadded, i, j, k;

	if (!f->nadded)
		return old;
	qsort(f->added, f->nadded, sizeof(*f->added), entry_cmp);
	if (old && old->refs == 1 && old->cap >= n) {
		sn = old;
	} else {
		size_t cap = n < 64 ? 64 : n * 2;

		sn = xmalloc(sizeof(*sn) + cap * sizeof(sn->e[0]));
		sn->refs = 1;
		sn->cap = cap;
		if (nold)
			memcpy(sn->e, old->e, nold * sizeof(sn->e[0]));
		snap_release(old);
	}
	/* Merge from the back so the old keys move at most once. */
	i = nold;
	j = f->nadded;
	k = n;
	while (j > 0) {
		if (i > 0 && entry_cmp(&sn->e[i - 1], &f->added[j - 1]) > 0)
			sn->e[--k] = sn->e[--i];
		else
			sn->e[--k] = f->added[--j];
	}
	sn->n = n;
	f->sorted = sn;
	f->nadded = 0;
	return sn;
}

/*
 * The read cache: committed values of the families a batch owns, so a
 * profile or identity read again by a later batch is a hash lookup instead of
 * a RocksDB read (memtable and table searches were a fifth of the engine's
 * time per event). Filled by reads that miss and by the batch's own commits;
 * a committed delete or a blind write drops the key; least recently used
 * values go first when the budget is passed. It holds only committed state,
 * so a batch cleared without commit leaves it right.
 */
static struct centry **rc_chain(struct rcache *rc, uint64_t h)
{
	return &rc->slots[h & (rc->nslots - 1)];
}

static struct centry *rc_find(struct rcache *rc, uint64_t h, enum store_cf cf,
			      const void *key, size_t klen)
{
	for (struct centry *e = *rc_chain(rc, h); e; e = e->hnext)
		if (same_key(e->hash, e->cf, e->key, e->klen, h, cf, key, klen))
			return e;
	return NULL;
}

static void rc_unlink_lru(struct rcache *rc, struct centry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		rc->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		rc->tail = e->prev;
	e->prev = e->next = NULL;
}

static void rc_push_front(struct rcache *rc, struct centry *e)
{
	e->prev = NULL;
	e->next = rc->head;
	if (rc->head)
		rc->head->prev = e;
	rc->head = e;
	if (!rc->tail)
		rc->tail = e;
}

/* Makes a listed entry the most recent. */
static void rc_touch(struct rcache *rc, struct centry *e)
{
	if (rc->head == e)
		return;
	rc_unlink_lru(rc, e);
	rc_push_front(rc, e);
}

static void rc_remove(struct rcache *rc, struct centry *e)
{
	struct centry **pp = rc_chain(rc, e->hash);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	rc_unlink_lru(rc, e);
	rc->bytes -= sizeof(*e) + e->klen + e->vlen;
	rc->n--;
	free(e->val);
	free(e);
}

static void rc_grow(struct rcache *rc)
{
	size_t n = rc->nslots * 2;
	struct centry **slots = xcalloc(n, sizeof(*slots));

	for (size_t i = 0; i < rc->nslots; i++) {
		struct centry *e = rc->slots[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			e->hnext = slots[e->hash & (n - 1)];
			slots[e->hash & (n - 1)] = e;
		}
	}
	free(rc->slots);
	rc->slots = slots;
	rc->nslots = n;
}

/* h is key_hash(cf, key, klen), which batch entries carry already. */
static void rc_put(struct rcache *rc, uint64_t h, enum store_cf cf, const void *key,
		   size_t klen, const void *val, size_t vlen)
{
	struct centry *e = rc_find(rc, h, cf, key, klen);

	if (sizeof(*e) + klen + vlen > rc->max_bytes / 8) {
		if (e) /* too big to keep: at least never stale */
			rc_remove(rc, e);
		return;
	}
	if (e) {
		rc->bytes -= e->vlen;
		free(e->val);
		rc_touch(rc, e);
	} else {
		if (rc->n >= rc->nslots)
			rc_grow(rc);
		e = xcalloc(1, sizeof(*e) + klen);
		e->hash = h;
		e->cf = (unsigned char)cf;
		e->klen = (uint32_t)klen;
		if (klen)
			memcpy(e->key, key, klen);
		e->hnext = *rc_chain(rc, h);
		*rc_chain(rc, h) = e;
		rc_push_front(rc, e);
		rc->n++;
		rc->bytes += sizeof(*e) + klen;
	}
	e->val = xmalloc(vlen ? vlen : 1);
	if (vlen)
		memcpy(e->val, val, vlen);
	e->vlen = (uint32_t)vlen;
	rc->bytes += vlen;
	while (rc->bytes > rc->max_bytes && rc->tail)
		rc_remove(rc, rc->tail);
}

static void rc_drop(struct rcache *rc, uint64_t h, enum store_cf cf, const void *key,
		    size_t klen)
{
	struct centry *e = rc_find(rc, h, cf, key, klen);

	if (e)
		rc_remove(rc, e);
}

static void rc_drop_family(struct rcache *rc, enum store_cf cf)
{
	for (struct centry *e = rc->head, *next; e; e = next) {
		next = e->next;
		if (e->cf == cf)
			rc_remove(rc, e);
	}
}

static void rc_free(struct rcache *rc)
{
	if (!rc)
		return;
	while (rc->head)
		rc_remove(rc, rc->head);
	free(rc->slots);
	free(rc);
}

void store_batch_cache(struct store_batch *b, enum store_cf cf, size_t max_bytes)
{
	ASSERT(!in_idb(b->s, cf));
	if (!b->rc) {
		b->rc = xcalloc(1, sizeof(*b->rc));
		b->rc->nslots = 1024;
		b->rc->slots = xcalloc(b->rc->nslots, sizeof(*b->rc->slots));
	}
	b->rc->on[cf] = true;
	b->rc->max_bytes = max_bytes;
}

/* After a successful commit: what the batch wrote is what is committed now. */
static void rc_committed(struct store_batch *b)
{
	struct rcache *rc = b->rc;

	for (int cf = 0; cf < STORE_CF__COUNT; cf++) {
		struct fam *f = &b->fam[cf];
		struct snap *sn;

		if (!rc->on[cf] || !f->nkeys)
			continue;
		sn = fam_sorted(f);
		for (size_t i = 0; sn && i < sn->n; i++) {
			const struct entry *e = sn->e[i];

			if (e->val)
				rc_put(rc, e->hash, (enum store_cf)cf, e->key, e->klen,
				       e->val, e->vlen);
			else
				rc_drop(rc, e->hash, (enum store_cf)cf, e->key, e->klen);
		}
	}
	for (size_t off = 0; off < b->blind_len;) {
		struct blind_op op;
		const char *k = b->blind + off + sizeof(op);

		memcpy(&op, b->blind + off, sizeof(op));
		off += sizeof(op) + op.klen + op.vlen;
		if (!rc->on[op.cf])
			continue;
		if (op.kind == BLIND_DELETE_RANGE)
			rc_drop_family(rc, (enum store_cf)op.cf);
		else
			rc_drop(rc, key_hash((enum store_cf)op.cf, k, op.klen),
				(enum store_cf)op.cf, k, op.klen);
	}
}

/* Tables (hash slots, sorted views) above this many entries are freed at
 * clear when the batch used little of them. */
#define BIG_TABLE ((size_t)1 << 16)

struct store_batch *store_batch_new(struct store *s)
{
	struct store_batch *b = xcalloc(1, sizeof(*b));

	b->s = s;
	arena_init(&b->mem, 256 << 10);
	return b;
}

void store_batch_free(struct store_batch *b)
{
	if (!b)
		return;
	for (int i = 0; i < STORE_CF__COUNT; i++) {
		snap_release(b->fam[i].sorted);
		free(b->fam[i].added);
	}
	free(b->slots);
	arena_fini(&b->mem);
	free(b->blind);
	rc_free(b->rc);
	free(b);
}

void store_batch_clear(struct store_batch *b)
{
	for (int i = 0; i < STORE_CF__COUNT; i++) {
		struct fam *f = &b->fam[i];

		/* Kept for the next batch, unless one exceptional batch (a
		 * journey stopped for millions of instances) made it huge. */
		if (f->sorted && f->sorted->refs == 1 &&
		    (f->sorted->cap <= BIG_TABLE || f->sorted->n * 8 >= f->sorted->cap)) {
			f->sorted->n = 0;
		} else {
			snap_release(f->sorted);
			f->sorted = NULL;
		}
		f->nadded = 0;
		f->nkeys = 0;
	}
	if (b->nslots > BIG_TABLE && b->nkeys * 8 < b->nslots) {
		/* Zeroing a table sized for a much bigger batch would cost every
		 * later clear: it grows again on demand. */
		free(b->slots);
		b->slots = NULL;
		b->nslots = 0;
	} else if (b->nkeys) {
		memset(b->slots, 0, b->nslots * sizeof(*b->slots));
	}
	b->nkeys = 0;
	arena_reset(&b->mem);
	b->blind_len = 0;
	b->nblind = 0;
	b->nblind_inbox = 0;
}

unsigned store_batch_count(const struct store_batch *b)
{
	return (unsigned)b->nkeys + b->nblind;
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
	struct entry *e;
	char *v;

	if (in_idb(b->s, cf)) /* another database: the index cannot hold it */
		return blind_add(b, cf, BLIND_PUT, key, klen, val, vlen);
	ASSERT(vlen <= UINT32_MAX);
	e = entry_upsert(b, cf, key, klen);
	/* New bytes even when the old value would fit: see above. */
	v = vlen ? arena_alloc(&b->mem, vlen) : (char *)empty_val;
	if (vlen)
		memcpy(v, val, vlen);
	e->val = v;
	e->vlen = (uint32_t)vlen;
}

void store_batch_delete(struct store_batch *b, enum store_cf cf, const void *key,
			size_t klen)
{
	struct entry *e;

	if (in_idb(b->s, cf))
		return blind_add(b, cf, BLIND_DELETE, key, klen, NULL, 0);
	e = entry_upsert(b, cf, key, klen);
	e->val = NULL;
	e->vlen = 0;
}

/* A NUL-terminated malloc'd copy of the value, as store_get gives. */
static enum nerr copy_out(const char *v, size_t vlen, char **val, size_t *len)
{
	char *p = xmalloc(vlen + 1);

	memcpy(p, v, vlen);
	p[vlen] = '\0';
	*val = p;
	if (len)
		*len = vlen;
	return NERR_OK;
}

enum nerr store_batch_get(struct store_batch *b, enum store_cf cf, const void *key,
			  size_t klen, char **val, size_t *len)
{
	struct entry *e;
	struct centry *c;
	uint64_t h;
	size_t vl = 0;
	enum nerr rc;

	if (in_idb(b->s, cf)) /* its writes are blind: committed state only */
		return store_get(b->s, cf, key, klen, val, len);
	e = entry_get(b, cf, key, klen);
	if (e)
		return e->val ? copy_out(e->val, e->vlen, val, len) : NERR_NOTFOUND;
	if (!b->rc || !b->rc->on[cf])
		return store_get(b->s, cf, key, klen, val, len);
	h = key_hash(cf, key, klen);
	c = rc_find(b->rc, h, cf, key, klen);
	if (c) {
		rc_touch(b->rc, c);
		return copy_out(c->val, c->vlen, val, len);
	}
	rc = store_get(b->s, cf, key, klen, val, &vl);
	if (rc == NERR_OK) {
		rc_put(b->rc, h, cf, key, klen, *val, vl);
		if (len)
			*len = vl;
	}
	return rc;
}

/*
 * Writes the main database's part (indexed writes sorted by family and key,
 * then blind ones) in one atomic write, then the inbox database's part.
 * Sorted because RocksDB inserts a write batch into its memtable skiplists in
 * batch order and an insert can reuse its predecessor's search path. In
 * RocksDB 7.8 a plain insert reuses it only when nothing already in the
 * memtable lies between the two keys (keys appended past a family's end, such
 * as a profile's new events); otherwise it searches from the top as before, so
 * the order saved little measured on the engine: what made the commit cheaper
 * is that each key is inserted once. (The insert-hint prefix extractor, which
 * reuses the path for near keys too, trips an assertion in Debian's RocksDB
 * 7.8.3 and is not used.)
 * When a batch has both parts (the engine consuming inbox records beside its
 * state), the inbox part follows without a sync of its own: what the engine
 * consumed is its applied position, committed in the main part; consumed
 * records left by a crash are deleted at start (inbox_trim). The inbox
 * database's writes are synced by the next committer write anyway, since they
 * share its WAL.
 */
enum nerr store_batch_commit(struct store_batch *b, bool sync, struct nerr_msg *msg)
{
	rocksdb_writeoptions_t *wo = sync ? b->s->wopts_sync : b->s->wopts_nosync;
	bool main_part = b->nkeys || b->nblind > b->nblind_inbox;
	char *err = NULL;

	/* An empty batch still makes its (synced) write, as it always has. */
	if (main_part || b->nblind == 0) {
		rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

		for (int cf = 0; cf < STORE_CF__COUNT && b->nkeys; cf++) {
			struct snap *sn = fam_sorted(&b->fam[cf]);

			for (size_t i = 0; sn && i < sn->n; i++) {
				const struct entry *e = sn->e[i];

				if (e->val)
					rocksdb_writebatch_put_cf(wb, b->s->cf[cf],
								  e->key, e->klen, e->val,
								  e->vlen);
				else
					rocksdb_writebatch_delete_cf(wb, b->s->cf[cf],
								     e->key, e->klen);
			}
		}
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
		/* Part of it may have been written: nothing cached can be trusted. */
		while (b->rc && b->rc->head)
			rc_remove(b->rc, b->rc->head);
		return NERR_IO;
	}
	if (b->rc)
		rc_committed(b);
	store_batch_clear(b);
	return NERR_OK;
}

/*
 * Iterators over a batch merge the RocksDB iterator of the family with the
 * batch's sorted entries of it (it->snap, taken again at each seek when keys
 * were added since). On equal keys the batch wins; a batch delete hides the
 * committed key and is never yielded. An entry's operation is read when the
 * iterator reaches it, so a put or delete to a key ahead of the cursor is
 * seen. A key first written after the snapshot was taken is seen only if it
 * is a committed key too (db_override): new keys need a seek to show up.
 * The current pair points into RocksDB's iterator or into the batch's arena,
 * neither of which a write to the batch moves.
 */
struct store_iter *store_iter_new(struct store *s, struct store_batch *b,
				  enum store_cf cf)
{
	struct store_iter *it = xcalloc(1, sizeof(*it));

	it->it = rocksdb_create_iterator_cf(db_for(s, cf), s->ropts, cf_for(s, cf));
	it->cf = cf;
	if (b && !in_idb(s, cf)) /* the inbox's pending writes are blind */
		it->b = b;
	return it;
}

void store_iter_free(struct store_iter *it)
{
	if (!it)
		return;
	rocksdb_iter_destroy(it->it);
	snap_release(it->snap);
	free(it->last);
	free(it);
}

static size_t snap_n(const struct store_iter *it)
{
	return it->snap ? it->snap->n : 0;
}

/* Takes the family's sorted entries again if keys were added since. */
static void iter_refresh(struct store_iter *it)
{
	struct fam *f = &it->b->fam[it->cf];

	if (f->nkeys == snap_n(it))
		return;
	snap_release(it->snap);
	it->snap = fam_sorted(f);
	if (it->snap)
		it->snap->refs++;
}

/* The batch's entry for a committed key when it is not in the snapshot (the
 * key was first written to the batch after the snapshot was taken). */
static const struct entry *db_override(const struct store_iter *it, const char *k,
				       size_t kl)
{
	if (it->b->fam[it->cf].nkeys == snap_n(it))
		return NULL;
	return entry_get(it->b, it->cf, k, kl);
}

/* Moves to the first visible pair at or after where both sides stand. */
static void settle(struct store_iter *it)
{
	for (;;) {
		bool dv = rocksdb_iter_valid(it->it);
		struct entry *e = it->pos < snap_n(it) ? it->snap->e[it->pos] : NULL;
		const char *dk = NULL;
		size_t dkl = 0;
		int c;

		if (!dv && !e) {
			it->at = AT_END;
			return;
		}
		if (dv)
			dk = rocksdb_iter_key(it->it, &dkl);
		c = !dv ? 1 : !e ? -1 : key_cmp(dk, dkl, e->key, e->klen);
		if (c < 0) {
			const struct entry *o = db_override(it, dk, dkl);

			if (o && !o->val) {
				rocksdb_iter_next(it->it);
				continue;
			}
			it->at = AT_DB;
			it->key = dk;
			it->klen = dkl;
			if (o) {
				it->val = o->val;
				it->vlen = o->vlen;
			} else {
				it->val = rocksdb_iter_value(it->it, &it->vlen);
			}
			return;
		}
		if (!e->val) { /* deleted in the batch: hides the committed key */
			if (c == 0)
				rocksdb_iter_next(it->it);
			it->pos++;
			continue;
		}
		it->at = c == 0 ? AT_BOTH : AT_BATCH;
		it->key = e->key;
		it->klen = e->klen;
		it->val = e->val;
		it->vlen = e->vlen;
		return;
	}
}

/* The first entry of the snapshot not below key. */
static size_t snap_lower_bound(const struct store_iter *it, const void *key, size_t klen)
{
	size_t lo = 0, hi = snap_n(it);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct entry *e = it->snap->e[mid];

		if (key_cmp(e->key, e->klen, key, klen) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void store_iter_seek(struct store_iter *it, const void *key, size_t klen)
{
	rocksdb_iter_seek(it->it, key, klen);
	if (!it->b)
		return;
	iter_refresh(it);
	it->pos = snap_lower_bound(it, key, klen);
	settle(it);
}

void store_iter_seek_first(struct store_iter *it)
{
	rocksdb_iter_seek_to_first(it->it);
	if (!it->b)
		return;
	iter_refresh(it);
	it->pos = 0;
	settle(it);
}

/*
 * Walks back from the last committed key and the last entry to the last
 * visible key, then seeks to it: forward iteration (next) needs both sides
 * positioned after it, which the backward walk does not leave.
 */
void store_iter_seek_last(struct store_iter *it)
{
	size_t bi;
	const char *k = NULL;
	size_t kl = 0;

	rocksdb_iter_seek_to_last(it->it);
	if (!it->b)
		return;
	iter_refresh(it);
	bi = snap_n(it);
	for (;;) {
		bool dv = rocksdb_iter_valid(it->it);
		struct entry *e = bi > 0 ? it->snap->e[bi - 1] : NULL;
		const char *dk = NULL;
		size_t dkl = 0;
		int c;

		if (!dv && !e)
			break;
		if (dv)
			dk = rocksdb_iter_key(it->it, &dkl);
		c = !dv ? -1 : !e ? 1 : key_cmp(dk, dkl, e->key, e->klen);
		if (c > 0) { /* every entry is in the snapshot: no override */
			k = dk;
			kl = dkl;
			break;
		}
		if (e->val) {
			k = e->key;
			kl = e->klen;
			break;
		}
		if (c == 0)
			rocksdb_iter_prev(it->it);
		bi--;
	}
	if (!k) {
		it->pos = snap_n(it);
		it->at = AT_END;
		return;
	}
	if (kl > it->last_cap) {
		it->last = xrealloc(it->last, kl);
		it->last_cap = kl;
	}
	if (kl)
		memcpy(it->last, k, kl);
	store_iter_seek(it, it->last, kl);
}

bool store_iter_valid(const struct store_iter *it)
{
	if (!it->b)
		return rocksdb_iter_valid(it->it) != 0;
	return it->at != AT_END;
}

void store_iter_next(struct store_iter *it)
{
	if (!it->b) {
		rocksdb_iter_next(it->it);
		return;
	}
	ASSERT(it->at != AT_END);
	if (it->at == AT_DB || it->at == AT_BOTH)
		rocksdb_iter_next(it->it);
	if (it->at == AT_BATCH || it->at == AT_BOTH)
		it->pos++;
	settle(it);
}

const char *store_iter_key(const struct store_iter *it, size_t *klen)
{
	if (!it->b)
		return rocksdb_iter_key(it->it, klen);
	*klen = it->klen;
	return it->key;
}

const char *store_iter_value(const struct store_iter *it, size_t *vlen)
{
	if (!it->b)
		return rocksdb_iter_value(it->it, vlen);
	*vlen = it->vlen;
	return it->val;
}
