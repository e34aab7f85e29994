"""Entry module of the shared plain-source runtime (world `source-runtime`).

The host passes a sensor's source to `load` as data; the sensor then runs through the same
glue as a compiled one. Built by ``attune-sensor build-runtime``.
"""

from typing import Optional

from attune_sensor._bindings import exports

# componentize-py bundles only the modules imported while the component is built, so these
# imports (and what they import) are the whole library a plain-source sensor can import.
import base64, collections, csv, datetime, decimal, functools, hashlib, hmac  # noqa: E401,F401
import itertools, json, math, random, re, statistics, string, textwrap, time  # noqa: E401,F401
import urllib.parse, uuid  # noqa: E401,F401
# Imported by the modules above only when some functions run: Counter.most_common (heapq),
# datetime.strptime (_strptime), re's \N{...} and urllib.parse on non-ASCII hosts (unicodedata),
# and "did you mean" hints in syntax errors (difflib).
import _strptime, difflib, heapq, unicodedata  # noqa: E401,F401
from attune_sensor import clock, fs, http, instances, log, state  # noqa: F401

from attune_sensor._glue import Guest, guarded, load_source

__all__ = ["Guest", "SourceLoader"]


class SourceLoader(exports.SourceLoader):
    """The `source-loader` interface of wit/sensor.wit."""

    def load(self, filename: str, source: str, compiled: Optional[bytes]) -> bytes:
        return guarded(lambda: load_source(filename, source, compiled))
