"""Files the package needs at run time: module and helper sources, image
recipes, kconfig fragments, the kernel suite, the mutant patches.

They live at the top of the repository; harness/_data/ links to them, and a
wheel carries copies in the same place, so one lookup serves a clone, an
editable install and `pip install .` alike.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

NAMES = ("kmods", "helpers", "images", "kconfigs", "suite", "mutants")


def data(name: str) -> Path:
    """The directory of that name (resolved: a clone gives its own folder)."""
    assert name in NAMES, name
    return Path(str(resources.files("harness") / "_data" / name)).resolve()


def suites() -> tuple[str, ...]:
    """The kernel suites: each folder of the suite with tests in it
    (scenarios, mm-selftests, harness), found by looking."""
    return tuple(sorted(d.name for d in data("suite").iterdir()
                        if d.is_dir() and any(d.glob("test_*.py"))))


def modules() -> tuple[str, ...]:
    """Our kernel modules: each folder of kmods/ with a Kbuild file."""
    return tuple(sorted(d.name for d in data("kmods").iterdir() if (d / "Kbuild").is_file()))


def scenario_ids() -> tuple[str, ...]:
    """The scenario ids the scenario suite tests (RB1, DX4, PAT2, ...): read
    from its test names, test_<ID>_<what> (a test's name carries its id)."""
    found = set()
    for f in (data("suite") / "scenarios").glob("test_*.py"):
        found.update(re.findall(r"^def test_([A-Z]+\d+)_", f.read_text(), re.M))
    return tuple(sorted(found, key=lambda i: (re.sub(r"\d", "", i), int(re.sub(r"\D", "", i)))))
