"""One way to make a cached artifact: lock, check, build, publish.

Every cache entry (a Debian kernel, a toolchain root, a module build, the
helpers, a source tree, a kernel build, a busybox) is a directory made by
`cached()`. The entry is complete when its marker, `.kh-done`, is there and
every product it lists still has the size recorded when it was published.
The marker is written last and atomically, so a process killed mid-build
leaves an entry without one, which the next run wipes and makes again;
a truncated or missing product (a full disk, a hand-edited cache) makes the
entry count as absent too, with a notice.

Entries are built in place rather than beside and renamed: kernel trees
and O= build directories record their own absolute paths (relocated
headers, the generated Makefile), so they cannot move once made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import mounts
from harness.errors import KhError
from harness.util import disk_size, progress

MARKER = ".kh-done"
# Beside the marker: the entry's bytes on disk when it was made, so the
# cache's size is a sum, not a walk of millions of files (cachetool)
DISK = ".kh-disk"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on path (created if need be): one maker at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(entry: Path) -> Path:
    # Not with_suffix(): '7.2.13-key' would lose '.13-key' and share one lock.
    return entry.with_name(entry.name + ".lock")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.is_dir() and not path.is_symlink():
        mounts.remove_tree(path)    # a directory where our file belongs: not ours to keep
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Held(KhError):
    """An entry that should be made again, but another run is using it:
    it is left as it is, and the caller does without it."""


# This process's shared holds (entry -> the open hold file): an entry a run
# restores guests from is never removed under it by another run.
_holds: dict[Path, int] = {}


def hold_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".held")


def hold(entry: Path) -> None:
    """Hold entry (shared) for as long as this process uses it, or until
    release(). A cache this user cannot write has no holds, nor prunes."""
    if entry in _holds:
        return
    try:
        fd = os.open(hold_path(entry), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_SH)
    _holds[entry] = fd


def release(entry: Path) -> None:
    fd = _holds.pop(entry, None)
    if fd is not None:
        os.close(fd)


def remove_unheld(entry: Path) -> bool:
    """Remove the entry unless another process holds it (True if removed).
    The caller has the entry's lock (locked(lock_path(entry))), so nobody
    starts holding it meanwhile; this process's own hold does not count."""
    fd = _holds.get(entry)
    own = fd is not None
    if fd is None:
        if not hold_path(entry).exists():
            remove(entry)
            return True
        fd = os.open(hold_path(entry), os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if own:     # a failed upgrade drops the shared lock: take it again
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            os.close(fd)
        return False
    try:
        remove(entry)
    finally:
        _holds.pop(entry, None)
        os.close(fd)
    return True


class Outdated(ValueError):
    """A check's finding: the entry is whole but made for something else
    (another QEMU, another kernel)."""


def damage(entry: Path) -> str | None:
    """None if the entry is complete; else what is wrong with it."""
    marker = entry / MARKER
    if not marker.is_file():
        return "unfinished" if entry.exists() else "absent"
    try:
        sizes = json.loads(marker.read_text())
        if not isinstance(sizes, dict):
            raise ValueError("not a mapping")
        for rel, size in sizes.items():
            p = entry / rel
            if not p.is_file() or p.stat().st_size != int(size):
                return f"{rel} is missing or not its recorded size"
    except (OSError, ValueError, TypeError) as e:
        return f"unreadable marker ({e})"
    return None


def publish(entry: Path, products: Iterable[Path | str]) -> None:
    """Mark entry complete, recording each product's size."""
    sizes = {}
    for p in products:
        p = entry / p
        sizes[str(p.relative_to(entry))] = p.stat().st_size
    write_atomic(entry / MARKER, json.dumps(sizes, indent=1, sort_keys=True))
    with contextlib.suppress(OSError):
        write_atomic(entry / DISK, f"{disk_size(entry)}\n")


def recorded_size(entry: Path) -> int:
    """A whole entry's bytes on disk, as recorded when it was made (and
    recorded now, for an entry made before sizes were): entries do not
    change once whole. A file a later entry hard-links keeps counting
    whole here, so the sum may exceed the disk's count a little."""
    with contextlib.suppress(OSError, ValueError):
        return int((entry / DISK).read_text())
    size = disk_size(entry)
    if (entry / MARKER).is_file():
        with contextlib.suppress(OSError):
            write_atomic(entry / DISK, f"{size}\n")
    return size


def cached(entry: Path, make: Callable[[Path], Iterable[Path | str]], *,
           keep_partial: bool = False, check: Callable[[Path], object] | None = None) -> Path:
    """The entry, made by make(entry) unless it is complete already.

    make() fills the directory and returns the products (paths in it) whose
    sizes prove it whole. An unfinished entry from a dead run is wiped first
    unless keep_partial (a kernel build reuses its objects). check(entry),
    if given, reads what a caller needs (a JSON record) and raises ValueError
    or OSError if it is not sound: the entry is then made again too. Two
    processes asking for one entry: one makes it, the other waits and finds it.
    A cache this user may not write (an immutable entry, another user's
    cache) is one line naming the path, exit 3.
    """
    try:
        return _cached(entry, make, keep_partial=keep_partial, check=check)
    except PermissionError as e:
        raise KhError(f"cannot write the cache entry {entry}: {e.strerror} "
                      f"({e.filename or entry}); make the cache writable for this user or "
                      f"point KHARNESS_CACHE elsewhere") from None


def _cached(entry: Path, make: Callable[[Path], Iterable[Path | str]], *,
            keep_partial: bool, check: Callable[[Path], object] | None) -> Path:
    with locked(lock_path(entry)):
        # Mounts an interrupted run of an older kharness (or a hand-run
        # chroot) left: never build on them, never delete through them.
        left = mounts.release(entry) if entry.exists() else []
        if left:
            progress(f"cache entry {entry}: unmounted {len(left)} leftover mount(s) "
                     f"({', '.join(str(m) for m in left[:4])})")
        why = damage(entry)
        if why is None and check is not None:
            try:
                check(entry)
            except Outdated as e:
                why = f"out of date: {e}"
            except (OSError, ValueError) as e:
                why = f"unreadable: {e}"
        if why is None:
            used(entry)
            return entry
        if entry.exists() and not (keep_partial and why == "unfinished") and \
                not remove_unheld(entry):
            raise Held(f"cache entry {entry} is {why}, but another run is using it: "
                       f"left as it is")
        if why.startswith("out of date"):
            progress(f"cache entry {entry} is {why}; making it again")
        elif why not in ("absent", "unfinished"):
            progress(f"cache entry {entry} is damaged ({why}); making it again")
        entry.mkdir(parents=True, exist_ok=True)
        products = list(make(entry))
        publish(entry, products)
    hold(entry)
    return entry


def used(entry: Path) -> None:
    """Note a use of a complete entry (its marker's mtime: what `kharness
    cache prune` removes least recently used first) and hold it for this
    process, so no prune or other run removes it meanwhile."""
    with contextlib.suppress(OSError):      # a read-only cache is still usable
        os.utime(entry / MARKER)
    hold(entry)


def remove(path: Path) -> None:
    """A cache entry, gone: never through a mount point (harness.mounts)."""
    mounts.remove_tree(path)
