"""The one door to the host: every SDK module reaches the WIT imports through here.

Inside a component these are the bindings componentize-py generates (``wit_world`` and
``componentize_py_types``). On plain CPython, where those do not exist, they are stand-ins
(:mod:`attune_sensor._fakewit`) answering from the fake host of :mod:`attune_sensor.testing`; so
a sensor's code and the SDK run unchanged in ordinary unit tests.
"""

try:
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import clock, fs, http, instances, log, state, types

    #: Whether this interpreter is a component's (else plain CPython, with the fakes).
    IN_COMPONENT = True
except ModuleNotFoundError as missing:
    if missing.name not in ("componentize_py_types", "wit_world"):
        raise
    from attune_sensor._fakewit import Err, clock, exports, fs, http, instances, log, state, types

    IN_COMPONENT = False

__all__ = ["IN_COMPONENT", "Err", "exports", "clock", "fs", "http", "instances", "log", "state", "types"]
