"""One kharness at a time writes a run folder; what it starts inherits it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import claims
from harness.errors import UsageError

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness import claims
    claims.claim(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(60)
""")


def holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                         text=True, env={k: v for k, v in os.environ.items()
                                         if k != claims.CLAIMED})
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


@pytest.fixture(autouse=True)
def _own_claims(monkeypatch):
    monkeypatch.delenv(claims.CLAIMED, raising=False)


def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    p = holder(tmp_path / "out")
    try:
        with pytest.raises(UsageError) as e:
            claims.claim(tmp_path / "out")
        msg = str(e.value)
        assert f"{tmp_path / 'out'} is being written by kharness pid {p.pid}" in msg
        assert "give this run another --out" in msg and "\n" not in msg
        claims.claim(tmp_path / "other")          # a folder beside it is free
    finally:
        p.kill()
        p.wait()


def test_a_killed_run_holds_nothing(tmp_path):
    p = holder(tmp_path / "out")
    p.send_signal(signal.SIGKILL)
    p.wait()
    claims.claim(tmp_path / "out")


def test_children_inherit_the_claim_of_a_parent_folder(tmp_path):
    claims.claim(tmp_path / "out")
    assert str(tmp_path / "out") in os.environ[claims.CLAIMED]
    child = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from harness import claims; "
         f"claims.claim(Path({str(tmp_path / 'out' / 'job')!r})); print('ok')"],
        capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "ok", child.stderr
    assert not (tmp_path / "out" / "job" / claims.LOCK).exists()   # the parent's covers it
    # and the folder is there to write in (`run -j 2` wrote its pytest.log into none)
    claims.claim(tmp_path / "out" / "job2")
    assert (tmp_path / "out" / "job2").is_dir()


def test_two_runs_with_one_out_the_second_refused_in_one_line(tmp_path):
    """Two commands that write the whole --out: the second stops at once."""
    p = holder(tmp_path / "out")
    t0 = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--out",
                              str(tmp_path / "out"), "--offline"], capture_output=True,
                             text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != claims.CLAIMED})
    finally:
        p.kill()
        p.wait()
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"kharness: error: {tmp_path / 'out'} is being written by kharness pid {p.pid} "
        f"(since {res.stderr.split('(since ')[1].split(')')[0]}): wait for it to end, or give "
        f"this run another --out"]
    assert time.monotonic() - t0 < 30
