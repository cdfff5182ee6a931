/*
 * test_map.c -- the string hash map against a brute-force model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/map.h"

static void put_get_replace_delete(void **state)
{
	struct map m;
	int a = 1, b = 2;

	map_init(&m);
	assert_null(map_get(&m, "x"));
	assert_null(map_put(&m, "x", &a));
	assert_ptr_equal(map_get(&m, "x"), &a);
	assert_ptr_equal(map_put(&m, "x", &b), &a);
	assert_int_equal(m.len, 1);
	assert_ptr_equal(map_del(&m, "x"), &b);
	assert_null(map_get(&m, "x"));
	assert_null(map_del(&m, "x"));
	map_fini(&m);
}

static void matches_a_model_under_random_operations(void **state)
{
	enum { KEYS = 300 };
	static void *model[KEYS];
	struct map m;
	char key[16];

	map_init(&m);
	srand(7);
	for (int op = 0; op < 20000; op++) {
		int k = rand() % KEYS;
		void *v = (void *)(intptr_t)(op + 1);

		snprintf(key, sizeof(key), "k%d", k);
		if (rand() % 3) {
			assert_ptr_equal(map_put(&m, key, v), model[k]);
			model[k] = v;
		} else {
			assert_ptr_equal(map_del(&m, key), model[k]);
			model[k] = NULL;
		}
		if (op % 97 == 0) {
			size_t n = 0, it = 0;
			const char *kk;
			void *vv;

			for (int i = 0; i < KEYS; i++) {
				snprintf(key, sizeof(key), "k%d", i);
				assert_ptr_equal(map_get(&m, key), model[i]);
				n += model[i] != NULL;
			}
			assert_int_equal(m.len, n);
			n = 0;
			while (map_next(&m, &it, &kk, &vv))
				n++;
			assert_int_equal(m.len, n);
		}
	}
	map_fini(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(put_get_replace_delete),
		cmocka_unit_test(matches_a_model_under_random_operations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
