"""Outgoing HTTP, performed by the host.

Only hosts listed in the sensor manifest's ``capabilities.http`` are reachable, redirects are not
followed and the response body is capped by the host. Any response, whatever its status, is
returned; a request that produced no response raises :class:`HttpError`.
"""

import json as _json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from attune_sensor._bindings import Err, http as _wit

from attune_sensor._text import wit_str

__all__ = ["HttpError", "Response", "request", "get", "post"]

Body = Union[bytes, bytearray, memoryview, str]


class HttpError(Exception):
    """A request that produced no response.

    ``kind`` says why: ``"denied"`` (host not in the allow-list), ``"invalid-request"``,
    ``"timeout"``, ``"too-large"`` (body over the host's cap) or ``"transport"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Response:
    """A complete response. Header names are lower-case; repeated headers are joined by ``", "``."""

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as ``encoding``."""
        return self.body.decode(encoding)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)


def request(
    method: str,
    url: str,
    *,
    headers: Optional[Mapping[str, str]] = None,
    body: Optional[Body] = None,
    timeout_ms: Optional[int] = None,
) -> Response:
    """Send one request through the host and return the whole response.

    ``body`` may be bytes or a str (sent as UTF-8). ``timeout_ms`` is capped by the host and by
    the poll deadline. Raises :class:`HttpError` when no response could be had.
    """
    if isinstance(body, str):
        body = body.encode()
    elif body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"request body must be bytes or str, not {type(body).__name__}")
    if timeout_ms is not None and not (isinstance(timeout_ms, int) and 0 <= timeout_ms < 2**32):
        raise ValueError(f"timeout_ms must be an int from 0 to 2**32 - 1, not {timeout_ms!r}")
    header_list = [(wit_str("header name", k), wit_str(f"header {k!r}", v)) for k, v in (headers or {}).items()]
    outgoing = _wit.OutgoingRequest(
        wit_str("method", method).upper(),
        wit_str("url", url),
        header_list,
        None if body is None else bytes(body),
        timeout_ms,
    )
    try:
        incoming = _wit.send(outgoing)
    except Err as err:
        raise _http_error(outgoing, err.value) from None
    merged: dict[str, str] = {}
    for name, value in incoming.headers:
        name = name.lower()
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return Response(incoming.status, merged, bytes(incoming.body))


def get(url: str, **kwargs: Any) -> Response:
    """``request("GET", url, ...)``."""
    return request("GET", url, **kwargs)


def post(url: str, json: Any = None, **kwargs: Any) -> Response:
    """``request("POST", url, ...)``; ``json=`` sends a JSON body with its content-type."""
    if json is not None:
        headers = dict(kwargs.get("headers") or {})
        if not any(name.lower() == "content-type" for name in headers):
            headers["content-type"] = "application/json"
        kwargs.update(body=_json.dumps(json), headers=headers)
    return request("POST", url, **kwargs)


def _http_error(req: "_wit.OutgoingRequest", error: "_wit.HttpError") -> HttpError:
    if isinstance(error, _wit.HttpError_Denied):
        kind, detail = "denied", error.value
    elif isinstance(error, _wit.HttpError_InvalidRequest):
        kind, detail = "invalid-request", error.value
    elif isinstance(error, _wit.HttpError_Timeout):
        kind, detail = "timeout", "no response in time"
    elif isinstance(error, _wit.HttpError_TooLarge):
        kind, detail = "too-large", f"response body exceeds the host's cap of {error.value} bytes"
    else:
        kind, detail = "transport", error.value
    return HttpError(kind, f"{req.method} {req.url} failed ({kind}): {detail}")
