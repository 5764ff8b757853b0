"""virtme-ng with the host's root filesystem: the path users reach for by name.

The guest sees the host root read-only over 9p, so our modules and helpers
are used where they lie in the cache; the agent is the khagent helper, run as
vng's --exec command, on the same kind of virtio port as under raw QEMU.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from harness.kernel import Kernel
from harness.vm.machine import Launcher, MachineSpec
from harness.vm.qemu import BASE_APPEND


class VngLauncher(Launcher):
    name = "virtme-ng"

    def __init__(self, kernel: Kernel, helper_dir: Path, spec: MachineSpec):
        super().__init__(kernel, spec)
        self.helper_dir = helper_dir
        self.launcher_log = self.console_log  # vng --verbose prints the console

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        agent = (f"PATH={shlex.quote(str(self.helper_dir))}:$PATH "
                 f"{shlex.quote(str(self.helper_dir / 'khagent'))}")
        append = [a for a in BASE_APPEND if not a.startswith("rdinit=")]
        append += self.spec.append.split()
        argv = ["vng", "-r", str(self.kernel.image), "--verbose", "--force-9p",
                "--cpus", str(self.spec.cpus), "--memory", f"{self.spec.memory_mb}M",
                f"--qemu-opts={' '.join(self.devices(sock_dir))}",
                "--append", " ".join(append), "--exec", agent]
        if self.spec.rwdir:
            argv[3:3] = ["--rwdir", self.spec.rwdir]
        if accel == "tcg":
            argv.insert(3, "--disable-kvm")
        if not self.arch.native:
            argv[3:3] = ["--arch", self.arch.name]
        # vng starts QEMU as a grandchild: the reaper takes it down with us.
        return [sys.executable, "-m", "harness.vm.reaper", str(os.getpid()), "--", *argv]

    def install_hint(self) -> str:
        return "virtme-ng into .venv"

    def env(self) -> dict[str, str]:
        # vng runs virtme-run through PATH: our venv's bin must be on it.
        venv_bin = str(Path(sys.executable).parent)
        return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
