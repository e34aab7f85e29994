from typing import List, Protocol

from ..imports import types


class Guest(Protocol):
    def init(self, config: str) -> None: ...

    def poll(self) -> List[types.Payload]: ...


class SourceLoader(Protocol):
    def load(self, filename: str, source: str) -> None: ...
