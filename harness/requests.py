"""Typed requests: what a stage is asked to do, built once from the option
table (harness/options.py) by the command line or the pytest plugin, the
only two places that see argparse or pytest's config.

Fields carry the option table's names (a request's `swap` is `--swap`), so
options.to_argv() spells any request back as the command line that makes
it: every "rerun with" line, bisect-step and nightly's jobs. A suite's
pytest is handed its SuiteRequest itself, as JSON (to_json, from_json).
kunit_tool's KunitBuildRequest/KunitExecRequest are the model; a
kernel build's is kbuild.linux.BuildRequest.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness import arches
from harness.addresses import Access, SshUrl
from harness.arches import Arch

# The guest settings that are MachineSpec fields of the same name (the
# option's, the guest() marker's, the machine's).
MACHINE_FIELDS = ("memory", "append", "numa", "swap", "pmem", "overcommit", "hugepages",
                  "vng_root")

BOOT_PATHS = ("initramfs", "vng")      # how a QEMU guest boots: our initramfs, virtme-ng
# --fresh: which tests share a guest before it is restored anew (the first
# is the default; session.owner() says who owns a guest in each)
FRESH = ("test", "module", "session")


@dataclass(frozen=True)
class GuestRequest:
    """A guest of one kernel and arch (or the --target machine): how it
    boots and the settings of its machine."""
    kernel: str | None                 # a --kernel spec; None: what the target runs
    arch: Arch | None                  # None: the target's
    boot: str = "initramfs"
    vng_root: str = "auto"
    accel: str = "auto"
    cpus: int = 1
    memory: int | None = None
    append: str | None = None
    numa: int | None = None
    swap: int | None = None
    pmem: int | None = None
    overcommit: int | None = None
    hugepages: int | None = None
    offline: bool = False
    target: SshUrl | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    reboot_wait: float | None = None
    rwdir: str = ""                    # boot --rw: the directory the guest may write

    def replace(self, **changes: Any) -> GuestRequest:
        return dataclasses.replace(self, **changes)

    @property
    def access(self) -> Access | None:
        """How to reach the --target, if there is one."""
        if self.target is None:
            return None
        return Access(self.target, self.identity, self.known_hosts, self.accept_new_host_key,
                      self.reboot_wait)

    def machine(self) -> dict[str, Any]:
        """The MachineSpec fields these settings set (the rest keep theirs)."""
        out: dict[str, Any] = {}
        for name in MACHINE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value if name in ("append", "vng_root") else int(value)
        if self.rwdir:
            out["rwdir"] = self.rwdir
        return out


@dataclass(frozen=True)
class SuiteRequest:
    """The kernel suites on some kernels x arches: each job a pytest of its
    own, handed this request (to_json) with its job's kernel, arch and out.
    pytest run by hand makes one from its own options."""
    guest: GuestRequest                # kernel and arch are each job's
    suite: list[str] = field(default_factory=lambda: ["scenarios"])
    k: str | None = None
    parallel: int | None = None
    selftests_source: str | None = None
    fresh: str = FRESH[0]              # a guest restored for each: FRESH
    vmcore: str = "on-failure"         # when a test's guest memory is dumped
    known_issues: list[str] | None = None   # files (None: the shipped one; ["none"])
    strict_known: bool = False         # a known issue not seen fails the run
    rerun_failures: int = 0            # reruns of each failed test, for a flake verdict
    out: Path = Path("kharness-out")   # a pytest session's: where its guests' folders go
    slow: bool = False                 # pytest: also the tests marked slow


@dataclass(frozen=True)
class ReproRequest:
    """A command (or a C reproducer) in rounds until a kernel report whose
    title holds the signature shows: on one guest or -j of them."""
    guest: GuestRequest
    signature: str
    command: list[str]
    rounds: int | None = None          # None: 100, or as many as --for allows
    budget: float | None = None        # --for, seconds
    parallel: int | None = None
    c: Path | None = None
    kmod: Path | None = None
    stress: list[str] | None = None
    until_hit: bool = False
    timeout: float = 120.0
    fresh: str = "session"             # round: also each round in a guest restored anew


@dataclass(frozen=True)
class SourceRequest:
    """A kernel to build from source: the tree, its kconfig fragments and
    a patch series (loaded and checked by the stage that builds)."""
    source: str
    config: list[str] = field(default_factory=lambda: ["base"])
    patches: str | None = None
    strict_config: bool = False
    jobs: int | None = None            # make -j; None: the CPUs
    no_ccache: bool = False
    offline: bool = False


@dataclass(frozen=True)
class BisectRequest:
    """The patch (or git commit) after which -k fails or --signature shows."""
    build: SourceRequest
    suite: SuiteRequest
    arch: Arch
    good: str | None = None
    bad: str | None = None
    signature: str | None = None
    rounds: int = 20


@dataclass(frozen=True)
class MutantsRequest:
    """The clean tree and each mutant patch, built and run through the scenarios."""
    build: SourceRequest
    suite: SuiteRequest
    arch: Arch
    mutants: Path | None = None        # None: the mutants shipped with kharness
    only: list[str] | None = None
    whole_suite: bool = False          # every scenario on each mutant, not only its reach


@dataclass(frozen=True)
class NightlyRequest:
    """The nightly matrix file: its jobs here, one --job, a --shard, or --list."""
    matrix: str
    suite: SuiteRequest
    job: str | None = None
    shard: tuple[int, int] | None = None
    list: bool = False
    json: bool = False


R = TypeVar("R")


def to_json(request: Any) -> str:
    """A request as JSON that from_json() reads back into the same request."""
    return json.dumps(_plain(request), indent=1) + "\n"


def from_json(kind: type[R], text: str) -> R:
    return _typed(kind, json.loads(text))


def _plain(value: Any) -> Any:
    if isinstance(value, Arch):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _typed(kind: Any, value: Any) -> Any:
    """value (from JSON) as the type a request's field declares."""
    if value is None:
        return None
    if isinstance(kind, types.UnionType):           # X | None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    origin = typing.get_origin(kind)
    if origin is list:
        return [_typed(typing.get_args(kind)[0], v) for v in value]
    if origin is tuple:
        return tuple(_typed(k, v) for k, v in zip(typing.get_args(kind), value, strict=True))
    if kind is Arch:
        return arches.get(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _typed(hints[f.name], value[f.name])
                       for f in dataclasses.fields(kind) if f.name in value})
    if kind is Path:
        return Path(value)
    return kind(value)
