"""PAT: remap_pfn_range() memtype tracking on x86_64, over the ivshmem BAR.

kh_mixedmap_pfnmap maps the whole VMA with remap_pfn_range(), which reserves
the range's memory type (an entry of /sys/kernel/debug/x86/pat_memtype_list);
kh_mixedmap_pfnmap_half maps only part of the VMA, which is not reserved.
The helper counts the entries that start at the BAR at each stage; the
window check fails the test on "x86/PAT: freeing invalid memtype".
"""

from __future__ import annotations

import pytest
from conftest import device, need_bar

pytestmark = [pytest.mark.arch("x86_64"), pytest.mark.qemu]   # over the ivshmem BAR
NR = 8


def pat(guest, mode: str, how: str) -> dict[str, dict[str, str]]:
    d = device(guest, "mixedmap", mode)
    bar_pfn = need_bar(d, NR)["bar_pfn"]
    res = guest.run(["khmap", "pat", d.dev, str(NR), how, str(bar_pfn)], check=True)
    d.assert_released()
    ops = res.by_op()
    assert ops["touch"]["access"] == "ok"
    return ops


def test_PAT1a_whole_vma_pfnmap_fork(guest, kernel, behaviour):
    ops = pat(guest, "pfnmap", "fork")
    assert ops["child"]["access"] == "ok"
    assert int(ops["mapped"]["memtypes"]) == 1
    behaviour.note("VmFlags of the BAR's remap_pfn_range() mapping", ops["mapping"]["vmflags"])
    # Up to 6.x the child's copy reserved the range again (track_pfn_copy());
    # 7.x shares one refcounted reservation between parent and child
    # (pfnmap_track_ctx): seen as 2 entries on 6.1, 1 on 7.2.
    behaviour.check("memtype entries with the child", 1 if kernel.version >= (7, 0) else 2,
                    int(ops["child"]["memtypes"]))
    assert int(ops["child_exited"]["memtypes"]) == 1
    behaviour.check("memtype entries after both exit", 0, int(ops["unmapped"]["memtypes"]))


def test_PAT1b_tracking_context_read_live(guest, kernel, live, behaviour):
    """The parent's and the child's VMAs, read from the guest's memory while the child
    lives: 7.x hangs one refcounted pfnmap_track_ctx off both (2
    references); before, struct vm_area_struct has no such member and
    each VMA's copy was reserved again."""
    d = device(guest, "mixedmap", "pfnmap")
    bar_pfn = need_bar(d, NR)["bar_pfn"]
    with live.holding(["khmap", "pat", d.dev, str(NR), "fork", str(bar_pfn)]) as held:
        pid, addr = held.point()
        prog = live.state()     # read while it is held: the memory is live
        child, parent = (live.vma(prog, p, addr) for p in (pid, live.parent(prog, pid)))
        assert child.value_() and parent.value_() and child.value_() != parent.value_()
        if not prog.type("struct vm_area_struct").has_member("pfnmap_track_ctx"):
            seen = "no context: each VMA reserves its own"
        else:
            ctx = child.pfnmap_track_ctx
            shared = ctx.value_() != 0 and ctx.value_() == parent.pfnmap_track_ctx.value_()
            refs = ctx.kref.refcount.refs.counter.value_() if ctx.value_() else 0
            seen = f"{'one shared' if shared else 'separate'} context, {refs} references"
    d.assert_released()
    behaviour.check("pfnmap tracking with the child (drgn)",
                    "one shared context, 2 references" if kernel.version >= (7, 0)
                    else "no context: each VMA reserves its own", seen)


def test_PAT2a_partial_munmap_of_a_tracked_pfnmap(guest, behaviour):
    ops = pat(guest, "pfnmap", "split")
    assert ops["munmap_half"]["result"] == "0"
    # The reservation covers the whole original range until the last part goes.
    assert int(ops["munmap_half"]["memtypes"]) == 1
    behaviour.check("memtype entries after the last munmap", 0, int(ops["unmapped"]["memtypes"]))


def test_PAT2b_tracking_context_after_a_partial_munmap_read_live(guest, kernel, live,
                                                               behaviour):
    """After munmap of the upper half, the VMA left still holds the whole
    range's reservation: on 7.x through its pfnmap_track_ctx, which it now
    holds alone (1 reference) and which still spans all NR pages."""
    d = device(guest, "mixedmap", "pfnmap")
    bar_pfn = need_bar(d, NR)["bar_pfn"]
    with live.holding(["khmap", "pat", d.dev, str(NR), "split", str(bar_pfn)]) as held:
        pid, addr = held.point()
        prog = live.state()     # read while it is held: the memory is live
        vma = live.vma(prog, pid, addr)
        span = vma.vm_end.value_() - vma.vm_start.value_()
        if not prog.type("struct vm_area_struct").has_member("pfnmap_track_ctx"):
            seen = "no context"
        else:
            ctx = vma.pfnmap_track_ctx
            seen = (f"{ctx.kref.refcount.refs.counter.value_()} reference, "
                    f"{ctx.size.value_() // 4096} pages") if ctx.value_() else "none"
    d.assert_released()
    assert span == NR // 2 * 4096
    behaviour.check("pfnmap tracking of the half left (drgn)",
                    f"1 reference, {NR} pages" if kernel.version >= (7, 0) else "no context",
                    seen)


def test_PAT2c_pfnmap_of_part_of_the_vma_is_not_reserved(guest, behaviour):
    for how in ("split", "fork"):
        ops = pat(guest, "pfnmap_half", how)
        behaviour.check(f"memtype entries, partial remap ({how})", 0,
                        int(ops["mapped"]["memtypes"]))
        assert int(ops["unmapped"]["memtypes"]) == 0
