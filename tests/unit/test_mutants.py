"""The mutant runner's pure parts: headers, verdicts, the table."""

from __future__ import annotations

import pytest

from harness.commands import mutants
from harness.errors import UsageError
from harness.kbuild import patches
from harness.resources import data, scenario_ids


def test_every_mutant_names_its_targets_and_applies_as_a_patch():
    found = mutants.load(data("mutants"))
    assert len(found) >= 19
    for m in found:
        assert m.targets and m.expect and m.subject, m.name
        (p,) = patches.load(str(m.path))
        # In the kernel's own code, never in our modules.
        files = [line.split()[2][2:] for line in p.diff.splitlines()
                 if line.startswith("diff --git")]
        assert files and all(f.startswith(("mm/", "kernel/events/", "arch/x86/mm/",
                                           "include/linux/mm.h", "fs/dax.c", "drivers/dax/",
                                           "drivers/vfio/pci/", "drivers/dma-buf/"))
                             for f in files), m.name


CATALOGUE = sorted([f"DX{i}" for i in range(1, 7)] + [f"MX{i}" for i in range(1, 6)]
                   + ["PAT1", "PAT2"] + [f"RB{i}" for i in range(1, 8)]
                   + [f"FD{i}" for i in range(1, 9)] + [f"DD{i}" for i in range(1, 6)]
                   + [f"UD{i}" for i in range(1, 5)] + [f"VF{i}" for i in range(1, 5)]
                   + [f"DM{i}" for i in range(1, 4)])


def test_the_scenario_ids_come_from_the_suites_test_names():
    assert list(scenario_ids()) == CATALOGUE


def test_every_scenario_and_invariant_is_targeted_by_a_mutant():
    targets = {t for m in mutants.load(data("mutants")) for t in m.targets}
    assert set(CATALOGUE) - targets == set()
    assert set(mutants.INVARIANTS) - targets == set()


def test_a_bad_header_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "x.patch").write_text("Subject: [PATCH] x\n\nMutant-Targets: RB9x\n---\n")
    with pytest.raises(UsageError, match=r"x.patch: 'Mutant-Targets:' must list .* 'RB9x'"):
        mutants.load(tmp_path)
    with pytest.raises(UsageError, match="no mutant named y"):
        (tmp_path / "x.patch").write_text("Mutant-Targets: RB1\n")
        mutants.load(tmp_path, ["y"])


def test_verdict_wants_a_test_of_a_targeted_scenario():
    m = mutants.Mutant("m", data("mutants"), "s", ("RB5", "MX3"), "e")
    assert mutants.verdict(m, []) == "missed"
    assert mutants.verdict(m, ["test_RB1a_read_every_page[pfnmap]"]) == "elsewhere"
    assert mutants.verdict(m, ["test_MX3a_fork_copies_mixedmap_ptes[prepop]"]) == "caught"
    assert mutants.verdict(m, ["test_MX33_x"]) == "elsewhere"
    inv = mutants.Mutant("i", data("mutants"), "s", ("RSS",), "e")
    assert mutants.verdict(inv, ["test_DX1a_read_fault_every_page[refcounted]"]) == "caught"


def test_table_counts_mutants_caught_by_their_target():
    rows = [mutants.Row("clean", [], "passed"),
            mutants.Row("a", ["RB2"], "caught", ["test_RB2_x[pfnmap]"], ["WARNING in y"], 90),
            mutants.Row("b", ["MX3"], "missed", seconds=60)]
    text = mutants.table(rows)
    assert "caught by their target: 1/2; clean kernel: passed" in text
    assert "WARNING in y" in text and "test_RB2_x[pfnmap]" in text


def test_a_mutant_runs_the_families_its_files_reach_and_always_its_targets():
    by_name = {m.name: m for m in mutants.load(data("mutants"))}
    assert by_name["ud-prefault-from-buffer-start"].reach() == ["UD", "UD1"]
    assert mutants.selection(by_name["vf-bar-not-copied"], None) == "test_VF or test_VF2"
    assert mutants.selection(by_name["vf-bar-not-copied"], "not slow") == \
        "(not slow) and (test_VF or test_VF2)"
    # A file REACH does not name (mm/): the whole suite, and the user's -k alone.
    assert by_name["rb2-pfnmap-skips-pfn-mkwrite"].reach() is None
    assert mutants.selection(by_name["rb2-pfnmap-skips-pfn-mkwrite"], "RB") == "RB"


def test_the_selection_never_hides_a_catch():
    """A verdict is "caught" when a test of a targeted scenario fails: every
    target's tests are in its mutant's selection, so selecting can only
    leave out tests whose failure would not count (and files of other
    families, which the mutant's code does not run)."""
    for m in mutants.load(data("mutants")):
        k = mutants.selection(m, None)
        if k is None:
            continue
        assert m.scenarios, m.name     # only-invariant mutants run everything
        for s in m.scenarios:
            assert f"test_{s}" in k.split(" or ") or f"test_{s.rstrip('0123456789')}" in \
                k.split(" or "), (m.name, s, k)


def test_the_next_kernel_builds_ahead_and_its_error_reaches_the_waiter():
    import threading

    started = threading.Event()

    def build() -> str:
        started.set()
        return "build:abc"
    result = mutants.ahead(build)
    assert started.wait(5) and result() == "build:abc"

    def broken() -> str:
        raise UsageError("no such patch")
    with pytest.raises(UsageError, match="no such patch"):
        mutants.ahead(broken)()
