/*
 * test_mime.c -- the email encodings of src/deliver/mime.c, byte by byte.
 *
 * test_deliver.c sends whole messages to a real SMTP server and reads them
 * back with Python's parser; these tests pin the pieces: quoted-printable,
 * encoded-words, folding, address parsing, HTML to text, and the refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

static char *qp(const char *s)
{
	struct buf b;
	buf_init(&b, 0);
	deliver_qp_encode(s, strlen(s), &b);
	char *r = buf_take(&b);
	return r ? r : xstrdup("");
}

static char *text_of(const char *html)
{
	struct buf b;
	buf_init(&b, 0);
	deliver_html_to_text(html, strlen(html), &b);
	char *r = buf_take(&b);
	return r ? r : xstrdup("");
}

static char *header(const char *name, const char *value)
{
	struct buf b;
	buf_init(&b, 0);
	deliver_header_text(&b, name, value);
	return buf_take(&b);
}

static void quoted_printable_encodes_what_it_must(void **state)
{
	char *s;
	s = qp("plain text\n");
	assert_string_equal(s, "plain text\r\n");
	free(s);
	s = qp("a=b é\r\nx");
	assert_string_equal(s, "a=3Db =C3=A9\r\nx");
	free(s);
	s = qp("trailing  \ntab\t\n");
	assert_string_equal(s, "trailing =20\r\ntab=09\r\n");
	free(s);
	s = qp(".dot\nFrom me\nlone\rcr");
	assert_string_equal(s, "=2Edot\r\n=46rom me\r\nlone=0Dcr");
	free(s);
	/* 100 x 'a': soft break so no line passes 76 characters */
	char in[101];
	memset(in, 'a', 100);
	in[100] = '\0';
	s = qp(in);
	assert_int_equal(strlen(s), 100 + 3);
	assert_memory_equal(s + 75, "=\r\n", 3);
	free(s);
	/* an encoded byte is never split by a soft break */
	char in2[200] = "";
	for (int i = 0; i < 40; i++)
		strcat(in2, "é");
	s = qp(in2);
	for (char *line = s, *end; line; line = end ? end + 2 : NULL) {
		end = strstr(line, "\r\n");
		size_t n = end ? (size_t)(end - line) : strlen(line);
		assert_true(n <= 76);
		if (end) {
			assert_int_equal(line[n - 1], '=');
			assert_true(n < 3 || line[n - 3] != '=' || line[n - 2] == '=');
		}
	}
	free(s);
}

static void headers_use_encoded_words_only_when_needed(void **state)
{
	char *s;
	s = header("Subject", "Hello there");
	assert_string_equal(s, "Subject: Hello there\r\n");
	free(s);
	s = header("Subject", "Grüße");
	assert_string_equal(s, "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n");
	free(s);
	/* text that looks like an encoded-word is encoded, so it reads as typed */
	s = header("Subject", "=?UTF-8?B?SGk=?=");
	assert_string_equal(s, "Subject: =?UTF-8?B?PT9VVEYtOD9CP1NHaz0/PQ==?=\r\n");
	free(s);
	/* long ASCII folds at spaces */
	s = header("Subject", "one two three four five six seven eight nine ten eleven "
			      "twelve thirteen fourteen fifteen");
	assert_string_equal(s,
			    "Subject: one two three four five six seven eight nine ten "
			    "eleven twelve\r\n thirteen fourteen fifteen\r\n");
	free(s);
	/* long UTF-8: several words, each at most 75 characters, never cutting
	 * a character */
	s = header("Subject", "ééééééééééééééééééééééééééééééééééééééééé");
	/* 22 characters (44 bytes) in the first word, 19 in the second */
	assert_string_equal(
		s,
		"Subject: "
		"=?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6k=?="
		"\r\n"
		" =?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6k=?=\r\n");
	free(s);
}

static void addresses_parse_or_are_refused(void **state)
{
	struct deliver_addr a;
	assert_true(deliver_addr_parse("ann@example.org", &a));
	assert_string_equal(a.addr, "ann@example.org");
	assert_string_equal(a.name, "");
	assert_true(deliver_addr_parse("  Ann Lee  <ann@example.org> ", &a));
	assert_string_equal(a.name, "Ann Lee");
	assert_string_equal(a.addr, "ann@example.org");
	assert_true(deliver_addr_parse("\"Lee, Ann \\\"A\\\"\" <ann@example.org>", &a));
	assert_string_equal(a.name, "Lee, Ann \"A\"");
	assert_true(deliver_addr_parse("Zoë <z@[127.0.0.1]>", &a));
	static const char *bad[] = {"",
				    "ann",
				    "@example.org",
				    "ann@",
				    "ann@@example.org",
				    "a nn@example.org",
				    "ann@exa mple.org",
				    "ann@example.org\r\nBcc: x@y.z",
				    "Ann <ann@example.org",
				    "Ann <ann@example.org> trailing",
				    "Ann <>",
				    "ännä@example.org",
				    ".ann@example.org",
				    "an..n@example.org",
				    "ann@example..org",
				    "Ann\t<ann@example.org>"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (deliver_addr_parse(bad[i], &a))
			fail_msg("'%s' accepted", bad[i]);
}

static void html_becomes_readable_text(void **state)
{
	char *s;
	s = text_of("<p>Hello&nbsp;<b>World</b></p><p>Second &amp; last</p>");
	assert_string_equal(s, "Hello World\n\nSecond & last\n");
	free(s);
	s = text_of("<a href=\"https://x.example/a?b=1&amp;c=2\">Shop now</a> or "
		    "<a href='https://y.example/'>https://y.example/</a>");
	assert_string_equal(
		s, "Shop now (https://x.example/a?b=1&c=2) or https://y.example/\n");
	free(s);
	s = text_of("<head><title>T</title><style>p{}</style></head><script>x<y</script>"
		    "<!-- <p>no</p> -->Line<br>two<br/>three");
	assert_string_equal(s, "Line\ntwo\nthree\n");
	free(s);
	s = text_of("<ul><li>A</li><li>B &#233;&#xE9;&eacute; &euro;</li></ul>"
		    "<table><tr><td>x</td><td>y</td></tr></table>1 &lt; 2");
	assert_string_equal(s, "- A\n- B ééé €\n\nx y\n\n1 < 2\n");
	free(s);
	s = text_of("<img src=x alt=\"Logo\"> a < b, <a href=\"#top\">top</a> "
		    "<a href=\"javascript:alert(1)\">js</a>");
	assert_string_equal(s, "Logo a < b, top js\n");
	free(s);
	s = text_of("   ");
	assert_string_equal(s, "");
	free(s);
}

static struct deliver_email *email(void)
{
	struct deliver_email *e = xcalloc(1, sizeof(*e));
	e->from = xstrdup("Shop <shop@example.com>");
	e->to = xstrdup("ann@example.org");
	e->subject = xstrdup("Hi");
	e->text = xstrdup("Body");
	return e;
}

static void email_free(struct deliver_email *e)
{
	free(e->from);
	free(e->to);
	free(e->subject);
	free(e->text);
	free(e->html);
	free(e->list_unsubscribe_url);
	for (unsigned i = 0; i < e->nheaders; i++) {
		free(e->headers[i].name);
		free(e->headers[i].value);
	}
	free(e->headers);
	free(e);
}

static const char *build(struct deliver_email *e, const char *id, struct buf *out,
			 bool *bad_rcpt)
{
	const char *reason = NULL;
	buf_reset(out);
	if (!deliver_mime_build(e, id, "mail.example", 1795089600000, out, &reason,
				bad_rcpt))
		return reason;
	return NULL;
}

static void message_headers_and_refusals(void **state)
{
	struct deliver_email *e = email();
	struct buf out;
	bool bad;
	buf_init(&out, 0);
	assert_null(build(e, "j1.s2.v3", &out, &bad));
	assert_string_equal(buf_str(&out),
			    "Date: Thu, 19 Nov 2026 12:00:00 +0000\r\n"
			    "From: Shop <shop@example.com>\r\n"
			    "To: ann@example.org\r\n"
			    "Subject: Hi\r\n"
			    "Message-ID: <j1.s2.v3@mail.example>\r\n"
			    "MIME-Version: 1.0\r\n"
			    "Content-Type: text/plain; charset=utf-8\r\n"
			    "Content-Transfer-Encoding: quoted-printable\r\n"
			    "\r\n"
			    "Body\r\n");
	/* ids that are not dot-atom text stay distinct */
	assert_null(build(e, "a b/.x.", &out, &bad));
	assert_non_null(
		strstr(buf_str(&out), "Message-ID: <a%20b/.x%2E@mail.example>\r\n"));

	free(e->subject);
	e->subject = xstrdup("Hi\nBcc: x@y.z");
	assert_string_equal(build(e, "x", &out, &bad), "invalid header");
	assert_false(bad);
	free(e->subject);
	e->subject = xstrdup("bad \xc3\x28 utf8");
	assert_string_equal(build(e, "x", &out, &bad), "invalid UTF-8");
	free(e->subject);
	e->subject = xstrdup("ok");
	free(e->text);
	e->text = NULL;
	assert_string_equal(build(e, "x", &out, &bad), "email has no body");
	e->text = xstrdup("b");
	e->list_unsubscribe_url = xstrdup("javascript:alert(1)");
	assert_string_equal(build(e, "x", &out, &bad), "invalid unsubscribe url");
	free(e->list_unsubscribe_url);
	e->list_unsubscribe_url = NULL;
	e->headers = xcalloc(1, sizeof(*e->headers));
	e->nheaders = 1;
	e->headers[0].name = xstrdup("content-type");
	e->headers[0].value = xstrdup("text/html");
	assert_string_equal(build(e, "x", &out, &bad), "header not allowed");
	free(e->headers[0].name);
	e->headers[0].name = xstrdup("X-Type");
	assert_null(build(e, "x", &out, &bad));
	assert_non_null(strstr(buf_str(&out), "\r\nX-Type: text/html\r\n"));
	free(e->to);
	e->to = xstrdup("nobody");
	assert_string_equal(build(e, "x", &out, &bad), "invalid recipient address");
	assert_true(bad);
	buf_fini(&out);
	email_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(quoted_printable_encodes_what_it_must),
		cmocka_unit_test(headers_use_encoded_words_only_when_needed),
		cmocka_unit_test(addresses_parse_or_are_refused),
		cmocka_unit_test(html_becomes_readable_text),
		cmocka_unit_test(message_headers_and_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
