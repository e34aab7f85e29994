"""Runs a sensor the way the host does: its module loaded through the SDK's own glue, ``init``
once, then ``poll``; each poll's payloads checked as the host checks them before it stores any."""

import json
import socket  # noqa: F401 (guard_sockets covers an imported socket module: this one, before any sensor code)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar, Union

from attune_sensor import _glue, _netguard
from attune_sensor._fakewit import Err, Trap
from attune_sensor.testing import _schema
from attune_sensor.testing._host import FakeHost, UnmatchedRequest
from attune_sensor.testing._pack import (
    DEFAULT_MAX_EVENTS_PER_POLL, DEFAULT_MAX_PAYLOAD_BYTES, read_pack_sensor,
)

__all__ = ["Sensor", "Envelope", "SensorFailure", "SensorError", "PayloadMismatch"]

T = TypeVar("T")
PathLike = Union[str, Path]


class SensorFailure(AssertionError):
    """A call that fails as it would on the host; ``str()`` is what ``attune-host sensor run``
    prints after ``error:``. ``reason`` is the host's label (``sensor_error``, ``bad_payload``,
    ``payload_schema``, ``too_many_payloads``, ``payload_too_large``, ``undeclared_trigger``,
    ``trap``), or ``load`` for a code file that cannot be read."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(text)
        self.reason = reason


class SensorError(SensorFailure):
    """The sensor's code raised (or did not load): the WIT ``sensor-error``. ``message`` is
    ``"<ExceptionType>: <message>"``, ``traceback`` the sensor's own frames (or None)."""

    def __init__(self, text: str, message: str, traceback: Optional[str]) -> None:
        super().__init__(text if traceback is None else f"{text}\n{traceback}", "sensor_error")
        self.message = message
        self.traceback = traceback


class PayloadMismatch(SensorFailure):
    """A payload its trigger's ``payload_schema`` refuses. ``problems`` lists ``(JSON pointer,
    reason)``, e.g. ``("/id", "'7' is not of type 'integer'")``."""

    def __init__(self, text: str, index: int, trigger: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(text, "payload_schema")
        self.index = index
        self.trigger = trigger
        self.problems = problems


@dataclass(frozen=True)
class Envelope:
    """One payload as the host takes it: its trigger, its rule (when addressed to one) and the
    JSON document."""

    trigger: Optional[str]
    rule: Optional[str]
    payload: Any


class Sensor:
    """A sensor under test, with its own :class:`FakeHost` (:attr:`host`).

    Build it with :meth:`from_pack` (the manifest's entry, config, capabilities and triggers, as
    the host reads them) or :meth:`from_file` (a bare ``.py``, as ``attune-host sensor run
    file.py`` runs it). :meth:`poll` loads the module and calls ``init`` the first time.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        ref: str,
        config: Mapping[str, Any],
        host: FakeHost,
        triggers: Iterable[str] = (),
        payload_schemas: Optional[Mapping[str, tuple[str, Any]]] = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_events_per_poll: int = DEFAULT_MAX_EVENTS_PER_POLL,
    ) -> None:
        self.path = Path(path)
        self.ref = ref
        #: The config ``init`` and ``poll`` get (the manifest's, rendered, with the overrides).
        self.config = dict(config)
        self.host = host
        self.triggers = list(triggers)
        self.max_payload_bytes = max_payload_bytes
        self.max_events_per_poll = max_events_per_poll
        # Trigger -> validator of its payload_schema (None: anything goes).
        self._checks = {
            trigger: _schema.validator(schema, f"{where}: payload_schema")
            for trigger, (where, schema) in (payload_schemas or {}).items()
        }
        self._sensor: Optional[_glue.Sensor] = None
        self._initialized = False

    @classmethod
    def from_file(
        cls,
        path: PathLike,
        *,
        config: Optional[Mapping[str, Any]] = None,
        host: Optional[FakeHost] = None,
        triggers: Iterable[str] = (),
        allow_http: Iterable[str] = (),
        allow_paths: Iterable[PathLike] = (),
    ) -> "Sensor":
        """The sensor in the ``.py`` file ``path``, ref ``local.<name>``; without a manifest it
        may reach only ``allow_http`` hosts and ``allow_paths`` directories (and ``host``'s)."""
        path = Path(path)
        host = host or FakeHost()
        host.http.grant(*allow_http)
        host.fs.grant(*allow_paths)
        triggers = list(triggers)
        host.instances.triggers = dict.fromkeys(triggers)
        return cls(path, ref=f"local.{path.stem}", config=config or {}, host=host, triggers=triggers)

    @classmethod
    def from_pack(
        cls,
        pack_dir: PathLike,
        sensor: Optional[str] = None,
        *,
        config: Optional[Mapping[str, Any]] = None,
        host: Optional[FakeHost] = None,
        secrets: Optional[Mapping[str, str]] = None,
        allow_http: Iterable[str] = (),
        allow_paths: Iterable[PathLike] = (),
    ) -> "Sensor":
        """The sensor ``sensor`` (``items`` or ``pack.items``; optional when the pack has one) of
        the pack at ``pack_dir``: its manifest's ``config`` with ``{{ pack.config.* }}`` (and
        ``{{ secret.* }}`` from ``secrets``) filled in and ``config`` merged over it, its
        ``capabilities`` granted (plus ``allow_http`` and ``allow_paths``), the pack's enabled
        rules on its triggers as its trigger instances, and each payload checked against its
        trigger's ``payload_schema``."""
        spec = read_pack_sensor(Path(pack_dir).resolve(), sensor, secrets or {})
        host = host or FakeHost()
        host.http.grant(*spec.http, *allow_http)
        host.fs.base = spec.pack_dir
        host.fs.grant(*spec.paths, *allow_paths)
        host.instances.triggers = {t: spec.trigger_schemas[t][2] for t in spec.triggers}
        for rule, trigger, params in spec.rules:
            host.instances.add(params, rule=rule, trigger=trigger)
        schemas = {t: (str(spec.trigger_schemas[t][0]), spec.trigger_schemas[t][1]) for t in spec.triggers}
        return cls(
            spec.entry,
            ref=spec.ref,
            config={**spec.config, **(config or {})},
            host=host,
            triggers=spec.triggers,
            payload_schemas=schemas,
            max_payload_bytes=spec.max_payload_bytes,
            max_events_per_poll=spec.max_events_per_poll,
        )

    def init(self) -> None:
        """Load the module (if not yet) and call its ``init(config)``, as the host does once
        before the first poll."""
        if self._sensor is None:
            try:
                source = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SensorFailure(f"{self.path}: {exc}", "load") from None
            self._sensor = self._call(lambda: _glue.Sensor(self.path.name, source), load=True)
        sensor = self._sensor
        self._call(lambda: sensor.init(json.dumps(self.config)))
        self._initialized = True

    def poll(self) -> list[Any]:
        """One poll's payloads (the JSON documents), after the host's checks."""
        return [envelope.payload for envelope in self.poll_envelopes()]

    def poll_envelopes(self) -> list[Envelope]:
        """One poll's payloads with the trigger and rule each is for."""
        if not self._initialized:
            self.init()
        sensor = self._sensor
        assert sensor is not None
        return self._call(lambda: self._checked(sensor.poll()))

    def _call(self, call: Callable[[], T], load: bool = False) -> T:
        """Run one host call: the fake host answering, sockets refused, and on failure no state
        written (the host commits a call's state writes only with its payloads)."""
        committed = dict(self.host.state.values)
        unmatched = len(self.host.http.unmatched)
        undo = _netguard.guard_sockets()
        failure: Optional[AssertionError] = None
        try:
            with self.host:
                return call()
        except Err as err:
            failure = self._sensor_error(err.value, load)
        except Trap as trap:
            failure = SensorFailure(f"{self.ref}: trap: {trap}", "trap")
        except SensorFailure as checked:
            failure = checked
        finally:
            undo()
            # A missing fixture is the test's to fix, whatever the sensor made of its error.
            if len(self.host.http.unmatched) > unmatched or failure is not None:
                self.host.state.values = committed
            if len(self.host.http.unmatched) > unmatched:
                failure = UnmatchedRequest(self.host.http.unmatched_message(self.host.http.unmatched[unmatched]))
            if failure is not None:
                raise failure from None

    def _sensor_error(self, error: Any, load: bool) -> SensorError:
        # As the host reports it: a load failure names the file, a call failure the sensor.
        text = f"{self.path}: {error.message}" if load else f"{self.ref}: sensor error: {error.message}"
        return SensorError(text, error.message, error.traceback)

    def _checked(self, raw: list) -> list[Envelope]:
        """The host's checks of one poll's payloads, in its order."""
        if len(raw) > self.max_events_per_poll:
            self._fail("too_many_payloads", f"too many payloads: {len(raw)} in one poll (limit {self.max_events_per_poll})")
        envelopes = []
        for index, payload in enumerate(raw):
            if len(payload.json) > self.max_payload_bytes:
                self._fail("payload_too_large", f"payload too large: payload {index} is {len(payload.json)} bytes (limit {self.max_payload_bytes})")
            document = json.loads(payload.json)
            if not isinstance(document, dict):
                self._fail("bad_payload", f"bad payload: payload {index}: a payload must be a JSON object")
            trigger = self._trigger(index, payload)
            envelopes.append(Envelope(trigger, payload.rule, document))
        for index, envelope in enumerate(envelopes):
            problems = _schema.problems(self._checks.get(envelope.trigger), envelope.payload)
            if problems:
                listed = "; ".join(f"{reason} at `{pointer}`" for pointer, reason in problems[:3])
                text = f"{self.ref}: payload {index}: does not match the payload_schema of `{envelope.trigger}`: {listed}"
                raise PayloadMismatch(text, index, envelope.trigger or "", problems)
        return envelopes

    def _trigger(self, index: int, payload: Any) -> Optional[str]:
        named = payload.trigger
        if payload.rule is not None:
            instance = next((i for i in self.host.instances.items if i.rule == payload.rule), None)
            if instance is None:
                known = ", ".join(i.rule for i in sorted(self.host.instances.items, key=lambda i: i.rule))
                self._fail("bad_payload", f"bad payload: payload {index}: rule `{payload.rule}` is not an instance of this sensor (instances: [{known}])")
            if named is not None and named != instance.trigger:
                self._fail("bad_payload", f"bad payload: payload {index}: rule `{payload.rule}` is on trigger `{instance.trigger}`, not `{named}`")
            named = instance.trigger
        if named is None:
            return self.triggers[0] if len(self.triggers) == 1 else None
        if self.triggers and named not in self.triggers:
            self._fail("undeclared_trigger", f"undeclared trigger: payload {index} is for `{named}`, sensor declares [{', '.join(self.triggers)}]")
        return named

    def _fail(self, reason: str, text: str) -> None:
        raise SensorFailure(f"{self.ref}: {text}", reason)
