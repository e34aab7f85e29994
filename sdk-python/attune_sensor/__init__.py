"""Attune sensor SDK: the API a Python sensor uses inside its WebAssembly component.

    from attune_sensor import log, state, http, clock, fs, instances, emit

``log``, ``state``, ``http``, ``clock``, ``fs`` and ``instances`` are submodules wrapping the host
imports of ``wit/sensor.wit`` through :mod:`attune_sensor._bindings`: the component's bindings
inside a component, the fake host of :mod:`attune_sensor.testing` on plain CPython. This module
itself stays free of them so that the ``attune-sensor`` command line imports nothing more.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from attune_sensor._text import wit_str

__all__ = ["Emit", "Instance", "emit"]


@dataclass(frozen=True)
class Emit:
    """A payload addressed to one trigger, and optionally to one rule on it; yield it from ``poll``.

    Build it with :func:`emit` or :meth:`Instance.emit`. ``rule=None`` means every enabled rule on
    the trigger.
    """

    trigger: str
    payload: Any
    rule: Optional[str] = None


def emit(trigger_ref: str, payload: Any, *, rule: Optional[str] = None) -> Emit:
    """Address ``payload`` to ``trigger_ref`` (``pack.name``); yield the result from ``poll``.

    Needed only by sensors that declare several triggers, or that address one rule (``rule``, a
    rule ref as in :attr:`Instance.rule`): a plain yielded dict goes to every rule on the
    sensor's only trigger.
    """
    return Emit(
        wit_str("emit() trigger_ref", trigger_ref),
        payload,
        None if rule is None else wit_str("emit() rule", rule),
    )


@dataclass(frozen=True)
class Instance:
    """One enabled rule on one of the sensor's triggers, as :func:`attune_sensor.instances.list`
    returns it: the sensor serves each rule according to that rule's ``params``."""

    #: The rule's ref (``pack.name``).
    rule: str
    #: The trigger ref the rule listens on (one of the sensor's triggers).
    trigger: str
    #: The rule's ``trigger_params``, already checked by the host against the trigger's
    #: ``param_schema`` (defaults in the schema are not filled in).
    params: dict[str, Any] = field(hash=False)  # a dict cannot be hashed; rule and trigger are

    def emit(self, payload: Any) -> Emit:
        """``payload`` addressed to this rule alone, on its trigger; yield it from ``poll``."""
        return Emit(self.trigger, payload, self.rule)
