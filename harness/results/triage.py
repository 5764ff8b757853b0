"""`kharness triage RUN...`: the failures of runs that no known issue
explains, grouped by what they have in common, each group with where it
failed and an entry for the known-issues file, ready to paste and finish.

A failure's signature: the title of the kernel report it met (syzkaller's
titles are made to be one per bug); for an upstream selftest's subtest,
its binary and its reason; else the assertion's message, its numbers and
addresses made general, so one bug on two kernels is one group.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

from harness.results import compare
from harness.results.compare import BAD, Run

HEX = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-f]{8,}\b")
NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
# test_upstream_mm[<binary>[@<device>]] and its subtests [<binary>/<subtest>]
UPSTREAM = re.compile(r"(test_upstream\w*)\[([^/@\]]+)(@[^/\]]+)?(?:/(.*))?\]")


def general(message: str) -> str:
    """A message with its addresses and numbers made general."""
    return NUMBER.sub("N", HEX.sub("ADDR", message.strip().splitlines()[0] if message else ""))


def signature(name: str, case: compare.Case) -> str:
    if case.reports:
        return case.reports[0]
    m = UPSTREAM.fullmatch(name)
    if m:
        return f"{m.group(2)}: {_reason(m.group(2), m.group(4), case.message)}"
    return f"{name.partition('[')[0]}: {general(case.message) or case.outcome}"


def _reason(binary: str, subtest: str | None, message: str) -> str:
    """Why an upstream result failed, without the names that differ between
    the results of one cause (its subtest's, the binary's counts): 'fail'
    for a plain failure, a kernel report's title, a crash."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if subtest is None:         # the binary's result: its subtests say why
        return "fail" if re.match(rf"Failed: {re.escape(binary)}\S*: fail\b", first) \
            else general(first.removeprefix("Failed: "))
    first = first.replace(subtest, "").strip()
    return "fail" if first.lower() in ("", "fail", "failed") else general(first)


@dataclass
class Group:
    signature: str
    failures: list[tuple[str, str]] = field(default_factory=list)   # (where, test)

    @property
    def tests(self) -> list[str]:
        return sorted({t for _, t in self.failures})

    @property
    def wheres(self) -> list[str]:
        return sorted({w for w, _ in self.failures})

    def patterns(self) -> list[str]:
        """The group's tests as few patterns: an upstream binary's subtests
        as one, the rest by name."""
        out: list[str] = []
        for t in self.tests:
            m = UPSTREAM.fullmatch(t)
            p = f"{m.group(1)}[{m.group(2)}*" if m else t
            if p not in out:
                out.append(p)
        return out

    def entry(self, runs: dict[str, Run]) -> str:
        """A [[issue]] for the known-issues file: kind and url are the
        reader's to decide, the rest is what the runs showed."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.signature.lower()).strip("-")[:48] or "issue"
        wheres = [where for w in self.wheres if (where := runs[w].where) is not None]
        specs = sorted({w.spec for w in wheres if w.spec})
        arches = sorted({w.arch for w in wheres})
        core = self.signature.split(": ", 1)[-1] if ": " in self.signature else self.signature
        match = "".join(r"\d+(?:\.\d+)?" if part == "N" else "(?:0x)?[0-9a-f]+"
                        if part == "ADDR" else re.escape(part)
                        for part in re.split(r"\b(N|ADDR)\b", core))
        lines = ["[[issue]]", f'id = "{slug}"', f"title = {_q(self.signature)}",
                 'kind = "kernel-bug"   # or missing-feature, flaky, harness, environment',
                 'url = ""              # the fix or the report: a kernel-bug needs one',
                 "tests = [" + ", ".join(_q(p) for p in self.patterns()) + "]"]
        if specs:
            lines.append("kernels = [" + ", ".join(_q(s) for s in specs) + "]")
        if arches:
            lines.append("arches = [" + ", ".join(_q(a) for a in arches) + "]")
        lines += [f"match = {_q(match)}", f'added = "{datetime.date.today().isoformat()}"']
        return "\n".join(lines)


def _q(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def groups(runs: list[Run]) -> list[Group]:
    """The unknown failures of the runs, by signature, the largest first."""
    found: dict[str, Group] = {}
    for run in runs:
        for name, case in sorted(run.cases.items()):
            if case.outcome not in BAD:
                continue
            sig = signature(name, case)
            found.setdefault(sig, Group(sig)).failures.append((run.label, name))
    return sorted(found.values(), key=lambda g: (-len(g.failures), g.signature))


def text(runs: list[Run]) -> tuple[str, int]:
    """The report, and how many failures no known issue explains."""
    seen: dict[str, int] = {}
    for r in runs:          # two runs of one kernel (two nights): apart
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.source.parent.parent.name})"
    by_label = {r.label: r for r in runs}
    gs = groups(runs)
    known = sum(c.outcome == "known" for r in runs for c in r.cases.values())
    total = sum(len(g.failures) for g in gs)
    lines = [f"{len(runs)} run(s): {total} failure(s) no known issue explains, in "
             f"{len(gs)} group(s); {known} known"]
    for i, g in enumerate(gs, 1):
        lines += ["", f"{i}. {g.signature}", f"   {len(g.failures)} failure(s) on "
                  f"{', '.join(g.wheres)}"]
        lines += [f"   {t}" for t in g.tests[:8]]
        if len(g.tests) > 8:
            lines.append(f"   ... and {len(g.tests) - 8} more")
        lines += ["", *g.entry(by_label).splitlines()]
    return "\n".join(lines), total
