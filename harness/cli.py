"""kharness command line: parse arguments, call the stages, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from harness import arches, claims, options, session, suites
from harness.commands import bench, bisect, cachetool, debug, mutants, nightly, repro, validate
from harness.errors import KhError, UsageError
from harness.guest import Guest, Result, Target
from harness.kbuild import linux as kbuild
from harness.kbuild import patches
from harness.kernels import resolve
from harness.observe import reports
from harness.results import compare, dashboard, known, matrix, merge, triage
from harness.util import progress, safe_name, write_out
from harness.vm.launcher import DRGN_QMP
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
    req = options.suite_request(args)
    if args.target is not None:     # one job: what the machine runs
        jobs = [suites.SuiteJob(req.guest.kernel, req.guest.arch,
                                   args.out / f"ssh-{args.target.host}", target=args.target)]
    else:
        jobs = [suites.SuiteJob(spec, arch,
                                args.out / f"{safe_name(spec.replace(':', '-'))}-{arch}")
                for arch in args.arch for spec in args.kernel]
    t0 = time.monotonic()
    try:
        return suites.run_suites(req, jobs, args.parallel or suites.default_parallel())
    finally:
        # What finished, also after Ctrl-C; a job that never started has no JUnit.
        _matrix(args.out, [(j.label, j.junit) for j in jobs])
        if len(jobs) > 1:
            progress(f"{len(jobs)} jobs in {time.monotonic() - t0:.0f}s")


def cmd_compare(args: argparse.Namespace) -> int:
    """The difference between two runs (directories or JUnit files)."""
    worst = 0
    entries = known.load(args.known_issues or None)
    for a, b in compare.pair(compare.load(args.runs[0]), compare.load(args.runs[1])):
        a.judge_known(entries)
        b.judge_known(entries)
        d = compare.compare(a, b)
        print(d.text())
        worst = max(worst, 1 if d.regressions else 0)
    return worst


def cmd_triage(args: argparse.Namespace) -> int:
    """The unknown failures of runs, grouped, with known-issue entries to paste."""
    entries = known.load(args.known_issues or None)
    runs = [r for spec in args.runs for r in compare.load(spec)]
    for r in runs:
        r.judge_known(entries)
    report, unknown = triage.text(runs)
    print(report)
    return 1 if unknown else 0


def cmd_validate(args: argparse.Namespace) -> int:
    return validate.validate(options.source_request(args), options.suite_request(args),
                             args.arch, args.out, against=args.against)


def cmd_mutants(args: argparse.Namespace) -> int:
    return mutants.run(options.mutants_request(args), args.out)


def cmd_bisect(args: argparse.Namespace) -> int:
    return bisect.bisect(options.bisect_request(args), args.out)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    return bisect.bisect_step(options.bisect_request(args), args.out)


def cmd_nightly(args: argparse.Namespace) -> int:
    return nightly.run(options.nightly_request(args), args.out)


def cmd_report(args: argparse.Namespace) -> int:
    """merge: one JUnit, matrix and summary from many jobs; kcidb: KCIDB JSON;
    night: tonight's merged results into the nights the dashboard keeps;
    site: the dashboard of nights (harness/results/dashboard.py)."""
    first = Path(args.dirs[0])
    if args.action == "merge":
        into = args.into or first / "merged"
        print(merge.merge(args.dirs, into, args.date))
        progress(f"merged results: {into}/junit.xml, matrix.html, matrix.txt, summary.txt")
        return 0
    if args.action == "site":
        into = args.into or first / "site"
        status = dashboard.write(args.dirs, into, nights=args.nights,
                                 entries=known.load(args.known_issues or None))
        if status == 0:
            progress(f"dashboard: {into}/index.html")
        return status
    if args.action == "night":
        if len(args.dirs) != 1:
            raise UsageError(f"report night takes one folder, the one report merge wrote "
                             f"(got {len(args.dirs)})")
        dashboard.add_night(first, args.previous, args.keep)
        return 0
    into = args.into or first / "kcidb.json"
    merge.write_kcidb(args.dirs, args.origin, into, known.load(args.known_issues or None))
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
    script = Path(args.drgn_script) if args.drgn_script else None
    source = debug.script_text(script, None) if script else None     # bad input: before a boot
    if args.attach:     # another run's guest: read, never booted nor stopped here
        socket, kernel, modules = debug.running_guest(Path(args.attach))
        return debug.on_guest(socket, kernel, modules, code=args.drgn_code, script=script,
                              source=source, argv=args.drgn_args, offline=args.offline,
                              alive=socket.exists)
    req = options.guest_request(args)
    here = os.getcwd()
    if req.vng_root == "auto" and (req.arch or arches.host()).native:
        req = req.replace(vng_root="host")   # your tools, as vng itself gives them
    if args.rw:
        req = req.replace(rwdir=here)
    with session.booted(req, args.out / "boot") as (prep, guest):
        for local, remote in args.put:
            guest.put(local, remote, local.stat().st_mode & 0o777)

        def where(cmd: str) -> str:
            # virtme-ng's guest sees the host's files: commands run where you are
            return f"cd {shlex.quote(here)} && {cmd}" if prep.boot == "vng" else cmd
        if args.exec is not None:
            res = guest.run(where(args.exec), timeout=args.timeout)
            # A kernel report is the news, whatever the command's own status.
            status = 1 if _show(guest, res) else res.status
            if not args.drgn:
                return status
        if args.drgn:
            assert isinstance(guest, Guest)     # --target is refused with --drgn
            return debug.on_guest(guest.machine.sock_dir / DRGN_QMP, prep.kernel,
                                  prep.modules, code=args.drgn_code, script=script,
                                  source=source, argv=args.drgn_args, offline=args.offline,
                                  alive=guest.alive)
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
    return repro.run(options.repro_request(args), args.out / "repro")


def cmd_debug(args: argparse.Namespace) -> int:
    """drgn on a test's vmcore with its kernel's debug information."""
    if args.command == "":
        raise UsageError("-c needs Python to run, e.g. -c 'page_state(0x1234)'")
    if args.summary and (args.command or args.script):
        raise UsageError("--summary prints the failure's summary: give it without -c or "
                         "a script")
    return debug.run(Path(args.dir), code=args.command, symbols=args.symbols,
                     script=Path(args.script) if args.script else None, argv=args.script_args,
                     summarise=args.summary)


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action is None:
        if args.older_than or args.max_size or args.kind or args.dry_run:
            raise UsageError("--older-than, --max-size, --kind and --dry-run are for "
                             "'kharness cache prune'")
        return cachetool.show(args.verbose)
    max_size = args.max_size
    if max_size is None and args.older_than is None:
        max_size = cachetool.cap() or 0
    return cachetool.prune(older_than=args.older_than, max_size=max_size,
                           kinds=set(args.kind) if args.kind else None, dry_run=args.dry_run)


def cmd_build(args: argparse.Namespace) -> int:
    """A kernel from source, patches and kconfig fragments; prints its spec."""
    series = patches.load(args.patches) if args.patches else None
    k = kbuild.build(kbuild.request(options.source_request(args), args.arch[0], series))
    print(f"build:{k.spec.partition(':')[2]}")
    progress(f"{k.release} ({k.arch}): run the suites with "
             f"'kharness run --kernel {k.spec} --arch {k.arch}'; build: {k.extra['build']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Boot time on each path and command round trip, under each accelerator
    this host has, as figures, never asserted."""
    return bench.run(options.guest_request(args), args.out, paths=args.paths,
                     rounds=args.rounds, commands=args.commands)


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
    "triage": (cmd_triage, "the failures of runs that no known issue explains, grouped by "
                           "signature, each with where it failed and a known-issues entry to "
                           "paste; exit 1 if there are any"),
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
                           "kcidb: write them as KCIDB JSON for KernelCI; site: a static "
                           "dashboard of merged nights"),
    "parse": (cmd_parse, "print the kernel reports in console logs, with syzkaller's titles; "
                         "exit 1 if there are any"),
    "cache": (cmd_cache, "what the cache holds, by kind (-v: every entry); prune: remove "
                         "entries no run holds, least recently used first"),
    "debug": (cmd_debug, "drgn on a failed test's vmcore (its folder under the run's output) "
                         "with the kernel's debug information, fetched on first use"),
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
            p.add_argument("action", choices=("merge", "kcidb", "night", "site"))
            p.add_argument("dirs", nargs="+", metavar="DIR",
                           help="merge, kcidb: job output directories (searched for "
                                "junit.xml); night: the folder report merge wrote; site: "
                                "nights (folders report merge wrote)")
        if name == "triage":
            p.add_argument("runs", nargs="+", metavar="RUN",
                           help="kharness run output directories or JUnit files")
        if name == "compare":
            p.add_argument("runs", nargs=2, metavar="RUN",
                           help="a kharness run output directory or a JUnit file")
        if name == "parse":
            p.add_argument("logs", nargs="+", metavar="LOG",
                           help="console logs or dmesg output; - for stdin")
        if name == "cache":
            p.add_argument("action", nargs="?", choices=("prune",),
                           help="prune: remove entries (default: show the cache)")
        if name == "boot":
            p.add_argument("-c", dest="drgn_code", metavar="CODE",
                           help="with --drgn: run this Python (drgn's globals, "
                                "page_state(pfn)); an expression's value is printed")
            p.add_argument("drgn_script", nargs="?", metavar="SCRIPT",
                           help="with --drgn: a drgn script to run instead of the prompt")
            p.add_argument("drgn_args", nargs="*", default=[], metavar="ARG",
                           help="the script's arguments (after -- if they start with -)")
        if name == "debug":
            p.add_argument("dir", metavar="DIR", help="a test's folder holding a vmcore "
                                                     "(kharness-out/<run>/tests/<test>)")
            p.add_argument("-c", dest="command", metavar="CODE",
                           help="run this Python (drgn's globals, page_state(pfn)); an "
                                "expression's value is printed")
            p.add_argument("--summary", action="store_true",
                           help="print what the vmcore says of the failure: the pages its "
                                "kernel reports name, decoded, with the VMAs that map them, "
                                "and the stacks of its processes and of tasks in D state")
            p.add_argument("--symbols", choices=("auto", "dwarf", "kallsyms"), default="auto",
                           help="auto: the kernel's DWARF where it can be had (Debian's -dbg "
                                "package, fetched once), else kallsyms; kallsyms: no "
                                "download, the symbols and our modules' types")
            p.add_argument("script", nargs="?", metavar="SCRIPT",
                           help="a drgn script to run instead of the prompt")
            p.add_argument("script_args", nargs="*", default=[], metavar="ARG",
                           help="the script's arguments (after -- if they start with -)")
        p.set_defaults(func=func)
    return ap


# `git bisect run` skips a commit on 125 and marks it bad on 1-127: bad
# input to bisect-step must stop the bisection instead (128 and above).
BISECT_ABORT = 128

# Commands whose files lie at the top of --out (a matrix, a report): one at
# a time there. The others claim the folders they write (boot/, repro/, a
# nightly job's), so shards of one night share an --out.
WRITES_ALL_OF_OUT = ("run", "validate", "bisect", "mutants")
# Commands that add kernels, builds or snapshots: the cache cap is kept after them.
FILLS_THE_CACHE = ("run", "build", "validate", "bisect", "mutants", "nightly", "repro",
                   "bench")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser().parse_args(argv)
        args = options.resolve(args.cmd, vars(args))
        if args.cmd in WRITES_ALL_OF_OUT:
            claims.claim(args.out)
        status = args.func(args)
        if args.cmd in FILLS_THE_CACHE and not getattr(args, "list", False):
            cachetool.enforce_cap()     # (nightly --list only reads the matrix)
        return status
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
