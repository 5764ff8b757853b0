"""kharness command line: parse arguments, call the stages, nothing more."""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from harness import arches, session
from harness.errors import KhError
from harness.kernels import DEFAULT_SPEC, validate
from harness.report import matrix
from harness.vm.machine import kill_all

REPO = Path(__file__).resolve().parents[1]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=DEFAULT_SPEC,
                   help=f"debian:<series>, comma-separated for several (default {DEFAULT_SPEC})")
    p.add_argument("--arch", default=arches.host().name, choices=arches.KNOWN)
    p.add_argument("--boot", default="initramfs", choices=session.BOOT_PATHS)
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--cpus", type=int, default=1, help="guest vCPUs (default 1, see README)")
    p.add_argument("--out", default="kharness-out", type=Path, help="output directory")
    p.add_argument("--offline", action="store_true", help="use only cached package lists")


def cmd_run(args) -> int:
    import pytest
    specs = args.kernel.split(",")
    for spec in specs:
        validate(spec)
    worst = 0
    runs = []
    for spec in specs:
        out = args.out / f"{spec.replace(':', '-')}-{args.arch}"
        junit = out / "junit.xml"
        junit.unlink(missing_ok=True)
        runs.append((f"{spec} {args.arch}", junit))
        argv = [str(REPO / "tests" / "kernel"), "-p", "no:cacheprovider", "-q", "-rfE",
                f"--kernel={spec}", f"--arch={args.arch}", f"--boot={args.boot}",
                f"--accel={args.accel}", f"--cpus={args.cpus}", f"--kh-out={out}",
                f"--junitxml={junit}"]
        if args.offline:
            argv.append("--offline")
        if args.k:
            argv += ["-k", args.k]
        print(f"kharness: running the kernel suite on {spec} ({args.arch}, {args.boot})",
              file=sys.stderr)
        rc = pytest.main(argv)
        print(f"kharness: {spec}: {'passed' if rc == 0 else 'FAILED'}; JUnit: {junit}; "
              f"logs: {out}", file=sys.stderr)
        worst = max(worst, int(rc))
    m = matrix.build(runs)
    if m.rows:
        html = args.out / "matrix.html"
        html.write_text(m.html())
        print(m.text())
        print(f"kharness: behaviour matrix: {html}", file=sys.stderr)
    return worst


def _start(args):
    spec = args.kernel.split(",")[0]
    prep = session.prepare(spec, args.arch, boot=args.boot, outdir=args.out / "boot",
                           accel=args.accel, cpus=args.cpus, offline=args.offline)
    return prep, session.start(prep)


def cmd_boot(args) -> int:
    prep, guest = _start(args)
    try:
        if args.exec:
            res = guest.run(args.exec, timeout=args.timeout)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.status
        print(f"kharness: {prep.kernel.release} ready; commands run in the guest "
              f"(Ctrl-D to leave). Console: {guest.machine.console_log}", file=sys.stderr)
        while True:
            try:
                line = input(f"kh:{prep.kernel.release}# ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            if line.strip():
                res = guest.run(line, timeout=args.timeout)
                sys.stdout.write(res.stdout)
                sys.stderr.write(res.stderr)
                if res.status:
                    print(f"[exit {res.status}]", file=sys.stderr)
    finally:
        guest.poweroff()


def cmd_repro(args) -> int:
    """RP: run a command over and over in one boot until the signature shows."""
    from harness import repro
    prep, guest = _start(args)
    cmd = " ".join(args.command)
    try:
        rep = repro.reproduce(guest, cmd, args.signature, rounds=args.rounds,
                              until_hit=args.until_hit, timeout=args.timeout)
    finally:
        guest.poweroff()
    rerun = (f"kharness repro --kernel {args.kernel.split(',')[0]} --arch {args.arch} "
             f"--rounds {args.rounds} --signature {shlex.quote(args.signature)} -- {cmd}")
    text = rep.summary() + (f"\n\n{rep.first.text}" if rep.first else "")
    out = guest.workdir / "repro.txt"
    out.write_text(f"kernel: {prep.kernel.release} ({args.arch})\n{text}\n\nrerun: {rerun}\n")
    print(text)
    for r in rep.others:
        print(f"kharness: other kernel report during the rounds: {r.title}", file=sys.stderr)
    print(f"kharness: rerun with: {rerun}", file=sys.stderr)
    print(f"kharness: reproduction written to {out}; console: {guest.machine.console_log}",
          file=sys.stderr)
    return 0 if rep.hits else 1


def cmd_build(args) -> int:
    """A kernel from source, patches and kconfig fragments; prints its spec."""
    from harness.build import kernel as kbuild
    from harness.kernels import kconfig, patches, source
    req = kbuild.BuildRequest(
        source=source.get(args.source, offline=args.offline), arch=args.arch,
        fragments=kconfig.resolve_fragments(args.config.split(","), args.arch),
        patches=patches.load(args.patches) if args.patches else [],
        patches_spec=args.patches or "", strict_config=args.strict_config,
        jobs=args.jobs, ccache=not args.no_ccache)
    k = kbuild.build(req)
    print(f"build:{k.spec.partition(':')[2]}")
    print(f"kharness: {k.release} ({k.arch}): run the suites with "
          f"'kharness run --kernel {k.spec} --arch {k.arch}'; build: {k.extra['build']}",
          file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    """Boot time on each path and command round trip, as figures, never asserted."""
    spec = args.kernel.split(",")[0]
    print(f"kharness bench: {spec} on {args.arch}, {args.rounds} boots a path")
    for boot in args.paths.split(","):
        prep = session.prepare(spec, args.arch, boot=boot, outdir=args.out / f"bench-{boot}",
                               accel=args.accel, cpus=args.cpus, offline=args.offline)
        boots, trips = [], []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            guest = session.start(prep)
            boots.append(time.monotonic() - t0)
            for _ in range(args.commands):
                trips.append(guest.run("true").seconds)
            guest.poweroff()
        print(f"  {boot:10s} boot to first command: median {statistics.median(boots):.2f}s "
              f"(min {min(boots):.2f}, max {max(boots):.2f}); command round trip: median "
              f"{statistics.median(trips) * 1000:.0f} ms over {len(trips)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kharness",
                                 description="Boot real kernels under QEMU and run the "
                                             "memory-mapping suites against them.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run the kernel suite, write JUnit and logs")
    _common(p)
    p.add_argument("-k", help="pytest -k expression to select tests, e.g. RB2")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("boot", help="boot the guest the tests get and run commands in it")
    _common(p)
    p.add_argument("--exec", help="run this one command and exit with its status")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_boot)
    p = sub.add_parser("build", help="build a kernel from source, patches and kconfig "
                                     "fragments (cached); prints the build:<key> to run")
    p.add_argument("--source", required=True,
                   help="debian-source:<series>, a kernel tree, or a .tar.* of one")
    p.add_argument("--patches", help="an mbox, a directory of format-patch files, or a "
                                     "quilt series file")
    p.add_argument("--config", default="base",
                   help="comma-separated fragments: names in kconfigs/ or paths "
                        "(default: base)")
    p.add_argument("--arch", default=arches.host().name, choices=arches.KNOWN)
    p.add_argument("--strict-config", action="store_true",
                   help="fail if a requested option does not survive olddefconfig")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-ccache", action="store_true")
    p.add_argument("--offline", action="store_true", help="use only cached package lists")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("repro", help="run a guest command in rounds until a kernel report "
                                     "matching --signature appears; report the hit rate")
    _common(p)
    p.add_argument("--signature", required=True,
                   help="part of the report title, e.g. 'WARNING in insert_pfn'")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--until-hit", action="store_true", help="stop at the first hit")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take")
    p.add_argument("command", nargs="+", help="the guest command (after --)")
    p.set_defaults(func=cmd_repro)
    p = sub.add_parser("bench", help="measure boot time and command round trip")
    _common(p)
    p.add_argument("--paths", default=",".join(session.BOOT_PATHS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--commands", type=int, default=20)
    p.set_defaults(func=cmd_bench)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except KhError as e:
        print(f"kharness: error: {e}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"kharness: error: {e.filename} not found: run ci/setup.sh", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kharness: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_all()


if __name__ == "__main__":
    sys.exit(main())
