/*
 * bench_store.c -- the engine's write batch alone: what store_batch costs per
 * event, without parsing, journeys or HTTP.
 *
 * An engine-like stream on a fresh store in $NUDGE_BENCH_DIR (default /tmp):
 * 10,000 profiles, batches of 2,000 events; per event a read of the profile
 * through the batch, a new profile value (~400 bytes) and an event record
 * (~150 bytes) written indexed, a dedup entry and its expiry entry written
 * blind, and a prefix seek over the profile's keys in another family through
 * the batch (as the journeys' goal check does), every fourth event writing
 * one there. Each batch commits with sync. Prints microseconds per event for
 * the writes and reads (apply) and for the commit, and events/s overall.
 * For reference, on the 2-core machine when the batch stopped being a
 * WriteBatchWithIndex: apply 14.3-17.2 -> 7.5-9.3 us/event, commit unchanged
 * (15-19 us/event, mostly RocksDB's memtable inserts and the sync).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "store/store.h"

enum { PROFILES = 10000, BATCH = 2000, BATCHES = 60 };

int main(void)
{
	const char *base = getenv("NUDGE_BENCH_DIR") ? getenv("NUDGE_BENCH_DIR") : "/tmp";
	char dir[512], cmd[600], val[512], mid[32];
	unsigned char pk[8], ek[24], tk[8 + sizeof(mid)], gk[17];
	struct store *s;
	struct store_batch *b;
	uint64_t apply_ns = 0, commit_ns = 0, seq = 0, rnd = 88172645463325252ULL;

	snprintf(dir, sizeof(dir), "%s/nudge-store-bench.%d", base, (int)getpid());
	if (store_open(dir, &s, NULL) != NERR_OK)
		return 1;
	b = store_batch_new(s);
	memset(val, 'p', sizeof(val));
	for (int n = 0; n < BATCHES; n++) {
		uint64_t t0 = clock_mono_ns(), t1;

		for (int i = 0; i < BATCH; i++, seq++) {
			uint64_t pid, ms = 1700000000000ULL + seq / 4;
			char *v = NULL;
			size_t vl = 0, ml;
			struct store_iter *it;

			rnd ^= rnd << 13; /* xorshift64 */
			rnd ^= rnd >> 7;
			rnd ^= rnd << 17;
			pid = rnd % PROFILES;
			store_put_u64(pk, pid);
			if (store_batch_get(b, STORE_CF_PROFILES, pk, 8, &v, &vl) ==
			    NERR_OK)
				free(v);
			store_batch_put(b, STORE_CF_PROFILES, pk, 8, val, 380 + seq % 40);
			store_put_u64(ek, seq); /* profile.c's event key */
			memcpy(ek + 8, pk, 8);
			store_batch_put(b, STORE_CF_EVENTS, ek, 16, val, 150);
			ml = (size_t)snprintf(mid, sizeof(mid), "m-%016llx",
					      (unsigned long long)rnd);
			store_put_u64(tk, ms); /* first-seen time, as the engine */
			store_batch_put_blind(b, STORE_CF_DEDUP, mid, ml, tk, 8);
			memcpy(tk + 8, mid, ml);
			store_batch_put_blind(b, STORE_CF_DEDUP_TIME, tk, 8 + ml, "", 0);
			gk[0] = 'g';
			memcpy(gk + 1, pk, 8);
			it = store_iter_new(s, b, STORE_CF_INDEX);
			for (store_iter_seek(it, gk, 9); store_iter_valid(it);
			     store_iter_next(it)) {
				size_t kl;
				const char *k = store_iter_key(it, &kl);

				if (kl < 9 || memcmp(k, gk, 9) != 0)
					break;
			}
			store_iter_free(it);
			if (seq % 4 == 0) {
				store_put_u64(gk + 9, seq);
				store_batch_put(b, STORE_CF_INDEX, gk, 17, val, 100);
			}
		}
		t1 = clock_mono_ns();
		if (store_batch_commit(b, true, NULL) != NERR_OK)
			return 1;
		apply_ns += t1 - t0;
		commit_ns += clock_mono_ns() - t1;
	}
	printf("store batch, %d batches of %d engine-like events, %d profiles:\n",
	       BATCHES, BATCH, PROFILES);
	printf("  apply %.2f us/event, commit %.2f us/event, %.0f events/s\n",
	       apply_ns / 1e3 / seq, commit_ns / 1e3 / seq,
	       seq / ((apply_ns + commit_ns) / 1e9));
	store_batch_free(b);
	store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}
