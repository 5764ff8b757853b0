"""The dashboard as a person sees it: the recorded nights (tests/data/nights)
rendered, opened in headless Chromium (Debian's chromium-headless-shell),
read through its DOM after the page's script ran; keyboard and a 1024 px
window too. Screenshots go to ci-artifacts/ at the top of the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import Browser, executable

from harness.results import dashboard

REPO = Path(__file__).resolve().parents[2]
NIGHTS = sorted(str(p) for p in (REPO / "tests" / "data" / "nights").iterdir())
ARTIFACTS = REPO / "ci-artifacts"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    exe = executable()
    if exe is None:
        pytest.fail("no headless Chromium: run ci/setup.sh (chromium-headless-shell)")
    site = tmp_path_factory.mktemp("site")
    assert dashboard.write(NIGHTS, site) == 0
    b = Browser(exe)
    b.size(1280, 900)
    b.open(site / "index.html")
    yield b, site
    b.close()


def shot(b: Browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    b.screenshot(ARTIFACTS / name)


def test_it_renders_without_console_errors(page):
    b, _ = page
    assert b.errors() == []
    assert b.js("document.querySelectorAll('tr.row').length") == 10
    # the script drew every history strip
    assert b.js("[...document.querySelectorAll('.strip')].every(e => "
                "e.style.background.includes('linear-gradient'))")
    shot(b, "dashboard-1280.png")


def test_the_regression_at_the_top_names_the_test_and_job(page):
    b, _ = page
    first = b.js("[...document.querySelectorAll('#regressions tbody tr')[0].cells]"
                 ".map(c => c.textContent.trim())")
    assert first[:4] == ["test_PAT1_whole_vma_pfnmap_fork", "debian-7.2-x86_64", "passed",
                         "failed"]
    # above the matrix on the page
    assert b.js("document.getElementById('regressions').getBoundingClientRect().top < "
                "document.getElementById('matrix').getBoundingClientRect().top")


def test_the_history_strip_shows_failing_since(page):
    b, site = page
    since = b.js("(() => { const tr = document.querySelector("
                 "'tr[data-name=\"test_DX4_natural_race_on_two_vcpus[special]\"]');"
                 " const a = tr.cells[1].querySelector('a.since');"
                 " return [a.textContent, a.getAttribute('href')]; })()")
    assert since == ["since 2026-11-29", "night-2026-11-29.html"]
    assert (site / "night-2026-11-29.html").exists()
    # the missing night is a gap in the strip, not a pass
    assert b.js("document.querySelector('tr[data-name=\"test_RB1_read_every_page[fault]\"]')"
                ".cells[1].querySelector('.strip').dataset.h") == "p3m1p1"


def test_a_race_plot_has_a_point_a_night(page):
    b, site = page
    assert b.js("document.querySelector('#to-races a').getAttribute('href')") == "races.html"
    b.open(site / "races.html")
    try:
        assert b.errors() == []
        points = b.js("[...document.querySelectorAll('figure.race')].map(f => "
                      "f.querySelectorAll('circle.pt').length)")
        assert points and all(n == 4 for n in points)   # the missing night has none
        shot(b, "dashboard-races.png")
    finally:
        b.open(site / "index.html")


def test_the_keyboard_filters_and_reaches_the_links(page):
    b, _ = page
    b.key("/", "Slash", 191, "/")
    assert b.js("document.activeElement.id") == "filter"
    b.type("PAT1")
    assert b.js("[...document.querySelectorAll('tr.row')].filter(r => !r.hidden)"
                ".map(r => r.dataset.name)") == ["test_PAT1_whole_vma_pfnmap_fork"]
    b.key("Escape", "Escape", 27)
    assert b.js("[...document.querySelectorAll('tr.row')].filter(r => !r.hidden).length") == 10
    b.js("document.activeElement.blur()")
    focused = []
    for _ in range(8):
        b.key("Tab", "Tab", 9)
        focused.append(b.js("document.activeElement.tagName + ' ' + "
                            "(document.activeElement.getAttribute('href') || "
                            "document.activeElement.id || '')"))
    assert any(f.startswith("A night-") for f in focused), focused


def test_a_1024_px_window_keeps_the_page_readable(page):
    b, _ = page
    b.size(1024, 900)
    b.js("window.scrollTo(0, 0)")
    assert b.js("document.documentElement.scrollWidth") <= 1024
    # the regressions table fits; the matrix scrolls inside its own box
    assert b.js("document.getElementById('regressions').getBoundingClientRect().right") <= 1024
    assert b.js("getComputedStyle(document.querySelector('.scroll')).overflowX") == "auto"
    shot(b, "dashboard-1024.png")
    b.size(1280, 900)


def test_a_log_link_opens_the_tests_logs(page):
    b, site = page
    href = b.js("document.querySelector('tr[data-name=\"test_PAT1_whole_vma_pfnmap_fork\"]')"
                ".cells[2].querySelector('a').getAttribute('href')")
    listing = site / href
    assert listing.is_file() and "dmesg.txt" in listing.read_text()   # relative: any host
