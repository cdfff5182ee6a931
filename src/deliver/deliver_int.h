/*
 * deliver_int.h -- what the files of src/deliver share (deliver.c, webhook.c,
 * ssrf.c, mime.c, smtp.c, sms.c, push.c); not for other modules (use
 * deliver.h). Exposed to the unit tests.
 */
#ifndef NUDGE_DELIVER_INT_H
#define NUDGE_DELIVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "base/buf.h"
#include "deliver/deliver.h"

/* ---- ssrf.c: the destination guard ---- */

struct deliver_cidr {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network bytes, masked to prefix */
	unsigned prefix;
};

/* The parsed allow list. Owned by the struct deliver that parsed it. */
struct deliver_allow {
	struct deliver_cidr *cidrs;
	unsigned ncidrs;
	char **hosts; /* lower case; "*.example.com" matches subdomains */
	unsigned nhosts;
};

enum nerr deliver_allow_parse(const char *text, struct deliver_allow *out,
			      struct nerr_msg *msg);
void deliver_allow_fini(struct deliver_allow *a);
/* True if an address (family, network-order bytes) may be contacted for host
 * (the URL's host, may be NULL) under a (may be NULL). */
bool deliver_allow_check(const struct deliver_allow *a, const char *host, int family,
			 const uint8_t *bytes);

/* The same with the address as text (IPv4, IPv6, [IPv6]); false when it does
 * not parse. */
bool deliver_allow_check_text(const struct deliver_allow *a, const char *host,
			      const char *addr);

/* The parts of a URL the transport needs. */
struct deliver_url {
	char *host;   /* lower case, IPv6 without brackets */
	char *origin; /* "scheme://host:port", the per-host queue key */
};

/* Checks scheme (http/https), user info and host. On refusal returns false
 * with a short reason in *reason (static text). */
bool deliver_url_parse(const char *url, struct deliver_url *out, const char **reason);
void deliver_url_fini(struct deliver_url *u);

/* ---- webhook.c: request building ---- */

/* Checks method and headers; false with a static reason on refusal. */
bool deliver_request_check(const struct deliver_request *req, const char **reason);
/* The header list of one attempt (signature timestamped now_sec). The caller
 * frees it with curl_slist_free_all(). */
struct curl_slist *deliver_build_headers(const struct deliver_request *req,
					 const char *user_agent, int64_t now_sec);

/* ---- the channels' configuration, owned copies ---- */

struct deliver_channels {
	/* smtp */
	char *smtp_host; /* NULL: not configured */
	int smtp_port;
	int smtp_tls; /* DELIVER_TLS_* */
	char *smtp_username, *smtp_password;
	unsigned smtp_connections;
	char *smtp_helo;
	char *smtp_ca_file;
	int64_t smtp_timeout_ms;
	char *smtp_url;	   /* "smtp://host:port/helo" or smtps:// */
	char *smtp_origin; /* the queue key: "smtp://host:port" */
	/* sms */
	char *sms_url; /* .../2010-04-01/Accounts/{sid}/Messages.json; NULL: off */
	char *sms_origin;
	char *sms_sid, *sms_token, *sms_from, *sms_callback;
	/* push */
	char *push_url; /* .../v1/projects/{project}/messages:send; NULL: off */
	char *push_origin;
	char *push_auth; /* "Authorization: Bearer ..." */
	/* per-channel rate limits, per second; 0 = none */
	unsigned smtp_rate_per_s, sms_rate_per_s, push_rate_per_s;
};

enum { DELIVER_TLS_NONE, DELIVER_TLS_STARTTLS, DELIVER_TLS_TLS };

/* Copies and checks cfg's smtp/sms/push parts. NERR_INVAL naming the field. */
enum nerr deliver_channels_init(struct deliver_channels *ch,
				const struct deliver_config *cfg, struct nerr_msg *msg);
void deliver_channels_fini(struct deliver_channels *ch);

/* What a transport prepares once, when the request is accepted; every attempt
 * sends the same bytes (so an email's Message-ID and Date never change). */
struct deliver_prep {
	struct buf body;	 /* email: the message (CRLF lines); sms: the form; push:
				    the JSON */
	size_t read_off;	 /* email: upload position of the current attempt */
	const char *envelope_id; /* borrowed from the request */
	const char *url;	 /* borrowed from the channels */
	const char *origin;	 /* borrowed from the channels */
	char *mail_from;	 /* email: "<addr>" */
	char *rcpt;		 /* email: "<addr>" */
	/* email: the SMTP dialogue of the current attempt, from curl's debug
	 * callback: the verb of the last command sent and the last reply */
	char verb[8];
	char reply[200];
	bool queued; /* the relay said 354: the next reply answers the message */
	bool quit;   /* curl is closing the connection */
};

void deliver_prep_init(struct deliver_prep *p);
void deliver_prep_fini(struct deliver_prep *p);

/* How an attempt ended, as a transport judges it. */
struct deliver_verdict {
	enum deliver_result result;
	bool invalid_recipient;
	char reason[256];
	char provider_id[128];
};

/* ---- mime.c: the email message ---- */

struct deliver_addr {
	char name[256]; /* display name, UTF-8, unquoted; "" when none */
	char addr[256]; /* local@domain, ASCII */
};

/* Parses "Name <addr>", "\"Name\" <addr>" or "addr". False when it is not
 * one plain address (control characters, no '@', non-ASCII address, ...). */
bool deliver_addr_parse(const char *s, struct deliver_addr *out);

/* Builds the whole message (headers and body, CRLF line ends) into out.
 * now_ms is the Date. False with a static reason when the email cannot be
 * sent as it is ("invalid header", "invalid address", ...); *bad_rcpt tells
 * whether the recipient address is what is wrong. */
bool deliver_mime_build(const struct deliver_email *e, const char *envelope_id,
			const char *domain, int64_t now_ms, struct buf *out,
			const char **reason, bool *bad_rcpt);

/* The plain text of an HTML document: tags dropped, block elements and <br>
 * as line breaks, a link's URL after its text, entities decoded, white space
 * collapsed. Appends to out. */
void deliver_html_to_text(const char *html, size_t len, struct buf *out);

/* Quoted-printable (RFC 2045 §6.7) of UTF-8 text; line breaks (LF or CRLF)
 * become CRLF hard breaks, lines are soft-broken at 76 columns. Appends. */
void deliver_qp_encode(const char *s, size_t len, struct buf *out);

/* Appends "Name: value\r\n" for an unstructured header, folded at 78
 * columns, as RFC 2047 encoded-words (UTF-8, B) when value is not plain
 * ASCII. */
void deliver_header_text(struct buf *out, const char *name, const char *value);

/* True when s is valid UTF-8 without control characters (tab, CR and LF
 * allowed when multiline). */
bool deliver_utf8_valid(const char *s, bool multiline);

/* ---- smtp.c, sms.c, push.c: the other transports ---- */

bool deliver_email_prepare(const struct deliver_channels *ch,
			   const struct deliver_request *req, int64_t now_ms,
			   struct deliver_prep *p, const char **reason, bool *bad_rcpt);
/* Sets up an attempt; returns the recipient list, curl_slist_free_all() it
 * after the transfer. */
struct curl_slist *deliver_email_setup(const struct deliver_channels *ch, CURL *e,
				       struct deliver_prep *p);
void deliver_email_verdict(CURLcode res, long code, const struct deliver_prep *p,
			   const char *errbuf, struct deliver_verdict *v);

bool deliver_sms_prepare(const struct deliver_channels *ch,
			 const struct deliver_request *req, struct deliver_prep *p,
			 const char **reason, bool *bad_rcpt);
/* The header list of an attempt; curl_slist_free_all() it. */
struct curl_slist *deliver_sms_setup(const struct deliver_channels *ch, CURL *e,
				     struct deliver_prep *p, const char *user_agent);
void deliver_sms_verdict(long status, const char *body, size_t len,
			 struct deliver_verdict *v);

bool deliver_push_prepare(const struct deliver_channels *ch,
			  const struct deliver_request *req, struct deliver_prep *p,
			  const char **reason, bool *bad_rcpt);
struct curl_slist *deliver_push_setup(const struct deliver_channels *ch, CURL *e,
				      struct deliver_prep *p, const char *user_agent);
void deliver_push_verdict(long status, const char *body, size_t len,
			  struct deliver_verdict *v);

#endif
