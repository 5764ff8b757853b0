"""kharness bench: boot time to first command and command round trip, for
each boot path under each accelerator this host may use, beside each other
in one run; "snapshot" restores guests of the initramfs path from their
snapshot instead of booting them. Figures only, never asserted
(docs/figures.md)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from harness import session
from harness.guest import Guest
from harness.requests import GuestRequest
from harness.vm.accel import kvm_unusable

FIRST = 3          # commands right after the start, counted apart


def run(req: GuestRequest, out: Path, *, paths: list[str], rounds: int, commands: int) -> int:
    if req.target is not None:
        return _target(req, out, rounds * commands)
    assert req.arch is not None
    accels = [req.accel] if req.accel != "auto" else ["kvm", "tcg"]
    if req.accel == "auto" and (why := kvm_unusable(req.arch)) is not None:
        accels.remove("kvm")
        print(f"kharness bench: KVM not measured: {why}")
    print(f"kharness bench: {req.kernel} on {req.arch}, {rounds} boots a path")
    for accel in accels:
        figures: dict[str, tuple[float, float]] = {}
        for boot in paths:
            measured = _path(req.replace(boot=boot, accel=accel),
                             out / f"bench-{boot}-{accel}", rounds, commands)
            if measured is None:
                break   # KVM fell back to TCG: said so, and TCG comes next
            figures[boot] = measured
        base = figures.get("initramfs")
        for boot, (b, t) in figures.items():
            if base and boot != "initramfs":
                print(f"  {boot}/initramfs under {accel}: boot {b / base[0]:.1f}x, "
                      f"round trip {t / base[1]:.1f}x")
    return 0


def _path(req: GuestRequest, out: Path, rounds: int,
          commands: int) -> tuple[float, float] | None:
    """Median boot (or restore) to first command and command round trip of
    one path; a restore's first commands apart (QEMU's translation cache
    starts cold)."""
    restore = req.boot == "snapshot"
    prep = session.prepare(req.replace(boot="initramfs") if restore else req, out)
    prep.boots.snapshots = restore
    if restore:
        session.start(prep).discard()   # the snapshot made (or found): not a restore
    boots: list[float] = []
    trips: list[float] = []
    firsts: list[float] = []
    for _ in range(rounds):
        t0 = time.monotonic()
        guest = session.start(prep)
        guest.run("true")
        boots.append(time.monotonic() - t0)
        assert isinstance(guest, Guest)   # no --target here
        used = guest.machine.accel
        for i in range(commands):
            (firsts if i < FIRST else trips).append(guest.run("true").seconds)
        guest.poweroff()
        if used != req.accel:
            print(f"  {req.accel}: the guest fell back to {used}; not measured")
            return None
    root = prep.spec.vng_root if prep.spec.vng_root != "auto" else "kh"
    label = f"vng ({root} root)" if req.boot == "vng" else req.boot
    trips = trips or firsts
    print(f"  {label:16s} {req.accel}: {'restore' if restore else 'boot'} to first command: "
          f"median {statistics.median(boots):.2f}s (min {min(boots):.2f}, max "
          f"{max(boots):.2f}); next {FIRST} commands: median "
          f"{statistics.median(firsts) * 1000:.0f} ms; then a command round trip: median "
          f"{statistics.median(trips) * 1000:.0f} ms over {len(trips)}")
    return statistics.median(boots), statistics.median(trips)


def _target(req: GuestRequest, out: Path, commands: int) -> int:
    """A real machine is not booted: the round trip of a command is its figure."""
    with session.booted(req, out / "bench-ssh") as (prep, target):
        trips = [target.run("true").seconds for _ in range(commands)]
        t0 = time.monotonic()
        target.dmesg_window()
        window = time.monotonic() - t0
    print(f"kharness bench: {prep.where}, {prep.kernel.release}\n"
          f"  command round trip: median {statistics.median(trips) * 1000:.1f} ms "
          f"(min {min(trips) * 1000:.1f}, max {max(trips) * 1000:.1f}) over {len(trips)}; "
          f"kernel log window {window * 1000:.0f} ms")
    return 0
