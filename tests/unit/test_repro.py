"""The RP loop's counting, over a recorded WARN from a real DX4 run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import stats
from harness.commands import repro
from harness.guest import Result

LOG = (Path(__file__).parent.parent / "data" / "reports" /
       "dx4-race-6.1.0-56-amd64.log").read_text().split("\n", 2)[2]


class RecordedGuest:
    """Prints the recorded WARN in the rounds listed, nothing in the others."""

    def __init__(self, hit_rounds: set[int], extra: str = "", delay: float = 0.0):
        self.hit_rounds, self.extra, self.delay = hit_rounds, extra, delay
        self.round = 0
        self.commands: list[str] = []

    def run(self, cmd, check=False, timeout=None):
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.commands.append(text)
        if "clear_warn_once" not in text:
            self.round += 1
            time.sleep(self.delay)
        return Result(text, 0, "sigbus=0\n", "", 0.01)

    def alive(self):
        return True

    def poweroff(self):
        self.off = True

    def dmesg_window(self):
        if self.round in self.hit_rounds:
            return LOG + self.extra
        return ""


def test_counts_hits_and_first_round():
    g = RecordedGuest({2, 4})
    rep = repro.reproduce(g, ["khmap", "race"], "WARNING in insert_pfn", rounds=5)
    assert (rep.rounds, rep.hits, rep.first_hit_round) == (5, 2, 2)
    assert rep.first.title == "WARNING in insert_pfn" and not rep.others
    assert sum("clear_warn_once" in c for c in g.commands) == 5
    assert "2/5 rounds (40%, 95% interval 12%-77%)" in rep.summary()
    assert "2.5 rounds and" in rep.summary() and "first in round 2" in rep.summary()
    assert rep.summary().endswith("reproduce with: khmap race")


def test_until_hit_stops_and_other_reports_are_kept():
    rss = "\n[    9.1] BUG: Bad rss-counter state mm:0000 type:MM_FILEPAGES val:-1\n"
    g = RecordedGuest({3}, extra=rss)
    rep = repro.reproduce(g, "khmap race", "WARNING in insert_pfn", rounds=10, until_hit=True)
    assert (rep.rounds, rep.hits) == (3, 1)
    assert [r.title for r in rep.others] == ["BUG: Bad rss-counter state"]


def test_no_hit():
    rep = repro.reproduce(RecordedGuest(set()), "x", "WARNING in insert_pfn", rounds=3)
    assert rep.hits == 0 and rep.first is None
    assert "not seen: 0/3: hit rate below 63% at 95%" in rep.summary()


@pytest.mark.parametrize("hits,n,lo,hi", [
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
    (18, 20, 0.6990, 0.9721), (1, 300, 0.0005885, 0.01862)])
def test_wilson_interval(hits, n, lo, hi):
    got = stats.wilson(hits, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_no_hit_says_what_the_rounds_rule_out():
    rep = repro.Reproduction("x", "WARNING", rounds=300)
    assert rep.rate_text() == "0/300: hit rate below 1.0% at 95%"
    assert stats.zero_hit_bound(300) == pytest.approx(0.00994, abs=1e-4)
    assert rep.to_dict()["upper_bound95"] == pytest.approx(0.00994, abs=1e-4)


def test_time_budget_ends_the_rounds():
    g = RecordedGuest(set())
    t0 = time.monotonic()
    rep = repro.reproduce(g, "x", "WARNING in insert_pfn", rounds=None, budget=0.3)
    assert 0.25 < time.monotonic() - t0 < 5 and rep.rounds == g.round > 0


def test_parallel_guests_share_the_rounds_and_stop_at_the_first_hit():
    guests = [RecordedGuest(set(), delay=0.01), RecordedGuest({3}, delay=0.01)]
    rep = repro.reproduce_parallel(lambda i: guests[i], 2, "x", "WARNING in insert_pfn",
                                   rounds=40, until_hit=True)
    assert rep.hits == 1 and rep.guests == 2
    assert rep.rounds == guests[0].round + guests[1].round < 40
    assert all(getattr(g, "off", False) for g in guests)      # every guest powered off
    rep = repro.reproduce_parallel(lambda i: RecordedGuest(set()), 2, "x", "W", rounds=40)
    assert rep.rounds == 40 and rep.first is None
