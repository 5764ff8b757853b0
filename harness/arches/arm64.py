from harness.arches import Arch

# Boot to first command under TCG, Debian 6.12, benchmarks/arm64_cpu.py, median
# of 3 on a 2-core host: max 16.3 s (pointer-auth emulation), max,pauth-impdef=on
# 5.4 s, neoverse-n1 4.2 s, cortex-a57 4.3 s. neoverse-n1 is ARMv8.2 with LSE
# atomics, closer to what arm64 servers run than cortex-a57.
# virt's default GICv2 takes at most 8 vCPUs.
ARCH = Arch(
    name="arm64",
    aliases=("aarch64",),
    deb_arch="arm64",
    uname="aarch64",
    triplet="aarch64-linux-gnu",
    elf_machine=183,
    page_table="arm64",
    kernel_arch="arm64",
    qemu_binary="qemu-system-aarch64",
    qemu_package="qemu-system-arm",
    machine="virt",
    cpu_tcg="neoverse-n1",
    cpu_kvm="host",
    max_cpus=8,
    console="ttyAMA0",
    cross_prefix="aarch64-linux-gnu-",
    busybox_package="busybox-static",
    boot_vmlinux=False,
    build_image="arch/arm64/boot/Image",
    # virtme-ng's arm64 machine puts its 9p and console devices on virtio-mmio.
    vng_needs=(("virtio_mmio", "CONFIG_VIRTIO_MMIO"),),
    # virt describes an NVDIMM only in ACPI: UEFI firmware, which adds 1-2 s
    # to a TCG boot (README figures). A pmem-region node in the device tree
    # (of_pmem) boots without, but gives label-less regions of one namespace
    # each, which ndctl cannot divide or remake as x86_64's can.
    pmem_region="nfit",
    pmem_firmware="/usr/share/AAVMF/AAVMF_CODE.fd",
    pmem_firmware_package="qemu-efi-aarch64",
)
