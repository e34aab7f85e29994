from dataclasses import dataclass
from typing import List

from componentize_py_types import Err
from wit_world import lowered_str


@dataclass
class DirEntry:
    name: str
    is_dir: bool
    size: int
    modified_ms: int


#: The granted files: path -> bytes; a directory is a path -> list of DirEntry.
files: dict = {}


def list_dir(path: str) -> List[DirEntry]:
    entries = files.get(lowered_str(path))
    if not isinstance(entries, list):
        raise Err(f"{path}: not a granted directory")
    return entries


def read_file(path: str) -> bytes:
    content = files.get(lowered_str(path))
    if not isinstance(content, bytes):
        raise Err(f"{path}: not a granted file")
    return content
