/*
 * test_store.c -- key encodings, batches that read their own writes, ordered
 * iteration, durability across reopen, and the inbox record format.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "ingest/inbox.h"
#include "store/store.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/nudge-store-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void u64_keys_are_big_endian_and_sort_numerically(void **state)
{
	unsigned char a[8], b[8];
	uint64_t vals[] = {0, 1, 255, 256, 65535, 1ULL << 32, UINT64_MAX - 1, UINT64_MAX};

	store_put_u64(a, 0x0102030405060708ULL);
	assert_int_equal(a[0], 1);
	assert_int_equal(a[7], 8);
	assert_true(store_get_u64(a) == 0x0102030405060708ULL);
	for (size_t i = 0; i + 1 < sizeof(vals) / sizeof(vals[0]); i++) {
		store_put_u64(a, vals[i]);
		store_put_u64(b, vals[i + 1]);
		assert_true(memcmp(a, b, 8) < 0);
		assert_true(store_get_u64(a) == vals[i]);
	}
}

static void batch_reads_its_own_writes_and_commits_atomically(void **state)
{
	struct store *s;
	struct store_batch *b;
	char *v = NULL;
	size_t vl;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	store_batch_put(b, STORE_CF_PROFILES, "k1", 2, "v1", 2);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "k1", 2, &v, &vl),
			 NERR_NOTFOUND);
	assert_int_equal(store_batch_get(b, STORE_CF_PROFILES, "k1", 2, &v, &vl),
			 NERR_OK);
	assert_string_equal(v, "v1");
	free(v);
	/* Column families are separate key spaces. */
	assert_int_equal(store_batch_get(b, STORE_CF_EVENTS, "k1", 2, &v, &vl),
			 NERR_NOTFOUND);
	store_batch_delete(b, STORE_CF_PROFILES, "k1", 2);
	assert_int_equal(store_batch_get(b, STORE_CF_PROFILES, "k1", 2, &v, &vl),
			 NERR_NOTFOUND);
	store_batch_put(b, STORE_CF_PROFILES, "k2", 2, "v2", 2);
	assert_int_equal(store_batch_count(b), 2); /* distinct keys */
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_int_equal(store_batch_count(b), 0);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "k2", 2, &v, &vl), NERR_OK);
	assert_int_equal(vl, 2);
	free(v);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "k1", 2, &v, &vl),
			 NERR_NOTFOUND);
	store_batch_free(b);
	store_close(s);

	/* Durable across reopen, read-only too. */
	assert_int_equal(store_open_readonly(dir, &s, NULL), NERR_OK);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "k2", 2, &v, &vl), NERR_OK);
	free(v);
	store_close(s);
}

/* Blind writes: unseen by the batch's reads, committed with it atomically,
 * applied after the indexed writes, dropped by clear. */
static void blind_writes_commit_with_the_batch_after_indexed_ones(void **state)
{
	struct store *s;
	struct store_batch *b;
	char *v = NULL;
	size_t vl;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	store_batch_put(b, STORE_CF_META, "old", 3, "1", 1);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);

	/* blind only */
	store_batch_put_blind(b, STORE_CF_META, "a", 1, "blind", 5);
	assert_int_equal(store_batch_count(b), 1);
	assert_int_equal(store_batch_get(b, STORE_CF_META, "a", 1, &v, &vl),
			 NERR_NOTFOUND);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_int_equal(store_batch_count(b), 0);
	assert_int_equal(store_get(s, STORE_CF_META, "a", 1, &v, &vl), NERR_OK);
	assert_string_equal(v, "blind");
	free(v);

	/* both kinds: the blind write to the same key wins, the blind delete
	 * applies, and other column families come along */
	store_batch_put(b, STORE_CF_META, "a", 1, "indexed", 7);
	store_batch_put_blind(b, STORE_CF_META, "a", 1, "last", 4);
	store_batch_put(b, STORE_CF_PROFILES, "p", 1, "pv", 2);
	store_batch_delete_blind(b, STORE_CF_META, "old", 3);
	store_batch_put_blind(b, STORE_CF_EVENTS, "e", 1, "", 0);
	assert_int_equal(store_batch_count(b), 5);
	assert_int_equal(store_batch_get(b, STORE_CF_META, "a", 1, &v, &vl), NERR_OK);
	assert_string_equal(v, "indexed");
	free(v);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "p", 1, &v, &vl), NERR_NOTFOUND);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_int_equal(store_get(s, STORE_CF_META, "a", 1, &v, &vl), NERR_OK);
	assert_string_equal(v, "last");
	free(v);
	assert_int_equal(store_get(s, STORE_CF_PROFILES, "p", 1, &v, &vl), NERR_OK);
	free(v);
	assert_int_equal(store_get(s, STORE_CF_META, "old", 3, &v, &vl), NERR_NOTFOUND);
	assert_int_equal(store_get(s, STORE_CF_EVENTS, "e", 1, &v, &vl), NERR_OK);
	assert_int_equal(vl, 0);
	free(v);

	/* clear drops them; they survive a reopen once committed */
	store_batch_put_blind(b, STORE_CF_META, "gone", 4, "x", 1);
	store_batch_clear(b);
	assert_int_equal(store_batch_count(b), 0);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_batch_free(b);
	store_close(s);
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	assert_int_equal(store_get(s, STORE_CF_META, "gone", 4, &v, &vl), NERR_NOTFOUND);
	assert_int_equal(store_get(s, STORE_CF_META, "a", 1, &v, &vl), NERR_OK);
	assert_string_equal(v, "last");
	free(v);
	store_close(s);
}

static void iteration_is_ordered_and_merges_pending_writes(void **state)
{
	struct store *s;
	struct store_batch *b;
	struct store_iter *it;
	unsigned char k[8];
	uint64_t want[] = {3, 5, 7, 300}, got[8];
	size_t n = 0, kl;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	for (int i = 3; i >= 0; i -= 2) { /* 300 and 5 committed */
		store_put_u64(k, want[i]);
		store_batch_put(b, STORE_CF_TIMERS, k, 8, "x", 1);
	}
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_true(inbox_last_stored_seq(s) == 0);
	store_put_u64(k, 7);
	store_batch_put(b, STORE_CF_TIMERS, k, 8, "y", 1);
	store_put_u64(k, 3);
	store_batch_put(b, STORE_CF_TIMERS, k, 8, "y", 1);
	it = store_iter_new(s, b, STORE_CF_TIMERS);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
		got[n++] = store_get_u64(store_iter_key(it, &kl));
	store_iter_free(it);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++)
		assert_true(got[i] == want[i]);
	/* Without the batch only committed keys show; seek and seek_last work. */
	it = store_iter_new(s, NULL, STORE_CF_TIMERS);
	store_put_u64(k, 6);
	store_iter_seek(it, k, 8);
	assert_true(store_iter_valid(it));
	assert_true(store_get_u64(store_iter_key(it, &kl)) == 300);
	store_iter_seek_last(it);
	assert_true(store_get_u64(store_iter_key(it, &kl)) == 300);
	store_iter_free(it);
	store_put_u64(k, 300);
	store_batch_put(b, STORE_CF_INBOX, k, 8, "x", 1);
	store_put_u64(k, 5);
	store_batch_put(b, STORE_CF_INBOX, k, 8, "x", 1);
	store_batch_clear(b);
	assert_true(inbox_last_stored_seq(s) == 0);
	store_put_u64(k, 300);
	store_batch_put(b, STORE_CF_INBOX, k, 8, "x", 1);
	store_put_u64(k, 5);
	store_batch_put(b, STORE_CF_INBOX, k, 8, "x", 1);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_true(inbox_last_stored_seq(s) == 300);
	store_batch_free(b);
	store_close(s);
}

/* The inbox lives in a database of its own under dir/inbox; records a data
 * directory kept in the main database's inbox family move there at open; a
 * batch with state and inbox writes applies both; inbox_trim removes consumed
 * records whose deletion was lost. */
static void inbox_has_its_own_database(void **state)
{
	const char *names[STORE_CF__COUNT];
	const rocksdb_options_t *opts[STORE_CF__COUNT];
	rocksdb_column_family_handle_t *cf[STORE_CF__COUNT];
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	struct store *s;
	struct store_batch *b;
	unsigned char k[8];
	char *err = NULL, *v = NULL, path[128];
	size_t vl;
	rocksdb_t *db;

	/* a main database with two records in its inbox family, as before */
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	store_close(s);
	snprintf(path, sizeof(path), "rm -rf %s/inbox", dir);
	assert_int_equal(system(path), 0);
	for (int i = 0; i < STORE_CF__COUNT; i++) {
		names[i] = store_cf_name(i);
		opts[i] = o;
	}
	db = rocksdb_open_column_families(o, dir, STORE_CF__COUNT, names, opts, cf, &err);
	assert_null(err);
	for (uint64_t seq = 1; seq <= 2; seq++) {
		store_put_u64(k, seq);
		rocksdb_put_cf(db, wo, cf[STORE_CF_INBOX], (char *)k, 8, "old", 3, &err);
		assert_null(err);
	}
	for (int i = 0; i < STORE_CF__COUNT; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	assert_true(inbox_last_stored_seq(s) == 2);
	store_put_u64(k, 2);
	assert_int_equal(store_get(s, STORE_CF_INBOX, k, 8, &v, &vl), NERR_OK);
	assert_string_equal(v, "old");
	free(v);
	/* an engine-like batch: state, and the consumption of record 1 */
	b = store_batch_new(s);
	store_batch_put(b, STORE_CF_META, "applied", 7, "2", 1);
	store_put_u64(k, 1);
	store_batch_delete(b, STORE_CF_INBOX, k, 8);
	assert_int_equal(store_batch_count(b), 2);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_int_equal(store_get(s, STORE_CF_INBOX, k, 8, &v, &vl), NERR_NOTFOUND);
	assert_int_equal(store_get(s, STORE_CF_META, "applied", 7, &v, &vl), NERR_OK);
	free(v);
	/* record 2 was consumed too, its deletion lost */
	assert_int_equal(inbox_trim(s, 2), 1);
	assert_true(inbox_last_stored_seq(s) == 0);
	/* the engine's consumption deletes in chunks, up to each multiple */
	for (uint64_t seq = 4095; seq <= 4097; seq++) {
		store_put_u64(k, seq);
		store_batch_put(b, STORE_CF_INBOX, k, 8, "r", 1);
	}
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	inbox_consume(b, 4095);
	assert_int_equal(store_batch_count(b), 0);
	inbox_consume(b, 4096);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_put_u64(k, 4096);
	assert_int_equal(store_get(s, STORE_CF_INBOX, k, 8, &v, &vl), NERR_NOTFOUND);
	store_put_u64(k, 4095);
	assert_int_equal(store_get(s, STORE_CF_INBOX, k, 8, &v, &vl), NERR_NOTFOUND);
	assert_true(inbox_last_stored_seq(s) == 4097);
	store_batch_free(b);
	store_close(s);

	/* the main database's inbox family is empty now */
	db = rocksdb_open_column_families(o, dir, STORE_CF__COUNT, names, opts, cf, &err);
	assert_null(err);
	for (uint64_t seq = 1; seq <= 2; seq++) {
		store_put_u64(k, seq);
		v = rocksdb_get_cf(db, ro, cf[STORE_CF_INBOX], (char *)k, 8, &vl, &err);
		assert_null(err);
		assert_null(v);
	}
	for (int i = 0; i < STORE_CF__COUNT; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);
	rocksdb_readoptions_destroy(ro);
	rocksdb_writeoptions_destroy(wo);
	rocksdb_options_destroy(o);
}

/* A directory written before a family existed opens read-only (nudge check)
 * with that family empty; a writable open then creates it. */
static void read_only_open_of_an_older_directory(void **state)
{
	const char *names[STORE_CF__COUNT];
	const rocksdb_options_t *opts[STORE_CF__COUNT];
	rocksdb_column_family_handle_t *cf[STORE_CF__COUNT];
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	struct store *s;
	struct store_iter *it;
	char *err = NULL, *v = NULL;
	size_t vl, n = 0;
	rocksdb_t *db;

	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_create_missing_column_families(o, 1);
	for (int i = 0; i < STORE_CF_HISTORY; i++) { /* the last family is missing */
		names[n] = store_cf_name(i);
		opts[n++] = o;
	}
	db = rocksdb_open_column_families(o, dir, (int)n, names, opts, cf, &err);
	assert_null(err);
	rocksdb_put_cf(db, wo, cf[STORE_CF_PROFILES], "p", 1, "v", 1, &err);
	assert_null(err);
	for (size_t i = 0; i < n; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);

	for (int round = 0; round < 2; round++) {
		assert_int_equal(store_open_readonly(dir, &s, NULL), NERR_OK);
		assert_int_equal(store_get(s, STORE_CF_PROFILES, "p", 1, &v, &vl),
				 NERR_OK);
		free(v);
		assert_int_equal(store_get(s, STORE_CF_HISTORY, "p", 1, &v, &vl),
				 NERR_NOTFOUND);
		it = store_iter_new(s, NULL, STORE_CF_HISTORY);
		store_iter_seek_first(it);
		assert_false(store_iter_valid(it));
		store_iter_free(it);
		store_close(s);
		/* a writable open adds the family */
		assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
		store_close(s);
	}
	/* a RocksDB directory that is not nudge's is refused, not read as empty */
	{
		char other[128];

		snprintf(other, sizeof(other), "%s/other", dir);
		db = rocksdb_open(o, other, &err);
		assert_null(err);
		rocksdb_close(db);
		assert_int_equal(store_open_readonly(other, &s, NULL), NERR_IO);
	}
	rocksdb_writeoptions_destroy(wo);
	rocksdb_options_destroy(o);
}

/* Helpers for the batch tests: string keys and values. */
static void put_s(struct store_batch *b, enum store_cf cf, const char *k, const char *v)
{
	store_batch_put(b, cf, k, strlen(k), v, strlen(v));
}

static void del_s(struct store_batch *b, enum store_cf cf, const char *k)
{
	store_batch_delete(b, cf, k, strlen(k));
}

/* Asserts what store_batch_get (b) or store_get (b NULL) answers for k:
 * want NULL means not found. */
static void check_get(struct store *s, struct store_batch *b, enum store_cf cf,
		      const char *k, const char *want)
{
	char *v = NULL;
	size_t vl = 0;
	enum nerr rc = b ? store_batch_get(b, cf, k, strlen(k), &v, &vl)
			 : store_get(s, cf, k, strlen(k), &v, &vl);

	if (!want) {
		assert_int_equal(rc, NERR_NOTFOUND);
		return;
	}
	assert_int_equal(rc, NERR_OK);
	assert_int_equal(vl, strlen(want));
	assert_string_equal(v, want); /* NUL-terminated too */
	free(v);
}

/* Scans cf from seek (NULL: the first key) and writes "k=v k=v ..." to out. */
static void scan(struct store *s, struct store_batch *b, enum store_cf cf,
		 const char *seek, char *out, size_t cap)
{
	struct store_iter *it = store_iter_new(s, b, cf);
	size_t n = 0;

	out[0] = '\0';
	if (seek)
		store_iter_seek(it, seek, strlen(seek));
	else
		store_iter_seek_first(it);
	for (; store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		n += (size_t)snprintf(out + n, cap - n, "%s%.*s=%.*s", n ? " " : "",
				      (int)kl, k, (int)vl, v);
		assert_true(n < cap);
	}
	store_iter_free(it);
}

/* The last visible key and its value as "k=v", or "" when the family is empty. */
static void last_of(struct store *s, struct store_batch *b, enum store_cf cf, char *out,
		    size_t cap)
{
	struct store_iter *it = store_iter_new(s, b, cf);

	out[0] = '\0';
	store_iter_seek_last(it);
	if (store_iter_valid(it)) {
		size_t kl, vl;
		const char *k = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		snprintf(out, cap, "%.*s=%.*s", (int)kl, k, (int)vl, v);
		store_iter_next(it);
		assert_false(store_iter_valid(it));
	}
	store_iter_free(it);
}

static void batch_get_sees_its_own_put_delete_and_overwrite(void **state)
{
	struct store *s;
	struct store_batch *b;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	put_s(b, STORE_CF_PROFILES, "a", "committed-a");
	put_s(b, STORE_CF_PROFILES, "b", "committed-b");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);

	check_get(s, b, STORE_CF_PROFILES, "a", "committed-a"); /* from the DB */
	put_s(b, STORE_CF_PROFILES, "a", "one");
	check_get(s, b, STORE_CF_PROFILES, "a", "one");
	put_s(b, STORE_CF_PROFILES, "a", "two, longer than one");
	check_get(s, b, STORE_CF_PROFILES, "a", "two, longer than one");
	put_s(b, STORE_CF_PROFILES, "a", "3");
	check_get(s, b, STORE_CF_PROFILES, "a", "3");
	del_s(b, STORE_CF_PROFILES, "b");
	check_get(s, b, STORE_CF_PROFILES, "b", NULL);
	put_s(b, STORE_CF_PROFILES, "b", "");
	check_get(s, b, STORE_CF_PROFILES, "b", "");
	del_s(b, STORE_CF_PROFILES, "new");
	put_s(b, STORE_CF_PROFILES, "new", "n");
	check_get(s, b, STORE_CF_PROFILES, "new", "n");
	/* the same key in another family is another key */
	check_get(s, b, STORE_CF_EVENTS, "a", NULL);
	put_s(b, STORE_CF_EVENTS, "a", "ev");
	check_get(s, b, STORE_CF_EVENTS, "a", "ev");
	check_get(s, b, STORE_CF_PROFILES, "a", "3");
	/* nothing reached the DB; distinct keys are counted once */
	check_get(s, NULL, STORE_CF_PROFILES, "a", "committed-a");
	check_get(s, NULL, STORE_CF_PROFILES, "b", "committed-b");
	assert_int_equal(store_batch_count(b), 4);
	store_batch_clear(b);
	assert_int_equal(store_batch_count(b), 0);
	check_get(s, b, STORE_CF_PROFILES, "a", "committed-a");
	check_get(s, b, STORE_CF_EVENTS, "a", NULL);
	store_batch_free(b);
	store_close(s);
}

/* Many keys (the hash table grows), each written several ways: the commit
 * leaves each key's last write and nothing else. */
static void commit_writes_exactly_the_final_state(void **state)
{
	struct store *s;
	struct store_batch *b;
	char k[32], v[32], want[32];

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	for (int i = 0; i < 3000; i += 2) { /* even keys committed */
		snprintf(k, sizeof(k), "key%05d", i);
		put_s(b, STORE_CF_PROFILES, k, "old");
	}
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 3000; i++) {
			snprintf(k, sizeof(k), "key%05d", i);
			snprintf(v, sizeof(v), "r%d-%d", round, i);
			if ((i + round) % 3 == 0)
				del_s(b, STORE_CF_PROFILES, k);
			else
				put_s(b, STORE_CF_PROFILES, k, v);
		}
	}
	assert_int_equal(store_batch_count(b), 3000);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	for (int i = 0; i < 3000; i++) {
		snprintf(k, sizeof(k), "key%05d", i);
		snprintf(want, sizeof(want), "r2-%d", i);
		check_get(s, NULL, STORE_CF_PROFILES, k, (i + 2) % 3 == 0 ? NULL : want);
	}
	/* a batch after a commit starts empty */
	check_get(s, b, STORE_CF_PROFILES, "key00001", NULL);
	check_get(s, b, STORE_CF_PROFILES, "key00002", "r2-2");
	put_s(b, STORE_CF_PROFILES, "key00001", "again");
	assert_int_equal(store_batch_count(b), 1);
	assert_int_equal(store_batch_commit(b, false, NULL), NERR_OK);
	check_get(s, NULL, STORE_CF_PROFILES, "key00001", "again");
	store_batch_free(b);
	store_close(s);
}

/* A key written indexed and blind ends with the blind write, whichever kinds. */
static void blind_write_wins_over_indexed_write_to_the_same_key(void **state)
{
	struct store *s;
	struct store_batch *b;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	put_s(b, STORE_CF_META, "x", "committed");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	del_s(b, STORE_CF_META, "x");
	store_batch_put_blind(b, STORE_CF_META, "x", 1, "blind", 5);
	put_s(b, STORE_CF_META, "y", "indexed");
	store_batch_delete_blind(b, STORE_CF_META, "y", 1);
	put_s(b, STORE_CF_META, "z", "indexed");
	store_batch_delete_range_blind(b, STORE_CF_META, "z", 1, "zz", 2);
	check_get(s, b, STORE_CF_META, "x", NULL); /* blind writes are not read */
	check_get(s, b, STORE_CF_META, "y", "indexed");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	check_get(s, NULL, STORE_CF_META, "x", "blind");
	check_get(s, NULL, STORE_CF_META, "y", NULL);
	check_get(s, NULL, STORE_CF_META, "z", NULL);
	store_batch_free(b);
	store_close(s);
}

static void iterators_merge_the_batch_over_committed_keys(void **state)
{
	struct store *s;
	struct store_batch *b;
	char out[512];

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	put_s(b, STORE_CF_INDEX, "b", "B");
	put_s(b, STORE_CF_INDEX, "d", "D");
	put_s(b, STORE_CF_INDEX, "f", "F");
	put_s(b, STORE_CF_INDEX, "h", "H");
	put_s(b, STORE_CF_TIMERS, "c", "other family");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);

	/* an empty batch changes nothing */
	scan(s, b, STORE_CF_INDEX, NULL, out, sizeof(out));
	assert_string_equal(out, "b=B d=D f=F h=H");
	put_s(b, STORE_CF_INDEX, "a", "a1"); /* batch only, before all */
	put_s(b, STORE_CF_INDEX, "d", "d1"); /* overwrites a committed key */
	del_s(b, STORE_CF_INDEX, "f");	     /* hides a committed key */
	put_s(b, STORE_CF_INDEX, "e", "e1"); /* batch only, between */
	del_s(b, STORE_CF_INDEX, "g");	     /* deletes nothing: never shown */
	put_s(b, STORE_CF_INDEX, "i", "i1"); /* batch only, after all */
	put_s(b, STORE_CF_INDEX, "bb", "x"); /* put then deleted */
	del_s(b, STORE_CF_INDEX, "bb");
	del_s(b, STORE_CF_INDEX, "b"); /* deleted then put again */
	put_s(b, STORE_CF_INDEX, "b", "b2");
	put_s(b, STORE_CF_AUDIENCES, "c", "another family's");
	scan(s, b, STORE_CF_INDEX, NULL, out, sizeof(out));
	assert_string_equal(out, "a=a1 b=b2 d=d1 e=e1 h=H i=i1");
	scan(s, NULL, STORE_CF_INDEX, NULL, out, sizeof(out));
	assert_string_equal(out, "b=B d=D f=F h=H");
	/* seeks into the middle: onto a key, between keys, onto hidden ones */
	scan(s, b, STORE_CF_INDEX, "d", out, sizeof(out));
	assert_string_equal(out, "d=d1 e=e1 h=H i=i1");
	scan(s, b, STORE_CF_INDEX, "c", out, sizeof(out));
	assert_string_equal(out, "d=d1 e=e1 h=H i=i1");
	scan(s, b, STORE_CF_INDEX, "f", out, sizeof(out));
	assert_string_equal(out, "h=H i=i1");
	scan(s, b, STORE_CF_INDEX, "ba", out, sizeof(out));
	assert_string_equal(out, "d=d1 e=e1 h=H i=i1");
	scan(s, b, STORE_CF_INDEX, "j", out, sizeof(out));
	assert_string_equal(out, "");
	scan(s, b, STORE_CF_TIMERS, NULL, out, sizeof(out));
	assert_string_equal(out, "c=other family");
	scan(s, b, STORE_CF_AUDIENCES, NULL, out, sizeof(out));
	assert_string_equal(out, "c=another family's");
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "i=i1");
	/* seek_last: the last key batch-only and deleted, then the last
	 * committed ones deleted too */
	del_s(b, STORE_CF_INDEX, "i");
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "h=H");
	del_s(b, STORE_CF_INDEX, "h");
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "e=e1");
	del_s(b, STORE_CF_INDEX, "e");
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "d=d1");
	put_s(b, STORE_CF_INDEX, "h", "h2");
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "h=h2");
	for (const char *k = "abdh"; *k; k++) {
		char key[2] = {*k, 0};

		del_s(b, STORE_CF_INDEX, key);
	}
	last_of(s, b, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "");
	scan(s, b, STORE_CF_INDEX, NULL, out, sizeof(out));
	assert_string_equal(out, "");
	last_of(s, NULL, STORE_CF_INDEX, out, sizeof(out));
	assert_string_equal(out, "h=H");
	/* committed, the scan reads the same */
	put_s(b, STORE_CF_INDEX, "m", "M");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	scan(s, NULL, STORE_CF_INDEX, NULL, out, sizeof(out));
	assert_string_equal(out, "m=M");
	store_batch_free(b);
	store_close(s);
}

/* Deleting the key an iterator stands on (what journeys do when they end an
 * instance) and rewriting it: the iterator keeps its pair and moves on. */
static void iterating_while_deleting_the_current_key(void **state)
{
	struct store *s;
	struct store_batch *b;
	struct store_iter *it;
	char k[16], out[4096];
	size_t n = 0;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	for (int i = 0; i < 40; i += 2) { /* committed: even */
		snprintf(k, sizeof(k), "k%02d", i);
		put_s(b, STORE_CF_WAITS, k, "db");
	}
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	for (int i = 1; i < 40; i += 2) { /* batch: odd, and a few even rewritten */
		snprintf(k, sizeof(k), "k%02d", i);
		put_s(b, STORE_CF_WAITS, k, "batch");
	}
	put_s(b, STORE_CF_WAITS, "k10", "rewritten");
	it = store_iter_new(s, b, STORE_CF_WAITS);
	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t kl, vl;
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);
		char kc[16];

		snprintf(kc, sizeof(kc), "%.*s", (int)kl, key);
		n += (size_t)snprintf(out + n, sizeof(out) - n, "%s=%.*s ", kc, (int)vl,
				      v);
		del_s(b, STORE_CF_WAITS, kc);
		/* the pair stays readable after the delete, and after a rewrite */
		key = store_iter_key(it, &kl);
		assert_int_equal(kl, 3);
		assert_memory_equal(key, kc, 3);
		if (strcmp(kc, "k07") == 0) {
			put_s(b, STORE_CF_WAITS, kc, "put back, and longer than before");
			v = store_iter_value(it, &vl);
			assert_int_equal(vl, 5);
			assert_memory_equal(v, "batch", 5);
		}
	}
	store_iter_free(it);
	assert_string_equal(out, "k00=db k01=batch k02=db k03=batch k04=db k05=batch "
				 "k06=db k07=batch k08=db k09=batch k10=rewritten "
				 "k11=batch k12=db k13=batch k14=db k15=batch k16=db "
				 "k17=batch k18=db k19=batch k20=db k21=batch k22=db "
				 "k23=batch k24=db k25=batch k26=db k27=batch k28=db "
				 "k29=batch k30=db k31=batch k32=db k33=batch k34=db "
				 "k35=batch k36=db k37=batch k38=db k39=batch ");
	scan(s, b, STORE_CF_WAITS, NULL, out, sizeof(out));
	assert_string_equal(out, "k07=put back, and longer than before");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	scan(s, NULL, STORE_CF_WAITS, NULL, out, sizeof(out));
	assert_string_equal(out, "k07=put back, and longer than before");
	store_batch_free(b);
	store_close(s);
}

/*
 * Writing ahead of an iterator: a put or delete to a key it will reach (in
 * the batch or committed) shows when it gets there; a key new to both
 * appears only after a seek. Many new keys make the batch grow its table
 * and rebuild the family's sorted list under the open iterator.
 */
static void iterating_while_putting_ahead(void **state)
{
	struct store *s;
	struct store_batch *b;
	struct store_iter *it, *it2 = NULL;
	static char out[65536];
	char k[16];
	size_t n = 0, kl, vl;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	put_s(b, STORE_CF_INSTANCES, "a", "db");
	put_s(b, STORE_CF_INSTANCES, "c", "db");
	put_s(b, STORE_CF_INSTANCES, "e", "db");
	put_s(b, STORE_CF_INSTANCES, "g", "db");
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	put_s(b, STORE_CF_INSTANCES, "b", "batch");
	put_s(b, STORE_CF_INSTANCES, "d", "batch");
	put_s(b, STORE_CF_INSTANCES, "f", "batch");
	it = store_iter_new(s, b, STORE_CF_INSTANCES);
	store_iter_seek_first(it);
	for (; store_iter_valid(it); store_iter_next(it)) {
		const char *key = store_iter_key(it, &kl), *v = store_iter_value(it, &vl);

		n += (size_t)snprintf(out + n, sizeof(out) - n, "%.*s=%.*s ", (int)kl,
				      key, (int)vl, v);
		if (kl == 1 && key[0] == 'a') {
			put_s(b, STORE_CF_INSTANCES, "b", "b-ahead"); /* batch key */
			put_s(b, STORE_CF_INSTANCES, "c", "c-ahead"); /* committed key */
			del_s(b, STORE_CF_INSTANCES, "d");	      /* batch key */
			del_s(b, STORE_CF_INSTANCES, "e");	      /* committed key */
			put_s(b, STORE_CF_INSTANCES, "ee", "new");    /* new key */
			/* a second iterator sorts "ee" in, under the first */
			it2 = store_iter_new(s, b, STORE_CF_INSTANCES);
			store_iter_seek(it2, "c", 1);
			for (int i = 0; i < 5000; i++) {
				snprintf(k, sizeof(k), "z%05d", i);
				put_s(b, STORE_CF_INSTANCES, k, "z");
			}
		}
	}
	store_iter_free(it);
	assert_string_equal(out, "a=db b=b-ahead c=c-ahead f=batch g=db ");
	assert_non_null(it2);
	/* the second one saw "ee", not the keys written after its seek, until
	 * it seeks again */
	for (n = 0; store_iter_valid(it2); store_iter_next(it2)) {
		const char *key = store_iter_key(it2, &kl),
			   *v = store_iter_value(it2, &vl);

		n += (size_t)snprintf(out + n, sizeof(out) - n, "%.*s=%.*s ", (int)kl,
				      key, (int)vl, v);
	}
	assert_string_equal(out, "c=c-ahead ee=new f=batch g=db ");
	store_iter_seek(it2, "z04999", 6);
	assert_true(store_iter_valid(it2));
	store_iter_next(it2);
	assert_false(store_iter_valid(it2));
	store_iter_free(it2);
	scan(s, b, STORE_CF_INSTANCES, NULL, out, sizeof(out));
	assert_true(strncmp(out, "a=db b=b-ahead c=c-ahead ee=new f=batch g=db z00000=z",
			    52) == 0);
	store_batch_free(b);
	store_close(s);
}

/*
 * Randomized differential test: random puts, deletes, gets, scans (some
 * writing while they iterate), commits and clears over a few hundred keys
 * in three families, against a model of the committed state and the batch.
 */
#define MODEL_KEYS 300
#define MODEL_FAMS 3

struct mkey {
	unsigned char k[12];
	size_t kl;
	char db[16]; /* committed value; db_has */
	char ov[16]; /* the batch's value when ov_state is 1 */
	int db_has;
	int ov_state; /* 0 none, 1 put, 2 delete */
	int snapped;  /* in the batch when the iterator last sought */
};

static const enum store_cf model_cfs[MODEL_FAMS] = {STORE_CF_PROFILES, STORE_CF_INDEX,
						    STORE_CF_TIMERS};
static struct mkey model[MODEL_FAMS][MODEL_KEYS];

static int mkey_cmp(const void *pa, const void *pb)
{
	const struct mkey *a = pa, *b = pb;
	size_t n = a->kl < b->kl ? a->kl : b->kl;
	int c = n ? memcmp(a->k, b->k, n) : 0;

	return c ? c : (a->kl > b->kl) - (a->kl < b->kl);
}

static bool model_visible(const struct mkey *m, bool batch)
{
	if (batch && m->ov_state)
		return m->ov_state == 1;
	return m->db_has;
}

static const char *model_value(const struct mkey *m, bool batch)
{
	return batch && m->ov_state == 1 ? m->ov : m->db;
}

static void model_put(struct store_batch *b, int f, int i, unsigned r)
{
	struct mkey *m = &model[f][i];

	snprintf(m->ov, sizeof(m->ov), "v%u", r % 100000);
	if (r % 17 == 0)
		m->ov[0] = '\0'; /* empty values are values */
	m->ov_state = 1;
	store_batch_put(b, model_cfs[f], m->k, m->kl, m->ov, strlen(m->ov));
}

static void model_delete(struct store_batch *b, int f, int i)
{
	model[f][i].ov_state = 2;
	store_batch_delete(b, model_cfs[f], model[f][i].k, model[f][i].kl);
}

/* The first key after index i (-1: from the start) an iterator standing
 * there must reach: committed or in the batch at the last seek, and visible
 * now. Returns MODEL_KEYS at the end. */
static int model_next(int f, int i, bool batch)
{
	for (int j = i + 1; j < MODEL_KEYS; j++) {
		struct mkey *m = &model[f][j];

		if ((m->db_has || (batch && m->snapped)) && model_visible(m, batch))
			return j;
	}
	return MODEL_KEYS;
}

static void model_snap(int f)
{
	for (int j = 0; j < MODEL_KEYS; j++)
		model[f][j].snapped = model[f][j].ov_state != 0;
}

static void assert_at(struct store_iter *it, int f, int j, bool batch)
{
	size_t kl, vl;
	const char *k, *v;
	const struct mkey *m;

	if (j == MODEL_KEYS) {
		assert_false(store_iter_valid(it));
		return;
	}
	m = &model[f][j];
	assert_true(store_iter_valid(it));
	k = store_iter_key(it, &kl);
	v = store_iter_value(it, &vl);
	assert_int_equal(kl, m->kl);
	if (kl)
		assert_memory_equal(k, m->k, kl);
	assert_int_equal(vl, strlen(model_value(m, batch)));
	if (vl)
		assert_memory_equal(v, model_value(m, batch), vl);
}

/* One scan of family f from a random start; with write, it also writes to
 * the batch as it goes, as the journeys and audiences do. */
static void model_scan(struct store *s, struct store_batch *b, int f, bool batch,
		       bool write, unsigned *seed)
{
	struct store_iter *it = store_iter_new(s, batch ? b : NULL, model_cfs[f]);
	int how = rand_r(seed) % 4, j;

	if (batch) /* the batch's keys the seek below takes */
		model_snap(f);
	if (how == 0) {
		store_iter_seek_first(it);
		j = model_next(f, -1, batch);
	} else if (how == 3) {
		store_iter_seek_last(it);
		j = MODEL_KEYS;
		for (int i = MODEL_KEYS - 1; i >= 0 && j == MODEL_KEYS; i--)
			if (model_visible(&model[f][i], batch))
				j = i;
	} else {
		/* seek to a key of the universe or just before one */
		int at = rand_r(seed) % MODEL_KEYS;
		struct mkey *m = &model[f][at];

		if (how == 1 || m->kl == 0) {
			store_iter_seek(it, m->k, m->kl);
			j = model_next(f, at - 1, batch);
		} else { /* a key between at-1 and at: its prefix, shorter */
			struct mkey pre = *m;

			pre.kl = m->kl - 1;
			store_iter_seek(it, pre.k, pre.kl);
			for (j = 0; j < MODEL_KEYS && mkey_cmp(&model[f][j], &pre) < 0;
			     j++)
				;
			j = model_next(f, j - 1, batch);
		}
	}
	for (int steps = 0; steps < MODEL_KEYS + 1; steps++) {
		assert_at(it, f, j, batch);
		if (j == MODEL_KEYS)
			break;
		if (write && batch) {
			unsigned r = (unsigned)rand_r(seed);
			int ahead = j + (int)(r % (MODEL_KEYS - j));

			if (r % 5 == 0)
				model_delete(b, f, j);
			else if (r % 5 == 1)
				model_put(b, f, j, r);
			if (r % 3 == 0)
				model_put(b, f, ahead, r / 7);
			else if (r % 3 == 1)
				model_delete(b, f, ahead);
		}
		store_iter_next(it);
		j = model_next(f, j, batch);
	}
	store_iter_free(it);
}

static void batch_and_iterators_match_a_reference_model(void **state)
{
	struct store *s;
	struct store_batch *b;
	unsigned seed = 20261127;

	/* the key universe: short binary keys, some prefixes of others, one empty */
	for (int f = 0; f < MODEL_FAMS; f++) {
		for (int i = 0; i < MODEL_KEYS; i++) {
			struct mkey *m = &model[f][i];

			memset(m, 0, sizeof(*m));
		retry:
			m->kl = i == 0 && f == 1 ? 0 : 1 + (size_t)rand_r(&seed) % 4;
			for (size_t x = 0; x < m->kl; x++) {
				unsigned r = (unsigned)rand_r(&seed) % 8;

				m->k[x] = r == 0   ? 0x00
					  : r == 1 ? 0xff
						   : (unsigned char)('a' + r);
			}
			for (int o = 0; o < i; o++)
				if (mkey_cmp(&model[f][o], m) == 0)
					goto retry;
		}
		qsort(model[f], MODEL_KEYS, sizeof(model[f][0]), mkey_cmp);
	}
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	for (int op = 0; op < 30000; op++) {
		unsigned r = (unsigned)rand_r(&seed);
		int f = (int)(r % MODEL_FAMS), i = (int)((r / 3) % MODEL_KEYS);
		unsigned what = (r / 1024) % 1000;

		if (what < 400) {
			model_put(b, f, i, r);
		} else if (what < 650) {
			model_delete(b, f, i);
		} else if (what < 900) {
			struct mkey *m = &model[f][i];

			char *v = NULL;
			size_t vl = 0;
			enum nerr rc =
				store_batch_get(b, model_cfs[f], m->k, m->kl, &v, &vl);

			if (!model_visible(m, true)) {
				assert_int_equal(rc, NERR_NOTFOUND);
			} else {
				assert_int_equal(rc, NERR_OK);
				assert_string_equal(v, model_value(m, true));
				free(v);
			}
		} else if (what < 960) {
			model_scan(s, b, f, (r >> 20) % 4 != 0, (r >> 22) % 2, &seed);
		} else if (what < 995) {
			unsigned n = 0;

			for (int g = 0; g < MODEL_FAMS; g++)
				for (int j = 0; j < MODEL_KEYS; j++)
					n += model[g][j].ov_state != 0;
			assert_int_equal(store_batch_count(b), n);
			assert_int_equal(store_batch_commit(b, (r >> 20) % 2, NULL),
					 NERR_OK);
			for (int g = 0; g < MODEL_FAMS; g++)
				for (int j = 0; j < MODEL_KEYS; j++) {
					struct mkey *m = &model[g][j];

					if (m->ov_state == 1)
						strcpy(m->db, m->ov);
					if (m->ov_state)
						m->db_has = m->ov_state == 1;
					m->ov_state = 0;
				}
		} else {
			store_batch_clear(b);
			for (int g = 0; g < MODEL_FAMS; g++)
				for (int j = 0; j < MODEL_KEYS; j++)
					model[g][j].ov_state = 0;
		}
	}
	/* the final state, committed, survives a reopen */
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	for (int g = 0; g < MODEL_FAMS; g++)
		for (int j = 0; j < MODEL_KEYS; j++) {
			struct mkey *m = &model[g][j];

			if (m->ov_state == 1)
				strcpy(m->db, m->ov);
			if (m->ov_state)
				m->db_has = m->ov_state == 1;
			m->ov_state = 0;
		}
	store_batch_free(b);
	store_close(s);
	assert_int_equal(store_open_readonly(dir, &s, NULL), NERR_OK);
	for (int f = 0; f < MODEL_FAMS; f++)
		model_scan(s, NULL, f, false, false, &seed);
	store_close(s);
}

static void inbox_records_round_trip_and_reject_garbage(void **state)
{
	struct inbox_job *job = inbox_job_new();
	enum inbox_kind kind;
	int64_t ms;
	const char *p;
	size_t pl;
	char rec[64];

	inbox_job_add(job, INBOX_EVENT, 1700000000123LL, "{\"a\":1}", 7);
	assert_int_equal(inbox_job_count(job), 1);
	inbox_job_free(job);

	rec[0] = INBOX_ERASE;
	store_put_u64(rec + 1, 42);
	memcpy(rec + 9, "{}", 2);
	assert_int_equal(inbox_decode(rec, 11, &kind, &ms, &p, &pl), NERR_OK);
	assert_int_equal(kind, INBOX_ERASE);
	assert_int_equal(ms, 42);
	assert_int_equal(pl, 2);
	assert_memory_equal(p, "{}", 2);
	assert_int_equal(inbox_decode(rec, 8, &kind, &ms, &p, &pl), NERR_CORRUPT);
	rec[0] = 99;
	assert_int_equal(inbox_decode(rec, 11, &kind, &ms, &p, &pl), NERR_CORRUPT);
}

struct done_log {
	int calls;
	uint64_t seqs[16];
	enum nerr rcs[16];
	uint64_t committed;
};

static void on_done(void *ud, enum nerr rc, uint64_t last_seq)
{
	struct done_log *d = ud;

	d->rcs[d->calls] = rc;
	d->seqs[d->calls++] = last_seq;
}

static void on_committed(void *ud, uint64_t seq)
{
	((struct done_log *)ud)->committed = seq;
}

static void group_commit_assigns_dense_sequences_in_order(void **state)
{
	struct store *s;
	struct inbox *ib;
	struct inbox_config cfg = {.max_queue_bytes = 1 << 20, .max_batch = 100};
	struct done_log d = {0};
	uv_loop_t loop;

	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	uv_loop_init(&loop);
	assert_int_equal(inbox_open(s, &loop, &cfg, on_committed, &d, &ib), NERR_OK);
	inbox_set_min_seq(ib, 10); /* e.g. the engine applied up to 10 before */
	for (int j = 0; j < 5; j++) {
		struct inbox_job *job = inbox_job_new();

		for (int i = 0; i <= j; i++)
			inbox_job_add(job, INBOX_EVENT, 1, "{}", 2);
		assert_int_equal(inbox_submit(ib, job, on_done, &d), NERR_OK);
	}
	while (d.calls < 5)
		uv_run(&loop, UV_RUN_ONCE);
	/* Jobs of 1..5 records after seq 10: last seqs 11, 13, 16, 20, 25. */
	uint64_t want[] = {11, 13, 16, 20, 25};
	for (int j = 0; j < 5; j++) {
		assert_int_equal(d.rcs[j], NERR_OK);
		assert_true(d.seqs[j] == want[j]);
	}
	assert_true(inbox_committed_seq(ib) == 25);
	assert_true(d.committed == 25);
	/* A job bigger than the whole queue cap is refused only when others wait. */
	inbox_close(ib);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	inbox_free(ib);
	assert_true(inbox_last_stored_seq(s) == 25);
	store_close(s);
}

/*
 * The read cache answers like the committed state: random puts, deletes,
 * blind writes and range deletions over two cached families and one not
 * cached, committed or abandoned (cleared), with a budget that holds every
 * key and then with one small enough to evict all the time; after every
 * commit or clear each key read through the batch (its cache) matches a read
 * of the database itself.
 */
static void read_cache_matches_the_committed_state(void **state)
{
	static const enum store_cf cfs[3] = {STORE_CF_PROFILES, STORE_CF_IDENTITIES,
					     STORE_CF_INDEX};
	struct store *s = NULL;
	struct store_batch *b;
	unsigned r = 12345;
	char k[32], v[600];

	(void)state;
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	for (int round = 0; round < 2; round++) {
		b = store_batch_new(s);
		store_batch_cache(b, STORE_CF_PROFILES, round ? 16 << 10 : 4 << 20);
		store_batch_cache(b, STORE_CF_IDENTITIES, round ? 16 << 10 : 4 << 20);
		for (int step = 0; step < 3000; step++) {
			int cf, op;

			r = r * 1103515245u + 12345u;
			cf = (int)(r >> 8) % 3;
			op = (int)(r >> 12) % 10;
			snprintf(k, sizeof(k), "k%03u", (r >> 16) % 200);
			if (op < 5) {
				/* "v<step>" then up to 500 bytes of padding: sizes vary.
				 */
				int n = snprintf(v, sizeof(v), "v%d", step);

				memset(v + n, 'a' + step % 26, (r >> 4) % 500);
				v[n + (r >> 4) % 500] = '\0';
				put_s(b, cfs[cf], k, v);
			} else if (op < 7) {
				del_s(b, cfs[cf], k);
			} else if (op == 7) {
				store_batch_put_blind(b, cfs[cf], k, strlen(k), "blind",
						      5);
			} else if (op == 8 && step % 50 == 0) {
				store_batch_delete_range_blind(b, cfs[cf], "k05", 3,
							       "k09", 3);
			} else {
				/* Reads through the batch fill the cache too. */
				char *x = NULL;

				if (store_batch_get(b, cfs[cf], k, strlen(k), &x, NULL) ==
				    NERR_OK)
					free(x);
			}
			if (step % 7 == 0) {
				if ((r >> 20) % 5 == 0)
					store_batch_clear(b); /* abandoned */
				else
					assert_int_equal(
						store_batch_commit(b, false, NULL),
						NERR_OK);
				for (int f = 0; f < 3; f++)
					for (unsigned i = 0; i < 200; i++) {
						char *want = NULL, *got = NULL;
						size_t wl = 0, gl = 0;
						enum nerr wr, gr;

						snprintf(k, sizeof(k), "k%03u", i);
						wr = store_get(s, cfs[f], k, strlen(k),
							       &want, &wl);
						gr = store_batch_get(b, cfs[f], k,
								     strlen(k), &got,
								     &gl);
						assert_int_equal(gr, wr);
						if (wr == NERR_OK) {
							assert_int_equal(gl, wl);
							assert_memory_equal(got, want,
									    wl);
						}
						free(want);
						free(got);
					}
			}
		}
		store_batch_free(b);
	}
	store_close(s);
}

/* After one huge batch the batch gives back its big tables at clear: later
 * small batches must still read, iterate and commit correctly. */
static void small_batches_after_a_huge_one(void **state)
{
	struct store *s = NULL;
	struct store_batch *b;
	char k[32], out[256];

	(void)state;
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	b = store_batch_new(s);
	for (int i = 0; i < 200000; i++) {
		snprintf(k, sizeof(k), "h%06d", i);
		put_s(b, STORE_CF_INDEX, k, "v");
	}
	assert_int_equal(store_batch_commit(b, false, NULL), NERR_OK);
	for (int round = 0; round < 3; round++) {
		put_s(b, STORE_CF_INDEX, "a", "1");
		del_s(b, STORE_CF_INDEX, "h000001");
		check_get(s, b, STORE_CF_INDEX, "a", "1");
		check_get(s, b, STORE_CF_INDEX, "h000001", NULL);
		check_get(s, b, STORE_CF_INDEX, "h000002", "v");
		{
			struct store_iter *it = store_iter_new(s, b, STORE_CF_INDEX);
			size_t n = 0;

			store_iter_seek_first(it);
			for (int j = 0; j < 3 && store_iter_valid(it);
			     j++, store_iter_next(it)) {
				size_t kl;
				const char *key = store_iter_key(it, &kl);

				n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%.*s",
						      n ? " " : "", (int)kl, key);
			}
			store_iter_free(it);
			assert_string_equal(out, "a h000000 h000002");
		}
		if (round == 1)
			store_batch_clear(b);
		else
			assert_int_equal(store_batch_commit(b, false, NULL), NERR_OK);
	}
	check_get(s, NULL, STORE_CF_INDEX, "a", "1");
	check_get(s, NULL, STORE_CF_INDEX, "h000001", NULL);
	store_batch_free(b);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(u64_keys_are_big_endian_and_sort_numerically),
		cmocka_unit_test_setup_teardown(
			batch_reads_its_own_writes_and_commits_atomically, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			blind_writes_commit_with_the_batch_after_indexed_ones, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			iteration_is_ordered_and_merges_pending_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(read_only_open_of_an_older_directory,
						setup, teardown),
		cmocka_unit_test_setup_teardown(inbox_has_its_own_database, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			batch_get_sees_its_own_put_delete_and_overwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(commit_writes_exactly_the_final_state,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			blind_write_wins_over_indexed_write_to_the_same_key, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			iterators_merge_the_batch_over_committed_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(iterating_while_deleting_the_current_key,
						setup, teardown),
		cmocka_unit_test_setup_teardown(iterating_while_putting_ahead, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			batch_and_iterators_match_a_reference_model, setup, teardown),
		cmocka_unit_test_setup_teardown(small_batches_after_a_huge_one, setup,
						teardown),
		cmocka_unit_test_setup_teardown(read_cache_matches_the_committed_state,
						setup, teardown),
		cmocka_unit_test(inbox_records_round_trip_and_reject_garbage),
		cmocka_unit_test_setup_teardown(
			group_commit_assigns_dense_sequences_in_order, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
