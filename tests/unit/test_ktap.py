"""KTAP from real selftest runs (tests/data/ktap/, captured in our guests)
into results, and runner.sh's verdict on a binary."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from harness import upstream
from harness.observe import ktap

DATA = Path(__file__).parent.parent / "data" / "ktap"


def parsed(name: str) -> ktap.Run:
    return ktap.parse((DATA / name).read_text())


def test_cow_names_live_in_the_skip_text_and_reasons_before_it():
    run = parsed("cow-7.2-x86_64-no-gup-test.txt")
    assert run.version == "TAP 13" and run.plan == 655 and run.complete and not run.problems
    assert run.counts() == {"pass": 323, "fail": 0, "skip": 328, "xfail": 4, "xpass": 0,
                            "error": 0}
    skip = next(c for c in run.cases if c.status == ktap.SKIP)
    assert skip.name.startswith("R/O-mapping a page with GUP") or "..." in skip.name
    assert skip.reason == "gup_test not available"
    thp = next(c for c in run.cases if c.number == 321)
    assert thp.name == ("R/O GUP pin on R/O-mapped shared page ... with PTE-mapped THP "
                        "(16 kB)")
    assert {c.reason for c in run.cases if c.status == ktap.SKIP} == {"gup_test not available"}
    assert len({c.name for c in run.cases}) == 655     # names are ids: no two alike


def test_cow_of_6_12_names_in_run_lines_reasons_in_the_skip():
    run = parsed("cow-6.12-x86_64.txt")
    assert run.plan == 670 and not run.problems
    huge = next(c for c in run.cases if c.number == 54)
    assert (huge.name, huge.status, huge.reason) == (
        "Basic COW after fork() ... with hugetlb (1048576 kB)", ktap.SKIP,
        "need more free huge pages")
    leak = next(c for c in run.cases if c.number == 53)    # same text for every case
    assert leak.name == ("Basic COW after fork() ... with hugetlb (2048 kB): No leak from "
                         "parent into child")
    assert len({c.name for c in run.cases}) == 670


def test_uffd_unit_tests_of_6_12_print_no_ktap():
    run = parsed("uffd-unit-tests-6.12-x86_64.txt")
    assert run.version == "uffd-unit-tests lines" and not run.problems
    assert run.counts()["pass"] == 36 and run.counts()["skip"] == 30
    c = next(c for c in run.cases if c.name == "register-ioctls on hugetlb")
    assert (c.status, c.reason) == (ktap.SKIP, "memory allocation failed")


def test_parentheses_of_one_or_two_words_are_part_of_the_name():
    run = parsed("pagemap_ioctl-6.12-x86_64.txt")
    c = next(c for c in run.cases if c.number == 54)
    assert c.name == "Hugetlb shmem testing: all new pages must not be written (dirty)"
    assert c.status == ktap.SKIP


def test_mremap_test_prints_no_version_line():
    run = parsed("mremap_test-7.2-x86_64.txt")
    assert run.version == "" and run.plan == 26 and run.complete
    assert run.counts()["pass"] == 23 and run.counts()["xfail"] == 3
    first = run.cases[0]
    assert first.name == "mremap - Source and Destination Regions Overlapping"
    assert first.status == ktap.XFAIL and first.reason == "mremap failed: Invalid argument"


def test_mkdirty_repeated_names_take_their_info_line():
    run = parsed("mkdirty-7.2-x86_64.txt")
    names = [c.name for c in run.cases]
    assert names[0] == "PTRACE write access: SIGSEGV generated, page not modified"
    assert names[5] == "UFFDIO_COPY: SIGSEGV generated, page not modified"
    assert len(set(names)) == 6


def test_uffd_reason_in_parentheses():
    run = parsed("uffd-unit-tests-7.2-x86_64.txt")
    pin = next(c for c in run.cases if c.name == "wp-fork-pin on anon")
    assert pin.status == ktap.SKIP
    assert pin.reason == "Possibly CONFIG_GUP_TEST missing or unprivileged"
    assert run.counts()["pass"] == 57 and not run.problems


def test_harness_failure_reason_comes_after_the_result():
    run = parsed("rmap-migrate.shm-no-dev-shm.txt")
    assert [(c.name, c.status) for c in run.cases] == [("migrate.shm", ktap.FAIL)]
    assert "# rmap.c:335:shm:Expected shm_fd (-1) != -1 (-1)" in run.tail


@pytest.mark.parametrize("listing, count, first, last", [
    ("guard-regions-7.2-l.txt", 3 * 30, "guard_regions.anon.basic", "guard_regions.file.smaps"),
    ("merge-7.2-l.txt", 16 + 2 * 4, "merge.mprotect_unfaulted_left",
     "merge_with_fork.unforked.mremap_faulted_to_unfaulted_prev_faulted_next"),
    # fixtures and variants longer than their fields shift the rest of that row only
    ("vfio_dma_mapping_test-7.3-l.txt", 15 + 5 * 3,
     "vfio_dma_mapping_test.vfio_type1_iommu_anonymous.dma_map_unmap",
     "vfio_dma_map_limit_test.iommufd.overflow"),
])
def test_harness_listing_gives_full_names(listing, count, first, last):
    names = ktap.listed((DATA / listing).read_text())
    assert len(names) == count == len(set(names))
    assert names[0] == first and names[-1] == last
    assert not any(n.startswith("global") for n in names)   # a fixture without tests


def test_skip_all_and_bail_out_and_short_plan():
    assert ktap.parse("TAP version 13\n1..0 # SKIP no /dev/userfaultfd\n").skip_all == \
        "no /dev/userfaultfd"
    run = ktap.parse("TAP version 13\n1..3\nok 1 a\nBail out! out of memory\n")
    assert run.problems == ["Bail out! out of memory",
                            "planned 3 results, printed 1: the binary stopped before result 2"]
    run = ktap.parse("1..2\nok 1 a\nok 2 b\n# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 "
                     "error:0\n")
    assert run.problems and "disagrees" in run.problems[0]


def outcome(text: str, status: int, seconds: float = 1.0) -> upstream.Outcome:
    run = ktap.parse(text)
    o = upstream.Outcome(upstream.Selftest("x"), ktap.PASS, seconds=seconds,
                         subtests=upstream._subtests(run), output=text)
    return upstream.judge(o, status, run, timeout=900)


def test_runner_verdicts():
    cow = (DATA / "cow-7.2-x86_64-no-gup-test.txt").read_text()
    assert outcome(cow, 0).verdict == ktap.PASS
    assert outcome(cow, 1).verdict == ktap.FAIL          # exit 1 fails even if all said ok
    gup = (DATA / "gup_test-debian-7.2.txt").read_text()
    o = outcome(gup, 4)
    # its name is its (misleading) skip text; the reason is the line before
    assert (o.verdict, o.why) == (ktap.SKIP, "check if CONFIG_GUP_TEST is enabled in kernel "
                                             "config")
    # pfnmap on a device that raises SIGBUS dies before printing anything
    o = outcome("", 128 + signal.SIGBUS)
    assert (o.verdict, o.why) == (ktap.FAIL, "killed by SIGBUS")
    o = outcome("TAP version 13\n1..5\nok 1 a\n", 128 + signal.SIGKILL, seconds=900.2)
    assert o.verdict == ktap.FAIL and o.why.startswith("timed out after 900s")
    assert o.why.endswith("after 1 results (last: a)")


def test_shadow_tree_is_writable_and_probes_again(tmp_path):
    """The selftests' Makefile writes beside its sources: it gets a copy of
    the mm folder in a tree of symlinks, without probe results a hand-run
    make left in the source (they once hid liburing from cow)."""
    from harness.kbuild import selftests
    top = tmp_path / "linux"
    mm = top / selftests.SUBDIR
    mm.mkdir(parents=True)
    (mm / "cow.c").write_text("int main(void) { return 0; }\n")
    (mm / "local_config.mk").write_text("IOURING_EXTRA_LIBS =\n")
    (top / "tools" / "include").mkdir()
    (top / "Makefile").write_text("")
    shadow = selftests._shadow(top, tmp_path / "shadow")
    copy = shadow / selftests.SUBDIR
    assert (copy / "cow.c").read_text() == (mm / "cow.c").read_text()
    assert not (copy / "cow.c").is_symlink() and not (copy / "local_config.mk").exists()
    assert (shadow / "Makefile").is_symlink() and (shadow / "tools" / "include").is_symlink()
    assert (mm / "local_config.mk").exists()       # the source is left as it was


def test_harness_failure_reason_is_its_assertion_message():
    text = (DATA / "rmap-migrate.shm-no-dev-shm.txt").read_text()
    assert upstream._stderr_reason(text) == ("rmap.c:335:shm:Expected shm_fd (-1) != -1 (-1); "
                                             "shm: Test terminated by assertion")


def test_a_kernel_report_fails_a_binary_that_said_ok():
    from harness.observe import reports
    log = (DATA.parent / "reports" / "dx4-race-7.2.13+deb14-amd64.log").read_text()
    text = (DATA / "mkdirty-7.2-x86_64.txt").read_text()
    run = ktap.parse(text)
    o = upstream.Outcome(upstream.Selftest("mkdirty"), ktap.PASS, output=text,
                         subtests=upstream._subtests(run), reports=reports.parse(log))
    o = upstream.judge(o, 0, run, timeout=900)
    assert o.verdict == ktap.FAIL and o.why.startswith("kernel report: WARNING in ")


def test_trees_before_6_3_keep_their_mm_selftests_in_vm(tmp_path):
    from harness.kbuild import selftests
    old, new = tmp_path / "6.1", tmp_path / "6.12"
    (old / selftests.OLD_SUBDIR).mkdir(parents=True)
    (new / selftests.SUBDIR).mkdir(parents=True)
    (new / selftests.OLD_SUBDIR).mkdir(parents=True)     # a stale folder: mm wins
    assert selftests.subdir(old) == selftests.OLD_SUBDIR
    assert selftests.subdir(new) == selftests.SUBDIR
    assert selftests.subdir(tmp_path / "none") == selftests.SUBDIR    # and says it lacks it


@pytest.mark.parametrize("getopt,lists", [
    ('\twhile ((opt = getopt(argc, argv, "dhlF:f:V:v:t:T:r:")) != -1) {\n', True),   # 7.3
    ('\twhile ((opt = getopt(argc, argv, "hlF:f:V:v:t:T:r:")) != -1) {\n', True),    # 6.12
    ("static int test_harness_run(int __attribute__((unused)) argc,\n", False),       # 6.1
])
def test_a_harness_that_ignores_its_arguments_is_run_whole(tmp_path, getopt, lists):
    """6.1's kselftest_harness takes no -l: given it, it runs every test
    (perf_events' mmap for minutes), so its binaries are not listed."""
    from harness.kbuild import selftests
    header = tmp_path / selftests.SUBDIR.parent / "kselftest_harness.h"
    header.parent.mkdir(parents=True)
    header.write_text(f"/* kselftest_harness.h */\n{getopt}")
    assert selftests._harness_lists(tmp_path) is lists
    assert selftests._harness_lists(tmp_path / "none") is False
