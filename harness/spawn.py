"""Children that never outlive kharness, started safely from any thread.

Every long child (QEMU, make, mmdebstrap, dpkg-deb, a suite's pytest) is
started the same way: in a process group of its own, so one signal stops
it and whatever it started, and under `setpriv --pdeathsig KILL`, so a
SIGKILLed kharness takes it along. setpriv sets the parent-death signal in
the child after fork, where subprocess's preexec_fn would run Python code
between fork and exec, which Python documents as unsafe in a process with
threads (`run -j`, `repro -j`).

The parent-death signal follows the thread that forked the child: a child
must be started by a thread that outlives it (the main thread, or a worker
that waits for what it started).

stop() is how a child ends early: SIGTERM (or the signal given) to its
group, a grace period, then SIGKILL, which nothing can ignore. A child
started by a shell script with `&` inherits SIGINT ignored; the grace and
the SIGKILL make sure it stops all the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

GRACE = 5.0     # seconds a child gets to stop on its own
CHILD = "KHARNESS_CHILD"   # set for a kharness we started: SIGINT is our stop


def listen_to_sigint() -> None:
    """In a kharness that we started: take SIGINT even if it came ignored
    (a parent started from a script with `&`), since it is how we ask it to
    stop with its results written."""
    if os.environ.get(CHILD) and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def guarded(argv: Sequence[str]) -> list[str]:
    """argv run so that it dies with us (setpriv is util-linux's)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:         # util-linux is essential on Debian: never, in practice
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def spawn(argv: Sequence[str], **kw) -> subprocess.Popen:
    """A child in a new session (its own process group, away from the
    terminal's Ctrl-C: we stop it ourselves) that dies with us. A program
    that is not there raises FileNotFoundError, as Popen would."""
    env = kw.get("env") or os.environ
    if os.sep not in argv[0] and shutil.which(argv[0], path=env.get("PATH")) is None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    return subprocess.Popen(guarded(argv), start_new_session=True, **kw)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = GRACE) -> int:
    """End proc and its group: sig, up to grace seconds, then SIGKILL.
    Returns its exit status."""
    if proc.poll() is None:
        signal_group(proc, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # What the child started may linger after it: the group goes too.
    signal_group(proc, signal.SIGKILL)
    return proc.wait()


def run(argv: Sequence[str], *, stdin: str | None = None, **kw) -> subprocess.CompletedProcess:
    """subprocess.run for a spawned child: stopped, with its group, if we
    are interrupted while it runs (Ctrl-C, SIGTERM, an exception)."""
    if stdin is not None:
        kw["stdin"] = subprocess.PIPE
    proc = spawn(argv, **kw)
    try:
        out, err = proc.communicate(stdin)
    except BaseException:
        stop(proc)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
