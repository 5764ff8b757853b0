"""Debian's archive through apt, against private configurations under the
cache: the host's sources and state are never read or touched.

Used by the Debian kernel provider, the source fetcher, the toolchain roots
and the foreign-arch busybox.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.cache import locked
from harness.errors import KhError
from harness.util import cache_root, progress, run, step

MIRROR = os.environ.get("KHARNESS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("KHARNESS_DEBIAN_SECURITY_MIRROR",
                                 "http://deb.debian.org/debian-security")
LISTS_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Series:
    suites: tuple[str, ...]   # where the kernel packages are
    toolchain_suite: str      # a full suite whose gcc built them


SERIES = {
    "6.1": Series(("bookworm", "bookworm-security"), "bookworm"),
    "6.12": Series(("trixie", "trixie-security"), "trixie"),
    "7.2": Series(("sid",), "sid"),
    "7.3": Series(("experimental",), "sid"),
}


class AptConfig:
    """A private apt configuration for some suites and one architecture."""

    def __init__(self, name: str, suites: tuple[str, ...], deb_arch: str):
        self.dir = cache_root() / "apt" / f"{name}-{deb_arch}"
        self.suites = suites
        self.deb_arch = deb_arch
        for sub in ("lists/partial", "archives/partial", "etc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for s in suites:
            mirror = SECURITY_MIRROR if s.endswith("-security") else MIRROR
            lines.append(f"deb [arch={deb_arch}] {mirror} {s} main")
        (self.dir / "etc/sources.list").write_text("\n".join(lines) + "\n")

    def options(self) -> list[str]:
        d = self.dir
        opts = {
            "Dir::Etc::sourcelist": d / "etc/sources.list",
            "Dir::Etc::sourceparts": "-",
            "Dir::State::Lists": d / "lists",
            "Dir::State::status": "/dev/null",
            "Dir::Cache": d,
            "Dir::Cache::archives": d / "archives",
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": self.deb_arch,
            "APT::Architectures": self.deb_arch,
            # Debian's snapshot mirrors serve Release files past their date.
            "Acquire::Check-Valid-Until": "false",
            # apt's own lock wants the host's /var/lib/dpkg; ours is update().
            "Debug::NoLocking": "1",
        }
        out = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def update(self, *, offline: bool) -> None:
        """Refresh the lists if older than LISTS_MAX_AGE; one process at a time,
        so two first runs sharing a cache do not fetch into each other."""
        stamp = self.dir / "updated"
        with locked(self.dir / "update.lock"):
            fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE
            if fresh or (offline and stamp.exists()):
                return
            if offline:
                raise KhError(f"no package lists cached for {' '.join(self.suites)}: "
                              f"run once without --offline to fetch them")
            with step(f"apt-get update ({', '.join(self.suites)}, {self.deb_arch})"):
                proc = run(["apt-get", *self.options(), "update"], what="apt-get update",
                           log=self.dir / "update.log", check=False)
            errors = [ln for ln in proc.stdout.splitlines() if ln.startswith(("E:", "Err:"))]
            if proc.returncode != 0 or errors:
                if stamp.exists():
                    progress(f"apt-get update failed, using the lists from "
                             f"{time.ctime(stamp.stat().st_mtime)} ({self.dir / 'update.log'})")
                    return
                raise KhError(f"apt-get update for {' '.join(self.suites)} failed: "
                              f"{errors[0] if errors else 'exit ' + str(proc.returncode)}; "
                              f"check that {MIRROR} is reachable "
                              f"(log: {self.dir / 'update.log'})")
            stamp.touch()

    def query(self, *args: str) -> str:
        proc = subprocess.run(["apt-cache", *self.options(), *args], capture_output=True,
                              text=True)
        return proc.stdout

    def packages(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Candidate stanzas of the named packages: name -> fields."""
        out: dict[str, dict[str, str]] = {}
        for stanza in self.query("show", "--no-all-versions", *names).split("\n\n"):
            fields = parse_stanza(stanza)
            if "Package" in fields:
                out.setdefault(fields["Package"], fields)
        return out

    def download(self, names: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        run(["apt-get", *self.options(), "download", *names], cwd=dest,
            what=f"downloading {' '.join(names)}", log=dest / "download.log")
        return sorted(dest.glob("*.deb"))


def extract(debs: list[Path], root: Path) -> None:
    """Unpack .deb files into root, as dpkg would lay them out (no scripts)."""
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(root)], what=f"extracting {deb.name}")


def parse_stanza(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def depends(fields: dict[str, str]) -> list[str]:
    """Names in Depends (every alternative), without versions."""
    names = []
    for alt in re.split(r"[,|]", fields.get("Depends", "")):
        name = alt.strip().split(" ")[0].split(":")[0]
        if name:
            names.append(name)
    return names


def dpkg_compare(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1
