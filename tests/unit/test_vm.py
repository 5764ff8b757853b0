import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import arches
from harness.arches import ARCHES
from harness.errors import UsageError
from harness.kernel import Kernel
from harness.pytest_plugin import _version_matches
from harness.resources import data
from harness.vm.cpio import Cpio
from harness.vm.initramfs import GuestModule, render_init
from harness.vm.machine import MachineSpec
from harness.vm.qemu import QemuLauncher
from harness.vm.vng import VngLauncher, check_config

GOLDENS = Path(__file__).parents[1] / "data" / "cmdlines"
UPDATE = os.environ.get("KH_UPDATE_GOLDENS") == "1"   # regenerate, then review the diff


def fake_kernel(work: Path, arch: str) -> Kernel:
    a = ARCHES[arch]
    return Kernel("debian:7.2", f"7.2.13+deb14-{a.deb_arch}", a, work / "vmlinuz", work,
                  work, work / "config", "", vmlinux=work / "vmlinux" if a.boot_vmlinux
                  else None)


def normalised(argv: list[str], work: Path, sock: Path) -> str:
    """One word a line, with the paths that change from run to run named."""
    subs = [(str(sock), "$SOCK"), (str(work), "$WORK"), (str(work.parent), "$CWD"),
            (str(data("images")), "$IMAGES"),
            (sys.executable, "$PYTHON")]
    lines = []
    for word in argv:
        for old, new in subs:
            word = word.replace(old, new)
        lines.append("$PID" if word == str(os.getpid()) else word)
    return "\n".join(lines) + "\n"


# Every arch of harness/arches (a new one needs its goldens); the host's
# root serves only the host's arch (options refuse the rest).
@pytest.mark.parametrize("arch,boot", [(a.name, b) for a in ARCHES.values()
                                       for b in ("initramfs", "vng", "vng-host")
                                       if b != "vng-host" or a.native])
@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_command_line_golden(tmp_path, monkeypatch, arch, accel, boot):
    """The whole QEMU or virtme-ng command line, compared word for word
    (KH_UPDATE_GOLDENS=1 rewrites tests/data/cmdlines/ for review)."""
    work, sock = tmp_path / "work", tmp_path / "sock"
    monkeypatch.setenv("KHARNESS_CACHE", str(work / "cache"))
    monkeypatch.chdir(tmp_path)
    k = fake_kernel(work, arch)
    (work / "helpers").mkdir(parents=True)
    for name in ("khagent", "khmap"):
        (work / "helpers" / name).touch(mode=0o755)
    (work / "helpers" / "khmap.log").touch()
    spec = MachineSpec(workdir=work, vng_root="host" if boot == "vng-host" else "auto")
    launcher = (QemuLauncher(k, work / "initramfs.cpio", spec) if boot == "initramfs"
                else VngLauncher(k, work / "helpers", spec, tree=work / "vng",
                                 busybox=work / "busybox"))
    got = normalised(launcher.argv(accel, sock), work, sock)
    golden = GOLDENS / f"{arch}-{accel}-{boot}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
    assert golden.exists(), f"no golden {golden}: run with KH_UPDATE_GOLDENS=1 and review it"
    assert got == golden.read_text()


def test_unknown_arch():
    with pytest.raises(UsageError, match="known arches are arm64, armhf, x86_64"):
        arches.get("riscv64")


def test_arch_aliases_and_host():
    assert arches.get("aarch64") is ARCHES["arm64"] and arches.get("amd64") is ARCHES["x86_64"]
    assert arches.get("arm") is arches.get("armv7l") is ARCHES["armhf"]
    assert arches.host().native and arches.host().cross_compile == ""
    other = next(a for a in ARCHES.values() if a is not arches.host())
    assert not other.native and other.cross_compile == other.cross_prefix


def test_cpio_lists_with_cpio_tool(tmp_path):
    c = Cpio()
    c.dir("bin")
    c.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("console", 5, 1)
    path = tmp_path / "a.cpio"
    path.write_bytes(c.bytes())
    assert len(path.read_bytes()) % 512 == 0
    out = subprocess.run(["cpio", "-itv"], stdin=open(path, "rb"), capture_output=True,
                         text=True, check=True).stdout
    assert "bin/hello" in out and "bin/sh -> busybox" in out
    assert out.splitlines()[-1].startswith("crw")


def test_init_loads_kernel_modules_in_order():
    text = render_init(ARCHES["x86_64"], [GuestModule("virtio.ko", "", b""),
                                  GuestModule("brd.ko", "rd_nr=1", b"")])
    assert text.index("insmod /lib/kh/virtio.ko") < text.index("insmod /lib/kh/brd.ko rd_nr=1")
    assert "/bin/khagent" in text



def test_legacy_pmem_module_only_for_pmem_guests_of_its_arch():
    """x86_64's --pmem guest also loads nd_e820 where the kernel has it (the
    e820 bus of memmap=SIZE!START, which ndctl's dax tests act on)."""
    from harness.vm.initramfs import OPTIONAL_MODULES, optional_modules
    x86, arm = ARCHES["x86_64"], ARCHES["arm64"]
    assert optional_modules(x86, ("pmem",)) == (*OPTIONAL_MODULES, "nd_e820")
    assert optional_modules(x86) == optional_modules(arm, ("pmem",)) == OPTIONAL_MODULES

@pytest.mark.parametrize("version,spec,ok", [
    ((7, 2), ">=7.2", True), ((6, 12), ">=7.2", False), ((6, 1), "<6.12", True),
    ((6, 12), "6.12", True), ((6, 12), "==6.1", False),
])
def test_kernel_marker(version, spec, ok):
    assert _version_matches(version, spec) is ok


def test_guest_settings_on_the_qemu_command_line(tmp_path):
    """Swap disk, NUMA nodes and command-line additions; the rest are
    commands run once the guest is up."""
    work = tmp_path / "work"
    work.mkdir()
    spec = MachineSpec(workdir=work, memory=2048, cpus=2, numa=2, swap=64,
                       append="proc_mem.force_override=always", overcommit=1, hugepages=8)
    argv = QemuLauncher(fake_kernel(work, "x86_64"), work / "i.cpio", spec).argv("tcg", tmp_path)
    line = " ".join(argv)
    assert "proc_mem.force_override=always" in argv[argv.index("-append") + 1]
    assert f"file={work / 'swap.img'},if=none,id=khswap" in line
    assert (work / "swap.img").stat().st_size == 64 << 20
    assert (work / "swap.img").stat().st_blocks == 0           # sparse
    assert "memory-backend-ram,id=khnode0,size=1024M" in line
    assert "node,nodeid=0,memdev=khnode0,cpus=0-1" in argv
    assert "node,nodeid=1,memdev=khnode1" in argv
    assert spec.setup_commands() == [
        "mkswap /dev/vda >/dev/null && swapon /dev/vda",
        "echo 1 > /proc/sys/vm/overcommit_memory",
        "if [ -e /proc/sys/vm/nr_hugepages ]; then echo 8 > /proc/sys/vm/nr_hugepages; fi"]
    odd = MachineSpec(workdir=work, memory=1000, numa=3)
    with pytest.raises(UsageError, match="does not split into 3 equal NUMA nodes"):
        QemuLauncher(fake_kernel(work, "x86_64"), work / "i.cpio", odd).argv("tcg", tmp_path)


def test_pmem_on_the_qemu_command_line(tmp_path, monkeypatch):
    """--pmem: an NVDIMM with a label area over a sparse file in the guest's
    folder, which a snapshot carries; its namespaces made once it is up."""
    work = tmp_path / "work"
    spec = MachineSpec(workdir=work, pmem=768)
    launcher = QemuLauncher(fake_kernel(work, "x86_64"), work / "i.cpio", spec)
    argv = launcher.argv("tcg", tmp_path)
    img = work / "pmem.img"
    assert img.stat().st_size == (768 << 20) + (128 << 10) and img.stat().st_blocks == 0
    assert argv[argv.index("-machine") + 1] == "nvdimm=on"
    assert "1024M,slots=1,maxmem=1793M" in argv
    assert f"memory-backend-file,id=khpmem,share=on,mem-path={img},size={img.stat().st_size}" \
        in argv
    assert "nvdimm,id=khnvdimm,memdev=khpmem,label-size=131072" in argv
    assert launcher.carried()[img] is True
    cmds = spec.setup_commands()
    # the NVDIMM's bus by name: legacy pmem (memmap=) may come first
    assert "ndctl init-labels -b ACPI.NFIT -f all 2>/dev/null" in cmds
    assert all("region0" not in c and "nmem0" not in c for c in cmds)
    assert any("-m fsdax -s 256M -n kh-ext4" in c for c in cmds)
    assert any("-m devdax -a 4K -s 128M -n kh-dax4k" in c for c in cmds)
    assert cmds[-1].endswith("mount -t xfs -o dax /dev/$(cat /tmp/kh-pmem/dev/kh-xfs) "
                             "/tmp/kh-pmem/xfs")
    arm = QemuLauncher(fake_kernel(work, "arm64"), work / "i.cpio", spec)
    words = arm.argv("tcg", tmp_path)
    assert words[words.index("-bios") + 1] == "/usr/share/AAVMF/AAVMF_CODE.fd"
    assert arm.carried()[Path("/usr/share/AAVMF/AAVMF_CODE.fd")] is False   # read only
    monkeypatch.setattr("os.statvfs", lambda p: os.statvfs_result((4096, 4096, 0, 0, 10,
                                                                    0, 0, 0, 0, 255)))
    with pytest.raises(UsageError, match=r"--pmem: 768 MiB is more than the 0 MiB free under"):
        launcher.argv("tcg", tmp_path)


def test_viommu_per_arch(tmp_path):
    """guest(viommu=True): intel-iommu on x86_64, virtio-iommu on arm64,
    each with its kernel words; the rest of the devices passed through."""
    spec = MachineSpec(workdir=tmp_path / "work", viommu=True)
    for arch, device, words in (("x86_64", "intel-iommu,intremap=off", "intel_iommu=on iommu=pt"),
                                ("arm64", "virtio-iommu-pci", "iommu.passthrough=1")):
        argv = QemuLauncher(fake_kernel(tmp_path, arch), tmp_path / "i.cpio",
                            spec).argv("tcg", tmp_path)
        assert argv[argv.index(device) - 1] == "-device"
        assert words in argv[argv.index("-append") + 1]


def test_vng_command_line_stays_short_with_many_helpers(tmp_path, monkeypatch):
    """virtme-ng puts the agent's start on the kernel's command line, which
    stops at 2048 bytes (a longer one panicked 7.2 in start_kernel): its
    length must not grow with each helper."""
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "helpers").mkdir()
    for name in ("khagent", *(f"khhelper{i}" for i in range(12))):
        (tmp_path / "helpers" / name).touch(mode=0o755)
    spec = MachineSpec(workdir=tmp_path)
    launcher = VngLauncher(fake_kernel(tmp_path, "x86_64"), tmp_path / "helpers", spec,
                           tree=tmp_path / "vng", busybox=tmp_path / "busybox")
    assert len(launcher.agent_command()) < 1024


def test_vng_names_the_options_a_kernel_lacks(tmp_path):
    """A build: kernel without what virtme-ng needs: one error naming them all."""
    k = fake_kernel(tmp_path, "x86_64")
    k.config.write_text("CONFIG_9P_FS=y\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_VIRTIO_PCI=y\n"
                        "# CONFIG_OVERLAY_FS is not set\n")
    with pytest.raises(UsageError, match=r"lacks what virtme-ng needs: CONFIG_VIRTIO_CONSOLE, "
                                      r"CONFIG_OVERLAY_FS; add them"):
        check_config(k)
    k.config.write_text(k.config.read_text() + "CONFIG_VIRTIO_CONSOLE=y\nCONFIG_OVERLAY_FS=m\n")
    check_config(k)


def test_kvm_unusable_says_why(monkeypatch, tmp_path):
    """bench measures KVM only where it may run guests, and says why not."""
    from harness.vm import accel
    other = next(a for a in ARCHES.values() if a is not arches.host())
    assert "runs under TCG only" in accel.kvm_unusable(other)
    monkeypatch.setattr(accel.os, "access", lambda path, mode: False)
    assert accel.kvm_unusable(arches.host()) == "/dev/kvm is absent or not accessible"
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path))
    accel.remember_kvm(False, "QEMU printed nothing in 8 s")
    assert accel.kvm_unusable(arches.host()) == \
        "KVM does not boot guests on this host (cached probe: QEMU printed nothing in 8 s)"
    accel.remember_kvm(True, "booted")
    assert accel.kvm_unusable(arches.host()) is None


def test_vng_on_arm64_needs_virtio_mmio(tmp_path):
    k = fake_kernel(tmp_path, "arm64")
    k.config.write_text("CONFIG_9P_FS=y\nCONFIG_NET_9P_VIRTIO=y\nCONFIG_VIRTIO_PCI=y\n"
                        "CONFIG_VIRTIO_CONSOLE=y\nCONFIG_OVERLAY_FS=y\n")
    with pytest.raises(UsageError, match="lacks what virtme-ng needs: CONFIG_VIRTIO_MMIO;"):
        check_config(k)
    check_config(fake_kernel(tmp_path, "x86_64"))   # the same options do on x86_64
