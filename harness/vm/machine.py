"""A running guest machine: the QEMU process, its console log, the agent socket.

The launchers (raw QEMU with our initramfs, virtme-ng with the host root)
differ only in the command line they build; everything after the process
starts is here: the accel probe, the boot watchdog, and making sure no QEMU
outlives us (PR_SET_PDEATHSIG for a killed harness, a process group killed
on close for everything else, Ctrl-C included).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import arches
from harness.errors import KhError
from harness.kernels import Kernel
from harness.util import cache_root, progress

KVM_DEADLINE = 8.0          # first kernel console bytes under KVM, or it hangs
ACCEL_PROBE_MAX_AGE = 24 * 3600

_live: set["Machine"] = set()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_all() -> None:
    for m in list(_live):
        m.kill()


atexit.register(kill_all)  # Ctrl-C and sys.exit; PDEATHSIG covers SIGKILL


class BootError(KhError):
    pass


IVSHMEM_SIZE = "1M"   # a power of two: the BAR is that size


@dataclass
class MachineSpec:
    """What every launcher needs to know besides the kernel."""
    workdir: Path
    memory_mb: int = 1024
    # One vCPU: under QEMU 7.2's TCG, x86 kernel text patching (static keys,
    # int3) killed the other vCPU with "Oops: int3" in some boots at -smp 2.
    cpus: int = 1
    accel: str = "auto"          # auto, kvm, tcg
    boot_timeout: float = 120.0
    cpu: str | None = None       # overrides the arch's TCG cpu model
    append: list[str] = field(default_factory=list)


class Machine:
    """Base: subclasses provide argv(accel) and the guest arch."""

    name = "machine"

    def __init__(self, kernel: Kernel, spec: MachineSpec):
        self.kernel = kernel
        self.spec = spec
        self.arch = arches.get(kernel.arch)
        self.workdir = spec.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        # AF_UNIX paths stop at 107 bytes; a work dir deep in a tree can exceed it.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="kh-"))
        self.sock_path = self.sock_dir / "agent.sock"
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.launcher_path = self.workdir / "launcher.log"  # the launcher's own output
        self.accel = "tcg"
        self.boot_seconds = 0.0

    # -- subclasses -------------------------------------------------------
    def argv(self, accel: str) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def install_hint(self) -> str:
        return self.arch.qemu_package

    def devices(self) -> list[str]:
        """What every guest gets on either path: the agent's virtio port, and
        a PCI BAR of memory with no struct page behind it for kh_mixedmap
        (ivshmem-plain over a host file, which works on x86_64 and arm64)."""
        return ["-chardev", f"socket,id=khagent,path={self.sock_path},server=on,wait=off",
                "-device", "virtio-serial-pci,id=khser",
                "-device", "virtserialport,bus=khser.0,chardev=khagent,name=kh.agent",
                "-object", f"memory-backend-file,id=khshm,size={IVSHMEM_SIZE},"
                           f"mem-path={self.sock_dir / 'ivshmem'},share=on",
                "-device", "ivshmem-plain,memdev=khshm"]

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        for accel in self._accels():
            self._spawn(accel)
            if accel == "kvm" and not self._console_within(KVM_DEADLINE):
                self.kill()
                _remember_kvm(False, f"no console output within {KVM_DEADLINE:.0f}s")
                progress(f"KVM did not boot the guest within {KVM_DEADLINE:.0f}s; "
                         f"falling back to TCG (slower)")
                continue
            if accel == "kvm":
                _remember_kvm(True, "booted")
            self.accel = accel
            return
        raise BootError("no accelerator could boot the guest")

    def _accels(self) -> list[str]:
        want = self.spec.accel
        if want in ("kvm", "tcg"):
            return [want]
        if self.arch.name != arches.host().name or not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return ["tcg"]
        known = _kvm_known()
        if known is False:
            progress("KVM: known not to boot guests on this host (cached probe); using TCG")
            return ["tcg"]
        return ["kvm", "tcg"]

    def _spawn(self, accel: str) -> None:
        for p in (self.console_log, self.sock_path):
            p.unlink(missing_ok=True)
        argv = self.argv(accel)
        (self.workdir / "cmdline").write_text(" ".join(argv) + "\n")
        env = self.env()
        exe = argv[argv.index("--") + 1] if "--" in argv else argv[0]
        if not shutil.which(exe, path=(env or os.environ).get("PATH")):
            raise KhError(f"{exe} not found: run ci/setup.sh "
                          f"(it installs {self.install_hint()})")
        with open(self.launcher_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_die_with_parent,
                                         start_new_session=True, cwd=self.workdir)
        _live.add(self)
        self.t_start = time.monotonic()

    def _console_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.console_log.exists() and b"Linux version" in self.console_log.read_bytes():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def connect(self) -> socket.socket:
        """The agent socket, once QEMU has made it."""
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BootError(f"{self.name} exited with status {self.proc.returncode} "
                                f"before the guest started (log: {self.launcher_path})",
                                detail=self.launcher_tail())
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.sock_path))
                self.sock = s
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise BootError(f"{self.name} made no agent socket in 30s")
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launcher_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.launcher_path.read_text(
                errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        _live.discard(self)


def _probe_file() -> Path:
    return cache_root() / "accel-probe.json"


def _kvm_known() -> bool | None:
    try:
        d = json.loads(_probe_file().read_text())
    except (FileNotFoundError, ValueError):
        return None
    if time.time() - d.get("time", 0) > ACCEL_PROBE_MAX_AGE or d.get("host") != os.uname().release:
        return None
    return d.get("kvm")


def _remember_kvm(ok: bool, why: str) -> None:
    _probe_file().write_text(json.dumps({"kvm": ok, "why": why, "time": time.time(),
                                         "host": os.uname().release}))
