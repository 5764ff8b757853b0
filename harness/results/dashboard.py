"""The nightly dashboard: a static site from merged nights (`report merge`
folders: junit.xml with a testsuite a job, night.json, logs/).

One page a night, the latest as index.html: regressions and fixes against
the night before at the top; then the matrix, grouped by scenario family,
one cell a test x job (kernel x arch), coloured by outcome, its text the
kernel's behaviour, a strip of the last N nights under it and, for a test
failing now, the night it began failing, linked. The latest page adds each
kernel report once, under all its titles, and links races.html: each
race's hit rate a night with its 95% interval, plotted as SVG written here
(a few lines of geometry: no plotting library, nothing that needs a
display, nothing to install).

Calendar days without a night between the first and the last are shown as
missing, never as passed: a night whose artifacts did not arrive is a gap.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness.errors import UsageError
from harness.mounts import remove_tree
from harness.results import compare, known
from harness.results.matrix import short
from harness.results.merge import NIGHT
from harness.stats import wilson
from harness.util import artifact_name, legacy_artifact_name, progress, write_out

TEMPLATES = Path(__file__).parent / "templates"
BAD = "fer"                          # failed, error, kernel report
WORDS = {"p": "passed", "f": "failed", "e": "error", "s": "skipped", "r": "kernel report",
         "k": "known issue", "m": "night missing", "-": "not run"}
FAMILY_ORDER = ("RB", "DX", "MX", "PAT", "FD", "DD", "VF", "UD", "DM", "upstream", "other")
RATE = re.compile(r"(\d+)/(\d+)(?: rounds|:)")   # a repro summary's hits/rounds


@dataclass
class Night:
    date: str
    folder: Path
    commit: str
    kernels: dict[str, dict]                     # job label -> {"kernel", "arch"}
    runs: dict[str, dict[str, compare.Case]]     # job label -> test name -> case
    logs: dict[str, dict[str, Path]] = field(default_factory=dict)  # label -> name -> dir


def load(dirs: list[str]) -> list[Night]:
    """The nights that can be read, oldest first; one line for each that
    cannot (no merged JUnit, a corrupt one, a date seen already)."""
    nights: dict[str, Night] = {}
    for d in dirs:
        folder = Path(d)
        junit = folder / "junit.xml"
        if not folder.is_dir():
            progress(f"{folder}: not a folder; left out")
            continue
        if not junit.is_file():
            progress(f"{folder}: no merged junit.xml (report merge writes one); left out")
            continue
        try:
            night = _night(folder, junit)
        except (OSError, ET.ParseError, ValueError) as e:
            progress(f"{folder}: unreadable ({e}); left out")
            continue
        if night.date in nights:
            progress(f"{folder}: a second night for {night.date} (the first: "
                     f"{nights[night.date].folder}); left out")
            continue
        nights[night.date] = night
    return [nights[d] for d in sorted(nights)]


def _night(folder: Path, junit: Path) -> Night:
    root = ET.parse(junit).getroot()
    meta = json.loads((folder / NIGHT).read_text()) if (folder / NIGHT).is_file() else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{NIGHT} is not a JSON object")
    if not isinstance(meta.get("date", ""), str) or not isinstance(meta.get("jobs", {}), dict):
        raise ValueError(f"{NIGHT}: date must be a YYYY-MM-DD text and jobs an object")
    runs, stamps = {}, []
    for suite in root.iter("testsuite"):
        label = suite.get("name", "") or "job"
        runs[label] = {n: c for n, c in compare.cases_of(suite).items() if not c.subtest}
        if suite.get("timestamp"):
            stamps.append(suite.get("timestamp", ""))
    date = meta.get("date") or (min(stamps)[:10] if stamps else "")
    datetime.date.fromisoformat(date)      # ValueError: no date to place it by
    night = Night(date, folder, str(meta.get("kharness", "unknown")),
                  meta.get("jobs", {}), runs)
    for label in runs:
        dirs = {p.name: p for p in (folder / "logs" / label).glob("*") if p.is_dir()}
        night.logs[label] = {n: dirs[d] for n in runs[label] for d in dirs
                             if d.endswith((artifact_name(n), legacy_artifact_name(n)))}
    return night


def family(name: str) -> str:
    if name.startswith("test_upstream"):
        return "upstream"
    m = re.match(r"test_([A-Z]+)\d", name)
    return m.group(1) if m else "other"


def _char(case: compare.Case) -> str:
    if case.outcome == "known":
        return "k"      # a failure a known issue explains: its own colour, never news
    if case.reports:
        return "r"
    return {"passed": "p", "failed": "f", "error": "e", "skipped": "s"}.get(case.outcome, "e")


def rle(s: str) -> str:
    """'pppff' -> 'p3f2': a strip of 90 nights in a few bytes of the page."""
    return "".join(m.group(0)[0] + str(len(m.group(0))) for m in re.finditer(r"(.)\1*", s))


@dataclass
class Cell:
    status: str
    text: str
    title: str
    strip: str                     # run-length, oldest first
    log: str | None = None         # link to its logs
    since: tuple[str, str] | None = None   # date it began failing, link
    issue: tuple[str, str] | None = None   # the known issue: id, link (its url or the page)


class Site:
    def __init__(self, nights: list[Night], keep: int, entries: list[known.Entry] | None = None):
        self.nights = nights
        self.keep = keep
        self.entries = {e.id: e for e in entries or []}
        first = datetime.date.fromisoformat(nights[0].date)
        last = datetime.date.fromisoformat(nights[-1].date)
        by_date = {n.date: n for n in nights}
        self.days = [(first + datetime.timedelta(d)).isoformat()
                     for d in range((last - first).days + 1)]
        self.on = [by_date.get(d) for d in self.days]           # None: missing
        self.columns = sorted({lb for n in nights for lb in n.runs})
        names = {name for n in nights for r in n.runs.values() for name in r}
        self.rows = sorted(names, key=_row_key)
        # status of every test x job on every day: one char each
        self.grid: dict[tuple[str, str], bytearray] = {}
        blank = b"".join(b"m" if n is None else b"-" for n in self.on)
        for name in self.rows:
            for col in self.columns:
                self.grid[(name, col)] = bytearray(blank)
        for i, night in enumerate(self.on):
            if night is None:
                continue
            for col, cases in night.runs.items():
                for name, case in cases.items():
                    self.grid[(name, col)][i] = ord(_char(case))

    def page(self, i: int) -> str:
        return "index.html" if i == len(self.on) - 1 else f"night-{self.days[i]}.html"

    def kernel_of(self, col: str, upto: int) -> str:
        for night in reversed(self.on[:upto + 1]):
            if night is not None and col in night.kernels:
                return night.kernels[col].get("kernel", "")
        return ""

    def changes(self, i: int) -> tuple[list, list, str | None]:
        """Regressions and fixes of day i against the night before it."""
        prev = next((j for j in range(i - 1, -1, -1) if self.on[j] is not None), None)
        if prev is None:
            return [], [], None
        regressions, fixes = [], []
        now_night = self.on[i]
        assert now_night is not None
        for (name, col), strip in self.grid.items():
            was, now = chr(strip[prev]), chr(strip[i])
            case = now_night.runs.get(col, {}).get(name)
            if now in BAD and was not in BAD and case is not None:
                why = case.message or ", ".join(case.reports) or WORDS[now]
                regressions.append((name, col, WORDS.get(was, was), WORDS[now], why))
            elif was in BAD and now == "p":
                fixes.append((name, col, WORDS[was]))
        return regressions, fixes, self.days[prev]

    def cell(self, i: int, name: str, col: str) -> Cell:
        strip = self.grid[(name, col)]
        status = chr(strip[i])
        night = self.on[i]
        case = night.runs.get(col, {}).get(name) if night else None
        text, title = WORDS[status], WORDS[status]
        issue = None
        if case is not None:
            checks = [f"{w}: {short(v, 32)}" for w, v in case.checks.items()]
            text = checks[0] if checks else WORDS[status]
            title = "\n".join([WORDS[status], *(case.reports or []),
                               *([case.message] if case.message else []), *checks])
            if case.known:
                e = self.entries.get(case.known)
                issue = (case.known, e.url if e and e.url else f"issues.html#{case.known}")
                text = f"known: {case.known}"
        log = None
        if night is not None and name in night.logs.get(col, {}):
            log = f"logs/{self.days[i]}/{col}/{night.logs[col][name].name}/index.html"
        since = None
        if status in BAD:
            j = i
            while j > 0 and (chr(strip[j - 1]) in BAD or chr(strip[j - 1]) == "m"):
                j -= 1
            while chr(strip[j]) == "m":
                j += 1
            since = (self.days[j], self.page(j))
        lo = max(0, i - self.keep + 1)
        return Cell(status, text, title, rle(strip[lo:i + 1].decode()), log, since, issue)

    def issues(self, i: int) -> list[dict]:
        """Each known issue of the file or the nights: the nights it was
        present (a failure it explained) and not seen (a test it expects to
        fail passed), first and last seen; latest first."""
        present: dict[str, dict[str, set[str]]] = {}     # id -> date -> jobs
        absent: dict[str, dict[str, set[str]]] = {}
        for d, col, _, case in self.window(i):
            if case.known:
                present.setdefault(case.known, {}).setdefault(self.days[d], set()).add(col)
            if case.not_seen:
                absent.setdefault(case.not_seen, {}).setdefault(self.days[d], set()).add(col)
        out = []
        for iid in sorted(set(self.entries) | set(present) | set(absent)):
            e = self.entries.get(iid)
            nights = sorted(present.get(iid, {}))
            out.append({
                "id": iid, "title": e.title if e else "(not in the known-issues file)",
                "kind": e.kind if e else "", "url": e.url if e else "",
                "nights": {d: sorted(j) for d, j in present.get(iid, {}).items()},
                "not_seen": {d: sorted(j) for d, j in absent.get(iid, {}).items()},
                "first": nights[0] if nights else None, "last": nights[-1] if nights else None,
                "gone_since": nights[-1] if nights and nights[-1] != self.days[i] else None})
        return sorted(out, key=lambda r: (r["last"] or "", r["id"]), reverse=True)

    def window(self, i: int) -> Iterator[tuple[int, str, str, compare.Case]]:
        """Every case of the nights the history shows at day i: (day, job, test, case)."""
        for d in range(max(0, i - self.keep + 1), i + 1):
            night = self.on[d]
            if night is not None:
                for col, cases in night.runs.items():
                    for name, case in cases.items():
                        yield d, col, name, case

    def races(self, i: int) -> list[dict]:
        """Every hit rate a test noted (repro summaries), a series a test x
        check x job, one point a night that has it."""
        series: dict[tuple[str, str, str], list] = {}
        lo = max(0, i - self.keep + 1)
        for d, col, name, case in self.window(i):
            for what, seen in case.checks.items():
                m = RATE.search(seen) if isinstance(seen, str) else None
                if m and int(m.group(2)) > 0:
                    series.setdefault((name, what, col), []).append(
                        (d - lo, self.days[d], int(m.group(1)), int(m.group(2))))
        # a race that never hit here is a row of zeros: the matrix says it
        return [{"name": name, "what": what, "col": col,
                 "svg": plot(points, i - lo + 1), "points": points}
                for (name, what, col), points in sorted(series.items())
                if any(p[2] for p in points)]

    def reports(self, i: int) -> list[dict]:
        """Each kernel report once: titles that name the same crash (the
        alternative titles the parser gave) are one entry."""
        parent: dict[str, str] = {}

        def find(t: str) -> str:
            while parent.setdefault(t, t) != t:
                t = parent[t]
            return t
        seen: list[tuple[str, str, str, str]] = []     # title, date, col, test
        for d, col, name, case in self.window(i):
            for title in case.reports:
                for alt in case.alts.get(title, []):
                    parent[find(alt)] = find(title)
                seen.append((title, self.days[d], col, name))
        groups: dict[str, dict] = {}
        for title, date, col, name in seen:
            g = groups.setdefault(find(title), {"titles": {}, "nights": set(), "jobs": set(),
                                                "tests": set()})
            g["titles"][title] = g["titles"].get(title, 0) + 1
            g["nights"].add(date)
            g["jobs"].add(col)
            g["tests"].add(name)
        out = []
        for g in groups.values():
            titles = sorted(g["titles"], key=lambda t: -g["titles"][t])
            out.append({"title": titles[0], "also": titles[1:], "nights": sorted(g["nights"]),
                        "jobs": sorted(g["jobs"]), "tests": sorted(g["tests"])})
        return sorted(out, key=lambda g: (g["nights"][-1], g["title"]), reverse=True)


def _row_key(name: str) -> tuple:
    fam = family(name)
    m = re.match(r"test_[A-Z]+(\d+)", name)
    return (FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER), fam,
            int(m.group(1)) if m else 0, name)


def plot(points: list[tuple[int, str, int, int]], days: int, w: int = 320,
         h: int = 110) -> str:
    """Hit rate a night with its Wilson 95% interval: a point and a bar
    each, x the night, y 0-100%."""
    left, right, top, bottom = 34, 8, 8, 18
    span = max(days - 1, 1)

    def x(d: int) -> float:
        return left + (w - left - right) * d / span

    def y(r: float) -> float:
        return top + (h - top - bottom) * (1 - r)
    parts = [f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
             f'<line x1="{left}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" class="axis"/>',
             f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{y(1)}" class="axis"/>',
             f'<text x="{left - 4}" y="{y(1) + 4}" class="tick">100%</text>',
             f'<text x="{left - 4}" y="{y(0) + 4}" class="tick">0%</text>']
    for d, date, hits, rounds in points:
        lo, hi = wilson(hits, rounds)
        cx = x(d)
        parts.append(f'<line x1="{cx:.1f}" y1="{y(lo):.1f}" x2="{cx:.1f}" y2="{y(hi):.1f}" '
                     f'class="ci"/>')
        parts.append(f'<circle cx="{cx:.1f}" cy="{y(hits / rounds):.1f}" r="3" class="pt">'
                     f'<title>{html.escape(date)}: {hits}/{rounds} ({100 * hits / rounds:.0f}%, '
                     f'95% {100 * lo:.0f}-{100 * hi:.0f}%)</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _check_into(dirs: list[str], into: Path) -> None:
    """The site's folder is its own: never a night's (its pages would mix
    with the night's files, and the next site would read them as one)."""
    where = into.resolve()
    for d in dirs:
        night = Path(d).resolve()
        if (night / "junit.xml").is_file() and (where == night or night in where.parents):
            raise UsageError(f"--into {into}: it is inside the night folder {d}; give the "
                             f"site a folder of its own")
    if (where / "junit.xml").is_file() or (where / NIGHT).is_file():
        raise UsageError(f"--into {into}: it holds a night's results (junit.xml, {NIGHT}); "
                         f"give the site a folder of its own")


def write(dirs: list[str], into: Path, *, nights: int = 30,
          entries: list[known.Entry] | None = None) -> int:
    """The site for these night folders into `into`: 0, or 1 if no night
    could be read (each one that could not said why)."""
    _check_into(dirs, into)
    loaded = load(dirs)
    if not loaded:
        progress("no night could be read: nothing to show")
        return 1
    site = Site(loaded, nights, entries)
    into.mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("site.html.j2")
    families: dict[str, list[str]] = {}
    for name in site.rows:
        families.setdefault(family(name), []).append(name)
    last = len(site.on) - 1
    for i, night in enumerate(site.on):
        if night is None:
            continue
        regressions, fixes, before = site.changes(i)
        latest = i == last
        page = template.render(
            site=site, i=i, night=night, latest=latest, families=families,
            regressions=regressions, fixes=fixes, before=before,
            kernels={c: site.kernel_of(c, i) for c in site.columns},
            reports=site.reports(i) if latest else [],
            words=WORDS, nav=[(d, site.page(j) if site.on[j] else None)
                              for j, d in enumerate(site.days)][-site.keep:])
        write_out(into / site.page(i), page)
        _copy_logs(night, into / "logs" / night.date)
    # the plots on a page of their own: a night's page stays small (README)
    write_out(into / "races.html", env.get_template("races.html.j2").render(
        night=site.on[last], races=site.races(last)))
    write_out(into / "issues.html", env.get_template("issues.html.j2").render(
        night=site.on[last], issues=site.issues(last), days=site.days[-site.keep:]))
    shutil.copyfile(TEMPLATES / "site.js", into / "site.js")
    shutil.copyfile(TEMPLATES / "site.css", into / "site.css")
    missing = [d for d, n in zip(site.days, site.on, strict=True) if n is None]
    progress(f"{len(loaded)} nights from {site.days[0]} to {site.days[-1]}"
             + (f"; {len(missing)} missing ({', '.join(missing[-5:])})" if missing else ""))
    return 0


NIGHT_FILES = ("junit.xml", NIGHT, "logs")


def add_night(merged: Path, previous: Path | None, keep: int) -> Path:
    """The nights a dashboard is drawn from, in merged/nights/<date>: the
    nights the previous night's artifact carried (previous, a folder of
    night folders; absent on the first night), tonight's (merged's JUnit,
    night.json and logs) and no more than the newest keep. A folder is
    pruned only if it is a night (night.json in it), never through a
    mount. What pipelines call between `report merge` and `report site`."""
    meta = merged / NIGHT
    if not meta.is_file():
        raise UsageError(f"{merged}: no {NIGHT}; run `kharness report merge ... --into "
                         f"{merged}` first")
    nights = merged / "nights"
    if previous is not None and previous.is_dir() and previous.resolve() != nights.resolve():
        for old in sorted(previous.iterdir()):
            if (old / NIGHT).is_file() and not (nights / old.name).exists():
                shutil.copytree(old, nights / old.name, symlinks=True)
    date = json.loads(meta.read_text()).get("date", "")
    datetime.date.fromisoformat(date)
    tonight = nights / date
    if tonight.exists():
        remove_tree(tonight)
    tonight.mkdir(parents=True)
    for name in NIGHT_FILES:
        src = merged / name
        if src.is_dir():
            shutil.copytree(src, tonight / name, symlinks=True)
        elif src.is_file():
            shutil.copyfile(src, tonight / name)
    ours = sorted(d for d in nights.iterdir() if (d / NIGHT).is_file())
    for old in ours[:-keep]:
        remove_tree(old)
    progress(f"nights: {len(ours[-keep:])} in {nights}, tonight {date}"
             + (f"; {len(ours) - keep} older pruned" if len(ours) > keep else ""))
    return tonight


def _copy_logs(night: Night, into: Path) -> None:
    """A failed test's logs, with a page listing them (a static host shows
    no folder listings)."""
    for label, tests in night.logs.items():
        for src in tests.values():
            dest = into / label / src.name
            if dest.exists():
                continue
            shutil.copytree(src, dest)
            files = sorted(p.name for p in dest.iterdir() if p.name != "index.html")
            items = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>'
                            for f in files)
            write_out(dest / "index.html",
                      f'<!doctype html><meta charset="utf-8"><title>{html.escape(src.name)}'
                      f'</title><h1>{html.escape(label)}: {html.escape(src.name)}</h1>'
                      f'<ul>{items}</ul>\n')
