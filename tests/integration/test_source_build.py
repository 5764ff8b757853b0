"""Kernels built from source (issue 4): a patch series and kconfig fragments
on Debian's linux-source, and the daxlike suite on the result.

The quick tests stop before compiling, for both arches whatever --arch
says: a patch that does not apply and an option that does not survive
olddefconfig. The slow one (--arch picks its arch) builds 7.2 twice
(plain and with a patch that breaks insert_page_into_pte_locked()'s
write-upgrade path) and runs DX1/DX2 on both.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.pytest_plugin import resolved

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SOURCE = "debian-source:7.2"
BREAK_MKWRITE = DATA / "patches" / "break-mkwrite-7.2.mbox"


def kharness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def errors(proc) -> list[str]:
    return [l for l in proc.stderr.splitlines() if l.startswith("kharness: error:")]


ARCHES = ("x86_64", "arm64")


@pytest.mark.parametrize("arch", ARCHES)
def test_patch_that_does_not_apply(arch):
    proc = kharness("build", "--source", SOURCE, "--arch", arch,
                    "--patches", str(DATA / "patches" / "quilt"))
    assert proc.returncode == 2     # the user's series: bad input, before any build
    [err] = errors(proc)
    assert "patch 1/2 'demo: say hello'" in err and "0001-a.patch" in err, err
    assert "does not apply to" in err and "can't find file" in err, err


@pytest.mark.parametrize("arch", ARCHES)
def test_option_that_does_not_survive_olddefconfig(arch):
    proc = kharness("build", "--source", SOURCE, "--arch", arch, "--strict-config",
                    "--config", f"base,{DATA / 'kconfigs' / 'kasan-on-tiny.config'}",
                    timeout=900)
    assert proc.returncode != 0
    [err] = errors(proc)
    assert "did not survive olddefconfig: CONFIG_KASAN=y (got n)" in err, err


def build(arch: str, *extra: str) -> str:
    proc = kharness("build", "--source", SOURCE, "--arch", arch,
                    "--config", "base,debug-vm", *extra, timeout=5400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def daxlike_outcomes(spec: str, arch: str, junit: Path) -> dict[str, str]:
    """test id -> 'passed' or its failure message, from a nested run."""
    subprocess.run([sys.executable, "-m", "pytest",
                    str(REPO / "tests" / "kernel" / "scenarios" / "test_daxlike.py"),
                    "-p", "no:cacheprovider", "-q", "-k", "DX1 or DX2",
                    f"--kernel={spec}", f"--arch={arch}", f"--junitxml={junit}",
                    f"--out={junit.parent / 'out'}"], cwd=REPO, timeout=1800)
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        out[case.get("name")] = "passed" if failure is None else failure.get("message", "")
    return out


@pytest.mark.slow
def test_patched_mkwrite_path_fails_daxlike(request, tmp_path):
    arch = resolved(request.config)("--arch")
    plain = daxlike_outcomes(build(arch), arch, tmp_path / "plain.xml")
    patched = daxlike_outcomes(build(arch, "--patches", str(BREAK_MKWRITE)), arch,
                               tmp_path / "patched.xml")
    assert plain and set(plain.values()) == {"passed"}, plain
    broken = "test_DX2_write_after_read_upgrades_in_place[refcounted]"
    assert "BUG: Bad rss-counter state" in patched[broken], patched
    # The special mode never reaches insert_page_into_pte_locked().
    assert patched["test_DX2_write_after_read_upgrades_in_place[special]"] == "passed"


@pytest.mark.slow
def test_validate_names_the_regression(request, tmp_path):
    """Base and patched in one command: the broken write-upgrade shows up as
    DX2[refcounted] failing with the kernel's own report, and nothing else."""
    arch = resolved(request.config)("--arch")
    proc = kharness("validate", "--source", SOURCE, "--patches", str(BREAK_MKWRITE),
                    "--config", "base,debug-vm", "--arch", arch, "-k", "DX1 or DX2",
                    "--out", str(tmp_path), timeout=5400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = (tmp_path / "validate.md").read_text()
    assert all(len(ln) <= 80 or " " not in ln.strip() for ln in report.splitlines()), report
    # A REGRESSION line and its indented continuation lines, as one.
    regressions = " ".join(report.split("\nREGRESSION")[1:]).split("\n\n")[0:1]
    regressions = [" ".join(r.split()) for r in regressions]
    assert report.count("\nREGRESSION") == 1, report
    assert "test_DX2_write_after_read_upgrades_in_place[refcounted]" in regressions[0]
    assert "BUG: Bad rss-counter state" in regressions[0]
    assert report.splitlines()[-1] == "1 regression"
    assert (tmp_path / "validate.html").exists()


@pytest.mark.slow
def test_bisect_names_the_breaking_patch(request, tmp_path):
    arch = resolved(request.config)("--arch")
    proc = kharness("bisect", "--source", SOURCE,
                    "--patches", str(DATA / "patches" / "bisect-3-7.2.mbox"),
                    "--config", "base,debug-vm", "--arch", arch,
                    "-k", "DX2 and refcounted", "--out", str(tmp_path), timeout=5400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first bad patch: 2/3 'mm/memory: let insert_page_into_pte_locked() reinstall " \
           "the same page on mkwrite'" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_git_bisect_names_the_breaking_commit(request, tmp_path):
    """A git tree of the Debian 7.2 source with the 3-patch series as three
    commits: `kharness bisect --good --bad` drives `git bisect run` with
    `kharness bisect-step` and names the second commit."""
    arch = resolved(request.config)("--arch")
    tree = Path(kharness("build", "--source", SOURCE, "--arch", arch, "--config",
                         "base,debug-vm", timeout=5400).stderr.split("build: ")[-1].strip())
    repo = tmp_path / "linux"
    subprocess.run(["cp", "-a", str(tree / "src"), str(repo)], check=True)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=kharness", "-c",
                               "user.email=kharness@example.org", *args], check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A", "--force")   # Debian's linux-source .gitignore ignores the top level
    git("commit", "-q", "-m", "Debian 7.2 source")
    git("am", "-q", str(DATA / "patches" / "bisect-3-7.2.mbox"))
    proc = kharness("bisect", "--source", str(repo), "--good", "HEAD~3", "--bad", "HEAD",
                    "--arch", arch, "--config", "base,debug-vm", "-k", "DX2 and refcounted",
                    "--out", str(tmp_path / "out"), timeout=5400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    subject = "mm/memory: let insert_page_into_pte_locked() reinstall the same page on"
    assert "is the first bad commit" in proc.stdout
    assert subject in git("log", "-1", "--format=%s", "HEAD~1") and \
        git("rev-parse", "HEAD~1").strip()[:12] in proc.stdout
