"""The plain-source runtime, driven like the host drives it, on the fixtures the Rust tests use."""

import json
import marshal
import pickle
import sys
import types
import unittest

import support
from attune_sensor import _glue, _runtime
from support import FIXTURES, sensor_error


def load(filename: str, source: str, config: str = "{}") -> _runtime.Guest:
    _runtime.SourceLoader().load(filename, source, None)
    guest = _runtime.Guest()
    guest.init(config)
    return guest


def load_fixture(name: str, config: dict = {}) -> _runtime.Guest:
    return load(name, (FIXTURES / name).read_text(), json.dumps(config))


def poll(guest: _runtime.Guest) -> list:
    return [(p.trigger, json.loads(p.json)) for p in guest.poll()]


class LoadTest(unittest.TestCase):
    def setUp(self):
        self.host = support.fresh_host(self)

    def test_syntax_error(self):
        error = sensor_error(lambda: _runtime.SourceLoader().load("my_sensor.py", (FIXTURES / "syntax_error.py").read_text(), None))
        self.assertEqual(error.message, "SyntaxError: '(' was never closed (my_sensor.py, line 3)")
        self.assertIn('File "my_sensor.py", line 3', error.traceback)

    def test_no_poll(self):
        error = sensor_error(lambda: _runtime.SourceLoader().load("my_sensor.py", (FIXTURES / "no_poll.py").read_text(), None))
        self.assertEqual(error.message, "my_sensor.py defines no poll(config) function")

    def test_error_while_executing_the_module(self):
        error = sensor_error(lambda: _runtime.SourceLoader().load("s.py", "x = 1\ny = missing\n", None))
        self.assertEqual(error.message, "NameError: name 'missing' is not defined")
        self.assertIn('File "s.py", line 2, in <module>', error.traceback)

    def test_load_returns_the_compiled_form_and_loads_from_one(self):
        source = "def poll(config):\n    return [{'n': 1}]\n"
        compiled = _runtime.SourceLoader().load("s.py", source, None)
        self.assertIsInstance(marshal.loads(compiled), types.CodeType)
        # Given a compiled form, the runtime runs it (not the source) and returns nothing to keep.
        other = marshal.dumps(compile("def poll(config):\n    return [{'n': 2}]\n", "s.py", "exec"))
        self.assertEqual(_runtime.SourceLoader().load("s.py", source, other), b"")
        guest = _runtime.Guest()
        guest.init("{}")
        self.assertEqual(poll(guest), [(None, {"n": 2})])

    def test_unreadable_compiled_form_is_compiled_again(self):
        source = "def poll(config):\n    return [{'n': 1}]\n"
        for unreadable in (b"not a code object", marshal.dumps({"not": "code"})):
            compiled = _runtime.SourceLoader().load("s.py", source, unreadable)
            self.assertIsInstance(marshal.loads(compiled), types.CodeType)
            guest = _runtime.Guest()
            guest.init("{}")
            self.assertEqual(poll(guest), [(None, {"n": 1})])

    def test_module_is_registered_for_pickle(self):
        load("s.py", "class Seen:\n    pass\ndef poll(config):\n    return []\n")
        seen = sys.modules[_glue.MODULE_NAME].Seen()
        self.assertIsInstance(pickle.loads(pickle.dumps(seen)), type(seen))


class FixtureTest(unittest.TestCase):
    def setUp(self):
        self.host = support.fresh_host(self)

    def test_raises(self):
        error = sensor_error(load_fixture("raises.py").poll)
        self.assertEqual(error.message, "KeyError: 'items'")
        self.assertEqual(error.traceback.count('  File "raises.py"'), 2)

    def test_counter_keeps_its_count_in_state(self):
        guest = load_fixture("counter.py")
        self.assertEqual([poll(guest), poll(guest)], [[(None, {"n": 1})], [(None, {"n": 2})]])
        self.assertEqual(poll(load_fixture("counter.py")), [(None, {"n": 3})])  # a fresh instance

    def test_multi_trigger(self):
        self.assertEqual(poll(load_fixture("multi_trigger.py")), [("fixtures.a", {"x": 1}), ("fixtures.b", {"y": 2})])

    def test_instances_are_read_on_every_poll(self):
        guest = load(
            "per_rule.py",
            "from attune_sensor import instances\n"
            "def poll(config):\n"
            "    return [i.emit({'url': i.params['url']}) for i in instances.list()]\n",
        )
        self.assertEqual(guest.poll(), [])
        self.host.instances.add({"url": "http://a/"}, rule="p.a", trigger="p.t")
        self.host.instances.add({"url": "http://b/"}, rule="p.b", trigger="p.t")
        self.assertEqual(
            [(p.trigger, p.rule, json.loads(p.json)) for p in guest.poll()],
            [("p.t", "p.a", {"url": "http://a/"}), ("p.t", "p.b", {"url": "http://b/"})],
        )

    def test_sizes(self):
        [(_, big)] = poll(load_fixture("big_payload.py"))
        self.assertEqual(len(big["blob"]), 200_000)
        self.assertEqual(len(poll(load_fixture("many_payloads.py"))), 1000)

    def test_stdlib(self):
        [(_, proof)] = poll(load_fixture("stdlib.py"))
        self.assertEqual(proof["decimal"], "0.3")
        self.assertEqual(proof["statistics"], 2.5)
        self.assertEqual(proof["uuid"], "a1800330-bbb0-5ccf-8cb3-26cf61154f2c")
        self.assertEqual(proof["csv"], [["a", "b"], ["1", "2"]])

    def test_env_probe_reports_rather_than_crashes(self):
        [(_, seen)] = poll(load_fixture("env_probe.py"))
        self.assertEqual(sorted(seen), ["argv", "cwd_listing", "environ", "etc_passwd"])

    def test_http_denied(self):
        [(_, seen)] = poll(load_fixture("http_denied.py", {"url": "http://example.com/"}))
        self.assertEqual(seen["kind"], "denied")
        self.assertEqual(seen["error"], "GET http://example.com/ failed (denied): example.com:80 is not an allowed host (allowed: none)")

    def test_path_read(self):
        self.host.fs.files["/data/a.txt"] = b"hello"
        self.assertEqual(poll(load_fixture("path_read.py", {"path": "/data/a.txt"})), [(None, {"content": "hello"})])
        self.assertEqual(
            poll(load_fixture("path_read.py", {"path": "/etc/passwd"})),
            [(None, {"error": "/etc/passwd: access denied (not under a granted path)"})],
        )


if __name__ == "__main__":
    unittest.main()
