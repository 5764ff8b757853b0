"""The dashboard at nightly scale: 4 kernels x 2 arches x ~1,000 results x
90 nights, generated (a few failures that come and go, races with hit
rates, reports under two titles), then `report site`: its wall time and the
size of one night's page. Figures for the README; never asserted.

usage: .venv/bin/python benchmarks/dashboard_scale.py [--nights 90] [--tests 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

from harness.results import dashboard

KERNELS = ("debian-6.1", "debian-6.12", "debian-7.2", "debian-7.3")
ARCHES = ("x86_64", "arm64")
FAMILIES = ("RB", "DX", "MX", "PAT", "FD", "DD", "VF", "UD", "DM")


def night(folder: Path, date: str, tests: int, rng: random.Random) -> None:
    suites = []
    for k in KERNELS:
        for a in ARCHES:
            cases = []
            for t in range(tests):
                name = f"test_{FAMILIES[t % len(FAMILIES)]}{t // 20}_case_{t}[mode{t % 3}]"
                props = [("kh:mapcount", json.dumps({"expected": 1, "seen": 1}))]
                body = ""
                if t % 97 == 0:
                    hits = rng.randint(0, 20)
                    props.append(("kh:race", json.dumps(
                        {"note": f"'WARNING in insert_pfn': {hits}/20 rounds (...)"})))
                if rng.random() < 0.002:
                    body = '<failure message="AssertionError: mapcount 2 != 1"/>'
                    if rng.random() < 0.5:
                        props.append(("kh-reports", json.dumps(["WARNING in insert_pfn"])))
                        props.append(("kh-report-alts",
                                      json.dumps([["WARNING in vmf_insert_pfn_prot"]])))
                p = "".join(f"<property name={quoteattr(n)} value={quoteattr(v)}/>"
                            for n, v in props)
                cases.append(f'<testcase name={quoteattr(name)}><properties>{p}</properties>'
                             f'{body}</testcase>')
            suites.append(f'<testsuite name="{k}-{a}" timestamp="{date}T02:00:00">'
                          + "".join(cases) + "</testsuite>")
    folder.mkdir(parents=True)
    (folder / "junit.xml").write_text("<testsuites>" + "".join(suites) + "</testsuites>")
    (folder / "night.json").write_text(json.dumps(
        {"date": date, "kharness": "0123456789ab",
         "jobs": {f"{k}-{a}": {"kernel": k, "arch": a} for k in KERNELS for a in ARCHES}}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=90)
    ap.add_argument("--tests", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(1)
    base = Path(tempfile.mkdtemp(prefix="kh-dashboard-"))
    first = datetime.date(2026, 9, 1)
    dirs = []
    for n in range(args.nights):
        date = (first + datetime.timedelta(n)).isoformat()
        night(base / date, date, args.tests, rng)
        dirs.append(str(base / date))
    t0 = time.monotonic()
    dashboard.write(dirs, base / "site", nights=args.nights)
    seconds = time.monotonic() - t0
    index = base / "site" / "index.html"
    older = base / "site" / f"night-{dirs[len(dirs) // 2].rsplit('/', 1)[1]}.html"
    print(f"{len(KERNELS)} kernels x {len(ARCHES)} arches x {args.tests} results x "
          f"{args.nights} nights: site in {seconds:.1f}s; latest page "
          f"{index.stat().st_size / 1e6:.2f} MB, an older night's {older.stat().st_size / 1e6:.2f}"
          f" MB ({base})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
