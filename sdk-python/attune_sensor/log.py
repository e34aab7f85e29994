"""Log lines into the host's log, tagged there with the sensor's ref (rate- and size-bounded)."""

from attune_sensor._bindings import log as _wit
from attune_sensor._text import printable

_Level = _wit.Level

__all__ = ["debug", "info", "warning", "error"]


def debug(message: object) -> None:
    """Log ``message`` (converted with ``str``) at debug level."""
    _write(_Level.DEBUG, message)


def info(message: object) -> None:
    """Log ``message`` (converted with ``str``) at info level."""
    _write(_Level.INFO, message)


def warning(message: object) -> None:
    """Log ``message`` (converted with ``str``) at warning level."""
    _write(_Level.WARN, message)


def error(message: object) -> None:
    """Log ``message`` (converted with ``str``) at error level."""
    _write(_Level.ERROR, message)


def _write(level: _Level, message: object) -> None:
    _wit.log(level, printable(str(message)))
