"""DD: device-dax, /dev/daxR.N of the emulated NVDIMM's devdax namespaces
(--pmem: harness/vm/machine.py pmem_layout), aligned 2 MiB and 4 KiB,
through khdax.

drivers/dax/device.c maps the namespace's pages on fault at the device's
alignment (a PMD a fault for 2 MiB), refuses private mappings and splits
below the alignment (dev_dax_may_split()). As with fs-dax, the pages are
out of /proc/kpagecount's reach: their counts are read from the guest's memory (DD5).
"""

from __future__ import annotations

import pytest
from conftest import OWN_PAGES, PMEM_MB, Pmem, content_row, pmem_guest
from test_fsdax import REFCOUNTED

pytestmark = [pytest.mark.guest(pmem=PMEM_MB), pytest.mark.qemu]

MIB = 8
PAGES = MIB * 256


@pytest.fixture(params=["2m", "4k"])
def dd(request) -> tuple[Pmem, str, str]:
    pm = pmem_guest(request)
    return pm, pm.dax(request.param), request.param


def test_DD1a_content_at_every_offset(dd, behaviour):
    """Each page of a mapping from an offset shows the device's page at
    that offset, as a first mapping of the whole device wrote it (each
    page stamped with its index). Offsets and addresses below the device's
    alignment: allowed at 4 KiB; at 2 MiB what each kernel does is in the
    matrix."""
    pm, dev, align = dd
    below = "EINVAL" if align == "2m" else OWN_PAGES    # below the device's alignment
    bad = [content_row(behaviour, pm.khdax("content", dev, MIB, first, pages,
                                           *how.split()).by_op()["content"], first, pages,
                       how, expect=want)
           for first, pages, how, want in [(512, 512, "", OWN_PAGES),
                                           (0, 1024, "populate", OWN_PAGES), (3, 100, "", below),
                                           (0, 16, "unaligned", below)]]
    assert not any(bad), "; ".join(b for b in bad if b)


def test_DD1b_fault_every_page(dd, kernel, behaviour):
    pm, dev, align = dd
    f = pm.khdax("fault", dev, MIB).by_op()
    assert f["read"]["failed"] == "0" and f["write"]["failed"] == "0"
    assert f["read"]["contiguous"] == "yes", "a namespace's pages are one range"
    behaviour.note(f"VmFlags of a mapping, align {align}", f["mapping"]["vmflags"])
    behaviour.check(f"read faults, align {align}", PAGES // (512 if align == "2m" else 1),
                    int(f["read"]["minflt"]))
    # A shared writable mapping of a device is mapped writable on the read
    # fault: no write notification. (An arm64 CPU without hardware dirty
    # bits, as virtme-ng's, faults once an entry to set them.)
    writes = int(f["write"]["minflt"])
    if kernel.arch.name == "x86_64":
        behaviour.check("write faults after read", 0, writes)
    else:
        assert writes <= int(f["read"]["minflt"]), f"{writes} write faults after read"
    behaviour.check(f"Rss of the mapping (kB), align {align}", rss_kb(kernel, align),
                    int(f["mapping"]["rss_kb"]))


def rss_kb(kernel, align: str) -> int:
    """smaps of the whole mapping: all of it once DAX pages are folios
    (6.15); before, a devmap PTE or PMD gives smaps no page (6.12), except
    on 6.1, which took a PMD's page as it is: a 2 MiB compound page."""
    if kernel.version >= REFCOUNTED or (align == "2m" and kernel.version < (6, 12)):
        return MIB * 1024
    return 0


def test_DD2_fork(dd, behaviour):
    pm, dev, align = dd
    f = pm.khdax("fork", dev, MIB, "shared").by_op()
    assert f["child_exit"]["status"] == "0" and f["child_read"]["token"] == str(0x42)
    behaviour.check("PTEs fork copied", 0, int(f["child_before"]["present"]))
    assert f["child_write"]["pfn1"] == f["parent_mapped"]["pfn1"]
    assert int(f["parent_after"]["byte"]) == 0x6B
    private = pm.guest.run(["khdax", "fork", dev, str(MIB), "private"])
    behaviour.check("MAP_PRIVATE of a dax device", "EINVAL",
                    private.by_op().get("mmap", {}).get("result"))


def test_DD3_gup_on_the_mapping(dd, kernel, behaviour):
    pm, dev, align = dd
    f = pm.khdax("gup", dev, MIB).by_op()
    for op in ("process_vm_readv", "odirect_read", "vmsplice"):
        assert f[op]["result"] == "0" and f[op]["match"] == "yes", f[op]
    # No filesystem to move the blocks: GUP allows a long-term pin. 6.1's
    # io_uring refused every file-backed buffer but hugetlbfs itself.
    behaviour.check("io_uring fixed buffer (FOLL_LONGTERM)",
                    "0" if kernel.version >= (6, 12) else "EOPNOTSUPP",
                    f["uring_register"]["result"])


def test_DD4_partial_munmap_per_alignment(dd, behaviour):
    pm, dev, align = dd
    f = pm.khdax("partial", dev, MIB).by_op()
    assert f["read"]["failed"] == "0" and f["retouch"]["failed"] == "0"
    split_ok = align == "4k"   # dev_dax_may_split(): not below the device's alignment
    behaviour.check(f"munmap of one page, align {align}", "0" if split_ok else "EINVAL",
                    f["munmap_page"]["result"])
    behaviour.check(f"the page after munmap, align {align}", "sigsegv" if split_ok else "ok",
                    f["retouch"]["at_hole"])
    behaviour.check(f"faults to touch the rest again, align {align}", 0,
                    int(f["retouch"]["minflt"]))


def test_DD5_struct_pages_while_mapped_and_after(dd, live, kernel, behaviour):
    """The first page's struct page in dumps, mapped and after munmap. The
    driver keeps a reference on each of its pages (refcount 1 idle); since
    the DAX page refcount series (6.15) a mapping adds one and a mapcount:
    a PMD's on the 2 MiB folio as a whole, a PTE's on the page. A 2 MiB
    device's pages are 2 MiB compound pages on every kernel here."""
    pm, dev, align = dd
    with live.holding(["khdax", "fault", dev, str(MIB)]) as held:
        pfn = int(next(r for r in held.records() if r.get("op") == "read")["first_pfn"])
        mapped = live.page(live.state(), pfn)
    after = live.page(live.state(), pfn)
    assert mapped is not None and after is not None, "no struct page for a device-dax page"
    counted = kernel.version >= REFCOUNTED
    behaviour.check(f"compound page, align {align} (drgn)", align == "2m", mapped.flag("head"))
    behaviour.check(f"_refcount mapped, then unmapped, align {align} (drgn)",
                    [2, 1] if counted else [1, 1], [mapped.refcount, after.refcount])
    seen = mapped.entire_mapcount if align == "2m" else mapped.mapcount
    behaviour.check(f"mappings counted while mapped, align {align} (drgn)", int(counted), seen)
    assert (after.entire_mapcount if align == "2m" else after.mapcount) == 0
