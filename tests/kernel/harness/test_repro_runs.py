"""kharness repro end to end: C reproducers, out-of-tree modules, parallel
guests, time budgets, stress, and the statistics it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import option, qemus_of

DATA = Path(__file__).resolve().parents[2] / "data"
KH = [sys.executable, "-m", "harness.cli"]
pytestmark = pytest.mark.qemu   # guests of its own, several at once


def repro(request, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    opt = option(request)
    proc = subprocess.run([*KH, "repro", f"--kernel={opt('--kernel')}",
                           f"--arch={opt('--arch')}", f"--out={tmp_path}", *args],
                          capture_output=True, text=True, timeout=900)
    out = tmp_path / "repro" / "repro.json"
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_c_reproducer_on_two_guests(request, tmp_path):
    proc, rep = repro(request, tmp_path, "--c", str(DATA / "repro-splat.c"), "-j", "2",
                      "--rounds", "6", "--signature", "WARNING in kh_splat_warn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = rep["runs"]
    assert (run["rounds"], run["hits"], run["guests"]) == (6, 6, 2)
    assert run["interval95"][0] > 0.5 and run["interval95"][1] == 1.0
    assert run["rounds_per_hit"] == 1.0 and run["guest_seconds_per_hit"] > 0
    assert "6/6 rounds (100%, 95% interval 61%-100%)" in proc.stdout
    assert f"--c={DATA / 'repro-splat.c'}" in rep["rerun"] and "--parallel=2" in rep["rerun"]
    assert "--rounds=6" in rep["rerun"] and "'--signature=WARNING in kh_splat_warn'" in \
        rep["rerun"]
    assert qemus_of(tmp_path) == []


def test_c_reproducer_that_does_not_compile_is_bad_input(request, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared_thing; }\n")
    proc, _ = repro(request, tmp_path, "--c", str(bad), "--signature", "x")
    assert proc.returncode == 2
    assert "bad.c does not compile for" in proc.stderr
    assert "undeclared_thing" in proc.stderr and "undeclared" in proc.stderr  # gcc's words


@pytest.mark.host_arch
def test_user_module_budget_and_stress(request, tmp_path):
    """--kmod builds and loads the user's module; --for bounds the rounds by
    time; --stress runs a second set of rounds under load."""
    proc, rep = repro(request, tmp_path, "--kmod", str(DATA / "kmod-poke"), "--for", "8s",
                      "--stress", "cpu,memory", "--signature", "WARNING in kh_poke_write",
                      "--", "sh", "-c", "echo 1 > /sys/kernel/debug/kh_poke")
    assert proc.returncode == 0, proc.stderr[-3000:]
    calm, loaded = rep["runs"]
    assert (calm["label"], loaded["label"]) == ("no stress", "stress cpu,memory")
    for run in (calm, loaded):
        assert run["rounds"] > 0 and run["hits"] == run["rounds"]
        assert run["seconds"] < 8 + 120    # the budget, plus a boot and one round
    assert "[stress cpu,memory]" in proc.stdout


def test_no_hit_states_the_bound(request, tmp_path):
    proc, rep = repro(request, tmp_path, "--rounds", "20", "--signature", "WARNING in nothing",
                      "--", "true")
    assert proc.returncode == 1
    assert "0/20: hit rate below 14% at 95%" in proc.stdout
    assert rep["runs"][0]["upper_bound95"] == pytest.approx(0.139, abs=1e-3)


@pytest.mark.host_arch
def test_fresh_rounds_never_see_an_earlier_rounds_state(request, tmp_path):
    """A round that warns only where an earlier round left its mark: with
    the rounds sharing a guest (two of them, -j 2) every round after each
    guest's first hits; restored from the snapshot for each round, none."""
    mark = ("if [ -e /tmp/kh-mark ]; then echo warn > /sys/kernel/debug/kh_splat/trigger; "
            "fi; touch /tmp/kh-mark")
    proc, rep = repro(request, tmp_path, "--fresh", "-j", "2", "--rounds", "6",
                      "--signature", "WARNING in kh_splat_warn", "--", "sh", "-c", mark)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared, fresh = rep["runs"]
    assert (shared["label"], fresh["label"]) == ("rounds share a guest",
                                                 "fresh guest each round")
    # each guest's first round has no mark: 4 hits, or 5 if one guest ran all
    assert shared["rounds"] == 6 and shared["hits"] in (4, 5)
    assert (fresh["rounds"], fresh["hits"]) == (6, 0)
    assert "[fresh guest each round]" in proc.stdout and "--fresh" in rep["rerun"]
    restored = [c for c in (tmp_path / "repro").glob("boot-*/cmdline")
                if "-incoming" in c.read_text()]
    assert len(restored) >= 6
    assert qemus_of(tmp_path) == []
