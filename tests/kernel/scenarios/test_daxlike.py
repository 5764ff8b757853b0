"""DX: the DAX-style driver (kmods/daxlike), special and refcounted modes.

DX1-DX6 of the catalogue. The pool's pages belong to the module, so "back
to baseline" is each page at refcount 1 (the module's own) and mapcount 0
after every test (Device.assert_released).
"""

from __future__ import annotations

import pytest
from conftest import content_cases, content_row

from harness.commands import repro
from harness.observe.proc import parse_page_lines

# mode -> what the catalogue expects of it
EXPECT = {
    "special": {"kpagecount": 0, "gup": "EFAULT", "mkwrite": 1},  # no page for GUP
    "refcounted": {"kpagecount": 1, "gup": "0", "mkwrite": 1},
    # special without a special bit (conftest's Device.behaves): a page, and
    # a write to it reaches no pfn_mkwrite
    "unmarked": {"kpagecount": 1, "gup": "0", "mkwrite": 0},
}


def test_DX1a_read_fault_every_page(dx, behaviour):
    # Without a special bit (armhf's armmp) the special mode's pages are
    # inserted refcounted: the row where the arches differ by design.
    behaviour.note("special mode maps as", dx.behaves)
    before = dx.stats()
    res = dx.khmap("read", dx.debugfs)
    after = dx.assert_released()
    n = dx.nr_pages
    assert res.fields()["failed"] == "0"
    assert dx.delta(before, after, "faults") == n
    pages = parse_page_lines(res.records(), "mapped")
    assert len(pages) == n
    behaviour.check("kpagecount while mapped", EXPECT[dx.behaves]["kpagecount"],
                    max(p.kpagecount for p in pages))
    assert all(p.refcount == 1 + p.mapcount for p in pages), pages


def test_DX1b_content_at_every_offset(dx, behaviour):
    """Mappings from other offsets than 0, shorter than the pool, shared and
    private, populated, fixed over another mapping: each page shows the
    block at its offset, as read(2) returns it; a write through a shared
    mapping lands in that block, through a private one in none. (Block 0 is
    left out: DX3 makes it a hole and DX4 moves it, so in a guest shared
    with them it holds no stamp.)"""
    n = dx.nr_pages
    bad = content_cases(dx, behaviour, [(1, n - 1, "write parts exec"), (3, 4, "write fork"),
                                        (n - 1, 1, "populate"), (2, 5, "fixed move"),
                                        (1, n - 2, "private write")])
    bad.append(content_row(behaviour, dx.content(n - 2, 4)["content"], n - 2, 4,
                           "past the end", expect="EINVAL"))
    bad.append(content_row(behaviour, dx.content(1, 2, "noreplace")["content"], 1, 2,
                           "MAP_FIXED_NOREPLACE over a mapping", expect="EEXIST"))
    dx.assert_released()
    assert not any(bad), "; ".join(b for b in bad if b)


def test_DX1c_struct_pages_while_mapped(dx, live, behaviour):
    """The inserted pages' struct page read live from the guest, the mapping
    live: _refcount and _mapcount exactly (kpagecount is only the mapcount,
    and the module's own view is what page_ref_count() says)."""
    with live.holding(dx.khmap_argv("read")):
        prog = live.state()
        pfns = [p[1] for p in dx.pages()]
        seen = [live.page(prog, pfn) for pfn in pfns]
    dx.assert_released()
    assert None not in seen, f"a pool page has no struct page in the dump: {seen}"
    mapcount = EXPECT[dx.behaves]["kpagecount"]     # special PTEs take no mapcount
    behaviour.check("struct page _mapcount+1 while mapped (drgn)", [mapcount],
                    sorted({p.mapcount for p in seen}))
    behaviour.check("struct page _refcount while mapped (drgn)", [1 + mapcount],
                    sorted({p.refcount for p in seen}))
    # The pool's pages are the module's, never anonymous or file pages.
    assert all(p.mapping == 0 and p.head == p.pfn for p in seen), seen


def test_DX2_write_after_read_upgrades_in_place(dx, behaviour):
    before = dx.stats()
    res = dx.khmap("rw", dx.debugfs)
    after = dx.assert_released()
    f = res.by_op()
    block0 = dx.pages()[0]
    assert f["read"]["access"] == f["write"]["access"] == "ok"
    behaviour.check("PFN kept across the write", "yes", f["write"]["same_pfn"])
    assert int(f["write"]["pfn"]) == block0[1], "the PTE does not map the block"
    behaviour.check("mkwrite calls", EXPECT[dx.behaves]["mkwrite"],
                    dx.delta(before, after, "mkwrite_calls"))
    assert block0[4] == 0x5a, "the write did not land in the block"


def hole_expect(mode: str, kernel) -> dict:
    """DX3 by kernel. 6.12 and later refuse the zero page in a VM_MIXEDMAP
    mapping unless it is fsdax or VM_IO (vm_mixed_zeropage_allowed()), so the
    driver's read of a hole allocates the block instead. On 6.1 the write
    to the zero page comes to mkwrite, which zaps it and inserts the block:
    writable at once through vmf_insert_mixed_mkwrite() (special), read-only
    and written on a second fault where only vmf_insert_page() exists."""
    if kernel.version >= (6, 12):
        return {"zero page on read": False, "mkwrite calls": EXPECT[mode]["mkwrite"]}
    return {"zero page on read": True, "mkwrite calls": 2 if mode == "refcounted" else 1}


def test_DX3_write_replaces_the_zero_page_of_a_hole(dx, kernel, behaviour):
    before = dx.stats()
    res = dx.khmap("hole", dx.debugfs)
    after = dx.assert_released()
    f = res.by_op()
    block0 = dx.pages()[0]
    want = hole_expect(dx.behaves, kernel)
    assert f["read"]["access"] == "ok" and f["read"]["byte8"] == "0", "a hole reads as zeroes"
    behaviour.check("zero page on read", want["zero page on read"],
                    f["read"]["zero_page"] == "yes")
    zero = 1 if want["zero page on read"] else 0
    assert dx.delta(before, after, "zero_maps") == zero
    assert dx.delta(before, after, "zero_refused") == 1 - zero
    assert f["write"]["access"] == "ok"
    # The write must never land in the zero page every process reads
    # (Debian's 6.1 armmp did: the known issue mixedmap-zero-page-written).
    behaviour.check("the zero page after the write (byte 8)", 0,
                    int(f["zero_page_after"]["byte8"]))
    assert int(f["write"]["pfn"]) == block0[1], "the PTE does not map the block after the write"
    assert f["write"]["zero_page"] == "no"
    assert block0[4] == 0x5a and block0[5] == 0, "the write did not land in an allocated block"
    behaviour.check("mkwrite calls", want["mkwrite calls"],
                    dx.delta(before, after, "mkwrite_calls"))


def race_expect(mode: str, kernel) -> dict:
    """DX4 by kernel: which mkwrite insert the driver has decides whether the
    stale PTE meets mm/memory.c's WARN_ON_ONCE(!is_zero_pfn()). 6.1 has
    vmf_insert_mixed_mkwrite() (insert_pfn(), then a retry); 6.15 and later
    vmf_insert_page_mkwrite() (insert_page_into_pte_locked(), then SIGBUS to
    the writer); otherwise the driver sees the stale PTE itself and retries."""
    if mode == "unmarked":      # no mkwrite to race: the writer never sees the move
        return {"signature": None, "writer SIGBUS": False, "window": False}
    if mode == "special" and kernel.version < (6, 12):
        return {"signature": "WARNING in insert_pfn", "writer SIGBUS": False, "window": True}
    if mode == "refcounted" and kernel.version >= (6, 15):
        return {"signature": "WARNING in insert_page_into_pte_locked", "writer SIGBUS": True,
                "window": True}
    return {"signature": None, "writer SIGBUS": False, "window": True}


RACE_ROUNDS, RACE_ITERATIONS, RACE_WINDOW_US = 4, 5, 2000


def race(dx, kernel, behaviour, *, rounds: int, iterations: int, window_us: int, what: str,
         until_hit: bool = False, max_rounds: int | None = None):
    """DX4's racer in rounds through the RP loop; the invariants every race
    run shares. Returns the expectation, the reproduction and the stats.
    max_rounds: go on, `rounds` at a time, until the writer entered the
    window at least once (a natural race on a host whose cores are busy
    with other guests may need more)."""
    want = race_expect(dx.behaves, kernel)
    before = dx.stats()
    cmd = ["khmap", "race", dx.dev, str(dx.nr_pages), str(iterations), str(window_us)]
    signature = want["signature"] or "WARNING in insert_"
    rep = repro.reproduce(dx.guest, cmd, signature, rounds=rounds, until_hit=until_hit)
    while (want["window"] and rep.rounds < (max_rounds or rounds) and not rep.hits and
           dx.delta(before, dx.stats(), "mkwrite_stale") == 0):
        more = repro.reproduce(dx.guest, cmd, signature, rounds=rounds, until_hit=until_hit)
        seconds = rep.seconds + more.seconds
        rep = repro.merge([rep, more])
        rep.seconds = seconds
    after = dx.assert_released()
    behaviour.note(what, rep.summary())
    assert not rep.others, "other kernel reports: " + "; ".join(r.title for r in rep.others)
    assert dx.delta(before, after, "moves") == rep.rounds * iterations
    # The module saw its own stale PTE in mkwrite: the window was entered, so
    # a kernel with the check had its chance to print it. Unmarked: no mkwrite.
    behaviour.check("the writer entered the window", want["window"],
                    dx.delta(before, after, "mkwrite_stale") > 0)
    return want, rep


def test_DX4a_block_move_races_the_mkwrite_path(dx, kernel, behaviour):
    """The move publishes the new page, sleeps RACE_WINDOW_US, then zaps: on
    one vCPU the writer runs in that window (19 or 20 moves in 20,
    measured), so each round reaches the WARN where the kernel has it."""
    want, rep = race(dx, kernel, behaviour, rounds=RACE_ROUNDS, iterations=RACE_ITERATIONS,
                     window_us=RACE_WINDOW_US, what="DX4 reproduction")
    behaviour.check("WARN_ON_ONCE rounds", RACE_ROUNDS if want["signature"] else 0, rep.hits)
    sigbus = sum(int(r.fields()["sigbus"]) for r in rep.results)
    behaviour.check("writer SIGBUS", want["writer SIGBUS"], sigbus > 0)


# Where the kernel has the WARN, rounds until the first hit: 20-70% a round
# on two vCPUs (README), so 40 rounds miss it about once in 10,000 runs.
NATURAL_ROUNDS, NATURAL_MAX_ROUNDS, NATURAL_ITERATIONS = 10, 40, 200


@pytest.mark.guest(cpus=2)
def test_DX4b_natural_race_on_two_vcpus(dx, kernel, behaviour):
    """No window: the move's publish-then-zap races the writer only when
    the two run at once, on two vCPUs that TCG runs in parallel (a boot
    that dies in x86 text patching under MTTCG is booted again, see
    session.start). One vCPU never hit it in 10 rounds of 200 moves; two
    hit it in 18 of 20 on arm64 (7.2). The hit rate and its interval go
    into the behaviour matrix."""
    expected = bool(race_expect(dx.behaves, kernel)["signature"])
    want, rep = race(dx, kernel, behaviour, iterations=NATURAL_ITERATIONS, window_us=0,
                     rounds=NATURAL_MAX_ROUNDS if expected else NATURAL_ROUNDS,
                     max_rounds=NATURAL_MAX_ROUNDS, until_hit=expected,
                     what="DX4 natural race")
    behaviour.check("WARN_ON_ONCE seen", bool(want["signature"]), rep.hits > 0)


def test_DX5a_fork_shared_mapping(dx, behaviour):
    res = dx.khmap("fork", dx.debugfs)
    dx.assert_released()
    f = res.by_op()
    assert f["child_read"]["token"] == str(0x42) and f["child_exit"]["status"] == "0"
    child = parse_page_lines(res.records(), "child")[0]
    parent = parse_page_lines(res.records(), "parent_only")[0]
    # VM_MIXEDMAP PTEs are copied at fork: the child maps the same block.
    want = 0 if dx.behaves == "special" else 2
    behaviour.check("block 0 mapcount with the child", want, child.kpagecount)
    # The mapcount alone cannot tell a copied PTE from a child's own fault:
    # pagemap in the child before it touches block 0 can.
    behaviour.check("block 0 present in the child before it touches it", "yes",
                    f["child_before"]["page0"])
    assert parent.kpagecount == want // 2


def test_DX5b_fork_read_live(dx, live, behaviour):
    """Right after fork, before the child touches anything: its PTE of
    block 0 (the parent wrote it) is the parent's copied, special in
    special mode (vmf_insert_mixed(): no struct page to count), normal in
    refcounted mode; the block's struct page counts both mappings or
    neither, exactly."""
    with live.holding(dx.khmap_argv("fork", dx.debugfs)) as held:
        pid, addr = held.point()
        prog = live.state()
        child = live.ptes(prog, pid, addr, 1)[0]
        block0 = dx.pages()[0][1]
        page = live.page(prog, block0)
    dx.assert_released()
    assert child is not None and child.pfn == block0, child
    special = dx.behaves == "special"
    behaviour.check("child's PTE of block 0 special (drgn)", special, child.special)
    assert page is not None
    behaviour.check("block 0 _mapcount+1 / _refcount with the child (drgn)",
                    [0, 1] if special else [2, 3], [page.mapcount, page.refcount])


def test_DX5c_fork_private_mapping_child_writes_a_copy(dx, behaviour):
    res = dx.khmap("forkpriv", dx.debugfs)
    dx.assert_released()
    f = res.by_op()
    block0 = dx.pages()[0]
    assert f["child_write"]["access"] == "ok"
    behaviour.check("child's page is a copy", True, int(f["child_write"]["pfn"]) != block0[1])
    assert int(f["parent_after"]["pfn"]) == block0[1]
    assert f["parent_after"]["byte8"] != str(0x6b), "the child's write reached the block"
    assert block0[4] != 0x6b


def test_DX6_gup_on_the_mapping(dx, kernel, behaviour):
    res = dx.khmap("gup", dx.debugfs)
    dx.assert_released()
    ops = res.by_op()
    want = EXPECT[dx.behaves]["gup"]
    behaviour.check("process_vm_readv", want, ops["process_vm_readv"]["result"])
    if want == "0":
        behaviour.check("O_DIRECT read", "0", ops["odirect_read"]["result"])
        dx.assert_pipe_pin(ops)
    else:
        behaviour.check("O_DIRECT read fails", True, ops["odirect_read"]["result"] != "0")
        behaviour.check("vmsplice fails", True, ops["vmsplice"]["result"] != "0")
    behaviour.check("io_uring fixed buffer", uring_expect(dx.behaves, kernel),
                    ops["uring_register"]["result"])
    assert int(ops["uring_unregistered"]["ref_after"]) == int(ops["uring_register"]["ref_before"])


def uring_expect(mode: str, kernel) -> str:
    """A fixed buffer is a FOLL_LONGTERM pin. 6.1's io_uring refuses any
    file-backed page (EOPNOTSUPP); from 6.5 GUP refuses a long-term writable
    pin of a mapping with write-notify (writable_file_mapping_allowed():
    our mkwrite handlers) with EFAULT. Special PTEs have no page to pin; 6.1's
    io_uring reports that pin failure as EEXIST."""
    if kernel.version >= (6, 5):
        return "EFAULT"
    return "EEXIST" if mode == "special" else "EOPNOTSUPP"
