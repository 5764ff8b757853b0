"""The compiler that may build modules for a kernel.

Out-of-tree modules must be built by the compiler major that built the
kernel (CONFIG_CC_VERSION_TEXT). Where the host has it and can run the
kernel's kbuild helpers, the host serves. Otherwise (bookworm's gcc-12 and
glibc 2.36 against Debian's gcc-14 and gcc-16 kernels) we make a root of the
kernel's own Debian suite with mmdebstrap, once, and build inside it with
chroot, the cache bind-mounted at the same path so every path still holds.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.apt import MIRROR
from harness.arches import Arch, host
from harness.cache import cached
from harness.errors import KhError
from harness.kernel import Kernel
from harness.util import cache_root, run, step

# A command run with this in front mounts only in a mount namespace of its
# own, and is PID 1 of a PID namespace that --kill-child ends with unshare
# (which dies with us, harness.spawn): when it goes, the kernel kills all it
# started (apt, dpkg, the compilers) and its mounts go with the namespace,
# however kharness ended.
PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                  "--kill-child", "--mount-proc"]


@dataclass(frozen=True)
class Toolchain:
    gcc_major: int
    cross_compile: str        # CROSS_COMPILE= value, "" for a native build
    root: Path | None = None  # None: the host

    def wrap(self, cmd: list[str], binds: list[Path]) -> list[str]:
        """The command as it must run: on the host or chrooted into the root."""
        if self.root is None:
            return cmd
        mounts = []
        for b in [Path("/dev"), Path("/proc"), *binds]:
            inside = f"{self.root}{b}"
            mounts.append(f"mkdir -p {shlex.quote(inside)} && "
                          f"mount --rbind {shlex.quote(str(b))} {shlex.quote(inside)}")
        script = " && ".join(mounts) + f" && exec chroot {shlex.quote(str(self.root))} " + \
            " ".join(shlex.quote(c) for c in cmd)
        # A private mount namespace: the binds vanish with the build.
        return [*PRIVATE_MOUNTS, "sh", "-c", script]

    def describe(self) -> str:
        where = f"root {self.root}" if self.root else "host"
        return f"gcc-{self.gcc_major} {self.cross_compile or 'native'} ({where})"


def kernel_gcc_major(kernel: Kernel) -> int:
    text = kernel.config_value("CONFIG_CC_VERSION_TEXT") or ""
    m = re.search(r"gcc(?:-\d+)? \(.*?\) (\d+)\.", text) or re.search(r"gcc-(\d+)", text)
    if not m:
        raise KhError(f"cannot tell which gcc built {kernel.release} "
                      f"(CONFIG_CC_VERSION_TEXT={text!r}); only gcc-built kernels are supported")
    return int(m.group(1))


def _host_can_build(kernel: Kernel, cc: str) -> bool:
    if not shutil.which(cc):
        return False
    fixdep = kernel.build_dir / "scripts" / "basic" / "fixdep"
    if not fixdep.exists():
        return True
    proc = subprocess.run([str(fixdep)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    # Usage text and exit 1 is fine; a missing GLIBC_2.38 or loader is not.
    return proc.returncode not in (126, 127) and "GLIBC_" not in proc.stdout


def for_kernel(kernel: Kernel) -> Toolchain:
    major = kernel_gcc_major(kernel)
    cross = kernel.arch.cross_compile
    cc = f"{cross or host().cross_prefix}gcc-{major}"
    if _host_can_build(kernel, cc):
        return Toolchain(major, cross)
    if not kernel.suite:
        raise KhError(f"{cc} is needed to build modules for {kernel.release}: install it")
    return Toolchain(major, cross,
                     ensure_root(kernel.suite, major, None if kernel.arch.native else kernel.arch))


def ensure_root(suite: str, major: int, cross_arch: Arch | None) -> Path:
    if os.geteuid() != 0:
        raise KhError(f"building modules for a gcc-{major} kernel on this host needs a "
                      f"{suite} toolchain root, made and entered as root: run as root")
    if not shutil.which("mmdebstrap"):
        raise KhError("mmdebstrap is missing: run ci/setup.sh (or apt-get install mmdebstrap)")
    pkgs = [f"gcc-{major}", "make", "libc6-dev", "dwarves", "bc"]
    name = f"{suite}-{platform.machine()}-gcc{major}"
    if cross_arch is not None:
        pkgs.append(f"gcc-{major}-{cross_arch.cross_prefix.rstrip('-')}")
        name += f"-{cross_arch.name}"

    def make(root: Path) -> list[Path]:
        with step(f"making a {suite} toolchain root with {', '.join(pkgs)} (once)"):
            # mmdebstrap mounts /proc, /sys, /dev/pts and /dev/shm in the root
            # while it works: in a private mount namespace those vanish with
            # it, however it ends (a Ctrl-C once left them in the cache).
            run([*PRIVATE_MOUNTS, "mmdebstrap", "--variant=minbase",
                 "--aptopt=Acquire::Check-Valid-Until \"false\"",
                 f"--include={','.join(pkgs)}", suite, str(root), MIRROR],
                what=f"mmdebstrap of a {suite} toolchain root",
                log=root.with_name(root.name + ".log"))
        return []

    return cached(cache_root() / "toolchains" / name, make)
