"""The pipeline from a --kernel spec to a booted guest with our modules loaded.

kernel -> build (modules, helpers) -> image -> boot -> Guest. The CLI's
`run`, `boot`, `repro` and `bench` and the pytest plugin all start guests
through here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness import addresses, arches, cache, claims, mounts, remote, resources
from harness.errors import KhError, UsageError
from harness.guest import Explanation, Guest, GuestDied, Target
from harness.kbuild import helpers, kmod
from harness.kernel import Kernel
from harness.kernels import resolve, running
from harness.requests import GuestRequest
from harness.util import progress
from harness.vm import initramfs, snapshot
from harness.vm.accel import kvm_known
from harness.vm.launcher import Launcher
from harness.vm.machine import BootError, Machine, MachineSpec
from harness.vm.qemu import QemuLauncher
from harness.vm.vng import VngLauncher

SMP_BOOT_ATTEMPTS = 3


@dataclass
class Boots:
    """What a run's guests have made and counted so far: the one part of a
    Prepared that changes as guests start."""
    count: int = 0                      # boot-N folders (and SSH session-N) made
    retries: int = 0                    # boots that failed in the rig and were redone
    restores: int = 0
    images: list[Path] = dataclasses.field(default_factory=list)   # initramfs made so far
    snapshot: Path | None = None        # the snapshot entry guests are restored from
    spare: Spare | None = None          # a guest restored ahead of need (start(ahead=True))
    # Guests come from a snapshot of the first boot (harness/vm/snapshot.py)
    # where the boot path allows; False boots every one (bench's "initramfs",
    # or a snapshot another run holds that this one could not use).
    snapshots: bool = True
    said_no_snapshot: bool = False
    conn: remote.Connection | None = None      # the open connection to a --target


@dataclass(frozen=True)
class Prepared:
    """Everything a boot needs, built once for a run and reused by every boot."""
    kernel: Kernel
    modules: dict[str, Path]          # module name (kh_ringbuf) -> .ko
    helpers: list[Path]
    boot: str
    outdir: Path
    spec: MachineSpec
    target: addresses.Access | None = None        # a real machine, not a QEMU guest
    boots: Boots = dataclasses.field(default_factory=Boots)

    @property
    def where(self) -> str:
        return str(self.target.url) if self.target else f"{self.kernel.arch} guest"

    def variant(self, outdir: Path, **machine: Any) -> Prepared:
        """These guests with some MachineSpec settings changed, under outdir:
        what is built is shared, the boots are counted anew."""
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, **machine),
                                   outdir=outdir,
                                   boots=Boots(snapshots=self.boots.snapshots,
                                               said_no_snapshot=self.boots.said_no_snapshot))


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
    record(outdir, kernel, built)
    return Prepared(kernel, built, bins, boot, outdir, spec, target=target,
                    boots=Boots(conn=conn))


def record(outdir: Path, kernel: Kernel, modules: dict[str, Path]) -> None:
    """What ran, for `kharness debug` on a vmcore of this run: the kernel
    and the modules (with their debug information) loaded into it."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "kernel.json").write_text(kernel.to_json() + "\n")
    (outdir / "modules.json").write_text(
        json.dumps({name: str(path) for name, path in modules.items()}, indent=2) + "\n")


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
        # One image a run and set of kernel modules, not one a guest: a suite
        # restores a guest for every test.
        devices = spec.devices()
        image = prep.outdir / ("-".join(["initramfs", *devices]) + ".cpio")
        if image not in prep.boots.images:
            initramfs.build(prep.kernel, list(prep.modules.values()), prep.helpers, image,
                            devices=devices)
            prep.boots.images.append(image)
        return QemuLauncher(prep.kernel, image, spec)
    return VngLauncher(prep.kernel, prep.helpers[0].parent, spec)


def owner(fresh: str, test: str, rerun: int = 0) -> str:
    """Who a guest belongs to under --fresh (requests.FRESH): a guest that
    another owner had is replaced by one restored anew. test is a pytest
    node id; a rerun of a failed test (--rerun-failures) owns a guest of its
    own in every mode."""
    if rerun:
        return f"{test} rerun {rerun}"
    return {"test": test, "module": test.split("::")[0], "session": ""}[fresh]


def restore_ahead(fresh: str, spec: MachineSpec) -> bool:
    """Whether the next guest is restored while this one works: when more
    are wanted (--fresh test or module), unless the test wants every core (a
    race on several vCPUs)."""
    return fresh != "session" and spec.cpus == 1


def start(prep: Prepared, *, ahead: bool = False) -> Target:
    """A guest as it is right after boot and set-up (boot-N under the output
    dir): restored from the snapshot, or booted where there is none yet or
    the path cannot have one; or attach to the target (session-N), waiting
    --reboot-wait for it to come back if the last session lost it. ahead:
    more will be wanted (--fresh), so start restoring the next one now: QEMU
    loads it while this one works, and the next start takes it at once."""
    if prep.target is not None:
        prep.boots.count += 1
        conn, prep.boots.conn = prep.boots.conn, None
        if conn is None or not conn.alive():
            wait = prep.target.reboot_wait or 0.0
            if wait:
                progress(f"{prep.target.url}: waiting up to {wait:g}s for it to answer")
            conn = remote.Connection.open(prep.target, wait=wait)
        return remote.attach(conn, prep.outdir / f"session-{prep.boots.count}", prep.kernel.release,
                             prep.modules, prep.helpers)
    guest = _take_spare(prep) or _start(prep)
    guest.on_hang = partial(_where_it_hangs, prep)
    if ahead and prep.boots.snapshot is not None:
        prep.boots.count += 1
        restorer = _restorer(prep, prep.outdir / f"boot-{prep.boots.count}", prep.boots.snapshot)
        prep.boots.spare = Spare(restorer.start(connect=False), restorer.record["release"])
    return guest


def _where_it_hangs(prep: Prepared, guest: Guest) -> Explanation:
    """The stacks of a guest that stopped answering, read before it is stopped."""
    from harness.observe import explain
    prog, _ = explain.live(guest, prep.kernel, prep.modules)
    return explain.hang(prog)


def _restorer(prep: Prepared, workdir: Path, entry: Path) -> snapshot.Restorer:
    return snapshot.Restorer(prep.kernel, dataclasses.replace(prep.spec, workdir=workdir), entry)


@dataclass
class Spare:
    """A guest restored ahead of need: its QEMU loads the snapshot while a
    test runs, and stays paused until taken."""
    machine: Machine
    release: str


def _take_spare(prep: Prepared) -> Guest | None:
    spare, prep.boots.spare = prep.boots.spare, None
    if spare is None:
        return None
    try:
        guest = Guest.resume(spare.machine, spare.release, time.monotonic(),
                             quiet=prep.boot == "initramfs")
    except KhError as e:
        progress(f"the guest restored ahead of need did not come up ({e}); restoring another")
        return None
    prep.boots.restores += 1
    return guest


def drop_spare(prep: Prepared) -> None:
    """The guest restored ahead, gone with its folder: nobody used it."""
    spare, prep.boots.spare = prep.boots.spare, None
    if spare is not None:
        spare.machine.kill()
        mounts.remove_tree(spare.machine.workdir)


def _start(prep: Prepared) -> Guest:
    # Several vCPUs under TCG: a boot can die in the kernel's text patching
    # (x86_64 MTTCG, benchmarks/smp_boot.py). That is the rig, not the kernel:
    # boot again, and count it.
    prep.boots.count += 1
    attempts = SMP_BOOT_ATTEMPTS if prep.spec.cpus > 1 else 1
    for attempt in range(1, attempts + 1):
        workdir = prep.outdir / (f"boot-{prep.boots.count}" if attempt == 1 else
                                 f"boot-{prep.boots.count}-retry-{attempt - 1}")
        try:
            return _guest(prep, workdir)
        except (BootError, GuestDied) as e:
            if attempt == attempts:
                raise
            prep.boots.retries += 1
            progress(f"boot {prep.boots.count} with {prep.spec.cpus} vCPUs failed ({e}); booting "
                     f"again ({attempt}/{attempts - 1}), {prep.boots.retries} retried so far")
    raise AssertionError("unreachable")


def _guest(prep: Prepared, workdir: Path) -> Guest:
    """A guest in the state right after boot and set-up: restored from the
    snapshot of that state, which the first boot makes; or booted, where
    the path cannot be saved."""
    launch = launcher(prep, workdir)
    why = launch.snapshot_blocker() if prep.boots.snapshots else "not asked for"
    if why is not None:
        if prep.boots.snapshots and not prep.boots.said_no_snapshot:
            progress(f"every guest is booted, not restored: {why}")
            prep.boots.said_no_snapshot = True
        return _boot(prep, launch)
    accels = launch.accels()
    if len(accels) > 1 and kvm_known() is not True:
        # A new machine: this boot probes KVM, and the accelerator it ends
        # with is part of the snapshot. Saved from the next guest on.
        return _boot(prep, launch)
    plan = snapshot.Plan(launch, accels[0])
    booted: list[Guest] = []
    for _ in range(3):
        try:
            entry = cache.cached(plan.entry,
                                 partial(_boot_and_save, prep, launch, plan, booted),
                                 check=plan.check)
        except _Unsaved:
            return booted[0]   # booted, but not the guest the snapshot was for
        except cache.Held as e:
            return _boot_instead(prep, launch, str(e))
        if booted:
            cache.hold(entry)
            prep.boots.snapshot = entry
            return booted[0]   # saved, and running on
        cache.hold(entry)
        if cache.damage(entry) is not None:     # removed between the check and the hold
            cache.release(entry)
            continue
        guest = _restore(prep, workdir, entry)
        if guest is not None:
            return guest
    raise BootError(f"the snapshot {plan.entry} was made and found damaged three times "
                    f"(logs: {workdir})")


def _restore(prep: Prepared, workdir: Path, entry: Path) -> Guest | None:
    """The guest restored from the snapshot entry (held); None if the entry
    proved damaged and was removed: make it again. Where the failure proves
    nothing against it, a guest booted instead."""
    prep.boots.snapshot = entry
    restorer = _restorer(prep, workdir, entry)
    try:
        guest = Guest.restore(restorer, restorer.record["release"],
                              quiet=prep.boot == "initramfs")
    except snapshot.RestoreError as e:
        prep.boots.snapshot = None
        if not _drop_damaged(entry, e):
            return _boot_instead(prep, launcher(prep, _beside(workdir, "booted")), str(e))
        return None
    prep.boots.restores += 1
    return guest


def _drop_damaged(entry: Path, error: snapshot.RestoreError) -> bool:
    """A snapshot that did not restore, removed (True) only when proven
    damaged and held by no other run: a failure that proves nothing
    against it (a slow load, this run's own bad option) leaves it."""
    why = snapshot.proof_of_damage(entry, error)
    if why is None:
        return False
    with cache.locked(cache.lock_path(entry)):
        if cache.remove_unheld(entry):
            progress(f"{error}; the snapshot is damaged ({why}): making it again")
            return True
    cache.release(entry)
    progress(f"the snapshot {entry} is damaged ({why}), but another run is using it: "
             f"left as it is")
    return False


def _boot_instead(prep: Prepared, launch: Launcher, why: str) -> Guest:
    """This run's guests from here on booted, not restored: the snapshot
    is kept for the runs it serves."""
    progress(f"{why}; the snapshot is kept, and this run boots its guests from here on")
    prep.boots.snapshots, prep.boots.said_no_snapshot = False, True
    return _boot(prep, launch)


def _beside(workdir: Path, what: str) -> Path:
    return workdir.with_name(f"{workdir.name}-{what}")


class _Unsaved(Exception):
    """The guest that booted is not the one its snapshot was planned for."""


def _boot_and_save(prep: Prepared, launch: Launcher, plan: snapshot.Plan,
                   booted: list[Guest], entry: Path) -> list[str]:
    """Boot, save the guest into the snapshot's cache entry, and keep it
    running (in booted) for whoever asked."""
    guest = _boot(prep, launch)
    booted.append(guest)
    if guest.machine.accel != plan.accel:
        raise _Unsaved()        # KVM failed it this time: used, not saved
    try:
        products = plan.save(guest.machine, entry, guest.release)
    except BaseException:
        booted.clear()
        guest.poweroff(timeout=2)
        raise
    rec = snapshot.record(entry)
    progress(f"saved the guest as it booted: {rec['size'] >> 20} MiB in "
             f"{rec['saved_seconds']:.2f}s ({entry})")
    return products


def _boot(prep: Prepared, launch: Launcher) -> Guest:
    guest = Guest.boot(launch, quiet=prep.boot == "initramfs")
    if prep.boot == "initramfs":
        setup = []  # the initramfs init loaded the kernel's own modules
        paths = {n: f"/lib/kh/{p.name}" for n, p in prep.modules.items()}
    else:
        setup = [f"modprobe {name} {args}".strip()
                 for name, args in initramfs.wanted_modules(prep.kernel.arch,
                                                            prep.spec.devices()).items()]
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
