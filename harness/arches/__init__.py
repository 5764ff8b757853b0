"""Guest architectures: one frozen record each, loaded from the data modules
beside this file (as kunit_tool's qemu_configs/ and drgn's vmtest
ARCHITECTURES). Adding an arch is adding one module that exports ARCH.

Code passes the Arch object, never its name; what follows from it (is it
the host's? which CROSS_COMPILE?) is computed here, once.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import platform
from dataclasses import dataclass

from harness.errors import UsageError

# vfio's type1 backend and iommufd want interrupt remapping, which QEMU's
# intel-iommu has only with a split irqchip (KVM) and virtio-iommu not at
# all; the scenarios take no interrupts from the device.
UNSAFE_INTERRUPTS = ("vfio_iommu_type1.allow_unsafe_interrupts=1",
                     "iommufd.allow_unsafe_interrupts=1")


@dataclass(frozen=True)
class Arch:
    name: str              # ours: x86_64, arm64, armhf
    aliases: tuple[str, ...]  # other names users and tools give it (uname -m, Debian)
    deb_arch: str          # Debian's name: amd64, arm64, armhf
    uname: str             # what `uname -m` says in a guest (and ELF notes name it)
    triplet: str           # Debian's multiarch directory: usr/lib/<triplet>
    elf_machine: int       # e_machine of its ELF files and of a vmcore made of it
    kernel_arch: str       # ARCH= for kbuild
    qemu_binary: str
    qemu_package: str      # the Debian package that ships qemu_binary
    machine: str           # QEMU -M
    cpu_tcg: str           # QEMU -cpu under TCG
    cpu_kvm: str           # QEMU -cpu under KVM
    max_cpus: int          # vCPUs the machine model takes
    console: str           # kernel console device
    cross_prefix: str      # CROSS_COMPILE on a host of another arch
    busybox_package: str   # Debian package whose busybox goes into the initramfs
    boot_vmlinux: bool     # boot the uncompressed ELF inside the image (PVH)
    build_image: str       # the boot image a source build makes, relative to O=
    tcg_smp_thread: str = "multi"  # TCG threading with several vCPUs (benchmarks/smp_boot.py)
    # The Debian suite whose packages of this arch make the guest's userland
    # (the initramfs busybox, virtme-ng's kh root): one that has the arch.
    userland_suite: str = "bookworm"
    # Modules (and the options that build them) virtme-ng's machine of this
    # arch needs besides its own set: module name -> CONFIG_ option.
    vng_needs: tuple[tuple[str, str], ...] = ()
    # The kernel module that finds QEMU's NVDIMM (--pmem); None: no way yet.
    pmem_region: str | None = None
    # Firmware a guest with an NVDIMM boots through: what gives it the ACPI
    # tables (NFIT) that describe one. None: QEMU's own tables do.
    pmem_firmware: str | None = None
    pmem_firmware_package: str = ""
    # The module of the arch's legacy persistent memory (RAM the kernel's
    # memmap=SIZE!START takes as pmem: the "e820" bus ndctl's dax tests
    # use), loaded in a --pmem guest where the kernel has it; None: none.
    pmem_legacy: str | None = None
    # The IOMMU a guest gets for vfio-pci (guest(viommu=True)), its driver
    # module where Debian builds it as one, and the kernel's options for it.
    viommu: str = "virtio-iommu-pci"
    viommu_module: str = "virtio_iommu"
    viommu_append: tuple[str, ...] = ("iommu.passthrough=1", *UNSAFE_INTERRUPTS)
    viommu_config: str = "CONFIG_VIRTIO_IOMMU"     # the kernel option of its driver
    # Debian's kernel flavours of this arch, the default first (a spec names
    # another: debian:6.12-armmp-lpae); empty: one, named as the arch.
    flavours: tuple[str, ...] = ()
    # How harness/observe/pagestate.py walks and decodes its page tables
    # (and kdump's dumps are readable): None where it cannot, said by name.
    page_table: str | None = None
    # QEMU's kdump-zlib dumps, made readable by drgn (harness/vm/kdump.py
    # mends 64-bit kdump headers); False: QEMU's ELF dump (ELF32 where the
    # guest is 32-bit, which drgn reads as it is).
    kdump: bool = True

    @property
    def pmem(self) -> bool:
        return self.pmem_region is not None

    def __str__(self) -> str:
        return self.name

    @property
    def flavour(self) -> str:
        """Debian's default kernel flavour: the first named, else the arch."""
        return self.flavours[0] if self.flavours else self.deb_arch

    @property
    def native(self) -> bool:
        """Runs on this host without emulation, builds without a cross compiler."""
        return self is host()

    @property
    def cross_compile(self) -> str:
        """CROSS_COMPILE= for this host: empty when native."""
        return "" if self.native else self.cross_prefix

    def cpu(self, accel: str) -> str:
        return self.cpu_kvm if accel == "kvm" else self.cpu_tcg

    def qemu_machine(self, accel: str, cpu: str | None = None, *, cpus: int = 1,
                     tcg_thread: str | None = None) -> list[str]:
        """-M, -cpu and -accel words; `cpu` overrides the TCG model and
        `tcg_thread` the arch's TCG threading for several vCPUs."""
        model = self.cpu("kvm") if accel == "kvm" else (cpu or self.cpu_tcg)
        thread = tcg_thread or (self.tcg_smp_thread if cpus > 1 else None)
        if accel == "tcg" and thread and thread != "multi":
            accel = f"tcg,thread={thread}"
        return ["-M", self.machine, "-cpu", model, "-accel", accel]


def _load() -> dict[str, Arch]:
    found = {}
    for mod in pkgutil.iter_modules(__path__):
        arch = importlib.import_module(f"{__name__}.{mod.name}").ARCH
        found[arch.name] = arch
    return found


ARCHES: dict[str, Arch] = _load()
KNOWN = tuple(sorted(ARCHES))


def get(name: str | Arch) -> Arch:
    if isinstance(name, Arch):
        return name
    for arch in ARCHES.values():
        if name == arch.name or name in arch.aliases:
            return arch
    raise UsageError(f"unknown arch '{name}': known arches are {', '.join(KNOWN)}")


@functools.cache
def host() -> Arch:
    return get(platform.machine())
