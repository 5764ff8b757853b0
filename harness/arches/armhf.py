from harness.arches import Arch

# 32-bit arm, Debian's armhf. Debian builds two kernels of it: armmp (no
# LPAE: two-level page tables without a spare bit, so no pte_special() and
# vm_normal_page() guesses from the VMA whether a PFN has a struct page)
# and armmp-lpae (three levels, ARCH_HAS_PTE_SPECIAL like arm64 and x86_64).
# virt with highmem off: armmp cannot reach PCI windows above 4 GiB.
# cortex-a15 has LPAE, so one CPU model boots both flavours.
ARCH = Arch(
    name="armhf",
    aliases=("arm", "armv7l", "armhf"),
    deb_arch="armhf",
    uname="armv7l",
    triplet="arm-linux-gnueabihf",
    elf_machine=40,
    kernel_arch="arm",
    qemu_binary="qemu-system-arm",
    qemu_package="qemu-system-arm",
    machine="virt,highmem=off",
    cpu_tcg="cortex-a15",
    cpu_kvm="host",
    max_cpus=8,
    console="ttyAMA0",
    cross_prefix="arm-linux-gnueabihf-",
    busybox_package="busybox-static",
    boot_vmlinux=False,
    build_image="arch/arm/boot/zImage",
    vng_needs=(("virtio_mmio", "CONFIG_VIRTIO_MMIO"),),
    flavours=("armmp", "armmp-lpae"),
    kdump=False,
)
