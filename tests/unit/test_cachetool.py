"""`kharness cache` and `cache prune` on a cache of real cache entries
(made by cached(), as every kind is): what is shown, what a prune takes
and in what order, and what it never takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cache
from harness.commands import cachetool

DAY = 86400.0
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(cachetool.MAX_ENV, "none")
    yield tmp_path / "cache"
    for entry in list(cache._holds):        # this process's holds on entries of this test
        cache.release(entry)


def make(root: Path, rel: str, mib: int = 1, days_ago: float = 0.0,
         files: dict[str, str] | None = None) -> Path:
    def fill(entry: Path) -> list[str]:
        (entry / "blob").write_bytes(os.urandom(mib << 20))
        for name, text in (files or {}).items():
            (entry / name).write_text(text)
        return ["blob"]
    entry = cache.cached(root / rel, fill)
    cache.release(entry)                    # as if the run that made it had ended
    when = time.time() - days_ago * DAY
    os.utime(entry / cache.MARKER, (when, when))
    return entry


def kernel(root: Path, days_ago: float = 0.0) -> Path:
    return make(root, "kernels/debian/6.12-amd64_1", 2, days_ago, {
        "kernel.json": json.dumps({"release": "6.12-amd64", "arch": "x86_64",
                                   "spec": "debian:6.12"}), "vmlinuz": ""})


def snap(root: Path, k: Path, name: str, days_ago: float = 0.0) -> Path:
    rec = {"release": "6.12-amd64", "memory_mb": 1024, "template": ["q", "-smp", "2"],
           "carried": {"pmem.img": True},
           "identity": {"kernel": {"path": str(k / "vmlinuz")}}}
    return make(root, f"snapshots/x86_64/6.12-{name}", 1, days_ago,
                {"snapshot.json": json.dumps(rec)})


def names(root: Path) -> set[str]:
    return {e.name for e in cachetool.entries(root)}


def test_show_lists_every_kind_and_each_entry(root, capsys):
    k = kernel(root)
    snap(root, k, "a")
    make(root, "modules/6.12/ringbuf-1")
    cachetool.show(verbose=True)
    out = capsys.readouterr().out
    assert out.startswith(f"cache {root}: ")
    assert "  kernels " in out and "1 entry" in out and "  ccache " in out
    assert "kernels/debian/6.12-amd64_1  6.12-amd64 x86_64 (debian:6.12)" in out
    assert "snapshots/x86_64/6.12-a  6.12-amd64, 1024 MiB, 2 vCPU, pmem" in out
    assert "modules/6.12/ringbuf-1" in out and "used just now" in out


def test_older_than_takes_what_no_run_used_for_that_long(root, capsys):
    make(root, "toolchains/old", days_ago=10)
    make(root, "toolchains/new", days_ago=1)
    cachetool.prune(older_than=7 * DAY)
    assert names(root) == {"toolchains/new"}
    assert "removed toolchains/old (1.0 MiB): unused for 10d" in capsys.readouterr().err


def test_max_size_takes_the_least_recently_used_first(root):
    for i, age in enumerate((5, 1, 3, 2)):
        make(root, f"sources/s{i}", mib=1, days_ago=age)
    cachetool.prune(max_size=int(2.5 * (1 << 20)))
    assert names(root) == {"sources/s1", "sources/s3"}


def test_a_kernel_goes_after_its_snapshots_and_takes_them_along(root, capsys):
    k = kernel(root, days_ago=9)
    snap(root, k, "a", days_ago=0.1)
    make(root, "toolchains/t", days_ago=2)
    cachetool.prune(max_size=int(3.5 * (1 << 20)))   # the toolchain goes, not the kernel in use
    assert names(root) == {"kernels/debian/6.12-amd64_1", "snapshots/x86_64/6.12-a"}
    cachetool.prune(kinds={"kernels"}, max_size=0)
    assert names(root) == set()
    assert "removed snapshots/x86_64/6.12-a (1.0 MiB): its kernel goes" in \
        capsys.readouterr().err


def test_a_snapshot_whose_kernel_is_gone_goes_in_any_prune(root):
    k = kernel(root)
    snap(root, k, "a")
    (k / "vmlinuz").unlink()
    make(root, "toolchains/t")
    cachetool.prune(older_than=365 * DAY)
    assert names(root) == {"kernels/debian/6.12-amd64_1", "toolchains/t"}


def test_kind_and_dry_run(root, capsys):
    make(root, "toolchains/t", days_ago=30)
    make(root, "builds/b", days_ago=30)
    cachetool.prune(older_than=DAY, kinds={"builds"}, dry_run=True)
    assert names(root) == {"toolchains/t", "builds/b"}
    assert "would remove builds/b (1.0 MiB): unused for 30d" in capsys.readouterr().err
    cachetool.prune(older_than=DAY, kinds={"builds"})
    assert names(root) == {"toolchains/t"}


def test_an_entry_a_running_kharness_holds_is_kept_with_a_line(root, capsys):
    entry = make(root, "toolchains/held", days_ago=30)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache.hold_path(entry))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        cachetool.prune(older_than=DAY)
        assert names(root) == {"toolchains/held"}
        assert "kept toolchains/held: a running kharness holds it" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_an_entry_being_made_is_kept(root, capsys):
    entry = make(root, "toolchains/making", days_ago=30)
    with cache.locked(cache.lock_path(entry)):
        out = subprocess.run([sys.executable, "-m", "harness.cli", "cache", "prune",
                              "--older-than", "1d"], capture_output=True, text=True,
                             env={**os.environ})
    assert out.returncode == 0 and "kept toolchains/making: a kharness is making it" in out.stderr
    assert entry.is_dir()


def test_this_runs_own_entries_are_kept(root):
    entry = make(root, "toolchains/mine", days_ago=30)
    cache.cached(entry, lambda e: [])            # this process uses it: held
    cachetool.prune(older_than=DAY)
    assert entry.is_dir() and cache.damage(entry) is None


def test_a_prune_stopped_midway_leaves_nothing_that_passes_for_whole(root):
    entry = make(root, "toolchains/t", days_ago=30)
    trash = entry.with_name(f"{cachetool.TRASH}t-1234")
    os.rename(entry, trash)              # where a prune killed after its rename stands
    assert cache.damage(entry) == "absent"
    assert [e.what for e in cachetool.entries(root)] == ["being removed"]
    cachetool.prune(older_than=365 * DAY)
    assert not trash.exists() and names(root) == set()


def test_a_mount_inside_an_entry_is_never_crossed(root, capsys):
    entry = make(root, "toolchains/chroot", days_ago=30)
    (entry / "proc").mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(entry / "proc")],
                      capture_output=True).returncode:
        pytest.skip("cannot mount here (not root)")
    try:
        (entry / "proc" / "precious").write_text("x")
        cachetool.prune(older_than=DAY)
        assert "kept toolchains/chroot: a mount point is inside it" in capsys.readouterr().err
        assert (entry / "proc" / "precious").exists()
    finally:
        subprocess.run(["umount", str(entry / "proc")], check=True)


def test_the_cap_applies_at_the_end_of_a_run(root, monkeypatch, capsys):
    make(root, "toolchains/a", mib=2, days_ago=3)
    make(root, "toolchains/b", mib=2, days_ago=1)
    monkeypatch.setenv(cachetool.MAX_ENV, "3M")
    cachetool.enforce_cap()
    assert names(root) == {"toolchains/b"}
    assert "the cache is over 3.0 MiB (KHARNESS_CACHE_MAX)" in capsys.readouterr().err
    monkeypatch.setenv(cachetool.MAX_ENV, "none")
    assert cachetool.cap() is None


@pytest.mark.parametrize("argv,says", [
    (["cache", "prune", "--older-than", "7x"], "--older-than takes an age such as 12h"),
    (["cache", "prune", "--max-size", "lots"], "--max-size takes a size such as 500M"),
    (["cache", "prune", "--kind", "kernel"], "--kind 'kernel' is unknown: use one of"),
    (["cache", "--dry-run"], "are for 'kharness cache prune'"),
])
def test_bad_input_is_one_line_and_exit_2(root, argv, says):
    out = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True,
                         text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0]


def test_a_cache_well_under_its_cap_is_not_walked_again_soon(root, monkeypatch):
    make(root, "toolchains/a", mib=1)
    monkeypatch.setenv(cachetool.MAX_ENV, "100M")
    cachetool.enforce_cap()
    walked = []
    monkeypatch.setattr(cachetool, "total_size", lambda *a: walked.append(1) or 0)
    cachetool.enforce_cap()
    assert walked == []                     # checked a moment ago, far under the cap
    monkeypatch.setenv(cachetool.MAX_ENV, "1M")
    cachetool.enforce_cap()                 # near (over) a cap: walked every time
    assert walked


def test_a_mutants_kernel_and_its_snapshots_go_once_its_suite_ran(root):
    from harness.commands import mutants

    mutant = make(root, "builds/x86_64-7.2.13-abc123", files={"vmlinuz": ""})
    snap(root, mutant, "m1")
    clean = make(root, "builds/x86_64-7.2.13-def456", files={"vmlinuz": ""})
    snap(root, clean, "c1")
    mutants.forget("build:abc123")
    assert names(root) == {"builds/x86_64-7.2.13-def456", "snapshots/x86_64/6.12-c1"}


def test_the_cache_size_is_each_entrys_recorded_size_not_a_walk(root):
    """A whole entry's size is recorded when it is made: the cap's check
    sums them (a walk of a nightly's cache is millions of files)."""
    entry = make(root, "builds/x86_64-7.2-abc", 2)
    recorded = int((entry / cache.DISK).read_text())
    assert recorded >= 2 << 20
    before = cachetool.total_size(root)
    (entry / "blob").unlink()             # what is recorded is what counts
    assert cachetool.total_size(root) == before
    (entry / cache.DISK).unlink()        # an entry made before sizes were: walked, recorded
    assert cachetool.total_size(root) < before - (1 << 20)
    assert int((entry / cache.DISK).read_text()) < recorded
