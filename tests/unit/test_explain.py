"""What a failure says of itself: the pure parts (the page frames a kernel
report names, where a sleeper waits, a VMCOREINFO note); the drgn parts run
against real guests in tests/kernel/harness/test_failures.py."""

from __future__ import annotations

from pathlib import Path

from harness.observe import explain, pagestate, reports

DATA = Path(__file__).parent.parent / "data" / "reports"


def test_pfns_named_by_a_bad_page_report():
    log = (DATA / "splat-7.2.13+deb14-amd64.log").read_text().split("\n\n", 1)[1]   # no header
    bad = next(r for r in reports.parse(log) if r.title.startswith("BUG: Bad page state"))
    # bad_page()'s "pfn:0663f" and dump_page()'s "pfn:0x663f" are one page.
    assert explain.pfns_named(bad.text) == [0x663F]


def test_pfns_named_keeps_order_and_bounds():
    text = "\n".join(f"page: refcount:1 mapcount:0 pfn:0x{p:x}" for p in (5, 3, 5, 9, 7, 8, 1))
    assert explain.pfns_named(text) == [5, 3, 9, 7]
    assert explain.pfns_named("no page here; pfnmap:0x10") == []


def test_where_a_sleeper_waits_skips_the_scheduler():
    frames = ["context_switch", "__schedule", "__schedule_loop", "schedule", "schedule_timeout",
              "kh_splat_hang", "kh_splat_write", "full_proxy_write"]
    assert explain.waits_in(frames) == "kh_splat_hang < kh_splat_write < full_proxy_write"
    assert explain.waits_in(["mutex_lock_slowpath", "do_thing"], 2) == "do_thing"
    assert explain.waits_in(["schedule"]) == "schedule"      # nothing else to name


def test_vmcoreinfo_note():
    text = b"OSRELEASE=6.12.1\nNUMBER(pgtable_l5_enabled)=1\nPAGESIZE=4096\n"
    name = b"VMCOREINFO\0\0"       # 11 bytes, padded to 12
    note = (11).to_bytes(4, "little") + len(text).to_bytes(4, "little") + \
        (0).to_bytes(4, "little") + name + text + b"\0" * 3
    info = pagestate.vmcoreinfo(note)
    assert info["OSRELEASE"] == "6.12.1" and pagestate.levels(info) == 5
    assert pagestate.levels({}) == 4
