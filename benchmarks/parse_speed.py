"""Report parser throughput: a 50 MB console log with no report, and one
with 1,000 reports spread through it. Prints MB/s; asserts nothing.

usage: .venv/bin/python benchmarks/parse_speed.py [--mb 50] [--reports 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.observe import reports

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "reports" / \
    "splat-7.2.13+deb14-amd64.log"
NOISE = ("[   12.345678] kh_ringbuf: mapped 9 pages for pid 1234 (vm_flags 0x44040fb)\n"
         "[   12.345700] virtio_net virtio0 eth0: link up, 10000Mbps, full-duplex\n")


def log(size: int, n_reports: int) -> str:
    splat = GOLDEN.read_text().partition("\n\n")[2]
    per = len(splat)
    noise_total = max(size - per * n_reports, 0)
    chunk = NOISE * (noise_total // len(NOISE) // max(n_reports, 1) + 1)
    if n_reports == 0:
        return (NOISE * (size // len(NOISE) + 1))[:size]
    return "".join(chunk + splat for _ in range(n_reports))


def measure(text: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    found = reports.parse(text)
    return time.perf_counter() - t0, len(found)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--reports", type=int, default=1000)
    args = ap.parse_args()
    for n in (0, args.reports):
        text = log(args.mb << 20, n)
        seconds, found = measure(text)
        mb = len(text) / (1 << 20)
        print(f"{mb:6.1f} MB, {n:5d} splat logs planted: {found:5d} reports in {seconds:6.2f}s "
              f"= {mb / seconds:6.1f} MB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
