"""Kernel reports in a console log or a dmesg window, titled as syzkaller
titles them (so a title finds the same bug on syzbot, lore or a tracker).

engine.py finds where a report starts and what belongs to it, reads its
title and guilty frame and judges whether the console kept it whole;
linux.py is the data it works from. This module is the entry point:
parse() gives every report of a text in order, parse_stream() the same
over a stream of any length.

A report's text (Report.lines, what a person reads) runs from its header to
the next report's header (a panic, an "invalid opcode" or "Internal error"
line of its own making does not end it), an "---[ end trace" line, or
MAX_REPORT_LINES; a panic that only says the machine died of it joins it.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from harness.observe.reports.engine import (
    CONSOLE,
    MAX_SCAN,
    Kind,
    Line,
    Oops,
    Report,
    Table,
    extract_description,
    find_report,
    is_corrupted,
    normalise_title,
    oops_of,
    read_line,
)
from harness.observe.reports.linux import TABLE

__all__ = ["Kind", "Report", "lines_of", "machine_death", "normalise_title", "parse",
           "parse_stream", "same_crash", "titles"]

MAX_REPORT_LINES = 200
CONSOLE_HANGUP = "serialport: VM disconnected."   # GCE's serial console, mid-report
_END = re.compile(r"---\[ end (?:trace|Kernel panic)")
# Panics that only say an earlier report killed the machine: part of that report.
_AFTERMATH = re.compile(r"Kernel panic - not syncing: (?:Fatal exception|panic_on_warn set|"
                        r"panic_on_oops|hung_task: blocked tasks|softlockup: hung tasks|"
                        r"RCU Stall)")


class _Lines(Sequence[Line]):
    """A log's lines read (prefix, caller id) only when looked at: most of
    a long log is never near a report."""

    def __init__(self, table: Table, raw: list[str]):
        self.table, self.raw = table, raw
        self.read: list[Line | None] = [None] * len(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i):
        line = self.read[i]
        if line is None:
            line = self.read[i] = read_line(self.table, self.raw[i])
        return line


def parse(text: str, table: Table = TABLE) -> list[Report]:
    """Every kernel report in a console log or dmesg text, in order."""
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    lines = _Lines(table, raw)
    # Only lines holding a header string can start a report: find them in
    # one pass over the whole text, then look closer.
    starts: dict[int, Oops] = {}
    line_no, pos = 0, 0
    for at in _header_offsets(table, text):
        line_no += text.count("\n", pos, at)
        pos = at
        if line_no not in starts and line_no < len(raw):
            oops = oops_of(table, lines[line_no])
            if oops is not None:
                starts[line_no] = oops
    found: list[Report] = []
    next_at = 0
    for i in sorted(starts):
        if i < next_at:
            continue
        if found and _AFTERMATH.search(lines[i].text):
            found[-1].lines.append(lines[i].text)   # the machine died of the report before
            found[-1].end = next_at = i + 1
            continue
        report = _report(table, lines, starts, i, starts[i])
        found.append(report)
        next_at = report.end
    if CONSOLE_HANGUP in text:     # the console dropped: what it printed last is cut short
        for r in found:
            if not r.corrupted:
                r.corrupted, r.reason = True, "the console connection dropped"
    return found


@functools.cache
def _needles(table: Table) -> tuple[str, ...]:
    """Few short strings, one of which every header holds ("BUG" for "BUG:",
    "kernel BUG" and "Kernel BUG"): a long log is searched once a needle,
    not once a header (each search reads the whole log)."""
    headers = {o.header for o in table.oopses}
    grams = {h: {h[i:i + 4] for i in range(len(h) - 3)} or {h} for h in headers}
    chosen: list[str] = []
    left = set(headers)
    while left:
        best = max(sorted({g for h in left for g in grams[h]}),
                   key=lambda g: sum(g in grams[h] for h in left))
        chosen.append(best)
        left = {h for h in left if best not in grams[h]}
    return tuple(chosen)


def _header_offsets(table: Table, text: str) -> list[int]:
    """Where a line may hold a header, in order: str.find per needle
    (memchr-fast) beats one regex alternation by far on a long log."""
    found = set()
    for needle in _needles(table):
        at = text.find(needle)
        while at != -1:
            found.add(at)
            at = text.find(needle, at + 1)
    return sorted(found)


def _report(table: Table, lines: _Lines, oopses: dict[int, Oops], start: int,
            oops: Oops) -> Report:
    got = find_report(table, lines, start, oopses, lines[start].raw)
    text = "\n".join(got.report[:got.report_end]) + "\n"
    title, corrupted, alts, fmt = extract_description(table, text, oops)
    if not title:
        text = "\n".join(lines[i].raw for i in range(start, got.end)) + "\n"
        title, corrupted, alts, fmt = extract_description(table, text, oops)
    if not corrupted:
        corrupted = is_corrupted(table, title, "\n".join(got.report) + "\n", fmt)
    kind = fmt.kind if fmt is not None else oops.kind
    shown, end = _shown(lines, start, got.second)
    title = normalise_title(title)
    alts = [a for a in dict.fromkeys(normalise_title(t) for t in alts) if a != title]
    return Report(kind, title, start, end, bool(corrupted), corrupted, shown, alts)


def _shown(lines: _Lines, start: int,
           second: int | None) -> tuple[list[str], int]:
    """The report as a person reads it, and the line after it."""
    context = lines[start].context
    shown = [lines[start].text]
    end = start + 1
    # In a task's context (PRINTK_CALLER) a header is the same task going
    # on (a Rust panic's BUG, a WARNING's panic): the report goes on too.
    if context in ("", CONSOLE) and second is not None:
        stop = min(len(lines), start + MAX_REPORT_LINES, second)
    else:
        stop = min(len(lines), start + MAX_REPORT_LINES)
    while end < stop:
        line = lines[end]
        end += 1
        if context not in ("", CONSOLE) and line.context != context:
            continue    # another CPU's or task's lines interleaved (PRINTK_CALLER)
        if line.questionable:
            continue    # "? func+0x..": what the unwinder guessed, not the stack
        shown.append(line.text)
        if _END.search(line.text):
            break
    return shown, end


def titles(text: str) -> list[str]:
    return [r.title for r in parse(text)]


def same_crash(a: Report | str | list[str], b: Report | str | list[str]) -> bool:
    """Whether two reports (or titles, or title lists) are one crash: they
    share a title or an alternative title (syzkaller's deduplication)."""
    def names(x: Report | str | list[str]) -> set[str]:
        return set(x.titles) if isinstance(x, Report) else {x} if isinstance(x, str) else set(x)
    return bool(names(a) & names(b))


def machine_death(title: str, console: str, *, tail_lines: int = 40) -> Report:
    """A report for a machine that died without saying why (syzkaller's
    vm monitor): 'no output from test machine', 'lost connection to test
    machine', 'timed out'. It carries the console's last lines."""
    tail = [read_line(TABLE, ln).text for ln in console.splitlines()[-tail_lines:]]
    return Report(Kind.MACHINE, title, 0, 0, False, "", tail)


WINDOW_LINES = 20000     # a stream is parsed this many lines at a time
MAX_LINE = 64 * 1024     # a longer "line" (no newline in sight: /dev/zero) is cut


def lines_of(stream: BinaryIO, chunk: int = 1 << 20) -> Iterator[str]:
    """The lines of a byte stream, read a chunk at a time (memory does not
    grow with the stream, and a Ctrl-C is answered between reads); a line
    longer than MAX_LINE is cut there and its rest dropped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    part, dropping = "", False
    while data := stream.read1(chunk) if hasattr(stream, "read1") else stream.read(chunk):
        pieces = (part + decoder.decode(data)).split("\n")
        part = pieces.pop()
        for line in pieces:
            if not dropping:
                yield line[:MAX_LINE]
            dropping = False
        if len(part) > MAX_LINE:
            if not dropping:
                yield part[:MAX_LINE]
            part, dropping = "", True
    part += decoder.decode(b"", final=True)
    if part and not dropping:
        yield part[:MAX_LINE]




def parse_stream(lines: Iterable[str], window: int = WINDOW_LINES) -> Iterator[Report]:
    """parse() over a stream of lines of any length, WINDOW_LINES at a time:
    reports as they are found, line numbers those of the whole stream. A
    window is parsed with what follows it as far as a report is read
    (MAX_SCAN), so a
    report that starts in it is titled as parse() would title it."""
    buf: list[str] = []
    base = 0
    for line in lines:
        buf.append(line)
        if len(buf) >= window + MAX_SCAN:
            cut = window
            for r in parse("\n".join(buf)):
                if r.start >= window:
                    break
                cut = max(cut, r.end)
                yield _moved(r, base)
            del buf[:cut]
            base += cut
    for r in parse("\n".join(buf)):
        yield _moved(r, base)


def _moved(r: Report, by: int) -> Report:
    r.start += by
    r.end += by
    return r
