"""Recordings made with ``attune-host sensor run --record DIR``, replayed in the real sandbox."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Union


def replay(recording: Union[str, os.PathLike]) -> str:
    """Runs ``attune-host sensor test RECORDING`` (the binary named by ``ATTUNE_HOST``, else the
    one on PATH): the sensor's current code in the real sandbox, answered from the recording.
    Returns the host's report; raises ``AssertionError`` naming the first difference in host
    calls, state writes or payloads."""
    recording = Path(recording)
    if not (recording / "recording.json").is_file():
        raise FileNotFoundError(
            f"{recording}: no recording.json (make one with `attune-host sensor run . --record {recording}`)"
        )
    host = os.environ.get("ATTUNE_HOST") or shutil.which("attune-host")
    if not host:
        raise RuntimeError("attune-host is not on PATH: put it there, or name it in ATTUNE_HOST")
    result = subprocess.run([host, "sensor", "test", str(recording)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError((result.stderr or result.stdout).strip())
    return result.stdout.strip()
