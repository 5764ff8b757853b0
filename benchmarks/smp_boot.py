"""Do guests with several vCPUs boot every time under TCG? Boot failure rate
a candidate setting, for arches/*.py's tcg_smp_thread and the README.

A boot fails when the agent does not come up, or the console carries a
kernel report after the boot and a first perf event (x86_64 under QEMU
7.2's multi-threaded TCG: "Oops: int3" while the kernel patches its text),
or the guest does not see its vCPUs. A newer QEMU is tried by putting its
qemu-system-* first on PATH (e.g. trixie's, from an mmdebstrap root run
through the root's ld.so).

usage: .venv/bin/python benchmarks/smp_boot.py [--arch x86_64] [--kernel debian:7.2]
           [--cpus 2] [--boots 50] [--candidates multi,single]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from harness import arches, session
from harness.errors import KhError
from harness.guest import Guest
from harness.observe import reports
from harness.requests import GuestRequest

# name -> MachineSpec changes
CANDIDATES = {
    "multi": {"tcg_thread": "multi"},                 # one host thread a vCPU (MTTCG)
    "single": {"tcg_thread": "single"},               # vCPUs interleaved on one thread
    "multi-qemu64": {"tcg_thread": "multi", "cpu": "qemu64"},
    "multi-haswell": {"tcg_thread": "multi", "cpu": "Haswell-noTSX"},
}


def boot_once(prep: session.Prepared, cpus: int) -> tuple[bool, str, float]:
    t0 = time.monotonic()
    try:
        guest = session.start(prep)
    except KhError as e:
        return False, str(e).splitlines()[0][:120], time.monotonic() - t0
    assert isinstance(guest, Guest)
    try:
        seen = guest.run("grep -c ^processor /proc/cpuinfo", timeout=60).stdout.strip()
        # The first perf event flips static keys: text patching at run time,
        # with both vCPUs up (where the suites met "Oops: int3" before).
        guest.run("khmap read perf 9", timeout=60)
        found = reports.parse(guest.machine.console_text())
        if found:
            return False, found[0].title, time.monotonic() - t0
        if seen != str(cpus):
            return False, f"guest sees {seen} vCPUs", time.monotonic() - t0
        return True, "", time.monotonic() - t0
    except KhError as e:
        return False, str(e).splitlines()[0][:120], time.monotonic() - t0
    finally:
        guest.poweroff()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("--kernel", default="debian:7.2")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--boots", type=int, default=50)
    ap.add_argument("--candidates", default="multi,single")
    ap.add_argument("--out", type=Path, default=Path("/tmp/kharness-bench-smp"))
    args = ap.parse_args()
    arch = arches.get(args.arch)
    base = session.prepare(GuestRequest(args.kernel, arch, accel="tcg", cpus=args.cpus), args.out)
    print(f"{arch} {args.kernel} -smp {args.cpus} under TCG, {args.boots} boots a candidate",
          flush=True)
    for name in args.candidates.split(","):
        prep = base.variant(args.out / name, **CANDIDATES[name])
        why: collections.Counter[str] = collections.Counter()
        times = []
        for _ in range(args.boots):
            ok, reason, seconds = boot_once(prep, args.cpus)
            times.append(seconds)
            if not ok:
                why[reason] += 1
        failed = sum(why.values())
        times.sort()
        print(f"  {name:14s} failed {failed}/{args.boots} boots "
              f"({100 * failed / args.boots:.0f}%), boot median {times[len(times) // 2]:.1f}s"
              + "".join(f"\n      {n} x {r}" for r, n in why.most_common()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
