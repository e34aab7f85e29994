from typing import List, Optional

from componentize_py_types import Err
from wit_world import lowered_str

store: dict = {}
#: Total bytes of keys and values the host accepts.
quota = 1000


def get(key: str) -> Optional[str]:
    return store.get(lowered_str(key))


def set(key: str, value: str) -> None:
    used = sum(len(k) + len(v) for k, v in store.items() if k != key)
    if used + len(lowered_str(key)) + len(lowered_str(value)) > quota:
        raise Err(f"state quota of {quota} bytes exceeded")
    store[key] = value


def delete(key: str) -> None:
    store.pop(lowered_str(key), None)


def keys() -> List[str]:
    return sorted(store)
