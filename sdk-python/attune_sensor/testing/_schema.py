"""JSON Schema as the host applies it: the draft a schema's ``$schema`` names, else 2020-12 (the
default of the Rust ``jsonschema`` crate the host uses); an absent, null or ``{}`` schema accepts
anything."""

from typing import Any, Iterable, Optional

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

__all__ = ["validator", "problems", "check_params"]


def validator(schema: Any, what: str) -> Optional[Validator]:
    """A validator for ``schema``, or None when it accepts anything; ValueError naming ``what``
    (e.g. ``triggers/new_item.yaml: payload_schema``) when it is not a JSON Schema."""
    if schema is None or schema == {}:
        return None
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"{what}: not a valid JSON Schema: {exc.message}") from None
    return cls(schema)


def problems(checker: Optional[Validator], instance: Any) -> list[tuple[str, str]]:
    """``(JSON pointer, reason)`` of each problem of ``instance``, as the host lists them."""
    if checker is None:
        return []
    return [(_pointer(error.absolute_path), error.message) for error in checker.iter_errors(instance)]


def check_params(schema: Any, params: dict) -> None:
    """``trigger_params`` against a trigger's ``param_schema``; ValueError naming the field."""
    found = problems(validator(schema, "param_schema"), params)
    if found:
        pointer, reason = found[0]
        field = "trigger_params" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in pointer.split("/")[1:])
        raise ValueError(f"{field}: {reason}")


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)
