"""Raw QEMU with our initramfs: the default path (it boots fastest, docs/figures.md)."""

from __future__ import annotations

from pathlib import Path

from harness.kernel import Kernel
from harness.vm.launcher import Launcher, qemu_value
from harness.vm.machine import MachineSpec

# panic=-1 with -no-reboot makes a panicked guest end QEMU at once; the
# verdict comes from the console, since QEMU still exits 0.
BASE_APPEND = ["panic=-1", "rdinit=/init", "mitigations=off", "nokaslr",
               "printk.devkmsg=on", "no_hash_pointers"]


class QemuLauncher(Launcher):
    name = "qemu"

    def __init__(self, kernel: Kernel, initramfs: Path, spec: MachineSpec):
        super().__init__(kernel, spec)
        self.initramfs = initramfs

    def carried(self) -> dict[Path, bool]:
        return {**super().carried(), self.initramfs: False}

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        a = self.arch
        image = self.kernel.vmlinux if (a.boot_vmlinux and self.kernel.vmlinux) \
            else self.kernel.image
        return [a.qemu_binary, "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", *a.qemu_machine(accel, self.spec.cpu, cpus=self.spec.cpus,
                                                    tcg_thread=self.spec.tcg_thread),
                "-m", str(self.spec.memory), "-smp", str(self.spec.cpus),
                "-kernel", str(image), "-initrd", str(self.initramfs),
                "-append", " ".join([f"console={a.console}", *BASE_APPEND,
                                      *self.spec.kernel_append(self.arch)]),
                # append: a restored guest's console follows its boot's (snapshot.py)
                "-chardev", f"file,id=khcon,path={qemu_value(self.console_log)},append=on",
                "-serial", "chardev:khcon",
                *self.devices(sock_dir)]
