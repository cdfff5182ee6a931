/*
 * map.h -- a string-keyed hash map (open addressing, linear probing).
 *
 * Design: keys are copied and owned by the map; values are opaque pointers the
 * caller owns. Used for small in-memory registries (journeys by id, journeys by
 * event name); not for per-event hot data. Deletion uses backward-shift so no
 * tombstones accumulate. Not thread-safe.
 */
#ifndef NUDGE_BASE_MAP_H
#define NUDGE_BASE_MAP_H

#include <stdbool.h>
#include <stddef.h>

struct map_slot {
	char *key; /* NULL = empty */
	size_t hash;
	void *value;
};

struct map {
	struct map_slot *slots;
	size_t cap; /* power of two */
	size_t len;
};

void map_init(struct map *m);
/* Frees the keys and slots (not the values). */
void map_fini(struct map *m);
void *map_get(const struct map *m, const char *key);
/* Inserts or replaces; returns the previous value or NULL. */
void *map_put(struct map *m, const char *key, void *value);
/* Removes; returns the value or NULL. */
void *map_del(struct map *m, const char *key);
/* Iteration: for (size_t i = 0; map_next(m, &i, &k, &v);) ... */
bool map_next(const struct map *m, size_t *iter, const char **key, void **value);

#endif
