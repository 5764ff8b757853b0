"""The nightly matrix file, merged results and KCIDB output."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import kcidb_io
import pytest

from harness.commands import nightly
from harness.errors import UsageError
from harness.results import merge

REPO = Path(__file__).resolve().parents[2]
JUNIT = REPO / "tests" / "data" / "junit"


def test_the_projects_matrix_expands():
    jobs = nightly.load(REPO / "ci" / "nightly.toml")
    ids = [j.id for j in jobs]
    assert "stock-debian-7.2-arm64" in ids and "debug-vm-debian-source-7.2-x86_64" in ids
    assert len(ids) == len(set(ids))
    race = next(j for j in jobs if j.repro)
    assert race.cpus == 2 and race.arch.name == "arm64" and race.repro["rounds"] == 20
    built = next(j for j in jobs if j.source)
    assert built.kernel == "" and built.config == ("base", "debug-vm", "debuginfo", "drivers")
    newest = next(j for j in jobs if j.selftests_source)
    assert newest.suite == ("mm-selftests", "selftests:perf_events", "selftests:drivers/dma-buf",
                            "selftests:vfio")
    assert newest.selftests_source == "debian-source:7.3"
    assert {j.kernel for j in jobs if j.selftests_source} == {
        "debian:6.1", "debian:6.12", "debian:7.2", "debian:7.3"}


@pytest.mark.parametrize("body,words", [
    ('[[job]]\nname = "a"\nkernels = ["debian:5.10"]\n', ":3: job a: unknown Debian kernel"),
    ('arches = ["x86_64"]\n[[job]]\nname = "a"\nkernels = ["debian:7.2"]\narches = ["s390"]\n',
     ":5: job a: unknown arch 's390'"),
    ('[[job]]\nname = "a"\nkernel = ["debian:7.2"]\n', ":3: job a: unknown key(s) kernel"),
    ('[[job]]\nname = "a"\n', "give either kernels"),
    ('[[job]]\nname = "a"\nkernels = ["debian:7.2"]\ncpus = 0\n', ":4: job a: cpus"),
    ('[[job]]\nname = "a"\nkernels = ["debian:7.2"]\nsuite = ["ltp"]\n',
     ":4: job a: suite 'ltp' is unknown"),
    ('[[job]]\nname = "a"\nkernels = ["debian:7.2"]\nsuite = ["selftests:ltp"]\n',
     ":4: job a: suite: no selftest collection 'ltp': kharness runs mm, perf_events"),
    ('[[job]]\nname = "a"\nkernels = ["debian:7.2"]\nselftests_source = "debian-source:5.4"\n',
     ":4: job a: selftests_source: unknown Debian series"),
    ('[[job]\n', "nightly.toml"),
])
def test_bad_matrix_is_one_line_with_its_line_number(tmp_path, body, words):
    path = tmp_path / "nightly.toml"
    path.write_text(body)
    with pytest.raises(UsageError, match=None) as e:
        nightly.load(path)
    assert words in str(e.value) and "\n" not in str(e.value)


JOB = '[[job]]\nname = "a"\n'


@pytest.mark.parametrize("body,words", [
    ('arches = ["x86_64"]\nnightly = true\n' + JOB + 'kernels = ["debian:7.2"]\n',
     ":2: unknown key(s) nightly: the matrix has arches = [...] and [[job]] tables"),
    ('arches = []\n' + JOB + 'kernels = ["debian:7.2"]\n',
     ":1: arches must be a list of arch names"),
    ('arches = "x86_64"\n' + JOB + 'kernels = ["debian:7.2"]\n',
     ":1: arches must be a list of arch names"),
    (JOB + 'kernels = "debian:6.12"\n',
     ":3: job a: kernels must be a list of kernel specs, e.g. [\"debian:6.12\"], not "
     "'debian:6.12'"),
    (JOB + 'kernels = []\n', ":3: job a: kernels must be a list"),
    (JOB + 'kernels = ["debian:7.2"]\nrepro = {signature = "", rounds = 5, command = "x"}\n',
     ":4: job a: repro's signature must be the text of the kernel report"),
    (JOB + 'kernels = ["debian:7.2"]\nrepro = {signature = "W", rounds = -1, command = "x"}\n',
     ":4: job a: repro's rounds must be a whole number of at least 1, not -1"),
    (JOB + 'kernels = ["debian:7.2"]\nrepro = {signature = "W", rounds = 3, command = " "}\n',
     ":4: job a: repro's command must be the guest command"),
    (JOB + 'source = "/nonexistent"\n',
     ":3: job a: source '/nonexistent' is not a kernel tree"),
    (JOB + 'source = "debian-source:5.4"\n', ":3: job a: unknown Debian series '5.4'"),
    (JOB + 'source = "debian-source:7.2"\nconfig = ["nosuchfrag"]\n',
     ":4: job a: kconfig fragment 'nosuchfrag' not found"),
    (JOB + 'source = "debian-source:7.2"\nconfig = "base"\n',
     ":4: job a: config must be a list of kconfig fragments"),
    (JOB + 'kernels = ["debian:7.2"]\nconfig = ["base"]\n',
     ":4: job a: config goes with source"),
    (JOB + 'kernels = ["debian:7.2"]\ncpus = true\n', ":4: job a: cpus must be a whole"),
    (JOB + 'kernels = ["debian:7.2"]\nk = ""\n', ":4: job a: k must be a pytest -k"),
    (JOB + 'kernels = ["debian:7.2"]\n\n[[job]]\nname = "b"\nkernels = ["debian:6.1"]\n'
     'cpus = 0\n', ":8: job b: cpus"),
    ('job = 3\n', ":1: job must be [[job]] tables"),
])
def test_the_matrix_is_checked_whole(tmp_path, body, words):
    path = tmp_path / "nightly.toml"
    path.write_text(body)
    with pytest.raises(UsageError) as e:
        nightly.load(path)
    assert f"{path}{words}" in str(e.value) and "\n" not in str(e.value)


def test_a_binary_matrix_is_one_line(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_bytes(b"\x7fELF\xff\xfe\x00\x01")
    with pytest.raises(UsageError, match="is not a text file: the nightly matrix is TOML"):
        nightly.load(path)


def nightly_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "nightly", *args],
                          capture_output=True, text=True, timeout=60)


def test_list_honours_job_and_shard():
    matrix = str(REPO / "ci" / "nightly.toml")
    every = nightly_cli(matrix, "--list").stdout.split()
    assert len(every) > 3
    res = nightly_cli(matrix, "--list", "--job", "nosuchjob")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == (f"kharness: error: no job 'nosuchjob' in {matrix}: "
                                  f"see --list")
    assert nightly_cli(matrix, "--list", "--shard", "2/3").stdout.split() == every[1::3]
    assert nightly_cli(matrix, "--list", "--job", every[4]).stdout.split() == [every[4]]


def test_nightly_refuses_a_bad_matrix_before_any_job(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_text('[[job]]\nname = "a"\nkernels = ["debian:6.12", "fedora:40"]\n')
    res = subprocess.run([sys.executable, "-m", "harness.cli", "nightly", str(path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"kharness: error: {path}:3: job a:")
    assert not (tmp_path / "out").exists()


def night(tmp_path: Path) -> Path:
    """A night's output: the recorded RB7 runs as four jobs."""
    for src in sorted(JUNIT.glob("rb7-*.xml")):
        job = tmp_path / "night" / f"stock-{src.stem.removeprefix('rb7-')}"
        job.mkdir(parents=True)
        (job / "junit.xml").write_text(src.read_text())
    return tmp_path / "night"


def test_merge_combines_the_jobs(tmp_path):
    out = tmp_path / "merged"
    summary = merge.merge([str(night(tmp_path))], out)
    assert summary.splitlines()[0] == "4 jobs"
    root = ET.parse(out / "junit.xml").getroot()
    suites = [s.get("name") for s in root.iter("testsuite")]
    assert suites == ["stock-debian-6.1-x86_64", "stock-debian-6.12-x86_64",
                      "stock-debian-7.2-x86_64", "stock-debian-7.3-x86_64"]
    matrix = (out / "matrix.txt").read_text()
    assert "stock-debian-7.2-x86_64" in matrix.splitlines()[0]
    assert (out / "matrix.html").exists()


def test_merge_keeps_logs_but_not_vmcores(tmp_path):
    """A failed test's window and console travel with the night; its memory
    dump stays in the job's output, named."""
    job = tmp_path / "n" / "stock-debian-7.2-x86_64"
    test = job / "out" / "tests" / "test_x.py_test_y"
    test.mkdir(parents=True)
    (job / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="test_y"><failure message="x"/>'
        '</testcase></testsuite></testsuites>')
    for name in ("dmesg.txt", "console.log", "vmcore", "vmcore.elf"):
        (test / name).write_text(name)
    merge.merge([str(tmp_path / "n")], tmp_path / "merged")
    kept = tmp_path / "merged" / "logs" / "stock-debian-7.2-x86_64" / test.name
    assert sorted(p.name for p in kept.iterdir()) == ["console.log", "dmesg.txt", "vmcore.txt"]
    assert str(test / "vmcore") in (kept / "vmcore.txt").read_text()


def test_kcidb_output_is_valid_against_the_schema(tmp_path):
    data = merge.kcidb([str(night(tmp_path))], "kharness")
    kcidb_io.schema.LATEST.validate(data)
    assert len(data["checkouts"]) == 4 and len(data["builds"]) == 4
    paths = {t["path"] for t in data["tests"]}
    assert "kharness.RB7.perf_read_every_page" in paths
    assert {t["status"] for t in data["tests"]} <= {"PASS", "FAIL", "ERROR", "SKIP"}


def test_kcidb_carries_report_titles_as_issues(tmp_path):
    job = tmp_path / "n" / "stock-debian-7.2-x86_64"
    job.mkdir(parents=True)
    title = "WARNING in insert_page_into_pte_locked"
    (job / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="test_DX4_race[refcounted]"><properties>'
        f'<property name="kh-reports" value=\'{json.dumps([title])}\'/></properties>'
        '<failure message="kernel report"/></testcase></testsuite></testsuites>')
    data = merge.kcidb([str(tmp_path / "n")], "kharness")
    kcidb_io.schema.LATEST.validate(data)
    assert [i["report_subject"] for i in data["issues"]] == [title]
    assert data["incidents"][0]["test_id"] == data["tests"][0]["id"]
    assert data["tests"][0]["status"] == "FAIL"


def test_kcidb_carries_known_issues_with_their_urls(tmp_path):
    from harness.results import known
    job = tmp_path / "n" / "stock-debian-6.12-x86_64"
    job.mkdir(parents=True)
    (job / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="test_DM3_cut[mprotect]"><properties>'
        '<property name="kh-known" value="pat-split-pfnmap-leaks-memtype"/>'
        '<property name="kh-reports" value=\'["x86/PAT: freeing invalid memtype"]\'/>'
        '</properties><skipped message="known issue ..."/></testcase>'
        '</testsuite></testsuites>')
    data = merge.kcidb([str(tmp_path / "n")], "kharness", known.load(None))
    kcidb_io.schema.LATEST.validate(data)
    (issue,) = data["issues"]
    assert issue["culprit"] == {"code": True} and issue["report_url"].startswith("https://")
    assert issue["report_subject"].startswith("x86/PAT: cutting a hole")
    assert data["tests"][0]["status"] == "FAIL"
    assert [i["issue_id"] for i in data["incidents"]] == [issue["id"]]


def test_kcidb_counts_a_crash_under_its_alternative_titles_once(tmp_path):
    """arm64 titled it through __arm64_sys_mremap, x86_64 as mremap: one issue."""
    for arch, title, alts in (
            ("x86_64", "general protection fault in mremap",
             ["general protection fault in __x64_sys_mremap"]),
            ("arm64", "Internal error in __arm64_sys_mremap", ["bad-access in mremap"]),
            ("arm64b", "bad-access in mremap", [])):
        job = tmp_path / "n" / f"stock-debian-7.2-{arch}"
        job.mkdir(parents=True)
        (job / "junit.xml").write_text(
            '<testsuites><testsuite><testcase name="test_RB3_m"><properties>'
            f'<property name="kh-reports" value=\'{json.dumps([title])}\'/>'
            f'<property name="kh-report-alts" value=\'{json.dumps([alts])}\'/></properties>'
            '<failure message="kernel report"/></testcase></testsuite></testsuites>')
    data = merge.kcidb([str(tmp_path / "n")], "kharness")
    kcidb_io.schema.LATEST.validate(data)
    by_subject = {i["report_subject"]: i["id"] for i in data["issues"]}
    assert len(by_subject) == 2     # the GPF alone; the Internal error and bad-access one
    assert len({i["issue_id"] for i in data["incidents"]}) == 2
    assert len(data["incidents"]) == 3


def test_a_job_may_take_its_own_boot_path(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[[job]]\nname = "v"\nkernels = ["debian:6.12"]\narches = ["x86_64"]\n'
                 'boot = "vng"\n')
    (job,) = nightly.load(m)
    assert job.boot == "vng" and job.to_dict()["boot"] == "vng"
    m.write_text('[[job]]\nname = "v"\nkernels = ["debian:6.12"]\nboot = "pxe"\n')
    with pytest.raises(UsageError, match="job v: boot must be one of initramfs, vng"):
        nightly.load(m)


def test_an_optional_mutants_job_runs_only_when_named(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[[job]]\nname = "s"\nkernels = ["debian:6.12"]\narches = ["x86_64"]\n\n'
                 '[[job]]\nname = "mut"\nsource = "debian-source:7.2"\nmutants = "muts"\n'
                 'arches = ["x86_64"]\noptional = true\n')
    (tmp_path / "muts").mkdir()
    (tmp_path / "muts" / "one.patch").write_text("Subject: x\n")
    jobs = nightly.load(m)
    (mut,) = [j for j in jobs if j.mutants]
    assert mut.optional and mut.mutants == str(tmp_path / "muts")
    listed = subprocess.run([sys.executable, "-m", "harness.cli", "nightly", str(m), "--list"],
                            capture_output=True, text=True)
    assert listed.stdout.split() == ["s-debian-6.12-x86_64"], listed.stderr
    m.write_text('[[job]]\nname = "mut"\nkernels = ["debian:7.2"]\nmutants = "muts"\n')
    with pytest.raises(UsageError, match="job mut: mutants need the source they patch"):
        nightly.load(m)
