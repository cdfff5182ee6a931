/*
 * id.h -- the one rule for ids users choose (journeys, steps, templates, rules,
 * audiences, computed attributes): 1 to max bytes of [A-Za-z0-9_-].
 *
 * Design: ids appear in URLs, store keys and logs, so the alphabet is kept
 * URL-safe and free of separators and control bytes; every module validates
 * with this function so the rule cannot drift between them.
 */
#ifndef NUDGE_BASE_ID_H
#define NUDGE_BASE_ID_H

#include <stdbool.h>
#include <stddef.h>

/* True if s[0..len) is 1..max bytes of [A-Za-z0-9_-]. */
bool id_valid_n(const char *s, size_t len, size_t max);
/* The same for a NUL-terminated string (NULL is not valid). */
bool id_valid(const char *s, size_t max);

#endif
