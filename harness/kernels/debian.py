"""Debian's prebuilt kernels: find the newest of a series, download, extract.

apt's own machinery resolves and downloads, against a private configuration
under the cache (its own sources list, lists and archives), so the host's
sources and /boot are never touched. Each kernel is extracted once into a
directory named by its package versions; a second run finds it there.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import arches
from harness.errors import KhError, UsageError
from harness.kernels import Kernel
from harness.kernels.image import extract_vmlinux
from harness.util import cache_root, locked, progress, run, step

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

# Packages that make up a kernel; anything else a kernel package depends on
# (initramfs tools, the compiler) is not ours to fetch.
KERNEL_PKG = re.compile(r"^linux-(image|binary|modules|base|headers|kbuild)-\S*\d")


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
            "Debug::NoLocking": "1",
        }
        out = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def _stamp(self) -> Path:
        return self.dir / "updated"

    def has_lists(self) -> bool:
        return self._stamp().exists()

    def update(self, *, offline: bool) -> None:
        stamp = self._stamp()
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE
        if fresh or (offline and stamp.exists()):
            return
        if offline:
            raise KhError(f"no package lists cached for {' '.join(self.suites)}: "
                          f"run once without --offline to fetch them")
        with step(f"apt-get update ({', '.join(self.suites)}, {self.deb_arch})"):
            proc = run(["apt-get", *self.options(), "update"], what="apt-get update",
                       log=self.dir / "update.log", check=False)
        errors = [l for l in proc.stdout.splitlines() if l.startswith(("E:", "Err:"))]
        if proc.returncode != 0 or errors:
            if stamp.exists():
                progress(f"apt-get update failed, using the lists from "
                         f"{time.ctime(stamp.stat().st_mtime)} ({self.dir / 'update.log'})")
                return
            raise KhError(f"apt-get update for {' '.join(self.suites)} failed: "
                          f"{errors[0] if errors else 'exit ' + str(proc.returncode)}; "
                          f"check that {MIRROR} is reachable (log: {self.dir / 'update.log'})")
        stamp.touch()

    def query(self, *args: str) -> str:
        proc = subprocess.run(["apt-cache", *self.options(), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
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


def headers_pattern(series: str, deb_arch: str) -> re.Pattern:
    # abi: 6.1.0-56, 6.12.117+deb13, 7.2.13+deb14, 7.3 ; flavour: plain <arch>
    return re.compile(rf"^linux-headers-({re.escape(series)}(?:[.+~][\w.+~]*)?(?:-\d+)?)"
                      rf"-{deb_arch}$")


def newest_abi(apt: AptConfig, series: str, deb_arch: str) -> tuple[str, str]:
    """(abi, headers package version) of the newest kernel of the series."""
    pat = headers_pattern(series, deb_arch)
    names = [n for n in apt.query("pkgnames", "linux-headers-").split() if pat.match(n)]
    if not names:
        raise KhError(f"no Debian kernel of series {series} for {deb_arch} in "
                      f"{', '.join(apt.suites)}: the suite may have moved on; "
                      f"known series are {', '.join(SERIES)}")
    stanzas = apt.packages(names)
    best = max(stanzas.values(),
               key=functools.cmp_to_key(lambda a, b: dpkg_compare(a["Version"], b["Version"])))
    return pat.match(best["Package"]).group(1), best["Version"]


def package_set(apt: AptConfig, abi: str, deb_arch: str) -> dict[str, dict[str, str]]:
    """The image, modules, headers and kbuild packages of one kernel ABI."""
    flavour = f"{abi}-{deb_arch}"
    roots = [f"linux-image-{flavour}", f"linux-headers-{flavour}"]
    wanted: dict[str, dict[str, str]] = {}
    todo = roots
    while todo:
        found = apt.packages(todo)
        missing = set(todo) - set(found)
        if missing & set(roots):
            raise KhError(f"Debian package(s) {', '.join(sorted(missing))} not found")
        todo = []
        for name, fields in found.items():
            wanted[name] = fields
            for dep in depends(fields):
                # The headers depend on a signed *or* unsigned image; the image root covers it.
                if dep.startswith("linux-image-") and name.startswith("linux-headers-"):
                    continue
                if KERNEL_PKG.match(dep) and dep not in wanted and dep not in todo:
                    todo.append(dep)
    return wanted


def host_kbuild(pkgs: dict, series: str, info: Series, host_arch: str, *,
                offline: bool) -> dict:
    """A foreign kernel's kbuild helpers must run here: take the host arch's build."""
    host_apt = AptConfig(series, info.suites, host_arch)
    host_apt.update(offline=offline)
    names = [n for n in pkgs if n.startswith("linux-kbuild-")]
    found = host_apt.packages(names)
    if set(found) != set(names):
        raise KhError(f"no {host_arch} build of {', '.join(names)} to cross-build modules with")
    for name, fields in found.items():
        pkgs[name] = {**fields, "_apt": host_apt}
    return pkgs


def by_source(pkgs: dict, default: AptConfig) -> dict[AptConfig, list[str]]:
    out: dict[AptConfig, list[str]] = {}
    for name, fields in sorted(pkgs.items()):
        out.setdefault(fields.get("_apt", default), []).append(name)
    return out


def get(series: str, arch_name: str, *, offline: bool = False) -> Kernel:
    if series not in SERIES:
        raise UsageError(f"unknown Debian kernel series '{series}': known series are "
                         f"{', '.join(SERIES)} (e.g. --kernel debian:{next(iter(SERIES))})")
    arch = arches.get(arch_name)
    info = SERIES[series]
    apt = AptConfig(series, info.suites, arch.deb_arch)
    try:
        apt.update(offline=offline)
    except KhError:
        cached = newest_extracted(series, arch.name)
        if cached is None:
            raise
        progress(f"package lists unavailable, using cached kernel {cached.release}")
        return cached
    abi, version = newest_abi(apt, series, arch.deb_arch)
    pkgs = package_set(apt, abi, arch.deb_arch)
    host = arches.host()
    if arch.name != host.name:
        pkgs = host_kbuild(pkgs, series, info, host.deb_arch, offline=offline)
    key = f"{abi}-{arch.deb_arch}_{version}"
    kdir = cache_root() / "kernels" / "debian" / key
    with locked(kdir.parent / (kdir.name + ".lock")):
        record = kdir / "kernel.json"
        if record.exists():
            return Kernel.load(record)
        size = sum(int(p.get("Size", 0)) for p in pkgs.values()) / 1e6
        staging = kdir.with_name(kdir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(kdir, ignore_errors=True)  # an earlier run stopped half way
        with step(f"downloading Debian kernel {abi} ({len(pkgs)} packages, {size:.0f} MB)"):
            for source, names in by_source(pkgs, apt).items():
                source.download(names, staging / "debs")
            debs = sorted((staging / "debs").glob("*.deb"))
        with step(f"extracting {len(debs)} packages"):
            for deb in debs:
                run(["dpkg-deb", "-x", str(deb), str(staging / "root")],
                    what=f"extracting {deb.name}")
            shutil.rmtree(staging / "debs")
        staging.rename(kdir)
        kernel = finish(kdir, series, arch.name, info.toolchain_suite,
                        source=", ".join(f"{n}:{p['Architecture']}={p['Version']}"
                                         for n, p in sorted(pkgs.items())))
        record.write_text(kernel.to_json())
        return kernel


def finish(kdir: Path, series: str, arch_name: str, suite: str, source: str) -> Kernel:
    """Make an extracted tree usable where it lies, and describe it."""
    root = kdir / "root"
    moddirs = [p for p in root.glob("**/lib/modules/*") if (p / "modules.order").exists()]
    if len(moddirs) != 1:
        raise KhError(f"expected one modules directory in {root}, found {len(moddirs)}")
    moddir = moddirs[0]
    release = moddir.name
    image = next((p for p in (moddir / "vmlinuz", root / "boot" / f"vmlinuz-{release}")
                  if p.exists()), None)
    config = next((p for p in (moddir / "config", root / "boot" / f"config-{release}")
                   if p.exists()), None)
    build = next(iter(root.glob(f"usr/src/linux-headers-{release}")), None)
    if image is None or config is None or build is None:
        raise KhError(f"incomplete Debian kernel in {root}: image={image} config={config} "
                      f"headers={build}")
    relocate_headers(root, build)
    # Debian ships no modules.dep; basedir is what holds lib/modules.
    run(["depmod", "-b", str(moddir.parent.parent.parent), release], what="depmod")
    vmlinux = None
    if arches.get(arch_name).boot_vmlinux:
        vmlinux = extract_vmlinux(image, kdir / "vmlinux")
    return Kernel(spec=f"debian:{series}", release=release, arch=arch_name, image=image,
                  modules_dir=moddir, build_dir=build, config=config, source=source,
                  suite=suite, vmlinux=vmlinux)


def relocate_headers(root: Path, build: Path) -> None:
    """Debian's headers name /usr/src and /usr/lib by absolute path: point them here."""
    for path in [build / "Makefile", *build.glob("arch/*/Makefile")]:
        if path.exists():
            text = path.read_text()
            fixed = re.sub(r"(?<![\w/])/usr/(src|lib)/", f"{root}/usr/\\1/", text)
            if fixed != text:
                path.write_text(fixed)
    for link in [*build.iterdir(), *(root / "usr/src").iterdir()]:
        if link.is_symlink() and os.readlink(link).startswith("/"):
            target = root / os.readlink(link).lstrip("/")
            link.unlink()
            link.symlink_to(target)


def newest_extracted(series: str, arch_name: str) -> Kernel | None:
    deb_arch = arches.get(arch_name).deb_arch
    base = cache_root() / "kernels" / "debian"
    found = []
    for rec in base.glob(f"*-{deb_arch}_*/kernel.json"):
        k = Kernel.load(rec)
        if k.spec == f"debian:{series}":
            found.append((rec.stat().st_mtime, k))
    return max(found, key=lambda t: t[0])[1] if found else None
