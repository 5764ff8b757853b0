"""DM: /dev/mem on x86_64 (drivers/char/mem.c's mmap: remap_pfn_range()
with PAT memtype tracking), over RAM kept from the kernel with memmap=
(e820 reserved: outside System RAM, so STRICT_DEVMEM lets it be mapped).

After each step the helper counts the pat_memtype_list entries starting
at the range (the reservation remap_pfn_range() made). Up to 6.x each VMA
untracked its own part when it went, so cutting a hole in the middle of
the mapping or splitting it with mprotect() left the reservation behind
and logged "x86/PAT: freeing invalid memtype" for each part; 7.x's
refcounted pfnmap_track_ctx frees the whole range once. The tests assert
the latter; the former is a kernel bug, a known issue there
(ci/known-issues.toml), never an expectation.
"""

from __future__ import annotations

import pytest
from conftest import content_row

RESERVED = 0x30000000          # 768 MiB into the default 1 GiB guest
NR = 8
TRACK_CTX = (7, 0)             # the pfnmap tracking context

pytestmark = [pytest.mark.arch("x86_64"), pytest.mark.qemu,
              pytest.mark.guest(append=f"memmap=4M${RESERVED:#x}")]


def khdevmem(guest, op: str, phys: int = RESERVED) -> dict[str, dict[str, str]]:
    return guest.run(["khdevmem", op, hex(phys), str(NR)], check=True).by_op()


def memtypes(f: dict[str, dict[str, str]], op: str) -> int:
    """The range's memtype entries at op, beyond those an earlier test in
    the same guest left (--fresh session: 6.12 leaks one per split)."""
    return int(f[op]["memtypes"]) - int(f["before"]["memtypes"])


def test_DM1a_what_dev_mem_lets_a_process_map(guest, behaviour):
    assert "Reserved" in guest.run(["grep", f"^{RESERVED:08x}-", "/proc/iomem"]).stdout, \
        "memmap= did not keep the range from the kernel"
    behaviour.check("mmap of reserved RAM", "0", khdevmem(guest, "open")["mmap"]["result"])
    # IO_STRICT_DEVMEM: a range a driver claimed (kh_mixedmap's ivshmem BAR) is not for /dev/mem.
    bar_pfn = int(guest.run(["sed", "-n", "s/bar_pfn //p",
                             "/sys/kernel/debug/kh_mixedmap/prepop/stats"]).stdout or 0)
    if not bar_pfn:
        raise AssertionError("no ivshmem BAR in this guest: QEMU was started without it")
    behaviour.check("mmap of a driver's BAR", "EPERM",
                    khdevmem(guest, "open", bar_pfn * 4096)["mmap"]["result"])


def test_DM1b_content_through_a_second_mapping(guest, behaviour):
    """The reserved RAM stamped page by page through one mapping, mapped
    again from its page 3: each page of the second shows the first's page
    at that offset (remap_pfn_range() from the right PFN on)."""
    f = khdevmem(guest, "content")
    behaviour.note("VmFlags of a /dev/mem mapping", f["mapping"]["vmflags"])
    bad = content_row(behaviour, f["content"], 3, NR - 3, "a second mapping")
    assert not bad, bad


def test_DM2_fork(guest, kernel, behaviour):
    f = khdevmem(guest, "fork")
    assert f["mapped"]["access"] == "ok" and f["child"]["token"] == str(0x42)
    assert memtypes(f, "mapped") == 1 and f["child_exit"]["status"] == "0"
    # Before 7.x the child's copy reserved the range again (track_pfn_copy()).
    behaviour.check("memtype entries with the child",
                    1 if kernel.version >= TRACK_CTX else 2, memtypes(f, "child"))
    assert memtypes(f, "child_exited") == 1
    behaviour.check("memtype entries after both exit", 0, memtypes(f, "unmapped"))


STEPS = {   # step -> (its result, leaves the reservation behind before 7.x)
    "munmap_tail": ("0", False), "munmap_middle": ("0", True), "shrink": ("0", False),
    "grow": ("EFAULT", False), "move": ("0", False), "mprotect": ("0", True),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_DM3_cut_grow_move_split_a_tracked_pfnmap(guest, step, behaviour):
    """Cutting, growing, moving or splitting a PAT-tracked /dev/mem mapping
    keeps one reservation for the range until the last part goes, then
    none, and no complaint. Up to 6.12 a hole in the
    middle or an mprotect split leaks it with 'x86/PAT: freeing invalid
    memtype': the known issue pat-split-pfnmap-leaks-memtype."""
    result, _ = STEPS[step]
    f = khdevmem(guest, step)
    behaviour.check(f"{step}: result", result, f[step]["result"])
    assert f["after"]["access"] == "ok"
    assert memtypes(f, step) == 1
    behaviour.check(f"{step}: memtype entries after the munmap", 0, memtypes(f, "unmapped"))
