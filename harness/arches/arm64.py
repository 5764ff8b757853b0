from harness.arches import ArchParams

# Plain -cpu max is about 3x slower under TCG (pointer-auth emulation):
# neoverse-n1 booted to a shell in 2-3.5 s against 8-10 s (platform notes).
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
)
