from typing import List, Optional, Protocol

from attune_sensor._fakewit import types


class Guest(Protocol):
    def init(self, config: str) -> None: ...

    def poll(self) -> List[types.Payload]: ...


class SourceLoader(Protocol):
    def load(self, filename: str, source: str, compiled: Optional[bytes]) -> bytes: ...
