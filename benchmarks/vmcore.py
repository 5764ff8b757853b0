"""Memory dumps and drgn: the figures of the README's "Forensics" table.

A guest of the default size, dumped --rounds times (QEMU's kdump-zlib,
reassembled, arm64's made 4 KiB pages); then drgn opened on the last dump
with kallsyms and our modules' types, and with the kernel's DWARF (fetched
first if the cache has none; that first fetch is timed on its own). Then
a page's state read as the `live` fixture reads it, --rounds times: live
over QMP (the guest held still; drgn opened once a test, timed apart) and
through a dump (dump, open, read: what each read cost before).

usage: .venv/bin/python benchmarks/vmcore.py [--kernel debian:6.12] [--arch x86_64]
           [--rounds 10]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import arches, session
from harness.guest import Guest
from harness.observe import memory, pagestate
from harness.requests import GuestRequest
from harness.vm import kdump


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--arch", default=arches.host().name)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="kh-bench-vmcore-"))
    req = GuestRequest(args.kernel, arches.get(args.arch))
    with session.booted(req, out) as (prep, guest):
        assert isinstance(guest, Guest)     # a QEMU guest: no --target here
        sizes, times = [], []
        for i in range(args.rounds):
            size, seconds = guest.dump(out / f"vmcore-{i}")
            sizes.append(size)
            times.append(seconds)
        last = out / f"vmcore-{args.rounds - 1}"
        dump = memory.Dump(last, prep.kernel, prep.modules, kdump.info(last))
        print(f"{prep.kernel.release} ({prep.kernel.arch}), {prep.spec.memory} MiB guest, "
              f"{args.rounds} dumps")
        print(f"  dump: {statistics.median(sizes) / 2**20:.0f} MiB on disk, {median(times)}")
        for symbols in ("kallsyms", "dwarf"):
            if symbols == "dwarf" and memory.dwarf(prep.kernel, fetch=False) is None:
                t0 = time.monotonic()
                memory.dwarf(prep.kernel, fetch=True)
                print(f"  first fetch of the kernel's DWARF: {time.monotonic() - t0:.0f}s")
            opened = []
            for _ in range(args.rounds):
                t0 = time.monotonic()
                prog, _ = memory.program(dump, symbols)
                prog["init_task"].comm.string_()
                opened.append(time.monotonic() - t0)
            print(f"  drgn open + first read, {symbols}: {median(opened)}")
        live_vs_dump(guest, prep, out, args.rounds)
    return 0


def live_vs_dump(guest, prep, out: Path, rounds: int) -> None:
    view = pagestate.Live(guest, prep.kernel, prep.modules, out)
    pfn = prep.spec.memory << 8 >> 1          # a page of RAM halfway up
    if prep.kernel.arch.name == "arm64":
        pfn += 0x40000                            # RAM starts at 1 GiB on QEMU's virt
    opened, live, dumped = [], [], []
    for _ in range(rounds):
        guest.drgn = None
        gc.collect()            # the last Program's QMP connection closed: one client at a time
        t0 = time.monotonic()
        view.state()
        opened.append(time.monotonic() - t0)
        guest.run("true", check=True)
        t0 = time.monotonic()
        a = pagestate.page_state(view.state(), pfn)
        live.append(time.monotonic() - t0)
        guest.run("true", check=True)
        t0 = time.monotonic()
        b = pagestate.page_state(view.dumped(), pfn)
        dumped.append(time.monotonic() - t0)
        view.close()
        assert a is not None and (a.flags, a.mapping) == (b.flags, b.mapping) if b else a is None
    print(f"  page state live over QMP: open (once a test) {median(opened)}; "
          f"a read {median(live)}")
    print(f"  page state through a dump (dump, open, read): {median(dumped)}")


if __name__ == "__main__":
    sys.exit(main())
