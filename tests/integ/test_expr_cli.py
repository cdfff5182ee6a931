"""test_expr_cli -- black-box tests of `nudge expr [--vars FILE|-] EXPR`.

The contract: the value is printed as a CEL literal on stdout with exit 0; an
evaluation error prints `error: MESSAGE` on stderr with exit 1; a parse error
exits 2 and names the line and column. Variables are the top-level keys of a
JSON object read from a file or from stdin.
"""
import json
import os
import subprocess
import tempfile
import unittest

BIN = os.environ.get("NUDGE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "nudge"))


def run(*args, stdin=None):
    p = subprocess.run([BIN, "expr", *args], input=stdin, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


class ExprCliTest(unittest.TestCase):
    def assert_value(self, expr, want, *args, stdin=None):
        rc, out, err = run(*args, expr, stdin=stdin)
        self.assertEqual((rc, out, err), (0, want + "\n", ""), expr)

    def test_prints_values_as_cel_literals(self):
        cases = [
            ("1", "1"),
            ("1u", "1u"),
            ("1.0", "1.0"),
            ("2.5e20", "2.5e+20"),
            ("0.0/0.0", 'double("NaN")'),
            ("1.0/0.0", 'double("+Infinity")'),
            ("-1.0/0.0", 'double("-Infinity")'),
            ("'te\"xt\\n'", '"te\\"xt\\n"'),
            ("b'\\x00'", 'b"\\x00"'),
            ("true", "true"),
            ("null", "null"),
            ("[1, 2]", "[1, 2]"),
            ("{'a': 1}", '{"a": 1}'),
            ("timestamp('2026-01-02T03:04:05Z')", 'timestamp("2026-01-02T03:04:05Z")'),
            ("duration('1h')", 'duration("3600s")'),
            ("-9223372036854775808", "-9223372036854775808"),
        ]
        for expr, want in cases:
            self.assert_value(expr, want)

    def test_variables_from_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"event": {"properties": {"price": 79.9, "qty": 2}},
                       "profile": {"traits": {"country": "FR"}},
                       "not an identifier": 1}, f)
            path = f.name
        try:
            self.assert_value('event.properties.price > 50.0 && profile.traits.country == "FR"',
                              "true", "--vars", path)
            # JSON integers are int, other numbers double
            self.assert_value("[event.properties.qty, event.properties.price]", "[2, 79.9]",
                              "--vars", path)
        finally:
            os.unlink(path)

    def test_variables_from_stdin(self):
        self.assert_value("has(a.b) && !has(a.c) && a.b.size() == 2", "true", "--vars", "-",
                          stdin='{"a": {"b": [1, 2]}}')

    def test_timestamp_string_stays_string_until_converted(self):
        vars_json = '{"t": "2026-11-27T08:15:00Z"}'
        self.assert_value("type(t) == string", "true", "--vars", "-", stdin=vars_json)
        self.assert_value("timestamp(t).getHours('Europe/Paris')", "9", "--vars", "-",
                          stdin=vars_json)

    def test_now_is_the_current_time_unless_given(self):
        self.assert_value("now > timestamp('2026-01-01T00:00:00Z') && "
                          "now < timestamp('2200-01-01T00:00:00Z')", "true")
        self.assert_value("now", '"2020-05-06T07:08:09Z"', "--vars", "-",
                          stdin='{"now": "2020-05-06T07:08:09Z"}')

    def test_evaluation_error_exits_1(self):
        rc, out, err = run("9223372036854775807 + 1")
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "error: integer overflow\n")
        rc, out, err = run("{'a': 1}.b")
        self.assertEqual((rc, err), (1, "error: no such key: b\n"))

    def test_parse_error_exits_2_with_line_and_column(self):
        rc, out, err = run("1 +\n (2 * )")
        self.assertEqual((rc, out), (2, ""))
        self.assertEqual(err, "error: line 2, column 7: unexpected ')'\n")

    def test_help_exits_0(self):
        rc, out, err = run("--help")
        self.assertEqual(rc, 0)
        self.assertIn("usage: nudge expr", out)

    def test_usage_errors_exit_2(self):
        self.assertEqual(run()[0], 2)
        self.assertEqual(run("1", "2")[0], 2)
        self.assertEqual(run("--vars", "/nonexistent/file.json", "1")[0], 2)
        self.assertEqual(run("--vars", "-", "1", stdin="[1]")[0], 2)
        self.assertEqual(run("--vars", "-", "1", stdin="{bad json")[0], 2)


if __name__ == "__main__":
    unittest.main()
