"""ndctl's own C tests of device-dax and /dev/mem, built for the guest
from ndctl's release tarball (Debian's pool, pinned by its SHA-256): what
of ndctl's `dax` suite runs on a Debian kernel, which has no nfit_test
(docs/selftests.md says which of its tests run where, and why the others
do not).

They act on the first namespace of the "e820" bus: the legacy persistent
memory the kernel makes of the RAM that memmap=SIZE!START reserves (x86
only). device-dax writes it through fs-dax, switches it to device-dax at
4K, 2M and 1G alignment and reads the data back through a mapping, then
faults, remaps, forks and pokes poison at it; dax-dev finds it;
revoke-devmem maps it through /dev/mem and expects that mapping revoked
when a driver claims the range. ndctl's libraries are linked in
statically, the system's (kmod, udev, uuid, json-c) dynamically: the
guest's tools (harness/vm/tools.py) carry them, so the tests are built on
the host, for a guest of the host's arch and Debian release.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness.apt import MIRROR
from harness.arches import Arch, host
from harness.cache import cached
from harness.errors import KhError
from harness.util import cache_root, digest, run, step

RECIPE = "1"      # bump when how we build changes what comes out
VERSION = "81"    # trixie's; bookworm's 76.1 tarball is gone from the pool
SHA256 = "e40784687ac2d0c176748c9ffb8bde541a12301b6fedb607a9a70c8fd1f94929"
TESTS = ("dax-dev", "device-dax", "revoke_devmem")
# Only what the tests need: no docs, no systemd unit, no tracefs (the cxl
# monitor); keyutils on, since ndctl 81 does not build without it.
MESON = ("-Ddocs=disabled", "-Dlibtracefs=disabled", "-Dsystemd=disabled",
         "-Dkeyutils=enabled", "-Dtest=enabled", "-Ddestructive=enabled",
         "-Dpoison=disabled", f"-Dversion-tag={VERSION}", "-Ddefault_library=static",
         "-Dbashcompletiondir=no")


class Unbuildable(KhError):
    """ndctl's tests cannot be built for a guest of this arch on this host:
    its tests skip (a host set up without meson is an error, not this)."""


@dataclass(frozen=True)
class NdctlTests:
    dir: Path
    version: str
    arch: str
    built: dict[str, str] = field(default_factory=dict)     # test -> file in dir

    def path(self, name: str) -> Path:
        return self.dir / self.built[name]

    @classmethod
    def load(cls, entry: Path) -> NdctlTests:
        d = json.loads((entry / "ndctl.json").read_text())
        if not isinstance(d, dict) or set(d.get("built", ())) != set(TESTS):
            raise ValueError(f"{entry / 'ndctl.json'} holds no complete record")
        return cls(entry / "bin", d["version"], d["arch"], d["built"])


def url() -> str:
    return f"{MIRROR}/pool/main/n/ndctl/ndctl_{VERSION}.orig.tar.gz"


def build(arch: Arch) -> NdctlTests:
    """ndctl's C tests for a guest of arch (made once)."""
    if arch.name != host().name:
        raise Unbuildable(f"ndctl's tests are built on the host for its own arch "
                          f"({host()}), not {arch}")
    cc = run(["cc", "-dumpfullversion"], what="cc -dumpfullversion").stdout.strip()
    entry = cache_root() / "ndctl" / f"{arch.name}-{VERSION}-{digest(RECIPE, cc, *TESTS)}"

    def make(out: Path) -> list[Path]:
        with step(f"building ndctl {VERSION}'s dax tests for {arch}"):
            record = _build(arch, out)
        (out / "ndctl.json").write_text(json.dumps(record, indent=2) + "\n")
        return [out / "ndctl.json", *(out / "bin" / t for t in TESTS)]

    return NdctlTests.load(cached(entry, make, check=NdctlTests.load))


def _build(arch: Arch, out: Path) -> dict:
    missing = [t for t in ("meson", "ninja") if shutil.which(t) is None]
    if missing:
        raise KhError(f"building ndctl's tests needs {' and '.join(missing)}: "
                      f"run ci/setup.sh")
    tarball = _fetch(out / f"ndctl_{VERSION}.orig.tar.gz")
    with tarfile.open(tarball) as tar:
        tar.extractall(out / "src", filter="data")
    src = next((out / "src").iterdir())
    logs = out / "logs"
    logs.mkdir()
    build_dir = out / "build"
    run(["meson", "setup", str(build_dir), *MESON], what="meson setup of ndctl", cwd=src,
        log=logs / "meson.log")
    run(["ninja", "-C", str(build_dir), *(f"test/{t}" for t in TESTS)],
        what=f"ninja of ndctl's {', '.join(TESTS)}", log=logs / "ninja.log")
    (out / "bin").mkdir()
    for t in TESTS:
        shutil.copy2(build_dir / "test" / t, out / "bin" / t)
    shutil.rmtree(build_dir)
    shutil.rmtree(out / "src")
    tarball.unlink()
    return {"version": VERSION, "arch": arch.name, "url": url(),
            "built": {t: t for t in TESTS}}


def _fetch(dest: Path) -> Path:
    """ndctl's release tarball, checked against its pinned SHA-256."""
    try:
        with urllib.request.urlopen(url(), timeout=60) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise KhError(f"cannot fetch {url()}: {e}; check that {MIRROR} is reachable "
                      f"(KHARNESS_DEBIAN_MIRROR names another)") from None
    got = hashlib.sha256(dest.read_bytes()).hexdigest()
    if got != SHA256:
        raise KhError(f"{url()} has SHA-256 {got}, not ndctl {VERSION}'s {SHA256}: "
                      f"a mirror serving something else?")
    return dest
