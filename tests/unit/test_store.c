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
	assert_int_equal(store_batch_count(b), 3);
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
		cmocka_unit_test_setup_teardown(inbox_has_its_own_database, setup,
						teardown),
		cmocka_unit_test(inbox_records_round_trip_and_reject_garbage),
		cmocka_unit_test_setup_teardown(
			group_commit_assigns_dense_sequences_in_order, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
