"""The one cache primitive: lock, check, build, publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cache import MARKER, cached, damage
from harness.vm import accel

MAKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.cache import cached
    entry, log, pause = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    def make(d):
        with open(log, "a") as fh:
            fh.write("made\\n")
        (d / "half").write_text("x")
        time.sleep(pause)
        (d / "product").write_text("whole")
        return [d / "product"]
    print(cached(entry, make))
""")


def maker(tmp_path: Path, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", MAKER, str(tmp_path / "entry"),
                             str(tmp_path / "log"), str(pause)], stdout=subprocess.PIPE,
                            text=True)


def test_two_processes_racing_make_it_once(tmp_path):
    a, b = maker(tmp_path, 1.0), maker(tmp_path, 1.0)
    outs = [p.communicate(timeout=60)[0].strip() for p in (a, b)]
    assert a.returncode == b.returncode == 0
    assert outs[0] == outs[1] == str(tmp_path / "entry")
    assert (tmp_path / "log").read_text() == "made\n"
    assert (tmp_path / "entry" / "product").read_text() == "whole"


def test_killed_maker_leaves_nothing_that_looks_complete(tmp_path):
    p = maker(tmp_path, 60)
    deadline = time.monotonic() + 30
    while not (tmp_path / "entry" / "half").exists():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    entry = tmp_path / "entry"
    assert damage(entry) == "unfinished"
    made = []
    cached(entry, lambda d: made.append(sorted(os.listdir(d))) or [])
    assert made == [[]]            # the dead run's half-made files were wiped first
    assert damage(entry) is None


def test_truncated_product_is_made_again(tmp_path, capsys):
    def make(d):
        (d / "helper").write_bytes(b"\x7fELF" + b"\0" * 100)
        return [d / "helper"]
    entry = cached(tmp_path / "e", make)
    (entry / "helper").write_bytes(b"\x7fELF")       # a full disk cut it short
    assert "not its recorded size" in damage(entry)
    cached(entry, make)
    assert (entry / "helper").stat().st_size == 104
    assert "is damaged" in capsys.readouterr().err


def test_garbage_marker_counts_as_absent(tmp_path):
    calls = []
    for garbage in ("", "not json", "[1, 2]", '{"product": "many"}'):
        entry = tmp_path / f"e{len(calls)}"
        entry.mkdir()
        (entry / MARKER).write_text(garbage)
        assert damage(entry) is not None
        cached(entry, lambda d: calls.append(d) or [])
        assert damage(entry) is None
    assert len(calls) == 4


def test_keep_partial_keeps_an_unfinished_entry(tmp_path):
    entry = tmp_path / "build"
    (entry / "obj").mkdir(parents=True)
    (entry / "obj" / "a.o").write_text("object")
    seen = []
    cached(entry, lambda d: seen.append((d / "obj" / "a.o").exists()) or [], keep_partial=True)
    assert seen == [True]


@pytest.mark.parametrize("content", ["", "garbage", "[]", '{"kvm": "yes"}',
                                     '{"kvm": true, "time": "soon"}', None])
def test_unreadable_accel_probe_is_no_verdict(tmp_path, monkeypatch, content):
    monkeypatch.setenv("KHARNESS_CACHE", str(tmp_path))
    probe = tmp_path / "accel-probe.json"
    if content is None:
        probe.mkdir()                    # a directory where the file belongs
    else:
        probe.write_text(content)
    assert accel.kvm_known() is None
    accel.remember_kvm(False, "test")  # and it is replaced, not a traceback
    assert accel.kvm_known() is False
