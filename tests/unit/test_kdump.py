"""makedumpfile's flattened stream, reassembled into the file it describes."""

from __future__ import annotations

import struct

import pytest

from harness.errors import UsageError
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


# -- the kdump file itself: a small one built here, as QEMU lays them out ----

VMCOREINFO = b"OSRELEASE=6.12.0-test\nPAGESIZE=4096\nBUILD-ID=00ff\n"


def kdump_file(block: int, pages: dict[int, bytes], max_mapnr: int = 64) -> bytes:
    """Header, sub-header (VMCOREINFO), two bitmaps, descriptors, zlib data."""
    import zlib
    half = -(-max_mapnr // (8 * block)) * block
    header = bytearray(block)
    header[:8] = kdump.KDUMP_SIGNATURE
    struct.pack_into("<i", header, 8, 6)
    struct.pack_into("<iiII", header, kdump.GEOMETRY_AT, block, 1, 2 * half // block, max_mapnr)
    sub = bytearray(block)
    info_at = block + 512
    struct.pack_into("<QiiQQQQ", sub, 0, 0, 1, 0, 0, 0, info_at, len(VMCOREINFO))
    struct.pack_into("<Q", sub, kdump.SUB_MAX_MAPNR, max_mapnr)
    sub[512:512 + len(VMCOREINFO)] = VMCOREINFO
    bitmap = bytearray(half)
    for pfn in pages:
        bitmap[pfn // 8] |= 1 << pfn % 8
    data_at = (2 + 2 * half // block) * block + len(pages) * kdump.PAGE_DESC.size
    descs, data = b"", b""
    for pfn in sorted(pages):
        packed = zlib.compress(pages[pfn])
        descs += kdump.PAGE_DESC.pack(data_at + len(data), len(packed), kdump.ZLIB, 0)
        data += packed
    return bytes(header + sub + bitmap + bitmap) + descs + data


def read_page(path, pfn: int) -> bytes:
    import zlib
    raw = path.read_bytes()
    block, sub_blocks, bitmap_blocks, _ = kdump.HEADER_FIELDS.unpack_from(raw, kdump.GEOMETRY_AT)
    half = bitmap_blocks // 2 * block
    dumped = raw[(1 + sub_blocks) * block + half:(1 + sub_blocks) * block + 2 * half]
    index = list(kdump._bits(dumped)).index(pfn)
    desc_at = (1 + sub_blocks + bitmap_blocks) * block + index * kdump.PAGE_DESC.size
    offset, size, flags, _ = kdump.PAGE_DESC.unpack_from(raw, desc_at)
    data = raw[offset:offset + size]
    return zlib.decompress(data) if flags & kdump.ZLIB else data


def test_info_reads_vmcoreinfo_and_names_a_cut_file(tmp_path):
    path = tmp_path / "vmcore"
    whole = kdump_file(4096, {1: b"a" * 4096, 5: bytes(range(256)) * 16})
    path.write_bytes(whole)
    assert kdump.info(path)["OSRELEASE"] == "6.12.0-test"
    path.write_bytes(whole[:-10])
    with pytest.raises(kdump.Unreadable, match="truncated"):
        kdump.info(path)
    path.write_bytes(b"ELF" + whole[3:])
    with pytest.raises(kdump.Unreadable, match="not a kdump"):
        kdump.info(path)


def test_label_fills_the_utsname_libkdumpfile_wants(tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(kdump_file(4096, {0: b"x" * 4096}))
    kdump.label(path, "aarch64")
    assert kdump.machine_of(path) == "aarch64"
    raw = path.read_bytes()
    assert raw[kdump.UTS:kdump.UTS + 6] == b"Linux\0"
    assert b"6.12.0-test\0" in raw[kdump.UTS:kdump.UTS + 6 * kdump.UTS_LEN]


def test_64k_blocks_become_4k_pages_with_the_same_bytes(tmp_path):
    """QEMU's arm64 dumps: a 64 KiB block holds 16 of the kernel's pages."""
    path = tmp_path / "vmcore"
    block1 = b"".join(bytes([i]) * 4096 for i in range(16))   # page 16+i is all i
    block3 = bytes(range(256)) * 256
    path.write_bytes(kdump_file(65536, {1: block1, 3: block3}, max_mapnr=8))
    kdump.regranulate(path, 4096)
    assert kdump.HEADER_FIELDS.unpack_from(path.read_bytes(), kdump.GEOMETRY_AT)[0] == 4096
    assert kdump.info(path)["PAGESIZE"] == "4096"       # the sub-header moved with it
    for i in range(16):
        assert read_page(path, 16 + i) == bytes([i]) * 4096
        assert read_page(path, 48 + i) == block3[i * 4096:(i + 1) * 4096]
    kdump.regranulate(path, 4096)                       # a second time: nothing to do
    assert read_page(path, 20) == bytes([4]) * 4096


def test_an_elf_core_holds_the_same_pages(tmp_path):
    """For drgn where libkdumpfile stops (an -rc kernel's release): runs of
    pages as PT_LOADs at their physical addresses, zero pages as holes."""
    src, elf = tmp_path / "vmcore", tmp_path / "vmcore.elf"
    pages = {1: b"a" * 4096, 2: bytes(4096), 3: b"c" * 4096, 9: b"i" * 4096}
    src.write_bytes(kdump_file(4096, pages))
    with pytest.raises(UsageError, match="unknown arch ''"):     # QEMU leaves it blank
        kdump.to_elf(src, elf)
    kdump.label(src, "aarch64")
    kdump.to_elf(src, elf)
    raw = elf.read_bytes()
    assert raw[:4] == b"\x7fELF" and kdump.EHDR.unpack_from(raw)[2] == 183    # EM_AARCH64
    phnum = kdump.EHDR.unpack_from(raw)[10]
    loads = [kdump.PHDR.unpack_from(raw, kdump.EHDR.size + i * kdump.PHDR.size)
             for i in range(phnum)]
    assert [(h[4] // 4096, h[5] // 4096) for h in loads if h[0] == kdump.PT_LOAD] == \
        [(1, 3), (9, 1)]
    for h in loads[1:]:
        for i in range(h[5] // 4096):
            pfn = h[4] // 4096 + i
            assert raw[h[2] + i * 4096:h[2] + (i + 1) * 4096] == pages[pfn]
    assert kdump.readable_release("6.12.1-amd64") and not kdump.readable_release("7.3-amd64")
