from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from attune_sensor._fakewit import Trap, host, lowered_str


@dataclass
class OutgoingRequest:
    method: str
    url: str
    headers: List[Tuple[str, str]]
    body: Optional[bytes]
    timeout_ms: Optional[int]


@dataclass
class IncomingResponse:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes


@dataclass
class HttpError_Denied:
    value: str


@dataclass
class HttpError_InvalidRequest:
    value: str


@dataclass
class HttpError_Timeout:
    pass


@dataclass
class HttpError_TooLarge:
    value: int


@dataclass
class HttpError_Transport:
    value: str


HttpError = Union[HttpError_Denied, HttpError_InvalidRequest, HttpError_Timeout, HttpError_TooLarge, HttpError_Transport]


def send(request: OutgoingRequest) -> IncomingResponse:
    lowered_str(request.method), lowered_str(request.url)
    for name, value in request.headers:
        lowered_str(name), lowered_str(value)
    if request.body is not None and not isinstance(request.body, bytes):
        raise Trap("body is not bytes")
    if request.timeout_ms is not None and not (isinstance(request.timeout_ms, int) and 0 <= request.timeout_ms < 2**32):
        raise Trap("timeout_ms is not a u32")
    return host("http").send(request)
