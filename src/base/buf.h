/*
 * buf.h -- a growable byte buffer with an optional cap.
 *
 * Design: the one way we build strings and bodies. The data is always
 * NUL-terminated (not counted in len) so it can be handed to C APIs. When
 * cap_bytes is set, appends past it fail with NERR_TOOBIG and leave the buffer
 * unchanged, which is how client-sized output (rendered templates, responses)
 * is bounded.
 */
#ifndef NUDGE_BASE_BUF_H
#define NUDGE_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "base/err.h"

struct buf {
	char *data;	  /* owned; NUL-terminated; NULL until first append */
	size_t len;	  /* bytes used, excluding the NUL */
	size_t alloc;	  /* bytes allocated */
	size_t cap_bytes; /* 0 = unlimited */
};

void buf_init(struct buf *b, size_t cap_bytes);
void buf_fini(struct buf *b);
void buf_reset(struct buf *b);
enum nerr buf_append(struct buf *b, const void *p, size_t n);
enum nerr buf_puts(struct buf *b, const char *s);
enum nerr buf_putc(struct buf *b, char c);
enum nerr buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
enum nerr buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Ensures room for n more bytes. */
enum nerr buf_reserve(struct buf *b, size_t n);
/* Returns the data (never NULL: "" when empty). */
const char *buf_str(const struct buf *b);
/* Moves the data out; the caller frees it; the buffer is left empty. */
char *buf_take(struct buf *b);

#endif
