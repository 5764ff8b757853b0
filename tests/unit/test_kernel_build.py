"""The source-build cache key and the build:<key> lookup (no compiling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.arches import ARCHES
from harness.cache import publish
from harness.errors import UsageError
from harness.kbuild import linux as kbuild
from harness.kbuild.patches import Patch
from harness.kbuild.source import SourceTree
from harness.kernels import built


def request_for(tmp_path: Path, *, frag="CONFIG_A=y\n", patches=(), arch="x86_64"):
    f = tmp_path / "frag.config"
    f.write_text(frag)
    src = SourceTree("debian-source:7.2", tmp_path, "debian linux-source-7.2 7.2.13-1")
    return kbuild.BuildRequest(source=src, arch=ARCHES[arch], fragments=[f],
                               patches=list(patches))


def test_key_follows_every_input(tmp_path):
    base = kbuild.cache_key(request_for(tmp_path), "gcc 12.2.0", "tinyconfig")
    assert base == kbuild.cache_key(request_for(tmp_path), "gcc 12.2.0", "tinyconfig")
    patch = Patch("mm: x", "a.mbox#1", "--- a/x\n+++ b/x\n")
    others = [
        kbuild.cache_key(request_for(tmp_path, frag="CONFIG_A=n\n"), "gcc 12.2.0", "tinyconfig"),
        kbuild.cache_key(request_for(tmp_path, patches=[patch]), "gcc 12.2.0", "tinyconfig"),
        kbuild.cache_key(request_for(tmp_path, arch="arm64"), "gcc 12.2.0", "tinyconfig"),
        kbuild.cache_key(request_for(tmp_path), "gcc 14.2.0", "tinyconfig"),
        kbuild.cache_key(request_for(tmp_path), "gcc 12.2.0", "defconfig"),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_find_by_prefix_and_refuses_unfinished(tmp_path, monkeypatch):
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path))
    done = tmp_path / "builds" / "x86_64-7.2.13-abcdef0123456789"
    done.mkdir(parents=True)
    (done / "kernel.json").write_text(json.dumps({
        "spec": "build:abcdef0123456789", "release": "7.2.13-kh", "arch": "x86_64",
        "image": str(done / "bzImage"), "modules_dir": str(done), "build_dir": str(done),
        "config": str(done / ".config"), "source": "test", "vmlinux": None}))
    x86, arm = ARCHES["x86_64"], ARCHES["arm64"]
    with pytest.raises(UsageError, match="no finished x86_64 kernel build 'abc'"):
        built.find("abc", x86)          # not published yet: not finished
    publish(done, ["kernel.json"])
    assert built.find("abc", x86).release == "7.2.13-kh"
    assert built.find(str(done), x86).spec == "build:abcdef0123456789"
    with pytest.raises(UsageError):
        built.find("abc", arm)
