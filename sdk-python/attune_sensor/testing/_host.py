"""The fake host: what a sensor's ``http``, ``state``, ``clock``, ``fs``, ``log`` and ``instances``
calls answer from in a test, each behaving as the real host does (its limits, its refusals and
its messages)."""

import datetime
import json
import os
import posixpath
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit

from attune_sensor import Instance, _fakewit
from attune_sensor._fakewit import Err
from attune_sensor._fakewit import fs as wit_fs
from attune_sensor._fakewit import http as wit_http
from attune_sensor._fakewit import instances as wit_instances
from attune_sensor._fakewit.log import Level
from attune_sensor.testing import _schema

__all__ = ["FakeHost", "FakeHttp", "FakeState", "FakeClock", "FakeFs", "FakeLog", "FakeInstances", "UnmatchedRequest"]

#: 2024-01-01T00:00:00Z: a fixed default, so that tests do not depend on when they run.
DEFAULT_NOW_MS = 1_704_067_200_000


class FakeHost:
    """One fake per host import. ``with host:`` makes it answer the SDK's calls (the kit's
    :class:`~attune_sensor.testing.Sensor` does so around every call it makes).

    ``state``: initial state store (str values); ``now_ms``: the clock; ``files``: in-memory files
    for ``fs`` (path -> bytes or str); ``http``: hosts granted as in ``capabilities.http``.
    """

    def __init__(
        self,
        *,
        state: Optional[Mapping[str, str]] = None,
        now_ms: int = DEFAULT_NOW_MS,
        files: Optional[Mapping[str, Union[bytes, str]]] = None,
        http: Iterable[str] = (),
    ) -> None:
        self.http = FakeHttp(http)
        self.state = FakeState(state)
        self.clock = FakeClock(now_ms)
        self.fs = FakeFs(files)
        self.log = FakeLog()
        self.instances = FakeInstances()
        self._previous: list = []

    def __enter__(self) -> "FakeHost":
        self._previous.append(_fakewit.use_host(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _fakewit.use_host(self._previous.pop())


class UnmatchedRequest(AssertionError):
    """The sensor sent a request that no fixture answers: the test is missing one."""


class FakeHttp:
    """Answers requests from fixtures registered by method and URL, after the host's own checks
    (scheme, ``capabilities.http``, method). Every request sent is kept in :attr:`requests`."""

    #: What the host accepts.
    METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")

    def __init__(self, granted: Iterable[str] = ()) -> None:
        #: ``capabilities.http`` entries: ``host``, ``host:port``, ``*.domain``, ``[::1]:8080``.
        self.granted: list[str] = []
        self.grant(*granted)
        self._denied: list[_HostPattern] = []
        #: (METHOD, url) -> an IncomingResponse, or the HttpError variant to raise.
        self._fixtures: dict[tuple[str, str], Any] = {}
        #: Every request the sensor sent (``method``, ``url``, ``headers`` as pairs, ``body``, ``timeout_ms``).
        self.requests: list[wit_http.OutgoingRequest] = []
        #: The requests no fixture answered.
        self.unmatched: list[wit_http.OutgoingRequest] = []

    def add(
        self,
        method: str,
        url: str,
        *,
        status: int = 200,
        headers: Union[Mapping[str, str], Iterable[tuple[str, str]], None] = None,
        json: Any = None,
        body: Union[bytes, str] = b"",
    ) -> None:
        """Answer ``method url`` with this response on every request (until added again).
        ``headers``: a mapping, or (name, value) pairs to repeat a header; ``json=`` sends that
        value as the body, with ``content-type: application/json``."""
        header_list = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        if json is not None:
            body = _json_dumps(json)
            if not any(name.lower() == "content-type" for name, _ in header_list):
                header_list.append(("content-type", "application/json"))
        data = body.encode() if isinstance(body, str) else bytes(body)
        self._fixtures[(method.upper(), url)] = wit_http.IncomingResponse(status, header_list, data)

    def fail(self, method: str, url: str, kind: str, detail: Union[str, int, None] = None) -> None:
        """Make ``method url`` produce no response: the sensor gets ``http.HttpError`` of ``kind``,
        ``timeout``, ``transport`` (``detail``: the reason), ``too-large`` (``detail``: the cap in
        bytes), ``invalid-request`` or ``denied`` (``detail``: the reason)."""
        errors = {
            "transport": (wit_http.HttpError_Transport, "connection refused"),
            "too-large": (wit_http.HttpError_TooLarge, 8 * 1024 * 1024),
            "invalid-request": (wit_http.HttpError_InvalidRequest, "invalid request"),
            "denied": (wit_http.HttpError_Denied, "not an allowed host"),
        }
        if kind == "timeout":
            error = wit_http.HttpError_Timeout()
        elif kind in errors:
            variant, default = errors[kind]
            error = variant(default if detail is None else detail)
        else:
            raise ValueError(f"unknown HTTP error kind {kind!r} (kinds: timeout, {', '.join(errors)})")
        self._fixtures[(method.upper(), url)] = error

    def grant(self, *hosts: str) -> None:
        """Allow requests to ``hosts`` (``capabilities.http`` entries), as the manifest would."""
        for entry in hosts:
            _HostPattern(entry)  # refuse what the host would refuse in a manifest
            self.granted.append(entry)

    def deny(self, *hosts: str) -> None:
        """Make ``hosts`` not granted, whatever the manifest says: their requests fail with
        ``HttpError(kind="denied")`` as on the host."""
        self._denied.extend(_HostPattern(entry) for entry in hosts)

    def send(self, request: wit_http.OutgoingRequest) -> wit_http.IncomingResponse:
        """The WIT ``send``, checked in the host's order."""
        self.requests.append(request)
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https"):
            raise Err(wit_http.HttpError_InvalidRequest(f"{request.url}: only http and https are supported"))
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise Err(wit_http.HttpError_InvalidRequest(f"{request.url}: {exc}")) from None
        granted = [_HostPattern(entry) for entry in self.granted]
        if not any(p.matches(host, port) for p in granted) or any(p.matches(host, port) for p in self._denied):
            allowed = ", ".join(str(p) for p in granted if str(p) not in {str(d) for d in self._denied}) or "none"
            shown = f"[{host}]" if ":" in host else host
            raise Err(wit_http.HttpError_Denied(f"{shown}:{port} is not an allowed host (allowed: {allowed})"))
        method = request.method.upper()
        if method not in self.METHODS:
            raise Err(wit_http.HttpError_InvalidRequest(f"unsupported method `{method}`"))
        answer = self._fixtures.get((method, request.url))
        if answer is None:
            self.unmatched.append(request)
            raise UnmatchedRequest(self.unmatched_message(request))
        if not isinstance(answer, wit_http.IncomingResponse):
            raise Err(answer)
        return wit_http.IncomingResponse(answer.status, list(answer.headers), answer.body)

    def unmatched_message(self, request: wit_http.OutgoingRequest) -> str:
        """What a test that sent ``request`` without a fixture for it fails with."""
        method, url = request.method.upper(), request.url
        registered = "".join(f"\n  {m} {u}" for m, u in self._fixtures) or " none"
        return (
            f"no HTTP fixture for {method} {url}; registered:{registered}\n"
            f"add one with host.http.add({method!r}, {url!r}, json=...) (or status=, headers=, body=)"
        )


class _HostPattern:
    """One ``capabilities.http`` entry, matched as the host matches it."""

    def __init__(self, entry: str) -> None:
        text = entry.strip().lower()
        if not text or "/" in text:
            raise ValueError(f"`{entry}`: give a host name, not a URL")
        if text.startswith("["):
            host, _, tail = text[1:].partition("]")
            port = tail[1:] if tail.startswith(":") else None
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, None
        if port is not None and not port.isdigit():
            raise ValueError(f"`{entry}`: bad port `{port}`")
        self.wildcard = host.startswith("*.")
        self.host = host[2:] if self.wildcard else host
        if not self.host or "*" in self.host:
            raise ValueError(f"`{entry}`: `*` is only allowed as a leading `*.`")
        self.port = None if port is None else int(port)

    def matches(self, host: str, port: int) -> bool:
        if self.wildcard:
            named = host.endswith("." + self.host) and len(host) > len(self.host) + 1
        else:
            named = host == self.host
        return named and self.port in (None, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = f"*.{host}" if self.wildcard else host
        return host if self.port is None else f"{host}:{self.port}"


class FakeState:
    """The sensor's key/value store: :attr:`values` (str -> str), with the host's limits.

    The kit keeps a failed call's writes out of it, as the host does."""

    #: The host's limits.
    MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_KEYS = 256, 64 * 1024, 1000

    def __init__(self, values: Optional[Mapping[str, str]] = None) -> None:
        self.values: dict[str, str] = {}
        for key, value in (values or {}).items():
            if not isinstance(value, str):
                raise TypeError(f"state value for {key!r} must be a str (stored values are strings; use set_json)")
            self.values[key] = value

    def get(self, key: str) -> Optional[str]:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        if not 1 <= len(key.encode()) <= self.MAX_KEY_BYTES:
            raise Err(f"state key must be 1 to {self.MAX_KEY_BYTES} bytes")
        if len(value.encode()) > self.MAX_VALUE_BYTES:
            raise Err(f"state value for `{key}` is {len(value.encode())} bytes (limit {self.MAX_VALUE_BYTES})")
        if key not in self.values and len(self.values) >= self.MAX_KEYS:
            raise Err(f"state is full ({self.MAX_KEYS} keys)")
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def keys(self) -> list[str]:
        return sorted(self.values)

    def get_json(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` parsed as JSON (as the SDK's ``state.get_json``), or ``default``."""
        text = self.values.get(key)
        return default if text is None else json.loads(text)

    def set_json(self, key: str, value: Any) -> None:
        """Store ``value`` as JSON (as the SDK's ``state.set_json``)."""
        self.values[key] = json.dumps(value)


class FakeClock:
    """``clock.now_ms``: frozen at :attr:`now_ms` until set or advanced."""

    def __init__(self, now_ms: int = DEFAULT_NOW_MS) -> None:
        self.now_ms = now_ms

    def set(self, when: Union[int, datetime.datetime]) -> None:
        """Milliseconds since the epoch, or an aware datetime."""
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                raise ValueError("give an aware datetime (with tzinfo), e.g. datetime.timezone.utc")
            when = int(when.timestamp() * 1000)
        self.now_ms = when

    def advance(self, ms: int = 0, *, seconds: float = 0) -> None:
        self.now_ms += ms + int(seconds * 1000)


class FakeFs:
    """Read-only files: in-memory :attr:`files` (path -> bytes or str, directories implied by
    the paths), and real directories :meth:`grant` ed as in ``capabilities.paths`` (relative
    paths are relative to :attr:`base`, the pack directory). Anything else is refused with the
    host's message."""

    def __init__(self, files: Optional[Mapping[str, Union[bytes, str]]] = None, base: Union[str, Path, None] = None) -> None:
        self.files: dict[str, Union[bytes, str]] = dict(files or {})
        self.base = Path(base or os.getcwd()).resolve()
        self.granted: list[Path] = []

    def grant(self, *dirs: Union[str, Path]) -> None:
        """Let the sensor read these real directories (relative ones from :attr:`base`)."""
        for directory in dirs:
            path = self.base / directory
            if not path.is_dir():
                raise ValueError(f"{path}: not a directory")
            self.granted.append(path)

    def list_dir(self, path: str) -> list[wit_fs.DirEntry]:
        names = self._memory_children(path)
        if names is not None:
            return [self._memory_entry(path, name) for name in sorted(names)]
        real = self._real(path)
        try:
            entries = [wit_fs.DirEntry(e.name, e.is_dir(), e.stat().st_size, int(e.stat().st_mtime * 1000)) for e in os.scandir(real)]
        except OSError as exc:
            raise Err(_os_message(path, exc)) from None
        return sorted(entries, key=lambda e: e.name)

    def read_file(self, path: str) -> bytes:
        key = _normal(path)
        if key in self.files:
            content = self.files[key]
            return content.encode() if isinstance(content, str) else bytes(content)
        if self._memory_children(path) is not None:
            raise Err(f"{path}: not a regular file (a directory)")
        real = self._real(path)
        try:
            mode = os.stat(real).st_mode
            if not stat.S_ISREG(mode):
                raise Err(f"{path}: not a regular file ({'a directory' if stat.S_ISDIR(mode) else 'not a file'})")
            return real.read_bytes()
        except OSError as exc:
            raise Err(_os_message(path, exc)) from None

    def _memory_children(self, path: str) -> Optional[set]:
        prefix = _normal(path).rstrip("/") + "/"
        children = {name[len(prefix):].split("/")[0] for name in map(_normal, self.files) if name.startswith(prefix)}
        return children or None

    def _memory_entry(self, directory: str, name: str) -> wit_fs.DirEntry:
        key = _normal(posixpath.join(directory, name))
        if key in self.files:
            content = self.files[key]
            return wit_fs.DirEntry(name, False, len(content.encode() if isinstance(content, str) else content), 0)
        return wit_fs.DirEntry(name, True, 0, 0)

    def _real(self, path: str) -> Path:
        requested = Path(os.path.normpath(self.base / path))
        best = None
        for granted in self.granted:
            for name in (Path(os.path.normpath(granted)), granted.resolve()):
                if requested == name or name in requested.parents:
                    if best is None or len(name.parts) > len(best[0].parts):
                        best = (name, granted.resolve())
        if best is None:
            if self._memory_children(posixpath.dirname(_normal(path))) is not None:
                raise Err(f"{path}: No such file or directory (os error 2)")
            raise Err(f"{path}: access denied (not under a granted path)")
        name, real_dir = best
        real = (real_dir / requested.relative_to(name)).resolve()
        if real != real_dir and real_dir not in real.parents:
            raise Err(f"{path}: access denied (leads outside the granted path)")
        return real


def _normal(path: str) -> str:
    return posixpath.normpath(path)


def _os_message(path: str, exc: OSError) -> str:
    # As Rust prints an io::Error.
    return f"{path}: {exc.strerror} (os error {exc.errno})"


class FakeLog:
    """Captured ``log`` lines: :attr:`lines` holds ``(level, message)``, level one of ``trace``,
    ``debug``, ``info``, ``warning``, ``error``."""

    _NAMES = {Level.TRACE: "trace", Level.DEBUG: "debug", Level.INFO: "info", Level.WARN: "warning", Level.ERROR: "error"}

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, level: Level, message: str) -> None:
        self.lines.append((self._NAMES[level], message))

    def messages(self, level: Optional[str] = None) -> list[str]:
        """The messages logged, at ``level`` only if given."""
        return [message for name, message in self.lines if level in (None, name)]


class FakeInstances:
    """The trigger instances (enabled rules) the sensor serves: :attr:`items`."""

    def __init__(self) -> None:
        self.items: list[Instance] = []
        #: The triggers the sensor serves -> their ``param_schema`` (None: any params); the kit
        #: fills it from the pack.
        self.triggers: dict[str, Any] = {}

    def add(self, params: Optional[Mapping[str, Any]] = None, *, rule: Optional[str] = None, trigger: Optional[str] = None) -> Instance:
        """A rule on ``trigger`` (default: the sensor's first) with these ``trigger_params``,
        checked against the trigger's ``param_schema`` when the pack is known. ``rule`` defaults
        to ``local.instance_<n>``, as ``attune-host sensor run --instance`` names them."""
        if trigger is None:
            if not self.triggers:
                raise ValueError("give trigger=: the sensor's triggers are not known (load it from its pack)")
            trigger = next(iter(self.triggers))
        params = dict(params or {})
        if self.triggers.get(trigger) is not None:
            _schema.check_params(self.triggers[trigger], params)
        if rule is None:
            rule = f"local.instance_{sum(i.rule.startswith('local.instance_') for i in self.items) + 1}"
        instance = Instance(rule, trigger, params)
        self.items.append(instance)
        return instance

    def clear(self) -> None:
        self.items.clear()

    def current(self) -> list[wit_instances.Instance]:
        """The WIT ``current``: sorted by rule ref, params as JSON text."""
        ordered = sorted(self.items, key=lambda i: i.rule)
        return [wit_instances.Instance(i.rule, i.trigger, _json_dumps(i.params)) for i in ordered]


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
