"""The test kit (attune_sensor.testing): sensors run from packs and files as the host runs them."""

import os
import shutil
import socket
import tempfile
import textwrap
import unittest
from pathlib import Path

import support
from attune_sensor import _netguard
from attune_sensor.testing import (
    Envelope, FakeHost, PackError, PayloadMismatch, Sensor, SensorError, SensorFailure, UnmatchedRequest, replay,
)

PACK = {
    "pack.yaml": """
        ref: feed
        version: 0.1.0
        config_schema: {type: object}
        config: {base: "http://api.test:8080", page_size: 2}
    """,
    "triggers/new_item.yaml": """
        ref: new_item
        payload_schema:
          type: object
          required: [id]
          properties:
            id: {type: integer}
            tags: {type: array, items: {type: string}}
        param_schema:
          type: object
          properties: {tag: {type: string}}
          additionalProperties: false
    """,
    "sensors/items.yaml": """
        ref: feed.items
        triggers: [feed.new_item]
        runtime: python
        entry: items.py
        limits: {max_events_per_poll: 3}
        capabilities: {http: ["api.test:8080"], paths: [inbox]}
        config:
          url: "{{ pack.config.base }}/items"
          limit: "{{ pack.config.page_size }}"
          label: "page of {{ pack.config.page_size }}"
    """,
    "sensors/items.py": """
        from attune_sensor import http, log, state

        def poll(config):
            items = http.get(config["url"]).json()["items"]
            cursor = state.get_json("cursor", 0)
            new = [item for item in items if item["id"] > cursor]
            for item in new:
                yield item
            if new:
                state.set_json("cursor", new[-1]["id"])
            log.info(f"{len(new)} new")
    """,
    "rules/tagged.yaml": """
        ref: feed.tagged
        trigger: feed.new_item
        trigger_params: {tag: urgent}
        action: {ref: core.echo}
    """,
    "rules/off.yaml": """
        ref: feed.off
        trigger: feed.new_item
        enabled: false
        action: {ref: core.echo}
    """,
    "inbox/note.txt": "hello",
}
URL = "http://api.test:8080/items"


def write_pack(test: unittest.TestCase, files: dict, **changes: str) -> Path:
    """The pack ``files`` (with ``changes`` to some of them) in a directory removed after ``test``."""
    root = Path(tempfile.mkdtemp())
    test.addCleanup(shutil.rmtree, root)
    for name, text in {**files, **changes}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


class PackSensorTest(unittest.TestCase):
    def sensor(self, **changes: str) -> Sensor:
        return Sensor.from_pack(write_pack(self, PACK, **changes), "items")

    def test_the_manifest_as_the_host_reads_it(self):
        sensor = self.sensor()
        # A whole-string template keeps its JSON type; one inside text renders as text.
        self.assertEqual(sensor.config, {"url": URL, "limit": 2, "label": "page of 2"})
        self.assertEqual((sensor.ref, sensor.triggers), ("feed.items", ["feed.new_item"]))
        self.assertEqual(sensor.host.http.granted, ["api.test:8080"])
        self.assertEqual([(i.rule, i.trigger, i.params) for i in sensor.host.instances.items], [("feed.tagged", "feed.new_item", {"tag": "urgent"})])

    def test_polls_keep_state_and_log(self):
        sensor = self.sensor()
        sensor.host.http.add("GET", URL, json={"items": [{"id": 1}, {"id": 2, "tags": ["a"]}]})
        self.assertEqual(sensor.poll_envelopes(), [Envelope("feed.new_item", None, {"id": 1}), Envelope("feed.new_item", None, {"id": 2, "tags": ["a"]})])
        self.assertEqual(sensor.poll(), [])
        self.assertEqual(sensor.host.state.values, {"cursor": "2"})
        self.assertEqual(sensor.host.log.messages("info"), ["2 new", "0 new"])

    def test_config_overrides_and_initial_state(self):
        sensor = Sensor.from_pack(write_pack(self, PACK), "feed.items", config={"url": "http://api.test:8080/v2"}, host=FakeHost(state={"cursor": "1"}))
        sensor.host.http.add("GET", "http://api.test:8080/v2", json={"items": [{"id": 1}, {"id": 2}]})
        self.assertEqual(sensor.poll(), [{"id": 2}])

    def test_a_request_without_fixture_fails_the_test_even_if_the_sensor_swallows_it(self):
        sensor = self.sensor(**{"sensors/items.py": """
            from attune_sensor import http, state

            def poll(config):
                state.set("tried", "yes")
                try:
                    http.get(config["url"] + "?page=2")
                except Exception:
                    pass
                return [{"id": 1}]
        """})
        sensor.host.http.add("GET", URL, json={"items": []})
        with self.assertRaises(UnmatchedRequest) as caught:
            sensor.poll()
        self.assertEqual(
            str(caught.exception),
            f"no HTTP fixture for GET {URL}?page=2; registered:\n  GET {URL}\n"
            f"add one with host.http.add('GET', '{URL}?page=2', json=...) (or status=, headers=, body=)",
        )
        self.assertEqual(sensor.host.state.values, {})  # the failed poll stored nothing

    def test_a_payload_the_schema_refuses_names_the_path_and_the_reason(self):
        sensor = self.sensor()
        sensor.host.http.add("GET", URL, json={"items": [{"id": 1}, {"id": 2, "tags": ["a", 7]}]})
        with self.assertRaises(PayloadMismatch) as caught:
            sensor.poll()
        self.assertEqual(
            str(caught.exception),
            "feed.items: payload 1: does not match the payload_schema of `feed.new_item`: 7 is not of type 'string' at `/tags/1`",
        )
        self.assertEqual((caught.exception.index, caught.exception.problems), (1, [("/tags/1", "7 is not of type 'string'")]))
        self.assertEqual(sensor.host.state.values, {})  # as on the host: nothing of that poll is kept

    def test_the_schema_draft_is_the_hosts(self):
        # 2020-12 by default (prefixItems is not a keyword of draft 7), or the one $schema names.
        for schema, valid in [
            ("{type: object, properties: {tags: {prefixItems: [{type: integer}]}}}", False),
            ("{$schema: 'http://json-schema.org/draft-07/schema#', type: object, properties: {tags: {prefixItems: [{type: integer}]}}}", True),
        ]:
            sensor = self.sensor(**{"triggers/new_item.yaml": f"ref: new_item\npayload_schema: {schema}\n"})
            sensor.host.http.add("GET", URL, json={"items": [{"id": 1, "tags": ["x"]}]})
            with self.subTest(schema=schema):
                if valid:
                    self.assertEqual(sensor.poll(), [{"id": 1, "tags": ["x"]}])
                else:
                    self.assertRaises(PayloadMismatch, sensor.poll)

    def test_sensor_errors_read_as_the_host_prints_them(self):
        sensor = self.sensor()
        sensor.host.http.add("GET", URL, json={"entries": []})
        with self.assertRaises(SensorError) as caught:
            sensor.poll()
        error = caught.exception
        self.assertEqual(error.message, "KeyError: 'items'")
        self.assertTrue(str(error).startswith("feed.items: sensor error: KeyError: 'items'\nTraceback (most recent call last):\n"), str(error))
        self.assertIn('File "items.py", line 4, in poll', error.traceback)
        self.assertIsInstance(error, AssertionError)  # a failure of the test, in unittest and pytest

    def test_load_errors_name_the_file(self):
        sensor = self.sensor(**{"sensors/items.py": "def poll(config):\n    return [\n"})
        with self.assertRaises(SensorError) as caught:
            sensor.poll()
        self.assertEqual(caught.exception.message, "SyntaxError: '[' was never closed (items.py, line 2)")
        self.assertTrue(str(caught.exception).startswith(f"{sensor.path}: SyntaxError"))

    def test_the_hosts_payload_checks(self):
        cases = [
            ("return [{'id': i} for i in range(4)]", "too_many_payloads", "feed.items: too many payloads: 4 in one poll (limit 3)"),
            ("return [[1]]", "bad_payload", "feed.items: bad payload: payload 0: a payload must be a JSON object"),
            ("return [emit('feed.other', {})]", "undeclared_trigger", "feed.items: undeclared trigger: payload 0 is for `feed.other`, sensor declares [feed.new_item]"),
            ("return [emit('feed.new_item', {'id': 1}, rule='feed.off')]", "bad_payload", "feed.items: bad payload: payload 0: rule `feed.off` is not an instance of this sensor (instances: [feed.tagged])"),
        ]
        for body, reason, text in cases:
            sensor = self.sensor(**{"sensors/items.py": f"from attune_sensor import emit\ndef poll(config):\n    {body}\n"})
            with self.subTest(body=body), self.assertRaises(SensorFailure) as caught:
                sensor.poll()
            self.assertEqual((caught.exception.reason, str(caught.exception)), (reason, text))

    def test_instances_come_from_the_packs_rules_and_the_test(self):
        sensor = self.sensor(**{"sensors/items.py": """
            from attune_sensor import instances

            def poll(config):
                for instance in instances.list():
                    yield instance.emit({"id": len(instance.params["tag"])})
        """})
        sensor.host.instances.add({"tag": "low"}, rule="feed.low")
        self.assertEqual(sensor.poll_envelopes(), [Envelope("feed.new_item", "feed.low", {"id": 3}), Envelope("feed.new_item", "feed.tagged", {"id": 6})])
        with self.assertRaisesRegex(ValueError, "Additional properties are not allowed"):
            sensor.host.instances.add({"tga": "x"})

    def test_granted_paths_are_read_from_the_pack(self):
        sensor = self.sensor(**{"sensors/items.py": """
            from attune_sensor import fs

            def poll(config):
                yield {"id": len(fs.read_text("inbox/note.txt")), "tags": [e.name for e in fs.list_dir("inbox")]}
        """})
        self.assertEqual(sensor.poll(), [{"id": 5, "tags": ["note.txt"]}])

    def test_pack_problems_name_the_file_and_field(self):
        pack = write_pack(self, PACK, **{
            "sensors/items.yaml": "ref: items\ntriggers: [new_item]\nruntime: python\nentry: items.py\nconfig: {url: '{{ pack.config.bse }}'}\n",
            "sensors/other.yaml": "ref: other\ntriggers: [new_item]\nruntime: javascript\nentry: other.js\n",
        })
        for name, message in [
            (None, f"{pack.resolve()}: 2 sensors; name one (feed.items, feed.other)"),
            ("nope", f"{pack.resolve()}: no sensor `nope` (sensors: feed.items, feed.other)"),
            ("items", f"{pack.resolve() / 'sensors/items.yaml'}: config: url: template `{{{{ pack.config.bse }}}}` names a missing value"),
            ("other", f"{pack.resolve() / 'sensors/other.yaml'}: runtime: `javascript`: the Python kit runs plain Python source (runtime: python); load the source of a built component with Sensor.from_file"),
        ]:
            with self.subTest(name=name), self.assertRaises(PackError) as caught:
                Sensor.from_pack(pack, name)
            self.assertEqual(str(caught.exception), message)

    def test_secrets_fill_their_templates(self):
        pack = write_pack(self, PACK, **{"pack.yaml": "ref: feed\nversion: 0.1.0\nconfig: {base: 'http://api.test:8080'}\n"})
        (pack / "sensors/items.yaml").write_text((pack / "sensors/items.yaml").read_text().replace("{{ pack.config.page_size }}", "{{ secret.page_size }}"))
        self.assertEqual(Sensor.from_pack(pack, secrets={"page_size": "9"}).config["limit"], "9")


class FileSensorTest(unittest.TestCase):
    def test_a_bare_file_reaches_only_what_it_is_allowed(self):
        sensor = Sensor.from_file(support.FIXTURES / "http_denied.py", config={"url": "http://example.com/"})
        self.assertEqual(sensor.ref, "local.http_denied")
        self.assertEqual(sensor.poll()[0]["error"], "GET http://example.com/ failed (denied): example.com:80 is not an allowed host (allowed: none)")
        allowed = Sensor.from_file(support.FIXTURES / "http_denied.py", config={"url": "http://example.com/"}, allow_http=["example.com"])
        allowed.host.http.add("GET", "http://example.com/", status=204)
        self.assertEqual(allowed.poll(), [{"status": 204}])

    def test_state_carries_from_poll_to_poll(self):
        sensor = Sensor.from_file(support.FIXTURES / "counter.py")
        self.assertEqual([sensor.poll(), sensor.poll()], [[{"n": 1}], [{"n": 2}]])
        self.assertEqual(sensor.host.state.values, {"n": "2"})

    def test_sockets_are_refused_with_what_to_use_instead(self):
        sensor = Sensor.from_file(support.FIXTURES / "uses_socket.py")
        with self.assertRaises(SensorError) as caught:
            sensor.poll()
        self.assertEqual(
            caught.exception.message,
            f"NetworkRefused: socket.create_connection(('127.0.0.1', 9)): {_netguard.MESSAGE}",
        )
        self.assertEqual(_netguard.MESSAGE, "networking goes through attune_sensor.http, granted by capabilities.http in the sensor's manifest")
        # Only while the sensor runs: the test process keeps its sockets.
        self.assertNotIn("refuse", socket.getaddrinfo.__qualname__)
        self.assertNotIn("connect", socket.socket.__dict__)


class ImportGuardTest(unittest.TestCase):
    def test_networking_modules_a_component_lacks_are_refused_by_name(self):
        guard = _netguard._ImportGuard()
        for name in ("urllib.request", "requests", "requests.adapters", "socket"):
            with self.subTest(name=name), self.assertRaises(ModuleNotFoundError) as caught:
                guard.find_spec(name)
            self.assertEqual(str(caught.exception), f"No module named '{name}': {_netguard.MESSAGE}")
        self.assertIsNone(guard.find_spec("json"))
        self.assertIsNone(guard.find_spec("urllib.parse"))


if __name__ == "__main__":
    unittest.main()


class ReplayTest(unittest.TestCase):
    """`replay` runs `attune-host sensor test` (here a stand-in named by ATTUNE_HOST) and turns
    a difference into a test failure carrying the host's words."""

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir)
        self.recording = self.dir / "recording"
        self.recording.mkdir()
        (self.recording / "recording.json").write_text("{}")
        self.host = self.dir / "attune-host"
        self.addCleanup(os.environ.pop, "ATTUNE_HOST", None)
        os.environ["ATTUNE_HOST"] = str(self.host)

    def stand_in(self, code, out, err):
        self.host.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'sensor test' ] || exit 9\necho '{out}'\necho '{err}' >&2\nexit {code}\n")
        self.host.chmod(0o755)

    def test_a_matching_recording_passes_with_the_report(self):
        self.stand_in(0, "ok: recording: 2 polls, 10 host calls, 2 payloads replayed", "")
        self.assertEqual(replay(self.recording), "ok: recording: 2 polls, 10 host calls, 2 payloads replayed")

    def test_a_difference_fails_the_test_naming_it(self):
        self.stand_in(1, "", "FAILED: recording: poll 1: host call 2: the recording has http.send GET x")
        with self.assertRaises(AssertionError) as caught:
            replay(self.recording)
        self.assertIn("poll 1: host call 2: the recording has http.send GET x", str(caught.exception))

    def test_no_recording_says_how_to_make_one(self):
        with self.assertRaises(FileNotFoundError) as caught:
            replay(self.dir / "none")
        self.assertIn("attune-host sensor run . --record", str(caught.exception))
