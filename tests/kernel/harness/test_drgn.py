"""drgn on a running guest: page state read live over QMP is what a dump of
the same moment says; `kharness boot --drgn`, also attached to a guest that
another run (a repro) is using."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import device, option

from harness.commands import debug

pytestmark = pytest.mark.qemu      # a QEMU guest's memory over QMP


def test_live_read_is_the_dumps(guest, live):
    """The child's PTE of block 0 and the block's struct page right after
    fork (DX5's reads), live and through a dump, the holder held meanwhile:
    the same values."""
    dx = device(guest, "daxlike", "refcounted")
    with live.holding(dx.khmap_argv("fork", dx.debugfs)) as held:
        pid, addr = held.point()
        block0 = dx.pages()[0][1]
        prog = live.state()
        seen = (live.ptes(prog, pid, addr, 4), live.page(prog, block0), live.parent(prog, pid))
        dumped = live.dumped()
        assert not guest.still      # the dump resumed it
        prog = live.state()         # and the live program holds it still again
        again = (live.ptes(prog, pid, addr, 4), live.page(prog, block0),
                 live.parent(prog, pid))
        from_dump = (live.ptes(dumped, pid, addr, 4), live.page(dumped, block0),
                     live.parent(dumped, pid))
    dx.assert_released()
    assert seen[0][0] is not None and seen[0][0].pfn == block0, seen
    assert seen[1] is not None and (seen[1].mapcount, seen[1].refcount) == (2, 3), seen
    assert seen == again == from_dump


def test_boot_drgn_reads_the_running_guest(request, tmp_path):
    opt = option(request)
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--boot={opt('--boot')}", f"--out={tmp_path}",
         "--exec", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!", "--drgn", "-c",
         "[(t.pid.value_(), t.comm.string_().decode()) for t in for_each_task(prog) if t.mm]"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    pid, tasks = res.stdout.splitlines()
    assert (int(pid), "sleep") in eval(tasks), res.stdout


def test_boot_drgn_attaches_to_a_running_repro(request, tmp_path):
    """While a repro runs its rounds, drgn on its guest sees the round's
    command; the repro runs on to its end."""
    opt = option(request)
    repro = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "repro", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--out={tmp_path}", "--signature", "WARNING in none",
         "--rounds", "40", "--", "sleep", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code = ("print(sorted({t.comm.string_().decode() for t in for_each_task(prog) "
                "if t.mm}))")
        for _ in range(120):     # until its guest is up
            res = subprocess.run([sys.executable, "-m", "harness.cli", "boot", "--drgn",
                                  "--attach", str(tmp_path / "repro"), "-c", code],
                                 capture_output=True, text=True, timeout=300)
            if res.returncode == 0 and "sleep" in res.stdout:
                break
            assert repro.poll() is None, repro.stdout.read() if repro.stdout else ""
            time.sleep(1)
        assert "'khagent'" in res.stdout and "'sleep'" in res.stdout, res.stderr[-2000:]
        out, _ = repro.communicate(timeout=900)
    finally:
        repro.kill()
    assert repro.returncode == 1 and "0/40: hit rate below" in out, out[-2000:]
    with pytest.raises(debug.UsageError, match="no guest of it is running"):
        debug.running_guest(Path(tmp_path / "repro"))
