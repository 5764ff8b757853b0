"""kharness compare over recorded JUnit pairs: regressions, not noise."""

from __future__ import annotations

import json
import subprocess
import sys
from html import escape
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.results import compare

DATA = Path(__file__).parents[1] / "data" / "junit"


def junit(path: Path, cases: dict[str, tuple[str, dict, list[str]]]) -> Path:
    """name -> (outcome, {check: seen}, [report titles])."""
    body = []
    for name, (outcome, checks, titles) in cases.items():
        props = [f'<property name="kh:{w}" value="{escape(json.dumps({"seen": v}))}"/>'
                 for w, v in checks.items()]
        if titles:
            props.append(f'<property name="kh-reports" value="{escape(json.dumps(titles))}"/>')
        inner = f"<properties>{''.join(props)}</properties>"
        if outcome == "failed":
            inner += '<failure message="kernel report in this test\'s window: x"/>'
        elif outcome == "skipped":
            inner += '<skipped message="arch"/>'
        elif outcome == "error":
            inner += '<error message="boom"/>'
        body.append(f'<testcase name="{name}">{inner}</testcase>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<testsuites><testsuite>{''.join(body)}</testsuite></testsuites>")
    return path


@pytest.fixture
def pair(tmp_path):
    a = junit(tmp_path / "a" / "build-aaa-x86_64" / "junit.xml", {
        "test_RB1_x[pfnmap]": ("passed", {"read minflt": 0}, []),
        "test_DX2_y[refcounted]": ("passed", {"mkwrite calls": 1}, []),
        "test_MX1_z": ("failed", {}, ["WARNING in insert_page"]),
        "test_PAT1_w": ("passed", {}, []),
        "test_old": ("passed", {}, []),
        "test_DX3_v": ("failed", {}, []),
    })
    b = junit(tmp_path / "b" / "build-bbb-x86_64" / "junit.xml", {
        "test_RB1_x[pfnmap]": ("passed", {"read minflt": 9}, []),
        "test_DX2_y[refcounted]": ("failed", {"mkwrite calls": 1},
                                   ["BUG: Bad rss-counter state"]),
        "test_MX1_z": ("failed", {}, ["WARNING in insert_page"]),
        "test_PAT1_w": ("skipped", {}, []),
        "test_new": ("passed", {}, []),
        "test_DX3_v": ("passed", {}, []),
    })
    return a, b


def test_diff_sorts_every_kind_of_change(pair):
    a, b = pair
    d = compare.compare(compare.load_junit(a), compare.load_junit(b))
    assert [n for n, _, _ in d.new_failures] == ["test_DX2_y[refcounted]"]
    assert d.regressions == ["test_DX2_y[refcounted]: passed -> failed "
                             "[BUG: Bad rss-counter state]"]
    assert d.new_reports == [("BUG: Bad rss-counter state", "test_DX2_y[refcounted]")]
    assert d.fail_on_both == ["test_MX1_z"]              # not the patch's doing
    assert [n for n, _, _ in d.fixed] == ["test_DX3_v"]
    assert [n for n, _, _ in d.newly_skipped] == ["test_PAT1_w"]
    assert d.added == ["test_new"] and d.removed == ["test_old"]
    assert d.changed_checks == [("test_RB1_x[pfnmap]", "read minflt", 0, 9)]
    text = d.text()
    assert text.splitlines()[-1] == "verdict: 1 regression"
    assert all(len(ln) <= 78 or " " not in ln.strip() for ln in text.splitlines()), text
    assert "regression" in d.html()


def test_same_run_twice_is_no_news(pair):
    a, _ = pair
    d = compare.compare(compare.load_junit(a), compare.load_junit(a))
    assert not d.regressions and not d.changed_checks and d.fail_on_both == ["test_DX3_v",
                                                                            "test_MX1_z"]
    assert d.text().endswith("verdict: no regressions")


def test_recorded_kernels_show_rb7s_change():
    d = compare.compare(compare.load_junit(DATA / "rb7-debian-6.12-x86_64.xml"),
                        compare.load_junit(DATA / "rb7-debian-7.2-x86_64.xml"))
    changed = {(n, w): (x, y) for n, w, x, y in d.changed_checks}
    assert changed[("test_RB7_perf_read_every_page", "VM_PFNMAP")] == (False, True)


def test_runs_pair_by_arch_when_kernels_differ(pair, tmp_path):
    a, b = pair
    pairs = compare.pair(compare.load(a.parent.parent), compare.load(b.parent.parent))
    assert len(pairs) == 1
    with pytest.raises(UsageError, match="no junit.xml"):
        compare.load(tmp_path)


def test_compare_command_exit_status(pair):
    a, b = pair
    res = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(a.parent.parent),
                          str(b.parent.parent)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "verdict: 1 regression" in res.stdout
    same = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(a), str(a)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "no regressions" in same.stdout


@pytest.mark.parametrize("line", [
    "  REGRESSION x86_64: test_DX2[refcounted]: passed -> failed (logs: "
    "/tmp/pytest-of-root/pytest-32/test_validate_names_the_regres0/patched-x86_64)",
    "x" * 200, "  a " + "y" * 100 + " b", "short"])
def test_wrap_ends_and_keeps_every_word(line):
    lines = compare.wrap(line, 78)
    assert " ".join(" ".join(lines).split()) == " ".join(line.split())
    assert all(len(ln) <= 78 or " " not in ln.strip() for ln in lines)


def test_a_crash_under_another_title_is_neither_new_nor_gone(tmp_path):
    """Night A saw the GPF through __se_sys_mremap, night B titled it mremap:
    their alternative titles say it is one crash."""
    def night(path: Path, title: str, alts: list[str]) -> Path:
        props = (f'<property name="kh-reports" value="{escape(json.dumps([title]))}"/>'
                 f'<property name="kh-report-alts" value="{escape(json.dumps([alts]))}"/>')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'<testsuites><testsuite><testcase name="test_RB3_m"><properties>'
                        f'{props}</properties><failure message="x"/></testcase></testsuite>'
                        f'</testsuites>')
        return path
    a = night(tmp_path / "a.xml", "general protection fault in __se_sys_mremap",
              ["bad-access in __se_sys_mremap"])
    b = night(tmp_path / "b.xml", "general protection fault in mremap",
              ["bad-access in mremap", "general protection fault in __se_sys_mremap"])
    d = compare.compare(compare.load_junit(a), compare.load_junit(b))
    assert d.new_reports == [] and d.gone_reports == []
    c = night(tmp_path / "c.xml", "general protection fault in mmap", ["bad-access in mmap"])
    d = compare.compare(compare.load_junit(a), compare.load_junit(c))
    assert d.new_reports == [("general protection fault in mmap", "test_RB3_m")]
    assert d.gone_reports == ["general protection fault in __se_sys_mremap"]


def test_a_known_issue_matches_the_failures_whole_text(tmp_path):
    """A selftest's failure message is its subtest's title; what failed is in
    the text below it (the assertion), which an entry's match may name."""
    from harness.results import known
    (tmp_path / "k.toml").write_text(
        '[[issue]]\nid = "no-pmu"\ntitle = "t"\nkind = "environment"\n'
        'tests = ["test_selftest[perf_events:remove_on_exec/*"]\n'
        'match = "Expected self->fd \\\\(-1\\\\) != -1"\n')
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite><properties><property name="kh-kernel" value="6.12.1"/>'
        '<property name="kh-arch" value="x86_64"/><property name="kh-spec" value="debian:6.12"/>'
        '</properties><testcase name="test_selftest[perf_events:remove_on_exec/fork_only]">'
        '<failure message="FAIL  remove_on_exec.fork_only">not ok 1 remove_on_exec.fork_only\n'
        '# remove_on_exec.c:90:fork_only:Expected self->fd (-1) != -1 (-1)</failure>'
        '</testcase></testsuite></testsuites>')
    run = compare.load_junit(junit)
    run.judge_known(known.load([str(tmp_path / "k.toml")]))
    (case,) = run.cases.values()
    assert case.outcome == "known" and case.known == "no-pmu"
