"""A guest's memory in drgn: a vmcore (`kharness debug`, a failure's dump) or
a running QEMU guest read over the QMP socket the launcher gives drgn (the
`live` fixture, a failure's explanation, `kharness boot --drgn`), with the
debug information of the kernel that runs there. Best first:

- DWARF for the whole kernel: a `build:` kernel's own vmlinux (built with
  the `debuginfo` fragment), or for a Debian kernel its -dbg package,
  fetched on first use into the cache (vmlinux and the modules, ~1 GB a
  download);
- without it: the kernel's own symbol table (kallsyms; VMCOREINFO says
  where), and the types our modules were built with (struct page, folio,
  vm_area_struct, mm_struct: everything a test module's headers declare),
  plus the few kernel variables a page's state needs (vmemmap).

Either way our modules' DWARF is loaded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import KhError, UsageError
from harness.kernel import Kernel
from harness.util import cache_root, progress, step
from harness.vm import kdump

if TYPE_CHECKING:
    import drgn

# Kernel variables the kallsyms-only program can type from our modules' DWARF.
TYPED_SYMBOLS = {
    "init_task": "struct task_struct",
    "init_mm": "struct mm_struct",
    "init_pid_ns": "struct pid_namespace",
    "jiffies": "unsigned long",
    "totalram_pages": "atomic_long_t",
}


@dataclass
class Dump:
    """A guest's memory: a vmcore, or (live_program) the QMP socket of a
    running guest."""
    vmcore: Path
    kernel: Kernel
    modules: dict[str, Path]       # our modules (name -> .ko with DWARF)
    info: dict[str, str]           # its VMCOREINFO

    @property
    def build_id(self) -> str:
        return self.info.get("BUILD-ID", "")


# -- debug information ------------------------------------------------------

def build_id(elf: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(elf)], capture_output=True, text=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    return m.group(1) if m else ""


def _has_dwarf(elf: Path) -> bool:
    out = subprocess.run(["readelf", "-S", "-W", str(elf)], capture_output=True, text=True)
    return ".debug_info" in out.stdout


def dwarf(kernel: Kernel, *, fetch: bool) -> tuple[Path, list[Path]] | None:
    """(vmlinux, module files) with the kernel's DWARF, or None where there
    is none to have (fetch=False and none cached; a kernel of a real machine)."""
    if kernel.spec.startswith("build:"):
        vmlinux = kernel.build_dir / "vmlinux"
        if vmlinux.is_file() and _has_dwarf(vmlinux):
            return vmlinux, sorted(kernel.build_dir.rglob("*.ko"))
        return None
    if kernel.spec.startswith("debian:"):
        return debian_dbg(kernel, fetch=fetch)
    return None


def debian_dbg(kernel: Kernel, *, fetch: bool) -> tuple[Path, list[Path]] | None:
    """Debian's linux-image-<release>-dbg, kept as its vmlinux and modules
    under the cache (the package: ~1 GB, 6.8 GB unpacked; what is kept is
    vmlinux and the modules' debug files)."""
    from harness.apt import SERIES, AptConfig
    from harness.cache import cached, damage

    series = kernel.debian_series
    pkg = f"linux-image-{kernel.release}-dbg"
    entry = cache_root() / "debuginfo" / kernel.arch.deb_arch / kernel.release

    def found(d: Path) -> tuple[Path, list[Path]]:
        return d / "vmlinux", sorted((d / "modules").rglob("*.ko"))

    if entry.is_dir() and damage(entry) is None:    # complete: made whole, sizes kept
        return found(entry)
    if not fetch:
        return None

    def make(d: Path) -> list[Path]:
        lists = AptConfig(series, SERIES[series].suites, kernel.arch.deb_arch)
        lists.update(offline=False)
        fields = lists.packages([pkg]).get(pkg)
        if fields is None:
            raise KhError(f"no {pkg} in Debian's {', '.join(lists.suites)}: the kernel's debug "
                          f"information is gone from the archive; run kharness debug "
                          f"--symbols kallsyms")
        size = int(fields.get("Size", 0))
        t0 = time.monotonic()
        with step(f"downloading {pkg} ({size / 1e9:.2f} GB, once for this kernel)"):
            debs = lists.download([pkg], d / "deb")
        with step(f"keeping vmlinux and modules' debug information from {debs[0].name}"):
            _extract_dbg(debs[0], d, kernel.release)
        shutil.rmtree(d / "deb")
        progress(f"{pkg}: {size / 1e9:.2f} GB in {time.monotonic() - t0:.0f}s, "
                 f"kept in {d}")
        return [d / "vmlinux"]

    return found(cached(entry, make))


# The modules whose debug files are kept: the drivers the suites exercise
# and what their guests load (all of them: 5.8 GB unpacked; these: ~160 MB).
DBG_MODULES = ("kernel/mm/", "kernel/drivers/dax/", "kernel/drivers/nvdimm/",
               "kernel/drivers/acpi/nfit/", "kernel/drivers/vfio/", "kernel/drivers/dma-buf/",
               "kernel/drivers/virtio/", "kernel/drivers/char/", "kernel/drivers/misc/",
               "kernel/drivers/block/", "kernel/fs/ext4/", "kernel/fs/xfs/")


def _extract_dbg(deb: Path, dest: Path, release: str) -> None:
    """vmlinux and the debug files of DBG_MODULES, streamed out of the
    package: nothing else of its 6.8 GB lands on disk."""
    import tarfile

    prefix = f"./usr/lib/debug/lib/modules/{release}/"
    # bookworm's and trixie's packages have it in boot/, newer ones beside
    # the modules (boot/ then holds a link): whichever is the file
    vmlinux = (f"./usr/lib/debug/boot/vmlinux-{release}", f"{prefix}vmlinux")
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    with tarfile.open(fileobj=tar.stdout, mode="r|") as tf:
        for member in tf:
            name = member.name
            if not member.isfile():
                continue
            if name in vmlinux:
                out = dest / "vmlinux"
            elif name.startswith(prefix) and name.endswith(".ko") and \
                    name[len(prefix):].startswith(DBG_MODULES):
                out = dest / "modules" / name[len(prefix):]
            else:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None
            with open(out, "wb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)
    if tar.wait() != 0 or not (dest / "vmlinux").is_file():
        raise KhError(f"{deb.name} holds no {' or '.join(vmlinux)}")


# -- the program --------------------------------------------------------------

def program(dump: Dump, symbols: str = "auto") -> tuple[drgn.Program, str]:
    """A drgn Program on the dump and what it knows: the kernel's DWARF
    (symbols 'dwarf', or 'auto' where it can be had) or kallsyms and our
    modules' types ('kallsyms')."""
    import drgn

    prog = drgn.Program()
    core = dump.vmcore
    if not kdump.readable_release(dump.kernel.release):
        # libkdumpfile stops at an -rc kernel's release: drgn reads ELF itself
        core = dump.vmcore.with_name(dump.vmcore.name + ".elf")
        if not core.exists() or core.stat().st_mtime < dump.vmcore.stat().st_mtime:
            kdump.to_elf(dump.vmcore, core)
    try:
        prog.set_core_dump(str(core))
    except Exception as e:
        raise UsageError(f"drgn cannot open {dump.vmcore}: {e}") from None
    return prog, load_symbols(prog, dump, symbols)


def live_program(socket: Path, kernel: Kernel, modules: dict[str, Path],
                 read_info: Callable[[drgn.Program], dict[str, str]] | None = None,
                 symbols: str = "auto", *, fetch: bool = True,
                 ) -> tuple[drgn.Program, Dump, str]:
    """A drgn Program on a running QEMU guest's memory, read over the QMP
    socket the launcher gives drgn (no dump), what its VMCOREINFO says
    (read_info reads it through the program; without it, the kernel's own
    copy, where the DWARF types it) and what it knows. A guest that cannot
    be reached is a KhError naming the socket."""
    import drgn

    _served(socket)
    prog = drgn.Program()
    try:
        prog.set_qemu_qmp(str(socket))
    except Exception as e:
        raise KhError(f"drgn could not attach to the guest over {socket}: {e}") from None
    memory = Dump(socket, kernel, modules, read_info(prog) if read_info else {})
    knows = load_symbols(prog, memory, symbols, fetch=fetch)
    if not memory.info and knows == "DWARF":
        try:
            text = prog.read(prog["vmcoreinfo_data"].value_(), prog["vmcoreinfo_size"].value_())
            memory.info = dict(line.split("=", 1) for line in
                               text.decode(errors="replace").splitlines() if "=" in line)
        except (LookupError, drgn.FaultError):
            pass
    return prog, memory, knows


def _served(socket: Path, timeout: float = 5.0) -> None:
    """QEMU greets a QMP client at once, unless another client holds the
    socket (it serves one at a time): a KhError then, not a wait forever."""
    import socket as sockets

    with sockets.socket(sockets.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(socket))
            if not s.recv(64).startswith(b'{"QMP"'):
                raise OSError("no QMP greeting")
        except TimeoutError:
            raise KhError(f"another drgn reads this guest ({socket}): QEMU serves one "
                          f"QMP client at a time; end that one first") from None
        except OSError as e:
            raise KhError(f"drgn could not attach to the guest over {socket}: {e}") from None


def load_symbols(prog: drgn.Program, dump: Dump, symbols: str, *, fetch: bool = True) -> str:
    """Give prog the kernel's DWARF (symbols 'dwarf', or 'auto' where it
    can be had) or kallsyms and our modules' types ('kallsyms'); which."""
    import drgn
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    full = None
    if symbols != "kallsyms":
        full = dwarf(dump.kernel, fetch=fetch)
        if full is None and symbols == "dwarf":
            raise UsageError(f"no DWARF for {dump.kernel.spec} ({dump.kernel.release}): "
                             f"a build: kernel needs the 'debuginfo' kconfig fragment; "
                             f"use --symbols kallsyms")
    if full is not None:
        vmlinux, kos = full
        have = build_id(vmlinux)
        if dump.build_id and have and have != dump.build_id:
            raise UsageError(f"{dump.vmcore} is the memory of the kernel of build ID "
                             f"{dump.build_id}; the debug information found ({vmlinux}) is "
                             f"of {have}: rebuild, or use --symbols kallsyms")
        prog.load_debug_info([vmlinux], default=False, main=True)
        files = {ko.name.removesuffix(".ko").replace("-", "_"): ko
                 for ko in [*kos, *dump.modules.values()]}
        for module, _ in prog.loaded_modules():
            if module.name in files:
                module.try_file(str(files[module.name]))
        return "DWARF"
    prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    # Kernels without CONFIG_KALLSYMS_ALL (Debian's 6.1 arm64) list only
    # functions there; VMCOREINFO names the data a dump reader needs.
    prog.register_symbol_finder("vmcoreinfo", drgn.SymbolIndex([
        drgn.Symbol(key[7:-1], int(value, 16), 0, drgn.SymbolBinding.GLOBAL,
                    drgn.SymbolKind.OBJECT)
        for key, value in dump.info.items() if key.startswith("SYMBOL(")]), enable_index=1)
    for name, ko in dump.modules.items():
        m = prog.extra_module(f"{name}-types", create=True)
        m.try_file(str(ko), force=True)
    vmemmap = _vmemmap(prog, dump)

    def objects(prog: drgn.Program, name: str | None, flags: Any, filename: str | None):
        if name == "vmemmap" and vmemmap:
            return drgn.Object(prog, "struct page *", vmemmap)
        if name in TYPED_SYMBOLS:
            try:
                sym = prog.symbol(name)
            except LookupError:
                return None
            return drgn.Object(prog, TYPED_SYMBOLS[name], address=sym.address)
        return None

    prog.register_object_finder("kharness", objects, enable_index=0)
    return "kallsyms and our modules' types"


def _vmemmap(prog: drgn.Program, dump: Dump) -> int:
    """Where struct page 0 would be: VMCOREINFO says so from 6.x; before,
    x86_64's vmemmap_base variable, or arm64's VMEMMAP_START less the
    struct pages of the memory below PHYS_OFFSET (asm/memory.h)."""
    info = dump.info
    if "SYMBOL(vmemmap)" in info:
        return int(info["SYMBOL(vmemmap)"], 16)
    if "NUMBER(VMEMMAP_START)" in info and "NUMBER(PHYS_OFFSET)" in info:
        page = prog.type("struct page").size
        return (int(info["NUMBER(VMEMMAP_START)"], 16) -
                (int(info["NUMBER(PHYS_OFFSET)"], 16) >> 12) * page) & (1 << 64) - 1
    try:
        return prog.read_u64(prog.symbol("vmemmap_base").address)
    except LookupError:
        return 0
