"""The command line as a user meets it: one-line errors, the interactive shell."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import option

from harness import cache

# The QEMU path itself (boots, consoles, signals): nothing of it is on an SSH target.
pytestmark = pytest.mark.qemu

KH = [sys.executable, "-m", "harness.cli"]


def kh(*args, env=None, timeout=600):
    return subprocess.run([*KH, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.parametrize("args,words", [
    (["run", "--kernel", "debian:5.10"], "unknown Debian kernel series '5.10'"),
    (["run", "--kernel", "fedora:40"], "unknown kernel spec 'fedora:40'"),
    (["boot", "--boot", "vng", "--vng-root", "host", "--arch", "arm64"],
     "cannot run an arm64 guest"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    res = kh(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("kharness: error:")


def test_missing_qemu_is_named(kernel, request, tmp_path):
    # Everything on PATH but QEMU.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(":"):
        if os.path.isdir(d):
            for name in os.listdir(d):
                if not name.startswith("qemu-system") and not (bin_dir / name).exists():
                    (bin_dir / name).symlink_to(os.path.join(d, name))
    env = {**os.environ, "PATH": str(bin_dir)}
    res = kh("boot", f"--kernel={option(request)('--kernel')}",
             f"--arch={kernel.arch}", f"--out={tmp_path}", "--exec", "true", env=env)
    assert res.returncode == 3
    assert "qemu-system-" in res.stderr and "not found: run ci/setup.sh" in res.stderr


def test_interactive_boot_shell(kernel, request, tmp_path):
    kernel_opt = f"--kernel={option(request)('--kernel')}"
    child = pexpect.spawn(KH[0], [*KH[1:], "boot", kernel_opt,
                                  f"--arch={kernel.arch}", f"--out={tmp_path}"],
                          encoding="utf-8", timeout=180)
    try:
        prompt = f"kh:{kernel.release}# "
        child.expect_exact(prompt)
        child.sendline("cat /sys/kernel/debug/kh_ringbuf/pfnmap/stats | grep nr_pages")
        child.expect(r"nr_pages (\d+)")
        assert int(child.match.group(1)) == 9
        child.expect_exact(prompt)
        child.sendline("exit 3")
        child.expect_exact("[exit 3]")
        child.expect_exact(prompt)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


@pytest.mark.host_arch
def test_run_two_jobs_side_by_side(request, tmp_path):
    """`run -j 2` over both arches: each job's pytest writes its own log and
    JUnit under the run's --out (a claim of the run's folder once left the
    jobs' folders unmade, and every -j run stopped at its first line)."""
    opt = option(request)
    res = kh("run", f"--kernel={opt('--kernel')}", "--arch=x86_64,arm64", "-j", "2",
             "-k", "RB1", f"--boot={opt('--boot')}", f"--out={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    for arch in ("x86_64", "arm64"):
        job = next(tmp_path.glob(f"*-{arch}"))
        assert "passed" in (job / "pytest.log").read_text()
        assert (job / "junit.xml").read_text().count("<testcase") >= 3


@pytest.mark.host_arch
def test_a_hostile_out_path_keeps_results_inside_it(request, tmp_path):
    """A comma (QEMU's separator), '$' (pytest expands it in --junitxml) and
    ';' in --out: the run passes, restores its guests from the shared
    snapshot, and every file it writes is under --out."""
    opt = option(request)
    out = tmp_path / "o,comma $HOME;x"
    res = kh("run", f"--kernel={opt('--kernel')}", f"--arch={opt('--arch')}",
             "-k", "RB1", f"--out={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    job = next(p for p in out.iterdir() if p.is_dir())
    assert "<testcase" in (job / "junit.xml").read_text()
    assert f"JUnit: {job / 'junit.xml'}" in res.stderr
    cmdlines = [p.read_text() for p in job.glob("*/boot-*/cmdline")]
    restored = [c for c in cmdlines if "-incoming" in c]
    assert restored, "no guest was restored"
    # the shared snapshot it restored from is whole, for every other run
    state = Path(shlex.split(restored[0].split("-incoming exec:cat ")[1])[0])
    assert cache.damage(state.parent) is None
    assert not list(tmp_path.glob("o,comma /*")), "results outside --out"


@pytest.mark.host_arch
def test_the_scenario_suite_holds_in_one_guest(request, tmp_path):
    """Every scenario measures against its own baseline or asks for a guest
    of its own: the suite passes with --fresh session too (DM3 once counted
    a PAT reservation an earlier test had leaked)."""
    opt = option(request)
    res = kh("run", f"--kernel={opt('--kernel')}", f"--arch={opt('--arch')}",
             f"--boot={opt('--boot')}", "--fresh", "session", f"--out={tmp_path}", timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(tmp_path.glob("*/*/boot-*"))) <= 8    # a guest a setting, not a test
