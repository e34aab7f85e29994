"""Time as seen by the host."""

from attune_sensor._bindings import clock as _wit

__all__ = ["now_ms"]


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch (UTC)."""
    return _wit.now_ms()
