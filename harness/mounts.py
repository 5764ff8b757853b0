"""Mount points under our directories: found, let go, never walked into.

kharness mounts nothing in the host's namespace: chroot builds and
mmdebstrap run in a private mount namespace of their own, so their mounts
vanish with them, whatever signal ends them. A cache made by an older
kharness, or by a tool run by hand, may still hold mounts (an interrupted
mmdebstrap left /proc, /sys, /dev/pts and a bind of the host's /dev/shm in
a toolchain root): those are unmounted before the entry is used or
deleted, and a delete stops at any mount point it still meets rather than
go through it into the host's files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from pathlib import Path

from harness.errors import KhError

MNT_DETACH = 2
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 and friends
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str | None = None) -> list[Path]:
    """Every mount point of this namespace, from /proc/self/mountinfo."""
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    return [Path(_unescape(line.split()[4])) for line in text.splitlines() if line.strip()]


def under(path: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below path, deepest first."""
    path = Path(os.path.realpath(path))
    found = {m for m in mount_points(mountinfo) if m == path or path in m.parents}
    return sorted(found, key=lambda m: (-len(m.parts), str(m)))


def release(path: Path) -> list[Path]:
    """Unmount whatever is mounted at or below path (lazily: a busy mount
    is detached now and goes when its last user does). Returns what was."""
    found = under(path)
    libc = ctypes.CDLL(None, use_errno=True)
    for m in found:
        if libc.umount2(os.fsencode(m), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:      # gone already (a parent took it along)
                continue
            raise KhError(f"{m} is mounted inside {path} and cannot be unmounted "
                          f"({os.strerror(err)}): unmount it as root (umount -R {m}), "
                          f"then run again")
    return found


def remove_tree(path: Path) -> None:
    """Delete path and what is in it, like `rm -r --one-file-system`: mounts
    below it are unmounted first, and a directory that is still (or again)
    a mount point, or on another file system, stops the delete with an
    error instead of being walked into. Symbolic links are removed, never
    followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    release(path)
    mounted = set(under(path))
    _remove_dir(Path(os.path.realpath(path)), st.st_dev, mounted)


def _remove_dir(d: Path, dev: int, mounted: set[Path]) -> None:
    if d in mounted:
        raise KhError(f"not deleting through {d}: it is a mount point; unmount it "
                      f"(umount -R {d}) and run again")
    with os.scandir(d) as entries:
        for e in entries:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(e.path)
            elif st.st_dev != dev or Path(e.path) in mounted:
                raise KhError(f"not deleting through {e.path}: it is a mount point; "
                              f"unmount it (umount -R {e.path}) and run again")
            else:
                _remove_dir(Path(e.path), dev, mounted)
    os.rmdir(d)
