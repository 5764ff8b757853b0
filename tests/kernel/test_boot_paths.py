"""Both boot paths stay real: the session runs on one, this boots the other."""

from __future__ import annotations

import pytest

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
