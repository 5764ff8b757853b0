"""Static userspace helpers from helpers/, built once per arch and source."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.arches import Arch
from harness.cache import cached
from harness.errors import KhError, UsageError
from harness.kbuild.kmod import compiler_lines
from harness.resources import data
from harness.util import cache_root, digest, run, step

# 64-bit file offsets on 32-bit arches too: vfio's regions lie at index << 40.
CFLAGS = ["-static", "-pthread", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Werror", "-D_FILE_OFFSET_BITS=64"]


def compiler(arch: Arch) -> str:
    cc = f"{arch.cross_compile}gcc"
    if not shutil.which(cc):
        raise KhError(f"{cc} not found to build the helpers for {arch}: run ci/setup.sh")
    return cc


def build(arch: Arch) -> list[Path]:
    sources = sorted(data("helpers").glob("*.c"))
    uapi = data("kmods") / "include" / "uapi"   # the modules' ioctls
    headers = sorted(data("helpers").glob("*.h")) + sorted(uapi.glob("*.h"))
    key = digest(arch.name, *(s.read_text() for s in sources + headers))

    def make(out: Path) -> list[Path]:
        cc = compiler(arch)
        with step(f"building helpers for {arch}"):
            for src in sources:
                log = out / f"{src.stem}.log"
                proc = run([cc, f"-I{uapi}", *CFLAGS, "-o", str(out / src.stem), str(src)],
                           what=f"helper build of {src.name}", check=False, log=log)
                if proc.returncode != 0:
                    raise KhError(f"helper {src.name} does not build (log: {log})",
                                  detail=compiler_lines(proc.stdout))
        return [out / s.stem for s in sources]

    out = cached(cache_root() / "helpers" / f"{arch.name}-{key}", make)
    return [out / s.stem for s in sources]


def compile_reproducer(src: Path, arch: Arch, out: Path) -> Path:
    """A user's C reproducer, static for the guest arch with the helpers'
    compiler; a compile error is bad input, shown as the compiler printed it."""
    cc = compiler(arch)
    out.parent.mkdir(parents=True, exist_ok=True)
    with step(f"compiling {src.name} for {arch}"):
        proc = run([cc, "-static", "-pthread", "-O2", "-o", str(out), str(src)],
                   what=f"compile of {src.name}", check=False, log=out.with_suffix(".log"))
    if proc.returncode != 0:
        raise UsageError(f"{src} does not compile for {arch} with {cc} (log: "
                         f"{out.with_suffix('.log')})", detail=proc.stdout.strip())
    return out
