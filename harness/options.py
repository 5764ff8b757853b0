"""Every command-line option, once: registered into argparse for the
kharness subcommands and into pytest's parser for the kernel suites
(kunit.py's add_common_opts is the model), and validated in one place.

An option's `parse` turns the text the user gave into a value or raises
UsageError with one line that names the option, what was wrong and what
to give instead. Both front ends keep the raw text and call resolve().
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import re
import shlex
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import addresses, arches, requests, resources
from harness.apt import SERIES
from harness.arches import Arch
from harness.commands import cachetool
from harness.errors import UsageError
from harness.kernels import DEFAULT_SPEC, validate
from harness.requests import (
    BOOT_PATHS,
    FRESH,
    BisectRequest,
    GuestRequest,
    MutantsRequest,
    NightlyRequest,
    ReproRequest,
    SourceRequest,
    SuiteRequest,
)
from harness.results import known
from harness.util import cache_root
from harness.vm.launcher import check_backing
from harness.vm.machine import PMEM_ALIGN, PMEM_LABEL, PMEM_MIN, PMEM_ROOT

ACCELS = ("auto", "kvm", "tcg")
STRESS = ("cpu", "memory")
PYTEST = "pytest"   # the kernel suites under pytest count as a command here


def _whole(name: str, least: int) -> Callable[[str], int]:
    """A whole number of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{name} takes a whole number, not '{text}'") from None
        if value < least:
            raise UsageError(f"{name} must be at least {least}, not {value}")
        return value
    return parse


def _positive_int(name: str) -> Callable[[str], int]:
    return _whole(name, 1)


def _count(name: str) -> Callable[[str], int]:
    return _whole(name, 0)


def _pmem(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise UsageError(f"--pmem takes a whole number of MiB, not '{text}'") from None
    if size < PMEM_MIN:
        raise UsageError(f"--pmem must be at least {PMEM_MIN} (MiB): its four namespaces "
                         f"are whole {PMEM_ALIGN} MiB memory sections, not {size}")
    return size


def _positive_seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} takes seconds, not '{text}'") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name} must be a number of seconds above 0, not {text}")
        return value
    return parse


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise UsageError(f"{name} '{text}' is unknown: use one of {', '.join(choices)}")
        return text
    return parse


def _nonempty(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise UsageError(f"{name} is empty: give a command")
        return text
    return parse


def _list(name: str, one: Callable[[str], Any]) -> Callable[[str], list]:
    """Comma-separated, each checked, none twice."""
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or "" in items:
            raise UsageError(f"{name} has an empty entry in '{text}'")
        dup = sorted({t for t in items if items.count(t) > 1})
        if dup:
            raise UsageError(f"{name} names {', '.join(dup)} twice")
        return [one(t) for t in items]
    return parse


def _outdir(text: str) -> Path:
    """A directory we can make and write; tried now, left as it was. Several
    commands may check one path at once (a CI engine's parallel shards in one
    checkout): one that makes or removes it under another is tried again."""
    path = Path(text).expanduser()
    for attempt in range(10):
        try:
            _try_outdir(text, path)
            return path
        except (FileExistsError, FileNotFoundError) as e:
            why = e
            time.sleep(0.05 * (attempt + 1))
    raise UsageError(f"--out {text}: cannot write there ({why.strerror}): give a "
                     f"writable directory")


def _try_outdir(text: str, path: Path) -> None:
    made = []
    try:
        probe = path
        while not probe.exists():
            made.append(probe)
            probe = probe.parent
        if not stat.S_ISDIR(os.stat(probe).st_mode):   # one look: it may come and go
            raise UsageError(f"--out {text}: {probe} is a file, not a directory: give a "
                             f"directory")
        for p in reversed(made):
            p.mkdir()
        with tempfile.TemporaryFile(dir=path):
            pass
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError as e:
        raise UsageError(f"--out {text}: cannot write there ({e.strerror}): give a "
                         f"writable directory") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 3/12), not '{text}'") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be from 1 to N")
    return i, n


def _put(text: str) -> tuple[Path, str]:
    local, sep, remote = text.rpartition(":")
    if not sep or not local or not remote:
        raise UsageError(f"--put takes LOCAL:GUEST (e.g. ./repro:/tmp/repro), not '{text}'")
    path = Path(local).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(f"--put {text}: {local} is not a readable file")
    return path, remote


def _readable(name: str) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UsageError(f"{name} {text}: not a readable file")
        return path
    return parse


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _known_hosts(text: str) -> Path:
    """A known_hosts file: it may not exist yet (--accept-new-host-key makes
    it), but it cannot be a directory, and its folder must exist."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"--known-hosts {text}: is a directory; give a known_hosts file "
                         f"(e.g. {path / 'known_hosts'})")
    if not path.parent.is_dir():
        raise UsageError(f"--known-hosts {text}: {path.parent} is not a directory")
    if path.exists() and not os.access(path, os.R_OK):
        raise UsageError(f"--known-hosts {text}: not a readable file")
    return path


def _duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--for takes a time above 0 such as 90s, 10m or 1h, not '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _known_issues(text: str) -> str:
    if text != known.NONE:
        known.load([text])      # any mistake: one line with the file's line, now
    return text


def _age(text: str) -> int:
    return cachetool.parse_age(text)


def _size(text: str) -> int:
    return cachetool.parse_size(text)


def _source_spec(name: str) -> Callable[[str], str]:
    """A kernel source named before anything is downloaded: debian-source:
    of a known series, or a tree or tarball that is there."""
    def parse(text: str) -> str:
        kind, _, series = text.partition(":")
        if kind == "debian-source":
            if series not in SERIES:
                raise UsageError(f"{name} {text}: unknown Debian series; known: "
                                 f"{', '.join(SERIES)}")
            return text
        path = Path(text).expanduser()
        if path.is_dir() or (path.is_file() and ".tar" in path.name):
            return str(path.resolve())
        raise UsageError(f"{name} {text}: not a kernel tree, a .tar.* of one, or "
                         f"debian-source:<series>")
    return parse


def _date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"--date {text}: give a date as YYYY-MM-DD") from None


def _kmod_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not (path / "Kbuild").is_file() and not (path / "Makefile").is_file():
        raise UsageError(f"--kmod {text}: no Kbuild or Makefile there: give the folder of "
                         f"an out-of-tree module")
    return path.resolve()


def _kernels(text: str) -> list[str]:
    return _list("--kernel", validate)(text)


def _arches(text: str) -> list[Arch]:
    return _list("--arch", arches.get)(text)


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    commands: tuple[str, ...]
    default: Any = None                # the raw text (or bool for flags)
    parse: Callable[[str], Any] | None = None
    flag: bool = False                 # store_true
    many: bool = False                 # may be given more than once: a list
    per_command: dict[str, Any] = field(default_factory=dict)  # other defaults
    bare: str | None = None            # the value when given with none (--fresh)

    @property
    def spelling(self) -> str:
        """How a command line we write gives it: the first long flag."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0])

    @property
    def dest(self) -> str:
        return self.flags[-1].lstrip("-").replace("-", "_")

    def default_for(self, command: str) -> Any:
        return self.per_command.get(command, self.default)


# What `run --suite` picks: a folder of the kernel suite (tests/kernel/<suite>/),
# or selftests:COLLECTION[,COLLECTION...] (resources.suite_names)
SUITES = resources.SUITES


def _suites(text: str) -> list[str]:
    """--suite: suite names, and selftests:COLLECTION where the collections
    after the first may go without the prefix (selftests:perf_events,vfio)."""
    return resources.suite_names(_list("--suite", str)(text))
VNG_ROOTS = ("auto", "host", "kh")
REPRO_FRESH = ("session", "round")
CACHE_KINDS = cachetool.KIND_NAMES
VMCORE = ("on-failure", "always", "never")
BENCH_PATHS = (*BOOT_PATHS, "snapshot")
GUESTS = ("run", "boot", "repro", "bench", PYTEST)        # boot a --kernel
BUILT = ("validate", "bisect", "bisect-step", "mutants")  # boot kernels they build
SOURCE = ("build", *BUILT)                              # build from --source
SETTINGS = (*GUESTS, *BUILT, "nightly")                 # take the guest settings

TABLE = (
    Option(("--kernel",), f"kernel: debian:<series> or build:<key>; run takes several, "
           f"comma-separated (default {DEFAULT_SPEC}; with --target, the one it runs)",
           GUESTS, None, _kernels),
    Option(("--arch",), f"guest arch: {', '.join(arches.KNOWN)}; run takes several "
           f"(default: this host's, {arches.host()}; with --target, the target's)",
           (*GUESTS, *SOURCE), None, _arches),
    Option(("--target",), "a real machine that already runs the kernel under test, "
           "instead of a QEMU guest: ssh://[user@]host[:port]", GUESTS, None,
           addresses.parse_url),
    Option(("--identity",), "SSH private key for --target (default: ssh-agent and "
           "~/.ssh/id_*)", GUESTS, None, _readable("--identity")),
    Option(("--known-hosts",), "known_hosts file checked (and, with --accept-new-host-key, "
           "added to) besides ~/.ssh/known_hosts", GUESTS, None, _known_hosts),
    Option(("--accept-new-host-key",), "trust the key of a --target seen for the first time "
           "and record it (OpenSSH's accept-new); a changed key is still refused", GUESTS,
           False, flag=True),
    Option(("--reboot-wait",), "seconds to wait for a --target that rebooted or dropped "
           "the connection, then go on with the next test (default: do not wait)", GUESTS,
           None, _positive_seconds("--reboot-wait")),
    Option(("--boot",), f"boot path: {' or '.join(BOOT_PATHS)} (default initramfs)",
           SETTINGS, "initramfs", _choice("--boot", BOOT_PATHS)),
    Option(("--vng-root",), "with --boot vng, the guest's root: host (the host's /, "
           "your tools; host arch only; udev and systemd-tmpfiles run at each boot), kh "
           "(a small root of the guest's arch with the kharness cache and your directory "
           "mounted), auto (default: host for `boot` on the host arch, else kh)",
           SETTINGS, "auto", _choice("--vng-root", VNG_ROOTS)),
    Option(("--accel",), "accelerator: auto (KVM if it boots, else TCG), kvm, tcg",
           SETTINGS, "auto", _choice("--accel", ACCELS)),
    Option(("--cpus",), "guest vCPUs (default 1, see docs/modules.md)", SETTINGS, "1",
           _positive_int("--cpus")),
    Option(("--fresh",), "how often a test's guest is new, restored from the snapshot "
           "of the booted kernel: test (every test), module (every test file), session "
           "(one guest; restored only after a test killed it) (default test, also when "
           "given alone; docs/snapshots.md)", ("run", PYTEST, *BUILT, "nightly"), FRESH[0],
           _choice("--fresh", FRESH), bare=FRESH[0]),
    Option(("--vmcore",), "when a test's guest memory is dumped into its artifacts folder "
           "(QEMU's dump-guest-memory, for drgn or crash): on-failure (default), always, "
           "never (mutants: default never, a dump a failed test of a broken kernel is "
           "gigabytes)", ("run", PYTEST, *BUILT, "nightly"), "on-failure",
           _choice("--vmcore", VMCORE), per_command={"mutants": "never"}),
    Option(("--selftests-source",), "where the upstream mm selftests come from: a kernel "
           "tree, a .tar.* of one, or debian-source:<series> (default: the kernel's own "
           "source)", ("run", PYTEST), None, _source_spec("--selftests-source")),
    Option(("--suite",), f"suites run runs, comma-separated: {', '.join(SUITES)}, or "
           f"selftests:COLLECTION[,COLLECTION...] (the kernel's own selftests of "
           f"{', '.join(resources.COLLECTIONS)}; selftests:mm is mm-selftests) (default "
           f"scenarios)", ("run",), "scenarios", _suites),
    Option(("--memory",), "guest memory in MiB (default 1024)", SETTINGS, None,
           _positive_int("--memory")),
    Option(("--append",), "added to the guest kernel's command line, e.g. "
           "'proc_mem.force_override=always'", SETTINGS, None),
    Option(("--numa",), "guest NUMA nodes (memory split evenly; default 1)", SETTINGS, None,
           _positive_int("--numa")),
    Option(("--swap",), "MiB of swap for the guest, on a virtio disk (default none)",
           SETTINGS, None, _positive_int("--swap")),
    Option(("--pmem",), f"MiB of persistent memory for the guest: an NVDIMM with fs-dax "
           f"(ext4, xfs, mounted under {PMEM_ROOT}) and device-dax namespaces, at least "
           f"{PMEM_MIN} (default none; arm64 guests boot it through UEFI)", SETTINGS, None, _pmem),
    Option(("--overcommit",), "guest vm.overcommit_memory: 0, 1 or 2", SETTINGS, None,
           lambda text: int(_choice("--overcommit", ("0", "1", "2"))(text))),
    Option(("--hugepages",), "guest vm.nr_hugepages", SETTINGS, None,
           _positive_int("--hugepages")),
    Option(("--out",), "output directory for logs, JUnit and reports (default kharness-out)",
           SETTINGS, "kharness-out", _outdir),
    Option(("--offline",), "use only cached package lists", (*SETTINGS, "build"), False,
           flag=True),
    Option(("-k",), "pytest -k expression selecting tests, e.g. RB2",
           ("run", "validate", "bisect", "bisect-step", "mutants")),
    Option(("-j", "--parallel"), "kernel x arch jobs (run, nightly) or guests (repro) side "
           "by side, each a guest of its own (default: run and nightly, what this machine "
           "can hold, a core and 2 GiB a guest; repro, 1)",
           ("run", "nightly", "repro"), None, _positive_int("--parallel")),
    Option(("--against",), "compare with this kernel (debian:<series>, build:<key>) instead "
           "of building the source without the series", ("validate",), None, validate),
    Option(("--good",), "a git revision where the test passes", ("bisect",)),
    Option(("--bad",), "a git revision where it fails", ("bisect",)),
    Option(("--exec",), "run this one command in the guest and exit with its status",
           ("boot",), None, _nonempty("--exec")),
    Option(("--drgn",), "after --exec (if given), drgn on the running guest's memory, read "
           "live over QMP with the kernel's debug information: its prompt, -c CODE or a "
           "SCRIPT [ARG...]; the guest runs on meanwhile", ("boot",), False, flag=True),
    Option(("--attach",), "with --drgn: no boot; drgn on the newest guest still running "
           "under this run's folder (a repro's --out while it runs: the state a race left)",
           ("boot",), None, _nonempty("--attach")),
    Option(("--rw",), "with --boot vng: your working directory (where commands run) is "
           "writable in the guest; read-only otherwise", ("boot",), False, flag=True),
    Option(("--put",), "copy a file into the guest before anything runs: LOCAL:GUEST "
           "(mode kept; may be given again)", ("boot",), None, _put, many=True),
    Option(("--timeout",), "seconds a guest command may take", ("boot", "repro"), "600",
           _positive_seconds("--timeout"), per_command={"repro": "120"}),
    Option(("--signature",), "part of the report title, e.g. 'WARNING in insert_pfn'; for "
           "bisect, a step is bad when it shows", ("repro", "bisect", "bisect-step"), None,
           _nonempty("--signature")),
    Option(("--rounds",), "rounds to run (repro, bisect with --signature) or boots a path "
           "(bench)", ("repro", "bench", "bisect", "bisect-step"), "100",
           _positive_int("--rounds"),
           per_command={"bench": "3", "bisect": "20", "bisect-step": "20", "repro": None}),
    Option(("--for", "--budget"), "repro: run rounds for this long (90s, 10m, 1h) instead of "
           "a count; with --rounds, whichever ends first", ("repro",), None, _duration),
    Option(("--c",), "repro: a C reproducer (syzkaller's repro.c or your own) to compile "
           "statically for the guest and run; the command after -- becomes its arguments",
           ("repro",), None, _readable("--c")),
    Option(("--kmod",), "repro: a folder with an out-of-tree module (Kbuild + sources) "
           "built against the kernel and loaded first", ("repro",), None, _kmod_dir),
    Option(("--stress",), "repro: background load during a second set of rounds, to "
           "compare hit rates with and without: cpu, memory or cpu,memory", ("repro",),
           None, _list("--stress", _choice("--stress", STRESS))),
    Option(("--until-hit",), "stop at the first hit", ("repro",), False, flag=True),
    Option(("--fresh",), "repro: session (default: the rounds one after another in one "
           "guest, the most rounds a second) or round (also every round in a guest restored "
           "from the snapshot, so no round sees another's state; also when given alone)",
           ("repro",), "session", _choice("--fresh", REPRO_FRESH), bare="round"),
    Option(("--paths",), "boot paths to measure, comma-separated: initramfs, vng, snapshot "
           "(guests restored from a snapshot of the initramfs path)", ("bench",),
           ",".join(BOOT_PATHS), _list("--paths", _choice("--paths", BENCH_PATHS))),
    Option(("--commands",), "guest commands timed per boot", ("bench",), "20",
           _positive_int("--commands")),
    Option(("--source",), "debian-source:<series>, a kernel tree, or a .tar.* of one "
           "(mutants: default debian-source:7.2, the tree they are written against)",
           SOURCE, None, per_command={"mutants": "debian-source:7.2"}),
    Option(("--patches",), "an mbox, a directory of format-patch files, or a quilt series "
           "file (mutants: applied under every mutant and the clean tree)", SOURCE),
    Option(("--mutants",), "the folder of mutant patches (default tests/data/mutants of "
           "this checkout)", ("mutants",), None, _path),
    Option(("--only",), "only these mutants (names of their .patch files, comma-separated)",
           ("mutants",), None, _list("--only", str)),
    Option(("--whole-suite",), "run every scenario on each mutant (default: only the families "
           "a mutant's files can reach; a mutant of mm/ runs them all)", ("mutants",), False,
           flag=True),
    Option(("--config",), "comma-separated kconfig fragments: names in kconfigs/ or paths "
           "(default base; mutants: base,debug-vm)", SOURCE, "base", _list("--config", str),
           per_command={"mutants": "base,debug-vm"}),
    Option(("--strict-config",), "fail if a requested option does not survive olddefconfig",
           SOURCE, False, flag=True),
    Option(("-j", "--jobs"), "make jobs (default: the number of CPUs)", SOURCE, None,
           _positive_int("--jobs")),
    Option(("--no-ccache",), "build without ccache", SOURCE, False, flag=True),
    Option(("--json",), "JSON for machines", ("parse", "nightly"), False, flag=True),
    Option(("--list",), "print the matrix's job ids and stop", ("nightly",), False, flag=True),
    Option(("--known-issues",), "a known-issues file (docs/known-issues.md); repeatable; "
           "default the shipped ci/known-issues.toml; 'none' for none. A failure an entry "
           "explains is known (skipped in JUnit with the entry's id), not a failure",
           ("run", PYTEST, "nightly", "compare", "triage", "report", *BUILT), None, _known_issues,
           many=True),
    Option(("--rerun-failures",), "run each failed test N more times, each in a guest "
           "restored from the snapshot, for a verdict: deterministic, flaky (with the 95%% "
           "interval of its fail rate) or passed on rerun (default 0)",
           ("run", PYTEST, "nightly", *BUILT), "0", _count("--rerun-failures")),
    Option(("--strict-known",), "a test a known issue expects to fail that passed (the bug "
           "may be fixed: 'not seen') fails the run", ("run", PYTEST, "nightly", *BUILT),
           False, flag=True),
    Option(("-v", "--verbose"), "cache: every entry with its size, what it is and when a run "
           "last used it", ("cache",), False, flag=True),
    Option(("--older-than",), "cache prune: entries no run used for this long (12h, 7d, 2w)",
           ("cache",), None, _age),
    Option(("--max-size",), "cache prune: least recently used entries until the cache is "
           "this size (500M, 20G); prune alone: KHARNESS_CACHE_MAX", ("cache",), None,
           _size),
    Option(("--kind",), f"cache prune: only entries of these kinds, comma-separated "
           f"({', '.join(CACHE_KINDS)}; ccache only when named)", ("cache",), None,
           _list("--kind", _choice("--kind", CACHE_KINDS))),
    Option(("--dry-run",), "cache prune: say what would go, remove nothing", ("cache",),
           False, flag=True),
    Option(("--job",), "run only these jobs of the matrix (ids, comma-separated)",
           ("nightly",)),
    Option(("--shard",), "run the I-th of N equal shares of the matrix's jobs (I/N, from 1): "
           "what a CI job of a parallel: N pipeline runs", ("nightly",), None, _shard),
    Option(("--origin",), "the KCIDB origin name results are submitted under",
           ("report",), "kharness"),
    Option(("--into",), "where merge writes (default: <first DIR>/merged), kcidb writes "
           "(default: <first DIR>/kcidb.json) or site writes (default: <first DIR>/site)",
           ("report",), None, Path),
    Option(("--date",), "merge: the night's date, YYYY-MM-DD (default: the day its first "
           "job started, UTC)", ("report",), None, _date),
    Option(("--nights",), "site: the history strips and race plots cover this many nights "
           "(default 30)", ("report",), "30", _positive_int("--nights")),
    Option(("--previous",), "night: the folder of nights the last night's artifact carried "
           "(absent on the first night: none carried)", ("report",), None, Path),
    Option(("--keep",), "night: how many nights to keep, the newest (default 90)",
           ("report",), "90", _positive_int("--keep")),
    Option(("--slow",), "also run tests marked slow (kernel builds from source, tens of "
           "minutes)", (PYTEST,), False, flag=True),
)

REQUIRED = {("repro", "signature"), *((c, "source") for c in SOURCE if c != "mutants"),
            ("validate", "patches"),
            ("bisect", "source")}


def options_for(command: str) -> list[Option]:
    return [o for o in TABLE if command in o.commands]


def add_to_argparse(parser: argparse.ArgumentParser, command: str) -> None:
    for o in options_for(command):
        required = (command, o.dest) in REQUIRED
        if o.flag:
            parser.add_argument(*o.flags, action="store_true", help=o.help)
        elif o.many:
            parser.add_argument(*o.flags, dest=o.dest, action="append", help=o.help)
        else:
            bare = {"nargs": "?", "const": o.bare} if o.bare is not None else {}
            parser.add_argument(*o.flags, dest=o.dest, default=o.default_for(command),
                                required=required, help=o.help, **bare)


REQUEST = "--kh-request"   # the one option `kharness run` gives a suite's pytest


def add_to_pytest(group: Any) -> None:
    """Register into a pytest OptionGroup (parser.getgroup(...))."""
    group.addoption(REQUEST, dest="kh_request", default=None, help=argparse.SUPPRESS)
    for o in options_for(PYTEST):
        if o.flag:
            group.addoption(*o.flags, dest=f"kh_{o.dest}", action="store_true", help=o.help)
        elif o.many:
            group.addoption(*o.flags, dest=f"kh_{o.dest}", action="append", help=o.help)
        else:
            bare = {"nargs": "?", "const": o.bare} if o.bare is not None else {}
            group.addoption(*o.flags, dest=f"kh_{o.dest}", default=o.default_for(PYTEST),
                            help=o.help, **bare)


def from_pytest(config: Any) -> SuiteRequest:
    """The session's request: the one `kharness run` wrote for it (REQUEST),
    or made from pytest's own options, parsed and checked."""
    path = config.getoption("kh_request")
    if path is not None:
        given = [o.spelling for o in options_for(PYTEST) if config.getoption(f"kh_{o.dest}")
                 not in (None, False, [], o.default_for(PYTEST))]
        if given:
            raise UsageError(f"{REQUEST} is the whole request: give {', '.join(given)} "
                             f"to kharness run, not beside it")
        try:
            return requests.from_json(SuiteRequest, Path(path).read_text())
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise UsageError(f"{REQUEST} {path}: not a request kharness run wrote ({e}); "
                             f"run the suite with kharness run, or pytest with its own "
                             f"options") from None
    ns = resolve(PYTEST, {o.dest: config.getoption(f"kh_{o.dest}")
                          for o in options_for(PYTEST)})
    return suite_request(ns, out=ns.out, slow=ns.slow)


def resolve(command: str, raw: dict[str, Any]) -> argparse.Namespace:
    """Parse and check the raw values of a command's options: one UsageError
    for the first one that is wrong, nothing started before it."""
    ns = argparse.Namespace(**raw)
    for o in options_for(command):
        value = raw.get(o.dest)
        if isinstance(value, str) and o.parse is not None:
            value = o.parse(value)
        elif o.many and o.parse is not None:
            value = [o.parse(v) for v in value or []]
        setattr(ns, o.dest, value)
    _check(command, ns)
    return ns


SSH_ONLY = ("identity", "known_hosts", "accept_new_host_key", "reboot_wait")


def _check_repro(ns: argparse.Namespace) -> None:
    if getattr(ns, "target", None) is not None and (ns.parallel or 1) > 1:
        raise UsageError("repro -j runs several QEMU guests; a --target is one machine: "
                         "drop -j or --target")
    if ns.fresh == "round" and getattr(ns, "target", None) is not None:
        raise UsageError("repro --fresh restores a QEMU guest from its snapshot for each "
                         "round; a --target is a real machine: drop --fresh or --target")
    if not ns.command and ns.c is None:
        raise UsageError("repro needs a command after -- or a reproducer with --c FILE")


def _check(command: str, ns: argparse.Namespace) -> None:
    """What no single option's parser can see: options that need others,
    how many kernels and arches a command takes, what an arch allows.
    Fills in the kernel and arch defaults (none with a --target)."""
    _check_boot(ns)
    target = getattr(ns, "target", None)
    for dest in SSH_ONLY:
        if getattr(ns, dest, None) and target is None:
            raise UsageError(f"--{dest.replace('_', '-')} is for SSH targets: give "
                             f"--target ssh://user@host too")
    if target is not None and max(len(ns.kernel or []), len(ns.arch or [])) > 1:
        raise UsageError("--target runs the kernel the machine runs: give at most one "
                         "--kernel and one --arch")
    if command == "repro":
        _check_repro(ns)
    if hasattr(ns, "arch") and ns.arch is None:
        ns.arch = [] if target else [arches.host()]
    if hasattr(ns, "kernel") and ns.kernel is None:
        ns.kernel = [] if target else [DEFAULT_SPEC]
    archs = ns.arch if isinstance(getattr(ns, "arch", None), list) else []
    if command not in ("run", "validate") and len(archs) > 1:
        raise UsageError(f"{command} takes one --arch, not {len(archs)}")
    if getattr(ns, "kernel", None) and command != "run" and len(ns.kernel) > 1:
        raise UsageError(f"{command} boots one kernel: give one --kernel, not "
                         f"{', '.join(ns.kernel)}")
    if getattr(ns, "cpus", None) is not None:      # a command that boots guests
        for arch in archs:
            _check_guest_arch(ns, arch)
    issues = getattr(ns, "known_issues", None) or []
    if known.NONE in issues and len(issues) > 1:
        raise UsageError(f"--known-issues {known.NONE} means no file: give it alone")
    if getattr(ns, "pmem", None) and target is None:
        # The NVDIMM's file is made in each guest's folder under --out: a
        # size the disk cannot hold is bad input now, not a failed boot later.
        check_backing(getattr(ns, "out", None) or Path("kharness-out"),
                      (ns.pmem << 20) + PMEM_LABEL, "--pmem")


def _check_boot(ns: argparse.Namespace) -> None:
    """--rw and --vng-root belong to virtme-ng; --attach, -c and a script to --drgn."""
    drgn = getattr(ns, "drgn", False)
    for given, what in ((getattr(ns, "attach", None), "--attach"),
                        (getattr(ns, "drgn_code", None), "-c"),
                        (getattr(ns, "drgn_script", None), "a script")):
        if given and not drgn:
            raise UsageError(f"{what} is for drgn on the guest: give --drgn too")
    if drgn and getattr(ns, "target", None) is not None:
        raise UsageError("--drgn reads a QEMU guest's memory over QMP; an SSH target has "
                         "none to give: drop --target, or run drgn on the machine itself")
    if drgn and getattr(ns, "drgn_code", None) and getattr(ns, "drgn_script", None):
        raise UsageError("--drgn runs -c CODE or a script, not both")
    if getattr(ns, "drgn_code", None) == "":
        raise UsageError("-c needs Python to run, e.g. -c 'prog[\"jiffies\"]'")
    if getattr(ns, "attach", None) and getattr(ns, "exec", None) is not None:
        raise UsageError("--attach looks at a guest another run started: --exec would "
                         "run in it behind that run's back; drop --exec")
    if getattr(ns, "rw", False) and ns.boot != "vng":
        raise UsageError("--rw makes your working directory writable in a virtme-ng guest: "
                         "give --boot vng too")
    vng = getattr(ns, "boot", None) == "vng" or "vng" in (getattr(ns, "paths", None) or [])
    if getattr(ns, "vng_root", "auto") != "auto" and not vng:
        raise UsageError(f"--vng-root {ns.vng_root} is the root of a virtme-ng guest: "
                         f"give --boot vng too (bench: --paths with vng)")
    if vng:
        _check_vng_paths(ns)


# virtme-ng runs its QEMU through a shell, its options joined by spaces
# and its folders given as SRC=DST: a path it is given must be plain.
VNG_PATH = re.compile(r"[A-Za-z0-9._/+@%:~-]*")


def _check_vng_paths(ns: argparse.Namespace) -> None:
    out = getattr(ns, "out", None)
    for what, path in (("--out", out.absolute() if out else None),
                       ("TMPDIR", tempfile.gettempdir()), ("KHARNESS_CACHE", cache_root()),
                       ("the working directory", os.getcwd())):
        if path is not None and not VNG_PATH.fullmatch(str(path)):
            raise UsageError(f"--boot vng: {what} {str(path)!r} has characters virtme-ng "
                             f"cannot pass through its shell (it takes letters, digits and "
                             f"._/+@%:~-): use a plainer path, or --boot initramfs")


def _check_guest_arch(ns: argparse.Namespace, arch: Arch) -> None:
    """What a guest of this arch can be given on this host."""
    if ns.cpus > arch.max_cpus:
        raise UsageError(f"--cpus {ns.cpus} is more than {arch}'s machine takes "
                         f"({arch.max_cpus})")
    if getattr(ns, "vng_root", "") == "host" and not arch.native:
        raise UsageError(f"--vng-root host serves the host's root filesystem, which "
                         f"cannot run an {arch} guest: use --vng-root kh (or auto)")
    if ns.accel == "kvm" and not arch.native:
        raise UsageError(f"--accel kvm cannot run an {arch} guest on this "
                         f"{arches.host()} host: use --accel tcg or auto")


def guest_request(ns: Any, **override: Any) -> GuestRequest:
    """The GuestRequest of a resolved command (its one --kernel and --arch,
    None where the --target decides); override changes fields."""
    kernel = getattr(ns, "kernel", None)
    arch = getattr(ns, "arch", None)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(GuestRequest)
              if hasattr(ns, f.name) and f.name not in ("kernel", "arch")}
    values = {"kernel": kernel[0] if kernel else None, "arch": arch[0] if arch else None,
              **{k: v for k, v in values.items() if v is not None}}
    return GuestRequest(**{**values, **override})


def suite_request(ns: Any, **override: Any) -> SuiteRequest:
    """The SuiteRequest of a resolved command: its guest options and the
    suite's selection (commands without a --suite run `all` of it, except
    mutants: its kernels are judged by the scenarios); an option the
    command lacks keeps the request's default."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(SuiteRequest)
              if f.name not in ("guest", "out", "slow") and getattr(ns, f.name, None) is not None}
    values["suite"] = values.get("suite") or ["all"]
    return SuiteRequest(guest_request(ns), **{**values, **override})


def source_request(ns: Any, **override: Any) -> SourceRequest:
    """The build options of a command (--source, --config, --patches, ...);
    the ones it lacks take their defaults."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(SourceRequest)
              if getattr(ns, f.name, None) is not None}
    return SourceRequest(**{**values, **override})


def bisect_request(ns: Any) -> BisectRequest:
    return BisectRequest(source_request(ns), suite_request(ns), ns.arch[0],
                         good=getattr(ns, "good", None), bad=getattr(ns, "bad", None),
                         signature=ns.signature, rounds=ns.rounds)


def mutants_request(ns: Any) -> MutantsRequest:
    return MutantsRequest(source_request(ns), suite_request(ns, suite=["scenarios"]),
                          ns.arch[0], mutants=ns.mutants, only=ns.only,
                          whole_suite=ns.whole_suite)


def nightly_request(ns: Any) -> NightlyRequest:
    return NightlyRequest(ns.matrix, suite_request(ns), job=ns.job, shard=ns.shard,
                          list=ns.list, json=ns.json)


def repro_request(ns: Any) -> ReproRequest:
    return ReproRequest(guest_request(ns), signature=ns.signature, command=list(ns.command),
                        rounds=ns.rounds, budget=ns.budget, parallel=ns.parallel, c=ns.c,
                        kmod=ns.kmod, stress=ns.stress, until_hit=ns.until_hit,
                        timeout=ns.timeout, fresh=ns.fresh)


def text_of(value: Any) -> str:
    """A parsed value as the text that parses to it again."""
    if isinstance(value, list):
        return ",".join(map(text_of, value))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        return f"{value[0]}/{value[1]}"        # --shard I/N
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"        # --put LOCAL:GUEST
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def value_of(values: Any, dest: str) -> Any:
    """An option's value in a Namespace or a request, or in a request inside
    it (a SuiteRequest's guest, a BisectRequest's build); None if none has it."""
    if hasattr(values, dest):
        return getattr(values, dest)
    if dataclasses.is_dataclass(values):
        for f in dataclasses.fields(values):
            inner = getattr(values, f.name)
            if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
                found = value_of(inner, dest)
                if found is not None:
                    return found
    return None


def to_argv(command: str, values: Any, *, always: tuple[str, ...] = (),
            only: tuple[str, ...] | None = None, **override: Any) -> list[str]:
    """The command line (without the command's name) that gives `command`
    these option values: the one way a command is spelt back, for every
    "rerun with" line, bisect-step and nightly's jobs.
    values is a resolved Namespace or a request (its fields, then its
    guest's; an option neither has is left out); override replaces some. An
    option at its default is left out unless named in always; only, if
    given, limits the options to those dests."""
    out: list[str] = []
    for o in options_for(command):
        if only is not None and o.dest not in only:
            continue
        value = override[o.dest] if o.dest in override else value_of(values, o.dest)
        if value is None or value == [] or value is False:
            continue
        flag = o.spelling
        if o.flag:
            out.append(flag)
        elif o.many:
            out += [f"{flag}={text_of(v)}" for v in value]
        elif o.dest in always or text_of(value) != text_of(o.default_for(command)):
            # --long=value; a short option as two words (-k RB2), as people write it
            out += [f"{flag}={text_of(value)}"] if flag.startswith("--") else \
                [flag, text_of(value)]
    return out


def rerun(command: str, values: Any, positional: list[str] | None = None,
          **override: Any) -> str:
    """The "rerun with" line: the command as given, kernel and arch spelt
    out even where they were defaults, so it reproduces the run exactly."""
    tail = ["--", *positional] if positional else []
    return shlex.join(["kharness", command, *to_argv(command, values,
                                                     always=("kernel", "arch", "signature"),
                                                     **override), *tail])


def to_pytest_argv(req: SuiteRequest, path: Path) -> list[str]:
    """The request a suite's pytest runs, written to path, as its arguments."""
    path.write_text(requests.to_json(req))
    return [f"{REQUEST}={path}"]
