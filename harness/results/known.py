"""Known issues: failures that are understood (a feature the kernel lacks,
a kernel bug with its fix, a flake, the rig), so that a run is red only
for what is new (docs/known-issues.md).

A file of [[issue]] entries (ci/known-issues.toml is shipped and used by
default). A failed test matches an entry when its name or id matches one
of the entry's `tests` patterns, the run's kernel, arch and boot path fall
within the entry's, and, if the entry has `match`, its failure message or
one of its kernel reports' titles matches that pattern: a different
failure of the same test is never swallowed.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.tomlfile import Reader

KINDS = ("missing-feature", "kernel-bug", "flaky", "harness", "environment")
KEYS = {"id", "title", "kind", "url", "tests", "kernels", "selftests", "arches", "boot",
        "match", "added"}
NONE = "none"
ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
# The JUnit properties a result carries: the entry that explains its
# failure, or the entry that expected one it did not show.
KNOWN, NOT_SEEN = "kh-known", "kh-known-not-seen"
# A known result's whole failure (JUnit keeps only its skip message), so
# that triage and compare judge it again as the run did.
KNOWN_TEXT, TEXT_LIMIT = "kh-known-failure", 20000
RANGE = re.compile(r"(>=|<=|==|<|>)?\s*(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Where:
    """What a run ran on, as an entry's filters read it."""
    release: str        # 6.12.118+deb13-amd64
    spec: str           # debian:6.12, build:<key>
    arch: str
    boot: str           # initramfs, vng, ssh
    selftests: str = ""  # the `make kernelversion` of the upstream selftests run, if any

    @property
    def version(self) -> tuple[int, int, int]:
        return _version(self.release)


def _version(release: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (0, 0, 0)


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    kind: str
    tests: tuple[str, ...]
    url: str = ""
    kernels: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    boot: tuple[str, ...] = ()
    match: str = ""
    added: str = ""
    file: str = ""
    line: int = 0
    patterns: tuple[re.Pattern, ...] = field(default=(), compare=False, repr=False)
    # Version ranges of the upstream selftests' tree: a test that came with
    # a feature fails on older kernels only where a newer tree's tests run.
    selftests: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.id}: {self.title}"

    def applies(self, where: Where) -> bool:
        """The entry speaks of this kernel, arch and boot path."""
        return ((not self.arches or where.arch in self.arches)
                and (not self.boot or where.boot in self.boot)
                and (not self.kernels or any(_kernel_matches(k, where) for k in self.kernels))
                and (not self.selftests or bool(where.selftests) and any(
                    _in_range(r, _version(where.selftests)) for r in self.selftests)))

    def covers(self, *names: str) -> bool:
        """The entry names this test (its JUnit name or its node id)."""
        return any(p.fullmatch(n) for p in self.patterns for n in names if n)

    def concerns(self, names: list[str]) -> bool:
        """Some of these tests (or their subtests, results of their own
        that only show at run time) are the entry's to judge."""
        heads = [re.split(r"[*?/]", t)[0] for t in self.tests]
        return any(n.startswith(h) or h.startswith(n.rstrip("]")) for h in heads for n in names)

    def explains(self, texts: list[str]) -> bool:
        return not self.match or any(re.search(self.match, t) for t in texts if t)


def _kernel_matches(item: str, where: Where) -> bool:
    """`<6.13`, `>=6.1,<6.13` (all must hold), or a kernel spec with * (`debian:6.12`)."""
    if ":" in item:
        return glob(item).fullmatch(where.spec) is not None
    return _in_range(item, where.version)


def _in_range(item: str, version: tuple[int, int, int]) -> bool:
    """`<6.13`, `>=6.1,<6.13`: all must hold (a range without a patch
    level compares major.minor only)."""
    for cond in item.split(","):
        m = RANGE.fullmatch(cond.strip())
        assert m is not None     # checked at load
        want = (int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))
        have = version if m.group(4) else version[:2] + (0,)
        if not {"==": have == want, ">=": have >= want, "<=": have <= want,
                "<": have < want, ">": have > want}[m.group(1) or "=="]:
            return False
    return True


def glob(pattern: str) -> re.Pattern:
    """A test pattern: * and ? are wildcards, everything else (brackets
    of parametrised ids included) stands for itself."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern))


def shipped() -> Path:
    return (Path(__file__).resolve().parents[1] / "_data" / "known-issues.toml").resolve()


def load(paths: list[str] | None) -> list[Entry]:
    """The entries of the files given (--known-issues, repeatable; none:
    'none'; not given: the shipped file). Any mistake is one UsageError
    naming the file and line."""
    if paths is None:
        paths = [str(shipped())]
    if NONE in paths:
        if len(paths) > 1:
            raise UsageError(f"--known-issues {NONE} means no file: give it alone")
        return []
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for p in paths:
        for e in _load_file(Path(p)):
            if e.id in seen:
                raise UsageError(f"{e.file}:{e.line}: issue id {e.id} is already in "
                                 f"{seen[e.id]}: give it another id")
            seen[e.id] = f"{e.file}:{e.line}"
            entries.append(e)
    return entries


def _load_file(path: Path) -> list[Entry]:
    if path.is_dir():
        raise UsageError(f"--known-issues {path}: is a directory; give a TOML file")
    r = Reader(path, "issue", "a known-issues file", "ci/known-issues.toml")
    doc = r.parse()
    if set(doc) - {"issue"}:
        first = sorted(set(doc) - {"issue"})[0]
        raise r.bad(f"unknown key {first}: a known-issues file has [[issue]] tables", first)
    specs = doc.get("issue", [])
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise r.bad("issue must be [[issue]] tables", "issue")
    return [_entry(spec, n, r) for n, spec in enumerate(specs)]


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _entry(spec: dict, n: int, r: Reader) -> Entry:
    name = spec.get("id")

    def bad(what: str, key: str) -> UsageError:
        return r.bad(f"issue {name or n + 1}: {what}", key, n)
    if not isinstance(name, str) or not ID.fullmatch(name):
        raise r.bad(f"an issue needs an id of lower-case letters, digits, '.', '_' or '-', "
                    f"not {name!r}", "id", n)
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)}: an issue has "
                  f"{', '.join(sorted(KEYS))}", unknown[0])
    for key in ("title", "kind"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise bad(f"{key} is missing", key)
    if spec["kind"] not in KINDS:
        raise bad(f"kind {spec['kind']!r} is unknown: use one of {', '.join(KINDS)}", "kind")
    url = spec.get("url", "")
    if not isinstance(url, str) or (url and not re.match(r"https?://\S+$", url)):
        raise bad(f"url must be an http(s) address, not {url!r}", "url")
    if spec["kind"] == "kernel-bug" and not url:
        raise bad("a kernel-bug needs the url of its fix or its report", "kind")
    tests = spec.get("tests")
    if not _strings(tests) or not tests:
        raise bad("tests must be a list of test name patterns, e.g. "
                  "[\"test_upstream_mm[guard-regions*\"]", "tests")
    lists = {}
    for key in ("kernels", "selftests", "arches", "boot"):
        value = spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad(f"{key} must be a list of texts, not {value!r}", key)
        lists[key] = tuple(value)
    for k in lists["kernels"]:
        if ":" not in k and not all(RANGE.fullmatch(c.strip()) for c in k.split(",")):
            raise bad(f"kernels: {k!r} is neither a version range (<6.13, >=6.1,<6.13) nor "
                      f"a kernel spec (debian:6.12)", "kernels")
    for k in lists["selftests"]:
        if not all(RANGE.fullmatch(c.strip()) for c in k.split(",")):
            raise bad(f"selftests: {k!r} is not a version range of the selftests' tree "
                      f"(>=6.13, >=6.1,<7.0)", "selftests")
    match = spec.get("match", "")
    try:
        re.compile(match if isinstance(match, str) else "(")
    except re.error as e:
        raise bad(f"match is not a regular expression: {e}", "match") from None
    if not isinstance(match, str):
        raise bad(f"match must be a text, not {match!r}", "match")
    added = spec.get("added", "")
    if isinstance(added, datetime.date):
        added = added.isoformat()
    if not isinstance(added, str):
        raise bad(f"added must be a date (2026-12-07), not {added!r}", "added")
    return Entry(name, spec["title"].strip(), spec["kind"], tuple(tests), url,
                 lists["kernels"], lists["arches"], lists["boot"], match, added,
                 str(r.path), r.tables_at[n] if n < len(r.tables_at) else 1,
                 tuple(glob(t) for t in tests), lists["selftests"])


def explain(entries: list[Entry], where: Where, names: tuple[str, ...],
            texts: list[str]) -> Entry | None:
    """The first entry that explains this failure, or None: it is new."""
    for e in entries:
        if e.applies(where) and e.covers(*names) and e.explains(texts):
            return e
    return None


def expecting(entries: list[Entry], where: Where, names: tuple[str, ...]) -> Entry | None:
    """The first entry that expects this test to fail here (for a pass: not
    seen). A flaky entry expects nothing: its test passing is the usual case,
    not a sign of a fix."""
    for e in entries:
        if e.kind != "flaky" and e.applies(where) and e.covers(*names):
            return e
    return None
