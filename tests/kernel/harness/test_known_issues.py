"""Known issues on a real kernel (docs/known-issues.md): a deliberate kernel
report that an entry explains is known (skipped in JUnit with the entry's
id), the same test failing otherwise is still a failure, a test the entry
expects to fail that passes is 'not seen', and only what is new is red."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import inner_pytest, option

pytestmark = pytest.mark.qemu      # kh_splat's report on the console

TRIGGER = "/sys/kernel/debug/kh_splat/trigger"
INNER = f'''
import os


def test_known_warns(guest):
    guest.run("echo warn > {TRIGGER}", check=True)


def test_known_but_failing_otherwise(guest):
    assert guest.read("/proc/sys/kernel/ostype").strip() == "not Linux"


def test_new_failure(guest):
    assert guest.read("/proc/sys/kernel/ostype").strip() == "Plan 9"


def test_known_yet_passes(guest):
    assert guest.read("/proc/sys/kernel/ostype").strip() == "Linux"
'''
ISSUES = '''
[[issue]]
id = "splat-warns"
title = "kh_splat WARNs when asked to"
kind = "kernel-bug"
url = "https://example.org/kh_splat-fix"
tests = ["test_known_*"]
kernels = [">=5.0"]
match = "WARNING in kh_splat"
'''


def _inner(request, tmp_path: Path, *extra: str, tests: str = INNER):
    (tmp_path / "test_inner.py").write_text(tests)
    (tmp_path / "known.toml").write_text(ISSUES)
    junit = tmp_path / "junit.xml"
    res = inner_pytest(request, tmp_path / "test_inner.py", tmp_path / "out",
                       f"--junitxml={junit}", *extra, boot=False)
    cases = {c.get("name", ""): c for c in ET.parse(junit).getroot().iter("testcase")}
    return res, cases


def _props(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


@pytest.mark.host_arch
def test_only_what_no_entry_explains_is_red(request, tmp_path):
    res, cases = _inner(request, tmp_path, f"--known-issues={tmp_path / 'known.toml'}")
    assert res.returncode == 1, res.stdout[-3000:]
    warned = cases["test_known_warns"]
    skipped = warned.find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith(
        "known issue splat-warns: kh_splat WARNs when asked to (it failed: kernel report")
    assert _props(warned)["kh-known"] == "splat-warns"
    # covered by the pattern, but not the failure the entry describes
    assert cases["test_known_but_failing_otherwise"].find("failure") is not None
    assert cases["test_new_failure"].find("failure") is not None
    assert _props(cases["test_known_yet_passes"])["kh-known-not-seen"] == "splat-warns"
    assert "KNOWN splat-warns: kh_splat WARNs when asked to [kernel-bug]: 1" in res.stdout
    assert "NOT SEEN splat-warns" in res.stdout


@pytest.mark.host_arch
def test_a_run_whose_failures_are_all_known_passes(request, tmp_path):
    warns = INNER.split("def test_known_but_failing_otherwise")[0]
    known = f"--known-issues={tmp_path / 'known.toml'}"
    res, cases = _inner(request, tmp_path, known, tests=warns)
    assert res.returncode == 0, res.stdout[-3000:]
    res, _ = _inner(request, tmp_path, "--known-issues=none", tests=warns)
    assert res.returncode == 1, "with no known issues the report is a failure"
    passes = "def test_known_yet_passes(guest):\n    pass\n"
    res, _ = _inner(request, tmp_path, known, tests=passes)
    assert res.returncode == 0, res.stdout[-3000:]
    res, _ = _inner(request, tmp_path, known, "--strict-known", tests=passes)
    assert res.returncode == 1 and "fails the run (--strict-known)" in res.stdout


@pytest.mark.host_arch
def test_an_entry_is_stale_only_where_its_test_ran_and_failed_otherwise(request, tmp_path):
    """A test that skipped (a kernel without the driver) could not fail, so
    its entry is not stale there; a test that failed some other way leaves
    the entry unmatched: a warning that its match may be out of date."""
    known = f"--known-issues={tmp_path / 'known.toml'}"
    skips = ("import pytest\n\n\ndef test_known_warns(guest):\n"
             "    pytest.skip('the kernel lacks kh_splat')\n")
    res, cases = _inner(request, tmp_path, known, tests=skips)
    assert res.returncode == 0 and cases["test_known_warns"].find("skipped") is not None
    assert "stale?" not in res.stdout, res.stdout[-2000:]
    fails = INNER.split("def test_new_failure")[0].split("def test_known_warns")[0] + \
        "def test_known_warns(guest):\n    assert guest.read('/proc/sys/kernel/ostype') == ''\n"
    res, _ = _inner(request, tmp_path, known, tests=fails)
    assert res.returncode == 1
    assert "warning: known issue splat-warns" in res.stdout and "stale?" in res.stdout


RERUNS = '''
from pathlib import Path

COUNT = Path(__file__).with_name("count")


def test_flaky(guest):     # fails on its 1st and 3rd runs
    n = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
    COUNT.write_text(str(n))
    assert n % 2 == 0, f"odd run {n}"


def test_deterministic(guest):
    assert guest.read("/proc/sys/kernel/ostype").strip() == "Plan 9"


def test_passes(guest):
    pass
'''


@pytest.mark.host_arch
def test_reruns_give_each_failure_a_verdict(request, tmp_path):
    res, cases = _inner(request, tmp_path, "--rerun-failures=3", "--known-issues=none",
                        tests=RERUNS)
    assert res.returncode == 1, res.stdout[-3000:]
    flaky = json.loads(_props(cases["test_flaky"])["kh-rerun"])
    assert flaky["verdict"] == "flaky" and flaky["failed"] == 1 and flaky["reruns"] == 3
    lo, hi = flaky["fail_rate_95"]
    assert 0 < lo < 0.5 < hi < 1
    det = json.loads(_props(cases["test_deterministic"])["kh-rerun"])
    assert (det["verdict"], det["failed"]) == ("deterministic", 3)
    assert "kh-rerun" not in _props(cases["test_passes"])
    assert cases["test_flaky"].find("failure") is not None     # still a failure
    assert "reruns of 2 failed test(s)" in res.stdout
    assert (tmp_path / "count").read_text() == "4"
    # a guest a run: 3 tests and 6 reruns (the spare restored ahead may add one)
    assert len(list((tmp_path / "out").glob("*/boot-*"))) >= 9


@pytest.mark.host_arch
def test_the_newest_selftests_job_is_green_but_for_what_is_new(request, tmp_path):
    """The nightly's newest-selftests job on the suite's kernel (a Debian
    one) and arch: the 7.3 tree's mm, perf_events, drivers/dma-buf and vfio
    selftests. On debian:6.12 over 90 results fail, every one explained by
    the shipped known issues (features 6.12 lacks, its bugs with their
    fixes), so the job passes; without them it is red, and triage groups
    what it would have to say."""
    opt = option(request)
    # The job runs Debian's kernels: under a build: suite, the default one.
    kernel = opt("--kernel") if opt("--kernel").startswith("debian:") else "debian:6.12"
    job = f"newest-selftests-{kernel.replace(':', '-')}-{opt('--arch')}"
    kh = [sys.executable, "-m", "harness.cli"]
    res = subprocess.run([*kh, "nightly", "ci/nightly.toml", "--job", job,
                          f"--out={tmp_path}"], capture_output=True, text=True, timeout=1800,
                         cwd=Path(__file__).resolve().parents[3])
    assert res.returncode == 0, res.stderr[-3000:]
    junit = next(tmp_path.glob("*/junit.xml"))
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    known = [c for c in cases if "kh-known" in _props(c)]
    assert not [c for c in cases if c.find("failure") is not None]
    # 6.12 lacks what the 7.3 tests try (guard regions, VMA merges, mremap of
    # several VMAs): 90 and more known on either arch
    assert len(known) >= 90 or kernel != "debian:6.12", len(known)
    # The drivers' collections ran, not only skipped: on the default kernel
    # (6.12, whose own tree has no vfio) this is where vfio's selftests run.
    for collection in ("perf_events", "drivers/dma-buf", "vfio"):
        ran = [c for c in cases if c.get("name", "").startswith(f"test_selftest[{collection}:")
               and c.find("skipped") is None]
        assert ran, f"no {collection} selftest ran"
    triage = subprocess.run([*kh, "triage", str(tmp_path), "--known-issues=none"],
                            capture_output=True, text=True, timeout=120)
    assert triage.returncode == (1 if known else 0)
    assert f"{len(known)} failure(s) no known issue explains" in triage.stdout
    assert subprocess.run([*kh, "triage", str(tmp_path)], capture_output=True,
                          timeout=120).returncode == 0
