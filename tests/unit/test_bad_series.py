"""A series that is not a patch series, or does not apply, is bad input
(exit 2, one line) for every command that takes one, found before any
download, copy or build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "patches"


def kh(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KHARNESS_CACHE": str(cache)})


@pytest.fixture
def kernel_tree(tmp_path: Path) -> Path:
    """As little as source.get takes for a kernel tree, and what the
    recorded series patch."""
    t = tmp_path / "linux"
    (t / "mm").mkdir(parents=True)
    (t / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 0\n")
    (t / "mm" / "memory.c").write_text("/* memory */\n")
    (t / "a.txt").write_text("one\n")
    (t / "b.txt").write_text("two\n")
    return t


COMMANDS = {
    "build": [],
    "validate": [],
    "bisect": ["-k", "DX2"],
    "mutants": ["--mutants", str(DATA.parent / "mutants")],
}


def out(command: str, tmp_path: Path) -> list[str]:
    return [] if command == "build" else ["--out", str(tmp_path / "out")]   # build writes none


def not_patches(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.patch"
    empty.write_text("")
    prose = tmp_path / "prose.patch"
    prose.write_text("Subject: [PATCH] words only\n\nno diff\n")
    binary = tmp_path / "vmlinux.patch"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" * 64)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "0001-words.patch").write_text("Subject: [PATCH 1/1] words\n\nno diff\n")
    return {"empty": (empty, "is empty"), "no diff": (prose, "holds no diff"),
            "binary": (binary, "is a binary file, not a patch"),
            "folder without diffs": (folder, "0001-words.patch holds no diff")}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_series_that_is_not_patches(command, kernel_tree, tmp_path):
    for what, (series, words) in not_patches(tmp_path).items():
        res = kh(tmp_path / "cache", command, "--source", str(kernel_tree),
                 "--patches", str(series), *COMMANDS[command], *out(command, tmp_path))
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, f"{what}: {res.stderr}"
        assert len(lines) == 1 and words in lines[0], f"{what}: {res.stderr}"


@pytest.mark.parametrize("command", ["build", "validate", "bisect"])
def test_a_series_that_does_not_apply_names_the_patch_and_hunk(command, kernel_tree,
                                                               tmp_path):
    res = kh(tmp_path / "cache", command, "--source", str(kernel_tree),
             "--patches", str(DATA / "quilt"), *COMMANDS[command], *out(command, tmp_path))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, res.stderr
    assert "patch 2/2 'demo: b does not match'" in lines[0]
    assert f"does not apply to {kernel_tree}: b.txt: Hunk #1 FAILED" in lines[0]
    assert not (tmp_path / "cache" / "builds").exists()
    assert (kernel_tree / "a.txt").read_text() == "one\n"
