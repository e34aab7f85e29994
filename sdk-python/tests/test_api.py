"""The public API over the host imports; the fake bindings trap like the real ones on bad values."""

import json
import pathlib
import unittest

import support
from attune_sensor import Emit, Instance, clock, emit, fs, http, instances, log, state
from support import fake_fs, fake_http, fake_instances, fake_log, fake_state


class LogTest(unittest.TestCase):
    def setUp(self):
        support.reset_host()

    def test_levels_and_conversion(self):
        log.debug("d")
        log.info(42)
        log.warning("w")
        log.error("bad \udc80 byte")  # a lone surrogate would abort the instance if passed on
        levels = fake_log.Level
        self.assertEqual(
            fake_log.lines,
            [(levels.DEBUG, "d"), (levels.INFO, "42"), (levels.WARN, "w"), (levels.ERROR, "bad \\udc80 byte")],
        )


class StateTest(unittest.TestCase):
    def setUp(self):
        support.reset_host()

    def test_strings_and_json(self):
        self.assertIsNone(state.get("cursor"))
        state.set("cursor", "7")
        state.set_json("seen", {"ids": [1, 2]})
        self.assertEqual((state.get("cursor"), state.get_json("seen")), ("7", {"ids": [1, 2]}))
        self.assertEqual(state.get_json("missing", 0), 0)
        self.assertEqual(state.keys(), ["cursor", "seen"])
        state.delete("cursor")
        state.delete("cursor")
        self.assertEqual(state.keys(), ["seen"])

    def test_bad_values_raise_instead_of_trapping(self):
        with self.assertRaisesRegex(TypeError, "state value must be a str, not int"):
            state.set("cursor", 7)
        with self.assertRaisesRegex(TypeError, "state key must be a str, not int"):
            state.get(1)
        with self.assertRaisesRegex(ValueError, "state value is not valid Unicode text"):
            state.set("k", "\ud800")

    def test_quota(self):
        fake_state.quota = 10
        with self.assertRaisesRegex(state.StateError, "cannot store state key 'k': state quota of 10 bytes exceeded"):
            state.set("k", "x" * 20)


class ClockTest(unittest.TestCase):
    def test_now(self):
        self.assertEqual(clock.now_ms(), support.fake_clock.now)


class HttpTest(unittest.TestCase):
    def setUp(self):
        support.reset_host()

    def respond(self, status=200, headers=(), body=b""):
        fake_http.handler = lambda request: fake_http.IncomingResponse(status, list(headers), body)

    def test_get_response(self):
        self.respond(200, [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")], b'{"a": 1}')
        response = http.get("http://h/x", headers={"Accept": "application/json"}, timeout_ms=500)
        self.assertEqual(fake_http.sent, [fake_http.OutgoingRequest("GET", "http://h/x", [("Accept", "application/json")], None, 500)])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers, {"content-type": "application/json", "set-cookie": "a=1, b=2"})
        self.assertEqual((response.body, response.text(), response.json()), (b'{"a": 1}', '{"a": 1}', {"a": 1}))

    def test_post_json_and_bodies(self):
        self.respond(201)
        http.post("http://h/", json={"a": 1})
        http.post("http://h/", json=[], headers={"Content-Type": "application/x-custom"})
        http.request("put", "http://h/", body="é")
        first, second, third = fake_http.sent
        self.assertEqual((first.method, json.loads(first.body), first.headers), ("POST", {"a": 1}, [("content-type", "application/json")]))
        self.assertEqual(second.headers, [("Content-Type", "application/x-custom")])
        self.assertEqual((third.method, third.body), ("PUT", "é".encode()))

    def test_errors_by_kind(self):
        cases = [
            (fake_http.HttpError_Denied("host 'h' is not allowed"), "denied", "host 'h' is not allowed"),
            (fake_http.HttpError_InvalidRequest("unsupported scheme"), "invalid-request", "unsupported scheme"),
            (fake_http.HttpError_Timeout(), "timeout", "no response in time"),
            (fake_http.HttpError_TooLarge(1024), "too-large", "response body exceeds the host's cap of 1024 bytes"),
            (fake_http.HttpError_Transport("connection refused"), "transport", "connection refused"),
        ]
        for error, kind, detail in cases:
            fake_http.handler = lambda request, error=error: error
            with self.assertRaises(http.HttpError) as caught:
                http.get("http://h/")
            self.assertEqual((caught.exception.kind, str(caught.exception)), (kind, f"GET http://h/ failed ({kind}): {detail}"))

    def test_bad_arguments_raise_instead_of_trapping(self):
        self.respond()
        for kwargs, error in [
            ({"headers": {"X-Count": 5}}, TypeError),
            ({"body": 5}, TypeError),
            ({"timeout_ms": -1}, ValueError),
            ({"timeout_ms": 2.5}, ValueError),
        ]:
            with self.subTest(kwargs=kwargs), self.assertRaises(error):
                http.get("http://h/", **kwargs)
        with self.assertRaises(TypeError):
            http.get(b"http://h/")


class FsTest(unittest.TestCase):
    def setUp(self):
        support.reset_host()
        fake_fs.files["/data"] = [fake_fs.DirEntry("a.txt", False, 5, 1000)]
        fake_fs.files["/data/a.txt"] = "héllo".encode("latin-1")

    def test_reads(self):
        self.assertEqual(fs.list_dir("/data"), [fs.DirEntry("a.txt", False, 5, 1000)])
        self.assertEqual(fs.read_file(pathlib.PurePosixPath("/data/a.txt")), "héllo".encode("latin-1"))
        self.assertEqual(fs.read_text("/data/a.txt", encoding="latin-1"), "héllo")

    def test_refusals_carry_the_host_message(self):
        with self.assertRaises(fs.FsError) as caught:
            fs.read_text("/etc/passwd")
        self.assertEqual(str(caught.exception), "/etc/passwd: not a granted file")
        self.assertIsInstance(caught.exception, OSError)
        with self.assertRaisesRegex(fs.FsError, "not a granted directory"):
            fs.list_dir("/")


class InstancesTest(unittest.TestCase):
    def setUp(self):
        support.reset_host()

    def test_list_parses_params_and_follows_the_host(self):
        self.assertEqual(instances.list(), [])
        fake_instances.instances[:] = [
            fake_instances.Instance("p.check_a", "p.status", '{"url": "http://a/", "expect_status": 204}'),
            fake_instances.Instance("p.check_b", "p.status", "{}"),
        ]
        self.assertEqual(
            instances.list(),
            [Instance("p.check_a", "p.status", {"url": "http://a/", "expect_status": 204}), Instance("p.check_b", "p.status", {})],
        )
        del fake_instances.instances[0]  # a rule disabled between two polls
        self.assertEqual([i.rule for i in instances.list()], ["p.check_b"])

    def test_instance_emit_addresses_its_rule_on_its_trigger(self):
        instance = Instance("p.check_a", "p.status", {"url": "http://a/"})
        self.assertEqual(instance.emit({"ok": True}), Emit("p.status", {"ok": True}, "p.check_a"))
        self.assertEqual(len({instance, Instance("p.check_a", "p.status", {"url": "http://a/"})}), 1)  # hashable

    def test_params_that_are_not_an_object_name_the_rule(self):
        fake_instances.instances[:] = [fake_instances.Instance("p.bad", "p.status", "[1]")]
        with self.assertRaisesRegex(TypeError, "trigger_params of rule 'p.bad' must be a JSON object, not list"):
            instances.list()


class EmitTest(unittest.TestCase):
    def test_emit(self):
        marker = emit("pack.a", {"x": 1})
        self.assertEqual((marker.trigger, marker.payload, marker.rule), ("pack.a", {"x": 1}, None))
        self.assertEqual(emit("pack.a", [], rule="pack.r").rule, "pack.r")
        with self.assertRaises(TypeError):
            emit(None, {})
        with self.assertRaisesRegex(TypeError, "emit\\(\\) rule must be a str, not int"):
            emit("pack.a", {}, rule=1)
        with self.assertRaises(TypeError):
            emit("pack.a", {}, "pack.r")  # rule is keyword-only


if __name__ == "__main__":
    unittest.main()
