"""Two runs side by side: what a patch (or a night) changed.

A run is what `kharness run` wrote (an output directory with one junit.xml
per kernel x arch) or JUnit files named directly. Each test's outcome, the
kernel report titles it met (the `kh-reports` property the plugin records)
and its behaviour checks (`kh:<what>` properties) are compared:

- a regression is a test that passed (or skipped) on A and fails or errors
  on B, or a kernel report title that B has and A had not;
- a test that fails on both is shown as such, never as news;
- tests present on one side only are listed, not judged.

Pure over the files: unit-tested on recorded JUnit pairs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness.errors import UsageError
from harness.results import known as knownlib
from harness.results.known import KNOWN, KNOWN_TEXT, NOT_SEEN

TEMPLATES = Path(__file__).parent / "templates"
BAD = ("failed", "error")


@dataclass
class Case:
    outcome: str                                  # passed, failed, error, skipped, known
    message: str = ""
    reports: list[str] = field(default_factory=list)
    checks: dict[str, object] = field(default_factory=dict)   # what -> seen
    alts: dict[str, list[str]] = field(default_factory=dict)  # title -> its other titles
    subtest: bool = False                         # an upstream selftest's subtest
    known: str = ""        # the known issue that explains its failure (outcome "known")
    not_seen: str = ""     # the known issue that expected a failure it did not show
    verdict: str = ""      # --rerun-failures: "flaky 1/3", "deterministic 3/3", ...
    text: str = ""         # the failure's whole text (what a known issue's match reads)

    def names(self, title: str) -> set[str]:
        """A report's title and the titles the same crash has elsewhere."""
        return {title, *self.alts.get(title, ())}


@dataclass
class Run:
    label: str
    cases: dict[str, Case]                        # test name -> case
    source: Path
    where: knownlib.Where | None = None           # what it ran on (JUnit's kh-* properties)

    def judge_known(self, entries: list[knownlib.Entry]) -> None:
        """Failures these known issues explain, as the plugin would have
        judged them: a result the run took for known is a failure again
        unless one of these entries explains it (the run may have had other
        entries, or --known-issues none asks to see every failure)."""
        for case in self.cases.values():
            if case.outcome == "known":
                case.outcome, case.known = "failed", ""
                case.message = case.message.partition("(it failed: ")[2].removesuffix(")") \
                    or case.message
        if self.where is None:
            return
        for name, case in self.cases.items():
            if case.outcome in BAD:
                e = knownlib.explain(entries, self.where, (name,),
                                     [case.message, case.text, *case.reports])
                if e is not None:
                    case.outcome, case.known = "known", e.id


def load_junit(path: Path, label: str = "") -> Run:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise UsageError(f"{path} is not a JUnit file: {e}") from None
    # The suites' own properties, not a test case's of the same name.
    props = {p.get("name", ""): p.get("value", "") for suite in root.iter("testsuite")
             for p in suite.findall("properties/property") if p.get("name") in GLOBAL}
    where = None
    if props.get("kh-kernel") and props.get("kh-arch"):
        where = knownlib.Where(props["kh-kernel"], props.get("kh-spec", ""), props["kh-arch"],
                               props.get("kh-boot", ""), props.get("kh-selftests-version", ""))
    return Run(label or path.parent.name, cases_of(root), path, where)


RERUN = "kh-rerun"      # the plugin's rerun verdict of a failed test
# the plugin's globals
GLOBAL = ("kh-kernel", "kh-arch", "kh-spec", "kh-boot", "kh-where",
          "kh-selftests-version")


SUBTEST = "kh-subtest"    # the property a subtest's result carries: its test's name


def is_subtest(tc: ET.Element) -> bool:
    """An upstream selftest's subtest (its binary's result has the row):
    the property says so; JUnit written before it existed, the name does."""
    if any(p.get("name") == SUBTEST for p in tc.iter("property")):
        return True
    name = tc.get("name", "")
    return name.startswith("test_upstream") and "/" in name.partition("[")[2]


def cases_of(root: ET.Element) -> dict[str, Case]:
    """The test cases below a JUnit element (a file's root, or one testsuite)."""
    cases: dict[str, Case] = {}
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        if not name:
            continue   # pytest's stub for a test that Ctrl-C cut short
        outcome, message, text = "passed", "", ""
        alts: list = []
        for tag, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = tc.find(tag)
            if el is not None:
                outcome, message, text = word, el.get("message", ""), el.text or ""
                break
        case = Case(outcome, message.splitlines()[0] if message else "", subtest=is_subtest(tc),
                    text=text)
        for p in tc.iter("property"):
            pname, value = p.get("name", ""), p.get("value", "")
            if pname == KNOWN and outcome == "skipped":
                case.outcome, case.known = "known", value
            elif pname == KNOWN_TEXT and outcome == "skipped":
                case.text = value
            elif pname == NOT_SEEN:
                case.not_seen = value
            try:
                data = json.loads(value)
            except ValueError:
                continue
            if pname == "kh-reports" and isinstance(data, list):
                case.reports = [str(t) for t in data]
            elif pname == "kh-report-alts" and isinstance(data, list):
                alts = data
            elif pname == RERUN and isinstance(data, dict):
                case.verdict = f"{data.get('verdict')} {data.get('failed')}/{data.get('reruns')}"
            elif pname.startswith("kh:") and isinstance(data, dict):
                case.checks[pname[3:]] = data.get("seen", data.get("note"))
        if alts and len(alts) == len(case.reports):
            case.alts = {t: [str(a) for a in alt] for t, alt in zip(case.reports, alts,
                                                                   strict=True)
                         if isinstance(alt, list)}
        cases[name] = case
    return cases


def load(spec: str | Path) -> list[Run]:
    """A run directory (each junit.xml below it, one run a kernel x arch)
    or one JUnit file."""
    path = Path(spec)
    if path.is_file():
        return [load_junit(path)]
    if not path.is_dir():
        raise UsageError(f"{spec} is neither a kharness run directory nor a JUnit file")
    files = sorted(path.glob("*/junit.xml")) or sorted(path.glob("junit.xml"))
    if not files:
        raise UsageError(f"no junit.xml in {spec} or its subdirectories: give the --out "
                         f"directory of a kharness run, or a JUnit file")
    return [load_junit(f) for f in files]


@dataclass
class Diff:
    a: Run
    b: Run
    new_failures: list[tuple[str, str, str]] = field(default_factory=list)  # name, was, now
    fixed: list[tuple[str, str, str]] = field(default_factory=list)
    newly_skipped: list[tuple[str, str, str]] = field(default_factory=list)
    fail_on_both: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    new_reports: list[tuple[str, str]] = field(default_factory=list)    # title, first test
    gone_reports: list[str] = field(default_factory=list)
    known: list[tuple[str, str]] = field(default_factory=list)     # name, issue id on B
    changed_checks: list[tuple[str, str, object, object]] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        """One line each: what the B side broke."""
        out = [f"{name}: {was} -> {now}" + self._why(name) for name, was, now in
               self.new_failures]
        out += [f"new kernel report: {title} (in {test})" for title, test in self.new_reports
                if not any(test == n for n, _, _ in self.new_failures)]
        return out

    def _why(self, name: str) -> str:
        case = self.b.cases[name]
        verdict = f" <{case.verdict}>" if case.verdict else ""
        if case.reports:
            return f" [{'; '.join(case.reports)}]{verdict}"
        return (f" ({case.message[:120]})" if case.message else "") + verdict

    def text(self, width: int = 78) -> str:
        lines = [*wrap(f"A: {self.a.label} ({self.a.source})", width),
                 *wrap(f"B: {self.b.label} ({self.b.source})", width),
                 f"{len(self.a.cases)} tests on A, {len(self.b.cases)} on B"]

        def section(head: str, items: list[str]) -> None:
            if items:
                lines.append("")
                lines.append(f"{head}:")
                for item in items:
                    lines.extend(wrap(f"  {item}", width))

        section("Regressions", self.regressions)
        section("Newly passing", [f"{n}: {w} -> {now}" for n, w, now in self.fixed])
        section("Newly skipped", [f"{n}: {w} -> {now}" for n, w, now in self.newly_skipped])
        section("Failing on both (not news)", self.fail_on_both)
        section("Known issues on B (not news)", [f"{n}: {i}" for n, i in self.known])
        section("Kernel reports gone", self.gone_reports)
        section("Behaviour changed", [f"{n} {what}: {_s(x)} -> {_s(y)}"
                                      for n, what, x, y in self.changed_checks])
        section("Only on A (removed)", self.removed)
        section("Only on B (added)", self.added)
        lines.append("")
        n = len(self.regressions)
        lines.append("verdict: no regressions" if n == 0 else
                     f"verdict: {n} regression{'s' if n > 1 else ''}")
        return "\n".join(lines)

    def html(self) -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        return env.get_template("compare.html.j2").render(d=self, s=_s)


def _s(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def wrap(line: str, width: int, indent: str = "      ") -> list[str]:
    """Lines of at most width where spaces allow; a word longer than that
    (a path) stays whole on a line of its own."""
    out = []
    while len(line) > width:
        text_at = len(line) - len(line.lstrip())   # a cut must leave some text before it
        cut = line.rfind(" ", text_at + 1, width + 1)
        if cut == -1:
            cut = line.find(" ", width)
            if cut == -1:
                break
        out.append(line[:cut])
        line = indent + line[cut:].lstrip()
    return out + [line]


def compare(a: Run, b: Run) -> Diff:
    d = Diff(a, b)
    for name in sorted(set(a.cases) | set(b.cases)):
        ca, cb = a.cases.get(name), b.cases.get(name)
        if ca is None:
            d.added.append(name)
            if cb is not None and cb.outcome in BAD:
                d.new_failures.append((name, "absent", cb.outcome))
            continue
        if cb is None:
            d.removed.append(name)
            continue
        if cb.outcome in BAD and ca.outcome not in BAD:
            d.new_failures.append((name, ca.outcome, cb.outcome))
        elif ca.outcome in (*BAD, "known") and cb.outcome == "passed":
            d.fixed.append((name, ca.outcome, cb.outcome))
        elif ca.outcome in BAD and cb.outcome in BAD:
            d.fail_on_both.append(name)
        elif cb.outcome == "skipped" and ca.outcome != "skipped":
            d.newly_skipped.append((name, ca.outcome, cb.outcome))
        if cb.outcome == "known":
            d.known.append((name, cb.known))
        for what in sorted(set(ca.checks) & set(cb.checks)):
            if ca.checks[what] != cb.checks[what]:
                d.changed_checks.append((name, what, ca.checks[what], cb.checks[what]))
    # A crash is one whatever title it had (its alternatives name it too):
    # the same bug seen through another frame is neither new nor gone.
    names_a = {n for c in a.cases.values() for t in c.reports for n in c.names(t)}
    names_b = {n for c in b.cases.values() for t in c.reports for n in c.names(t)}
    seen: set[str] = set()
    for name, case in sorted(b.cases.items()):
        if case.outcome == "known":
            continue        # its reports are what the known issue explains
        for t in case.reports:
            if not case.names(t) & (names_a | seen):
                seen |= case.names(t)
                d.new_reports.append((t, name))
    d.gone_reports = sorted({t for c in a.cases.values() for t in c.reports
                             if not c.names(t) & names_b})
    return d


def pair(runs_a: list[Run], runs_b: list[Run]) -> list[tuple[Run, Run]]:
    """Match the runs of two outputs: one each, or by label, or by arch."""
    if len(runs_a) == 1 and len(runs_b) == 1:
        return [(runs_a[0], runs_b[0])]
    by_label = {r.label: r for r in runs_b}
    pairs = [(r, by_label[r.label]) for r in runs_a if r.label in by_label]
    if pairs:
        return pairs
    by_arch = {r.label.rsplit("-", 1)[-1]: r for r in runs_b}
    pairs = [(r, by_arch[r.label.rsplit("-", 1)[-1]]) for r in runs_a
             if r.label.rsplit("-", 1)[-1] in by_arch]
    if not pairs:
        raise UsageError(f"nothing to pair: A has {', '.join(r.label for r in runs_a)}, "
                         f"B has {', '.join(r.label for r in runs_b)}")
    return pairs
