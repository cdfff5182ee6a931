/*
 * jtok.c -- one json-c tokener per thread (see jtok.h).
 */
#include "base/jtok.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>

#include "base/mem.h"

struct slot {
	struct json_tokener *tok;
	int depth;
};

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void slot_free(void *p)
{
	struct slot *s = p;

	json_tokener_free(s->tok);
	free(s);
}

static void key_init(void)
{
	ASSERT(pthread_key_create(&key, slot_free) == 0);
}

struct json_tokener *jtok_thread(int depth)
{
	struct slot *s;

	pthread_once(&once, key_init);
	s = pthread_getspecific(key);
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		ASSERT(pthread_setspecific(key, s) == 0);
	}
	if (!s->tok || s->depth != depth) {
		if (s->tok) /* json_tokener_free(NULL) crashes */
			json_tokener_free(s->tok);
		s->tok = json_tokener_new_ex(depth);
		ASSERT(s->tok);
		s->depth = depth;
	}
	json_tokener_reset(s->tok);
	json_tokener_set_flags(s->tok, 0); /* a previous caller's flags stay otherwise */
	return s->tok;
}
