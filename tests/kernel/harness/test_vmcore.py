"""Memory dumps at failure (--vmcore): the guest's memory, kdump-compressed,
in the failed test's folder beside its console and kernel log window, with
the kernel's VMCOREINFO in it (what drgn and crash need to read it); and
`kharness debug` reading them with drgn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import inner_pytest, qemus_of

from harness.observe import memory

pytestmark = pytest.mark.qemu

MARKER = "kh-dumped-7d1c"      # the failing test's hostname: in init_uts_ns, in the dump

INNER = f'''
def test_fails(guest):
    guest.run("echo {MARKER} > /proc/sys/kernel/hostname", check=True)
    assert guest.read("/proc/sys/kernel/tainted") == "no such value"


def test_passes(guest):
    guest.run("true", check=True)


def test_panics(guest):
    guest.run("echo c > /proc/sysrq-trigger", timeout=60)
'''


def _inner(request, tmp_path: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER)
    return inner_pytest(request, tmp_path / "test_inner.py", out, "-rA", *args)


def _vmcores(out: Path) -> dict[str, Path]:
    return {p.parent.name.rsplit("_", 1)[-1]: p for p in out.glob("*/tests/*/vmcore")}


def test_a_failed_test_leaves_a_vmcore_with_vmcoreinfo(request, tmp_path, kernel):
    res = _inner(request, tmp_path, tmp_path / "out")
    assert res.returncode == 1, res.stdout[-3000:]
    cores = _vmcores(tmp_path / "out")
    assert sorted(cores) == ["fails", "panics"]     # on failure only, by default
    head = cores["fails"].read_bytes()[:1 << 20]
    assert head.startswith(b"KDUMP   "), head[:16]    # kdump-compressed, as crash reads it
    assert f"OSRELEASE={kernel.release}\n".encode() in head
    assert "kharness vmcore" in res.stdout and "MiB in" in res.stdout
    assert (cores["fails"].parent / "console.log").exists()
    assert not list((tmp_path / "out").rglob("vmcore.part"))
    assert not qemus_of(tmp_path)


@pytest.mark.host_arch
def test_vmcore_always_and_never(request, tmp_path):
    always = _inner(request, tmp_path, tmp_path / "always", "--vmcore=always")
    assert sorted(_vmcores(tmp_path / "always")) == ["fails", "panics", "passes"], \
        always.stdout[-2000:]
    never = _inner(request, tmp_path, tmp_path / "never", "--vmcore=never")
    assert never.returncode == 1 and _vmcores(tmp_path / "never") == {}


def test_a_vmcore_that_fills_the_disk_is_exit_3_and_no_half_file(request, tmp_path):
    """16 MiB: room for the image and the logs, not for the dump."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "kh-full", str(small)],
                   check=True)
    try:
        res = _inner(request, tmp_path, small)
        assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-2000:]
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("kharness: error:")]
        assert len(lines) == 1 and "vmcore" in lines[0] and "No space left" in lines[0], \
            res.stderr[-2000:]
        assert not list(small.rglob("vmcore*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert not qemus_of(tmp_path)


@pytest.fixture(scope="module")
def failed(request, tmp_path_factory) -> Path:
    """The folder of a test that failed, with its vmcore."""
    tmp = tmp_path_factory.mktemp("debug")
    res = _inner(request, tmp, tmp / "out")
    assert res.returncode == 1, res.stdout[-3000:]
    return _vmcores(tmp / "out")["fails"].parent


def _debug(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "debug", str(folder), *args],
                          timeout=900, capture_output=True, text=True)


def test_debug_reads_the_failed_guest_without_debug_info(failed, kernel):
    """--symbols kallsyms: no download; the kernel's symbols from the dump
    itself, raw memory, and struct page typed from our modules' DWARF."""
    ram_pfn = 0x41000 if kernel.arch.name == "arm64" else 0x1000   # virt's RAM is at 1 GiB
    res = _debug(failed, "--symbols", "kallsyms", "-c",
                 "print(prog.read(prog.symbol('init_uts_ns').address + 65, 65)"
                 f".split(b'\\0')[0].decode()); print(page_state({ram_pfn}).refcount >= 0)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == [MARKER, "True"], res.stdout + res.stderr[-2000:]
    assert "kallsyms" in res.stderr


def test_debug_with_the_kernels_dwarf(failed, kernel):
    """The default: the kernel's DWARF (Debian's -dbg, fetched on first use
    and cached; a build: kernel's own vmlinux), our modules' with it. A
    build without the debuginfo fragment has none: --symbols dwarf says so
    in one line."""
    if not kernel.spec.startswith("debian:") and memory.dwarf(kernel, fetch=False) is None:
        res = _debug(failed, "--symbols", "dwarf", "-c", "1")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "no DWARF" in lines[0] and "debuginfo" in lines[0], lines[0]
        return
    res = _debug(failed, "-c", "print(prog['init_uts_ns'].name.nodename.string_().decode()); "
                               "print(prog.module('kh_splat').debug_file_path)")
    assert res.returncode == 0, res.stderr[-3000:]
    nodename, splat = res.stdout.split()
    assert nodename == MARKER
    assert splat.endswith("kh_splat.ko"), res.stdout     # our module's DWARF found its module
    assert "DWARF" in res.stderr


def test_debug_reads_a_panicked_guest(failed, kernel):
    """QEMU stops a guest whose kernel panicked instead of ending: its
    memory is dumped like a live one's, the panic in it."""
    panicked = failed.parent / "test_inner.py_test_panics"
    res = _debug(panicked, "-c", "prog['panic_cpu'].counter.value_()")
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout) >= 0, res.stdout      # -1 until a CPU panics


def test_debug_bad_input_is_one_line_exit_2(failed, tmp_path):
    cut = tmp_path / "tests" / "cut"
    cut.mkdir(parents=True)
    (cut / "vmcore").write_bytes((failed / "vmcore").read_bytes()[:3 << 20])
    for where, says in ((failed.parent, "no vmcore in"), (cut, "truncated")):
        res = _debug(where, "-c", "1")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and says in lines[0], res.stderr
