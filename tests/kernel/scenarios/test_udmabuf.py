"""UD: udmabuf, a dma-buf made from a sealed memfd's pages by
drivers/dma-buf/udmabuf.c and mapped through the dma-buf (khudmabuf).

udmabuf once mapped the memfd's struct pages from its fault handler
(vmf->page); its folio rework (6.11) maps their PFNs into a VM_PFNMAP
mapping instead, so GUP, pagemap and the pages' mapcounts no longer see
it; and after 6.12 its first fault maps every page at once. The memfd's
own mapping is the control: its pages keep their single mapcount.
"""

from __future__ import annotations

import pytest
from conftest import content_row, guest_if_kernel_has

PAGES = 16
PFNMAP = (6, 11)      # udmabuf's folio rework: vmf_insert_pfn() into VM_PFNMAP
PREFAULT = (6, 13)    # the first fault maps the whole buffer


@pytest.fixture
def ud(request, kernel):
    """A guest with /dev/udmabuf: a kernel without CONFIG_UDMABUF is a skip
    naming it; one with it and no device is a failure."""
    guest = guest_if_kernel_has(request, ("CONFIG_UDMABUF",))
    assert guest.run(["test", "-c", "/dev/udmabuf"]).status == 0, \
        f"kernel {kernel.release} has CONFIG_UDMABUF but the guest has no /dev/udmabuf"
    return guest


def khudmabuf(guest, *args) -> dict[str, dict[str, str]]:
    return guest.run(["khudmabuf", *map(str, args)], check=True).by_op()


def test_UD1a_fault_every_page(ud, kernel, behaviour):
    f = khudmabuf(ud, "fault", PAGES)
    r = f["read"]
    assert r["failed"] == "0" and r["wrong"] == "0", "a page is not the memfd's"
    pfnmap = kernel.version >= PFNMAP
    behaviour.check("VM_PFNMAP mapping", pfnmap, "pf" in f["mapping"]["vmflags"].split(","))
    behaviour.note("VmFlags of the dma-buf's mapping", f["mapping"]["vmflags"])
    behaviour.check("faults to read every page",
                    1 if kernel.version >= PREFAULT else PAGES, int(r["minflt"]))
    behaviour.check("pages pagemap sees", 0 if pfnmap else PAGES, int(r["pagemap_present"]))
    behaviour.check("memfd page's kpagecount while the dma-buf maps it",
                    1 if pfnmap else 2, int(r["kpagecount0"]))
    assert f["write"]["access"] == "ok" and f["write"]["memfd_sees"] == str(0x5A)
    assert f["unmapped"]["kpagecount0"] == "1", "the memfd page's mapcount did not come back"


@pytest.mark.parametrize("frm,off,pages,how", [(0, 0, PAGES, ""), (3, 0, PAGES - 3, ""),
                                               (0, 5, 4, ""), (2, 7, 1, ""),
                                               (1, 2, 8, "populate")],
                         ids=["whole", "memfd_offset", "map_offset", "both", "populate"])
def test_UD1b_content_at_every_offset(ud, frm, off, pages, how, behaviour):
    """A dma-buf of the memfd's pages from `frm` on (udmabuf_create's
    offset), mapped from its page `off`: each page shows the memfd's page
    frm + off + i, byte for byte as read(2) of the memfd returns it."""
    f = khudmabuf(ud, "content", PAGES, frm, off, pages, how)
    bad = content_row(behaviour, f["content"], frm + off, pages,
                      f"dma-buf from memfd page {frm}, mapped from its page {off} {how}".strip())
    assert not bad, bad


def test_UD1c_private_mapping_refused(ud, behaviour):
    """A dma-buf is mapped shared only (udmabuf_mmap)."""
    f = khudmabuf(ud, "content", PAGES, 0, 0, PAGES, "private")
    bad = content_row(behaviour, f["content"], 0, PAGES, "private", expect="EINVAL")
    assert not bad, bad


def test_UD2_fork_copies_the_ptes(ud, live, kernel, behaviour):
    """The child's PTEs right after fork, read from the guest's memory (pagemap skips
    VM_PFNMAP): copied, special where they are PFNs; then it reads them all."""
    with live.holding(["khudmabuf", "fork", str(PAGES)]) as held:
        pid, addr = held.point()
        prog = live.state()
        child = [e for e in live.ptes(prog, pid, addr, PAGES) if e is not None]
    f = held.result.by_op()
    assert f["child_exit"]["status"] == "0" and f["child"]["wrong"] == "0"
    pfnmap = kernel.version >= PFNMAP
    behaviour.check("child PTEs before it touches any (drgn)", PAGES, len(child))
    behaviour.check("special bit on them (drgn)", [pfnmap], sorted({e.special for e in child}))


def test_UD3_gup_on_the_mapping(ud, kernel, behaviour):
    f = khudmabuf(ud, "gup", PAGES)
    want = "EFAULT" if kernel.version >= PFNMAP else "0"   # no struct page to pin
    for op in ("process_vm_readv", "odirect_read", "vmsplice", "uring_register"):
        behaviour.check(f"{op} on the mapping", want, f[op]["result"])
    if want == "0":     # GUP moved the page's bytes, not another page's
        for op in ("process_vm_readv", "odirect_read", "vmsplice"):
            behaviour.check(f"{op} read what the mapping shows", "yes", f[op]["match"])


def test_UD4_munmap_part_and_grow(ud, behaviour):
    f = khudmabuf(ud, "split", PAGES)
    behaviour.check("munmap of the last page", "0", f["munmap_tail"]["result"])
    # A VM_PFNMAP (or VM_DONTEXPAND) mapping cannot grow.
    behaviour.check("mremap that grows it", "EFAULT", f["mremap_grow"]["result"])
