from dataclasses import dataclass
from typing import List

from attune_sensor._fakewit import host


@dataclass
class Instance:
    rule: str
    trigger: str
    params: str


def current() -> List[Instance]:
    return host("instances").current()
