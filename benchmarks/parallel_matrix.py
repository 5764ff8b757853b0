"""Wall time of a kernel x arch matrix with -j 1 and -j 2 (figures for the
README; nothing is asserted). Caches should be warm: run it twice.

usage: .venv/bin/python benchmarks/parallel_matrix.py \\
           [--kernel debian:6.1,debian:6.12,debian:7.2,debian:7.3] [--arch x86_64,arm64] [-k EXPR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path


def run(kernels: str, arches: str, parallel: int, k: str | None) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="kh-bench-matrix-"))
    argv = [sys.executable, "-m", "harness.cli", "run", "--kernel", kernels, "--arch", arches,
            "-j", str(parallel), "--out", str(out)] + (["-k", k] if k else [])
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"kharness run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    jobs = {}
    for junit in sorted(out.glob("*/junit.xml")):
        suite = next(ET.parse(junit).getroot().iter("testsuite"))
        jobs[junit.parent.name] = (float(suite.get("time", 0)), int(suite.get("tests", 0)))
    return wall, jobs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="debian:6.1,debian:6.12,debian:7.2,debian:7.3")
    ap.add_argument("--arch", default="x86_64,arm64")
    ap.add_argument("-k")
    args = ap.parse_args()
    walls = {}
    for parallel in (1, 2):
        wall, jobs = run(args.kernel, args.arch, parallel, args.k)
        walls[parallel] = wall
        print(f"-j {parallel}: {wall:6.0f}s in all")
        for name, (seconds, tests) in jobs.items():
            print(f"    {name:28s} {seconds:5.0f}s ({tests} tests)")
    print(f"speed-up of -j 2: {walls[1] / walls[2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
