"""A failure that explains itself: what a failed test's guest says of its
own state, read with drgn (live over QMP at the failure, or from the
vmcore for `kharness debug --summary`).

- a hang: the stacks of the test's processes and of every task in
  uninterruptible sleep (with the locks each holds, where the kernel has
  lockdep); the full list of tasks for the test's folder;
- a bad page: the struct page a kernel report names (Bad page state, page
  dumped because, a refcount or mapcount WARNING that dumps its page),
  decoded (flags, _refcount, _mapcount, folio, mapping, pgmap), and the
  test's VMAs that map it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from harness.guest import Explanation
from harness.observe.pagestate import page_state, program_of, pte

if TYPE_CHECKING:
    import drgn

AGENT = b"khagent"      # the guest agent (helpers/khagent.c): the test's commands are its
FRAMES = 16             # of a stack in the failure's summary; the folder has them all
PAGES = 4               # pages a failure decodes at most
WALK = 1 << 16          # page-table lookups at most, looking for the VMAs that map a page

# dump_page(): "page: refcount:0 mapcount:0 mapping:... index:0x0 pfn:0x1234a";
# bad_page(): "BUG: Bad page state in process sh  pfn:1234a" (hex, no 0x).
PFN = re.compile(r"\bpfn:(?:0x)?([0-9a-f]+)\b")


def live(guest, kernel, modules, *, ask: bool = False) -> tuple[drgn.Program, int]:
    """The guest's Program, the guest held still as the failure left it
    (running, hung, or stopped where its kernel panicked), with the debug
    information already here, and its page-table levels. ask: the guest
    still answers commands (where its VMCOREINFO is, which a kernel without
    DWARF here needs)."""
    opened = program_of(guest, kernel, modules, ask=ask, fetch=False)
    guest.hold_still()
    return opened


def pfns_named(text: str) -> list[int]:
    """The page frames a kernel report names, first seen first."""
    return list(dict.fromkeys(int(m.group(1), 16) for m in PFN.finditer(text)))[:PAGES]


# -- tasks ------------------------------------------------------------------------

def tasks(prog: drgn.Program) -> list[drgn.Object]:
    """Every thread of every process (struct task_struct pointers)."""
    from drgn.helpers.linux.pid import for_each_task
    return list(for_each_task(prog))


def _has(obj: drgn.Object, member: str) -> bool:
    """A struct (or the struct a pointer points to) has this member."""
    t = obj.type_
    t = t.type if t.kind.name == "POINTER" else t
    try:
        return t.has_member(member)
    except (AttributeError, LookupError):
        return False


def test_tasks(prog: drgn.Program, every: list[drgn.Object] | None = None) -> list[drgn.Object]:
    """The test's processes: user tasks started by the agent, or started
    after it and left to init (a command's background children)."""
    every = tasks(prog) if every is None else every
    agent = next((t for t in every if t.comm.string_() == AGENT), None)
    if agent is None:
        return []
    born = agent.start_time.value_()

    def from_agent(t: drgn.Object) -> bool:
        for _ in range(64):
            if t.pid.value_() <= 1:
                return False
            t = t.real_parent
            if t.value_() == agent.value_():
                return True
        return False

    return [t for t in every if t.mm.value_() and t.pid.value_() > 1
            and t.value_() != agent.value_()
            and (from_agent(t) or (t.real_parent.pid.value_() == 1
                                   and t.start_time.value_() > born))]


def state(t: drgn.Object) -> str:
    from drgn.helpers.linux.sched import task_state_to_char
    try:
        return task_state_to_char(t)
    except (LookupError, ValueError):
        return "?"


def stack(prog: drgn.Program, t: drgn.Object, frames: int | None = None) -> list[str]:
    """Its kernel stack, innermost first, a frame a line."""
    try:
        trace = prog.stack_trace(t)
    except Exception as e:      # drgn's own errors: nothing to unwind from
        return [f"(no stack: {e})"]
    lines = []
    for frame in list(trace)[:frames]:
        name = frame.name or ""
        if not name:
            try:
                name = frame.symbol().name
            except LookupError:
                pass
        if not name:
            continue        # user space's PC: not a frame of the kernel's
        lines.append(name)
    return lines


# Where every sleeper is: the frames that say how it waits, not what for.
WAITING = re.compile(r"(__)?(context_switch|switch_to\w*|schedule\w*|__schedule\w*|io_schedule\w*"
                     r"|\w+_slowpath|rwsem_down\w+|\w*wait_for_common\w*|do_nanosleep"
                     r"|hrtimer_nanosleep|\w*_sleep|preempt_schedule\w*)$")


def waits_in(frames: list[str], n: int = 3) -> str:
    """The first frames below the scheduler's: where a sleeper waits."""
    own = [f for f in frames if not WAITING.match(f)]
    return " < ".join(own[:n] or frames[:n])


def locks(t: drgn.Object) -> list[str]:
    """What lockdep says the task holds (kernels with CONFIG_LOCKDEP)."""
    if not _has(t, "lockdep_depth"):
        return []
    held = []
    for i in range(min(t.lockdep_depth.value_(), 48)):
        name = t.held_locks[i].instance.name
        held.append(name.string_().decode(errors="replace") if name.value_() else "?")
    return held


def _task_text(prog: drgn.Program, t: drgn.Object, frames: int | None) -> str:
    head = (f"{t.comm.string_().decode(errors='replace')} pid {t.pid.value_()} "
            f"state {state(t)}")
    held = locks(t)
    body = [f"    {f}" for f in stack(prog, t, frames)]
    if held:
        body.append(f"    holds: {', '.join(held)}")
    return "\n".join([head, *body])


def hang(prog: drgn.Program) -> Explanation:
    """Where the guest's test hangs: its processes' stacks and those of
    every task in uninterruptible sleep."""
    every = tasks(prog)
    ours = test_tasks(prog, every)
    blocked = [t for t in every if state(t) == "D"]
    keys = {t.pid.value_() for t in ours}
    shown = ours + [t for t in blocked if t.pid.value_() not in keys]
    text = "\n".join(_task_text(prog, t, FRAMES) for t in shown)
    first = next((t for t in shown if state(t) == "D"), shown[0] if shown else None)
    if first is None:
        line = "no test process is left and no task sleeps uninterruptibly"
    else:
        line = (f"{first.comm.string_().decode(errors='replace')} (pid {first.pid.value_()}, "
                f"state {state(first)}) waits in {waits_in(stack(prog, first))}; "
                f"{len(blocked)} task(s) in D state")
    full = "\n\n".join(_task_text(prog, t, None) for t in every)
    return Explanation(line, text or "(no test process and no task in D state)", full,
                       "hang.txt")


# -- pages --------------------------------------------------------------------------

def page(prog: drgn.Program, pfn: int) -> str:
    """One line: a page's decoded state."""
    from drgn.helpers.linux.mm import pfn_to_page

    st = page_state(prog, pfn)
    if st is None:
        return f"pfn {pfn:#x}: no struct page (no memory behind its place in vmemmap)"
    p = pfn_to_page(prog, pfn)
    flags = st.flags if st.flags not in ("", "0") else "none"
    parts = [f"pfn {pfn:#x}: flags {flags}", f"_refcount {st.refcount}",
             f"_mapcount {st.mapcount - 1}"]
    parts.append(f"folio {st.head:#x}" + (" (head)" if st.head == pfn and st.flag("head")
                                          else ""))
    parts.append(f"mapping {_symbolic(prog, st.mapping)}")
    pgmap = _pgmap(prog, p, pfn)
    if pgmap:
        parts.append(f"pgmap {pgmap}")
    return ", ".join(parts)


def _symbolic(prog: drgn.Program, address: int) -> str:
    if not address:
        return "NULL"
    kind = {1: " (anon)", 2: " (movable)", 3: " (KSM)"}.get(address & 3, "")
    try:
        sym = prog.symbol(address & ~3)
        off = (address & ~3) - sym.address
        return f"{address:#x} <{sym.name}{f'+{off:#x}' if off else ''}>{kind}"
    except LookupError:
        return f"{address:#x}{kind}"


def _pgmap(prog: drgn.Program, p: drgn.Object, pfn: int) -> str:
    """The page's dev_pagemap, where it is a ZONE_DEVICE page: one whose
    range covers the page (anything else in that word is not one)."""
    import drgn
    try:
        if not p.type_.type.has_member("pgmap") or not p.pgmap.value_():
            return ""
        pgmap = p.pgmap
        ranges = [pgmap.range] if pgmap.type_.type.has_member("range") else []
        if pgmap.type_.type.has_member("ranges"):
            ranges = [pgmap.ranges[i] for i in range(min(pgmap.nr_range.value_(), 16))]
        addr = pfn << 12
        if not any(r.start.value_() <= addr <= r.end.value_() for r in ranges):
            return ""
        return f"{pgmap.value_():#x} ({pgmap.type.format_(type_name=False)})"
    except (drgn.FaultError, LookupError, AttributeError, ValueError):
        return ""


def mappers(prog: drgn.Program, pfn: int, arch: str, levels: int,
            among: list[drgn.Object]) -> list[str]:
    """The VMAs of these tasks whose page tables map pfn, a line each."""
    from drgn.helpers.linux.mm import for_each_vma

    found: list[str] = []
    budget = WALK
    seen_mm: set[int] = set()
    for t in among:
        mm = t.mm
        if not mm.value_() or mm.value_() in seen_mm:
            continue
        seen_mm.add(mm.value_())
        for vma in for_each_vma(mm):
            start, end = vma.vm_start.value_(), vma.vm_end.value_()
            for addr in range(start, end, 4096):
                budget -= 1
                if budget < 0:
                    return found + ["(stopped looking: page tables too large to walk)"]
                e = pte(prog, mm, addr, arch, levels=levels)
                if e is not None and e.pfn == pfn:
                    found.append(f"{t.comm.string_().decode(errors='replace')} pid "
                                 f"{t.pid.value_()}: VMA {start:#x}-{end:#x} flags "
                                 f"{vma.vm_flags.value_():#x} maps it at {addr:#x}"
                                 f"{' (special)' if e.special else ''}")
                    break
    return found


def pages(prog: drgn.Program, pfns: list[int], arch: str, levels: int) -> Explanation:
    """The named pages' state and who maps them."""
    ours = test_tasks(prog)
    blocks, lines = [], []
    for pfn in pfns:
        one = page(prog, pfn)
        lines.append(one)
        maps = mappers(prog, pfn, arch, levels, ours) if ours else []
        blocks.append("\n".join([one, *(f"    {m}" for m in maps or
                                       ["no VMA of the test's processes maps it"])]))
    text = "\n".join(blocks)
    return Explanation("; ".join(lines), text, text, "pages.txt")
