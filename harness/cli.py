"""kharness command line: parse arguments, call the stages, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from harness import arches, claims, mutants, nightly, options, repro, session, workflows
from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.guest import Guest, Result, Target
from harness.kbuild import helpers, kmod, patches
from harness.kbuild import kernel as kbuild
from harness.kernels import resolve
from harness.observe import reports
from harness.report import compare, matrix, merge
from harness.util import progress, write_out
from harness.vm import machine
from harness.vm.machine import kill_all


class Terminated(KeyboardInterrupt):
    """SIGTERM: stopped like Ctrl-C, with results written, but exit 143."""


def cmd_run(args: argparse.Namespace) -> int:
    """Each kernel x arch as a pytest process of its own, then the matrix."""
    # Every kernel is found (downloaded) first: one that cannot be is a clean
    # error before any suite starts, not a pytest exit in the middle.
    for arch in args.arch:
        for spec in args.kernel:
            resolve(spec, arch, offline=args.offline)
    if args.target is not None:     # one job: what the machine runs
        spec, arch = session.wanted(args)
        jobs = [workflows.SuiteJob(spec, arch, args.out / f"ssh-{args.target.host}",
                                   target=args.target)]
    else:
        jobs = [workflows.SuiteJob(spec, arch, args.out / f"{spec.replace(':', '-')}-{arch}")
                for arch in args.arch for spec in args.kernel]
    t0 = time.monotonic()
    try:
        return workflows.run_suites(args, jobs, args.parallel or workflows.default_parallel())
    finally:
        # What finished, also after Ctrl-C; a job that never started has no JUnit.
        _matrix(args.out, [(j.label, j.junit) for j in jobs])
        if len(jobs) > 1:
            progress(f"{len(jobs)} jobs in {time.monotonic() - t0:.0f}s")


def cmd_compare(args: argparse.Namespace) -> int:
    """The difference between two runs (directories or JUnit files)."""
    worst = 0
    for a, b in compare.pair(compare.load(args.runs[0]), compare.load(args.runs[1])):
        d = compare.compare(a, b)
        print(d.text())
        worst = max(worst, 1 if d.regressions else 0)
    return worst


def cmd_validate(args: argparse.Namespace) -> int:
    return workflows.validate(args)


def cmd_mutants(args: argparse.Namespace) -> int:
    return mutants.run(args)


def cmd_bisect(args: argparse.Namespace) -> int:
    return workflows.bisect(args)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    return workflows.bisect_step(args)


def cmd_nightly(args: argparse.Namespace) -> int:
    return nightly.run(args)


def cmd_report(args: argparse.Namespace) -> int:
    """merge: one JUnit, matrix and summary from many jobs; kcidb: KCIDB JSON."""
    first = Path(args.dirs[0])
    if args.action == "merge":
        into = args.into or first / "merged"
        print(merge.merge(args.dirs, into))
        progress(f"merged results: {into}/junit.xml, matrix.html, matrix.txt, summary.txt")
        return 0
    into = args.into or first / "kcidb.json"
    merge.write_kcidb(args.dirs, args.origin, into)
    progress(f"KCIDB JSON: {into}; submit it with: kcidb-submit -p PROJECT -t TOPIC < {into}")
    return 0


def _matrix(out: Path, runs: list[tuple[str, Path]]) -> None:
    m = matrix.build(runs)
    if m.rows:
        html = out / "matrix.html"
        write_out(html, m.html())
        print(m.text())
        progress(f"behaviour matrix: {html}")


def _show(guest: Target, res: Result) -> bool:
    """The command's output, byte for byte, then any kernel report it caused."""
    sys.stdout.flush()
    sys.stdout.buffer.write(res.stdout_bytes)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(res.stderr_bytes)
    sys.stderr.buffer.flush()
    found = reports.parse(guest.dmesg_window())
    for r in found:
        progress(f"kernel report during '{res.cmd}' (exit status {res.status}): {r.title} "
                 f"(kernel log: {guest.dmesg_log})")
    return bool(found)


def cmd_boot(args: argparse.Namespace) -> int:
    spec, arch = session.wanted(args)
    here = os.getcwd()
    if args.vng_root == "auto" and (arch or arches.host()).native:
        args.vng_root = "host"   # your tools, as vng itself gives them
    with session.booted(args, spec, arch, args.out / "boot",
                        rwdir=here if args.rw else "") as (prep, guest):
        for local, remote in args.put:
            guest.put(local, remote, local.stat().st_mode & 0o777)

        def where(cmd: str) -> str:
            # virtme-ng's guest sees the host's files: commands run where you are
            return f"cd {shlex.quote(here)} && {cmd}" if prep.boot == "vng" else cmd
        if args.exec is not None:
            res = guest.run(where(args.exec), timeout=args.timeout)
            # A kernel report is the news, whatever the command's own status.
            return 1 if _show(guest, res) else res.status
        progress(f"{prep.kernel.release} ready; commands run in the guest "
                 f"(Ctrl-D to leave). Console: {guest.console_log}")
        while True:
            try:
                line = input(f"kh:{prep.kernel.release}# ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            if line.strip():
                res = guest.run(where(line), timeout=args.timeout)
                _show(guest, res)
                if res.status:
                    print(f"[exit {res.status}]", file=sys.stderr)


def cmd_repro(args: argparse.Namespace) -> int:
    """RP: run a command (or a C reproducer) in rounds until the signature
    shows; its hit rate with an interval, on one guest or -j of them."""
    spec, arch = session.wanted(args)
    rounds = args.rounds if args.rounds is not None else (None if args.budget else 100)
    outdir = args.out / "repro"
    prep = session.prepare(spec, arch, boot=args.boot, outdir=outdir, accel=args.accel,
                           cpus=args.cpus, offline=args.offline, target=session.access(args),
                           guest=session.settings(args))
    extra = repro_inputs(args, prep, outdir)
    command = extra.command or args.command
    parallel = args.parallel or 1
    lock = threading.Lock()

    def start(_: int) -> Target:
        with lock:
            return session.start(prep)

    runs = []
    phases: list[list[str]] = [[], args.stress] if args.stress else [[]]
    for stress in phases:
        def setup(guest: Target, stress: list[str] = stress) -> repro.Teardown | None:
            extra.install(guest)
            return repro.start_stress(guest, stress)
        if args.stress:
            progress(f"rounds {'with stress ' + ','.join(stress) if stress else 'without stress'}")
        rep = repro.reproduce_parallel(start, parallel, command, args.signature, rounds=rounds,
                                       until_hit=args.until_hit, timeout=args.timeout,
                                       budget=args.budget, setup=setup)
        rep.label = f"stress {','.join(stress)}" if stress else ("no stress" if args.stress
                                                                   else "")
        runs.append(rep)
    # Everything the user gave, the kernel as resolved (a debian:<series>
    # moves on; its spec here is the one that ran).
    rerun = options.rerun("repro", args, args.command,
                          kernel=None if args.target else [prep.kernel.spec],
                          arch=None if args.target else [prep.kernel.arch])
    first = next((r.first for r in runs if r.first), None)
    text = "\n".join(r.summary() for r in runs) + (f"\n\n{first.text}" if first else "")
    write_out(outdir / "repro.txt",
              f"kernel: {prep.kernel.release} ({prep.kernel.arch}, {prep.where})\n"
              f"{text}\n\nrerun: {rerun}\n")
    write_out(outdir / "repro.json", json.dumps(
        {"kernel": prep.kernel.release, "arch": str(prep.kernel.arch), "where": prep.where,
         "cpus": args.cpus, "boot_retries": prep.boot_retries, "rerun": rerun,
         "runs": [r.to_dict() for r in runs]}, indent=2))
    if prep.boot_retries:
        progress(f"{prep.boot_retries} boots failed in the rig and were booted again")
    print(text)
    for r in runs:
        for other in r.others:
            progress(f"other kernel report during the rounds: {other.title}")
    progress(f"rerun with: {rerun}")
    progress(f"reproduction written to {outdir}/repro.txt and repro.json; guest logs under "
             f"{outdir}")
    return 0 if any(r.hits for r in runs) else 1


def repro_inputs(args: argparse.Namespace, prep: session.Prepared, outdir: Path) -> repro.Inputs:
    """--c and --kmod, built on this host for the guest's kernel and arch."""
    extra = repro.Inputs()
    if args.c is not None:
        binary = helpers.compile_reproducer(args.c, prep.kernel.arch, outdir / args.c.stem)
        extra.files.append((binary, f"kh-repro/{binary.name}", 0o755))
        extra.command = [f"kh-repro/{binary.name}", *args.command]
    if args.kmod is not None:
        try:
            mod = kmod.build(prep.kernel, args.kmod.name, args.kmod.parent)
        except KhError as e:     # the user's module: not building is bad input
            raise UsageError(str(e), detail=e.detail) from None
        extra.files.append((mod.path, f"kh-repro/{mod.path.name}", 0o644))
        extra.modules.append(f"kh-repro/{mod.path.name}")
    return extra


def cmd_build(args: argparse.Namespace) -> int:
    """A kernel from source, patches and kconfig fragments; prints its spec."""
    series = patches.load(args.patches) if args.patches else None
    k = kbuild.build(workflows.build_request(args, args.arch[0], series))
    print(f"build:{k.spec.partition(':')[2]}")
    progress(f"{k.release} ({k.arch}): run the suites with "
             f"'kharness run --kernel {k.spec} --arch {k.arch}'; build: {k.extra['build']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Boot time on each path and command round trip, under each accelerator
    this host has, as figures, never asserted."""
    spec, arch = session.wanted(args)
    if args.target is not None:
        return _bench_target(args, spec, arch)
    assert arch is not None
    accels = [args.accel] if args.accel != "auto" else ["kvm", "tcg"]
    if args.accel == "auto" and (why := machine.kvm_unusable(arch)) is not None:
        accels.remove("kvm")
        print(f"kharness bench: KVM not measured: {why}")
    print(f"kharness bench: {spec} on {arch}, {args.rounds} boots a path")
    for accel in accels:
        figures: dict[str, tuple[float, float]] = {}
        for boot in args.paths:
            measured = _bench_path(args, spec, arch, boot, accel)
            if measured is None:
                break   # KVM fell back to TCG: said so, and TCG comes next
            figures[boot] = measured
        base = figures.get("initramfs")
        for boot, (b, t) in figures.items():
            if base and boot != "initramfs":
                print(f"  {boot}/initramfs under {accel}: boot {b / base[0]:.1f}x, "
                      f"round trip {t / base[1]:.1f}x")
    return 0


def _bench_path(args: argparse.Namespace, spec: str | None, arch: Arch, boot: str,
                accel: str) -> tuple[float, float] | None:
    """Median boot to first command and command round trip of one path."""
    guest_settings = session.settings(args)
    prep = session.prepare(spec, arch, boot=boot, outdir=args.out / f"bench-{boot}-{accel}",
                           accel=accel, cpus=args.cpus, offline=args.offline,
                           guest=guest_settings)
    boots, trips = [], []
    for _ in range(args.rounds):
        t0 = time.monotonic()
        guest = session.start(prep)
        boots.append(time.monotonic() - t0)
        assert isinstance(guest, Guest)   # no --target here
        used = guest.machine.accel
        for _ in range(args.commands):
            trips.append(guest.run("true").seconds)
        guest.poweroff()
        if used != accel:
            print(f"  {accel}: the guest fell back to {used}; not measured")
            return None
    root = prep.spec.vng_root if prep.spec.vng_root != "auto" else "kh"
    label = f"vng ({root} root)" if boot == "vng" else boot
    print(f"  {label:16s} {accel}: boot to first command: median "
          f"{statistics.median(boots):.2f}s (min {min(boots):.2f}, max {max(boots):.2f}); "
          f"command round trip: median {statistics.median(trips) * 1000:.0f} ms over "
          f"{len(trips)}")
    return statistics.median(boots), statistics.median(trips)


def _bench_target(args: argparse.Namespace, spec: str | None, arch: Arch | None) -> int:
    """A real machine is not booted: the round trip of a command is its figure."""
    with session.booted(args, spec, arch, args.out / "bench-ssh") as (prep, target):
        trips = [target.run("true").seconds for _ in range(args.commands * args.rounds)]
        t0 = time.monotonic()
        target.dmesg_window()
        window = time.monotonic() - t0
    print(f"kharness bench: {prep.where}, {prep.kernel.release}\n"
          f"  command round trip: median {statistics.median(trips) * 1000:.1f} ms "
          f"(min {min(trips) * 1000:.1f}, max {max(trips) * 1000:.1f}) over {len(trips)}; "
          f"kernel log window {window * 1000:.0f} ms")
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    """Kernel reports in console logs (or stdin), titled as syzkaller does;
    each log read as a stream, so its size does not matter."""
    for name in args.logs:      # every path first: none half-done for a typo
        if name != "-" and not os.access(name, os.R_OK):
            why = "no such file" if not os.path.exists(name) else "not readable"
            raise UsageError(f"cannot read {name}: {why}")
        if name != "-" and os.path.isdir(name):
            raise UsageError(f"cannot read {name}: it is a directory; give log files")
    total = 0
    for name in args.logs:
        with (open(sys.stdin.fileno(), "rb", closefd=False) if name == "-"
              else open(name, "rb")) as stream:
            found = 0
            for r in reports.parse_stream(reports.lines_of(stream)):
                found += 1
                _print_report(name, r, args.json)
        total += found
        if not found and not args.json:
            print(f"{name}: no kernel report")
    return 1 if total else 0


def _print_report(name: str, r: reports.Report, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"log": name, **r.to_dict()}))
        return
    print(f"{name}:{r.start + 1}: {r.title}")
    print(f"  kind: {r.kind.value}; corrupted: {'yes: ' + r.reason if r.corrupted else 'no'}")
    print("\n".join(f"  | {line}" for line in r.lines))


class Parser(argparse.ArgumentParser):
    """argparse with the one-line error and exit status 2 of the rest of kharness."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


COMMANDS = {
    "run": (cmd_run, "run the kernel suite, write JUnit, logs and the behaviour matrix"),
    "boot": (cmd_boot, "boot the guest the tests get and run commands in it"),
    "build": (cmd_build, "build a kernel from source, patches and kconfig fragments "
                         "(cached); prints the build:<key> to run"),
    "repro": (cmd_repro, "run a guest command in rounds until a kernel report matching "
                         "--signature appears; report the hit rate"),
    "bench": (cmd_bench, "measure boot time and command round trip"),
    "compare": (cmd_compare, "what changed between two runs (output directories or JUnit "
                             "files); exit 1 on regressions"),
    "validate": (cmd_validate, "build the source with and without a patch series, run the "
                               "suite on both, print what the series changed"),
    "bisect": (cmd_bisect, "find the patch of a series (or the git commit) after which a "
                           "test fails or a report shows"),
    "bisect-step": (cmd_bisect_step, "one step for 'git bisect run': build the tree as it "
                                     "is, run -k; exit 0 good, 1 bad, 125 skip, 128 bad input "
                                     "(git bisect stops)"),
    "mutants": (cmd_mutants, "build the kernel with each mutant patch (tests/data/mutants), "
                             "run the suite on each, print which tests caught which"),
    "nightly": (cmd_nightly, "run the nightly matrix file (ci/nightly.toml): all its jobs "
                             "here, one with --job, or --list them for a CI engine"),
    "report": (cmd_report, "merge: combine job outputs into one JUnit, matrix and summary; "
                           "kcidb: write them as KCIDB JSON for KernelCI"),
    "parse": (cmd_parse, "print the kernel reports in console logs, with syzkaller's titles; "
                         "exit 1 if there are any"),
}


EXIT_STATUS = ("exit status: 0 passed; 1 tests failed, a kernel report showed or "
               "regressions were found; 2 bad input; 3 infrastructure (download, build, boot, "
               "guest agent); 130 interrupted (143 on SIGTERM)")


def parser() -> Parser:
    ap = Parser(prog="kharness", description="Boot real kernels under QEMU and run the "
                                             "memory-mapping suites against them.",
                epilog=EXIT_STATUS)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for name, (func, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help, epilog=EXIT_STATUS)
        options.add_to_argparse(p, name)
        if name == "repro":
            p.add_argument("command", nargs="*", help="the guest command and its arguments "
                                                      "(after --), run as given; with --c, "
                                                      "the reproducer's arguments")
        if name == "nightly":
            p.add_argument("matrix", help="the matrix file, e.g. ci/nightly.toml")
        if name == "report":
            p.add_argument("action", choices=("merge", "kcidb"))
            p.add_argument("dirs", nargs="+", metavar="DIR",
                           help="job output directories (searched for junit.xml)")
        if name == "compare":
            p.add_argument("runs", nargs=2, metavar="RUN",
                           help="a kharness run output directory or a JUnit file")
        if name == "parse":
            p.add_argument("logs", nargs="+", metavar="LOG",
                           help="console logs or dmesg output; - for stdin")
        p.set_defaults(func=func)
    return ap


# `git bisect run` skips a commit on 125 and marks it bad on 1-127: bad
# input to bisect-step must stop the bisection instead (128 and above).
BISECT_ABORT = 128

# Commands whose files lie at the top of --out (a matrix, a report): one at
# a time there. The others claim the folders they write (boot/, repro/, a
# nightly job's), so shards of one night share an --out.
WRITES_ALL_OF_OUT = ("run", "validate", "bisect", "mutants")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser().parse_args(argv)
        args = options.resolve(args.cmd, vars(args))
        if args.cmd in WRITES_ALL_OF_OUT:
            claims.claim(args.out)
        return args.func(args)
    except KhError as e:
        print(f"kharness: error: {e}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        if e.exit_code == 2 and (argv if argv is not None else sys.argv[1:])[:1] == \
                ["bisect-step"]:
            return BISECT_ABORT
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (| head): what it wanted, it has.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        # Past the option checks, a file we cannot write is the machine's trouble:
        # a full disk, a vanished directory.
        where = e.filename or "a file"
        print(f"kharness: error: cannot write {where}: {e.strerror or e}; what was written "
              f"so far stays", file=sys.stderr)
        return 3
    except Terminated:
        print("kharness: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("kharness: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_all()


if __name__ == "__main__":
    sys.exit(main())
