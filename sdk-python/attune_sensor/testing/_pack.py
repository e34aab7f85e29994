"""What the kit reads of a pack to run one of its sensors as the host would: the sensor manifest
(entry, triggers, limits, capabilities, config), the pack's config it refers to, its triggers'
schemas and the pack's rules (the sensor's default trigger instances).

Not a validator: ``attune-host pack validate`` checks every file and field; here a problem that
stops the sensor from running is reported, naming the file and field.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

__all__ = ["PackError", "PackSensor", "read_pack_sensor", "render"]

#: The limits a sensor without `limits` gets (host/src/limits.rs).
DEFAULT_MAX_PAYLOAD_BYTES = 262_144
DEFAULT_MAX_EVENTS_PER_POLL = 1000


class PackError(ValueError):
    """A pack the kit cannot run the sensor of; the message names the file and field."""


@dataclass
class PackSensor:
    """One sensor of a pack, resolved as the host resolves it."""

    ref: str
    entry: Path
    triggers: list[str]
    config: dict
    max_payload_bytes: int
    max_events_per_poll: int
    http: list[str]
    paths: list[str]
    pack_dir: Path
    #: Trigger ref -> (file, payload_schema, param_schema) for the pack's triggers.
    trigger_schemas: dict[str, tuple[Path, Any, Any]] = field(default_factory=dict)
    #: The pack's enabled rules on the sensor's triggers: (rule ref, trigger, trigger_params).
    rules: list[tuple[str, str, dict]] = field(default_factory=list)


def read_pack_sensor(pack_dir: Path, name: Optional[str], secrets: Mapping[str, str]) -> PackSensor:
    """The sensor ``name`` (``items`` or ``pack.items``; may be None when the pack has one)."""
    pack_file = pack_dir / "pack.yaml"
    pack = _mapping(pack_file)
    pack_ref = _field(pack_file, pack, "ref", str)
    pack_config = pack.get("config") or {}

    trigger_schemas = {}
    for file in _yaml_files(pack_dir / "triggers"):
        trigger = _mapping(file)
        ref = _qualify(pack_ref, _field(file, trigger, "ref", str))
        trigger_schemas[ref] = (file, trigger.get("payload_schema"), trigger.get("param_schema"))

    manifests = [(file, _mapping(file)) for file in _yaml_files(pack_dir / "sensors")]
    refs = [_qualify(pack_ref, _field(file, manifest, "ref", str)) for file, manifest in manifests]
    if name is None and len(manifests) != 1:
        raise PackError(f"{pack_dir}: {len(manifests)} sensors; name one ({', '.join(refs) or 'none'})")
    wanted = refs[0] if name is None else _qualify(pack_ref, name)
    if wanted not in refs:
        raise PackError(f"{pack_dir}: no sensor `{name}` (sensors: {', '.join(refs) or 'none'})")
    file, manifest = manifests[refs.index(wanted)]

    runtime = _field(file, manifest, "runtime", str)
    if runtime != "python":
        raise PackError(
            f"{file}: runtime: `{runtime}`: the Python kit runs plain Python source (runtime: python); "
            "load the source of a built component with Sensor.from_file"
        )
    entry = file.parent / _field(file, manifest, "entry", str)
    triggers = [_qualify(pack_ref, t) for t in _field(file, manifest, "triggers", list)]
    for i, trigger in enumerate(triggers):
        if trigger not in trigger_schemas:
            raise PackError(f"{file}: triggers[{i}]: unknown trigger `{trigger}`")
    limits = manifest.get("limits") or {}
    capabilities = manifest.get("capabilities") or {}
    context = {"pack": {"config": pack_config}, "secret": dict(secrets)}
    try:
        config = render(manifest.get("config") or {}, context)
    except _TemplateError as exc:
        raise PackError(f"{file}: config: {exc}") from None

    rules = []
    for rule_file in _yaml_files(pack_dir / "rules"):
        rule = _mapping(rule_file)
        if rule.get("enabled", True) and rule.get("trigger") in triggers:
            rules.append((_field(rule_file, rule, "ref", str), rule["trigger"], dict(rule.get("trigger_params") or {})))
    return PackSensor(
        ref=wanted,
        entry=entry,
        triggers=triggers,
        config=config,
        max_payload_bytes=int(limits.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)),
        max_events_per_poll=int(limits.get("max_events_per_poll", DEFAULT_MAX_EVENTS_PER_POLL)),
        http=list(capabilities.get("http") or []),
        paths=list(capabilities.get("paths") or []),
        pack_dir=pack_dir,
        trigger_schemas=trigger_schemas,
        rules=sorted(rules),
    )


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml")) if directory.is_dir() else []


def _mapping(file: Path) -> dict:
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackError(f"{file}: {exc}") from None
    if not isinstance(document, dict):
        raise PackError(f"{file}: expected a mapping of fields")
    return document


def _field(file: Path, document: dict, name: str, kind: type) -> Any:
    if name not in document:
        raise PackError(f"{file}: {name}: missing")
    if not isinstance(document[name], kind):
        raise PackError(f"{file}: {name}: expected a {kind.__name__}, not {type(document[name]).__name__}")
    return document[name]


def _qualify(pack_ref: str, ref: str) -> str:
    return ref if "." in ref else f"{pack_ref}.{ref}"


class _TemplateError(Exception):
    pass


_STEP = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def render(value: Any, context: Mapping[str, Any], at: str = "") -> Any:
    """``{{ path }}`` templates in every string of ``value``, as the host renders a sensor's config:
    a string that is one template takes the JSON type of what it names, templates inside text
    render as text (non-strings as compact JSON), and a path naming nothing is an error."""
    if isinstance(value, dict):
        return {k: render(v, context, f"{at}.{k}" if at else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{at}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{{" not in value:
        return value
    parts: list[Any] = []
    position = 0
    while (start := value.find("{{", position)) != -1:
        end = value.find("}}", start + 2)
        if end == -1:
            raise _TemplateError(f"{at}: unclosed `{{{{` in `{value}`")
        path = value[start + 2:end].strip()
        if not path:
            raise _TemplateError(f"{at}: empty `{{{{ }}}}` in `{value}`")
        parts += [value[position:start], _lookup(path, context, at)]
        position = end + 2
    parts.append(value[position:])
    if value.strip().startswith("{{") and value.strip().endswith("}}") and len(parts) == 3:
        return parts[1]
    return "".join(p if isinstance(p, str) else json.dumps(p, separators=(",", ":")) for p in parts)


def _lookup(path: str, context: Mapping[str, Any], at: str) -> Any:
    value: Any = context
    for index, key in _STEP.findall(path):
        if index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif key and isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise _TemplateError(f"{at}: template `{{{{ {path} }}}}` names a missing value")
    return value
