"""Raw QEMU with our initramfs: the default path (it boots fastest, see README)."""

from __future__ import annotations

from pathlib import Path

from harness import arches
from harness.kernels import Kernel
from harness.vm.machine import Machine, MachineSpec

# panic=-1 with -no-reboot makes a panicked guest end QEMU at once; the
# verdict comes from the console, since QEMU still exits 0.
BASE_APPEND = ["panic=-1", "rdinit=/init", "mitigations=off", "nokaslr",
               "printk.devkmsg=on", "no_hash_pointers"]


def kernel_append(kernel: Kernel, extra: list[str]) -> str:
    arch = arches.get(kernel.arch)
    return " ".join([f"console={arch.console}", *BASE_APPEND, *extra])


class QemuMachine(Machine):
    name = "qemu"

    def __init__(self, kernel: Kernel, initramfs: Path, spec: MachineSpec):
        super().__init__(kernel, spec)
        self.initramfs = initramfs

    def argv(self, accel: str) -> list[str]:
        a = self.arch
        machine = list(a.qemu_args)
        if accel == "kvm":
            machine[machine.index("-cpu") + 1] = a.kvm_cpu
        elif self.spec.cpu:
            machine[machine.index("-cpu") + 1] = self.spec.cpu
        image = self.kernel.vmlinux if (a.boot_vmlinux and self.kernel.vmlinux) \
            else self.kernel.image
        return [a.qemu_binary, "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", *machine, "-accel", accel,
                "-m", str(self.spec.memory_mb), "-smp", str(self.spec.cpus),
                "-kernel", str(image), "-initrd", str(self.initramfs),
                "-append", kernel_append(self.kernel, self.spec.append),
                "-chardev", f"file,id=khcon,path={self.console_log}",
                "-serial", "chardev:khcon",
                *self.devices()]
