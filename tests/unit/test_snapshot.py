"""The pure parts of snapshots: a command line with its per-guest paths as
placeholders, and filled in again for another guest; a cache entry that is
whole but made for something else is made again, said as such."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import cache, session
from harness.vm import snapshot


def test_a_command_line_keeps_no_path_of_the_guest_it_came_from(tmp_path):
    sock, work = Path("/tmp/kh-abc123"), tmp_path / "boot-1"
    image, swap = tmp_path / "initramfs.cpio", work / "swap.img"
    argv = ["qemu-system-x86_64", "-initrd", str(image),
            "-chardev", f"file,id=khcon,path={work / 'console.log'},append=on",
            "-qmp", f"unix:{sock / 'qmp.sock'},server=on,wait=off",
            "-drive", f"file={swap},if=none,id=khswap"]
    template = snapshot.normalise(argv, sock, work, {image: False, swap: True})
    assert template == ["qemu-system-x86_64", "-initrd", "@SNAP@/initramfs.cpio",
                        "-chardev", "file,id=khcon,path=@WORK@/console.log,append=on",
                        "-qmp", "unix:@SOCK@/qmp.sock,server=on,wait=off",
                        "-drive", "file=@WORK@/swap.img,if=none,id=khswap"]
    assert not any(str(tmp_path) in a or str(sock) in a for a in template)


def test_an_entry_made_for_something_else_is_made_again_and_said_so(tmp_path, capsys):
    entry = tmp_path / "snap"
    made = []

    def make(e: Path) -> list[str]:
        (e / "state").write_text("x")
        made.append(e)
        return ["state"]

    def check(e: Path) -> None:
        if len(made) < 2:
            raise cache.Outdated("made with another qemu (QEMU 7.2.21; this run has 7.2.22)")

    cache.cached(entry, make)
    cache.cached(entry, make, check=check)
    assert len(made) == 2
    assert (f"cache entry {entry} is out of date: made with another qemu (QEMU 7.2.21; this "
            f"run has 7.2.22); making it again") in capsys.readouterr().err


def test_a_boot_that_still_probes_kvm_is_not_saved(monkeypatch, tmp_path):
    """On a new machine the first boot tries KVM and may end under TCG: a
    snapshot planned for KVM would hold a TCG guest that no KVM QEMU can
    load (the fresh-cache run found it). That boot is not saved."""
    class Probing:
        def snapshot_blocker(self):
            return None

        def accels(self):
            return ["kvm", "tcg"]

    booted = []
    monkeypatch.setattr(session, "launcher", lambda prep, workdir: Probing())
    monkeypatch.setattr(session, "kvm_known", lambda: None)      # no verdict yet
    monkeypatch.setattr(session, "_boot", lambda prep, launch: booted.append(launch) or "guest")
    monkeypatch.setattr(session.snapshot, "Plan",
                        lambda *a: pytest.fail("a snapshot planned before the probe"))
    prep = SimpleNamespace(boots=session.Boots())
    assert session._guest(prep, tmp_path) == "guest" and len(booted) == 1
