"""Both boot paths stay real: the session runs on one, this boots the other."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import option

from harness import options, session
from harness.errors import UsageError

# The QEMU path itself (boots, consoles, signals): nothing of it is on an SSH target.
pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("vng_root", ["kh", "host"])
def test_other_boot_path_serves_the_same_guest_api(kh_pool, tmp_path, vng_root):
    """The path the session does not run on boots and answers the same way:
    virtme-ng with our root (every arch) and with the host's (its arch)."""
    prep = kh_pool.prepared()
    if vng_root == "host" and not prep.kernel.arch.native:
        # The host's root cannot run another arch's guest: refused, in one line.
        with pytest.raises(UsageError, match=f"cannot run an {prep.kernel.arch} guest"):
            options.resolve("boot", {"kernel": prep.kernel.spec, "arch": prep.kernel.arch.name,
                                     "boot": "vng", "vng_root": "host", "accel": "auto",
                                     "cpus": "1"})
        return
    other = "vng" if prep.boot == "initramfs" else "initramfs"
    spec = dataclasses.replace(prep.spec, vng_root=vng_root)
    alt = session.Prepared(prep.kernel, prep.modules, prep.helpers, other, tmp_path, spec)
    guest = session.start(alt)
    try:
        assert guest.release == prep.kernel.release
        res = guest.run(["khmap", "read", "/dev/kh_ringbuf_pfnmap", "9"], check=True)
        fields = res.fields()
        assert fields["minflt"] == "0"
        assert "pf" in fields["vmflags"].split(",")
        bad = guest.run("exit 7")
        assert bad.status == 7
        if other == "vng":
            # Only the modules the guest loads are in its tree (udev's coldplug
            # has nothing else to load), and the kernel's own come from it.
            mods = guest.run(f"find /lib/modules/{guest.release}/ -name '*.ko*'",
                             check=True).stdout.split()
            names = {m.rsplit("/", 1)[1].split(".ko")[0] for m in mods}
            assert "9p" in names or not mods, names
            assert len(names) < 40, names
            loaded = guest.run("cat /proc/modules", check=True).stdout
            assert all(line.split()[0].startswith("kh_") or line.split()[0].replace(
                "_", "-") in {n.replace("_", "-") for n in names}
                for line in loaded.splitlines()), loaded
    finally:
        guest.poweroff()
    assert not guest.machine.alive()


def _boot_vng(request, cwd, *extra: str):
    opt = option(request)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", "--boot=vng", f"--out={cwd / 'out'}", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("vng_root", ["auto", "kh"])
def test_vng_boot_runs_commands_in_your_directory(kh_pool, request, tmp_path, vng_root):
    """`kharness boot --boot vng` is why people use vng: the guest sees the
    directory you are in, read-only unless you give --rw; with the host's
    root (auto, on the host arch) and with ours (any arch)."""
    root = ["--vng-root", vng_root]
    (tmp_path / "notes.txt").write_text("from the host\n")
    res = _boot_vng(request, tmp_path, *root, "--exec", "pwd; cat notes.txt; echo x > made.txt")
    assert res.stdout.splitlines()[:2] == [str(tmp_path), "from the host"], res.stderr
    # Refused, or kept in the guest (virtme-ng lays a tmpfs overlay on /tmp):
    # either way the host's directory is left alone.
    assert not (tmp_path / "made.txt").exists()
    res = _boot_vng(request, tmp_path, *root, "--rw", "--exec",
                    "echo from the guest > made.txt")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "made.txt").read_text() == "from the guest\n"
