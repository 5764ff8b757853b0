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

from harness import upstream
from harness.errors import KhError, UsageError
from harness.guest import Guest
from harness.observe import ktap
from harness.pytest_plugin import SETTINGS, report_subtest, selftests_ran


def _param(t: upstream.Selftest):
    return pytest.param(t, id=t.id, marks=[pytest.mark.guest(**t.guest)] if t.guest else [])


@pytest.fixture(scope="session")
def mm_selftests(kh_pool, request):
    """The selftests of the kernel's source, built once a session."""
    prep = kh_pool.prepared()
    try:
        with kh_pool.uncaptured():
            s = request.config.stash[SETTINGS]
            built = upstream.selftests_for(prep.kernel, s.selftests_source, offline=s.guest.offline)
            selftests_ran(request.config, built.version)
            return built
    except UsageError as e:     # a source that is not one: bad input, exit 2
        pytest.exit(f"kharness: error: {e}", returncode=e.exit_code)
    except KhError as e:
        # Each test fails saying so; the rest of a suite run goes on.
        return e


SUBTEST_OUTCOME = {ktap.PASS: "passed", ktap.XPASS: "passed", ktap.SKIP: "skipped",
                   ktap.XFAIL: "skipped", ktap.FAIL: "failed", ktap.ERROR: "failed"}


@pytest.mark.parametrize("test", [_param(t) for t in upstream.CATALOGUE])
def test_upstream_mm(test, kernel, mm_selftests, behaviour, kh_pool, request):
    if isinstance(mm_selftests, KhError):
        pytest.fail(f"the mm selftests of {kernel.spec} could not be built: {mm_selftests}",
                    pytrace=False)
    if test.binary not in mm_selftests.built:
        why = mm_selftests.missing.get(test.binary, "not built")
        if why.startswith("does not build"):    # the tree has it: a failure, not a skip
            pytest.fail(f"{test.binary} {why}", pytrace=False)
        pytest.skip(f"{test.binary}: {why}")
    for option in test.config:
        if kernel.config_value(option) not in ("y", "m"):
            pytest.skip(f"needs {option}, which {kernel.spec} ({kernel.release}) lacks: use a "
                        f"build: kernel with the gup-test fragment")
    guest = request.getfixturevalue("guest")
    if test.device and guest.run(["test", "-c", test.device]).status != 0:
        if isinstance(guest, Guest):    # our modules make it in every QEMU guest
            pytest.fail(f"{test.device} is absent from this guest", pytrace=False)
        pytest.skip(f"{test.device} is absent (no ivshmem BAR on this machine)")
    outcome = upstream.run(guest, mm_selftests, test)
    logs = kh_pool.prepared().outdir / "upstream-mm"
    logs.mkdir(exist_ok=True)
    (logs / f"{test.id}.log").write_text(outcome.output)   # what it printed, all runs
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcome.counts().items()))
    behaviour.note("upstream", f"{outcome.verdict} ({counts}) {outcome.seconds:.0f}s, tests "
                               f"from {mm_selftests.source}")
    for sub in outcome.subtests:
        text = sub.output + "".join(f"\n{r.title}\n" + "\n".join(r.lines[:40])
                                    for r in sub.reports)
        report_subtest(request.node, upstream.subtest_name(sub),
                       SUBTEST_OUTCOME[sub.status], reason=sub.reason, text=text,
                       seconds=sub.seconds, xfail=sub.status == ktap.XFAIL,
                       properties=[("kh-selftests", mm_selftests.source)])
    line = upstream.summary(outcome)
    with open(logs / "summary.txt", "a") as fh:     # one line a binary, for people
        fh.write(f"{line} [selftests from {mm_selftests.source}]\n")
    print(line, f"(output: {logs / (test.id + '.log')})")
    if outcome.verdict == ktap.SKIP:
        pytest.skip(f"{test.id}: {outcome.why}")
    if outcome.verdict == ktap.FAIL:
        pytest.fail(f"{upstream.summary(outcome)}\n--- output (last 60 lines) ---\n"
                    + "\n".join(outcome.output.splitlines()[-60:])
                    + "".join(f"\n--- {r.title} ---\n" + "\n".join(r.lines[:60])
                              for r in outcome.reports), pytrace=False)


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
