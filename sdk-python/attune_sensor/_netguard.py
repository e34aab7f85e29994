"""Sockets in a sensor fail at once, saying what to use instead.

A sensor reaches the network only through :mod:`attune_sensor.http` (the host's HTTP, limited to
the manifest's ``capabilities.http``); the sandbox grants no sockets. Left alone, a sensor that
uses ``socket``, ``urllib.request``, ``http.client`` or ``requests`` fails far from its cause:
a plain-source sensor with a bare ``No module named 'urllib.request'``, a compiled one with a
trap deep in ``getaddrinfo``. Two guards give both the same answer, :data:`MESSAGE`:

- :func:`install_import_guard` appends an import hook that refuses the networking modules a component lacks
  (it runs only after every other finder failed, so what is bundled still imports);
- :func:`guard_sockets` replaces the name lookups and connections of an imported ``socket``
  module with :class:`NetworkRefused`.
"""

import sys
from importlib.abc import MetaPathFinder
from typing import Callable

__all__ = ["MESSAGE", "NetworkRefused", "install_import_guard", "guard_sockets"]

MESSAGE = "networking goes through attune_sensor.http, granted by capabilities.http in the sensor's manifest"

#: Modules whose only use is the network (top-level names cover their submodules).
_NETWORK_MODULES = frozenset({
    "socket", "_socket", "ssl", "_ssl", "select", "selectors", "socketserver", "asyncio",
    "http.client", "http.server", "urllib.request", "ftplib", "smtplib", "poplib", "imaplib",
    "xmlrpc.client", "xmlrpc.server", "requests", "urllib3", "httpx", "httpcore", "aiohttp",
    "websocket", "websockets",
})

#: The ``socket`` functions that resolve names or open connections, each replaced by a refusal;
#: the C module's too, for code that calls it directly.
_SOCKET_FUNCTIONS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
                     "create_connection", "create_server")
_SOCKET_METHODS = ("connect", "connect_ex", "bind", "sendto")


class NetworkRefused(BaseException):
    """A socket call in a sensor. A BaseException, like SystemExit: HTTP libraries catch
    ``OSError`` and ``Exception`` to retry or wrap, which would bury :data:`MESSAGE`."""


class _ImportGuard(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (the finder protocol)
        if fullname in _NETWORK_MODULES or fullname.split(".")[0] in _NETWORK_MODULES:
            raise ModuleNotFoundError(f"No module named '{fullname}': {MESSAGE}", name=fullname)
        return None


def install_import_guard() -> None:
    """The import hook, for good (inside a component); repeated calls add nothing more."""
    if not any(isinstance(finder, _ImportGuard) for finder in sys.meta_path):
        sys.meta_path.append(_ImportGuard())


def guard_sockets() -> Callable[[], None]:
    """Refuse the socket calls of the ``socket`` module, if it is imported; returns what undoes
    it (the test kit guards only while a sensor runs)."""
    replaced = []
    for name in ("socket", "_socket"):
        module = sys.modules.get(name)
        if module is None:
            continue
        for function in _SOCKET_FUNCTIONS:
            if hasattr(module, function):
                replaced.append((module, function, getattr(module, function)))
                setattr(module, function, _refusal(f"{name}.{function}"))
    socket_class = getattr(sys.modules.get("socket"), "socket", None)
    if isinstance(socket_class, type):
        for method in _SOCKET_METHODS:
            # Set on the Python class, which the C type's methods are inherited into.
            replaced.append((socket_class, method, socket_class.__dict__.get(method, _INHERITED)))
            setattr(socket_class, method, _refusal(f"socket.{method}", method=True))

    def undo() -> None:
        for owner, name, original in reversed(replaced):
            if original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    return undo


_INHERITED = object()


def _refusal(what: str, method: bool = False) -> Callable[..., None]:
    def refuse(*args: object, **kwargs: object) -> None:
        target = args[1:2] if method else args[:1]  # the host or address, without the socket or options
        raise NetworkRefused(f"{what}({', '.join(map(repr, target))}): {MESSAGE}")

    refuse.__name__ = what.rsplit(".", 1)[-1]
    return refuse
