"""The kernel a real machine already runs: the Kernel record our modules
must be built against, found from its `uname -r` and checked before
anything is loaded there."""

from __future__ import annotations

import re

from harness.apt import SERIES
from harness.arches import Arch
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.kernels import debian, resolve


def find(release: str, arch: Arch, wanted: str | None, *, where: str,
         offline: bool = False) -> Kernel:
    """The record of `release`: the --kernel the user named (which must be
    exactly that kernel), or Debian's package of that version."""
    if wanted is not None:
        kind, _, rest = wanted.partition(":")
        kernel = resolve(wanted, arch, offline=offline)
        if kernel.release != release:
            raise UsageError(f"{where} runs {release}, but --kernel {wanted} is {kernel.release}: "
                             f"modules built for one do not load on the other; boot the target "
                             f"into {kernel.release} or name the kernel it runs")
        return kernel
    m = re.match(r"(\d+\.\d+)", release)
    series = m.group(1) if m else ""
    flavour = next((f for f in (*arch.flavours, arch.deb_arch) if release.endswith(f"-{f}")),
                   None)
    if series not in SERIES or flavour is None:
        raise UsageError(f"{where} runs {release}, which is not a Debian kernel kharness knows "
                         f"(series {', '.join(SERIES)}): give --kernel build:<key> of the "
                         f"tree it was built from")
    kernel = debian.get(series, arch, flavour, offline=offline)
    if kernel.release != release:
        raise UsageError(f"{where} runs {release}; Debian's {series} kernel is now "
                         f"{kernel.release}: install linux-image-{kernel.release} there and "
                         f"boot it, or give --kernel build:<key> of the kernel it runs")
    return kernel
