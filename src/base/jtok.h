/*
 * jtok.h -- one json-c tokener per thread.
 *
 * Design: allocating a tokener (its depth stack included) for every parse was
 * a measurable share of both the loop thread's request parsing and the
 * engine's profile loads. Each thread keeps one, replaced when a caller asks
 * for another depth, and freed when the thread exits (a pthread key, so
 * LeakSanitizer sees nothing left behind).
 */
#ifndef NUDGE_BASE_JTOK_H
#define NUDGE_BASE_JTOK_H

struct json_tokener;

/* The calling thread's tokener for this maximum depth, reset, with no flags
 * set; owned by the thread (never freed by the caller). */
struct json_tokener *jtok_thread(int depth);

#endif
