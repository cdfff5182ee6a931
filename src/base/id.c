/*
 * id.c -- the id rule of id.h: a byte loop, no locale (isalnum() would accept
 * other letters in some locales).
 */
#include "base/id.h"

#include <string.h>

bool id_valid_n(const char *s, size_t len, size_t max)
{
	if (!s || len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool id_valid(const char *s, size_t max)
{
	return s && id_valid_n(s, strlen(s), max);
}
