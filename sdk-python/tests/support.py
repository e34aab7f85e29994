"""Shared by the tests: the SDK of this source tree (not an installed copy) and a fresh fake host.

Every test module imports this first (`python -m unittest discover sdk-python/tests` puts this
directory on sys.path). The SDK's host calls are answered by the test kit's fakes
(attune_sensor.testing), as in a pack author's tests.
"""

import sys
import unittest
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SDK = TESTS.parent
FIXTURES = SDK.parent / "tests" / "fixtures" / "python"

if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

from attune_sensor._fakewit import Err  # noqa: E402
from attune_sensor.testing import FakeHost  # noqa: E402


def fresh_host(test: unittest.TestCase, **kwargs) -> FakeHost:
    """A FakeHost answering the SDK's calls until ``test`` ends."""
    host = FakeHost(**kwargs)
    host.__enter__()
    test.addCleanup(host.__exit__, None, None, None)
    return host


def sensor_error(call):
    """The SensorError that ``call()`` raised as ``Err``; fails if it raised nothing."""
    try:
        call()
    except Err as err:
        return err.value
    raise AssertionError("expected Err(SensorError)")
