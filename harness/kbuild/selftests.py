"""The kernel's own mm selftests (tools/testing/selftests/mm), built static
for the guest arch from the source of the kernel under test.

Selftests must match the kernel they test: 7.2's binaries on 6.12 report
behaviour 6.12 never had. So they come from the same source as the kernel
(Debian's linux-source of the same version, a build's own patched tree), or
from a source the user names (mainline tests on a stable kernel), and the
results say which.

The source tree is never written: `make headers_install` goes to a private
directory, and the mm folder is copied into a shadow tree whose other
entries are symlinks, since the selftest Makefile writes its probe results
(local_config.h, check_config.sh) beside its sources. Each binary is made on
its own, so one that does not build costs only itself; its log says why.
The optional libraries (liburing for cow's io_uring cases, libnuma, libcap)
are Debian's -dev packages for the guest arch, unpacked into the entry:
static archives, no multiarch set-up on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import apt, mounts
from harness.apt import AptConfig
from harness.arches import Arch
from harness.cache import cached
from harness.errors import KhError
from harness.kbuild.helpers import compiler
from harness.kbuild.source import SourceTree, kernelversion
from harness.util import cache_root, digest, progress, run, step

RECIPE = "9"     # bump when how we build changes what comes out
SUBDIR = Path("tools/testing/selftests/mm")
OLD_SUBDIR = Path("tools/testing/selftests/vm")    # their folder's name before 6.3
# Debian -dev packages whose static archives some tests link, from the
# host's release (its glibc is the one the binaries are linked with).
LIBRARIES = {"liburing": "liburing-dev", "libnuma": "libnuma-dev", "libcap": "libcap-dev",
             "libuuid": "uuid-dev"}     # uuid: vfio's
LIB_SUITE = "bookworm"
# What a binary links beyond libc, from the Makefile's per-target LDLIBS.
NEEDS = re.compile(r"^\$\(OUTPUT\)/(\S+):\s*LDLIBS\s*\+=\s*(.*)$", re.M)


class Absent(KhError):
    """The tree has no such collection (older than it): its tests skip."""


@dataclass(frozen=True)
class Selftests:
    """A built set: binaries by name, and why the others are absent."""
    dir: Path
    source: str                         # the source's spec: debian-source:7.2, a path
    identity: str                       # its identity (package version, git HEAD)
    version: str                        # its `make kernelversion`
    arch: str
    timeout: int                        # the suite's settings file
    built: dict[str, str] = field(default_factory=dict)     # name -> file in dir
    missing: dict[str, str] = field(default_factory=dict)   # name -> why not built
    harness: list[str] = field(default_factory=list)        # kselftest_harness binaries
    libraries: dict[str, str] = field(default_factory=dict)  # library -> version or why not
    collection: str = "mm"              # its folder under tools/testing/selftests

    def path(self, name: str) -> Path:
        return self.dir / self.built[name]

    @classmethod
    def load(cls, entry: Path) -> Selftests:
        d = json.loads((entry / "selftests.json").read_text())
        if not isinstance(d, dict):
            raise ValueError(f"{entry / 'selftests.json'} holds no record")
        d["dir"] = entry / "bin"
        return cls(**d)


def build(tree: SourceTree, arch: Arch, names: list[str], collection: str = "mm") -> Selftests:
    """The named selftests of a collection (the folder under
    tools/testing/selftests: mm, perf_events, drivers/dma-buf, vfio) of
    tree for arch, made once per source content."""
    cc = compiler(arch)
    cc_version = run([cc, "-dumpfullversion"], what=f"{cc} -dumpfullversion").stdout.strip()
    key = digest(RECIPE, tree.identity, arch.name, cc_version, collection, *sorted(names))
    entry = cache_root() / "selftests" / (f"{arch.name}-{kernelversion(tree.path)}-"
                                          f"{collection.replace('/', '-')}-{key}")

    def make(out: Path) -> list[Path]:
        with step(f"building {len(names)} {collection} selftests from {tree.spec} for {arch}"):
            record = _build(tree, arch, names, cc, out, collection)
        (out / "selftests.json").write_text(json.dumps(record, indent=2) + "\n")
        return [out / "selftests.json"]

    return Selftests.load(cached(entry, make, check=Selftests.load))


def subdir(tree: Path, collection: str = "mm") -> Path:
    """Where tree keeps a collection's selftests (mm's: mm, or vm before 6.3)."""
    if collection != "mm":
        return SUBDIR.parent / collection
    return OLD_SUBDIR if not (tree / SUBDIR).is_dir() and (tree / OLD_SUBDIR).is_dir() \
        else SUBDIR


def _build(tree: SourceTree, arch: Arch, names: list[str], cc: str, out: Path,
           collection: str) -> dict:
    where = subdir(tree.path, collection)
    src = tree.path / where
    if not src.is_dir():
        raise Absent(f"{tree.spec} ({kernelversion(tree.path)}) has no {where}")
    logs = out / "logs"
    logs.mkdir()
    hdr = out / "usr"
    run(["make", "-C", str(tree.path), f"O={out / 'hdr-obj'}", f"ARCH={arch.kernel_arch}",
         f"INSTALL_HDR_PATH={hdr}", "headers_install"],
        what=f"make headers_install of {tree.spec}", log=logs / "headers.log")
    mounts.remove_tree(out / "hdr-obj")
    shadow = _shadow(tree.path, out / "tree", where)
    # Headers through gcc's CPATH, which also reaches check_config.sh (before
    # 6.13 it runs "$CC -c" without CFLAGS); archives through LDFLAGS (a cross
    # gcc ignores LIBRARY_PATH).
    libs, libdir = _libraries(arch, out / "libs")
    lib_env = {"CPATH": str(out / "libs" / "usr" / "include")} if libs else {}
    timeout = _timeout(src / "settings")
    needs = {t: set(re.findall(r"-l(\w+)", v)) for t, v in NEEDS.findall(
        (src / "Makefile").read_text())}
    bindir = out / "bin"
    bindir.mkdir()
    make = ["make", "-C", str(shadow / where), f"OUTPUT={bindir}", f"ARCH={arch.name}",
            f"CROSS_COMPILE={arch.cross_compile}", f"KHDR_INCLUDES=-isystem {hdr / 'include'}",
            f"LDFLAGS=-static{f' -L{libdir}' if libs else ''}"]
    built, missing, harness = {}, {}, []
    lists = _harness_lists(tree.path)
    for name in names:
        if not (src / f"{name}.c").exists():
            missing[name] = f"not in {tree.spec}'s selftests ({kernelversion(tree.path)})"
            continue
        absent = sorted(lib for lib in needs.get(name, ()) if f"lib{lib}" in LIBRARIES
                        and f"lib{lib}" not in libs)
        log = logs / f"{name}.log"
        proc = run([*make, str(bindir / name)], what=f"make {name}", log=log, check=False,
                   env={**os.environ, **lib_env})
        if proc.returncode != 0 or not (bindir / name).exists():
            why = f"does not build for {arch}: {_first_error(log)} (log: {log})"
            if absent:
                why = f"needs {', '.join('lib' + a for a in absent)}, not available for {arch}"
            missing[name] = why
            continue
        built[name] = name
        if lists and "kselftest_harness.h" in (src / f"{name}.c").read_text(errors="replace"):
            harness.append(name)
    mounts.remove_tree(out / "tree")
    if not built:
        raise KhError(f"no {collection} selftest built from {tree.spec} for {arch} "
                      f"(logs: {logs})",
                      detail="\n".join(f"{n}: {w}" for n, w in missing.items()))
    progress(f"{collection} selftests: {len(built)} built"
             + (f", not built: {', '.join(missing)}" if missing else ""))
    return {"source": tree.spec, "identity": tree.identity,
            "version": kernelversion(tree.path), "arch": arch.name, "timeout": timeout,
            "built": built, "missing": missing, "harness": harness, "collection": collection,
            "libraries": {lib: libs.get(lib, "not available") for lib in LIBRARIES}}


def _harness_lists(top: Path) -> bool:
    """Whether the tree's kselftest_harness lists its tests (-l) and runs
    one (-r), so that each is a run of its own. 6.1's ignores its arguments:
    given -l, it runs every test, and its binaries are run once, whole."""
    header = top / SUBDIR.parent / "kselftest_harness.h"
    text = header.read_text(errors="replace") if header.is_file() else ""
    return re.search(r'getopt\(argc, argv, "[^"]*l[^"]*"\)', text) is not None


def _first_error(log: Path) -> str:
    """The compiler's first error in a build log, or what ended it."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return next((ln.strip() for ln in lines if "error:" in ln),
                lines[-1].strip() if lines else "no output")


def _shadow(top: Path, dest: Path, folder: Path = SUBDIR) -> Path:
    """dest mirrors top with symlinks, except the mm selftests folder, which
    is a copy the Makefile may write into."""
    here, there = top, dest
    for part in folder.parts:
        there.mkdir(parents=True)
        for entry in here.iterdir():
            if entry.name != part:
                (there / entry.name).symlink_to(entry)
        here, there = here / part, there / part
    shutil.copytree(here, there, symlinks=True)
    for probe in there.glob("local_config.*"):
        probe.unlink()      # a hand-run make in the tree left its probe results: probe again
    return dest


def _libraries(arch: Arch, root: Path) -> tuple[dict[str, str], Path | None]:
    """Debian's static archives of LIBRARIES for arch under root: the
    versions found, and the folder of the archives. Not reachable is
    not fatal: the tests that need them are not built, and say so."""
    lists = AptConfig("selftest-libs", (LIB_SUITE,), arch.deb_arch)
    try:
        lists.update(offline=False)
        stanzas = lists.packages(list(LIBRARIES.values()))
        debs = lists.download(list(stanzas), root / "debs")
        apt.extract(debs, root)
    except KhError as e:
        progress(f"mm selftests: no optional libraries ({e}); tests needing them are skipped")
        return {}, None
    triplet = (arch.cross_compile or f"{os.uname().machine}-linux-gnu-").rstrip("-")
    libdir = root / "usr" / "lib" / triplet
    found = {lib: stanzas[pkg]["Version"] for lib, pkg in LIBRARIES.items()
             if pkg in stanzas and (libdir / f"{lib}.a").exists()}
    return found, libdir


def _timeout(settings: Path) -> int:
    """The suite's per-binary timeout, as kselftest's runner reads it."""
    if settings.exists():
        m = re.search(r"^timeout=(\d+)", settings.read_text(), re.M)
        if m:
            return int(m.group(1))
    return 45       # runner.sh's default


def describe(s: Selftests) -> str:
    return json.dumps({k: v for k, v in asdict(s).items() if k != "dir"})
