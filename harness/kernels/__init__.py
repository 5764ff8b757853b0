"""Kernel providers. Each returns the same Kernel record."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import UsageError

DEFAULT_SPEC = "debian:6.12"


@dataclass(frozen=True)
class Kernel:
    spec: str            # what the user asked for: debian:7.2
    release: str         # uname -r: 7.2.13+deb14-amd64
    arch: str            # our arch name
    image: Path          # what the boot loader gets (bzImage, Image)
    modules_dir: Path    # lib/modules/<release>
    build_dir: Path      # where `make -C` goes for out-of-tree modules
    config: Path
    source: str          # where it came from: Debian package versions, a build key
    suite: str = ""      # Debian suite of its toolchain, when it came from Debian
    vmlinux: Path | None = None  # uncompressed ELF, faster to boot where the arch allows
    extra: dict = field(default_factory=dict)

    @property
    def version(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    def config_value(self, option: str) -> str | None:
        for line in self.config.read_text(errors="replace").splitlines():
            if line.startswith(option + "="):
                return line.split("=", 1)[1].strip('"')
        return None

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in d.items()},
                          indent=2)

    @classmethod
    def load(cls, record: Path) -> "Kernel":
        """The record to_json() wrote (kernel.json of any provider)."""
        d = json.loads(record.read_text())
        for k in ("image", "modules_dir", "build_dir", "config", "vmlinux"):
            d[k] = Path(d[k]) if d.get(k) not in (None, "None") else None
        return cls(**d)


def validate(spec: str) -> None:
    """Reject a spec we cannot serve before any download or boot."""
    from harness.kernels.debian import SERIES
    kind, _, rest = spec.partition(":")
    if kind == "debian" and rest in SERIES:
        return
    if kind == "build" and rest:
        return
    if kind == "debian":
        raise UsageError(f"unknown Debian kernel series '{rest}': known series are "
                         f"{', '.join(SERIES)} (e.g. --kernel debian:{next(iter(SERIES))})")
    raise UsageError(f"unknown kernel spec '{spec}': use debian:<series> "
                     f"(series: {', '.join(SERIES)}) or build:<key> from 'kharness build'")


def resolve(spec: str, arch: str, *, offline: bool = False) -> Kernel:
    """Turn a --kernel spec into a Kernel record, downloading as needed."""
    validate(spec)
    kind, _, rest = spec.partition(":")
    if kind == "build":
        from harness.build import kernel as kbuild
        return kbuild.find(rest, arch)
    from harness.kernels import debian
    return debian.get(rest, arch, offline=offline)
