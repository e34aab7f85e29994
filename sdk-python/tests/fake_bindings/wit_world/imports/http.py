from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

from componentize_py_types import Err
from wit_world import Trap, lowered_str


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

def no_handler(request: OutgoingRequest) -> HttpError:
    return HttpError_Denied("no handler")


#: The host: takes the request, returns an IncomingResponse or an HttpError (raised as Err).
handler: Callable[[OutgoingRequest], Union[IncomingResponse, HttpError]] = no_handler
#: Every request sent, for tests to inspect.
sent: list = []


def send(request: OutgoingRequest) -> IncomingResponse:
    lowered_str(request.method), lowered_str(request.url)
    for name, value in request.headers:
        lowered_str(name), lowered_str(value)
    if request.body is not None and not isinstance(request.body, bytes):
        raise Trap("body is not bytes")
    if request.timeout_ms is not None and not (isinstance(request.timeout_ms, int) and 0 <= request.timeout_ms < 2**32):
        raise Trap("timeout_ms is not a u32")
    sent.append(request)
    result = handler(request)
    if not isinstance(result, IncomingResponse):
        raise Err(result)
    return result
