"""Module builds against the session kernel's real headers."""

import shutil

import pytest

from harness.errors import KhError
from harness.kbuild import kmod
from harness.resources import data


def test_module_compile_error_shows_the_compiler_lines(kernel, tmp_path):
    src = tmp_path / "kmods"
    shutil.copytree(data("kmods"), src)
    broken = src / "ringbuf" / "ringbuf.c"
    broken.write_text(broken.read_text() + "\nstatic int kh_broken = kh_undeclared_thing;\n")
    with pytest.raises(KhError) as e:
        kmod.build(kernel, "ringbuf", kmods=src)
    assert f"does not build against {kernel.release}" in str(e.value)
    assert "build.log" in str(e.value)
    assert "kh_undeclared_thing" in e.value.detail and "error:" in e.value.detail


def test_module_build_is_cached(kernel):
    first = kmod.build(kernel, "ringbuf")
    again = kmod.build(kernel, "ringbuf")
    assert again.path == first.path and first.path.stat().st_size > 0
