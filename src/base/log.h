/*
 * log.h -- leveled key=value log lines on stderr.
 *
 * Design: one line per event, subsystem first (`level=info sub=ingest msg="..."
 * key=value ...`). The caller formats the key=value tail with printf syntax. A
 * global minimum level filters; writes are a single fprintf so lines from several
 * threads do not interleave.
 */
#ifndef NUDGE_BASE_LOG_H
#define NUDGE_BASE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

void log_set_level(enum log_level lvl);
/* Parses "debug|info|warn|error"; returns 0 on success, -1 if unknown. */
int log_parse_level(const char *s, enum log_level *out);
void log_msg(enum log_level lvl, const char *sub, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(sub, ...) log_msg(LOG_DEBUG, sub, __VA_ARGS__)
#define log_info(sub, ...)  log_msg(LOG_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...)  log_msg(LOG_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) log_msg(LOG_ERROR, sub, __VA_ARGS__)

#endif
