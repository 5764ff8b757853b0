"""Two first runs on a new machine at once: an empty cache shared by both.

Everything is fetched and made while the other run wants the same: the apt
lists, the kernel, the toolchain root, the modules, the helpers. Where
/dev/kvm opens but cannot run a guest (these machines), it is also the
first boot's KVM probe and its fall back to TCG.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from harness.pytest_plugin import resolved


def test_two_cold_runs_sharing_one_cache_both_succeed(tmp_path, request):
    opt = resolved(request.config)
    env = {**os.environ, "KHARNESS_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--out={tmp_path / f'out{n}'}", "--exec", "uname -r"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for n in (1, 2)]
    done = [r.communicate(timeout=1500) for r in runs]
    for r, (_out, err) in zip(runs, done, strict=True):
        assert r.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    assert done[0][0] == done[1][0] and done[0][0].strip()
    # One of them made each entry; the other found it made.
    made = [len(re.findall(r"extracting \d+ packages: done", err)) for _, err in done]
    assert sorted(made) == [0, 1], made
