"""Strings on their way into the WIT bindings.

componentize-py aborts the whole instance (a trap) when a binding gets a non-str where WIT says
`string`, or a str it cannot encode as UTF-8 (lone surrogates). Sensor values therefore pass
through here first and fail as ordinary Python exceptions instead.
"""

__all__ = ["wit_str", "printable"]


def wit_str(what: str, value: object) -> str:
    """``value`` if it can be a WIT string; else a TypeError or ValueError naming ``what``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if value.isascii():
        return value  # the common case, checked without encoding a copy (isascii reads a flag)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text: {exc.reason} at index {exc.start}") from None
    return value


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry escaped, for log lines and error reports."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
