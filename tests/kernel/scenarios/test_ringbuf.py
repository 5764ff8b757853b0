"""RB1-RB6: the perf-like ring buffer (kmods/ringbuf) in its three modes.

Every value asserted here was read from the guest: the helper's own counts
(getrusage, smaps, SIGBUS, errno), the module's debugfs counters and page
states, and /proc/kpagecount. Behaviour that depends on the mode, and may
one day depend on the kernel, sits in the EXPECT table, not in the tests.
"""

from __future__ import annotations

from conftest import content_cases, content_row

from harness.observe.proc import parse_page_lines

# mode -> what the catalogue's scenarios expect of it.
EXPECT = {
    "pfnmap": {
        "read_faults": 0,          # mapped in advance: reads fault nothing
        "vmflags": {"pf", "io"},
        "mapped_kpagecount": 0,    # special PTEs are not counted
        "page1_write": "sigbus",   # pfn_mkwrite refuses data pages
        "mkwrite_calls": 2,
        "gup": "EFAULT",           # no struct page behind a VM_PFNMAP PTE for GUP
    },
    "fault": {
        "read_faults": "one a page",
        "vmflags": set(),
        "mapped_kpagecount": 1,
        "page1_write": "sigbus",   # page_mkwrite refuses data pages
        "mkwrite_calls": 2,
        "gup": "0",
    },
    "insert_pages": {
        "read_faults": 0,
        "vmflags": {"mm"},
        "mapped_kpagecount": 1,
        # vm_insert_pages() in f_op->mmap uses vm_page_prot before the core
        # has applied write-notify, so the pages arrive writable and
        # page_mkwrite never runs: the seeds' reason perf could not use it.
        "page1_write": "ok",
        "mkwrite_calls": 0,
        "gup": "0",
    },
}


def test_RB1a_read_every_page(rb, behaviour):
    before = rb.stats()
    res = rb.khmap("read", rb.debugfs)
    after = rb.assert_released()
    f = res.records()[0]
    n = rb.nr_pages
    assert f["failed"] == "0"
    want = EXPECT[rb.mode]
    faults = n if want["read_faults"] == "one a page" else want["read_faults"]
    behaviour.check("read minflt", faults, int(f["minflt"]))
    assert rb.delta(before, after, "faults") == faults
    vmflags = set(res.fields()["vmflags"].split(","))
    assert want["vmflags"] <= vmflags, f"VmFlags {sorted(vmflags)}"
    pages = parse_page_lines(res.records(), "mapped")
    assert len(pages) == n
    assert {p.kpagecount for p in pages} == {want["mapped_kpagecount"]}
    assert all(p.kpagecount == p.mapcount for p in pages)


def test_RB1b_content_read_back(rb, behaviour):
    """Each page of the mapping is the buffer's page at that offset, byte
    for byte as read(2) of the device returns it (every page stamped with
    its index): a mapping of the wrong or a shifted page cannot pass. The
    same through MAP_POPULATE (nothing left to fault), MAP_FIXED over an
    existing mapping, for a child forked before the first touch, and after
    mremap moved it whole."""
    n = rb.nr_pages
    bad = content_cases(rb, behaviour, [(0, n, "plain"), (0, n, "populate"), (0, n, "fixed"),
                                        (0, n, "fork move")])
    rb.assert_released()
    assert not bad, "; ".join(bad)


def test_RB3a_other_than_the_whole_shared_buffer_refused(rb, behaviour):
    """The buffer is mapped whole and shared, as perf's: another offset,
    a shorter length or a private mapping is refused at mmap (kh_rb_mmap)."""
    n = rb.nr_pages
    bad = [content_row(behaviour, rb.content(off, pages, how)["content"], off, pages, how,
                       expect="EINVAL")
           for off, pages, how in [(1, n - 1, ""), (0, n - 1, ""), (0, n, "private")]]
    rb.assert_released()
    assert not any(bad), "; ".join(b for b in bad if b)


def test_RB2_write_control_page_then_data_page(rb, behaviour):
    before = rb.stats()
    res = rb.khmap("write", 0, 1)
    after = rb.assert_released()
    writes = {r["page"]: r for r in res.records() if r.get("op") == "write" and "page" in r}
    want = EXPECT[rb.mode]
    assert writes["0"]["access"] == "ok"
    assert writes["0"]["readback"] == str(0x5a)
    behaviour.check("data page write", want["page1_write"], writes["1"]["access"])
    behaviour.check("mkwrite calls", want["mkwrite_calls"],
                    rb.delta(before, after, "mkwrite_calls"))
    refused = 1 if want["page1_write"] == "sigbus" else 0
    assert rb.delta(before, after, "mkwrite_refused") == refused


def test_RB3b_partial_munmap_and_mremap_refused(rb):
    res = rb.khmap("split")
    rb.assert_released()
    ops = {r["op"]: r.get("result") for r in res.records()}
    # may_split refuses any split: the mapping is all or nothing, as perf's.
    assert ops["munmap_tail"] == "EINVAL"
    assert ops["munmap_middle"] == "EINVAL"
    assert ops["mremap_shrink"] == "EINVAL"
    assert ops["mremap_grow"] == "EFAULT"   # VM_DONTEXPAND
    assert ops["intact"] == "yes"


def test_RB4_gup_on_the_mapping(rb, behaviour):
    res = rb.khmap("gup", rb.debugfs)
    rb.assert_released()
    ops = res.by_op()
    want = EXPECT[rb.mode]["gup"]
    behaviour.check("process_vm_readv", want, ops["process_vm_readv"]["result"])
    behaviour.check("O_DIRECT read", want, ops["odirect_read"]["result"])
    behaviour.check("vmsplice", want, ops["vmsplice"]["result"])
    if want == "0":
        rb.assert_pipe_pin(ops)


def _fork_mapcounts(mode: str, n: int, stage: str) -> list[int]:
    if mode == "pfnmap":
        return [0] * n
    if mode == "insert_pages":   # VM_MIXEDMAP PTEs are copied at fork
        return [2 if stage == "child" else 1] * n
    # fault: fork copies no PTEs of a shared file mapping; the child faults
    # its own, and the parent had touched only page 0.
    if stage == "child":
        return [2] + [1] * (n - 1)
    return [1] + [0] * (n - 1)


def test_RB5a_fork_child_reads_and_exits(rb, behaviour):
    before = rb.stats()
    res = rb.khmap("fork", rb.debugfs)
    after = rb.assert_released()
    f = res.by_op()
    assert f["parent_write"]["access"] == "ok"
    assert f["child_read"]["token"] == str(0x42)
    assert f["child_read"]["intact"] == "yes"
    assert f["child_exit"]["status"] == "0"
    n = rb.nr_pages
    # Before the child touches anything (pagemap): fork copied the PTEs of
    # the VM_MIXEDMAP mapping, none of a plain shared one. Page walks skip
    # VM_PFNMAP, so pagemap shows that mapping as a hole: there, the child's
    # read succeeding is the proof (no fault handler: a fault is SIGBUS).
    behaviour.check("pages present in the child before it touches any (pagemap)",
                    n if rb.mode == "insert_pages" else 0, int(f["child_before"]["present"]))
    for stage in ("child", "parent_only"):
        pages = parse_page_lines(res.records(), stage)
        assert [p.kpagecount for p in pages] == _fork_mapcounts(rb.mode, n, stage), stage
    # One buffer, freed once, at the last close.
    assert rb.delta(before, after, "mmaps") == 1
    assert rb.delta(before, after, "buffers_freed") == 1


def test_RB5b_child_ptes_read_live(rb, live, behaviour):
    """What pagemap cannot show: the child's PTEs of the VM_PFNMAP mapping
    right after fork (page walks skip it). A dump's page table has them:
    copied like VM_MIXEDMAP's, and special; the plain shared mapping's are
    left for the child to fault in."""
    with live.holding(rb.khmap_argv("fork", rb.debugfs)) as held:
        pid, addr = held.point()
        prog = live.state()
        child = [e for e in live.ptes(prog, pid, addr, rb.nr_pages) if e is not None]
    rb.assert_released()
    copied = rb.mode in ("pfnmap", "insert_pages")
    behaviour.check("child PTEs before it touches any (drgn)", rb.nr_pages if copied else 0,
                    len(child))
    behaviour.check("special bit on them (drgn)", [rb.mode == "pfnmap"] if copied else [],
                    sorted({e.special for e in child}))


def test_RB6_two_processes_share_one_buffer(rb):
    before = rb.stats()
    res = rb.khmap("share", rb.debugfs)
    after = rb.assert_released()
    f = res.by_op()
    assert f["second_read"]["token"] == str(0x33)
    assert f["first_sees_second"]["token"] == str(0x17)
    both = parse_page_lines(res.records(), "both")
    first = parse_page_lines(res.records(), "first_only")
    if rb.mode == "pfnmap":
        assert {p.kpagecount for p in both + first} == {0}
    elif rb.mode == "insert_pages":
        assert {p.kpagecount for p in both} == {2}
        assert {p.kpagecount for p in first} == {1}
    else:  # only page 0 was touched, by both
        assert [p.kpagecount for p in both][:2] == [2, 0]
        assert [p.kpagecount for p in first][:2] == [1, 0]
    assert {p.pfn for p in both} == {p.pfn for p in first}, "the buffer moved"
    assert rb.delta(before, after, "mmaps") == 2
    assert rb.delta(before, after, "buffers_freed") == 1
