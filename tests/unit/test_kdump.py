"""makedumpfile's flattened stream, reassembled into the file it describes."""

from __future__ import annotations

import struct

import pytest

from harness.vm import kdump


def flat(records: list[tuple[int, bytes]], end: bool = True) -> bytes:
    out = kdump.SIGNATURE.ljust(kdump.HEADER, b"\0")
    for offset, data in records:
        out += struct.pack(">qq", offset, len(data)) + data
    return out + (struct.pack(">qq", -1, -1) if end else b"")


def test_records_land_at_their_offsets(tmp_path):
    src = tmp_path / "flat"
    src.write_bytes(flat([(0, b"KDUMP   "), (4096, b"page"), (8, b"hdr")]))
    assert kdump.is_flat(src)
    kdump.reassemble(src, tmp_path / "vmcore")
    got = (tmp_path / "vmcore").read_bytes()
    assert got[:11] == b"KDUMP   hdr" and got[4096:4100] == b"page" and len(got) == 4100


def test_a_stream_cut_short_is_named(tmp_path):
    src = tmp_path / "flat"
    src.write_bytes(flat([(0, b"KDUMP   ")], end=False))
    with pytest.raises(kdump.Truncated, match="ends before its end record"):
        kdump.reassemble(src, tmp_path / "vmcore")
