"""The report parser over console logs captured from real guests.

Each file in tests/data/reports starts with one TITLE: line per report the
log holds, in order, then a blank line and the raw log.
"""

from pathlib import Path

import pytest

from harness.observe import reports

DATA = Path(__file__).parents[1] / "data" / "reports"
CASES = sorted(DATA.iterdir())


def load(path: Path) -> tuple[list[str], str]:
    head, _, raw = path.read_text().partition("\n\n")
    return [l[len("TITLE: "):] for l in head.splitlines() if l.startswith("TITLE: ")], raw


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_golden_titles(path):
    want, raw = load(path)
    assert want, f"{path.name} has no TITLE: lines"
    assert reports.titles(raw) == want


def test_same_bug_same_title_across_kernels_and_arches():
    by_kernel = [load(p)[0] for p in CASES if p.name.startswith("splat-")]
    assert len(by_kernel) >= 5
    common = set.intersection(*(set(t) for t in by_kernel))
    assert common >= {"WARNING in kh_splat_warn", "refcount_t: underflow in kh_splat_refcount",
                      "kernel BUG in kh_splat_bug",
                      "BUG: kernel NULL pointer dereference in kh_splat_null"}


def test_report_text_spans_to_end_trace():
    _, raw = load(DATA / "splat-7.2.13+deb14-amd64.log")
    warn = reports.parse(raw)[0]
    assert warn.lines[0].startswith("WARNING:")
    assert "end trace" in warn.lines[-1]


@pytest.mark.parametrize("line,title", [
    ("[  1.0] WARNING: CPU: 1 PID: 7 at mm/memory.c:2345 insert_pfn.isra.0+0x1a/0x200",
     "WARNING in insert_pfn"),
    ("WARNING: mm/memory.c:2345 at insert_pfn+0x1a/0x200, CPU#0: a/1", "WARNING in insert_pfn"),
    ("[    4.1] BUG: KASAN: slab-use-after-free in perf_mmap_close+0x10/0x90",
     "KASAN: slab-use-after-free in perf_mmap_close"),
    ("BUG: Bad rss-counter state mm:00000000 type:MM_FILEPAGES val:-1",
     "BUG: Bad rss-counter state"),
    ("x86/PAT: khmap:212 freeing invalid memtype [mem 0xfea00000-0xfea07fff]",
     "x86/PAT: freeing invalid memtype"),
    ("Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception"),
])
def test_header_lines(line, title):
    assert reports.titles(line) == [title]


def test_frame_from_stack_when_header_names_none():
    log = "\n".join([
        "BUG: Bad page map in process a  pte:8000000006407025 pmd:0",
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x5d/0x80",
        " print_bad_pte.cold+0x10/0x20",
        " ? unrelated_guess+0x1/0x2",
        " zap_present_ptes.constprop.0+0x1f0/0x5a0",
        " unmap_page_range+0x100/0x200",
    ])
    assert reports.titles(log) == ["BUG: Bad page map in zap_present_ptes"]


def test_no_report_in_a_clean_log():
    assert reports.parse("[    0.0] Linux version 7.2\n[    1.0] brd: module loaded\n") == []
