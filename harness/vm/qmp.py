"""QEMU's machine protocol (QMP) over the guest's unix socket: the host's
side of a guest that is not the agent's (stop, migrate, cont, status).

One request in flight at a time; asynchronous events that arrive between
replies are kept in `events` (a restore waits for none of them: it polls
query-status, which every QEMU answers the same way).
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

from harness.errors import KhError


class QmpError(KhError):
    pass


class Qmp:
    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = b""
        self.events: list[dict[str, Any]] = []

    def connect(self, deadline: float, alive) -> None:
        """Connect once QEMU made the socket, and leave capability negotiation."""
        while True:
            try:
                self.sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not alive():
                    raise QmpError("QEMU exited before its QMP socket answered") from None
                if time.monotonic() > deadline:
                    raise QmpError(f"no QMP socket at {self.path} in time") from None
                time.sleep(0.005)
        greeting = self._message(deadline)
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        self.command("qmp_capabilities", deadline=deadline)

    def command(self, name: str, *, deadline: float | None = None, **args: Any) -> Any:
        """The command's return value; QmpError with QEMU's own words if it failed."""
        deadline = deadline or time.monotonic() + 30
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QmpError(f"QMP {name}: {e.strerror}") from None
        while True:
            reply = self._message(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QmpError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError("QEMU did not answer on QMP in time")
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                try:
                    chunk = self.sock.recv(65536)
                except OSError as e:
                    raise QmpError(f"QEMU's QMP socket: {e.strerror}") from None
                if not chunk:
                    raise QmpError("QEMU closed its QMP socket")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()
