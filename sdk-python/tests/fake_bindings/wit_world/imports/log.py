from enum import Enum

from wit_world import lowered_str

#: (level, message) of every call, for tests to inspect.
lines: list = []


class Level(Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


def log(level: Level, message: str) -> None:
    lines.append((level, lowered_str(message)))
