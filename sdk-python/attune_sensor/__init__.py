"""Attune sensor SDK: the API a Python sensor uses inside its WebAssembly component.

    from attune_sensor import log, state, http, clock, fs, emit

``log``, ``state``, ``http``, ``clock`` and ``fs`` are submodules wrapping the host imports of
``wit/sensor.wit``; they load the component bindings (``wit_world``) and so are importable only
inside a component build. This module itself stays free of them so that the ``attune-sensor``
command line runs on an ordinary Python.
"""

from dataclasses import dataclass
from typing import Any

from attune_sensor._text import wit_str

__all__ = ["Emit", "emit"]


@dataclass(frozen=True)
class Emit:
    """A payload addressed to one trigger; yield it from ``poll``. Build it with :func:`emit`."""

    trigger: str
    payload: Any


def emit(trigger_ref: str, payload: Any) -> Emit:
    """Address ``payload`` to ``trigger_ref`` (``pack.name``); yield the result from ``poll``.

    Needed only by sensors that declare several triggers: a plain yielded dict goes to the
    sensor's only trigger.
    """
    return Emit(wit_str("emit() trigger_ref", trigger_ref), payload)
