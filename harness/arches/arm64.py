from harness.arches import ArchParams

# Boot to first command under TCG, Debian 6.12, benchmarks/arm64_cpu.py, median
# of 3 on a 2-core host: max 16.3 s (pointer-auth emulation), max,pauth-impdef=on
# 5.4 s, neoverse-n1 4.2 s, cortex-a57 4.3 s. neoverse-n1 is ARMv8.2 with LSE
# atomics, closer to what arm64 servers run than cortex-a57.
ARCH = ArchParams(
    name="arm64",
    deb_arch="arm64",
    kernel_arch="arm64",
    uname_machine="aarch64",
    qemu_binary="qemu-system-aarch64",
    qemu_args=("-M", "virt", "-cpu", "neoverse-n1"),
    kvm_cpu="host",
    console="ttyAMA0",
    cross_prefix="aarch64-linux-gnu-",
    page_size=4096,
    busybox_package="busybox-static",
    qemu_package="qemu-system-arm",
    boot_vmlinux=False,
    build_image="arch/arm64/boot/Image",
)
