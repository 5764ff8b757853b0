"""struct page as a dump shows it: what /proc/kpagecount and kpageflags
cannot (the _mapcount and _refcount as stored, the compound head, mapping).

Works on a drgn Program from harness.observe.memory, with the kernel's
DWARF or with only kallsyms and our modules' types."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.arches import Arch
from harness.errors import KhError
from harness.guest import Result

if TYPE_CHECKING:
    import drgn


@dataclass(frozen=True)
class PageState:
    pfn: int
    refcount: int       # page->_refcount
    mapcount: int       # page->_mapcount + 1: the PTEs that map this page
    flags: str          # decoded page->flags: PG_reserved|PG_head|...
    mapping: int        # page->mapping (low bits: anon, movable)
    head: int           # the pfn of its compound head; its own if none
    # A large folio's head: the mappings of the folio as a whole (a PMD),
    # which no page's _mapcount counts; None for a page of no large folio.
    entire_mapcount: int | None = None

    def flag(self, name: str) -> bool:
        return f"PG_{name}" in self.flags.split("|")


def page_state(prog: drgn.Program, pfn: int) -> PageState | None:
    """The struct page of pfn, or None where the pfn has none (a BAR, a
    hole: no memory behind its place in vmemmap)."""
    import drgn
    from drgn.helpers.linux.mm import compound_head, decode_page_flags, page_to_pfn, pfn_to_page

    page = pfn_to_page(prog, pfn)
    try:
        refcount = page._refcount.counter.value_()
    except drgn.FaultError:
        return None
    flags = decode_page_flags(page)
    return PageState(
        pfn=pfn,
        refcount=refcount,
        mapcount=page._mapcount.counter.value_() + 1,
        flags=flags,
        mapping=page.mapping.value_(),
        head=page_to_pfn(compound_head(page)).value_(),
        entire_mapcount=_entire_mapcount(prog, page) if "PG_head" in flags.split("|") else None,
    )


def _entire_mapcount(prog: drgn.Program, head: drgn.Object) -> int | None:
    """folio->_entire_mapcount + 1 (6.2 on; before, the first tail page's
    compound_mapcount); None where the types have neither."""
    import drgn
    try:
        return drgn.cast(prog.type("struct folio *"), head)._entire_mapcount.counter.value_() + 1
    except (AttributeError, LookupError, drgn.FaultError):
        pass
    try:
        return (head + 1).compound_mapcount.counter.value_() + 1
    except (AttributeError, LookupError, drgn.FaultError):
        return None


class Live:
    """A running guest's memory as drgn sees it, mid-test: state() stops
    the guest's vCPUs (until the test next talks to it) and hands back a
    drgn Program that reads its memory over QMP, live, no dump (with the
    kernel's DWARF where there is some, as `kharness debug` does: kallsyms
    alone lacks data symbols on kernels built without KALLSYMS_ALL); one
    Program a test, opened on first use. dumped() is the same through a
    dump, as `--vmcore` writes one. holding() keeps a khmap mapping alive
    meanwhile (KH_HOLD)."""

    def __init__(self, guest, kernel, modules: dict[str, Path], workdir: Path):
        self.guest = guest
        self.kernel = kernel
        self.modules = modules
        self.workdir = workdir
        self.dumps: list[Path] = []
        self.levels = 4             # of page tables, as the last read kernel runs

    def state(self) -> drgn.Program:
        prog, self.levels = program_of(self.guest, self.kernel, self.modules)
        self.guest.hold_still()
        return prog

    def dumped(self) -> drgn.Program:
        """The guest's memory through a dump (paused meanwhile, resumed),
        beside its boot's logs: what `kharness debug` reads at a failure."""
        from harness.observe import memory
        from harness.vm import kdump

        path = self.workdir / f"state-{len(self.dumps) + 1}.vmcore"
        self.dumps.append(path)
        self.guest.dump(path)
        dump = memory.Dump(path, self.kernel, self.modules, kdump.info(path))
        self.levels = levels(dump.info)
        prog, _ = memory.program(dump, "auto")
        return prog

    def page(self, prog: drgn.Program, pfn: int) -> PageState | None:
        return page_state(prog, pfn)

    def parent(self, prog: drgn.Program, pid: int) -> int:
        return find_task(prog, pid).real_parent.pid.value_()

    def vma(self, prog: drgn.Program, pid: int, addr: int) -> drgn.Object:
        """The task's VMA covering addr: a reference into the guest's
        memory, so read what it holds while the guest holds still."""
        from drgn.helpers.linux.mm import vma_find
        return vma_find(find_task(prog, pid).mm, addr)

    def ptes(self, prog: drgn.Program, pid: int, addr: int, pages: int) -> list[Pte | None]:
        """The entries mapping pages pages from addr in the task pid."""
        mm = find_task(prog, pid).mm
        arch = walker(self.kernel.arch)
        return [pte(prog, mm, addr + i * 4096, arch, levels=self.levels)
                for i in range(pages)]

    @contextmanager
    def holding(self, argv: list[str], timeout: float = 60.0) -> Iterator[Held]:
        """Run argv (a khmap command) in the background with KH_HOLD; the
        block runs while it holds its mapping; then it goes on and ends,
        and Held.result has its output."""
        tag = f"/tmp/kh-hold-{len(self.dumps)}-{time.monotonic_ns()}"
        self.guest.run(["sh", "-c", f"touch {tag}; (KH_HOLD={tag} {shlex.join(argv)} "
                                    f">{tag}.out 2>&1; echo $? >{tag}.rc) </dev/null "
                                    f">/dev/null 2>&1 &"], check=True)
        held = Held(self.guest, tag)
        held.wait(f"{tag}.held", timeout, what=f"{argv[0]} to reach its hold point")
        try:
            yield held
        finally:
            self.guest.run(["rm", "-f", tag], check=True)
            held.wait(f"{tag}.rc", timeout, what=f"{argv[0]} to end")
            held.collect(" ".join(argv))

    def close(self) -> None:
        if self.guest.drgn_ahead is not None:     # not left connecting to a guest going away
            self.guest.drgn_ahead[0].join()
        for path in self.dumps:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".elf").unlink(missing_ok=True)


class Held:
    def __init__(self, guest, tag: str):
        self.guest = guest
        self.tag = tag
        self.result: Result | None = None

    def records(self) -> list[dict[str, str]]:
        """What the holder printed so far (its op=hold line: pid=, addr=)."""
        out = self.guest.run(["cat", f"{self.tag}.out"], check=True).stdout
        return Result("", 0, out, "", 0.0).records()

    def point(self) -> tuple[int, int]:
        """(pid, address of its mapping) of the process that holds."""
        rec = next(r for r in self.records() if r.get("op") == "hold")
        return int(rec["pid"]), int(rec["addr"], 16)

    def wait(self, path: str, timeout: float, *, what: str) -> None:
        deadline = time.monotonic() + timeout
        rc = f"{self.tag}.rc"
        while self.guest.run(["test", "-e", path]).status != 0:
            if path != rc and self.guest.run(["test", "-e", rc]).status == 0:
                out = self.guest.run(["cat", f"{self.tag}.out"]).stdout
                raise AssertionError(f"gave up waiting for {what}: it ended first:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
            time.sleep(0.05)

    def collect(self, cmd: str) -> None:
        out = self.guest.run(["cat", f"{self.tag}.out"], check=True).stdout
        rc = int(self.guest.run(["cat", f"{self.tag}.rc"], check=True).stdout.strip() or -1)
        self.guest.run(["rm", "-f", f"{self.tag}.out", f"{self.tag}.rc", f"{self.tag}.held"])
        self.result = Result(cmd, rc, out, "", 0.0).check()


def program_of(guest, kernel, modules: dict[str, Path], *, ask: bool = True,
               fetch: bool = True) -> tuple[drgn.Program, int]:
    """The drgn Program that reads this guest live over QMP, and the page
    table levels its kernel runs with: one a guest (its QMP socket serves
    one client at a time), opened on first use (or taken from open_ahead),
    with the kernel's DWARF where there is some. ask: the guest answers
    commands (where its VMCOREINFO is: asked of the guest where the
    kernel's own copy cannot be read). fetch: the kernel's DWARF may be
    downloaded (not at a failure)."""
    if guest.drgn is None and guest.drgn_ahead is not None:
        thread, box = guest.drgn_ahead
        thread.join()
        guest.drgn_ahead = None
        guest.drgn = box.get("opened")      # else (it failed) open here, and say why
    if guest.drgn is None:
        prog, lv, _ = _open(guest, kernel, modules, ask=ask, fetch=fetch)
        guest.drgn = (prog, lv)
    return guest.drgn


def open_ahead(guest, kernel, modules: dict[str, Path]) -> None:
    """Start opening the guest's Program in a thread: drgn leaves the GIL
    while it connects and indexes the DWARF (~0.25 s), so the test's own
    commands go on meanwhile, and program_of() takes it when done. Only
    with the kernel's DWARF here (the guest is not asked anything)."""
    if guest.drgn is not None or guest.drgn_ahead is not None:
        return
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            opened = _open(guest, kernel, modules, ask=False, fetch=False)
        except Exception:       # program_of() opens again, and raises what it meets
            return
        if opened[2]:           # its VMCOREINFO was read (the DWARF typed it)
            box["opened"] = opened[:2]

    thread = threading.Thread(target=work, name="kh-drgn-open", daemon=True)
    thread.start()
    guest.drgn_ahead = (thread, box)


def _open(guest, kernel, modules: dict[str, Path], *, ask: bool,
          fetch: bool) -> tuple[drgn.Program, int, bool]:
    """A new Program on the guest, its page-table levels, and whether its
    VMCOREINFO was read."""
    from harness.observe import memory
    from harness.vm.launcher import DRGN_QMP

    read_info = None
    if ask:
        where = guest.read("/sys/kernel/vmcoreinfo").split()
        note = (int(where[0], 16), int(where[1], 16))

        def read_info(prog: drgn.Program) -> dict[str, str]:
            return vmcoreinfo(prog.read(note[0], note[1], True))
    prog, mem, _ = memory.live_program(guest.machine.sock_dir / DRGN_QMP, kernel, modules,
                                       read_info, fetch=fetch)
    return prog, levels(mem.info), bool(mem.info)


def vmcoreinfo(note: bytes) -> dict[str, str]:
    """The VMCOREINFO of a kernel's ELF note (Elf64_Nhdr, name, text), as
    /sys/kernel/vmcoreinfo locates it in physical memory."""
    namesz, descsz = int.from_bytes(note[0:4], "little"), int.from_bytes(note[4:8], "little")
    text = note[12 + (namesz + 3) // 4 * 4:][:descsz].decode(errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def levels(info: dict[str, str]) -> int:
    """Page-table levels the kernel runs with: 5 where x86_64's LA57 is on."""
    return 5 if info.get("NUMBER(pgtable_l5_enabled)") == "1" else 4


# -- page table entries -------------------------------------------------------

@dataclass(frozen=True)
class Pte:
    """A user address's leaf entry, as the hardware and the kernel's
    software bits say (harness reads the table itself: /proc's pagemap
    shows neither the special nor the devmap bit)."""
    pfn: int
    level: str          # pte, pmd (a 2 MiB leaf), pud
    write: bool
    dirty: bool
    special: bool       # pte_special(): no struct page to take a reference on
    devmap: bool        # pte_devmap() (ZONE_DEVICE; gone from kernels after 6.16)
    raw: int


# Bit numbers: arch/x86/include/asm/pgtable_types.h, arch/arm64/include/asm/pgtable-prot.h
X86 = {"write": 1, "dirty": 6, "large": 7, "special": 9, "devmap": 58}
ARM64 = {"rdonly": 7, "dbm": 51, "dirty": 55, "special": 56, "devmap": 57}
# The output address: bits 12-51 on x86_64; 12-47 on arm64 without LPA2
# (what TCG's neoverse-n1 has: its bits 48-51 are attributes, DBM among them)
ADDRESS = {"x86_64": 0x000F_FFFF_FFFF_F000, "arm64": 0x0000_FFFF_FFFF_F000}
LEVELS = (("pgd", 48), ("p4d", 39), ("pud", 30), ("pmd", 21), ("pte", 12))


def walker(arch: Arch) -> str:
    """How this arch's page tables are walked (its Arch.page_table); an
    arch kharness cannot walk is an error naming it, never another's walk."""
    if arch.page_table not in ADDRESS:
        raise KhError(f"page state: kharness does not walk {arch}'s page tables (it knows "
                      f"{', '.join(ADDRESS)}'s); read the guest's /proc instead")
    return arch.page_table


def find_task(prog: drgn.Program, pid: int) -> drgn.Object:
    """The task with this pid (the tasks list from init_task: no pid
    namespace helpers needed, so it works without the kernel's DWARF)."""
    from drgn.helpers.linux.list import list_for_each_entry

    init = prog["init_task"]
    for task in list_for_each_entry("struct task_struct", init.tasks.address_of_(), "tasks"):
        if task.pid.value_() == pid:
            return task
    raise LookupError(f"no task {pid} in the dump")


def pte(prog: drgn.Program, mm: drgn.Object, addr: int, arch: str, *,
        levels: int = 4) -> Pte | None:
    """The entry that maps addr in mm (4 KiB pages; 4-level tables, or 5
    where the kernel runs with them: x86_64's LA57, which TCG's CPU has and
    kernels with X86_5LEVEL use), or None where nothing is mapped."""
    table = mm.pgd.value_()
    physical = False            # the pgd is the kernel's virtual address; the rest are pfns
    for level, shift in LEVELS[len(LEVELS) - levels:]:
        at = table + ((addr >> shift) & 511) * 8
        entry = int.from_bytes(prog.read(at, 8, physical), "little")
        if not entry & 1:
            return None
        leaf = level == "pte" or (level in ("pud", "pmd") and (
            entry & (1 << X86["large"]) if arch == "x86_64" else not entry & 2))
        if leaf:
            span = (1 << shift) - 1
            pfn = ((entry & ADDRESS[arch] & ~span) | (addr & span & ~0xFFF)) >> 12
            return _decode(entry, pfn, level, arch)
        table, physical = entry & ADDRESS[arch], True
    return None


def _decode(entry: int, pfn: int, level: str, arch: str) -> Pte:
    def bit(n: int) -> bool:
        return bool(entry >> n & 1)

    if arch == "x86_64":
        return Pte(pfn, level, bit(X86["write"]), bit(X86["dirty"]), bit(X86["special"]),
                   bit(X86["devmap"]), entry)
    if arch != "arm64":
        raise KhError(f"page state: no PTE decoding for {arch}")
    write = bit(ARM64["dbm"])
    return Pte(pfn, level, write, bit(ARM64["dirty"]) or (write and not bit(ARM64["rdonly"])),
               bit(ARM64["special"]), bit(ARM64["devmap"]), entry)
