"""Memory dumps and drgn: the figures of the README's "Forensics" table.

A guest of the default size, dumped --rounds times (QEMU's kdump-zlib,
reassembled, arm64's made 4 KiB pages); then drgn opened on the last dump
with kallsyms and our modules' types, and with the kernel's DWARF (fetched
first if the cache has none; that first fetch is timed on its own).

usage: .venv/bin/python benchmarks/vmcore.py [--kernel debian:6.12] [--arch x86_64]
           [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import arches, debug, session
from harness.requests import GuestRequest
from harness.vm import kdump


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--arch", default=arches.host().name)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="kh-bench-vmcore-"))
    req = GuestRequest(args.kernel, arches.get(args.arch))
    with session.booted(req, out) as (prep, guest):
        sizes, times = [], []
        for i in range(args.rounds):
            size, seconds = guest.dump(out / f"vmcore-{i}")
            sizes.append(size)
            times.append(seconds)
        last = out / f"vmcore-{args.rounds - 1}"
        dump = debug.Dump(last, prep.kernel, prep.modules, kdump.info(last))
        print(f"{prep.kernel.release} ({prep.kernel.arch}), {prep.spec.memory_mb} MiB guest, "
              f"{args.rounds} dumps")
        print(f"  dump: {statistics.median(sizes) / 2**20:.0f} MiB on disk, {median(times)}")
        for symbols in ("kallsyms", "dwarf"):
            if symbols == "dwarf" and debug.dwarf(prep.kernel, fetch=False) is None:
                t0 = time.monotonic()
                debug.dwarf(prep.kernel, fetch=True)
                print(f"  first fetch of the kernel's DWARF: {time.monotonic() - t0:.0f}s")
            opened = []
            for _ in range(args.rounds):
                t0 = time.monotonic()
                prog, _ = debug.program(dump, symbols)
                prog["init_task"].comm.string_()
                opened.append(time.monotonic() - t0)
            print(f"  drgn open + first read, {symbols}: {median(opened)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
