"""A real SSH server to test SSH targets against: one of our QEMU guests
running Debian's dropbear, reached through a user-mode network port forward.

The guest boots our initramfs with no module of ours loaded (the SSH target
loads them, as on a real machine). dropbear and the libraries it links come
from the host (dropbear-bin, installed by ci/setup.sh), so this serves
host-arch guests. Keys are made fresh: a host key whose public half goes
into a known_hosts file, and a user key for root.

    python -m tests.kernel.sshd --kernel debian:7.2   # serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness import arches, session
from harness.guest import Guest
from harness.kernel import Kernel
from harness.requests import GuestRequest
from harness.vm import initramfs
from harness.vm.qemu import QemuLauncher

DROPBEAR = Path("/usr/sbin/dropbear")
GUEST_IP = "10.0.2.15"      # QEMU user networking's first guest address
NET_MODULES = {"virtio_net": ""}


def have_dropbear() -> str | None:
    """Why an sshd guest cannot be made here, or None."""
    for tool in (DROPBEAR, Path(shutil.which("dropbearkey") or "/nonexistent"),
                 Path(shutil.which("ssh-keygen") or "/nonexistent")):
        if not tool.exists():
            return "dropbear-bin and openssh-client are needed (ci/setup.sh installs them)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Keys:
    dir: Path
    host_key: Path          # dropbear's format
    host_public: str        # "ssh-ed25519 AAAA..."
    user_key: Path          # OpenSSH's format, for paramiko
    user_public: str

    @classmethod
    def make(cls, where: Path) -> Keys:
        where.mkdir(parents=True, exist_ok=True)
        host = where / "host_ed25519"
        host.unlink(missing_ok=True)
        out = subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host)], check=True,
                             capture_output=True, text=True).stdout
        public = next(ln for ln in out.splitlines() if ln.startswith("ssh-ed25519"))
        user = where / "id_ed25519"
        for p in (user, user.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kharness-test",
                        "-f", str(user)], check=True)
        return cls(where, host, " ".join(public.split()[:2]), user,
                   user.with_suffix(".pub").read_text().strip())

    def known_hosts(self, port: int, path: Path | None = None) -> Path:
        path = path or self.dir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{port} {self.host_public}\n")
        return path


class NetLauncher(QemuLauncher):
    """Our QEMU guest with a virtio NIC whose port 22 is the host's `port`."""

    def __init__(self, kernel: Kernel, image: Path, spec, port: int):
        super().__init__(kernel, image, spec)
        self.port = port

    def devices(self, sock_dir: Path) -> list[str]:
        return [*super().devices(sock_dir),
                "-netdev", f"user,id=khnet,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=khnet"]


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True,
                         text=True).stdout
    return [Path(p) for p in re.findall(r"(/\S+) \(0x", out)]


class SshdGuest:
    """Boot, serve SSH on 127.0.0.1:port, stop; boot again on the same port
    and keys (a machine that rebooted)."""

    def __init__(self, prep: session.Prepared, keys: Keys, port: int, workdir: Path):
        self.prep = prep
        self.keys = keys
        self.port = port
        self.workdir = workdir
        self.boots = 0
        self.guest: Guest | None = None

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def start(self) -> SshdGuest:
        if self.guest is not None:  # rebooted: QEMU stopped it and holds the port
            self.guest.machine.kill()
        self.boots += 1
        work = self.workdir / f"sshd-{self.boots}"
        kernel = self.prep.kernel
        image = initramfs.build(kernel, [], self.prep.helpers, work / "initramfs.cpio")
        spec = dataclasses.replace(self.prep.spec, workdir=work)
        g = self.guest = Guest.boot(NetLauncher(kernel, image, spec, self.port))
        for lib in _libraries(DROPBEAR):
            g.put(lib.resolve(), str(lib), 0o755)
        g.put(DROPBEAR, "/usr/sbin/dropbear", 0o755)
        g.put(self.keys.host_key, "/etc/dropbear/host_ed25519", 0o600)
        g.put(f"{self.keys.user_public}\n".encode(), "/root/.ssh/authorized_keys", 0o600)
        g.put(b"root:x:0:0:root:/root:/bin/sh\n", "/etc/passwd")
        g.put(b"root:*:19000:0:99999:7:::\n", "/etc/shadow", 0o600)
        g.put(b"root:x:0:\n", "/etc/group")
        g.put(b"/bin/sh\n", "/etc/shells")
        for m in initramfs.kernel_modules(kernel, NET_MODULES):
            g.put(m.data, f"/lib/kh/net/{m.file}")
            g.run(f"insmod /lib/kh/net/{m.file}", check=True)
        g.run(f"chmod 700 /root /root/.ssh; mkdir -p /var/run /var/log; "
              f"ip link set lo up; ip link set eth0 up; "
              f"ip addr add {GUEST_IP}/24 dev eth0; ip route add default via 10.0.2.2; "
              f"dropbear -F -E -s -p 22 -r /etc/dropbear/host_ed25519 "
              f">/var/log/dropbear.log 2>&1 &", check=True)
        self._wait_banner()
        return self

    def _wait_banner(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.guest.run("cat /var/log/dropbear.log").stdout if self.guest else ""
                raise RuntimeError(f"dropbear did not answer on port {self.port}: {log}")
            time.sleep(0.5)

    def alive(self) -> bool:
        """A machine that rebooted is down: QEMU stops its guest there
        (-action reboot=shutdown,shutdown=pause) rather than ending."""
        return self.guest is not None and self.guest.machine.alive() and \
            not self.guest.machine.stopped()

    def stop(self) -> None:
        if self.guest is not None:
            if self.guest.machine.alive() and self.guest.died is None:
                self.guest.poweroff(timeout=5)
            self.guest.machine.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian:7.2")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", default="kharness-out/sshd")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    prep = session.prepare(GuestRequest(a.kernel, arches.host()), out)
    port = a.port or free_port()
    keys = Keys.make(out / "keys")
    sshd = SshdGuest(prep, keys, port, out).start()
    known = keys.known_hosts(port)
    print(f"serving {sshd.url}; try:\n  kharness run --target {sshd.url} --identity "
          f"{keys.user_key} --known-hosts {known}", flush=True)
    try:
        while sshd.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        sshd.stop()


if __name__ == "__main__":
    main()
