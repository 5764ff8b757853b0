"""The scenario catalogue lives in the repository (docs/scenarios.md and,
for the kernel's own drivers, docs/real-drivers.md) and cannot drift from
the tests: every id a test carries is catalogued, every catalogued id is
tested."""

from __future__ import annotations

import re
from pathlib import Path

from harness import resources

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROW = re.compile(r"^\|\s*((?:RB|DX|MX|PAT|FD|DD|UD|VF|DM)\d+)(?:-\w+)?\s*\|", re.M)


def catalogued() -> set[str]:
    return {m.group(1) for doc in ("scenarios.md", "real-drivers.md")
            for m in ROW.finditer((DOCS / doc).read_text())}


def test_every_tested_id_is_catalogued():
    assert set(resources.scenario_ids()) - catalogued() == set()


def test_every_catalogued_id_is_tested():
    assert catalogued() - set(resources.scenario_ids()) == set()


def test_nothing_in_the_repository_points_outside_it():
    root = DOCS.parent
    for path in [root / "README.md", *DOCS.glob("*.md")]:
        assert "../shared" not in path.read_text(), path
