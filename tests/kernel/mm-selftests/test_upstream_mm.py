"""The kernel's own mm selftests (tools/testing/selftests/mm), built from the
source of the kernel under test and run in guests set up the way each needs
(harness/upstream.py has the catalogue). One pytest result a binary, which
is kselftest's runner.sh verdict plus any kernel report in its log windows,
and one a subtest, named test_upstream_mm[<binary>/<subtest>].

    pytest tests/kernel/mm-selftests/test_upstream_mm.py --kernel debian:7.2 --arch arm64
    kharness run --suite mm-selftests --kernel debian:7.2
"""

from __future__ import annotations

import pytest
from conftest import run_selftest
from conftest import selftest_param as _param

from harness import upstream
from harness.observe import ktap


@pytest.mark.parametrize("test", [_param(t) for t in upstream.CATALOGUE if t.collection == "mm"])
def test_upstream_mm(test, request):
    run_selftest(request, test)


@pytest.mark.qemu     # kh_mixedmap's BAR
def test_upstream_runner_fails_a_selftest_that_dies(kernel, guest, tmp_path):
    """The runner can say no, on every kernel: a selftest-like program that
    prints one result, then reads the unmapped half of kh_mixedmap_pfnmap_half
    and dies of SIGBUS (as upstream pfnmap does on that device)."""
    from pathlib import Path

    from harness.kbuild.helpers import compile_reproducer
    from harness.kbuild.selftests import Selftests
    src = Path(__file__).resolve().parents[2] / "data" / "ktap-dies.c"
    compile_reproducer(src, kernel.arch, tmp_path / "ktap-dies")
    tests = Selftests(tmp_path, "tests/data", "", "", kernel.arch.name, 60,
                      built={"ktap-dies": "ktap-dies"})
    dies = upstream.Selftest("ktap-dies", device="/dev/kh_mixedmap_pfnmap_half")
    outcome = upstream.run(guest, tests, dies)
    assert outcome.verdict == ktap.FAIL, upstream.summary(outcome)
    assert outcome.why.startswith("killed by SIGBUS after 1 results (last: first half "
                                  "readable"), upstream.summary(outcome)
