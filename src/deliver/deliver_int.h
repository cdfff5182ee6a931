/*
 * deliver_int.h -- what deliver.c, webhook.c and ssrf.c share; not for other
 * modules (use deliver.h).
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

#endif
