/*
 * clock.h -- wall and monotonic time in the units the rest of nudge uses.
 */
#ifndef NUDGE_BASE_CLOCK_H
#define NUDGE_BASE_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (UTC). */
int64_t clock_wall_ms(void);
/* Monotonic nanoseconds, for measuring durations. */
uint64_t clock_mono_ns(void);
/* Formats ms since epoch as RFC 3339 UTC with milliseconds
 * ("2026-01-02T03:04:05.678Z") into out (at least 32 bytes). */
void clock_format_rfc3339(int64_t wall_ms, char *out);
/* Parses an ISO 8601 / RFC 3339 date-time (with offset or Z; a bare date means
 * midnight UTC). Returns 0 and sets *wall_ms, or -1. */
int clock_parse_rfc3339(const char *s, int64_t *wall_ms);

#endif
