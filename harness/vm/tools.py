"""Debian's user-space tools in the guest: what the persistent-memory
scenarios run (ndctl and daxctl to set namespace modes, mkfs.ext4 and
mkfs.xfs), of the guest's arch, with the shared libraries they load.

The packages and the libraries their Depends name are fetched once into a
cache entry (the tools' root); a guest gets only the files the tools load:
each binary, the ELF interpreter and the DT_NEEDED closure, found with
readelf (any arch). A soname the root lacks is an error naming it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from harness import apt
from harness.apt import AptConfig
from harness.arches import Arch
from harness.cache import cached
from harness.errors import KhError
from harness.util import cache_root, digest

RECIPE = "1"   # bump when the root made here changes
PACKAGES = ("ndctl", "daxctl", "e2fsprogs", "xfsprogs")
# The tools, where their packages put them (merged /usr: /sbin is usr/sbin).
TOOLS = ("usr/bin/ndctl", "usr/bin/daxctl", "sbin/mkfs.ext4", "sbin/mkfs.xfs")
# Depends the tools never load: interpreters of scripts the packages carry.
UNUSED = ("libperl", "libpython", "perl", "python", "libicu")


def _closure(lists: AptConfig) -> list[str]:
    """The packages and the libraries they depend on, recursively."""
    out = lists.query("depends", "--recurse", "--no-recommends", "--no-suggests",
                      "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                      *PACKAGES)
    names = {line for line in out.splitlines() if line and not line.startswith((" ", "<"))}
    return sorted(n for n in names
                  if n in PACKAGES or (n.startswith("lib") and not n.startswith(UNUSED)))


def root(arch: Arch, *, offline: bool = False) -> Path:
    """The tools' root for arch: the packages unpacked (cached)."""
    entry = cache_root() / "guest-tools" / f"{arch.deb_arch}-{digest(RECIPE, *PACKAGES)}"

    def make(entry: Path) -> list[Path]:
        lists = AptConfig("guest-tools", (arch.userland_suite,), arch.deb_arch)
        lists.update(offline=offline)
        debs = lists.download(_closure(lists), entry.with_name(entry.name + ".debs"))
        apt.extract(debs, entry / "root")
        shutil.rmtree(debs[0].parent, ignore_errors=True)
        return [entry / "root" / t for t in TOOLS]

    return cached(entry, make) / "root"


def _dynamic(path: Path) -> tuple[str | None, list[str]]:
    """An ELF file's interpreter and DT_NEEDED sonames."""
    out = subprocess.run(["readelf", "-W", "-l", "-d", str(path)], capture_output=True,
                         text=True, check=True).stdout
    interp = re.search(r"Requesting program interpreter: (\S+)\]", out)
    return (interp.group(1) if interp else None,
            re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def _find(top: Path, arch: Arch, soname: str) -> Path:
    for d in (f"usr/lib/{arch.triplet}", f"lib/{arch.triplet}", "usr/lib", "lib"):
        if (top / d / soname).exists():
            return top / d / soname
    raise KhError(f"{soname}, which the guest's tools load, is in none of the packages "
                  f"fetched into {top}: remove that directory to fetch them again")


def files(arch: Arch, *, offline: bool = False) -> dict[str, bytes | str]:
    """What a guest needs to run the tools: its path (no leading /) -> its
    bytes, or a symlink's target (the ELF interpreter's path). Libraries
    go to usr/lib/<triplet>, where Debian's ld.so looks."""
    top = root(arch, offline=offline)
    out: dict[str, bytes | str] = {}
    todo = [top / t for t in TOOLS]
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        interp, needed = _dynamic(path)
        rel = str(path.relative_to(top))
        if path.name.startswith("lib") or path.name.startswith("ld-"):
            rel = f"usr/lib/{arch.triplet}/{path.name}"
        out[rel] = path.resolve().read_bytes()
        if interp and interp.lstrip("/") not in out:
            out[interp.lstrip("/")] = f"/usr/lib/{arch.triplet}/{Path(interp).name}"
            if Path(interp).name not in seen:
                seen.add(Path(interp).name)
                todo.append(_find(top, arch, Path(interp).name))
        for soname in needed:
            if soname not in seen:
                seen.add(soname)
                todo.append(_find(top, arch, soname))
    return out
