"""The `guest` export, shared by compiled sensors, the plain-source runtime and the test kit.

Compiled sensors and the runtime load the sensor's source with :func:`load_source` (a compiled
sensor's generated entry module while the component is built, the runtime's `load` at run time);
the WIT :class:`Guest` then drives it. The test kit (:mod:`attune_sensor.testing`) drives a
:class:`Sensor` of its own the same way. Every exception, whatever its type, leaves as
``Err(SensorError)``: componentize-py turns any other escaping exception into a trap, which would
cost the host a fresh instance and tell the author nothing.
"""

import json
import linecache
import marshal
import sys
import traceback
# traceback imports it lazily to align carets under non-ASCII source; a component has only the
# modules imported while it was built.
import unicodedata  # noqa: F401
from collections.abc import Iterator
from types import CodeType, ModuleType, TracebackType
from typing import Any, Callable, Optional, TypeVar

from attune_sensor import Emit, _netguard
from attune_sensor._bindings import IN_COMPONENT, Err, exports, types as wit_types
from attune_sensor._text import printable, wit_str

__all__ = ["MODULE_NAME", "Guest", "Sensor", "load_source", "guarded"]

T = TypeVar("T")
Payload, SensorError = wit_types.Payload, wit_types.SensorError

#: The sensor module's name, in ``sys.modules`` too (so that pickle can find it). Fixed rather than
#: taken from the file name, which could clash with a module the sensor imports.
MODULE_NAME = "sensor"

# Modules whose frames sit above the sensor's in every traceback; not shown to the author.
_GLUE_MODULES = frozenset({__name__, "attune_sensor._runtime"})


class Sensor:
    """One loaded sensor module and the config its ``init`` was given."""

    def __init__(self, filename: str, source: str, compiled: Optional[bytes] = None) -> None:
        """Run ``source`` as the sensor module; ``Err(SensorError)`` when it fails or has no ``poll``.

        Tracebacks name ``filename`` and quote ``source``: a component has no source files to
        read back at run time. ``compiled`` is the code object :attr:`compiled` held for the same
        filename and source; it saves compiling the source again (most of a start's cost).
        """
        code = _unmarshal(compiled)
        #: The marshalled code object when the source was compiled here, else empty.
        self.compiled = b""
        if code is None:
            code = guarded(lambda: compile(source, filename, "exec"))
            self.compiled = marshal.dumps(code)
        self.module = guarded(lambda: _exec_module(filename, source, code))
        self.config: dict[str, Any] = {}

    def init(self, config: str) -> None:
        """The WIT ``init``: parse ``config`` (a JSON object) and call the sensor's ``init``, if any."""
        guarded(lambda: self._init(config))

    def poll(self) -> list[Payload]:
        """The WIT ``poll``: call the sensor's ``poll`` and serialize what it yields."""
        return guarded(self._poll)

    def _init(self, config_json: str) -> None:
        config = json.loads(config_json)
        if not isinstance(config, dict):
            raise TypeError(f"sensor config must be a JSON object, not {type(config).__name__}")
        self.config = config
        init = getattr(self.module, "init", None)
        if callable(init):
            init(self.config)

    def _poll(self) -> list[Payload]:
        result = self.module.poll(self.config)
        if result is None:
            return []
        # A returned dict is a common slip; iterating it would emit its keys, so only sequences
        # and iterators (generators included) are accepted.
        if not isinstance(result, (list, tuple, Iterator)):
            raise TypeError(f"poll(config) must yield payloads or return a list, a tuple or None, not {type(result).__name__}")
        return [_payload(index, item) for index, item in enumerate(result)]


#: The sensor the WIT exports drive, set by :func:`load_source`.
_loaded: Optional[Sensor] = None


def load_source(filename: str, source: str, compiled: Optional[bytes] = None) -> bytes:
    """Load ``source`` as the sensor the component's :class:`Guest` drives; returns what
    :attr:`Sensor.compiled` holds, for the host to hand back as ``compiled`` next time.

    Inside a component, sockets cannot reach anything: the guards make any try fail with a
    message that says what to use instead (see :mod:`attune_sensor._netguard`). On plain CPython
    the test kit guards each call of a sensor instead, not the whole test process.
    """
    global _loaded
    if IN_COMPONENT:
        _netguard.install_import_guard()
    _loaded = Sensor(filename, source, compiled)
    if IN_COMPONENT:
        _netguard.guard_sockets()  # after the sensor's imports, which may have brought `socket` in
    return _loaded.compiled


def _unmarshal(compiled: Optional[bytes]) -> Optional[CodeType]:
    """The code object in ``compiled``; None when there is none or it is not one this
    interpreter reads (the source is compiled instead)."""
    if not compiled:
        return None
    try:
        code = marshal.loads(compiled)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _exec_module(filename: str, source: str, code: CodeType) -> ModuleType:
    # A None mtime keeps linecache.checkcache from discarding the entry for want of a file.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = ModuleType(MODULE_NAME)
    module.__file__ = filename
    sys.modules[MODULE_NAME] = module
    exec(code, module.__dict__)
    if not callable(getattr(module, "poll", None)):
        raise Err(SensorError(f"{filename} defines no poll(config) function", None))
    return module


def guarded(call: Callable[[], T]) -> T:
    """Run ``call``, turning any exception into the ``Err(SensorError)`` of the WIT contract."""
    try:
        return call()
    except BaseException as exc:  # SystemExit & co. from sensor code must not trap either
        if isinstance(exc, Err) and isinstance(exc.value, SensorError):
            raise  # already in contract form (raised by the glue itself)
        raise Err(_sensor_error(exc)) from None


class Guest(exports.Guest):
    """The `guest` interface of wit/sensor.wit, driving the sensor :func:`load_source` loaded."""

    def init(self, config: str) -> None:
        guarded(_bound).init(config)

    def poll(self) -> list[Payload]:
        return guarded(_bound).poll()


# NaN and infinities are not JSON; the host's parser would reject them. Built once: json.dumps
# with any non-default option builds a new JSONEncoder on every call, which was most of the
# glue's cost per poll. The output is json.dumps(document, allow_nan=False)'s.
_encode_json = json.JSONEncoder(allow_nan=False).encode


def _payload(index: int, item: Any) -> Payload:
    if not isinstance(item, Emit):
        return Payload(None, None, _json(index, item))
    text = _json(index, item.payload)
    # An Emit built directly rather than by emit() could hold anything; the bindings would trap.
    trigger = wit_str(f"trigger of payload {index} yielded by poll", item.trigger)
    rule = None if item.rule is None else wit_str(f"rule of payload {index} yielded by poll", item.rule)
    return Payload(trigger, rule, text)


def _json(index: int, document: Any) -> str:
    try:
        return _encode_json(document)
    except (TypeError, ValueError, RecursionError) as exc:
        notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
        raise type(exc)(f"payload {index} yielded by poll is not JSON-serializable: {exc}{notes}") from None


def _bound() -> Sensor:
    if _loaded is None:
        raise RuntimeError("no sensor is loaded")
    return _loaded


def _sensor_error(exc: BaseException) -> SensorError:
    """``message`` is ``"<ExcType>: <msg>"``; ``traceback`` is Python's usual rendering of the
    sensor's own frames (the glue's are dropped), or None when there are none to show."""
    try:
        text = str(exc)
        message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        rendered = "".join(traceback.format_exception(type(exc), exc, _without_glue(exc.__traceback__)))
        rendered = rendered.rstrip("\n")
        return SensorError(printable(message), None if rendered == message else printable(rendered))
    except BaseException:
        # Formatting failed too (a broken __str__, or no memory left): the type alone still helps.
        return SensorError(type(exc).__name__, None)


def _without_glue(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    # The outermost frames are the glue's (and the runtime's); the sensor's start below them.
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in _GLUE_MODULES:
        tb = tb.tb_next
    return tb

