"""The CI pipelines read the one matrix file; nothing in them repeats it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.commands import nightly

REPO = Path(__file__).resolve().parents[2]


def test_gitlab_runs_one_shard_per_matrix_job():
    # Optional jobs (the mutants) are not sharded: they run when --job names them.
    jobs = [j for j in nightly.load(REPO / "ci" / "nightly.toml") if not j.optional]
    text = (REPO / ".gitlab-ci.yml").read_text()
    (parallel,) = re.findall(r"^\s+parallel: (\d+)$", text, re.M)
    assert int(parallel) == len(jobs), \
        f".gitlab-ci.yml has parallel: {parallel}, ci/nightly.toml has {len(jobs)} jobs"
    assert "--shard \"$CI_NODE_INDEX/$CI_NODE_TOTAL\"" in text


def test_shards_cover_every_job_once():
    jobs = [j.id for j in nightly.load(REPO / "ci" / "nightly.toml")]
    for n in (1, 3, len(jobs), len(jobs) + 2):
        shards = [jobs[i - 1::n] for i in range(1, n + 1)]
        assert sorted(j for s in shards for j in s) == sorted(jobs)


def test_github_workflow_is_actionlint_clean():
    actionlint = shutil.which("actionlint") or str(Path(__import__("sys").executable).parent /
                                                  "actionlint")
    if not Path(actionlint).exists():
        pytest.fail("actionlint is not installed: pip install -e '.[dev]'")
    res = subprocess.run([actionlint, str(REPO / ".github" / "workflows" / "nightly.yml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    assert "kharness nightly ci/nightly.toml --list --json" in text
