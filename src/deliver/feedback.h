/*
 * feedback.h -- what providers tell us after a send: email bounces and
 * complaints, SMS delivery receipts (DESIGN.md §10; docs/tracking.md).
 *
 * Design: pure parsers the HTTP layer calls on the body of
 * POST /v1/feedback/email and POST /v1/feedback/sms; the engine turns the
 * result into suppression entries and envelope updates. Bad input is refused
 * here with the field that is wrong, and every size is capped.
 */
#ifndef NUDGE_DELIVER_FEEDBACK_H
#define NUDGE_DELIVER_FEEDBACK_H

#include <stddef.h>

#include "base/err.h"

#define FEEDBACK_BODY_MAX     (1024 * 1024) /* email feedback body bytes */
#define FEEDBACK_ITEMS_MAX    1000	    /* items (recipients) per body */
#define FEEDBACK_DEPTH_MAX    16	    /* JSON nesting */
#define FEEDBACK_ADDRESS_MAX  254	    /* RFC 5321 path limit */
#define FEEDBACK_REASON_MAX   512	    /* longer provider texts are cut */
#define FEEDBACK_URL_MAX      2048
#define FEEDBACK_ARN_MAX      256
#define FEEDBACK_SMS_BODY_MAX (16 * 1024)
#define FEEDBACK_SID_MAX      64
#define FEEDBACK_PHONE_MAX    64

enum feedback_kind {
	FEEDBACK_HARD_BOUNCE = 1, /* permanent: suppress the address */
	FEEDBACK_SOFT_BOUNCE = 2, /* transient or undetermined: count only */
	FEEDBACK_COMPLAINT = 3,	  /* marked as spam: suppress */
};

/* Returns "hard_bounce", "soft_bounce" or "complaint". */
const char *feedback_kind_str(enum feedback_kind kind);

struct feedback_item {
	char address[FEEDBACK_ADDRESS_MAX + 1]; /* lower-cased */
	enum feedback_kind kind;
	char reason[FEEDBACK_REASON_MAX + 1]; /* may be "" */
};

enum feedback_source {
	FEEDBACK_SRC_NUDGE = 1,		/* nudge's own JSON */
	FEEDBACK_SRC_SES = 2,		/* an SES notification (via SNS or raw) */
	FEEDBACK_SRC_SNS_SUBSCRIBE = 3, /* SNS SubscriptionConfirmation */
	FEEDBACK_SRC_SNS_OTHER = 4,	/* e.g. UnsubscribeConfirmation: nothing to do */
};

/* The parse result. Caller-provided storage; items are owned by the list. */
struct feedback_list {
	struct feedback_item *items;
	size_t n;
	enum feedback_source source;
	/* FEEDBACK_SRC_SNS_SUBSCRIBE: the URL to GET to confirm the subscription,
	 * checked to be https://sns.<region>.amazonaws.com[.cn]/... */
	char subscribe_url[FEEDBACK_URL_MAX + 1];
	char topic_arn[FEEDBACK_ARN_MAX + 1]; /* SNS TopicArn, or "" */
};

void feedback_list_init(struct feedback_list *l);
void feedback_list_fini(struct feedback_list *l);

/*
 * Parses a POST /v1/feedback/email body into out (which must be freshly
 * initialised; it is left empty on error). Accepted:
 *   - nudge's JSON: {"type": "bounce"|"complaint", "email": "...",
 *     "permanent": true|false (required for bounces), "reason": "..."}
 *     or an array of those;
 *   - an SNS message (Type Notification, whose Message is an SES
 *     notification; SubscriptionConfirmation; UnsubscribeConfirmation);
 *   - an SES notification itself (SNS raw message delivery).
 * SES notifications other than Bounce and Complaint (Delivery, Send, ...)
 * parse to no items. NERR_TOOBIG over FEEDBACK_BODY_MAX, NERR_LIMIT over
 * FEEDBACK_ITEMS_MAX, NERR_PARSE for bad JSON, NERR_INVAL for the rest; msg
 * names the field ("[2].email", "Message.bounce.bounceType").
 */
enum nerr feedback_parse_email(const char *body, size_t len, struct feedback_list *out,
			       struct nerr_msg *msg);

enum feedback_sms_status {
	FEEDBACK_SMS_ACCEPTED = 1,
	FEEDBACK_SMS_SCHEDULED,
	FEEDBACK_SMS_QUEUED,
	FEEDBACK_SMS_SENDING,
	FEEDBACK_SMS_SENT,
	FEEDBACK_SMS_DELIVERED,
	FEEDBACK_SMS_UNDELIVERED,
	FEEDBACK_SMS_FAILED,
	FEEDBACK_SMS_READ,
	FEEDBACK_SMS_CANCELED,
	FEEDBACK_SMS_PARTIALLY_DELIVERED,
};

/* Returns Twilio's spelling ("delivered", "undelivered", ...). */
const char *feedback_sms_status_str(enum feedback_sms_status s);

enum feedback_sms_outcome {
	FEEDBACK_SMS_PENDING = 0, /* not final yet: accepted ... sent */
	FEEDBACK_SMS_OK = 1,	  /* delivered, read */
	FEEDBACK_SMS_FAIL = 2,	  /* undelivered, failed, canceled, partially_delivered */
};

enum feedback_sms_outcome feedback_sms_outcome_of(enum feedback_sms_status s);

/* A Twilio status callback. */
struct feedback_sms {
	char provider_id[FEEDBACK_SID_MAX + 1]; /* MessageSid */
	enum feedback_sms_status status;	/* MessageStatus */
	int error_code;				/* ErrorCode; 0 if absent or empty */
	char to[FEEDBACK_PHONE_MAX + 1];	/* To, or "" */
};

/*
 * Parses a Twilio status-callback form (application/x-www-form-urlencoded)
 * into out. MessageSid and MessageStatus are required; ErrorCode and To are
 * optional; other fields (AccountSid, From, SmsSid, ApiVersion, ...) are
 * ignored. A field we read given twice, a malformed %-escape, a control
 * character or an oversized value is refused (NERR_INVAL, the field named);
 * NERR_TOOBIG over FEEDBACK_SMS_BODY_MAX.
 */
enum nerr feedback_parse_sms(const char *form_body, size_t len, struct feedback_sms *out,
			     struct nerr_msg *msg);

#endif
