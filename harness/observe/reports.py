"""Kernel report recognition over a console log or a dmesg window.

As syzkaller's pkg/report does it: a table of headers, each a regex found
in a console line, with a title format whose {func} comes from the header
itself or from the first interesting stack frame below it. Parsing is a
pure function; titles are normalised (no addresses, offsets, clone
suffixes) so the same bug on two kernels gets the same title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Console prefixes: "[   12.345678] ", "<4>[...]", "[  T123] " caller ids.
_PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[CT]\d+\])?\s?")
_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?P<q>\? )?(?P<func>[A-Za-z_][\w.]*)"
                    r"\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[\w+\])?(?:\s+\([A-Z]\))?\s*$")
_IP = re.compile(r"(?:RIP: [0-9a-f]{4}:|pc : |PC is at |ip: )(?P<func>[A-Za-z_][\w.]*)\+0x")
_END = re.compile(r"---\[ end (?:trace|Kernel panic)")

# Frames that say how a report was raised, not where.
SKIP_FRAMES = re.compile(
    r"^(?:__warn|warn_slowpath\w*|report_bug|handle_bug|exc_invalid_op|asm_exc_\w+|"
    r"dump_stack\w*|show_stack|show_regs|__dump_stack|dump_backtrace|print_bad_pte|print_bad_page_map|"
    r"bad_page|__bad_page|check_new_pages?|free_page_is_bad\w*|free_pages_prepare|"
    r"free_unref_\w+|_*free_pages\w*|_*free_frozen_pages|__folio_put|folio_put|put_page|"
    r"refcount_warn_saturate|__refcount_\w+|refcount_\w+|"
    r"kasan_\w+|__kasan_\w+|print_report|print_address_description\w*|"
    r"panic|vpanic|do_exit|make_task_dead|oops_end|die|__die\w*|arm64_\w+|"
    r"do_trap\w*|do_error_trap|do_kernel_fault|__do_kernel_fault|el1_\w+|el0_\w+|"
    r"do_mem_abort|do_page_fault|exc_page_fault|page_fault_oops|kernelmode_fixup_or_oops|"
    r"__bad_area_nosemaphore|bad_area_nosemaphore|do_user_addr_fault|"
    r"rcu_\w+|sched_show_task|show_trace_log_lvl|watchdog\w*|hung_task\w*|"
    r"check_hung_\w+|debug_\w+|lockdep_\w+|__might_\w+|"
    r"_*schedule\w*|io_schedule\w*|__switch_to\w*|context_switch|"
    r"delay_\w+|__const_udelay|__udelay|__delay\w*|udelay|mdelay|"
    r"nmi_\w+|\w*_nmi\w*|nmi_cpu_backtrace\w*|arch_trigger_\w+|trigger_\w+_backtrace\w*|"
    r"print_cpu_stall\w*|check_cpu_stall|update_process_times|tick_\w+|"
    r"__hrtimer_\w+|hrtimer_\w+|__sysvec_\w+|sysvec_\w+|asm_sysvec_\w+|irq_exit\w*|"
    r"handle_\w+_irq|gic_handle_irq|call_on_irq_stack|do_interrupt_handler|"
    r"el1_interrupt|__el1_irq)$")


@dataclass(frozen=True)
class Header:
    kind: str
    pattern: re.Pattern
    title: str              # format; {func} from the header or frames, {m} groups
    needs_frame: bool = False


def _h(kind: str, pattern: str, title: str, needs_frame: bool = False) -> Header:
    return Header(kind, re.compile(pattern), title, needs_frame)


# Order matters: the first header that matches a line names the report.
HEADERS = [
    _h("refcount", r"refcount_t: (?P<what>[\w\-]+(?: \w+)*?)[;.]", "refcount_t: {what} in {func}",
       True),
    _h("kasan", r"BUG: KASAN: (?P<what>[\w\-]+) in (?P<func>[\w.]+)", "KASAN: {what} in {func}"),
    _h("bad_page_map", r"BUG: Bad page map", "BUG: Bad page map in {func}", True),
    _h("bad_page_state", r"BUG: Bad page state", "BUG: Bad page state in {func}", True),
    _h("bad_rss", r"BUG: Bad rss-counter state", "BUG: Bad rss-counter state"),
    _h("warning", r"WARNING: (?:CPU: \d+ PID: \d+ at |\S+:\d+ at )?.*?(?P<func>[A-Za-z_][\w.]*)"
       r"\+0x[0-9a-f]+/0x[0-9a-f]+", "WARNING in {func}"),
    _h("warning", r"WARNING: possible circular locking", "possible deadlock in {func}", True),
    _h("kernel_bug", r"kernel BUG at (?P<src>\S+)!", "kernel BUG in {func}", True),
    _h("null_deref", r"BUG: kernel NULL pointer dereference",
       "BUG: kernel NULL pointer dereference in {func}", True),
    _h("paging", r"BUG: unable to handle page fault", "BUG: unable to handle kernel paging "
       "request in {func}", True),
    _h("gpf", r"general protection fault", "general protection fault in {func}", True),
    _h("arm64_null", r"Unable to handle kernel NULL pointer dereference",
       "BUG: kernel NULL pointer dereference in {func}", True),
    _h("arm64_paging", r"Unable to handle kernel paging request",
       "BUG: unable to handle kernel paging request in {func}", True),
    _h("oops", r"Internal error: (?P<what>[^:]+):", "Internal error: {what} in {func}", True),
    # x86 since 6.10: "Oops: int3: 0000 [#1]", "Oops: invalid opcode: 0000 [#1]"
    _h("oops", r"^Oops: (?P<what>[^:]+): [0-9a-f]{4} \[#\d+\]", "Oops: {what} in {func}", True),
    _h("rcu_stall", r"rcu: INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?",
       "INFO: rcu detected stall in {func}", True),
    _h("hung_task", r"INFO: task (?P<comm>\S+):\d+ blocked for more than", "INFO: task hung in "
       "{func}", True),
    # arch/x86/mm/pat/memtype.c: a PFNMAP's reservation released twice or never made.
    _h("pat", r"x86/PAT: .*freeing invalid memtype", "x86/PAT: freeing invalid memtype"),
    _h("panic", r"Kernel panic - not syncing: (?P<what>.*?)\s*(?:\]---)?$", "kernel panic: {what}"),
]

# A report of these kinds swallows the ones its own text raises further down
# (an Oops says "Internal error", a refcount_t line is followed by its WARNING).
_FOLLOWERS = {
    "refcount": {"warning"},
    # "kernel BUG at" is followed by "Oops: invalid opcode" (x86_64) or
    # "Internal error: Oops - BUG" (arm64)
    "kernel_bug": {"oops"},
    "null_deref": {"oops"}, "paging": {"oops"}, "arm64_null": {"oops"},
    "arm64_paging": {"oops"},
}
MAX_REPORT_LINES = 120


@dataclass
class Report:
    kind: str
    title: str
    start: int                      # line index in the input
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def clean(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"))


def normalise_func(func: str) -> str:
    return re.sub(r"\.(?:isra|constprop|part|cold|llvm)(?:\.\d+)?", "", func)


def first_frame(lines: list[str]) -> str | None:
    for line in lines:
        m = _IP.search(line)
        if m and not SKIP_FRAMES.match(normalise_func(m.group("func"))):
            return normalise_func(m.group("func"))
    for line in lines:
        m = _FRAME.match(line)
        if m and not m.group("q"):
            func = normalise_func(m.group("func"))
            if not SKIP_FRAMES.match(func):
                return func
    return None


def _match(line: str) -> tuple[Header, re.Match] | None:
    for h in HEADERS:
        m = h.pattern.search(line)
        if m:
            return h, m
    return None


def parse(text: str) -> list[Report]:
    """Every kernel report in a console log or dmesg text, in order."""
    lines = [clean(l) for l in text.splitlines()]
    found: list[Report] = []
    i = 0
    while i < len(lines):
        hit = _match(lines[i])
        if not hit:
            i += 1
            continue
        header, m = hit
        end = i + 1
        while end < len(lines) and end - i < MAX_REPORT_LINES:
            if _END.search(lines[end]):
                end += 1
                break
            nxt = _match(lines[end])
            if nxt and nxt[0].kind not in _FOLLOWERS.get(header.kind, ()):
                break
            end += 1
        body = lines[i:end]
        groups = {k: v for k, v in m.groupdict().items() if v}
        if "func" in groups:
            groups["func"] = normalise_func(groups["func"])
        else:
            groups["func"] = first_frame(body[1:]) or "?"
        title = header.title.format_map(_Default(groups))
        found.append(Report(header.kind, title, i, body))
        i = end
    return found


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def titles(text: str) -> list[str]:
    return [r.title for r in parse(text)]
