"""VF: a PCI BAR through vfio-pci (drivers/vfio/pci/vfio_pci_core.c): QEMU's
ivshmem-plain device (its 4 MiB BAR 2 over a host file) taken from
kh_mixedmap and bound to vfio-pci behind a virtual IOMMU (Debian builds
no VFIO_NOIOMMU: intel-iommu on x86_64, virtio-iommu on arm64, every other
device passed through), mapped through the device fd with a type1
container (khvfio).

The mapping is VM_PFNMAP, faulted in by vfio_pci_core: 6.1's first fault
remapped the whole VMA with remap_pfn_range() (and its PAT tracking then
WARNs in untrack_pfn() when part of the mapping goes, a known issue: VF4); 6.12 maps
2 MiB blocks with huge faults where the BAR and address are aligned.
"""

from __future__ import annotations

import pytest
from conftest import IVSHMEM, bind_pci, content_row, guest_if_kernel_has, vfio_needs

from harness.guest import Guest

pytestmark = [pytest.mark.qemu, pytest.mark.guest(viommu=True)]

BAR = 2
MIB = 4
PAGES = MIB * 256
HUGE_PFNMAP = (6, 12)      # vfio_pci_mmap_huge_fault()


@pytest.fixture
def vf(request, kernel) -> tuple[Guest, str]:
    """The ivshmem device, bound to vfio-pci: its BDF."""
    guest = guest_if_kernel_has(request, vfio_needs(kernel.arch))
    assert isinstance(guest, Guest), "the qemu mark keeps SSH targets out"
    bdf = bind_pci(guest, IVSHMEM, "vfio-pci")
    return guest, bdf


def khvfio(vf, op: str, *args: int) -> dict[str, dict[str, str]]:
    guest, bdf = vf
    return guest.run(["khvfio", op, bdf, str(BAR), str(MIB), *map(str, args)],
                     check=True).by_op()


def test_VF1a_content_from_an_offset(vf, behaviour):
    """Every BAR page stamped with its index through one mapping lands in
    QEMU's file behind the BAR at that page; mappings from BAR page 3, 512
    (2 MiB: a huge fault) and 513, shorter than the BAR, show the pages at
    their offset."""
    bad = [content_row(behaviour, khvfio(vf, "content", off, pages)["content"], off, pages)
           for off, pages in [(3, 100), (512, 512), (513, 200)]]
    data = (vf[0].machine.sock_dir / "ivshmem").read_bytes()
    last = [int.from_bytes(data[(i + 1) * 4096 - 8:(i + 1) * 4096], "little")
            for i in range(PAGES)]
    wrong = [i for i, w in enumerate(last) if w != (0x4B48 << 48 | i << 20 | 511)]
    assert not any(bad), "; ".join(b for b in bad if b)
    assert not wrong, f"BAR pages {wrong[:8]} do not hold their stamp in QEMU's file"


def test_VF1b_fault_every_page_and_read_back(vf, kernel, behaviour):
    f = khvfio(vf, "fault")
    assert f["read"]["failed"] == "0"
    flags = f["mapping"]["vmflags"].split(",")
    behaviour.note("VmFlags of the BAR's mapping", f["mapping"]["vmflags"])
    assert {"pf", "io"} <= set(flags), f"not a VM_PFNMAP|VM_IO mapping: {flags}"
    behaviour.check("read faults", MIB // 2 if kernel.version >= HUGE_PFNMAP else 1,
                    int(f["read"]["minflt"]))
    writes = int(f["write"]["minflt"])
    if kernel.arch.name == "x86_64":
        behaviour.check("write faults after read", 0, writes)
    else:   # a CPU without hardware dirty bits (virtme-ng's -cpu) faults to set them
        assert writes <= MIB // 2, f"{writes} write faults after read"
    # What the guest wrote through the mapping is in the BAR: QEMU's file behind it.
    guest = vf[0]
    data = (guest.machine.sock_dir / "ivshmem").read_bytes()
    words = [int.from_bytes(data[i * 4096:i * 4096 + 4], "little") for i in range(PAGES)]
    assert words == [0x6B000000 | i for i in range(PAGES)], "the BAR does not hold the writes"


def test_VF2_fork(vf, behaviour):
    f = khvfio(vf, "fork")
    behaviour.check("child reads the parent's write", [str(0x42), "0"],
                    [f["child"]["token"], f["child_exit"]["status"]])


def test_VF3_gup_refused(vf, behaviour):
    f = khvfio(vf, "gup")
    behaviour.check("process_vm_readv on the BAR", "EFAULT", f["process_vm_readv"]["result"])
    behaviour.check("O_DIRECT into the BAR", "EFAULT", f["odirect_read"]["result"])
    behaviour.check("vmsplice of the BAR", "EFAULT", f["vmsplice"]["result"])
    behaviour.check("io_uring fixed buffer in the BAR (FOLL_LONGTERM)", "EFAULT",
                    f["uring_register"]["result"])


def test_VF4_munmap_part_mremap(vf, behaviour):
    # 6.1 remapped the VMA whole on its first fault; untrack_pfn() looks the
    # range up from a PTE the cut has zapped, and WARNs: a kernel bug, the
    # known issue vfio-untrack-pfn-partial-munmap (ci/known-issues.toml).
    f = khvfio(vf, "split")
    for op in ("munmap_tail", "munmap_middle", "mremap_shrink", "mremap_move"):
        behaviour.check(op, "0", f[op]["result"])
    behaviour.check("mremap_grow", "EFAULT", f["mremap_grow"]["result"])
    assert f["moved"]["access"] == "ok"
