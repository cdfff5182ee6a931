/*
 * deliver.h -- the delivery thread and its transports: webhook, email (SMTP),
 * SMS and push.
 *
 * Design: one thread with its own libuv loop drives a libcurl multi handle
 * through the multi-socket API (DESIGN.md §2, §10). Any thread hands it a
 * request with deliver_submit(); the thread sends it, retries temporary
 * failures itself (exponential backoff with full jitter, Retry-After honoured
 * on 429/503), and reports exactly one final outcome per request through the
 * outcome callback, on the delivery thread. Requests wait in a queue per
 * destination (scheme://host:port) so one slow receiver cannot take every
 * connection: at most per_host_concurrency run per destination and
 * max_concurrency in all; connections are kept alive and reused.
 *
 * Invariants kept here: (3) the caller submits an envelope only once the batch
 * that created it is durable -- this module never persists anything; (4) the
 * envelope id is sent as the Idempotency-Key of every attempt, so a receiver
 * can drop the duplicates that at-least-once delivery implies (a retry, or a
 * resend after a restart of requests abandoned by deliver_stop()).
 *
 * Destinations are guarded against server-side request forgery: by default no
 * loopback, link-local, private, unspecified, multicast or broadcast address
 * is contacted, checked on the address curl actually connects to (so DNS
 * rebinding cannot dodge it); the allow list opens hosts or CIDR ranges.
 * See docs/webhooks.md. Email, SMS and push go to the relay and provider
 * endpoints of the configuration (trusted, so not guarded); docs/channels.md
 * describes their requests and how answers map to outcomes.
 */
#ifndef NUDGE_DELIVER_DELIVER_H
#define NUDGE_DELIVER_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };

enum deliver_kind { DELIVER_WEBHOOK = 0, DELIVER_EMAIL, DELIVER_SMS, DELIVER_PUSH };

/* Returns "webhook", "email", "sms" or "push". */
const char *deliver_kind_str(enum deliver_kind k);

/* Returns "ok", "tempfail" or "permfail". */
const char *deliver_result_str(enum deliver_result r);

struct deliver_config {
	/* Allow list text ("127.0.0.1/32, hooks.internal, 10.0.0.0/8,
	 * *.corp.example"), comma or space separated; may be NULL. Borrowed for
	 * the duration of deliver_start() only. */
	const char *allow;
	unsigned per_host_concurrency; /* default 16 */
	unsigned max_concurrency;      /* default 256 */
	size_t max_response_bytes;     /* captured response cap; default 64 KiB */
	const char *user_agent;	       /* default "nudge/<version>"; copied */
	int64_t backoff_base_ms;       /* first retry delay bound; default 500 */
	int64_t backoff_cap_ms;	       /* longest retry delay; default 60000 */
	int64_t default_timeout_ms;    /* when a request says 0; default 10000 */

	/* The email relay. No host: email requests end PERMFAIL "email not
	 * configured". Strings are copied by deliver_start(). */
	struct {
		const char *host;
		int port;	      /* default 25, or 465 with tls = "tls" */
		const char *tls;      /* "none" (default) | "starttls" | "tls" */
		const char *username; /* AUTH when set */
		const char *password;
		unsigned connections; /* the pool: transfers at once; default 4 */
		const char *helo;     /* EHLO name and Message-ID domain; default
					 the host name */
		int64_t timeout_ms;   /* per message when the request says 0;
					 default default_timeout_ms */
		const char *ca_file;  /* PEM bundle to verify the relay with
					 instead of the system's; or NULL */
		unsigned rate_per_s;  /* messages started per second; 0 = no
					 limit */
	} smtp;
	/* Twilio-compatible SMS API. No base_url: SMS ends PERMFAIL. */
	struct {
		const char *base_url; /* e.g. https://api.twilio.com */
		const char *account_sid, *auth_token, *from;
		const char *status_callback; /* or NULL */
		unsigned rate_per_s;	     /* requests per second; 0 = no limit */
	} sms;
	/* FCM HTTP v1-shaped push API. No base_url: push ends PERMFAIL. */
	struct {
		const char *base_url; /* e.g. https://fcm.googleapis.com */
		const char *project_id, *bearer_token;
		unsigned rate_per_s; /* requests per second; 0 = no limit */
	} push;
};

void deliver_config_default(struct deliver_config *cfg);

struct deliver_header {
	char *name;
	char *value;
};

/* An email, already rendered. All strings owned by the request. */
struct deliver_email {
	char *from;	/* "Name <addr>" or addr; also the envelope sender */
	char *reply_to; /* or NULL */
	char *to;	/* one address, "Name <addr>" or addr */
	char *subject;	/* UTF-8 */
	char *html;	/* or NULL */
	char *text;	/* or NULL: derived from html (tags stripped, link URLs
			   kept, entities decoded) */
	struct deliver_header *headers; /* extra headers */
	unsigned nheaders;
	char *list_unsubscribe_url;    /* http(s) URL or NULL */
	char *list_unsubscribe_mailto; /* mailto: URL or NULL */
	bool one_click; /* List-Unsubscribe-Post: List-Unsubscribe=One-Click
			   (RFC 8058); needs list_unsubscribe_url */
};

/* An SMS: to in E.164 ("+14155550100"), body UTF-8. */
struct deliver_sms {
	char *to;
	char *body;
};

/* A push notification to one device token. title, body, image may be NULL;
 * data_json is NULL or a JSON object of string values. */
struct deliver_push {
	char *token;
	char *title;
	char *body;
	char *image;
	char *data_json;
};

/*
 * One message: a webhook call (kind DELIVER_WEBHOOK: method, url, headers,
 * body, secret) or an email, SMS or push (the matching pointer). Every pointer
 * is owned by the request (malloc'd; freed by deliver_request_free()), and
 * ownership moves in with deliver_submit().
 */
struct deliver_request {
	enum deliver_kind kind;
	struct deliver_email *email;	/* kind DELIVER_EMAIL */
	struct deliver_sms *sms;	/* kind DELIVER_SMS */
	struct deliver_push *push;	/* kind DELIVER_PUSH */
	char *envelope_id;		/* stable id (invariant 4); the Idempotency-Key,
					   the email Message-ID */
	char *method;			/* webhook: "POST" | "PUT" */
	char *url;			/* http:// or https://, no user info */
	struct deliver_header *headers; /* extra headers; ours win on a clash */
	unsigned nheaders;
	char *body; /* JSON, already rendered */
	size_t body_len;
	char *secret;	    /* signing secret or NULL (no X-Nudge-Signature) */
	int64_t timeout_ms; /* per attempt; 0 = the config's default */
	unsigned retries;   /* attempts after the first on a temporary failure */
	bool capture;	    /* keep the response body (up to the cap) */
	void *ud;	    /* caller's context, echoed in the outcome */
};

struct deliver_outcome {
	const char *envelope_id;
	enum deliver_result result;
	enum deliver_kind kind;
	int http_status;	 /* of the last attempt (for email the SMTP reply
				    code); 0 if none */
	const char *reason;	 /* "HTTP 503", "timeout", "destination not allowed",
				    "SMTP 550 at RCPT: 5.1.1 no such user", ... */
	const char *provider_id; /* Twilio message sid, FCM message name, SMTP
				    queue id when the relay says one; or NULL */
	bool invalid_recipient;	 /* the address, number or device token is bad
				    for good (SMTP 5xx at RCPT/DATA, FCM
				    UNREGISTERED, Twilio 21211): suppress or
				    remove it */
	const char *response;	 /* captured body (NUL-terminated) or NULL */
	size_t response_len;
	bool response_truncated; /* the body was longer than max_response_bytes */
	unsigned attempts;
	unsigned connections; /* new connections opened over all attempts; 0
				 when every attempt reused a kept-alive one */
	int64_t duration_ms;  /* from submission to this outcome */
	void *ud;
};

/* Called on the delivery thread; the outcome is valid only during the call.
 * It must not block for long: every transfer waits while it runs. */
typedef void (*deliver_outcome_fn)(void *cb_ud, const struct deliver_outcome *o);

struct deliver;

/* Starts the delivery thread. NERR_INVAL for a bad allow list, naming the
 * entry in msg. */
enum nerr deliver_start(const struct deliver_config *cfg, deliver_outcome_fn fn,
			void *cb_ud, struct deliver **out, struct nerr_msg *msg);

/*
 * Hands req to the delivery thread; callable from any thread. NERR_OK:
 * ownership moved in and exactly one outcome will be reported (a malformed
 * request -- bad method, URL, scheme, user info, header -- is reported as a
 * PERMFAIL with the reason). NERR_BUSY: the thread is stopping; nothing was
 * taken, the caller still owns req (and frees it).
 */
enum nerr deliver_submit(struct deliver *d, struct deliver_request *req);

/* Frees req and everything it owns; NULL is fine. */
void deliver_request_free(struct deliver_request *req);

/* Requests submitted and not yet reported (queued, in flight or waiting to
 * retry). Any thread. */
unsigned deliver_pending(struct deliver *d);

/*
 * Stops taking requests, abandons in-flight ones without reporting them (they
 * stay pending in the outbox and are resent after restart: at-least-once with
 * a stable Idempotency-Key), joins the thread. Idempotent. Not from the
 * outcome callback (it runs on the thread being joined).
 */
void deliver_stop(struct deliver *d);
/* Stops if needed, then frees. NULL is fine. */
void deliver_free(struct deliver *d);

/*
 * The address check, exposed for tests: true if addr (numeric IPv4/IPv6
 * text) may be contacted for a URL naming host under d's allow list (NULL
 * for no allow list). host may be NULL.
 */
bool deliver_address_allowed(const struct deliver *d_or_null_for_default,
			     const char *host, const char *addr);

/* The X-Nudge-Signature value for a body signed at unix time t_sec:
 * "t=<t_sec>,v1=<hex HMAC-SHA256(secret, "<t_sec>.<body>")>". out must hold
 * at least DELIVER_SIGNATURE_MAX bytes. */
#define DELIVER_SIGNATURE_MAX 96
void deliver_sign(const char *secret, int64_t t_sec, const char *body, size_t body_len,
		  char *out);

/* True if s is an E.164 number: '+', a non-zero digit, 7 to 15 digits in
 * all. */
bool deliver_e164_valid(const char *s);

#endif
