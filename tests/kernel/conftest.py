"""Fixtures shared by the kernel suites."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.guest import Guest, Result
from harness.observe import proc

RINGBUF_MODES = ("pfnmap", "fault", "insert_pages")


@dataclass
class Ringbuf:
    guest: Guest
    mode: str
    nr_mapped: int = 0   # /proc/vmstat nr_mapped before the test

    @property
    def dev(self) -> str:
        return f"/dev/kh_ringbuf_{self.mode}"

    @property
    def debugfs(self) -> str:
        return f"/sys/kernel/debug/kh_ringbuf/{self.mode}"

    def stats(self) -> dict[str, int]:
        return proc.read_stats(self.guest, self.debugfs)

    @property
    def nr_pages(self) -> int:
        return self.stats()["nr_pages"]

    def khmap(self, op: str, *args: str | int) -> Result:
        return self.guest.run(["khmap", op, self.dev, str(self.nr_pages), *map(str, args)],
                              check=True)

    def delta(self, before: dict[str, int], after: dict[str, int], key: str) -> int:
        return after[key] - before[key]

    def assert_released(self) -> dict[str, int]:
        """The catalogue's invariants after the last unmap: the module holds
        nothing and the kernel's count of mapped file pages is where it was."""
        s = self.stats()
        held = {k: s[k] for k in ("pages_held", "buffers", "open_mappings") if s[k] != 0}
        assert not held, f"{self.mode}: module still holds {held} after the last unmap"
        if self.guest.quiet:
            nr_mapped = proc.read_vmstat(self.guest)["nr_mapped"]
            assert nr_mapped == self.nr_mapped, \
                f"vmstat nr_mapped {self.nr_mapped} -> {nr_mapped} across the test"
        return s


@pytest.fixture(params=RINGBUF_MODES)
def rb(guest, request) -> Ringbuf:
    r = Ringbuf(guest, request.param, proc.read_vmstat(guest)["nr_mapped"])
    r.assert_released()  # a leak from an earlier test must not be blamed on this one
    return r
