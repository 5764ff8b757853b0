"""Starting a guest machine and keeping hold of it.

A Launcher knows how to start one kind of guest (raw QEMU with our
initramfs, virtme-ng with the host root): its command line for an
accelerator. Launcher.start() picks the accelerator, spawns, and returns a
running Machine: the process, its console log and the connected agent
socket. No QEMU outlives us: harness.spawn's parent-death signal for a
killed harness, a process group killed on close for everything else,
Ctrl-C included.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import spawn
from harness.arches import Arch
from harness.cache import write_atomic
from harness.errors import KhError, UsageError
from harness.kernel import Kernel
from harness.util import cache_root, progress

KVM_DEADLINE = 8.0          # first kernel console bytes under KVM, or it hangs
ACCEL_PROBE_MAX_AGE = 24 * 3600
KVM_PROBE_SAYS_NO = "KVM does not boot guests on this host"
SOCK_PREFIX = "kh-"         # temporary directories of agent sockets: kh-<random>
IVSHMEM_SIZE = "1M"         # a power of two: the BAR is that size

_live: set[Machine] = set()


def kill_all() -> None:
    for m in list(_live):
        m.kill()


atexit.register(kill_all)  # Ctrl-C and sys.exit; PDEATHSIG covers SIGKILL


class BootError(KhError):
    pass


SWAP_DEVICE = "/dev/vda"   # the only virtio disk a guest gets


@dataclass
class MachineSpec:
    """What every launcher needs to know besides the kernel."""
    workdir: Path
    memory_mb: int = 1024
    # One vCPU unless asked: it boots fastest. Several under x86 MTTCG fail
    # about one boot in 50 ("Oops: int3"); session.start boots those again.
    cpus: int = 1
    accel: str = "auto"          # auto, kvm, tcg
    boot_timeout: float = 120.0
    cpu: str | None = None       # overrides the arch's TCG cpu model
    tcg_thread: str | None = None  # TCG's thread=single|multi; None: the arch's choice
    # What some tests need of the guest (upstream mm selftests above all):
    append: str = ""             # added to the kernel command line
    numa: int = 1                # NUMA nodes, memory split evenly, CPUs on node 0
    swap_mb: int = 0             # a virtio disk of this size, used as swap
    overcommit: int | None = None  # vm.overcommit_memory
    hugepages: int = 0           # vm.nr_hugepages
    rwdir: str = ""              # virtme-ng: a host directory the guest may write
    vng_root: str = "auto"       # virtme-ng's root: host (the host's /), kh (ours); auto: kh

    def setup_commands(self) -> list[str]:
        """Guest commands that give a booted guest these settings."""
        cmds = []
        if self.swap_mb:
            cmds.append(f"mkswap {SWAP_DEVICE} >/dev/null && swapon {SWAP_DEVICE}")
        if self.overcommit is not None:
            cmds.append(f"echo {self.overcommit} > /proc/sys/vm/overcommit_memory")
        if self.hugepages:
            # A kernel without hugetlb has no such file: its selftests skip
            # their huge page cases themselves, with their own reasons.
            cmds.append(f"if [ -e /proc/sys/vm/nr_hugepages ]; then "
                        f"echo {self.hugepages} > /proc/sys/vm/nr_hugepages; fi")
        return cmds


class Launcher:
    """One kind of guest: subclasses give argv() for an accelerator."""

    name = "machine"

    def __init__(self, kernel: Kernel, spec: MachineSpec):
        self.kernel = kernel
        self.spec = spec
        self.arch: Arch = kernel.arch
        self.workdir = spec.workdir
        self.console_log = self.workdir / "console.log"
        self.launcher_log = self.workdir / "launcher.log"   # the launcher's own output

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def install_hint(self) -> str:
        return self.arch.qemu_package

    def devices(self, sock_dir: Path) -> list[str]:
        """What every guest gets on either path: the agent's virtio port, and
        a PCI BAR of memory with no struct page behind it for kh_mixedmap
        (ivshmem-plain over a host file, which works on x86_64 and arm64)."""
        return ["-chardev", f"socket,id=khagent,path={sock_dir / 'agent.sock'},"
                            f"server=on,wait=off",
                "-device", "virtio-serial-pci,id=khser",
                "-device", "virtserialport,bus=khser.0,chardev=khagent,name=kh.agent",
                "-object", f"memory-backend-file,id=khshm,size={IVSHMEM_SIZE},"
                           f"mem-path={sock_dir / 'ivshmem'},share=on",
                "-device", "ivshmem-plain,memdev=khshm",
                *self.setting_devices(sock_dir)]

    def setting_devices(self, sock_dir: Path) -> list[str]:
        """The swap disk and NUMA nodes the spec asks for."""
        spec, args = self.spec, []
        if spec.swap_mb:
            disk = self.workdir / "swap.img"
            with open(disk, "wb") as fh:
                fh.truncate(spec.swap_mb << 20)   # sparse: costs nothing until used
            args += ["-drive", f"file={disk},if=none,id=khswap,format=raw,cache=unsafe",
                     "-device", "virtio-blk-pci,drive=khswap"]
        if spec.numa > 1:
            if spec.memory_mb % spec.numa:
                raise UsageError(f"memory {spec.memory_mb} MiB does not split into "
                                 f"{spec.numa} equal NUMA nodes")
            for node in range(spec.numa):
                cpus = f",cpus=0-{spec.cpus - 1}" if node == 0 else ""
                args += ["-object", f"memory-backend-ram,id=khnode{node},"
                                    f"size={spec.memory_mb // spec.numa}M",
                         "-numa", f"node,nodeid={node},memdev=khnode{node}{cpus}"]
        return args

    def accels(self) -> list[str]:
        """The accelerators to try, in order."""
        want = self.spec.accel
        if want in ("kvm", "tcg"):
            return [want]
        why = kvm_unusable(self.arch)
        if why is not None:
            if why.startswith(KVM_PROBE_SAYS_NO):
                progress("KVM: known not to boot guests on this host (cached probe); using TCG")
            return ["tcg"]
        return ["kvm", "tcg"]

    def start(self) -> Machine:
        """A running machine with the agent socket connected."""
        sweep_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        accels = self.accels()
        for accel in accels:
            m = self._spawn(accel)
            if accel == "kvm" and len(accels) > 1:    # auto: this boot is the probe
                why = m.kvm_failure(KVM_DEADLINE)
                if why is not None:
                    m.kill()
                    kept = m.set_aside("kvm")
                    remember_kvm(False, why)
                    progress(f"KVM could not boot the guest: {why}; falling back to TCG "
                             f"(slower); that attempt's log: {kept}")
                    continue
                remember_kvm(True, "booted")
            m.connect()
            return m
        raise BootError("no accelerator could boot the guest")   # accels() is never empty

    def _spawn(self, accel: str) -> Machine:
        self.console_log.unlink(missing_ok=True)
        # AF_UNIX paths stop at 107 bytes: sockets live in a short temp dir,
        # a new one for each attempt.
        sock_dir = Path(tempfile.mkdtemp(prefix=SOCK_PREFIX))
        (sock_dir / "owner").write_text(f"{os.getpid()}\n")
        argv = self.argv(accel, sock_dir)
        (self.workdir / "cmdline").write_text(" ".join(argv) + "\n")
        env = self.env()
        exe = argv[argv.index("--") + 1] if "--" in argv else argv[0]
        if not shutil.which(exe, path=(env or os.environ).get("PATH")):
            shutil.rmtree(sock_dir, ignore_errors=True)
            raise KhError(f"{exe} not found: run ci/setup.sh "
                          f"(it installs {self.install_hint()})")
        with open(self.launcher_log, "wb") as out:
            proc = spawn.spawn(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        return Machine(self, accel, proc, sock_dir)


class Machine:
    """A started guest: its process, console log and agent socket."""

    def __init__(self, launcher: Launcher, accel: str, proc: subprocess.Popen,
                 sock_dir: Path):
        self.launcher = launcher
        self.name = launcher.name
        self.spec = launcher.spec
        self.workdir = launcher.workdir
        self.console_log = launcher.console_log
        self.launcher_log = launcher.launcher_log
        self.accel = accel
        self.proc = proc
        self.sock_dir = sock_dir
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.started = time.monotonic()
        self.boot_seconds = 0.0
        _live.add(self)

    def kvm_failure(self, seconds: float) -> str | None:
        """None once the kernel prints under KVM; else why it did not."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.console_log.exists() and b"Linux version" in self.console_log.read_bytes():
                return None
            if self.proc.poll() is not None:
                return (f"{self.name} exited with status {self.proc.returncode} after "
                        f"{time.monotonic() - self.started:.1f}s: {self.error_line()}")
            time.sleep(0.1)
        return f"no console output within {seconds:.0f}s"

    def set_aside(self, tag: str) -> Path:
        """Keep a failed attempt's logs beside the next attempt's."""
        for p in (self.launcher_log, self.console_log, self.workdir / "cmdline"):
            if p.exists():
                p.rename(p.with_name(f"{p.stem}-{tag}{p.suffix}"))
        return self.launcher_log.with_name(f"{self.launcher_log.stem}-{tag}.log")

    def connect(self) -> None:
        """Connect to the agent socket once QEMU has made it."""
        path = str(self.sock_dir / "agent.sock")
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BootError(f"{self.name} exited with status {self.proc.returncode} "
                                f"before the guest started: {self.error_line()} "
                                f"(log: {self.launcher_log})", detail=self.launcher_tail())
            try:
                self.sock.connect(path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise BootError(f"{self.name} made no agent socket in 30s "
                                    f"(log: {self.launcher_log})") from None
                time.sleep(0.05)

    def error_line(self) -> str:
        """The launcher's own complaint: its last line that names an error."""
        lines = [ln.strip() for ln in self.launcher_tail(40).splitlines() if ln.strip()]
        errors = [ln for ln in lines if any(w in ln.lower() for w in ("error", "fail",
                                                                         "qemu-system"))]
        return (errors or lines or ["no output"])[-1][:300].rstrip(".")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def launcher_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.launcher_log.read_text(errors="replace").splitlines()[-n:])
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
        self.sock.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        _live.discard(self)


def sweep_stale() -> None:
    """Remove the socket directories of runs that died without cleaning up
    (SIGKILL): ours carry their owner's pid, and only dead owners' go."""
    for d in Path(tempfile.gettempdir()).glob(SOCK_PREFIX + "*"):
        try:
            pid = int((d / "owner").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _probe_file() -> Path:
    return cache_root() / "accel-probe.json"


def kvm_known() -> bool | None:
    """The cached verdict on KVM for this host kernel, if fresh and sound."""
    try:
        d = json.loads(_probe_file().read_text())
        if not isinstance(d, dict) or not isinstance(d.get("kvm"), bool):
            return None
        if time.time() - float(d.get("time", 0)) > ACCEL_PROBE_MAX_AGE:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return d["kvm"] if d.get("host") == os.uname().release else None


def kvm_unusable(arch: Arch) -> str | None:
    """Why guests of this arch cannot use KVM here, or None if they may
    (untried: the next auto boot is the probe)."""
    if not arch.native:
        return f"an {arch} guest on this host runs under TCG only"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is absent or not accessible"
    if kvm_known() is False:
        try:
            why = json.loads(_probe_file().read_text()).get("why", "")
        except (OSError, ValueError):
            why = ""
        return f"{KVM_PROBE_SAYS_NO} (cached probe: {why})"
    return None


def remember_kvm(ok: bool, why: str) -> None:
    write_atomic(_probe_file(), json.dumps({"kvm": ok, "why": why, "time": time.time(),
                                            "host": os.uname().release}))
