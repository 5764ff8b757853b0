"""Kernel providers: each turns its kind of --kernel spec into a Kernel record.

  debian:<series>[-<flavour>]  Debian's prebuilt kernels (debian.py); the
                    flavour where an arch has several (armhf: armmp, armmp-lpae)
  build:<key>       a kernel `kharness build` made from source (built.py)
"""

from __future__ import annotations

from harness.apt import SERIES
from harness.arches import ARCHES, Arch
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.kernels import built, debian

DEFAULT_SPEC = "debian:6.12"
# Debian's kernel flavours beyond an arch's own name -> the arch (armhf's
# armmp and armmp-lpae): debian:<series>-<flavour>.
FLAVOURS = {f: a.name for a in ARCHES.values() for f in a.flavours}


def validate(spec: str) -> str:
    """Reject a spec we cannot serve before any download or boot."""
    kind, _, rest = spec.partition(":")
    series, _, flavour = rest.partition("-")
    if kind == "debian" and series in SERIES and flavour:
        if flavour in FLAVOURS:
            return spec
        raise UsageError(f"unknown Debian kernel flavour '{flavour}' in '{spec}': known "
                         f"flavours are {', '.join(FLAVOURS)} (e.g. --kernel "
                         f"debian:{series}-{next(iter(FLAVOURS))} --arch "
                         f"{FLAVOURS[next(iter(FLAVOURS))]})")
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
    raise UsageError(f"unknown kernel spec '{spec}': use debian:<series>[-<flavour>] "
                     f"(series: {', '.join(SERIES)}) or build:<key> from 'kharness build'")


def resolve(spec: str, arch: Arch, *, offline: bool = False) -> Kernel:
    """Turn a --kernel spec into a Kernel record, downloading as needed."""
    kind, _, rest = validate(spec).partition(":")
    if kind == "build":
        return built.find(rest, arch)
    series, _, flavour = rest.partition("-")
    if flavour and flavour not in arch.flavours:
        raise UsageError(f"--kernel {spec}: {flavour} is a flavour of "
                         f"{FLAVOURS[flavour]}'s kernels, not {arch}'s (give --arch "
                         f"{FLAVOURS[flavour]}, or debian:{series} for {arch}'s)")
    return debian.get(series, arch, flavour or arch.flavour, offline=offline)
