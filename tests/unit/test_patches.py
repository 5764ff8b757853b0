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


@pytest.mark.parametrize("name, content, says", [
    ("empty.patch", b"", "is empty"),
    ("blank.patch", b"\n  \n", "is empty"),
    ("prose.patch", b"Subject: [PATCH] mm: words\n\nNo diff here.\n", "holds no diff"),
    ("binary.patch", b"\x7fELF\x02\x01\x01\x00\x00\x00", "is a binary file"),
])
def test_a_file_that_is_not_a_patch_is_bad_input(tmp_path, name, content, says):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(UsageError, match=says) as e:
        patches.load(str(f))
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_a_directory_of_patches_without_diffs_is_bad_input(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "0000-cover-letter.patch").write_text("Subject: [PATCH 0/2] cover\n\nprose\n")
    (d / "0001-x.patch").write_text("Subject: [PATCH 1/2] x\n\nprose only\n")
    with pytest.raises(UsageError, match=r"0001-x.patch holds no diff"):
        patches.load(str(d))
    (d / "0001-x.patch").unlink()
    with pytest.raises(UsageError, match="no \\*.patch files"):
        patches.load(str(d))     # a cover letter alone is no series


def test_a_directory_with_a_cover_letter_loads_the_patches(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "0000-cover-letter.patch").write_text("Subject: [PATCH 0/1] cover\n\nprose\n")
    shutil.copy(DATA / "quilt" / "0001-a.patch", d / "0001-a.patch")
    assert [p.subject for p in patches.load(str(d))] == ["demo: say hello"]


def test_a_series_is_checked_against_the_tree_before_any_build(tmp_path):
    t = tree(tmp_path)
    (t / "big").mkdir()
    (t / "big" / "untouched.c").write_text("x" * 1000)
    patches.check_applies(t, patches.load(str(DATA / "series.mbox")), tmp_path / "s1")
    assert sorted(p.name for p in (tmp_path / "s1" / "tree").rglob("*")) == ["a.txt", "b.txt"]
    with pytest.raises(patches.PatchError) as e:
        patches.check_applies(t, patches.load(str(DATA / "quilt")), tmp_path / "s2")
    msg = str(e.value)
    assert msg.startswith("patch 2/2 'demo: b does not match'")
    assert f"does not apply to {t}: b.txt:" in msg and "FAILED" in msg
    assert e.value.exit_code == 2
    assert (t / "a.txt").read_text() == "one\n"   # the user's tree is never touched


def test_touched_files_from_git_and_plain_diffs():
    p = patches.Patch("s", "f", "diff --git a/mm/memory.c b/mm/memory.c\n"
                                "--- a/mm/memory.c\n+++ b/mm/memory.c\n@@ -1 +1 @@\n"
                                "--- /dev/null\n+++ b/mm/new.c\t2026-01-01\n")
    assert patches.touched([p]) == {"mm/memory.c", "mm/new.c"}
