"""test_journey_cli.py -- black-box tests of `nudge journey validate` (the real binary).

Checks the contract of the subcommand: a valid journey prints "valid: N steps" and
exits 0 (every file in examples/ among them); an invalid one exits 1 with one
"step X: FIELD: MESSAGE" line per error on stderr; --templates DIR checks template
ids against DIR/ID.json and their channel; usage errors and unreadable files
exit 2.
"""
import json
import os
import subprocess
import tempfile
import unittest

NUDGE = os.environ.get("NUDGE_BIN", "build/nudge")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples")


def journey(steps, **top):
    doc = {"id": "j", "entry": {"event": "E"}, "start": "s", "steps": steps}
    doc.update(top)
    return doc


class JourneyCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, content):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def run_cli(self, *args):
        p = subprocess.run([NUDGE, "journey", *args], capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")

    def validate(self, doc, *args):
        return self.run_cli("validate", self.write("j.json", doc), *args)

    def test_every_example_is_valid(self):
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".json"))
        self.assertEqual(len(names), 11)
        for name in names:
            with open(os.path.join(EXAMPLES, name)) as f:
                nsteps = len(json.load(f)["steps"])
            for extra in ([], ["--templates", os.path.join(EXAMPLES, "templates")]):
                rc, out, err = self.run_cli("validate", os.path.join(EXAMPLES, name), *extra)
                self.assertEqual((rc, out, err), (0, "valid: %d steps\n" % nsteps, ""), name)

    def test_valid_journey(self):
        rc, out, err = self.validate(journey({
            "s": {"wait": {"duration": "1h"}, "next": "e"},
            "e": {"end": {}}}))
        self.assertEqual((rc, out, err), (0, "valid: 2 steps\n", ""))

    def test_errors_one_line_each_exit_1(self):
        rc, out, err = self.validate(journey({
            "s": {"wait": {"duration": "3 days"}, "next": "x"},
            "m": {"message": {"channel": "email", "template": "t"}, "next": "s", "color": 1},
            "b": {"branch": [{"when": "profile.traits.a ==", "next": "s"}], "else": "b"}},
            reentry={"allow": "yes"}))
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertIn("reentry.allow: must be a boolean, not a string", lines)
        self.assertIn("step s: wait.duration: invalid duration '3 days' "
                      "(use e.g. 30s, 15m, 1h, 7d, 2w)", lines)
        self.assertIn("step s: next: unknown step 'x'", lines)
        self.assertIn("step m: color: unknown field 'color'", lines)
        self.assertIn("step b: branch[0].when: invalid CEL: line 1, column 20: "
                      "unexpected end of expression", lines)
        self.assertIn("step b: loop without a wait: b -> b (put a wait or wait_for step in it)",
                      lines)
        self.assertEqual(len(lines), 6, err)

    def test_graph_errors(self):
        rc, _, err = self.validate(journey({
            "s": {"branch": [{"when": "true", "next": "h"}], "else": "e"},
            "h": {"webhook": {"url": "http://127.0.0.1:9/x", "body": "{}"}, "next": "s"},
            "e": {"end": {}},
            "lost": {"end": {}}}))
        self.assertEqual(rc, 1)
        self.assertEqual(err.splitlines(), [
            "step lost: unreachable from start step 's'",
            "step s: loop without a wait: s -> h -> s (put a wait or wait_for step in it)",
        ])

    def test_not_json(self):
        rc, out, err = self.validate('{"id": "j",\n "steps": [}')
        self.assertEqual((rc, out), (1, ""))
        self.assertTrue(err.startswith("document: invalid JSON at line 2, column 12"), err)

    def test_templates_checked_only_with_templates_dir(self):
        doc = journey({
            "s": {"message": {"channel": "email", "template": "welcome"}, "next": "w"},
            "w": {"webhook": {"url": "https://example.com/h", "template": "hook"}, "next": "e"},
            "e": {"end": {}}})
        rc, out, _ = self.validate(doc)
        self.assertEqual((rc, out), (0, "valid: 3 steps\n"))
        tdir = os.path.join(self.dir, "templates")
        self.write("templates/welcome.json", {"channel": "email", "subject": "Hi", "text": "Hi"})
        self.write("templates/hook.json", {"channel": "sms", "body": "x"})
        rc, out, err = self.validate(doc, "--templates", tdir)
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "step w: webhook.template: unknown template 'hook' for channel webhook\n")
        self.write("templates/hook.json", {"channel": "webhook", "body": "{}"})
        rc, out, err = self.validate(doc, "--templates", tdir)
        self.assertEqual((rc, out, err), (0, "valid: 3 steps\n", ""))

    def test_usage_and_missing_file_exit_2(self):
        for args in ([], ["validate"], ["check", "x.json"], ["validate", "a", "b"],
                     ["validate", "--bogus", "a"]):
            rc, out, err = self.run_cli(*args)
            self.assertEqual((rc, out), (2, ""), args)
            self.assertIn("usage: nudge journey validate FILE", err)
        rc, _, err = self.run_cli("validate", os.path.join(self.dir, "missing.json"))
        self.assertEqual(rc, 2)
        self.assertIn("missing.json: No such file or directory", err)

    def test_too_large_document(self):
        doc = journey({"s": {"end": {}}}, description="x" * (1 << 20))
        rc, _, err = self.validate(doc)
        self.assertEqual(rc, 1)
        self.assertEqual(err, "document: larger than the limit of 1048576 bytes\n")


if __name__ == "__main__":
    unittest.main()
