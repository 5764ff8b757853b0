"""The kernel's own mm selftests, run in a guest (or on a --target) with a
kernel log window each, their KTAP turned into one result a subtest.

CATALOGUE says what runs and what guest each needs; selftests_for() finds
the source of the kernel under test and builds from it (kbuild/selftests);
run() runs one catalogue entry and judges it the way kselftest's runner.sh
does (exit 0 pass, 4 skip, anything else fail), plus what the kernel said.
A kselftest_harness binary (FIXTURE/TEST) is listed with -l and each of its
tests run alone with -r, so a kernel report lands on the subtest that made
it; other binaries get one window for the whole run.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from harness import resources
from harness.errors import UsageError
from harness.guest import Target
from harness.kbuild import selftests as build
from harness.kbuild import source
from harness.kbuild.selftests import Selftests
from harness.kernel import Kernel
from harness.observe import ktap, reports
from harness.observe.ktap import FAIL, PASS, SKIP
from harness.util import progress

GUEST_DIR = "kh-selftests"     # under the guest's command directory
KSFT_SKIP = 4


@dataclass(frozen=True)
class Selftest:
    """One catalogue entry: a binary of a collection (its folder under
    tools/testing/selftests), its arguments, the guest it needs."""
    binary: str
    device: str = ""                    # run against this device (pfnmap's -- FILE)
    guest: dict = field(default_factory=dict, hash=False)  # MachineSpec settings
    config: tuple[str, ...] = ()        # kernel options without which it is a skip
    why: str = ""                       # why it needs its guest settings
    collection: str = "mm"
    label: str = ""                     # the device's name in the id, if not its file's
    # A PCI device the test drives: "vfio" QEMU's edu bound to vfio-pci (its
    # BDF in VFIO_SELFTESTS_BDF), "free" the ivshmem device taken from
    # kh_mixedmap for the time (its BAR's sysfs file is {bdf} in device)
    pci: str = ""
    # Subtests whose name holds the word need the option: a skip naming it
    # where the kernel lacks it (the rest of the binary still runs)
    subtest_config: tuple[tuple[str, str], ...] = ()
    beside: str = ""                    # the scenario of the same driver (the matrix's row)

    @property
    def id(self) -> str:
        name = self.binary
        if self.device:
            name += f"@{self.label or self.device.rsplit('/', 1)[-1]}"
        return name if self.collection == "mm" else f"{self.collection}:{name}"

    @property
    def args(self) -> list[str]:
        return ["--", self.device] if self.device else []


# Swap for cow's swap-out cases (MADV_PAGEOUT must reach a swap device),
# free huge pages for cow's and uffd-unit-tests' hugetlb cases: one guest.
SWAP = {"swap": 256, "hugepages": 32}
VFIO = {"viommu": True, "hugepages": 8}
CATALOGUE = [
    Selftest("pfnmap", beside="DM1"),                     # /dev/mem's first RAM page
    Selftest("pfnmap", device="/dev/kh_ringbuf_pfnmap", beside="RB1"),  # pages
    Selftest("pfnmap", device="/dev/kh_mixedmap_pfnmap", beside="MX2"),  # a PCI BAR
    # the PCI core's own mapping of a BAR no driver holds (a held one is
    # exclusive under IO_STRICT_DEVMEM: EINVAL)
    Selftest("pfnmap", device="/sys/bus/pci/devices/{bdf}/resource2", label="pci-resource2",
             pci="free", beside="VF1"),
    Selftest("madv_populate"),
    Selftest("map_populate"),
    Selftest("merge"),
    Selftest("guard-regions"),
    Selftest("mkdirty", guest={"append": "proc_mem.force_override=always"},
             why="writes through /proc/self/mem, which Debian's 7.2 refuses by default"),
    Selftest("mremap_test", guest={"overcommit": 1},
             why="maps 2 GB regions in a guest of 1 GB"),
    Selftest("gup_longterm"),
    Selftest("gup_test", config=("CONFIG_GUP_TEST",)),
    Selftest("cow", guest=SWAP, why="swaps pages out with MADV_PAGEOUT; hugetlb cases "
             "need free huge pages"),
    Selftest("pagemap_ioctl"),
    Selftest("rmap", guest={"numa": 2, "memory": 1024},
             why="migrates folios between two NUMA nodes"),
    Selftest("uffd-unit-tests", guest=SWAP, why="hugetlb cases need free huge pages"),
    # The ring buffer and AUX area of perf (the "map pages in advance" threads)
    *(Selftest(b, collection="perf_events", config=("CONFIG_PERF_EVENTS",), beside="RB7")
      for b in ("mmap", "remove_on_exec", "sigtrap_threads", "watermark_signal")),
    Selftest("udmabuf", collection="drivers/dma-buf", config=("CONFIG_UDMABUF",), beside="UD1",
             guest={"memory": 3072, "hugepages": 1024},
             why="its last case maps a memfd of 1024 2 MiB huge pages"),
    # vfio-pci on the ivshmem BAR behind the guest's virtual IOMMU
    # (Debian builds no IOMMUFD: the tests of it, and those that default to it, skip)
    Selftest("vfio_pci_device_test", collection="vfio", pci="vfio", guest=VFIO, beside="VF1",
             config=("CONFIG_IOMMUFD",), why="vfio-pci needs an IOMMU"),
    Selftest("vfio_iommufd_setup_test", collection="vfio", pci="vfio", guest=VFIO, beside="VF1",
             config=("CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV"), why="vfio-pci needs an IOMMU"),
    *(Selftest(b, collection="vfio", pci="vfio", guest=VFIO, beside="VF1",
               why="vfio-pci needs an IOMMU; "
               "the hugetlb cases map 2 MiB huge pages (1 GiB ones: none to give)",
               subtest_config=(("iommufd", "CONFIG_IOMMUFD"),))
      for b in ("vfio_dma_mapping_test", "vfio_dma_mapping_mmio_test")),
]
COLLECTIONS = resources.COLLECTIONS
assert {t.collection for t in CATALOGUE} == set(COLLECTIONS), "resources.COLLECTIONS is stale"


def binaries(collection: str) -> list[str]:
    return sorted({t.binary for t in CATALOGUE if t.collection == collection})


def source_for(kernel: Kernel, override: str | None = None, *,
               offline: bool = False) -> source.SourceTree:
    """The selftests' source: the user's, or the kernel's own (Debian's
    linux-source of the series, a build's patched tree)."""
    if override:
        return source.get(override, offline=offline)
    kind, _, rest = kernel.spec.partition(":")
    if kind == "build":
        src = Path(kernel.extra.get("build", "")) / "src"
        if not (src / "Makefile").exists():
            raise UsageError(f"the source of {kernel.spec} is gone from {src}: give "
                             f"--selftests-source")
        return source.SourceTree(f"{kernel.spec} source", src, f"build {kernel.spec}")
    if kind == "debian":
        rest = kernel.debian_series
        tree = source.get(f"debian-source:{rest}", offline=offline)
        version = tree.identity.rsplit(" ", 1)[-1]
        if f"={version}" not in kernel.source:
            progress(f"warning: linux-source-{rest} is {version}; the kernel's packages are "
                     f"{kernel.source.split(', ')[0]}: selftests may not match")
        return tree
    raise UsageError(f"no source known for {kernel.spec}: give --selftests-source")


def selftests_for(kernel: Kernel, override: str | None = None, *, offline: bool = False,
                  collection: str = "mm") -> Selftests:
    return build.build(source_for(kernel, override, offline=offline), kernel.arch,
                       binaries(collection), collection)


@dataclass
class Subtest:
    name: str
    status: str                         # ktap's PASS, FAIL, SKIP, XFAIL, XPASS, ERROR
    reason: str = ""
    output: str = ""
    reports: list[reports.Report] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Outcome:
    """One catalogue entry's run: runner.sh's verdict and the subtests."""
    test: Selftest
    verdict: str                        # PASS, FAIL or SKIP
    why: str = ""
    subtests: list[Subtest] = field(default_factory=list)
    output: str = ""                    # what the binary printed (all runs)
    reports: list[reports.Report] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.subtests:
            out[s.status] = out.get(s.status, 0) + 1
        return out


def install(target: Target, tests: Selftests, binary: str) -> str:
    """The binary in the guest, put there once a guest; its guest path."""
    dest = f"{GUEST_DIR}/{tests.collection.replace('/', '-')}/{binary}"
    if target.run(["test", "-x", dest]).status != 0:
        target.put(tests.path(binary), dest, 0o755)
    return dest


def _exit_text(status: int, seconds: float, timeout: int) -> str:
    if status == 128 + signal.SIGKILL and seconds >= timeout - 1:
        return f"timed out after {timeout}s (the suite's settings)"
    if status > 128:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            name = f"signal {status - 128}"
        return f"killed by {name}"
    return f"exit status {status}"


def _env(env: dict[str, str]) -> list[str]:
    """The words that run a guest command with these variables set."""
    return ["env", *(f"{k}={v}" for k, v in env.items())]


def _one(target: Target, cmd: list[str], timeout: int,
         env: dict[str, str]) -> tuple[int, str, str, float]:
    """Run under the guest's timeout; status, output, kernel log, seconds."""
    target.dmesg_window()
    res = target.run([*_env(env), "timeout", "-s", "KILL", str(timeout), *cmd],
                     timeout=timeout + 60)
    log = target.dmesg_window()
    return res.status, res.stdout + res.stderr, log, res.seconds


def run(target: Target, tests: Selftests, test: Selftest, *, bdf: str = "",
        lacking: Collection[str] = ()) -> Outcome:
    """One catalogue entry; bdf: the PCI device it drives (Selftest.pci);
    lacking: kernel options it lacks, whose subtests (subtest_config) skip."""
    path = install(target, tests, test.binary)
    env = {"VFIO_SELFTESTS_BDF": bdf} if test.pci == "vfio" else {}
    args = [a.format(bdf=bdf) for a in test.args]
    if test.binary in tests.harness:
        return _run_harness(target, tests, test, path, args, env, lacking)
    return _run_plain(target, tests, test, path, args, env)


def _lacks(test: Selftest, lacking: Collection[str], name: str) -> str:
    """Why the kernel cannot run this subtest, or ""."""
    return next((f"needs {option}, which the kernel lacks" for word, option
                 in test.subtest_config if word in name and option in lacking), "")


def _subtests(parsed: ktap.Run) -> list[Subtest]:
    return [Subtest(c.name, c.status, c.reason, "\n".join(c.output)) for c in parsed.cases]


def _run_plain(target: Target, tests: Selftests, test: Selftest, path: str, args: list[str],
               env: dict[str, str], select: tuple[str, ...] | list[str] = ()) -> Outcome:
    status, out, log, seconds = _one(target, [path, *select, *args], tests.timeout, env)
    parsed = ktap.parse(out)
    found = reports.parse(log)
    outcome = Outcome(test, PASS, subtests=_subtests(parsed), output=out, reports=found,
                      seconds=seconds)
    return judge(outcome, status, parsed, tests.timeout)


def judge(o: Outcome, status: int, parsed: ktap.Run, timeout: int) -> Outcome:
    """runner.sh's verdict on one binary run, then what the kernel said."""
    failed = [s.name for s in o.subtests if s.status in (FAIL, ktap.ERROR)]
    if status > 128:
        o.verdict, o.why = FAIL, _exit_text(status, o.seconds, timeout)
        if o.subtests:
            o.why += f" after {len(o.subtests)} results (last: {o.subtests[-1].name})"
    elif parsed.problems and not parsed.skip_all:
        o.verdict, o.why = FAIL, "; ".join(parsed.problems)
    elif parsed.skip_all is not None:
        o.verdict, o.why = SKIP, parsed.skip_all
    elif status == KSFT_SKIP and not failed:
        o.verdict = SKIP
        o.why = next((s.reason for s in o.subtests if s.status == SKIP and s.reason), "") \
            or ktap.reason_from(parsed.tail) or "the binary skipped (exit 4)"
    elif status != 0 or failed:
        o.verdict = FAIL
        o.why = f"{_exit_text(status, o.seconds, timeout)}; {len(failed)} failed" + \
            (f": {', '.join(failed[:5])}" + (" ..." if len(failed) > 5 else "") if failed else "")
    if o.reports:
        o.verdict = FAIL
        titles = "; ".join(r.title for r in o.reports)
        o.why = f"kernel report: {titles}" + (f" ({o.why})" if o.why else "")
    return o


def _run_harness(target: Target, tests: Selftests, test: Selftest, path: str, args: list[str],
                 env: dict[str, str], lacking: Collection[str] = ()) -> Outcome:
    """Each FIXTURE/TEST alone (-r), with its own kernel log window, judged
    as a binary run of its own."""
    # With its arguments: pfnmap checks its file before it lists, and a
    # file it cannot map is "1..0 # SKIP" on stdout instead of the table.
    listing = target.run([*_env(env), path, "-l", *args], timeout=60)
    names = ktap.listed(listing.stderr) if "# FIXTURE" in listing.stderr else []
    if not names:   # skipped before listing, or a harness without -l: one run
        return _run_plain(target, tests, test, path, args, env)
    outcome, texts, t0 = Outcome(test, PASS), [], time.monotonic()
    for name in names:
        if why := _lacks(test, lacking, name):
            outcome.subtests.append(Subtest(name, SKIP, why))
            continue
        one = _run_plain(target, tests, test, path, args, env, ["-r", name])
        texts.append(one.output)
        case = one.subtests[0] if len(one.subtests) == 1 else None
        if case is not None and not one.reports and (one.verdict != FAIL or case.status == FAIL):
            # The harness's assertion messages go to stderr, after the result.
            reason = case.reason or _stderr_reason(one.output)
            sub = Subtest(name, case.status, reason, one.output, [], one.seconds)
        else:   # no result, a crash, a kernel report: the run's verdict is the subtest's
            said = f" (the test said {case.status})" if case is not None else ""
            sub = Subtest(name, one.verdict, one.why + said, one.output, one.reports,
                          one.seconds)
        outcome.subtests.append(sub)
        outcome.reports += one.reports
    outcome.output = "\n".join(texts)
    outcome.seconds = time.monotonic() - t0
    failed = [s.name for s in outcome.subtests if s.status in (FAIL, ktap.ERROR)]
    if failed:
        outcome.verdict = FAIL
        outcome.why = f"{len(failed)} failed: {', '.join(failed[:5])}" + \
            (" ..." if len(failed) > 5 else "")
    elif all(s.status == SKIP for s in outcome.subtests):
        outcome.verdict, outcome.why = SKIP, outcome.subtests[0].reason
    return outcome


def _stderr_reason(output: str) -> str:
    """What a kselftest_harness test printed after its result (its
    assertion messages go to stderr), for a failure's reason."""
    after = output.split("# Totals:", 1)[1].splitlines()[1:] if "# Totals:" in output else []
    return "; ".join(ln.lstrip("# ").strip() for ln in after if ln.strip())[:300]


def summary(o: Outcome) -> str:
    c = o.counts()
    parts = [f"{n} {k}" for k, n in sorted(c.items())]
    return f"{o.test.id}: {o.verdict}" + (f" ({', '.join(parts)})" if parts else "") + \
        f" in {o.seconds:.1f}s" + (f": {o.why}" if o.why else "")


def subtest_name(sub: Subtest) -> str:
    """A subtest's id: the name it printed, whitespace tidied, without a
    verdict printed in it (udmabuf's "[PASS,test-1]" and "[FAIL,test-1]" are
    one subtest, "[test-1]", night after night)."""
    name = re.sub(r"\[(?:PASS|FAIL|SKIP|skip|XFAIL),\s*", "[", sub.name)
    return re.sub(r"\s+", " ", name).strip()
