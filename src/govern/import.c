/*
 * import.c -- suppression list import: CSV and NDJSON bodies to (channel,
 * address, reason) rows, and the address normalization the suppression keys use.
 *
 * Design: `POST /v1/suppression/import` hands the whole request body here on the
 * loop thread; nothing is written: the caller gets one callback per valid row and
 * turns them into suppression operations. Bad rows do not stop the import: each
 * is reported with its line number (the first GOVERN_IMPORT_MAX_ERRORS of them).
 * The row count is checked before any callback, so an oversized body is refused
 * as a whole. CSV follows RFC 4180 within a line (quoted fields, "" for a quote);
 * a row may not span lines. Addresses are normalized exactly as the engine keys
 * the suppression list (lower-case email, E.164 sms), so an imported address
 * matches the one a journey sends to.
 * References: RFC 4180 (CSV), https://github.com/ndjson/ndjson-spec.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/mem.h"
#include "govern/govern.h"

#define MAX_LINE_BYTES 4096
#define MAX_FIELDS     16

static const char *const reasons[] = {
	"manual",	   "hard_bounce", "complaint",	       "unsubscribe",
	"unsubscribe_all", "soft_bounce", "invalid_recipient", NULL};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

bool govern_address_normalize(const char *channel, const char *addr, size_t len,
			      char *out, const char **why)
{
	size_t n = 0;

	while (len && is_space(*addr))
		addr++, len--;
	while (len && is_space(addr[len - 1]))
		len--;
	if (len == 0) {
		*why = "the address is empty";
		return false;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)addr[i] < 0x20 || addr[i] == 0x7f) {
			*why = "the address contains a control character";
			return false;
		}
	if (channel && strcmp(channel, "email") == 0) {
		const char *at = memchr(addr, '@', len);

		if (len > 320 || !at || at == addr || at == addr + len - 1 ||
		    memchr(addr, ' ', len)) {
			*why = "not an email address";
			return false;
		}
		for (size_t i = 0; i < len; i++)
			out[i] = addr[i] >= 'A' && addr[i] <= 'Z'
					 ? (char)(addr[i] - 'A' + 'a')
					 : addr[i];
		out[len] = '\0';
		return true;
	}
	if (channel && strcmp(channel, "sms") == 0) {
		unsigned digits = 0;

		for (size_t i = 0; i < len; i++) {
			char c = addr[i];

			if (c == '+' && n == 0)
				out[n++] = c;
			else if (c >= '0' && c <= '9') {
				if (n == 0)
					break; /* no leading + */
				out[n++] = c;
				digits++;
			} else if (!(c == ' ' || c == '-' || c == '(' || c == ')' ||
				     c == '.') ||
				   n >= 17) {
				n = 0;
				break;
			}
			if (digits > 15)
				break;
		}
		if (n == 0 || out[0] != '+' || digits < 8 || digits > 15) {
			*why = "not an E.164 phone number (+ and 8 to 15 digits)";
			return false;
		}
		out[n] = '\0';
		return true;
	}
	if (channel && strcmp(channel, "push") == 0) {
		if (len > GOVERN_MAX_ADDRESS_BYTES || memchr(addr, ' ', len)) {
			*why = "not a device token";
			return false;
		}
		memcpy(out, addr, len);
		out[len] = '\0';
		return true;
	}
	*why = "channel must be email, sms or push";
	return false;
}

/* The import's running state. */
struct imp {
	const char *default_channel;
	void (*fn)(void *ud, const char *channel, const char *address,
		   const char *reason);
	void *ud;
	unsigned accepted;
	unsigned nerrors;
	struct json_object *errors;
};

static void row_error(struct imp *im, unsigned line, const char *message)
{
	struct json_object *e;

	if (im->nerrors++ >= GOVERN_IMPORT_MAX_ERRORS)
		return;
	e = json_object_new_object();
	json_object_object_add(e, "line", json_object_new_int64(line));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_array_add(im->errors, e);
}

/* Validates one row's values (not NUL-terminated) and calls fn. */
static void row(struct imp *im, unsigned line, const char *ch, size_t chl,
		const char *addr, size_t al, const char *reason, size_t rl)
{
	char chan[8], why_reason[24], norm[GOVERN_MAX_ADDRESS_BYTES + 1];
	const char *why = NULL;
	bool ok = false;

	while (chl && is_space(*ch))
		ch++, chl--;
	while (chl && is_space(ch[chl - 1]))
		chl--;
	while (rl && is_space(*reason))
		reason++, rl--;
	while (rl && is_space(reason[rl - 1]))
		rl--;
	if (!chl) {
		if (!im->default_channel) {
			row_error(im, line, "channel is missing");
			return;
		}
		ch = im->default_channel;
		chl = strlen(ch);
	}
	if (chl >= sizeof(chan) ||
	    (memcpy(chan, ch, chl), chan[chl] = '\0',
	     strcmp(chan, "email") && strcmp(chan, "sms") && strcmp(chan, "push"))) {
		row_error(im, line, "channel must be email, sms or push");
		return;
	}
	if (!rl) {
		reason = "manual";
		rl = 6;
	}
	if (rl < sizeof(why_reason)) {
		memcpy(why_reason, reason, rl);
		why_reason[rl] = '\0';
		for (int i = 0; reasons[i]; i++)
			ok |= strcmp(why_reason, reasons[i]) == 0;
	}
	if (!ok) {
		row_error(im, line,
			  "reason must be manual, hard_bounce, complaint, unsubscribe, "
			  "unsubscribe_all, soft_bounce or invalid_recipient");
		return;
	}
	if (al > GOVERN_MAX_ADDRESS_BYTES + 64) {
		row_error(im, line, "the address is too long");
		return;
	}
	if (!govern_address_normalize(chan, addr, al, norm, &why)) {
		row_error(im, line, why);
		return;
	}
	im->fn(im->ud, chan, norm, why_reason);
	im->accepted++;
}

/* A CSV field of one line: [start, start+len) after unquoting into scratch. */
struct field {
	const char *p;
	size_t len;
};

/*
 * Splits one CSV line into fields; quoted fields are unquoted into scratch
 * (which must hold the line). Returns the field count, or -1 with *why set.
 */
static int csv_split(const char *line, size_t len, char *scratch, struct field *f,
		     const char **why)
{
	size_t i = 0, s = 0;
	int n = 0;

	for (;;) {
		if (n == MAX_FIELDS) {
			*why = "too many columns";
			return -1;
		}
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i < len && line[i] == '"') {
			f[n].p = scratch + s;
			i++;
			for (;;) {
				if (i >= len) {
					*why = "unterminated quoted field";
					return -1;
				}
				if (line[i] == '"') {
					if (i + 1 < len && line[i + 1] == '"') {
						scratch[s++] = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				scratch[s++] = line[i++];
			}
			f[n].len = (size_t)(scratch + s - f[n].p);
			while (i < len && (line[i] == ' ' || line[i] == '\t'))
				i++;
			if (i < len && line[i] != ',') {
				*why = "text after a quoted field";
				return -1;
			}
		} else {
			f[n].p = line + i;
			while (i < len && line[i] != ',') {
				if (line[i] == '"') {
					*why = "a quote inside an unquoted field";
					return -1;
				}
				i++;
			}
			f[n].len = (size_t)(line + i - f[n].p);
		}
		n++;
		if (i >= len)
			return n;
		i++; /* the comma */
	}
}

static bool field_is(const struct field *f, const char *name)
{
	size_t a = 0, b = f->len, l = strlen(name);

	while (a < b && is_space(f->p[a]))
		a++;
	while (b > a && is_space(f->p[b - 1]))
		b--;
	if (b - a != l)
		return false;
	for (size_t i = 0; i < l; i++) {
		char c = f->p[a + i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != name[i])
			return false;
	}
	return true;
}

static void ndjson_line(struct imp *im, unsigned lineno, const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(8);
	struct json_object *o, *v;
	const char *ch = "", *reason = "";
	struct json_object *av;

	o = json_tokener_parse_ex(tok, line, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)len) {
		/* Trailing blanks after the object are fine. */
		size_t off = o ? (size_t)tok->char_offset : 0;
		bool rest_blank = o != NULL;

		for (size_t i = off; rest_blank && i < len; i++)
			rest_blank = is_space(line[i]);
		if (!rest_blank) {
			row_error(im, lineno, "not a JSON object");
			json_object_put(o);
			json_tokener_free(tok);
			return;
		}
	}
	json_tokener_free(tok);
	if (!json_object_is_type(o, json_type_object)) {
		row_error(im, lineno, "not a JSON object");
		json_object_put(o);
		return;
	}
	if (json_object_object_get_ex(o, "channel", &v)) {
		if (!json_object_is_type(v, json_type_string)) {
			row_error(im, lineno, "channel must be a string");
			goto out;
		}
		ch = json_object_get_string(v);
	}
	if (!json_object_object_get_ex(o, "address", &av) ||
	    !json_object_is_type(av, json_type_string)) {
		row_error(im, lineno, "address is missing");
		goto out;
	}
	if (json_object_object_get_ex(o, "reason", &v)) {
		if (!json_object_is_type(v, json_type_string)) {
			row_error(im, lineno, "reason must be a string");
			goto out;
		}
		reason = json_object_get_string(v);
	}
	row(im, lineno, ch, strlen(ch), json_object_get_string(av),
	    (size_t)json_object_get_string_len(av), reason, strlen(reason));
out:
	json_object_put(o);
}

enum nerr govern_import_parse(const char *body, size_t len, bool ndjson,
			      const char *default_channel,
			      void (*fn)(void *ud, const char *channel,
					 const char *address, const char *reason),
			      void *ud, unsigned *accepted, struct json_object **errors)
{
	struct imp im = {default_channel, fn, ud, 0, 0, json_object_new_array()};
	struct field f[MAX_FIELDS];
	char *scratch = xmalloc(MAX_LINE_BYTES);
	int col_addr = -1, col_ch = -1, col_reason = -1;
	unsigned lineno = 0, rows = 0;
	bool header = !ndjson;
	enum nerr rc = NERR_OK;
	size_t i;

	*accepted = 0;
	*errors = im.errors;
	if (default_channel && strcmp(default_channel, "email") &&
	    strcmp(default_channel, "sms") && strcmp(default_channel, "push")) {
		row_error(&im, 0, "channel must be email, sms or push");
		rc = NERR_INVAL;
		goto out;
	}
	for (i = 0; i < len; i++)
		rows += body[i] == '\n';
	if (rows > GOVERN_IMPORT_MAX_ROWS + 1) {
		rc = NERR_TOOBIG;
		goto out;
	}
	for (i = 0; i < len;) {
		const char *line = body + i, *nl = memchr(line, '\n', len - i);
		size_t ll = nl ? (size_t)(nl - line) : len - i, k;
		bool blank = true;

		i += ll + (nl != NULL);
		lineno++;
		if (ll && line[ll - 1] == '\r')
			ll--;
		for (k = 0; k < ll && blank; k++)
			blank = is_space(line[k]);
		if (blank)
			continue;
		if (ll > MAX_LINE_BYTES) {
			if (header) {
				row_error(&im, lineno, "the header line is too long");
				rc = NERR_INVAL;
				goto out;
			}
			row_error(&im, lineno, "line longer than 4096 bytes");
			continue;
		}
		if (ndjson) {
			ndjson_line(&im, lineno, line, ll);
			continue;
		}
		const char *why = NULL;
		int n = csv_split(line, ll, scratch, f, &why);

		if (header) {
			header = false;
			for (int c = 0; c < n; c++) {
				if (field_is(&f[c], "address"))
					col_addr = c;
				else if (field_is(&f[c], "channel"))
					col_ch = c;
				else if (field_is(&f[c], "reason"))
					col_reason = c;
			}
			if (col_addr < 0) {
				row_error(&im, lineno,
					  why ? why
					      : "the header line must name an address "
						"column");
				rc = NERR_INVAL;
				goto out;
			}
			continue;
		}
		if (n < 0) {
			row_error(&im, lineno, why);
			continue;
		}
		if (col_addr >= n) {
			row_error(&im, lineno, "address is missing");
			continue;
		}
		row(&im, lineno, col_ch >= 0 && col_ch < n ? f[col_ch].p : "",
		    col_ch >= 0 && col_ch < n ? f[col_ch].len : 0, f[col_addr].p,
		    f[col_addr].len,
		    col_reason >= 0 && col_reason < n ? f[col_reason].p : "",
		    col_reason >= 0 && col_reason < n ? f[col_reason].len : 0);
	}
	if (header) {
		row_error(&im, 0, "the body is empty");
		rc = NERR_INVAL;
	}
out:
	*accepted = im.accepted;
	free(scratch);
	return rc;
}
