"""The RP loop's counting, over a recorded WARN from a real DX4 run."""

from __future__ import annotations

from pathlib import Path

from harness import repro
from harness.guest import Result

LOG = (Path(__file__).parent.parent / "data" / "reports" /
       "dx4-race-6.1.0-56-amd64.log").read_text().split("\n", 2)[2]


class RecordedGuest:
    """Prints the recorded WARN in the rounds listed, nothing in the others."""

    def __init__(self, hit_rounds: set[int], extra: str = ""):
        self.hit_rounds, self.extra = hit_rounds, extra
        self.round = 0
        self.commands: list[str] = []

    def run(self, cmd, check=False, timeout=None):
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.commands.append(text)
        if "clear_warn_once" not in text:
            self.round += 1
        return Result(text, 0, "sigbus=0\n", "", 0.01)

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
    assert "2/5 rounds (40%), first in round 2" in rep.summary()
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
    assert "not seen in 3 rounds" in rep.summary()
