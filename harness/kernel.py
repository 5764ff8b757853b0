"""The Kernel record every provider returns and every later stage takes."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import arches
from harness.arches import Arch
from harness.errors import UsageError

_PATHS = ("image", "modules_dir", "build_dir", "config", "vmlinux")


@dataclass(frozen=True)
class Kernel:
    spec: str            # what the user asked for: debian:7.2
    release: str         # uname -r: 7.2.13+deb14-amd64
    arch: Arch
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

    @property
    def debian_series(self) -> str:
        """The Debian series of a debian: spec ("6.12" of debian:6.12-armmp-lpae);
        "" for a kernel of another provider."""
        kind, _, rest = self.spec.partition(":")
        return rest.partition("-")[0] if kind == "debian" else ""

    def config_value(self, option: str) -> str | None:
        for line in self.config.read_text(errors="replace").splitlines():
            if line.startswith(option + "="):
                return line.split("=", 1)[1].strip('"')
        return None

    def to_json(self) -> str:
        d = asdict(self)
        d["arch"] = self.arch.name
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in d.items()},
                          indent=2)

    @classmethod
    def load(cls, record: Path) -> Kernel:
        """The record to_json() wrote (kernel.json of any provider); ValueError
        if it is not one."""
        d = json.loads(record.read_text())
        if not isinstance(d, dict):
            raise ValueError(f"{record} holds no kernel record")
        try:
            for k in _PATHS:
                d[k] = Path(d[k]) if d.get(k) not in (None, "None") else None
            d["arch"] = arches.get(d["arch"])
            return cls(**d)
        except (KeyError, TypeError, UsageError) as e:
            raise ValueError(f"{record} is not a kernel record: {e}") from None
