/*
 * ssrf.c -- which destinations a webhook may contact.
 *
 * Design: journeys are written by operators' users, not by the operator, so a
 * webhook URL must not become a way to reach the machine's own services or the
 * private network behind it (server-side request forgery). The guard works on
 * two levels. deliver_url_parse() refuses, before anything is sent, URLs that
 * are not http(s) or that carry user info. deliver_allow_check() judges each
 * address curl is about to connect to (deliver.c calls it from curl's
 * open-socket callback, after name resolution), so a name that resolves to a
 * private address -- including one that changes between two lookups, DNS
 * rebinding -- is refused at the moment it matters.
 *
 * Refused by default (IPv4): 0.0.0.0/8 (this network), 10.0.0.0/8,
 * 100.64.0.0/10 (shared CGNAT), 127.0.0.0/8, 169.254.0.0/16 (link-local, cloud
 * metadata), 172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15,
 * 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved, and 255.255.255.255
 * broadcast). IPv6: ::/96 (unspecified, loopback, IPv4-compatible), fe80::/10
 * (link-local), fec0::/10 (old site-local), fc00::/7 (ULA), ff00::/8
 * (multicast); addresses that embed an IPv4 address (::ffff:0:0/96 mapped,
 * 64:ff9b::/96 NAT64, 2002::/16 6to4) are judged by the embedded address.
 *
 * The allow list opens destinations: CIDR ranges (an address without /len is
 * one address) matched against the connect address, and host names matched
 * against the URL's host ("*.example.com" for every subdomain). An allowed
 * host name may resolve anywhere: the operator vouches for it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "base/mem.h"
#include "deliver/deliver_int.h"

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;
	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[full] & mask) == (net[full] & mask);
}

struct range4 {
	uint8_t net[4];
	unsigned prefix;
};

static const struct range4 blocked4[] = {
	{{0, 0, 0, 0}, 8},    {{10, 0, 0, 0}, 8},     {{100, 64, 0, 0}, 10},
	{{127, 0, 0, 0}, 8},  {{169, 254, 0, 0}, 16}, {{172, 16, 0, 0}, 12},
	{{192, 0, 0, 0}, 24}, {{192, 168, 0, 0}, 16}, {{198, 18, 0, 0}, 15},
	{{224, 0, 0, 0}, 4},  {{240, 0, 0, 0}, 4},
};

static bool blocked_v4(const uint8_t *b)
{
	for (size_t i = 0; i < sizeof(blocked4) / sizeof(blocked4[0]); i++)
		if (prefix_match(b, blocked4[i].net, blocked4[i].prefix))
			return true;
	return false;
}

/* For IPv6 addresses that carry an IPv4 address, copies it to v4 and returns
 * true. */
static bool embedded_v4(const uint8_t *b, uint8_t *v4)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0) {
		memcpy(v4, b + 12, 4);
		return true;
	}
	if (b[0] == 0x20 && b[1] == 0x02) {
		memcpy(v4, b + 2, 4);
		return true;
	}
	return false;
}

static bool blocked_v6(const uint8_t *b)
{
	static const uint8_t zero[12];
	uint8_t v4[4];
	if (embedded_v4(b, v4))
		return blocked_v4(v4);
	if (memcmp(b, zero, 12) == 0) /* ::/96: ::, ::1, IPv4-compatible */
		return true;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10 */
		return true;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) /* fec0::/10 */
		return true;
	if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 */
		return true;
	if (b[0] == 0xff) /* ff00::/8 */
		return true;
	return false;
}

static bool cidr_contains(const struct deliver_cidr *c, int family, const uint8_t *b)
{
	return c->family == family && prefix_match(b, c->addr, c->prefix);
}

static bool host_matches(const char *pattern, const char *host)
{
	if (pattern[0] == '*' && pattern[1] == '.') {
		size_t pl = strlen(pattern + 1), hl = strlen(host);
		/* "*.example.com" matches "a.example.com", not "example.com" */
		return hl > pl && strcasecmp(host + hl - pl, pattern + 1) == 0;
	}
	return strcasecmp(pattern, host) == 0;
}

bool deliver_allow_check(const struct deliver_allow *a, const char *host, int family,
			 const uint8_t *bytes)
{
	uint8_t v4[4];
	bool has_v4 = family == AF_INET6 && embedded_v4(bytes, v4);
	if (a) {
		for (unsigned i = 0; host && i < a->nhosts; i++)
			if (host_matches(a->hosts[i], host))
				return true;
		for (unsigned i = 0; i < a->ncidrs; i++) {
			if (cidr_contains(&a->cidrs[i], family, bytes))
				return true;
			if (has_v4 && cidr_contains(&a->cidrs[i], AF_INET, v4))
				return true;
		}
	}
	if (family == AF_INET)
		return !blocked_v4(bytes);
	if (family == AF_INET6)
		return !blocked_v6(bytes);
	return false;
}

/* Parses an address, stripping [brackets] and an IPv6 zone ("%eth0"). */
static int parse_addr(const char *text, size_t len, uint8_t *bytes)
{
	char tmp[INET6_ADDRSTRLEN + 8];
	if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(tmp))
		return 0;
	memcpy(tmp, text, len);
	tmp[len] = '\0';
	char *zone = strchr(tmp, '%');
	if (zone)
		*zone = '\0';
	if (inet_pton(AF_INET, tmp, bytes) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, tmp, bytes) == 1)
		return AF_INET6;
	return 0;
}

bool deliver_allow_check_text(const struct deliver_allow *a, const char *host,
			      const char *addr)
{
	uint8_t bytes[16];
	int family = addr ? parse_addr(addr, strlen(addr), bytes) : 0;
	if (!family)
		return false;
	return deliver_allow_check(a, host, family, bytes);
}

static bool valid_host_pattern(const char *s, size_t len)
{
	size_t i = 0;
	if (len >= 2 && s[0] == '*' && s[1] == '.')
		i = 2;
	if (i == len)
		return false;
	for (; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '.' && c != '-' && c != '_')
			return false;
	}
	return true;
}

static enum nerr add_entry(struct deliver_allow *a, const char *s, size_t len,
			   struct nerr_msg *msg)
{
	const char *slash = memchr(s, '/', len);
	uint8_t bytes[16];
	size_t alen = slash ? (size_t)(slash - s) : len;
	int family = parse_addr(s, alen, bytes);

	if (family) {
		unsigned max = family == AF_INET ? 32 : 128, prefix = max;
		if (slash) {
			const char *p = slash + 1, *end = s + len;
			if (p == end || end - p > 3)
				goto bad;
			prefix = 0;
			for (; p < end; p++) {
				if (!isdigit((unsigned char)*p))
					goto bad;
				prefix = prefix * 10 + (unsigned)(*p - '0');
			}
			if (prefix > max)
				goto bad;
		}
		struct deliver_cidr c = {.family = family, .prefix = prefix};
		unsigned nbytes = max / 8;
		for (unsigned i = 0; i < nbytes; i++) {
			unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
			uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
			c.addr[i] = bytes[i] & mask;
		}
		a->cidrs = xrealloc(a->cidrs, (a->ncidrs + 1) * sizeof(*a->cidrs));
		a->cidrs[a->ncidrs++] = c;
		return NERR_OK;
	}
	if (slash || !valid_host_pattern(s, len))
		goto bad;
	char *h = xstrndup(s, len);
	for (char *p = h; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t hl = strlen(h);
	if (hl > 1 && h[hl - 1] == '.') /* "example.com." is "example.com" */
		h[hl - 1] = '\0';
	a->hosts = xrealloc(a->hosts, (a->nhosts + 1) * sizeof(*a->hosts));
	a->hosts[a->nhosts++] = h;
	return NERR_OK;
bad:
	return nerr_set(msg, NERR_INVAL, "webhook.allow",
			"allow entry '%.*s' is neither a host name nor an address or "
			"CIDR range",
			(int)(len > 100 ? 100 : len), s);
}

enum nerr deliver_allow_parse(const char *text, struct deliver_allow *out,
			      struct nerr_msg *msg)
{
	enum nerr rc = NERR_OK;
	memset(out, 0, sizeof(*out));
	const char *p = text ? text : "";
	while (*p) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		const char *start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if (p > start) {
			rc = add_entry(out, start, (size_t)(p - start), msg);
			if (rc != NERR_OK)
				goto out;
		}
	}
out:
	if (rc != NERR_OK)
		deliver_allow_fini(out);
	return rc;
}

void deliver_allow_fini(struct deliver_allow *a)
{
	for (unsigned i = 0; i < a->nhosts; i++)
		free(a->hosts[i]);
	free(a->hosts);
	free(a->cidrs);
	memset(a, 0, sizeof(*a));
}

bool deliver_url_parse(const char *url, struct deliver_url *out, const char **reason)
{
	bool ok = false;
	char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL;
	CURLU *u = curl_url();
	memset(out, 0, sizeof(*out));
	if (!u)
		abort();
	*reason = "invalid url";
	if (!url ||
	    curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
		goto out;
	if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
		*reason = "url scheme must be http or https";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PASSWORD, &pass, 0) == CURLUE_OK) {
		*reason = "url must not carry user info";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
		goto out;
	if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto out;

	size_t hl = strlen(host);
	const char *h = host;
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		h = host + 1;
		hl -= 2;
	}
	out->host = xstrndup(h, hl);
	for (char *p = out->host; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	for (char *p = scheme; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t olen = strlen(scheme) + strlen(host) + strlen(port) + 8;
	out->origin = xmalloc(olen);
	bool v6 = strchr(out->host, ':') != NULL;
	snprintf(out->origin, olen, "%s://%s%s%s:%s", scheme, v6 ? "[" : "", out->host,
		 v6 ? "]" : "", port);
	ok = true;
	*reason = NULL;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(user);
	curl_free(pass);
	curl_url_cleanup(u);
	return ok;
}

void deliver_url_fini(struct deliver_url *u)
{
	free(u->host);
	free(u->origin);
	memset(u, 0, sizeof(*u));
}
