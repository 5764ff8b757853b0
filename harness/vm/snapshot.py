"""Snapshots: a guest booted once (modules loaded, settings applied, the
kernel log drained), saved whole, and restored as many times as tests,
rounds and recoveries need.

Saving is QEMU's own migration, to a file: QMP `stop`, `migrate` to
`exec:cat > state`, `cont` (the guest that was saved goes on serving).
Restoring is a new QEMU with the saved guest's command line, paths moved
to the new guest's folders, and `-incoming exec:cat state`; it comes up
paused, and `cont` runs it. QEMU 7.2 here has no `file:` migration and no
mapped-ram: exec:cat streams the pages, zero pages as flags, so a 1 GiB
guest that booted our initramfs is ~80 MB (docs/figures.md).

A snapshot is a cache entry (harness/cache.py) keyed by the kernel, the
arch and the normalised command line; its record names the QEMU binary,
the kernel image and the initramfs it was made with, and one that does not
match what this run would boot is made again with a notice, as is a
truncated state file (the entry's recorded sizes) or one QEMU refuses to
load (harness/session.py). Files the guest reads or writes outside its RAM
travel with it: the initramfs (read by QEMU at start) and the swap disk
(its blocks are the guest's); virtme-ng's host filesystem over 9p or
virtiofs does not migrate, so that path boots every guest.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

from harness.cache import Outdated, damage
from harness.errors import KhError
from harness.kernel import Kernel
from harness.util import cache_root
from harness.vm.launcher import OPTION_LISTS, Launcher, qemu_value
from harness.vm.machine import BootError, Machine, MachineSpec

FORMAT = 1            # what a snapshot entry holds; a change makes every one again
STATE = "state"
RECORD = "snapshot.json"
CONSOLE = "console.log"      # the boot's console up to the save: each restore's starts with it
SOCK, WORK, SNAP = "@SOCK@", "@WORK@", "@SNAP@"
# QEMU 7.2 caps a migration at 128 MiB/s unless told: a local file takes all.
BANDWIDTH = 64 << 30
SAVE_TIMEOUT = 120.0


# What QEMU says, and only says, when the stream it reads is not a guest
# it can load (truncated, garbled, another QEMU's): proof of a damaged state.
LOAD_FAILED = "load of migration failed"


class RestoreError(BootError):
    """A snapshot's guest did not come up. stream: QEMU said the state
    itself would not load; anything else (a slow load, a bad option of
    this run's own) says nothing against the snapshot."""

    def __init__(self, message: str, *, stream: bool = False):
        super().__init__(message)
        self.stream = stream


def proof_of_damage(entry: Path, error: RestoreError) -> str | None:
    """Why the entry is proven damaged, or None if nothing proves it: its
    recorded sizes, the state's checksum, QEMU's own word on the stream."""
    why = damage(entry)
    if why is not None:
        return why
    try:
        want = record(entry).get("sha256")
    except (OSError, ValueError) as e:
        return f"unreadable record ({e})"
    if want and _digest(entry / STATE) != want:
        return "its state is not what was saved (sha256 differs)"
    if error.stream:
        return "QEMU could not load its state"
    return None


@cache
def qemu_identity(binary: str) -> dict[str, Any]:
    """The QEMU that saves and loads: its version line and the binary's stat,
    so a package upgrade (same version string, new build) counts too."""
    path = shutil.which(binary)
    if path is None:
        raise KhError(f"{binary} not found: run ci/setup.sh")
    st = Path(path).resolve().stat()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    version = (out.stdout.splitlines() or ["unknown"])[0]
    return {"version": version, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _file_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(path: Path) -> str:
    """The file's sha256, read once a version of it: a guest is planned at
    every restore that no spare serves, over the same initramfs."""
    st = path.stat()
    return _digest_of(path, st.st_size, st.st_mtime_ns)


@cache
def _digest_of(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Plan:
    """What a snapshot of one launcher's guest is: its entry, its command
    line with the per-guest paths as placeholders, and the record a
    snapshot must carry to be restored for it."""

    def __init__(self, launcher: Launcher, accel: str):
        self.launcher = launcher
        self.accel = accel
        self.carried = launcher.carried()
        fake_sock = launcher.workdir / ".kh-sock"
        self.template = normalise(launcher.argv(accel, fake_sock), fake_sock,
                                  launcher.workdir, self.carried)
        k = launcher.kernel
        self.identity = {
            "format": FORMAT,
            "qemu": qemu_identity(self.template[0]),
            "kernel": _file_identity(k.vmlinux if k.vmlinux and launcher.arch.boot_vmlinux
                                     else k.image),
            "files": {path.name: _digest(path)
                      for path, writable in self.carried.items() if not writable},
            "accel": accel,
        }
        # What the guest was told after boot (vm.overcommit_memory, hugepages,
        # swapon) is in its RAM, not on its command line: part of the key too.
        self.setup = launcher.spec.setup_commands()
        key = hashlib.sha256(json.dumps([self.template, self.identity["files"], self.setup],
                                        sort_keys=True).encode()).hexdigest()[:16]
        self.entry = (cache_root() / "snapshots" / k.arch.name /
                      f"{k.release}-{key}")

    def check(self, entry: Path) -> None:
        """Raise cache.Outdated if the entry was made with another QEMU or kernel."""
        rec = json.loads((entry / RECORD).read_text())
        was, now = rec.get("identity", {}), self.identity
        for what in ("format", "qemu", "kernel", "files", "accel"):
            if was.get(what) != now[what]:
                raise Outdated(f"made with another {what} ({_said(what, was.get(what))}; "
                            f"this run has {_said(what, now[what])})")

    def save(self, machine: Machine, entry: Path, release: str) -> list[str]:
        """Save the running guest into entry, then let it run on; the
        products whose sizes prove the entry whole."""
        q = machine.qmp()
        t0 = time.monotonic()
        q.command("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
        q.command("stop")
        # QEMU says "completed" once the stream is in the pipe; cat may still
        # be writing it. The state has its name only when cat is done.
        state, part = entry / STATE, entry / f"{STATE}.part"
        q.command("migrate", uri=f"exec:cat > {shlex.quote(str(part))} && "
                                 f"mv {shlex.quote(str(part))} {shlex.quote(str(state))}")
        deadline = time.monotonic() + SAVE_TIMEOUT
        while not state.exists():
            info = q.command("query-migrate")
            status = info.get("status")
            if status == "completed":   # cat's turn: a few ms, unless it failed
                deadline = min(deadline, time.monotonic() + 10)
            if status in ("failed", "cancelled") or not machine.alive() or \
                    time.monotonic() > deadline:
                raise BootError(f"QEMU could not save the guest: "
                                f"{info.get('error-desc', status)} (log: {machine.launcher_log})")
            time.sleep(0.005)
        shutil.copyfile(machine.console_log, entry / CONSOLE)
        for path, writable in self.carried.items():
            if writable:
                _sparse_copy(path, entry / path.name)
            else:
                shutil.copyfile(path, entry / path.name)
        q.command("cont")
        seconds = time.monotonic() - t0
        record = {"identity": self.identity, "template": self.template,
                  "sha256": _digest(state),
                  "carried": {p.name: w for p, w in self.carried.items()}, "release": release,
                  "setup": self.setup,
                  "saved_seconds": round(seconds, 3), "size": state.stat().st_size,
                  "memory_mb": machine.spec.memory}
        (entry / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        return [STATE, RECORD, CONSOLE, *(p.name for p in self.carried)]


def record(entry: Path) -> dict[str, Any]:
    return json.loads((entry / RECORD).read_text())


def _said(what: str, value: Any) -> str:
    if what == "qemu" and isinstance(value, dict):
        return str(value.get("version"))
    if what == "kernel" and isinstance(value, dict):
        return str(value.get("path"))
    return "?" if value is None else "its own" if isinstance(value, dict) else str(value)


def _sparse_copy(src: Path, dest: Path) -> None:
    """A disk image, its holes kept (a swap disk is mostly holes)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)


def normalise(argv: list[str], sock_dir: Path, workdir: Path,
              carried: dict[Path, bool]) -> list[str]:
    """The command line with this guest's own paths as placeholders: files
    only read come from the snapshot, the rest are the new guest's own (a
    file written, such as the swap disk, is in the guest's folder)."""
    out, flag = [], ""
    for a in argv:
        spell = qemu_value if flag in OPTION_LISTS else str
        for path, writable in carried.items():
            if not writable:
                a = a.replace(spell(path), f"{SNAP}/{path.name}")
        out.append(a.replace(spell(sock_dir), SOCK).replace(spell(workdir), WORK))
        flag = a
    return out


def fill(template: list[str], values: dict[str, Path]) -> list[str]:
    """The template's placeholders replaced by this guest's paths, spelt as
    QEMU reads them where they are (commas doubled in an option list)."""
    out, flag = [], ""
    for a in template:
        spell = qemu_value if flag in OPTION_LISTS else str
        for k, v in values.items():
            a = a.replace(k, spell(v))
        out.append(a)
        flag = a
    return out


class Restorer(Launcher):
    """A launcher whose guest is a snapshot's, loaded rather than booted."""

    name = "qemu"

    def __init__(self, kernel: Kernel, spec: MachineSpec, entry: Path):
        super().__init__(kernel, spec)
        self.entry = entry
        self.record = json.loads((entry / RECORD).read_text())

    def accels(self) -> list[str]:
        return [self.record["identity"]["accel"]]

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        # The console so far (QEMU appends to it): how this kernel booted,
        # then what it says from the restore on.
        boot = (self.entry / CONSOLE).read_bytes()
        self.console_log.write_bytes(boot + f"\n[kharness: restored from {self.entry} at "
                                            f"{time.strftime('%H:%M:%S')}]\n".encode())
        for name, writable in self.record["carried"].items():
            if writable:
                _sparse_copy(self.entry / name, self.workdir / name)
        argv = fill(self.record["template"],
                    {SOCK: sock_dir, WORK: self.workdir, SNAP: self.entry})
        return [*argv, "-incoming", f"exec:cat {shlex.quote(str(self.entry / STATE))}"]


def resume(machine: Machine, deadline: float) -> None:
    """Wait for the incoming guest to be loaded, connect its agent's port,
    then run it. The port must be connected before the guest runs: it was
    at the save, and a guest that finds its host side gone reads EOF."""
    try:
        q = machine.qmp()
        while (status := q.command("query-status", deadline=deadline)["status"]) == "inmigrate":
            if time.monotonic() > deadline:
                raise RestoreError(f"the snapshot did not load in time "
                                   f"(log: {machine.launcher_log})")
            time.sleep(0.005)
        if status not in ("paused", "postmigrate", "running"):
            raise RestoreError(f"the restored guest is {status}, not paused")
        machine.connect()
        if status != "running":
            q.command("cont", deadline=deadline)
    except RestoreError:
        raise
    except KhError as e:
        machine.wait(2)     # QEMU's own complaint reaches its log as it exits
        said = machine.launcher_tail(40)
        raise RestoreError(f"QEMU could not load the snapshot: {machine.error_line()} "
                           f"({e}; log: {machine.launcher_log})",
                           stream=LOAD_FAILED in said) from None
