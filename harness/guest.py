"""The Guest API the tests use: run(cmd) -> Result, dmesg windows, liveness.

Commands go to the agent (helpers/khagent.c) over a virtio port of their own,
base64-framed, so the kernel's console is never parsed for command output
and a command's exit status is the guest's word, not a guess.
"""

from __future__ import annotations

import base64
import errno
import itertools
import os
import select
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from harness.errors import KhError
from harness.observe import reports
from harness.util import progress
from harness.vm import kdump, snapshot
from harness.vm.launcher import Launcher
from harness.vm.machine import BootError, Machine


@dataclass
class Result:
    cmd: str
    status: int
    stdout: str          # decoded for display and parsing (bad bytes as U+FFFD)
    stderr: str
    seconds: float
    stdout_bytes: bytes = b""    # exactly what the command wrote
    stderr_bytes: bytes = b""

    def check(self) -> Result:
        if self.status != 0:
            raise GuestCommandError(
                f"guest command failed with status {self.status}: {self.cmd}",
                detail=(self.stderr or self.stdout)[-2000:])
        return self

    def fields(self) -> dict[str, str]:
        """key=value pairs from every line of stdout, later ones winning."""
        out: dict[str, str] = {}
        for rec in self.records():
            out.update(rec)
        return out

    def by_op(self) -> dict[str, dict[str, str]]:
        """The records that name an op= (khmap's lines), keyed by it."""
        return {r["op"]: r for r in self.records() if "op" in r}

    def records(self) -> list[dict[str, str]]:
        """One dict a stdout line made of key=value words."""
        recs = []
        for line in self.stdout.splitlines():
            pairs = [w.split("=", 1) for w in line.split() if "=" in w]
            if pairs:
                recs.append(dict(pairs))
        return recs


class Target(Protocol):
    """What a test gets: a QEMU guest (Guest) or a real machine over SSH
    (remote.SshTarget); the tests cannot tell which."""
    release: str
    quiet: bool
    dmesg_log: Path

    @property
    def workdir(self) -> Path: ...
    @property
    def console_log(self) -> Path: ...

    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            check: bool = False) -> Result: ...
    def put(self, src: Path | bytes, dest: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None: ...
    def read(self, path: str) -> str: ...
    def dmesg_window(self) -> str: ...
    def dmesg_peek(self) -> str: ...
    def console_since_mark(self) -> str: ...
    def alive(self) -> bool: ...
    def close(self) -> None: ...
    def poweroff(self) -> None: ...
    def discard(self) -> None: ...
    @property
    def died(self) -> GuestDied | None: ...


class GuestCommandError(KhError):
    pass


@dataclass
class Explanation:
    """What a failed test's guest says of its own state (observe/explain.py)."""
    line: str       # for the failure's message
    text: str       # for the failure's body
    full: str       # for the test's folder,
    file: str = ""  # as this file (hang.txt, pages.txt)


class GuestDied(KhError):
    """The guest stopped answering: it panicked, hung, or QEMU went away."""

    def __init__(self, message: str, *, console_log: Path, found: list[reports.Report],
                 hang: Explanation | None = None):
        first = f": {found[0].title}" if found else ""
        where = f"; {hang.line}" if hang else ""
        # A kernel that reported a bug and died is a finding (1), not a broken rig (3).
        kernel_said = any(r.kind is not reports.Kind.MACHINE for r in found)
        super().__init__(f"{message}{first}{where} (console log: {console_log})",
                         detail="\n".join([*(r.title for r in found),
                                           *([hang.text] if hang else [])]),
                         exit_code=1 if kernel_said else 3)
        self.console_log = console_log
        self.reports = found
        self.hang = hang    # where it hung: the stacks read before it was stopped


WORKDIR = "/tmp"    # where the agent runs commands
DUMP_TIMEOUT = 600.0   # seconds a memory dump may take


def quote(cmd: str | list[str]) -> str:
    """A command as the guest's shell reads it: a string as given, a list quoted."""
    return cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd)


class Guest:
    def __init__(self, machine: Machine, *, default_timeout: float = 60.0,
                 quiet: bool = True):
        self.machine = machine
        # Nothing but our commands runs in a quiet guest, so system-wide counters
        # (vmstat) move only for what a test did. virtme-ng's udev and systemd
        # bits make them drift by a few pages: there they are not compared.
        self.quiet = quiet
        self.default_timeout = default_timeout
        self._ids = itertools.count(1)
        self._buf = b""
        self.release = ""
        self.dmesg_log = machine.workdir / "dmesg.log"
        self.died: GuestDied | None = None
        self.busy = False   # a command is in flight: the agent would not hear POWEROFF
        self.console_mark = 0  # console offset where the current dmesg window began
        self.still = False  # its vCPUs stopped for a reader (hold_still) until the next command
        # Reads where a guest that stopped answering hangs, before it is
        # stopped (session.start sets it: drgn, with the kernel's symbols).
        self.on_hang: Callable[[Guest], Explanation] | None = None
        # The drgn Program that reads its memory, and its page-table levels
        # (observe/pagestate.program_of): one, as QMP serves one client.
        self.drgn: tuple[Any, int] | None = None
        self.drgn_ahead: tuple[Any, dict[str, Any]] | None = None   # pagestate.open_ahead

    @property
    def workdir(self) -> Path:
        return self.machine.workdir

    @property
    def console_log(self) -> Path:
        return self.machine.console_log

    # -- boot and shutdown --------------------------------------------------
    @classmethod
    def boot(cls, launcher: Launcher, *, quiet: bool = True) -> Guest:
        """Start a machine and wait for its agent's READY line."""
        t0 = time.monotonic()
        guest = cls(launcher.start(), quiet=quiet)
        m = guest.machine
        try:
            line = guest._readline(t0 + m.spec.boot_timeout, what="boot")
        except GuestDied as e:
            raise BootError(f"the guest did not come up: {e}", detail=e.detail) from None
        if not line.startswith("READY"):
            m.kill()
            raise BootError(f"unexpected first line from the guest agent: {line!r}")
        guest.release = line.split()[1]
        m.boot_seconds = time.monotonic() - t0
        progress(f"guest {guest.release} up in {m.boot_seconds:.1f}s "
                 f"({m.name}, {m.accel}, console: {m.console_log})")
        return guest

    @classmethod
    def restore(cls, launcher: Launcher, release: str, *, quiet: bool = True) -> Guest:
        """Start a machine from a snapshot (harness/vm/snapshot.py) and run it."""
        t0 = time.monotonic()
        return cls.resume(launcher.start(connect=False), release, t0, quiet=quiet)

    @classmethod
    def resume(cls, machine: Machine, release: str, since: float, *,
               quiet: bool = True) -> Guest:
        """A machine loading a snapshot (started at since), run once loaded,
        with the host's clock and fresh random bytes."""
        guest = cls(machine, quiet=quiet)
        guest.release = release
        guest.console_mark = len(machine.console_text())   # the boot's part is no test's
        try:
            snapshot.resume(machine, time.monotonic() + machine.spec.boot_timeout)
            guest.refresh()
        except BaseException:
            machine.kill()
            raise
        machine.boot_seconds = time.monotonic() - since
        return guest

    def refresh(self) -> None:
        """The host's clock and 32 random bytes, reseeding the kernel's
        generator: two guests restored from one snapshot must differ."""
        n = next(self._ids)
        now = time.time_ns()
        request = f"FRESH {n} {now // 10**9}.{now % 10**9:09d} {os.urandom(32).hex()}\n"
        status, _ = self._exchange(n, request.encode(), "clock and random pool",
                                   time.monotonic() + self.default_timeout)
        if status != 0:
            raise GuestCommandError(f"the restored guest could not take the host's clock "
                                    f"and random bytes: {os.strerror(status)}")

    def hold_still(self) -> None:
        """Stop its vCPUs (QMP stop), so that its memory holds still for a
        reader (drgn over QMP), until the next command, which resumes them."""
        if not self.still:
            self.machine.qmp().command("stop")
            self.still = True

    def _go_on(self) -> None:
        if self.still:
            self.still = False
            if self.machine.alive() and self.died is None:
                self.machine.qmp().command("cont")

    def dump(self, dest: Path) -> tuple[int, float]:
        """The guest's memory as a vmcore at dest (QEMU's dump-guest-memory:
        kdump-compressed where this QEMU can for the guest, ELF otherwise),
        the guest paused meanwhile; its size and the seconds it took. A disk
        that fills is an OSError naming dest, and leaves no part behind."""
        q = self.machine.qmp()
        formats = q.command("query-dump-guest-memory-capability").get("formats", [])
        arch = self.machine.arch
        fmt = "kdump-zlib" if "kdump-zlib" in formats and arch.kdump else "elf"
        part = dest.with_name(dest.name + ".part")
        t0 = time.monotonic()
        q.command("stop")
        self.still = False      # resumed below, whoever stopped it
        try:
            q.command("dump-guest-memory", paging=False, protocol=f"file:{part}", format=fmt,
                      deadline=time.monotonic() + DUMP_TIMEOUT)
        except KhError as e:
            part.unlink(missing_ok=True)
            # QEMU says only "failed to write page data": a disk with less
            # room than the guest's memory is the reason it could not.
            st = os.statvfs(dest.parent)
            if "write" in str(e) and st.f_bavail * st.f_frsize < self.machine.spec.memory << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest)) from None
            raise
        finally:
            if self.machine.alive() and self.died is None:
                q.command("cont")
        try:
            if kdump.is_flat(part):     # QEMU 7.2's stream format: made a plain file
                kdump.reassemble(part, dest)
            else:
                part.rename(dest)
            if fmt != "elf":
                kdump.finish(dest, arch.uname)
        except OSError as e:
            dest.unlink(missing_ok=True)
            raise OSError(e.errno, e.strerror, str(dest)) from None
        except kdump.Unreadable as e:     # QEMU's dump is there; drgn may not read it
            progress(f"{dest}: left as QEMU wrote it: {e}")
        finally:
            part.unlink(missing_ok=True)
        dest.chmod(0o644)
        info = dest.stat()     # what it takes on disk: the bitmaps of arm64's are sparse
        return min(info.st_size, info.st_blocks * 512), time.monotonic() - t0

    def discard(self) -> None:
        """Gone at once: a guest restored from a snapshot keeps nothing worth a
        clean shutdown."""
        self.machine.kill()

    def poweroff(self, timeout: float = 20.0) -> None:
        m = self.machine
        if m.alive() and self.died is None and not self.busy:
            self._go_on()
            try:
                m.sock.sendall(b"POWEROFF\n")
            except OSError:
                pass
            m.settle(timeout)
        m.kill()

    close = poweroff

    def alive(self) -> bool:
        return self.died is None and self.machine.alive()

    def dumpable(self) -> bool:
        """Its memory can still be dumped: it runs, or its kernel panicked
        or rebooted and QEMU stopped it there (-action shutdown=pause)."""
        return self.machine.alive() and (self.died is None or self.machine.stopped())

    # -- commands -------------------------------------------------------------
    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            check: bool = False) -> Result:
        res, _ = self._command("RUN", cmd, timeout)
        return res.check() if check else res

    def round(self, cmd: str | list[str], *,
              timeout: float | None = None) -> tuple[Result, str]:
        """One exchange for a reproduction round: the agent re-arms
        WARN_ONCE (clear_warn_once), runs the command, and sends the kernel
        log it made (the window, as dmesg_window() gives it)."""
        res, log = self._command("ROUND", cmd, timeout)
        self._keep_window(log)
        return res, log

    def _command(self, verb: str, cmd: str | list[str],
                 timeout: float | None) -> tuple[Result, str]:
        text = quote(cmd)
        n = next(self._ids)
        payload = base64.b64encode(text.encode()).decode()
        t0 = time.monotonic()
        status, got = self._exchange(n, f"{verb} {n} {payload}\n".encode(), text,
                                     t0 + (timeout or self.default_timeout))
        out, err = got["OUT"], got["ERR"]
        return (Result(text, status, out.decode(errors="replace"), err.decode(errors="replace"),
                       time.monotonic() - t0, out, err), got["LOG"].decode(errors="replace"))

    def put(self, src: Path | bytes, dest: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None:
        """A file into the guest, byte for byte; its directory is made. A
        relative dest is taken from where commands run (/tmp)."""
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        dest = dest if dest.startswith("/") else f"{WORKDIR}/{dest}"
        n = next(self._ids)
        path64 = base64.b64encode(dest.encode()).decode()
        what = f"put {dest}"
        status, got = self._exchange(
            n, f"PUT {n} {len(data)} {mode:o} {path64}\n".encode() + data, what,
            time.monotonic() + (timeout or self.default_timeout))
        if status != 0:
            raise GuestCommandError(f"could not put {dest} into the guest",
                                    detail=got["ERR"].decode(errors="replace")[-2000:])

    def _exchange(self, n: int, request: bytes, what: str,
                  deadline: float) -> tuple[int, dict[str, bytes]]:
        """Send one request; the status of its END and its sections' bytes
        (OUT, ERR, LOG)."""
        if self.died is not None:
            raise self.died
        self._go_on()
        try:
            self.machine.sock.sendall(request)
        except OSError:
            self._fail(f"the guest channel closed before '{what}' was sent",
                       death="lost connection to test machine")
        sections: dict[str, list[str]] = {"OUT": [], "ERR": [], "LOG": []}
        section: list[str] | None = None
        self.busy = True
        while True:
            line = self._readline(deadline, what=what)
            word = line.split(" ")
            if word[0] in sections and len(word) == 2 and word[1] == str(n):
                section = sections[word[0]]
            elif word[0] == "END" and word[1] == str(n):
                status = int(word[2])
                break
            elif section is not None:
                section.append(line)
        self.busy = False
        return status, {k: _b64(v) for k, v in sections.items()}

    def dmesg_peek(self) -> str:
        """The kernel log as it stands, leaving the test's window alone."""
        return self.run("dmesg", check=True).stdout

    def read(self, path: str) -> str:
        return self.run(["cat", path], check=True).stdout

    def _readline(self, deadline: float, *, what: str) -> str:
        sock = self.machine.sock
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                silent = what == "boot" and not self.machine.console_text().strip()
                self._fail(f"'{what}' did not finish in time; the guest was stopped",
                           death="no output from test machine" if silent else "timed out")
            ready, _, _ = select.select([sock], [], [], min(left, 0.5))
            if ready:
                chunk = sock.recv(65536)
                if not chunk:
                    self._fail(f"the guest went away during '{what}'",
                               death="lost connection to test machine")
                self._buf += chunk
            elif not self.machine.alive():
                self._fail(f"QEMU exited during '{what}'",
                           death="lost connection to test machine")
            elif self.machine.stopped():
                self._fail(f"the guest's kernel stopped it (a panic or a reboot) during "
                           f"'{what}'", death="lost connection to test machine")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def _fail(self, message: str, *, death: str) -> NoReturn:
        """Stop the machine; what the kernel said, or else how the machine
        died (syzkaller's vm monitor titles), becomes the reports."""
        m = self.machine
        hang = None
        if death != "timed out":
            m.settle(5)  # a panicking kernel may still be printing
        elif self.on_hang is not None and m.alive():
            hang = self._where_it_hangs()
        if not m.stopped():     # a stopped guest's memory stays for a dump
            m.kill()
        console = self.console_since_mark()
        found = reports.parse(console) or [reports.machine_death(death, m.console_text())]
        self.died = GuestDied(message, console_log=m.console_log, found=found, hang=hang)
        raise self.died

    def _where_it_hangs(self) -> Explanation | None:
        assert self.on_hang is not None
        try:
            return self.on_hang(self)
        except Exception as e:      # drgn's and QMP's: the timeout is still the news
            return Explanation(f"its stacks could not be read ({type(e).__name__}: {e})",
                               "", "")

    # -- kernel log -------------------------------------------------------------
    def dmesg_window(self) -> str:
        """What the kernel printed since the last call (the agent's /dev/kmsg
        cursor); the whole log stays on the host."""
        n = next(self._ids)
        _, got = self._exchange(n, f"KLOG {n}\n".encode(), "kernel log",
                                time.monotonic() + self.default_timeout)
        text = got["OUT"].decode(errors="replace")
        self._keep_window(text)
        return text

    def _keep_window(self, text: str) -> None:
        with open(self.dmesg_log, "a") as fh:
            fh.write(text)
        self.console_mark = len(self.machine.console_text())

    def console_since_mark(self) -> str:
        """The console since the window began: all we have once the guest is gone."""
        return self.machine.console_text()[self.console_mark:]


def _b64(lines: list[str]) -> bytes:
    return base64.b64decode("".join(lines))

