from pathlib import Path

from harness.observe import proc

DATA = Path(__file__).parents[1] / "data" / "proc"


def test_vmstat_recorded():
    v = proc.parse_key_values((DATA / "vmstat-7.2.txt").read_text())
    assert v["nr_mapped"] > 0 and "nr_free_pages" in v


def test_meminfo_recorded():
    m = proc.parse_key_values((DATA / "meminfo-7.2.txt").read_text())
    assert m["MemTotal"] > m["MemFree"] > 0


def test_module_stats():
    s = proc.parse_key_values("mode fault\nnr_pages 9\npages_held 0\nfaults 34\n")
    assert s == {"nr_pages": 9, "pages_held": 0, "faults": 34}


def test_page_lines():
    recs = [{"stage": "both", "page": "0", "pfn": "25607", "refcount": "3", "mapcount": "2",
             "kpagecount": "2"}, {"op": "x"}]
    (p,) = proc.parse_page_lines(recs, "both")
    assert (p.page, p.pfn, p.refcount, p.mapcount, p.kpagecount) == (0, 25607, 3, 2, 2)
