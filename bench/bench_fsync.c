/*
 * bench_fsync.c -- the machine's fdatasync latency, for reference beside the
 * durable-ingest figures (one sync per event would cap ingest at 1/latency).
 * Writes 4 KiB and calls fdatasync 500 times in $NUDGE_BENCH_DIR (default /tmp).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	const char *dir = getenv("NUDGE_BENCH_DIR") ? getenv("NUDGE_BENCH_DIR") : "/tmp";
	char path[512], block[4096];
	enum { N = 500 };
	static double us[N];
	int fd;

	snprintf(path, sizeof(path), "%s/nudge-fsync-bench.%d", dir, (int)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	memset(block, 'x', sizeof(block));
	for (int i = 0; i < N; i++) {
		uint64_t t0 = clock_mono_ns();

		if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block) ||
		    fdatasync(fd) != 0) {
			perror("write/fdatasync");
			return 1;
		}
		us[i] = (double)(clock_mono_ns() - t0) / 1000.0;
	}
	close(fd);
	unlink(path);
	qsort(us, N, sizeof(us[0]), cmp);
	printf("fdatasync (4 KiB append, %d runs): p50 %.1f us  p99 %.1f us  => at most %.0f "
	       "syncs/s\n",
	       N, us[N / 2], us[N * 99 / 100], 1e6 / us[N / 2]);
	return 0;
}
