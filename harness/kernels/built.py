"""build:<key>: a kernel that `kharness build` made (harness/kbuild/linux.py)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.arches import Arch
from harness.cache import damage
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.util import cache_root


def valid_ref(ref: str) -> bool:
    """A key or prefix of one (hex), or a path to a build directory."""
    return bool(re.fullmatch(r"[0-9a-f]{4,}", ref)) or "/" in ref


def _load(build: Path) -> Kernel | None:
    """The build's record if it is finished and sound."""
    if not build.is_dir() or damage(build) is not None:
        return None
    try:
        return Kernel.load(build / "kernel.json")
    except (OSError, ValueError):
        return None


def find(ref: str, arch: Arch) -> Kernel:
    """build:<key, a prefix of it, or a build directory> -> its Kernel record."""
    path = Path(ref).expanduser()
    if "/" in ref:
        kernel = _load(path)
        if kernel is None:
            raise UsageError(f"{path} is not a finished kernel build: run 'kharness build' "
                             f"again (it makes an unfinished or damaged one anew)")
        return kernel
    hits = sorted(p for p in (cache_root() / "builds").glob(f"{arch.name}-*-{ref}*")
                  if _load(p) is not None)
    if len(hits) == 1:
        return Kernel.load(hits[0] / "kernel.json")
    if not hits:
        raise UsageError(f"no finished {arch} kernel build '{ref}' in {cache_root() / 'builds'}:"
                         f" run 'kharness build' first (it prints the build:<key> to use)")
    raise UsageError(f"build:{ref} is ambiguous for {arch}: "
                     f"{', '.join(p.name for p in hits)}")
