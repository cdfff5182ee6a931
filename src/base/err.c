/*
 * err.c -- names of the error codes and the helper that fills a reason.
 *
 * Design: the table is indexed by code; an unknown code (a bug) names itself
 * "unknown" rather than crashing, because it is only ever used in messages.
 */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const names[] = {
	[NERR_OK] = "ok",
	[NERR_NOMEM] = "nomem",
	[NERR_IO] = "io",
	[NERR_INVAL] = "invalid",
	[NERR_NOTFOUND] = "not_found",
	[NERR_CONFLICT] = "conflict",
	[NERR_CORRUPT] = "corrupt",
	[NERR_BUSY] = "busy",
	[NERR_TOOBIG] = "too_big",
	[NERR_AUTH] = "unauthorized",
	[NERR_UNSUPPORTED] = "unsupported",
	[NERR_TIMEOUT] = "timeout",
	[NERR_PARSE] = "parse",
	[NERR_EVAL] = "eval",
	[NERR_LIMIT] = "limit",
	[NERR_EXISTS] = "exists",
};

const char *nerr_str(enum nerr rc)
{
	if ((unsigned)rc < sizeof(names) / sizeof(names[0]) && names[rc])
		return names[rc];
	return "unknown";
}

enum nerr nerr_set(struct nerr_msg *msg, enum nerr rc, const char *field, const char *fmt,
		   ...)
{
	va_list ap;

	if (!msg)
		return rc;
	snprintf(msg->field, sizeof(msg->field), "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(msg->message, sizeof(msg->message), fmt, ap);
	va_end(ap);
	return rc;
}

void nerr_clear(struct nerr_msg *msg)
{
	if (!msg)
		return;
	msg->field[0] = '\0';
	msg->message[0] = '\0';
}
