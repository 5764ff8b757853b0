"""Kconfig fragments: merge with the kernel's own merge_config.sh, run
olddefconfig, and list every requested option that did not survive (as
kunit_tool does). The parsing and the survival check are pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.resources import data

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")
_START = re.compile(r"^#\s*kharness-start:\s*(\w+)")


@dataclass(frozen=True)
class Lost:
    option: str
    wanted: str
    got: str          # 'n' when absent or "is not set"

    def __str__(self) -> str:
        return f"{self.option}={self.wanted} (got {self.got})"


def parse(text: str) -> dict[str, str]:
    """Option -> value, 'n' for '# CONFIG_X is not set'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            out[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            out[m.group(1)] = "n"
    return out


def start_target(texts: list[str]) -> str:
    """The config the fragments go on top of: '# kharness-start: tinyconfig'
    in a fragment, or defconfig."""
    for t in texts:
        for line in t.splitlines():
            if m := _START.match(line):
                return m.group(1)
    return "defconfig"


def lost(wanted: dict[str, str], final: dict[str, str]) -> list[Lost]:
    out = []
    for opt, want in wanted.items():
        got = final.get(opt, "n")
        if got != want:
            out.append(Lost(opt, want, got))
    return out


def resolve_fragments(names: list[str], arch: Arch) -> list[Path]:
    """Paths as given, or names under kconfigs/ ('base' -> kconfigs/base.config),
    each followed by its per-arch part (kconfigs/base.<arch>.config) if any."""
    kconfigs = data("kconfigs")
    out = []
    for name in names:
        p = Path(name)
        if not p.exists():
            p = kconfigs / (name if name.endswith(".config") else f"{name}.config")
        if not p.exists():
            known = sorted(f.stem for f in kconfigs.glob("*.config") if f.stem.count(".") == 0)
            raise UsageError(f"kconfig fragment '{name}' not found: give a path or one of "
                             f"{', '.join(known)}")
        out.append(p)
        per_arch = p.with_name(f"{p.stem}.{arch.name}.config")
        if per_arch.exists():
            out.append(per_arch)
    return out


def wanted_of(fragments: list[Path]) -> dict[str, str]:
    want: dict[str, str] = {}
    for f in fragments:
        want.update(parse(f.read_text()))
    return want


class ConfigError(KhError):
    pass


def report_lost(missing: list[Lost], *, strict: bool, where: Path) -> str | None:
    """None when all survived; else the message (raised when strict)."""
    if not missing:
        return None
    msg = (f"{len(missing)} requested kconfig option(s) did not survive olddefconfig: "
           f"{', '.join(map(str, missing))} (config: {where}); check their dependencies")
    if strict:
        raise ConfigError(msg)
    return msg
