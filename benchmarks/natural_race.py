"""DX4's natural race (no window) on two vCPUs: hit rate per kernel, arch and
TCG threading, with 95% intervals, for the README.

usage: .venv/bin/python benchmarks/natural_race.py [--kernels debian:6.1,debian:7.2]
           [--arches x86_64,arm64] [--threads multi,single] [--rounds 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import arches, session
from harness.commands import repro
from harness.requests import GuestRequest

# The mode whose mkwrite insert WARNs on each kernel (tests/kernel/scenarios/test_daxlike.py).
SIGNATURES = {(6, 1): ("special", "WARNING in insert_pfn"),
              (7, 2): ("refcounted", "WARNING in insert_page_into_pte_locked"),
              (7, 3): ("refcounted", "WARNING in insert_page_into_pte_locked")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="debian:6.1,debian:7.2")
    ap.add_argument("--arches", default="x86_64,arm64")
    ap.add_argument("--threads", default="multi,single")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kharness-bench-race"))
    args = ap.parse_args()
    print(f"DX4 natural race, 2 vCPUs under TCG, {args.rounds} rounds of "
          f"{args.iterations} moves", flush=True)
    for arch in map(arches.get, args.arches.split(",")):
        for spec in args.kernels.split(","):
            base = session.prepare(GuestRequest(spec, arch, accel="tcg", cpus=2),
                                   args.out / f"{spec.replace(':', '-')}-{arch}")
            mode, signature = SIGNATURES[base.kernel.version]
            for thread in args.threads.split(","):
                prep = base.variant(base.outdir / thread, tcg_thread=thread)
                guest = session.start(prep)
                try:
                    stats = guest.read(f"/sys/kernel/debug/kh_daxlike/{mode}/stats")
                    nr = int(dict(ln.split()[:2] for ln in stats.splitlines())["nr_pages"])
                    cmd = ["khmap", "race", f"/dev/kh_daxlike_{mode}", str(nr),
                           str(args.iterations), "0"]
                    rep = repro.reproduce(guest, cmd, signature, rounds=args.rounds)
                finally:
                    guest.poweroff()
                print(f"  {arch!s:7s} {prep.kernel.release:24s} tcg thread={thread:6s} "
                      f"{rep.rate_text()}, {rep.rounds / rep.seconds:.1f} rounds/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
