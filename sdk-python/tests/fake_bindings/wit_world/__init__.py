"""Stand-in for the `wit_world` bindings componentize-py generates from wit/sensor.wit.

Same module layout, names and signatures as the generated code, so the SDK runs on plain CPython
in unit tests. Host behaviour is a few module-level variables that tests set. Like the real
bindings, which abort the instance on a value they cannot lower, the imports raise `Trap` (a
BaseException, so nothing in the SDK mistakes it for a sensor error) on a non-str or non-UTF-8
string.
"""


class Trap(BaseException):
    """What the real bindings would turn into a trap."""


def lowered_str(value):
    """Check ``value`` the way the real bindings lower a WIT string."""
    if not isinstance(value, str):
        raise Trap(f"'{type(value).__name__}' object is not an instance of 'str'")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Trap(str(exc)) from None
    return value
