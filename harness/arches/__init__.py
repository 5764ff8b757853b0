"""Per-arch QEMU and toolchain settings, one data module an arch.

Adding an arch is adding a module here that exports ARCH, an ArchParams.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class ArchParams:
    name: str              # our name: x86_64, arm64
    deb_arch: str          # Debian's name: amd64, arm64
    kernel_arch: str       # ARCH= for kbuild
    uname_machine: str     # what `uname -m` prints on such a host
    qemu_binary: str
    qemu_args: tuple[str, ...]   # machine and cpu, accel added by the probe
    kvm_cpu: str           # cpu model when KVM serves
    console: str           # kernel console device
    cross_prefix: str      # for building on a host of another arch
    page_size: int
    busybox_package: str   # Debian package whose busybox we put in the initramfs
    qemu_package: str
    boot_vmlinux: bool     # boot the uncompressed ELF inside the image (PVH)
    build_image: str       # the boot image a source build makes, relative to O=


KNOWN = ("x86_64", "arm64")
ALIASES = {"amd64": "x86_64", "aarch64": "arm64", "x86-64": "x86_64"}


class UnknownArch(ValueError):
    pass


def get(name: str) -> ArchParams:
    name = ALIASES.get(name, name)
    if name not in KNOWN:
        raise UnknownArch(f"unknown arch '{name}': known arches are {', '.join(KNOWN)}")
    return importlib.import_module(f"harness.arches.{name}").ARCH


def host() -> ArchParams:
    return get(platform.machine())
