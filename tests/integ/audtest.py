"""audtest -- helpers the audience tests share: admin calls, people, waiting.

A mixin for unittest.TestCase classes that have `self.srv` (a NudgeServer).
"""
import time
import uuid


class AudienceHelpers:
    def admin(self, method, path, body=None, want=200):
        """An admin request; asserts the status unless want is None."""
        r = self.srv.request(method, path, body, auth="admin")
        if want is not None:
            self.assertEqual(r.status, want, r)
        return r

    def person(self, **traits):
        u = "a-" + uuid.uuid4().hex[:10]
        self.assertEqual(self.srv.post("/v1/identify", {"userId": u, "traits": traits}).status, 200)
        return u

    def settle(self):
        """Waits until the engine has applied everything sent so far."""
        marker = "settle-" + uuid.uuid4().hex[:8]
        self.assertEqual(self.srv.post("/v1/track", {"userId": marker, "event": "Settle Marker"}).status, 200)
        self.srv.wait_profile("user_id", marker)

    def profile(self, user):
        return self.admin("GET", "/v1/profiles/user_id/" + user).json()

    def wait_for(self, pred, timeout=20, what="condition"):
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = pred()
            except (AssertionError, KeyError):
                v = None
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what)

    def wait_backfill(self, kind, aid):
        """Waits for the back-fill of /v1/{kind}/{aid}; returns its GET."""
        return self.wait_for(
            lambda: (lambda d: d if d.get("backfill", {}).get("state") == "done" else None)(
                self.admin("GET", "/v1/%s/%s" % (kind, aid)).json()), what="back-fill of " + aid)
