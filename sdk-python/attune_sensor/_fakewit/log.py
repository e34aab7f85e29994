from enum import Enum

from attune_sensor._fakewit import host, lowered_str


class Level(Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


def log(level: Level, message: str) -> None:
    host("log").write(level, lowered_str(message))
