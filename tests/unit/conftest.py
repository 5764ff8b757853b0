"""Unit tests leave nothing behind: no agent socket directories (kh-*)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.vm.machine import SOCK_PREFIX


def _ours() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(SOCK_PREFIX + "*"))


@pytest.fixture(autouse=True, scope="session")
def _no_leftovers():
    before = _ours()
    yield
    left = _ours() - before
    assert not left, f"unit tests left {sorted(map(str, left))} behind"
