"""Run a launcher so that its whole process group dies with the harness.

PR_SET_PDEATHSIG reaches only the direct child. virtme-ng starts QEMU as a
grandchild, so a SIGKILLed harness would leave QEMU running; this small
process sits between: it dies-with-parent as a SIGTERM and answers by
killing its process group, QEMU included.

usage: python -m harness.vm.reaper PARENT_PID -- ARGV...
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys


def _kill_group(signum, frame):
    os.killpg(0, signal.SIGKILL)


def main() -> int:
    parent = int(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _kill_group)
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the harness died before prctl took hold
        return 1
    return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main())
