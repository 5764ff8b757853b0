"""The behaviour matrix over JUnit files written by real RB7 runs."""

from pathlib import Path

from harness.results import matrix

DATA = Path(__file__).parents[1] / "data" / "junit"


def runs():
    return [(f"debian:{v} x86_64", DATA / f"rb7-debian-{v}-x86_64.xml")
            for v in ("6.1", "6.12", "7.2", "7.3")]


def test_rb7_shows_the_seeds_change():
    m = matrix.build(runs())
    row = m.rows[("test_RB7_perf_read_every_page", "VM_PFNMAP")]
    assert [row[c].seen for c in m.columns] == [False, False, True, True]
    assert all(row[c].ok for c in m.columns)
    gup = m.rows[("test_RB7_perf_gup", "process_vm_readv")]
    assert [gup[c].seen for c in m.columns] == ["0", "0", "EFAULT", "EFAULT"]


def test_text_and_html():
    m = matrix.build(runs())
    text = m.text()
    assert text.splitlines()[0].split() == ["scenario", "check", "debian:6.1", "x86_64",
                                            "debian:6.12", "x86_64", "debian:7.2", "x86_64",
                                            "debian:7.3", "x86_64"]
    assert "RB7_perf_read_every_page" in text and "FAIL" not in text
    html = m.html()
    assert html.count("<tr>") == len(m.rows) + 1 and "class=\"fail\"" not in html


def test_mismatch_is_shown(tmp_path):
    bad = tmp_path / "j.xml"
    bad.write_text(
        '<testsuites><testsuite><testcase name="test_RB1_x[pfnmap]"><properties>'
        '<property name="kh:read minflt" value="{&quot;expected&quot;: 0, &quot;seen&quot;: 9}"/>'
        '</properties><failure message="x"/></testcase></testsuite></testsuites>')
    m = matrix.build([("k", bad)])
    assert "FAIL 9 (want 0)" in m.text()
    assert 'class="fail"' in m.html()


def test_test_without_checks_is_a_pass_row(tmp_path):
    j = tmp_path / "j.xml"
    j.write_text('<testsuites><testsuite><testcase name="test_x"/>'
                 '<testcase name="test_y"><failure message="boom"/></testcase>'
                 '</testsuite></testsuites>')
    m = matrix.build([("k", j)])
    assert m.rows[("test_x", "test")]["k"].ok
    assert not m.rows[("test_y", "test")]["k"].ok
    assert "ok passed" in m.text() and "FAIL failed (want passed)" in m.text()


def test_interrupted_stub_is_no_row(tmp_path):
    """pytest leaves a nameless <testcase> for the test Ctrl-C cut short."""
    j = tmp_path / "j.xml"
    j.write_text('<testsuites><testsuite><testcase name="test_RB1_x[fault]"/>'
                 '<testcase time="0.382" /></testsuite></testsuites>')
    m = matrix.build([("k", j)])
    assert list(m.rows) == [("test_RB1_x[fault]", "test")]


def test_upstream_subtests_are_no_rows(tmp_path):
    """The matrix has a row per upstream binary, not per subtest (cow has 655)."""
    j = tmp_path / "j.xml"
    j.write_text('<testsuites><testsuite>'
                 '<testcase name="test_upstream_mm[cow/Basic COW after fork() ... with base '
                 'page]"/><testcase name="test_upstream_mm[cow]"/>'
                 '</testsuite></testsuites>')
    m = matrix.build([("k", j)])
    assert list(m.rows) == [("test_upstream_mm[cow]", "test")]
