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

from harness.errors import UsageError

CLAIMED = "KHARNESS_CLAIMED"    # folders held by us or the kharness that started us
LOCK = ".kh-lock"

_held: list[int] = []           # open while we live: the flock goes with the process


def held() -> list[Path]:
    return [Path(p) for p in os.environ.get(CLAIMED, "").split(os.pathsep) if p]


def claim(folder: Path) -> None:
    """folder is ours to write until we exit, or UsageError naming who has it."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if any(p == folder or p in folder.parents for p in held()):
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another kharness"
        os.close(fd)
        raise UsageError(f"{folder} is being written by {who}: wait for it to end, or give "
                         f"this run another --out") from None
    os.ftruncate(fd, 0)
    try:
        os.pwrite(fd, f"kharness pid {os.getpid()} (since {time.strftime('%H:%M:%S')})\n"
                  .encode(), 0)
    except OSError as e:        # a full disk: name the file
        os.close(fd)
        raise OSError(e.errno, e.strerror, str(folder / LOCK)) from None
    _held.append(fd)
    os.environ[CLAIMED] = os.pathsep.join(map(str, [*held(), folder]))
