/*
 * fuzz_govern.c -- arbitrary rule documents through govern_rule_check() and,
 * when they check, govern_rule_put() and govern_decide() at several instants;
 * arbitrary bodies through govern_import_parse() (CSV and NDJSON).
 *
 * Design: the first byte picks the mode (rule kind, or import format) and an
 * instant; the rest is the document or body. A rule that checks must compile
 * and decide without crashing, and a decision must be coherent (a DELAY is in
 * the future, an EXCLUDE has a reason). An import must only hand out rows whose
 * address is normalized (no control characters, within the size cap) and report
 * no more errors than the cap. The database is opened once in a temp dir; the
 * batch is cleared after each input, so nothing accumulates.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "govern/govern.h"
#include "store/store.h"

#define NOW_MS 1796162400000LL /* 2026-12-01T22:00:00Z */

static struct store *s;
static struct store_batch *b;
static struct govern *g;

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static void row(void *ud, const char *channel, const char *address, const char *reason)
{
	size_t n = strlen(address);

	(void)ud;
	must(n > 0 && n <= GOVERN_MAX_ADDRESS_BYTES, "address length");
	for (size_t i = 0; i < n; i++)
		must((unsigned char)address[i] >= 0x20, "control character in address");
	must(!strcmp(channel, "email") || !strcmp(channel, "sms") ||
		     !strcmp(channel, "push"),
	     "channel");
	must(reason && *reason, "reason");
}

static void init(void)
{
	char dir[] = "/tmp/nudge-fuzz-govern-XXXXXX";

	log_set_level(LOG_FATAL);
	if (!mkdtemp(dir) || store_open(dir, &s, NULL) != NERR_OK ||
	    govern_open(s, NULL, &g, NULL) != NERR_OK)
		abort();
	b = store_batch_new(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = {"caps", "quiet-hours", "entry-caps",
					    "throttles"};
	static const char *const zones[] = {NULL, "Europe/Paris", "Asia/Kathmandu",
					    "Bogus/Zone"};
	unsigned mode;

	if (!g)
		init();
	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	if ((mode & 7) >= 4) {
		struct json_object *errors = NULL;
		unsigned accepted = 0;
		enum nerr rc = govern_import_parse((const char *)data, size, mode & 1,
						   mode & 8 ? NULL : "email", row, NULL,
						   &accepted, &errors);

		must(rc == NERR_OK || rc == NERR_INVAL || rc == NERR_TOOBIG, "import rc");
		must(json_object_array_length(errors) <= GOVERN_IMPORT_MAX_ERRORS,
		     "error cap");
		json_object_put(errors);
		return 0;
	}
	{
		const char *kind = kinds[mode & 3];
		struct json_tokener *tok = json_tokener_new_ex(16);
		struct json_object *doc =
			json_tokener_parse_ex(tok, (const char *)data, (int)size);
		struct nerr_msg msg;

		json_tokener_free(tok);
		if (govern_rule_check(kind, "r", doc, &msg) == NERR_OK) {
			must(govern_rule_put(g, b, kind, "r", doc) == NERR_OK, "put");
			for (int i = 0; i < 8; i++) {
				int64_t now = NOW_MS + (int64_t)((mode >> 3) + i * 37) *
							       3600 * 1000 / 7;
				struct govern_msg m = {i & 1 ? "sms" : "email",
						       i & 2 ? "marketing" : "promo",
						       1,
						       zones[i & 3],
						       "j",
						       "s",
						       now,
						       now - (i & 4) * 3600 * 1000,
						       0};
				struct govern_decision d;

				govern_decide(g, b, &m, &d);
				must(d.verdict != GOVERN_DELAY || d.until_ms > now,
				     "delay");
				must(d.verdict == GOVERN_SEND || d.reason, "reason");
				govern_entry_allowed(g, b, "j", 1, now, NULL);
			}
			must(govern_rule_delete(g, b, kind, "r") == NERR_OK, "delete");
		} else {
			must(msg.message[0] != '\0', "an error says why");
		}
		json_object_put(doc);
		store_batch_clear(b);
	}
	return 0;
}
