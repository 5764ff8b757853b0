"""virtme-ng: the path users reach for by name.

The guest's root (--vng-root) is the host's, read-only over 9p, so the
user's tools and files are there (host arch only), or ours: a small root of
the guest's arch (bash for virtme-init, busybox for the rest, from Debian's
debs) with the kharness cache, where modules and helpers lie, and the
user's directory mounted at their host paths. Either way the agent is the
khagent helper, run as vng's --exec command, on the same kind of virtio
port as under raw QEMU.

What made virtme-ng slow under TCG was mostly not virtme-ng: udev's
coldplug loading every driver of a Debian module tree for QEMU's devices
(24 s of a 41 s boot on 6.12), and every guest command exec'ing the host's
dynamic /bin/sh over 9p. So vng gets a kernel directory of its own whose
module tree holds only what the guest uses, and the agent runs commands
with a static busybox copied to tmpfs, as the helpers are.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from harness import apt, arches
from harness.apt import AptConfig
from harness.cache import cached
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.util import cache_root, digest, run
from harness.vm import initramfs
from harness.vm import tools as guest_tools
from harness.vm.launcher import Launcher
from harness.vm.machine import DEVICES, MachineSpec
from harness.vm.qemu import BASE_APPEND

RECIPE = "4"   # bump when the directories made here change

# What virtme-ng itself needs of a kernel: its root and its ports.
NEEDS = {"9p": "CONFIG_9P_FS", "9pnet_virtio": "CONFIG_NET_9P_VIRTIO",
         "virtio_pci": "CONFIG_VIRTIO_PCI", "virtio_console": "CONFIG_VIRTIO_CONSOLE",
         "overlay": "CONFIG_OVERLAY_FS"}
# Debian packages of our root (the kh root): virtme-init, which virtme-ng
# runs for a foreign arch, is a bash script; the rest is busybox (the root's
# /bin/sh and every command it names).
ROOT_PACKAGES = ("bash", "libc6", "libtinfo6")
GUEST_BIN = "/run/kh"     # tmpfs in the guest: the agent's shell and helpers


def check_config(kernel: Kernel) -> None:
    """A clear error for a kernel without what virtme-ng needs."""
    try:
        text = kernel.config.read_text()
    except OSError:
        return  # nothing to read: vng will say what it lacks
    have = {line.split("=")[0] for line in text.splitlines()
            if line.endswith(("=y", "=m"))}
    needs = {**NEEDS, **dict(kernel.arch.vng_needs)}
    missing = [opt for opt in needs.values() if opt not in have]
    if missing:
        raise UsageError(f"kernel {kernel.release} lacks what virtme-ng needs: "
                         f"{', '.join(missing)}; add them to the build's kconfig "
                         f"(kconfigs/base*.config have them) or use --boot initramfs")


def kernel_dir(kernel: Kernel, root: bool) -> Path:
    """A directory with the kernel image (boot/) and a module tree that
    holds only what the guest loads (lib/modules/<release>/), and with
    root, the rest of a root of the kernel's arch (the kh root, with the
    tools a --pmem guest runs). virtme-ng
    finds the modules beside the image, so this directory is all it is
    given."""
    check_config(kernel)
    wanted = [*NEEDS, *dict(kernel.arch.vng_needs), *initramfs.KERNEL_MODULES]
    optional = ("virtio_mmio", *initramfs.SWAP_MODULES, *initramfs.OPTIONAL_MODULES,
                *initramfs.wanted_modules(kernel.arch, DEVICES))
    mods = initramfs.module_closure(kernel, wanted, optional)
    key = digest(RECIPE, str(kernel.image.resolve()), kernel.source, *mods,
                 "root" if root else "")
    entry = cache_root() / "vng" / f"{kernel.arch.name}-{kernel.release}-{key}"

    def make(entry: Path) -> list[Path]:
        boot = entry / "boot"
        boot.mkdir()
        (boot / kernel.image.name).symlink_to(kernel.image.resolve())
        moddir = entry / "lib" / "modules" / kernel.release
        moddir.mkdir(parents=True)
        for rel in mods:
            # Uncompressed: an xz module costs the guest a decompression under TCG.
            ko = moddir / rel.removesuffix(Path(rel).suffix) if not rel.endswith(".ko") \
                else moddir / rel
            ko.parent.mkdir(parents=True, exist_ok=True)
            ko.write_bytes(initramfs.ko_bytes(kernel.modules_dir / rel))
        for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (kernel.modules_dir / name).exists():
                shutil.copy2(kernel.modules_dir / name, moddir / name)
        run(["depmod", "-b", str(entry), kernel.release], what="depmod of the vng module tree")
        if root:
            _make_root(kernel, entry)
        return [boot / kernel.image.name, moddir / "modules.dep"]

    return cached(entry, make)


def _make_root(kernel: Kernel, root: Path) -> None:
    """bash, its libraries and busybox of the kernel's arch, unpacked from
    Debian's debs, and the --pmem tools; busybox's applets linked where
    nothing else lies."""
    arch = kernel.arch
    lists = AptConfig("vng-root", (arch.userland_suite,), arch.deb_arch)
    lists.update(offline=False)
    debs = lists.download([*ROOT_PACKAGES, arch.busybox_package], root.parent /
                          f"{root.name}.debs")
    apt.extract(debs, root)
    shutil.rmtree(root.parent / f"{root.name}.debs", ignore_errors=True)
    # Debian's ndctl, daxctl and mkfs tools for --pmem guests (vm/tools.py)
    for rel, content in guest_tools.files(arch).items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            continue
        if isinstance(content, str):
            dest.symlink_to(content)
        else:
            dest.write_bytes(content)
            dest.chmod(0o755)
    applets = subprocess.run([str(initramfs.busybox_for(arches.host())), "--list-full"],
                             capture_output=True, text=True, check=True).stdout.split()
    for rel in applets:
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    # What virtme-init mounts over or binds onto: it must be there.
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "home", "opt", "srv",
              "var/log", "var/tmp", "etc/lvm"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("fstab", "shadow", "sudoers", "hosts"):
        (root / "etc" / f).touch()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")


def _mountpoint(root: Path, path: str) -> None:
    """Where a host directory is mounted in a root of ours: it must exist,
    since the guest sees the root read-only."""
    (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)


class VngLauncher(Launcher):
    name = "virtme-ng"

    def __init__(self, kernel: Kernel, helper_dir: Path, spec: MachineSpec, *,
                 tree: Path | None = None, busybox: Path | None = None):
        """tree and busybox: made or found unless given (the golden test)."""
        super().__init__(kernel, spec)
        self.helper_dir = helper_dir
        self.launcher_log = self.console_log  # vng --verbose prints the console
        self.own_root = spec.vng_root != "host"
        self.dir = tree or kernel_dir(kernel, self.own_root)
        self.busybox = busybox or initramfs.busybox_for(self.arch)
        self.helpers = sorted(p.name for p in helper_dir.glob("kh*")
                              if p.is_file() and os.access(p, os.X_OK))

    def snapshot_blocker(self) -> str | None:
        return ("virtme-ng's guests read the host's files over 9p or virtiofs, "
                "which QEMU cannot migrate")

    def agent_command(self) -> str:
        """The guest's first command: the static busybox and the agent to
        tmpfs, the agent started, which runs each command with that busybox.
        The other helpers follow in the background (each copied whole, then
        renamed); until one lands, PATH finds it where it lies."""
        q = shlex.quote
        hdir = q(str(self.helper_dir))
        path = f"{GUEST_BIN}:{hdir}:$PATH"
        setup = [f"mkdir -p {GUEST_BIN}/bin", f"cp {q(str(self.busybox))} {GUEST_BIN}/busybox",
                 f"ln -s busybox {GUEST_BIN}/sh", f"cp {hdir}/khagent {GUEST_BIN}/"]
        if self.own_root:
            # Our root's commands are busybox's: its applets from tmpfs too.
            setup.append(f"{GUEST_BIN}/busybox --install -s {GUEST_BIN}/bin")
            path = f"{GUEST_BIN}:{GUEST_BIN}/bin:{hdir}:$PATH"
        # One loop, not a command a helper: the whole line rides on the kernel's
        # command line, which stops at 2048 bytes (7.2 panics on a longer one).
        names = " ".join(n for n in self.helpers if n != "khagent")
        if names:   # inside braces, `&` puts only the copies in the background
            setup.append(f"{{ for h in {names}; do cp {hdir}/$h {GUEST_BIN}/.$h && "
                         f"mv {GUEST_BIN}/.$h {GUEST_BIN}/$h; done </dev/null >/dev/null 2>&1 & }}")
        # The kernel's VMCOREINFO reaches QEMU's memory dumps through fw_cfg
        # (as on the initramfs path: initramfs.OPTIONAL_MODULES), where it has it.
        setup.append(f"{{ {GUEST_BIN}/busybox modprobe {' '.join(initramfs.OPTIONAL_MODULES)} "
                     f">/dev/null 2>&1 || true; }}")
        return " && ".join([*setup, f"PATH={path} KH_SHELL={GUEST_BIN}/sh "
                                    f"exec {GUEST_BIN}/khagent"])

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        append = [a for a in BASE_APPEND if not a.startswith("rdinit=")]
        append += self.spec.kernel_append(self.arch)
        image = self.dir / "boot" / self.kernel.image.name
        argv = ["vng", "-r", str(image), "--verbose", "--force-9p",
                "--cpus", str(self.spec.cpus), "--memory", f"{self.spec.memory}M",
                f"--qemu-opts={' '.join(self.devices(sock_dir))}",
                "--append", " ".join(append)]
        if accel == "tcg":
            argv.append("--disable-kvm")
        if not self.arch.native:
            argv += ["--arch", self.arch.name]
        if self.own_root:
            # Our root of the guest's arch; the cache (helpers, modules,
            # busybox) and the user's directories mounted at their host paths.
            argv += ["--root", str(self.dir), "--cwd", str(self.dir)]   # the guest sees it as /
            for path in (str(cache_root()), os.getcwd()):
                _mountpoint(self.dir, path)
            argv += [f"--rodir={cache_root()}={cache_root()}"]
            if not self.spec.rwdir:
                argv += [f"--rodir={os.getcwd()}={os.getcwd()}"]
        if self.spec.rwdir:
            if self.own_root:
                _mountpoint(self.dir, self.spec.rwdir)
            argv += [f"--rwdir={self.spec.rwdir}={self.spec.rwdir}"]
        argv += ["--exec", self.agent_command()]
        # vng starts QEMU as a grandchild: the reaper takes it down with us.
        return [sys.executable, "-m", "harness.vm.reaper", str(os.getpid()), "--", *argv]

    def install_hint(self) -> str:
        return "virtme-ng into .venv"

    def env(self) -> dict[str, str]:
        # vng runs virtme-run through PATH: our venv's bin must be on it.
        venv_bin = str(Path(sys.executable).parent)
        return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
