"""MX: VM_MIXEDMAP with struct pages and a pageless PCI BAR (kmods/mixedmap).

A mapping is the module's pages (prepopulated in f_op->mmap with
vm_insert_pages() or a vm_insert_page() loop, or inserted on fault) followed
by pages of QEMU's ivshmem-plain BAR, which have no struct page and always
come through the fault handler (vmf_insert_mixed()).
"""

from __future__ import annotations

import pytest
from conftest import content_cases, device, need_bar

from harness.observe.proc import parse_page_lines

# mode -> page_mkwrite calls for writes to two of the module's pages. In
# f_op->mmap vm_page_prot is not final, so prepopulated pages of a shared
# writable mapping arrive writable and page_mkwrite never runs (the seeds'
# point); on fault the core maps read-only and the write notifies.
MKWRITE_FOR_TWO = {"prepop": 0, "loop": 0, "fault": 2}


def bar(mx) -> tuple[int, int]:
    s = need_bar(mx)
    return s["bar_pfn"], s["nr_pages"]


@pytest.mark.qemu     # the ivshmem BAR
def test_MX1_write_notify_after_prepopulation(mx, behaviour):
    bar_pfn, first_bar = bar(mx)
    before = mx.stats()
    res = mx.khmap("write", 0, 1, first_bar)
    after = mx.assert_released()
    writes = {r["page"]: r for r in res.records() if r.get("op") == "write" and "page" in r}
    assert all(w["access"] == "ok" and w["readback"] == str(0x5a) for w in writes.values())
    behaviour.check("page_mkwrite calls", MKWRITE_FOR_TWO[mx.mode],
                    mx.delta(before, after, "page_mkwrite_calls"))
    # The BAR page is inserted read-only on fault in every mode: one pfn_mkwrite.
    behaviour.check("pfn_mkwrite calls", 1, mx.delta(before, after, "pfn_mkwrite_calls"))


def test_MX2a_content_at_every_offset(mx, behaviour):
    """The module's pages mapped from other offsets than 0 and shorter
    than all of them (prepopulation inserts from vm_pgoff on), populated,
    fixed over another mapping, moved whole by mremap, private: each page
    shows the module's page at its offset, as read(2) returns it; writes
    land there through a shared mapping, nowhere through a private one."""
    n = mx.nr_pages
    bad = content_cases(mx, behaviour, [(0, n, "write fork"), (5, 9, "write parts exec"),
                                        (n - 1, 1, "populate"), (8, 16, "fixed move"),
                                        (3, 6, "private write")])
    mx.assert_released()
    assert not bad, "; ".join(bad)


@pytest.mark.qemu     # the ivshmem BAR
def test_MX2b_struct_pages_and_pageless_pfns_side_by_side(mx, behaviour):
    bar_pfn, nr = bar(mx)
    res = mx.khmap("mixed")
    mx.assert_released()
    pages = [r for r in res.records() if r.get("op") == "page"]
    assert len(pages) == mx.map_pages and all(p["access"] == "ok" for p in pages)
    ours, theirs = pages[:nr], pages[nr:]
    module_pfns = [p[1] for p in mx.pages()]
    assert [int(p["pfn"]) for p in ours] == module_pfns
    assert [int(p["pfn"]) for p in theirs] == list(range(bar_pfn, bar_pfn + len(theirs)))
    behaviour.check("kpagecount, module pages", [1], sorted({int(p["kpagecount"]) for p in ours}))
    # A BAR PFN has no struct page: beyond /proc/kpagecount's end (-1) or 0.
    behaviour.check("kpagecount, BAR pages counted", False,
                    any(int(p["kpagecount"]) > 0 for p in theirs))
    behaviour.check("GUP, module pages", ["0"], sorted({p["gup"] for p in ours}))
    behaviour.check("GUP, BAR pages", ["EFAULT"], sorted({p["gup"] for p in theirs}))


@pytest.mark.qemu     # the ivshmem BAR
def test_MX2c_struct_pages_read_live(mx, live, behaviour):
    """What the dump of the live mapping holds at each PFN: the module's
    pages a struct page mapped once (and its own reference), the BAR's
    PFNs none at all (no memory behind their place in vmemmap)."""
    bar_pfn, nr = bar(mx)
    with live.holding(mx.khmap_argv("mixed")) as held:
        prog = live.state()
        ours = [live.page(prog, p[1]) for p in mx.pages()]
        theirs = [live.page(prog, pfn) for pfn in range(bar_pfn, bar_pfn + mx.map_pages - nr)]
    mx.assert_released()
    assert held.result is not None
    assert all(r["access"] == "ok" for r in held.result.records() if r.get("op") == "page")
    assert None not in ours, ours
    behaviour.check("module pages: struct page _mapcount+1 (drgn)", [1],
                    sorted({p.mapcount for p in ours}))
    behaviour.check("module pages: struct page _refcount (drgn)", [2],
                    sorted({p.refcount for p in ours}))
    behaviour.check("BAR PFNs with a struct page (drgn)", 0,
                    sum(p is not None for p in theirs))


def test_MX3a_fork_copies_mixedmap_ptes(mx, behaviour):
    """The mapcount after the child's read cannot tell "fork copied the
    PTE" from "the child faulted it in" (the fault handler would insert the
    same page): pagemap in the child, before it touches anything, and the
    module's fault count can (caught rb5-fork-skips-mixedmap, which a
    mapcount-only check missed)."""
    before = mx.stats()
    res = mx.khmap("fork", mx.debugfs)
    after = mx.assert_released()
    f = res.by_op()
    assert f["child_read"]["token"] == str(0x42) and f["child_exit"]["status"] == "0"
    assert f["child_read"]["intact"] == "yes"
    behaviour.check("page 0 present in the child before it touches it", "yes",
                    f["child_before"]["page0"])
    # What the parent had mapped is what the child has: the prepopulated
    # modes map every module page in mmap; fault mode only the page written.
    mapped_by_parent = 1 if mx.mode == "fault" else mx.nr_pages
    behaviour.check("pages present in the child before it touches any", mapped_by_parent,
                    int(f["child_before"]["present"]))
    # The child then reads every page: copied PTEs take no fault, the BAR's
    # pages (never touched by the parent) and fault mode's others do.
    bar_pages = mx.map_pages - mx.nr_pages
    behaviour.check("faults taken by parent and child",
                    mx.nr_pages + bar_pages if mx.mode == "fault" else bar_pages,
                    mx.delta(before, after, "faults"))
    child = parse_page_lines(res.records(), "child")[0]
    parent = parse_page_lines(res.records(), "parent_only")[0]
    # VM_MIXEDMAP PTEs are copied at fork: page 0 is mapped by both.
    behaviour.check("page 0 mapcount with the child", 2, child.mapcount)
    assert child.refcount == 1 + child.mapcount
    assert (parent.mapcount, parent.refcount) == (1, 2)


@pytest.mark.qemu     # the ivshmem BAR
def test_MX3b_child_ptes_read_live(mx, live, behaviour):
    """The child's page table right after fork, before it touches anything,
    read from the guest's memory: which PTEs fork copied, to which PFN, with which bits
    (pagemap in the child shows presence only, not pte_special)."""
    bar_pfn, nr = bar(mx)
    with live.holding(mx.khmap_argv("fork", mx.debugfs)) as held:
        pid, addr = held.point()
        prog = live.state()
        child = live.ptes(prog, pid, addr, mx.map_pages)
        parent = live.ptes(prog, live.parent(prog, pid), addr, 1)[0]
    mx.assert_released()
    module_pfns = [p[1] for p in mx.pages()]
    copied = {i: e for i, e in enumerate(child[:nr]) if e is not None}
    behaviour.check("child PTEs of module pages before it touches any (drgn)",
                    1 if mx.mode == "fault" else nr, len(copied))
    assert all(e.pfn == module_pfns[i] and e.level == "pte" for i, e in copied.items()), copied
    # vm_insert_page(s) maps struct pages with normal PTEs: refcounted,
    # never special. The parent wrote page 0: its PTE is dirty; fork
    # copies a shared mapping's PTE clean (copy_present_pte(): the dirty
    # state stays with the parent's, for writeback to find once).
    behaviour.check("special bit on them (drgn)", [False],
                    sorted({e.special for e in copied.values()}))
    assert parent is not None and parent.pfn == copied[0].pfn
    behaviour.check("page 0 dirty: parent, child (drgn)", [True, False],
                    [parent.dirty, copied[0].dirty])
    behaviour.check("child PTEs of the BAR before it touches any (drgn)", 0,
                    sum(e is not None for e in child[nr:]))


MX4_ROUNDS, MX4_BATCHES = 40, 3


@pytest.mark.parametrize("cpus", [
    1, pytest.param(2, marks=pytest.mark.guest(cpus=2), id="2cpus")])
def test_MX4_prepopulation_races_madv_dontneed(mx, behaviour, cpus):
    """On one vCPU the threads interleave at preemption points; on two they
    run at once. On one vCPU the zapper can miss every live mapping of a
    batch (seen once in a fresh-clone run): up to MX4_BATCHES batches, until
    it has hit one."""
    before = mx.stats()
    zapped = batches = 0
    while not zapped and batches < MX4_BATCHES:
        f = mx.khmap("mxrace", MX4_ROUNDS).fields()
        batches += 1
        assert int(f["failed_writes"]) == 0
        zapped = int(f["zapped"])
    after = mx.assert_released()
    assert mx.delta(before, after, "mmaps") == MX4_ROUNDS * batches
    # The other thread did zap live mappings, so the refaults raced the
    # prepopulation; no report in the window and the counts are back.
    assert zapped > 0, f"MADV_DONTNEED never hit a live mapping in {batches} batches"


def test_MX5_insert_pages_batch_matches_the_loop(guest, behaviour):
    seen = {}
    for mode in ("prepop", "loop"):
        mx = device(guest, "mixedmap", mode)
        res = mx.khmap("read", mx.debugfs)
        s = mx.assert_released()
        pages = parse_page_lines(res.records(), "mapped")
        assert s["inserted"] == s["nr_pages"] == len(pages)
        seen[mode] = sorted({(p.kpagecount, p.mapcount) for p in pages})
        behaviour.note(f"{mode}: ns a page", round(s["insert_ns"] / s["inserted"]))
    behaviour.check("page states, vm_insert_pages vs vm_insert_page loop",
                    seen["loop"], seen["prepop"])
    assert seen["prepop"] == [(1, 1)]
