/*
 * channels.c -- the configuration of the email, SMS and push transports.
 *
 * Design: deliver_start() copies the [smtp], [sms] and [push] settings here
 * once and derives what every request needs (the relay URL with its EHLO
 * name, the provider endpoints, the queue keys), so a misconfiguration stops
 * startup with the field named instead of failing every message. Each
 * channel has its own queue key ("smtp://host:port", "sms https://...",
 * "push https://...") so its concurrency is counted apart from webhooks that
 * happen to go to the same host. Nothing here is guarded against SSRF: these
 * endpoints come from the operator, not from data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/mem.h"
#include "deliver/deliver_int.h"

bool deliver_e164_valid(const char *s)
{
	if (!s || s[0] != '+' || s[1] < '1' || s[1] > '9')
		return false;
	size_t n = strspn(s + 1, "0123456789");
	return s[1 + n] == '\0' && n >= 7 && n <= 15;
}

void deliver_prep_init(struct deliver_prep *p)
{
	memset(p, 0, sizeof(*p));
	buf_init(&p->body, 0);
}

void deliver_prep_fini(struct deliver_prep *p)
{
	buf_fini(&p->body);
	free(p->mail_from);
	free(p->rcpt);
	p->mail_from = p->rcpt = NULL;
}

static char *dup_or_null(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

static bool printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			return false;
	return true;
}

static bool host_name_ok(const char *s)
{
	if (!s[0] || strlen(s) > 253)
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':' ||
		      c == '_'))
			return false;
	}
	return true;
}

/* base without trailing '/', checked to be http(s) and printable. */
static char *base_url(const char *base)
{
	if (!printable(base) || strchr(base, ' ') ||
	    (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0))
		return NULL;
	char *b = xstrdup(base);
	size_t n = strlen(b);
	while (n > 0 && b[n - 1] == '/')
		b[--n] = '\0';
	return b;
}

static char *escaped(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	if (!e)
		abort();
	char *r = xstrdup(e);
	curl_free(e);
	return r;
}

static enum nerr init_smtp(struct deliver_channels *ch, const struct deliver_config *cfg,
			   struct nerr_msg *msg)
{
	struct buf b;
	if (!cfg->smtp.host || !cfg->smtp.host[0])
		return NERR_OK;
	if (!host_name_ok(cfg->smtp.host))
		return nerr_set(msg, NERR_INVAL, "smtp.host", "invalid host name");
	const char *tls = cfg->smtp.tls && cfg->smtp.tls[0] ? cfg->smtp.tls : "none";
	if (strcmp(tls, "none") == 0)
		ch->smtp_tls = DELIVER_TLS_NONE;
	else if (strcmp(tls, "starttls") == 0)
		ch->smtp_tls = DELIVER_TLS_STARTTLS;
	else if (strcmp(tls, "tls") == 0)
		ch->smtp_tls = DELIVER_TLS_TLS;
	else
		return nerr_set(msg, NERR_INVAL, "smtp.tls",
				"must be none, starttls or tls");
	if (cfg->smtp.port < 0 || cfg->smtp.port > 65535)
		return nerr_set(msg, NERR_INVAL, "smtp.port", "must be 1-65535");
	ch->smtp_port = cfg->smtp.port ? cfg->smtp.port
				       : (ch->smtp_tls == DELIVER_TLS_TLS ? 465 : 25);
	if (cfg->smtp.connections > 256)
		return nerr_set(msg, NERR_INVAL, "smtp.connections", "must be 1-256");
	ch->smtp_connections = cfg->smtp.connections ? cfg->smtp.connections : 4;
	if ((cfg->smtp.username && !printable(cfg->smtp.username)) ||
	    (cfg->smtp.password && !printable(cfg->smtp.password)))
		return nerr_set(msg, NERR_INVAL, "smtp.username",
				"credentials must be printable");
	char host[256] = "localhost";
	if (cfg->smtp.helo && cfg->smtp.helo[0])
		snprintf(host, sizeof(host), "%s", cfg->smtp.helo);
	else if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	if (!host_name_ok(host) || strchr(host, ':'))
		return nerr_set(msg, NERR_INVAL, "smtp.helo", "invalid host name");
	ch->smtp_host = xstrdup(cfg->smtp.host);
	ch->smtp_helo = xstrdup(host);
	ch->smtp_username = dup_or_null(cfg->smtp.username);
	ch->smtp_password = dup_or_null(cfg->smtp.password);
	ch->smtp_ca_file = dup_or_null(cfg->smtp.ca_file);
	ch->smtp_timeout_ms = cfg->smtp.timeout_ms > 0 ? cfg->smtp.timeout_ms : 0;
	bool v6 = strchr(ch->smtp_host, ':') != NULL;
	buf_init(&b, 0);
	buf_printf(&b, "%s://%s%s%s:%d/%s",
		   ch->smtp_tls == DELIVER_TLS_TLS ? "smtps" : "smtp", v6 ? "[" : "",
		   ch->smtp_host, v6 ? "]" : "", ch->smtp_port, ch->smtp_helo);
	ch->smtp_url = buf_take(&b);
	buf_printf(&b, "smtp://%s%s%s:%d", v6 ? "[" : "", ch->smtp_host, v6 ? "]" : "",
		   ch->smtp_port);
	ch->smtp_origin = buf_take(&b);
	buf_fini(&b);
	return NERR_OK;
}

static enum nerr init_sms(struct deliver_channels *ch, const struct deliver_config *cfg,
			  struct nerr_msg *msg)
{
	struct buf b;
	if (!cfg->sms.base_url || !cfg->sms.base_url[0])
		return NERR_OK;
	char *base = base_url(cfg->sms.base_url);
	if (!base)
		return nerr_set(msg, NERR_INVAL, "sms.base_url",
				"must be an http(s) URL");
	if (!cfg->sms.account_sid || !cfg->sms.account_sid[0] || !cfg->sms.auth_token ||
	    !cfg->sms.auth_token[0] || !printable(cfg->sms.account_sid) ||
	    !printable(cfg->sms.auth_token) || strchr(cfg->sms.account_sid, ':')) {
		free(base);
		return nerr_set(msg, NERR_INVAL, "sms.account_sid",
				"account_sid and auth_token are needed");
	}
	if (!cfg->sms.from || !cfg->sms.from[0]) {
		free(base);
		return nerr_set(msg, NERR_INVAL, "sms.from", "a sender is needed");
	}
	char *sid = escaped(cfg->sms.account_sid);
	buf_init(&b, 0);
	buf_printf(&b, "%s/2010-04-01/Accounts/%s/Messages.json", base, sid);
	ch->sms_url = buf_take(&b);
	buf_printf(&b, "sms %s", base);
	ch->sms_origin = buf_take(&b);
	buf_fini(&b);
	free(sid);
	free(base);
	ch->sms_sid = xstrdup(cfg->sms.account_sid);
	ch->sms_token = xstrdup(cfg->sms.auth_token);
	ch->sms_from = xstrdup(cfg->sms.from);
	ch->sms_callback = dup_or_null(cfg->sms.status_callback);
	return NERR_OK;
}

static enum nerr init_push(struct deliver_channels *ch, const struct deliver_config *cfg,
			   struct nerr_msg *msg)
{
	struct buf b;
	if (!cfg->push.base_url || !cfg->push.base_url[0])
		return NERR_OK;
	char *base = base_url(cfg->push.base_url);
	if (!base)
		return nerr_set(msg, NERR_INVAL, "push.base_url",
				"must be an http(s) URL");
	if (!cfg->push.project_id || !cfg->push.project_id[0] ||
	    !cfg->push.bearer_token || !cfg->push.bearer_token[0] ||
	    !printable(cfg->push.bearer_token)) {
		free(base);
		return nerr_set(msg, NERR_INVAL, "push.project_id",
				"project_id and bearer_token are needed");
	}
	char *project = escaped(cfg->push.project_id);
	buf_init(&b, 0);
	buf_printf(&b, "%s/v1/projects/%s/messages:send", base, project);
	ch->push_url = buf_take(&b);
	buf_printf(&b, "push %s", base);
	ch->push_origin = buf_take(&b);
	buf_printf(&b, "Authorization: Bearer %s", cfg->push.bearer_token);
	ch->push_auth = buf_take(&b);
	buf_fini(&b);
	free(project);
	free(base);
	return NERR_OK;
}

enum nerr deliver_channels_init(struct deliver_channels *ch,
				const struct deliver_config *cfg, struct nerr_msg *msg)
{
	enum nerr rc;
	memset(ch, 0, sizeof(*ch));
	ch->smtp_rate_per_s = cfg->smtp.rate_per_s;
	ch->sms_rate_per_s = cfg->sms.rate_per_s;
	ch->push_rate_per_s = cfg->push.rate_per_s;
	rc = init_smtp(ch, cfg, msg);
	if (rc == NERR_OK)
		rc = init_sms(ch, cfg, msg);
	if (rc == NERR_OK)
		rc = init_push(ch, cfg, msg);
	if (rc != NERR_OK)
		deliver_channels_fini(ch);
	return rc;
}

void deliver_channels_fini(struct deliver_channels *ch)
{
	free(ch->smtp_ca_file);
	char *all[] = {ch->smtp_host, ch->smtp_username, ch->smtp_password,
		       ch->smtp_helo, ch->smtp_url,	 ch->smtp_origin,
		       ch->sms_url,   ch->sms_origin,	 ch->sms_sid,
		       ch->sms_token, ch->sms_from,	 ch->sms_callback,
		       ch->push_url,  ch->push_origin,	 ch->push_auth};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		free(all[i]);
	memset(ch, 0, sizeof(*ch));
}
