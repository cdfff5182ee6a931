/*
 * mem.c -- the x* allocation wrappers and the assertion handler.
 */
#include "base/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t size_bytes)
{
	fprintf(stderr, "level=fatal sub=mem msg=\"out of memory\" size=%zu\n",
		size_bytes);
	abort();
}

void *xmalloc(size_t size_bytes)
{
	void *p = malloc(size_bytes ? size_bytes : 1);

	if (!p)
		oom(size_bytes);
	return p;
}

void *xcalloc(size_t n, size_t size_bytes)
{
	void *p = calloc(n ? n : 1, size_bytes ? size_bytes : 1);

	if (!p)
		oom(n * size_bytes);
	return p;
}

void *xrealloc(void *p, size_t size_bytes)
{
	void *q = realloc(p, size_bytes ? size_bytes : 1);

	if (!q)
		oom(size_bytes);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t len)
{
	char *p = xmalloc(len + 1);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

void mem_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "level=fatal sub=assert file=%s line=%d expr=\"%s\"\n", file,
		line, expr);
	abort();
}
