from dataclasses import dataclass
from typing import List

from attune_sensor._fakewit import host, lowered_str


@dataclass
class DirEntry:
    name: str
    is_dir: bool
    size: int
    modified_ms: int


def list_dir(path: str) -> List[DirEntry]:
    return host("fs").list_dir(lowered_str(path))


def read_file(path: str) -> bytes:
    return host("fs").read_file(lowered_str(path))
