"""The helpers' content check (khutil.h: stamp_pages, print_shows,
report_content) compiled for this host and fed mappings that are wrong on
purpose: a shifted page, a repeated one, a zeroed one and one that faults
must each fail it, and name the page."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.resources import data

PROGRAM = r"""
#define _GNU_SOURCE
#include <sys/mman.h>
#include "khutil.h"

#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

int main(int argc, char **argv)
{
	long n = 8, first = 3;
	char *map, *ref;

	page_size = sysconf(_SC_PAGESIZE);
	map = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, ANON, -1, 0);
	ref = malloc(n * page_size);
	stamp_pages(ref, first, n);
	stamp_pages(map, first, n);
	if (!strcmp(argv[1], "shifted"))	/* page 2 shows the object's page 5 */
		memcpy(map + 2 * page_size, ref + 5 * page_size, page_size);
	if (!strcmp(argv[1], "repeated"))	/* pages 4.. repeat page 4 */
		for (long i = 5; i < n; i++)
			memcpy(map + i * page_size, map + 4 * page_size, page_size);
	if (!strcmp(argv[1], "zeroed"))
		memset(map + 6 * page_size, 0, page_size);
	if (!strcmp(argv[1], "faults"))
		mprotect(map + 7 * page_size, page_size, PROT_NONE);
	catch_faults();
	report_content("content", map, ref, n, n);
	return 0;
}
"""


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("no gcc on this host (ci/setup.sh installs it)")
    out = tmp_path_factory.mktemp("content") / "check"
    src = out.with_suffix(".c")
    src.write_text(PROGRAM)
    subprocess.run([cc, "-O2", "-Wall", "-Werror", f"-I{data('helpers')}",
                    f"-I{data('kmods') / 'include' / 'uapi'}", "-o", str(out), str(src)],
                   check=True)

    def run(case: str) -> dict[str, str]:
        line = subprocess.run([str(out), case], capture_output=True, text=True,
                              check=True).stdout
        return dict(w.split("=", 1) for w in line.split())
    return run


@pytest.mark.parametrize("case,shows,first_differ,instead", [
    ("right", "3-10", "-1", "-1"),
    ("shifted", "3-4,8,6-10", "2", "5"),
    ("repeated", "3-7,7,7,7", "5", "4"),
    ("zeroed", "3-8,x,10", "6", "-1"),
    ("faults", "3-9,sigsegv", "7", "-1"),
])
def test_a_wrong_page_fails_the_check_and_is_named(checker, case, shows, first_differ,
                                                   instead):
    rec = checker(case)
    assert rec["shows"] == shows
    assert rec["first_differ"] == first_differ
    assert rec["instead"] == instead
    assert (rec["differ"] == "0") == (case == "right")
