from harness.arches import UNSAFE_INTERRUPTS, Arch

# q35 rather than microvm: microvm hung in half the TCG boots (TSC calibration).
# -cpu max under TCG boots Debian kernels in 3-4 s (platform notes).
ARCH = Arch(
    name="x86_64",
    aliases=("amd64", "x86-64"),
    deb_arch="amd64",
    uname="x86_64",
    triplet="x86_64-linux-gnu",
    elf_machine=62,
    page_table="x86_64",
    kernel_arch="x86",
    qemu_binary="qemu-system-x86_64",
    qemu_package="qemu-system-x86",
    machine="q35",
    cpu_tcg="max",
    cpu_kvm="host",
    max_cpus=255,
    console="ttyS0",
    cross_prefix="x86_64-linux-gnu-",
    busybox_package="busybox-static",
    boot_vmlinux=True,
    build_image="arch/x86/boot/bzImage",
    pmem_region="nfit",          # QEMU's nvdimm is described by ACPI's NFIT
    pmem_legacy="nd_e820",       # memmap=SIZE!START: an e820 type-12 range
    # intel-iommu is built into Debian's kernels (virtio-iommu is a module
    # from 6.12); interrupt remapping wants a split irqchip, which TCG has not
    viommu="intel-iommu,intremap=off",
    viommu_module="",
    viommu_config="CONFIG_INTEL_IOMMU",
    viommu_append=("intel_iommu=on", "iommu=pt", *UNSAFE_INTERRUPTS),
)
