/*
 * fuzz_mime.c -- libFuzzer target: build an email from any field values.
 *
 * The input is split at NUL bytes into from, to, subject, html, text, an extra
 * header value and a list-unsubscribe URL; deliver_mime_build() either refuses
 * the email with a reason or builds a message, which must then keep the
 * promises of src/deliver/mime.c: 7-bit bytes only, every line ending in CRLF
 * (no bare CR or LF), no line over 998 characters, and the header block ends
 * before any field value could add a header (the only header lines are the
 * ones the builder writes). The HTML is also run through
 * deliver_html_to_text() alone, whose output must be valid UTF-8 when its input
 * is. Anything else (a crash, a sanitizer report) is a bug.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "deliver/deliver_int.h"

static const char *const allowed[] = {"Date:",
				      "From:",
				      "Reply-To:",
				      "To:",
				      "Subject:",
				      "Message-ID:",
				      "MIME-Version:",
				      "List-Unsubscribe:",
				      "List-Unsubscribe-Post:",
				      "X-Fuzz:",
				      "Content-Type:",
				      "Content-Transfer-Encoding:",
				      " ",
				      NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	char *field[7] = {0};
	memcpy(copy, data, size);
	copy[size] = '\0';
	size_t n = 0;
	for (char *p = copy; n < 7 && p <= copy + size; p += strlen(p) + 1)
		field[n++] = p;

	struct deliver_header h = {.name = "X-Fuzz", .value = field[5]};
	struct deliver_email e = {
		.from = field[0],
		.to = field[1],
		.subject = field[2],
		.html = field[3] && field[3][0] ? field[3] : NULL,
		.text = field[4] && field[4][0] ? field[4] : NULL,
		.headers = field[5] ? &h : NULL,
		.nheaders = field[5] ? 1 : 0,
		.list_unsubscribe_url = field[6],
		.one_click = true,
	};
	struct buf out;
	const char *reason = NULL;
	bool bad_rcpt;
	buf_init(&out, 0);
	if (deliver_mime_build(&e, "env.fuzz", "fuzz.example", 0, &out, &reason,
			       &bad_rcpt)) {
		const char *m = buf_str(&out);
		size_t line = 0;
		bool in_headers = true;
		const char *line_start = m;
		for (size_t i = 0; i < out.len; i++) {
			unsigned char c = (unsigned char)m[i];
			if (c >= 0x80 || c == 0)
				abort(); /* 7-bit only */
			if (c == '\r') {
				if (m[i + 1] != '\n')
					abort(); /* bare CR */
				if (in_headers) {
					if (line == 0) {
						in_headers = false;
					} else {
						bool ok = false;
						for (const char *const *a = allowed; *a;
						     a++)
							ok = ok ||
							     strncmp(line_start, *a,
								     strlen(*a)) == 0;
						if (!ok)
							abort(); /* a header we did not
								    write */
					}
				}
				i++;
				line = 0;
				line_start = m + i + 1;
				continue;
			}
			if (c == '\n')
				abort(); /* bare LF */
			if (++line > 998)
				abort();
		}
	} else if (!reason) {
		abort();
	}
	buf_fini(&out);

	if (field[3] && deliver_utf8_valid(field[3], true)) {
		struct buf text;
		buf_init(&text, 0);
		deliver_html_to_text(field[3], strlen(field[3]), &text);
		if (!deliver_utf8_valid(buf_str(&text), true))
			abort();
		buf_fini(&text);
	}
	free(copy);
	return 0;
}
