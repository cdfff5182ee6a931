"""wait_for engagement: a journey waits for the click on the email it sent.

Clicking the tracked link in the email takes the instance down on_event at once;
without a click, on_timeout fires after the window (the test clock moves it).
"""
import re
import time
import unittest
import uuid
from urllib.parse import urlparse
from http.client import HTTPConnection

from nudgetest import NudgeServer
from sink import Sink
from smtpsink import SmtpSink

JOURNEY = {
    "id": "nudge-click",
    "entry": {"event": "Offer"},
    "start": "mail",
    "steps": {
        "mail": {"message": {"channel": "email", "template": "offer", "category": "marketing"},
                 "next": "wait_click"},
        "wait_click": {"wait_for": {"step": "mail", "engagement": "clicked", "timeout": "1d"},
                       "on_event": "clicked", "on_timeout": "ignored"},
        "clicked": {"webhook": {"url": "URL/hook/clicked", "body": "{\"u\": {{ journey.entry.userId | json }}}"},
                    "next": "done"},
        "ignored": {"webhook": {"url": "URL/hook/ignored", "body": "{\"u\": {{ journey.entry.userId | json }}}"},
                    "next": "done"},
        "done": {"end": {}},
    },
}


class EngagementTest(unittest.TestCase):
    def test_click_resolves_the_wait_and_silence_times_out(self):
        sink, smtp = Sink(), SmtpSink()
        cfg = ("[webhook]\nallow = 127.0.0.1/32\n[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\n" % smtp.port)
        try:
            with NudgeServer(extra_args=["--test-clock"], config_text=cfg) as srv:
                tpl = {"channel": "email", "subject": "Offer",
                       "html": "<p><a href=\"https://shop.example/offer\">Offer</a></p>"}
                self.assertEqual(srv.request("PUT", "/v1/templates/offer", tpl, auth="admin").status, 200)
                j = __import__("json").loads(__import__("json").dumps(JOURNEY).replace("URL", sink.url()))
                self.assertEqual(srv.request("PUT", "/v1/journeys/nudge-click", j, auth="admin").status, 200)
                self.assertEqual(srv.request("POST", "/v1/journeys/nudge-click/publish", auth="admin").status, 200)
                users = []
                for _ in range(2):
                    u = "e-" + uuid.uuid4().hex[:8]
                    srv.post("/v1/identify", {"userId": u, "traits": {"email": u + "@example.org"}})
                    srv.post("/v1/track", {"userId": u, "event": "Offer"})
                    users.append(u)
                clicker, silent = users
                mail = smtp.wait(lambda s: s.to(clicker + "@example.org"))[0]["msg"]
                html = [p for p in mail.iter_parts() if p.get_content_type() == "text/html"][0].get_content()
                link = urlparse(re.search(r'href="(http://[^"]+/t/c/[^"]+)"', html).group(1))
                c = HTTPConnection(link.hostname, link.port, timeout=5)
                c.request("GET", link.path)
                self.assertEqual(c.getresponse().status, 302)
                c.close()
                hooks = lambda path: [r["body"]["u"] for r in sink.received(path)]
                sink.wait(lambda s: clicker in hooks("/hook/clicked"))
                self.assertNotIn(silent, hooks("/hook/clicked"))
                self.assertEqual(hooks("/hook/ignored"), [])
                srv.request("POST", "/v1/debug/clock", {"advance": "1d1m"}, auth="admin")
                sink.wait(lambda s: silent in hooks("/hook/ignored"))
                time.sleep(0.3)
                self.assertEqual(hooks("/hook/ignored"), [silent])
                self.assertEqual(hooks("/hook/clicked"), [clicker])
        finally:
            sink.close()
            smtp.close()


if __name__ == "__main__":
    unittest.main()
