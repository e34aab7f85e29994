"""The public API over the host imports, answered by the test kit's fake host (whose bindings trap
like the real ones on bad values, and which behaves as the host does)."""

import datetime
import json
import pathlib
import tempfile
import unittest

import support
from attune_sensor import Emit, Instance, clock, emit, fs, http, instances, log, state
from attune_sensor._fakewit import http as wit_http
from attune_sensor.testing import UnmatchedRequest


class LogTest(unittest.TestCase):
    def test_levels_and_conversion(self):
        host = support.fresh_host(self)
        log.debug("d")
        log.info(42)
        log.warning("w")
        log.error("bad \udc80 byte")  # a lone surrogate would abort the instance if passed on
        self.assertEqual(host.log.lines, [("debug", "d"), ("info", "42"), ("warning", "w"), ("error", "bad \\udc80 byte")])
        self.assertEqual(host.log.messages("warning"), ["w"])


class StateTest(unittest.TestCase):
    def setUp(self):
        self.host = support.fresh_host(self)

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
        self.assertEqual(self.host.state.values, {"seen": '{"ids": [1, 2]}'})

    def test_bad_values_raise_instead_of_trapping(self):
        with self.assertRaisesRegex(TypeError, "state value must be a str, not int"):
            state.set("cursor", 7)
        with self.assertRaisesRegex(TypeError, "state key must be a str, not int"):
            state.get(1)
        with self.assertRaisesRegex(ValueError, "state value is not valid Unicode text"):
            state.set("k", "\ud800")

    def test_the_hosts_limits(self):
        with self.assertRaisesRegex(state.StateError, "cannot store state key 'k': state value for `k` is 65537 bytes \\(limit 65536\\)"):
            state.set("k", "x" * 65537)
        with self.assertRaisesRegex(state.StateError, "state key must be 1 to 256 bytes"):
            state.set("", "x")
        self.host.state.values.update((f"k{i}", "") for i in range(1000))
        with self.assertRaisesRegex(state.StateError, "state is full \\(1000 keys\\)"):
            state.set("one_more", "x")
        state.set("k1", "an existing key may still change")


class ClockTest(unittest.TestCase):
    def test_now_is_the_fake_clock(self):
        host = support.fresh_host(self, now_ms=1_000)
        self.assertEqual(clock.now_ms(), 1_000)
        host.clock.advance(500, seconds=2)
        self.assertEqual(clock.now_ms(), 3_500)
        host.clock.set(datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc))
        self.assertEqual(clock.now_ms(), 1_717_200_000_000)
        with self.assertRaisesRegex(ValueError, "aware datetime"):
            host.clock.set(datetime.datetime(2024, 6, 1))


class HttpTest(unittest.TestCase):
    def setUp(self):
        self.host = support.fresh_host(self, http=["h"])

    def test_get_response(self):
        self.host.http.add("GET", "http://h/x", headers=[("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")], body=b'{"a": 1}')
        response = http.get("http://h/x", headers={"Accept": "application/json"}, timeout_ms=500)
        self.assertEqual(self.host.http.requests, [wit_http.OutgoingRequest("GET", "http://h/x", [("Accept", "application/json")], None, 500)])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers, {"content-type": "application/json", "set-cookie": "a=1, b=2"})
        self.assertEqual((response.body, response.text(), response.json()), (b'{"a": 1}', '{"a": 1}', {"a": 1}))

    def test_json_fixture(self):
        self.host.http.add("GET", "http://h/items", json={"items": []}, status=202)
        response = http.get("http://h/items")
        self.assertEqual((response.status, response.headers, response.json()), (202, {"content-type": "application/json"}, {"items": []}))

    def test_post_json_and_bodies(self):
        for method in ("POST", "PUT"):
            self.host.http.add(method, "http://h/", status=201)
        http.post("http://h/", json={"a": 1})
        http.post("http://h/", json=[], headers={"Content-Type": "application/x-custom"})
        http.request("put", "http://h/", body="é")
        first, second, third = self.host.http.requests
        self.assertEqual((first.method, json.loads(first.body), first.headers), ("POST", {"a": 1}, [("content-type", "application/json")]))
        self.assertEqual(second.headers, [("Content-Type", "application/x-custom")])
        self.assertEqual((third.method, third.body), ("PUT", "é".encode()))

    def test_errors_by_kind(self):
        cases = [
            ("denied", "host 'h' is not allowed", "host 'h' is not allowed"),
            ("invalid-request", "unsupported scheme", "unsupported scheme"),
            ("timeout", None, "no response in time"),
            ("too-large", 1024, "response body exceeds the host's cap of 1024 bytes"),
            ("transport", None, "connection refused"),
        ]
        for kind, detail, shown in cases:
            self.host.http.fail("GET", "http://h/", kind, detail)
            with self.assertRaises(http.HttpError) as caught:
                http.get("http://h/")
            self.assertEqual((caught.exception.kind, str(caught.exception)), (kind, f"GET http://h/ failed ({kind}): {shown}"))
        with self.assertRaisesRegex(ValueError, "unknown HTTP error kind 'refused'"):
            self.host.http.fail("GET", "http://h/", "refused")

    def test_the_hosts_checks_come_before_the_fixtures(self):
        self.host.http.add("GET", "http://other/", status=200)
        for url, method, kind, detail in [
            ("http://other/", "GET", "denied", "other:80 is not an allowed host (allowed: h)"),
            ("https://other:8443/", "GET", "denied", "other:8443 is not an allowed host (allowed: h)"),
            ("ftp://h/", "GET", "invalid-request", "ftp://h/: only http and https are supported"),
            ("http://h/", "TRACE", "invalid-request", "unsupported method `TRACE`"),
        ]:
            with self.subTest(url=url, method=method), self.assertRaises(http.HttpError) as caught:
                http.request(method, url)
            self.assertEqual(caught.exception.kind, kind)
            self.assertTrue(str(caught.exception).endswith(f"({kind}): {detail}"), str(caught.exception))

    def test_grants_match_as_the_hosts_do(self):
        self.host.http.grant("*.example.com", "127.0.0.1:8000", "[::1]")
        allowed = ["http://api.example.com/", "https://a.b.example.com/", "http://127.0.0.1:8000/", "http://[::1]:9/"]
        refused = ["http://example.com/", "http://127.0.0.1:8001/", "http://127.0.0.1/"]
        for url in allowed:
            self.host.http.add("GET", url)
            self.assertEqual(http.get(url).status, 200, url)
        for url in refused:
            with self.subTest(url=url), self.assertRaises(http.HttpError) as caught:
                http.get(url)
            self.assertEqual(caught.exception.kind, "denied")
        with self.assertRaisesRegex(ValueError, "give a host name, not a URL"):
            self.host.http.grant("http://example.com")

    def test_deny_revokes_a_granted_host(self):
        self.host.http.add("GET", "http://h/")
        self.host.http.deny("h")
        with self.assertRaises(http.HttpError) as caught:
            http.get("http://h/")
        self.assertEqual(str(caught.exception), "GET http://h/ failed (denied): h:80 is not an allowed host (allowed: none)")

    def test_a_request_without_fixture_fails_the_test_naming_it(self):
        self.host.http.add("GET", "http://h/items")
        self.host.http.add("POST", "http://h/items")
        with self.assertRaises(UnmatchedRequest) as caught:
            http.get("http://h/itemz")
        self.assertEqual(
            str(caught.exception),
            "no HTTP fixture for GET http://h/itemz; registered:\n  GET http://h/items\n  POST http://h/items\n"
            "add one with host.http.add('GET', 'http://h/itemz', json=...) (or status=, headers=, body=)",
        )
        self.assertEqual([r.url for r in self.host.http.unmatched], ["http://h/itemz"])

    def test_bad_arguments_raise_instead_of_trapping(self):
        self.host.http.add("GET", "http://h/")
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
        self.host = support.fresh_host(self, files={"/data/a.txt": "héllo".encode("latin-1"), "/data/sub/b.txt": "b"})

    def test_in_memory_files(self):
        self.assertEqual(fs.list_dir("/data"), [fs.DirEntry("a.txt", False, 5, 0), fs.DirEntry("sub", True, 0, 0)])
        self.assertEqual(fs.read_file(pathlib.PurePosixPath("/data/a.txt")), "héllo".encode("latin-1"))
        self.assertEqual(fs.read_text("/data/a.txt", encoding="latin-1"), "héllo")
        self.assertEqual(fs.read_text("/data/sub/b.txt"), "b")

    def test_refusals_carry_the_hosts_messages(self):
        with self.assertRaises(fs.FsError) as caught:
            fs.read_text("/etc/passwd")
        self.assertEqual(str(caught.exception), "/etc/passwd: access denied (not under a granted path)")
        self.assertIsInstance(caught.exception, OSError)
        with self.assertRaisesRegex(fs.FsError, "^/data/c.txt: No such file or directory \\(os error 2\\)$"):
            fs.read_file("/data/c.txt")
        with self.assertRaisesRegex(fs.FsError, "^/data/sub: not a regular file \\(a directory\\)$"):
            fs.read_file("/data/sub")

    def test_a_granted_real_directory(self):
        with tempfile.TemporaryDirectory() as base:
            inbox, outside = pathlib.Path(base, "inbox"), pathlib.Path(base, "secret.txt")
            inbox.mkdir()
            (inbox / "one.txt").write_text("1")
            outside.write_text("no")
            (inbox / "escape").symlink_to(outside)
            self.host.fs.base = pathlib.Path(base)
            self.host.fs.grant("inbox")
            self.assertEqual([(e.name, e.is_dir, e.size) for e in fs.list_dir("inbox")], [("escape", False, 2), ("one.txt", False, 1)])
            self.assertEqual(fs.read_text("inbox/one.txt"), "1")
            self.assertEqual(fs.read_text(f"{base}/inbox/./one.txt"), "1")  # absolute, as the manifest may name it
            for path, message in [
                ("inbox/escape", "inbox/escape: access denied (leads outside the granted path)"),
                ("inbox/../secret.txt", "inbox/../secret.txt: access denied (not under a granted path)"),
                ("inbox/two.txt", "inbox/two.txt: No such file or directory (os error 2)"),
            ]:
                with self.subTest(path=path), self.assertRaises(fs.FsError) as caught:
                    fs.read_file(path)
                self.assertEqual(str(caught.exception), message)


class InstancesTest(unittest.TestCase):
    def setUp(self):
        self.host = support.fresh_host(self)

    def test_list_parses_params_and_follows_the_host(self):
        self.assertEqual(instances.list(), [])
        self.host.instances.add({"url": "http://b/"}, rule="p.check_b", trigger="p.status")
        self.host.instances.add({"url": "http://a/", "expect_status": 204}, rule="p.check_a", trigger="p.status")
        self.assertEqual(
            instances.list(),
            [Instance("p.check_a", "p.status", {"url": "http://a/", "expect_status": 204}), Instance("p.check_b", "p.status", {"url": "http://b/"})],
        )
        del self.host.instances.items[0]  # a rule disabled between two polls
        self.assertEqual([i.rule for i in instances.list()], ["p.check_a"])

    def test_add_checks_params_against_the_param_schema(self):
        self.host.instances.triggers = {"p.status": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}}
        self.assertEqual(self.host.instances.add({"url": "http://a/"}).rule, "local.instance_1")
        with self.assertRaisesRegex(ValueError, "^trigger_params.url: 5 is not of type 'string'$"):
            self.host.instances.add({"url": 5})
        with self.assertRaisesRegex(ValueError, "'url' is a required property"):
            self.host.instances.add({})

    def test_instance_emit_addresses_its_rule_on_its_trigger(self):
        instance = Instance("p.check_a", "p.status", {"url": "http://a/"})
        self.assertEqual(instance.emit({"ok": True}), Emit("p.status", {"ok": True}, "p.check_a"))
        self.assertEqual(len({instance, Instance("p.check_a", "p.status", {"url": "http://a/"})}), 1)  # hashable


class OutsideTheKitTest(unittest.TestCase):
    def test_a_call_without_a_fake_host_says_what_to_do(self):
        with self.assertRaisesRegex(RuntimeError, "attune_sensor.state was called outside a component and outside the test kit"):
            state.get("cursor")


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
