"""kharness bisect: the patch of a series (or, with --good/--bad, the git
commit, through `git bisect run` and bisect-step) after which a test fails
or a kernel report shows."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import options, session
from harness.commands import repro
from harness.errors import KhError, UsageError
from harness.kbuild import linux as kbuild
from harness.kbuild import patches
from harness.kernel import Kernel
from harness.requests import BisectRequest, SuiteRequest
from harness.results import compare
from harness.suites import run_suite
from harness.util import progress, write_out

GOOD, BAD, SKIP = "good", "bad", "skip"


@dataclass
class Step:
    k: int
    verdict: str
    evidence: str
    seconds: float


@dataclass
class Bisection:
    first_bad: int | None           # patch number (1-based) or None
    steps: list[Step] = field(default_factory=list)
    note: str = ""                  # why there is no answer, or its doubt


def bisect_series(n: int, step: Callable[[int], tuple[str, str]]) -> Bisection:
    """The first k in 1..n after which step(k) is bad, given step(0) good and
    step(n) bad (both checked first). A skipped step (does not build or
    boot) is passed over for its nearest untried neighbour."""
    out = Bisection(None)

    def run(k: int) -> str:
        t0 = time.monotonic()
        verdict, evidence = step(k)
        out.steps.append(Step(k, verdict, evidence, time.monotonic() - t0))
        progress(f"bisect: {k} patch(es) applied: {verdict} ({evidence})")
        return verdict

    if run(n) != BAD:
        out.note = "the whole series does not show the failure: nothing to bisect"
        return out
    if run(0) != GOOD:
        out.note = "the base (no patch) already fails: not the series' doing"
        return out
    good, bad = 0, n
    skipped: set[int] = set()
    while bad - good > 1:
        mid = (good + bad) // 2
        order = sorted(range(good + 1, bad), key=lambda k: (abs(k - mid), k))
        candidates = [k for k in order if k not in skipped]
        if not candidates:
            out.note = (f"patches {good + 1}..{bad} could not be told apart: every step "
                        f"between them was skipped")
            return out
        k = candidates[0]
        verdict = run(k)
        if verdict == SKIP:
            skipped.add(k)
        elif verdict == GOOD:
            good = k
        else:
            bad = k
    out.first_bad = bad
    return out


def _verdict_of(junit: Path, status: int, signature: str | None) -> tuple[str, str]:
    if status not in (0, 1):
        return SKIP, "the suite could not run (boot or infrastructure failure)"
    run = compare.load_junit(junit)
    bad = {n: c for n, c in run.cases.items() if c.outcome in compare.BAD}
    if signature:
        hit = [t for c in run.cases.values() for t in c.reports if signature in t]
        return (BAD, hit[0]) if hit else (GOOD, f"'{signature}' not seen")
    if bad:
        name, case = next(iter(bad.items()))
        why = "; ".join(case.reports) or case.message
        return BAD, f"{name} {case.outcome}: {why}"[:200]
    return GOOD, f"{len(run.cases)} test(s) passed"


def step_on_kernel(req: SuiteRequest, kernel: Kernel, out: Path, signature: str | None,
                   rounds: int) -> tuple[str, str]:
    """One bisection step on a built kernel: the selected tests, or (with a
    signature) the race, -k being its guest command."""
    if signature:
        assert req.k is not None
        with session.booted(req.guest.replace(kernel=kernel.spec, arch=kernel.arch),
                            out) as (_, guest):
            rep = repro.reproduce(guest, shlex.split(req.k), signature, rounds=rounds,
                                  until_hit=True)
        if rep.hits:
            return BAD, f"{rep.first.title if rep.first else signature} in round " \
                        f"{rep.first_hit_round} of {rep.rounds}"
        return GOOD, f"not seen in {rep.rounds} rounds (a race: good is probabilistic)"
    status, junit = run_suite(req, kernel.spec, kernel.arch, out)
    return _verdict_of(junit, status, None)


def bisect(req: BisectRequest, out: Path) -> int:
    """Exit 0 with the first bad patch (or commit) named, 1 without one."""
    if req.good or req.bad:
        return bisect_git(req, out)
    if not req.build.patches:
        raise UsageError("bisect needs --patches SERIES (a patch series) or --good/--bad "
                         "(a git tree)")
    if not req.suite.k:
        raise UsageError("bisect needs -k: the test that fails (or, with --signature, the "
                         "guest command to run in rounds)")
    series = patches.load(req.build.patches)
    kbuild.request(req.build, req.arch, series)  # source and fragments exist, series applies
    t0 = time.monotonic()

    def step(k: int) -> tuple[str, str]:
        try:
            kernel = kbuild.build(kbuild.request(req.build, req.arch, series[:k]))
        except UsageError:
            raise
        except KhError as e:
            return SKIP, f"does not build: {str(e)[:150]}"
        return step_on_kernel(req.suite, kernel, out / f"step-{k}", req.signature, req.rounds)

    result = bisect_series(len(series), step)
    lines = [f"kharness bisect: {len(series)} patches, -k {req.suite.k!r}"
             + (f", --signature {req.signature!r} ({req.rounds} rounds)"
                if req.signature else "")]
    for s in result.steps:
        lines.append(f"  {s.k:3d} patch(es): {s.verdict:4s} {s.evidence} ({s.seconds:.0f}s)")
    if result.first_bad is not None:
        p = series[result.first_bad - 1]
        lines.append(f"first bad patch: {result.first_bad}/{len(series)} '{p.subject}' "
                     f"({p.source})")
    else:
        lines.append(f"no answer: {result.note}")
    lines.append(f"{len(result.steps)} builds and runs, {time.monotonic() - t0:.0f}s")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    write_out(out / "bisect.txt", text + "\n")
    return 0 if result.first_bad is not None else 1


def bisect_git(req: BisectRequest, out: Path) -> int:
    """`git bisect run` over a tree with `kharness bisect-step` as the test."""
    if not (req.good and req.bad):
        raise UsageError("git bisect needs both --good REV and --bad REV")
    tree = Path(req.build.source)
    if not (tree / ".git").exists():
        raise UsageError(f"--good/--bad bisect a git tree: {req.build.source} has no .git")
    # bisect's own options, spelt for bisect-step (the tree as it is checked out)
    step = [sys.executable, "-m", "harness.cli", "bisect-step", *options.to_argv(
        "bisect-step", req, always=("arch",), arch=[req.arch], source=str(tree.resolve()),
        out=out.resolve())]

    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(tree), *a], text=True, capture_output=True)

    if git("status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise UsageError(f"{tree} has uncommitted changes: git bisect would check out over "
                         f"them; commit or stash them first")
    started = git("bisect", "start", req.bad, req.good)
    if started.returncode != 0:
        raise UsageError(f"git bisect start {req.bad} {req.good} failed: "
                         f"{started.stderr.strip().splitlines()[-1:]}")
    try:
        progress(f"git bisect run {shlex.join(step)}")
        res = subprocess.run(["git", "-C", str(tree), "bisect", "run", *step], text=True,
                             capture_output=True)
        log = git("bisect", "log").stdout
    finally:
        git("bisect", "reset")
    said = res.stdout + res.stderr
    write_out(out / "bisect.txt", said + "\n" + log)
    first = [ln for ln in said.splitlines() if "is the first bad commit" in ln]
    print(log.rstrip())
    print(first[0] if first else "no first bad commit found")
    return 0 if first else 1


def bisect_step(req: BisectRequest, out: Path) -> int:
    """A `git bisect run` step: 0 good, 1 bad, 125 skip (no build or boot)."""
    try:
        kernel = kbuild.build(kbuild.request(req.build, req.arch))
        verdict, evidence = step_on_kernel(req.suite, kernel, out / f"step-{kernel.release}",
                                           req.signature, req.rounds)
    except UsageError:
        raise       # bad input: git bisect must stop (cli maps it to 128), not skip
    except KhError as e:
        verdict, evidence = SKIP, str(e)[:200]
    progress(f"bisect step: {verdict}: {evidence}")
    return {GOOD: 0, BAD: 1, SKIP: 125}[verdict]
