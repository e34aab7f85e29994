"""Read-only access to the directories granted in the sensor manifest (``capabilities.paths``).

Paths are host paths, absolute or relative to the pack directory (as in the manifest); the host
refuses anything outside a granted directory (after resolving ``..`` and symlinks), and
:class:`FsError` carries its reason.
"""

import os
from dataclasses import dataclass
from typing import Union

from attune_sensor._bindings import Err, fs as _wit

from attune_sensor._text import wit_str

__all__ = ["FsError", "DirEntry", "list_dir", "read_file", "read_text"]


class FsError(OSError):
    """The host refused or failed a read; the message is the host's."""


@dataclass(frozen=True)
class DirEntry:
    """One entry of :func:`list_dir`."""

    name: str
    is_dir: bool
    size: int
    #: Last modification, milliseconds since the Unix epoch.
    modified_ms: int


Path = Union[str, "os.PathLike[str]"]


def list_dir(path: Path) -> list[DirEntry]:
    """Entries of the directory ``path``, sorted by name."""
    try:
        entries = _wit.list_dir(_path(path))
    except Err as err:
        raise FsError(err.value) from None
    return [DirEntry(e.name, e.is_dir, e.size, e.modified_ms) for e in entries]


def read_file(path: Path) -> bytes:
    """Whole contents of the file ``path`` (bounded by the host's read cap)."""
    try:
        return bytes(_wit.read_file(_path(path)))
    except Err as err:
        raise FsError(err.value) from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Whole contents of the file ``path`` decoded as ``encoding``."""
    return read_file(path).decode(encoding)


def _path(path: Path) -> str:
    return wit_str("path", os.fspath(path))
