"""Kernel sources: a local tree (git or plain), a tarball, or Debian's
linux-source-<series> package, each with an identity for the build cache.

A tree is never modified: patches go onto a copy (harness/kernels/patches.py)
and builds go to a separate O= directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import apt
from harness.apt import SERIES, AptConfig
from harness.cache import cached
from harness.errors import KhError, UsageError
from harness.util import cache_root, digest, run, step


@dataclass(frozen=True)
class SourceTree:
    spec: str        # what the user gave
    path: Path       # the top of the tree (has a Makefile and mm/)
    identity: str    # what goes into the build cache key


def get(spec: str, *, offline: bool = False) -> SourceTree:
    if spec.startswith("debian-source:"):
        return debian_source(spec.partition(":")[2], offline=offline)
    path = Path(spec).expanduser()
    if path.is_dir():
        return local_tree(spec, path.resolve())
    if path.is_file() and ".tar" in path.name:
        return tarball(spec, path.resolve())
    raise UsageError(f"unknown kernel source '{spec}': give a kernel tree, a .tar.* of one, "
                     f"or debian-source:<series> (e.g. debian-source:7.2)")


def _check_tree(path: Path, spec: str) -> Path:
    if not (path / "Makefile").exists() or not (path / "mm" / "memory.c").exists():
        raise UsageError(f"'{spec}' is not a kernel source tree (no Makefile or mm/memory.c "
                         f"in {path})")
    return path


def local_tree(spec: str, path: Path) -> SourceTree:
    """A git tree is its HEAD plus its uncommitted changes; a plain tree is
    every file's path, size and mtime (a touched file is a new identity)."""
    _check_tree(path, spec)
    if (path / ".git").exists():
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        diff = subprocess.run(["git", "-C", str(path), "diff", "HEAD"],
                              capture_output=True).stdout
        return SourceTree(spec, path, f"git {head} {digest(diff)}")
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            h.update(f"{root}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return SourceTree(spec, path, f"tree {path} {h.hexdigest()[:16]}")


def _extract(archive: Path, dest: Path, what: str) -> Path:
    """Unpack a kernel tarball once into dest; return the tree's top."""
    def make(entry: Path) -> list[Path]:
        with step(f"extracting {what}"):
            run(["tar", "-xf", str(archive), "-C", str(entry)], what=f"extracting {archive}")
        return []

    tops = [p for p in cached(dest, make).iterdir() if p.is_dir() and (p / "Makefile").exists()]
    if len(tops) != 1:
        raise KhError(f"{archive} does not hold one kernel tree (found {len(tops)} in {dest})")
    return tops[0]


def tarball(spec: str, path: Path) -> SourceTree:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    sha = h.hexdigest()[:16]
    top = _extract(path, cache_root() / "sources" / f"tar-{sha}", path.name)
    return SourceTree(spec, _check_tree(top, spec), f"tarball {sha}")


def debian_source(series: str, *, offline: bool) -> SourceTree:
    """Debian's linux-source-<series>: the same source as debian:<series>."""
    if series not in SERIES:
        raise UsageError(f"unknown Debian kernel series '{series}' for debian-source: known "
                         f"series are {', '.join(SERIES)}")
    lists = AptConfig(series, SERIES[series].suites, "amd64")   # the package is arch: all
    lists.update(offline=offline)
    pkg = f"linux-source-{series}"
    stanza = lists.packages([pkg]).get(pkg)
    if stanza is None:
        raise KhError(f"{pkg} is not in {' '.join(SERIES[series].suites)}: Debian ships no "
                      f"source package for this series there")
    version = stanza["Version"]

    def make(base: Path) -> list[Path]:
        with step(f"downloading {pkg} {version} ({int(stanza.get('Size', 0)) >> 20} MiB)"):
            debs = lists.download([pkg], base / "deb")
        apt.extract(debs, base / "deb-root")
        tars = sorted((base / "deb-root" / "usr" / "src").glob("linux-source-*.tar.*"))
        if not tars:
            raise KhError(f"no linux-source tarball in {debs[0]}")
        for deb in debs:
            deb.unlink()
        return tars

    base = cached(cache_root() / "sources" / f"debian-{series}-{version}", make)
    tar = sorted((base / "deb-root" / "usr" / "src").glob("linux-source-*.tar.*"))[0]
    top = _extract(tar, base.with_name(base.name + "-tree"), tar.name)
    return SourceTree(f"debian-source:{series}", _check_tree(top, pkg),
                      f"debian {pkg} {version}")


def kernelversion(tree: Path) -> str:
    """What `make kernelversion` prints, from the top Makefile's first lines
    (make itself takes seconds to parse the tree, on every cache hit)."""
    head = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION) = ?(.*)$",
                           (tree / "Makefile").read_text(errors="replace")[:2000], re.M))
    try:
        version = f"{head['VERSION']}.{head['PATCHLEVEL']}"
    except KeyError:
        raise KhError(f"no VERSION/PATCHLEVEL at the top of {tree / 'Makefile'}") from None
    if head.get("SUBLEVEL", "").strip():
        version += f".{head['SUBLEVEL'].strip()}"   # a 0 is printed too: 6.12.0
    return version + head.get("EXTRAVERSION", "").strip()
