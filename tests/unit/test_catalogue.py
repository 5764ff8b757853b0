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


def test_every_test_has_an_id_of_its_own():
    ids = [tid for _, tid, _, _ in resources.scenario_tests()]
    assert len(ids) > 60 and sorted(set(ids)) == sorted(ids)


def test_the_catalogue_of_tests_is_the_tests():
    """docs/tests.md cannot drift: it is what the tests say now."""
    assert (DOCS / "tests.md").read_text() == resources.catalogue(), \
        "docs/tests.md is out of date: run python ci/catalogue.py"


def test_nothing_in_the_repository_points_outside_it():
    root = DOCS.parent
    for path in [root / "README.md", *DOCS.glob("*.md")]:
        assert "../shared" not in path.read_text(), path
