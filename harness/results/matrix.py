"""The behaviour matrix: scenario x kernel, expected and seen, from JUnit files.

Tests record their behaviour checks as JUnit properties named kh:<what>
with a JSON {"expected", "seen"} value (the `behaviour` fixture); one JUnit
file a kernel run. This walks them into one table, printed and as HTML.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness.results import compare
from harness.util import progress

TEMPLATES = Path(__file__).parent / "templates"


# The JUnit property of an upstream selftest that names the scenario of the
# same driver, whose rows it joins (RB7 for perf_events' mmap)
BESIDE = "kh-beside"


@dataclass
class Cell:
    expected: object = None
    seen: object = None
    outcome: str = "not run"   # passed, failed, skipped, error, known, not run
    known: str = ""            # the known issue that explains the failure

    @property
    def ok(self) -> bool:
        return self.expected == self.seen


@dataclass
class Matrix:
    columns: list[str] = field(default_factory=list)            # kernel-arch labels
    rows: dict[tuple[str, str], dict[str, Cell]] = field(default_factory=dict)
    beside: dict[str, str] = field(default_factory=dict)    # selftest -> scenario id

    def add_run(self, label: str, junit: Path) -> None:
        self.columns.append(label)
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name", "")
            if not name:
                continue    # pytest's stub for the test Ctrl-C cut short: it did not run
            if compare.is_subtest(case):
                continue    # an upstream selftest's subtest: its binary has the row
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
            props = [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
            checks = [(n[3:], json.loads(v)) for n, v in props if n.startswith("kh:")]
            issue = next((v for n, v in props if n == compare.KNOWN), "")
            beside = next((v for n, v in props if n == BESIDE), "")
            if beside:
                self.beside[name] = beside
            if issue and outcome == "skipped":
                outcome = "known"
            if not checks:
                self.rows.setdefault((name, "test"), {})[label] = Cell("passed", outcome,
                                                                       outcome, issue)
            for what, d in checks:
                # A note (a hit rate, a figure) is shown as seen, never judged.
                expected, seen = (d["note"], d["note"]) if "note" in d else (d["expected"],
                                                                              d["seen"])
                self.rows.setdefault((name, what), {})[label] = Cell(expected, seen, outcome,
                                                                     issue)

    def sorted_rows(self):
        """Scenario by scenario; an upstream selftest right after the
        scenario of its driver (BESIDE), the rest at the end."""
        def key(item):
            (name, what), _ = item
            m = re.search(r"test_([A-Z]+)(\d+)", name) or \
                re.fullmatch(r"([A-Z]+)(\d+)", self.beside.get(name, ""))
            return (m.group(1), int(m.group(2))) if m else ("~", 0), \
                name.startswith(("test_selftest", "test_upstream")), name, what
        return sorted(self.rows.items(), key=key)

    def text(self) -> str:
        head = ["scenario", "check", *self.columns]
        lines = [head]
        for (name, what), cells in self.sorted_rows():
            row = [name.removeprefix("test_"), what]
            for col in self.columns:
                c = cells.get(col)
                if c is None:
                    row.append("-")
                elif c.outcome == "known" and not c.ok:
                    row.append(f"KNOWN {short(c.seen)} ({c.known})")
                elif c.ok:
                    row.append(f"ok {short(c.seen)}")
                else:
                    row.append(f"FAIL {short(c.seen)} (want {short(c.expected)})"
                               if c.outcome != "skipped" else "skipped")
            lines.append(row)
        widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip()
                         for r in lines)

    def html(self) -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        return env.get_template("matrix.html.j2").render(matrix=self, rows=self.sorted_rows(),
                                                          short=short)


def short(v, width: int = 40) -> str:
    """A value in a table cell: JSON unless text, cut to width."""
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= width else s[:width - 3] + "..."


def build(runs: list[tuple[str, Path]]) -> Matrix:
    m = Matrix()
    for label, junit in runs:
        if not junit.exists():
            continue
        try:
            m.add_run(label, junit)
        except (OSError, ET.ParseError) as e:
            # A run that could not write it whole (a full disk) said so already.
            m.columns.remove(label)
            progress(f"{label}: {junit} is unreadable ({e}); left out of the matrix")
    return m
