"""kharness debug: drgn on a test's vmcore, with the debug information of
the kernel that wrote it (harness/observe/memory.py: which, best first);
`kharness boot --drgn`: the same on a running guest.

A run's folder holds kernel.json and modules.json (session.record()); a
failed test's folder under it holds the vmcore. Bad input is one line: no
vmcore, a truncated one, one of another kernel than the run's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import KhError, UsageError
from harness.kernel import Kernel
from harness.observe.memory import Dump, dwarf, live_program, program
from harness.util import progress
from harness.vm import kdump

if TYPE_CHECKING:
    import drgn


def find(where: Path) -> Dump:
    """The vmcore of a test folder (or the vmcore named) and the run it
    belongs to; UsageError naming what is missing or wrong."""
    where = where.resolve()
    vmcore = where if where.is_file() else where / "vmcore"
    if not where.exists():
        raise UsageError(f"{where}: no such folder; give a test's folder of a kharness run "
                         f"(kharness-out/<run>/tests/<test>)")
    if not vmcore.is_file():
        raise UsageError(f"no vmcore in {where}: a failed test's folder has one "
                         f"(--vmcore on-failure, the default) or every test's with "
                         f"--vmcore always")
    try:
        info = kdump.info(vmcore)
    except kdump.Unreadable as e:
        raise UsageError(f"{e}; run the test again for a new one") from None
    record = next((d / "kernel.json" for d in vmcore.parents
                   if (d / "kernel.json").is_file() and (d / "modules.json").is_file()), None)
    if record is None:
        raise UsageError(f"{vmcore}: no kernel.json in the folders above it: not a vmcore "
                         f"of a kharness run, whose kernel it would name")
    try:
        kernel = Kernel.load(record)
        modules = {k: Path(v) for k, v in
                   json.loads((record.parent / "modules.json").read_text()).items()}
    except (OSError, ValueError) as e:
        raise UsageError(f"{record}: {e}") from None
    made_by = info.get("OSRELEASE", "")
    if not made_by:
        raise UsageError(f"{vmcore} holds no VMCOREINFO: its kernel lacks CONFIG_PROC_KCORE "
                         f"or CONFIG_FW_CFG_SYSFS (kconfigs/base.config has both), so no "
                         f"reader can find its way in it")
    if made_by != kernel.release:
        raise UsageError(f"{vmcore} is a dump of kernel {made_by or '(none named)'}, "
                         f"but its run ({record}) ran {kernel.release}")
    if kdump.machine_of(vmcore) != kernel.arch.uname:
        kdump.finish(vmcore, kernel.arch.uname)   # a dump made before kharness mended them
    return Dump(vmcore, kernel, modules, info)


# -- kharness debug -----------------------------------------------------------

def namespace(prog: drgn.Program) -> dict[str, Any]:
    """What drgn's own CLI offers (prog, drgn, its helpers) and page_state()."""
    import drgn
    from drgn.cli import default_globals

    from harness.observe.pagestate import page_state

    ns = default_globals(prog)
    ns.update(drgn=drgn, page_state=lambda pfn: page_state(prog, pfn))
    return ns


def script_text(script: Path, code: str | None) -> str:
    """The script's Python source, or one line (exit 2) saying why not."""
    if code is not None:
        raise UsageError(f"debug takes -c CODE or a SCRIPT, not both (-c {code!r} and "
                         f"{script}): give one")
    if script.is_dir():
        raise UsageError(f"cannot read script {script}: it is a directory; give a drgn "
                         f"script file")
    try:
        data = script.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"cannot read script {script}: no such file") from None
    except OSError as e:
        raise UsageError(f"cannot read script {script}: {e.strerror}") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"cannot read script {script}: it is not text (a binary file?); "
                         f"give a drgn script in Python") from None


def summary(prog: drgn.Program, dump: Dump) -> str:
    """What the failure's memory says of it, as a failed test's message
    does when the guest could be read at the failure: the pages its
    kernel reports name (the test folder's dmesg.txt), decoded, with the
    VMAs that map them; its processes' stacks and those of every task in
    uninterruptible sleep."""
    from harness.observe import explain, reports
    from harness.observe.pagestate import levels, walker

    window = dump.vmcore.parent / "dmesg.txt"
    found = reports.parse(window.read_text(errors="replace")) if window.is_file() else []
    parts = [f"kernel reports: {'; '.join(r.title for r in found) or 'none'}"
             + ("" if window.is_file() else f" (no {window.name} beside the vmcore)")]
    pfns = explain.pfns_named("\n".join(r.text for r in found))
    if pfns:
        parts.append("pages they name:\n" + explain.pages(prog, pfns, walker(dump.kernel.arch),
                                                           levels(dump.info)).text)
    parts.append("tasks:\n" + explain.hang(prog).text)
    return "\n\n".join(parts)


def run(where: Path, *, code: str | None, script: Path | None, argv: list[str],
        symbols: str, summarise: bool = False) -> int:
    """drgn on the test folder's vmcore: code (-c) or a script run with its
    result printed, the failure's summary, or drgn's interactive prompt. 0
    unless the code raised."""
    source = script_text(script, code) if script is not None else None
    dump = find(where)
    t0 = time.monotonic()
    prog, kind = program(dump, symbols)
    progress(f"{dump.vmcore}: {dump.kernel.release} ({dump.kernel.arch}), {kind}, "
             f"opened in {time.monotonic() - t0:.2f}s")
    if summarise:
        print(summary(prog, dump))
        return 0
    return drive(prog, code=code, script=script, source=source, argv=argv)


def drive(prog: drgn.Program, *, code: str | None, script: Path | None, source: str | None,
          argv: list[str]) -> int:
    """code (-c) or a script run on prog with its result printed, or
    drgn's interactive prompt. 0 unless the code raised."""
    import sys
    import traceback

    ns = namespace(prog)
    if code is None and script is None:
        from drgn.cli import run_interactive
        run_interactive(prog, globals_func=lambda g: {**g, **ns}, quiet=True)
        return 0
    try:
        if script is not None:
            sys.argv = [str(script), *argv]
            assert source is not None
            exec(compile(source, str(script), "exec"), {**ns, "__name__": "__main__"})
        else:
            assert code is not None
            try:
                expr = compile(code, "<-c>", "eval")
            except SyntaxError:     # statements, not an expression
                expr = None
            if expr is None:
                exec(compile(code, "<-c>", "exec"), ns)
            elif (value := eval(expr, ns)) is not None:
                print(value)
    except Exception:       # the user's code: its traceback, exit 1
        traceback.print_exc()
        return 1
    return 0


# -- drgn on a running guest (kharness boot --drgn) ---------------------------------

# The QMP socket a guest's QEMU serves drgn, as its boot folder's cmdline names it.
DRGN_SOCKET = re.compile(r"unix:(/\S+?/drgn\.sock),")


def running_guest(where: Path) -> tuple[Path, Kernel, dict[str, Path]]:
    """The QMP socket of the newest guest still running under a run's
    folder (a repro's, a boot's), with its kernel and modules; UsageError
    naming what is missing."""
    where = where.resolve()
    if not where.is_dir():
        raise UsageError(f"--attach {where}: no such folder; give the folder of a running "
                         f"kharness run (its --out, e.g. kharness-out/repro)")
    lines = sorted(where.rglob("cmdline"), key=lambda p: p.stat().st_mtime, reverse=True)
    for cmdline in lines:
        m = DRGN_SOCKET.search(cmdline.read_text(errors="replace"))
        if m is None or not Path(m.group(1)).exists():
            continue
        record = next((d for d in cmdline.parents if (d / "kernel.json").is_file()
                       and (d / "modules.json").is_file()), None)
        if record is None:
            continue
        kernel = Kernel.load(record / "kernel.json")
        modules = {k: Path(v) for k, v in
                   json.loads((record / "modules.json").read_text()).items()}
        return Path(m.group(1)), kernel, modules
    raise UsageError(f"--attach {where}: no guest of it is running (none of its "
                     f"{len(lines)} boot folders has a live QMP socket)")


def live_symbols(kernel: Kernel, offline: bool) -> str:
    """'auto' where the kernel's DWARF is here or can be fetched, else
    'kallsyms', said once."""
    try:
        if dwarf(kernel, fetch=not offline) is not None:
            return "auto"
        why = "none is cached (--offline)" if offline else "this kernel has none"
    except KhError as e:
        why = str(e)
    progress(f"no DWARF for {kernel.release} ({why}): drgn has kallsyms and our "
             f"modules' types")
    return "kallsyms"


def on_guest(socket: Path, kernel: Kernel, modules: dict[str, Path], *, code: str | None,
             script: Path | None, source: str | None, argv: list[str], offline: bool,
             alive: Callable[[], bool]) -> int:
    """drgn's prompt, code or a script (its source read by the caller,
    before any guest started: script_text) on a running guest, read live
    (it is neither paused nor stopped: it runs on afterwards). A guest
    that went away meanwhile is a KhError (exit 3) naming it."""
    t0 = time.monotonic()
    prog, _, kind = live_program(socket, kernel, modules,
                                 symbols=live_symbols(kernel, offline), fetch=not offline)
    progress(f"drgn on the running guest ({kernel.release}, {kernel.arch}, over {socket}): "
             f"{kind}, opened in {time.monotonic() - t0:.2f}s")
    status = drive(prog, code=code, script=script, source=source, argv=argv)
    if not alive():
        raise KhError(f"the guest went away under drgn (its QMP socket {socket} is gone); "
                      f"its console log is in its boot folder")
    return status
