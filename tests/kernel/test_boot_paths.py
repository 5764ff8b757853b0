"""Both boot paths stay real: the session runs on one, this boots the other."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import option

from harness import options, session
from harness.errors import UsageError

# The QEMU path itself (boots, consoles, signals): nothing of it is on an SSH target.
pytestmark = pytest.mark.qemu


def test_other_boot_path_serves_the_same_guest_api(kh_pool, tmp_path):
    prep = kh_pool.prepared()
    if not prep.kernel.arch.native:
        # virtme-ng serves the host root, which cannot run a foreign-arch guest.
        with pytest.raises(UsageError, match=f"cannot run an {prep.kernel.arch} guest"):
            options.resolve("boot", {"kernel": prep.kernel.spec, "arch": prep.kernel.arch.name,
                                     "boot": "vng", "accel": "auto", "cpus": "1"})
        return
    other = "vng" if prep.boot == "initramfs" else "initramfs"
    alt = session.Prepared(prep.kernel, prep.modules, prep.helpers, other, tmp_path,
                           prep.spec)
    guest = session.start(alt)
    try:
        assert guest.release == prep.kernel.release
        res = guest.run(["khmap", "read", "/dev/kh_ringbuf_pfnmap", "9"], check=True)
        fields = res.fields()
        assert fields["minflt"] == "0"
        assert "pf" in fields["vmflags"].split(",")
        bad = guest.run("exit 7")
        assert bad.status == 7
    finally:
        guest.poweroff()
    assert not guest.machine.alive()


def _boot_vng(request, cwd, *extra: str):
    opt = option(request)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", "--boot=vng", f"--out={cwd / 'out'}", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=600)


def test_vng_boot_runs_commands_in_your_directory(kh_pool, request, tmp_path):
    """`kharness boot --boot vng` is why people use vng: the guest sees the
    directory you are in, read-only unless you give --rw."""
    if not kh_pool.prepared().kernel.arch.native:
        # virtme-ng serves the host root: another arch's guest is refused, in one line
        res = _boot_vng(request, tmp_path, "--exec", "pwd")
        assert res.returncode == 2 and "cannot run an" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        return
    (tmp_path / "notes.txt").write_text("from the host\n")
    res = _boot_vng(request, tmp_path, "--exec", "pwd; cat notes.txt; echo x > made.txt")
    assert res.stdout.splitlines()[:2] == [str(tmp_path), "from the host"], res.stderr
    # Refused, or kept in the guest (virtme-ng lays a tmpfs overlay on /tmp):
    # either way the host's directory is left alone.
    assert not (tmp_path / "made.txt").exists()
    res = _boot_vng(request, tmp_path, "--rw", "--exec", "echo from the guest > made.txt")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "made.txt").read_text() == "from the guest\n"
