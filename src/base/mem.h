/*
 * mem.h -- allocation that aborts on exhaustion, and assertions that stay on.
 *
 * Design: running out of memory is not an error a caller can handle usefully in a
 * server that caps every client-sized input, so x* wrappers abort with a message.
 * ASSERT() is for bugs and stays enabled in release builds (STYLE.md, Errors).
 */
#ifndef NUDGE_BASE_MEM_H
#define NUDGE_BASE_MEM_H

#include <stddef.h>

void *xmalloc(size_t size_bytes);
void *xcalloc(size_t n, size_t size_bytes);
void *xrealloc(void *p, size_t size_bytes);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);

/* Aborts with file:line and the failed expression. */
void mem_assert_fail(const char *expr, const char *file, int line)
	__attribute__((noreturn));

#define ASSERT(e) ((e) ? (void)0 : mem_assert_fail(#e, __FILE__, __LINE__))

#endif
