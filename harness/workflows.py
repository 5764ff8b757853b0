"""What a developer with a patch series runs: the suite on a kernel, base
against patched (validate), and the search for the patch or commit that
broke a test (bisect).

The suite always runs as a pytest process of its own per kernel x arch,
so one crash cannot poison the next run and runs could go side by side.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import claims, options, repro, session, spawn
from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.kbuild import kconfig, patches, source
from harness.kbuild import kernel as kbuild
from harness.kernel import Kernel
from harness.remote import SshUrl
from harness.report import compare
from harness.requests import SuiteRequest
from harness.resources import data
from harness.util import cache_root, digest, progress

# pytest's exit statuses -> ours (0 passed, 1 failed, 2 bad input, 3 infrastructure)
PYTEST_STATUS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 2, 130: 130}
NO_TESTS = 5
STOP_GRACE = 15.0       # seconds a suite gets to stop and write its JUnit


@dataclass
class SuiteJob:
    spec: str | None           # --kernel (None: what the target runs)
    arch: Arch | None
    out: Path
    target: SshUrl | None = None
    k: str | None = None       # -k, when the job has its own
    cpus: int | None = None    # --cpus, when the job has its own
    boot: str | None = None    # --boot, when the job has its own
    status: int | None = None  # ours, once it ended

    @property
    def junit(self) -> Path:
        return self.out / "junit.xml"

    @property
    def label(self) -> str:
        if self.target is not None:
            return " ".join(str(w) for w in (self.target, self.spec, self.arch) if w)
        return f"{self.spec} {self.arch}"


def default_parallel() -> int:
    """Guests this machine can run side by side: a core and ~2 GiB each."""
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 2.0
    return max(1, min(os.cpu_count() or 1, int(mem_gib // 2)))


def run_suites(req: SuiteRequest, jobs: list[SuiteJob], parallel: int = 1) -> int:
    """The kernel suite on each job, `parallel` pytest processes at a time.
    One job at a time talks to the terminal; side by side, each writes its
    pytest.log and the terminal gets a line when a job starts and ends.
    Returns the worst status."""
    pending = list(jobs)
    running: dict[subprocess.Popen, SuiteJob] = {}
    quiet = parallel > 1 and len(jobs) > 1
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                running[_start_suite(req, job, quiet)] = job
            for child, job in list(running.items()):
                status = child.poll()
                if status is not None:
                    del running[child]
                    _finish_suite(req, job, status, quiet)
            time.sleep(0.2)
    except KeyboardInterrupt:
        # pytest stops at SIGINT and writes the JUnit of what finished; a
        # suite that has not stopped after STOP_GRACE is killed, QEMUs and all.
        for child in running:
            spawn.signal_group(child, signal.SIGINT)
        for child, job in running.items():
            try:
                child.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                progress(f"{job.label}: still running {STOP_GRACE:.0f}s after SIGINT: killed")
            spawn.stop(child, signal.SIGKILL, grace=0)
            progress(f"{job.label}: stopped; JUnit of what finished: {job.junit}")
        raise
    interrupted = [j for j in jobs if j.status == 130]
    if interrupted:     # stopped from outside us
        raise KeyboardInterrupt
    return max((j.status or 0 for j in jobs), default=0)


# The kernel suite folder's files by what they test: the kernel's behaviour
# under our modules (scenarios), the kernel's own mm selftests, and
# kharness's own end-to-end tests (harness: the rest).
SCENARIOS = ("test_ringbuf.py", "test_perf_ringbuf.py", "test_daxlike.py", "test_mixedmap.py",
             "test_pat.py")
MM_SELFTESTS = ("test_upstream_mm.py",)


def suite_paths(suites: list[str]) -> list[str]:
    folder = data("suite")
    if "all" in suites:
        return [str(folder)]
    named = {"scenarios": SCENARIOS, "mm-selftests": MM_SELFTESTS}
    files = [f for s in suites for f in named.get(s, ())]
    if "harness" in suites:
        files += sorted(p.name for p in folder.glob("test_*.py")
                        if p.name not in SCENARIOS + MM_SELFTESTS)
    return [str(folder / f) for f in dict.fromkeys(files)]


def _start_suite(req: SuiteRequest, job: SuiteJob, quiet: bool) -> subprocess.Popen:
    claims.claim(job.out)   # its pytest inherits the claim
    job.junit.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pytest", *suite_paths(req.suite),
            "-p", "no:cacheprovider", "-q",
            "-rfE", f"--junitxml={job.junit}",
            *options.to_pytest_argv(req.guest, kernel=job.spec, arch=job.arch, out=job.out,
                                    selftests_source=req.selftests_source,
                                    **({"cpus": job.cpus} if job.cpus else {}),
                                    **({"boot": job.boot} if job.boot else {}))]
    k = job.k or req.k
    if k:
        argv += ["-k", k]
    log = job.out / "pytest.log"
    progress(f"{job.label}: running the kernel suite "
             f"({'ssh' if job.target else job.boot or req.guest.boot})"
             + (f"; its output: {log}" if quiet else f"; logs: {job.out}"))
    # Its own session, so a terminal's Ctrl-C reaches it once, from us; and it
    # dies with us if we are killed (its QEMUs die with it). SIGINT is how
    # we ask it to stop: it must not inherit that signal ignored (a script's
    # `kharness run &`), see pytest_plugin.
    env = {**os.environ, spawn.CHILD: "1"}
    if not quiet:
        return spawn.spawn(argv, env=env)
    with open(log, "wb") as sink:
        return spawn.spawn(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


def _finish_suite(req: SuiteRequest, job: SuiteJob, status: int, quiet: bool) -> None:
    if status == NO_TESTS:
        raise UsageError(f"no test of the suite matches -k {job.k or req.k!r}")
    job.status = PYTEST_STATUS.get(status, 3)
    word = {0: "passed", 1: "FAILED", 130: "interrupted"}.get(job.status, "ERROR")
    summary = ""
    if quiet and job.junit.exists():
        cases = compare.load_junit(job.junit).cases.values()
        counts = {o: sum(c.outcome == o for c in cases) for o in ("passed", "failed", "error",
                                                                 "skipped")}
        summary = " (" + ", ".join(f"{n} {o}" for o, n in counts.items() if n) + ")"
    where = f"JUnit: {job.junit}" if job.junit.exists() else f"no JUnit; logs: {job.out}"
    progress(f"{job.label}: {word}{summary}; {where}")


def run_suite(req: SuiteRequest, spec: str, arch: Arch, out: Path) -> tuple[int, Path]:
    """The kernel suite on one kernel and arch: (our exit status, JUnit path)."""
    job = SuiteJob(spec, arch, out)
    return run_suites(req, [job]), job.junit


def build_request(args: argparse.Namespace, arch: Arch,
                  series: list[patches.Patch] | None = None) -> kbuild.BuildRequest:
    """What a kernel build needs, from the source-build options (--source,
    --config, --patches, --strict-config, --jobs, --no-ccache, --offline);
    the ones a caller does not have take their defaults. A series that does
    not apply to the source is bad input, found here before any build."""
    tree = source.get(args.source, offline=getattr(args, "offline", False))
    if series:
        with tempfile.TemporaryDirectory(prefix="kh-patches-") as scratch:
            patches.check_applies(tree.path, series, Path(scratch))
    return kbuild.BuildRequest(
        source=tree, arch=arch,
        fragments=kconfig.resolve_fragments(list(args.config), arch),
        patches=series or [], patches_spec=getattr(args, "patches", None) or "",
        strict_config=getattr(args, "strict_config", False),
        jobs=getattr(args, "jobs", None) or os.cpu_count() or 1,
        ccache=not getattr(args, "no_ccache", False))


# -- validate -------------------------------------------------------------------

@dataclass
class Validation:
    arch: Arch
    base: str                       # kernel spec
    patched: str | None             # None: the series did not build
    build_error: str = ""
    diff: compare.Diff | None = None

    @property
    def regressions(self) -> list[str]:
        if self.patched is None:
            return [f"the series does not build: {self.build_error}"]
        return self.diff.regressions if self.diff else []


def validate(args: argparse.Namespace) -> int:
    series = patches.load(args.patches)
    for arch in args.arch:
        build_request(args, arch, series)   # it applies, before the base is built
    req = options.suite_request(args)
    results = []
    for arch in args.arch:
        if args.against:
            base = args.against
        else:
            try:
                base = kbuild.build(build_request(args, arch)).spec
            except UsageError:
                raise      # a source or fragment that does not exist: bad input, not a build
            except KhError as e:
                raise KhError(f"the base tree does not build for {arch}, so nothing can be "
                              f"compared: {e}", detail=e.detail) from None
        try:
            patched: str | None = kbuild.build(build_request(args, arch, series)).spec
            error = ""
        except UsageError:
            raise       # a series that does not apply included
        except KhError as e:
            patched, error = None, str(e)
        v = Validation(arch, base, patched, error)
        status, junit_a = base_results(req, base, arch, args.out / f"base-{arch}")
        if status not in (0, 1):
            raise KhError(f"the suite could not run on the base kernel {base} ({arch}): "
                          f"see {args.out / f'base-{arch}'}")
        if patched is not None:
            _, junit_b = run_suite(req, patched, arch, args.out / f"patched-{arch}")
            v.diff = compare.compare(compare.load_junit(junit_a, f"base {base}"),
                                     compare.load_junit(junit_b, f"patched {patched}"))
        results.append(v)
    text = validation_text(args, series, results)
    (args.out / "validate.md").write_text(text + "\n")
    (args.out / "validate.html").write_text(
        "".join(v.diff.html() for v in results if v.diff) or f"<pre>{text}</pre>")
    print(text)
    progress(f"report: {args.out / 'validate.md'}, {args.out / 'validate.html'}")
    return 1 if any(v.regressions for v in results) else 0


def _suite_digest() -> str:
    """What decides a suite's results besides the kernel: tests, modules,
    helpers, image recipes."""
    files = sorted(p for name in ("suite", "kmods", "helpers", "images")
                   for p in data(name).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return digest(*(f"{p.name}:{p.read_bytes().hex()}" for p in files))


def base_results(req: SuiteRequest, spec: str, arch: Arch, out: Path) -> tuple[int, Path]:
    """The base kernel's run, reused when the same kernel, suite, selection
    and guest settings ran it before and every test passed (a base run that
    failed is run again: it may have been the machine)."""
    settings = options.to_pytest_argv(req.guest, kernel=spec, arch=arch, out=None,
                                      selftests_source=req.selftests_source)
    key = digest(spec, arch.name, req.k or "", ",".join(req.suite), *settings,
                 _suite_digest())
    kept = cache_root() / "runs" / f"{arch.name}-{key}" / "junit.xml"
    junit = out / "junit.xml"
    if kept.exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(kept, junit)
        progress(f"{spec} {arch}: base results reused from {kept.parent} (same kernel, suite "
                 f"and selection; all passed)")
        return 0, junit
    status, junit = run_suite(req, spec, arch, out)
    if status == 0 and spec.startswith("build:"):
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(junit, kept)
    return status, junit


def validation_text(args: argparse.Namespace, series: list[patches.Patch],
                    results: list[Validation]) -> str:
    lines = [f"kharness validate: {args.source}, {len(series)} patch(es), "
             f"config {','.join(args.config)}"]
    lines += [f"  [{i}/{len(series)}] {p.subject}"[:78] for i, p in enumerate(series, 1)]
    for v in results:
        lines += ["", f"== {v.arch}: base {v.base} -> patched {v.patched or '(no build)'}"]
        if v.diff is not None:
            lines.append(v.diff.text())
        for r in v.regressions:
            where = args.out / f"patched-{v.arch}"
            lines += compare.wrap(f"REGRESSION {v.arch}: {r} (logs: {where})", 78)
    n = sum(len(v.regressions) for v in results)
    lines += ["", "no regressions" if n == 0 else f"{n} regression{'s' if n > 1 else ''}"]
    return "\n".join(lines)


# -- bisect -----------------------------------------------------------------------

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


def bisect(args: argparse.Namespace) -> int:
    if args.good or args.bad:
        return bisect_git(args)
    if not args.patches:
        raise UsageError("bisect needs --patches SERIES (a patch series) or --good/--bad "
                         "(a git tree)")
    if not args.k:
        raise UsageError("bisect needs -k: the test that fails (or, with --signature, the "
                         "guest command to run in rounds)")
    series = patches.load(args.patches)
    arch = args.arch[0]
    build_request(args, arch, series)   # the source and fragments exist, the series applies
    t0 = time.monotonic()

    def step(k: int) -> tuple[str, str]:
        try:
            kernel = kbuild.build(build_request(args, arch, series[:k]))
        except UsageError:
            raise
        except KhError as e:
            return SKIP, f"does not build: {str(e)[:150]}"
        return step_on_kernel(options.suite_request(args), kernel, args.out / f"step-{k}",
                              args.signature, args.rounds)

    result = bisect_series(len(series), step)
    lines = [f"kharness bisect: {len(series)} patches, -k {args.k!r}"
             + (f", --signature {args.signature!r} ({args.rounds} rounds)"
                if args.signature else "")]
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bisect.txt").write_text(text + "\n")
    return 0 if result.first_bad is not None else 1


def bisect_git(args: argparse.Namespace) -> int:
    """`git bisect run` over a tree with `kharness bisect-step` as the test."""
    if not (args.good and args.bad):
        raise UsageError("git bisect needs both --good REV and --bad REV")
    tree = Path(args.source)
    if not (tree / ".git").exists():
        raise UsageError(f"--good/--bad bisect a git tree: {args.source} has no .git")
    # bisect's own options, spelt for bisect-step (the tree as it is checked out)
    step = [sys.executable, "-m", "harness.cli", "bisect-step", *options.to_argv(
        "bisect-step", args, always=("arch",), source=str(tree.resolve()),
        out=args.out.resolve())]

    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(tree), *a], text=True, capture_output=True)

    if git("status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise UsageError(f"{tree} has uncommitted changes: git bisect would check out over "
                         f"them; commit or stash them first")
    started = git("bisect", "start", args.bad, args.good)
    if started.returncode != 0:
        raise UsageError(f"git bisect start {args.bad} {args.good} failed: "
                         f"{started.stderr.strip().splitlines()[-1:]}")
    try:
        progress(f"git bisect run {shlex.join(step)}")
        res = subprocess.run(["git", "-C", str(tree), "bisect", "run", *step], text=True,
                             capture_output=True)
        log = git("bisect", "log").stdout
    finally:
        git("bisect", "reset")
    out = res.stdout + res.stderr
    (args.out / "bisect.txt").write_text(out + "\n" + log)
    first = [ln for ln in out.splitlines() if "is the first bad commit" in ln]
    print(log.rstrip())
    print(first[0] if first else "no first bad commit found")
    return 0 if first else 1


def bisect_step(args: argparse.Namespace) -> int:
    """A `git bisect run` step: 0 good, 1 bad, 125 skip (no build or boot)."""
    arch = args.arch[0]
    try:
        kernel = kbuild.build(build_request(args, arch))
        verdict, evidence = step_on_kernel(options.suite_request(args), kernel,
                                           args.out / f"step-{kernel.release}",
                                           args.signature, args.rounds)
    except UsageError:
        raise       # bad input: git bisect must stop (cli maps it to 128), not skip
    except KhError as e:
        verdict, evidence = SKIP, str(e)[:200]
    progress(f"bisect step: {verdict}: {evidence}")
    return {GOOD: 0, BAD: 1, SKIP: 125}[verdict]
