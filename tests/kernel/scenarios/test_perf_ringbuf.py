"""RB7: the kernel's own perf ring buffer, perf_event_open + mmap, RB1-RB5.

The seeds' patch ("perf: map pages in advance") moved perf from a fault
handler that set page->mapping to remap_pfn_range() in mmap, VM_PFNMAP:
7.2 has it, 6.12 and 6.1 do not. Every value is read in the guest.
"""

from __future__ import annotations

from conftest import content_row

NR_PAGES = 9   # one control page and 8 data pages


def expect(kernel) -> dict:
    if kernel.version >= (7, 2):      # map_range() in kernel/events/core.c
        return {"read minflt": 0, "VM_PFNMAP": True, "gup": "EFAULT"}
    return {"read minflt": NR_PAGES, "VM_PFNMAP": False, "gup": "0"}  # perf_mmap_fault()


def khperf(guest, op, *args):
    return guest.run(["khmap", op, "perf", str(NR_PAGES), *map(str, args)], check=True)


def test_RB7a_perf_read_every_page(guest, kernel, behaviour):
    f = khperf(guest, "read").fields()
    want = expect(kernel)
    assert f["failed"] == "0"
    behaviour.check("read minflt", want["read minflt"], int(f["minflt"]))
    behaviour.check("VM_PFNMAP", want["VM_PFNMAP"], "pf" in f["vmflags"].split(","))
    behaviour.note("VmFlags of the perf buffer's mapping", f["vmflags"])


def test_RB7b_perf_write_control_page_then_data_page(guest, behaviour):
    recs = [r for r in khperf(guest, "write", 0, 1).records() if "page" in r]
    access = {r["page"]: r["access"] for r in recs}
    behaviour.check("control page write", "ok", access["0"])
    # Only the control page (data_tail) is user space's to write, before the
    # seeds' patch (perf_mmap_fault refuses a write fault past page 0) and after.
    behaviour.check("data page write", "sigbus", access["1"])


def test_RB7c_perf_partial_unmap_refused(guest, behaviour):
    ops = {r["op"]: r.get("result") for r in khperf(guest, "split").records()}
    behaviour.check("munmap part", "EINVAL", ops["munmap_tail"])
    behaviour.check("mremap shrink", "EINVAL", ops["mremap_shrink"])
    assert ops["intact"] == "yes"


def test_RB7d_perf_other_than_a_whole_shared_buffer_refused(guest, behaviour):
    """perf maps its buffer whole and shared: the control page and 2^n data
    pages from offset 0 (a later offset is the AUX area, which needs a
    buffer first); a private mapping is refused."""
    bad = [content_row(behaviour, guest.run(["khmap", "content", "perf", str(pages), str(off),
                                             how], check=True).by_op()["content"],
                       off, pages, how, expect="EINVAL")
           for off, pages, how in [(1, NR_PAGES - 1, "offset"), (0, NR_PAGES - 5, "3 data pages"),
                                   (0, NR_PAGES, "private")]]
    assert not any(bad), "; ".join(b for b in bad if b)


def test_RB7e_perf_gup(guest, kernel, behaviour):
    ops = khperf(guest, "gup", "/nonexistent").by_op()
    want = expect(kernel)["gup"]
    behaviour.check("process_vm_readv", want, ops["process_vm_readv"]["result"])
    behaviour.check("O_DIRECT read", want, ops["odirect_read"]["result"])
    behaviour.check("vmsplice", want, ops["vmsplice"]["result"])


def test_RB7f_perf_fork_child_does_not_inherit(guest, behaviour):
    f = khperf(guest, "fork").by_op()
    assert f["parent_write"]["access"] == "ok"
    # perf sets VM_DONTCOPY: the child has no mapping at that address.
    behaviour.check("child access", "sigsegv", f["child_read"]["access"])
