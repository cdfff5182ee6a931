/*
 * cmd_sink.c -- `nudge sink --http PORT --smtp PORT`: a webhook and email
 * catcher for development.
 *
 * Design: the smallest receiver that shows what nudge sends. It serves HTTP
 * with nudge's own server module (src/ingest/http.h) on 127.0.0.1 (or
 * --listen HOST:PORT) and prints every request to stdout -- time, method,
 * path, the Idempotency-Key and X-Nudge-Signature headers, the body
 * pretty-printed when it is JSON -- flushing after each, so it can be piped
 * or watched from a test. It answers 200 {"ok":true}; --fail-first N answers
 * the first N requests 503 (with Retry-After: 1) and --status CODE answers
 * every request CODE, to watch nudge retry or give up. With --secret S each
 * signature is checked and marked (valid) or (INVALID).
 *
 * With --smtp PORT it also speaks just enough SMTP (RFC 5321: HELO/EHLO,
 * MAIL, RCPT, DATA, RSET, NOOP, QUIT; no AUTH, no TLS) on the same host to
 * take the emails nudge sends, and prints each one: the envelope, the main
 * headers (encoded-words decoded), the text part (quoted-printable or base64
 * decoded) and the links of the HTML part -- so the quick start can show a
 * real email with no other software. Everything a client sends is bounded
 * (line length, message size, recipients, connections); it is a development
 * tool, not a mail server: it accepts everything and delivers nothing.
 *
 * The first line on stdout is "listening on http://HOST:PORT" (PORT 0 picks a
 * free port and this line names it), then "listening on smtp://HOST:PORT"
 * when --smtp is given (only that line with --smtp alone). SIGINT/SIGTERM
 * stop it; exit status 0, or 2 on bad usage or when it cannot listen.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <uv.h>

#include "app/cmd.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/mem.h"
#include "deliver/deliver.h"
#include "ingest/http.h"

struct smtp_conn;

struct sink {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm;
	struct http_server *srv; /* or NULL without --http */
	uv_tcp_t smtp;		 /* the SMTP listener, with --smtp */
	bool smtp_open;
	struct smtp_conn *conns;
	unsigned nconns;
	unsigned fail_first;
	int status;
	const char *secret;
	unsigned long count;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: nudge sink [--http PORT | --listen HOST:PORT] [--smtp PORT] "
		"[--fail-first N] [--status CODE] [--secret S]\n");
}
/* ---- the SMTP catcher ---- */

#define SMTP_MAX_LINE	 1000	     /* RFC 5321 §4.5.3.1.6, CRLF included */
#define SMTP_MAX_MESSAGE (10u << 20) /* bytes of DATA */
#define SMTP_MAX_RCPTS	 100
#define SMTP_MAX_CONNS	 64

enum smtp_state { SMTP_CMD, SMTP_DATA };

struct smtp_conn {
	uv_tcp_t tcp;
	struct sink *s;
	struct smtp_conn *next, **prev;
	enum smtp_state state;
	struct buf line;    /* the line being received */
	bool line_too_long; /* discard up to the next LF */
	struct buf msg;	    /* DATA */
	bool msg_too_big;
	char *mail_from;
	struct buf rcpts; /* ", "-separated */
	unsigned nrcpts;
	bool closing;
};

static void smtp_written(uv_write_t *w, int status)
{
	free(w);
}

static void smtp_reply(struct smtp_conn *c, const char *text)
{
	if (c->closing)
		return;
	size_t n = strlen(text);
	uv_write_t *w = malloc(sizeof(*w) + n);
	if (!w)
		abort();
	char *data = (char *)(w + 1);
	memcpy(data, text, n);
	uv_buf_t b = uv_buf_init(data, (unsigned)n);
	if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, smtp_written) != 0)
		free(w);
}

static void smtp_conn_closed(uv_handle_t *h)
{
	struct smtp_conn *c = h->data;
	buf_fini(&c->line);
	buf_fini(&c->msg);
	buf_fini(&c->rcpts);
	free(c->mail_from);
	free(c);
}

static void smtp_close(struct smtp_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	*c->prev = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->s->nconns--;
	uv_close((uv_handle_t *)&c->tcp, smtp_conn_closed);
}

static void smtp_reset(struct smtp_conn *c)
{
	free(c->mail_from);
	c->mail_from = NULL;
	buf_reset(&c->rcpts);
	c->nrcpts = 0;
	buf_reset(&c->msg);
	c->msg_too_big = false;
}

/* The address inside "FROM:<a>" / "TO:<a>"; NULL when malformed. */
static char *smtp_path(const char *arg, const char *prefix)
{
	size_t pl = strlen(prefix);
	if (strncasecmp(arg, prefix, pl) != 0)
		return NULL;
	arg += pl;
	while (*arg == ' ')
		arg++;
	if (*arg != '<')
		return NULL;
	const char *end = strchr(arg, '>');
	if (!end)
		return NULL;
	return xstrndup(arg + 1, (size_t)(end - arg - 1));
}

/* Header value of name in a header block (unfolded, first one); NULL if
 * absent. The caller frees it. */
static char *mail_header(const char *hdrs, size_t len, const char *name)
{
	size_t nl = strlen(name);
	const char *p = hdrs, *end = hdrs + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *next = eol ? eol + 1 : end;
		if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0 &&
		    p[nl] == ':') {
			struct buf v;
			buf_init(&v, 0);
			const char *q = p + nl + 1;
			for (;;) {
				const char *e = memchr(q, '\n', (size_t)(end - q));
				const char *stop = e ? e : end;
				while (q < stop && (*q == ' ' || *q == '\t') &&
				       v.len == 0)
					q++;
				size_t n = (size_t)(stop - q);
				if (n > 0 && q[n - 1] == '\r')
					n--;
				buf_append(&v, q, n);
				if (!e || e + 1 >= end || (e[1] != ' ' && e[1] != '\t'))
					break;
				q = e + 1; /* folded: the white space stays */
			}
			char *r = buf_take(&v);
			return r ? r : xstrdup("");
		}
		p = next;
	}
	return NULL;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static void base64_decode(const char *s, size_t len, struct buf *out)
{
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_val(s[i]);
		if (v < 0)
			continue;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_putc(out, (char)((acc >> bits) & 0xff));
		}
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Quoted-printable; q_header: '_' is a space (RFC 2047 "Q"). */
static void qp_decode(const char *s, size_t len, struct buf *out, bool q_header)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
		    hexval(s[i + 2]) >= 0) {
			buf_putc(out, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
			i += 2;
		} else if (s[i] == '=' && i + 1 < len &&
			   (s[i + 1] == '\r' || s[i + 1] == '\n')) {
			i += s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n' ? 2 : 1;
		} else if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
			continue; /* CRLF -> LF */
		} else if (q_header && s[i] == '_') {
			buf_putc(out, ' ');
		} else {
			buf_putc(out, s[i]);
		}
	}
}

/* RFC 2047: decodes the encoded-words of a header value (white space between
 * two of them dropped). */
static char *decode_words(const char *v)
{
	struct buf out;
	buf_init(&out, 0);
	const char *p = v;
	bool last_word = false;
	while (*p) {
		const char *start = strstr(p, "=?");
		const char *q1 = start ? strchr(start + 2, '?') : NULL;
		const char *q2 = q1 && q1[1] && q1[2] == '?' ? q1 + 2 : NULL;
		const char *end = q2 ? strstr(q2 + 1, "?=") : NULL;
		if (!end) {
			buf_puts(&out, p);
			break;
		}
		/* text between words: dropped when it is only white space */
		size_t gap = (size_t)(start - p);
		if (!(last_word && strspn(p, " \t") >= gap))
			buf_append(&out, p, gap);
		char enc = q1[1];
		if (enc == 'B' || enc == 'b')
			base64_decode(q2 + 1, (size_t)(end - q2 - 1), &out);
		else if (enc == 'Q' || enc == 'q')
			qp_decode(q2 + 1, (size_t)(end - q2 - 1), &out, true);
		else
			buf_append(&out, start, (size_t)(end + 2 - start));
		last_word = true;
		p = end + 2;
	}
	char *r = buf_take(&out);
	return r ? r : xstrdup("");
}

/* Prints every control character as '?': the terminal is not the sender's. */
static void print_clean(const char *label, const char *s)
{
	printf("%s", label);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		putchar(*p < 0x20 && *p != '\n' && *p != '\t' ? '?'
			: *p == 0x7f			      ? '?'
							      : *p);
	putchar('\n');
}

struct mail_parts {
	struct buf text, html;
	bool have_text, have_html;
};

/* The parameter of a Content-Type value ("boundary"), unquoted; NULL. */
static char *ct_param(const char *ct, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
		const char *q = p + 1;
		while (*q == ' ' || *q == '\t')
			q++;
		if (strncasecmp(q, name, nl) == 0 && q[nl] == '=') {
			q += nl + 1;
			if (*q == '"') {
				const char *e = strchr(q + 1, '"');
				return e ? xstrndup(q + 1, (size_t)(e - q - 1)) : NULL;
			}
			return xstrndup(q, strcspn(q, "; \t"));
		}
	}
	return NULL;
}

/* Walks one MIME entity (headers + body) and keeps the first text/plain and
 * text/html leaves, decoded. */
static void walk_entity(const char *data, size_t len, struct mail_parts *mp, int depth)
{
	const char *sep = memmem(data, len, "\r\n\r\n", 4);
	size_t hl = sep ? (size_t)(sep - data) + 2 : len;
	const char *body = sep ? sep + 4 : data + len;
	size_t bl = (size_t)(data + len - body);
	char *ct = mail_header(data, hl, "Content-Type");
	char *cte = mail_header(data, hl, "Content-Transfer-Encoding");
	const char *type = ct ? ct : "text/plain";

	if (strncasecmp(type, "multipart/", 10) == 0 && depth < 4) {
		char *b = ct_param(type, "boundary");
		if (b && b[0]) {
			char delim[256];
			snprintf(delim, sizeof(delim), "\r\n--%s", b);
			size_t dl = strlen(delim);
			/* the first delimiter may open the body without a CRLF */
			const char *p = body, *end = body + bl;
			const char *d =
				bl >= dl - 2 && memcmp(body, delim + 2, dl - 2) == 0
					? body - 2
					: memmem(p, (size_t)(end - p), delim, dl);
			while (d) {
				const char *part = d + dl;
				if (end - part >= 2 && part[0] == '-' && part[1] == '-')
					break;
				const char *eol =
					memchr(part, '\n', (size_t)(end - part));
				if (!eol)
					break;
				part = eol + 1;
				const char *next =
					memmem(part, (size_t)(end - part), delim, dl);
				walk_entity(part, (size_t)((next ? next : end) - part),
					    mp, depth + 1);
				d = next;
			}
		}
		free(b);
	} else {
		bool is_text = strncasecmp(type, "text/plain", 10) == 0;
		bool is_html = strncasecmp(type, "text/html", 9) == 0;
		struct buf *dst = is_text && !mp->have_text   ? &mp->text
				  : is_html && !mp->have_html ? &mp->html
							      : NULL;
		if (dst) {
			if (cte && strcasecmp(cte, "quoted-printable") == 0) {
				qp_decode(body, bl, dst, false);
			} else if (cte && strcasecmp(cte, "base64") == 0) {
				base64_decode(body, bl, dst);
			} else {
				for (size_t i = 0; i < bl; i++)
					if (!(body[i] == '\r' && i + 1 < bl &&
					      body[i + 1] == '\n'))
						buf_putc(dst, body[i]);
			}
			if (is_text)
				mp->have_text = true;
			else
				mp->have_html = true;
		}
	}
	free(ct);
	free(cte);
}

/* Prints the href of every <a> in html, entity &amp; decoded. */
static void print_links(const char *html)
{
	unsigned n = 0;
	for (const char *p = html; (p = strcasestr(p, "href")); p += 4) {
		if (p > html && !strchr(" \t\r\n\"'", p[-1]))
			continue;
		const char *q = p + 4;
		while (*q == ' ')
			q++;
		if (*q != '=')
			continue;
		q++;
		while (*q == ' ')
			q++;
		char quote = (*q == '"' || *q == '\'') ? *q++ : 0;
		size_t len = quote ? strcspn(q, quote == '"' ? "\"" : "'")
				   : strcspn(q, " >\t\r\n");
		struct buf u;
		buf_init(&u, 0);
		for (size_t i = 0; i < len; i++) {
			if (q[i] == '&' && strncmp(q + i, "&amp;", 5) == 0) {
				buf_putc(&u, '&');
				i += 4;
			} else {
				buf_putc(&u, q[i]);
			}
		}
		if (n++ == 0)
			printf("Links:\n");
		print_clean("  ", buf_str(&u));
		buf_fini(&u);
	}
}

static void smtp_print(struct smtp_conn *c)
{
	struct sink *s = c->s;
	char when[32];
	const char *m = buf_str(&c->msg);
	size_t len = c->msg.len;
	const char *sep = memmem(m, len, "\r\n\r\n", 4);
	size_t hl = sep ? (size_t)(sep - m) + 2 : len;
	static const char *const shown[] = {
		"From", "To",	      "Reply-To",	  "Subject",
		"Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
		NULL};
	s->count++;
	clock_format_rfc3339(clock_wall_ms(), when);
	printf("--- email #%lu %s\n", s->count, when);
	print_clean("Envelope-From: ", c->mail_from ? c->mail_from : "");
	print_clean("Envelope-To: ", buf_str(&c->rcpts));
	for (const char *const *h = shown; *h; h++) {
		char *v = mail_header(m, hl, *h);
		if (!v)
			continue;
		char *d = decode_words(v);
		char label[64];
		snprintf(label, sizeof(label), "%s: ", *h);
		print_clean(label, d);
		free(d);
		free(v);
	}
	struct mail_parts mp;
	buf_init(&mp.text, 1 << 20);
	buf_init(&mp.html, 4 << 20);
	mp.have_text = mp.have_html = false;
	walk_entity(m, len, &mp, 0);
	if (mp.have_text) {
		printf("\n");
		print_clean("", buf_str(&mp.text));
	}
	if (mp.have_html)
		print_links(buf_str(&mp.html));
	printf("=> 250\n");
	fflush(stdout);
	buf_fini(&mp.text);
	buf_fini(&mp.html);
}

static void smtp_command(struct smtp_conn *c, char *line)
{
	char *arg = line + strcspn(line, " ");
	if (*arg)
		*arg++ = '\0';
	char reply[160];
	if (strcasecmp(line, "EHLO") == 0) {
		smtp_reset(c);
		snprintf(reply, sizeof(reply),
			 "250-nudge sink\r\n250-8BITMIME\r\n250-SIZE %u\r\n250 "
			 "PIPELINING\r\n",
			 SMTP_MAX_MESSAGE);
		smtp_reply(c, reply);
	} else if (strcasecmp(line, "HELO") == 0) {
		smtp_reset(c);
		smtp_reply(c, "250 nudge sink\r\n");
	} else if (strcasecmp(line, "MAIL") == 0) {
		char *a = smtp_path(arg, "FROM:");
		if (!a) {
			smtp_reply(c, "501 5.5.4 syntax: MAIL FROM:<address>\r\n");
			return;
		}
		smtp_reset(c);
		c->mail_from = a;
		smtp_reply(c, "250 2.1.0 OK\r\n");
	} else if (strcasecmp(line, "RCPT") == 0) {
		char *a = smtp_path(arg, "TO:");
		if (!c->mail_from) {
			smtp_reply(c, "503 5.5.1 MAIL first\r\n");
		} else if (!a) {
			smtp_reply(c, "501 5.5.4 syntax: RCPT TO:<address>\r\n");
		} else if (c->nrcpts >= SMTP_MAX_RCPTS) {
			smtp_reply(c, "452 4.5.3 too many recipients\r\n");
		} else {
			buf_printf(&c->rcpts, "%s%s", c->nrcpts ? ", " : "", a);
			c->nrcpts++;
			smtp_reply(c, "250 2.1.5 OK\r\n");
		}
		free(a);
	} else if (strcasecmp(line, "DATA") == 0) {
		if (!c->nrcpts) {
			smtp_reply(c, "503 5.5.1 RCPT first\r\n");
			return;
		}
		c->state = SMTP_DATA;
		buf_reset(&c->msg);
		smtp_reply(c, "354 end with <CRLF>.<CRLF>\r\n");
	} else if (strcasecmp(line, "RSET") == 0) {
		smtp_reset(c);
		smtp_reply(c, "250 2.0.0 OK\r\n");
	} else if (strcasecmp(line, "NOOP") == 0) {
		smtp_reply(c, "250 2.0.0 OK\r\n");
	} else if (strcasecmp(line, "QUIT") == 0) {
		smtp_reply(c, "221 2.0.0 bye\r\n");
		smtp_close(c);
	} else {
		smtp_reply(c, "502 5.5.2 not implemented\r\n");
	}
}

/* One complete line (without CRLF). */
static void smtp_line(struct smtp_conn *c, char *line, size_t n)
{
	if (c->state == SMTP_CMD) {
		smtp_command(c, line);
		return;
	}
	if (n == 1 && line[0] == '.') {
		char reply[64];
		c->state = SMTP_CMD;
		if (c->msg_too_big) {
			smtp_reply(c, "552 5.3.4 message too big\r\n");
		} else {
			smtp_print(c);
			snprintf(reply, sizeof(reply), "250 2.0.0 OK: queued as S%lu\r\n",
				 c->s->count);
			smtp_reply(c, reply);
		}
		smtp_reset(c);
		return;
	}
	if (line[0] == '.') { /* dot-stuffing */
		line++;
		n--;
	}
	if (c->msg_too_big || c->msg.len + n + 2 > SMTP_MAX_MESSAGE) {
		c->msg_too_big = true;
		return;
	}
	buf_append(&c->msg, line, n);
	buf_puts(&c->msg, "\r\n");
}

static void smtp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char slab[65536]; /* one loop thread: reads never overlap */
	b->base = slab;
	b->len = sizeof(slab);
}

static void smtp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct smtp_conn *c = st->data;
	if (nread < 0) {
		smtp_close(c);
		return;
	}
	for (ssize_t i = 0; i < nread && !c->closing; i++) {
		char ch = b->base[i];
		if (ch == '\n') {
			if (c->line_too_long) {
				c->line_too_long = false;
				if (c->state == SMTP_CMD)
					smtp_reply(c, "500 5.5.6 line too long\r\n");
				else
					c->msg_too_big = true;
			} else {
				size_t n = c->line.len;
				if (n > 0 && c->line.data[n - 1] == '\r')
					n--;
				buf_putc(&c->line, '\0'); /* room for the NUL */
				c->line.data[n] = '\0';
				smtp_line(c, c->line.data, n);
			}
			buf_reset(&c->line);
		} else if (c->line.len >= SMTP_MAX_LINE) {
			c->line_too_long = true;
		} else if (!c->line_too_long) {
			buf_putc(&c->line, ch);
		}
	}
}

static void smtp_on_connection(uv_stream_t *server, int status)
{
	struct sink *s = server->data;
	if (status < 0)
		return;
	struct smtp_conn *c = xcalloc(1, sizeof(*c));
	c->s = s;
	buf_init(&c->line, 0);
	buf_init(&c->msg, 0);
	buf_init(&c->rcpts, 0);
	uv_tcp_init(&s->loop, &c->tcp);
	c->tcp.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = &c->next;
	c->prev = &s->conns;
	s->conns = c;
	s->nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		smtp_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1); /* small replies, each awaited by the client */
	if (s->nconns > SMTP_MAX_CONNS) {
		smtp_reply(c, "421 4.3.2 too many connections\r\n");
		smtp_close(c);
		return;
	}
	smtp_reply(c, "220 nudge sink ESMTP (development only)\r\n");
	uv_read_start((uv_stream_t *)&c->tcp, smtp_alloc, smtp_read);
}

static int smtp_listen(struct sink *s, const char *host, int port, int *bound)
{
	struct sockaddr_storage ss;
	int rc;
	if (strchr(host, ':'))
		rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
	else
		rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
	if (rc != 0)
		return rc;
	uv_tcp_init(&s->loop, &s->smtp);
	s->smtp.data = s;
	s->smtp_open = true;
	if ((rc = uv_tcp_bind(&s->smtp, (struct sockaddr *)&ss, 0)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&s->smtp, 64, smtp_on_connection)) != 0)
		return rc;
	int len = sizeof(ss);
	uv_tcp_getsockname(&s->smtp, (struct sockaddr *)&ss, &len);
	*bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
					  : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void smtp_shutdown(struct sink *s)
{
	while (s->conns)
		smtp_close(s->conns);
	if (s->smtp_open && !uv_is_closing((uv_handle_t *)&s->smtp))
		uv_close((uv_handle_t *)&s->smtp, NULL);
}

/* Checks "t=<sec>,v1=<hex>" against the body the way a receiver would. */
static bool signature_valid(const char *secret, const char *header, const char *body,
			    size_t len)
{
	char expect[DELIVER_SIGNATURE_MAX];
	long long t;
	if (sscanf(header, "t=%lld,", &t) != 1)
		return false;
	deliver_sign(secret, t, body, len, expect);
	return strcmp(expect, header) == 0;
}

static void print_body(const char *body, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *obj = NULL;
	if (len > 0) {
		obj = json_tokener_parse_ex(tok, body, (int)len);
		if (json_tokener_get_error(tok) != json_tokener_success ||
		    json_tokener_get_parse_end(tok) != len) {
			json_object_put(obj);
			obj = NULL;
		}
	}
	json_tokener_free(tok);
	if (obj) {
		printf("%s\n",
		       json_object_to_json_string_ext(
			       obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(obj);
	} else if (len > 0) {
		fwrite(body, 1, len, stdout);
		if (body[len - 1] != '\n')
			putchar('\n');
	}
}

static void on_request(void *ud, struct http_req *req)
{
	struct sink *s = ud;
	char when[32];
	size_t len;
	const char *body = http_req_body(req, &len);
	const char *idem = http_req_header(req, "Idempotency-Key");
	const char *sig = http_req_header(req, "X-Nudge-Signature");
	const char *query = http_req_query(req);
	int status = s->status;

	s->count++;
	clock_format_rfc3339(clock_wall_ms(), when);
	printf("--- #%lu %s %s %s%s%s\n", s->count, when, http_req_method(req),
	       http_req_path(req), query[0] ? "?" : "", query);
	printf("Idempotency-Key: %s\n", idem ? idem : "(none)");
	if (sig && s->secret)
		printf("X-Nudge-Signature: %s (%s)\n", sig,
		       signature_valid(s->secret, sig, body, len) ? "valid" : "INVALID");
	else
		printf("X-Nudge-Signature: %s\n", sig ? sig : "(none)");
	print_body(body, len);

	if (s->fail_first > 0) {
		s->fail_first--;
		status = 503;
	}
	printf("=> %d\n", status);
	fflush(stdout);
	if (status == 503)
		http_respond(req, status, "application/json", "{\"ok\":false}", 12,
			     "Retry-After: 1\r\n");
	else if (status >= 200 && status <= 299)
		http_respond(req, status, "application/json", "{\"ok\":true}", 11, NULL);
	else
		http_respond(req, status, "application/json", "{\"ok\":false}", 12, NULL);
}

static void closed_all(void *ud)
{
	struct sink *s = ud;
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct sink *s = h->data;
	uv_signal_stop(&s->sigint);
	uv_signal_stop(&s->sigterm);
	smtp_shutdown(s);
	if (s->srv)
		http_server_shutdown(s->srv, closed_all, s);
	else
		closed_all(s);
}

static bool parse_uint(const char *text, unsigned long max, unsigned long *out)
{
	char *end;
	if (!text || !*text)
		return false;
	unsigned long v = strtoul(text, &end, 10);
	if (*end || v > max || text[0] == '-')
		return false;
	*out = v;
	return true;
}

int cmd_sink(int argc, char **argv)
{
	struct sink s = {.status = 200};
	char host[128] = "127.0.0.1";
	unsigned long port = 0, smtp_port = 0, v;
	bool have_port = false, have_smtp = false;
	struct nerr_msg msg;
	const char *br1 = "", *br2 = "";

	nerr_clear(&msg);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--http") == 0 && parse_uint(val, 65535, &port)) {
			have_port = true;
			i++;
		} else if (strcmp(a, "--smtp") == 0 &&
			   parse_uint(val, 65535, &smtp_port)) {
			have_smtp = true;
			i++;
		} else if (strcmp(a, "--listen") == 0 && val) {
			const char *colon = strrchr(val, ':');
			size_t hl = colon ? (size_t)(colon - val) : 0;
			if (!colon || hl == 0 || hl >= sizeof(host) ||
			    !parse_uint(colon + 1, 65535, &port)) {
				usage();
				return 2;
			}
			if (val[0] == '[' && hl >= 2 && val[hl - 1] == ']')
				snprintf(host, sizeof(host), "%.*s", (int)(hl - 2),
					 val + 1);
			else
				snprintf(host, sizeof(host), "%.*s", (int)hl, val);
			have_port = true;
			i++;
		} else if (strcmp(a, "--fail-first") == 0 &&
			   parse_uint(val, 1u << 30, &v)) {
			s.fail_first = (unsigned)v;
			i++;
		} else if (strcmp(a, "--status") == 0 && parse_uint(val, 599, &v) &&
			   v >= 200) {
			s.status = (int)v;
			i++;
		} else if (strcmp(a, "--secret") == 0 && val && *val) {
			s.secret = val;
			i++;
		} else {
			usage();
			return 2;
		}
	}
	if (!have_port && !have_smtp) {
		usage();
		return 2;
	}
	if (strchr(host, ':')) {
		br1 = "[";
		br2 = "]";
	}

	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&s.loop);
	if (have_port &&
	    (http_server_new(&s.loop, NULL, on_request, &s, &s.srv) != NERR_OK ||
	     http_server_listen(s.srv, host, (int)port, &msg) != NERR_OK)) {
		fprintf(stderr, "nudge sink: cannot listen on %s:%lu: %s\n", host, port,
			msg.message);
		goto fail;
	}
	int bound = 0, rc = 0;
	if (have_smtp && (rc = smtp_listen(&s, host, (int)smtp_port, &bound)) != 0) {
		fprintf(stderr, "nudge sink: cannot listen on %s:%lu: %s\n", host,
			smtp_port, uv_strerror(rc));
		goto fail;
	}
	if (have_port)
		printf("listening on http://%s%s%s:%d\n", br1, host, br2,
		       http_server_port(s.srv));
	if (have_smtp)
		printf("listening on smtp://%s%s%s:%d\n", br1, host, br2, bound);
	fflush(stdout);

	uv_signal_init(&s.loop, &s.sigint);
	uv_signal_init(&s.loop, &s.sigterm);
	s.sigint.data = s.sigterm.data = &s;
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	if (s.srv)
		http_server_free(s.srv);
	uv_loop_close(&s.loop);
	return 0;

fail:
	smtp_shutdown(&s);
	if (s.srv)
		http_server_shutdown(s.srv, NULL, NULL);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	if (s.srv)
		http_server_free(s.srv);
	uv_loop_close(&s.loop);
	return 2;
}
