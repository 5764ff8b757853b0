"""KTAP (and the TAP 13 kselftest prints) from one test binary, parsed into
results: a pure function over its output, silent, tolerant of what real
selftests print.

Handled because the mm selftests do it (outputs in tests/data/ktap/):
  - no "TAP version" line (mremap_test): results still count;
  - the subtest name only in the directive ("ok 3 # SKIP Basic COW ... with
    swap", cow): the text is the name, the diagnostic before it the reason;
  - the same name twice (mkdirty): the second is "name #2";
  - a plan with fewer results (a crash mid-run): the missing ones are named
    in problems;
  - "1..0 # SKIP reason": the binary skipped as a whole;
  - "Bail out!": a problem, results so far kept.
Nested subtests (indented KTAP) are diagnostics here: kselftest binaries
print one level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PASS, FAIL, SKIP, XFAIL, XPASS, ERROR = "pass", "fail", "skip", "xfail", "xpass", "error"

VERSION = re.compile(r"^\s*(K?TAP) version (\d+)")
PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#\s*(\w+)\s*(.*))?$")
RESULT = re.compile(r"^(ok|not ok)\s+(\d+)\b\s*(?:-\s*)?(.*)$")
DIRECTIVE = re.compile(r"(?:^|\s)#\s*(SKIP|XFAIL|XPASS|TODO|error)\b:?\s*(.*)$", re.I)
TOTALS = re.compile(r"^# Totals: (.*)$")
BAIL = re.compile(r"^Bail out!\s*(.*)$")


@dataclass
class Case:
    number: int
    name: str
    status: str                 # PASS, FAIL, SKIP, XFAIL, XPASS, ERROR
    reason: str = ""            # the directive's text, or the diagnostic that explains it
    output: list[str] = field(default_factory=list)   # diagnostics since the last result


@dataclass
class Run:
    version: str = ""           # "TAP 13", "KTAP 1", or "" when none was printed
    plan: int | None = None
    skip_all: str | None = None  # "1..0 # SKIP reason"
    cases: list[Case] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)     # lines after the last result

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASS, FAIL, SKIP, XFAIL, XPASS, ERROR)}
        for c in self.cases:
            out[c.status] += 1
        return out

    @property
    def complete(self) -> bool:
        return self.plan is None or len(self.cases) >= self.plan


def _status(ok: bool, directive: str | None) -> str:
    d = (directive or "").upper()
    if d == "SKIP":
        return SKIP
    if d in ("XFAIL", "TODO"):
        return XFAIL if ok or d == "TODO" else FAIL
    if d == "XPASS":
        return XPASS
    if d == "ERROR":
        return ERROR
    return PASS if ok else FAIL


def reason_from(diags: list[str]) -> str:
    """The last diagnostic before a result, without its '# ', that is not a
    progress line ([RUN], [INFO], the harness's RUN)."""
    for line in reversed(diags):
        text = line.lstrip("#").strip()
        if text and not text.startswith(("[RUN]", "[INFO]", "RUN ")):
            return text
    return ""


def _started(diags: list[str]) -> str:
    """What the last "# [RUN] <what>" line since the last result names."""
    for line in reversed(diags):
        if m := re.match(r"^#\s*\[RUN\]\s*(.+)$", line):
            return m.group(1).strip()
    return ""


CONTEXT = re.compile(r"^#\s*\[(?:RUN|INFO)\]\s*(.+)$")


def _unique_names(cases: list[Case]) -> None:
    """A name printed more than once (mkdirty prints "SIGSEGV generated, page
    not modified" for each of its cases) takes the [RUN]/[INFO] line that
    came before it; what is still repeated gets #2, #3."""
    count: dict[str, int] = {}
    for c in cases:
        count[c.name] = count.get(c.name, 0) + 1
    for c in cases:
        if count[c.name] > 1:
            context = [m.group(1).strip() for ln in c.output if (m := CONTEXT.match(ln))]
            if context and context[-1] != "detected THP size":
                c.name = f"{context[-1]}: {c.name}"
    seen: dict[str, int] = {}
    for c in cases:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:
            c.name = f"{c.name} #{seen[c.name]}"


def parse(text: str) -> Run:
    """A selftest's output as a Run: its cases with names and reasons, and
    what is wrong with the output itself (short plan, Bail out!, a Totals
    line that disagrees). Pure: nothing is printed."""
    run = Run()
    diags: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if _header_line(line, run):
            continue
        m = RESULT.match(line)
        if not m:
            diags.append(line)
            continue
        run.cases.append(_case(m, diags))
        diags = []
    run.tail = diags
    if not run.cases and run.plan is None:
        _progress_lines(text, run)
    _unique_names(run.cases)
    _check_counts(run)
    return run


def _header_line(line: str, run: Run) -> bool:
    """The version, plan, Totals and Bail out! lines, taken into run."""
    if m := VERSION.match(line):
        run.version = run.version or f"{m.group(1)} {m.group(2)}"
    elif m := PLAN.match(line):
        run.plan = int(m.group(1))
        if run.plan == 0 and (m.group(2) or "").upper() == "SKIP":
            run.skip_all = m.group(3).strip() or "no reason given"
    elif m := TOTALS.match(line):
        run.totals = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(1))}
    elif m := BAIL.match(line):
        run.problems.append(f"Bail out! {m.group(1)}".strip())
    else:
        return False
    return True


def _case(m: re.Match, diags: list[str]) -> Case:
    """One result line (and the diagnostics before it) as a Case."""
    ok, number, rest = m.group(1) == "ok", int(m.group(2)), m.group(3).strip()
    directive, dtext = None, ""
    if d := DIRECTIVE.search(rest):
        directive, dtext = d.group(1), d.group(2).strip()
        rest = rest[:d.start()].strip()
    status = _status(ok, directive)
    name, reason = rest, dtext
    started = _started(diags)
    if not name and dtext and started and started != dtext:
        # 6.12's cow: "# [RUN] <name>", then "ok 54 # SKIP <reason>"
        name, reason = started, dtext
    elif not name and dtext:
        # 7.2's cow: "ok 7 # SKIP <subtest name>", the reason printed
        # before it; uffd-unit-tests: "ok 26 # SKIP <name> (<reason>)"
        # when nothing was printed before it and the parentheses hold a
        # phrase (cow's names end in "(16 kB)", pagemap_ioctl's in "(dirty)")
        name, reason = dtext, reason_from(diags)
        paren = re.fullmatch(r"(.+?)\s+\(([^()]+)\)", dtext)
        if not reason and paren and len(paren.group(2).split()) >= 3:
            name, reason = paren.group(1), paren.group(2)
    elif status in (SKIP, XFAIL, FAIL, ERROR) and not reason:
        reason = reason_from(diags)
    return Case(number, name or f"test {number}", status, reason, diags)


def _check_counts(run: Run) -> None:
    """A Totals line that disagrees with the results, a plan not met."""
    if run.totals:
        said = {k: run.totals.get(k, 0) for k in (PASS, FAIL, SKIP, XFAIL, XPASS, ERROR)}
        if said != run.counts():
            run.problems.append(f"the Totals line ({m_totals(said)}) disagrees with the "
                                f"results ({m_totals(run.counts())})")
    if run.plan is not None and run.skip_all is None and len(run.cases) < run.plan:
        run.problems.append(f"planned {run.plan} results, printed {len(run.cases)}: the "
                            f"binary stopped before result {len(run.cases) + 1}")


PROGRESS = re.compile(r"^Testing (.+?)\.\.\. (done|skipped|failed)(?: \[reason: (.*)\])?$")


def _progress_lines(text: str, run: Run) -> None:
    """uffd-unit-tests before 6.13 prints no KTAP: "Testing <name>... done",
    "... skipped [reason: R]", "... failed [reason: R]"; a line cut short by
    a crash is not a result (the exit status tells)."""
    status = {"done": PASS, "skipped": SKIP, "failed": FAIL}
    for line in text.splitlines():
        if m := PROGRESS.match(line.rstrip()):
            run.cases.append(Case(len(run.cases) + 1, m.group(1), status[m.group(2)],
                                  m.group(3) or ""))
    if run.cases:
        run.version = "uffd-unit-tests lines"


def m_totals(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items() if v)


def listed(text: str) -> list[str]:
    """The full test names (fixture[.variant].test) a kselftest_harness
    binary's -l table gives: each fixture's tests run for each of its
    variants (none: the test alone)."""
    names: list[str] = []
    fixture, variants, tests = "", list[str](), list[str]()

    def flush() -> None:
        for v in variants or [""]:
            names.extend(f"{fixture}{'.' + v if v else ''}.{t}" for t in tests)

    for line in text.splitlines():
        if not line.strip() or line.startswith("# FIXTURE"):
            continue
        if line.startswith("-----"):
            flush()
            fixture, variants, tests = "", [], []
            continue
        cols = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        # "%-20s %-25s %s": the variant starts right after the fixture's
        # field (longer than 20 where the fixture's name is, on its row
        # only), a test anywhere after that.
        variant_col = 21
        if cols and cols[0][0] == 0:
            fixture = cols.pop(0)[1]
            variant_col = max(20, len(fixture)) + 1
        for start, word in cols:
            (variants if start == variant_col else tests).append(word)
    flush()
    return names
