"""Readers for what the guest kernel counts: /proc files and our debugfs stats.

Each parser is a pure function over text (unit-tested with recorded files);
the read_* wrappers fetch the text from a guest.
"""

from __future__ import annotations

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
