"""Patch series parsing and application, on small recorded series."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.kbuild import patches

DATA = Path(__file__).parents[1] / "data" / "patches"


def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    (t / "a.txt").write_text("one\n")
    (t / "b.txt").write_text("two\n")
    return t


def test_mbox_skips_the_cover_letter_and_keeps_order():
    ps = patches.load(str(DATA / "series.mbox"))
    assert [p.subject for p in ps] == ["demo: say hello", "demo: change b"]
    assert ps[0].source.endswith("series.mbox#2")


def test_quilt_series_in_order():
    ps = patches.load(str(DATA / "quilt"))
    assert [p.subject for p in ps] == ["demo: say hello", "demo: b does not match"]


def test_apply_mbox_onto_a_copy_leaves_the_original(tmp_path):
    orig = tree(tmp_path)
    copy = tmp_path / "copy"
    patches.copy_tree(orig, copy)
    patches.apply(copy, patches.load(str(DATA / "series.mbox")), tmp_path / "log")
    assert (copy / "a.txt").read_text() == "hello\n" and (copy / "b.txt").read_text() == "bee\n"
    assert (orig / "a.txt").read_text() == "one\n" and (orig / "b.txt").read_text() == "two\n"


def test_a_patch_that_does_not_apply_is_named(tmp_path):
    t = tree(tmp_path)
    with pytest.raises(patches.PatchError) as e:
        patches.apply(t, patches.load(str(DATA / "quilt")), tmp_path / "log")
    msg = str(e.value)
    assert "patch 2/2 'demo: b does not match'" in msg and "0002-b.patch" in msg
    assert "FAILED" in msg and "\n" not in msg
    assert (t / "b.txt").read_text() == "two\n"   # the dry run came first


def test_directory_of_format_patches(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    shutil.copy(DATA / "quilt" / "0001-a.patch", d / "0001-a.patch")
    assert [p.subject for p in patches.load(str(d))] == ["demo: say hello"]


def test_missing_series_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        patches.load(str(tmp_path / "nope.mbox"))
