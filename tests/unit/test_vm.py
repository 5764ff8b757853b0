import subprocess

import pytest

from harness import arches
from harness.kernels import Kernel
from harness.pytest_plugin import _version_matches
from harness.vm.cpio import Cpio
from harness.vm.initramfs import render_init
from harness.vm.machine import MachineSpec
from harness.vm.qemu import QemuMachine


def fake_kernel(tmp_path, arch="x86_64", vmlinux=True):
    return Kernel("debian:7.2", "7.2.13+deb14-amd64", arch, tmp_path / "vmlinuz", tmp_path,
                  tmp_path, tmp_path / "config", "", vmlinux=tmp_path / "vmlinux" if vmlinux
                  else None)


def test_qemu_argv_x86_64(tmp_path):
    m = QemuMachine(fake_kernel(tmp_path), tmp_path / "i.cpio", MachineSpec(workdir=tmp_path))
    argv = m.argv("tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-kernel") + 1] == str(tmp_path / "vmlinux")  # PVH, no decompression
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-cpu") + 1] == "max"
    append = argv[argv.index("-append") + 1]
    assert "console=ttyS0" in append and "panic=-1" in append
    assert "-no-reboot" in argv
    assert any("name=kh.agent" in a for a in argv)


def test_qemu_argv_kvm_uses_host_cpu(tmp_path):
    m = QemuMachine(fake_kernel(tmp_path), tmp_path / "i.cpio", MachineSpec(workdir=tmp_path))
    argv = m.argv("kvm")
    assert argv[argv.index("-cpu") + 1] == "host"


def test_qemu_argv_arm64(tmp_path):
    k = fake_kernel(tmp_path, "arm64", vmlinux=False)
    argv = QemuMachine(k, tmp_path / "i.cpio", MachineSpec(workdir=tmp_path)).argv("tcg")
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-kernel") + 1] == str(tmp_path / "vmlinuz")
    assert "console=ttyAMA0" in argv[argv.index("-append") + 1]
    assert argv[argv.index("-cpu") + 1] == "neoverse-n1"


def test_unknown_arch():
    with pytest.raises(arches.UnknownArch, match="known arches are x86_64, arm64"):
        arches.get("riscv64")


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
    from harness.vm.initramfs import GuestModule
    text = render_init("x86_64", [GuestModule("virtio.ko", "", b""),
                                  GuestModule("brd.ko", "rd_nr=1", b"")])
    assert text.index("insmod /lib/kh/virtio.ko") < text.index("insmod /lib/kh/brd.ko rd_nr=1")
    assert "sh /bin/kh-agent" in text


@pytest.mark.parametrize("version,spec,ok", [
    ((7, 2), ">=7.2", True), ((6, 12), ">=7.2", False), ((6, 1), "<6.12", True),
    ((6, 12), "6.12", True), ((6, 12), "==6.1", False),
])
def test_kernel_marker(version, spec, ok):
    assert _version_matches(version, spec) is ok
