/*
 * err.h -- the project's one error enum and the human reason that travels with it.
 *
 * Design: every function that can fail returns `enum nerr` (the local is always `rc`)
 * and hands results back through out-parameters. The numbers are part of the
 * project's vocabulary (logs, tests, the API's error codes) and are never reused:
 * append new codes at the end. `struct nerr_msg` carries the field path and a
 * sentence so the HTTP layer can answer {"error":{"code","field","message"}}.
 */
#ifndef NUDGE_BASE_ERR_H
#define NUDGE_BASE_ERR_H

#include <stddef.h>

enum nerr {
	NERR_OK = 0,
	NERR_NOMEM = 1,
	NERR_IO = 2,
	NERR_INVAL = 3,
	NERR_NOTFOUND = 4,
	NERR_CONFLICT = 5,
	NERR_CORRUPT = 6,
	NERR_BUSY = 7,
	NERR_TOOBIG = 8,
	NERR_AUTH = 9,
	NERR_UNSUPPORTED = 10,
	NERR_TIMEOUT = 11,
	NERR_PARSE = 12,
	NERR_EVAL = 13,
	NERR_LIMIT = 14,
	NERR_EXISTS = 15,
};

/* Returns the stable lower-case name of a code ("ok", "nomem", "invalid", ...). */
const char *nerr_str(enum nerr rc);

/*
 * The reason beside the code. `field` is a JSON-path-like location
 * ("batch[3].userId") or empty; `message` is one sentence for a human.
 */
struct nerr_msg {
	char field[128];
	char message[256];
};

/* Fills msg (may be NULL) and returns rc, so callers can `return nerr_set(...)`. */
enum nerr nerr_set(struct nerr_msg *msg, enum nerr rc, const char *field, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));

/* Clears msg to empty strings. */
void nerr_clear(struct nerr_msg *msg);

#endif
