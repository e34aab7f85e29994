from dataclasses import dataclass
from typing import List


@dataclass
class Instance:
    rule: str
    trigger: str
    params: str


#: What current() returns: the host's enabled rules on the sensor's triggers, for tests to set.
instances: List[Instance] = []


def current() -> List[Instance]:
    return [Instance(i.rule, i.trigger, i.params) for i in instances]
