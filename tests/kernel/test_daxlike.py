"""DX: the DAX-style driver (kmods/daxlike), special and refcounted modes.

DX1, DX2, DX5 and DX6 of the catalogue. The pool's pages belong to the
module, so "back to baseline" is each page at refcount 1 (the module's own)
and mapcount 0 after every test (Device.assert_released).
"""

from __future__ import annotations

from harness.observe.proc import parse_page_lines

# mode -> what the catalogue expects of it
EXPECT = {
    "special": {"kpagecount": 0, "gup": "EFAULT"},     # special PTEs: no page for GUP
    "refcounted": {"kpagecount": 1, "gup": "0"},
}


def test_DX1_read_fault_every_page(dx, behaviour):
    before = dx.stats()
    res = dx.khmap("read", dx.debugfs)
    after = dx.assert_released()
    n = dx.nr_pages
    assert res.fields()["failed"] == "0"
    assert dx.delta(before, after, "faults") == n
    pages = parse_page_lines(res.records(), "mapped")
    assert len(pages) == n
    behaviour.check("kpagecount while mapped", EXPECT[dx.mode]["kpagecount"],
                    max(p.kpagecount for p in pages))
    assert all(p.refcount == 1 + p.mapcount for p in pages), pages


def test_DX2_write_after_read_upgrades_in_place(dx, behaviour):
    before = dx.stats()
    res = dx.khmap("rw", dx.debugfs)
    after = dx.assert_released()
    f = res.by_op()
    block0 = dx.pages()[0]
    assert f["read"]["access"] == f["write"]["access"] == "ok"
    behaviour.check("PFN kept across the write", "yes", f["write"]["same_pfn"])
    assert int(f["write"]["pfn"]) == block0[1], "the PTE does not map the block"
    behaviour.check("mkwrite calls", 1, dx.delta(before, after, "mkwrite_calls"))
    assert block0[4] == 0x5a, "the write did not land in the block"


def test_DX5_fork_shared_mapping(dx, behaviour):
    res = dx.khmap("fork", dx.debugfs)
    dx.assert_released()
    f = res.by_op()
    assert f["child_read"]["token"] == str(0x42) and f["child_exit"]["status"] == "0"
    child = parse_page_lines(res.records(), "child")[0]
    parent = parse_page_lines(res.records(), "parent_only")[0]
    # VM_MIXEDMAP PTEs are copied at fork: the child maps the same block.
    want = 2 if dx.mode == "refcounted" else 0
    behaviour.check("block 0 mapcount with the child", want, child.kpagecount)
    assert parent.kpagecount == want // 2


def test_DX5_fork_private_mapping_child_writes_a_copy(dx, behaviour):
    res = dx.khmap("forkpriv", dx.debugfs)
    dx.assert_released()
    f = res.by_op()
    block0 = dx.pages()[0]
    assert f["child_write"]["access"] == "ok"
    behaviour.check("child's page is a copy", True, int(f["child_write"]["pfn"]) != block0[1])
    assert int(f["parent_after"]["pfn"]) == block0[1]
    assert f["parent_after"]["byte8"] != str(0x6b), "the child's write reached the block"
    assert block0[4] != 0x6b


def test_DX6_gup_on_the_mapping(dx, behaviour):
    res = dx.khmap("gup", dx.debugfs)
    dx.assert_released()
    ops = res.by_op()
    want = EXPECT[dx.mode]["gup"]
    behaviour.check("process_vm_readv", want, ops["process_vm_readv"]["result"])
    if want == "0":
        behaviour.check("O_DIRECT read", "0", ops["odirect_read"]["result"])
        dx.assert_pipe_pin(ops)
    else:
        behaviour.check("O_DIRECT read fails", True, ops["odirect_read"]["result"] != "0")
        behaviour.check("vmsplice fails", True, ops["vmsplice"]["result"] != "0")
