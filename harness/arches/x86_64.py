from harness.arches import ArchParams

# q35 rather than microvm: microvm hung in half the TCG boots (TSC calibration).
# -cpu max under TCG boots Debian kernels in 3-4 s (platform notes).
ARCH = ArchParams(
    name="x86_64",
    deb_arch="amd64",
    kernel_arch="x86",
    uname_machine="x86_64",
    qemu_binary="qemu-system-x86_64",
    qemu_args=("-M", "q35", "-cpu", "max"),
    kvm_cpu="host",
    console="ttyS0",
    cross_prefix="x86_64-linux-gnu-",
    page_size=4096,
    busybox_package="busybox-static",
    qemu_package="qemu-system-x86",
    boot_vmlinux=True,
    build_image="arch/x86/boot/bzImage",
)
