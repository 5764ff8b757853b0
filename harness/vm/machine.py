"""A started guest machine and keeping hold of it: its process, console
log and agent socket (harness/vm/launcher.py starts one). No QEMU outlives
us: harness.spawn's parent-death signal for a killed harness, a process
group killed on close for everything else, Ctrl-C included.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.arches import Arch
from harness.errors import KhError
from harness.vm.qmp import Qmp

SOCK_PREFIX = "kh-"         # temporary directories of agent sockets: kh-<random>
IVSHMEM_SIZE = "4M"         # a power of two: the BAR is that size (2 MiB blocks: VF)

_live: set[Machine] = set()


def kill_all() -> None:
    for m in list(_live):
        m.kill()


atexit.register(kill_all)  # Ctrl-C and sys.exit; PDEATHSIG covers SIGKILL


class BootError(KhError):
    pass


SWAP_DEVICE = "/dev/vda"   # the only virtio disk a guest gets
PMEM_LABEL = 128 << 10     # the NVDIMM's label area: namespaces can be made and remade
# MiB: namespaces are whole memory sections. arm64 (6.12) fails a 192 MiB
# fs-dax namespace: memremap_pages() -ENOMEM, the vmemmap's 2 MiB blocks
# not fitting the space the namespace keeps for them, and WARNs on the way out.
PMEM_ALIGN = 128
PMEM_MIN = 6 * PMEM_ALIGN  # MiB: room for the layout below
PMEM_BUS = "ACPI.NFIT"           # the bus QEMU's NVDIMM is on (both arches' firmware)
PMEM_DEVS = "/tmp/kh-pmem/dev"  # the layout's devices, a file a namespace
# Where the fs-dax namespaces are mounted (ext4/, xfs/): on tmpfs, since
# virtme-ng's root is read-only.
PMEM_ROOT = "/tmp/kh-pmem"


def pmem_layout(pmem_mb: int) -> list[tuple[str, str, int]]:
    """The namespaces a guest with persistent memory gets, as (name, ndctl
    mode and options, MiB): fs-dax for ext4 and for xfs, device-dax with
    2 MiB and with 4 KiB alignment, 2/6 2/6 1/6 1/6 of the region."""
    unit = pmem_mb // 6 // PMEM_ALIGN * PMEM_ALIGN
    return [("kh-ext4", "-m fsdax", 2 * unit), ("kh-xfs", "-m fsdax", 2 * unit),
            ("kh-dax2m", "-m devdax -a 2M", unit), ("kh-dax4k", "-m devdax -a 4K", unit)]


def pmem_commands(pmem_mb: int) -> list[str]:
    """Namespaces of the layout made on the empty label area, each one's
    device (pmemN, daxN.M) written to PMEM_DEVS/<name>; the fs-dax ones
    given a filesystem and mounted -o dax under PMEM_ROOT."""
    # A new label area is blank: labels first, or the region is one
    # label-less namespace that cannot be divided. The NVDIMM's bus by name:
    # x86_64's legacy pmem (memmap=) may be another bus, and come first.
    cmds = [f"mkdir -p {PMEM_DEVS}", f"ndctl disable-region -b {PMEM_BUS} all 2>/dev/null",
            f"ndctl init-labels -b {PMEM_BUS} -f all 2>/dev/null",
            f"ndctl enable-region -b {PMEM_BUS} all 2>/dev/null"]
    for name, mode, size in pmem_layout(pmem_mb):
        cmds.append(f"ndctl create-namespace -b {PMEM_BUS} {mode} -s {size}M -n {name} | "
                    f"tr -d ' \\n\\t' | sed -nE 's/.*\"(blockdev|chardev)\":\"([^\"]*)\".*/\\2/p'"
                    f" > {PMEM_DEVS}/{name} && test -s {PMEM_DEVS}/{name}")
    # Allocations in 2 MiB stripes, so that files' blocks can back PMD
    # mappings; xfs below 300 MB refused but where fstests run (the three set).
    for fs, mkfs in (("ext4", "mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512"),
                     ("xfs", "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -m reflink=0 "
                             "-d su=2m,sw=1")):
        dev = f"/dev/$(cat {PMEM_DEVS}/kh-{fs})"
        cmds.append(f"{mkfs} {dev} && mkdir -p {PMEM_ROOT}/{fs} && "
                    f"mount -t {fs} -o dax {dev} {PMEM_ROOT}/{fs}")
    return cmds


# A guest's optional devices: a swap disk, an NVDIMM, a virtual IOMMU for vfio-pci
DEVICES = ("swap", "pmem", "vfio")


@dataclass
class MachineSpec:
    """What every launcher needs to know besides the kernel."""
    workdir: Path
    memory: int = 1024           # MiB
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
    swap: int = 0                # MiB: a virtio disk of this size, used as swap
    pmem: int = 0                # MiB: an NVDIMM of this size, its namespaces made (pmem_layout)
    viommu: bool = False         # a virtual IOMMU (x86_64: intel-iommu), for vfio-pci
    overcommit: int | None = None  # vm.overcommit_memory
    hugepages: int = 0           # vm.nr_hugepages
    rwdir: str = ""              # virtme-ng: a host directory the guest may write
    vng_root: str = "auto"       # virtme-ng's root: host (the host's /), kh (ours); auto: kh

    def devices(self) -> tuple[str, ...]:
        """The optional devices these settings give the guest (DEVICES),
        each with kernel modules and tools it needs in the guest."""
        on = {"swap": bool(self.swap), "pmem": bool(self.pmem), "vfio": self.viommu}
        return tuple(d for d in DEVICES if on[d])

    def kernel_append(self, arch: Arch) -> list[str]:
        """Words the kernel command line gets for these settings: the
        user's, and the IOMMU on, passing through every device no driver
        asks to translate (vfio-pci's group gets a domain of its own)."""
        return [*(arch.viommu_append if self.viommu else ()), *self.append.split()]

    def setup_commands(self) -> list[str]:
        """Guest commands that give a booted guest these settings."""
        cmds = []
        if self.swap:
            cmds.append(f"mkswap {SWAP_DEVICE} >/dev/null && swapon {SWAP_DEVICE}")
        if self.pmem:
            cmds += pmem_commands(self.pmem)
        if self.overcommit is not None:
            cmds.append(f"echo {self.overcommit} > /proc/sys/vm/overcommit_memory")
        if self.hugepages:
            # A kernel without hugetlb has no such file: its selftests skip
            # their huge page cases themselves, with their own reasons.
            cmds.append(f"if [ -e /proc/sys/vm/nr_hugepages ]; then "
                        f"echo {self.hugepages} > /proc/sys/vm/nr_hugepages; fi")
        return cmds


class Maker(Protocol):
    """What a Machine keeps of what started it (vm/launcher.py's Launcher)."""
    name: str
    arch: Arch
    spec: MachineSpec
    workdir: Path
    console_log: Path
    launcher_log: Path


class Machine:
    """A started guest: its process, console log and agent socket."""

    def __init__(self, launcher: Maker, accel: str, proc: subprocess.Popen,
                 sock_dir: Path, argv: list[str]):
        self.arch = launcher.arch
        self.name = launcher.name
        self.spec = launcher.spec
        self.workdir = launcher.workdir
        self.console_log = launcher.console_log
        self.launcher_log = launcher.launcher_log
        self.accel = accel
        self.proc = proc
        self.sock_dir = sock_dir
        self.argv = argv
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._qmp: Qmp | None = None
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
                time.sleep(0.005)   # a restored guest is up in a few hundred ms

    def qmp(self) -> Qmp:
        """QEMU's control socket, connected on first use."""
        if self._qmp is None:
            q = Qmp(self.sock_dir / "qmp.sock")
            q.connect(time.monotonic() + 30, self.alive)
            self._qmp = q
        return self._qmp

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

    def stopped(self) -> bool:
        """QEMU runs, but the guest powered off, rebooted or panicked
        (-action shutdown=pause): its memory is still there."""
        if not self.alive() or not (self.sock_dir / "qmp.sock").exists():
            return False
        try:
            return self.qmp().command("query-status").get("status") == "shutdown"
        except KhError:
            return False

    def settle(self, timeout: float) -> None:
        """Until QEMU ends or its guest has stopped, at most timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.alive() and not self.stopped() and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.sock.close()
        if self._qmp is not None:
            self._qmp.close()
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


