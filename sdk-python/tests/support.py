"""Makes the SDK importable on plain CPython: the fake bindings stand in for componentize-py's.

Every test module imports this first (`python -m unittest discover sdk-python/tests` puts this
directory on sys.path).
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SDK = TESTS.parent
FIXTURES = SDK.parent / "tests" / "fixtures" / "python"

for path in (TESTS / "fake_bindings", SDK):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from componentize_py_types import Err  # noqa: E402
from wit_world.imports import clock, fs, http, instances, log, state  # noqa: E402

fake_clock, fake_fs, fake_http, fake_instances, fake_log, fake_state = clock, fs, http, instances, log, state


def reset_host() -> None:
    """Forget what earlier tests stored, logged or configured in the fake host."""
    fake_state.store.clear()
    fake_state.quota = 1000
    fake_log.lines.clear()
    fake_http.sent.clear()
    fake_http.handler = fake_http.no_handler
    fake_fs.files.clear()
    fake_instances.instances.clear()


def sensor_error(call):
    """The SensorError that ``call()`` raised as ``Err``; fails if it raised nothing."""
    try:
        call()
    except Err as err:
        return err.value
    raise AssertionError("expected Err(SensorError)")
