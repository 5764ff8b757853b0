"""Mutant kernels: does each scenario fail on a kernel that breaks what it claims?

A mutant is one small patch against the kernel source, written as a
plausible but wrong upstream change would be (tests/data/mutants/). Its
header names the scenarios that must catch it and how:

    Mutant-Targets: RB5, MX3
    Mutant-Expect: MX3 fails: page 0 is not present in the child ...

Targets are scenario ids (RB1..RB7, DX1..DX6, MX1..MX5, PAT1, PAT2) or
invariants (refcount, mapcount, RSS, PAT memtype, write-notify). The
runner builds the clean tree and each mutant (ccache makes a one-file
change about a minute), runs the suite on each (the clean tree the whole
of it; a mutant of a driver only the families that driver's code reaches,
REACH) and prints a table: the
tests that failed, the kernel reports seen, and whether the mutant was
caught by a test of a scenario it targets. The clean kernel must show no
failure; a mutant only invariants target is caught by any failure.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.commands import cachetool
from harness.errors import KhError, UsageError
from harness.kbuild import linux as kbuild
from harness.kbuild import patches
from harness.requests import MutantsRequest
from harness.resources import data, scenario_ids
from harness.results import compare
from harness.suites import run_suite
from harness.util import cache_root, progress, write_out

INVARIANTS = ("refcount", "mapcount", "RSS", "PAT memtype", "write-notify")

# The scenario families whose kernel code runs through a file: a mutant of
# that file can change only what their tests see. A file not here (mm/,
# headers) may change any scenario: its mutants run the whole suite.
REACH = {
    "fs/dax.c": ("FD",),
    "drivers/dax/": ("DD",),
    "drivers/dma-buf/": ("UD",),
    "drivers/vfio/": ("VF",),
    "arch/x86/mm/init.c": ("DM",),       # devmem_is_allowed(): /dev/mem only
    "kernel/events/": ("RB7",),
}


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    subject: str
    targets: tuple[str, ...]
    expect: str

    @property
    def scenarios(self) -> list[str]:
        return [t for t in self.targets if t not in INVARIANTS]

    def files(self) -> list[str]:
        """The kernel files the patch changes."""
        return re.findall(r"^diff --git a/(\S+) ", self.path.read_text(errors="replace"), re.M)

    def reach(self) -> list[str] | None:
        """The scenario families (or ids) whose tests the mutant can change,
        its own targets among them; None: any (a file REACH does not name)."""
        out: set[str] = set(self.scenarios)
        for f in self.files():
            fams = next((v for k, v in REACH.items() if f.startswith(k)), None)
            if fams is None or not self.scenarios:
                return None
            out.update(fams)
        return sorted(out)


def selection(m: Mutant, k: str | None) -> str | None:
    """pytest -k for a mutant: the tests its files can reach (and the user's -k)."""
    reach = m.reach()
    if reach is None:
        return k
    mine = " or ".join(f"test_{s}" for s in reach)
    return f"({k}) and ({mine})" if k else mine


def _header(text: str, key: str) -> str:
    m = re.search(rf"^{key}:[ \t]*(.+)$", text, re.M)
    return m.group(1).strip() if m else ""


def load(folder: Path, only: list[str] | None = None) -> list[Mutant]:
    """The mutants of a folder (*.patch, in name order), or the named ones."""
    files = sorted(folder.glob("*.patch")) if folder.is_dir() else []
    if not files:
        raise UsageError(f"no mutant *.patch files in {folder}: give --mutants DIR")
    out = []
    for f in files:
        text = f.read_text(errors="replace")
        targets = tuple(t.strip() for t in _header(text, "Mutant-Targets").split(",")
                        if t.strip())
        known = scenario_ids()
        bad = [t for t in targets if t not in known and t not in INVARIANTS]
        if not targets or bad:
            raise UsageError(f"{f}: 'Mutant-Targets:' must list scenario ids of the suite "
                             f"(RB1, DX4, ...) or invariants ({', '.join(INVARIANTS)}); "
                             + (f"'{bad[0]}' is neither" if bad else "it is missing"))
        out.append(Mutant(f.stem, f, _header(text, "Subject").removeprefix("[PATCH] "),
                          targets, _header(text, "Mutant-Expect")))
    if only:
        names = {m.name for m in out}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise UsageError(f"no mutant named {unknown[0]} in {folder} (see the *.patch names)")
        out = [m for m in out if m.name in only]
    return out


@dataclass
class Row:
    name: str
    targets: list[str]
    verdict: str                  # passed/FAILED (clean); caught/elsewhere/missed; not run
    failed: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    kernel: str = ""              # the build: spec it ran on

    @property
    def good(self) -> bool:
        return self.verdict in ("passed", "caught")


def verdict(m: Mutant, failed: list[str]) -> str:
    """caught: a test of a targeted scenario failed (any failure, for a
    mutant only invariants target); elsewhere: other tests failed only."""
    if not failed:
        return "missed"
    if not m.scenarios:
        return "caught"
    hit = any(re.search(rf"\btest_{s}[a-z]?_", name) for s in m.scenarios for name in failed)
    return "caught" if hit else "elsewhere"


def outcome(junit: Path) -> tuple[list[str], list[str]]:
    """The failed tests of a run and the kernel report titles it saw."""
    run = compare.load_junit(junit)
    failed = [n for n, c in run.cases.items() if c.outcome in ("failed", "error")]
    reports = sorted({r for c in run.cases.values() for r in c.reports})
    return failed, reports


def table(rows: list[Row]) -> str:
    lines = [f"{'mutant':38s} {'targets':18s} {'verdict':9s} {'min':>4s}  failed tests; "
             f"kernel reports"]
    for r in rows:
        failed = ", ".join(r.failed[:4]) + (f" (+{len(r.failed) - 4})" if len(r.failed) > 4
                                            else "")
        what = "; ".join(x for x in (failed or "-", " | ".join(r.reports), r.note) if x)
        lines.append(f"{r.name:38s} {','.join(r.targets)[:18]:18s} {r.verdict:9s} "
                     f"{r.seconds / 60:4.1f}  {what}")
    muts = [r for r in rows if r.name != "clean"]
    caught = sum(r.verdict == "caught" for r in muts)
    lines.append(f"caught by their target: {caught}/{len(muts)}; clean kernel: "
                 f"{next((r.verdict for r in rows if r.name == 'clean'), 'not run')}")
    return "\n".join(lines)


def ahead(fn: Callable[[], str]) -> Callable[[], str]:
    """fn run now in a thread of its own: a function that waits for its
    result or raises its error. The thread is a daemon, so an interrupted
    run does not wait for it; its make dies with it (spawn's parent-death
    signal)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["spec"] = fn()
        except BaseException as e:      # handed to the waiter, raised there
            box["error"] = e

    thread = threading.Thread(target=work, name="kh-build-ahead", daemon=True)
    thread.start()

    def result() -> str:
        thread.join()
        if "error" in box:
            raise box["error"]          # type: ignore[misc]
        return str(box["spec"])
    return result


def series(req: MutantsRequest, muts: list[Mutant]) -> dict[str, list]:
    """Each mutant's patch series (under --patches), checked to apply before
    the first (long) build."""
    base = patches.load(req.build.patches) if req.build.patches else []
    out = {m.name: base + patches.load(str(m.path)) for m in muts}
    out["clean"] = base
    for name, s in out.items():
        try:
            kbuild.request(req.build, req.arch, s)
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
    return out


def verdict_row(req: MutantsRequest, m: Mutant | None, spec: str, out: Path,
                t0: float) -> Row:
    """The suite on one built kernel (a mutant's: only what its files
    reach) and what it caught."""
    name = m.name if m else "clean"
    targets = list(m.targets) if m else []
    suite = req.suite if m is None or req.whole_suite else \
        dataclasses.replace(req.suite, k=selection(m, req.suite.k))
    status, junit = run_suite(suite, spec, req.arch, out / name)
    if status not in (0, 1) or not junit.exists():
        if m is None:
            raise KhError(f"the suite could not run on the clean kernel {spec}: "
                          f"see {out / name}")
        return Row(name, targets, "not run", seconds=time.monotonic() - t0,
                   note=f"the suite could not run ({spec}): see {out / name}")
    failed, reports = outcome(junit)
    v = ("passed" if not failed else "FAILED") if m is None else verdict(m, failed)
    return Row(name, targets, v, failed, reports, time.monotonic() - t0, kernel=spec)


def forget(spec: str) -> None:
    """A mutant's kernel and the snapshots made of it, once its suite has
    run: nothing else boots it (a rerun builds it again, one file through
    ccache), and kept, 36 mutants' snapshots fill tens of GiB. The clean
    kernel stays; an entry another run holds is kept."""
    key = spec.removeprefix("build:")
    everything = cachetool.entries(cache_root())
    snapshots = cachetool.snapshots_of(everything)
    for build in [e for e in everything if e.kind == "builds" and e.path.name.endswith(key)]:
        for e in [*snapshots.get(build.path, []), build]:
            why = cachetool.remove(e)
            if why:
                progress(f"kept {e.name}: {why}")


def run(req: MutantsRequest, out: Path) -> int:
    """Exit 0 only if the clean kernel passed and every mutant was caught.
    The next kernel is built while the suite runs on this one: make beside
    one TCG guest keeps both cores of a small machine busy."""
    muts = load(req.mutants or data("mutants"), req.only)
    series_of = series(req, muts)
    out = out / f"mutants-{req.arch}"
    rows: list[Row] = []
    t_all = time.monotonic()
    kernels: list[Mutant | None] = [None, *muts]

    def build(m: Mutant | None) -> Callable[[], str]:
        s = series_of[m.name if m else "clean"]
        return ahead(lambda: kbuild.build(kbuild.request(req.build, req.arch, s)).spec)

    built = build(kernels[0])
    for i, m in enumerate(kernels):
        name = m.name if m else "clean"
        progress(f"mutant {i}/{len(muts)}: {name}" + (f" ({m.subject})" if m else ""))
        t0 = time.monotonic()
        try:
            spec: str | None = built()
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
        except KhError as e:
            if m is None:
                raise KhError(f"the clean tree does not build: {e}", detail=e.detail) from None
            rows.append(Row(name, list(m.targets), "not run",
                            seconds=time.monotonic() - t0, note=f"build failed: {e}"))
            spec = None
        if i + 1 < len(kernels):
            built = build(kernels[i + 1])
        if spec is not None:
            rows.append(verdict_row(req, m, spec, out, t0))
            if m is not None:
                forget(spec)
        write_out(out / "mutants.json", json.dumps([asdict(r) for r in rows], indent=1))
    text = table(rows) + f"\nwall time: {(time.monotonic() - t_all) / 60:.1f} min"
    write_out(out / "mutants.txt", text + "\n")
    print(text)
    progress(f"table: {out / 'mutants.txt'}; per kernel: {out}/<mutant>/")
    return 0 if all(r.good for r in rows) else 1
