"""Building Linux from source: a patched copy of the tree, merged kconfig
fragments, `make O=` with ccache, cached by what went in. (harness/kernel.py
is the record of a kernel to boot; harness/kernels/ where one comes from.)

Layout of one build, under <cache>/builds/<arch>-<version>-<key>/:
  src/            the tree (hard-linked copy) with the patches applied
  obj/            make O=; also the build dir for out-of-tree modules
  root/lib/modules/<release>
  build.log, config.log, patches.log
  metadata.json   inputs and the exact commands
  kernel.json     the Kernel record
  .kh-done        written last (harness/cache.py): what makes the entry a hit

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import mounts, spawn
from harness.arches import Arch
from harness.cache import cached, damage
from harness.errors import KhError
from harness.kbuild import kconfig
from harness.kbuild import patches as patchlib
from harness.kbuild import source as sourcelib
from harness.kbuild.kmod import compiler_lines
from harness.kbuild.source import SourceTree, kernelversion
from harness.kernel import Kernel
from harness.requests import SourceRequest
from harness.util import cache_root, digest, disk_size, progress, run

PROGRESS_EVERY = 20.0   # seconds between progress lines during make


@dataclass
class BuildRequest:
    source: SourceTree
    arch: Arch
    fragments: list[Path]
    patches: list[patchlib.Patch] = field(default_factory=list)
    patches_spec: str = ""
    strict_config: bool = False
    jobs: int = os.cpu_count() or 1
    ccache: bool = True


def compiler(arch: Arch) -> tuple[str, str]:
    """(CROSS_COMPILE prefix or '', the compiler's --version line)."""
    cross = arch.cross_compile
    cc = f"{cross}gcc"
    if not shutil.which(cc):
        raise KhError(f"{cc} not found to build a {arch} kernel: run ci/setup.sh")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return cross, version.splitlines()[0]


def cache_key(req: BuildRequest, cc_version: str, start: str) -> str:
    """The inputs that decide the result. The merged config is a function of
    the tree, the start target and the fragments' contents, so those stand
    for it here and the merged file is kept in metadata.json."""
    return digest(req.source.identity, *(p.diff for p in req.patches), start,
                  *(f.read_text() for f in req.fragments), req.arch.name, cc_version)


def make_args(req: BuildRequest, out: Path, cross: str) -> list[str]:
    cc = f"{cross}gcc"
    args = ["make", "-C", str(out / "src"), f"O={out / 'obj'}", f"ARCH={req.arch.kernel_arch}",
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
    t0 = time.monotonic()
    progress(f"{what} (log: {log})")
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(args)}\n")
        proc = spawn.spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace", env=env)
        try:
            rc, tail, compiled = _follow(proc, fh, what, log, t0)
        except BaseException:
            spawn.stop(proc)
            raise
    if rc != 0:

        raise KhError(f"{what} failed (exit {rc}); build log: {log}",
                      detail=compiler_lines("\n".join(tail)))
    progress(f"{what}: done in {time.monotonic() - t0:.0f}s, {compiled} objects")


def _follow(proc: subprocess.Popen, fh, what: str, log: Path,
            t0: float) -> tuple[int, list[str], int]:
    """make's output into the log, a progress line now and then: (exit
    status, its last lines, objects compiled)."""
    last, compiled = t0, 0
    tail: list[str] = []
    assert proc.stdout is not None
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
    return proc.wait(), tail, compiled


def request(src: SourceRequest, arch: Arch,
            series: list[patchlib.Patch] | None = None) -> BuildRequest:
    """What a kernel build needs, from the source-build options (--source,
    --config, --patches, --strict-config, --jobs, --no-ccache, --offline). A
    series that does not apply to the source is bad input, found here
    before any build."""
    tree = sourcelib.get(src.source, offline=src.offline)
    if series:
        with tempfile.TemporaryDirectory(prefix="kh-patches-") as scratch:
            patchlib.check_applies(tree.path, series, Path(scratch))
    return BuildRequest(
        source=tree, arch=arch, fragments=kconfig.resolve_fragments(list(src.config), arch),
        patches=series or [], patches_spec=src.patches or "",
        strict_config=src.strict_config, jobs=src.jobs or os.cpu_count() or 1,
        ccache=not src.no_ccache)


def build(req: BuildRequest) -> Kernel:
    cross, cc_version = compiler(req.arch)
    start = kconfig.start_target([f.read_text() for f in req.fragments])
    key = cache_key(req, cc_version, start)
    out = cache_root() / "builds" / f"{req.arch}-{kernelversion(req.source.path)}-{key}"
    if damage(out) is None:
        progress(f"kernel build cache hit: {out}")
    # An unfinished build keeps its obj/ for make to pick up; src/ is patched anew.
    cached(out, lambda out: _build(req, out, key, cross, cc_version, start), keep_partial=True,
           check=_check)
    return Kernel.load(out / "kernel.json")


def _check(out: Path) -> None:
    Kernel.load(out / "kernel.json")
    if not isinstance(json.loads((out / "metadata.json").read_text()), dict):
        raise ValueError("metadata.json holds no mapping")


def _record(req: BuildRequest, out: Path, key: str, cc_version: str, start: str,
            commands: list[str], lost: str, seconds: float, env: dict) -> Kernel:
    """kernel.json (the Kernel record) and metadata.json (what went in and the
    exact commands) of a finished build."""
    obj, arch, root = out / "obj", req.arch, out / "root"
    release = (obj / "include" / "config" / "kernel.release").read_text().strip()
    kernel = Kernel(spec=f"build:{key}", release=release, arch=arch,
                    image=obj / arch.build_image, modules_dir=root / "lib" / "modules" / release,
                    build_dir=obj, config=obj / ".config",
                    source=f"{req.source.identity}; {len(req.patches)} patch(es); "
                           f"fragments {', '.join(f.name for f in req.fragments)}",
                    extra={"build": str(out)})
    (out / "kernel.json").write_text(kernel.to_json() + "\n")
    meta = {
        "key": key, "arch": arch.name, "release": release, "source": req.source.spec,
        "source_identity": req.source.identity, "compiler": cc_version,
        "patches": [{"subject": p.subject, "from": p.source} for p in req.patches],
        "fragments": [str(f) for f in req.fragments], "start": start,
        "lost_options": lost, "build_seconds": round(seconds, 1),
        "environment": {k: env[k] for k in ("CCACHE_DIR", "CCACHE_BASEDIR", "CCACHE_NOHASHDIR",
                                            "KBUILD_BUILD_TIMESTAMP")},
        "commands": commands,
        "config": (obj / ".config").read_text(),
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    progress(f"built {release} for {arch}: --kernel build:{key}")
    return kernel


def _build(req: BuildRequest, out: Path, key: str, cross: str, cc_version: str,
           start: str) -> list[Path]:
    env = ccache_env()
    if (out / "src").exists():
        mounts.remove_tree(out / "src")   # an earlier attempt's tree: patch again from scratch
    (out / "obj").mkdir(exist_ok=True)
    patchlib.copy_tree(req.source.path, out / "src")
    if req.patches:
        progress(f"applying {len(req.patches)} patch(es) from {req.patches_spec}")
        try:
            patchlib.apply(out / "src", req.patches, out / "patches.log")
        except patchlib.PatchError:
            mounts.remove_tree(out / "src")
            raise

    make = make_args(req, out, cross)
    commands = []

    def step_make(*targets: str, what: str, log: str = "build.log") -> None:
        args = make + list(targets)
        commands.append(shlex.join(args))
        make_with_progress(args, out / log, what, env)

    obj = out / "obj"
    arch = req.arch
    step_make(start, what=f"make {start}", log="config.log")
    merge = [str(out / "src" / "scripts" / "kconfig" / "merge_config.sh"), "-m",
             "-O", str(obj), str(obj / ".config"), *map(str, req.fragments)]
    commands.append(f"ARCH={arch.kernel_arch} {shlex.join(merge)}")
    run(merge, what="merge_config.sh", log=out / "merge_config.log",
        env={**env, "ARCH": arch.kernel_arch, "CROSS_COMPILE": cross})
    step_make("olddefconfig", what="make olddefconfig", log="config.log")
    final = kconfig.parse((obj / ".config").read_text())
    warning = kconfig.report_lost(kconfig.lost(kconfig.wanted_of(req.fragments), final),
                                  strict=req.strict_config, where=obj / ".config")
    if warning:
        progress(f"warning: {warning}")
    t0 = time.monotonic()
    step_make(Path(arch.build_image).name, "modules",
              what=f"building {req.source.spec} for {arch} ({req.jobs} jobs)")
    seconds = time.monotonic() - t0
    root = out / "root"
    step_make(f"INSTALL_MOD_PATH={root}", "modules_install", what="make modules_install")
    before = disk_size(obj)
    _slim(obj)
    progress(f"the build keeps its image, vmlinux, modules, headers and config: obj/ "
             f"{before >> 20} MiB -> {disk_size(obj) >> 20} MiB (objects dropped, which ccache "
             f"makes again cheaply)")
    kernel = _record(req, out, key, cc_version, start, commands, warning or "", seconds, env)
    return [out / "kernel.json", out / "metadata.json", kernel.image]


# What building modules against obj/ still needs besides headers and config:
# its host programs and objtool, which live here with objects of their own.
KEEP_OBJECTS_IN = ("scripts", "tools")


def _slim(obj: Path) -> None:
    """Drop the object files of a finished build: running it
    and building modules against it need the image, vmlinux, the modules,
    Module.symvers, headers, config and scripts, not the kernel's .o/.a."""
    for path in obj.rglob("*"):
        rel = path.relative_to(obj)
        if rel.parts[0] in KEEP_OBJECTS_IN or path.is_symlink() or not path.is_file():
            continue
        if path.suffix in (".o", ".a") or path.name.startswith(".tmp_vmlinux"):
            path.unlink()
