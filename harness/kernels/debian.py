"""Debian's prebuilt kernels: find the newest of a series, download, extract.

apt resolves and downloads against a private configuration (harness/apt.py).
Each kernel is extracted once into a cache entry named by its package
versions; a second run finds it there.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from harness import apt
from harness.apt import SERIES, AptConfig, Series, depends, dpkg_compare
from harness.arches import Arch, host
from harness.cache import cached, damage
from harness.errors import KhError, UsageError
from harness.kbuild.vmlinux import extract_vmlinux
from harness.kernel import Kernel
from harness.util import cache_root, progress, run, step

# Packages that make up a kernel; anything else a kernel package depends on
# (initramfs tools, the compiler) is not ours to fetch.
KERNEL_PKG = re.compile(r"^linux-(image|binary|modules|base|headers|kbuild)-\S*\d")


def headers_pattern(series: str, flavour: str) -> re.Pattern:
    # abi: 6.1.0-56, 6.12.117+deb13, 7.2.13+deb14, 7.3 ; flavour: amd64, arm64, armmp, ...
    return re.compile(rf"^linux-headers-({re.escape(series)}(?:[.+~][\w.+~]*)?(?:-\d+)?)"
                      rf"-{re.escape(flavour)}$")


def newest_abi(apt: AptConfig, series: str, flavour: str) -> tuple[str, str]:
    """(abi, headers package version) of the newest kernel of the series."""
    pat = headers_pattern(series, flavour)
    names = [n for n in apt.query("pkgnames", "linux-headers-").split() if pat.match(n)]
    if not names:
        raise KhError(f"no Debian kernel of series {series} ({flavour}) in "
                      f"{', '.join(apt.suites)}: the suite may have moved on; "
                      f"known series are {', '.join(SERIES)}")
    stanzas = list(apt.packages(names).values())
    def cmp(a: dict[str, str], b: dict[str, str]) -> int:
        return dpkg_compare(a["Version"], b["Version"])

    best = max(stanzas, key=functools.cmp_to_key(cmp))
    m = pat.match(best["Package"])
    assert m is not None    # names were chosen by the same pattern
    return m.group(1), best["Version"]


def package_set(apt: AptConfig, abi: str, flavour: str) -> dict[str, dict[str, str]]:
    """The image, modules, headers and kbuild packages of one kernel ABI."""
    roots = [f"linux-image-{abi}-{flavour}", f"linux-headers-{abi}-{flavour}"]
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


def host_kbuild(pkgs: dict, series: str, info: Series, host_arch: Arch, *,
                offline: bool) -> dict:
    """A foreign kernel's kbuild helpers must run here: take the host arch's build."""
    host_apt = AptConfig(series, info.suites, host_arch.deb_arch)
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


def get(series: str, arch: Arch, flavour: str, *, offline: bool = False) -> Kernel:
    if series not in SERIES:
        raise UsageError(f"unknown Debian kernel series '{series}': known series are "
                         f"{', '.join(SERIES)} (e.g. --kernel debian:{next(iter(SERIES))})")
    info = SERIES[series]
    lists = AptConfig(series, info.suites, arch.deb_arch)
    try:
        lists.update(offline=offline)
    except KhError:
        found = newest_extracted(spec_of(series, arch, flavour), flavour)
        if found is None:
            raise
        progress(f"package lists unavailable, using cached kernel {found.release}")
        return found
    abi, version = newest_abi(lists, series, flavour)
    pkgs = package_set(lists, abi, flavour)
    if not arch.native:
        pkgs = host_kbuild(pkgs, series, info, host(), offline=offline)
    source = ", ".join(f"{n}:{p['Architecture']}={p['Version']}" for n, p in sorted(pkgs.items()))

    def make(kdir: Path) -> list[Path]:
        size = sum(int(p.get("Size", 0)) for p in pkgs.values()) / 1e6
        with step(f"downloading Debian kernel {abi} ({len(pkgs)} packages, {size:.0f} MB)"):
            for where, names in by_source(pkgs, lists).items():
                where.download(names, kdir / "debs")
            debs = sorted((kdir / "debs").glob("*.deb"))
        with step(f"extracting {len(debs)} packages"):
            apt.extract(debs, kdir / "root")
        for deb in debs:
            deb.unlink()
        kernel = finish(kdir, spec_of(series, arch, flavour), arch, info.toolchain_suite,
                        source=source)
        (kdir / "kernel.json").write_text(kernel.to_json())
        return [kdir / "kernel.json", kernel.image, *([kernel.vmlinux] if kernel.vmlinux else [])]

    kdir = cached(cache_root() / "kernels" / "debian" / f"{abi}-{flavour}_{version}", make,
                  check=lambda kdir: Kernel.load(kdir / "kernel.json"))
    return Kernel.load(kdir / "kernel.json")


def spec_of(series: str, arch: Arch, flavour: str) -> str:
    """The --kernel spec of a series' kernel: the flavour named where it is
    not the arch's default."""
    return f"debian:{series}" if flavour == arch.flavour else f"debian:{series}-{flavour}"


def finish(kdir: Path, spec: str, arch: Arch, suite: str, source: str) -> Kernel:
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
    vmlinux = extract_vmlinux(image, kdir / "vmlinux") if arch.boot_vmlinux else None
    return Kernel(spec=spec, release=release, arch=arch, image=image,
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


def newest_extracted(spec: str, flavour: str) -> Kernel | None:
    """The newest complete kernel of the spec in the cache (for --offline
    and an unreachable mirror)."""
    found = []
    for kdir in (cache_root() / "kernels" / "debian").glob(f"*-{flavour}_*"):
        if kdir.is_dir() and damage(kdir) is None:
            try:
                k = Kernel.load(kdir / "kernel.json")
            except (OSError, ValueError):
                continue
            if k.spec == spec:
                found.append((kdir.stat().st_mtime, k))
    return max(found, key=lambda t: t[0])[1] if found else None
