"""Fragment parsing and the survival check after olddefconfig."""

from __future__ import annotations

import pytest

from harness.arches import ARCHES
from harness.kbuild import kconfig


def test_parse_set_unset_and_strings():
    got = kconfig.parse('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S="x y"\n# comment\n')
    assert got == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_S": '"x y"'}


def test_lost_lists_options_that_changed_or_vanished():
    want = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "y", "CONFIG_D": "m"}
    final = {"CONFIG_A": "y", "CONFIG_D": "y"}
    assert [str(l) for l in kconfig.lost(want, final)] == ["CONFIG_C=y (got n)",
                                                          "CONFIG_D=m (got y)"]


def test_report_lost_warns_or_fails(tmp_path):
    lost = [kconfig.Lost("CONFIG_KASAN", "y", "n")]
    msg = kconfig.report_lost(lost, strict=False, where=tmp_path / ".config")
    assert "CONFIG_KASAN=y (got n)" in msg and "did not survive olddefconfig" in msg
    with pytest.raises(kconfig.ConfigError):
        kconfig.report_lost(lost, strict=True, where=tmp_path / ".config")
    assert kconfig.report_lost([], strict=True, where=tmp_path) is None


def test_fragments_resolve_with_their_arch_part():
    paths = kconfig.resolve_fragments(["base", "debug-vm"], ARCHES["x86_64"])
    assert [p.name for p in paths] == ["base.config", "base.x86_64.config", "debug-vm.config"]
    assert kconfig.start_target([p.read_text() for p in paths]) == "tinyconfig"


def test_unknown_fragment():
    with pytest.raises(Exception, match="kconfig fragment 'nope' not found"):
        kconfig.resolve_fragments(["nope"], ARCHES["arm64"])
