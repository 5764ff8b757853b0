"""The kernel suites on kernels x arches: each job a pytest process of its
own (one crash cannot poison the next, jobs can go side by side), its
JUnit and logs in the job's folder. Suites are the kernel suite folder's
subfolders, found by looking (suite_paths)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import claims, options, spawn
from harness.addresses import SshUrl
from harness.arches import Arch
from harness.errors import UsageError
from harness.requests import SuiteRequest
from harness.resources import data
from harness.results import compare
from harness.util import progress

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
    suite: list[str] | None = None        # --suite, when the job has its own
    selftests_source: str | None = None   # --selftests-source, when the job has its own
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


def suite_paths(suites: list[str]) -> list[str]:
    """The folders pytest is given for these suites ('all': every one)."""
    folder = data("suite")
    if "all" in suites:
        return [str(folder)]
    return [str(folder / s) for s in dict.fromkeys(s.partition(":")[0] for s in suites)]


# pytest expands variables in --junitxml ('o$HOME' would write into the
# home folder): each '$' of ours is spelt as this variable, whose value is
# '$', and os.path.expandvars does not expand what it put in.
DOLLAR = "KH_DOLLAR"


def _verbatim(path: Path) -> str:
    """path as pytest's --junitxml, which expands ~ and $VARIABLES, reads it."""
    return str(path.absolute()).replace("$", "${" + DOLLAR + "}")


def _start_suite(req: SuiteRequest, job: SuiteJob, quiet: bool) -> subprocess.Popen:
    claims.claim(job.out)   # its pytest inherits the claim
    job.junit.unlink(missing_ok=True)
    # The suite folder is the root (its conftest.py serves every suite, also
    # from a wheel, where no ini file says where the root is).
    argv = [sys.executable, "-m", "pytest", *suite_paths(job.suite or req.suite),
            f"--rootdir={data('suite')}", "-p", "no:cacheprovider", "-q",
            "-rfE", f"--junitxml={_verbatim(job.junit)}",
            *options.to_pytest_argv(session_request(req, job), job.out / "request.json")]
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
    env = {**os.environ, spawn.CHILD: "1", DOLLAR: "$"}
    if not quiet:
        return spawn.spawn(argv, env=env)
    with open(log, "wb") as sink:
        return spawn.spawn(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


def session_request(req: SuiteRequest, job: SuiteJob) -> SuiteRequest:
    """What the job's pytest session is asked: the run's request with the
    job's kernel, arch, folder and whatever else the job has of its own."""
    guest = req.guest.replace(kernel=job.spec, arch=job.arch,
                              **({"cpus": job.cpus} if job.cpus else {}),
                              **({"boot": job.boot} if job.boot else {}))
    return dataclasses.replace(req, guest=guest, out=job.out, suite=job.suite or req.suite,
                               k=job.k or req.k,
                               selftests_source=job.selftests_source or req.selftests_source)


def _finish_suite(req: SuiteRequest, job: SuiteJob, status: int, quiet: bool) -> None:
    if status == NO_TESTS:
        raise UsageError(f"no test of the suite matches -k {job.k or req.k!r}")
    job.status = PYTEST_STATUS.get(status, 3)
    if job.status == 0 and not job.junit.exists():
        progress(f"{job.label}: the suite passed but wrote no JUnit at {job.junit}")
        job.status = 3
    word = {0: "passed", 1: "FAILED", 130: "interrupted"}.get(job.status, "ERROR")
    summary = ""
    if quiet and job.junit.exists():
        cases = compare.load_junit(job.junit).cases.values()
        counts = {o: sum(c.outcome == o for c in cases) for o in ("passed", "failed", "error",
                                                                 "known", "skipped")}
        summary = " (" + ", ".join(f"{n} {o}" for o, n in counts.items() if n) + ")"
    where = f"JUnit: {job.junit}" if job.junit.exists() else f"no JUnit; logs: {job.out}"
    progress(f"{job.label}: {word}{summary}; {where}")
    if job.status in (1, 3):
        progress(f"{job.label}: rerun with: {rerun_line(req, job)}")


def rerun_line(req: SuiteRequest, job: SuiteJob) -> str:
    """`kharness run` of this job alone, with everything it was given."""
    return options.rerun("run", req, kernel=[job.spec] if job.spec else None,
                         arch=[job.arch] if job.arch else None, target=job.target,
                         k=job.k or req.k, cpus=job.cpus or req.guest.cpus,
                         boot=job.boot or req.guest.boot, out=job.out.parent,
                         suite=job.suite or req.suite,
                         selftests_source=job.selftests_source or req.selftests_source)


def run_suite(req: SuiteRequest, spec: str, arch: Arch, out: Path) -> tuple[int, Path]:
    """The kernel suite on one kernel and arch: (our exit status, JUnit path)."""
    job = SuiteJob(spec, arch, out)
    return run_suites(req, [job]), job.junit
