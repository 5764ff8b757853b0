"""Static userspace helpers from helpers/, built once per arch and source."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import arches
from harness.build.kmod import REPO, compiler_lines
from harness.errors import KhError
from harness.util import cache_root, digest, locked, run, step

HELPERS = REPO / "helpers"
UAPI = REPO / "kmods" / "include" / "uapi"   # the modules' ioctls
CFLAGS = [f"-I{UAPI}", "-static", "-pthread", "-O2", "-Wall", "-Wextra",
          "-Wno-unused-parameter", "-Werror"]


def compiler(arch_name: str) -> str:
    arch = arches.get(arch_name)
    cc = "gcc" if arch.name == arches.host().name else f"{arch.cross_prefix}gcc"
    if not shutil.which(cc):
        raise KhError(f"{cc} not found to build the helpers for {arch_name}: run ci/setup.sh")
    return cc


def build(arch_name: str) -> list[Path]:
    sources = sorted(HELPERS.glob("*.c"))
    key = digest(arch_name, *(s.read_text() for s in sources + sorted(UAPI.glob("*.h"))))
    out = cache_root() / "helpers" / f"{arch_name}-{key}"
    with locked(out.with_suffix(".lock")):
        bins = [out / s.stem for s in sources]
        if all(b.exists() for b in bins):
            return bins
        out.mkdir(parents=True, exist_ok=True)
        cc = compiler(arch_name)
        with step(f"building helpers for {arch_name}"):
            for src, dst in zip(sources, bins):
                proc = run([cc, *CFLAGS, "-o", str(dst) + ".tmp", str(src)],
                           what=f"helper build of {src.name}", check=False,
                           log=out / f"{src.stem}.log")
                if proc.returncode != 0:
                    raise KhError(f"helper {src.name} does not build (log: "
                                  f"{out / (src.stem + '.log')})",
                                  detail=compiler_lines(proc.stdout))
                Path(str(dst) + ".tmp").rename(dst)
        return bins
