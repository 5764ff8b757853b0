"""The pipeline from a --kernel spec to a booted guest with our modules loaded.

kernel -> build (modules, helpers) -> image -> boot -> Guest. The CLI's
`run` and `boot` and the pytest plugin all start guests through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import arches
from harness.build import helpers, kmod
from harness.errors import KhError, UsageError
from harness.guest import Guest
from harness.kernels import Kernel, resolve
from harness.vm import initramfs
from harness.vm.machine import MachineSpec
from harness.vm.qemu import QemuMachine

BOOT_PATHS = ("initramfs", "vng")
DEFAULT_MODULES = ("ringbuf", "daxlike", "mixedmap", "splat")


@dataclass
class Prepared:
    """Everything a boot needs, built once for a run and reused by every boot."""
    kernel: Kernel
    modules: dict[str, Path]          # module name (kh_ringbuf) -> .ko
    helpers: list[Path]
    boot: str
    outdir: Path
    spec: MachineSpec
    boots: int = 0


def prepare(kernel_spec: str, arch: str, *, boot: str, outdir: Path,
            modules: tuple[str, ...] = DEFAULT_MODULES, accel: str = "auto",
            cpus: int = 1, memory_mb: int = 1024, offline: bool = False) -> Prepared:
    arches.get(arch)
    if boot not in BOOT_PATHS:
        raise UsageError(f"unknown boot path '{boot}': use one of {', '.join(BOOT_PATHS)}")
    if boot == "vng" and arches.get(arch).name != arches.host().name:
        raise UsageError(f"--boot vng serves the host's root filesystem, which cannot run "
                         f"an {arch} guest: use --boot initramfs")
    kernel = resolve(kernel_spec, arch, offline=offline)
    built = {m.name: m.path for m in (kmod.build(kernel, name) for name in modules)}
    bins = helpers.build(arch)
    if boot == "initramfs":
        initramfs.busybox_for(arch)  # a download for a foreign arch: now, not mid-run
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    spec = MachineSpec(workdir=outdir, accel=accel, cpus=cpus, memory_mb=memory_mb)
    return Prepared(kernel, built, bins, boot, outdir, spec)


def start(prep: Prepared) -> Guest:
    """Boot a fresh guest (boot-N under the output dir) and load our modules."""
    prep.boots += 1
    workdir = prep.outdir / f"boot-{prep.boots}"
    spec = MachineSpec(**{**prep.spec.__dict__, "workdir": workdir})
    if prep.boot == "initramfs":
        image = initramfs.build(prep.kernel, list(prep.modules.values()), prep.helpers,
                                workdir / "initramfs.cpio")
        machine = QemuMachine(prep.kernel, image, spec)
        paths = {n: f"/lib/kh/{p.name}" for n, p in prep.modules.items()}
        setup = []  # the initramfs init loaded the kernel's own modules
    else:
        from harness.vm.vng import VngMachine
        machine = VngMachine(prep.kernel, prep.helpers[0].parent, spec)
        paths = {n: str(p) for n, p in prep.modules.items()}
        setup = [f"modprobe {name} {args}".strip()
                 for name, args in initramfs.KERNEL_MODULES.items()]
    guest = Guest(machine, quiet=prep.boot == "initramfs")
    try:
        guest.boot()
        for cmd in setup:
            guest.run(cmd, check=True)
        for name, path in paths.items():
            res = guest.run(["insmod", path])
            if res.status != 0:
                raise KhError(f"insmod {name} failed in the guest: {res.stderr.strip()} "
                              f"(console log: {machine.console_log})")
        guest.dmesg_window()  # boot messages are not any test's business
    except BaseException:
        guest.poweroff(timeout=2)
        raise
    return guest

