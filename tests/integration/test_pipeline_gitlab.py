"""The real .gitlab-ci.yml, run on this machine by gitlab-ci-local (the
shell executor): every shard of the nightly job and the merge job, over a
one-job matrix (tests/data/nightly-one.toml), with a previous night to
compare against."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import kcidb_io
import pytest

from harness.commands import nightly
from harness.util import cache_root

REPO = Path(__file__).resolve().parents[2]
GITLAB_CI_LOCAL = "gitlab-ci-local@4.70.0"   # the newest that runs on Node 20


def gitlab_ci_local() -> Path:
    tools = cache_root() / "npm" / GITLAB_CI_LOCAL.replace("@", "-")
    exe = tools / "node_modules" / ".bin" / "gitlab-ci-local"
    if not exe.exists():
        if not shutil.which("npm"):
            pytest.fail("npm is needed to fetch gitlab-ci-local: install nodejs and npm")
        tools.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(tools), GITLAB_CI_LOCAL],
                       check=True, timeout=600)
    return exe


def test_gitlab_pipeline_runs_and_merges(tmp_path, request):
    exe = gitlab_ci_local()
    project = tmp_path / "project"
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    (project / ".venv").symlink_to(REPO / ".venv")
    previous = project / "previous" / "merged"
    previous.mkdir(parents=True)
    # Last night RB1[fault] failed: tonight it passes, which is no regression.
    (previous / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="test_RB1a_read_every_page[fault]">'
        '<failure message="x"/></testcase></testsuite></testsuites>')
    # and the night before carried in its artifact, for the dashboard
    night = previous / "nights" / "2026-11-30"
    night.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "data" / "nights" / "2026-11-30" / "junit.xml", night)
    (night / "night.json").write_text('{"date": "2026-11-30", "kharness": "abc", "jobs": {}}')
    res = subprocess.run(
        [str(exe), "--variable", "NIGHTLY_MATRIX=tests/data/nightly-one.toml",
         "--variable", f"KHARNESS_CACHE={cache_root()}"],
        cwd=project, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    passed = [ln for ln in res.stdout.splitlines() if ln.lstrip().startswith("PASS")]
    # every shard of ci/nightly.toml's listed jobs (parallel:; optional ones
    # are not sharded) and the merge job
    shards = len([j for j in nightly.load(REPO / "ci" / "nightly.toml") if not j.optional])
    assert len(passed) == shards + 2, res.stdout[-3000:]    # and pages
    merged = project / "merged"
    assert (merged / "summary.txt").read_text().splitlines()[0] == "1 jobs"
    junit = (merged / "junit.xml").read_text()
    assert junit.count("<testcase") == 3 and "smoke-debian-6.12-" in junit
    kcidb_io.schema.LATEST.validate(json.loads((merged / "kcidb.json").read_text()))
    compare = (merged / "compare.txt").read_text()
    assert "Newly passing" in compare and compare.rstrip().endswith("verdict: no regressions")
    # the dashboard: last night's nights carried on, tonight's added, published
    nights = sorted(p.name for p in (merged / "nights").iterdir())
    assert nights == ["2026-11-30", json.loads((merged / "night.json").read_text())["date"]]
    index = (project / "public" / "index.html").read_text()
    assert "smoke-debian-6.12-" in index and "Since 2026-11-30" in index
