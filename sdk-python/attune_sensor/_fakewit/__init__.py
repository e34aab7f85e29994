"""Stand-ins for the bindings componentize-py generates from wit/sensor.wit.

The same modules, names and signatures as ``wit_world`` (``exports``, ``imports.<interface>``) and
``componentize_py_types`` (``Ok``, ``Err``), so that the SDK runs on plain CPython; each import
answers from the fake host :mod:`attune_sensor.testing` made current (:func:`use_host`). Like the
real bindings, which abort the instance on a value they cannot lower, they raise :class:`Trap`
(a BaseException, so nothing in the SDK mistakes it for a sensor error) on a non-str or
non-UTF-8 string.
"""

from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

T = TypeVar("T")
E = TypeVar("E")


@dataclass
class Ok(Generic[T]):
    value: T


@dataclass(frozen=True)
class Err(Generic[E], Exception):
    value: E


class Trap(BaseException):
    """What the real bindings would turn into a trap."""


class NoHost(RuntimeError):
    """An import called outside a component with no fake host in use."""


_host: Optional[Any] = None


def use_host(host: Optional[Any]) -> Optional[Any]:
    """Make ``host`` (an :class:`attune_sensor.testing.FakeHost`) answer the imports; returns
    the one it replaces."""
    global _host
    previous, _host = _host, host
    return previous


def host(interface: str) -> Any:
    """The current fake host's part for ``interface`` (``http``, ``state``, ...)."""
    if _host is None:
        raise NoHost(
            f"attune_sensor.{interface} was called outside a component and outside the test kit: run the sensor "
            "with attune_sensor.testing.Sensor, or call it inside `with attune_sensor.testing.FakeHost():`"
        )
    return getattr(_host, interface)


def lowered_str(value: object) -> str:
    """Check ``value`` the way the real bindings lower a WIT string."""
    if not isinstance(value, str):
        raise Trap(f"'{type(value).__name__}' object is not an instance of 'str'")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Trap(str(exc)) from None
    return value


from attune_sensor._fakewit import clock, exports, fs, http, instances, log, state, types  # noqa: E402

__all__ = ["Ok", "Err", "Trap", "NoHost", "use_host", "lowered_str",
           "clock", "exports", "fs", "http", "instances", "log", "state", "types"]
