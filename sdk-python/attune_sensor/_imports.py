"""What a compiled sensor may bundle: modules from its own directory, the ``-p`` directories and
this SDK's environment, never one that happens to sit in another Python's site-packages or the
user's site directory (a build would then work on one machine only, with whatever version was
lying there).

:func:`foreign_imports` reads, without running anything, the imports that run when the sensor is
loaded (module level, outside a ``try`` that handles a failed import), and follows those of the
modules of the sensor's own directory; packages from ``-p`` directories and the environment
bring their own dependencies.
"""

import ast
import site
import sys
import sysconfig
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Iterator, Optional, Sequence

__all__ = ["Foreign", "foreign_imports", "environment_paths"]

#: Modules componentize-py generates into every component.
_GENERATED = frozenset({"wit_world", "componentize_py_types", "componentize_py_runtime", "componentize_py_async_support", "poll_loop"})


@dataclass(frozen=True)
class Foreign:
    """An import found only outside what is bundled: ``module`` in ``location``, imported by ``importer``."""

    module: str
    location: Path
    importer: Path


def environment_paths() -> list[Path]:
    """This SDK's environment: its install and the running interpreter's site-packages."""
    paths = [Path(__file__).resolve().parent.parent, Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))]
    return list(dict.fromkeys(p.resolve() for p in paths))


def foreign_imports(sensor: Path, python_path: Sequence[Path]) -> list[Foreign]:
    """The imports of ``sensor`` (and of the modules of its directory it imports) found neither
    in its directory, the ``python_path`` directories, :func:`environment_paths` nor the
    standard library, but in another site-packages, the user site or ``sys.path``."""
    own_dir = sensor.parent.resolve()
    bundled = [str(p) for p in [own_dir, *(p.resolve() for p in python_path), *environment_paths()]]
    elsewhere = [str(p) for p in _elsewhere() if str(p) not in bundled]
    found: list[Foreign] = []
    queue, seen = [sensor.resolve()], set()
    while queue:
        file = queue.pop()
        if file in seen:
            continue
        seen.add(file)
        for module in _imported(file):
            if module in sys.stdlib_module_names or module in sys.builtin_module_names or module in _GENERATED:
                continue
            spec = PathFinder.find_spec(module, bundled)
            if spec is not None:
                queue.extend(_own_sources(spec, own_dir))
                continue
            spec = PathFinder.find_spec(module, elsewhere)
            origin = _location(spec)
            if origin is not None:
                found.append(Foreign(module, origin, file))
    return found


def _imported(file: Path) -> Iterator[str]:
    """Top-level names of the absolute imports ``file`` runs when loaded (relative ones stay in
    its package, which is followed whole)."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return  # the build itself reports it, with the sensor's own traceback
    for node in _load_time(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def _load_time(body: list) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run on import: not in functions or classes, nor in a
    ``try`` whose handlers take a failed import (an optional dependency)."""
    for node in body:
        if isinstance(node, ast.Try):
            caught = [ast.unparse(h.type) if h.type else "BaseException" for h in node.handlers]
            optional = any(
                name in ("Exception", "BaseException") or "ImportError" in name or "ModuleNotFoundError" in name
                for name in caught
            )
            blocks = [node.orelse, node.finalbody] if optional else [node.body, node.orelse, node.finalbody]
            for block in blocks:
                yield from _load_time(block)
        elif isinstance(node, ast.If):
            yield from _load_time(node.body)
            yield from _load_time(node.orelse)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node


def _own_sources(spec, own_dir: Path) -> list[Path]:
    """The source files of a module of the sensor's own directory, to follow."""
    origin = _location(spec)
    if origin is None or not (origin == own_dir or own_dir in origin.parents):
        return []
    return sorted(origin.rglob("*.py")) if origin.is_dir() else [origin]


def _location(spec) -> Optional[Path]:
    """A module's file, or a package's directory."""
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve() if spec.origin and spec.has_location else None


def _elsewhere() -> list[Path]:
    """Where else a module could sit: the user site, the base interpreter's site-packages (what
    componentize-py searches by itself when it is not told a venv) and the running ``sys.path``."""
    candidates = [site.getusersitepackages(), *site.getsitepackages([sys.base_prefix]), *sys.path]
    return list(dict.fromkeys(Path(p).resolve() for p in candidates if p and Path(p).is_dir()))
