"""The shared guest glue: config, payload conversion and the shape of sensor errors."""

import json
import textwrap
import unittest

import support
from attune_sensor import _glue
from attune_sensor._fakewit.types import SensorError
from support import Err, sensor_error


def serve(source: str) -> _glue.Guest:
    """Load ``source`` as the sensor, as a compiled sensor's entry module does."""
    _glue.load_source("my_sensor.py", textwrap.dedent(source))
    return _glue.Guest()


def polled(source: str, config: str = "{}") -> list:
    guest = serve(source)
    guest.init(config)
    return [(p.trigger, json.loads(p.json)) for p in guest.poll()]


class ConfigTest(unittest.TestCase):

    def test_init_and_poll_get_the_parsed_config(self):
        payloads = polled(
            """
            seen = []
            def init(config):
                seen.append(config)
            def poll(config):
                yield {"init_saw": seen, "poll_saw": config}
            """,
            '{"url": "http://x/"}',
        )
        self.assertEqual(payloads, [(None, {"init_saw": [{"url": "http://x/"}], "poll_saw": {"url": "http://x/"}})])

    def test_config_must_be_an_object(self):
        guest = serve("def poll(config): return []")
        self.assertEqual(sensor_error(lambda: guest.init("[1]")).message, "TypeError: sensor config must be a JSON object, not list")
        self.assertTrue(sensor_error(lambda: guest.init("{")).message.startswith("JSONDecodeError: "))

    def test_a_module_without_poll_is_refused(self):
        with self.assertRaises(Err) as caught:
            _glue.load_source("x.py", "def init(config):\n    pass\n")
        self.assertEqual(caught.exception.value.message, "x.py defines no poll(config) function")

    def test_each_sensor_keeps_its_own_module_and_config(self):
        first, second = _glue.Sensor("a.py", "def poll(config): yield {'a': config['n']}"), _glue.Sensor("b.py", "def poll(config): yield {'b': config['n']}")
        first.init('{"n": 1}')
        second.init('{"n": 2}')
        self.assertEqual([json.loads(p.json) for p in first.poll() + second.poll()], [{"a": 1}, {"b": 2}])


class PayloadTest(unittest.TestCase):
    def test_generator_list_tuple_iterator_and_none(self):
        self.assertEqual(polled("def poll(config):\n    yield {'a': 1}\n    yield {'a': 2}"), [(None, {"a": 1}), (None, {"a": 2})])
        self.assertEqual(polled("def poll(config): return [{'a': 1}]"), [(None, {"a": 1})])
        self.assertEqual(polled("def poll(config): return ({'a': 1},)"), [(None, {"a": 1})])
        self.assertEqual(polled("def poll(config): return iter([{'a': 1}])"), [(None, {"a": 1})])
        self.assertEqual(polled("def poll(config): return None"), [])

    def test_emit_names_the_trigger(self):
        payloads = polled(
            """
            from attune_sensor import emit
            def poll(config):
                yield emit("p.a", {"x": 1})
                yield {"y": 2}
            """
        )
        self.assertEqual(payloads, [("p.a", {"x": 1}), (None, {"y": 2})])

    def test_payloads_name_their_rule_only_when_addressed_to_one(self):
        host = support.fresh_host(self)
        host.instances.add({"n": 1}, rule="p.r1", trigger="p.a")
        guest = serve(
            """
            from attune_sensor import Emit, emit, instances
            def poll(config):
                yield {"plain": True}
                yield emit("p.a", {"all": True})
                yield emit("p.a", {"one": True}, rule="p.r2")
                for instance in instances.list():
                    yield instance.emit(instance.params)
            """
        )
        self.assertEqual(
            [(p.trigger, p.rule, json.loads(p.json)) for p in guest.poll()],
            [(None, None, {"plain": True}), ("p.a", None, {"all": True}), ("p.a", "p.r2", {"one": True}), ("p.a", "p.r1", {"n": 1})],
        )

    def test_a_hand_built_emit_is_checked_rather_than_trapping(self):
        guest = serve("from attune_sensor import Emit\ndef poll(config): return [Emit('p.a', {}), Emit('p.a', {}, rule=7)]")
        self.assertEqual(sensor_error(guest.poll).message, "TypeError: rule of payload 1 yielded by poll must be a str, not int")

    def test_a_returned_dict_is_refused_rather_than_iterated(self):
        guest = serve("def poll(config): return {'a': 1}")
        self.assertEqual(
            sensor_error(guest.poll).message,
            "TypeError: poll(config) must yield payloads or return a list, a tuple or None, not dict",
        )

    def test_unserializable_payload_names_type_and_index(self):
        guest = serve(
            """
            import datetime
            def poll(config):
                yield {"ok": 1}
                yield {"when": datetime.date(2024, 1, 1)}
            """
        )
        error = sensor_error(guest.poll)
        self.assertTrue(error.message.startswith("TypeError: payload 1 yielded by poll is not JSON-serializable: "), error.message)
        self.assertIn("date", error.message)

    def test_nan_is_not_json(self):
        guest = serve("def poll(config): return [{'v': float('nan')}]")
        self.assertTrue(sensor_error(guest.poll).message.startswith("ValueError: payload 0 yielded by poll"))

    def test_payload_json_is_ascii(self):
        # Lone surrogates cannot cross the component boundary as UTF-8; escaped JSON always can.
        [(_, payload)] = polled("def poll(config): return [{'s': 'é\\ud800'}]")
        self.assertEqual(payload, {"s": "é\ud800"})


class SensorErrorTest(unittest.TestCase):
    def test_message_and_traceback_of_the_sensor_frames(self):
        guest = serve(
            """
            def items_of(document):
                return document["items"]

            def poll(config):
                return items_of({})
            """
        )
        error = sensor_error(guest.poll)
        self.assertEqual(error.message, "KeyError: 'items'")
        lines = error.traceback.splitlines()
        self.assertEqual(lines[0], "Traceback (most recent call last):")
        frames = [line.strip() for line in lines if line.startswith("  File ")]
        self.assertEqual(frames, ['File "my_sensor.py", line 6, in poll', 'File "my_sensor.py", line 3, in items_of'])
        self.assertIn('return document["items"]', error.traceback)  # source quoted from memory
        self.assertEqual(lines[-1], "KeyError: 'items'")

    def test_init_errors_too(self):
        guest = serve("def init(config): raise ValueError('bad url')\ndef poll(config): return []")
        error = sensor_error(lambda: guest.init("{}"))
        self.assertEqual(error.message, "ValueError: bad url")
        self.assertIn("in init", error.traceback)

    def test_base_exceptions_do_not_escape(self):
        guest = serve("import sys\ndef poll(config): sys.exit(3)")
        self.assertEqual(sensor_error(guest.poll).message, "SystemExit: 3")

    def test_recursion_and_memory_errors_are_reported(self):
        guest = serve("def f(n): return f(n + 1)\ndef poll(config): return f(0)")
        self.assertTrue(sensor_error(guest.poll).message.startswith("RecursionError: maximum recursion depth exceeded"))
        guest = serve("def poll(config): raise MemoryError()")
        self.assertEqual(sensor_error(guest.poll).message, "MemoryError")

    def test_no_traceback_without_sensor_frames(self):
        guest = serve("def poll(config): return [object()]")  # fails in the glue's json.dumps
        self.assertIsNone(sensor_error(guest.poll).traceback)

    def test_unprintable_exception_still_reports_its_type(self):
        guest = serve(
            """
            class Odd(Exception):
                def __str__(self):
                    raise RuntimeError("no")
            def poll(config):
                raise Odd()
            """
        )
        self.assertEqual(sensor_error(guest.poll), SensorError("Odd", None))

    def test_lone_surrogates_are_escaped(self):
        guest = serve("def poll(config): raise ValueError('bad \\udc80 byte')")
        error = sensor_error(guest.poll)
        self.assertEqual(error.message, "ValueError: bad \\udc80 byte")
        error.traceback.encode("utf-8")


if __name__ == "__main__":
    unittest.main()
