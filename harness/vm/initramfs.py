"""The minimal initramfs: static busybox, our init and agent, modules, helpers.

Used where the host root filesystem cannot serve the guest (another arch),
and as the fast path on the host arch: it boots in a few seconds under TCG.
"""

from __future__ import annotations

import gzip
import lzma
import subprocess
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness import apt
from harness.apt import AptConfig
from harness.arches import Arch
from harness.cache import cached
from harness.errors import KhError, UsageError
from harness.kernel import Kernel
from harness.resources import data
from harness.util import cache_root, write_out
from harness.vm import tools as guest_tools
from harness.vm.cpio import Cpio

# Kernel modules the guest side needs where Debian builds them as modules:
# the agent's virtio port and its PCI transport (both =m on 6.1), and a RAM
# disk for O_DIRECT targets. A guest with swap also needs the virtio disk.
KERNEL_MODULES = {"virtio_pci": "", "virtio_console": "", "brd": "rd_nr=1 rd_size=8192"}
# Loaded first, where the kernel has them: qemu_fw_cfg hands QEMU the
# kernel's VMCOREINFO (-device vmcoreinfo), which a memory dump needs to be
# read by drgn or crash; crc32c_generic is what libcrc32c and ext4 ask the
# crypto API for (up to 6.x: a request_module() no initramfs answers).
OPTIONAL_MODULES = ("qemu_fw_cfg", "crc32c_generic")
SWAP_MODULES = {"virtio_blk": ""}
# A guest with persistent memory (--pmem): the region (the arch's, e.g.
# nfit), the pmem block device with its pfn (fs-dax) and dax devices, the
# device-dax driver and the two filesystems the fs-dax scenarios mount.
PMEM_MODULES = {"nd_pmem": "", "dax_pmem": "", "device_dax": "", "ext4": "", "xfs": ""}
# A guest with an IOMMU (viommu): vfio-pci and the type1 IOMMU backend,
# allowed to run without interrupt remapping: an argument to insmod, and on
# the kernel's command line for a built-in one (arches.UNSAFE_INTERRUPTS).
VFIO_MODULES = {"vfio_pci": "", "vfio_iommu_type1": "allow_unsafe_interrupts=1"}
_PMEM = "for --pmem"
_VFIO = "for vfio-pci, guest(viommu=True)"
NEEDED_FOR = {"virtio_blk": "CONFIG_VIRTIO_BLK, for a guest with swap (--swap, guest(swap=))",
              "nfit": f"CONFIG_ACPI_NFIT, {_PMEM}", "of_pmem": f"CONFIG_OF_PMEM, {_PMEM}",
              "nd_pmem": f"CONFIG_BLK_DEV_PMEM, {_PMEM}",
              "dax_pmem": f"CONFIG_DEV_DAX_PMEM and CONFIG_ZONE_DEVICE, {_PMEM}",
              "device_dax": f"CONFIG_DEV_DAX, {_PMEM}", "ext4": f"CONFIG_EXT4_FS, {_PMEM}",
              "xfs": f"CONFIG_XFS_FS, {_PMEM}", "vfio_pci": f"CONFIG_VFIO_PCI, {_VFIO}",
              "vfio_iommu_type1": f"CONFIG_VFIO_IOMMU_TYPE1, {_VFIO}",
              "virtio_iommu": f"CONFIG_VIRTIO_IOMMU, {_VFIO}"}


def wanted_modules(arch: Arch, devices: Collection[str] = ()) -> dict[str, str]:
    """The kernel modules (name -> arguments) a guest of the arch loads at
    boot, with these optional devices (MachineSpec.devices())."""
    out = {**KERNEL_MODULES, **(SWAP_MODULES if "swap" in devices else {})}
    if "pmem" in devices and arch.pmem_region:
        out |= {arch.pmem_region: "", **PMEM_MODULES}
    if "vfio" in devices:
        out |= {**({arch.viommu_module: ""} if arch.viommu_module else {}), **VFIO_MODULES}
    return out


def optional_modules(arch: Arch, devices: Collection[str] = ()) -> tuple[str, ...]:
    """The modules a guest of the arch loads where its kernel has them."""
    legacy = (arch.pmem_legacy,) if "pmem" in devices and arch.pmem_legacy else ()
    return (*OPTIONAL_MODULES, *legacy)


@dataclass(frozen=True)
class GuestModule:
    file: str
    args: str
    data: bytes = field(repr=False)


def _is_static(path: Path) -> bool:
    head = path.read_bytes()[:8192]
    return b"ld-linux" not in head


def busybox_for(arch: Arch) -> Path:
    """A static busybox for the guest: the host's, or Debian's for another arch."""
    if arch.native:
        host_bb = Path("/bin/busybox")
        if host_bb.exists() and _is_static(host_bb):
            return host_bb
        raise KhError("no static busybox on this host: install busybox-static "
                      "(ci/setup.sh does)")

    def make(entry: Path) -> list[Path]:
        lists = AptConfig("busybox", (arch.userland_suite,), arch.deb_arch)
        lists.update(offline=False)
        debs = lists.download([arch.busybox_package], entry / "pkg")
        apt.extract(debs, entry / "root")
        return [entry / "root" / "bin" / "busybox"]

    return cached(cache_root() / "busybox" / arch.deb_arch, make) / "root" / "bin" / "busybox"


def ko_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(raw)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dcq"], input=raw, stdout=subprocess.PIPE,
                              check=True).stdout
    if path.suffix == ".gz":
        return gzip.decompress(raw)
    return raw


def module_closure(kernel: Kernel, wanted: list[str], optional: tuple[str, ...] = ()
                   ) -> list[str]:
    """The wanted modules that are not built in and what they depend on, in
    load order, as paths under the kernel's modules directory. A wanted one
    the kernel lacks is an error naming the option to build it with; an
    optional one is left out."""
    moddir = kernel.modules_dir
    builtin = {module_name(line) for line in (moddir / "modules.builtin").read_text().split()}
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        for d in reversed(deps.get(path, [])):
            visit(d)
        if path not in order:
            order.append(path)

    for name in [*optional, *wanted]:
        if name in builtin or (name in optional and name not in by_name):
            continue
        if name in NEEDED_FOR and name not in by_name:
            # a guest setting this kernel cannot have: the user's to change
            raise UsageError(f"kernel {kernel.release} has no module {name}, which the "
                             f"guest's settings need: build it with {NEEDED_FOR[name]}")
        if name not in by_name:
            raise KhError(f"kernel {kernel.release} has no module {name}, which the guest needs")
        visit(by_name[name])
    return order


def module_stem(path: str) -> str:
    """kernel/mm/foo-bar.ko.xz -> foo-bar"""
    return Path(path).name.split(".ko")[0]


def module_name(path: str) -> str:
    """kernel/mm/foo-bar.ko.xz -> foo_bar, the name modprobe and lsmod use"""
    return module_stem(path).replace("-", "_")


def kernel_modules(kernel: Kernel, wanted: dict[str, str] = KERNEL_MODULES,
                   optional: tuple[str, ...] = ()) -> list[GuestModule]:
    """The wanted modules ({name: arguments}) that are not built in, with
    what they depend on, in load order; the optional ones where the kernel
    has them."""
    return [GuestModule(module_stem(p) + ".ko",
                        wanted.get(module_name(p), ""), ko_bytes(kernel.modules_dir / p))
            for p in module_closure(kernel, list(wanted), optional=optional)]


def render_init(arch: Arch, modules: list[GuestModule]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(data("images")), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("init.sh.j2").render(arch=arch.name, modules=modules)


def _add_tools(c: Cpio, arch: Arch) -> None:
    made = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib"}
    for rel, content in sorted(guest_tools.files(arch).items()):
        parts = rel.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                c.dir(d)
                made.add(d)
        if isinstance(content, str):
            c.symlink(rel, content)
        else:
            c.file(rel, content, 0o755)


def build(kernel: Kernel, extra_modules: list[Path], helpers: list[Path], dest: Path, *,
          devices: Collection[str] = ()) -> Path:
    """The image of a guest with these optional devices: their modules, and
    for an NVDIMM Debian's ndctl, daxctl and mkfs tools (harness/vm/tools.py)."""
    mods = kernel_modules(kernel, wanted_modules(kernel.arch, devices), optional_modules(
        kernel.arch, devices))
    tools = "pmem" in devices
    c = Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
              "lib", "lib/kh", "root", "etc", "mnt"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", busybox_for(kernel.arch).read_bytes(), 0o755)
    c.file("init", render_init(kernel.arch, mods).encode(), 0o755)
    for m in mods:
        c.file(f"lib/kh/{m.file}", m.data)
    for p in extra_modules:  # ours: the session loads them, so tests see insmod fail
        c.file(f"lib/kh/{p.name}", p.read_bytes())
    for h in helpers:
        c.file(f"bin/{h.name}", h.read_bytes(), 0o755)
    if tools:
        _add_tools(c, kernel.arch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_out(dest, c.bytes())
    return dest
