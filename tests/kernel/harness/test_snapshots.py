"""Snapshots (harness/vm/snapshot.py): every guest after the first is the
first one's saved state, restored. What that must give: isolation between
tests under --fresh test (and none under session, the proof that the
check can fail), a clock and a random pool of its own, a restore after a
guest died, and a snapshot that cannot be trusted made again, never loaded.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import inner_pytest, qemus_of

from harness import cache, session
from harness.guest import Guest, GuestDied
from harness.vm import initramfs, snapshot

pytestmark = pytest.mark.qemu

TRIGGER = "/sys/kernel/debug/kh_splat/trigger"
FILL_MB = 200

LEAVES_STATE = f'''
import pytest

WARN = "WARNING in kh_splat_warn"


@pytest.mark.expect_report(WARN)
def test_1_leaves_state_behind(guest):
    guest.run("echo warn > {TRIGGER}", check=True)
    guest.run("echo leak > {TRIGGER}", check=True)
    guest.run("dd if=/dev/zero of=/tmp/kh-fill bs=1M count={FILL_MB}", check=True)


@pytest.mark.expect_report(WARN)
def test_2_warn_once_fires_again(guest):
    guest.run("echo warn > {TRIGGER}", check=True)


def test_3_no_page_is_held(guest):
    assert guest.read("/sys/kernel/debug/kh_splat/leaked").strip() == "0"


def test_4_memory_is_free(guest):
    info = {{ln.split(":")[0]: int(ln.split()[1])
            for ln in guest.read("/proc/meminfo").splitlines()}}
    assert guest.run("test -e /tmp/kh-fill").status != 0, "test 1's file is here"
    # a fresh 1 GiB guest has ~105 MiB in use; the fill would add FILL_MB
    assert info["MemAvailable"] > info["MemTotal"] - {FILL_MB * 3 // 4} * 1024, info

'''


def _inner(request, tmp_path: Path, fresh: str) -> dict[str, ET.Element]:
    (tmp_path / "test_leaves_state.py").write_text(LEAVES_STATE)
    junit = tmp_path / f"junit-{fresh}.xml"
    res = inner_pytest(request, tmp_path / "test_leaves_state.py", tmp_path / fresh,
                       f"--fresh={fresh}", f"--junitxml={junit}")
    assert res.returncode in (0, 1), res.stdout[-3000:] + res.stderr[-3000:]
    return {c.get("name", ""): c for c in ET.parse(junit).getroot().iter("testcase")}


def _failure(case: ET.Element) -> str:
    f = case.find("failure")
    return "" if f is None else f.get("message", "")


def test_fresh_test_isolates_what_session_shares(request, tmp_path):
    """One test fires a WARN_ONCE, holds 256 pages through kh_splat and
    fills 200 MB of memory; the tests after it look for each. With --fresh
    test none of it reaches them; with --fresh session all of it does."""
    fresh = _inner(request, tmp_path, "test")
    assert [n for n, c in fresh.items() if _failure(c)] == []
    assert len(fresh) == 4
    shared = _inner(request, tmp_path, "session")
    assert _failure(shared["test_1_leaves_state_behind"]) == ""
    assert _failure(shared["test_2_warn_once_fires_again"]).endswith(
        "expected kernel report not seen: WARNING in kh_splat_warn")
    assert "'256' == '0'" in _failure(shared["test_3_no_page_is_held"])
    assert "test 1's file is here" in _failure(shared["test_4_memory_is_free"])
    assert len(list((tmp_path / "session").glob("*/boot-*"))) == 1   # one guest for all
    # every test of the fresh run had a guest of its own, each with its console
    consoles = list((tmp_path / "test").glob("*/boot-*/console.log"))
    assert len(consoles) >= 4
    assert not qemus_of(tmp_path)


@pytest.fixture
def own(kh_pool, tmp_path) -> session.Prepared:
    """The session's kernel with a guest setting of its own (768 MiB), so
    its snapshot is this test's to spoil; on the initramfs path whatever
    --boot the suite has (virtme-ng's guests are never restored)."""
    prep = kh_pool.prepared()
    initramfs.busybox_for(prep.kernel.arch)
    return dataclasses.replace(prep.variant(tmp_path, memory=768), boot="initramfs")


def _guest(prep: session.Prepared) -> Guest:
    g = session.start(prep)
    assert isinstance(g, Guest)
    return g


def test_restored_guests_have_the_hosts_clock_and_random_numbers_of_their_own(own):
    first = _guest(own)      # booted (or restored, if an earlier run saved it)
    first.discard()
    seen = []
    for _ in range(2):
        g = _guest(own)
        try:
            assert "-incoming" in (g.workdir / "cmdline").read_text()
            seen.append(g.run("head -c 16 /dev/urandom | od -An -tx1", check=True).stdout)
            guest_clock = int(g.run("date +%s", check=True).stdout)
            assert abs(guest_clock - time.time()) < 5
        finally:
            g.discard()
    assert seen[0] != seen[1]
    assert own.boots.restores >= 2


def test_a_guest_that_died_is_followed_by_a_restore(own):
    g = _guest(own)
    with pytest.raises(GuestDied):
        g.run("echo c > /proc/sysrq-trigger; sleep 10", timeout=60)   # a panic
    g.close()
    before = own.boots.restores
    again = _guest(own)
    try:
        assert own.boots.restores == before + 1
        tainted = int(again.read("/proc/sys/kernel/tainted"))
        assert not tainted & 1 << 7, tainted      # TAINT_DIE: not the panicked kernel
    finally:
        again.discard()


def _spoilt(own: session.Prepared, capfd, spoil) -> str:
    """Spoil the snapshot, start a guest: it must be booted and saved again
    (never restored from the spoilt one); what kharness said."""
    _guest(own).discard()
    assert own.boots.snapshot is not None
    spoil(own.boots.snapshot)
    capfd.readouterr()
    before = own.boots.restores
    g = _guest(own)
    try:
        assert own.boots.restores == before, "restored from a spoilt snapshot"
        assert "-incoming" not in (g.workdir / "cmdline").read_text()
        assert g.run("true").status == 0
    finally:
        g.discard()
    return capfd.readouterr().err


def test_a_truncated_snapshot_is_made_again(own, capfd):
    def truncate(entry: Path) -> None:
        state = entry / snapshot.STATE
        with open(state, "r+b") as fh:
            fh.truncate(state.stat().st_size // 2)
    said = _spoilt(own, capfd, truncate)
    assert "is damaged (state is missing or not its recorded size); making it again" in said


def test_a_snapshot_qemu_cannot_load_is_made_again(own, capfd):
    def garble(entry: Path) -> None:
        with open(entry / snapshot.STATE, "r+b") as fh:
            fh.write(b"\xff" * 4096)
    said = _spoilt(own, capfd, garble)
    assert "QEMU could not load the snapshot" in said
    assert "the snapshot is damaged (its state is not what was saved (sha256 differs)): " \
           "making it again" in said


@pytest.mark.parametrize("what", ["qemu", "kernel"])
def test_a_snapshot_of_another_qemu_or_kernel_is_made_again(own, capfd, what):
    def other(entry: Path) -> None:
        rec = json.loads((entry / snapshot.RECORD).read_text())
        rec["identity"][what]["size"] += 1
        (entry / snapshot.RECORD).write_text(json.dumps(rec))
        # whole, as that QEMU or kernel left it: only what it was made with differs
        cache.publish(entry, json.loads((entry / cache.MARKER).read_text()))
    said = _spoilt(own, capfd, other)
    assert f"is out of date: made with another {what}" in said


def test_a_swap_disk_travels_with_the_snapshot(own):
    """The swap disk is state outside RAM: each restored guest gets its own
    copy of the one the saved guest had swapped on, and swaps to it."""
    own = own.variant(own.outdir, swap=64)
    _guest(own).discard()
    g = _guest(own)
    try:
        assert "-incoming" in (g.workdir / "cmdline").read_text()
        assert (g.workdir / "swap.img").is_file()
        assert "/dev/vda" in g.read("/proc/swaps")
        # more than the guest's free memory: the restored guest's disk takes pages
        # (until swap is used, or a minute: a fixed wait lost the race on a busy host)
        res = g.run("khhog 700 >/dev/null 2>&1 & for i in $(seq 120); do "
                    "awk 'NR > 1 && $4 > 0 { used = 1 } END { exit !used }' /proc/swaps "
                    "&& break; sleep 0.5; done; cat /proc/swaps; kill $!",
                    timeout=90, check=True)
        used = [ln.split() for ln in res.stdout.splitlines()[1:]]
        assert used and int(used[0][3]) > 0, res.stdout
    finally:
        g.discard()


def test_settings_made_after_boot_have_a_snapshot_of_their_own(own):
    """vm.overcommit_memory is set in the guest after boot, not on QEMU's
    command line: a guest asking for it must not get the default's state
    (mremap_test's 2 GB cases failed so)."""
    _guest(own).discard()
    plain = own.boots.snapshot
    own = own.variant(own.outdir, overcommit=1)
    _guest(own).discard()
    g = _guest(own)
    try:
        assert own.boots.snapshot != plain
        assert g.read("/proc/sys/vm/overcommit_memory").strip() == "1"
    finally:
        g.discard()


def test_a_folder_with_commas_and_dollars_restores_from_the_snapshot(own, tmp_path):
    """QEMU reads a comma as the end of a value unless doubled: a --out or
    TMPDIR with one once failed every restore (and cost the shared entry)."""
    own = own.variant(tmp_path / "o,comma $HOME;x")
    _guest(own).discard()
    g = _guest(own)
    try:
        assert "-incoming" in (g.workdir / "cmdline").read_text()
        assert g.console_log.is_relative_to(own.outdir) and g.console_log.stat().st_size
        assert g.run("true").status == 0
    finally:
        g.discard()


def _state(entry: Path) -> tuple[int, int, int]:
    st = (entry / snapshot.STATE).stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def test_a_restore_that_fails_for_this_runs_own_reason_keeps_the_snapshot(own, capfd,
                                                                          monkeypatch):
    """An option of this run's own that QEMU refuses says nothing against
    the snapshot: it stays as it is for every run it serves; this run boots."""
    _guest(own).discard()
    entry = own.boots.snapshot
    assert entry is not None
    before = _state(entry)
    plain = snapshot.Restorer.argv

    def refused(self, accel, sock_dir):
        return [*plain(self, accel, sock_dir), "-chardev", "file,id=khbad,path=/nonexistent/x"]
    monkeypatch.setattr(snapshot.Restorer, "argv", refused)
    capfd.readouterr()
    g = _guest(own)
    try:
        assert "-incoming" not in (g.workdir / "cmdline").read_text()   # booted instead
        assert g.run("true").status == 0
    finally:
        g.discard()
    said = capfd.readouterr().err
    assert "the snapshot is kept, and this run boots its guests from here on" in said
    assert _state(entry) == before and cache.damage(entry) is None


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(120)
"""


def test_a_damaged_snapshot_another_run_holds_is_left_to_it(own, capfd):
    """Proven damaged, but another run is restoring from it: never removed
    under that run; this one boots its guests instead."""
    _guest(own).discard()
    entry = own.boots.snapshot
    assert entry is not None
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cache.hold_path(entry))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with open(entry / snapshot.STATE, "r+b") as fh:
            fh.write(b"\xff" * 4096)
        capfd.readouterr()
        g = _guest(own)
        try:
            assert "-incoming" not in (g.workdir / "cmdline").read_text()
            assert g.run("true").status == 0
        finally:
            g.discard()
        said = capfd.readouterr().err
        assert "but another run is using it: left as it is" in said
        assert (entry / snapshot.STATE).exists()
    finally:
        holder.kill()
        holder.wait()
    # Nobody holds it now: the next run finds it damaged and makes it again.
    with cache.locked(cache.lock_path(entry)):
        assert cache.remove_unheld(entry)
