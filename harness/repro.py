"""Race reproduction (RP): run one guest command over and over in one boot
until the kernel prints a report whose title carries a signature.

Between rounds `1` goes to /sys/kernel/debug/clear_warn_once, so a
WARN_ON_ONCE that fired in one round can fire again in the next and every
round is counted on its own. The outcome is what a developer chasing a race
wants to paste into a mail: hits / rounds, the time to the first hit, the
parsed report, and the command line that reproduces it.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

from harness.guest import Result, Target
from harness.observe import reports

CLEAR_WARN_ONCE = "/sys/kernel/debug/clear_warn_once"


@dataclass
class Reproduction:
    command: str
    signature: str
    rounds: int = 0
    hits: int = 0
    first_hit_round: int | None = None
    first_hit_seconds: float | None = None
    first: reports.Report | None = None        # the first matching report
    others: list[reports.Report] = field(default_factory=list)  # reports that do not match
    results: list[Result] = field(default_factory=list)          # each round's command
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.hits / self.rounds if self.rounds else 0.0

    def summary(self) -> str:
        if self.first is None:
            return (f"'{self.signature}' not seen in {self.rounds} rounds "
                    f"({self.seconds:.1f}s): {self.command}")
        return (f"'{self.first.title}': {self.hits}/{self.rounds} rounds "
                f"({self.rate:.0%}), first in round {self.first_hit_round} after "
                f"{self.first_hit_seconds:.1f}s; reproduce with: {self.command}")


def reproduce(guest: Target, cmd: str | list[str], signature: str, *, rounds: int,
              until_hit: bool = False, timeout: float | None = None) -> Reproduction:
    """Run cmd up to `rounds` times; a round hits when a report's title
    contains `signature`. Reports that do not match are kept in `others`:
    a race test must not hide a different bug behind the one it chases."""
    text = cmd if isinstance(cmd, str) else shlex.join(cmd)
    out = Reproduction(command=text, signature=signature)
    t0 = time.monotonic()
    guest.dmesg_window()   # what came before is not a round's
    for n in range(1, rounds + 1):
        guest.run(["sh", "-c", f"echo 1 > {CLEAR_WARN_ONCE}"], check=True)
        out.results.append(guest.run(cmd, check=True, timeout=timeout))
        found = reports.parse(guest.dmesg_window())
        hit = [r for r in found if signature in r.title]
        out.others += [r for r in found if signature not in r.title]
        out.rounds = n
        if hit:
            out.hits += 1
            if out.first is None:
                out.first, out.first_hit_round = hit[0], n
                out.first_hit_seconds = time.monotonic() - t0
            if until_hit:
                break
    out.seconds = time.monotonic() - t0
    return out
