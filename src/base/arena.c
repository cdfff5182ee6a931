/*
 * arena.c -- chained-block bump allocator (see arena.h).
 *
 * Layout: each block is a header followed by its data; blocks form a singly linked
 * list from newest to oldest. Oversized requests get a block of their own.
 */
#include "base/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

struct arena_block {
	struct arena_block *next;
	size_t cap;
	size_t off;
	_Alignas(16) unsigned char data[];
};

void arena_init(struct arena *a, size_t block_bytes)
{
	a->head = NULL;
	a->block_bytes = block_bytes ? block_bytes : 4096;
	a->used_bytes = 0;
	a->limit_bytes = 0;
}

void arena_fini(struct arena *a)
{
	struct arena_block *b = a->head, *next;

	while (b) {
		next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
	a->used_bytes = 0;
}

void arena_reset(struct arena *a)
{
	struct arena_block *b, *next;

	if (!a->head)
		return;
	/* Keep the oldest block (the default-sized one allocated first). */
	b = a->head;
	while (b->next) {
		next = b->next;
		free(b);
		b = next;
	}
	b->off = 0;
	a->head = b;
	a->used_bytes = 0;
}

void *arena_alloc(struct arena *a, size_t size_bytes)
{
	struct arena_block *b = a->head;
	size_t need = (size_bytes + 15) & ~(size_t)15;
	void *p;

	if (need < size_bytes)
		return NULL;
	if (a->limit_bytes && a->used_bytes + need > a->limit_bytes)
		return NULL;
	if (!b || b->cap - b->off < need) {
		size_t cap = need > a->block_bytes ? need : a->block_bytes;

		b = xmalloc(sizeof(*b) + cap);
		b->cap = cap;
		b->off = 0;
		if (a->head && need > a->block_bytes) {
			/* A big block goes behind the current one so the current
			 * block's free space is still used. */
			b->next = a->head->next;
			a->head->next = b;
			b->off = need;
			a->used_bytes += need;
			return b->data;
		}
		b->next = a->head;
		a->head = b;
	}
	p = b->data + b->off;
	b->off += need;
	a->used_bytes += need;
	return p;
}

void *arena_calloc(struct arena *a, size_t n, size_t size_bytes)
{
	void *p;

	if (size_bytes && n > SIZE_MAX / size_bytes)
		return NULL;
	p = arena_alloc(a, n * size_bytes);
	if (p)
		memset(p, 0, n * size_bytes);
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
	char *p = arena_alloc(a, len + 1);

	if (!p)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
	return arena_strndup(a, s, strlen(s));
}
