"""Unit tests leave nothing behind: no agent socket directories (kh-*)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from harness.vm.machine import SOCK_PREFIX


def _ours() -> set[Path]:
    """The socket folders of this process, or of one that is gone (a
    subprocess of a test): another run's, going on beside, are not ours."""
    found = set()
    for d in Path(tempfile.gettempdir()).glob(SOCK_PREFIX + "*"):
        try:
            owner = int((d / "owner").read_text())
        except (OSError, ValueError):
            continue        # being made, or not a folder of ours
        if owner == os.getpid() or not Path(f"/proc/{owner}").exists():
            found.add(d)
    return found


@pytest.fixture(autouse=True, scope="session")
def _no_leftovers():
    before = _ours()
    yield
    left = _ours() - before
    assert not left, f"unit tests left {sorted(map(str, left))} behind"
