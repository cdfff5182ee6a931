"""`nudge apply DIR`: a folder of templates and journeys, uploaded to a real server.

Each test starts the real `nudge serve` (fresh data directory), runs the real
`nudge apply` binary against it, and checks the result through the admin API
(GET /v1/journeys/{id}, GET /v1/templates/{id}), not through apply's own output
alone. The folders are examples/ itself or temp copies with broken files added.
Under `make asan` every apply run must leave no sanitizer report (leaks included).
"""
import copy
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from nudgetest import BIN, NudgeServer, free_port

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def example_journeys():
    """{id: document} for every journey file directly in examples/."""
    out = {}
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith(".json"):
            with open(os.path.join(EXAMPLES, name)) as f:
                doc = json.load(f)
            out[doc["id"]] = doc
    return out


def example_templates():
    tdir = os.path.join(EXAMPLES, "templates")
    out = {}
    for name in sorted(os.listdir(tdir)):
        with open(os.path.join(tdir, name)) as f:
            out[name[:-5]] = json.load(f)
    return out


class ApplyTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="nudge-apply-")
        self.srv = None

    def tearDown(self):
        if self.srv:
            self.srv.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------
    def server(self):
        self.srv = NudgeServer().start()
        return self.srv

    def apply(self, *args, key=True, url=None, cwd=None, env_extra=None):
        """Runs `nudge apply ARGS`; returns CompletedProcess (text)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
        if url is None and self.srv:
            url = "http://127.0.0.1:%d" % self.srv.port
        if url:
            env["NUDGE_URL"] = url
        if key and self.srv:
            env["NUDGE_ADMIN_KEY"] = self.srv.admin_key
        env.update(env_extra or {})
        p = subprocess.run([BIN, "apply"] + list(args), capture_output=True, text=True,
                           env=env, cwd=cwd or self.tmp, timeout=60)
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, p.stderr, "sanitizer report from nudge apply")
        return p

    def get(self, path):
        return self.srv.request("GET", path, auth="admin")

    def journey(self, jid):
        r = self.get("/v1/journeys/" + jid)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def make_dir(self, journeys=(), templates=(), raw=None):
        """A folder with journeys {file: doc}, templates {id: doc}, raw {relpath: text}."""
        d = os.path.join(self.tmp, "dir")
        os.makedirs(os.path.join(d, "templates"), exist_ok=True)
        for name, doc in dict(journeys).items():
            with open(os.path.join(d, name), "w") as f:
                json.dump(doc, f, indent=2)
        for tid, doc in dict(templates).items():
            with open(os.path.join(d, "templates", tid + ".json"), "w") as f:
                json.dump(doc, f, indent=2)
        for rel, text in (raw or {}).items():
            with open(os.path.join(d, rel), "w") as f:
                f.write(text)
        return d

    def broken_cart(self, jid="broken-cart"):
        doc = copy.deepcopy(example_journeys()["cart-abandonment"])
        doc["id"] = jid
        doc["steps"]["remind"] = {"webhook": {"url": "ftp://example.com/x", "body": "{}"}, "next": "done"}
        doc["steps"]["wait_order"]["wait_for"]["timeout"] = "soon"
        return doc

    # -- tests -----------------------------------------------------------
    def test_examples_land_active_with_templates_stored(self):
        self.server()
        p = self.apply(EXAMPLES)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        journeys, templates = example_journeys(), example_templates()
        self.assertGreaterEqual(len(journeys), 5)
        for jid in journeys:
            st = self.journey(jid)
            self.assertEqual(st["status"], "active", st)
            self.assertEqual(st["version"], 1, st)
            self.assertEqual(st["versions"][0]["definition"]["steps"].keys(),
                             journeys[jid]["steps"].keys())
            self.assertIn("journey %s: published version 1\n" % jid, p.stdout)
        listed = {j["id"]: j["status"] for j in self.get("/v1/journeys").json()["journeys"]}
        self.assertEqual(listed, {jid: "active" for jid in journeys})
        for tid, doc in templates.items():
            r = self.get("/v1/templates/" + tid)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["channel"], doc["channel"])
            self.assertEqual(r.json()["version"], 1)
            self.assertIn("template %s: ok (version 1)\n" % tid, p.stdout)
        # Templates go first, then journeys, each group in name order.
        order = [l.split(":")[0] for l in p.stdout.splitlines() if l.startswith(("template ", "journey "))]
        by_file = []
        for n in sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".json")):
            with open(os.path.join(EXAMPLES, n)) as f:
                by_file.append("journey " + json.load(f)["id"])
        tfiles = [n[:-5] for n in sorted(os.listdir(os.path.join(EXAMPLES, "templates"))) if n.endswith(".json")]
        self.assertEqual(order, ["template " + t for t in tfiles] + by_file)
        self.assertIn("0 failed", p.stdout.splitlines()[-1])

    def test_applying_twice_bumps_every_version(self):
        self.server()
        self.assertEqual(self.apply(EXAMPLES).returncode, 0)
        p = self.apply(EXAMPLES)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for jid in example_journeys():
            st = self.journey(jid)
            self.assertEqual((st["status"], st["version"]), ("active", 2), st)
            self.assertEqual([v["version"] for v in st["versions"]], [1, 2])
            self.assertIn("journey %s: published version 2\n" % jid, p.stdout)
        for tid in example_templates():
            self.assertEqual(self.get("/v1/templates/" + tid).json()["version"], 2)
            self.assertIn("template %s: ok (version 2)\n" % tid, p.stdout)

    def test_invalid_journey_fails_with_its_errors_and_the_rest_lands(self):
        self.server()
        good = example_journeys()["welcome"]
        d = self.make_dir(journeys={"a-broken.json": self.broken_cart(), "b-welcome.json": good},
                          templates={"welcome": example_templates()["welcome"]})
        p = self.apply(d)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        lines = p.stdout.splitlines()
        i = lines.index("journey broken-cart: invalid")
        errs = []
        for l in lines[i + 1:]:
            if not l.startswith("  "):
                break
            errs.append(l)
        self.assertIn("  step remind: webhook.url: must start with http:// or https://", errs)
        self.assertTrue(any(e.startswith("  step wait_order: wait_for.timeout: ") for e in errs), errs)
        self.assertEqual(len(errs), 2, errs)
        # The invalid one is a draft only; the valid one and the template landed.
        st = self.journey("broken-cart")
        self.assertEqual((st["status"], st["version"], st["versions"]), ("draft", 0, []))
        self.assertEqual(self.journey("welcome")["status"], "active")
        self.assertEqual(self.get("/v1/templates/welcome").status, 200)
        self.assertIn("journey welcome: published version 1", lines)
        self.assertIn("1 failed", lines[-1])

    def test_invalid_template_fails_and_journeys_still_go(self):
        self.server()
        d = self.make_dir(journeys={"cart.json": example_journeys()["split-test"]},
                          templates={"fax": {"channel": "fax", "body": "hi"}})
        p = self.apply(d)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("template fax: invalid\n  channel: channel must be", p.stdout)
        self.assertEqual(self.get("/v1/templates/fax").status, 404)
        self.assertEqual(self.journey("split-test")["status"], "active")

    def test_two_files_with_one_id_apply_only_the_first(self):
        self.server()
        first = example_journeys()["split-test"]
        second = copy.deepcopy(first)
        second["name"] = "the second file"
        d = self.make_dir(journeys={"a.json": first, "b.json": second})
        for extra in (["--dry-run"], []):
            p = self.apply(d, *extra)
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("journey split-test: invalid\n  id: a.json already has this id; "
                          "this file (b.json) was not applied\n", p.stdout)
        st = self.journey("split-test")
        self.assertEqual([v["definition"]["name"] for v in st["versions"]], [first["name"]])

    def test_bad_json_is_reported_with_file_and_position(self):
        self.server()
        d = self.make_dir(journeys={"b-cart.json": example_journeys()["split-test"]},
                          raw={"a-bad.json": '{\n  "id": "bad",\n  "steps": {,}\n}\n',
                               "templates/t-bad.json": '{"channel": "sms", "body": "x"'})
        p = self.apply(d)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"(?m)^%s: bad JSON at line 3, column 13 \(byte 29\): \S"
                         % re_escape(os.path.join(d, "a-bad.json")))
        self.assertRegex(p.stdout, r"(?m)^%s: bad JSON at line 1, column \d+ \(byte \d+\): unexpected end"
                         % re_escape(os.path.join(d, "templates", "t-bad.json")))
        self.assertEqual(self.journey("split-test")["status"], "active")
        self.assertEqual(self.get("/v1/journeys/bad").status, 404)
        self.assertIn("2 failed", p.stdout.splitlines()[-1])

    def test_usage_errors_exit_2(self):
        p = self.apply(EXAMPLES, url="http://127.0.0.1:%d" % free_port())
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("no admin key", p.stderr)
        self.assertEqual(p.stdout, "")
        p = self.apply()
        self.assertEqual(p.returncode, 2)
        self.assertIn("missing DIR", p.stderr)
        p = self.apply(os.path.join(self.tmp, "nope"), env_extra={"NUDGE_ADMIN_KEY": "k"})
        self.assertEqual(p.returncode, 2)
        self.assertIn("nope", p.stderr)
        p = self.apply(EXAMPLES, "--bogus", env_extra={"NUDGE_ADMIN_KEY": "k"})
        self.assertEqual(p.returncode, 2)

    def test_unreachable_server_fails_every_file_and_exits_1(self):
        dead = "http://127.0.0.1:%d" % free_port()
        p = self.apply(EXAMPLES, url=dead, env_extra={"NUDGE_ADMIN_KEY": "k"})
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        n = len(example_journeys()) + len(example_templates())
        failed = [l for l in p.stdout.splitlines() if ": failed: " in l and dead in l]
        self.assertEqual(len(failed), n, p.stdout)
        self.assertIn("%d failed" % n, p.stdout.splitlines()[-1])

    def test_key_comes_from_data_keys_in_the_working_directory(self):
        self.server()
        os.makedirs(os.path.join(self.tmp, "data"))
        with open(os.path.join(self.tmp, "data", "keys"), "w") as f:
            f.write("write_key=%s\nadmin_key=%s\n" % (self.srv.write_key, self.srv.admin_key))
        p = self.apply(EXAMPLES, key=False, cwd=self.tmp)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.journey("welcome")["status"], "active")
        # A wrong key is a failure of every file, not a usage error.
        p = self.apply(EXAMPLES, "--admin-key", "wrong", key=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("template welcome: failed (HTTP 401)", p.stdout)

    def test_dry_run_checks_locally_without_a_server(self):
        dead = "http://127.0.0.1:%d" % free_port()
        p = self.apply(EXAMPLES, "--dry-run", url=dead)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("journey cart-abandonment: valid (3 steps)", p.stdout)
        missing_tmpl = copy.deepcopy(example_journeys()["welcome"])
        missing_tmpl["id"] = "welcome-2"
        d = self.make_dir(journeys={"broken.json": self.broken_cart(), "w.json": missing_tmpl})
        p = self.apply(d, "--dry-run", url=dead)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("journey broken-cart: invalid\n", p.stdout)
        self.assertIn("  step remind: webhook.url: must start with http:// or https://\n", p.stdout)
        # welcome names the email template "welcome", which this folder lacks.
        self.assertRegex(p.stdout, r"journey welcome-2: invalid\n  step \S+: [^\n]*welcome")
        self.assertIn("nothing was sent", p.stdout.splitlines()[-1])

    def test_no_publish_leaves_drafts(self):
        self.server()
        p = self.apply(EXAMPLES, "--no-publish")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for jid in example_journeys():
            st = self.journey(jid)
            self.assertEqual((st["status"], st["version"], st["versions"]), ("draft", 0, []))
            self.assertIn("steps", st["draft"])
        self.assertEqual(self.apply(EXAMPLES).returncode, 0)
        # A changed draft of an active journey does not replace version 1.
        doc = example_journeys()["cart-abandonment"]
        doc["name"] = "Cart abandonment, edited"
        d = self.make_dir(journeys={"cart.json": doc})
        p = self.apply(d, "--no-publish")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("journey cart-abandonment: draft saved (valid; version 1 stays active)", p.stdout)
        st = self.journey("cart-abandonment")
        self.assertEqual((st["status"], st["version"]), ("active", 1))
        self.assertEqual(st["draft"]["name"], "Cart abandonment, edited")
        self.assertNotEqual(st["versions"][0]["definition"]["name"], "Cart abandonment, edited")
        # An invalid draft is stored but reported, with the server's errors.
        d = self.make_dir(journeys={"broken.json": self.broken_cart()})
        p = self.apply(d, "--no-publish")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("journey broken-cart: invalid\n  step ", p.stdout)
        self.assertIn("  step remind: webhook.url: must start with http:// or https://\n", p.stdout)
        self.assertEqual(self.journey("broken-cart")["status"], "draft")


def re_escape(s):
    import re
    return re.escape(s)


if __name__ == "__main__":
    unittest.main()
