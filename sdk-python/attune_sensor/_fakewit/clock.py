from attune_sensor._fakewit import host


def now_ms() -> int:
    return host("clock").now_ms
