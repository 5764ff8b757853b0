"""Fixtures shared by the kernel suites."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import upstream
from harness.errors import KhError, UsageError
from harness.guest import Guest, Result
from harness.kbuild.selftests import Absent, Selftests
from harness.observe import ktap, proc
from harness.pytest_plugin import SETTINGS, report_subtest, resolved, selftests_ran
from harness.resources import data
from harness.results.matrix import BESIDE
from harness.vm.machine import PMEM_DEVS, PMEM_ROOT

RINGBUF_MODES = ("pfnmap", "fault", "insert_pages")
DAXLIKE_MODES = ("special", "refcounted")
MIXEDMAP_MODES = ("prepop", "loop", "fault")
BAR_PAGES_MAPPED = 8   # of kh_mixedmap's ivshmem BAR, after the module's own pages


@dataclass
class Device:
    """One of our modules' misc devices, with its debugfs counters."""
    guest: Guest
    module: str          # ringbuf, daxlike
    mode: str
    nr_mapped: int = 0   # /proc/vmstat nr_mapped before the test
    # How the kernel treats what the mode maps: the mode, but "unmarked" for
    # daxlike's special on an arch without pte_special (armhf's armmp):
    # there vmf_insert_mixed() inserts a PFN that has a struct page as a
    # refcounted page (nothing in the PTE could tell vm_normal_page()
    # otherwise), and a write to it is a page's, which never reaches the
    # driver's pfn_mkwrite: write-notify is lost.
    behaves: str = ""

    @property
    def dev(self) -> str:
        return f"/dev/kh_{self.module}_{self.mode}"

    @property
    def debugfs(self) -> str:
        return f"/sys/kernel/debug/kh_{self.module}/{self.mode}"

    def pages(self) -> list[tuple[int, ...]]:
        """(index, pfn, refcount, mapcount, ...) of each page the module holds."""
        return [tuple(int(v) for v in line.split())
                for line in self.guest.read(f"{self.debugfs}/pages").splitlines()]

    def stats(self) -> dict[str, int]:
        return proc.read_stats(self.guest, self.debugfs)

    @property
    def nr_pages(self) -> int:
        return self.stats()["nr_pages"]

    @property
    def map_pages(self) -> int:
        """Pages the helpers map: the module's own, then some of the BAR's."""
        s = self.stats()
        return s["nr_pages"] + min(s.get("bar_pages", 0), BAR_PAGES_MAPPED)

    def khmap_argv(self, op: str, *args: str | int) -> list[str]:
        return ["khmap", op, self.dev, str(self.map_pages), *map(str, args)]

    def khmap(self, op: str, *args: str | int) -> Result:
        return self.guest.run(self.khmap_argv(op, *args), check=True)

    def content(self, offset: int, pages: int, *how: str) -> dict[str, dict[str, str]]:
        """khmap content: `pages` pages mapped from page `offset` (how:
        private, populate, fixed, write), read and compared with read(2) of
        the device at that offset; the helper's records by op."""
        return self.guest.run(["khmap", "content", self.dev, str(pages), str(offset), *how],
                              check=True).by_op()

    @staticmethod
    def assert_pipe_pin(ops: dict[str, dict[str, str]]) -> None:
        """vmsplice: the pipe holds a reference to the page until it is read."""
        before = int(ops["vmsplice"]["ref_before"])
        assert int(ops["vmsplice"]["ref_held"]) == before + 1
        assert int(ops["vmsplice_drained"]["ref_after"]) == before

    def delta(self, before: dict[str, int], after: dict[str, int], key: str) -> int:
        return after[key] - before[key]

    def assert_released(self) -> dict[str, int]:
        """The catalogue's invariants after the last unmap: the module holds
        nothing and the kernel's count of mapped file pages is where it was."""
        s = self.stats()
        held = {k: s[k] for k in ("pages_held", "buffers", "open_mappings")
                if s.get(k, 0) != 0}
        assert not held, f"{self.mode}: module still holds {held} after the last unmap"
        # Pages the module keeps (daxlike's pool) are back to its own reference.
        busy = [p for p in self.pages() if p[2] != 1 or p[3] != 0]
        assert not busy, f"{self.mode}: pages still referenced or mapped: {busy}"
        if self.guest.quiet:
            nr_mapped = settled_nr_mapped(self.guest, expect=self.nr_mapped)
            assert nr_mapped == self.nr_mapped, \
                f"vmstat nr_mapped {self.nr_mapped} -> {nr_mapped} across the test"
        return s


# The suites' order in one session: the scenarios on the freshest guests,
# the kernel's own mm selftests last (their binaries leave the default
# guest busy for a while: nr_mapped moved under the next file's first tests
# when they ran before the scenarios).
SUITE_ORDER = ("scenarios", "harness", "selftests", "mm-selftests")


def pytest_collection_modifyitems(config, items):
    """The kernel suites' items in SUITE_ORDER, in the places they had among
    the session's items (unit and integration tests stay where they were);
    of the selftests suite only the collections `--suite selftests:...` named."""
    here = Path(__file__).parent
    if SETTINGS in config.stash:
        wanted = [s.partition(":")[2] for s in config.stash[SETTINGS].suite
                  if s.startswith("selftests:")]
        keep = [i for i in items if not wanted or i.path.parent.name != "selftests"
                or i.callspec.params["test"].collection in wanted]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep
    at = [i for i, item in enumerate(items) if item.path.parent.parent == here]
    ours = sorted((items[i] for i in at),    # stable: each suite keeps its own order
                  key=lambda item: SUITE_ORDER.index(item.path.parent.name)
                  if item.path.parent.name in SUITE_ORDER else len(SUITE_ORDER))
    for i, item in zip(at, ours, strict=True):
        items[i] = item


def stamps(first: int, pages: int) -> str:
    """What a helper's shows= says of pages that show object pages first..
    first+pages-1, each stamped with its index (uapi/kh_stamp.h)."""
    last = first + pages - 1
    return f"{first}-{last}" if last > first else str(first)


OWN_PAGES = "its own pages"   # a content row of the matrix that held


def content_seen(rec: dict[str, str], first: int, pages: int) -> str:
    """A content record as a matrix cell: OWN_PAGES, the errno of a refused
    mapping, or which pages it showed."""
    if "result" in rec:
        return rec["result"]
    if rec["shows"] == stamps(first, pages) and rec["differ"] == "0" \
            and rec["compared"] == str(pages):
        return OWN_PAGES
    return f"shows {rec['shows']}, {rec['differ']} of {rec['compared']} differ"


def assert_content(rec: dict[str, str], first: int, pages: int) -> None:
    """A helper's content record: every page of the mapping shows the
    object's page at its offset, byte for byte as read another way."""
    assert "result" not in rec, f"the mapping failed: {rec['result']}"
    assert rec["shows"] == stamps(first, pages), \
        f"the mapping shows object pages {rec['shows']}, not {stamps(first, pages)}"
    assert rec["compared"] == str(pages), f"only {rec['compared']} of {pages} pages read back"
    instead = int(rec["instead"])
    assert rec["differ"] == "0", (
        f"{rec['differ']} page(s) differ from the object read another way, the first at "
        f"page {rec['first_differ']} of the mapping"
        + (f" (it holds the object's page {first + instead})" if instead >= 0 else ""))


def content_row(behaviour, rec: dict[str, str], first: int, pages: int, how: str = "",
                expect: str = OWN_PAGES) -> str:
    """One input of a content test: a matrix row (its cell on each kernel)
    and, if it did not hold, what went wrong as a line ("" if it held)."""
    case = f"mapped from page {first}, {pages} page{'s' if pages != 1 else ''}" + \
        (f", {how}" if how else "")
    if behaviour.record(f"content {case}", expect, content_seen(rec, first, pages)):
        return ""
    if expect != OWN_PAGES:
        return f"{case}: expected {expect}, the kernel did {content_seen(rec, first, pages)}"
    try:
        assert_content(rec, first, pages)
    except AssertionError as e:
        return f"{case}: {e}"
    return f"{case}: {content_seen(rec, first, pages)}"


def content_cases(d: Device, behaviour, cases: list[tuple[int, int, str]]) -> list[str]:
    """Each (offset, pages, how) of `cases` mapped and read back in the
    test's guest (khmap content), a matrix row each, and the mapping's
    VmFlags as a note: what went wrong with each, as lines.
    how is words of: private, populate (the reads then fault nothing),
    fixed (over an anonymous mapping), write (a token a page: it lands in
    the object through a shared mapping, never through a private one),
    parts (mprotect of page 1 and MADV_DONTNEED of the rest: every page
    still shows its own; pages 3..pages-2, moved by mremap from inside the
    VMA that begins at page 2, show the same at their new place, moved and
    refaulted after MADV_DONTNEED), fork (a
    child reads every page before anything touched them), exec (with
    write: a return instruction called through a PROT_EXEC mapping of the
    last page, a matrix row), move (mremap of the whole mapping: the same
    pages at the new place)."""
    bad = []
    for i, (offset, pages, how) in enumerate(cases):
        c = d.content(offset, pages, *how.split())
        if i == 0 and "content_vma" in c:
            behaviour.note(f"VmFlags of a {d.mode} mapping", c["content_vma"]["vmflags"])
        bad.append(content_row(behaviour, c.get("content", c.get("mmap", {})), offset, pages,
                               how))
        case = f"mapped from page {offset}, {pages} page(s), {how}"
        try:
            if "content" not in c:
                continue
            if "fixed" in how:
                assert c["mmap"]["fixed"] == "in_place", "MAP_FIXED mapped elsewhere"
            if "populate" in how:
                assert c["reads"]["minflt"] == "0", "MAP_POPULATE left pages to fault"
            if "write" in how:
                landed = 0 if "private" in how else pages
                assert c["write_tokens"]["landed"] == str(landed), \
                    (f"{c['write_tokens']['landed']} of {pages} writes through the mapping "
                     f"reached the object at their offset, not {landed}")
            if "move" in how:
                assert c["moved"].get("shows") == stamps(offset, pages), \
                    f"moved by mremap ({c['moved']['result']}): shows {c['moved'].get('shows')}"
            if "fork" in how:
                assert c["child"]["shows"] == stamps(offset, pages), \
                    f"a child forked before the first touch sees {c['child']['shows']}"
            if "exec" in how:
                ex = c["exec"]
                if not behaviour.record(f"exec through a PROT_EXEC mapping of a {d.mode} page",
                                        "ok", ex.get("call", f"mmap {ex['mmap']}")):
                    bad.append(f"{case}: a call into the page gave {ex}")
            if "parts" in how:
                assert c["mprotect_part"]["result"] == "0"
                assert c["dontneed_part"]["shows"] == stamps(offset, pages), \
                    f"after MADV_DONTNEED of part: shows {c['dontneed_part']['shows']}"
                for op in ("mremap_part", "mremap_part_refault"):
                    assert c.get(op, {}).get("shows") == stamps(offset + 3, pages - 4), \
                        (f"pages 3.. moved by mremap ({op}: {c.get(op)}) show "
                         f"{c.get(op, {}).get('shows')}")
        except AssertionError as e:
            bad.append(f"{case}: {e}")
    return [b for b in bad if b]


def settled_nr_mapped(guest, expect: int | None = None) -> int:
    """nr_mapped at once if it is `expect`, else once two reads agree. A
    process of the agent's still being torn down can hold a mapped page for
    a moment (seen: +1 once in a 4-kernel run under load); a leak stays, so
    it still fails the check."""
    last = proc.read_vmstat(guest)["nr_mapped"]
    for _ in range(4):
        if last == expect:
            break
        # Give an exiting process its moment: two reads at once can both see
        # a helper of the test before still being torn down (16 pages of a
        # baseline gone mid-test once, in a whole-suite run).
        time.sleep(0.5 if expect is not None else 0.2)
        now = proc.read_vmstat(guest)["nr_mapped"]
        if now == last:
            break
        last = now
    return last


def qemus_of(folder: Path) -> list[str]:
    """QEMU processes whose command line names folder: none may outlive a run."""
    return subprocess.run(["pgrep", "-af", f"qemu-system.*{folder}"], capture_output=True,
                          text=True).stdout.splitlines()


def option(request) -> Callable[[str], str]:
    """The suite's options as resolved: option("--arch") is "x86_64" also
    when none was given (pytest_plugin.resolved)."""
    return resolved(request.config)


def inner_pytest(request, test_file: Path, out: Path, *extra: str,
                 boot: bool = True) -> subprocess.CompletedProcess:
    """pytest on a test file written by a test, with the suite's kernel and
    arch (and boot path), its output under out: how a harness test sees
    what a run of tests writes and says."""
    opt = option(request)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           str(test_file), f"--kernel={opt('--kernel')}",
                           f"--arch={opt('--arch')}",
                           *([f"--boot={opt('--boot')}"] if boot else []),
                           f"--out={out}", *extra],
                          cwd=test_file.parent, timeout=900, capture_output=True, text=True)


def interruptible() -> None:
    """Popen preexec_fn: SIGINT back to its default in the child. A shell
    without job control starts `cmd &` with SIGINT ignored, and Python keeps
    an inherited SIG_IGN: a Ctrl-C test would then test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def need_bar(d: Device, pages: int = 1) -> dict[str, int]:
    """kh_mixedmap's stats, with the ivshmem BAR of at least `pages` pages
    that QEMU guests always have (a test that needs it is marked qemu: a real
    machine over SSH has none)."""
    s = d.stats()
    assert s.get("bar_pages", 0) >= pages, \
        "no ivshmem BAR in this guest: QEMU was started without it"
    return s


def device(guest, module: str, mode: str) -> Device:
    d = Device(guest, module, mode, settled_nr_mapped(guest), behaves=mode)
    d.assert_released()  # a leak from an earlier test must not be blamed on this one
    return d


@pytest.fixture(params=RINGBUF_MODES)
def rb(guest, request) -> Device:
    return device(guest, "ringbuf", request.param)


def pte_special(kernel) -> bool:
    """Whether the kernel's PTEs have a special bit (ARCH_HAS_PTE_SPECIAL:
    x86_64, arm64, armhf with LPAE); without it, vm_normal_page() guesses
    from the VMA whether a PFN has a struct page."""
    return kernel.config_value("CONFIG_ARCH_HAS_PTE_SPECIAL") == "y"


@pytest.fixture(params=DAXLIKE_MODES)
def dx(guest, kernel, request) -> Device:
    d = device(guest, "daxlike", request.param)
    d.behaves = d.mode if d.mode != "special" or pte_special(kernel) else "unmarked"
    return d


@pytest.fixture(params=MIXEDMAP_MODES)
def mx(guest, request) -> Device:
    return device(guest, "mixedmap", request.param)


# The fs-dax and device-dax scenarios' guest: --pmem's layout
# (harness/vm/machine.py pmem_layout), a new guest of its own.
PMEM_MB = 768
# What a kernel needs for a family's guest: the pmem guest loads every
# driver of the layout, whichever family asks (kharness boot --pmem names
# the same in one line). The drivers fragment builds them all.
PMEM_NEEDS = ("CONFIG_ACPI_NFIT", "CONFIG_BLK_DEV_PMEM", "CONFIG_ZONE_DEVICE", "CONFIG_FS_DAX",
              "CONFIG_DEV_DAX", "CONFIG_DEV_DAX_PMEM", "CONFIG_EXT4_FS", "CONFIG_XFS_FS")


def vfio_needs(arch) -> tuple[str, ...]:
    """What vfio-pci needs in a guest of this arch: its IOMMU's driver, vfio."""
    return (arch.viommu_config, "CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1")


# QEMU's PCI devices, vendor:device: ivshmem-plain (every guest's; kh_mixedmap
# drives it), edu (guest(viommu=True)'s; no driver)
IVSHMEM = "0x1af4:0x1110"
EDU = "0x1234:0x11e8"


def bind_pci(guest, ident: str, driver: str) -> str:
    """The guest's PCI device of this vendor:device taken from its driver,
    if it has one, and bound to driver, or to none (""): its BDF."""
    found = guest.run(["sh", "-c", "for d in /sys/bus/pci/devices/*; do "
                       f"[ $(cat $d/vendor):$(cat $d/device) = {ident} ] && "
                       "basename $d; done; true"], check=True).stdout.split()
    assert found, f"no PCI device {ident} in this guest: QEMU was started without it"
    bdf = found[0]
    dev = f"/sys/bus/pci/devices/{bdf}"
    bind = (f"echo {driver} > {dev}/driver_override; echo {bdf} > /sys/bus/pci/drivers_probe"
            if driver else "true")
    guest.run(["sh", "-c", f"if [ -e {dev}/driver ]; then echo {bdf} > {dev}/driver/unbind; "
                           f"fi; {bind}"], check=True)
    bound = guest.run(["sh", "-c", f"readlink {dev}/driver; true"], check=True).stdout.strip()
    if driver:
        assert bound.endswith(f"/{driver}"), f"{bdf} is bound to {bound}, not {driver}"
    else:
        assert not bound, f"{bdf} is still bound to {bound}"
    return bdf


def kernel_lacks(kernel, options) -> list[str]:
    """The options of `options` the kernel's config has neither =y nor =m."""
    have = {line.split("=")[0] for line in kernel.config.read_text().splitlines()
            if line.endswith(("=y", "=m"))}
    return [o for o in options if o not in have]


@dataclass
class Pmem:
    """A guest with persistent memory: fs-dax ext4 and xfs mounted under
    PMEM_ROOT, device-dax namespaces aligned 2 MiB and 4 KiB."""
    guest: Guest

    def file(self, fs: str, name: str) -> str:
        return f"{PMEM_ROOT}/{fs}/{name}"

    def dax(self, align: str) -> str:
        """/dev/daxR.N of the device-dax namespace aligned `align` (2m, 4k)."""
        return "/dev/" + self.guest.read(f"{PMEM_DEVS}/kh-dax{align}").strip()

    def khdax(self, *args: str | int) -> Result:
        return self.guest.run(["khdax", *map(str, args)], check=True)


def _fragments_with(option: str) -> list[str]:
    """The shipped kconfig fragments that set option."""
    return sorted(f.name.removesuffix(".config") for f in data("kconfigs").glob("*.config")
                  if re.search(rf"^{option}=[ym]$", f.read_text(), re.M))


def skip_unless_kernel_has(kernel, needs) -> None:
    """A kernel without an option a test needs is a skip naming the options
    and the shipped fragments a build: kernel would get them from."""
    missing = kernel_lacks(kernel, needs)
    if missing:
        pytest.skip(f"kernel {kernel.release} lacks {', '.join(missing)}"
                    + "".join(f" (a build: kernel with --config {name} has {option})"
                              for option in missing for name in _fragments_with(option)))


def guest_if_kernel_has(request, needs: tuple[str, ...]) -> Guest:
    """The test's guest, once the kernel is known to have what it needs: a
    kernel without is a skip naming the options (not a guest that cannot
    boot, which would stop the session)."""
    skip_unless_kernel_has(request.getfixturevalue("kernel"), needs)
    return request.getfixturevalue("guest")


def pmem_guest(request) -> Pmem:
    """The pmem guest (fs-dax and device-dax namespaces)."""
    kernel = request.getfixturevalue("kernel")
    if not kernel.arch.pmem:
        pytest.skip(f"no emulated NVDIMM for {kernel.arch.name} guests")
    return Pmem(guest_if_kernel_has(request, PMEM_NEEDS))


@pytest.fixture(scope="session")
def selftests(kh_pool, request) -> Callable[[str], Selftests | KhError]:
    """A collection's selftests from the kernel's source (or
    --selftests-source), built once a session: selftests("perf_events").
    A build that fails is each test's failure, not the session's end."""
    built: dict[str, Selftests | KhError] = {}

    def get(collection: str) -> Selftests | KhError:
        if collection not in built:
            prep = kh_pool.prepared()
            s = request.config.stash[SETTINGS]
            try:
                with kh_pool.uncaptured():
                    built[collection] = upstream.selftests_for(
                        prep.kernel, s.selftests_source, offline=s.guest.offline,
                        collection=collection)
                selftests_ran(request.config, built[collection].version)  # type: ignore[union-attr]
            except UsageError as e:     # a source that is not one: bad input, exit 2
                pytest.exit(f"kharness: error: {e}", returncode=e.exit_code)
            except KhError as e:
                built[collection] = e
        return built[collection]
    return get


def selftest_param(t: upstream.Selftest):
    return pytest.param(t, id=t.id, marks=[pytest.mark.guest(**t.guest)] if t.guest else [])


SUBTEST_OUTCOME = {ktap.PASS: "passed", ktap.XPASS: "passed", ktap.SKIP: "skipped",
                   ktap.XFAIL: "skipped", ktap.FAIL: "failed", ktap.ERROR: "failed"}


def run_selftest(request, test: upstream.Selftest) -> None:
    """One upstream catalogue entry in the test's guest: a result for the
    binary (kselftest's runner's verdict and the kernel's reports) and one
    for each subtest. A kernel without what it needs skips before anything
    is built; a collection that does not build fails."""
    kernel = request.getfixturevalue("kernel")
    if test.beside:     # its row in the behaviour matrix, beside our scenario of the driver
        request.node.user_properties.append((BESIDE, test.beside))
    needs = (*test.config, *(vfio_needs(kernel.arch) if test.pci == "vfio" else ()))
    skip_unless_kernel_has(kernel, needs)
    built = request.getfixturevalue("selftests")(test.collection)
    if isinstance(built, Absent):
        pytest.skip(f"{test.id}: {built}")
    if isinstance(built, KhError):
        pytest.fail(f"the {test.collection} selftests of {kernel.spec} could not be built: "
                    f"{built}" + (f"\n{built.detail}" if built.detail else ""), pytrace=False)
    if test.binary not in built.built:
        why = built.missing.get(test.binary, "not built")
        if why.startswith("does not build"):    # the tree has it: a failure, not a skip
            pytest.fail(f"{test.binary} {why}", pytrace=False)
        pytest.skip(f"{test.binary}: {why}")
    guest = request.getfixturevalue("guest")
    if test.device and "{bdf}" not in test.device and \
            guest.run(["test", "-c", test.device]).status != 0:
        if isinstance(guest, Guest):    # our modules make it in every QEMU guest
            pytest.fail(f"{test.device} is absent from this guest", pytrace=False)
        pytest.skip(f"{test.device} is absent (no ivshmem BAR on this machine)")
    bdf = ""
    if test.pci:
        if not isinstance(guest, Guest):
            pytest.skip("drives QEMU's ivshmem device: not on an SSH target")
        bdf = bind_pci(guest, EDU, "vfio-pci") if test.pci == "vfio" else \
            bind_pci(guest, IVSHMEM, "")
    try:
        outcome = upstream.run(guest, built, test, bdf=bdf, lacking=kernel_lacks(
            kernel, [option for _, option in test.subtest_config]))
    finally:
        if test.pci == "free":      # kh_mixedmap's again, for the tests after (--fresh session)
            bind_pci(guest, IVSHMEM, "kh_mixedmap")
    _report_selftest(request, built, outcome)


def _report_selftest(request, built: Selftests, outcome: upstream.Outcome) -> None:
    test = outcome.test
    behaviour = request.getfixturevalue("behaviour")
    logs = request.getfixturevalue("kh_pool").prepared().outdir / \
        f"upstream-{test.collection.replace('/', '-')}"
    logs.mkdir(exist_ok=True)
    log = logs / f"{test.id.replace('/', '-').replace(':', '-')}.log"
    log.write_text(outcome.output)      # what it printed, all runs
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcome.counts().items()))
    behaviour.note("upstream", f"{outcome.verdict} ({counts}) {outcome.seconds:.0f}s, tests "
                               f"from {built.source}")
    for sub in outcome.subtests:
        text = sub.output + "".join(f"\n{r.title}\n" + "\n".join(r.lines[:40])
                                    for r in sub.reports)
        report_subtest(request.node, upstream.subtest_name(sub),
                       SUBTEST_OUTCOME[sub.status], reason=sub.reason, text=text,
                       seconds=sub.seconds, xfail=sub.status == ktap.XFAIL,
                       properties=[("kh-selftests", built.source)])
    line = upstream.summary(outcome)
    with open(logs / "summary.txt", "a") as fh:     # one line a binary, for people
        fh.write(f"{line} [selftests from {built.source}]\n")
    print(line, f"(output: {log})")
    if outcome.verdict == ktap.SKIP:
        pytest.skip(f"{test.id}: {outcome.why}")
    if outcome.verdict == ktap.FAIL:
        pytest.fail(f"{upstream.summary(outcome)}\n--- output (last 60 lines) ---\n"
                    + "\n".join(outcome.output.splitlines()[-60:])
                    + "".join(f"\n--- {r.title} ---\n" + "\n".join(r.lines[:60])
                              for r in outcome.reports), pytrace=False)
