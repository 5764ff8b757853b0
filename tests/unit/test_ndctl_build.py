"""ndctl's tests as kharness builds them (harness/kbuild/ndctl.py): the
record a cache entry holds, and what it refuses before anything is built.
The build and the run are tests/kernel/ndctl's."""

from __future__ import annotations

import json

import pytest

from harness.arches import ARCHES, host
from harness.kbuild import ndctl


def test_a_record_holds_every_test_or_is_made_again(tmp_path):
    record = {"version": ndctl.VERSION, "arch": "x86_64", "url": ndctl.url(),
              "built": {t: t for t in ndctl.TESTS}}
    (tmp_path / "ndctl.json").write_text(json.dumps(record))
    tests = ndctl.NdctlTests.load(tmp_path)
    assert tests.path("device-dax") == tmp_path / "bin" / "device-dax"
    record["built"].pop("revoke_devmem")
    (tmp_path / "ndctl.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="no complete record"):
        ndctl.NdctlTests.load(tmp_path)


def test_the_tarball_is_pinned_in_debians_pool():
    assert ndctl.url().endswith(f"/pool/main/n/ndctl/ndctl_{ndctl.VERSION}.orig.tar.gz")
    assert len(ndctl.SHA256) == 64 and int(ndctl.SHA256, 16) >= 0


def test_built_on_the_host_for_its_own_arch_only():
    other = next(a for n, a in ARCHES.items() if n != host().name)
    with pytest.raises(ndctl.Unbuildable, match=f"host for its own arch .*not {other}"):
        ndctl.build(other)
