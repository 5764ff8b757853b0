"""The pipeline from a --kernel spec to a booted guest with our modules loaded.

kernel -> build (modules, helpers) -> image -> boot -> Guest. The CLI's
`run`, `boot`, `repro` and `bench` and the pytest plugin all start guests
through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import arches, claims, remote, resources
from harness.errors import KhError, UsageError
from harness.guest import Guest, GuestDied, Target
from harness.kbuild import helpers, kmod
from harness.kernel import Kernel
from harness.kernels import resolve, running
from harness.requests import GuestRequest
from harness.util import progress
from harness.vm import initramfs
from harness.vm.launcher import Launcher
from harness.vm.machine import BootError, MachineSpec
from harness.vm.qemu import QemuLauncher
from harness.vm.vng import VngLauncher

BOOT_PATHS = ("initramfs", "vng")
SMP_BOOT_ATTEMPTS = 3


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
    boot_retries: int = 0                      # boots that failed in the rig and were redone
    target: remote.Access | None = None        # a real machine, not a QEMU guest
    conn: remote.Connection | None = None      # the connection prepare() made to it

    @property
    def where(self) -> str:
        return str(self.target.url) if self.target else f"{self.kernel.arch} guest"


def prepare(req: GuestRequest, outdir: Path,
            modules: tuple[str, ...] | None = None) -> Prepared:
    """Kernel, modules and helpers, made once a run (the values were checked
    by harness/options.py): every module of kmods/ unless told which. With a
    target, the kernel is the one it runs.
    outdir is this run's alone (harness.claims) before anything is made."""
    outdir = outdir.resolve()
    claims.claim(outdir)
    conn = None
    target = req.access
    boot = req.boot
    if target is not None:
        conn = remote.Connection.open(target)
        release, machine = remote.uname(conn)
        tarch = arches.get(machine)
        if req.arch is not None and req.arch != tarch:
            conn.close()
            raise UsageError(f"--arch {req.arch}: {target.url} is {tarch}")
        kernel = running.find(release, tarch, req.kernel, where=str(target.url),
                              offline=req.offline)
        boot = "ssh"
    else:
        assert req.kernel is not None and req.arch is not None   # filled in by options
        kernel = resolve(req.kernel, req.arch, offline=req.offline)
    built = {m.name: m.path for m in (kmod.build(kernel, name)
                                      for name in modules or resources.modules())}
    bins = helpers.build(kernel.arch)
    if boot == "initramfs":
        initramfs.busybox_for(kernel.arch)  # a download for a foreign arch: now, not mid-run
    spec = MachineSpec(workdir=outdir, accel=req.accel, cpus=req.cpus, **req.machine())
    return Prepared(kernel, built, bins, boot, outdir, spec, target=target, conn=conn)


@contextmanager
def booted(req: GuestRequest, outdir: Path) -> Iterator[tuple[Prepared, Target]]:
    """A guest of the request, powered off when the block ends; or its
    --target, set up and cleaned up again."""
    prep = prepare(req, outdir)
    guest = start(prep)
    try:
        yield prep, guest
    finally:
        guest.poweroff()


def launcher(prep: Prepared, workdir: Path) -> Launcher:
    """The launcher of the next boot, its files under workdir."""
    spec = dataclasses.replace(prep.spec, workdir=workdir)
    if prep.boot == "initramfs":
        image = initramfs.build(prep.kernel, list(prep.modules.values()), prep.helpers,
                                workdir / "initramfs.cpio",
                                wanted=initramfs.wanted_modules(bool(spec.swap_mb)))
        return QemuLauncher(prep.kernel, image, spec)
    return VngLauncher(prep.kernel, prep.helpers[0].parent, spec)


def start(prep: Prepared) -> Target:
    """Boot a fresh guest (boot-N under the output dir) and load our modules;
    or attach to the target (session-N), waiting --reboot-wait for it to
    come back if the last session lost it."""
    prep.boots += 1
    if prep.target is not None:
        conn, prep.conn = prep.conn, None
        if conn is None or not conn.alive():
            wait = prep.target.reboot_wait or 0.0
            if wait:
                progress(f"{prep.target.url}: waiting up to {wait:g}s for it to answer")
            conn = remote.Connection.open(prep.target, wait=wait)
        return remote.attach(conn, prep.outdir / f"session-{prep.boots}", prep.kernel.release,
                             prep.modules, prep.helpers)
    # Several vCPUs under TCG: a boot can die in the kernel's text patching
    # (x86_64 MTTCG, benchmarks/smp_boot.py). That is the rig, not the kernel:
    # boot again, and count it.
    attempts = SMP_BOOT_ATTEMPTS if prep.spec.cpus > 1 else 1
    for attempt in range(1, attempts + 1):
        workdir = prep.outdir / (f"boot-{prep.boots}" if attempt == 1 else
                                 f"boot-{prep.boots}-retry-{attempt - 1}")
        try:
            return _boot(prep, workdir)
        except (BootError, GuestDied) as e:
            if attempt == attempts:
                raise
            prep.boot_retries += 1
            progress(f"boot {prep.boots} with {prep.spec.cpus} vCPUs failed ({e}); booting "
                     f"again ({attempt}/{attempts - 1}), {prep.boot_retries} retried so far")
    raise AssertionError("unreachable")


def _boot(prep: Prepared, workdir: Path) -> Guest:
    guest = Guest.boot(launcher(prep, workdir), quiet=prep.boot == "initramfs")
    if prep.boot == "initramfs":
        setup = []  # the initramfs init loaded the kernel's own modules
        paths = {n: f"/lib/kh/{p.name}" for n, p in prep.modules.items()}
    else:
        setup = [f"modprobe {name} {args}".strip()
                 for name, args in initramfs.wanted_modules(bool(prep.spec.swap_mb)).items()]
        paths = {n: str(p) for n, p in prep.modules.items()}
    try:
        for cmd in setup:
            guest.run(cmd, check=True)
        for name, path in paths.items():
            res = guest.run(["insmod", path])
            if res.status != 0:
                raise KhError(f"insmod {name} failed in the guest: {res.stderr.strip()} "
                              f"(console log: {guest.machine.console_log})")
        for cmd in prep.spec.setup_commands():
            res = guest.run(cmd)
            if res.status != 0:
                raise KhError(f"guest setting failed: {cmd}: {(res.stderr or res.stdout).strip()}"
                              f" (console log: {guest.machine.console_log})")
        guest.dmesg_window()  # boot messages are not any test's business
    except BaseException:
        guest.poweroff(timeout=2)
        raise
    return guest
