"""``attune-sensor new``: a pack with a working, tested Python sensor to start from.

The files are ``templates/pack/**/*.tmpl`` with ``${pack}`` replaced by the pack's ref.
"""

import re
import shutil
import string
from pathlib import Path

__all__ = ["ScaffoldError", "check_pack_ref", "new_pack"]

TEMPLATES = Path(__file__).resolve().parent / "templates" / "pack"

#: The host's longest ref (`pack.name`), in bytes.
MAX_REF_BYTES = 128
#: The longest name the pack gives its files' refs: the rule `<pack>.on_new_item`.
_LONGEST_NAME = "on_new_item"


class ScaffoldError(Exception):
    """A pack that cannot be made; the message is for the user."""


def check_pack_ref(name: str) -> None:
    """``name`` as the host accepts a pack ref (letters, digits and ``_``), short enough for the
    refs made from it, and not the host's own ``core``."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name, re.ASCII):
        suggestion = re.sub(r"[^A-Za-z0-9_]", "_", name, flags=re.ASCII).strip("_")
        hint = f" (e.g. `{suggestion}`)" if suggestion else ""
        raise ScaffoldError(f"`{name}` is not a pack ref: use letters, digits and `_` only{hint}")
    longest = MAX_REF_BYTES - len(_LONGEST_NAME) - 1
    if len(name) > longest:
        raise ScaffoldError(f"`{name}` is {len(name)} characters; at most {longest}, so that `<pack>.{_LONGEST_NAME}` fits the host's {MAX_REF_BYTES}-byte refs")
    if name == "core":
        raise ScaffoldError("`core` is the host's built-in pack; pick another name")


def new_pack(name: str, parent: Path) -> Path:
    """Write the pack ``name`` into ``parent/name``, which must not exist yet; returns its path."""
    check_pack_ref(name)
    target = parent / name
    try:
        target.mkdir(parents=False)  # fails on an existing path, so nothing is ever overwritten
    except FileExistsError:
        raise ScaffoldError(f"{target} already exists; pick another name or --dir") from None
    except OSError as exc:
        raise ScaffoldError(f"cannot create {target}: {exc.strerror}") from None
    try:
        for template in sorted(TEMPLATES.rglob("*.tmpl")):
            out = target / template.relative_to(TEMPLATES).with_suffix("")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(string.Template(template.read_text(encoding="utf-8")).substitute(pack=name), encoding="utf-8")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-made pack left behind
        raise
    return target
