"""Known issues (harness/results/known.py): the file, what an entry matches
and what it never swallows, and how compare and the matrix show them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.results import compare, known, matrix

REPO = Path(__file__).resolve().parents[2]
W612 = known.Where("6.12.118+deb13-amd64", "debian:6.12", "x86_64", "initramfs")
W72 = known.Where("7.2.13+deb14-amd64", "debian:7.2", "x86_64", "initramfs")
ARM = known.Where("6.12.118+deb13-arm64", "debian:6.12", "arm64", "initramfs")

ENTRY = '''[[issue]]
id = "guard-regions-6.13"
title = "MADV_GUARD_INSTALL is new in 6.13"
kind = "missing-feature"
tests = ["test_upstream_mm[guard-regions*"]
kernels = ["<6.13"]
match = "Invalid argument|EINVAL"
'''


def entries(tmp_path: Path, text: str = ENTRY) -> list[known.Entry]:
    path = tmp_path / "known.toml"
    path.write_text(text)
    return known.load([str(path)])


def test_the_shipped_file_loads_and_is_the_default():
    shipped = known.load(None)
    assert shipped == known.load([str(REPO / "ci" / "known-issues.toml")])
    assert all(e.kind != "kernel-bug" or e.url for e in shipped)
    assert known.load([known.NONE]) == []


def test_a_known_failure_matches_by_name_kernel_and_message(tmp_path):
    es = entries(tmp_path)
    sub = ("test_upstream_mm[guard-regions/guard_regions.anon.lazyfree]",)
    assert known.explain(es, W612, sub, ["madvise: Invalid argument"]).id == "guard-regions-6.13"
    # brackets are the name's own, not a character class
    assert known.explain(es, W612, ("test_upstream_mmg",), ["EINVAL"]) is None


def test_a_different_failure_of_a_known_test_stays_a_failure(tmp_path):
    es = entries(tmp_path)
    name = ("test_upstream_mm[guard-regions/x]",)
    assert known.explain(es, W612, name, ["Segmentation fault", "BUG: Bad page state"]) is None


def test_ranges_arches_and_specs(tmp_path):
    es = entries(tmp_path)
    name = ("test_upstream_mm[guard-regions]",)
    assert known.explain(es, W72, name, ["EINVAL"]) is None          # 7.2 has the feature
    text = ENTRY.replace('kernels = ["<6.13"]', 'kernels = [">=6.1,<6.12.100", "debian:7.*"]'
                         ).replace("match = ", 'arches = ["arm64"]\nmatch = ')
    es = entries(tmp_path, text)
    assert known.explain(es, ARM, name, ["EINVAL"]) is None          # 6.12.118 >= 6.12.100
    assert known.explain(es, W72, name, ["EINVAL"]) is None          # not arm64
    arm72 = known.Where("7.2.13+deb14-arm64", "debian:7.2", "arm64", "vng")
    assert known.explain(es, arm72, name, ["EINVAL"]) is not None    # the spec matches
    old = known.Where("6.12.57-arm64", "debian:6.12", "arm64", "initramfs")
    assert known.explain(es, old, name, ["EINVAL"]) is not None      # below the patch level


def test_selftests_ranges_name_the_tree_not_the_kernel(tmp_path):
    """A test that came with a feature fails on an older kernel only where a
    newer tree's tests run: the kernel's own tree has no such test, and the
    entry is neither not seen nor stale there."""
    es = entries(tmp_path, ENTRY.replace('kernels = ["<6.13"]',
                                         'kernels = ["<6.13"]\nselftests = [">=6.13"]'))
    name = ("test_upstream_mm[guard-regions]",)
    newest = known.Where(W612.release, W612.spec, W612.arch, W612.boot, "7.3.0")
    own = known.Where(W612.release, W612.spec, W612.arch, W612.boot, "6.12.118")
    assert known.explain(es, newest, name, ["EINVAL"]) is not None
    assert known.explain(es, own, name, ["EINVAL"]) is None
    assert known.expecting(es, own, name) is None
    assert known.explain(es, W612, name, ["EINVAL"]) is None     # no selftests ran
    assert not es[0].applies(own) and es[0].applies(newest)


def test_a_junit_tells_which_selftests_ran_from_its_suite_properties(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest"><properties>'
        '<property name="kh-kernel" value="6.12.118+deb13-amd64"/>'
        '<property name="kh-arch" value="x86_64"/>'
        '<property name="kh-selftests-version" value="7.3.0"/></properties>'
        '<testcase name="test_upstream_mm[merge]"><properties>'
        '<property name="kh-selftests-version" value="debian-source:7.3"/>'
        '<property name="kh-kernel" value="other"/></properties></testcase>'
        '</testsuite></testsuites>')
    where = compare.load_junit(junit).where
    assert where is not None and (where.selftests, where.release) == \
        ("7.3.0", "6.12.118+deb13-amd64")


def test_a_flaky_entry_passing_is_not_news(tmp_path):
    es = entries(tmp_path, ENTRY.replace("missing-feature", "flaky"))
    assert known.expecting(es, W612, ("test_upstream_mm[guard-regions]",)) is None
    assert known.explain(es, W612, ("test_upstream_mm[guard-regions]",), ["EINVAL"]) is not None


def test_a_pass_an_entry_expects_to_fail_is_not_seen(tmp_path):
    es = entries(tmp_path)
    assert known.expecting(es, W612, ("test_upstream_mm[guard-regions]",)).id == \
        "guard-regions-6.13"
    assert known.expecting(es, W72, ("test_upstream_mm[guard-regions]",)) is None


@pytest.mark.parametrize("text,says", [
    ("[[issue]\n", "known.toml: "),
    (ENTRY + 'selftests = ["7"]\n', "selftests: '7' is not a version range"),
    (ENTRY + "owner = 'me'\n", ":8: issue guard-regions-6.13: unknown key(s) owner"),
    (ENTRY.replace("missing-feature", "feature"), ":4: issue guard-regions-6.13: kind "
                                                  "'feature' is unknown"),
    (ENTRY.replace("missing-feature", "kernel-bug"),
     ":4: issue guard-regions-6.13: a kernel-bug needs the url of its fix"),
    (ENTRY.replace('tests = ["test_upstream_mm[guard-regions*"]', 'tests = []'),
     ":5: issue guard-regions-6.13: tests must be a list of test name patterns"),
    (ENTRY.replace("<6.13", "before 6.13"), ":6: issue guard-regions-6.13: kernels: "
                                            "'before 6.13' is neither a version range"),
    (ENTRY.replace('id = "guard-regions-6.13"', 'id = "Guard Regions"'), ":2: an issue needs "
                                                                         "an id"),
    (ENTRY.replace('"Invalid argument|EINVAL"', '"(unclosed"'), ":7: issue guard-regions-6.13: "
                                                                "match is not a regular"),
    (ENTRY + "\n" + ENTRY, ":9: issue id guard-regions-6.13 is already in"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_line(tmp_path, text, says):
    with pytest.raises(UsageError) as e:
        entries(tmp_path, text)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_cli_refuses_a_bad_file_with_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(ENTRY.replace("missing-feature", "kernel-bug"))
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--known-issues",
                          str(bad), "--out", str(tmp_path / "o")], capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"kharness: error: {bad}:4: issue guard-regions-6.13: a kernel-bug needs the url of "
        f"its fix or its report"]
    assert not (tmp_path / "o").exists()


JUNIT = '''<testsuites><testsuite name="pytest"><properties>
<property name="kh-kernel" value="6.12.118+deb13-amd64"/><property name="kh-arch" value="x86_64"/>
<property name="kh-spec" value="debian:6.12"/><property name="kh-boot" value="initramfs"/>
</properties>
{cases}</testsuite></testsuites>'''


def _run(tmp_path: Path, name: str, cases: str) -> Path:
    path = tmp_path / name / "junit.xml"
    path.parent.mkdir()
    path.write_text(JUNIT.format(cases=cases))
    return path


def test_compare_judges_failures_by_the_known_issues(tmp_path):
    a = _run(tmp_path, "a", '<testcase classname="m" name="test_upstream_mm[guard-regions]"/>'
                            '<testcase classname="m" name="test_RB1_x"/>')
    b = _run(tmp_path, "b", '<testcase classname="m" name="test_upstream_mm[guard-regions]">'
                            '<failure message="mmap: Invalid argument"/></testcase>'
                            '<testcase classname="m" name="test_RB1_x">'
                            '<failure message="nr_pages: expected 9"/></testcase>')
    ra, rb = compare.load_junit(a), compare.load_junit(b)
    rb.judge_known(entries(tmp_path))
    d = compare.compare(ra, rb)
    assert d.regressions == ["test_RB1_x: passed -> failed (nr_pages: expected 9)"]
    assert d.known == [("test_upstream_mm[guard-regions]", "guard-regions-6.13")]
    assert "Known issues on B (not news):" in d.text()


def test_a_known_result_reads_as_known_in_compare_and_the_matrix(tmp_path):
    j = _run(tmp_path, "k", '<testcase classname="m" name="test_DM3_x[mprotect]">'
                            '<properties><property name="kh-known" value="pat-leak"/>'
                            '<property name="kh:leak" value=\'{"expected": 0, "seen": 1}\'/>'
                            '</properties><skipped message="known issue pat-leak: ..."/>'
                            '</testcase>')
    case = compare.load_junit(j).cases["test_DM3_x[mprotect]"]
    assert (case.outcome, case.known) == ("known", "pat-leak")
    m = matrix.Matrix()
    m.add_run("6.12", j)
    assert "KNOWN 1 (pat-leak)" in m.text()
    assert 'class="known"' in m.html()



def test_a_known_result_is_judged_again_on_its_whole_failure(tmp_path):
    """JUnit keeps a known result's first line in its skip message; the
    whole failure rides in a property, so that triage and compare judge it
    again with a match that reads past that line, as the run did."""
    whole = "FAIL  guard_regions.anon.fork&#10;# guard_regions.c:9: madvise: Invalid argument"
    multiline = ENTRY.replace('match = "Invalid argument|EINVAL"',
                              'match = "^FAIL  guard_regions\\\\.anon\\\\.fork\\\\n# '
                              '.*: madvise: Invalid argument$"')
    j = _run(tmp_path, "k", '<testcase classname="m" name="test_upstream_mm[guard-regions]">'
                            '<properties><property name="kh-known" value="guard-regions-6.13"/>'
                            f'<property name="{known.KNOWN_TEXT}" value="{whole}"/>'
                            '</properties><skipped message="known issue guard-regions-6.13: '
                            'MADV_GUARD_INSTALL is new in 6.13 (it failed: FAIL  '
                            'guard_regions.anon.fork)"/></testcase>')
    run = compare.load_junit(j)
    run.judge_known(entries(tmp_path, multiline))
    assert run.cases["test_upstream_mm[guard-regions]"].outcome == "known"
    run.judge_known([])
    case = run.cases["test_upstream_mm[guard-regions]"]
    assert (case.outcome, case.message) == ("failed", "FAIL  guard_regions.anon.fork")

def test_triage_groups_unknown_failures_and_writes_entries(tmp_path):
    from harness.results import triage
    cases = ''.join(
        f'<testcase classname="m" name="test_upstream_mm[guard-regions/guard_regions.{t}]">'
        f'<properties><property name="kh-subtest" value="x"/></properties>'
        f'<failure message="madvise at 0x7f00{i}000: errno 22"/></testcase>'
        for i, t in enumerate(("anon.lazyfree", "anon.fork", "shmem.split")))
    cases += ('<testcase classname="s" name="test_RB1_x[pfnmap]"><properties>'
              '<property name="kh-reports" value=\'["WARNING in insert_pfn"]\'/></properties>'
              '<failure message="kernel report"/></testcase>')
    run = compare.load_junit(_run(tmp_path, "debian-6.12-x86_64", cases))
    run.judge_known([])
    report, unknown = triage.text([run])
    assert unknown == 4
    lines = report.splitlines()
    assert lines[0] == "1 run(s): 4 failure(s) no known issue explains, in 2 group(s); 0 known"
    assert lines[2] == "1. guard-regions: madvise at ADDR: errno N"
    assert 'tests = ["test_upstream_mm[guard-regions*"]' in lines
    assert 'kernels = ["debian:6.12"]' in lines and 'arches = ["x86_64"]' in lines
    assert "2. WARNING in insert_pfn" in lines
    # the entry, finished with a kind, explains the failures it was made from
    entry = report.split("\n\n")[2].replace('kind = "kernel-bug"', 'kind = "missing-feature"')
    path = tmp_path / "triaged.toml"
    path.write_text(entry)
    run.judge_known(known.load([str(path)]))
    assert triage.text([run])[1] == 1


def test_an_entry_concerns_a_session_only_with_its_tests_in_it(tmp_path):
    (e,) = entries(tmp_path)
    assert e.concerns(["test_upstream_mm[guard-regions]", "test_upstream_mm[merge]"])
    assert not e.concerns(["test_DM3_cut[mprotect]", "test_upstream_mm[merge]"])
    pat = next(x for x in known.load(None) if x.id == "pat-split-pfnmap-leaks-memtype")
    assert pat.concerns(["test_upstream_mm[pfnmap]"])       # its subtests show at run time
    assert pat.concerns(["test_DM3_cut_grow_move_split_a_tracked_pfnmap[mprotect]"])
    assert not pat.concerns(["test_RB1_read_every_page[fault]"])


def test_none_with_a_file_is_refused_before_anything_starts(tmp_path):
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--known-issues", "none",
                          "--known-issues", str(REPO / "ci" / "known-issues.toml"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and not (tmp_path / "o").exists()
    assert res.stderr.strip().splitlines() == [
        "kharness: error: --known-issues none means no file: give it alone"]
