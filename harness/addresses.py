"""Where a real machine is: its ssh:// address and how to trust it.

Plain records below the requests that carry them and the SSH target that
uses them (remote.py), so naming a target imports no SSH library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError


@dataclass(frozen=True)
class SshUrl:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH's known_hosts names this host."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_url(text: str) -> SshUrl:
    m = re.fullmatch(r"ssh://(?:([\w.\-]+)@)?(\[[0-9a-fA-F:]+\]|[\w.\-]+)(?::(\d+))?/?", text)
    if not m:
        raise UsageError(f"--target '{text}' is not an ssh://[user@]host[:port] address "
                         f"(e.g. ssh://root@board.lab:22)")
    port = int(m.group(3) or 22)
    if not 0 < port < 65536:
        raise UsageError(f"--target '{text}': port {port} is out of range")
    return SshUrl(m.group(1) or "root", m.group(2).strip("[]"), port)


@dataclass(frozen=True)
class Access:
    """How to reach the target: its address and the trust settings."""
    url: SshUrl
    identity: Path | None = None
    known_hosts: Path | None = None      # besides ~/.ssh/known_hosts
    accept_new: bool = False             # OpenSSH's StrictHostKeyChecking=accept-new
    reboot_wait: float | None = None     # seconds a target that went away may take to return
