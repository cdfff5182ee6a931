/*
 * inbox.c -- the committer thread and the inbox record format (see inbox.h).
 *
 * Threading: the job queue is guarded by one mutex; the loop thread appends, the
 * committer takes the whole queue (up to max_batch records) at once, so requests
 * that arrive while a sync runs share the next sync (group commit). Finished jobs
 * go to a done list and one uv_async wakes the loop, which calls each job's
 * callback in commit order. Sequence numbers are assigned only by the committer,
 * so they are dense and increasing.
 */
#include "ingest/inbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/mem.h"
#include "report/metrics.h"

#define INBOX_DELETE_EVERY 4096

struct inbox_job {
	struct inbox_job *next;
	unsigned n;
	size_t bytes;
	size_t alloc;
	char *data;	/* records back to back */
	uint32_t *lens; /* n lengths */
	unsigned lens_alloc;
	inbox_done_fn fn;
	void *ud;
	enum nerr rc;
	uint64_t last_seq;
};

struct inbox {
	struct store *s;
	uv_loop_t *loop;
	uv_async_t async;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct inbox_job *queue, **queue_tail; /* guarded by mu */
	struct inbox_job *done, **done_tail;   /* guarded by mu */
	size_t queued_bytes;		       /* guarded by mu */
	bool stopping;			       /* guarded by mu */
	bool thread_started;
	_Atomic bool broken;
	_Atomic uint64_t committed_seq;
	uint64_t next_seq; /* committer thread only */
	struct inbox_config cfg;
	inbox_committed_fn on_committed;
	void *committed_ud;
};

static struct metric m_commit_batch = {
	.name = "nudge_commit_batch_records",
	.help = "Records per group commit.",
	.type = METRIC_HISTOGRAM,
	.bounds = metrics_size_bounds,
};
static struct metric m_commit_sync = {
	.name = "nudge_commit_sync_seconds",
	.help = "Latency of the synced inbox write.",
	.type = METRIC_HISTOGRAM,
	.bounds = metrics_latency_seconds_bounds,
};
static struct metric m_commit_fail = {
	.name = "nudge_commit_failures_total",
	.help = "Inbox writes that failed (the server stops accepting).",
	.type = METRIC_COUNTER,
};

struct inbox_job *inbox_job_new(void)
{
	return xcalloc(1, sizeof(struct inbox_job));
}

void inbox_job_free(struct inbox_job *job)
{
	if (!job)
		return;
	free(job->data);
	free(job->lens);
	free(job);
}

void inbox_job_add(struct inbox_job *job, enum inbox_kind kind, int64_t received_ms,
		   const char *payload, size_t len)
{
	size_t need = INBOX_HEADER_BYTES + len;
	char *p;

	if (job->bytes + need > job->alloc) {
		size_t na = job->alloc ? job->alloc : 512;

		while (na < job->bytes + need)
			na *= 2;
		job->data = xrealloc(job->data, na);
		job->alloc = na;
	}
	if (job->n == job->lens_alloc) {
		job->lens_alloc = job->lens_alloc ? job->lens_alloc * 2 : 4;
		job->lens = xrealloc(job->lens, job->lens_alloc * sizeof(*job->lens));
	}
	p = job->data + job->bytes;
	p[0] = (char)kind;
	store_put_u64(p + 1, (uint64_t)received_ms);
	memcpy(p + INBOX_HEADER_BYTES, payload, len);
	job->lens[job->n++] = (uint32_t)need;
	job->bytes += need;
}

unsigned inbox_job_count(const struct inbox_job *job)
{
	return job->n;
}

enum nerr inbox_decode(const char *rec, size_t len, enum inbox_kind *kind,
		       int64_t *received_ms, const char **payload, size_t *payload_len)
{
	if (len < INBOX_HEADER_BYTES)
		return NERR_CORRUPT;
	if (rec[0] < INBOX_EVENT || rec[0] > INBOX_OUTCOME)
		return NERR_CORRUPT;
	*kind = (enum inbox_kind)rec[0];
	*received_ms = (int64_t)store_get_u64(rec + 1);
	*payload = rec + INBOX_HEADER_BYTES;
	*payload_len = len - INBOX_HEADER_BYTES;
	return NERR_OK;
}

/*
 * Consumption is the engine's applied position, committed in its state batch;
 * the records themselves are deleted in chunks: every INBOX_DELETE_EVERY
 * records one range deletion of everything up to there. A point deletion per
 * record put thousands of entries per engine batch in front of the committer's
 * synced writes in the inbox database's write path; a range is one entry.
 * Records consumed since the last chunk stay until the next (inbox_trim clears
 * them at start).
 */
void inbox_consume(struct store_batch *b, uint64_t seq)
{
	unsigned char from[8], to[8];

	if (seq % INBOX_DELETE_EVERY != 0)
		return;
	store_put_u64(from, 0);
	store_put_u64(to, seq + 1);
	store_batch_delete_range_blind(b, STORE_CF_INBOX, from, 8, to, 8);
}

unsigned inbox_trim(struct store *s, uint64_t applied_seq)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_INBOX);
	unsigned n = 0;

	for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
		size_t kl;
		const char *k = store_iter_key(it, &kl);

		if (kl != 8 || store_get_u64(k) > applied_seq)
			break;
		n++;
	}
	store_iter_free(it);
	if (n) {
		struct store_batch *b = store_batch_new(s);
		unsigned char from[8], to[8];

		store_put_u64(from, 0);
		store_put_u64(to, applied_seq + 1);
		store_batch_delete_range_blind(b, STORE_CF_INBOX, from, 8, to, 8);
		if (store_batch_commit(b, false, NULL) == NERR_OK)
			log_info("inbox",
				 "msg=\"consumed records deleted at start\" records=%u",
				 n);
		store_batch_free(b);
	}
	return n;
}

uint64_t inbox_last_stored_seq(struct store *s)
{
	struct store_iter *it = store_iter_new(s, NULL, STORE_CF_INBOX);
	uint64_t seq = 0;
	size_t kl;

	store_iter_seek_last(it);
	if (store_iter_valid(it)) {
		const char *k = store_iter_key(it, &kl);

		if (kl == 8)
			seq = store_get_u64(k);
	}
	store_iter_free(it);
	return seq;
}

/* Runs on the loop thread: report finished jobs in commit order. */
static void on_async(uv_async_t *h)
{
	struct inbox *ib = h->data;
	struct inbox_job *list, *next;

	pthread_mutex_lock(&ib->mu);
	list = ib->done;
	ib->done = NULL;
	ib->done_tail = &ib->done;
	pthread_mutex_unlock(&ib->mu);
	for (; list; list = next) {
		next = list->next;
		list->fn(list->ud, list->rc, list->last_seq);
		inbox_job_free(list);
	}
}

static void *committer_main(void *arg)
{
	struct inbox *ib = arg;
	struct store_batch *b = store_batch_new(ib->s);

	pthread_setname_np(pthread_self(), "nudge-commit");
	store_thread_init();
	for (;;) {
		struct inbox_job *take, **take_tail = &take, *j;
		unsigned nrec = 0;
		size_t bytes = 0;
		enum nerr rc = NERR_OK;

		pthread_mutex_lock(&ib->mu);
		while (!ib->queue && !ib->stopping)
			pthread_cond_wait(&ib->cv, &ib->mu);
		if (!ib->queue && ib->stopping) {
			pthread_mutex_unlock(&ib->mu);
			break;
		}
		/* Take whole jobs up to max_batch records (at least one job). */
		while (ib->queue &&
		       (nrec == 0 || nrec + ib->queue->n <= ib->cfg.max_batch)) {
			j = ib->queue;
			ib->queue = j->next;
			nrec += j->n;
			bytes += j->bytes;
			*take_tail = j;
			take_tail = &j->next;
		}
		*take_tail = NULL;
		if (!ib->queue)
			ib->queue_tail = &ib->queue;
		pthread_mutex_unlock(&ib->mu);

		uint64_t seq = ib->next_seq;
		if (atomic_load(&ib->broken)) {
			rc = NERR_IO;
		} else {
			for (j = take; j; j = j->next) {
				size_t off = 0;

				for (unsigned i = 0; i < j->n; i++) {
					unsigned char key[8];

					store_put_u64(key, ++seq);
					store_batch_put_blind(b, STORE_CF_INBOX, key,
							      sizeof(key), j->data + off,
							      j->lens[i]);
					off += j->lens[i];
				}
				j->last_seq = seq;
			}
			uint64_t t0 = clock_mono_ns();
			rc = store_batch_commit(b, true, NULL);
			metrics_observe(&m_commit_sync,
					(double)(clock_mono_ns() - t0) / 1e9);
			metrics_observe(&m_commit_batch, nrec);
			if (rc) {
				store_batch_clear(b);
				atomic_store(&ib->broken, true);
				metrics_add(&m_commit_fail, 1);
				log_error(
					"inbox",
					"msg=\"sync failed; refusing writes\" records=%u",
					nrec);
			} else {
				ib->next_seq = seq;
				atomic_store(&ib->committed_seq, seq);
			}
		}
		for (j = take; j; j = j->next)
			j->rc = rc;
		if (!rc && ib->on_committed)
			ib->on_committed(ib->committed_ud, seq);

		pthread_mutex_lock(&ib->mu);
		ib->queued_bytes -= bytes;
		*ib->done_tail = take;
		ib->done_tail = take_tail;
		pthread_mutex_unlock(&ib->mu);
		uv_async_send(&ib->async);
	}
	store_batch_free(b);
	return NULL;
}

enum nerr inbox_open(struct store *s, uv_loop_t *loop, const struct inbox_config *cfg,
		     inbox_committed_fn on_committed, void *committed_ud,
		     struct inbox **out)
{
	struct inbox *ib = xcalloc(1, sizeof(*ib));

	metrics_register(&m_commit_batch);
	metrics_register(&m_commit_sync);
	metrics_register(&m_commit_fail);
	m_commit_batch.nbounds = metrics_size_nbounds;
	m_commit_sync.nbounds = metrics_latency_seconds_nbounds;
	ib->s = s;
	ib->loop = loop;
	ib->cfg = *cfg;
	if (ib->cfg.max_batch == 0)
		ib->cfg.max_batch = 20000;
	ib->on_committed = on_committed;
	ib->committed_ud = committed_ud;
	ib->queue_tail = &ib->queue;
	ib->done_tail = &ib->done;
	pthread_mutex_init(&ib->mu, NULL);
	pthread_cond_init(&ib->cv, NULL);
	ib->next_seq = inbox_last_stored_seq(s);
	atomic_store(&ib->committed_seq, ib->next_seq);
	uv_async_init(loop, &ib->async, on_async);
	ib->async.data = ib;
	if (pthread_create(&ib->thread, NULL, committer_main, ib) != 0) {
		uv_close((uv_handle_t *)&ib->async, NULL);
		return NERR_NOMEM;
	}
	ib->thread_started = true;
	*out = ib;
	return NERR_OK;
}

void inbox_set_min_seq(struct inbox *ib, uint64_t seq)
{
	pthread_mutex_lock(&ib->mu);
	if (seq > ib->next_seq) {
		ib->next_seq = seq;
		atomic_store(&ib->committed_seq, seq);
	}
	pthread_mutex_unlock(&ib->mu);
}

enum nerr inbox_submit(struct inbox *ib, struct inbox_job *job, inbox_done_fn fn,
		       void *ud)
{
	if (atomic_load(&ib->broken))
		return NERR_IO;
	pthread_mutex_lock(&ib->mu);
	if (ib->stopping) {
		pthread_mutex_unlock(&ib->mu);
		return NERR_BUSY;
	}
	if (ib->queued_bytes + job->bytes > ib->cfg.max_queue_bytes && ib->queued_bytes) {
		pthread_mutex_unlock(&ib->mu);
		return NERR_BUSY;
	}
	job->fn = fn;
	job->ud = ud;
	job->next = NULL;
	ib->queued_bytes += job->bytes;
	*ib->queue_tail = job;
	ib->queue_tail = &job->next;
	pthread_cond_signal(&ib->cv);
	pthread_mutex_unlock(&ib->mu);
	return NERR_OK;
}

uint64_t inbox_committed_seq(const struct inbox *ib)
{
	return atomic_load(&((struct inbox *)ib)->committed_seq);
}

bool inbox_broken(const struct inbox *ib)
{
	return atomic_load(&((struct inbox *)ib)->broken);
}

size_t inbox_queued_bytes(const struct inbox *ib)
{
	struct inbox *m = (struct inbox *)ib;
	size_t n;

	pthread_mutex_lock(&m->mu);
	n = m->queued_bytes;
	pthread_mutex_unlock(&m->mu);
	return n;
}

void inbox_close(struct inbox *ib)
{
	if (!ib->thread_started)
		return;
	pthread_mutex_lock(&ib->mu);
	ib->stopping = true;
	pthread_cond_signal(&ib->cv);
	pthread_mutex_unlock(&ib->mu);
	pthread_join(ib->thread, NULL);
	ib->thread_started = false;
	on_async(&ib->async); /* report the last jobs */
	uv_close((uv_handle_t *)&ib->async, NULL);
}

void inbox_free(struct inbox *ib)
{
	if (!ib)
		return;
	pthread_mutex_destroy(&ib->mu);
	pthread_cond_destroy(&ib->cv);
	free(ib);
}
