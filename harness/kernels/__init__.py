"""Kernel providers: each turns its kind of --kernel spec into a Kernel record.

  debian:<series>   Debian's prebuilt kernels (debian.py)
  build:<key>       a kernel `kharness build` made from source (built.py)
"""

from __future__ import annotations

from harness.apt import SERIES
from harness.arches import Arch
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.kernels import built, debian

DEFAULT_SPEC = "debian:6.12"


def validate(spec: str) -> str:
    """Reject a spec we cannot serve before any download or boot."""
    kind, _, rest = spec.partition(":")
    if kind == "debian" and rest in SERIES:
        return spec
    if kind == "build" and built.valid_ref(rest):
        return spec
    if kind == "debian":
        raise UsageError(f"unknown Debian kernel series '{rest}': known series are "
                         f"{', '.join(SERIES)} (e.g. --kernel debian:{next(iter(SERIES))})")
    if kind == "build":
        raise UsageError(f"bad build reference '{spec}': give build:<key> as 'kharness "
                         f"build' printed it, a prefix of the key, or a build directory")
    raise UsageError(f"unknown kernel spec '{spec}': use debian:<series> "
                     f"(series: {', '.join(SERIES)}) or build:<key> from 'kharness build'")


def resolve(spec: str, arch: Arch, *, offline: bool = False) -> Kernel:
    """Turn a --kernel spec into a Kernel record, downloading as needed."""
    kind, _, rest = validate(spec).partition(":")
    if kind == "build":
        return built.find(rest, arch)
    return debian.get(rest, arch, offline=offline)
