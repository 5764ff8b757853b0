"""FD: fs-dax, a file on ext4 and on xfs mounted -o dax on the emulated
NVDIMM (--pmem: harness/vm/machine.py pmem_layout), through khdax.

The pages are the NVDIMM's own (ZONE_DEVICE, their struct pages in the
namespace itself), which /proc/kpagecount never counts (beyond its end on
x86_64, not online memory on arm64), so their counts are read from the guest's memory
of the guest (FD8).
The DAX page refcount series (6.15) made them folios like any other:
refcounted and mapcounted while mapped, counted in Rss; the matrix keys
those by kernel.
"""

from __future__ import annotations

import pytest
from conftest import PMEM_MB, Pmem, content_row, pmem_guest

pytestmark = [pytest.mark.guest(pmem=PMEM_MB), pytest.mark.qemu]

MIB = 8                          # each test's file: four 2 MiB blocks
PAGES = MIB * 256
PER_PMD = 512                    # 4 KiB pages in a 2 MiB block
REFCOUNTED = (6, 15)             # the DAX page refcount series: mapped pages are counted


def rss_kb(kernel, mib: int) -> int:
    """What smaps says of a PMD-mapped DAX mapping of mib MiB: the whole
    once DAX pages are folios (6.15); nothing on 6.12 (vm_normal_page_pmd()
    gives no page for a devmap PMD); on 6.1 one 4 KiB page a PMD (the PMD's
    page taken as it is, and a DAX page is not compound)."""
    if kernel.version >= REFCOUNTED:
        return mib * 1024
    return 0 if kernel.version >= (6, 12) else mib // 2 * 4


@pytest.fixture(params=["ext4", "xfs"])
def fd(request) -> tuple[Pmem, str]:
    return pmem_guest(request), request.param


def ops(res) -> dict[str, dict[str, str]]:
    return res.by_op()


def test_FD1a_read_fault_every_page(fd, kernel, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("fault", pm.file(fs, "fd1"), MIB))
    assert f["read"]["failed"] == "0" and f["read"]["pages"] == str(PAGES)
    assert int(f["read"]["first_pfn"]) > 0
    # The file ends below the NVDIMM (x86_64: -1), or the page is not online
    # memory to it (arm64: 0).
    behaviour.check("kpagecount counts the mapped DAX page", False,
                    int(f["read"]["kpagecount"]) > 0)
    behaviour.check("Rss of the mapping (kB)", rss_kb(kernel, MIB), int(f["mapping"]["rss_kb"]))
    assert "hg" in f["mapping"]["vmflags"].split(","), "fs-dax mappings are VM_HUGEPAGE"
    behaviour.note(f"VmFlags of a mapping ({fs})", f["mapping"]["vmflags"])


# (first page, pages, how) of the file, mapped: the whole file; from an
# offset inside a 2 MiB block, shorter than the file; a block mapped at an
# address 4 KiB past 2 MiB alignment (no PMD can map it); private; MAP_POPULATE.
FD_CONTENT = [(0, PAGES, ""), (PER_PMD + 3, 100, ""), (PER_PMD, PER_PMD, "unaligned"),
              (5, 10, "private"), (PER_PMD, 2 * PER_PMD, "populate")]


def test_FD1b_content_at_every_offset(fd, behaviour):
    """Each page of a mapping of the file shows the file's page at its
    offset, byte for byte as read(2) returns it (each page stamped with its
    index), whatever the offset, length, alignment and sharing."""
    pm, fs = fd
    bad = [content_row(behaviour, pm.khdax("content", pm.file(fs, "fdc"), MIB, first, pages,
                                           *how.split()).by_op()["content"], first, pages, how)
           for first, pages, how in FD_CONTENT]
    assert not any(bad), "; ".join(b for b in bad if b)


def test_FD2_write_after_read_is_the_mkwrite_path(fd, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("fault", pm.file(fs, "fd2"), MIB))
    assert f["write"]["failed"] == "0"
    # A shared read fault maps read-only; the first write faults again
    # (dax_iomap_fault's write path via ->page_mkwrite/pfn_mkwrite), in place.
    behaviour.check("write faults after read, per 2 MiB", 1, int(f["write"]["minflt"]) * PER_PMD
                    // PAGES)
    behaviour.check("PFN kept by the write", "yes", f["write"]["same_pfn"])


def test_FD3_pmd_faults_on_an_aligned_file(fd, behaviour):
    pm, fs = fd
    aligned = ops(pm.khdax("fault", pm.file(fs, "fd3"), MIB))
    small = ops(pm.khdax("fault", pm.file(fs, "fd3-small"), 1))
    behaviour.check("read faults, 2 MiB-aligned 8 MiB file", MIB // 2,
                    int(aligned["read"]["minflt"]))
    # A 1 MiB file cannot be PMD-mapped: a fault a page.
    behaviour.check("read faults, 1 MiB file", 256, int(small["read"]["minflt"]))


@pytest.mark.parametrize("how", ["shared", "private"])
def test_FD4_fork_child_reads_and_writes(fd, how, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("fork", pm.file(fs, f"fd4-{how}"), MIB, how))
    assert f["child_exit"]["status"] == "0" and f["child_read"]["token"] == str(0x42)
    assert f["child_write"]["access"] == "ok"
    parent_pfn1 = int(f["parent_mapped"]["pfn1"])
    if how == "shared":
        # Shared file mappings are not copied: the child faults its own in.
        behaviour.check("PTEs fork copied, shared", 0, int(f["child_before"]["present"]))
        assert int(f["child_write"]["pfn1"]) == parent_pfn1, "the child wrote another page"
        behaviour.check("parent sees the child's write, shared", 0x6B,
                        int(f["parent_after"]["byte"]))
    else:
        # The parent's write to page 0 made an anonymous copy: fork copies
        # that one (the private VMA has an anon_vma); the child's own write
        # copies page 1, and the file keeps its byte.
        behaviour.check("PTEs fork copied, private", 1, int(f["child_before"]["present"]))
        # fs-dax copies the block in the fault (dax_fault_cow_page()): one
        # fault a page. A DAX fault that mapped the file block read-only
        # would leave the copy to a second, write-protect fault: the file
        # is kept all the same, so only the count tells. (Over 16 pages:
        # the child's own stack or TLS can add a fault of their own.)
        w = f["child_write"]
        behaviour.check("faults a page for the child's first writes, private", 1,
                        round(int(w["minflt"]) / int(w["pages"])))
        assert int(f["child_write"]["pfn1"]) != int(f["parent_after"]["pfn1"])
        behaviour.check("parent sees the child's write, private", 0x11,
                        int(f["parent_after"]["byte"]))


def test_FD5_gup_on_the_mapping(fd, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("gup", pm.file(fs, "fd5"), MIB))
    for op in ("process_vm_readv", "odirect_read", "vmsplice"):
        assert f[op]["result"] == "0" and f[op]["match"] == "yes", f[op]
    assert f["odirect_write"]["result"] == "0"
    # FOLL_LONGTERM on fs-dax: the filesystem could not move or truncate
    # the blocks while the pin lasts, so GUP refuses it.
    behaviour.check("io_uring fixed buffer (FOLL_LONGTERM)", "EOPNOTSUPP",
                    f["uring_register"]["result"])


def test_FD6_truncate_and_punch_while_mapped_and_pinned(fd, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("trunc", pm.file(fs, "fd6"), MIB))
    assert f["punch_mapped"]["result"] == "0"
    behaviour.check("punched page reads", [0, "ok"], [int(f["punch_mapped"]["byte"]),
                                                     f["punch_mapped"]["access"]])
    # The pipe's reference keeps the block busy: the punch breaks the
    # layout and waits (dax_layout_busy_page) until the pipe lets go.
    behaviour.check("punch waits for a pinned page", "yes", f["punch_pinned"]["waited"])
    assert f["punch_released"]["result"] == "0" and f["punch_released"]["byte"] == "0"
    assert f["truncate"]["result"] == "0" and f["access_kept"]["access"] == "ok"
    behaviour.check("access beyond a truncated end", "sigbus", f["access_beyond"]["access"])


def test_FD7_munmap_of_part(fd, behaviour):
    pm, fs = fd
    f = ops(pm.khdax("partial", pm.file(fs, "fd7"), MIB))
    assert f["read"]["failed"] == "0"
    behaviour.check("munmap of one page of a PMD mapping", "0", f["munmap_page"]["result"])
    assert f["retouch"]["failed"] == "0"
    behaviour.check("the unmapped page", "sigsegv", f["retouch"]["at_hole"])
    # The split zaps the file PMD (nothing to remap it to): the rest of
    # that 2 MiB faults back in a page at a time; the other blocks stay.
    behaviour.check("faults to touch the rest again", PER_PMD - 1, int(f["retouch"]["minflt"]))


def test_FD8_struct_pages_while_mapped_and_after(fd, live, kernel, behaviour):
    """The first block's struct page in dumps of the guest, the mapping
    live and after munmap. Before 6.15 a DAX page sits at refcount 1 idle
    and mapping it takes neither a reference nor a mapcount; since, the
    block is a 2 MiB folio, free at refcount 0, which the PMD mapping
    references and maps once as a whole."""
    pm, fs = fd
    with live.holding(["khdax", "fault", pm.file(fs, "fd8"), str(MIB)]) as held:
        pfn = int(next(r for r in held.records() if r.get("op") == "read")["first_pfn"])
        mapped = live.page(live.state(), pfn)
    after = live.page(live.state(), pfn)
    assert mapped is not None and after is not None, "no struct page for a DAX block"
    folios = kernel.version >= REFCOUNTED
    assert mapped.flag("reserved"), "ZONE_DEVICE pages are PG_reserved"
    behaviour.check("DAX block is a large folio (drgn)", folios, mapped.flag("head"))
    behaviour.check("_refcount mapped, then unmapped (drgn)", [1, 0] if folios else [1, 1],
                    [mapped.refcount, after.refcount])
    behaviour.check("PMD mappings of the block (drgn)", 1 if folios else None,
                    mapped.entire_mapcount)
    assert mapped.mapcount == 0, "a PMD mapping counts in the folio, not its pages"
