"""Files the package needs at run time: module and helper sources, image
recipes, kconfig fragments, the kernel suite, the mutant patches.

They live at the top of the repository; harness/_data/ links to them, and a
wheel carries copies in the same place, so one lookup serves a clone, an
editable install and `pip install .` alike.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

from harness.errors import UsageError

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


# The kernel's selftest collections kharness runs (folders under
# tools/testing/selftests; upstream.CATALOGUE has their binaries). Here, not
# there, so that the command line's parser does not import the guest code.
COLLECTIONS = ("mm", "perf_events", "drivers/dma-buf", "vfio")
SUITES = (*suites(), "all")     # the folders of the kernel suite, or all


def suite_names(words: list[str], what: str = "--suite") -> list[str]:
    """Suite names as --suite and a nightly job's `suite` give them: a
    folder of the kernel suite, or selftests:COLLECTION, where collections
    after the first may go without the prefix (selftests:perf_events,vfio);
    selftests:mm is mm-selftests."""
    out: list[str] = []
    collections = False
    for word in words:
        kind, colon, name = word.partition(":")
        if colon and kind == "selftests" or collections and word not in SUITES:
            name = name if colon else word
            if name not in COLLECTIONS:
                raise UsageError(f"{what}: no selftest collection '{name}': kharness runs "
                                 f"{', '.join(COLLECTIONS)}")
            out.append("mm-selftests" if name == "mm" else f"selftests:{name}")
            collections = True
        elif word in SUITES:
            out.append(word)
            collections = False
        else:
            raise UsageError(f"{what} '{word}' is unknown: use one of {', '.join(SUITES)}, or "
                             f"selftests:COLLECTION ({', '.join(COLLECTIONS)})")
    return list(dict.fromkeys(out))


def modules() -> tuple[str, ...]:
    """Our kernel modules: each folder of kmods/ with a Kbuild file."""
    return tuple(sorted(d.name for d in data("kmods").iterdir() if (d / "Kbuild").is_file()))


ID = re.compile(r"^test_([A-Z]+\d+)([a-z]?)_")   # test_RB7a_...: scenario RB7, its test a


def _order(scenario: str) -> tuple[str, int]:
    return re.sub(r"\d", "", scenario), int(re.sub(r"\D", "", scenario))


def scenario_tests() -> list[tuple[str, str, str, str]]:
    """(scenario, test id, test name, what it checks) of every scenario
    test, in catalogue order: the id its name carries (RB7a; each test's
    own), what it checks the first sentence of its docstring, or its name
    in words."""
    found = []
    for f in (data("suite") / "scenarios").glob("test_*.py"):
        for node in ast.parse(f.read_text()).body:
            m = ID.match(getattr(node, "name", ""))
            if not isinstance(node, ast.FunctionDef) or m is None:
                continue
            doc = " ".join((ast.get_docstring(node) or "").split())
            what = re.split(r"(?<=[.:;])\s", doc)[0].rstrip(".:;") if doc else \
                node.name[m.end():].replace("_", " ")
            found.append((m.group(1), m.group(1) + m.group(2), node.name, what))
    return sorted(found, key=lambda t: (*_order(t[0]), t[1]))


def scenario_ids() -> tuple[str, ...]:
    """The scenario ids the scenario suite tests (RB1, DX4, PAT2, ...): read
    from its test names, test_<ID>[letter]_<what> (a test's name carries its
    scenario's id, and a letter where the scenario has several tests)."""
    return tuple(dict.fromkeys(t[0] for t in scenario_tests()))

FAMILY_DOCS = {"scenarios.md": ("RB", "DX", "MX", "PAT"),
               "real-drivers.md": ("FD", "DD", "UD", "VF", "DM")}


def catalogue() -> str:
    """docs/tests.md: every scenario test with its own id, generated from
    the tests (ci/catalogue.py writes it; a unit test checks it)."""
    doc = {fam: name for name, fams in FAMILY_DOCS.items() for fam in fams}
    lines = ["# Every scenario test", "",
             "Generated from the tests by `python ci/catalogue.py`; a unit test fails when "
             "it differs. Each test carries its own id in its name (`test_RB7a_...`): the "
             "scenario's id (RB7, described in the family's document), and a letter where "
             "the scenario has several tests. What a test checks is its docstring's first "
             "sentence, or its name.", "",
             "| id | test | what it checks | scenario |", "|---|---|---|---|"]
    for scenario, tid, name, what in scenario_tests():
        where = doc[re.sub(r"\d", "", scenario)]
        lines.append(f"| {tid} | `{name}` | {what.replace('|', '/')} | "
                     f"[{scenario}]({where}) |")
    return "\n".join(lines) + "\n"
