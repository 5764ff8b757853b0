"""Which -cpu boots arm64 guests fastest under TCG: figures for arches/arm64.py.

usage: .venv/bin/python benchmarks/arm64_cpu.py [--kernel debian:6.12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness import session
from harness.arches import ARCHES
from harness.requests import GuestRequest

CPUS = ("max", "max,pauth-impdef=on", "neoverse-n1", "cortex-a57")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kharness-bench-cpu"))
    args = ap.parse_args()
    base = session.prepare(GuestRequest(args.kernel, ARCHES["arm64"], accel="tcg"), args.out)
    print(f"arm64 boot to first command under TCG, {args.kernel}, {args.rounds} boots a model")
    for cpu in CPUS:
        prep = base.variant(args.out / cpu.replace(",", "-"), cpu=cpu)
        times = []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            guest = session.start(prep)
            times.append(time.monotonic() - t0)
            guest.run("khmap read /dev/kh_ringbuf_fault 9", check=True)
            guest.poweroff()
        print(f"  -cpu {cpu:22s} median {statistics.median(times):5.2f}s "
              f"(min {min(times):.2f}, max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
