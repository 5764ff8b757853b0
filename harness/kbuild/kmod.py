"""Out-of-tree modules from kmods/, built with Kbuild against a Kernel record.

Each module is copied with the shared include folder into a cache entry
keyed by the kernel and the sources, so a rebuild happens only when either
changes, and the sources are never written to.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cached
from harness.errors import KhError
from harness.kbuild import toolchain
from harness.kernel import Kernel
from harness.resources import data
from harness.util import cache_root, digest, run, step


@dataclass(frozen=True)
class Module:
    name: str     # module name as insmod/lsmod know it: kh_ringbuf
    path: Path    # the .ko


def available(kmods: Path) -> list[str]:
    return sorted(p.name for p in kmods.iterdir() if (p / "Kbuild").exists())


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def make_args(kernel: Kernel, tc: toolchain.Toolchain, moddir: Path) -> list[str]:
    args = ["make", "-C", str(kernel.build_dir), f"M={moddir}",
            f"ARCH={kernel.arch.kernel_arch}",
            # BTF for modules would need pahole and the headers' vmlinux; we do not use it.
            "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"]
    if tc.cross_compile:
        args.insert(-1, f"CROSS_COMPILE={tc.cross_compile}")
    return args


def compiler_lines(output: str) -> str:
    keep = [ln for ln in output.splitlines()
            if any(k in ln for k in ("error:", "warning:", "Error ", "ERROR:", "note:",
                                     "undefined"))]
    return "\n".join(keep[:40]) or "\n".join(output.splitlines()[-20:])


def build(kernel: Kernel, name: str, kmods: Path | None = None) -> Module:
    kmods = kmods or data("kmods")
    src = kmods / name
    if not (src / "Kbuild").exists() and not (src / "Makefile").exists():
        raise KhError(f"no module '{name}' in {kmods}: available: {', '.join(available(kmods))}")
    shared = kmods / "include"      # our modules' compat header; a user's module has none
    inputs = _sources(src) + (_sources(shared) if shared.is_dir() else [])
    key = digest(kernel.release, kernel.source,
                 *(f"{p.relative_to(kmods)}:{p.read_bytes().hex()}" for p in inputs))

    def make(top: Path) -> list[Path]:
        shutil.copytree(src, top / name)
        if shared.is_dir():
            shutil.copytree(shared, top / "include")
        tc = toolchain.for_kernel(kernel)
        log = top / "build.log"
        with step(f"building module {name} for {kernel.release} with {tc.describe()}"):
            proc = run(tc.wrap(make_args(kernel, tc, top / name), [cache_root()]),
                       what=f"module build of {name}", log=log, check=False)
        if proc.returncode != 0:
            raise KhError(f"module {name} does not build against {kernel.release} "
                          f"(log: {log})", detail=compiler_lines(proc.stdout))
        kos = sorted((top / name).glob("*.ko"))
        if not kos:
            raise KhError(f"module build of {name} made no .ko (log: {log})")
        return kos

    # A '+' (6.12.117+deb13) in the source path ends up in WARNING headers
    # (__FILE__), where syzkaller's title patterns stop reading it.
    top = cached(cache_root() / "modules" / kernel.release.replace("+", "_") / f"{name}-{key}",
                 make)
    ko = sorted((top / name).glob("*.ko"))[0]
    return Module(ko.stem, ko)
