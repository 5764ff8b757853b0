"""The report parser over console logs: syzkaller's titles, kinds, corruption.

Each file in tests/data/reports starts with a header block, one group a
report the log holds, in order:

    TITLE: WARNING in kh_splat_warn
    KIND: warning
    CORRUPTED: no        (or: yes: <reason>)

then a blank line and the raw log. Logs named after a kernel release were
captured from our guests; the others follow the kernel's own printk formats
for report kinds our guests cannot raise without a sanitizer build.
KH_UPDATE_GOLDENS=1 rewrites the header blocks from the parser, for review.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.observe import reports

DATA = Path(__file__).parents[1] / "data" / "reports"
CASES = sorted(DATA.iterdir())
UPDATE = os.environ.get("KH_UPDATE_GOLDENS") == "1"


def load(path: Path) -> tuple[list[str], str]:
    head, _, raw = path.read_text().partition("\n\n")
    return head.splitlines(), raw


def header_of(found: list[reports.Report]) -> list[str]:
    out = []
    for r in found:
        out += [f"TITLE: {r.title}", f"KIND: {r.kind.value}",
                f"CORRUPTED: {'yes: ' + r.reason if r.corrupted else 'no'}"]
    return out


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_golden(path):
    want, raw = load(path)
    got = header_of(reports.parse(raw))
    if UPDATE:
        path.write_text("\n".join(got or ["NONE"]) + "\n\n" + raw)
        want = got or ["NONE"]
    assert want, f"{path.name} has no header block"
    assert got == ([] if want == ["NONE"] else want)


def test_every_report_kind_has_a_golden():
    kinds = {ln.split(": ", 1)[1] for p in CASES for ln in load(p)[0] if ln.startswith("KIND: ")}
    missing = {k.value for k in reports.Kind} - kinds - {"machine"}
    assert not missing, f"no golden log for {sorted(missing)}"


def test_same_bug_same_title_across_kernels_and_arches():
    by_kernel = [[ln for ln in load(p)[0] if ln.startswith("TITLE: ")]
                 for p in CASES if p.name.startswith("splat-7.2")]
    assert len(by_kernel) == 2
    common = set.intersection(*(set(t) for t in by_kernel))
    assert common >= {"TITLE: WARNING in kh_splat_warn", "TITLE: kernel BUG in kh_splat_bug",
                      "TITLE: WARNING: refcount bug in kh_splat_write"}


def test_report_text_spans_to_end_trace():
    _, raw = load(DATA / "splat-7.2.13+deb14-amd64.log")
    warn = reports.parse(raw)[0]
    assert warn.lines[0].startswith("WARNING:")
    assert "end trace" in warn.lines[-1]
    assert warn.end > warn.start


@pytest.mark.parametrize("line,title", [
    ("[  1.0] WARNING: CPU: 1 PID: 7 at mm/memory.c:2345 insert_pfn.isra.0+0x1a/0x200\n"
     "[  1.0] RIP: 0010:insert_pfn.isra.0+0x1a/0x200\n[  1.0] Call Trace:\n"
     "[  1.0]  <TASK>\n[  1.0]  vmf_insert_mixed+0x10/0x20\n[  1.0]  kh_fault+0x1/0x2\n",
     "WARNING in insert_pfn"),
    ("WARNING: mm/memory.c:2345 at insert_pfn+0x1a/0x200, CPU#0: a/1\n"
     "RIP: 0010:insert_pfn+0x1a/0x200\nCall Trace:\n <TASK>\n vmf_insert_mixed+0x1/0x2\n"
     " x+0x1/0x2\n", "WARNING in insert_pfn"),
    ("BUG: Bad rss-counter state mm:00000000 type:MM_FILEPAGES val:-1",
     "BUG: Bad rss-counter state"),
    ("x86/PAT: khmap:212 freeing invalid memtype [mem 0xfea00000-0xfea07fff]",
     "x86/PAT: freeing invalid memtype"),
    ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
     "kernel panic: VFS: Unable to mount root fs on unknown-block(NUM,NUM)"),
    ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
     "kernel panic: Attempted to kill init!"),
])
def test_header_lines(line, title):
    assert reports.titles(line) == [title]


@pytest.mark.parametrize("text", [
    "[    0.0] Linux version 7.2\n[    1.0] brd: module loaded\n",
    "[   12.3] traps: khmap[212] general protection fault ip:401a2b sp:7ffd error:0 in "
    "khmap[401000+9a000]\n",
    "[    3.1] kh-init: starting agent\n[    3.2] kh-init: DEBUG: agent on hvc0\n",
    "[    2.0] x86/PAT: PAT support disabled because CONFIG_X86_PAT is disabled in the kernel.\n",
])
def test_no_report_in_a_clean_log(text):
    assert reports.parse(text) == []


def test_a_header_anywhere_in_a_line_starts_a_report():
    """As syzkaller reads consoles: "NMI watchdog: BUG: soft lockup",
    "segment-related general protection fault", " BUG: KCSAN:"."""
    assert reports.titles("[ 1.0] NMI watchdog: BUG: soft lockup - CPU#1 stuck for 23s! "
                          "[sh:1]\n[ 1.0] RIP: 0010:kh_spin+0x1/0x2\n[ 1.0] Call Trace:\n"
                          "[ 1.0]  kh_write+0x1/0x2\n[ 1.0]  do_syscall_64+0x1/0x2\n"
                          ) == ["BUG: soft lockup in kh_write"]   # the stall's anchor's caller


@pytest.mark.parametrize("path", [p for p in CASES if load(p)[0] != ["NONE"]],
                         ids=lambda p: p.name)
def test_a_reports_own_text_parses_to_its_title(path):
    """syzkaller's check: what a report kept of the log is enough to title it
    the same way again."""
    for r in reports.parse(load(path)[1]):
        if r.corrupted:
            continue
        again = reports.parse(r.text)
        if len(again) > 1:
            continue    # a task's report that went on past a second header (its own
            #             panic's BUG): without the caller ids the text is two reports
        assert again and again[0].title == r.title, (r.title, again[:1])


def test_alternative_titles_name_the_same_crash():
    _, raw = load(DATA / "gpf-syscall-prefix.log")
    (r,) = reports.parse(raw)
    assert r.title == "general protection fault in mremap"
    assert {"bad-access in mremap", "general protection fault in __se_sys_mremap",
            "general protection fault in sys_mremap"} <= set(r.alt_titles)
    assert reports.same_crash(r, "general protection fault in __se_sys_mremap")
    assert reports.same_crash(r, ["bad-access in mremap"])
    assert not reports.same_crash(r, "general protection fault in mmap")


def test_corrupted_report_keeps_its_kind_and_says_why():
    log = "\n".join(["BUG: kernel NULL pointer dereference, address: 0000000000000008",
                     "#PF: supervisor read access in kernel mode", "Oops: 0000 [#1] SMP"])
    (r,) = reports.parse(log)
    assert r.title == "BUG: unable to handle kernel NULL pointer dereference in corrupted"
    assert r.kind is reports.Kind.FAULT and r.corrupted and r.reason


def test_machine_death_carries_the_console_tail():
    r = reports.machine_death("timed out", "[ 1.0] a\n[ 2.0] b\n")
    assert r.kind is reports.Kind.MACHINE and r.title == "timed out" and r.lines == ["a", "b"]


def test_parse_command(tmp_path):
    log = tmp_path / "console.log"
    log.write_text((DATA / "panic-sysrq-7.2.13+deb14-amd64.console").read_text().
                   partition("\n\n")[2])
    res = subprocess.run([sys.executable, "-m", "harness.cli", "parse", "--json", str(log)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert '"title": "kernel panic: sysrq triggered crash"' in res.stdout
    clean = subprocess.run([sys.executable, "-m", "harness.cli", "parse", "-"], input="hello\n",
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0 and "no kernel report" in clean.stdout


@pytest.mark.parametrize("window", [1, 7, 250, reports.WINDOW_LINES])
def test_a_stream_parsed_in_windows_finds_what_the_whole_text_does(window):
    """Every golden, read 777 bytes at a time and parsed `window` lines at a
    time: the same reports, with the same line numbers."""
    for path in sorted(DATA.glob("*.log")) + sorted(DATA.glob("*.console")):
        data = path.read_bytes()
        whole = [(r.title, r.start, r.end) for r in reports.parse(data.decode(errors="replace"))]
        streamed = [(r.title, r.start, r.end) for r in reports.parse_stream(
            reports.lines_of(io.BytesIO(data), chunk=777), window=window)]
        assert streamed == whole, path.name


def test_lines_of_cuts_a_line_without_end():
    lines = list(reports.lines_of(io.BytesIO(b"a\n" + b"\0" * (3 * reports.MAX_LINE) + b"\nb"),
                                  chunk=4096))
    assert lines == ["a", "\0" * reports.MAX_LINE, "b"]


def kh_parse(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "parse", *args],
                          capture_output=True, text=True, timeout=60, **kw)


def test_parse_checks_every_path_before_printing(tmp_path):
    log = tmp_path / "a.log"
    log.write_text((DATA / "general-protection-fault.log").read_text())
    res = kh_parse(str(log), "/nonexistent.log", str(log))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == "kharness: error: cannot read /nonexistent.log: no such file"
    res = kh_parse(str(tmp_path))
    assert res.returncode == 2 and "it is a directory" in res.stderr


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("how", ["path", "stdin"])
def test_parse_of_an_endless_stream_stays_small_and_stops_on_ctrl_c(how):
    """/dev/zero: no newline ever. Memory does not grow with what was read,
    and SIGINT ends it with 130 (stdin too)."""
    argv = [sys.executable, "-m", "harness.cli", "parse", "/dev/zero" if how == "path" else "-"]
    with open("/dev/zero", "rb") as zero:
        p = subprocess.Popen(argv, stdin=zero if how == "stdin" else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(3)          # some GB of zeros
        rss = _rss_mb(p.pid)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert rss < 200, f"{rss:.0f} MB after 3 s of /dev/zero"
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "kharness: interrupted"


def test_a_console_that_dropped_leaves_its_reports_corrupted():
    (r,) = reports.parse("[ 1.0] BUG: Bad rss-counter state mm:1 type:MM_FILEPAGES val:-1\n"
                         "[ 1.1] -------serialport: VM disconnected.\n")
    assert r.title == "BUG: Bad rss-counter state"
    assert r.corrupted and r.reason == "the console connection dropped"
