"""How the harness fails: a KVM that cannot boot, Ctrl-C and SIGTERM in a run,
kernel reports from `boot --exec`, the guest channel under a hostile command."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import inner_pytest, interruptible, option, qemus_of

from harness import session
from harness.arches import ARCHES
from harness.guest import Guest
from harness.observe import memory
from harness.vm import initramfs
from harness.vm.machine import BootError
from harness.vm.qemu import QemuLauncher

# The QEMU path itself (boots, consoles, signals): nothing of it is on an SSH target.
pytestmark = pytest.mark.qemu

QEMU_SAYS = "qemu-system-x86_64: error: failed to set MSR 0x10a"


class DyingKvm(QemuLauncher):
    """KVM that opens but cannot run the guest: QEMU exits at once, as on
    these machines, whether or not this host's KVM works."""

    def argv(self, accel: str, sock_dir: Path) -> list[str]:
        if accel == "kvm":
            return ["sh", "-c", f"echo '{QEMU_SAYS}' >&2; exit 1"]
        return super().argv(accel, sock_dir)


def dying_kvm(prep: session.Prepared, workdir: Path, accel: str) -> DyingKvm:
    """Raw QEMU with our initramfs, whichever path the session boots."""
    image = initramfs.build(prep.kernel, list(prep.modules.values()), prep.helpers,
                            workdir / "initramfs.cpio")
    spec = dataclasses.replace(prep.spec, workdir=workdir, accel=accel)
    return DyingKvm(prep.kernel, image, spec)


def test_kvm_that_dies_falls_back_to_tcg_and_keeps_both_logs(kh_pool, tmp_path, monkeypatch,
                                                               capsys):
    prep = kh_pool.prepared()
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path / "cache"))   # the probe's home
    launcher = dying_kvm(prep, tmp_path / "boot", "auto")
    monkeypatch.setattr(launcher, "accels", lambda: ["kvm", "tcg"])
    guest = Guest.boot(launcher)
    try:
        assert guest.machine.accel == "tcg"
        assert guest.run("uname -r").stdout.strip() == prep.kernel.release
    finally:
        guest.poweroff()
    err = capsys.readouterr().err
    assert "KVM could not boot the guest: qemu exited with status 1 after" in err
    assert QEMU_SAYS in err and "falling back to TCG" in err
    assert QEMU_SAYS in (tmp_path / "boot" / "launcher-kvm.log").read_text()
    assert "Linux version" in (tmp_path / "boot" / "console.log").read_text()
    probe = json.loads((tmp_path / "cache" / "accel-probe.json").read_text())
    assert probe["kvm"] is False and QEMU_SAYS in probe["why"]


def test_accel_kvm_that_cannot_boot_names_qemus_error(kh_pool, tmp_path, monkeypatch):
    prep = kh_pool.prepared()
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BootError) as e:
        Guest.boot(dying_kvm(prep, tmp_path / "boot", "kvm"))
    assert QEMU_SAYS in str(e.value) and "exited with status 1" in str(e.value)
    assert "falling back" not in str(e.value)
    assert not (tmp_path / "cache" / "accel-probe.json").exists()   # asked, not probed


def started_from_a_script() -> None:
    """As `kharness run &` in a shell script: SIGINT ignored, inherited."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_and_stop(request, tmp_path: Path, sig: int,
                  preexec=interruptible) -> tuple[subprocess.CompletedProcess, Path]:
    """`kharness run` over two jobs (the kernel on both arches, one at a
    time; a build: kernel, which is one arch's, then debian:6.12), stopped
    by sig during the first."""
    opt = option(request)
    kernel, arch = opt("--kernel"), opt("--arch")
    if kernel.startswith("build:"):
        jobs = [f"--kernel={kernel},debian:6.12", f"--arch={arch}"]
    else:
        other = next(a for a in ARCHES if a != arch)
        jobs = [f"--kernel={kernel}", f"--arch={arch},{other}"]
    cli = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", *jobs, "-j", "1",
         f"--boot={opt('--boot')}", f"--out={tmp_path}", "-k", "RB or DX"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    deadline = time.monotonic() + 300
    # Tests are under way once a second guest's kernel log window opened (the
    # first guest's is its boot; a restored guest's window may stay empty).
    while len(list(tmp_path.rglob("dmesg.log"))) < 2:
        assert cli.poll() is None, cli.communicate()
        assert time.monotonic() < deadline, "no guest came up"
        time.sleep(0.2)
    time.sleep(1)
    cli.send_signal(sig)
    out, err = cli.communicate(timeout=120)
    return subprocess.CompletedProcess(cli.args, cli.returncode, out, err), tmp_path


@pytest.mark.host_arch
@pytest.mark.parametrize("sig,status,word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_stopping_a_run_writes_what_finished_and_stops_every_kernel(request, tmp_path, sig,
                                                                    status, word):
    res, out = _run_and_stop(request, tmp_path, sig)
    assert res.returncode == status, res.stderr[-3000:]
    assert f"kharness: {word}" in res.stderr.splitlines()[-1]
    first = option(request)("--kernel").replace(":", "-")
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == [f"{first}-{option(request)('--arch')}"], runs  # no second job
    junit = out / runs[0] / "junit.xml"
    ran = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.get("name")]
    lines = res.stdout.splitlines()
    head = next((i for i, ln in enumerate(lines) if ln.startswith("scenario ")), len(lines))
    rows = [ln.split()[0] for ln in lines[head + 1:] if ln.strip()]
    # The matrix shows only tests that ran (and finished), each with its row.
    assert all(any(r.startswith(n.removeprefix("test_")) for n in ran) for r in rows), rows
    assert "FAILED" not in res.stderr


@pytest.mark.host_arch
def test_sigterm_stops_a_run_started_with_sigint_ignored(request, tmp_path):
    """A script's `kharness run &` starts it with SIGINT ignored, and its
    suites with it: SIGTERM still stops the run within the grace period
    (the suite's pytest takes SIGINT again, or is killed), exit 143, no
    second job, no QEMU left."""
    t0 = time.monotonic()
    res, out = _run_and_stop(request, tmp_path, signal.SIGTERM, started_from_a_script)
    assert res.returncode == 143, res.stderr[-3000:]
    assert "kharness: terminated" in res.stderr.splitlines()[-1]
    assert time.monotonic() - t0 < 300
    assert len([p for p in out.iterdir() if p.is_dir()]) == 1   # the second job never began
    assert qemus_of(tmp_path) == []


@pytest.mark.host_arch
@pytest.mark.parametrize("size", ["2m", "4k"], ids=["initramfs-cannot-be-written",
                                                    "nothing-can-be-written"])
def test_full_disk_under_run_out_is_one_line_and_exit_3(request, tmp_path, size):
    """`run --out` on a disk that fills: exit 3 (infrastructure, not failing
    tests), one error line naming the file, no traceback, no empty JUnit."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "kh-full", str(small)],
                   check=True)
    try:
        if size == "4k":
            (small / "filler").write_bytes(b"x" * 4096)
        opt = option(request)
        res = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", f"--kernel={opt('--kernel')}",
             f"--arch={opt('--arch')}", "--out", str(small / "out"), "-k", "RB1"],
            capture_output=True, text=True, timeout=600)
        junits = {j: j.stat().st_size for j in small.rglob("junit.xml")}
    finally:
        subprocess.run(["umount", str(small)], check=True)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("kharness: error:")]
    assert res.returncode == 3, res.stderr[-2000:]
    assert len(errors) == 1 and "No space left on device" in errors[0], res.stderr[-2000:]
    assert str(small) in errors[0] and "Traceback" not in res.stderr + res.stdout
    assert all(junits.values()), junits     # none left empty


@pytest.mark.host_arch
def test_two_boots_with_one_out_do_not_share_a_folder(request, tmp_path):
    """The second `kharness boot` with the same --out stops in one line while
    the first runs; the first's console log and dmesg are its own."""
    opt = option(request)
    argv = [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
            f"--arch={opt('--arch')}", f"--boot={opt('--boot')}", f"--out={tmp_path}"]
    first = subprocess.Popen([*argv, "--exec", "sleep 5; uname -r"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "boot" / ".kh-lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text()):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    second = subprocess.run([*argv, "--exec", "true"], capture_output=True, text=True,
                            timeout=120)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"kharness: error: {tmp_path / 'boot'} is being written by {lock.read_text().strip()}"
        f": wait for it to end, or give this run another --out"]
    assert sorted(p.name for p in (tmp_path / "boot").glob("boot-*")) == ["boot-1"]
    assert (tmp_path / "boot" / "boot-1" / "console.log").read_text().count(
        "Linux version") == 1


def test_boot_exec_prints_a_report_it_caused(request, tmp_path):
    opt = option(request)
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--boot={opt('--boot')}", f"--out={tmp_path}",
         "--exec", "echo before; echo warn > /sys/kernel/debug/kh_splat/trigger; echo after"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-2000:]
    assert res.stdout == "before\nafter\n"
    assert "kernel report during" in res.stderr and "WARNING in kh_splat_warn" in res.stderr


def test_guest_channel_is_byte_exact_and_cannot_be_forged(guest):
    data = os.urandom(4096)
    hexed = data.hex()
    guest.run(f"printf '%s' {hexed} > /tmp/kh-bytes.hex", check=True)
    res = guest.run("busybox xxd -r -p /tmp/kh-bytes.hex", check=True)
    assert res.stdout_bytes == data
    forged = guest.run('echo "END 6 0" >&3; echo "OUT 9"; exit 7')
    assert forged.status == 7
    assert forged.stdout == "OUT 9\n" and "Bad file descriptor" in forged.stderr


def test_junit_failure_is_the_report_title_and_text(request, tmp_path):
    """A test that hits an unexpected report: JUnit's message is the title,
    the body the report's own lines, not the console."""
    (tmp_path / "test_splat.py").write_text(
        "def test_warns(guest):\n"
        "    guest.run('echo warn > /sys/kernel/debug/kh_splat/trigger', check=True)\n")
    junit = tmp_path / "junit.xml"
    inner_pytest(request, tmp_path / "test_splat.py", tmp_path / "out", f"--junitxml={junit}")
    (failure,) = ET.parse(junit).getroot().iter("failure")
    assert failure.get("message") == \
        "kernel report in this test's window: WARNING in kh_splat_warn"
    body = failure.text or ""
    assert "Call Trace" in body or "Call trace" in body
    assert "kh_splat_warn" in body and "Linux version" not in body


def test_full_disk_is_one_line_and_exit_3(request, tmp_path):
    """The output directory fills up (a 2 MiB tmpfs): the initramfs cannot be
    written; one line names the file, exit 3, nothing boots."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "kh-full", str(small)], check=True)
    try:
        opt = option(request)
        res = subprocess.run(
            [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
             f"--arch={opt('--arch')}", "--out", str(small), "--exec", "true"],
            capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("kharness: error:")]
    assert res.returncode == 3, res.stderr[-2000:]
    assert len(errors) == 1 and "No space left on device" in errors[0], res.stderr[-2000:]
    assert str(small) in errors[0] and "Traceback" not in res.stderr


EXPLAINED = """\
def test_hangs(guest):
    guest.run("echo hang > /sys/kernel/debug/kh_splat/trigger", timeout=2)


def test_bad_page(guest):
    guest.run("echo badpage > /sys/kernel/debug/kh_splat/trigger", check=True)
"""


def test_failures_explain_themselves(request, tmp_path, kh_pool):
    """A test that hangs in the kernel (kh_splat sleeps 6 s uninterruptibly;
    the test waits 2): its failure names where, from the stacks read live
    before the guest was stopped. A page freed with a bogus mapping (Bad page
    state): its failure decodes the page from the guest's memory."""
    memory.dwarf(kh_pool.prepared().kernel, fetch=True)     # stacks need the kernel's DWARF
    (tmp_path / "test_explained.py").write_text(EXPLAINED)
    junit = tmp_path / "junit.xml"
    inner_pytest(request, tmp_path / "test_explained.py", tmp_path / "out",
                 f"--junitxml={junit}")
    cases = ET.parse(junit).getroot().iter("testcase")
    failures = {c.get("name"): c.find("failure") for c in cases}
    hang = failures["test_hangs"]
    assert hang is not None and "waits in kh_splat_hang" in (hang.get("message") or "")
    assert "state D" in (hang.text or "")
    (folder,) = (tmp_path / "out").glob("*/tests/*test_hangs")
    assert "kh_splat_hang" in (folder / "hang.txt").read_text()
    if kh_pool.prepared().kernel.version < (6, 12):
        return      # 6.1 checks a freed page when its per-cpu list drains: later, elsewhere
    bad = failures["test_bad_page"]
    assert bad is not None and bad.get("message", "").startswith(
        "kernel report in this test's window: BUG: Bad page state")
    line = (bad.text or "").splitlines()[1]
    assert re.fullmatch(r"pfn 0x[0-9a-f]+: flags [^,]+, _refcount 0, _mapcount -1, "
                        r"folio 0x[0-9a-f]+, mapping 0x[0-9a-f]+ <kh_splat_bogus_mapping>",
                        line), line
    (folder,) = (tmp_path / "out").glob("*/tests/*test_bad_page")
    assert "no VMA of the test's processes maps it" in (folder / "pages.txt").read_text()
    # The same, later, from the failure's vmcore.
    res = subprocess.run([sys.executable, "-m", "harness.cli", "debug", str(folder), "--summary"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "kernel reports: BUG: Bad page state in kh_splat_badpage" in res.stdout
    assert line in res.stdout.splitlines()


def test_boot_exec_past_its_timeout_says_where_it_hangs(request, tmp_path, kh_pool):
    memory.dwarf(kh_pool.prepared().kernel, fetch=True)
    opt = option(request)
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--boot={opt('--boot')}", f"--out={tmp_path}",
         "--timeout", "2", "--exec", "echo hang > /sys/kernel/debug/kh_splat/trigger"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "waits in kh_splat_hang" in res.stderr, res.stderr[-2000:]
