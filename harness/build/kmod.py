"""Out-of-tree modules from kmods/, built with Kbuild against a Kernel record.

Each module is copied with the shared include folder into a build directory
keyed by the kernel and the sources, so a rebuild happens only when either
changes, and a repo checkout is never written to.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import arches
from harness.build import toolchain
from harness.errors import KhError
from harness.kernels import Kernel
from harness.util import cache_root, digest, locked, run, step

REPO = Path(__file__).resolve().parents[2]
KMODS = REPO / "kmods"


@dataclass(frozen=True)
class Module:
    name: str     # module name as insmod/lsmod know it: kh_ringbuf
    path: Path    # the .ko


def available() -> list[str]:
    return sorted(p.name for p in KMODS.iterdir() if (p / "Kbuild").exists())


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def make_args(kernel: Kernel, tc: toolchain.Toolchain, moddir: Path) -> list[str]:
    arch = arches.get(kernel.arch)
    args = ["make", "-C", str(kernel.build_dir), f"M={moddir}", f"ARCH={arch.kernel_arch}",
            # BTF for modules would need pahole and the headers' vmlinux; we do not use it.
            "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"]
    if tc.cross_compile:
        args.insert(-1, f"CROSS_COMPILE={tc.cross_compile}")
    return args


def compiler_lines(output: str) -> str:
    keep = [l for l in output.splitlines()
            if any(k in l for k in ("error:", "warning:", "Error ", "ERROR:", "note:",
                                    "undefined"))]
    return "\n".join(keep[:40]) or "\n".join(output.splitlines()[-20:])


def build(kernel: Kernel, name: str, kmods: Path = KMODS) -> Module:
    src = kmods / name
    if not (src / "Kbuild").exists():
        raise KhError(f"no module '{name}' in {kmods}: available: {', '.join(available())}")
    inputs = _sources(src) + _sources(kmods / "include")
    key = digest(kernel.release, kernel.source,
                 *(f"{p.relative_to(kmods)}:{p.read_bytes().hex()}" for p in inputs))
    top = cache_root() / "modules" / f"{kernel.release}" / f"{name}-{key}"
    with locked(top.with_suffix(".lock")):
        kos = sorted((top / name).glob("*.ko"))
        if kos and (top / ".complete").exists():
            return Module(kos[0].stem, kos[0])
        shutil.rmtree(top, ignore_errors=True)
        shutil.copytree(src, top / name)
        shutil.copytree(kmods / "include", top / "include")
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
        (top / ".complete").touch()
        return Module(kos[0].stem, kos[0])
