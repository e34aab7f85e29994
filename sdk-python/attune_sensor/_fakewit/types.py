from dataclasses import dataclass
from typing import Optional


@dataclass
class Payload:
    trigger: Optional[str]
    rule: Optional[str]
    json: str


@dataclass
class SensorError:
    message: str
    traceback: Optional[str]
