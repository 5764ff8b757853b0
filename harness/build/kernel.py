"""Kernel builds from source: a patched copy of the tree, merged kconfig
fragments, `make O=` with ccache, cached by what went in.

Layout of one build, under <cache>/builds/<arch>-<version>-<key>/:
  src/            the tree (hard-linked copy) with the patches applied
  obj/            make O=; also the build dir for out-of-tree modules
  root/lib/modules/<release>
  build.log, config.log, patches.log
  metadata.json   inputs and the exact commands; written last: its presence
                  is what makes the entry a cache hit
  kernel.json     the Kernel record

Every build has src/ and obj/ side by side, so with CCACHE_BASEDIR at the
cache root the compiler sees the same relative paths for every tree and a
patched rebuild hits ccache for each file the patches did not touch.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import arches
from harness.errors import KhError, UsageError
from harness.build.kmod import compiler_lines
from harness.kernels import Kernel, kconfig, patches as patchlib
from harness.kernels.source import SourceTree, kernelversion
from harness.util import cache_root, digest, locked, progress, run

PROGRESS_EVERY = 20.0   # seconds between progress lines during make


@dataclass
class BuildRequest:
    source: SourceTree
    arch: str
    fragments: list[Path]
    patches: list[patchlib.Patch] = field(default_factory=list)
    patches_spec: str = ""
    strict_config: bool = False
    jobs: int = os.cpu_count() or 1
    ccache: bool = True


def compiler(arch_name: str) -> tuple[str, str]:
    """(CROSS_COMPILE prefix or '', the compiler's --version line)."""
    arch = arches.get(arch_name)
    cross = "" if arch.name == arches.host().name else arch.cross_prefix
    cc = f"{cross}gcc"
    if not shutil.which(cc):
        raise KhError(f"{cc} not found to build a {arch_name} kernel: run ci/setup.sh")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return cross, version.splitlines()[0]


def cache_key(req: BuildRequest, cc_version: str, start: str) -> str:
    """The inputs that decide the result. The merged config is a function of
    the tree, the start target and the fragments' contents, so those stand
    for it here and the merged file is kept in metadata.json."""
    return digest(req.source.identity, *(p.diff for p in req.patches), start,
                  *(f.read_text() for f in req.fragments), req.arch, cc_version)


def make_args(req: BuildRequest, out: Path, cross: str) -> list[str]:
    arch = arches.get(req.arch)
    cc = f"{cross}gcc"
    args = ["make", "-C", str(out / "src"), f"O={out / 'obj'}", f"ARCH={arch.kernel_arch}",
            f"-j{req.jobs}"]
    if cross:
        args.append(f"CROSS_COMPILE={cross}")
    if req.ccache and shutil.which("ccache"):
        args += [f"CC=ccache {cc}", "HOSTCC=ccache gcc"]
    return args


def ccache_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(cache_root() / "ccache"))
    env["CCACHE_BASEDIR"] = str(cache_root())
    env["CCACHE_NOHASHDIR"] = "1"
    env["KBUILD_BUILD_TIMESTAMP"] = "kharness"   # no date in the image: reproducible
    env["KBUILD_BUILD_USER"] = env["KBUILD_BUILD_HOST"] = "kharness"
    return env


def make_with_progress(args: list[str], log: Path, what: str, env: dict) -> None:
    """make, its output to log, one progress line every PROGRESS_EVERY seconds."""
    t0 = last = time.monotonic()
    compiled = 0
    progress(f"{what} (log: {log})")
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(args)}\n")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", env=env)
        tail: list[str] = []
        for line in proc.stdout:
            fh.write(line)
            tail = (tail + [line.rstrip()])[-40:]
            if line.lstrip().startswith(("CC ", "AS ", "LD ")):
                compiled += 1
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                where = line.split()[-1] if line.split() else ""
                if where.startswith("/"):
                    where = os.path.relpath(where, log.parent / "obj")
                progress(f"{what}: {compiled} objects, {now - t0:.0f}s (at {where[:60]})")
                last = now
        rc = proc.wait()
    if rc != 0:
        raise KhError(f"{what} failed (exit {rc}); build log: {log}",
                      detail=compiler_lines("\n".join(tail)))
    progress(f"{what}: done in {time.monotonic() - t0:.0f}s, {compiled} objects")


def build(req: BuildRequest) -> Kernel:
    cross, cc_version = compiler(req.arch)
    texts = [f.read_text() for f in req.fragments]
    start = kconfig.start_target(texts)
    key = cache_key(req, cc_version, start)
    version = kernelversion(req.source.path)
    out = cache_root() / "builds" / f"{req.arch}-{version}-{key}"
    with locked(out.with_name(out.name + ".lock")):
        if (out / "metadata.json").exists():
            progress(f"kernel build cache hit: {out}")
            return Kernel.load(out / "kernel.json")
        return _build(req, out, key, cross, cc_version, start)


def _build(req: BuildRequest, out: Path, key: str, cross: str, cc_version: str,
           start: str) -> Kernel:
    env = ccache_env()
    if (out / "src").exists():
        shutil.rmtree(out / "src")   # an earlier attempt's tree: patch again from scratch
    out.mkdir(parents=True, exist_ok=True)
    (out / "obj").mkdir(exist_ok=True)
    patchlib.copy_tree(req.source.path, out / "src")
    if req.patches:
        progress(f"applying {len(req.patches)} patch(es) from {req.patches_spec}")
        try:
            patchlib.apply(out / "src", req.patches, out / "patches.log")
        except patchlib.PatchError:
            shutil.rmtree(out / "src")
            raise

    make = make_args(req, out, cross)
    commands = []

    def step_make(*targets: str, what: str, log: str = "build.log") -> None:
        args = make + list(targets)
        commands.append(shlex.join(args))
        make_with_progress(args, out / log, what, env)

    obj = out / "obj"
    step_make(start, what=f"make {start}", log="config.log")
    merge = [str(out / "src" / "scripts" / "kconfig" / "merge_config.sh"), "-m",
             "-O", str(obj), str(obj / ".config"), *map(str, req.fragments)]
    commands.append(f"ARCH={arches.get(req.arch).kernel_arch} {shlex.join(merge)}")
    run(merge, what="merge_config.sh", log=out / "merge_config.log",
        env={**env, "ARCH": arches.get(req.arch).kernel_arch, "CROSS_COMPILE": cross})
    step_make("olddefconfig", what="make olddefconfig", log="config.log")
    final = kconfig.parse((obj / ".config").read_text())
    warning = kconfig.report_lost(kconfig.lost(kconfig.wanted_of(req.fragments), final),
                                  strict=req.strict_config, where=obj / ".config")
    if warning:
        progress(f"warning: {warning}")
    arch = arches.get(req.arch)
    t0 = time.monotonic()
    step_make(Path(arch.build_image).name, "modules",
              what=f"building {req.source.spec} for {req.arch} ({req.jobs} jobs)")
    seconds = time.monotonic() - t0
    root = out / "root"
    step_make(f"INSTALL_MOD_PATH={root}", "modules_install", what="make modules_install")
    release = (obj / "include" / "config" / "kernel.release").read_text().strip()
    kernel = Kernel(spec=f"build:{key}", release=release, arch=req.arch,
                    image=obj / arch.build_image, modules_dir=root / "lib" / "modules" / release,
                    build_dir=obj, config=obj / ".config",
                    source=f"{req.source.identity}; {len(req.patches)} patch(es); "
                           f"fragments {', '.join(f.name for f in req.fragments)}",
                    extra={"build": str(out)})
    (out / "kernel.json").write_text(kernel.to_json() + "\n")
    meta = {
        "key": key, "arch": req.arch, "release": release, "source": req.source.spec,
        "source_identity": req.source.identity, "compiler": cc_version,
        "patches": [{"subject": p.subject, "from": p.source} for p in req.patches],
        "fragments": [str(f) for f in req.fragments], "start": start,
        "lost_options": warning or "", "build_seconds": round(seconds, 1),
        "environment": {k: env[k] for k in ("CCACHE_DIR", "CCACHE_BASEDIR", "CCACHE_NOHASHDIR",
                                            "KBUILD_BUILD_TIMESTAMP")},
        "commands": commands,
        "config": (obj / ".config").read_text(),
    }
    tmp = out / "metadata.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(out / "metadata.json")
    progress(f"built {release} for {req.arch}: --kernel build:{key}")
    return kernel


def find(ref: str, arch: str) -> Kernel:
    """build:<key, a prefix of it, or a build directory> -> its Kernel record."""
    path = Path(ref).expanduser()
    if (path / "kernel.json").exists():
        return Kernel.load(path / "kernel.json")
    hits = sorted(p for p in (cache_root() / "builds").glob(f"{arch}-*-{ref}*")
                  if (p / "metadata.json").exists())
    if len(hits) == 1:
        return Kernel.load(hits[0] / "kernel.json")
    if not hits:
        raise UsageError(f"no finished {arch} kernel build '{ref}' in {cache_root() / 'builds'}:"
                         f" run 'kharness build' first (it prints the build:<key> to use)")
    raise UsageError(f"build:{ref} is ambiguous for {arch}: "
                     f"{', '.join(p.name for p in hits)}")
