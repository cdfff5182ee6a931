/*
 * smtp.c -- email through an SMTP relay with libcurl.
 *
 * Design: the message is built once when the request is accepted (mime.c) and
 * uploaded by every attempt. Attempts run on the delivery thread's curl multi
 * like webhooks, queued under the relay's key with at most `connections` at
 * once; curl keeps each SMTP connection open in the multi's pool after a
 * transfer (no QUIT until it is closed), so consecutive messages reuse the
 * same few connections and skip the greeting and EHLO (measured by the
 * outcome's `connections` and bench/bench_channels.sh).
 *
 * Outcomes: the SMTP dialogue is watched through curl's debug callback, which
 * sees every command and reply, so we know at which stage a reply came and
 * what it said:
 *   - 2xx at the end of DATA: OK (delivered to the relay); the queue id, when
 *     the reply names one ("queued as X", "id=X"), is the provider id;
 *   - 4xx anywhere (greeting, EHLO, AUTH, MAIL, RCPT, DATA): TEMPFAIL, retried
 *     with backoff like webhooks;
 *   - 5xx at RCPT or DATA: PERMFAIL with invalid_recipient (a hard bounce:
 *     the engine suppresses the address);
 *   - 5xx at MAIL: PERMFAIL (the sender is refused; the recipient is not at
 *     fault, so no suppression) -- except 530, "authentication required",
 *     a configuration problem: TEMPFAIL;
 *   - 5xx before that (greeting, EHLO, STARTTLS, AUTH) and connection
 *     failures or timeouts: TEMPFAIL -- a relay or configuration problem that
 *     an operator can fix before the envelope expires, never the recipient's.
 *
 * References: RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 8314 (implicit TLS).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

bool deliver_email_prepare(const struct deliver_channels *ch,
			   const struct deliver_request *req, int64_t now_ms,
			   struct deliver_prep *p, const char **reason, bool *bad_rcpt)
{
	struct deliver_addr from, to;
	char line[300];
	*bad_rcpt = false;
	if (!req->email) {
		*reason = "missing email";
		return false;
	}
	if (!ch->smtp_host) {
		*reason = "email not configured";
		return false;
	}
	if (!deliver_mime_build(req->email, req->envelope_id, ch->smtp_helo, now_ms,
				&p->body, reason, bad_rcpt))
		return false;
	/* both parsed fine inside deliver_mime_build */
	deliver_addr_parse(req->email->from, &from);
	deliver_addr_parse(req->email->to, &to);
	snprintf(line, sizeof(line), "<%s>", from.addr);
	p->mail_from = xstrdup(line);
	snprintf(line, sizeof(line), "<%s>", to.addr);
	p->rcpt = xstrdup(line);
	p->envelope_id = req->envelope_id;
	p->url = ch->smtp_url;
	p->origin = ch->smtp_origin;
	return true;
}

static size_t on_read(char *dst, size_t size, size_t n, void *ud)
{
	struct deliver_prep *p = ud;
	size_t room = size * n, left = p->body.len - p->read_off;
	size_t take = left < room ? left : room;
	memcpy(dst, p->body.data + p->read_off, take);
	p->read_off += take;
	return take;
}

static const char *const verbs[] = {"EHLO", "HELO", "STARTTLS", "AUTH", "MAIL",
				    "RCPT", "DATA", "RSET",	"QUIT", NULL};

/* Follows the dialogue: the last command verb sent, the last reply line. */
static int on_debug(CURL *e, curl_infotype type, char *data, size_t size, void *ud)
{
	struct deliver_prep *p = ud;
	/* after a refusal curl closes with QUIT; its "221 Bye" is not news */
	if (p->quit)
		return 0;
	if (type == CURLINFO_HEADER_OUT) {
		for (const char *const *v = verbs; *v; v++) {
			size_t vl = strlen(*v);
			if (size >= vl && strncasecmp(data, *v, vl) == 0 &&
			    (size == vl || data[vl] == ' ' || data[vl] == '\r')) {
				if (strcmp(*v, "QUIT") == 0)
					p->quit = true;
				else
					snprintf(p->verb, sizeof(p->verb), "%s", *v);
				break;
			}
		}
	} else if (type == CURLINFO_HEADER_IN) {
		size_t n = size;
		while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
			n--;
		if (n >= sizeof(p->reply))
			n = sizeof(p->reply) - 1;
		memcpy(p->reply, data, n);
		p->reply[n] = '\0';
		for (size_t i = 0; i < n; i++) /* never log what the relay sends raw */
			if ((unsigned char)p->reply[i] < 0x20 || p->reply[i] == 0x7f)
				p->reply[i] = ' ';
		if (strcmp(p->verb, "DATA") == 0 && n >= 3 && memcmp(data, "354", 3) == 0)
			p->queued = true; /* the next reply answers the message */
	}
	return 0;
}

struct curl_slist *deliver_email_setup(const struct deliver_channels *ch, CURL *e,
				       struct deliver_prep *p)
{
	struct curl_slist *rcpt = curl_slist_append(NULL, p->rcpt);
	if (!rcpt)
		abort();
	p->read_off = 0;
	p->verb[0] = p->reply[0] = '\0';
	p->queued = p->quit = false;
	curl_easy_setopt(e, CURLOPT_URL, ch->smtp_url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, p->mail_from);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(e, CURLOPT_READDATA, p);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)p->body.len);
	curl_easy_setopt(e, CURLOPT_USE_SSL,
			 ch->smtp_tls == DELIVER_TLS_NONE ? (long)CURLUSESSL_NONE
							  : (long)CURLUSESSL_ALL);
	if (ch->smtp_ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, ch->smtp_ca_file);
	if (ch->smtp_username) {
		curl_easy_setopt(e, CURLOPT_USERNAME, ch->smtp_username);
		curl_easy_setopt(e, CURLOPT_PASSWORD,
				 ch->smtp_password ? ch->smtp_password : "");
	}
	curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(e, CURLOPT_DEBUGDATA, p);
	return rcpt;
}

/* The relay's queue id from a final reply, when it gives one. */
static void queue_id(const char *reply, char *out, size_t n)
{
	const char *p = strstr(reply, "queued as ");
	if (p)
		p += 10;
	else if ((p = strstr(reply, "id=")))
		p += 3;
	if (!p)
		return;
	size_t len = 0;
	while (p[len] && (isalnum((unsigned char)p[len]) || strchr("-._@", p[len])))
		len++;
	if (len > 0 && len < n)
		snprintf(out, n, "%.*s", (int)len, p);
}

/* The reply text after its code ("550 5.1.1 no such user" -> "5.1.1 no such
 * user"). */
static const char *reply_text(const char *reply)
{
	return strlen(reply) > 4 ? reply + 4 : "";
}

void deliver_email_verdict(CURLcode res, long code, const struct deliver_prep *p,
			   const char *errbuf, struct deliver_verdict *v)
{
	const char *stage = p->queued ? "DATA" : p->verb[0] ? p->verb : "connect";
	memset(v, 0, sizeof(*v));
	/* the last reply seen is exact; curl's code may be an earlier one
	 * (334 during AUTH LOGIN) */
	if (strlen(p->reply) >= 3 && isdigit((unsigned char)p->reply[0]))
		code = strtol(p->reply, NULL, 10);

	if (res == CURLE_OK) {
		v->result = DELIVER_OK;
		snprintf(v->reason, sizeof(v->reason), "SMTP %ld", code);
		queue_id(p->reply, v->provider_id, sizeof(v->provider_id));
		return;
	}
	if (res == CURLE_OPERATION_TIMEDOUT) {
		v->result = DELIVER_TEMPFAIL;
		snprintf(v->reason, sizeof(v->reason), "timeout at %s", stage);
		return;
	}
	if (code >= 400 && code <= 599) {
		snprintf(v->reason, sizeof(v->reason), "SMTP %ld at %s: %s", code, stage,
			 reply_text(p->reply));
		if (code < 500 || code == 530) {
			/* 530: authentication (or STARTTLS) required, given at
			 * MAIL -- the configuration's fault, not the message's */
			v->result = DELIVER_TEMPFAIL;
		} else if (strcmp(stage, "RCPT") == 0 || strcmp(stage, "DATA") == 0) {
			v->result = DELIVER_PERMFAIL;
			v->invalid_recipient = true;
		} else if (strcmp(stage, "MAIL") == 0) {
			v->result = DELIVER_PERMFAIL;
		} else {
			v->result = DELIVER_TEMPFAIL;
		}
		return;
	}
	v->result = DELIVER_TEMPFAIL;
	snprintf(v->reason, sizeof(v->reason), "%s",
		 errbuf && errbuf[0] ? errbuf : curl_easy_strerror(res));
}
