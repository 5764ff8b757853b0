"""Patch-series bisection over a fake step: the search, skips, and limits."""

from __future__ import annotations

import pytest

from harness.commands.bisect import BAD, GOOD, SKIP, bisect_series


def stepper(first_bad: int, skip: set[int] = frozenset()):
    calls: list[int] = []

    def step(k: int):
        calls.append(k)
        if k in skip:
            return SKIP, "does not build"
        return (BAD, "DX2 failed") if k >= first_bad else (GOOD, "passed")
    return step, calls


@pytest.mark.parametrize("n,first_bad", [(1, 1), (3, 2), (8, 1), (8, 8), (13, 7)])
def test_finds_the_first_bad_patch(n, first_bad):
    step, calls = stepper(first_bad)
    result = bisect_series(n, step)
    assert result.first_bad == first_bad
    assert calls[:2] == [n, 0]                      # both ends checked first
    assert len(calls) <= 2 + (n - 1).bit_length()   # a binary search


def test_skipped_step_is_passed_over():
    step, calls = stepper(5, skip={6})
    result = bisect_series(8, step)
    assert result.first_bad == 5 and 6 in calls
    assert any(s.verdict == SKIP for s in result.steps)


def test_skip_next_to_the_answer_leaves_it_open():
    step, _ = stepper(5, skip={4})     # 3 good, 4 unbuildable, 5 bad: 4 or 5
    result = bisect_series(8, step)
    assert result.first_bad is None and "patches 4..5" in result.note


def test_all_skipped_between_is_said():
    step, _ = stepper(5, skip={2, 3, 4, 5, 6, 7})
    result = bisect_series(8, step)
    assert result.first_bad is None and "could not be told apart" in result.note


def test_ends_that_do_not_hold_stop_early():
    step, calls = stepper(99)             # never bad
    assert bisect_series(4, step).note.startswith("the whole series does not show")
    step, calls = stepper(0)              # bad from the base on
    result = bisect_series(4, step)
    assert result.first_bad is None and "base (no patch) already fails" in result.note
