"""`kharness cache`: what the cache holds, and pruning it, as ccache's
`-s`/max_size and Docker's `system df`/`prune` do.

An entry is a folder `cached()` made (harness/cache.py): it has its lock,
`<entry>.lock`, beside it. Its last use is its marker's mtime (cached()
touches it on every use); its size is what its files take on disk. An
entry is removed whole or not at all: renamed out of the way first (a run
that looks for it then finds it absent, never half there), then deleted,
never across a mount point, and never while another kharness holds it
(harness/cache.hold) or is making it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import mounts
from harness.cache import MARKER, hold_path, lock_path, recorded_size
from harness.errors import KhError, UsageError
from harness.util import cache_root, disk_size, progress

# Top-level folders by kind, in the order they are shown; others are "rest".
KINDS = {"kernels": "kernels", "sources": "sources", "builds": "builds",
         "snapshots": "snapshots", "debuginfo": "debuginfo", "toolchains": "toolchains",
         "ccache": "ccache"}
KIND_NAMES = (*KINDS.values(), "rest")
TRASH = ".pruned-"          # an entry on its way out: <parent>/.pruned-<name>-<pid>
MAX_ENV = "KHARNESS_CACHE_MAX"
DEFAULT_MAX = "40G"         # a nightly's kernels, builds and snapshots fit; a laptop survives
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass
class Entry:
    path: Path
    kind: str
    size: int          # bytes on disk
    used: float        # last use, seconds since the epoch
    whole: bool        # finished (its marker is there)
    what: str = ""     # what it is, for people

    @property
    def name(self) -> str:
        return str(self.path.relative_to(cache_root()))


def parse_size(text: str, what: str = "--max-size") -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"{what} takes a size such as 500M, 20G or 1T, not '{text}'")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def parse_age(text: str) -> int:
    """Seconds, from 90s, 12h, 7d, 2w (a bare number is seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise UsageError(f"--older-than takes an age such as 12h, 7d or 2w, not '{text}'")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return int(float(m.group(1)) * unit)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def cap() -> int | None:
    """The cache's size cap: KHARNESS_CACHE_MAX (0 or 'none': no cap), else
    the default."""
    text = os.environ.get(MAX_ENV, DEFAULT_MAX).strip()
    if text.lower() in ("0", "none", "off", ""):
        return None
    return parse_size(text, MAX_ENV)


def _kind(rel: Path) -> str:
    return KINDS.get(rel.parts[0], "rest")


def _walk(root: Path) -> Iterator[Path]:
    """Folders under root that are entries (a lock beside them); not into them."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        for c in children:
            if c.name.startswith(TRASH) or lock_path(c).exists():
                yield c
            elif c != root / "ccache":
                stack.append(c)


def describe(entry: Path, kind: str) -> str:
    """What an entry is, from the records inside it."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if kind == "snapshots":
            rec = json.loads((entry / "snapshot.json").read_text())
            t = rec.get("template", [])
            cpus = t[t.index("-smp") + 1] if "-smp" in t else "?"
            extra = [n.split(".")[0] for n in rec.get("carried", {}) if n.endswith(".img")]
            gone = "" if _snapshot_kernel(rec).exists() else "; its kernel is gone"
            return (f"{rec.get('release')}, {rec.get('memory_mb')} MiB, {cpus} vCPU"
                    + "".join(f", {e}" for e in extra) + gone)
        if kind == "builds":
            meta = json.loads((entry / "metadata.json").read_text())
            subjects = [p["subject"] for p in meta.get("patches", [])]
            return (f"{meta['release']} {meta['arch']} from {meta['source']}, "
                    f"fragments {', '.join(Path(f).stem for f in meta.get('fragments', []))}"
                    + (f", patches: {'; '.join(subjects)}" if subjects else ""))
        if kind == "kernels":
            k = json.loads((entry / "kernel.json").read_text())
            return f"{k['release']} {k['arch']} ({k.get('spec', '')})"
    return ""


def _snapshot_kernel(rec: dict) -> Path:
    return Path(rec["identity"]["kernel"]["path"])


def entries(root: Path | None = None) -> list[Entry]:
    root = root or cache_root()
    out = []
    for path in _walk(root):
        rel = path.relative_to(root)
        marker = path / MARKER
        whole = marker.is_file()
        try:
            used = (marker if whole else path).stat().st_mtime
        except OSError:
            used = 0.0
        kind = _kind(rel)
        out.append(Entry(path, kind, recorded_size(path) if whole else disk_size(path), used,
                         whole,
                         "being removed" if path.name.startswith(TRASH) else
                         describe(path, kind)))
    # A kernel is in use as long as a snapshot of it is: least recently used
    # goes by the newest of the two, so a kernel never goes before its snapshots.
    for kernel, snaps in snapshots_of(out).items():
        e = next(e for e in out if e.path == kernel)
        e.used = max(e.used, *(s.used for s in snaps))
    ccache = root / "ccache"
    if ccache.is_dir():
        out.append(Entry(ccache, "ccache", disk_size(ccache), ccache.stat().st_mtime, True,
                         "ccache's own: its max_size bounds it (ccache -s)"))
    return out


def total_size(root: Path | None = None) -> int:
    """The cache's bytes on disk: each whole entry as recorded when it was
    made (cache.recorded_size), the rest walked (unfinished entries, ccache,
    package lists, locks)."""
    root = root or cache_root()
    total, stack = 0, [root]
    while stack:
        try:
            found = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in found:
            path = Path(e.path)
            with contextlib.suppress(OSError):
                folder = e.is_dir(follow_symlinks=False)
                if folder and (e.name.startswith(TRASH) or lock_path(path).exists()):
                    total += recorded_size(path) if (path / MARKER).is_file() else \
                        disk_size(path)
                elif folder and path != root / "ccache":
                    total += e.stat(follow_symlinks=False).st_blocks * 512
                    stack.append(path)
                else:
                    total += disk_size(path)
    return total


def show(verbose: bool) -> int:
    root = cache_root()
    all_ = entries(root)
    total = total_size(root)
    per = {k: sum(e.size for e in all_ if e.kind == k) for k in KIND_NAMES}
    per["rest"] += total - sum(per.values())      # locks, records, files of no entry
    limit = cap()
    print(f"cache {root}: {human(total)}"
          + (f" of {human(limit)} ({MAX_ENV})" if limit else f" (no cap: {MAX_ENV}=none)"))
    for kind in KIND_NAMES:
        n = sum(e.kind == kind for e in all_)
        print(f"  {kind:<11} {human(per[kind]):>10}  {n} entr{'y' if n == 1 else 'ies'}")
    if verbose:
        now = time.time()
        for e in sorted(all_, key=lambda e: (KIND_NAMES.index(e.kind), -e.used)):
            state = "" if e.whole else " (unfinished)"
            print(f"{e.kind:<11} {human(e.size):>10}  used {_ago(now - e.used):>8}  "
                  f"{e.name}{state}" + (f"  {e.what}" if e.what else ""))
    return 0


def _ago(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds / n:.0f}{unit} ago"
    return "just now"


@dataclass
class Plan:
    remove: list[tuple[Entry, str]]    # (entry, why)
    total: int


def plan(all_: list[Entry], total: int, *, older_than: float | None, max_size: int | None,
         kinds: set[str] | None, now: float | None = None) -> Plan:
    """What a prune removes, least recently used first: entries older than
    older_than, then more until the cache is within max_size; snapshots
    whose kernel is gone, whatever the criteria; ccache only when named."""
    now = time.time() if now is None else now
    pick: dict[Path, tuple[Entry, str]] = {}
    usable = [e for e in all_ if (kinds is None or e.kind in kinds)
              and (e.kind != "ccache" or (kinds is not None and "ccache" in kinds))]
    for e in all_:
        if e.path.name.startswith(TRASH):
            pick[e.path] = (e, "left by a prune that was stopped")
        elif e.kind == "snapshots" and e.what.endswith("its kernel is gone"):
            pick[e.path] = (e, "its kernel is gone")
    if older_than is not None:
        for e in usable:
            if now - e.used > older_than:
                pick.setdefault(e.path, (e, f"unused for {_ago(now - e.used)[:-4]}"))
    if max_size is not None:
        left = total - sum(e.size for e, _ in pick.values())
        for e in sorted(usable, key=lambda e: e.used):
            if left <= max_size:
                break
            if e.path not in pick:
                pick[e.path] = (e, f"least recently used (cache over {human(max_size)})")
                left -= e.size
    return Plan(list(pick.values()), total)


def remove(entry: Entry) -> str | None:
    """Remove one entry whole; None, or why it was left."""
    path = entry.path
    if path.name.startswith(TRASH):
        mounts.remove_tree(path)
        return None
    if mounts.under(path):
        return "a mount point is inside it"
    with open(lock_path(path), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "a kharness is making it"
        held = hold_path(path)
        fd = os.open(held, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644) \
            if path.parent.is_dir() else None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return "a running kharness holds it"
            trash = path.with_name(f"{TRASH}{path.name}-{os.getpid()}")
            os.rename(path, trash)      # gone for every reader at once
        finally:
            if fd is not None:
                os.close(fd)
    mounts.remove_tree(trash)
    return None


def snapshots_of(all_: list[Entry]) -> dict[Path, list[Entry]]:
    """Kernel and build entries -> the snapshots made of them."""
    out: dict[Path, list[Entry]] = {}
    for snap in all_:
        if snap.kind != "snapshots":
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            image = _snapshot_kernel(json.loads((snap.path / "snapshot.json").read_text()))
            for e in all_:
                if e.kind in ("kernels", "builds") and e.path in image.parents:
                    out.setdefault(e.path, []).append(snap)
    return out


def prune(*, older_than: float | None = None, max_size: int | None = None,
          kinds: set[str] | None = None, dry_run: bool = False) -> int:
    """Remove what the criteria pick, and the snapshots of a kernel that
    goes (nothing else can use them); a line for each that goes or stays."""
    root = cache_root()
    all_ = entries(root)
    p = plan(all_, total_size(root), older_than=older_than, max_size=max_size, kinds=kinds)
    snapshots = snapshots_of(all_)
    done: set[Path] = set()
    queue = list(p.remove)
    freed = 0
    while queue:
        e, why = queue.pop(0)
        if e.path in done:
            continue
        done.add(e.path)
        if dry_run:
            progress(f"would remove {e.name} ({human(e.size)}): {why}")
            left = None
        else:
            try:
                left = remove(e)
            except (OSError, KhError) as err:
                left = str(err)
            if left is None:
                progress(f"removed {e.name} ({human(e.size)}): {why}")
            else:
                progress(f"kept {e.name}: {left}")
        if left is None:
            freed += e.size
            queue += [(s, "its kernel goes") for s in snapshots.get(e.path, [])]
    verb = "would free" if dry_run else "freed"
    progress(f"cache {root}: {verb} {human(freed)} of {human(p.total)}")
    return 0


CHECKED = ".kh-size-checked"    # when the cap was last checked, and the size then
RECHECK = 600.0                 # seconds: a cache well under its cap is not walked again sooner


def enforce_cap() -> None:
    """At the end of a run: the cache back within KHARNESS_CACHE_MAX, least
    recently used first, with a line for what went. Walking a large cache
    takes seconds: one that was well under the cap minutes ago is left.
    Never fails the run."""
    try:
        limit = cap()
        if limit is None:
            return
        state = cache_root() / CHECKED
        with contextlib.suppress(OSError, ValueError):
            last = json.loads(state.read_text())
            if time.time() - last["checked"] < RECHECK and last["total"] < 0.9 * limit:
                return
        total = total_size()
        if total > limit:
            progress(f"the cache is over {human(limit)} ({MAX_ENV}): pruning the least "
                     f"recently used entries")
            prune(max_size=limit)
            total = total_size()
        state.write_text(json.dumps({"checked": time.time(), "total": total}) + "\n")
    except (OSError, KhError) as e:
        progress(f"could not prune the cache: {e}")
