"""test_render_cli.py -- black-box tests of `nudge render` (the real binary).

Checks the contract of the subcommand: output on stdout and exit 0; compile
errors exit 2 and render errors exit 1 with LINE:COL on stderr; --data from a
file or stdin; --partials DIR with and without the .liquid suffix; --html and
--strict; and the benchmark cart email rendering byte for byte.
"""
import json
import os
import subprocess
import tempfile
import unittest

NUDGE = os.environ.get("NUDGE_BIN", "build/nudge")
SHARED = os.environ.get("NUDGE_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))


class RenderCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def render(self, template, *args, data=None, stdin=None):
        path = self.write("t.liquid", template)
        argv = [NUDGE, "render", path, *args]
        if data is not None:
            argv += ["--data", self.write("data.json", json.dumps(data))]
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")

    def test_renders_with_data_file(self):
        rc, out, err = self.render("Hi {{ profile.traits.first_name | default: 'there' }}!",
                                   data={"profile": {"traits": {"first_name": "Ana"}}})
        self.assertEqual((rc, out, err), (0, "Hi Ana!", ""))

    def test_data_from_stdin(self):
        rc, out, _ = self.render("{{ event.event }}", "--data", "-",
                                 stdin=b'{"event": {"event": "Order Completed"}}')
        self.assertEqual((rc, out), (0, "Order Completed"))

    def test_no_data_renders_empty_context(self):
        rc, out, _ = self.render("[{{ nothing }}]{% for i in (1..3) %}{{ i }}{% endfor %}")
        self.assertEqual((rc, out), (0, "[]123"))

    def test_compile_error_exits_2_with_position(self):
        rc, out, err = self.render("line one\n  {% iff x %}")
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertIn(":2:3:", err)
        self.assertIn("iff", err)

    def test_render_error_exits_1_with_position(self):
        rc, _, err = self.render("ok\n{{ 10 | divided_by: zero }}", data={"zero": 0})
        self.assertEqual(rc, 1)
        self.assertIn(":2:", err)
        self.assertIn("divided by 0", err)

    def test_strict_rejects_unknown_filter_lax_ignores_it(self):
        rc, out, _ = self.render("{{ 'a' | nosuchfilter }}")
        self.assertEqual((rc, out), (0, "a"))
        rc, _, err = self.render("{{ 'a' | nosuchfilter }}", "--strict")
        self.assertEqual(rc, 2)
        self.assertIn("nosuchfilter", err)

    def test_html_escapes_unless_raw(self):
        tpl = "{{ v }}|{{ v | raw }}|{{ v | escape }}"
        rc, out, _ = self.render(tpl, "--html", data={"v": "<a&b>"})
        self.assertEqual((rc, out), (0, "&lt;a&amp;b&gt;|<a&b>|&lt;a&amp;b&gt;"))
        rc, out, _ = self.render(tpl, data={"v": "<a&b>"})
        self.assertEqual((rc, out), (0, "<a&b>|<a&b>|&lt;a&amp;b&gt;"))

    def test_partials_dir_prefers_liquid_suffix(self):
        self.write("parts/greet.liquid", "Hello {{ name }}")
        self.write("parts/plain", "plain {{ name }}")
        rc, out, err = self.render("{% render 'greet', name: 'Ana' %}/{% include 'plain' %}",
                                   "--partials", os.path.join(self.dir, "parts"),
                                   data={"name": "Bo"})
        self.assertEqual((rc, out, err), (0, "Hello Ana/plain Bo", ""))

    def test_missing_partial_is_render_error(self):
        rc, _, err = self.render("{% include 'nope' %}", "--partials", self.dir)
        self.assertEqual(rc, 1)
        self.assertIn("nope", err)

    def test_partial_names_cannot_leave_dir(self):
        self.write("secret", "s3cret")
        os.makedirs(os.path.join(self.dir, "parts"), exist_ok=True)
        rc, out, _ = self.render("{% include '../secret' %}", "--partials",
                                 os.path.join(self.dir, "parts"))
        self.assertEqual(rc, 1)
        self.assertNotIn("s3cret", out)

    def test_bad_data_exits_2(self):
        path = self.write("t.liquid", "x")
        bad = self.write("bad.json", "{not json")
        p = subprocess.run([NUDGE, "render", path, "--data", bad], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)

    def test_usage_error_exits_2(self):
        p = subprocess.run([NUDGE, "render"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)

    def test_cart_reminder_benchmark_email(self):
        base = os.path.join(SHARED, "bench", "cart-reminder")
        p = subprocess.run([NUDGE, "render", base + ".liquid", "--data", base + ".data.json"],
                           capture_output=True, timeout=30)
        with open(base + ".expected.html", "rb") as f:
            want = f.read()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, want)


if __name__ == "__main__":
    unittest.main()
