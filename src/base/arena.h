/*
 * arena.h -- bump allocation for request- and step-scoped memory.
 *
 * Design: an arena hands out memory from chained blocks and frees it all at once
 * (arena_reset keeps the first block for reuse, so a hot path that resets per
 * request stops touching malloc after warm-up). Nothing in an arena may be pointed
 * to from long-lived state. Not thread-safe: one arena per thread or per request.
 * An optional cap (limit_bytes) makes allocation beyond it return NULL, so
 * client-sized work can be bounded; with no cap, exhaustion aborts like xmalloc.
 */
#ifndef NUDGE_BASE_ARENA_H
#define NUDGE_BASE_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
	struct arena_block *head; /* current block; owned */
	size_t block_bytes;	  /* size of a default block */
	size_t used_bytes;	  /* total handed out since the last reset */
	size_t limit_bytes;	  /* 0 = unlimited */
};

/* block_bytes 0 picks 4 KiB. */
void arena_init(struct arena *a, size_t block_bytes);
void arena_fini(struct arena *a);
/* Frees everything allocated; keeps one block for reuse. */
void arena_reset(struct arena *a);

/* Returns 16-byte aligned memory, or NULL only if limit_bytes would be exceeded. */
void *arena_alloc(struct arena *a, size_t size_bytes);
void *arena_calloc(struct arena *a, size_t n, size_t size_bytes);
char *arena_strndup(struct arena *a, const char *s, size_t len);
char *arena_strdup(struct arena *a, const char *s);

#endif
