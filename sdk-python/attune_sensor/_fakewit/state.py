from typing import List, Optional

from attune_sensor._fakewit import host, lowered_str


def get(key: str) -> Optional[str]:
    return host("state").get(lowered_str(key))


def set(key: str, value: str) -> None:
    host("state").set(lowered_str(key), lowered_str(value))


def delete(key: str) -> None:
    host("state").delete(lowered_str(key))


def keys() -> List[str]:
    return host("state").keys()
