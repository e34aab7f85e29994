"""The sensor's own key/value store, kept by the host across polls and restarts.

Typical use is a cursor of what was already emitted. Values are strings; ``get_json`` and
``set_json`` store any JSON value.
"""

import json
from typing import Any, Optional

from attune_sensor._bindings import Err, state as _wit

from attune_sensor._text import wit_str

__all__ = ["StateError", "get", "set", "delete", "keys", "get_json", "set_json"]


class StateError(Exception):
    """The host refused to store a value (the sensor's state quota would be exceeded)."""


def get(key: str) -> Optional[str]:
    """The value stored under ``key``, or ``None``."""
    return _wit.get(wit_str("state key", key))


def set(key: str, value: str) -> None:
    """Store the str ``value`` under ``key`` (:func:`set_json` stores other values).

    Raises :class:`StateError` when the host refuses (the state quota would be exceeded).
    """
    try:
        _wit.set(wit_str("state key", key), wit_str("state value", value))
    except Err as err:
        raise StateError(f"cannot store state key {key!r}: {err.value}") from None


def delete(key: str) -> None:
    """Remove ``key``; removing a missing key is not an error."""
    _wit.delete(wit_str("state key", key))


def keys() -> list[str]:
    """Every key this sensor has stored, sorted."""
    return _wit.keys()


def get_json(key: str, default: Any = None) -> Any:
    """The JSON value stored under ``key`` by :func:`set_json`, or ``default``."""
    text = get(key)
    return default if text is None else json.loads(text)


def set_json(key: str, value: Any) -> None:
    """Store any JSON-serializable ``value`` under ``key``."""
    set(key, json.dumps(value))

