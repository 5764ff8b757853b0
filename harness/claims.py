"""One kharness at a time writes a run folder.

Two runs given the same --out (two `kharness boot` with the default
folder) would write the same boot-1/, JUnit and matrix: one console log
lost, one dmesg holding both boots. A run claims the folder it writes
(an flock on <folder>/.kh-lock, held until it exits, so a killed run
holds nothing); a second run finds it held and stops with one line naming
the holder. What we start ourselves (a suite's pytest, a bisect step)
inherits our claims through the environment and writes below them.
Separate folders under one --out (a CI engine's shards, each its job's
folder) never conflict.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from harness.errors import UsageError

CLAIMED = "KHARNESS_CLAIMED"    # folders held by us or the kharness that started us
LOCK = ".kh-lock"

_held: list[IO[str]] = []       # open while we live: the flock goes with the process


def held() -> list[Path]:
    return [Path(p) for p in os.environ.get(CLAIMED, "").split(os.pathsep) if p]


def claim(folder: Path) -> None:
    """folder is ours to write until we exit, or UsageError naming who has it."""
    folder = folder.resolve()
    if any(p == folder or p in folder.parents for p in held()):
        return
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / LOCK, "a+")      # kept open: it is the claim
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        who = fh.read().strip() or "another kharness"
        fh.close()
        raise UsageError(f"{folder} is being written by {who}: wait for it to end, or give "
                         f"this run another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"kharness pid {os.getpid()} (since {time.strftime('%H:%M:%S')})\n")
    fh.flush()
    _held.append(fh)
    os.environ[CLAIMED] = os.pathsep.join(map(str, [*held(), folder]))
