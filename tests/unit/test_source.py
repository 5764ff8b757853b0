"""Source identities for the build cache: plain trees, git trees, tarballs."""

from __future__ import annotations

import os
import subprocess
import tarfile

import pytest

from harness.errors import UsageError
from harness.kbuild import source


def fake_tree(path):
    (path / "mm").mkdir(parents=True)
    (path / "Makefile").write_text("all:\n")
    (path / "mm" / "memory.c").write_text("int x;\n")
    return path


def test_plain_tree_identity_follows_a_touched_file(tmp_path):
    t = fake_tree(tmp_path / "linux")
    first = source.get(str(t)).identity
    assert source.get(str(t)).identity == first
    st = os.stat(t / "mm" / "memory.c")
    os.utime(t / "mm" / "memory.c", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source.get(str(t)).identity != first


def test_git_tree_identity_is_head_plus_diff(tmp_path):
    t = fake_tree(tmp_path / "linux")
    git = ["git", "-C", str(t), "-c", "user.name=k", "-c", "user.email=k@x"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    clean = source.get(str(t)).identity
    assert clean.startswith("git ")
    (t / "mm" / "memory.c").write_text("int y;\n")
    assert source.get(str(t)).identity != clean


def test_tarball_is_extracted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path / "cache"))
    t = fake_tree(tmp_path / "linux-9.9")
    tar = tmp_path / "linux-9.9.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(t, arcname="linux-9.9")
    got = source.get(str(tar))
    assert (got.path / "mm" / "memory.c").read_text() == "int x;\n"
    assert got.identity.startswith("tarball ") and source.get(str(tar)) == got


def test_not_a_kernel_tree(tmp_path):
    with pytest.raises(UsageError, match="is not a kernel source tree"):
        source.get(str(tmp_path))
    with pytest.raises(UsageError, match="unknown kernel source"):
        source.get("nonsense:1")


def test_kernelversion_as_make_prints_it(tmp_path):
    (tmp_path / "Makefile").write_text("# SPDX\nVERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 0\n"
                                       "EXTRAVERSION = -rc7\nNAME = x\n")
    assert source.kernelversion(tmp_path) == "7.3.0-rc7"
