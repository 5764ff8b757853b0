"""The harness itself on a real guest: report windows, panics, no orphans."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import interruptible, option

from harness.guest import GuestDied
from harness.observe import reports
from harness.vm.machine import sweep_stale

SPLATS = [
    pytest.param("warn", "WARNING in kh_splat_warn", "", id="warn"),
    # syzkaller's title: "refcount" frames are skipped, kh_splat_refcount among them.
    pytest.param("refcount", "WARNING: refcount bug in kh_splat_write", "", id="refcount"),
    # 6.1 checks a freed page only when its per-cpu list drains, later. Without
    # page_owner the frame is the freeing call trace's: "... in kh_splat_badpage".
    pytest.param("badpage", "BUG: Bad page state", "", id="badpage",
                 marks=pytest.mark.kernel(">=6.12")),
    pytest.param("hang", "INFO: task hung in kh_splat_hang",
                 "echo 2 > /proc/sys/kernel/hung_task_timeout_secs", id="hang"),
]
# The RCU stall report needs a second vCPU to notice the stall, and two vCPUs
# are not safe under TCG (see MachineSpec.cpus): its golden logs, captured at
# -smp 2, keep the parser honest; `kh_splat stall` reproduces it by hand.
RESTORE = ("echo 0 > /proc/sys/kernel/hung_task_timeout_secs; "
           "echo 21 > /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout")


@pytest.mark.parametrize("kind,title,setup", SPLATS)
def test_report_in_window_is_parsed(guest, request, kind, title, setup):
    request.applymarker(pytest.mark.expect_report(title))
    guest.run(f"echo 1 > /sys/kernel/debug/clear_warn_once; {setup}", check=True)
    guest.run(f"echo {kind} > /sys/kernel/debug/kh_splat/trigger; {RESTORE}", check=True)
    assert any(title in t for t in reports.titles(guest.dmesg_peek()))


@pytest.mark.qemu
@pytest.mark.expect_report("kernel panic: sysrq triggered crash")
def test_panic_stops_the_guest_and_the_next_boot_is_fresh(guest, kh_pool):
    boots = kh_pool.prep.boots.count
    with pytest.raises(GuestDied) as died:
        guest.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert [r.title for r in died.value.reports] == ["kernel panic: sysrq triggered crash"]
    assert "Kernel panic - not syncing" in died.value.console_log.read_text()
    # QEMU stopped the guest where it panicked (its memory kept for a dump)
    # until the next guest replaced it.
    assert not guest.alive() and guest.dumpable()
    fresh = kh_pool.get()
    assert not guest.machine.alive()
    assert fresh is not guest and kh_pool.prep.boots.count == boots + 1
    assert fresh.run("cat /proc/sys/kernel/tainted").status == 0
    assert fresh.run("uname -r").stdout.strip() == guest.release


@pytest.mark.qemu
@pytest.mark.expect_report("timed out")
def test_hung_command_stops_the_guest_and_keeps_the_console(guest, kh_pool):
    with pytest.raises(GuestDied) as died:
        guest.run("sleep 120", timeout=3)
    assert "did not finish in time" in str(died.value)
    (death,) = died.value.reports
    assert death.title == "timed out" and death.kind is reports.Kind.MACHINE
    # The console's tail: the init's last words before the agent started.
    started = {"initramfs": "kh-init: starting agent", "vng": "starting script"}
    assert started[kh_pool.prep.boot] in death.text
    assert "Linux version" in died.value.console_log.read_text()
    assert not guest.machine.alive()
    assert kh_pool.get().run("true").status == 0


def _qemu_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            state = next(l for l in (d / "status").read_text().splitlines()
                         if l.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if os.path.basename(cmd.split("\0")[0]).startswith("qemu-system") and \
                marker in cmd and "zombie" not in state:
            pids.append(int(d.name))
    return pids


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_no_qemu_outlives_the_harness(kernel, tmp_path, request, sig):
    opt = option(request)
    cli = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--boot={opt('--boot')}", f"--out={tmp_path}",
         "--exec", "sleep 600"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible)
    deadline = time.monotonic() + 180
    marker = None  # the guest's agent socket, named on QEMU's command line
    while marker is None or not _qemu_pids(marker) or not any(
            b"kh-init" in p.read_bytes() or b"virtme" in p.read_bytes()
            for p in tmp_path.rglob("console.log")):
        assert cli.poll() is None, f"harness exited early: {cli.stderr.read()}"
        assert time.monotonic() < deadline, "guest did not start"
        for cmdline in tmp_path.rglob("cmdline"):
            m = re.search(r"path=(\S+/agent\.sock)", cmdline.read_text())
            marker = m.group(1) if m else None
        time.sleep(0.2)
    assert len(_qemu_pids(marker)) == 1
    time.sleep(1)
    cli.send_signal(sig)
    cli.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _qemu_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _qemu_pids(marker) == []
    sock_dir = Path(marker).parent
    if sig == signal.SIGINT:
        assert cli.returncode == 130
        assert not sock_dir.exists()        # a clean exit removes its own
    else:
        assert sock_dir.exists()            # a SIGKILLed harness cannot
        sweep_stale()                       # what the next run does first
        assert not sock_dir.exists()


def test_put_arrives_byte_exact(guest):
    data = os.urandom(200_000) + b"\0\n\xff"
    guest.put(data, "kh-put/sub/blob", 0o750)   # relative: where commands run
    res = guest.run("md5sum kh-put/sub/blob; stat -c %a kh-put/sub/blob; rm -r kh-put",
                    check=True)
    assert res.stdout.split() == [hashlib.md5(data).hexdigest(), "kh-put/sub/blob", "750"]
