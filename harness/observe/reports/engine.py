"""The report engine: finding where a kernel report starts and what belongs
to it, reading its title from a table of formats, picking the guilty stack
frame, and deciding whether what the console kept is whole.

It follows syzkaller's pkg/report (report.go and linux.go's Parse and
findReport), so the titles it gives are the ones syzbot, lore and the
kernel's bug trackers use. Everything kernel-specific (headers, formats,
skip lists, suppressions) is data in the table module (linux.py); the
engine knows only its shape. Pure functions, nothing printed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Kind(enum.Enum):
    WARNING = "warning"
    BUG = "bug"                  # BUG:, kernel BUG at, Bad page, rss-counter, ...
    KASAN = "kasan"
    KMSAN = "kmsan"
    KCSAN = "kcsan"
    KFENCE = "kfence"
    UBSAN = "ubsan"
    MEMORY_LEAK = "memory-leak"
    LOCKDEP = "lockdep"          # possible deadlock, inconsistent lock state, ...
    ATOMIC = "atomic"            # sleeping/scheduling in atomic context, preemptible
    HANG = "hang"                # hung task, RCU stall, soft lockup, workqueue lockup
    FAULT = "fault"              # NULL deref, paging request, GPF, Internal error
    PANIC = "panic"
    PAT = "pat"
    MACHINE = "machine"          # the machine died: no output, lost connection, timed out


# Macros in the table's regexes (syzkaller's compile())
MACROS = {
    "{{ADDR}}": r"0x[0-9a-f]+",
    "{{PC}}": r"\[\<?(?:0x)?[0-9a-f]+\>?\]",
    "{{FUNC}}": r"([a-zA-Z0-9_]+)(?:\.|\+)",
    "{{SRC}}": r"([a-zA-Z0-9-_/.]+\.[a-z]+:[0-9]+)",
}


def rx(pattern: str, flags: int = 0) -> re.Pattern:
    for macro, expansion in MACROS.items():
        pattern = pattern.replace(macro, expansion)
    return re.compile(pattern, flags)


PARSE = re.compile(r"\A(?!)")   # a stack part meaning: read a stack trace from here


@dataclass(frozen=True)
class Stack:
    """How the guilty frame is read: parts matched in order (a regex that
    may capture frames, or PARSE: a stack trace read from there); parts2 if
    parts find nothing; skip: frames passed over besides the common list;
    extractor: picks the frame (and its index) from all that were read."""
    parts: tuple[re.Pattern, ...]
    parts2: tuple[re.Pattern, ...] = ()
    skip: tuple[str, ...] = ()
    extractor: Callable[[list[str]], tuple[str, int]] | None = None


@dataclass(frozen=True)
class Format:
    """A title: the regex that finds it, the one (report) that must then
    match the report for it to hold, and str.format arguments: the groups
    of the last match, then one frame a parsed stack trace of the Stack."""
    title: re.Pattern
    fmt: str
    kind: Kind
    report: re.Pattern | None = None
    alt: tuple[str, ...] = ()
    stack: Stack | None = None
    no_stack_trace: bool = False
    corrupted: bool = False


@dataclass(frozen=True)
class Oops:
    """A header string found in a console line, its formats (the first whose
    title matches earliest names the report), and lines holding the header
    that are no report."""
    header: str
    formats: tuple[Format, ...]
    suppressions: tuple[re.Pattern, ...] = ()
    kind: Kind = Kind.BUG               # when no format matches


def stack_start(table: Table, line: str) -> bool:
    if table.stack_start_hints and not any(h in line for h in table.stack_start_hints):
        return False
    return table.any_stack_start.search(line) is not None


def corrupted_line(table: Table, line: str) -> bool:
    if table.corrupted_line_hints and not any(h in line for h in table.corrupted_line_hints):
        return False
    return table.any_corrupted_line.search(line) is not None


def any_of(patterns: Sequence[re.Pattern]) -> re.Pattern:
    """One regex that finds what any of the patterns finds."""
    return re.compile("|".join(f"(?:{p.pattern})" for p in patterns) or r"\A(?!)")


@dataclass(frozen=True)
class Table:
    """What the engine needs to know of one kernel's reports."""
    oopses: tuple[Oops, ...]
    stack_starts: tuple[re.Pattern, ...]     # "Call Trace", "Allocated by task N:", ...
    frames: tuple[re.Pattern, ...]           # a frame line, capturing the function
    skip: tuple[str, ...]                    # frames passed over in every stack
    corrupted_lines: tuple[re.Pattern, ...]  # a line that makes the stack unreliable
    strip_prefixes: tuple[str, ...]          # sys_, __x64_sys_, ... taken off frames
    corrupted_titles: tuple[re.Pattern, ...]
    start_ignores: tuple[re.Pattern, ...]    # headers that continue the report before them
    info_with_stack: tuple[str, ...]         # messages with a stack that are no report
    no_frame_stack_start: re.Pattern | None = None  # riscv: a start with no frames after it
    # A substring every stack start (and corrupted line) holds: lines without
    # one are passed over without running the regexes (speed on long logs).
    stack_start_hints: tuple[str, ...] = ()
    corrupted_line_hints: tuple[str, ...] = ()
    # console prefix "[   12.345678][ T123] ": group 1 the caller id
    console: re.Pattern = re.compile(
        r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:.* login: )?(?:\<[0-9]+\>)?"
        r"\[ *[0-9]+\.[0-9]+\](\[ *(?:C|T)[0-9]+\])? ")
    # made from the above: one search instead of one a pattern, per line
    any_stack_start: re.Pattern = field(init=False, repr=False, compare=False)
    any_corrupted_line: re.Pattern = field(init=False, repr=False, compare=False)
    any_info: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "any_stack_start", any_of(self.stack_starts))
        object.__setattr__(self, "any_corrupted_line", any_of(self.corrupted_lines))
        object.__setattr__(self, "any_info", any_of([re.compile(re.escape(m))
                                                     for m in self.info_with_stack]))


CONSOLE = "console"          # a line with a timestamp but no caller id
CPU = re.compile(r"\[ *C[0-9]+\]")
QUESTIONABLE = re.compile(r"(\[\<[0-9a-f]+\>\])? \? ")
MAX_SCAN = 1500              # lines a report is read over (linear time on huge logs)
PANIC_LINES = 22             # a panic this far in is the report's aftermath (KMSAN: 16)
# Read past a second report only to judge whether the first kept a stack
# (syzkaller reads to the end of the log; a few lines answer the same).
AFTER_SECOND = 5


@dataclass
class Report:
    kind: Kind
    title: str
    start: int                      # line index in the input where the header is
    end: int = 0                    # line index one past the report's last line
    corrupted: bool = False
    reason: str = ""                # why it is corrupted
    lines: list[str] = field(default_factory=list)   # the report, console prefixes off
    alt_titles: list[str] = field(default_factory=list)  # the same crash seen otherwise

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def titles(self) -> list[str]:
        """The title and its alternatives: two reports sharing one are one crash."""
        return [self.title, *self.alt_titles]

    def to_dict(self) -> dict:
        return {"title": self.title, "alt_titles": self.alt_titles, "kind": self.kind.value,
                "corrupted": self.corrupted, "reason": self.reason,
                "start_line": self.start + 1, "end_line": self.end, "text": self.text}


# -- lines -----------------------------------------------------------------------------

class Line(NamedTuple):   # a tuple: many of them, and the GC need not track them
    raw: str
    context: str          # "" (no timestamp), "console", or the caller id "[ T123]"
    text: str             # without the console prefix (and a questionable frame's lead)
    questionable: bool    # "? func+0x1/0x2": a stale frame the unwinder guessed


# The console prefix as most lines have it: tried before the full pattern,
# whose optional "<user> login: " makes it read every line to its end.
_PLAIN_CONSOLE = re.compile(r"\[ *[0-9]+\.[0-9]+\](\[ *(?:C|T)[0-9]+\])? ")


def read_line(table: Table, raw: str) -> Line:
    if raw.endswith("\r"):
        raw = raw.rstrip("\r")
    m = _PLAIN_CONSOLE.match(raw) or table.console.match(raw)
    if m is None:
        return Line(raw, "", raw, False)
    context = m.group(1) or CONSOLE
    text = raw[raw.index("] ") + 2:]
    if "<EOI>" not in text:
        if " ? " in text and QUESTIONABLE.search(text):
            return Line(raw, context, text[text.index(" ? ") + 2:], True)
        if text.endswith(" (unreliable)"):       # powerpc
            return Line(raw, context, text[:-13], True)
    return Line(raw, context, text, False)


def oops_of(table: Table, line: Line) -> Oops | None:
    """The oops whose header this line holds anywhere ("NMI watchdog: BUG:
    soft lockup", "segment-related general protection fault"), unless the
    line is one of the oops's suppressions."""
    for oops in table.oopses:
        if oops.header not in line.raw:
            continue
        if any(s.search(line.raw) for s in oops.suppressions):
            continue
        return oops
    return None


# -- one report ------------------------------------------------------------------------

@dataclass
class Found:
    """What findReport collects from the header on (syzkaller also keeps a
    few lines before the header for the reader; kharness's reports show
    their own lines, see __init__._shown)."""
    report: list[str]      # same-context lines, prefixes off
    report_end: int        # lines of it before a second report
    end: int               # line index one past the last oops line seen
    second: int | None     # where a second report starts


def find_report(table: Table, lines: Sequence[Line], start: int, oopses: dict[int, Oops],
                header_text: str) -> Found:
    """syzkaller's findReport: the lines of the header's context from the
    header on (other CPUs' too once "Sending NMI" asks for their
    backtraces), the panic_on_warn aftermath and lockdep noise cut, and
    where a second report starts. oopses: the lines that hold a header."""
    context = lines[start].context
    min_lines = 16 if "BUG: KMSAN:" in header_text else PANIC_LINES
    report: list[str] = []
    report_end = 0
    end = start + 1
    second: int | None = None
    text_lines = 0
    skip_text = cpu_traceback = False
    ended: int | None = None
    for i in range(start, min(len(lines), start + MAX_SCAN)):
        ln = lines[i]
        is_oops = i == start
        if i in oopses:
            end = i + 1
            if not is_oops and second is None and \
                    not any(p.search(ln.raw) for p in table.start_ignores):
                second = i
        elif not is_oops and second is None and table.any_info.search(ln.raw):
            second = i
        if second is not None and context in ("", CONSOLE) and i > second + AFTER_SECOND:
            break       # the report is cut at the second one: little after it counts
        if ended is not None and i > ended + AFTER_SECOND:
            break       # "---[ end trace": the oops said it is done
        if not is_oops and (ln.questionable or ln.context != context and (
                not cpu_traceback or not CPU.match(ln.context))):
            continue
        text_lines += 1
        skip_line = skip_text
        if "Disabling lock debugging due to kernel taint" in ln.raw:
            skip_line = True
        elif "Sending NMI from CPU" in ln.raw:
            cpu_traceback = True        # other CPUs' backtraces belong to the report
        elif ("Kernel panic - not syncing" in ln.raw or
              "WARNING: possible circular locking dependency detected" in ln.raw) and \
                text_lines > min_lines:
            # panic_on_warn's panic, or a deadlock the oops's own locking caused
            skip_text = skip_line = True
        if not is_oops and skip_line:
            continue
        report.append(ln.text)
        if second is None or context not in ("", CONSOLE):
            report_end = len(report)
        if ended is None and "---[ end trace" in ln.text:
            ended = i
    return Found(report, report_end, end, second)


def extract_description(table: Table, text: str, oops: Oops) -> tuple[
        str, str, list[str], Format | None]:
    """(title, why corrupted or "", alternative titles, the format that named it)."""
    start = len(text)
    desc, corrupted, alts = "", "", []
    chosen: Format | None = None
    matched_title = False
    for f in oops.formats:
        m = f.title.search(text)
        if m is None or m.start() > start or (m.start() == start and desc):
            continue
        if m.start() < start:
            desc, chosen, start = "", None, m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(text)
            if m is None:
                continue
        args = [g or "" for g in m.groups()]
        corrupted = ""
        frames: list[tuple[str, str]] = []
        if f.stack is not None:
            frames, ok = stack_frames(table, f.stack, text[m.start():])
            if not ok:
                corrupted = "extracted no frames"
        full = args + [canonical for canonical, _ in frames]
        desc = f.fmt.format(*full)
        alts = [a.format(*full) for a in f.alt]
        for variant in stripped_variants(table, args, frames):
            title = f.fmt.format(*variant)
            if title != desc:
                alts.append(title)
            alts += [a.format(*variant) for a in f.alt]
        alts = list(dict.fromkeys(a for a in alts if a != desc))
        chosen = f
    if not desc:
        if matched_title:
            corrupted = "matched title but not report regexp"
        at = text.find(oops.header)
        if at == -1:
            return "", corrupted, [], None
        desc = text[at:].split("\n", 1)[0]
    if not corrupted and chosen is not None and chosen.corrupted:
        corrupted = "report format is marked as corrupted"
    return desc, corrupted, alts, chosen


def stack_frames(table: Table, stack: Stack, text: str) -> tuple[list[tuple[str, str]], bool]:
    """The frames (canonical, raw) the stack's parts yield, and whether each
    yielded one."""
    skip = re.compile("|".join((*table.skip, *stack.skip)))

    def pick(raw: list[str]) -> tuple[str, str]:
        if not raw:
            return "", ""
        stripped = [strip_frame(table, f) for f in raw]
        if stack.extractor is None:
            return stripped[0], raw[0]
        frame, idx = stack.extractor(stripped)
        return (frame, raw[idx]) if frame else ("", "")

    frames, ok = _frames(table, text, skip, stack.parts, pick)
    if ok or not stack.parts2:
        return frames, ok
    return _frames(table, text, skip, stack.parts2, pick)


def _frames(table: Table, text: str, skip: re.Pattern, parts: tuple[re.Pattern, ...],
            pick: Callable[[list[str]], tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """syzkaller's extractStackFrameImpl."""
    lines = text.split("\n")
    i = 0
    raw: list[str] = []
    results: list[tuple[str, str]] = []
    ok = True
    traces = 0
    p = 0
    while True:
        if p == len(parts) or (parts[p] is PARSE and traces > 0):
            key = pick(raw)
            if not key[0]:
                key, ok = ("corrupted", "corrupted"), False
            results.append(key)
            raw = []
        if p == len(parts):
            return results, ok
        part = parts[p]
        parse = part is PARSE
        traces += parse
        while i < len(lines):
            line = lines[i]
            i += 1
            if corrupted_line(table, line):
                ok = False
                break
            if not parse:
                if m := part.search(line):
                    _append(raw, m, skip)
                    break
                continue
            if stack_start(table, line):
                break
            if p != len(parts) - 1 and (m := parts[p + 1].search(line)):
                _append(raw, m, skip)
                p += 1
                break
            for frame in table.frames:
                if m := frame.search(line):
                    _append(raw, m, skip)
                    break
        p += 1


def _append(raw: list[str], m: re.Match, skip: re.Pattern) -> None:
    for group in m.groups():
        if group:
            name = demangle(group)
            if not skip.search(name):
                raw.append(name)


def strip_frame(table: Table, frame: str) -> str:
    """The shortest of the frame without one of the syscall prefixes
    (__x64_sys_mremap, __se_sys_mremap and sys_mremap are all mremap)."""
    best = frame
    for prefix in table.strip_prefixes:
        if frame.startswith(prefix) and len(frame) - len(prefix) < len(best):
            best = frame[len(prefix):]
    return best


def stripped_variants(table: Table, args: list[str], frames: list[tuple[str, str]]) -> list[
        list[str]]:
    """Titles with the raw frames and each prefix stripped from them alone:
    alternative titles for the same crash (syzkaller's partiallyStrippedArgs)."""
    out = []
    for prefix in ("", *table.strip_prefixes):
        trimmed = [raw.removeprefix(prefix) if prefix else raw for _, raw in frames]
        if not prefix or any(t != raw for t, (_, raw) in zip(trimmed, frames, strict=True)):
            out.append(args + trimmed)
    return out


def is_corrupted(table: Table, title: str, report: str, f: Format | None) -> str:
    """Why what the console kept of a report is not whole, or ""."""
    if any(c.search(title) for c in table.corrupted_titles):
        return "title matches corrupted regexp"
    if f is None or f.no_stack_trace:
        return ""
    has_trace = False
    for start in table.stack_starts:
        m = start.search(report)
        if m is None:
            continue
        after = report[m.start():].split("\n")
        if len(after) < 4:
            return "call trace is missed"
        corrupted = True
        for line in after[1:16]:
            if stack_start(table, line):
                break
            if "(stack is not available)" in line or any(fr.search(line) for fr in table.frames):
                has_trace, corrupted = True, False
                break
        if corrupted and start is not table.no_frame_stack_start:
            return "no frames in a stack trace"
    return "" if has_trace else "no stack trace in report"


# -- titles ----------------------------------------------------------------------------

# What changes from run to run in a title (syzkaller's dynamicTitleReplacement).
_TITLE_REPLACEMENTS = (
    (re.compile(r"syz-executor\.?[0-9]+((/|:)[0-9]+)?"), "syz-executor"),
    (re.compile(r"syzkaller[0-9]+((/|:)[0-9]+)?"), "syzkaller"),
    (re.compile(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+"), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)"), r"\1NUM\3"),
    (re.compile(r"(\d+){7,}"), "NUM"),
)
MAX_TITLE = 120


def normalise_title(title: str) -> str:
    """A title as it is filed: numbers, addresses and pids that change from
    run to run replaced, control characters out, at most 120 characters."""
    for pattern, repl in _TITLE_REPLACEMENTS:
        while (new := pattern.sub(repl, title)) != title:
            title = new
    out, prev = [], " "
    for ch in title[:MAX_TITLE]:
        if ch == "\t":
            ch = " "
        elif ch < " " or ch >= "\x7f":
            continue
        if ch == " " and prev == " ":
            continue
        out.append(ch)
        prev = ch
    return "".join(out).strip()


def demangle(name: str) -> str:
    """A C++ Itanium name without its parameters (_Z8fakeNameiii is
    fakeName, _ZN3foo3barEv foo::bar), a Rust v0 name as a path
    (_RNvNtCs1_4core9panicking9panic_fmt is core::panicking::panic_fmt);
    anything else, or what this small demangler cannot read, as it is."""
    if name.startswith("_R"):
        try:
            return _RustV0(name[2:]).symbol()
        except (IndexError, ValueError):
            return name
    if not name.startswith("_Z"):
        return name
    i = 3 if name.startswith("_ZN") else 2
    parts = []
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        if j + n > len(name):
            return name
        parts.append(name[j:j + n])
        i = j + n
        if not name.startswith("_ZN"):
            break
    return "::".join(parts) if parts else name


_RUST_BASIC = {"a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32",
               "h": "u8", "i": "isize", "j": "usize", "l": "i32", "m": "u32", "n": "i128",
               "o": "u128", "s": "i16", "t": "u16", "u": "()", "v": "...", "x": "i64",
               "y": "u64", "z": "!", "p": "_"}


class _RustV0:
    """Rust's v0 mangling, the part kernel stack traces use: crate roots,
    nested paths, inherent and trait impls, back-references; generic
    arguments are left out (as syzkaller's demangle.NoParams leaves them)."""

    def __init__(self, s: str):
        self.s, self.i = s, 0

    def symbol(self) -> str:
        if self.s[:1].isdigit():
            self._decimal()          # encoding version
        return self.path()

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _take(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        return ch

    def _decimal(self) -> int:
        j = self.i
        while self._peek().isdigit():
            self.i += 1
        if j == self.i:
            raise ValueError("a number was expected")
        return int(self.s[j:self.i])

    def _base62(self) -> int:
        digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        if self._peek() == "_":
            self.i += 1
            return 0
        value = 0
        while (ch := self._take()) != "_":
            value = value * 62 + digits.index(ch)
        return value + 1

    def _disambiguator(self) -> None:
        if self._peek() == "s":
            self.i += 1
            self._base62()

    def _ident(self) -> str:
        self._disambiguator()
        if self._peek() == "u":
            raise ValueError("punycode identifiers are not read")
        n = self._decimal()
        if self._peek() == "_":
            self.i += 1
        ident = self.s[self.i:self.i + n]
        self.i += n
        return ident

    def _backref(self, read) -> str:
        at = self._base62()
        saved, self.i = self.i, at
        try:
            return read()
        finally:
            self.i = saved

    def path(self) -> str:
        tag = self._take()
        if tag == "C":
            return self._ident()
        if tag == "N":
            self._take()             # namespace
            inner = self.path()
            ident = self._ident()
            return f"{inner}::{ident}" if ident else inner
        if tag == "M":
            self._disambiguator()
            self.path()              # the impl's own path: not shown
            return f"<{self.type()}>"
        if tag == "X":
            self._disambiguator()
            self.path()
            ty = self.type()
            return f"<{ty} as {self.path()}>"
        if tag == "Y":
            ty = self.type()
            return f"<{ty} as {self.path()}>"
        if tag == "I":
            inner = self.path()
            while self._peek() != "E":
                self._generic_arg()
            self.i += 1
            return inner
        if tag == "B":
            return self._backref(self.path)
        raise ValueError(f"unknown path tag {tag!r}")

    def _generic_arg(self) -> None:
        if self._peek() == "L":
            self.i += 1
            self._base62()
        elif self._peek() == "K":
            raise ValueError("const generics are not read")
        else:
            self.type()

    def type(self) -> str:
        ch = self._peek()
        if ch in _RUST_BASIC:
            self.i += 1
            return _RUST_BASIC[ch]
        if ch in ("R", "Q"):
            self.i += 1
            if self._peek() == "L":
                self.i += 1
                self._base62()
            return ("&" if ch == "R" else "&mut ") + self.type()
        if ch in ("P", "O"):
            self.i += 1
            return ("*const " if ch == "P" else "*mut ") + self.type()
        if ch == "B":
            self.i += 1
            return self._backref(self.type)
        return self.path()
