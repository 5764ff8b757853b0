"""Real machines over SSH: the Guest API on a host that already runs the
kernel under test (paramiko).

One connection serves a whole run; each command is a channel of it. What
kharness brings (modules, helpers) goes to a private directory on the
target, made at attach and removed at close, with the modules unloaded.
The kernel log is read from /dev/kmsg by sequence number (khkmsg), so a
test's window is exact on a machine that has been up for months and whose
log others read; nothing is cleared.
"""

from __future__ import annotations

import re
import select
import shlex
import time
from pathlib import Path
from typing import NoReturn

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from harness.addresses import Access
from harness.errors import KhError, UsageError
from harness.guest import GuestCommandError, GuestDied, Result, quote
from harness.observe import reports
from harness.util import progress

CONNECT_TIMEOUT = 15.0
KMSG_TAIL = 40      # kernel log lines a lost connection's report carries


class _HostKeys(paramiko.MissingHostKeyPolicy):
    """Unknown keys are refused, or with accept_new added to the file."""

    def __init__(self, access: Access, file: Path):
        self.access = access
        self.file = file

    def missing_host_key(self, client, hostname, key) -> None:
        name = self.access.url.known_hosts_name
        line = f"{name} {key.get_name()} {key.get_base64()}"
        fp = getattr(key, "fingerprint", "")
        if not self.access.accept_new:
            port = f"-p {self.access.url.port} " if self.access.url.port != 22 else ""
            raise KhError(f"host key of {name} is not known ({key.get_name()}"
                          f"{' ' + fp if fp else ''}): check it and add it with 'ssh-keyscan "
                          f"{port}{self.access.url.host} >> {self.file}', or pass "
                          f"--accept-new-host-key to trust it on first connection")
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file, "a") as fh:
            fh.write(line + "\n")
        progress(f"added the host key of {name} ({key.get_name()}) to {self.file}")


class Connection:
    """One SSH connection to the target, its commands as channels."""

    def __init__(self, access: Access, client: paramiko.SSHClient):
        self.access = access
        self.client = client

    @classmethod
    def open(cls, access: Access, *, wait: float = 0.0) -> Connection:
        """Connect, trying for `wait` seconds while the machine is not up."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return cls._open(access)
            except _Unreachable as e:
                if time.monotonic() >= deadline:
                    raise KhError(str(e)) from None
                time.sleep(2)

    @classmethod
    def _open(cls, access: Access) -> Connection:
        url = access.url
        client = paramiko.SSHClient()
        system = Path("~/.ssh/known_hosts").expanduser()
        if system.is_file():
            client.load_host_keys(str(system))
        mine = access.known_hosts or system
        if access.known_hosts is not None and access.known_hosts.is_file():
            client.load_host_keys(str(access.known_hosts))
        client.set_missing_host_key_policy(_HostKeys(access, mine))
        try:
            client.connect(url.host, url.port, username=url.user,
                           key_filename=str(access.identity) if access.identity else None,
                           look_for_keys=access.identity is None, allow_agent=True,
                           timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise KhError(f"host key of {url.known_hosts_name} has changed (it offered "
                          f"{e.key.get_name()} {e.key.get_base64()[:16]}..., known_hosts "
                          f"has another): if the machine was reinstalled, remove the old "
                          f"key with 'ssh-keygen -R \"{url.known_hosts_name}\"' and connect "
                          f"again; otherwise someone may be in between") from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise KhError(f"{url}: authentication as {url.user} failed ({e}): give a key "
                          f"with --identity or load one into ssh-agent") from None
        except KhError:
            client.close()
            raise
        except NoValidConnectionsError:
            client.close()
            raise _Unreachable(f"cannot connect to {url}: connection refused (no sshd on port "
                               f"{url.port}?)") from None
        except TimeoutError:
            client.close()
            raise _Unreachable(f"cannot connect to {url}: no answer in "
                               f"{CONNECT_TIMEOUT:g}s") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            client.close()
            raise _Unreachable(f"cannot connect to {url}: {e or type(e).__name__}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        return cls(access, client)

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def exec(self, command: str, timeout: float, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """(status, stdout, stderr) of a shell command fed stdin. TimeoutError
        if it did not end in time (the caller kills it), ConnectionError if
        the connection went away meanwhile."""
        try:
            chan = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(command)
        except (AttributeError, OSError, paramiko.SSHException, EOFError) as e:
            raise ConnectionError(str(e) or type(e).__name__) from None
        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError) as e:
            if not self.alive():
                raise ConnectionError(str(e) or type(e).__name__) from None
            # The command stopped reading (a full disk): its status says why.
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    if chan.eof_received:
                        break
                if not self.alive():
                    raise ConnectionError("the connection dropped")
                if time.monotonic() > deadline:
                    raise TimeoutError
                select.select([chan], [], [], 0.2)
            return chan.recv_exit_status(), bytes(out), bytes(err)
        finally:
            chan.close()

    def close(self) -> None:
        self.client.close()


class _Unreachable(KhError):
    pass


class SshTarget:
    """A real machine behind SSH, with the Guest API the tests use."""

    quiet = False      # other processes run there: system-wide counters drift

    def __init__(self, conn: Connection, workdir: Path, *, default_timeout: float = 60.0):
        self.conn = conn
        self.url = conn.access.url
        self.workdir = workdir
        self.default_timeout = default_timeout
        workdir.mkdir(parents=True, exist_ok=True)
        self.dmesg_log = workdir / "kmsg.log"      # every window, in order
        self.console_log = self.dmesg_log          # all a remote machine shows us
        self.died: GuestDied | None = None
        self.release = ""
        self.dir = ""              # the private directory on the target
        self.modules: list[str] = []
        self.cursor = -1           # /dev/kmsg sequence number of the next record
        self.window = ""           # what the current window has read so far

    # -- set-up and tear-down -------------------------------------------------
    def attach(self, kernel_release: str, modules: dict[str, Path], helpers: list[Path]) -> None:
        """Upload and load what the tests need; the target must run the kernel
        the modules were built for (checked again: it may have rebooted into
        another)."""
        ident = self.run("id -u; uname -r", check=True).stdout.split()
        if ident[0] != "0":
            raise KhError(f"{self.url} logs in as uid {ident[0]}: loading modules needs root "
                          f"(CAP_SYS_MODULE); use ssh://root@{self.url.host}")
        self.release = ident[1]
        if self.release != kernel_release:
            raise UsageError(f"{self.url} now runs {self.release}, not {kernel_release} "
                             f"that the modules were built for")
        self.dir = self.run("mktemp -d /tmp/kh-XXXXXX", check=True).stdout.strip()
        loaded = self.run("cat /proc/modules", check=True).stdout
        busy = [n for n in modules if re.search(rf"^{n} ", loaded, re.M)]
        if busy:
            raise KhError(f"{', '.join(busy)} already loaded on {self.url} (another run, or "
                          f"one that was killed): unload with 'rmmod {' '.join(busy)}'")
        for h in helpers:
            self.put(h, h.name, 0o755)
        for path in modules.values():
            self.put(path, path.name)
        self.run('grep -q " /sys/kernel/debug " /proc/mounts || '
                 'mount -t debugfs debugfs /sys/kernel/debug', check=True)
        for name, path in modules.items():
            res = self.run(["insmod", path.name])
            if res.status != 0:
                raise KhError(f"insmod {name} failed on {self.url}: {res.stderr.strip()}")
            self.modules.append(name)
        self.cursor = self._kmsg_end()
        progress(f"{self.url}: {self.release}, {len(modules)} modules loaded, files in "
                 f"{self.dir}")

    def close(self) -> None:
        """Unload our modules, remove what we uploaded, hang up."""
        if self.alive():
            for name in reversed(self.modules):
                self.run(["rmmod", name], timeout=30)
            if self.dir:
                self.run(["rm", "-rf", self.dir], timeout=30)
        self.modules.clear()
        self.conn.close()

    poweroff = close
    discard = close      # a real machine is not restored: let it go, cleaned up

    def alive(self) -> bool:
        return self.died is None and self.conn.alive()

    # -- commands ---------------------------------------------------------------
    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            check: bool = False) -> Result:
        if self.died is not None:
            raise self.died
        text = quote(cmd)
        limit = timeout or self.default_timeout
        where = f"cd {self.dir} && PATH={self.dir}:$PATH " if self.dir else ""
        # timeout(1) kills the command on the target; our own deadline only
        # covers a target that stopped answering.
        # Not exec'd: a shell that outlives it reports a killed command as
        # 128+signal; sshd would send a bare signal name instead.
        line = f"{where}timeout -s KILL {limit:g} sh -c {shlex.quote(text)}; exit $?"
        t0 = time.monotonic()
        try:
            status, out, err = self.conn.exec(line, limit + 15)
        except ConnectionError as e:
            self._lost(f"lost the connection to {self.url} during '{text}' ({e})")
        except TimeoutError:
            self._lost(f"'{text}' did not finish in {limit:g}s and {self.url} stopped "
                       f"answering")
        seconds = time.monotonic() - t0
        if status in (124, 137) and seconds >= limit:
            raise GuestCommandError(f"'{text}' did not finish in {limit:g}s; it was killed "
                                    f"on {self.url}", detail=err.decode(errors="replace"))
        res = Result(text, status, out.decode(errors="replace"), err.decode(errors="replace"),
                     seconds, out, err)
        return res.check() if check else res

    def put(self, src: Path | bytes, dest: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None:
        """A file onto the target; a relative dest is in the private directory.
        Through a command's stdin, not SFTP: small machines often have no
        sftp-server."""
        if self.died is not None:
            raise self.died
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        dest = dest if dest.startswith("/") or not self.dir else f"{self.dir}/{dest}"
        q = shlex.quote(dest)
        part = shlex.quote(dest + ".kh-part")
        script = (f"mkdir -p \"$(dirname {q})\" || exit; if cat > {part} && "
                  f"chmod {mode:o} {part} && mv {part} {q}; then exit 0; fi; "
                  f"rm -f {part}; exit 1")
        try:
            status, _, err = self.conn.exec(script, timeout or self.default_timeout, data)
        except ConnectionError as e:
            self._lost(f"lost the connection to {self.url} while putting {dest} ({e})")
        except TimeoutError:
            self._lost(f"putting {dest} on {self.url} did not finish in time")
        if status != 0:
            raise GuestCommandError(f"could not put {dest} on {self.url}",
                                    detail=err.decode(errors="replace")[-2000:])

    def read(self, path: str) -> str:
        return self.run(["cat", path], check=True).stdout

    def _lost(self, message: str) -> NoReturn:
        read = self.dmesg_log.read_text(errors="replace") if self.dmesg_log.exists() else ""
        tail = read + self.window
        self.died = GuestDied(message, console_log=self.dmesg_log,
                              found=[reports.machine_death("lost connection to test machine",
                                                           tail, tail_lines=KMSG_TAIL)])
        self.conn.close()
        raise self.died

    # -- kernel log ---------------------------------------------------------------
    def _kmsg(self, since: int) -> tuple[str, int]:
        res = self.run(["khkmsg", str(since)], check=True)
        m = re.search(r"next=(\d+) lost=(\d+)", res.stderr)
        if not m:
            raise KhError(f"khkmsg on {self.url} said {res.stderr.strip()!r}")
        if int(m.group(2)):
            progress(f"{self.url}: {m.group(2)} kernel log records were overwritten before "
                     f"they were read")
        return res.stdout, int(m.group(1))

    def _kmsg_end(self) -> int:
        return self._kmsg(-1)[1]

    def dmesg_peek(self) -> str:
        """The kernel log since the window began, leaving the window open."""
        text, _ = self._kmsg(self.cursor)
        self.window = text
        return text

    def dmesg_window(self) -> str:
        """What the kernel printed since the last call."""
        text, self.cursor = self._kmsg(self.cursor)
        with open(self.dmesg_log, "a") as fh:
            fh.write(text)
        self.window = ""
        return text

    def console_since_mark(self) -> str:
        return self.window


def attach(conn: Connection, workdir: Path, release: str, modules: dict[str, Path],
           helpers: list[Path]) -> SshTarget:
    target = SshTarget(conn, workdir)
    try:
        target.attach(release, modules, helpers)
    except BaseException:
        if target.died is None:
            target.close()
        raise
    return target


def uname(conn: Connection) -> tuple[str, str]:
    """(uname -r, uname -m) of the target."""
    try:
        status, out, err = conn.exec("uname -r; uname -m", CONNECT_TIMEOUT)
    except (ConnectionError, TimeoutError) as e:
        raise KhError(f"{conn.access.url} did not answer 'uname': {e}") from None
    words = out.decode(errors="replace").split()
    if status != 0 or len(words) != 2:
        raise KhError(f"{conn.access.url}: 'uname -r; uname -m' failed: "
                      f"{err.decode(errors='replace').strip()}")
    return words[0], words[1]

