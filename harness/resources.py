"""Files the package needs at run time: module and helper sources, image
recipes, kconfig fragments, the kernel suite, the mutant patches.

They live at the top of the repository; harness/_data/ links to them, and a
wheel carries copies in the same place, so one lookup serves a clone, an
editable install and `pip install .` alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

NAMES = ("kmods", "helpers", "images", "kconfigs", "suite", "mutants")


def data(name: str) -> Path:
    """The directory of that name (resolved: a clone gives its own folder)."""
    assert name in NAMES, name
    return Path(str(resources.files("harness") / "_data" / name)).resolve()
