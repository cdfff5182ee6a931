/*
 * buf.c -- growable byte buffer (see buf.h). Doubling growth, capped.
 */
#include "base/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

void buf_init(struct buf *b, size_t cap_bytes)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap_bytes = cap_bytes;
}

void buf_fini(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

enum nerr buf_reserve(struct buf *b, size_t n)
{
	size_t want = b->len + n + 1, na;

	if (want < n)
		return NERR_TOOBIG;
	if (b->cap_bytes && b->len + n > b->cap_bytes)
		return NERR_TOOBIG;
	if (want <= b->alloc)
		return NERR_OK;
	na = b->alloc ? b->alloc : 64;
	while (na < want)
		na *= 2;
	b->data = xrealloc(b->data, na);
	b->alloc = na;
	return NERR_OK;
}

enum nerr buf_append(struct buf *b, const void *p, size_t n)
{
	enum nerr rc = buf_reserve(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return NERR_OK;
}

enum nerr buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum nerr buf_putc(struct buf *b, char c)
{
	return buf_append(b, &c, 1);
}

enum nerr buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;
	enum nerr rc;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return NERR_INVAL;
	rc = buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return NERR_OK;
}

enum nerr buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	enum nerr rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}

char *buf_take(struct buf *b)
{
	char *p = b->data ? b->data : xstrdup("");

	b->data = NULL;
	b->len = b->alloc = 0;
	return p;
}
