"""Race reproduction (RP): run one guest command over and over until the
kernel prints a report whose title carries a signature, and say how often.

Between rounds `1` goes to /sys/kernel/debug/clear_warn_once, so a
WARN_ON_ONCE that fired in one round can fire again in the next and every
round is counted on its own. Rounds can be spread over several guests (each
its own QEMU) and bounded by a count or a time budget. The outcome is what
a developer chasing a race wants to paste into a mail: hits / rounds with a
95% interval, rounds and guest-seconds a hit, the time to the first hit,
the parsed report, and the command line that reproduces it.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from harness import options, session
from harness.errors import KhError, UsageError
from harness.guest import Guest, Result, Target
from harness.kbuild import helpers, kmod
from harness.observe import reports
from harness.requests import ReproRequest
from harness.stats import percent, wilson, zero_hit_bound
from harness.util import progress, write_out

CLEAR_WARN_ONCE = "/sys/kernel/debug/clear_warn_once"
KEEP_RESULTS = 1000     # rounds' Results kept for the caller (the first ones)


@dataclass
class Reproduction:
    command: str
    signature: str
    rounds: int = 0
    hits: int = 0
    first_hit_round: int | None = None
    first_hit_seconds: float | None = None
    first: reports.Report | None = None        # the first matching report
    others: list[reports.Report] = field(default_factory=list)  # reports that do not match
    results: list[Result] = field(default_factory=list)          # rounds' commands (the first)
    seconds: float = 0.0          # wall time of the whole reproduction
    guest_seconds: float = 0.0    # time guests spent in rounds, summed over guests
    guests: int = 1
    label: str = ""               # what set this run apart (e.g. "stress cpu,memory")

    @property
    def rate(self) -> float:
        return self.hits / self.rounds if self.rounds else 0.0

    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.rounds)

    def rate_text(self) -> str:
        if not self.rounds:
            return "no round ran"
        if not self.hits:
            return (f"0/{self.rounds}: hit rate below {percent(zero_hit_bound(self.rounds))} "
                    f"at 95%")
        lo, hi = self.interval()
        return (f"{self.hits}/{self.rounds} rounds ({percent(self.rate)}, 95% interval "
                f"{percent(lo)}-{percent(hi)})")

    def summary(self) -> str:
        where = f" on {self.guests} guests" if self.guests > 1 else ""
        tag = f" [{self.label}]" if self.label else ""
        if self.first is None:
            return (f"'{self.signature}' not seen{tag}: {self.rate_text()} "
                    f"({self.seconds:.1f}s{where}): {self.command}")
        per_hit = (f"{self.rounds / self.hits:.1f} rounds and "
                   f"{self.guest_seconds / self.hits:.2f} guest-seconds a hit")
        return (f"'{self.first.title}'{tag}: {self.rate_text()}, {per_hit}, first in round "
                f"{self.first_hit_round} after {self.first_hit_seconds:.1f}s{where}; "
                f"reproduce with: {self.command}")

    def to_dict(self) -> dict:
        lo, hi = self.interval()
        return {"command": self.command, "signature": self.signature, "label": self.label,
                "rounds": self.rounds, "hits": self.hits, "rate": self.rate,
                "interval95": [lo, hi],
                "upper_bound95": zero_hit_bound(self.rounds) if not self.hits else None,
                "first_hit_round": self.first_hit_round,
                "first_hit_seconds": self.first_hit_seconds,
                "rounds_per_hit": self.rounds / self.hits if self.hits else None,
                "guest_seconds_per_hit": self.guest_seconds / self.hits if self.hits else None,
                "seconds": self.seconds, "guest_seconds": self.guest_seconds,
                "guests": self.guests, "title": self.first.title if self.first else None,
                "other_reports": [r.title for r in self.others]}


class Plan:
    """The rounds still to give out, shared by the guests of one run."""

    def __init__(self, rounds: int | None, budget: float | None, until_hit: bool):
        self.left = rounds
        self.budget = budget          # seconds of rounds, from the first round on
        self.deadline: float | None = None
        self.until_hit = until_hit
        self.next_round = 0
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.first_round: float | None = None   # when rounds began (boots before it)
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The number of the next round to run, or None: stop."""
        with self._lock:
            if self.stop.is_set():
                return None
            if self.budget and self.deadline is None:
                self.deadline = time.monotonic() + self.budget
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return None
            if self.left is not None:
                if self.left <= 0:
                    return None
                self.left -= 1
            self.next_round += 1
            if self.first_round is None:
                self.first_round = time.monotonic()
            return self.next_round

    def hit(self) -> None:
        if self.until_hit:
            self.stop.set()


def _rounds(guest: Target, cmd: str | list[str], signature: str, out: Reproduction,
            plan: Plan, timeout: float | None) -> None:
    guest.dmesg_window()   # what came before is not a round's
    while (n := plan.take()) is not None:
        _round(guest, n, cmd, signature, out, plan, timeout)


def _fresh_rounds(start: Callable[[], Target], setup: Callable[[Target], Teardown | None] | None,
                  cmd: str | list[str], signature: str, out: Reproduction, plan: Plan,
                  timeout: float | None) -> None:
    """Each round in a guest of its own, restored from the snapshot and set
    up again: no round sees what another left (a fired WARN_ONCE, a leaked
    page, a full page cache)."""
    while (n := plan.take()) is not None:
        guest = start()
        try:
            if setup is not None:
                setup(guest)
            _round(guest, n, cmd, signature, out, plan, timeout)
        finally:
            guest.discard()


def _round(guest: Target, n: int, cmd: str | list[str], signature: str, out: Reproduction,
           plan: Plan, timeout: float | None) -> None:
    t = time.monotonic()
    if isinstance(guest, Guest):       # re-arm, run, read: one exchange
        res, log = guest.round(cmd, timeout=timeout)
        res.check()
    else:
        guest.run(["sh", "-c", f"echo 1 > {CLEAR_WARN_ONCE}"], check=True)
        res = guest.run(cmd, check=True, timeout=timeout)
        log = guest.dmesg_window()
    found = reports.parse(log)
    out.guest_seconds += time.monotonic() - t
    if len(out.results) < KEEP_RESULTS:
        out.results.append(res)
    hit = [r for r in found if signature in r.title]
    out.others += [r for r in found if signature not in r.title]
    out.rounds += 1
    if hit:
        out.hits += 1
        if out.first is None:
            out.first, out.first_hit_round = hit[0], n
            out.first_hit_seconds = time.monotonic() - (plan.first_round or plan.t0)
        plan.hit()


def _text(cmd: str | list[str]) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def reproduce(guest: Target, cmd: str | list[str], signature: str, *, rounds: int | None,
              until_hit: bool = False, timeout: float | None = None,
              budget: float | None = None) -> Reproduction:
    """Run cmd for `rounds` rounds and/or `budget` seconds in one guest; a
    round hits when a report's title contains `signature`. Reports that do
    not match are kept in `others`: a race test must not hide a different
    bug behind the one it chases."""
    out = Reproduction(command=_text(cmd), signature=signature)
    plan = Plan(rounds, budget, until_hit)
    _rounds(guest, cmd, signature, out, plan, timeout)
    out.seconds = time.monotonic() - plan.t0
    return out


Teardown = Callable[[], None]


def reproduce_parallel(start: Callable[[int], Target], guests: int, cmd: str | list[str],
                       signature: str, *, rounds: int | None, until_hit: bool = False,
                       timeout: float | None = None, budget: float | None = None,
                       setup: Callable[[Target], Teardown | None] | None = None,
                       fresh: bool = False) -> Reproduction:
    """The same over `guests` guests at once, started by start(i) and set up
    by setup(guest) (which may return its teardown); rounds are handed out
    one by one, so a fast guest runs more of them, and --until-hit stops
    every guest at the first hit. Each guest is powered off by the thread
    that started it (QEMU dies with the thread that spawned it). fresh: a
    new guest for every round (start(i) again), not one for all of them."""
    plan = Plan(rounds, budget, until_hit)
    parts = [Reproduction(command=_text(cmd), signature=signature) for _ in range(guests)]

    def one(i: int) -> None:
        if plan.stop.is_set():
            return
        try:
            if fresh:
                _fresh_rounds(lambda: start(i), setup, cmd, signature, parts[i], plan, timeout)
            else:
                _guest_rounds(start(i), setup, cmd, signature, parts[i], plan, timeout)
        except BaseException:
            plan.stop.set()     # one guest's failure ends the run
            raise

    with ThreadPoolExecutor(max_workers=guests) as pool:
        futures = [pool.submit(one, i) for i in range(guests)]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    out = merge(parts)
    out.seconds = time.monotonic() - plan.t0
    out.guests = guests
    return out


def _guest_rounds(guest: Target, setup: Callable[[Target], Teardown | None] | None,
                  cmd: str | list[str], signature: str, out: Reproduction, plan: Plan,
                  timeout: float | None) -> None:
    """Rounds on one guest, set up once, torn down and powered off at the end."""
    teardown = None
    try:
        if setup is not None:
            teardown = setup(guest)
        _rounds(guest, cmd, signature, out, plan, timeout)
    finally:
        if teardown is not None and guest.alive():
            teardown()
        guest.poweroff()


def merge(parts: list[Reproduction]) -> Reproduction:
    """One reproduction from its guests' parts: the first hit is the one
    that came first in time."""
    out = Reproduction(command=parts[0].command, signature=parts[0].signature)
    for p in parts:
        out.rounds += p.rounds
        out.hits += p.hits
        out.guest_seconds += p.guest_seconds
        out.others += p.others
        out.results += p.results[:max(0, KEEP_RESULTS - len(out.results))]
        if p.first is not None and (out.first_hit_seconds is None or
                                    (p.first_hit_seconds or 0) < out.first_hit_seconds):
            out.first, out.first_hit_round = p.first, p.first_hit_round
            out.first_hit_seconds = p.first_hit_seconds
    return out


@dataclass
class Inputs:
    """What a reproduction brings into each guest before its rounds: files
    (a compiled reproducer), out-of-tree modules to load, and the command
    that runs the reproducer."""
    files: list[tuple[Path, str, int]] = field(default_factory=list)  # local, guest, mode
    modules: list[str] = field(default_factory=list)                  # guest paths
    command: list[str] | None = None

    def install(self, guest: Target) -> None:
        for local, remote, mode in self.files:
            guest.put(local, remote, mode)
        for ko in self.modules:
            res = guest.run(["insmod", ko])
            if res.status != 0:
                raise KhError(f"insmod {ko} failed in the guest: {res.stderr.strip()}")


def start_stress(guest: Target, kinds: list[str]) -> Teardown | None:
    """Background load for the rounds: a busy loop a vCPU (cpu); khhog
    churning a quarter of memory and asking for compaction (memory). Returns
    what stops it (a target outlives the run; a guest is powered off)."""
    if not kinds:
        return None
    loads = []
    if "cpu" in kinds:
        cpus = int(guest.run("nproc", check=True).stdout.strip() or 1)
        loads += ["while :; do :; done"] * cpus
    if "memory" in kinds:
        total_kb = int(guest.read("/proc/meminfo").split()[1])
        loads.append(f"khhog {max(1, total_kb // 4096)}")
    pids = [guest.run(f"({load}) >/dev/null 2>&1 </dev/null & echo $!",
                      check=True).stdout.strip() for load in loads]

    def stop() -> None:
        guest.run(["kill", *pids])
    return stop


# -- the repro command --------------------------------------------------------------


def run(req: ReproRequest, outdir: Path) -> int:
    """`kharness repro`: rounds on one guest or -j of them (with --stress, a
    second set under load), the hit rates, the first report, and the line
    that reruns it all. Exit 0 if the signature showed."""
    prep = session.prepare(req.guest, outdir)
    extra = inputs(req, prep, outdir)
    command = extra.command or req.command
    rounds = req.rounds if req.rounds is not None else (None if req.budget else 100)
    lock = threading.Lock()

    def start(_: int, ahead: bool = False) -> Target:
        with lock:
            return session.start(prep, ahead=ahead)

    runs = []
    # --fresh: the rounds in one guest, then each in a guest of its own, so
    # the report shows whether a round's state carried to the next.
    compared = req.fresh == "round"
    for fresh in ([False, True] if compared else [False]):
        for stress in ([[], req.stress] if req.stress else [[]]):
            def setup(guest: Target, stress: list[str] = stress) -> Teardown | None:
                extra.install(guest)
                return start_stress(guest, stress)
            label = ", ".join(([] if not compared else
                               ["fresh guest each round" if fresh else "rounds share a guest"]) +
                              ([] if not req.stress else
                               [f"stress {','.join(stress)}" if stress else "no stress"]))
            if label:
                progress(f"rounds: {label}")
            rep = reproduce_parallel(partial(start, ahead=fresh), req.parallel or 1, command,
                                     req.signature, rounds=rounds, until_hit=req.until_hit,
                                     timeout=req.timeout, budget=req.budget, setup=setup,
                                     fresh=fresh)
            rep.label = label
            runs.append(rep)
    session.drop_spare(prep)
    # Everything the user gave, the kernel as resolved (a debian:<series>
    # moves on; its spec here is the one that ran).
    target = req.guest.target is not None
    rerun = options.rerun("repro", req, req.command,
                          kernel=None if target else [prep.kernel.spec],
                          arch=None if target else [prep.kernel.arch])
    _write(req, prep, runs, rerun, outdir)
    return 0 if any(r.hits for r in runs) else 1


def _write(req: ReproRequest, prep: session.Prepared, runs: list[Reproduction], rerun: str,
           outdir: Path) -> None:
    first = next((r.first for r in runs if r.first), None)
    text = "\n".join(r.summary() for r in runs) + (f"\n\n{first.text}" if first else "")
    write_out(outdir / "repro.txt",
              f"kernel: {prep.kernel.release} ({prep.kernel.arch}, {prep.where})\n"
              f"{text}\n\nrerun: {rerun}\n")
    write_out(outdir / "repro.json", json.dumps(
        {"kernel": prep.kernel.release, "arch": str(prep.kernel.arch), "where": prep.where,
         "cpus": req.guest.cpus, "boot_retries": prep.boots.retries, "rerun": rerun,
         "runs": [r.to_dict() for r in runs]}, indent=2))
    if prep.boots.retries:
        progress(f"{prep.boots.retries} boots failed in the rig and were booted again")
    print(text)
    for r in runs:
        for other in r.others:
            progress(f"other kernel report during the rounds: {other.title}")
    progress(f"rerun with: {rerun}")
    progress(f"reproduction written to {outdir}/repro.txt and repro.json; guest logs under "
             f"{outdir}")


def inputs(req: ReproRequest, prep: session.Prepared, outdir: Path) -> Inputs:
    """--c and --kmod, built on this host for the guest's kernel and arch."""
    extra = Inputs()
    if req.c is not None:
        binary = helpers.compile_reproducer(req.c, prep.kernel.arch, outdir / req.c.stem)
        extra.files.append((binary, f"kh-repro/{binary.name}", 0o755))
        extra.command = [f"kh-repro/{binary.name}", *req.command]
    if req.kmod is not None:
        try:
            mod = kmod.build(prep.kernel, req.kmod.name, req.kmod.parent)
        except KhError as e:     # the user's module: not building is bad input
            raise UsageError(str(e), detail=e.detail) from None
        extra.files.append((mod.path, f"kh-repro/{mod.path.name}", 0o644))
        extra.modules.append(f"kh-repro/{mod.path.name}")
    return extra
