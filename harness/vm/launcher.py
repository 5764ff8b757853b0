"""A Launcher starts one kind of guest (raw QEMU with our initramfs,
virtme-ng): its command line for an accelerator, the devices every guest
gets, and start(), which picks the accelerator (the first auto boot probes
KVM, harness/vm/accel.py), spawns, and returns a running Machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import spawn
from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.kernel import Kernel
from harness.util import progress
from harness.vm.accel import KVM_DEADLINE, KVM_PROBE_SAYS_NO, kvm_unusable, remember_kvm
from harness.vm.machine import (
    IVSHMEM_SIZE,
    PMEM_LABEL,
    SOCK_PREFIX,
    BootError,
    Machine,
    MachineSpec,
    sweep_stale,
)

_said = {"kvm": False}   # what a process says once, however many guests it starts


# QEMU options whose value is a list of key=value pairs: a comma ends a
# value unless doubled, so every path in one goes through qemu_value().
DRGN_QMP = "drgn.sock"    # the QMP socket drgn reads the guest through

OPTION_LISTS = frozenset({"-chardev", "-object", "-drive", "-device", "-qmp", "-serial",
                          "-netdev", "-numa", "-machine", "-fsdev", "-virtfs"})


def qemu_value(path: Path | str) -> str:
    """A path as a value in a QEMU option list: its commas doubled (a
    --out or TMPDIR with a comma is a user's right)."""
    return str(path).replace(",", ",,")


def _sparse(path: Path, size: int) -> Path:
    """A file of size bytes that costs nothing until written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def check_backing(where: Path, size: int, what: str) -> None:
    """A guest's memory or disk backed by a file under where: one line
    (exit 2) if the file system there cannot hold it once written."""
    probe = where.absolute()
    while not probe.exists() and probe != probe.parent:    # made later, on the same disk
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise UsageError(f"{what}: {size >> 20} MiB is more than the {free >> 20} MiB free "
                         f"under {where}; ask for less or free some space")


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

    def carried(self) -> dict[Path, bool]:
        """Files on its command line that a guest's state needs besides RAM,
        and whether the guest writes them: a snapshot carries them
        (harness/vm/snapshot.py); their names are their own."""
        disks = {self.workdir / "swap.img": self.spec.swap,
                 self.workdir / "pmem.img": self.spec.pmem}
        out = {path: True for path, size in disks.items() if size}
        if self.spec.pmem and self.arch.pmem_firmware:
            out[Path(self.arch.pmem_firmware)] = False
        return out

    def snapshot_blocker(self) -> str | None:
        """Why this kind of guest cannot be saved and restored, if it cannot."""
        return None

    def install_hint(self) -> str:
        return self.arch.qemu_package

    def devices(self, sock_dir: Path) -> list[str]:
        """What every guest gets on either path: the agent's virtio port,
        QMP (harness/vm/qmp.py: snapshots, memory dumps) and a second QMP
        socket for drgn to read the running guest's memory through
        (pagestate.Live, `boot --drgn`: a QMP socket serves one client at a
        time), and a PCI BAR of
        memory with no struct page behind it for kh_mixedmap (ivshmem-plain
        over a host file, which works on x86_64 and arm64; master=on lets
        the guest migrate, its BAR's bytes with it)."""
        return ["-qmp", f"unix:{qemu_value(sock_dir / 'qmp.sock')},server=on,wait=off",
                "-qmp", f"unix:{qemu_value(sock_dir / DRGN_QMP)},server=on,wait=off",
                "-chardev", f"socket,id=khagent,path={qemu_value(sock_dir / 'agent.sock')},"
                            f"server=on,wait=off",
                "-device", "virtio-serial-pci,id=khser",
                "-device", "virtserialport,bus=khser.0,chardev=khagent,name=kh.agent",
                "-object", f"memory-backend-file,id=khshm,size={IVSHMEM_SIZE},"
                           f"mem-path={qemu_value(sock_dir / 'ivshmem')},share=on",
                "-device", "ivshmem-plain,memdev=khshm,master=on",
                "-device", "vmcoreinfo",     # the kernel's VMCOREINFO in memory dumps
                # A kernel that panics (panic=-1) or reboots stops its guest
                # instead of ending QEMU: its memory stays, to be dumped.
                "-action", "reboot=shutdown,shutdown=pause",
                *self.setting_devices(sock_dir)]

    def setting_devices(self, sock_dir: Path) -> list[str]:
        """The IOMMU, swap disk, persistent memory and NUMA nodes the spec asks for."""
        spec, args = self.spec, []
        if spec.viommu:
            # With it QEMU's edu device: one 1 MiB BAR and MSI, and no driver
            # of its own in the guest, for vfio's selftests (their BAR mapping
            # cannot take ivshmem's 256-byte BAR 0).
            args += ["-device", self.arch.viommu, "-device", "edu"]
        if spec.swap:
            disk = _sparse(self.workdir / "swap.img", spec.swap << 20)
            args += ["-drive", f"file={qemu_value(disk)},if=none,id=khswap,format=raw,cache=unsafe",
                     "-device", "virtio-blk-pci,drive=khswap"]
        if spec.pmem:
            args += self.pmem_devices()
        if spec.numa > 1:
            if spec.memory % spec.numa:
                raise UsageError(f"memory {spec.memory} MiB does not split into "
                                 f"{spec.numa} equal NUMA nodes")
            for node in range(spec.numa):
                cpus = f",cpus=0-{spec.cpus - 1}" if node == 0 else ""
                args += ["-object", f"memory-backend-ram,id=khnode{node},"
                                    f"size={spec.memory // spec.numa}M",
                         "-numa", f"node,nodeid={node},memdev=khnode{node}{cpus}"]
        return args

    def pmem_devices(self) -> list[str]:
        """An NVDIMM over a sparse file in the guest's folder, with a label
        area (namespaces made in the guest: machine.pmem_commands). -m and
        -machine merge with the path's own (QEMU merges those options)."""
        spec = self.spec
        if not self.arch.pmem:
            raise UsageError(f"--pmem: no NVDIMM under QEMU for {self.arch.name} guests")
        size = (spec.pmem << 20) + PMEM_LABEL
        check_backing(self.workdir, size, "--pmem")
        disk = _sparse(self.workdir / "pmem.img", size)
        firmware = []
        if self.arch.pmem_firmware:
            if not Path(self.arch.pmem_firmware).exists():
                raise KhError(f"{self.arch.pmem_firmware} not found, which an {self.arch.name} "
                              f"guest with --pmem boots through: run ci/setup.sh (it installs "
                              f"{self.arch.pmem_firmware_package})")
            firmware = ["-bios", self.arch.pmem_firmware]
        return [*firmware, "-machine", "nvdimm=on",
                "-m", f"{spec.memory}M,slots=1,maxmem={spec.memory + spec.pmem + 1}M",
                "-object", f"memory-backend-file,id=khpmem,share=on,"
                           f"mem-path={qemu_value(disk)},size={size}",
                "-device", f"nvdimm,id=khnvdimm,memdev=khpmem,label-size={PMEM_LABEL}"]

    def accels(self) -> list[str]:
        """The accelerators to try, in order."""
        want = self.spec.accel
        if want in ("kvm", "tcg"):
            return [want]
        why = kvm_unusable(self.arch)
        if why is not None:
            if why.startswith(KVM_PROBE_SAYS_NO) and not _said["kvm"]:
                progress("KVM: known not to boot guests on this host (cached probe); using TCG")
                _said["kvm"] = True
            return ["tcg"]
        return ["kvm", "tcg"]

    def start(self, *, connect: bool = True) -> Machine:
        """A running machine with the agent socket connected (or to be
        connected by the caller: a snapshot restored ahead of need)."""
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
            if connect:
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
        return Machine(self, accel, proc, sock_dir, argv)
