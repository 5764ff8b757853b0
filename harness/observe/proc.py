"""Readers for what the guest kernel counts: /proc files and our debugfs stats.

Each parser is a pure function over text (unit-tested with recorded files);
the read_* wrappers fetch the text from a guest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def parse_key_values(text: str) -> dict[str, int]:
    """'name value' lines (vmstat, debugfs stats) and 'Name: value kB' (meminfo)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class SmapsEntry:
    start: int
    end: int
    path: str
    fields: dict[str, int]
    vmflags: tuple[str, ...]


def parse_smaps(text: str) -> list[SmapsEntry]:
    entries: list[SmapsEntry] = []
    cur: SmapsEntry | None = None
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            start, _, end = head[0].partition("-")
            try:
                cur = SmapsEntry(int(start, 16), int(end, 16),
                                 head[5] if len(head) > 5 else "", {}, ())
            except ValueError:
                continue
            entries.append(cur)
        elif cur is not None and line.startswith("VmFlags:"):
            entries[-1] = cur = dataclasses.replace(cur, vmflags=tuple(line.split()[1:]))
        elif cur is not None and line.endswith("kB"):
            key, _, rest = line.partition(":")
            cur.fields[key] = int(rest.split()[0])
    return entries


@dataclass(frozen=True)
class PageState:
    page: int
    pfn: int
    refcount: int
    mapcount: int
    kpagecount: int


def parse_page_lines(records: list[dict[str, str]], stage: str) -> list[PageState]:
    """The 'stage=... page=... pfn=...' records khmap prints."""
    return [PageState(int(r["page"]), int(r["pfn"]), int(r["refcount"]), int(r["mapcount"]),
                      int(r["kpagecount"]))
            for r in records if r.get("stage") == stage]


def read_vmstat(guest) -> dict[str, int]:
    # Fold the per-cpu deltas first, or counters drift by up to a batch per cpu.
    return parse_key_values(guest.run("echo 1 > /proc/sys/vm/stat_refresh; cat /proc/vmstat",
                                      check=True).stdout)


def read_stats(guest, debugfs_dir: str) -> dict[str, int]:
    return parse_key_values(guest.read(f"{debugfs_dir}/stats"))
