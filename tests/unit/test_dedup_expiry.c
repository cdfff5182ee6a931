/*
 * test_dedup_expiry.c -- the dedup family expires by compaction: entries whose
 * first-seen time is older than the window are dropped when compacted, newer
 * ones stay, with no window (0) nothing is dropped, and age is judged by the
 * clock that stamped the entries (a test clock behind the wall clock). Uses a real
 * RocksDB store in a temporary directory and forces the compaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "store/store.h"

static void put_seen(struct store_batch *b, const char *mid, int64_t t)
{
	unsigned char v[8];

	store_put_u64(v, (uint64_t)t);
	store_batch_put_blind(b, STORE_CF_DEDUP, mid, strlen(mid), v, 8);
}

static bool present(struct store *s, const char *mid)
{
	char *v = NULL;
	size_t vl = 0;
	enum nerr rc = store_get(s, STORE_CF_DEDUP, mid, strlen(mid), &v, &vl);

	free(v);
	return rc == NERR_OK;
}

static void expired_entries_dropped_by_compaction(void **state)
{
	char dir[] = "/tmp/nudge-test-dedup.XXXXXX", cmd[64];
	struct store *s = NULL;
	struct store_batch *b;
	int64_t now = clock_wall_ms();
	char mid[32];

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(store_open(dir, &s, NULL), NERR_OK);
	/* No window: nothing expires, however old. */
	b = store_batch_new(s);
	put_seen(b, "ancient", now - 400LL * 86400000);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_compact(s, STORE_CF_DEDUP);
	assert_true(present(s, "ancient"));

	store_set_dedup_window(s, 3600000);
	for (int i = 0; i < 500; i++) {
		snprintf(mid, sizeof(mid), "old-%d", i);
		put_seen(b, mid, now - 7200000 - i);
		snprintf(mid, sizeof(mid), "new-%d", i);
		put_seen(b, mid, now - 60000 - i);
	}
	/* Just inside the window by a minute: kept. */
	put_seen(b, "edge", now - 3600000 + 60000);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	assert_true(present(s, "old-7"));
	store_compact(s, STORE_CF_DEDUP);
	for (int i = 0; i < 500; i++) {
		snprintf(mid, sizeof(mid), "old-%d", i);
		assert_false(present(s, mid));
		snprintf(mid, sizeof(mid), "new-%d", i);
		assert_true(present(s, mid));
	}
	assert_false(present(s, "ancient"));
	assert_true(present(s, "edge"));

	/* A test clock two hours behind the wall clock: an entry it stamped a
	 * minute ago is 2h01 old by the wall clock, and must stay. */
	store_set_dedup_clock_offset(s, -7200000);
	put_seen(b, "behind", now - 7200000 - 60000);
	put_seen(b, "behind-old", now - 7200000 - 3600000 - 60000);
	assert_int_equal(store_batch_commit(b, true, NULL), NERR_OK);
	store_compact(s, STORE_CF_DEDUP);
	assert_true(present(s, "behind"));
	assert_false(present(s, "behind-old"));
	store_batch_free(b);
	store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(expired_entries_dropped_by_compaction),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
