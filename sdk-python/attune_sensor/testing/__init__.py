"""Test a sensor offline, on plain CPython, with unittest or pytest.

The sensor's code runs unchanged: its ``attune_sensor`` calls (``http``, ``state``, ``clock``,
``fs``, ``log``, ``instances``) are answered by a :class:`FakeHost`, and it is loaded and driven
through the SDK's own glue, so payloads, errors and tracebacks are what the host would see::

    from attune_sensor.testing import Sensor, SensorError

    sensor = Sensor.from_pack("my_pack", "items")           # manifest, pack config, triggers
    sensor.host.http.add("GET", sensor.config["url"], json={"items": [{"id": 1}]})
    assert sensor.poll() == [{"id": 1, "item": {"id": 1}}]  # each checked against payload_schema
    assert sensor.host.state.get_json("cursor") == 1

A request without a fixture fails the test (:class:`UnmatchedRequest`, naming the method, the
URL and the fixtures there are); an exception in the sensor raises :class:`SensorError` with the
host's message; a payload its trigger refuses raises :class:`PayloadMismatch` naming the JSON
path and the reason. :func:`replay` runs a recording made with ``attune-host sensor run
--record`` against the sensor's current code in the real sandbox.
"""

from attune_sensor.testing._host import (
    FakeClock, FakeFs, FakeHost, FakeHttp, FakeInstances, FakeLog, FakeState, UnmatchedRequest,
)
from attune_sensor.testing._pack import PackError
from attune_sensor.testing._replay import replay
from attune_sensor.testing._runner import Envelope, PayloadMismatch, Sensor, SensorError, SensorFailure

__all__ = [
    "Sensor", "Envelope", "FakeHost", "FakeHttp", "FakeState", "FakeClock", "FakeFs", "FakeLog", "FakeInstances",
    "SensorFailure", "SensorError", "PayloadMismatch", "UnmatchedRequest", "PackError", "replay",
]
