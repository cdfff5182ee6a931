/*
 * test_feedback.c -- bounce/complaint feedback and SMS delivery receipts.
 *
 * The SES and SNS payloads follow the examples of the Amazon SES Developer
 * Guide ("Amazon SNS notification examples for Amazon SES") and the SNS HTTP/S
 * message format; the SNS envelope is built with json-c so the inner Message
 * is escaped exactly as SNS does. Twilio forms follow the status-callback
 * parameters Twilio posts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "deliver/feedback.h"

static const char ses_bounce[] =
	"{\"notificationType\":\"Bounce\",\"bounce\":{\"feedbackId\":"
	"\"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000\","
	"\"bounceType\":\"Permanent\",\"bounceSubType\":\"General\","
	"\"bouncedRecipients\":[{\"emailAddress\":\"Jane@Example.com\",\"action\":"
	"\"failed\",\"status\":\"5.1.1\",\"diagnosticCode\":\"smtp; 550 5.1.1 user "
	"unknown\"},{\"emailAddress\":\"richard@example.com\",\"action\":\"failed\","
	"\"status\":\"5.1.1\"}],\"timestamp\":\"2016-01-27T14:59:38.237Z\","
	"\"remoteMtaIp\":\"127.0.2.0\",\"reportingMTA\":\"dns; "
	"a1-2.smtp-out.amazonses.com\"},\"mail\":{\"timestamp\":\"2016-01-27T14:59:"
	"38.237Z\",\"source\":\"john@example.com\",\"sourceArn\":\"arn:aws:ses:us-west-"
	"2:888888888888:identity/example.com\",\"sourceIp\":\"127.0.3.0\","
	"\"sendingAccountId\":\"123456789012\",\"messageId\":\"00000138111222aa-"
	"33322211-cccc-cccc-cccc-ddddaaaa0680-000000\",\"destination\":["
	"\"jane@example.com\",\"mary@example.com\",\"richard@example.com\"],"
	"\"headersTruncated\":false,\"headers\":[{\"name\":\"From\",\"value\":"
	"\"\\\"John Doe\\\" <john@example.com>\"}],\"commonHeaders\":{\"from\":["
	"\"John Doe <john@example.com>\"],\"date\":\"Wed, 27 Jan 2016 14:05:45 +0000\","
	"\"to\":[\"Jane Doe <jane@example.com>\"],\"messageId\":\"custom-message-ID\","
	"\"subject\":\"Hello\"}}}";

static const char ses_transient[] =
	"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Transient\","
	"\"bounceSubType\":\"MailboxFull\",\"bouncedRecipients\":[{\"emailAddress\":"
	"\"full@example.org\",\"diagnosticCode\":\"smtp; 452 4.2.2 mailbox full\"}]},"
	"\"mail\":{\"messageId\":\"x\"}}";

static const char ses_complaint[] =
	"{\"notificationType\":\"Complaint\",\"complaint\":{\"userAgent\":"
	"\"AnyCompany Feedback Loop (V0.01)\",\"complainedRecipients\":[{"
	"\"emailAddress\":\"richard@example.com\"}],\"complaintFeedbackType\":\"abuse\","
	"\"arrivalDate\":\"2016-01-27T14:59:38.237Z\",\"timestamp\":"
	"\"2016-01-27T14:59:38.237Z\",\"feedbackId\":\"000001378603177f-18c07c78-fa81-"
	"4a58-9dd1-fedc3cb8f49a-000000\"},\"mail\":{\"timestamp\":\"2016-01-27T14:59:"
	"38.237Z\",\"messageId\":\"000001378603177f-7a5433e7-8edb-42ae-af10-"
	"f0181f34d6ee-000000\",\"source\":\"john@example.com\",\"destination\":["
	"\"jane@example.com\",\"mary@example.com\",\"richard@example.com\"]}}";

static const char ses_delivery[] =
	"{\"notificationType\":\"Delivery\",\"mail\":{\"messageId\":\"m\"},\"delivery\":"
	"{\"timestamp\":\"2016-01-27T14:59:38.237Z\",\"recipients\":["
	"\"jane@example.com\"],\"processingTimeMillis\":546,\"smtpResponse\":\"250 "
	"ok\"}}";

/* Wraps an SES notification in an SNS Notification envelope. */
static char *sns_wrap(const char *message)
{
	struct json_object *o = json_object_new_object();
	char *s;

	json_object_object_add(o, "Type", json_object_new_string("Notification"));
	json_object_object_add(
		o, "MessageId",
		json_object_new_string("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"));
	json_object_object_add(
		o, "TopicArn",
		json_object_new_string("arn:aws:sns:us-west-2:123456789012:ses"));
	json_object_object_add(o, "Message", json_object_new_string(message));
	json_object_object_add(o, "Timestamp",
			       json_object_new_string("2012-05-02T00:54:06.655Z"));
	json_object_object_add(o, "SignatureVersion", json_object_new_string("1"));
	json_object_object_add(o, "Signature", json_object_new_string("EXAMPLEw6JRN..."));
	json_object_object_add(
		o, "SigningCertURL",
		json_object_new_string("https://sns.us-west-2.amazonaws.com/"
				       "SimpleNotificationService-"
				       "f3ecfb7224c7233fe7bb5f59f96de52f.pem"));
	json_object_object_add(
		o, "UnsubscribeURL",
		json_object_new_string("https://sns.us-west-2.amazonaws.com/"
				       "?Action=Unsubscribe&SubscriptionArn=x"));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
	return s;
}

static enum nerr parse(const char *s, struct feedback_list *l, struct nerr_msg *m)
{
	feedback_list_init(l);
	return feedback_parse_email(s, strlen(s), l, m);
}

static void expect_error(const char *body, enum nerr rc, const char *field)
{
	struct feedback_list l;
	struct nerr_msg m;

	assert_int_equal(parse(body, &l, &m), rc);
	assert_int_equal(l.n, 0);
	assert_null(l.items);
	if (strcmp(m.field, field) != 0)
		fail_msg("field \"%s\" (%s), expected \"%s\" for %s", m.field, m.message,
			 field, body);
	assert_true(m.message[0] != '\0');
	feedback_list_fini(&l);
}

/* ---- nudge's JSON ---- */

static void nudge_single_and_list(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;

	assert_int_equal(parse("{\"type\":\"bounce\",\"email\":\"Ann@Example.COM\","
			       "\"permanent\":true,\"reason\":\"550 no such user\"}",
			       &l, &m),
			 NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_NUDGE);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0].address, "ann@example.com");
	assert_int_equal(l.items[0].kind, FEEDBACK_HARD_BOUNCE);
	assert_string_equal(l.items[0].reason, "550 no such user");
	feedback_list_fini(&l);

	assert_int_equal(parse("[{\"type\":\"bounce\",\"email\":\"a@b.example\","
			       "\"permanent\":false},"
			       " {\"type\":\"complaint\",\"email\":\"c@d.example\"},"
			       " {\"type\":\"complaint\",\"email\":\"e@f.example\","
			       "\"permanent\":true,\"reason\":\"fbl\"}]",
			       &l, &m),
			 NERR_OK);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.items[0].kind, FEEDBACK_SOFT_BOUNCE);
	assert_string_equal(l.items[0].reason, "");
	assert_int_equal(l.items[1].kind, FEEDBACK_COMPLAINT);
	assert_string_equal(l.items[1].address, "c@d.example");
	assert_int_equal(l.items[2].kind, FEEDBACK_COMPLAINT);
	assert_string_equal(l.items[2].reason, "fbl");
	assert_string_equal(feedback_kind_str(l.items[0].kind), "soft_bounce");
	feedback_list_fini(&l);

	assert_int_equal(parse("[]", &l, &m), NERR_OK);
	assert_int_equal(l.n, 0);
	feedback_list_fini(&l);
}

static void nudge_validation_names_fields(void **state)
{
	expect_error("{\"type\":\"bounce\",\"email\":\"a@b.example\"}", NERR_INVAL,
		     "permanent");
	expect_error("{\"type\":\"bounce\",\"email\":\"a@b.example\",\"permanent\":1}",
		     NERR_INVAL, "permanent");
	expect_error(
		"{\"type\":\"bounced\",\"email\":\"a@b.example\",\"permanent\":true}",
		NERR_INVAL, "type");
	expect_error("{\"type\":7,\"email\":\"a@b.example\"}", NERR_INVAL, "type");
	expect_error("{\"type\":\"complaint\"}", NERR_INVAL, "email");
	expect_error("{\"type\":\"complaint\",\"email\":null}", NERR_INVAL, "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"no-at-sign\"}", NERR_INVAL,
		     "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@@b.example\"}", NERR_INVAL,
		     "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a b@c.example\"}", NERR_INVAL,
		     "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"@c.example\"}", NERR_INVAL,
		     "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@\"}", NERR_INVAL, "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a\\u0000@b.example\"}",
		     NERR_INVAL, "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@b.example\\r\\nBcc: x\"}",
		     NERR_INVAL, "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"A <a@b.example>\"}", NERR_INVAL,
		     "email");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@b.example\",\"extra\":1}",
		     NERR_INVAL, "extra");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@b.example\",\"reason\":5}",
		     NERR_INVAL, "reason");
	expect_error("[{\"type\":\"complaint\",\"email\":\"a@b.example\"},"
		     "{\"type\":\"complaint\",\"email\":\"bad\"}]",
		     NERR_INVAL, "[1].email");
	expect_error("[{\"type\":\"complaint\",\"email\":\"a@b.example\"}, 3]",
		     NERR_INVAL, "[1]");
	expect_error("{\"email\":\"a@b.example\"}", NERR_INVAL, "");
	expect_error("\"bounce\"", NERR_INVAL, "");
}

static void nudge_limits(void **state)
{
	struct buf b;
	char reason[FEEDBACK_REASON_MAX + 2];

	buf_init(&b, 0);
	buf_putc(&b, '[');
	for (int i = 0; i <= FEEDBACK_ITEMS_MAX; i++)
		buf_printf(&b, "%s{\"type\":\"complaint\",\"email\":\"u%d@x.example\"}",
			   i ? "," : "", i);
	buf_putc(&b, ']');
	expect_error(buf_str(&b), NERR_LIMIT, "");
	buf_fini(&b);

	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	buf_init(&b, 0);
	buf_printf(&b,
		   "{\"type\":\"complaint\",\"email\":\"a@b.example\",\"reason\":\"%s\"}",
		   reason);
	expect_error(buf_str(&b), NERR_INVAL, "reason");
	buf_fini(&b);

	/* An address of 255 bytes. */
	char addr[300];
	memset(addr, 'a', 250);
	strcpy(addr + 250, "@b.ex");
	buf_init(&b, 0);
	buf_printf(&b, "{\"type\":\"complaint\",\"email\":\"%s\"}", addr);
	expect_error(buf_str(&b), NERR_INVAL, "email");
	buf_fini(&b);
}

static void malformed_json(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	char *big;

	expect_error("", NERR_PARSE, "");
	expect_error("{", NERR_PARSE, "");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@b.example\"} x", NERR_PARSE,
		     "");
	expect_error("{\"type\":\"complaint\",\"email\":\"a@b.example\"}{}", NERR_PARSE,
		     "");
	expect_error("{'type':'complaint'}", NERR_PARSE, "");
	expect_error("[1,]", NERR_PARSE, "");
	expect_error("{\"type\":\"complaint\",\"email\":\"\xff@b.example\"}", NERR_PARSE,
		     "");
	expect_error("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]"
		     "]]]]]]]"
		     "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		     NERR_PARSE, "");
	/* Bytes after a NUL count too. */
	feedback_list_init(&l);
	assert_int_equal(feedback_parse_email("[]\0garbage", 10, &l, &m), NERR_PARSE);
	assert_int_equal(feedback_parse_email(NULL, 0, &l, &m), NERR_PARSE);
	big = malloc(FEEDBACK_BODY_MAX + 2);
	memset(big, ' ', FEEDBACK_BODY_MAX + 1);
	big[0] = '[';
	big[FEEDBACK_BODY_MAX] = ']';
	big[FEEDBACK_BODY_MAX + 1] = '\0';
	assert_int_equal(feedback_parse_email(big, FEEDBACK_BODY_MAX + 1, &l, &m),
			 NERR_TOOBIG);
	free(big);
	/* Whitespace after the value is fine. */
	assert_int_equal(feedback_parse_email("[]\n ", 4, &l, &m), NERR_OK);
	feedback_list_fini(&l);
}

/* ---- SES through SNS ---- */

static void ses_bounce_via_sns(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	char *body = sns_wrap(ses_bounce);

	assert_int_equal(parse(body, &l, &m), NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_SES);
	assert_string_equal(l.topic_arn, "arn:aws:sns:us-west-2:123456789012:ses");
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[0].address, "jane@example.com");
	assert_int_equal(l.items[0].kind, FEEDBACK_HARD_BOUNCE);
	assert_string_equal(l.items[0].reason,
			    "Permanent/General: smtp; 550 5.1.1 user unknown");
	assert_string_equal(l.items[1].address, "richard@example.com");
	assert_string_equal(l.items[1].reason, "Permanent/General");
	feedback_list_fini(&l);
	free(body);
}

static void ses_transient_and_undetermined_are_soft(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	char *body = sns_wrap(ses_transient);

	assert_int_equal(parse(body, &l, &m), NERR_OK);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.items[0].kind, FEEDBACK_SOFT_BOUNCE);
	assert_string_equal(l.items[0].reason,
			    "Transient/MailboxFull: smtp; 452 4.2.2 mailbox full");
	feedback_list_fini(&l);
	free(body);

	assert_int_equal(
		parse("{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
		      "\"Undetermined\",\"bouncedRecipients\":[{\"emailAddress\":"
		      "\"u@x.example\"}]}}",
		      &l, &m),
		NERR_OK);
	assert_int_equal(l.items[0].kind, FEEDBACK_SOFT_BOUNCE);
	assert_string_equal(l.items[0].reason, "Undetermined");
	feedback_list_fini(&l);
}

static void ses_complaint_via_sns_and_raw(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	char *body = sns_wrap(ses_complaint);

	assert_int_equal(parse(body, &l, &m), NERR_OK);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0].address, "richard@example.com");
	assert_int_equal(l.items[0].kind, FEEDBACK_COMPLAINT);
	assert_string_equal(l.items[0].reason, "complaint: abuse");
	feedback_list_fini(&l);
	free(body);

	/* Raw message delivery: the SES JSON itself. */
	assert_int_equal(parse(ses_complaint, &l, &m), NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_SES);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.topic_arn, "");
	feedback_list_fini(&l);

	/* Event publishing spells it eventType. */
	assert_int_equal(parse("{\"eventType\":\"Complaint\",\"complaint\":{"
			       "\"complainedRecipients\":[{\"emailAddress\":"
			       "\"\\\"Rich\\\" <Rich@Example.com>\"}]}}",
			       &l, &m),
			 NERR_OK);
	assert_string_equal(l.items[0].address, "rich@example.com");
	assert_string_equal(l.items[0].reason, "complaint");
	feedback_list_fini(&l);
}

static void ses_other_types_give_nothing(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	char *body = sns_wrap(ses_delivery);

	assert_int_equal(parse(body, &l, &m), NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_SES);
	assert_int_equal(l.n, 0);
	feedback_list_fini(&l);
	free(body);
	body = sns_wrap("{\"notificationType\":\"AmazonSnsSubscriptionSucceeded\","
			"\"message\":\"You have successfully subscribed\"}");
	assert_int_equal(parse(body, &l, &m), NERR_OK);
	assert_int_equal(l.n, 0);
	feedback_list_fini(&l);
	free(body);
}

static void ses_validation_names_fields(void **state)
{
	char *body;

	body = sns_wrap("{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
			"\"Sometimes\",\"bouncedRecipients\":[]}}");
	expect_error(body, NERR_INVAL, "Message.bounce.bounceType");
	free(body);
	body = sns_wrap("{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
			"\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"ok@x."
			"example\"},"
			"{\"emailAddress\":\"not an address\"}]}}");
	expect_error(body, NERR_INVAL,
		     "Message.bounce.bouncedRecipients[1].emailAddress");
	free(body);
	body = sns_wrap(
		"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
		"\"Permanent\",\"bouncedRecipients\":[{\"action\":\"failed\"}]}}");
	expect_error(body, NERR_INVAL,
		     "Message.bounce.bouncedRecipients[0].emailAddress");
	free(body);
	body = sns_wrap("{\"notificationType\":\"Bounce\"}");
	expect_error(body, NERR_INVAL, "Message.bounce");
	free(body);
	body = sns_wrap("{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
			"\"Permanent\",\"bouncedRecipients\":[]}}");
	expect_error(body, NERR_INVAL, "Message.bounce.bouncedRecipients");
	free(body);
	body = sns_wrap("{\"notificationType\":\"Complaint\",\"complaint\":{}}");
	expect_error(body, NERR_INVAL, "Message.complaint.complainedRecipients");
	free(body);
	body = sns_wrap("not json");
	expect_error(body, NERR_PARSE, "Message");
	free(body);
	body = sns_wrap("{\"mail\":{}}");
	expect_error(body, NERR_INVAL, "Message.eventType");
	free(body);
	expect_error("{\"Type\":\"Notification\"}", NERR_INVAL, "Message");
	expect_error("{\"Type\":\"Notification\",\"Message\":{}}", NERR_INVAL, "Message");
	expect_error("{\"Type\":\"Weird\",\"Message\":\"{}\"}", NERR_INVAL, "Type");
}

static void sns_subscription_confirmation(void **state)
{
	struct feedback_list l;
	struct nerr_msg m;
	const char *ok =
		"{\"Type\":\"SubscriptionConfirmation\",\"MessageId\":\"165545c9-2a5c-"
		"472c-"
		"8df2-7ff2be2b3b1b\",\"Token\":\"2336412f37f\",\"TopicArn\":\"arn:aws:"
		"sns:us-"
		"west-2:123456789012:MyTopic\",\"Message\":\"You have chosen to "
		"subscribe to "
		"the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\\nTo confirm the "
		"subscription, visit the SubscribeURL included in this message.\","
		"\"SubscribeURL\":\"https://sns.us-west-2.amazonaws.com/?Action="
		"ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&"
		"Token=2336412f37f\",\"Timestamp\":\"2012-04-26T20:45:04.751Z\","
		"\"SignatureVersion\":\"1\",\"Signature\":\"EXAMPLEpH+\","
		"\"SigningCertURL\":"
		"\"https://sns.us-west-2.amazonaws.com/SimpleNotificationService-"
		"f3ecfb7224c7233fe7bb5f59f96de52f.pem\"}";
	const char *bad_urls[] = {
		"http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
		"https://sns.us-west-2.amazonaws.com.evil.example/?a",
		"https://evil.example/?https://sns.us-west-2.amazonaws.com/",
		"https://sns.us-west-2.amazonaws.com@evil.example/",
		"https://sns.us-west-2.amazonaws.com:8443/",
		"https://sns.evil.example.amazonaws.com/",
		"https://sns..amazonaws.com/",
		"https://sns.amazonaws.com/",
		"https://sns.us-west-2.amazonaws.com",
		"https://sns.us-west-2.amazonaws.com/ x",
	};

	assert_int_equal(parse(ok, &l, &m), NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_SNS_SUBSCRIBE);
	assert_int_equal(l.n, 0);
	assert_string_equal(
		l.subscribe_url,
		"https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&"
		"TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token="
		"2336412f37f");
	assert_string_equal(l.topic_arn, "arn:aws:sns:us-west-2:123456789012:MyTopic");
	feedback_list_fini(&l);

	assert_int_equal(parse("{\"Type\":\"SubscriptionConfirmation\",\"SubscribeURL\":"
			       "\"https://sns.cn-north-1.amazonaws.com.cn/?Action=x\"}",
			       &l, &m),
			 NERR_OK);
	feedback_list_fini(&l);

	for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		char body[512];
		snprintf(
			body, sizeof(body),
			"{\"Type\":\"SubscriptionConfirmation\",\"SubscribeURL\":\"%s\"}",
			bad_urls[i]);
		expect_error(body, NERR_INVAL, "SubscribeURL");
	}
	expect_error("{\"Type\":\"SubscriptionConfirmation\"}", NERR_INVAL,
		     "SubscribeURL");

	assert_int_equal(parse("{\"Type\":\"UnsubscribeConfirmation\",\"SubscribeURL\":"
			       "\"https://sns.us-west-2.amazonaws.com/?a\"}",
			       &l, &m),
			 NERR_OK);
	assert_int_equal(l.source, FEEDBACK_SRC_SNS_OTHER);
	assert_string_equal(l.subscribe_url, "");
	feedback_list_fini(&l);
}

static void long_diagnostic_is_cut_at_a_character(void **state)
{
	struct buf b;
	struct feedback_list l;
	struct nerr_msg m;

	buf_init(&b, 0);
	buf_puts(&b,
		 "{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
		 "\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"a@b.example\","
		 "\"diagnosticCode\":\"");
	for (int i = 0; i < 400; i++)
		buf_puts(&b, "\xc3\xa9"); /* é, two bytes */
	buf_puts(&b, "\\u0007\"}]}}");
	assert_int_equal(parse(buf_str(&b), &l, &m), NERR_OK);
	assert_true(strlen(l.items[0].reason) <= FEEDBACK_REASON_MAX);
	assert_true(strlen(l.items[0].reason) > FEEDBACK_REASON_MAX - 3);
	/* Ends on a whole character. */
	size_t rl = strlen(l.items[0].reason);
	assert_int_equal((unsigned char)l.items[0].reason[rl - 1], 0xa9);
	feedback_list_fini(&l);
	buf_fini(&b);

	/* A control character in a short reason becomes a space. */
	assert_int_equal(
		parse("{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":"
		      "\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":"
		      "\"a@b.example\",\"diagnosticCode\":\"x\\ny\"}]}}",
		      &l, &m),
		NERR_OK);
	assert_string_equal(l.items[0].reason, "Permanent: x y");
	feedback_list_fini(&l);
}

/* ---- Twilio ---- */

static enum nerr sms(const char *form, struct feedback_sms *out, struct nerr_msg *m)
{
	return feedback_parse_sms(form, strlen(form), out, m);
}

static void twilio_status_callbacks(void **state)
{
	struct feedback_sms s;
	struct nerr_msg m;

	assert_int_equal(
		sms("SmsSid=SM1f0e8ae6ade43cb3c0ce4525424e404f&SmsStatus=delivered&"
		    "MessageStatus=delivered&To=%2B15558675310&MessageSid="
		    "SM1f0e8ae6ade43cb3c0ce4525424e404f&AccountSid="
		    "AC00000000000000000000000000000000&From=%2B15017250604&ApiVersion="
		    "2010-04-01",
		    &s, &m),
		NERR_OK);
	assert_string_equal(s.provider_id, "SM1f0e8ae6ade43cb3c0ce4525424e404f");
	assert_int_equal(s.status, FEEDBACK_SMS_DELIVERED);
	assert_int_equal(s.error_code, 0);
	assert_string_equal(s.to, "+15558675310");
	assert_int_equal(feedback_sms_outcome_of(s.status), FEEDBACK_SMS_OK);
	assert_string_equal(feedback_sms_status_str(s.status), "delivered");

	assert_int_equal(sms("MessageSid=SMabc&MessageStatus=undelivered&ErrorCode=30003&"
			     "To=%2B15558675310",
			     &s, &m),
			 NERR_OK);
	assert_int_equal(s.status, FEEDBACK_SMS_UNDELIVERED);
	assert_int_equal(s.error_code, 30003);
	assert_int_equal(feedback_sms_outcome_of(s.status), FEEDBACK_SMS_FAIL);

	assert_int_equal(
		sms("MessageStatus=failed&MessageSid=SMabc&ErrorCode=30008", &s, &m),
		NERR_OK);
	assert_int_equal(s.status, FEEDBACK_SMS_FAILED);
	assert_string_equal(s.to, "");

	const char *pending[] = {"queued", "sent", "sending", "accepted", "scheduled"};
	for (size_t i = 0; i < 5; i++) {
		char f[128];
		snprintf(f, sizeof(f),
			 "MessageSid=SM1&MessageStatus=%s&ErrorCode=", pending[i]);
		assert_int_equal(sms(f, &s, &m), NERR_OK);
		assert_int_equal(feedback_sms_outcome_of(s.status), FEEDBACK_SMS_PENDING);
		assert_string_equal(feedback_sms_status_str(s.status), pending[i]);
		assert_int_equal(s.error_code, 0);
	}
	/* WhatsApp-style To, '+' meaning space decoded. */
	assert_int_equal(
		sms("MessageSid=SM1&MessageStatus=read&To=whatsapp%3A%2B1555+0", &s, &m),
		NERR_OK);
	assert_string_equal(s.to, "whatsapp:+1555 0");
	assert_int_equal(feedback_sms_outcome_of(s.status), FEEDBACK_SMS_OK);
}

static void expect_sms_error(const char *form, enum nerr rc, const char *field)
{
	struct feedback_sms s;
	struct nerr_msg m;

	assert_int_equal(sms(form, &s, &m), rc);
	if (strcmp(m.field, field) != 0)
		fail_msg("field \"%s\" (%s), expected \"%s\" for %s", m.field, m.message,
			 field, form);
	assert_int_equal(s.status, 0);
	assert_string_equal(s.provider_id, "");
}

static void twilio_validation_names_fields(void **state)
{
	char big[FEEDBACK_SMS_BODY_MAX + 16];

	expect_sms_error("MessageStatus=delivered", NERR_INVAL, "MessageSid");
	expect_sms_error("MessageSid=&MessageStatus=delivered", NERR_INVAL, "MessageSid");
	expect_sms_error("MessageSid=SM%2F1&MessageStatus=delivered", NERR_INVAL,
			 "MessageSid");
	expect_sms_error("MessageSid=SM1", NERR_INVAL, "MessageStatus");
	expect_sms_error("MessageSid=SM1&MessageStatus=Delivered", NERR_INVAL,
			 "MessageStatus");
	expect_sms_error("MessageSid=SM1&MessageStatus=gone", NERR_INVAL,
			 "MessageStatus");
	expect_sms_error("MessageSid=SM1&MessageStatus=failed&ErrorCode=abc", NERR_INVAL,
			 "ErrorCode");
	expect_sms_error("MessageSid=SM1&MessageStatus=failed&ErrorCode=-1", NERR_INVAL,
			 "ErrorCode");
	expect_sms_error("MessageSid=SM1&MessageStatus=failed&ErrorCode=1234567890",
			 NERR_INVAL, "ErrorCode");
	expect_sms_error("MessageSid=SM1&MessageSid=SM2&MessageStatus=sent", NERR_INVAL,
			 "MessageSid");
	expect_sms_error("MessageSid=SM1&MessageStatus=sent&MessageStatus=delivered",
			 NERR_INVAL, "MessageStatus");
	expect_sms_error("MessageSid=SM1&MessageStatus=sent&To=%0D%0Ax", NERR_INVAL,
			 "To");
	expect_sms_error("MessageSid=SM1&MessageStatus=sent&To=%zz", NERR_INVAL, "To");
	expect_sms_error("MessageSid=SM1&MessageStatus=sent&To=%2", NERR_INVAL, "To");
	expect_sms_error(
		"MessageSid=SM1&MessageStatus=sent&To="
		"12345678901234567890123456789012345678901234567890123456789012345",
		NERR_INVAL, "To");
	expect_sms_error("", NERR_INVAL, "MessageSid");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	expect_sms_error(big, NERR_TOOBIG, "");
	/* Unknown fields, empty pairs and odd ones are ignored. */
	{
		struct feedback_sms s;
		struct nerr_msg m;
		assert_int_equal(
			sms("&&x&=y&Foo=%zz&MessageSid=SM9&MessageStatus=sent&", &s, &m),
			NERR_OK);
		assert_string_equal(s.provider_id, "SM9");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(nudge_single_and_list),
		cmocka_unit_test(nudge_validation_names_fields),
		cmocka_unit_test(nudge_limits),
		cmocka_unit_test(malformed_json),
		cmocka_unit_test(ses_bounce_via_sns),
		cmocka_unit_test(ses_transient_and_undetermined_are_soft),
		cmocka_unit_test(ses_complaint_via_sns_and_raw),
		cmocka_unit_test(ses_other_types_give_nothing),
		cmocka_unit_test(ses_validation_names_fields),
		cmocka_unit_test(sns_subscription_confirmation),
		cmocka_unit_test(long_diagnostic_is_cut_at_a_character),
		cmocka_unit_test(twilio_status_callbacks),
		cmocka_unit_test(twilio_validation_names_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
