"""kharness debug's checks of what it is given, before drgn opens anything."""

from __future__ import annotations

import json

import pytest
from test_kdump import kdump_file

from harness import arches
from harness.commands import debug
from harness.errors import UsageError
from harness.kernel import Kernel


def run_folder(tmp_path, release: str = "6.12.0-test"):
    k = Kernel(spec="debian:6.12", release=release, arch=arches.get("x86_64"),
               image=tmp_path / "bzImage", modules_dir=tmp_path, build_dir=tmp_path,
               config=tmp_path / "config", source="test")
    (tmp_path / "kernel.json").write_text(k.to_json())
    (tmp_path / "modules.json").write_text(json.dumps({"kh_splat": "/x/kh_splat.ko"}))
    test = tmp_path / "tests" / "test_x.py_test_y"
    test.mkdir(parents=True)
    (test / "vmcore").write_bytes(kdump_file(4096, {2: b"z" * 4096}))
    return test


def test_a_test_folder_finds_its_run(tmp_path):
    d = debug.find(run_folder(tmp_path))
    assert d.kernel.release == "6.12.0-test" and d.build_id == "00ff"
    assert d.modules == {"kh_splat": __import__("pathlib").Path("/x/kh_splat.ko")}
    assert d.vmcore.name == "vmcore"


@pytest.mark.parametrize("case, says", [
    ("missing", "no such folder"),
    ("no-vmcore", "no vmcore in"),
    ("other-kernel", "is a dump of kernel 6.12.0-test, but its run"),
    ("no-run", "no kernel.json in the folders above it"),
])
def test_bad_input_names_what_is_wrong(tmp_path, case, says):
    test = run_folder(tmp_path, release="7.2.0-other" if case == "other-kernel" else
                      "6.12.0-test")
    where = {"missing": tmp_path / "nope", "no-vmcore": tmp_path}.get(case, test)
    if case == "no-run":
        (tmp_path / "kernel.json").unlink()
    with pytest.raises(UsageError, match=says):
        debug.find(where)


def test_pte_bits_decode_per_arch():
    from harness.observe.pagestate import _decode
    x86 = (0x1234 << 12) | 1 | 1 << 1 | 1 << 6 | 1 << 9
    e = _decode(x86, 0x1234, "pte", "x86_64")
    assert (e.write, e.dirty, e.special, e.devmap) == (True, True, True, False)
    # arm64: writable is DBM; dirty is the software bit or DBM without RDONLY
    clean = (0x1234 << 12) | 3 | 1 << 51 | 1 << 7
    assert (_decode(clean, 0x1234, "pte", "arm64").dirty,
            _decode(clean & ~(1 << 7), 0x1234, "pte", "arm64").dirty) == (False, True)
    assert _decode(clean | 1 << 56, 0x1234, "pte", "arm64").special


def test_an_arch_without_a_page_table_walk_is_named_not_guessed():
    from harness.errors import KhError
    from harness.observe.pagestate import _decode, walker
    assert walker(arches.get("arm64")) == "arm64"
    with pytest.raises(KhError, match="does not walk armhf's page tables"):
        walker(arches.get("armhf"))
    with pytest.raises(KhError, match="no PTE decoding for armhf"):
        _decode(1, 0, "pte", "armhf")
    with pytest.raises(UsageError, match="unknown arch 'sparc64'"):
        arches.get("sparc64")
