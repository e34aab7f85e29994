"""Trigger instances: the enabled rules on the sensor's triggers, each with its ``trigger_params``.

One sensor serves many rules, each with its own parameters, e.g. an HTTP status sensor watching
one URL per rule. Rules are created, changed, enabled, disabled and deleted while the sensor
runs, so call :func:`list` on every poll rather than once in ``init``::

    from attune_sensor import http, instances

    def poll(config):
        for instance in instances.list():
            response = http.get(instance.params["url"])
            yield instance.emit({"status": response.status})   # to that rule only
"""

import json
from typing import List

from attune_sensor._bindings import instances as _wit

from attune_sensor import Instance

__all__ = ["Instance", "list"]


def list() -> List[Instance]:  # noqa: A001 (shadows the builtin on purpose: ``instances.list()``)
    """The current instances (WIT ``instances.current``), sorted by rule ref, with ``params`` parsed."""
    return [Instance(i.rule, i.trigger, _params(i)) for i in _wit.current()]


def _params(instance: "_wit.Instance") -> dict:
    # The host checks trigger_params when a rule is saved; anything else is a host bug, named here.
    params = json.loads(instance.params)
    if not isinstance(params, dict):
        raise TypeError(f"trigger_params of rule {instance.rule!r} must be a JSON object, not {type(params).__name__}")
    return params
