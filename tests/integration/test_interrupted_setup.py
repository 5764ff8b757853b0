"""Ctrl-C while a first run makes its toolchain root leaves no mount behind.

mmdebstrap mounts /proc, /sys, /dev/pts and a bind of the host's /dev/shm
inside the root it makes; a first run given up during it (35-46 s on a new
machine) once left them in the cache, every later run failed, and the
clean-up's delete walked into them. Here the default kernel's first run is
interrupted as a terminal does (SIGINT to its process group) at several
moments of the root's making, and killed once (SIGKILL, which it cannot
catch); each time nothing is mounted under the cache and nothing of ours
runs on (mmdebstrap, apt, dpkg), and then a run succeeds.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import arches, mounts
from harness.cache import damage, remove
from harness.kbuild import toolchain
from harness.kernels import resolve
from harness.pytest_plugin import resolved

MAKING = "toolchain root with"


def boot(cache: Path, out: Path, opt) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "boot", f"--kernel={opt('--kernel')}",
         f"--arch={opt('--arch')}", f"--out={out}", "--exec", "uname -r"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KHARNESS_CACHE": str(cache)}, start_new_session=True,
        # Ctrl-C must reach it even when this pytest came with SIGINT ignored
        # (a script's `pytest &`), which a child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def ours_running(cache: Path) -> list[str]:
    """Processes whose command line names the cache: mmdebstrap, apt, dpkg."""
    return subprocess.run(["pgrep", "-af", "--", str(cache)], capture_output=True,
                          text=True).stdout.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="toolchain roots are made as root")
def test_ctrl_c_while_the_toolchain_root_is_made(tmp_path, request):
    opt = resolved(request.config)
    kernel = resolve(opt("--kernel"), arches.get(opt("--arch")))
    if toolchain.for_kernel(kernel).root is None:
        pytest.skip(f"{kernel.release} builds its modules on the host: no root is made")
    cache = tmp_path / "cache"
    # Ctrl-C (SIGINT to the group, as a terminal sends it) at three moments,
    # and SIGKILL of kharness alone (the OOM killer, a CI engine's timeout).
    # mmdebstrap takes 15-45 s with a mirror nearby, so the moments are early;
    # a root that got made all the same is deleted, so the next run makes it again.
    moments = [(1.0, signal.SIGINT), (5.0, signal.SIGINT), (10.0, signal.SIGINT),
               (7.0, signal.SIGKILL)]
    root = cache / "toolchains" / f"{kernel.suite}-{platform.machine()}-gcc" \
        f"{toolchain.kernel_gcc_major(kernel)}"
    for n, (after, sig) in enumerate(moments):
        run = boot(cache, tmp_path / f"out{n}", opt)
        seen = threading.Event()
        err: list[str] = []

        def read(run: subprocess.Popen = run, seen: threading.Event = seen,
                 err: list[str] = err) -> None:
            assert run.stderr is not None
            for line in run.stderr:
                err.append(line)
                if MAKING in line:
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 900
        while not seen.wait(1):
            assert run.poll() is None and time.monotonic() < deadline, \
                f"the root was never made: {''.join(err)[-2000:]}"
        time.sleep(after)
        if sig == signal.SIGINT:
            os.killpg(run.pid, signal.SIGINT)
            assert run.wait(60) == 130, "".join(err)[-2000:]
        else:
            run.kill()
            assert run.wait(60) == -signal.SIGKILL
        reader.join(10)
        assert "Traceback" not in "".join(err)
        deadline = time.monotonic() + 10
        while (ours_running(cache) or mounts.under(cache)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours_running(cache) == [], f"still running {after}s into mmdebstrap ({sig})"
        assert mounts.under(cache) == [], f"mounted {after}s into mmdebstrap ({sig})"
        if damage(root) is None:
            remove(root)
    run = boot(cache, tmp_path / "out-last", opt)
    out, errs = run.communicate(timeout=1500)
    assert run.returncode == 0, errs[-3000:]
    assert out.strip() == kernel.release
    assert mounts.under(cache) == []
