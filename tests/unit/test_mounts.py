"""Deletes never go through a mount point; leftover mounts are let go.

The mount cases mount for real (tmpfs, bind mounts of a directory playing
the host's /dev/shm), so they need root, as kharness's toolchain roots do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import mounts
from harness.cache import cached, remove
from harness.errors import KhError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


@pytest.fixture
def host_files(tmp_path: Path):
    """A directory standing for the host's /dev/shm, with a file to lose."""
    shm = tmp_path / "host-shm"
    shm.mkdir()
    (shm / "precious").write_text("the host's")
    yield shm
    mounts.release(tmp_path)


def leftover_root(entry: Path, shm: Path) -> None:
    """What an interrupted mmdebstrap left: proc, a tmpfs and a bind mount."""
    for d in ("proc", "dev/shm", "sys"):
        (entry / d).mkdir(parents=True)
    mount("-t", "proc", "proc", str(entry / "proc"))
    mount("-t", "tmpfs", "tmpfs", str(entry / "sys"))
    mount("--bind", str(shm), str(entry / "dev" / "shm"))
    (entry / "usr").mkdir()
    (entry / "usr" / "file").write_text("ours")


@needs_root
def test_remove_unmounts_leftovers_and_spares_the_host(tmp_path, host_files):
    entry = tmp_path / "cache" / "toolchains" / "sid-x86_64-gcc16"
    leftover_root(entry, host_files)
    assert len(mounts.under(entry)) == 3
    remove(entry)
    assert not entry.exists()
    assert mounts.under(tmp_path) == []
    assert (host_files / "precious").read_text() == "the host's"


@needs_root
def test_cached_entry_with_leftover_mounts_is_made_again(tmp_path, host_files):
    entry = tmp_path / "cache" / "toolchains" / "trixie-x86_64-gcc14"
    leftover_root(entry, host_files)     # unfinished: no marker

    def make(d: Path) -> list[Path]:
        (d / "gcc").write_text("gcc-14")
        return [d / "gcc"]

    cached(entry, make)
    assert sorted(p.name for p in entry.iterdir()) == [".kh-disk", ".kh-done", "gcc"]
    assert mounts.under(tmp_path) == []
    assert (host_files / "precious").exists()


@needs_root
def test_complete_entry_is_reused_without_its_leftover_mounts(tmp_path, host_files):
    entry = tmp_path / "entry"
    made = []

    def make(d: Path) -> list[Path]:
        made.append(1)
        (d / "product").write_text("x")
        return [d / "product"]

    cached(entry, make)
    (entry / "dev" / "shm").mkdir(parents=True)
    mount("--bind", str(host_files), str(entry / "dev" / "shm"))
    cached(entry, make)
    assert made == [1]
    assert mounts.under(entry) == []


def test_a_delete_stops_at_a_mount_point_it_meets(tmp_path):
    """One that comes back between the unmount and the walk: the walk
    refuses and leaves what lies beyond it."""
    tree = tmp_path / "entry"
    (tree / "a" / "mnt").mkdir(parents=True)
    (tree / "a" / "mnt" / "beyond").write_text("not ours")
    (tree / "b").write_text("ours")
    with pytest.raises(KhError, match=r"not deleting through .*/entry/a/mnt: it is a mount"):
        mounts._remove_dir(tree, os.lstat(tree).st_dev, {tree / "a" / "mnt"})
    assert (tree / "a" / "mnt" / "beyond").read_text() == "not ours"


def test_a_delete_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "entry"
    tree.mkdir()
    (tree / "link").symlink_to(outside)
    mounts.remove_tree(tree)
    assert not tree.exists() and (outside / "keep").exists()


def test_mountinfo_paths_are_unescaped_and_deepest_first():
    info = ("22 1 0:21 / /proc rw - proc proc rw\n"
            "40 30 0:5 / /c/my\\040root rw - tmpfs tmpfs rw\n"
            "41 40 0:6 / /c/my\\040root/dev/shm rw - tmpfs tmpfs rw\n"
            "42 1 0:7 / /c/other rw - tmpfs tmpfs rw\n")
    assert mounts.under(Path("/c/my root"), info) == [Path("/c/my root/dev/shm"),
                                                     Path("/c/my root")]
    assert mounts.under(Path("/c/my"), info) == []


@needs_root
@pytest.mark.parametrize("what", ["merge", "kcidb"])
def test_report_into_a_full_disk_names_the_file_and_leaves_no_half(tmp_path, what):
    """`kharness report merge/kcidb --into` a disk that fills: exit 3, the
    file named, no 0-byte file left behind."""
    import sys
    night = tmp_path / "night" / "stock-debian-7.2-x86_64"
    night.mkdir(parents=True)
    (night / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="test_RB1_x"/></testsuite></testsuites>')
    full = tmp_path / "full"
    full.mkdir()
    mount("-t", "tmpfs", "-o", "size=4k", "kh-full", str(full))
    try:
        (full / "filler").write_bytes(b"x" * 4096)
        into = full / ("merged" if what == "merge" else "kcidb.json")
        res = subprocess.run([sys.executable, "-m", "harness.cli", "report", what,
                              str(tmp_path / "night"), "--into", str(into)],
                             capture_output=True, text=True, timeout=60)
        left = sorted(p.name for p in full.rglob("*") if p.is_file() and p.name != "filler")
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert res.returncode == 3, res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("kharness: error:")]
    assert "No space left on device" in line and str(full) in line
    assert left == [], left
